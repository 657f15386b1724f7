//! Poison records on the real services: every record a producer or a database
//! can make of it ends as a written document, a dead letter with its kind, or
//! (under `on_error = "stop"`) a clear stop — never a stall, a crash or a silent
//! drop. Records are produced by outside clients (kcat, confluent-kafka), since
//! Sluice's own producer refuses some of these shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sluice::RunOptions;
use sluice_tests::{Host, PluginToml, TestEnv, brokers, hostile, int, repo};

/// What a row must become.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// A document with this `num` is stored, once.
    Written(i64),
    /// Dead-lettered with this kind; `true`: truncated (no value).
    Dead(&'static str, bool),
}
use Outcome::{Dead, Written};

struct Row {
    what: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    outcome: Outcome,
}

fn row(what: &'static str, value: &[u8], outcome: Outcome) -> Row {
    Row { what, key: None, value: Some(value.to_vec()), headers: vec![], outcome }
}

/// Header key bytes that are not UTF-8.
const NOT_UTF8: &[u8] = b"\xff\xfe";

fn rows() -> Vec<Row> {
    let nested = format!("{{\"num\": 7, \"d\": {}1{}}}", "[".repeat(110), "]".repeat(110));
    let huge_bson = format!("{{\"num\": 15, \"a\": [{}0]}}", "0,".repeat(1_500_000));
    let not_json = vec![b'x'; 1_000_100];
    let mut thousand = row("1000 headers", br#"{"num": 6}"#, Written(6));
    thousand.headers = (0..1000).map(|i| (format!("h{i}").into_bytes(), Some(b"v".to_vec()))).collect();
    let mut bad_key = row("header key not UTF-8", br#"{"num": 1}"#, Written(1));
    bad_key.headers = vec![(NOT_UTF8.to_vec(), Some(b"v".to_vec()))];
    let mut bad_key_bad_value = row("header key not UTF-8, value not JSON", b"not json", Dead("invalid-input", false));
    bad_key_bad_value.headers = vec![(NOT_UTF8.to_vec(), Some(b"v".to_vec()))];
    let mut empty_key = row("0-byte key", br#"{"num": 5}"#, Written(5));
    empty_key.key = Some(vec![]);
    vec![
        row("good record", br#"{"num": 0}"#, Written(0)),
        bad_key,
        bad_key_bad_value,
        row("empty value", b"", Dead("invalid-input", false)),
        row("JSON but not an object", b"[1, 2]", Dead("plugin-error", false)),
        empty_key,
        thousand,
        // MongoDB (and FerretDB) refuse documents nested deeper than 100 levels.
        row("JSON nested 110 deep", nested.as_bytes(), Dead("sink-rejected", false)),
        row("key with `.`", br#"{"num": 8, "a.b": 1}"#, Dead("sink-rejected", false)),
        row("key starting with `$`", br#"{"num": 9, "$x": 1}"#, Dead("sink-rejected", false)),
        row("duplicate on the user's unique index", br#"{"num": 0, "again": true}"#, Dead("sink-rejected", false)),
        row("a plugin's own _id", br#"{"_id": "own-1", "num": 11}"#, Written(11)),
        row("another record's _id, other content", br#"{"_id": "own-1", "num": 12}"#, Dead("sink-rejected", false)),
        row("_id null", br#"{"_id": null, "num": 13}"#, Written(13)),
        row("_id null again, other content", br#"{"_id": null, "num": 14}"#, Dead("sink-rejected", false)),
        row("document over 16 MiB in BSON (3 MB of JSON)", huge_bson.as_bytes(), Dead("sink-rejected", true)),
        row(
            "upsert of an update operator",
            br#"{"num": 16, "ops": [{"op": "upsert", "doc": {"$set": {"x": 1}, "_id": "u16"}}]}"#,
            Dead("sink-rejected", false),
        ),
        row("delete by an operator _id", br#"{"num": 17, "ops": [{"op": "delete", "doc": {"_id": {"$gt": ""}}}]}"#, Dead("sink-rejected", false)),
        row(
            "delete by a regex _id",
            br#"{"num": 18, "ops": [{"op": "delete", "doc": {"_id": {"$regularExpression": {"pattern": ".*", "options": ""}}}}]}"#,
            Dead("sink-rejected", false),
        ),
        row("integer above 64 bits", br#"{"num": 20, "big": 18446744073709551615}"#, Dead("invalid-output", false)),
        row(
            "one output of three refused",
            br#"{"num": 21, "ops": [{"op": "insert", "doc": {"num": 24}}, {"op": "insert", "doc": {"num": 0}}, {"op": "insert", "doc": {"num": 25}}]}"#,
            Dead("sink-rejected", false),
        ),
        row("1 000 100 bytes, not JSON", &not_json, Dead("invalid-input", true)),
        Row { what: "tombstone", key: Some(b"gone".to_vec()), value: None, headers: vec![], outcome: Dead("invalid-input", false) },
        row("good record after them", br#"{"num": 23}"#, Written(23)),
    ]
}

/// The documents of "one output of three refused" that stay written (its dead letter replays all three, idempotently).
const ALSO_WRITTEN: [i64; 2] = [24, 25];

async fn create_topic(name: &str, max_message_bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1)).set("max.message.bytes", max_message_bytes);
    let r = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
}

/// Produce `rows` in order to partition 0: those with a header key that is not
/// UTF-8 through kcat (it sends the key's bytes as given), the rest through
/// confluent-kafka.
fn produce(topic: &str, rows: &[Row]) {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let tool = |script: &str| {
        let out = std::process::Command::new(repo().join("scripts").join(script)).output().unwrap();
        assert!(out.status.success(), "scripts/{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (python, kcat) = (tool("pytools"), tool("kcat"));
    let mut i = 0;
    while i < rows.len() {
        let by_kcat = |r: &Row| r.headers.iter().any(|(k, _)| std::str::from_utf8(k).is_err());
        if by_kcat(&rows[i]) {
            use std::os::unix::ffi::OsStrExt as _;
            let r = &rows[i];
            let mut cmd = std::process::Command::new(&kcat);
            cmd.args(["-P", "-b", &brokers(), "-t", topic, "-p", "0"]);
            for (k, v) in &r.headers {
                let mut h = k.clone();
                h.push(b'=');
                h.extend_from_slice(v.as_deref().unwrap_or_default());
                cmd.arg("-H").arg(std::ffi::OsStr::from_bytes(&h));
            }
            cmd.stdin(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(r.value.as_deref().unwrap()).unwrap();
            assert!(child.wait().unwrap().success(), "kcat failed for {:?}", r.what);
            i += 1;
            continue;
        }
        let mut lines = String::new();
        while i < rows.len() && !by_kcat(&rows[i]) {
            let r = &rows[i];
            let headers: Vec<serde_json::Value> =
                r.headers.iter().map(|(k, v)| serde_json::json!([hex(k), v.as_deref().map(hex)])).collect();
            let line = serde_json::json!({ "key": r.key.as_deref().map(hex), "value": r.value.as_deref().map(hex), "headers": headers });
            lines.push_str(&line.to_string());
            lines.push('\n');
            i += 1;
        }
        let mut child = std::process::Command::new(&python)
            .arg(repo().join("tests/support/produce_raw.py"))
            .args([&brokers(), topic])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "produce_raw.py failed");
    }
}

/// The writer plugin, with room for the 3 MB record (parsed, it is ~100 MB of `serde_json::Value`s) and its output.
fn writer_chain() -> PluginToml {
    PluginToml::new("writer", hostile("writer")).limit("memory_bytes", 536870912).limit("max_output_bytes", 8388608)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_record_is_written_or_dead_lettered_once() {
    let env = TestEnv::new("poison");
    let rows = rows();
    // Room for the 3 MB record on the source topic; the dead-letter topic keeps the broker's default (1 MiB).
    create_topic(&env.topic, "8388608").await;
    env.collection()
        .await
        .unwrap()
        .create_index(IndexModel::builder().keys(doc! { "num": 1 }).options(IndexOptions::builder().unique(true).build()).build())
        .await
        .unwrap();
    produce(&env.topic, &rows);

    let config = env.config_from(&env.builder().plugin(writer_chain()).set("pipeline", "max_value_bytes", 4194304)).unwrap();
    let summary = tokio::time::timeout(
        Duration::from_secs(180),
        sluice::run(config.clone(), RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .expect("the run ends by itself")
    .unwrap();
    assert!(summary.caught_up, "{summary}");
    assert_eq!(summary.consumed, rows.len() as u64, "{summary}");

    // Every written row once, nothing else.
    let docs = env.documents().await.unwrap();
    let mut nums: Vec<i64> = docs.iter().map(|d| int(d, "num")).collect();
    nums.sort();
    let mut want: Vec<i64> = rows
        .iter()
        .filter_map(|r| match r.outcome {
            Written(n) => Some(n),
            Dead(..) => None,
        })
        .chain(ALSO_WRITTEN)
        .collect();
    want.sort();
    assert_eq!(nums, want, "stored nums");

    // Every dead row dead-lettered once, with its kind; truncated where it was too large.
    let dead: BTreeMap<i64, (&str, bool, &str)> = rows
        .iter()
        .enumerate()
        .filter_map(|(o, r)| match r.outcome {
            Dead(kind, truncated) => Some((o as i64, (kind, truncated, r.what))),
            Written(_) => None,
        })
        .collect();
    assert_eq!(summary.dead_lettered, dead.len() as u64, "{summary}");
    let letters = env.dead_letters(dead.len()).unwrap();
    let mut got = BTreeMap::new();
    for l in &letters {
        let offset: i64 = l.header("sluice.source.offset").parse().unwrap();
        let truncated = l.headers.get("sluice.error.truncated").is_some_and(|v| v == "true");
        assert!(got.insert(offset, (l.header("sluice.error.kind").to_owned(), truncated)).is_none(), "offset {offset} dead-lettered twice");
        assert_eq!(l.header("sluice.group"), env.group);
        assert!(!l.header("sluice.error.reason").is_empty());
        if truncated {
            assert_eq!(l.value, None, "a truncated dead letter has no value");
        }
    }
    let mismatches: Vec<String> = dead
        .iter()
        .filter(|(o, (kind, truncated, _))| got.get(o) != Some(&(kind.to_string(), *truncated)))
        .map(|(o, (kind, truncated, what))| format!("offset {o} ({what}): want {kind} truncated={truncated}, got {:?}", got.get(o)))
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(got.len(), dead.len(), "only these are dead-lettered: {got:?}");
    // The header key that is not UTF-8 goes into the dead letter unchanged.
    let bad_header = letters.iter().find(|l| l.header("sluice.source.offset") == "2").unwrap();
    assert!(bad_header.raw_headers.contains(&(NOT_UTF8.to_vec(), Some(b"v".to_vec()))), "{:?}", bad_header.raw_headers);
    env.assert_committed_at_end();

    // A replay takes the truncated ones' values from the source topic (they fail again, the same way).
    let replayed = sluice::cli::dlq_replay::replay(&config, &format!("{}.dlq", env.topic), &[]).await.unwrap();
    assert_eq!(replayed.from_source, 2, "{replayed:?}");
    assert_eq!(replayed.read, dead.len() as u64);
    let failed_again: BTreeSet<String> = replayed.failed.iter().map(|(at, _)| at.clone()).collect();
    for o in [15, 21] {
        assert!(failed_again.contains(&format!("{}:0@{o}", env.topic)), "{failed_again:?}");
    }
    let after: BTreeSet<i64> = env.documents().await.unwrap().iter().map(|d| int(d, "num")).collect();
    assert_eq!(after.len(), want.len(), "the replay wrote nothing twice");
    // Another group's replay of the same dead-letter topic leaves them alone (sluice.group).
    let mut other = config.clone();
    other.kafka.group_id = format!("{}-other", env.group);
    let foreign = sluice::cli::dlq_replay::replay(&other, &format!("{}.dlq", env.topic), &[]).await.unwrap();
    assert_eq!((foreign.read, foreign.other_groups), (0, dead.len() as u64), "{foreign:?}");
}

/// A dead-letter topic that refuses every dead letter (even truncated): the
/// partition waits, commits nothing, `/readyz` fails after
/// `dlq.unavailable_timeout`; once the topic takes it, everything lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_dead_letter_topic_is_not_ready_and_loses_nothing() {
    let env = TestEnv::new("poison-dlq");
    env.create_topic(1).await.unwrap();
    let dlq = format!("{}.dlq", env.topic);
    create_topic(&dlq, "100").await;
    env.produce_raw(&[(None, Some(br#"{"num": 0}"#)), (None, Some(b"not json")), (None, Some(br#"{"num": 1}"#))]).await.unwrap();
    let config = env.config_file(&["passthrough"], "[dlq]\nunavailable_timeout = \"2s\"\n");
    let mut host = Host::spawn(&env, "h", &config, true);
    let admin = host.admin(None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = admin.get("/readyz").await;
        if status == 503 && body.contains("dead letters") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never unready: {status} {body}\n{}", host.log_tail(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(admin.metric("sluice_dlq_unavailable").await, Some(1));
    // Nothing past the record is committed (its batch waits whole).
    // Kafka's offset (-1: none yet) and MongoDB's progress.
    let (committed, _) = env.offsets().unwrap();
    assert!(matches!(committed.get(&0), None | Some(-1 | 0 | 1)), "Kafka committed past the failed record: {committed:?}");
    let progress = env.progress().await;
    assert!(matches!(progress.get(&0), None | Some(0 | 1)), "MongoDB's progress went past the failed record: {progress:?}");

    // The topic takes larger records: the dead letter goes out, the rest lands.
    let admin_client: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&dlq)).set("max.message.bytes", "1048588");
    admin_client.alter_configs([&alter], &AdminOptions::new()).await.unwrap();
    assert!(host.wait(Duration::from_secs(90)).await.success(), "{}", host.log_tail(30));
    env.assert_exact(2).await;
    let letters = env.dead_letters(1).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("sluice.error.kind"), "invalid-input");
    env.assert_committed_at_end();
}

/// A dead-letter topic with a smaller `max.message.bytes` than the source's
/// records: the broker refuses the whole dead letter, a truncated one is sent.
/// Then the topic is deleted while the host runs: it is created again, and
/// the next dead letter lands there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_or_deleted_dead_letter_topic_still_gets_every_dead_letter() {
    let env = TestEnv::new("poison-dlq-gone");
    env.create_topic(1).await.unwrap();
    let dlq = format!("{}.dlq", env.topic);
    create_topic(&dlq, "3000").await;
    let big_bad = vec![b'x'; 5000];
    env.produce_raw(&[(None, Some(br#"{"num": 0}"#)), (None, Some(&big_bad))]).await.unwrap();
    let config = env.config_file(&["passthrough"], "");
    let mut host = Host::spawn(&env, "h", &config, false);
    env.wait_for_count(1, Duration::from_secs(60)).await.unwrap();
    let letters = env.dead_letters(1).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("sluice.error.truncated"), "true", "{:?}", letters[0].headers);
    assert_eq!(letters[0].value, None);

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let r = admin.delete_topics(&[dlq.as_str()], &AdminOptions::new()).await.unwrap();
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    // Gone once the cluster's metadata says so.
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rdkafka::consumer::Consumer::fetch_metadata(&probe, Some(&dlq), Duration::from_secs(5))
        .is_ok_and(|m| m.topics().iter().any(|t| t.error().is_none()))
    {
        assert!(std::time::Instant::now() < deadline, "{dlq} still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.produce_raw(&[(None, Some(b"not json")), (None, Some(br#"{"num": 1}"#))]).await.unwrap();
    env.wait_for_count(2, Duration::from_secs(90)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    let letters = env.dead_letters(1).unwrap();
    assert_eq!(letters.len(), 1, "the new topic holds the new dead letter");
    assert_eq!(letters[0].header("sluice.source.offset"), "2");
    host.terminate(Duration::from_secs(30)).await;
    env.assert_committed_at_end();
}
