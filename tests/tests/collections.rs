//! Collections at start (`[[mongo.indexes]]`, `[mongo.timeseries]`) against the
//! real server, FerretDB v1: unique and compound indexes are made and enforced;
//! what FerretDB v1 refuses (TTL indexes, time-series collections) stops the
//! start with FerretDB's own answer in the error, before anything is consumed.
//! The exact commands sent are asserted by the unit tests of
//! `host/src/mongo/collections.rs`; FerretDB's answers are in docs/ferretdb.md.

use std::time::Duration;

use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use sluice_tests::{DATABASE, Host, TestEnv, mongo_uri};

/// A config of `env` (no plugins: each record's JSON is stored as it is) with `extra` TOML.
fn config_file(env: &TestEnv, extra: &str) -> std::path::PathBuf {
    env.config_file(&[], extra)
}

/// Start a host with `extra`, run it until caught up; its exit status.
async fn run_host(env: &TestEnv, name: &str, extra: &str) -> (Host, std::process::ExitStatus) {
    let mut host = Host::spawn(env, name, &config_file(env, extra), true);
    let status = host.wait(Duration::from_secs(120)).await;
    (host, status)
}

/// The `error: …` line the binary printed last.
fn error_line(host: &Host) -> String {
    let text = std::fs::read_to_string(&host.stderr).unwrap_or_default();
    text.lines().rev().find(|l| l.starts_with("error: ")).map(str::to_owned).unwrap_or_else(|| panic!("no error line:\n{text}"))
}

/// `listIndexes` of the env's collection, as the server answers it.
async fn indexes(env: &TestEnv) -> Vec<Document> {
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let reply = client.database(DATABASE).run_command(doc! { "listIndexes": &env.collection }).await.unwrap();
    reply.get_document("cursor").unwrap().get_array("firstBatch").unwrap().iter().map(|d| d.as_document().unwrap().clone()).collect()
}

fn index<'a>(listed: &'a [Document], name: &str) -> &'a Document {
    listed.iter().find(|d| d.get_str("name") == Ok(name)).unwrap_or_else(|| panic!("no index {name:?} in {listed:?}"))
}

/// The keys of a listed index, in order, with their direction as an integer.
fn keys(ix: &Document) -> Vec<(String, i64)> {
    ix.get_document("key").unwrap().iter().map(|(k, v)| (k.clone(), v.as_i32().map(i64::from).or(v.as_i64()).unwrap())).collect()
}

/// Nothing consumed: no `consuming` event, no document, no committed offset.
async fn assert_nothing_consumed(env: &TestEnv, host: &Host) {
    assert!(host.events("consuming").is_empty(), "the host consumed:\n{}", host.log_tail(30));
    assert_eq!(env.count().await, 0);
    let (committed, ends) = env.offsets().unwrap();
    assert_eq!(ends.values().sum::<i64>(), 5, "{ends:?}");
    assert!(committed.values().all(|&c| c < 0), "committed: {committed:?}");
}

const UNIQUE_AND_COMPOUND: &str = r#"
[[mongo.indexes]]
keys = [{ field = "num", order = 1 }]
unique = true

[[mongo.indexes]]
keys = [{ field = "kind", order = 1 }, { field = "num", order = -1 }]
name = "by_kind"
"#;

#[tokio::test]
async fn unique_and_compound_indexes_are_made_at_start_and_enforced() {
    let env = TestEnv::new("coll-indexes");
    env.create_topic(1).await.unwrap();
    env.produce_nums(5).await.unwrap();
    let (host, status) = run_host(&env, "first", UNIQUE_AND_COMPOUND).await;
    assert!(status.success(), "{status}\n{}", host.log_tail(30));
    assert_eq!(env.count().await, 5);
    let ready = host.events("index_ready");
    assert!(ready.len() == 2 && ready.iter().all(|l| l.contains("created=true")), "{ready:?}");

    let listed = indexes(&env).await;
    let num = index(&listed, "num_1");
    assert_eq!(keys(num), [("num".to_owned(), 1)]);
    assert_eq!(num.get_bool("unique"), Ok(true), "{num}");
    let by_kind = index(&listed, "by_kind");
    assert_eq!(keys(by_kind), [("kind".to_owned(), 1), ("num".to_owned(), -1)]);
    assert!(!by_kind.get_bool("unique").unwrap_or(false), "{by_kind}");

    // The unique index is the server's: a second `num: 3` is refused with 11000.
    let coll = env.collection().await.unwrap();
    let err = coll.insert_one(doc! { "num": 3, "kind": "again" }).await.unwrap_err();
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => assert_eq!(we.code, 11000, "{we:?}"),
        other => panic!("expected a duplicate key write error, got {other:?}"),
    }
    coll.insert_one(doc! { "num": 100, "kind": "new" }).await.unwrap();
    // The compound index is not unique: the same (kind, num) twice is fine where `num` differs.
    coll.insert_one(doc! { "num": 101, "kind": "new" }).await.unwrap();

    // A second start finds the identical indexes there: nothing to do, nothing refused.
    let (again, status) = run_host(&env, "again", UNIQUE_AND_COMPOUND).await;
    assert!(status.success(), "{status}\n{}", again.log_tail(30));
    let ready = again.events("index_ready");
    assert!(ready.len() == 2 && ready.iter().all(|l| l.contains("created=false")), "{ready:?}");
    assert_eq!(indexes(&env).await.len(), listed.len());
}

#[tokio::test]
async fn an_index_that_exists_with_other_options_stops_the_start() {
    let env = TestEnv::new("coll-conflict");
    env.create_topic(1).await.unwrap();
    env.produce_nums(5).await.unwrap();
    // `num_1` exists, not unique (made by hand).
    let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
    let db = client.database(DATABASE);
    db.run_command(doc! { "createIndexes": &env.collection, "indexes": [{ "key": { "num": 1 }, "name": "num_1" }] }).await.unwrap();
    let ns = format!("{DATABASE}.{}", env.collection);

    // The same name, unique: FerretDB answers ok ("all indexes already exist") and keeps
    // its index; Sluice's look at what is listed stops the start.
    let (host, status) = run_host(&env, "same-name", "[[mongo.indexes]]\nkeys = [{ field = \"num\" }]\nunique = true\n").await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    assert!(line.contains(&format!("index \"num_1\" on {ns} exists with other options (unique)")), "{line}");
    assert!(line.contains(r#"the server has { "v": 2, "key": { "num": 1 }, "name": "num_1" }"#), "{line}");
    assert_nothing_consumed(&env, &host).await;

    // The same keys under another name: the server's own IndexOptionsConflict.
    let (host, status) = run_host(&env, "other-name", "[[mongo.indexes]]\nkeys = [{ field = \"num\" }]\nname = \"by_num\"\n").await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    assert!(line.contains(&format!("cannot create index \"by_num\" on {ns}: it conflicts with an existing index")), "{line}");
    assert!(line.contains("error 85 (IndexOptionsConflict): Index already exists with a different name: num_1"), "{line}");

    // Another key under the same name: IndexKeySpecsConflict.
    let (host, status) = run_host(&env, "other-keys", "[[mongo.indexes]]\nkeys = [{ field = \"x\" }]\nname = \"num_1\"\n").await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    assert!(line.contains("error 86 (IndexKeySpecsConflict): An existing index has the same name as the requested index"), "{line}");
    assert_nothing_consumed(&env, &host).await;
}

#[tokio::test]
async fn a_ttl_index_is_refused_by_ferretdb_at_start_and_nothing_is_consumed() {
    let env = TestEnv::new("coll-ttl");
    env.create_topic(1).await.unwrap();
    env.produce_nums(5).await.unwrap();
    let (host, status) = run_host(&env, "ttl", "[[mongo.indexes]]\nkeys = [{ field = \"ts\", order = 1 }]\nexpire_after = \"1h\"\n").await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    eprintln!("FerretDB, TTL index: {line}");
    assert!(line.contains(&format!("cannot create index \"ts_1\" on {DATABASE}.{}", env.collection)), "{line}");
    assert!(line.contains(FERRETDB_TTL), "FerretDB's own answer is in the error: {line}");
    assert!(line.contains(r#""expireAfterSeconds": 3600"#), "the command sent is in the error: {line}");
    assert_nothing_consumed(&env, &host).await;
}

#[tokio::test]
async fn a_partial_index_is_refused_by_ferretdb_at_start() {
    let env = TestEnv::new("coll-partial");
    env.create_topic(1).await.unwrap();
    env.produce_nums(5).await.unwrap();
    let extra = "[[mongo.indexes]]\nkeys = [{ field = \"num\" }]\nunique = true\npartial_filter = { num = { \"$gte\" = 3 } }\n";
    let (host, status) = run_host(&env, "partial", extra).await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    assert!(line.contains(FERRETDB_PARTIAL), "{line}");
    assert!(line.contains(r#""partialFilterExpression": { "num": { "$gte": 3 } }"#), "{line}");
    assert_nothing_consumed(&env, &host).await;
}

#[tokio::test]
async fn a_timeseries_collection_is_refused_by_ferretdb_at_start_and_nothing_is_consumed() {
    let env = TestEnv::new("coll-ts");
    env.create_topic(1).await.unwrap();
    env.produce_nums(5).await.unwrap();
    let extra = "[mongo.timeseries]\ntime_field = \"ts\"\nmeta_field = \"sensor\"\ngranularity = \"minutes\"\n";
    let (host, status) = run_host(&env, "timeseries", extra).await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    eprintln!("FerretDB, time-series: {line}");
    assert!(line.contains(&format!("cannot create the time-series collection {DATABASE}.{}", env.collection)), "{line}");
    assert!(line.contains(FERRETDB_TIMESERIES) && line.contains("is not implemented yet"), "FerretDB's own answer is in the error: {line}");
    assert_nothing_consumed(&env, &host).await;
}

#[tokio::test]
async fn an_existing_plain_collection_cannot_become_a_timeseries_one() {
    let env = TestEnv::new("coll-plain");
    env.create_topic(1).await.unwrap();
    env.produce_nums(5).await.unwrap();
    env.collection().await.unwrap().insert_one(doc! { "ts": "earlier" }).await.unwrap();
    let (host, status) = run_host(&env, "plain", "[mongo.timeseries]\ntime_field = \"ts\"\n").await;
    assert!(!status.success(), "{}", host.log_tail(30));
    let line = error_line(&host);
    assert!(
        line.contains(&format!("collection {DATABASE}.{} exists and is a collection, not a time-series collection", env.collection)),
        "{line}"
    );
    assert!(host.events("consuming").is_empty(), "{}", host.log_tail(30));
    assert_eq!(env.count().await, 1);
}

/// What FerretDB v1.24 answers (docs/ferretdb.md): code 238 NotImplemented, and these messages.
const FERRETDB_TTL: &str = r#"error 238 (NotImplemented): Index option "expireAfterSeconds" is not implemented yet"#;
const FERRETDB_PARTIAL: &str = r#"error 238 (NotImplemented): Index option "partialFilterExpression" is not implemented yet"#;
/// Followed by a dump of FerretDB's Go value of the option, then `is not implemented yet`.
const FERRETDB_TIMESERIES: &str = r#"error 238 (NotImplemented): create: support for field "timeseries" with value"#;
