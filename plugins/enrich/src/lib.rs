//! Adds computed fields: `square` (= num²) and the record's source coordinates
//! under `source` (`topic`, `partition`, `offset`). Parameter `square_field`
//! renames the `square` field.

use sluice_plugin::{Params, Record, Result, Value, anyhow, json, map};
use std::sync::OnceLock;

static SQUARE_FIELD: OnceLock<String> = OnceLock::new();

pub fn setup(params: &Params) -> Result<()> {
    let field = params.get("square_field").unwrap_or("square");
    if field.is_empty() || field.starts_with('$') || field.contains('.') {
        return Err(anyhow!("parameter `square_field` = {field:?} is not a usable MongoDB field name"));
    }
    let _ = SQUARE_FIELD.set(field.to_owned());
    Ok(())
}

#[map(init = setup)]
pub fn enrich(mut doc: Value, record: &Record) -> Result<Value> {
    let n = doc.get("num").and_then(Value::as_i64).ok_or_else(|| anyhow!("no integer field `num` in {doc}"))?;
    let square = n.checked_mul(n).ok_or_else(|| anyhow!("num {n} squared overflows 64 bits"))?;
    let obj = doc.as_object_mut().ok_or_else(|| anyhow!("value is not a JSON object"))?;
    let field = SQUARE_FIELD.get().map(String::as_str).unwrap_or("square");
    obj.insert(field.to_owned(), square.into());
    obj.insert("source".into(), json!({ "topic": record.topic, "partition": record.partition, "offset": record.offset }));
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_square_and_source() {
        let r = Record::new("testnum", 2, 41, r#"{"num":12}"#);
        let out = enrich(json!({"num": 12}), &r).unwrap();
        assert_eq!(out, json!({"num": 12, "square": 144, "source": {"topic": "testnum", "partition": 2, "offset": 41}}));
    }

    #[test]
    fn rejects_bad_input() {
        let r = Record::new("t", 0, 0, "");
        assert!(enrich(json!({"num": 1.5}), &r).is_err());
        assert!(enrich(json!({"num": i64::MAX}), &r).unwrap_err().to_string().contains("overflows"));
    }

    #[test]
    fn init_checks_field_name() {
        assert!(setup(&Params::from_pairs([("square_field", "a.b")])).is_err());
        assert!(setup(&Params::default()).is_ok());
    }
}
