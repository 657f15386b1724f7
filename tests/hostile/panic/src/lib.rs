//! Panics on `num` 5.
use sluice_plugin::{Result, Value, map};

#[map]
fn panics(doc: Value) -> Result<Value> {
    if doc["num"] == 5 {
        panic!("boom on 5");
    }
    Ok(doc)
}
