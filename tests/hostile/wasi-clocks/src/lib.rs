//! Built for a WASI target (`make hostile`), it imports the WASI clocks. As a
//! WASI 0.2 component it loads, and on num 3 reads the sandbox's deterministic
//! wall clock: the batch's newest record timestamp, never the host's time. As a
//! WASI preview 1 module it is refused at load, naming its imports.
use sluice_plugin::{Result, Value, json, map};

#[map]
fn now(doc: Value) -> Result<Value> {
    if doc["num"] == 3 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        return Ok(json!({ "num": 3, "now": since.as_secs() }));
    }
    Ok(doc)
}
