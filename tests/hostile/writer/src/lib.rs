//! Writes what the record asks for: a value with `"ops": [{"op": "insert" |
//! "upsert" | "delete" | "update" | "replace" | "delete-where", "doc": {…},
//! "filter": {…}, "upsert": true, "collection": "…"}, …]` becomes those
//! outputs as they are (operator ids, `$` keys, any collection: whatever a
//! plugin taking them from its input could be made to emit); any other value
//! is inserted unchanged. For the poison-record and replay tests.
//!
//! Params: `tag` (set as field `tag` on every document it emits), `limit` (emit
//! at most this many of a record's ops): two "versions" of one plugin;
//! `ordered` (`true`: ask for ordered writes).
use sluice_plugin::{Output, Params, Result, Value, anyhow, flat_map, set_ordered};
use std::sync::OnceLock;

static TAG: OnceLock<Option<String>> = OnceLock::new();
static LIMIT: OnceLock<usize> = OnceLock::new();

fn setup(params: &Params) -> Result<()> {
    let _ = TAG.set(params.get("tag").map(str::to_owned));
    let _ = LIMIT.set(params.parse_or("limit", usize::MAX)?);
    set_ordered(params.parse_or("ordered", false)?);
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
            let filter = o.get("filter").cloned().unwrap_or(Value::Null);
            let out = match o.get("op").and_then(Value::as_str) {
                Some("insert") => Output::insert(tagged(d)),
                Some("upsert") => Output::upsert(tagged(d)),
                Some("delete") => Output::delete(d.get("_id").cloned().unwrap_or(Value::Null)),
                Some("update") => Output::update(filter, d),
                Some("replace") => Output::replace_where(filter, tagged(d)),
                Some("delete-where") => Output::delete_where(filter),
                other => return Err(anyhow!("unknown op {other:?}")),
            };
            let out = if o.get("upsert") == Some(&Value::Bool(true)) { out.or_insert() } else { out };
            Ok(match o.get("collection").and_then(Value::as_str) {
                Some(c) => out.in_collection(c),
                None => out,
            })
        })
        .collect()
}
