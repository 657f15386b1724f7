//! Emits a 100 MB document on `num` 11 (the output cap, or the memory cap, must stop it).
use sluice_plugin::{Result, Value, json, map};

#[map]
fn flood(doc: Value) -> Result<Value> {
    if doc["num"] == 11 {
        return Ok(json!({ "num": 11, "flood": "x".repeat(100 << 20) }));
    }
    Ok(doc)
}
