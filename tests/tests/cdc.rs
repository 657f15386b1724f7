//! The CDC plugins on the real services, fed change events in the shapes their
//! sources publish, written by Confluent's own Avro serializer
//! (`confluent-kafka`) against the test registry: Debezium's relational
//! envelope (`debezium`), Debezium's MongoDB connector (`debezium-mongodb`) and
//! the MongoDB source connector's change-stream events (`change-stream`). Each
//! stream ends as its source's final state, the Debezium ones also after a
//! host is killed with `kill -9` mid-stream.

use std::collections::BTreeMap;
use std::time::Duration;

use mongodb::bson::{Bson, Document};
use serde_json::{Value, json};
use sluice_tests::*;

/// One test at a time: each runs hosts, and the kill -9 timing wants the cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `--value-format avro --value-schema V [--key-format avro --key-schema K]`.
fn avro_args(value: &str, key: Option<&str>) -> Vec<String> {
    let path = |f: &str| format_data(f).to_str().unwrap().to_owned();
    let mut args = vec!["--value-format".to_owned(), "avro".into(), "--value-schema".into(), path(value)];
    if let Some(key) = key {
        args.extend(["--key-format".to_owned(), "avro".into(), "--key-schema".into(), path(key)]);
    }
    args
}

/// Produce `lines` with `args`, kill a host (that records its progress in
/// neither store for 30 s) after some documents are written, produce `more`,
/// and let another host finish: its summary, after checking that it replayed
/// the victim's work and dead-lettered nothing.
async fn kill_9_mid_stream(env: &TestEnv, builder: ConfigBuilder, args: &[String], lines: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The dead host leaves the group after its session timeout: short, so the next one starts soon.
    let builder = builder.kafka_option("session.timeout.ms", "6000").kafka_option("heartbeat.interval.ms", "1000").set(
        "pipeline",
        "drain_timeout",
        "4s",
    );
    let (first, second) = lines.split_at(lines.len() / 2);
    sr_produce(&env.topic, &args, &(first.join("\n") + "\n"));
    // What the victim applied before the kill is certainly replayed by the next host.
    let victim = builder
        .clone()
        .kafka_option("auto.commit.interval.ms", "30000")
        .set("pipeline", "progress_interval", "30s")
        .write(env.dir.path().join("victim.toml"));
    let mut host = Host::spawn(env, "victim", &victim, false);
    env.wait_for_count(10, Duration::from_secs(60)).await.unwrap();
    host.kill9();
    // The stream goes on while no host runs; then another takes over.
    sr_produce(&env.topic, &args, &(second.join("\n") + "\n"));
    let config = builder.write(env.dir.path().join("final.toml"));
    let mut last = Host::spawn(env, "final", &config, true);
    let status = last.wait(Duration::from_secs(180)).await;
    assert!(status.success(), "{status}\n{}", last.log_tail(30));
    assert_eq!(last.summary("consumed"), Some(lines.len() as u64), "the killed host's work was replayed: {}", last.log_tail(10));
    assert_eq!(last.summary("dead_lettered"), Some(0), "{}", last.log_tail(10));
    env.assert_committed_at_end();
}

/// A Debezium stream of one table: snapshot reads, creates, updates, deletes
/// with their tombstones, re-created rows; and the table it leaves.
fn debezium_stream(events: usize) -> (Vec<String>, BTreeMap<i32, (String, String)>) {
    let mut table: BTreeMap<i32, (String, String)> = BTreeMap::new();
    let mut lines = Vec::new();
    let mut lsn = 1000i64;
    let row = |id: i32, version: usize| (format!("name-{id}-v{version}"), format!("{}.{:02}", id * 3 + version as i32, version % 100));
    let event = |op: &str, id: i32, before: Option<&(String, String)>, after: Option<&(String, String)>, lsn: i64| {
        let image = |r: Option<&(String, String)>| match r {
            None => Value::Null,
            Some((name, balance)) => json!({
                "id": id, "first_name": name, "email": format!("{name}@example.com"), "balance": balance, "updated_at": lsn * 1000
            }),
        };
        let source = json!({"version": "2.7.0.Final", "connector": "postgresql", "name": "dbserver1", "ts_ms": lsn,
            "snapshot": if op == "r" { "true" } else { "false" }, "db": "inventory", "schema": "public", "table": "customers", "lsn": lsn});
        let value =
            json!({"before": image(before), "after": image(after), "source": source, "op": op, "ts_ms": lsn + 5, "transaction": null});
        json!({"key": {"id": id}, "value": value}).to_string()
    };
    // A snapshot of 40 rows.
    for id in 1..=40 {
        let r = row(id, 0);
        lsn += 1;
        lines.push(event("r", id, None, Some(&r), lsn));
        table.insert(id, r);
    }
    let mut n = 0usize;
    while lines.len() < events {
        n += 1;
        lsn += 1;
        let id = (n * 7 % 120) as i32 + 1;
        match table.get(&id).cloned() {
            // Every fifth touch of an existing row deletes it (then its tombstone).
            Some(old) if n % 5 == 0 => {
                lines.push(event("d", id, Some(&old), None, lsn));
                lines.push(json!({"key": {"id": id}, "value": null}).to_string());
                table.remove(&id);
            }
            Some(old) => {
                let new = row(id, n);
                lines.push(event("u", id, Some(&old), Some(&new), lsn));
                table.insert(id, new);
            }
            None => {
                let new = row(id, n);
                lines.push(event("c", id, None, Some(&new), lsn));
                table.insert(id, new);
            }
        }
    }
    (lines, table)
}

/// Debezium's Avro change events of a table, through the `debezium` plugin, a
/// host killed with `kill -9` mid-stream and another finishing: the collection
/// ends as the table is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debezium_stream_ends_as_the_table_also_after_kill_9() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("debezium");
    env.create_topic(3).await.unwrap();
    let (lines, table) = debezium_stream(3000);
    let args = avro_args("debezium-customers.avsc", Some("debezium-key.avsc"));
    let builder = env
        .builder()
        .set("kafka", "key_format", "avro")
        .set("kafka", "value_format", "avro")
        .set("kafka", "decimals", "string")
        .set("schema_registry", "url", registry_url())
        .set("pipeline", "batch_max_records", 50)
        .plugin(PluginToml::example("debezium"));
    kill_9_mid_stream(&env, builder, &args, &lines).await;

    let docs = env.documents().await.unwrap();
    let stored: BTreeMap<i32, (String, String)> = docs
        .iter()
        .map(|d| {
            let id = d.get_i32("_id").unwrap_or_else(|_| panic!("_id is the key's id: {d}"));
            let balance = match d.get("balance") {
                Some(Bson::String(b)) => b.clone(),
                other => panic!("balance is the decimal's text (decimals = \"string\"): {other:?} in {d}"),
            };
            assert!(matches!(d.get("updated_at"), Some(Bson::DateTime(_))), "timestamp-micros is a date: {d}");
            (id, (d.get_str("first_name").unwrap().to_owned(), balance))
        })
        .collect();
    assert_eq!(
        stored.len(),
        table.len(),
        "rows: stored {:?}, table {:?}",
        stored.keys().collect::<Vec<_>>(),
        table.keys().collect::<Vec<_>>()
    );
    assert_eq!(stored, table);
}

/// One document of a MongoDB source collection.
#[derive(Clone, Debug, PartialEq)]
struct Customer {
    name: String,
    qty: i64,
    city: String,
    zip: String,
    note: Option<String>,
    tags: Vec<String>,
    since_ms: i64,
}

/// A change to the source collection, as its change stream reports it.
enum Change {
    Insert(u32, Customer),
    /// `updateDescription`'s fields (by path) and removed paths, and the
    /// document after it.
    Update(u32, serde_json::Map<String, Value>, Vec<String>, Customer),
    Replace(u32, Customer),
    Delete(u32),
}

/// The ObjectId of customer `id`.
fn oid(id: u32) -> String {
    format!("65a0{id:020x}")
}

/// A customer as canonical extended JSON (ObjectId, Int64 and date typed).
fn customer_json(id: u32, c: &Customer) -> Value {
    let mut doc = json!({"_id": {"$oid": oid(id)}, "name": c.name, "qty": {"$numberLong": c.qty.to_string()},
        "address": {"city": c.city, "zip": c.zip}, "tags": c.tags, "since": {"$date": {"$numberLong": c.since_ms.to_string()}}});
    if let Some(note) = &c.note {
        doc["note"] = json!(note);
    }
    doc
}

/// A history of `events` changes to a collection of customers (inserts,
/// updates by field path that set and remove fields and replace arrays, whole
/// replacements, deletes, re-inserts), and the collection it leaves.
fn mongo_history(events: usize) -> (Vec<Change>, BTreeMap<u32, Customer>) {
    let mut coll: BTreeMap<u32, Customer> = BTreeMap::new();
    let mut changes = Vec::new();
    let fresh = |id: u32, n: usize| Customer {
        name: format!("c-{id}-v{n}"),
        qty: i64::from(id) * 1_000_000_000_000 + n as i64,
        city: format!("city-{}", n % 7),
        zip: format!("{:05}", id * 11),
        note: (n % 2 == 0).then(|| format!("note-{n}")),
        tags: (0..n % 3).map(|t| format!("t{t}")).collect(),
        since_ms: 1_700_000_000_000 + n as i64 * 1000,
    };
    let mut n = 0usize;
    while changes.len() < events {
        n += 1;
        let id = (n * 7 % 90) as u32 + 1;
        match coll.get(&id).cloned() {
            None => {
                let c = fresh(id, n);
                changes.push(Change::Insert(id, c.clone()));
                coll.insert(id, c);
            }
            Some(_) if n % 9 == 0 => {
                changes.push(Change::Delete(id));
                coll.remove(&id);
            }
            Some(_) if n % 9 == 4 => {
                let c = fresh(id, n);
                changes.push(Change::Replace(id, c.clone()));
                coll.insert(id, c);
            }
            Some(mut c) => {
                let mut set = serde_json::Map::new();
                let mut removed = Vec::new();
                c.name = format!("c-{id}-u{n}");
                set.insert("name".into(), json!(c.name));
                c.city = format!("city-u{n}");
                set.insert("address.city".into(), json!(c.city));
                c.qty += 1;
                set.insert("qty".into(), json!({"$numberLong": c.qty.to_string()}));
                match n % 4 {
                    0 if c.note.is_some() => {
                        c.note = None;
                        removed.push("note".to_owned());
                    }
                    1 => {
                        c.note = Some(format!("note-u{n}"));
                        set.insert("note".into(), json!(c.note));
                    }
                    _ => {}
                }
                if n % 3 == 0 {
                    c.tags = (0..n % 5).map(|t| format!("u{t}")).collect();
                    set.insert("tags".into(), json!(c.tags));
                }
                changes.push(Change::Update(id, set, removed, c.clone()));
                coll.insert(id, c);
            }
        }
    }
    (changes, coll)
}

/// The collection as stored, each document checked for its types (ObjectId
/// `_id`, Int64 `qty`, date `since`) and for fields it should not have.
async fn stored_customers(env: &TestEnv) -> BTreeMap<u32, Customer> {
    let docs: Vec<Document> = env.documents().await.unwrap();
    docs.iter()
        .map(|d| {
            let oid = d.get_object_id("_id").unwrap_or_else(|_| panic!("_id is an ObjectId: {d}"));
            let id = u32::from_str_radix(&oid.to_hex()[4..], 16).unwrap();
            for key in d.keys() {
                // `_sluice_src`: the host's replay guard, kept by updates.
                let known = ["_id", "name", "qty", "address", "tags", "since", "note", "_sluice_src"];
                assert!(known.contains(&key.as_str()), "unexpected field {key:?} in {d}");
            }
            let address = d.get_document("address").unwrap_or_else(|_| panic!("address: {d}"));
            let tags = d.get_array("tags").unwrap_or_else(|_| panic!("tags: {d}"));
            let customer = Customer {
                name: d.get_str("name").unwrap().to_owned(),
                qty: d.get_i64("qty").unwrap_or_else(|_| panic!("qty is an Int64: {d}")),
                city: address.get_str("city").unwrap().to_owned(),
                zip: address.get_str("zip").unwrap().to_owned(),
                note: d.get_str("note").ok().map(str::to_owned),
                tags: tags.iter().map(|t| t.as_str().unwrap().to_owned()).collect(),
                since_ms: d.get_datetime("since").unwrap_or_else(|_| panic!("since is a date: {d}")).timestamp_millis(),
            };
            (id, customer)
        })
        .collect()
}

fn assert_same_collection(stored: &BTreeMap<u32, Customer>, source: &BTreeMap<u32, Customer>) {
    assert_eq!(stored.keys().collect::<Vec<_>>(), source.keys().collect::<Vec<_>>(), "the documents present");
    for (id, want) in source {
        assert_eq!(&stored[id], want, "customer {id}");
    }
}

/// Debezium's MongoDB connector (2.x, `capture.mode = change_streams`): a
/// snapshot (`r`), then `c`, `u` with `updateDescription` (every third also with
/// `after`, as in `change_streams_update_full`), replacements (`u` with
/// `after`), `d` with its tombstone; the key `{"id": "<_id as extended JSON>"}`.
fn debezium_mongodb_lines(changes: &[Change]) -> Vec<String> {
    let key = |id: u32| json!({"id": json!({"$oid": oid(id)}).to_string()});
    let mut lines = Vec::new();
    for (n, change) in changes.iter().enumerate() {
        let snapshot = n < 30;
        let source = json!({"version": "2.7.0.Final", "connector": "mongodb", "name": "dbserver1", "ts_ms": 1_700_000_000_000i64 + n as i64,
            "snapshot": if snapshot { json!("true") } else { Value::Null }, "db": "inventory", "collection": "customers", "ord": n});
        let event = |op: &str, after: Option<Value>, description: Value| json!({"before": null, "after": after.map(|a| a.to_string()), "updateDescription": description, "source": source, "op": op, "ts_ms": 5});
        let (id, value) = match change {
            Change::Insert(id, c) => (id, event(if snapshot { "r" } else { "c" }, Some(customer_json(*id, c)), Value::Null)),
            Change::Replace(id, c) => (id, event("u", Some(customer_json(*id, c)), Value::Null)),
            Change::Update(id, set, removed, c) => {
                let description =
                    json!({"updatedFields": Value::Object(set.clone()).to_string(), "removedFields": removed, "truncatedArrays": null});
                (id, event("u", (n % 3 == 0).then(|| customer_json(*id, c)), description))
            }
            Change::Delete(id) => {
                lines.push(json!({"key": key(*id), "value": event("d", None, Value::Null)}).to_string());
                (id, Value::Null)
            }
        };
        lines.push(json!({"key": key(*id), "value": value}).to_string());
    }
    lines
}

/// Debezium's MongoDB change events in Avro, through `debezium-mongodb`, a
/// host killed with `kill -9` mid-stream and another finishing: the collection
/// ends as the source collection is, with its types (ObjectId, Int64, date).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debezium_mongodb_stream_ends_as_the_collection_also_after_kill_9() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("debezium-mongodb");
    env.create_topic(3).await.unwrap();
    let (changes, source) = mongo_history(1500);
    let lines = debezium_mongodb_lines(&changes);
    let builder = env
        .builder()
        .set("kafka", "key_format", "avro")
        .set("kafka", "value_format", "avro")
        .set("schema_registry", "url", registry_url())
        .set("pipeline", "batch_max_records", 50)
        .plugin(PluginToml::example("debezium-mongodb"));
    let args = avro_args("debezium-mongodb.avsc", Some("debezium-mongodb-key.avsc"));
    kill_9_mid_stream(&env, builder, &args, &lines).await;
    assert_same_collection(&stored_customers(&env).await, &source);
}

/// The MongoDB source connector's change events (`output.format.value =
/// schema`: documents as extended-JSON text), on one partition as the
/// connector writes them, through `change-stream`: inserts, updates by
/// description (every third with a looked-up `fullDocument`), replaces and
/// deletes end as the source collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stream_ends_as_the_collection() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("change-stream");
    env.create_topic(1).await.unwrap();
    let (changes, source) = mongo_history(1200);
    let lines: Vec<String> = changes
        .iter()
        .enumerate()
        .map(|(n, change)| {
            let (op, id, full, description) = match change {
                Change::Insert(id, c) => ("insert", id, Some(customer_json(*id, c)), Value::Null),
                Change::Replace(id, c) => ("replace", id, Some(customer_json(*id, c)), Value::Null),
                Change::Update(id, set, removed, c) => {
                    let description = json!({"updatedFields": Value::Object(set.clone()).to_string(), "removedFields": removed});
                    ("update", id, (n % 3 == 0).then(|| customer_json(*id, c)), description)
                }
                Change::Delete(id) => ("delete", id, None, Value::Null),
            };
            let value = json!({
                "_id": json!({"_data": format!("8263{n:016X}")}).to_string(),
                "operationType": op,
                "fullDocument": full.map(|f| f.to_string()),
                "ns": {"db": "shop", "coll": "customers"},
                "to": null,
                "documentKey": json!({"_id": {"$oid": oid(*id)}}).to_string(),
                "updateDescription": description,
                "clusterTime": json!({"$timestamp": {"t": 1_700_000_000u32 + n as u32, "i": 1}}).to_string(),
                "txnNumber": null,
                "lsid": null,
            });
            json!({"value": value}).to_string()
        })
        .collect();
    let args = avro_args("change-stream.avsc", None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sent = sr_produce(&env.topic, &args, &(lines.join("\n") + "\n"));
    assert_eq!(sent["produced"], lines.len(), "{sent}");
    let builder = env
        .builder()
        .set("kafka", "value_format", "avro")
        .set("schema_registry", "url", registry_url())
        .plugin(PluginToml::example("change-stream"));
    let summary = run_until_caught_up(env.config_from(&builder).unwrap()).await;
    assert_eq!((summary.consumed, summary.dead_lettered, summary.skipped), (lines.len() as u64, 0, 0), "{summary}");
    assert_same_collection(&stored_customers(&env).await, &source);
}
