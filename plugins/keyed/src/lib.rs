//! Business keys: the record key is the document's `_id` (Kafka Connect's
//! `ProvidedInKeyStrategy`), so a newer record with the same key replaces the
//! document, and a tombstone (no value) deletes it — a compacted topic's
//! latest state, kept in MongoDB.
//!
//! The key is read as JSON (decoded first when `kafka.key_format` is avro,
//! protobuf…); a key that is not JSON is taken as a string. Parameter
//! `key_field = "id"` takes that field of a key document as the `_id` instead of
//! the whole key. Parameter `mode = "insert"` inserts instead of replacing (a
//! second record with the key is then a duplicate, counted and skipped).

use sluice_plugin::{Output, Params, Record, Result, Value, anyhow, bail, process, serde_json};
use std::sync::OnceLock;

#[derive(Debug, Default)]
struct Settings {
    key_field: Option<String>,
    insert: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn setup(params: &Params) -> Result<()> {
    let key_field = params.get("key_field").map(str::to_owned);
    if let Some(f) = &key_field
        && (f.is_empty() || f.starts_with('$'))
    {
        bail!("parameter `key_field` = {f:?} is not a usable field name");
    }
    let insert = match params.get("mode").unwrap_or("replace") {
        "replace" => false,
        "insert" => true,
        other => bail!("parameter `mode` = {other:?}: replace or insert"),
    };
    let _ = SETTINGS.set(Settings { key_field, insert });
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// The `_id` a record's key gives.
fn id_of(record: &Record, s: &Settings) -> Result<Value> {
    let Some(key) = record.key else { bail!("the record has no key, so no _id") };
    let key: Value = serde_json::from_slice(key).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(key).into_owned()));
    match &s.key_field {
        None if key.is_null() => bail!("the key is null, so no _id"),
        None => Ok(key),
        Some(f) => key.get(f).cloned().ok_or_else(|| anyhow!("the key {key} has no field `{f}` (key_field)")),
    }
}

#[process(init = setup)]
pub fn keyed(record: &Record) -> Result<Vec<Output>> {
    let s = settings();
    let id = id_of(record, s)?;
    let Some(_) = record.value else { return Ok(vec![Output::delete(id)]) };
    let Value::Object(value) = record.json()? else { bail!("the value is not a JSON object") };
    let mut doc = serde_json::Map::with_capacity(value.len() + 1);
    doc.insert("_id".into(), id);
    doc.extend(value.into_iter().filter(|(k, _)| k != "_id"));
    let doc = Value::Object(doc);
    Ok(vec![if s.insert { Output::insert(doc) } else { Output::upsert(doc) }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::{Operation, json};

    fn rec<'a>(key: Option<&'a str>, value: Option<&'a str>) -> Record<'a> {
        Record { key: key.map(str::as_bytes), value: value.map(str::as_bytes), ..Record::new("t", 0, 3, "") }
    }

    #[test]
    fn the_key_is_the_id_and_a_tombstone_deletes() {
        let out = keyed(&rec(Some(r#"{"id":7,"r":"eu"}"#), Some(r#"{"n":1,"_id":"ignored"}"#))).unwrap();
        assert_eq!(out, vec![Output::upsert(json!({"_id": {"id": 7, "r": "eu"}, "n": 1}))]);
        assert_eq!(keyed(&rec(Some("plain-text"), Some("{}"))).unwrap()[0].document, json!({"_id": "plain-text"}));
        let out = keyed(&rec(Some("5"), None)).unwrap();
        assert_eq!((out[0].operation, &out[0].document), (Operation::Delete, &json!({"_id": 5})));
    }

    #[test]
    fn key_field_picks_a_field_and_bad_records_say_why() {
        let s = Settings { key_field: Some("id".into()), insert: false };
        assert_eq!(id_of(&rec(Some(r#"{"id":7}"#), None), &s).unwrap(), json!(7));
        assert!(id_of(&rec(Some(r#"{"x":7}"#), None), &s).unwrap_err().to_string().contains("no field `id`"));
        assert!(keyed(&rec(None, Some("{}"))).unwrap_err().to_string().contains("no key"));
        assert!(keyed(&rec(Some("1"), Some("[1]"))).unwrap_err().to_string().contains("not a JSON object"));
        assert!(setup(&Params::from_pairs([("mode", "upsert")])).is_err());
    }
}
