//! Built for a WASI target (`make hostile`), it imports the WASI filesystem:
//! the host must refuse to load it, naming the import.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn read_file(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        return Ok(json!({ "num": 3, "passwd": std::fs::read_to_string("/etc/passwd")? }));
    }
    Ok(doc)
}
