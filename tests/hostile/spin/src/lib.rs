//! Loops forever on `num` 13 (the call time limit must stop it).
use sluice_plugin::{Result, Value, map};

#[map]
fn spin(doc: Value) -> Result<Value> {
    if doc["num"] == 13 {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
    Ok(doc)
}
