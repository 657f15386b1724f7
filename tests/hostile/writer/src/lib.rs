//! Writes what the record asks for: a value with `"ops": [{"op": "insert" |
//! "upsert" | "delete", "doc": {…}, "collection": "…"}, …]` becomes those
//! outputs as they are (operator ids, `$` keys, any collection: whatever a
//! plugin taking them from its input could be made to emit); any other value
//! is inserted unchanged. For the poison-record tests.
use sluice_plugin::{Output, Result, Value, anyhow, flat_map};

#[flat_map]
fn writer(doc: Value) -> Result<Vec<Output>> {
    let Some(ops) = doc.get("ops").and_then(Value::as_array) else { return Ok(vec![Output::insert(doc)]) };
    ops.iter()
        .map(|o| {
            let d = o.get("doc").cloned().unwrap_or(Value::Null);
            let out = match o.get("op").and_then(Value::as_str) {
                Some("insert") => Output::insert(d),
                Some("upsert") => Output::upsert(d),
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
