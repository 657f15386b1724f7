//! Hot swap under continuous load on the real services (6 partitions, a steady
//! producer): by file (a broken one refused first), by the admin API (with
//! broken versions refused and a rollback), and a chain change by SIGHUP amid a
//! backlog. Each test checks that no record is lost or duplicated, that every
//! document was made by exactly one chain version (the versions field), and that
//! per partition the versions change at one offset per swap (all of the old
//! before, all of the new after). Throughout the swaps by file and by the
//! API, a [`ProgressWatch`] checks that neither progress store passes a record
//! whose document is not there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_tests::watch::ProgressWatch;
use sluice_tests::{Admin, Host, TestEnv, brokers, by_partition, hostile, int, lang_plugin, made_by, plugin, segments, source_of};

const PARTITIONS: i32 = 6;
const RATE: u64 = 2000;
const FIELD: &str = "_sluice";
/// The producer's rate in the test that swaps to the Python and JavaScript plugins: a
/// first compile of theirs takes seconds (tens on a busy machine, with a debug build),
/// and the records of that time all end up in the checks.
const LANG_RATE: u64 = 500;
/// Records waiting before the SIGHUP test's host starts, numbered from
/// `BACKLOG_FROM` (the steady producer's from 0).
const BACKLOG: u64 = 30_000;
const BACKLOG_FROM: u64 = 1_000_000_000;
const EXTRA: &str = r#"
[pipeline]
batch_max_records = 100
batch_linger = "10ms"
versions_field = "_sluice"
"#;

/// `transform@<hash>` of a built plugin file.
fn label(path: &std::path::Path) -> String {
    format!("transform@{}", sluice::runtime::version_of(&std::fs::read(path).unwrap()))
}

/// A config whose one plugin, `transform`, is a copy of `passthrough` in a
/// directory of its own (the file a swap replaces; the host's logs are elsewhere),
/// with a self-test.
fn setup_transform(env: &TestEnv) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(env.dir.path().join("plugins")).unwrap();
    let file = env.dir.path().join("plugins/transform.wasm");
    std::fs::copy(plugin("passthrough"), &file).unwrap();
    let plugins =
        format!("[[plugins]]\nname = \"transform\"\npath = \"{}\"\n[[plugins.self_test]]\ninput = '{{\"num\": 5}}'\n", file.display());
    let config = env.dir.path().join("host.toml");
    std::fs::write(&config, format!("{}{plugins}{EXTRA}", env.config_text(&[], ""))).unwrap();
    (file, config)
}

async fn start(name: &str) -> (TestEnv, Arc<AtomicBool>, tokio::task::JoinHandle<anyhow::Result<u64>>) {
    start_at(name, RATE).await
}

/// [`start`] with the producer at `rate` records a second.
async fn start_at(name: &str, rate: u64) -> (TestEnv, Arc<AtomicBool>, tokio::task::JoinHandle<anyhow::Result<u64>>) {
    let env = TestEnv::new(name);
    env.create_topic(PARTITIONS).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = env.produce_until(stop.clone(), rate);
    (env, stop, producer)
}

/// Documents made by `chain` so far.
async fn made_by_count(env: &TestEnv, chain: &str) -> u64 {
    let filter = mongodb::bson::doc! { format!("{FIELD}.plugins"): { "$all": chain.split(',').collect::<Vec<_>>() } };
    env.collection().await.unwrap().count_documents(filter).await.unwrap()
}

async fn wait_made_by(env: &TestEnv, chain: &str, n: u64, host: &Host) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while made_by_count(env, chain).await < n {
        assert!(std::time::Instant::now() < deadline, "fewer than {n} documents made by {chain}:\n{}", host.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the host has written `n` documents. Its metrics, not a count in
/// MongoDB: under a backlog, counting documents by version (a scan) is slow.
async fn wait_written(admin: &Admin, n: u64, host: &Host) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let written = admin.metric("sluice_documents_written_total").await.unwrap_or(0);
        if written >= n {
            return written;
        }
        assert!(std::time::Instant::now() < deadline, "fewer than {n} documents written:\n{}", host.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop producing, wait until everything is written and committed, stop the
/// host; returns how many records were produced and the documents.
async fn finish(
    env: &TestEnv,
    stop: Arc<AtomicBool>,
    producer: tokio::task::JoinHandle<anyhow::Result<u64>>,
    host: &mut Host,
) -> (i64, Vec<mongodb::bson::Document>) {
    stop.store(true, Ordering::Relaxed);
    let produced = producer.await.unwrap().expect("producer");
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    host.terminate(Duration::from_secs(30)).await;
    assert_eq!(host.summary("duplicates"), Some(0));
    (produced as i64, env.documents().await.unwrap())
}

/// Per partition, the offset at which the host reported switching to generation `to`.
fn reported_switches(host: &Host, to: u64) -> std::collections::BTreeMap<i32, i64> {
    let field = |line: &str, key: &str| -> Option<i64> {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).and_then(|v| v.parse().ok())
    };
    host.log_lines("partition switched chain generation")
        .iter()
        .filter(|l| field(l, "to") == Some(to as i64))
        .map(|l| (field(l, "partition").unwrap() as i32, field(l, "at_offset").unwrap()))
        .collect()
}

/// Each partition's first document by `version` is at the offset the host reported for the switch to it.
fn assert_switches_as_reported(docs: &[mongodb::bson::Document], version: &str, reported: &std::collections::BTreeMap<i32, i64>) {
    for (p, list) in by_partition(docs, FIELD) {
        let first = list.iter().find(|(_, v)| v == version).map(|(o, _)| *o);
        assert_eq!(first, reported.get(&p).copied(), "partition {p}: the first document by {version} vs the reported switch {reported:?}");
    }
}

/// Wait until every partition's last batch was by generation `generation` (the rollout as the metrics show it).
async fn wait_rollout(env: &TestEnv, admin: &Admin, generation: u64) {
    let gauges: Vec<String> =
        (0..PARTITIONS).map(|p| format!("sluice_partition_chain_generation{{topic=\"{}\",partition=\"{p}\"}}", env.topic)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let values: Vec<Option<u64>> = futures::future::join_all(gauges.iter().map(|g| admin.metric(g))).await;
        if values.iter().all(|v| *v == Some(generation)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rollout of generation {generation} never reached every partition: {values:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One document for each of 0..produced, and nothing else. (Counted in a table:
/// `num_report` looks each number up in a list, slow for the 100 000s of documents
/// of a long run.)
fn assert_all_once(docs: &[mongodb::bson::Document], produced: i64) {
    let mut seen = vec![0u32; produced as usize];
    let mut unexpected = Vec::new();
    for d in docs {
        match usize::try_from(int(d, "num")).ok().and_then(|n| seen.get_mut(n)) {
            Some(count) => *count += 1,
            None => unexpected.push(int(d, "num")),
        }
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|n| seen[*n] == 0).collect();
    let duplicates: Vec<usize> = (0..seen.len()).filter(|n| seen[*n] > 1).collect();
    assert!(
        missing.is_empty() && duplicates.is_empty() && unexpected.is_empty(),
        "of {produced}: missing {} {:?}, duplicates {} {:?}, unexpected {unexpected:?}",
        missing.len(),
        &missing[..missing.len().min(20)],
        duplicates.len(),
        &duplicates[..duplicates.len().min(20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_written_mid_stream_is_swapped_in() {
    let (env, stop, producer) = start("swap-file").await;
    let (file, config) = setup_transform(&env);
    let (v1, v2) = (label(&plugin("passthrough")), label(&plugin("enrich")));
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    wait_made_by(&env, &v1, 4000, &host).await;

    // A version whose init fails, written over the file: refused, once; v1 runs on.
    let broken = std::fs::read(hostile("initfail")).unwrap();
    std::fs::write(&file, &broken).unwrap();
    let rejections = "sluice_plugin_swap_rejections_total{plugin=\"transform\",trigger=\"file\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while admin.metric(rejections).await.is_none() {
        assert!(std::time::Instant::now() < deadline, "the broken file was not refused:\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = admin.plugins().await;
    assert_eq!(listed["generation"], 1, "{listed}");
    let refused = &listed["plugins"][0]["last_rejected"];
    assert_eq!(refused["version"], sluice::runtime::version_of(&broken), "{listed}");
    assert_eq!(refused["trigger"], "file", "{listed}");
    assert!(refused["error"].as_str().unwrap().contains("init failed: this version refuses to start"), "{listed}");
    // Generation 1 still: what is written now is v1's.
    let written = wait_written(&admin, 0, &host).await;
    wait_written(&admin, written + 1000, &host).await;
    assert_eq!(admin.metric(rejections).await, Some(1), "refused once, not retried");

    // Written in place, like `cp` (not an atomic rename): the debounce waits for the end.
    std::fs::write(&file, std::fs::read(plugin("enrich")).unwrap()).unwrap();
    wait_made_by(&env, &v2, 4000, &host).await;
    assert!(!producer.is_finished(), "the load ran through the swap");
    // The rollout as the metrics show it: every partition's last batch by generation 2.
    wait_rollout(&env, &admin, 2).await;

    let (produced, docs) = finish(&env, stop, producer, &mut host).await;
    assert_all_once(&docs, produced);
    for (p, list) in by_partition(&docs, FIELD) {
        assert_eq!(segments(&list), [v1.clone(), v2.clone()], "partition {p}: one switch from v1 to v2");
    }
    assert_switches_as_reported(&docs, &v2, &reported_switches(&host, 2));
    for d in &docs {
        let n = int(d, "num");
        match made_by(d, FIELD) {
            v if v == v2 => assert_eq!(int(d, "square"), n * n, "{d}"),
            _ => assert!(!d.contains_key("square"), "{d}"),
        }
    }
    let swaps = host.log_lines("plugin swapped");
    assert_eq!(swaps.len(), 1, "{swaps:?}");
    assert!(swaps[0].contains("trigger=file"), "{}", swaps[0]);
    let rejected = host.log_lines("swap rejected");
    assert!(rejected.len() == 1 && rejected[0].contains("trigger=file"), "{rejected:?}");
    watch.finish(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_swap_refuses_broken_versions_and_rolls_back() {
    let (env, stop, producer) = start("swap-api").await;
    let (file, config) = setup_transform(&env);
    let (v1, v2) = (label(&plugin("passthrough")), label(&plugin("enrich")));
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    wait_made_by(&env, &v1, 4000, &host).await;

    let listed = admin.plugins().await;
    assert_eq!(listed["generation"], 1, "{listed}");
    assert_eq!(format!("transform@{}", listed["plugins"][0]["version"].as_str().unwrap()), v1);

    // v1 -> v2 by upload.
    let (status, body) = admin.put("/plugins/transform", std::fs::read(plugin("enrich")).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["swapped"], true);
    assert_eq!(body["generation"], 2);
    assert_eq!(format!("transform@{}", body["changes"][0]["to"].as_str().unwrap()), v2);
    // The same version again changes nothing.
    let (status, body) = admin.put("/plugins/transform", std::fs::read(plugin("enrich")).unwrap()).await;
    assert_eq!((status, &body["swapped"]), (200, &serde_json::json!(false)), "{body}");
    wait_made_by(&env, &v2, 3000, &host).await;

    // Broken v3s: each refused with the reason, v2 keeps running.
    for (bytes, reason) in [
        (b"#!/bin/sh\necho not wasm\n".to_vec(), "not a WebAssembly module or component"),
        (std::fs::read(hostile("oldcontract")).unwrap(), "does not match the contract sluice:plugin@0.3.0 (nor sluice:plugin@0.2.0)"),
        (std::fs::read(hostile("initfail")).unwrap(), "init failed: this version refuses to start"),
        (std::fs::read(hostile("panic")).unwrap(), "failed self_test 1: trap: panic: panicked at"),
    ] {
        let (status, body) = admin.put("/plugins/transform", bytes).await;
        assert_eq!(status, 422, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(reason) && error.contains("the running version stays"), "{reason}: {error}");
    }
    let (status, body) = admin.put("/plugins/nosuch", std::fs::read(plugin("enrich")).unwrap()).await;
    assert_eq!(status, 404, "{body}");
    let listed = admin.plugins().await;
    assert_eq!(listed["generation"], 2, "{listed}");
    let p = &listed["plugins"][0];
    assert_eq!(format!("transform@{}", p["version"].as_str().unwrap()), v2, "{listed}");
    assert_eq!(format!("transform@{}", p["previous"][0].as_str().unwrap()), v1, "{listed}");
    assert!(p["last_rejected"]["error"].as_str().unwrap().contains("self_test"), "{listed}");
    // The upload was persisted: a restart would run v2.
    assert_eq!(label(&file), v2);
    let before = made_by_count(&env, &v2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(made_by_count(&env, &v2).await > before, "v2 kept running through the refusals");

    // Roll back to v1; there is nothing before it.
    let (status, body) = admin.post("/plugins/transform/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(format!("transform@{}", body["changes"][0]["to"].as_str().unwrap()), v1);
    let (status, body) = admin.post("/plugins/transform/rollback").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(label(&file), v1, "the rollback was persisted");
    let v1_before = made_by_count(&env, &v1).await;
    wait_made_by(&env, &v1, v1_before + 3000, &host).await;

    let (status, metrics) = admin.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "sluice_plugin_swaps_total{plugin=\"transform\",trigger=\"api\"} 1",
        "sluice_plugin_swaps_total{plugin=\"transform\",trigger=\"rollback\"} 1",
        "sluice_plugin_swap_rejections_total{plugin=\"transform\",trigger=\"api\"} 4",
        "sluice_chain_generation 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in\n{metrics}");
    }

    let (produced, docs) = finish(&env, stop, producer, &mut host).await;
    assert_all_once(&docs, produced);
    for (p, list) in by_partition(&docs, FIELD) {
        assert_eq!(segments(&list), [v1.clone(), v2.clone(), v1.clone()], "partition {p}: v1, then v2, then v1 again");
    }
    // v2 starts where generation 2 was reported; v1 again where generation 3 was.
    assert_switches_as_reported(&docs, &v2, &reported_switches(&host, 2));
    let third = reported_switches(&host, 3);
    for (p, list) in by_partition(&docs, FIELD) {
        let after_v2 = list.iter().skip_while(|(_, v)| *v != v2).find(|(_, v)| *v == v1).map(|(o, _)| *o);
        assert_eq!(after_v2, third.get(&p).copied(), "partition {p}: v1 again from the reported switch {third:?}");
    }
    watch.finish(1).await;
}

/// Rust -> Python -> JavaScript mid-stream: the Rust `enrich` runs, its Python twin
/// is written over the plugin's file, then its JavaScript twin is uploaded, all
/// under the steady load. The three store the same documents (tests/seed.rs), so
/// only the versions field tells them apart: per partition, the Rust version's
/// documents, then the Python one's, then the JavaScript one's (one switch offset
/// per swap, where the host reported it), every record stored once, and neither
/// progress store ever ahead of the documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_swaps_from_rust_to_python_to_javascript_mid_stream() {
    // Read once: the versions the test expects are the bytes it swaps in.
    let (py_bytes, js_bytes) = (std::fs::read(lang_plugin("enrich-py")).unwrap(), std::fs::read(lang_plugin("enrich-js")).unwrap());
    let (env, stop, producer) = start_at("swap-lang", LANG_RATE).await;
    let (file, config) = setup_transform(&env);
    std::fs::copy(plugin("enrich"), &file).unwrap();
    let version = |bytes: &[u8]| format!("transform@{}", sluice::runtime::version_of(bytes));
    let (rust, py, js) = (label(&file), version(&py_bytes), version(&js_bytes));
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    wait_made_by(&env, &rust, 1000, &host).await;

    // Rust -> Python: the file written in place.
    std::fs::write(&file, &py_bytes).unwrap();
    wait_made_by(&env, &py, 1000, &host).await;
    wait_rollout(&env, &admin, 2).await;

    // Python -> JavaScript: by upload.
    let (status, body) = admin.put("/plugins/transform", js_bytes).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((&body["swapped"], &body["generation"]), (&serde_json::json!(true), &serde_json::json!(3)), "{body}");
    assert_eq!(format!("transform@{}", body["changes"][0]["to"].as_str().unwrap()), js, "{body}");
    wait_made_by(&env, &js, 1000, &host).await;
    wait_rollout(&env, &admin, 3).await;
    assert!(!producer.is_finished(), "the load ran through the swaps");
    assert_eq!(label(&file), js, "the upload was persisted");

    let (produced, docs) = finish(&env, stop, producer, &mut host).await;
    assert_all_once(&docs, produced);
    let parts = by_partition(&docs, FIELD);
    assert_eq!(parts.len(), PARTITIONS as usize);
    for (p, list) in parts {
        assert_eq!(segments(&list), [rust.clone(), py.clone(), js.clone()], "partition {p}: Rust, then Python, then JavaScript");
    }
    // The host reported one switch per partition and swap, where the documents show it.
    let reported = host.log_lines("partition switched chain generation");
    assert_eq!(reported.len(), 2 * PARTITIONS as usize, "{reported:#?}");
    assert_switches_as_reported(&docs, &py, &reported_switches(&host, 2));
    assert_switches_as_reported(&docs, &js, &reported_switches(&host, 3));
    for d in &docs {
        let (n, src) = (int(d, "num"), d.get_document("source").unwrap());
        assert_eq!(int(d, "square"), n * n, "{d}");
        let (p, o) = source_of(d);
        assert_eq!((src.get_str("topic").unwrap(), int(src, "partition") as i32, int(src, "offset")), (env.topic.as_str(), p, o), "{d}");
    }
    let swaps = host.log_lines("plugin swapped");
    assert_eq!(swaps.len(), 2, "{swaps:?}");
    assert!(swaps[0].contains("trigger=file") && swaps[1].contains("trigger=api"), "{swaps:?}");
    assert!(host.log_lines("swap rejected").is_empty(), "{}", host.log_tail(30));
    watch.finish(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_the_chain_and_a_bad_reload_changes_nothing() {
    let (env, stop, producer) = start("swap-hup").await;
    let (_file, config) = setup_transform(&env);
    let v1 = label(&plugin("passthrough"));
    // A backlog, keyed so that every partition gets its share: the swap comes while
    // the partitions work through it in full batches (the switch after a batch is
    // collected, not only when idle).
    let mut backlog = sluice::produce::ProduceOptions::numbers(&brokers(), &env.topic, BACKLOG_FROM, BACKLOG);
    backlog.key_field = Some("num".into());
    sluice::produce::produce(&backlog).await.unwrap();
    let (_, backlog_ends) = env.offsets().unwrap();
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    wait_written(&admin, 4000, &host).await;

    // A config with a typo: refused, nothing changes.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("batch_linger", "batch_lingr")).unwrap();
    let (status, body) = admin.post("/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("batch_lingr"), "{body}");
    assert_eq!(admin.plugins().await["generation"], 1);

    // The chain becomes even -> enrich, by SIGHUP.
    let (even, enrich) = (plugin("even"), plugin("enrich"));
    let chain = format!(
        "[[plugins]]\nname = \"even\"\npath = \"{}\"\n[[plugins]]\nname = \"enrich\"\npath = \"{}\"\n",
        even.display(),
        enrich.display()
    );
    std::fs::write(&config, format!("{}{chain}{EXTRA}", env.config_text(&[], ""))).unwrap();
    host.sighup();
    let new_chain = {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let listed = admin.plugins().await;
            if listed["generation"] == 2 {
                let names: Vec<String> = listed["plugins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| format!("{}@{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
                    .collect();
                break names.join(",");
            }
            assert!(std::time::Instant::now() < deadline, "SIGHUP reload never applied:\n{}", host.log_tail(20));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(new_chain.starts_with("even@") && new_chain.contains(",enrich@"), "{new_chain}");
    let at_swap = wait_written(&admin, 0, &host).await;
    wait_written(&admin, at_swap + 2000, &host).await;

    let (produced, docs) = finish(&env, stop, producer, &mut host).await;
    let records = env.read_topic().unwrap();
    assert_eq!(records.len() as i64, produced + BACKLOG as i64);
    // Per partition, the old chain (passthrough) made a document of every record
    // it processed: the last of them is where the partition switched.
    let parts = by_partition(&docs, FIELD);
    let mut last_old = std::collections::BTreeMap::new();
    for (p, list) in &parts {
        assert_eq!(segments(list), [v1.clone(), new_chain.clone()], "partition {p}");
        last_old.insert(*p, list.iter().rev().find(|(_, v)| *v == v1).unwrap().0);
    }
    // Not every partition need be (each runs at its own pace), but some switched
    // with at least a full batch of the backlog still to go.
    assert!(last_old.iter().any(|(p, last)| last + 100 < backlog_ends[p]), "no switch amid the backlog: {last_old:?} {backlog_ends:?}");
    // Expected: every record up to the switch, and the even ones after it.
    let expected: std::collections::BTreeSet<(i32, i64)> =
        records.iter().filter(|((p, o), n)| *o <= last_old[p] || *n % 2 == 0).map(|(k, _)| *k).collect();
    let stored: std::collections::BTreeSet<(i32, i64)> = docs.iter().map(source_of).collect();
    assert_eq!(stored.len(), docs.len(), "one document per record");
    assert_eq!(stored, expected, "exactly the records the chain in force kept");
    for d in docs.iter().filter(|d| made_by(d, FIELD) == new_chain) {
        let n = int(d, "num");
        assert_eq!(int(d, "square"), n * n, "{d}");
    }
    assert_eq!(host.log_lines("SIGHUP").len(), 1);
}

/// With `persist_uploads = false` an upload lasts until the file itself changes:
/// other activity in the plugin's directory does not bring the file's version back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_not_persisted_stays_until_the_file_changes() {
    let env = TestEnv::new("swap-nopersist");
    env.create_topic(2).await.unwrap();
    let (file, config) = setup_transform(&env);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[hot_swap]\npersist_uploads = false\n")).unwrap();
    let host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    let version = |listed: serde_json::Value| format!("transform@{}", listed["plugins"][0]["version"].as_str().unwrap());

    let (status, body) = admin.put("/plugins/transform", std::fs::read(plugin("enrich")).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(label(&file), label(&plugin("passthrough")), "not written to the file");
    std::fs::write(env.dir.path().join("plugins/unrelated.txt"), "x").unwrap();
    std::fs::write(&file, std::fs::read(&file).unwrap()).unwrap(); // rewritten, same content
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(version(admin.plugins().await), label(&plugin("enrich")), "the upload stays");
    // A reload with the plugin's file unchanged keeps it too.
    let (status, body) = admin.post("/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(version(admin.plugins().await), label(&plugin("enrich")), "the upload stays through a reload");
    // The watcher read the directory once per burst of changes, not in a loop of its own reads.
    let checks = admin.metric("sluice_plugin_file_checks_total").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(admin.metric("sluice_plugin_file_checks_total").await, Some(checks), "no checks without changes");
    assert!((1..=3).contains(&checks), "{checks} checks for two writes");

    std::fs::write(&file, std::fs::read(plugin("even")).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while version(admin.plugins().await) != label(&plugin("even")) {
        assert!(std::time::Instant::now() < deadline, "a new file content is swapped in:\n{}", host.log_tail(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A reload applies all plugins or none: when the second fails, the first's new
/// file is not applied, and a later reload (the second fixed) applies both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_all_or_nothing() {
    let env = TestEnv::new("swap-reload-all");
    env.create_topic(1).await.unwrap();
    let (a, b) = (env.dir.path().join("a.wasm"), env.dir.path().join("b.wasm"));
    std::fs::copy(plugin("passthrough"), &a).unwrap();
    std::fs::copy(plugin("passthrough"), &b).unwrap();
    let plugins = format!("[[plugins]]\nname = \"a\"\npath = \"{}\"\n[[plugins]]\nname = \"b\"\npath = \"{}\"\n", a.display(), b.display());
    let config = env.dir.path().join("host.toml");
    std::fs::write(&config, format!("{}{plugins}\n[hot_swap]\nwatch = false\n", env.config_text(&[], ""))).unwrap();
    let host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    let versions = |listed: serde_json::Value| -> Vec<String> {
        listed["plugins"].as_array().unwrap().iter().map(|p| p["version"].as_str().unwrap().to_owned()).collect()
    };
    let hash = |p: &std::path::Path| sluice::runtime::version_of(&std::fs::read(p).unwrap());
    let before = versions(admin.plugins().await);

    std::fs::copy(plugin("enrich"), &a).unwrap();
    std::fs::write(&b, b"not wasm").unwrap();
    let (status, body) = admin.post("/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("plugin `b`"), "{body}");
    assert_eq!(versions(admin.plugins().await), before, "nothing applied");

    std::fs::copy(plugin("even"), &b).unwrap();
    let (status, body) = admin.post("/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(versions(admin.plugins().await), [hash(&plugin("enrich")), hash(&plugin("even"))], "{body}");
}

/// An upload replaces the plugin's file keeping its permissions, and with
/// `keep_versions = 2` only the two latest earlier versions can be rolled back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_keep_the_file_mode_and_keep_versions_bounds_rollback() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new("swap-keep");
    env.create_topic(1).await.unwrap();
    let (file, config) = setup_transform(&env);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[hot_swap]\nkeep_versions = 2\n")).unwrap();
    let host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    let versions: Vec<String> = ["passthrough", "enrich", "even", "evensquare"].iter().map(|p| label(&plugin(p))).collect();
    for p in ["enrich", "even", "evensquare"] {
        let (status, body) = admin.put("/plugins/transform", std::fs::read(plugin(p)).unwrap()).await;
        assert_eq!(status, 200, "{p}: {body}");
        assert_eq!(label(&file), label(&plugin(p)), "persisted");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640, "the file's mode is kept");
    }
    let listed = admin.plugins().await;
    let previous: Vec<String> =
        listed["plugins"][0]["previous"].as_array().unwrap().iter().map(|v| format!("transform@{}", v.as_str().unwrap())).collect();
    assert_eq!(previous, [versions[2].clone(), versions[1].clone()], "the two latest earlier versions, newest first: {listed}");
    for expected in [&versions[2], &versions[1]] {
        let (status, body) = admin.post("/plugins/transform/rollback").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(&format!("transform@{}", body["changes"][0]["to"].as_str().unwrap()), expected);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o640, "kept by a rollback too");
    }
    let (status, body) = admin.post("/plugins/transform/rollback").await;
    assert_eq!(status, 409, "the first version was not kept: {body}");
    assert_eq!(label(&file), versions[1]);
}

/// What the plugin layer decides between a watched file and a reload, without
/// services: a file the watcher refused, then a reload that fixes its params.
mod swap_rules {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use sluice::config::Config;
    use sluice::runtime::{Runtime, version_of};
    use sluice::swap::{HotSwap, Trigger, watch_dir};
    use sluice_tests::plugin;

    /// A config of one plugin, `t` at `dir/t.wasm`, with `square_field` = `field`
    /// (enrich refuses a name with a dot; passthrough takes anything).
    fn write_config(dir: &Path, field: &str) -> PathBuf {
        write_config_with(dir, field, "")
    }

    fn write_config_with(dir: &Path, field: &str, more: &str) -> PathBuf {
        let path = dir.join("host.toml");
        let text = format!(
            "[kafka]\nbrokers = \"b\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n[mongo]\nuri = \"mongodb://m\"\ndatabase = \"d\"\ncollection = \"c\"\n{more}\
             [[plugins]]\nname = \"t\"\npath = \"t.wasm\"\nparams = {{ square_field = \"{field}\" }}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn a_file_the_watcher_refused_is_applied_by_the_reload_that_fixes_its_params() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.wasm");
        std::fs::copy(plugin("passthrough"), &file).unwrap();
        let config = Config::load(&write_config(dir.path(), "a.b")).unwrap();
        let hot = HotSwap::start(Arc::new(Runtime::new().unwrap()), &config).unwrap();
        let (watched, enrich) = (watch_dir(&file).unwrap(), std::fs::read(plugin("enrich")).unwrap());

        std::fs::write(&file, &enrich).unwrap();
        assert!(hot.files_changed(&watched).await.is_none(), "refused: its init refuses `a.b`");
        assert!(hot.files_changed(&watched).await.is_none());
        assert_eq!(hot.counts().rejections, [("t".to_owned(), Trigger::File, 1)], "not retried while the file stays");
        // A reload validates the refused file: params unchanged, it is refused
        // again (reported) and the running version stays; the reload succeeds.
        assert!(!hot.reload().await.unwrap().swapped);
        assert_eq!(hot.current().generation, 1);
        assert_eq!(hot.counts().rejections, [("t".to_owned(), Trigger::File, 1), ("t".to_owned(), Trigger::Reload, 1)]);

        write_config(dir.path(), "sq");
        assert!(hot.reload().await.unwrap().swapped);
        assert_eq!(hot.current().plugins[0].version, version_of(&enrich));
        // The file's version runs: nothing left to apply.
        assert!(!hot.reload().await.unwrap().swapped);
        assert!(hot.files_changed(&watched).await.is_none());
    }

    #[tokio::test]
    async fn an_upload_not_persisted_supersedes_a_file_the_watcher_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.wasm");
        std::fs::copy(plugin("passthrough"), &file).unwrap();
        let config = Config::load(&write_config_with(dir.path(), "a.b", "[hot_swap]\npersist_uploads = false\n")).unwrap();
        let hot = HotSwap::start(Arc::new(Runtime::new().unwrap()), &config).unwrap();
        let watched = watch_dir(&file).unwrap();
        std::fs::write(&file, std::fs::read(plugin("enrich")).unwrap()).unwrap();
        assert!(hot.files_changed(&watched).await.is_none(), "refused: its init refuses `a.b`");

        let even = std::fs::read(plugin("even")).unwrap();
        assert!(hot.upload("t", even.clone()).await.unwrap().swapped);
        // New params that the refused file would pass with: the upload stays.
        write_config_with(dir.path(), "sq", "[hot_swap]\npersist_uploads = false\n");
        hot.reload().await.unwrap();
        assert_eq!(hot.current().plugins[0].version, version_of(&even));
    }
}

/// A rolling rollout across a group: three hosts, each with its own copy of
/// the plugin file, switched from v1 to v2 through their admin APIs one after
/// another while records flow; after the first switch a v1 host leaves and
/// comes back, so partitions move between hosts that run different versions.
/// Every record is stored once, by exactly one of the two versions; once all
/// three run v2, so does every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_rollout_across_three_hosts() {
    let (env, stop, producer) = start("rolling-rollout").await;
    let (v1, v2) = (label(&plugin("passthrough")), label(&plugin("enrich")));
    let config_of = |name: &str| {
        let dir = env.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("transform.wasm");
        std::fs::copy(plugin("passthrough"), &file).unwrap();
        let plugins = format!("[[plugins]]\nname = \"transform\"\npath = \"{}\"\n", file.display());
        let config = dir.join("host.toml");
        std::fs::write(&config, format!("{}{plugins}{EXTRA}", env.config_text(&[], ""))).unwrap();
        config
    };
    let configs: Vec<_> = ["a", "b", "c"].iter().map(|n| config_of(n)).collect();
    let mut hosts: Vec<Host> = ["a", "b", "c"].iter().zip(&configs).map(|(n, c)| Host::spawn(&env, n, c, false)).collect();
    env.wait_for_count(2000, Duration::from_secs(90)).await.unwrap();
    for i in 0..3 {
        // (The host's own count of what it wrote: counting documents by version is a scan.)
        let admin = hosts[i].admin(None).await;
        let written = admin.metric("sluice_documents_written_total").await.unwrap_or(0);
        let (status, body) = admin.put("/plugins/transform", std::fs::read(plugin("enrich")).unwrap()).await;
        assert_eq!(status, 200, "host {i}: {body}");
        wait_written(&admin, written + 1000, &hosts[i]).await;
        if i == 0 {
            // A v1 host leaves and comes back: its partitions move to the v2 host and the other v1
            // host, then some come back.
            hosts[1].terminate(Duration::from_secs(30)).await;
            let written = env.count().await;
            env.wait_for_count(written + 2000, Duration::from_secs(90)).await.unwrap();
            hosts[1] = Host::spawn(&env, "b-again", &configs[1], false);
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while hosts[1].assignments() == 0 {
                assert!(std::time::Instant::now() < deadline, "b never rejoined:\n{}", hosts[1].log_tail(20));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Everyone runs v2 now: what comes next is v2's on every partition.
    let written = env.count().await;
    env.wait_for_count(written + 3000, Duration::from_secs(90)).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let produced = producer.await.unwrap().expect("producer");
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", hosts[0].log_tail(30)));
    for h in &mut hosts {
        h.terminate(Duration::from_secs(30)).await;
        assert_eq!(h.summary("duplicates"), Some(0), "{}", h.log_tail(10));
    }
    let docs = env.documents().await.unwrap();
    assert_all_once(&docs, produced as i64);
    for (p, list) in by_partition(&docs, FIELD) {
        assert!(list.iter().all(|(_, v)| *v == v1 || *v == v2), "partition {p}: only v1 and v2 made documents");
        assert_eq!(list.last().map(|(_, v)| v), Some(&v2), "partition {p}: v2 at the end");
    }
}
