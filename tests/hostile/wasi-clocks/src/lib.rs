//! Built for a WASI target (`make hostile`), it imports the WASI clocks: the
//! host must refuse to load it, naming the import.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn now(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        return Ok(json!({ "num": 3, "now": since.as_secs() }));
    }
    Ok(doc)
}
