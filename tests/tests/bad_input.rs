//! Bad input by rule, on the real services: not UTF-8, not JSON, a tombstone, a
//! value over `max_value_bytes`, a document MongoDB refuses. Each fails only its
//! own record; the policy decides what that means.

use std::time::Duration;

use sluice::RunOptions;
use sluice_tests::{ConfigBuilder, PluginToml, TestEnv, num_report};

fn big() -> Vec<u8> {
    format!("{{\"num\": 99, \"pad\": \"{}\"}}", "x".repeat(2000)).into_bytes()
}

/// Offsets 0..7 on partition 0: good, not UTF-8, not JSON, tombstone, too big, good, refused `_id`.
async fn produce_mixed(env: &TestEnv) {
    env.create_topic(1).await.unwrap();
    let big = big();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = vec![
        (None, Some(br#"{"num":0}"#)),
        (Some(b"k1"), Some(b"\xff\xfe\xfd")),
        (None, Some(b"not json")),
        (Some(b"gone"), None),
        (None, Some(&big)),
        (None, Some(br#"{"num":1}"#)),
        (None, Some(br#"{"_id":[1,2],"num":2}"#)),
    ];
    env.produce_raw(&records).await.unwrap();
}

const EXPECTED_KINDS: [(i64, &str); 5] =
    [(1, "invalid-input"), (2, "invalid-input"), (3, "invalid-input"), (4, "invalid-input"), (6, "sink-rejected")];

/// This env's config with `chain`, and record values over 1000 bytes invalid.
fn config(env: &TestEnv, chain: impl IntoIterator<Item = PluginToml>) -> ConfigBuilder {
    env.builder().chain(chain).set("pipeline", "max_value_bytes", 1000)
}

async fn run(env: &TestEnv, config: ConfigBuilder) -> anyhow::Result<sluice::Summary> {
    let config = env.config_from(&config)?;
    tokio::time::timeout(
        Duration::from_secs(120),
        sluice::run(config, RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .expect("finished in time")
}

fn passthrough() -> PluginToml {
    PluginToml::example("passthrough")
}

async fn check_dead_letters(env: &TestEnv) {
    let summary = run(env, config(env, [passthrough()])).await.unwrap();
    assert_eq!(summary.dead_lettered, 5, "{summary}");
    let docs = env.documents().await.unwrap();
    assert!(num_report(&docs, [0, 1]).is_exact(), "{docs:?}");
    env.assert_committed_at_end();
    let dl = env.dead_letters(5).unwrap();
    let got: Vec<(i64, String)> =
        dl.iter().map(|d| (d.header("sluice.source.offset").parse().unwrap(), d.header("sluice.error.kind").to_owned())).collect();
    let want: Vec<(i64, String)> = EXPECTED_KINDS.iter().map(|(o, k)| (*o, k.to_string())).collect();
    assert_eq!(got, want, "{dl:#?}");
    // The original key, value and absence of value are kept.
    assert_eq!(dl[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(dl[0].value.as_deref(), Some(&b"\xff\xfe\xfd"[..]));
    assert_eq!(dl[2].value, None, "a tombstone stays a tombstone");
    assert!(dl[3].header("sluice.error.reason").contains("max_value_bytes"), "{:?}", dl[3]);
    assert!(dl[4].header("sluice.error.reason").contains("MongoDB refused"), "{:?}", dl[4]);
    // Failures no plugin caused still say which chain version was running.
    for d in &dl {
        assert!(d.header("sluice.chain").starts_with("passthrough@"), "{d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_dead_lettered_with_their_kind() {
    let env = TestEnv::new("bad-dlq");
    produce_mixed(&env).await;
    check_dead_letters(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_plugins_the_same_rules_apply() {
    let env = TestEnv::new("bad-noplugin");
    produce_mixed(&env).await;
    let summary = run(&env, config(&env, [])).await.unwrap();
    assert_eq!(summary.dead_lettered, 5, "{summary}");
    let dl = env.dead_letters(5).unwrap();
    let kinds: Vec<String> = dl.iter().map(|d| d.header("sluice.error.kind").to_owned()).collect();
    assert_eq!(kinds, EXPECTED_KINDS.iter().map(|(_, k)| k.to_string()).collect::<Vec<_>>());
    assert!(dl.iter().all(|d| d.header("sluice.chain").is_empty()), "no plugins: an empty chain");
    assert!(num_report(&env.documents().await.unwrap(), [0, 1]).is_exact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_counts_and_goes_on() {
    let env = TestEnv::new("bad-skip");
    produce_mixed(&env).await;
    let summary = run(&env, config(&env, [passthrough()]).set("pipeline", "on_error", "skip")).await.unwrap();
    assert_eq!(summary.skipped, 5, "{summary}");
    assert_eq!(summary.dead_lettered, 0);
    assert!(num_report(&env.documents().await.unwrap(), [0, 1]).is_exact());
    env.assert_committed_at_end();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_fails_the_run_without_committing_past_the_record() {
    let env = TestEnv::new("bad-stop");
    produce_mixed(&env).await;
    let err = run(&env, config(&env, [passthrough()]).set("pipeline", "on_error", "stop").set("pipeline", "batch_max_records", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}:0@1", env.topic)) && err.contains("invalid-input"), "{err}");
    // Record 0 was written and committed; nothing past the failed record 1, in either store.
    let (committed, _) = env.offsets().unwrap();
    assert_eq!(committed.get(&0), Some(&1), "Kafka's committed offset");
    let progress = env.progress().await;
    assert!(matches!(progress.get(&0), None | Some(1)), "MongoDB's progress: {progress:?}");
}

/// A failure in the second plugin of a chain, after the first transformed the
/// record: the dead letter carries the record as it came (key and value, not
/// the first plugin's output), its source partition, offset and timestamp, and
/// names the plugin that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_the_record_as_it_came() {
    let env = TestEnv::new("bad-second");
    env.create_topic(1).await.unwrap();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> =
        vec![(Some(b"k4"), Some(br#"{"num":4}"#)), (Some(b"k5"), Some(br#"{"num":5}"#)), (Some(b"k6"), Some(br#"{"num":6}"#))];
    env.produce_raw(&records).await.unwrap();
    let chain = [PluginToml::example("enrich"), PluginToml::new("panic", sluice_tests::hostile("panic"))];
    let summary = run(&env, config(&env, chain)).await.unwrap();
    assert_eq!(summary.dead_lettered, 1, "{summary}");
    let dl = env.dead_letters(1).unwrap();
    assert_eq!(dl.len(), 1);
    let d = &dl[0];
    assert_eq!((d.key.as_deref(), d.value.as_deref()), (Some(&b"k5"[..]), Some(&br#"{"num":5}"#[..])), "the record as it came");
    assert_eq!((d.header("sluice.source.partition"), d.header("sluice.source.offset")), ("0", "1"));
    assert!(d.header("sluice.source.timestamp").parse::<i64>().unwrap() > 1_600_000_000_000, "{d:?}");
    assert_eq!((d.header("sluice.plugin"), d.header("sluice.error.kind")), ("panic", "trap"));
    assert!(d.header("sluice.chain").starts_with("enrich@") && d.header("sluice.chain").contains(",panic@"), "{d:?}");
    let docs = env.documents().await.unwrap();
    assert_eq!(docs.len(), 2);
}
