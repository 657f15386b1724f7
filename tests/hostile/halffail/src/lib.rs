//! Fails every record whose `num` is odd (half of the tutorial's numbers) and
//! passes the others through: the rollout tests' bad candidate.
use sluice_plugin::{Result, Value, bail, map};

#[map]
fn halffail(doc: Value) -> Result<Value> {
    if doc["num"].as_i64().is_some_and(|n| n % 2 == 1) {
        bail!("odd num {}", doc["num"]);
    }
    Ok(doc)
}
