//! Keeps the records whose `num` is even and drops the odd ones. A record without
//! an integer `num` is a per-record error (the host dead-letters or skips it).

use sluice_plugin::{Result, Value, anyhow, filter};

#[filter]
pub fn even(doc: &Value) -> Result<bool> {
    let n = doc.get("num").and_then(Value::as_i64).ok_or_else(|| anyhow!("no integer field `num` in {doc}"))?;
    Ok(n % 2 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::json;

    #[test]
    fn keeps_even_drops_odd() {
        assert!(even(&json!({"num": 0})).unwrap());
        assert!(even(&json!({"num": 498})).unwrap());
        assert!(!even(&json!({"num": 7})).unwrap());
        assert!(even(&json!({"num": -4})).unwrap());
    }

    #[test]
    fn missing_num_is_an_error() {
        let e = even(&json!({"n": 2})).unwrap_err().to_string();
        assert!(e.contains("no integer field `num`"), "{e}");
        assert!(even(&json!({"num": "2"})).is_err());
    }
}
