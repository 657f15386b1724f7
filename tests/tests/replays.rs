//! Replays across plugin versions, on the real services: records an owner wrote
//! but neither store recorded (a crash) are replayed by the next owner under
//! another version; every record's documents then come from that one version —
//! its fan-out replaces the old one's, and what it no longer makes is removed.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice::RunOptions;
use sluice_tests::{DATABASE, TestEnv, brokers, hostile, int, mongo_uri};

const N: i64 = 60;

/// The writer plugin as "version" `tag`, emitting at most `limit` of each record's three inserts.
fn writer(tag: &str, limit: Option<usize>) -> String {
    let limit = limit.map(|l| format!("limit = \"{l}\"\n")).unwrap_or_default();
    format!("[[plugins]]\nname = \"writer\"\npath = \"{}\"\n[plugins.params]\ntag = \"{tag}\"\n{limit}", hostile("writer").display())
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

/// What a crash after the writes and before any commit or progress save leaves:
/// both stores back at 0, the write intent kept.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_under_another_version_leaves_only_that_version_s_documents() {
    let env = TestEnv::new("replay-versions");
    env.create_topic(1).await.unwrap();
    let values: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let ops: Vec<_> = (0..3).map(|k| serde_json::json!({ "op": "insert", "doc": { "num": i, "k": k } })).collect();
            serde_json::json!({ "num": i, "ops": ops }).to_string().into_bytes()
        })
        .collect();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    env.produce_raw(&records).await.unwrap();

    let first = run(&env, &writer("a", None)).await;
    assert_eq!(first.written, 3 * N as u64, "{first}");
    forget_progress(&env).await;

    // Version b makes one document per record: a replay of all of them.
    let second = run(&env, &writer("b", Some(1))).await;
    assert_eq!(second.consumed, N as u64, "everything was replayed: {second}");
    let docs = env.documents().await.unwrap();
    let mut made: Vec<(i64, i64, String, String)> = docs
        .iter()
        .map(|d| (int(d, "num"), int(d, "k"), d.get_str("tag").unwrap().to_owned(), d.get_str("_id").unwrap().to_owned()))
        .collect();
    made.sort();
    let want: Vec<(i64, i64, String, String)> = (0..N).map(|i| (i, 0, "b".to_string(), format!("{}:0:{i}:0", env.topic))).collect();
    assert_eq!(made, want, "one document per record, by version b");

    // And back to three: a replay adds them again, each once.
    forget_progress(&env).await;
    let third = run(&env, &writer("c", None)).await;
    assert_eq!(third.consumed, N as u64, "{third}");
    let docs = env.documents().await.unwrap();
    assert_eq!(docs.len(), 3 * N as usize);
    assert!(docs.iter().all(|d| d.get_str("tag") == Ok("c")), "every document by version c");
}

/// Without a crash the next owner has nothing to clean: a clean release
/// settles the intent, and a restart replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_no_replay_window() {
    let env = TestEnv::new("replay-none");
    env.create_topic(1).await.unwrap();
    env.produce_nums(40).await.unwrap();
    let first = run(&env, &writer("a", None)).await;
    assert_eq!(first.written, 40, "{first}");
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let progress = client.database(DATABASE).collection::<Document>(sluice::progress::DEFAULT_COLLECTION);
    let d = progress.find_one(doc! { "group": &env.group, "topic": &env.topic, "partition": 0 }).await.unwrap().expect("progress");
    assert_eq!((int(&d, "next_offset"), int(&d, "intent")), (40, 40), "{d}");
}

/// Both stores of progress count: the later wins, so deleting either one
/// replays nothing; `sluice offsets set` moves both, and the rerun consumes
/// again, finding every document already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_of_progress_and_a_supported_rewind() {
    let env = TestEnv::new("rewind");
    env.create_topic(1).await.unwrap();
    env.produce_nums(30).await.unwrap();
    let plain = || run(&env, "");
    assert_eq!(plain().await.written, 30);

    // Kafka's group deleted: MongoDB's progress holds.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let deleted = admin.delete_groups(&[env.group.as_str()], &rdkafka::admin::AdminOptions::new()).await.unwrap();
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
    assert_eq!(plain().await.consumed, 0, "MongoDB's progress wins over a deleted group");

    // MongoDB's progress deleted: Kafka's offset (committed again by that run) holds.
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let progress = client.database(DATABASE).collection::<Document>(sluice::progress::DEFAULT_COLLECTION);
    progress.delete_many(doc! { "group": &env.group }).await.unwrap();
    assert_eq!(plain().await.consumed, 0, "Kafka's offset wins over deleted progress");

    // The supported rewind, through the CLI.
    let config = env.config_file(&[], "");
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .args(["offsets", "set", "--to-beginning", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(":0 kafka=0 mongo=0 start=0 low=0 high=30"), "{text}");
    let again = plain().await;
    assert_eq!((again.consumed, again.duplicates), (30, 30), "consumed again, all found there: {again}");
    assert_eq!(env.documents().await.unwrap().len(), 30);
    let show = std::process::Command::new(sluice_tests::sluice_bin()).args(["offsets", "show", "--config"]).arg(&config).output().unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains(":0 kafka=30 mongo=30 start=30 low=0 high=30"), "{show:?}");
}

/// `sluice reset` also removes what plugins routed to other collections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_removes_what_plugins_routed_elsewhere() {
    let env = TestEnv::new("reset-routed");
    env.create_topic(1).await.unwrap();
    let routed = format!("{}-routed", env.collection);
    let values: Vec<Vec<u8>> = (0..5)
        .map(|i| serde_json::json!({ "ops": [{ "op": "insert", "doc": { "num": i }, "collection": routed }] }).to_string().into_bytes())
        .collect();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    env.produce_raw(&records).await.unwrap();
    assert_eq!(run(&env, &writer("a", None)).await.written, 5);
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let coll = client.database(DATABASE).collection::<Document>(&routed);
    // A document of someone else's stays.
    coll.insert_one(doc! { "_id": "not-sluice's", "num": 99 }).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 6);
    let config = env.config_with(&writer("a", None), "").unwrap();
    let report = sluice::cli::reset::reset(&config).await.unwrap();
    assert_eq!(report.routed, vec![(routed.clone(), 5)]);
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

/// A host of the previous release killed mid-stream: its progress document
/// (no write intent) and the tail it wrote without recording it. The new
/// release starts at that progress and stores every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_takes_over_the_previous_release_s_tail() {
    let env = TestEnv::new("upgrade");
    env.create_topic(1).await.unwrap();
    env.produce_nums(40).await.unwrap();
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    // As the previous release wrote them: `group/topic/partition` with next_offset, group, topic, partition.
    client
        .database(DATABASE)
        .collection::<Document>(sluice::progress::DEFAULT_COLLECTION)
        .insert_one(doc! { "_id": format!("{}/{}/0", env.group, env.topic), "next_offset": 20_i64, "group": &env.group, "topic": &env.topic, "partition": 0 })
        .await
        .unwrap();
    let coll = env.collection().await.unwrap();
    let old: Vec<Document> = (0..25).map(|i| doc! { "_id": format!("{}:0:{i}:0", env.topic), "num": i }).collect();
    coll.insert_many(old).await.unwrap();

    let summary = run(&env, "").await;
    assert_eq!((summary.consumed, summary.duplicates, summary.written), (20, 5, 15), "{summary}");
    env.assert_exact(40).await;
}

/// A topic deleted and created again under the same name: the progress of the
/// old one is not used (its offsets would skip the new records), and the new
/// records replace the old documents with the same derived ids instead of
/// being taken for replays of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_starts_over_and_loses_nothing() {
    let env = TestEnv::new("recreated");
    env.create_topic(1).await.unwrap();
    env.produce_nums(20).await.unwrap();
    assert_eq!(run(&env, "").await.written, 20);

    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let r = admin.delete_topics(&[env.topic.as_str()], &rdkafka::admin::AdminOptions::new()).await.unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    // Deletion is asynchronous: wait until the cluster no longer lists it, then create it anew.
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while probe.fetch_metadata(None, Duration::from_secs(5)).unwrap().topics().iter().any(|t| t.name() == env.topic) {
        assert!(std::time::Instant::now() < deadline, "the topic is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.create_topic(1).await.unwrap();
    let opts = sluice::produce::ProduceOptions::numbers(&brokers(), &env.topic, 100, 10);
    assert_eq!(sluice::produce::produce(&opts).await.unwrap(), 10);

    let second = run(&env, "").await;
    assert_eq!((second.consumed, second.written), (10, 10), "the new topic's records, from its start: {second}");
    let nums: std::collections::BTreeSet<i64> = env.documents().await.unwrap().iter().map(|d| int(d, "num")).collect();
    assert!((100..110).all(|n| nums.contains(&n)), "every new record stored: {nums:?}");
    assert_eq!(nums.len(), 20, "offsets 0..10 replaced, the old 10..20 kept: {nums:?}");
}
