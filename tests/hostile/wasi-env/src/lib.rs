//! Built for a WASI target (`make hostile`), it imports the WASI environment:
//! the host must refuse to load it, naming the import.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn home(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        return Ok(json!({ "num": 3, "home": std::env::var("HOME")? }));
    }
    Ok(doc)
}
