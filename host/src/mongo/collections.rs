//! Collections at start: `[mongo.timeseries]` and `[[mongo.indexes]]`, made
//! before anything is consumed ([`prepare`]).
//!
//! The time-series collection is created if absent (`create` with
//! `timeseries`); an existing collection must already be one, with the same
//! `timeField` and `metaField` (MongoDB cannot convert a collection). Then one
//! `createIndexes` per index: MongoDB does nothing for an identical index that
//! exists, and refuses one whose name or keys exist with other options (codes 85
//! IndexOptionsConflict, 86 IndexKeySpecsConflict). After each command what the
//! server lists is checked against what was asked, so a server that accepts an
//! option without applying it stops the start too.
//!
//! Every refusal stops the start with an error naming the collection, the index
//! and the server's own answer (code and message), so a user can tell the
//! server refusing from Sluice refusing. The commands are built by pure
//! functions ([`timeseries_command`], [`index_commands`]): what is sent is what
//! a unit test reads.

use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;

use crate::config::MongoConfig;

/// MongoDB's IndexOptionsConflict: an index with this name or these keys exists with other options.
pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
/// MongoDB's IndexKeySpecsConflict: an index with this name exists with other keys.
pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
/// MongoDB's NamespaceExists (a `create` that lost a race with another host).
const NAMESPACE_EXISTS: i32 = 48;

/// Why the collections could not be prepared; the start stops.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PrepareError {
    pub collection: String,
    /// The index concerned, if it is about one.
    pub index: Option<String>,
    /// The server's error code, when the server refused a command.
    pub code: Option<i32>,
    pub message: String,
}

/// One `createIndexes` to send.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexCommand {
    pub collection: String,
    pub name: String,
    pub command: Document,
}

/// The `create` of `[mongo.timeseries]`, if configured.
pub fn timeseries_command(cfg: &MongoConfig) -> Option<Document> {
    let ts = cfg.timeseries.as_ref()?;
    let mut options = doc! { "timeField": &ts.time_field };
    if let Some(meta) = &ts.meta_field {
        options.insert("metaField", meta);
    }
    if let Some(g) = ts.granularity {
        options.insert("granularity", g.as_str());
    }
    let mut command = doc! { "create": &cfg.collection, "timeseries": options };
    if let Some(ttl) = ts.expire_after {
        command.insert("expireAfterSeconds", seconds(ttl));
    }
    Some(command)
}

/// One `createIndexes` per `[[mongo.indexes]]` entry, in the configured order.
pub fn index_commands(cfg: &MongoConfig) -> Vec<IndexCommand> {
    cfg.indexes
        .iter()
        .map(|ix| {
            let mut key = Document::new();
            for k in &ix.keys {
                key.insert(&k.field, k.order as i32);
            }
            let name = ix.name();
            let mut spec = doc! { "key": key, "name": &name };
            if ix.unique {
                spec.insert("unique", true);
            }
            if let Some(ttl) = ix.expire_after {
                spec.insert("expireAfterSeconds", seconds(ttl));
            }
            if let Some(filter) = &ix.partial_filter {
                spec.insert("partialFilterExpression", table(filter));
            }
            let collection = ix.collection_in(cfg).to_owned();
            let command = doc! { "createIndexes": &collection, "indexes": [spec] };
            IndexCommand { collection, name, command }
        })
        .collect()
}

/// Make the configured time-series collection and indexes, if absent; check
/// that existing ones are what the configuration says.
pub async fn prepare(cfg: &MongoConfig, db: &Database) -> Result<(), PrepareError> {
    if let Some(command) = timeseries_command(cfg) {
        ensure_timeseries(cfg, db, command).await?;
    }
    for ix in index_commands(cfg) {
        ensure_index(db, &ix).await?;
    }
    Ok(())
}

async fn ensure_timeseries(cfg: &MongoConfig, db: &Database, command: Document) -> Result<(), PrepareError> {
    let coll = &cfg.collection;
    let ns = format!("{}.{coll}", db.name());
    let fail = |code: Option<i32>, message: String| PrepareError { collection: coll.clone(), index: None, code, message };
    let listed = |e: mongodb::error::Error| fail(code(&e), format!("cannot list collection {ns}: {}", answer(&e)));
    let mut info = list_collection(db, coll).await.map_err(listed)?;
    if info.is_none() {
        match db.run_command(command.clone()).await {
            Ok(_) => tracing::info!(event = "collection_created", collection = %coll, "created the time-series collection {ns}"),
            Err(e) if code(&e) == Some(NAMESPACE_EXISTS) => {}
            Err(e) => {
                return Err(fail(
                    code(&e),
                    format!(
                        "cannot create the time-series collection {ns} ([mongo.timeseries]): the server refused `create`: {}{}; sent {command}",
                        answer(&e),
                        hint(code(&e))
                    ),
                ));
            }
        }
        info = list_collection(db, coll).await.map_err(listed)?;
    }
    let Some(info) = info else {
        return Err(fail(None, format!("the server accepted `create` of {ns} but does not list it")));
    };
    let kind = info.get_str("type").unwrap_or("collection");
    if kind != "timeseries" {
        return Err(fail(
            None,
            format!(
                "collection {ns} exists and is a {kind}, not a time-series collection, but [mongo.timeseries] is configured: \
                 MongoDB cannot convert it. Drop it, write to another collection, or remove [mongo.timeseries]"
            ),
        ));
    }
    let ts = cfg.timeseries.as_ref().expect("a command means a configuration");
    let has = info.get_document("options").and_then(|o| o.get_document("timeseries")).cloned().unwrap_or_default();
    let (time, meta) = (has.get_str("timeField").ok(), has.get_str("metaField").ok());
    if time != Some(ts.time_field.as_str()) || meta != ts.meta_field.as_deref() {
        return Err(fail(
            None,
            format!(
                "time-series collection {ns} exists with timeField {time:?} and metaField {meta:?}, \
                 but [mongo.timeseries] says time_field {:?} and meta_field {:?}",
                ts.time_field, ts.meta_field
            ),
        ));
    }
    tracing::warn!(
        collection = %coll,
        "{ns} is a time-series collection: MongoDB keeps no unique _id there, so records replayed after a crash can be stored twice"
    );
    Ok(())
}

async fn ensure_index(db: &Database, ix: &IndexCommand) -> Result<(), PrepareError> {
    let ns = format!("{}.{}", db.name(), ix.collection);
    let fail = |code: Option<i32>, message: String| PrepareError {
        collection: ix.collection.clone(),
        index: Some(ix.name.clone()),
        code,
        message,
    };
    let reply = db.run_command(ix.command.clone()).await.map_err(|e| {
        let what = match code(&e) {
            Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT) => "it conflicts with an existing index",
            _ => "the server refused `createIndexes`",
        };
        fail(code(&e), format!("cannot create index {:?} on {ns}: {what}: {}{}; sent {}", ix.name, answer(&e), hint(code(&e)), ix.command))
    })?;
    let created = match (int(reply.get("numIndexesBefore")), int(reply.get("numIndexesAfter"))) {
        (Some(before), Some(after)) => after > before,
        _ => false,
    };
    tracing::info!(event = "index_ready", collection = %ix.collection, index = %ix.name, created, "index {:?} on {ns} is there", ix.name);
    // What the server has under that name must be what was asked.
    let listed =
        list_indexes(db, &ix.collection).await.map_err(|e| fail(code(&e), format!("cannot list the indexes of {ns}: {}", answer(&e))))?;
    let Some(has) = listed.iter().find(|d| d.get_str("name").ok() == Some(ix.name.as_str())) else {
        return Err(fail(None, format!("the server accepted index {:?} on {ns} but does not list it", ix.name)));
    };
    let wanted = ix.command.get_array("indexes").ok().and_then(|a| a.first()).and_then(Bson::as_document).expect("built with one index");
    if let Some(diff) = differs(wanted, has) {
        return Err(fail(
            None,
            format!(
                "index {:?} on {ns} exists with other options ({diff}): the server has {has}; drop it or give this one another `name`",
                ix.name
            ),
        ));
    }
    Ok(())
}

/// What differs between an index asked for and the one listed, if anything that matters.
fn differs(wanted: &Document, has: &Document) -> Option<String> {
    let keys = |d: &Document| -> Vec<(String, Option<i64>)> {
        d.get_document("key").map(|k| k.iter().map(|(f, v)| (f.clone(), int(Some(v)))).collect()).unwrap_or_default()
    };
    if keys(wanted) != keys(has) {
        return Some("keys".into());
    }
    if wanted.get_bool("unique").unwrap_or(false) != has.get_bool("unique").unwrap_or(false) {
        return Some("unique".into());
    }
    if int(wanted.get("expireAfterSeconds")) != int(has.get("expireAfterSeconds")) {
        return Some("expireAfterSeconds".into());
    }
    if wanted.contains_key("partialFilterExpression") != has.contains_key("partialFilterExpression") {
        return Some("partialFilterExpression".into());
    }
    None
}

/// The `listCollections` entry of `name`, if it exists.
async fn list_collection(db: &Database, name: &str) -> mongodb::error::Result<Option<Document>> {
    let reply = db.run_command(doc! { "listCollections": 1, "filter": { "name": name } }).await?;
    Ok(first_batch(&reply).into_iter().next())
}

/// The `listIndexes` entries of `collection` (at most 64: one batch).
async fn list_indexes(db: &Database, collection: &str) -> mongodb::error::Result<Vec<Document>> {
    let reply = db.run_command(doc! { "listIndexes": collection }).await?;
    Ok(first_batch(&reply))
}

fn first_batch(reply: &Document) -> Vec<Document> {
    let batch = reply.get_document("cursor").and_then(|c| c.get_array("firstBatch"));
    batch.map(|b| b.iter().filter_map(Bson::as_document).cloned().collect()).unwrap_or_default()
}

/// A number as an integer, whatever its BSON type.
fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

/// A validated TTL as MongoDB's `expireAfterSeconds`.
fn seconds(d: std::time::Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// The server's error code, if the server answered with one.
fn code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// The server's answer as it gave it: `error CODE (NAME): MESSAGE`.
fn answer(e: &mongodb::error::Error) -> String {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("error {} ({}): {}", c.code, c.code_name, c.message),
        _ => e.to_string(),
    }
}

/// What a user can do about a refusal.
fn hint(code: Option<i32>) -> &'static str {
    match code {
        Some(INDEX_OPTIONS_CONFLICT | INDEX_KEY_SPECS_CONFLICT) => {
            " (an index with this name or these keys exists with other options: drop it, or give this one another `name`)"
        }
        // NotImplemented, CommandNotSupported, CommandNotFound.
        Some(238 | 115 | 59) => {
            " (this server does not implement it: FerretDB v1 has no TTL or partial indexes and no time-series collections, \
             see docs/ferretdb.md; remove it from the configuration or use MongoDB)"
        }
        _ => "",
    }
}

/// A TOML table (`partial_filter`) as a BSON document; integers that fit are 32-bit.
fn table(t: &toml::Table) -> Document {
    t.iter().map(|(k, v)| (k.clone(), value(v))).collect()
}

fn value(v: &toml::Value) -> Bson {
    match v {
        toml::Value::String(s) => Bson::String(s.clone()),
        toml::Value::Integer(i) => i32::try_from(*i).map(Bson::Int32).unwrap_or(Bson::Int64(*i)),
        toml::Value::Float(f) => Bson::Double(*f),
        toml::Value::Boolean(b) => Bson::Boolean(*b),
        toml::Value::Datetime(d) => match mongodb::bson::DateTime::parse_rfc3339_str(d.to_string()) {
            Ok(t) => Bson::DateTime(t),
            Err(_) => Bson::String(d.to_string()),
        },
        toml::Value::Array(a) => Bson::Array(a.iter().map(value).collect()),
        toml::Value::Table(t) => Bson::Document(table(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mongo(extra: &str) -> MongoConfig {
        let text = format!("uri = \"mongodb://127.0.0.1:27017\"\ndatabase = \"d\"\ncollection = \"events\"\n{extra}");
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The exact bytes of two documents: same fields, same order, same BSON types.
    fn same(a: &Document, b: &Document) -> bool {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.to_writer(&mut x).unwrap();
        b.to_writer(&mut y).unwrap();
        x == y
    }

    #[test]
    fn a_compound_and_a_unique_index_are_one_create_indexes_each() {
        let cfg = mongo(
            r#"
            [[indexes]]
            keys = [{ field = "customer", order = 1 }, { field = "ts", order = -1 }]
            [[indexes]]
            keys = [{ field = "order_id" }]
            unique = true
            name = "order_id_unique"
            collection = "orders"
            partial_filter = { order_id = { "$exists" = true } }
            "#,
        );
        let cmds = index_commands(&cfg);
        assert_eq!(cmds.len(), 2);
        assert_eq!((cmds[0].collection.as_str(), cmds[0].name.as_str()), ("events", "customer_1_ts_-1"));
        let want =
            doc! { "createIndexes": "events", "indexes": [{ "key": { "customer": 1_i32, "ts": -1_i32 }, "name": "customer_1_ts_-1" }] };
        assert!(same(&cmds[0].command, &want), "{}", cmds[0].command);
        // Field order in `key` is the index's order: reversed, it is another index.
        let reversed =
            doc! { "createIndexes": "events", "indexes": [{ "key": { "ts": -1_i32, "customer": 1_i32 }, "name": "customer_1_ts_-1" }] };
        assert!(!same(&cmds[0].command, &reversed));
        let want = doc! { "createIndexes": "orders", "indexes": [{
            "key": { "order_id": 1_i32 }, "name": "order_id_unique", "unique": true,
            "partialFilterExpression": { "order_id": { "$exists": true } },
        }] };
        assert!(same(&cmds[1].command, &want), "{}", cmds[1].command);
    }

    #[test]
    fn a_ttl_index_sends_expire_after_seconds() {
        let cfg = mongo("[[indexes]]\nkeys = [{ field = \"ts\", order = 1 }]\nexpire_after = \"1day\"\n");
        let want =
            doc! { "createIndexes": "events", "indexes": [{ "key": { "ts": 1_i32 }, "name": "ts_1", "expireAfterSeconds": 86_400_i32 }] };
        assert!(same(&index_commands(&cfg)[0].command, &want), "{}", index_commands(&cfg)[0].command);
        assert!(timeseries_command(&cfg).is_none());
    }

    #[test]
    fn a_timeseries_collection_is_one_create() {
        let cfg = mongo("[timeseries]\ntime_field = \"ts\"\nmeta_field = \"sensor\"\ngranularity = \"minutes\"\nexpire_after = \"30d\"\n");
        let want = doc! {
            "create": "events",
            "timeseries": { "timeField": "ts", "metaField": "sensor", "granularity": "minutes" },
            "expireAfterSeconds": 2_592_000_i32,
        };
        let got = timeseries_command(&cfg).unwrap();
        assert!(same(&got, &want), "{got}");
        let minimal = timeseries_command(&mongo("[timeseries]\ntime_field = \"ts\"\n")).unwrap();
        assert!(same(&minimal, &doc! { "create": "events", "timeseries": { "timeField": "ts" } }), "{minimal}");
        assert!(index_commands(&cfg).is_empty());
    }

    #[test]
    fn what_the_server_lists_is_compared_with_what_was_asked() {
        let wanted = doc! { "key": { "a": 1_i32, "b": -1_i32 }, "name": "x", "unique": true };
        let listed = doc! { "v": 2, "key": { "a": 1.0, "b": -1_i64 }, "name": "x", "unique": true };
        assert_eq!(differs(&wanted, &listed), None);
        assert_eq!(differs(&wanted, &doc! { "key": { "b": -1, "a": 1 }, "name": "x", "unique": true }).as_deref(), Some("keys"));
        assert_eq!(differs(&wanted, &doc! { "key": { "a": 1, "b": -1 }, "name": "x" }).as_deref(), Some("unique"));
        let ttl = doc! { "key": { "ts": 1 }, "name": "ts_1", "expireAfterSeconds": 60 };
        assert_eq!(differs(&ttl, &doc! { "key": { "ts": 1 }, "name": "ts_1" }).as_deref(), Some("expireAfterSeconds"));
    }
}
