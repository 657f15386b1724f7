//! Keeps the records whose `num` is even and adds `square` (= num²) to them: the
//! transform of the performance benchmarks, where this same function runs
//! natively and as this plugin (`cargo bench -p sluice --bench transform`).

use sluice_plugin::{Result, Value, anyhow, map};

#[map]
pub fn evensquare(mut doc: Value) -> Result<Option<Value>> {
    let n = doc.get("num").and_then(Value::as_i64).ok_or_else(|| anyhow!("no integer field `num` in {doc}"))?;
    if n % 2 != 0 {
        return Ok(None);
    }
    let square = n.checked_mul(n).ok_or_else(|| anyhow!("num {n} squared overflows 64 bits"))?;
    doc["square"] = square.into();
    Ok(Some(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::json;

    #[test]
    fn keeps_even_with_square_drops_odd() {
        assert_eq!(evensquare(json!({"num": 12})).unwrap(), Some(json!({"num": 12, "square": 144})));
        assert_eq!(evensquare(json!({"num": 7})).unwrap(), None);
        assert!(evensquare(json!({"n": 2})).is_err());
        assert!(evensquare(json!({"num": i64::MAX - 1})).unwrap_err().to_string().contains("overflows"));
    }
}
