//! The tutorial's scenario on the real services: 500 `{"num": n}` through the
//! example plugins into MongoDB, with offsets committed to the end.

use std::time::Duration;

use mongodb::bson::Document;
use sluice::RunOptions;
use sluice_tests::{PluginToml, TestEnv, int, lang_plugin, made_by, num_report, plugin, source_of};

const N: u64 = 500;

/// Produce 500 numbers to a fresh 3-partition topic and run the chain until caught up.
async fn run_chain(name: &str, chain: &[&str]) -> (TestEnv, sluice::Summary) {
    let env = TestEnv::new(name);
    env.create_topic(3).await.expect("create topic");
    env.produce_nums(N).await.expect("produce");
    let summary = run_plugins(&env, chain.iter().map(|name| PluginToml::example(name))).await;
    (env, summary)
}

/// Run `plugins` over `env`'s topic (its 500 numbers already there) until caught up.
async fn run_plugins(env: &TestEnv, plugins: impl IntoIterator<Item = PluginToml>) -> sluice::Summary {
    let builder = env.builder().chain(plugins).set("pipeline", "batch_max_records", 64).set("pipeline", "versions_field", "_sluice");
    let config = env.config_from(&builder).expect("config");
    let summary = tokio::time::timeout(
        Duration::from_secs(180),
        sluice::run(config, RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .expect("run finished within 180 s")
    .expect("run succeeded");
    assert!(summary.caught_up, "{summary:?}");
    assert_eq!(summary.consumed, N, "{summary:?}");
    env.assert_committed_at_end();
    let (_, ends) = env.offsets().expect("offsets");
    assert_eq!(ends.values().sum::<i64>(), N as i64);
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_stores_all_500() {
    let (env, summary) = run_chain("passthrough", &["passthrough"]).await;
    let docs = env.documents().await.unwrap();
    assert_eq!(docs.len(), 500);
    let report = num_report(&docs, 0..500);
    assert!(report.is_exact(), "{report:?}");
    assert_eq!(summary.written, 500);
    // Default _id: topic:partition:offset:index.
    let id = docs[0].get_str("_id").unwrap();
    assert!(id.starts_with(&format!("{}:", env.topic)) && id.ends_with(":0"), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_keeps_250() {
    let (env, summary) = run_chain("even", &["even"]).await;
    let docs = env.documents().await.unwrap();
    assert_eq!(docs.len(), 250);
    let report = num_report(&docs, (0..500).step_by(2));
    assert!(report.is_exact(), "{report:?}");
    assert_eq!(summary.dropped, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_then_enrich_adds_square_and_source() {
    let (env, _) = run_chain("even-enrich", &["even", "enrich"]).await;
    let docs = env.documents().await.unwrap();
    // versions_field is on in run_chain: the chain's plugins and their hashes.
    let plugins = docs[0].get_document("_sluice").unwrap().get_array("plugins").unwrap();
    let names: Vec<&str> = plugins.iter().map(|b| b.as_str().unwrap().split('@').next().unwrap()).collect();
    assert_eq!(names, ["even", "enrich"]);
    assert_eq!(docs.len(), 250);
    let report = num_report(&docs, (0..500).step_by(2));
    assert!(report.is_exact(), "{report:?}");
    for d in &docs {
        let n = int(d, "num");
        assert_eq!(int(d, "square"), n * n, "{d}");
        let src = d.get_document("source").unwrap();
        assert_eq!(src.get_str("topic").unwrap(), env.topic);
        assert!((0..3).contains(&int(src, "partition")), "{d}");
        assert!(int(src, "offset") >= 0);
    }
}

/// The Python twin of `enrich` stores exactly what the Rust one stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_py_stores_what_the_rust_enrich_stores() {
    stores_what_the_rust_enrich_stores("enrich-py").await;
}

/// The JavaScript twin of `enrich` stores exactly what the Rust one stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_js_stores_what_the_rust_enrich_stores() {
    stores_what_the_rust_enrich_stores("enrich-js").await;
}

/// The seed's 500 numbers through the Rust `enrich`, then through `lang` (a built
/// twin of it, under the same plugin name) on the same topic with a group and a
/// collection of its own: the same records, so the same `_id`s and `source`s.
/// Every document must be the Rust one's, byte for byte as BSON (same fields, same
/// types, same values, same key order, nested ones too), once the versions field
/// (which names each plugin's version, so it differs by design) is set aside.
async fn stores_what_the_rust_enrich_stores(lang: &str) {
    let (rust_env, rust) = run_chain(&format!("{lang}-rust"), &["enrich"]).await;
    let mut env = TestEnv::new(lang);
    env.topic = rust_env.topic.clone();
    let built = lang_plugin(lang);
    let version = sluice::runtime::version_of(&std::fs::read(&built).unwrap());
    let summary = run_plugins(&env, [PluginToml::new("enrich", &built)]).await;
    assert_eq!(
        (summary.written, summary.dropped, summary.skipped, summary.dead_lettered, summary.duplicates),
        (N, 0, 0, 0, 0),
        "{summary:?}"
    );
    assert_eq!((rust.written, rust.dropped, rust.skipped, rust.dead_lettered), (N, 0, 0, 0), "{rust:?}");

    let expected = stored_by(&rust_env, &sluice::runtime::version_of(&std::fs::read(plugin("enrich")).unwrap())).await;
    let got = stored_by(&env, &version).await;
    assert!(num_report(&got, 0..N as i64).is_exact(), "{:?}", num_report(&got, 0..N as i64));
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(source_of(g), source_of(e), "the same records");
        let bytes = |d: &Document| mongodb::bson::to_vec(d).expect("a document serialises");
        assert!(bytes(g) == bytes(e), "{lang} stored\n  {g:?}\nthe Rust enrich stored\n  {e:?}");
    }
    // What they are, as the Rust enrich's test says (`source` after `num`, `square` last: sorted).
    let keys: Vec<&str> = got[0].keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "num", "source", "square"], "{}", got[0]);
    let source: Vec<&str> = got[0].get_document("source").unwrap().keys().map(String::as_str).collect();
    assert_eq!(source, ["offset", "partition", "topic"], "{}", got[0]);
    for d in &got {
        let (n, src) = (int(d, "num"), d.get_document("source").unwrap());
        assert_eq!(int(d, "square"), n * n, "{d}");
        assert_eq!(src.get_str("topic").unwrap(), env.topic, "{d}");
        assert_eq!((int(src, "partition") as i32, int(src, "offset")), source_of(d), "{d}");
    }
}

/// `env`'s documents in (partition, offset) order, each checked to be made by
/// `enrich` at `version`, with the versions field removed (the other fields keep
/// their order).
async fn stored_by(env: &TestEnv, version: &str) -> Vec<Document> {
    let chain = format!("enrich@{version}");
    let mut docs = env.documents().await.unwrap();
    docs.sort_by_key(source_of);
    for d in &mut docs {
        assert_eq!(made_by(d, "_sluice"), chain, "{d}");
        d.remove("_sluice");
    }
    docs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plugins_writes_the_values_as_they_are() {
    let (env, _) = run_chain("noplugin", &[]).await;
    let docs = env.documents().await.unwrap();
    assert!(num_report(&docs, 0..500).is_exact());
}

/// A second run with the same group finds nothing to do and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_replays_nothing() {
    let (env, _) = run_chain("rerun", &["passthrough"]).await;
    let config = env.config(&["passthrough"], "").unwrap();
    let summary = tokio::time::timeout(
        Duration::from_secs(120),
        sluice::run(config, RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(summary.consumed, 0, "{summary:?}");
    assert_eq!(env.documents().await.unwrap().len(), 500);
}

/// `auto_offset_reset = "latest"`: a new group starts at the end, so what was
/// in the topic before it joined is not consumed; what comes after is, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_a_new_group_at_the_end() {
    let env = TestEnv::new("latest");
    env.create_topic(2).await.unwrap();
    env.produce_nums(50).await.unwrap();
    let config = env.dir.path().join("host.toml");
    let text = env.builder().example_plugins(&["passthrough"]).set("kafka", "auto_offset_reset", "latest").to_toml();
    assert!(text.contains("\"latest\""));
    std::fs::write(&config, text).unwrap();
    let mut host = sluice_tests::Host::spawn(&env, "host", &config, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while host.assignments() == 0 {
        assert!(std::time::Instant::now() < deadline, "never assigned:\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The start (the end offsets) was read before the assignment was logged.
    let later: Vec<Vec<u8>> = (1000..1020).map(|n| format!("{{\"num\":{n}}}").into_bytes()).collect();
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = later.iter().map(|v| (None, Some(v.as_slice()))).collect();
    env.produce_raw(&records).await.unwrap();
    env.wait_for_count(20, Duration::from_secs(60)).await.unwrap();
    env.wait_committed_at_end(Duration::from_secs(30)).await.unwrap();
    host.terminate(Duration::from_secs(30)).await;
    let docs = env.documents().await.unwrap();
    let report = num_report(&docs, 1000..1020);
    assert!(report.is_exact(), "only what came after the group joined: {report:?}");
    assert_eq!(host.summary("consumed"), Some(20));

    // Records sent while no host runs, also to a partition the first run never got a record of,
    // are consumed by the next run: "latest" was resolved once, and recorded.
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", sluice_tests::brokers()).create().unwrap();
    for n in 2000..2010 {
        let payload = format!("{{\"num\":{n}}}");
        producer
            .send(FutureRecord::<(), String>::to(&env.topic).partition(n % 2).payload(&payload), Duration::from_secs(30))
            .await
            .unwrap();
    }
    let mut next = sluice_tests::Host::spawn(&env, "next", &config, true);
    assert!(next.wait(Duration::from_secs(60)).await.success(), "{}", next.log_tail(20));
    assert_eq!(next.summary("consumed"), Some(10), "{}", next.log_tail(20));
    let docs = env.documents().await.unwrap();
    assert!(num_report(&docs, (1000..1020).chain(2000..2010)).is_exact());
}
