//! MongoDB change-stream events applied to another MongoDB: the collection
//! ends as the watched one is. The events as the MongoDB Kafka source connector
//! publishes them (`publish.full.document.only = false`, `output.format.value`
//! `json` or `schema`), or as any producer that writes `watch()` events:
//!
//! - `insert`, `replace`: `fullDocument` replaces the document with the
//!   event's `documentKey._id` (inserted when absent);
//! - `update`: `fullDocument` when the stream looked it up (`fullDocument:
//!   updateLookup` …) replaces the document; otherwise `updateDescription` is
//!   applied as `$set` / `$unset` by field path, and a truncated array as
//!   `$push` with `$slice`. Such an update of a document the collection does not
//!   hold changes nothing; parameter `upsert_updates = "true"` inserts the
//!   changed fields instead;
//! - `delete`: the document with `documentKey._id` is deleted;
//! - a tombstone (no value; `publish.full.document.only.tombstone.on.delete`)
//!   deletes the document whose `_id` the key names (`{"_id": …}`); a key that
//!   is a resume token cannot say which, and fails the record;
//! - `drop`, `rename`, `dropDatabase`, `invalidate` and the DDL events are
//!   dropped with a warning in the log (never replayed as mass deletes).
//!
//! Documents may be documents or extended-JSON text (the connector's `schema`
//! output), and a value may be a JSON string holding the event (a string
//! converter under a JSON one): both are read.

use mongo_events::{description_writes, document};
use sluice_plugin::{Output, Record, Result, Value, anyhow, bail, log, process, serde_json};

/// JSON bytes as a value; a JSON string that holds JSON is read once more.
fn parse(what: &str, bytes: &[u8]) -> Result<Value> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("the {what} is not JSON ({e}): set kafka.{what}_format to its format"))?;
    match v {
        Value::String(text) => serde_json::from_str(&text).map_err(|e| anyhow!("the {what} is a string but not JSON: {e}")),
        v => Ok(v),
    }
}

/// The event's `documentKey._id`.
fn document_id(event: &Value) -> Result<Value> {
    match document(event, "documentKey")?.as_ref().and_then(|k| k.get("_id")) {
        Some(id) => Ok(id.clone()),
        None => bail!("the event has no `documentKey._id`"),
    }
}

/// `fullDocument` with the event's `_id`.
fn replacement(event: &Value, mut full: Value) -> Result<Output> {
    let Value::Object(fields) = &mut full else { bail!("`fullDocument` is not a document") };
    if !fields.contains_key("_id") {
        fields.insert("_id".into(), document_id(event)?);
    }
    Ok(Output::upsert(full))
}

fn tombstone(record: &Record) -> Result<Output> {
    let Some(key) = record.key else { bail!("a tombstone without a key: nothing says which document to delete") };
    match parse("key", key)?.get("_id") {
        Some(Value::Object(token)) if token.contains_key("_data") => {
            bail!("a tombstone keyed by a resume token: it does not name the document (set change.stream.document.key.as.key = true)")
        }
        Some(id) => Ok(Output::delete(id.clone())),
        None => bail!("a tombstone whose key has no `_id`"),
    }
}

#[process(init = mongo_events::setup)]
pub fn apply(record: &Record) -> Result<Vec<Output>> {
    let Some(bytes) = record.value else { return Ok(vec![tombstone(record)?]) };
    let event = parse("value", bytes)?;
    let Some(op) = event.get("operationType").and_then(Value::as_str) else {
        bail!(
            "not a change event: no `operationType` (with publish.full.document.only = true the values are documents: use the `keyed` plugin)"
        )
    };
    match op {
        "insert" | "replace" => {
            let Some(full) = document(&event, "fullDocument")? else { bail!("an `{op}` event without `fullDocument`") };
            Ok(vec![replacement(&event, full)?])
        }
        "update" => {
            if let Some(full) = document(&event, "fullDocument")? {
                return Ok(vec![replacement(&event, full)?]);
            }
            let Some(description) = event.get("updateDescription").filter(|d| !d.is_null()) else {
                bail!("an `update` event with neither `fullDocument` nor `updateDescription`")
            };
            description_writes(&document_id(&event)?, description)
        }
        "delete" => Ok(vec![Output::delete(document_id(&event)?)]),
        other => {
            log::warn!("change event `{other}` at offset {} dropped (not applied to MongoDB)", record.offset);
            Ok(vec![])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::{Operation, json};

    fn rec<'a>(key: Option<&'a str>, value: Option<&'a str>) -> Record<'a> {
        Record { key: key.map(str::as_bytes), value: value.map(str::as_bytes), ..Record::new("shop.orders", 1, 4, "") }
    }

    fn event(op: &str, extra: Value) -> String {
        let mut e = json!({"_id": {"_data": "8263A1"}, "operationType": op, "ns": {"db": "shop", "coll": "orders"},
            "documentKey": {"_id": {"$oid": "65a000000000000000000001"}}, "clusterTime": {"$timestamp": {"t": 1, "i": 2}}});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        e.to_string()
    }

    #[test]
    fn inserts_and_replaces_store_the_full_document() {
        let v = event("insert", json!({"fullDocument": {"_id": {"$oid": "65a000000000000000000001"}, "qty": 2}}));
        assert_eq!(
            apply(&rec(None, Some(&v))).unwrap(),
            vec![Output::upsert(json!({"_id": {"$oid": "65a000000000000000000001"}, "qty": 2}))]
        );
        // The schema output: documents as text; and the whole event as a JSON string.
        let v = event("replace", json!({"fullDocument": r#"{"qty": {"$numberInt": "3"}}"#}));
        let v = serde_json::to_string(&v).unwrap();
        assert_eq!(
            apply(&rec(None, Some(&v))).unwrap()[0].document,
            json!({"qty": {"$numberInt": "3"}, "_id": {"$oid": "65a000000000000000000001"}})
        );
    }

    #[test]
    fn updates_use_the_looked_up_document_or_the_description() {
        let v = event("update", json!({"fullDocument": {"_id": 1, "qty": 9}, "updateDescription": {"updatedFields": {"qty": 9}}}));
        assert_eq!(apply(&rec(None, Some(&v))).unwrap(), vec![Output::upsert(json!({"_id": 1, "qty": 9}))]);
        let v =
            event("update", json!({"fullDocument": null, "updateDescription": {"updatedFields": {"qty": 10}, "removedFields": ["note"]}}));
        let out = apply(&rec(None, Some(&v))).unwrap();
        assert_eq!((out[0].operation, out[0].upsert), (Operation::Update, false));
        assert_eq!(out[0].filter, Some(json!({"_id": {"$oid": "65a000000000000000000001"}})));
        assert_eq!(out[0].document, json!({"$set": {"qty": 10}, "$unset": {"note": ""}}));
    }

    #[test]
    fn deletes_and_tombstones_delete_by_the_documents_id() {
        let out = apply(&rec(None, Some(&event("delete", json!({}))))).unwrap();
        assert_eq!((out[0].operation, &out[0].document), (Operation::Delete, &json!({"_id": {"$oid": "65a000000000000000000001"}})));
        let out = apply(&rec(Some(r#"{"_id": 42}"#), None)).unwrap();
        assert_eq!(out[0].document, json!({"_id": 42}));
    }

    #[test]
    fn other_events_drop_and_bad_ones_say_why() {
        assert!(apply(&rec(None, Some(&event("drop", json!({}))))).unwrap().is_empty());
        let err = |k: Option<&str>, v: Option<&str>| apply(&rec(k, v)).unwrap_err().to_string();
        assert!(err(Some(r#"{"_id": {"_data": "8263"}}"#), None).contains("resume token"));
        assert!(err(None, None).contains("without a key"));
        assert!(err(None, Some(r#"{"qty": 1}"#)).contains("keyed"));
        assert!(err(None, Some(&event("insert", json!({})))).contains("without `fullDocument`"));
        assert!(err(None, Some(&event("update", json!({})))).contains("neither"));
        assert!(err(None, Some(r#"{"operationType": "delete"}"#)).contains("documentKey"));
        assert!(err(None, Some("\"{oops\"")).contains("string but not JSON"));
    }
}
