//! Built for a WASI target (`make hostile`), it imports the WASI filesystem.
//! As a WASI 0.2 component it loads, and on num 3 the sandbox has no preopened
//! directory: `/etc/passwd` is not found and the plugin fails that record. As a
//! WASI preview 1 module it is refused at load, naming its imports.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn read_file(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        return Ok(json!({ "num": 3, "passwd": std::fs::read_to_string("/etc/passwd")? }));
    }
    Ok(doc)
}
