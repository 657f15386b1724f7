//! Contract 0.3.0's write models on the real services: updates with operators,
//! replaces and deletes by filter, filter values matched literally, the replay
//! guard that applies an update once however often its batch is written, and a
//! plugin built against contract 0.2.0 running unchanged.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use sluice::RunOptions;
use sluice::sink::{Guard, Op, Sink, WriteOp};
use sluice_tests::{DATABASE, TestEnv, brokers, hostile, int, mongo_uri};

/// The writer plugin (it emits the ops a record lists), optionally asking for ordered writes.
fn writer(ordered: bool) -> String {
    format!("[[plugins]]\nname = \"writer\"\npath = \"{}\"\n[plugins.params]\nordered = \"{ordered}\"\n", hostile("writer").display())
}

async fn run(env: &TestEnv, chain: &str) -> sluice::Summary {
    let config = env.config_with(chain, "[pipeline]\nbatch_max_records = 16\n").unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        sluice::run(config, RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .expect("finished in time")
    .unwrap()
}

/// A record value asking the writer plugin for these ops.
fn ops(ops: Vec<Value>) -> Vec<u8> {
    json!({ "ops": ops }).to_string().into_bytes()
}

async fn produce(env: &TestEnv, values: &[Vec<u8>]) {
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    env.produce_raw(&records).await.unwrap();
}

/// What a crash after the writes and before any commit or progress save leaves:
/// both stores back at 0 (as in replays.rs), so the whole topic is written again.
async fn forget_progress(env: &TestEnv) {
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let progress = client.database(DATABASE).collection::<Document>(sluice::progress::DEFAULT_COLLECTION);
    let r = progress
        .update_one(doc! { "group": &env.group, "topic": &env.topic, "partition": 0 }, doc! { "$set": { "next_offset": 0 } })
        .await
        .unwrap();
    assert_eq!(r.matched_count, 1, "a progress document");
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", &env.group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&env.topic, 0, Offset::Offset(0)).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

/// The stored documents by `_id` (string ids) or `name`, without the replay guard field.
async fn by_key(env: &TestEnv) -> std::collections::BTreeMap<String, Document> {
    let mut out = std::collections::BTreeMap::new();
    for mut d in env.documents().await.unwrap() {
        d.remove("_sluice_src");
        let key = match (d.get_str("_id"), d.get_str("name")) {
            (Ok(id), _) => id.to_owned(),
            (_, Ok(name)) => name.to_owned(),
            _ => format!("{d}"),
        };
        d.remove("_id");
        out.insert(key, d);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_replaces_and_deletes_by_filter() {
    let env = TestEnv::new("write-models");
    env.create_topic(1).await.unwrap();
    let values = vec![
        ops(vec![json!({"op": "insert", "doc": {"_id": "a", "name": "alice", "n": 0}})]),
        // $set and $inc on a document found by `_id`.
        ops(vec![json!({"op": "update", "filter": {"_id": "a"}, "doc": {"$set": {"seen": true}, "$inc": {"n": 5}}})]),
        // An upsert by another field: inserted with the filter's field.
        ops(vec![json!({"op": "update", "filter": {"name": "bob"}, "doc": {"$set": {"k": 1}, "$inc": {"n": 1}}, "upsert": true})]),
        ops(vec![json!({"op": "update", "filter": {"name": "bob"}, "doc": {"$inc": {"n": 1}, "$push": {"tags": "x"}}})]),
        // Replace by filter: inserted (upsert), then replaced.
        ops(vec![json!({"op": "replace", "filter": {"name": "carol"}, "doc": {"name": "carol", "v": 1}, "upsert": true})]),
        ops(vec![json!({"op": "replace", "filter": {"name": "carol"}, "doc": {"name": "carol", "v": 2}})]),
        // Delete by filter.
        ops(vec![json!({"op": "insert", "doc": {"_id": "d", "name": "dave"}})]),
        ops(vec![json!({"op": "delete-where", "filter": {"name": "dave"}})]),
        // A value from a record is matched literally, never as an operator: these
        // would touch every document if `{"$gt": ""}` were read as one.
        ops(vec![
            json!({"op": "update", "filter": {"name": {"$gt": ""}}, "doc": {"$set": {"hit": true}}}),
            json!({"op": "delete-where", "filter": {"name": {"$gt": ""}}}),
        ]),
        // Refused as invalid-output (dead-lettered): not an operator, an operator not allowed, a `$` filter key.
        ops(vec![json!({"op": "update", "filter": {"_id": "a"}, "doc": {"n": 100}})]),
        ops(vec![json!({"op": "update", "filter": {"_id": "a"}, "doc": {"$where": {"n": 100}}})]),
        ops(vec![json!({"op": "update", "filter": {"$or": [{"_id": "a"}]}, "doc": {"$set": {"n": 100}}})]),
        // An update that matches nothing (no upsert) writes nothing.
        ops(vec![json!({"op": "update", "filter": {"_id": "nobody"}, "doc": {"$set": {"x": 1}}})]),
    ];
    produce(&env, &values).await;
    let summary = run(&env, &writer(false)).await;
    assert_eq!((summary.consumed, summary.dead_lettered), (values.len() as u64, 3), "{summary}");
    let docs = by_key(&env).await;
    let want: std::collections::BTreeMap<String, Document> = [
        ("a".to_string(), doc! { "name": "alice", "n": 5, "seen": true }),
        ("bob".to_string(), doc! { "name": "bob", "k": 1, "n": 2, "tags": ["x"] }),
        ("carol".to_string(), doc! { "name": "carol", "v": 2 }),
    ]
    .into_iter()
    .collect();
    assert_eq!(docs, want);
    let dead = env.dead_letters(3).unwrap();
    for d in &dead {
        assert_eq!(d.header("sluice.error.kind"), "invalid-output", "{d:?}");
    }
    // The guard is stored with every update, per topic partition.
    let a = env.collection().await.unwrap().find_one(doc! { "_id": "a" }).await.unwrap().unwrap();
    let guard = a.get_document("_sluice_src").unwrap();
    assert_eq!(guard.len(), 1, "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_twice_applies_each_update_once() {
    let env = TestEnv::new("write-models-replay");
    env.create_topic(1).await.unwrap();
    const N: i64 = 40;
    let values: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            ops(vec![
                // Not idempotent: $inc, $mul, $push. And a $set of the same document in between.
                json!({"op": "update", "filter": {"_id": "counter"}, "doc": {"$inc": {"n": 1}, "$push": {"seen": i}}, "upsert": true}),
                json!({"op": "update", "filter": {"_id": "counter"}, "doc": {"$set": {"last": i}, "$mul": {"m": 2}}}),
                json!({"op": "update", "filter": {"name": "by-name"}, "doc": {"$inc": {"n": 1}}, "upsert": true}),
            ])
        })
        .collect();
    produce(&env, &values).await;
    let first = run(&env, &writer(true)).await;
    assert_eq!(first.consumed, N as u64, "{first}");
    let check = |docs: std::collections::BTreeMap<String, Document>| {
        let c = &docs["counter"];
        assert_eq!(int(c, "n"), N, "{c}");
        assert_eq!(int(c, "last"), N - 1, "{c}");
        assert_eq!(c.get_array("seen").unwrap().len(), N as usize, "{c}");
        assert!(!c.contains_key("m") || int(c, "m") == 0, "$mul of a missing field sets 0: {c}");
        assert_eq!(int(&docs["by-name"], "n"), N, "an upsert by another field than `_id` is applied once too");
        assert_eq!(docs.len(), 2, "no twin of a document: {docs:?}");
    };
    check(by_key(&env).await);
    // The crash: every record is written again.
    forget_progress(&env).await;
    let second = run(&env, &writer(true)).await;
    assert_eq!(second.consumed, N as u64, "everything was replayed: {second}");
    check(by_key(&env).await);
}

/// The guard on its own, at the sink: a guarded upsert whose document is newer
/// (stored position past its own) is already applied, never a second document.
#[tokio::test]
async fn a_guarded_upsert_never_twins_a_newer_document() {
    let env = TestEnv::new("write-models-guard");
    let config = env.config(&[], "").unwrap();
    let sink = Sink::connect(&config.mongo).await.unwrap();
    let field = "_sluice_src.t%2Ex.0".to_string();
    let update = |filter: Document, position: i64| WriteOp {
        upsert: true,
        guard: Some(Guard { field: field.clone(), position }),
        ..WriteOp::with_filter(Op::Update, &filter, &doc! { "$inc": { "n": 1 } })
    };
    for filter in [doc! { "email": { "$eq": "x@y" } }, doc! { "_id": { "$eq": "id-1" } }] {
        let r = sink.write(&[update(filter.clone(), 5 << 16)]).await.unwrap();
        assert_eq!((r.updated, r.unmatched), (1, 0), "{filter}");
        // A replay of that record, and of an older one: both already applied.
        for position in [5 << 16, 3 << 16] {
            let r = sink.write(&[update(filter.clone(), position)]).await.unwrap();
            assert_eq!((r.updated, r.unmatched), (0, 1), "{filter} at {position}");
        }
        // A newer one applies.
        let r = sink.write(&[update(filter.clone(), (6 << 16) + 1)]).await.unwrap();
        assert_eq!(r.updated, 1, "{filter}");
    }
    let docs = env.documents().await.unwrap();
    assert_eq!(docs.len(), 2, "{docs:?}");
    for d in &docs {
        assert_eq!(int(d, "n"), 2, "{d}");
        assert_eq!(d.get_document("_sluice_src").unwrap().get_document("t%2Ex").unwrap().get_i64("0").unwrap(), (6 << 16) + 1, "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_0_2_0_runs_unchanged() {
    let env = TestEnv::new("write-models-v020");
    env.create_topic(1).await.unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let records: [(&str, Option<&str>); 5] = [
        (r#"{"num": 0}"#, None),
        (r#"{"_id": "u", "v": 1}"#, Some("upsert")),
        (r#"{"_id": "u", "v": 2}"#, Some("upsert")),
        ("fail", None),
        (r#"{"_id": "test-gone"}"#, Some("delete")),
    ];
    for (value, op) in records {
        let mut r: FutureRecord<'_, [u8], str> = FutureRecord::to(&env.topic).partition(0).payload(value);
        if let Some(op) = op {
            r = r.headers(OwnedHeaders::new().insert(Header { key: "op", value: Some(op) }));
        }
        producer.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
    let chain = format!("[[plugins]]\nname = \"v020\"\npath = \"{}\"\n", hostile("v020").display());
    let summary = run(&env, &chain).await;
    assert_eq!((summary.consumed, summary.dead_lettered), (5, 1), "{summary}");
    let mut docs = env.documents().await.unwrap();
    docs.sort_by_key(|d| d.get_str("_id").unwrap().to_owned());
    assert_eq!(docs, vec![doc! { "_id": format!("{}:0:0:0", env.topic), "num": 0 }, doc! { "_id": "u", "v": 2 }]);
    let dead = env.dead_letters(1).unwrap();
    assert_eq!(dead[0].header("sluice.error.kind"), "plugin-error");
    assert!(dead[0].header("sluice.error.reason").contains("v0.2.0 plugin"), "{:?}", dead[0]);
    // Loaded as what it is.
    let rt = sluice::runtime::Runtime::new().unwrap();
    let p = rt.load(&sluice::config::PluginConfig::new("v020", hostile("v020"))).unwrap();
    assert_eq!(p.contract(), "sluice:plugin@0.2.0");
}
