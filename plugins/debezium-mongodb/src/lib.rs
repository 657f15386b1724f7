//! Debezium's MongoDB connector (2.x, change streams) applied to MongoDB: the
//! collection ends as the source collection is.
//!
//! - `op` `c` (insert), `r` (snapshot read), and `u` with an `after` image
//!   (`capture.mode` `change_streams_update_full…`): `after` replaces the
//!   document with its `_id` (inserted when absent);
//! - `u` without `after` (`capture.mode = change_streams`): the event's
//!   `updateDescription` is applied as `$set` / `$unset` by field path, and a
//!   truncated array as `$push` with `$slice`. Such an update of a document the
//!   collection does not hold changes nothing (the document was never captured:
//!   take a snapshot); parameter `upsert_updates = "true"` inserts the changed
//!   fields instead;
//! - `d` (delete), and a tombstone (no value, after a delete): the document
//!   with the key's `_id` is deleted;
//! - `t` / `m` events are dropped with a warning in the log.
//!
//! Debezium writes documents as extended-JSON text (`after`, `updatedFields`)
//! and the key as `{"id": "<the _id in extended JSON>"}`; ObjectIds, dates,
//! longs and decimals arrive in MongoDB as those types. 1.x oplog events
//! (`patch`) are refused with a clear error. Values may come in Avro (set
//! `kafka.key_format` / `value_format`) or with the JSON converter's
//! `{"schema", "payload"}` wrapper.

use mongo_events::{description_writes, document, id_from_text};
use sluice_plugin::{Output, Record, Result, Value, anyhow, bail, log, process, serde_json};

/// The JSON converter with schemas wraps a value as `{"schema", "payload"}`.
fn unwrap(v: Value) -> Value {
    match v {
        Value::Object(mut o) if o.contains_key("schema") && o.contains_key("payload") && o.len() == 2 => {
            o.remove("payload").unwrap_or(Value::Null)
        }
        v => v,
    }
}

/// The `_id` the key names: `{"id": "<extended JSON>"}`.
fn id_from_key(record: &Record) -> Result<Value> {
    let Some(key) = record.key else { bail!("the record has no key: Debezium's MongoDB connector keys every event by the document's _id") };
    let key: Value =
        unwrap(serde_json::from_slice(key).map_err(|e| anyhow!("the key is not JSON ({e}): set kafka.key_format to the key's format"))?);
    match key.get("id") {
        Some(Value::String(text)) => id_from_text(text),
        // A key already decoded to the value (e.g. by a transform upstream).
        Some(Value::Null) | None => bail!("the key {key} has no `id`: not a Debezium MongoDB key"),
        Some(other) => Ok(other.clone()),
    }
}

/// `after` as the document to store: its own `_id`, else the key's.
fn replacement(record: &Record, mut after: Value) -> Result<Output> {
    let Value::Object(fields) = &mut after else { bail!("`after` is not a document") };
    if !fields.contains_key("_id") {
        let id = id_from_key(record)?;
        let mut doc = serde_json::Map::with_capacity(fields.len() + 1);
        doc.insert("_id".into(), id);
        doc.append(fields);
        return Ok(Output::upsert(Value::Object(doc)));
    }
    Ok(Output::upsert(after))
}

#[process(init = mongo_events::setup)]
pub fn apply(record: &Record) -> Result<Vec<Output>> {
    let Some(bytes) = record.value else {
        return Ok(vec![Output::delete(id_from_key(record)?)]);
    };
    let event = unwrap(
        serde_json::from_slice(bytes).map_err(|e| anyhow!("value is not JSON ({e}): set kafka.value_format to the topic's format"))?,
    );
    let Some(op) = event.get("op").and_then(Value::as_str) else { bail!("not a Debezium change event: no `op` field") };
    match op {
        "c" | "r" => {
            let Some(after) = document(&event, "after")? else { bail!("a `{op}` event without `after`") };
            Ok(vec![replacement(record, after)?])
        }
        "u" => {
            if let Some(after) = document(&event, "after")? {
                return Ok(vec![replacement(record, after)?]);
            }
            if event.get("patch").is_some_and(|p| !p.is_null()) {
                bail!("a Debezium 1.x oplog event (`patch`): run the connector with capture.mode = change_streams (Debezium 2.x)");
            }
            let Some(description) = event.get("updateDescription").filter(|d| !d.is_null()) else {
                bail!("a `u` event with neither `after` nor `updateDescription`")
            };
            description_writes(&id_from_key(record)?, description)
        }
        "d" => Ok(vec![Output::delete(id_from_key(record)?)]),
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

    const OID: &str = r#"{"$oid": "65a0000000000000000000ff"}"#;

    fn key() -> String {
        json!({ "id": OID }).to_string()
    }

    fn rec<'a>(key: Option<&'a str>, value: Option<&'a str>) -> Record<'a> {
        Record { key: key.map(str::as_bytes), value: value.map(str::as_bytes), ..Record::new("dbserver1.inventory.customers", 0, 9, "") }
    }

    #[test]
    fn inserts_and_reads_replace_with_after() {
        let after = r#"{"_id": {"$oid": "65a0000000000000000000ff"}, "name": "Ann", "n": {"$numberLong": "5"}}"#;
        let v = json!({"after": after, "op": "c", "source": {"collection": "customers"}, "ts_ms": 1}).to_string();
        let out = apply(&rec(Some(&key()), Some(&v))).unwrap();
        assert_eq!(
            out,
            vec![Output::upsert(json!({"_id": {"$oid": "65a0000000000000000000ff"}, "name": "Ann", "n": {"$numberLong": "5"}}))]
        );
        // No `_id` in `after` (a projection upstream): the key's.
        let v = json!({"after": r#"{"name": "Bo"}"#, "op": "r"}).to_string();
        assert_eq!(
            apply(&rec(Some(&key()), Some(&v))).unwrap()[0].document,
            json!({"_id": {"$oid": "65a0000000000000000000ff"}, "name": "Bo"})
        );
    }

    #[test]
    fn updates_apply_their_description_or_their_after() {
        let v = json!({"op": "u", "after": null, "updateDescription": {"updatedFields": r#"{"name": "Cy"}"#, "removedFields": ["tmp"], "truncatedArrays": null}}).to_string();
        let out = apply(&rec(Some(&key()), Some(&v))).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].operation, out[0].upsert), (Operation::Update, false));
        assert_eq!(out[0].filter, Some(json!({"_id": {"$oid": "65a0000000000000000000ff"}})));
        assert_eq!(out[0].document, json!({"$set": {"name": "Cy"}, "$unset": {"tmp": ""}}));
        let v = json!({"op": "u", "after": r#"{"_id": 3, "name": "Di"}"#, "updateDescription": {"updatedFields": "{}"}}).to_string();
        assert_eq!(apply(&rec(Some(r#"{"id": "3"}"#), Some(&v))).unwrap(), vec![Output::upsert(json!({"_id": 3, "name": "Di"}))]);
    }

    #[test]
    fn deletes_and_tombstones_delete_by_the_keys_id() {
        let out = apply(&rec(Some(&key()), Some(r#"{"op": "d", "after": null, "before": null}"#))).unwrap();
        assert_eq!((out[0].operation, &out[0].document), (Operation::Delete, &json!({"_id": {"$oid": "65a0000000000000000000ff"}})));
        let out = apply(&rec(Some(r#"{"schema": {}, "payload": {"id": "\"abc\""}}"#), None)).unwrap();
        assert_eq!(out[0].document, json!({"_id": "abc"}));
    }

    #[test]
    fn bad_and_old_events_say_why() {
        let err = |k: Option<&str>, v: Option<&str>| apply(&rec(k, v)).unwrap_err().to_string();
        assert!(err(Some(&key()), Some(r#"{"op": "u", "patch": "{\"$set\": {}}"}"#)).contains("1.x"));
        assert!(err(Some(&key()), Some(r#"{"op": "u"}"#)).contains("neither"));
        assert!(err(Some(&key()), Some(r#"{"op": "c"}"#)).contains("without `after`"));
        assert!(err(Some(&key()), Some(r#"{"x": 1}"#)).contains("no `op`"));
        assert!(err(None, None).contains("no key"));
        assert!(err(Some(r#"{"_id": 1}"#), None).contains("no `id`"));
        assert!(err(Some(r#"{"id": "oops"}"#), None).contains("not extended JSON"));
        assert!(apply(&rec(Some(&key()), Some(r#"{"op": "m"}"#))).unwrap().is_empty());
    }
}
