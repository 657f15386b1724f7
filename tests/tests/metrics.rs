//! `/metrics` scraped during and after a run on the real services, checked
//! against what landed in MongoDB and what Kafka holds; failed records are
//! logged as summaries, not one line each.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_tests::{Host, PluginToml, TestEnv};

const N: u64 = 3000;
const BAD: u64 = 7;

/// `name{labels}` → value, checking the text format on the way: every sample's
/// family has `# TYPE`, names are `sluice_*` in the allowed alphabet, counters end in `_total`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} must end in _total");
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(name.starts_with("sluice_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"));
        assert!(types.contains_key(family.unwrap_or(name)), "no # TYPE for {name}");
        samples.insert(key.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_landed() {
    let env = TestEnv::new("metrics");
    env.create_topic(3).await.unwrap();
    env.produce_nums(N).await.unwrap();
    let bad = vec![(None, Some(&b"not json"[..])); BAD as usize];
    env.produce_raw(&bad).await.unwrap();
    let config = env.config_file_from(&env.builder().example_plugins(&["even"]).set("pipeline", "batch_max_records", 100));
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;

    // During the run: the format holds already.
    env.wait_for_count(1, Duration::from_secs(60)).await.unwrap();
    let (status, text) = admin.get("/metrics").await;
    assert_eq!(status, 200);
    parse(&text);

    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap();
    // The lag comes from librdkafka's statistics (every second): wait for it to read 0.
    let lag_keys: Vec<String> = (0..3).map(|p| format!("sluice_consumer_lag{{topic=\"{}\",partition=\"{p}\"}}", env.topic)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let m = loop {
        let m = parse(&admin.get("/metrics").await.1);
        if lag_keys.iter().all(|k| m.get(k) == Some(&0.0)) {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "lag never 0: {:?}", lag_keys.iter().map(|k| m.get(k)).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let stored = env.count().await;
    let total = (N + BAD) as f64;
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(get("sluice_records_consumed_total"), total);
    assert_eq!(get("sluice_documents_written_total"), stored as f64, "written = documents in MongoDB");
    assert_eq!(stored, N / 2);
    assert_eq!(get("sluice_records_dropped_total"), (N / 2) as f64);
    assert_eq!(get("sluice_records_dead_lettered_total{kind=\"invalid-input\"}"), BAD as f64);
    assert_eq!(get("sluice_records_dead_lettered_total{kind=\"plugin-error\"}"), 0.0);
    assert_eq!(get("sluice_plugin_call_records_sum{plugin=\"even\"}"), total, "every record went through the plugin");
    let calls = get("sluice_plugin_call_records_count{plugin=\"even\"}");
    assert!(calls >= total / 100.0 && calls == get("sluice_plugin_call_duration_seconds_count{plugin=\"even\"}"), "{calls} calls");
    assert_eq!(get("sluice_plugin_call_duration_seconds_bucket{plugin=\"even\",le=\"+Inf\"}"), calls);
    assert_eq!(get("sluice_sink_write_documents_sum"), stored as f64);
    assert!(get("sluice_sink_write_duration_seconds_count") >= 1.0);
    assert!(get("sluice_kafka_commits_total{result=\"ok\"}") >= 1.0);
    assert_eq!(get("sluice_kafka_commits_total{result=\"error\"}"), 0.0);
    for p in 0..3 {
        assert_eq!(get(&format!("sluice_partition_chain_generation{{topic=\"{}\",partition=\"{p}\"}}", env.topic)), 1.0);
    }
    assert!(m.keys().any(|k| k.starts_with("sluice_plugin_info{plugin=\"even\",version=")), "{m:?}");
    assert_eq!(get("sluice_ready"), 1.0);

    host.terminate(Duration::from_secs(30)).await;
    // Seven failures, one or two summary lines: never one line per record.
    let lines = host.log_lines("failed records:");
    assert!((1..=2).contains(&lines.len()), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("dead-lettered (invalid-input)")), "{lines:?}");
}

/// The lag is there from the start (a new group, nothing written yet: counted
/// from where consumption began) and keeps following the broker's high
/// watermark while a slow sink keeps the partition paused (librdkafka does not
/// fetch a paused partition, so its statistics stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_from_the_start_and_grows_while_paused() {
    const STUCK: usize = 30;
    const MORE: u64 = 500;
    let env = TestEnv::new("metrics-lag");
    env.create_topic(1).await.unwrap();
    // Each of these takes the plugin its whole time limit: 1 s a record.
    env.produce_raw(&vec![(None, Some(&br#"{"num": 13}"#[..])); STUCK]).await.unwrap();
    let builder = env
        .builder()
        .plugin(PluginToml::new("spin", sluice_tests::hostile("spin")).limit("call_timeout", "1s"))
        .set("pipeline", "batch_max_records", 10)
        .set("pipeline", "max_queued_per_partition", 10)
        .set("pipeline", "on_error", "skip");
    let config = env.config_file_from(&builder);
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    let key = format!("sluice_consumer_lag{{topic=\"{}\",partition=\"0\"}}", env.topic);
    let lag = async |admin: &sluice_tests::Admin| parse(&admin.get("/metrics").await.1).get(&key).copied();

    // Before the first batch is done (10 s): nothing written yet, all of it is lag.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let first = loop {
        if let Some(l) = lag(&admin).await {
            break l;
        }
        assert!(std::time::Instant::now() < deadline, "no lag\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first, STUCK as f64);
    // Nothing written yet: the partition shows the generation it starts with (a partition
    // assigned again after its last record would otherwise show none).
    let generation = format!("sluice_partition_chain_generation{{topic=\"{}\",partition=\"0\"}}", env.topic);
    assert_eq!(parse(&admin.get("/metrics").await.1).get(&generation), Some(&1.0));
    // More records while the worker is stuck (10 s a batch) and the partition paused.
    env.produce_nums(MORE).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let l = lag(&admin).await.unwrap();
        if l >= MORE as f64 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lag {l} does not count the {MORE} new records\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.terminate(Duration::from_secs(30)).await;
}
