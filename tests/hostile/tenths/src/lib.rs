//! A candidate that differs from passthrough exactly on every `num` divisible
//! by 10 (it marks them `"tenth": true`): the rollout tests' shadow candidate.
use sluice_plugin::{Result, Value, map};

#[map]
fn tenths(mut doc: Value) -> Result<Value> {
    if doc["num"].as_i64().is_some_and(|n| n % 10 == 0) {
        doc["tenth"] = Value::Bool(true);
    }
    Ok(doc)
}
