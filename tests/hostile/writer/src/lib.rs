//! Writes what the record asks for: a value with `"ops": [{"op": "insert" |
//! "upsert" | "delete", "doc": {…}, "collection": "…"}, …]` becomes those
//! outputs as they are (operator ids, `$` keys, any collection: whatever a
//! plugin taking them from its input could be made to emit); any other value
//! is inserted unchanged. For the poison-record and replay tests.
//!
//! Params: `tag` (set as field `tag` on every document it emits), `limit` (emit
//! at most this many of a record's ops): two "versions" of one plugin.
use sluice_plugin::{Output, Params, Result, Value, anyhow, flat_map};
use std::sync::OnceLock;

static TAG: OnceLock<Option<String>> = OnceLock::new();
static LIMIT: OnceLock<usize> = OnceLock::new();

fn setup(params: &Params) -> Result<()> {
    let _ = TAG.set(params.get("tag").map(str::to_owned));
    let _ = LIMIT.set(params.parse_or("limit", usize::MAX)?);
    Ok(())
}

fn tagged(mut d: Value) -> Value {
    if let (Some(Some(tag)), Some(o)) = (TAG.get(), d.as_object_mut()) {
        o.insert("tag".into(), tag.clone().into());
    }
    d
}

#[flat_map(init = setup)]
fn writer(doc: Value) -> Result<Vec<Output>> {
    let Some(ops) = doc.get("ops").and_then(Value::as_array) else { return Ok(vec![Output::insert(tagged(doc))]) };
    ops.iter()
        .take(*LIMIT.get().unwrap_or(&usize::MAX))
        .map(|o| {
            let d = o.get("doc").cloned().unwrap_or(Value::Null);
            let out = match o.get("op").and_then(Value::as_str) {
                Some("insert") => Output::insert(tagged(d)),
                Some("upsert") => Output::upsert(tagged(d)),
                Some("delete") => Output::delete(d.get("_id").cloned().unwrap_or(Value::Null)),
                other => return Err(anyhow!("unknown op {other:?}")),
            };
            Ok(match o.get("collection").and_then(Value::as_str) {
                Some(c) => out.in_collection(c),
                None => out,
            })
        })
        .collect()
}
