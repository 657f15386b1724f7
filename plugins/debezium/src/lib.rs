//! Debezium's relational change events (MySQL, PostgreSQL, SQL Server, Oracle…)
//! applied to MongoDB: the collection ends as the table is.
//!
//! - `op` `c` (create), `r` (snapshot read), `u` (update): the row's `after`
//!   image replaces the document with its `_id` (inserted when absent);
//! - `d` (delete), and a tombstone (no value: what Debezium sends after a
//!   delete, for compaction): the document with its `_id` is deleted;
//! - `t` (truncate) and `m` (message) events are dropped, with a warning in the
//!   log (a truncate cannot be replayed safely as a delete of all).
//!
//! The `_id` is the record key, which Debezium fills with the row's primary key:
//! a key of one column gives that column's value, a key of several columns the
//! key document (`{"a": 1, "b": 2}`). Parameter `id_fields = "a,b"` takes the
//! `_id` from those columns of the row image instead (tables without a primary
//! key, or keys you do not want); one field gives its value, several a document.
//! Parameter `source_field = "_source"` keeps Debezium's `source` block and
//! `ts_ms` under that field (default: not kept). Plain JSON topics work too: the
//! envelope may come with the JSON converter's `{"schema": …, "payload": …}`.

use sluice_plugin::{Output, Params, Record, Result, Value, anyhow, bail, log, process, serde_json};
use std::sync::OnceLock;

#[derive(Debug, Default)]
struct Settings {
    id_fields: Vec<String>,
    source_field: Option<String>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn field_name(what: &str, f: &str) -> Result<String> {
    if f.is_empty() || f.starts_with('$') || f.contains('\0') {
        bail!("parameter `{what}`: {f:?} is not a usable field name");
    }
    Ok(f.to_owned())
}

pub fn setup(params: &Params) -> Result<()> {
    let id_fields = match params.get("id_fields") {
        Some(list) => list.split(',').map(|f| field_name("id_fields", f.trim())).collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let source_field = params.get("source_field").map(|f| field_name("source_field", f)).transpose()?;
    let _ = SETTINGS.set(Settings { id_fields, source_field });
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// The JSON converter with schemas wraps the envelope as `{"schema", "payload"}`.
fn unwrap(v: Value) -> Value {
    match v {
        Value::Object(mut o) if o.contains_key("schema") && o.contains_key("payload") && o.len() == 2 => {
            o.remove("payload").unwrap_or(Value::Null)
        }
        v => v,
    }
}

/// The `_id` from the key: one field's value, or the key document.
fn id_from_key(record: &Record) -> Result<Value> {
    let Some(key) = record.key else {
        bail!("the record has no key: Debezium keys carry the primary key; for a table without one, set `id_fields`")
    };
    let key: Value =
        unwrap(serde_json::from_slice(key).map_err(|e| anyhow!("the key is not JSON ({e}): set kafka.key_format to the key's format"))?);
    match key {
        Value::Object(o) if o.len() == 1 => Ok(o.into_iter().next().expect("one field").1),
        Value::Object(o) if !o.is_empty() => Ok(Value::Object(o)),
        Value::Null => bail!("the key is null: Debezium keys carry the primary key; for a table without one, set `id_fields`"),
        Value::Object(_) => bail!("the key is an empty document"),
        other => Ok(other),
    }
}

/// The `_id` from `id_fields` of a row image.
fn id_from_row(row: &Value, fields: &[String]) -> Result<Value> {
    let get = |f: &String| row.get(f).cloned().ok_or_else(|| anyhow!("the row has no field `{f}` (id_fields)"));
    match fields {
        [one] => get(one),
        many => Ok(Value::Object(many.iter().map(|f| Ok((f.clone(), get(f)?))).collect::<Result<_>>()?)),
    }
}

#[process(init = setup)]
pub fn apply(record: &Record) -> Result<Vec<Output>> {
    let s = settings();
    let Some(bytes) = record.value else {
        // A tombstone: only the key says which row.
        if !s.id_fields.is_empty() {
            log::warn!("tombstone at offset {} skipped: with id_fields the key does not give the _id", record.offset);
            return Ok(vec![]);
        }
        return Ok(vec![Output::delete(id_from_key(record)?)]);
    };
    let envelope = unwrap(
        serde_json::from_slice(bytes).map_err(|e| anyhow!("value is not JSON ({e}): set kafka.value_format to the topic's format"))?,
    );
    let Some(op) = envelope.get("op").and_then(Value::as_str) else { bail!("not a Debezium change event: no `op` field") };
    let id = |row: &Value| if s.id_fields.is_empty() { id_from_key(record) } else { id_from_row(row, &s.id_fields) };
    match op {
        "c" | "r" | "u" => {
            let Some(Value::Object(after)) = envelope.get("after") else { bail!("a `{op}` event without an `after` row") };
            let mut doc = sluice_plugin::serde_json::Map::with_capacity(after.len() + 2);
            doc.insert("_id".into(), id(&Value::Object(after.clone()))?);
            doc.extend(after.iter().filter(|(k, _)| *k != "_id").map(|(k, v)| (k.clone(), v.clone())));
            if let Some(field) = &s.source_field {
                doc.insert(
                    field.clone(),
                    serde_json::json!({ "source": envelope.get("source"), "ts_ms": envelope.get("ts_ms"), "op": op }),
                );
            }
            Ok(vec![Output::upsert(Value::Object(doc))])
        }
        "d" => {
            let before = envelope.get("before").cloned().unwrap_or(Value::Null);
            Ok(vec![Output::delete(id(&before)?)])
        }
        "t" | "m" => {
            log::warn!("Debezium `{op}` event at offset {} dropped (not applied to MongoDB)", record.offset);
            Ok(vec![])
        }
        other => bail!("unknown Debezium op {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::{Operation, json};

    fn rec<'a>(key: Option<&'a str>, value: Option<&'a str>) -> Record<'a> {
        Record { key: key.map(str::as_bytes), value: value.map(str::as_bytes), ..Record::new("db.inv.customers", 0, 7, "") }
    }

    #[test]
    fn creates_updates_and_snapshots_replace_by_key() {
        let v = r#"{"before":null,"after":{"id":1,"name":"Ann"},"source":{"db":"inv"},"op":"c","ts_ms":5}"#;
        let out = apply(&rec(Some(r#"{"id":1}"#), Some(v))).unwrap();
        assert_eq!(out, vec![Output::upsert(json!({"_id": 1, "id": 1, "name": "Ann"}))]);
        let v = r#"{"before":{"id":1,"name":"Ann"},"after":{"id":1,"name":"Bo"},"op":"u"}"#;
        assert_eq!(apply(&rec(Some(r#"{"a":1,"b":"x"}"#), Some(v))).unwrap()[0].document["_id"], json!({"a": 1, "b": "x"}));
    }

    #[test]
    fn deletes_and_tombstones_delete_by_key() {
        let v = r#"{"before":{"id":2},"after":null,"op":"d"}"#;
        let out = apply(&rec(Some(r#"{"id":2}"#), Some(v))).unwrap();
        assert_eq!((out[0].operation, &out[0].document), (Operation::Delete, &json!({"_id": 2})));
        let out = apply(&rec(Some(r#"{"schema":{},"payload":{"id":2}}"#), None)).unwrap();
        assert_eq!(out[0].document, json!({"_id": 2}));
    }

    #[test]
    fn truncates_drop_and_bad_events_say_why() {
        assert!(apply(&rec(Some("{}"), Some(r#"{"op":"t"}"#))).unwrap().is_empty());
        assert!(apply(&rec(Some(r#"{"id":1}"#), Some(r#"{"x":1}"#))).unwrap_err().to_string().contains("no `op`"));
        assert!(apply(&rec(None, Some(r#"{"op":"c","after":{"id":1}}"#))).unwrap_err().to_string().contains("no key"));
        assert!(apply(&rec(Some(r#"{"id":1}"#), Some(r#"{"op":"c"}"#))).unwrap_err().to_string().contains("without an `after`"));
        assert!(apply(&rec(Some("\x00\x00"), Some(r#"{"op":"d"}"#))).unwrap_err().to_string().contains("key_format"));
    }

    #[test]
    fn id_fields_take_the_id_from_the_row() {
        let s = Settings { id_fields: vec!["a".into(), "b".into()], source_field: None };
        assert_eq!(id_from_row(&json!({"a": 1, "b": 2, "c": 3}), &s.id_fields).unwrap(), json!({"a": 1, "b": 2}));
        assert!(id_from_row(&json!({"a": 1}), &s.id_fields).unwrap_err().to_string().contains("`b`"));
        assert!(setup(&Params::from_pairs([("id_fields", "a,$b")])).is_err());
    }
}
