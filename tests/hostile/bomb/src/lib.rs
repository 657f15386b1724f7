//! Allocates without end on `num` 7 (the memory cap must stop it).
use sluice_plugin::{Result, Value, map};

#[map]
fn bomb(doc: Value) -> Result<Value> {
    if doc["num"] == 7 {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
        }
    }
    Ok(doc)
}
