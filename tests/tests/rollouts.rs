//! Rollouts under load on the real services (6 partitions, a steady producer):
//! a shadow run counts exactly the records a candidate changes and writes
//! nothing, then is promoted; a canary writes exactly its partitions with the
//! candidate, and a canary partition that moves to another host runs that
//! host's version; a candidate failing half its records is rolled back by its
//! rule, and every record is written once by exactly one version or
//! dead-lettered once. The versions field (`_sluice`) says which version made
//! each document.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use sluice_tests::{Admin, Host, TestEnv, hostile, int, made_by, plugin, sluice_bin, source_of};

const PARTITIONS: i32 = 6;
const RATE: u64 = 1500;
const FIELD: &str = "_sluice";

/// `transform@<hash>` of a plugin file.
fn label(path: &std::path::Path) -> String {
    format!("transform@{}", sluice::runtime::version_of(&std::fs::read(path).unwrap()))
}

/// A host whose one plugin, `transform`, is a copy of `passthrough` (a
/// promotion writes the file); dead letters on; small batches, so that a run has many.
fn config(env: &TestEnv) -> std::path::PathBuf {
    let file = env.dir.path().join("transform.wasm");
    if !file.exists() {
        std::fs::copy(plugin("passthrough"), &file).unwrap();
    }
    let plugins = format!("[[plugins]]\nname = \"transform\"\npath = \"{}\"\n", file.display());
    let extra = "[pipeline]\nbatch_max_records = 100\nbatch_linger = \"10ms\"\nversions_field = \"_sluice\"\non_error = \"dead-letter\"\n";
    let path = env.dir.path().join("host.toml");
    std::fs::write(&path, format!("{}{plugins}{extra}", env.config_text(&[], ""))).unwrap();
    path
}

/// A host on a fresh 6-partition topic, ready (its partitions assigned), and its admin API.
async fn start(name: &str) -> (TestEnv, Host, Admin) {
    let env = TestEnv::new(name);
    env.create_topic(PARTITIONS).await.unwrap();
    let host = Host::spawn(&env, "host", &config(&env), false);
    let admin = host.admin(None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while admin.get("/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready:\n{}", host.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (env, host, admin)
}

/// Produce `{"num": n}` from 0 at [`RATE`] for `secs`; returns how many.
async fn produce_for(env: &TestEnv, secs: u64) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let producer = env.produce_until(stop.clone(), RATE);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap().expect("producer")
}

/// `/rollouts`' running rollout, or the latest finished one.
async fn rollout(admin: &Admin) -> Value {
    let (status, text) = admin.get("/rollouts").await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    if v["current"].is_null() { v["history"][0].clone() } else { v["current"].clone() }
}

/// Per `num`, its documents' (chain, partition, offset, has `tenth`).
fn by_num(docs: &[mongodb::bson::Document]) -> BTreeMap<i64, Vec<(String, i32, i64, bool)>> {
    let mut out: BTreeMap<i64, Vec<(String, i32, i64, bool)>> = BTreeMap::new();
    for d in docs {
        let (p, o) = source_of(d);
        out.entry(int(d, "num")).or_default().push((made_by(d, FIELD), p, o, d.contains_key("tenth")));
    }
    out
}

/// `sluice rollout ARGS --admin URL`: its stdout (it must succeed).
fn cli(admin: &Admin, args: &[&str]) -> String {
    let out = std::process::Command::new(sluice_bin()).arg("rollout").args(args).args(["--admin", &admin.base]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sluice rollout {args:?}: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Shadow at 100% of a candidate that differs exactly on every `num`
/// divisible by 10: that many differences, samples that show them, nothing of
/// the candidate's written. Then promoted (by the CLI): the candidate writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_run_counts_exactly_the_differences_and_writes_nothing() {
    let (env, mut host, admin) = start("shadow").await;
    let (live, candidate) = (label(&plugin("passthrough")), label(&hostile("tenths")));
    let (status, started) =
        admin.post_body("/rollouts?plugin=transform&mode=shadow&share=1", std::fs::read(hostile("tenths")).unwrap()).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!((started["state"].as_str(), started["mode"]["mode"].as_str()), (Some("running"), Some("shadow")));
    // A second rollout while one runs: refused.
    let (status, _) = admin.post_body("/rollouts?plugin=transform&mode=shadow", std::fs::read(hostile("halffail")).unwrap()).await;
    assert_eq!(status, 409);

    let produced = produce_for(&env, 4).await;
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    let r = rollout(&admin).await;
    let tens = produced.div_ceil(10);
    assert_eq!(r["records"], produced, "every record was shadowed: {r}");
    assert_eq!(r["differences"], tens, "exactly the nums divisible by 10 differ: {r}");
    assert_eq!((r["candidate_failures"].as_u64(), r["live_failures"].as_u64()), (Some(0), Some(0)));
    let docs = env.documents().await.unwrap();
    let nums = by_num(&docs);
    let samples = r["samples"].as_array().unwrap();
    assert_eq!(samples.len() as u64, tens.min(20));
    for s in samples {
        let live_doc = &s["live"]["outputs"][0]["document"];
        let num = live_doc["num"].as_i64().unwrap();
        assert_eq!(num % 10, 0, "{s}");
        assert!(live_doc.get("tenth").is_none() && s["candidate"]["outputs"][0]["document"]["tenth"] == true, "{s}");
        let (_, p, o, _) = &nums[&num][0];
        assert_eq!((s["partition"].as_i64(), s["offset"].as_i64()), (Some(*p as i64), Some(*o)), "the sample names the record: {s}");
    }
    // Nothing of the candidate was written: every record once, by the live version.
    assert_eq!(nums.len() as u64, produced);
    for (num, made) in &nums {
        assert_eq!(made.len(), 1, "num {num}: {made:?}");
        assert!(made[0].0 == live && !made[0].3, "num {num}: {made:?}");
    }
    let shown = admin.metric(&format!("sluice_rollout_differences{{plugin=\"transform\",mode=\"shadow\",rollout=\"{}\"}}", r["id"])).await;
    assert_eq!(shown, Some(tens));
    let status_text = cli(&admin, &["status"]);
    assert!(status_text.contains(&format!("differences {tens},")), "{status_text}");

    // Promoted: the candidate is the live version from each partition's next batch.
    let promoted = cli(&admin, &["promote"]);
    assert!(promoted.contains("promoted"), "{promoted}");
    assert_eq!(rollout(&admin).await["state"], "promoted");
    let more = 600;
    sluice::produce::produce(&sluice::produce::ProduceOptions::numbers(&sluice_tests::brokers(), &env.topic, produced, more))
        .await
        .unwrap();
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    let nums = by_num(&env.documents().await.unwrap());
    for n in produced as i64..(produced + more) as i64 {
        let made = &nums[&n];
        assert!(made.len() == 1 && made[0].0 == candidate && made[0].3 == (n % 10 == 0), "num {n}: {made:?}");
    }
    let (_, plugins) = admin.get("/plugins").await;
    assert!(plugins.contains("\"trigger\":\"promote\""), "{plugins}");
    host.terminate(Duration::from_secs(30)).await;
}

/// A canary on partitions 0 and 1 of 6, under load: exactly those partitions'
/// documents are the candidate's. Then another host takes over: the canary
/// partitions run its version (the live one) there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_writes_exactly_its_partitions_and_another_host_runs_its_own_version() {
    let (env, mut host, admin) = start("canary").await;
    let (live, candidate) = (label(&plugin("passthrough")), label(&hostile("tenths")));
    let file = hostile("tenths");
    let started = cli(&admin, &["canary", "transform", file.to_str().unwrap(), "--partitions", "0,1"]);
    assert!(started.contains("canary on partitions [0,1]"), "{started}");

    let produced = produce_for(&env, 4).await;
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    let docs = env.documents().await.unwrap();
    let nums = by_num(&docs);
    assert_eq!(nums.len() as u64, produced);
    let mut on_canary = 0;
    for (num, made) in &nums {
        assert_eq!(made.len(), 1, "num {num}: {made:?}");
        let (chain, p, _, tenth) = &made[0];
        let want = if *p <= 1 { &candidate } else { &live };
        assert_eq!(chain, want, "num {num} in partition {p}");
        assert_eq!(*tenth, *p <= 1 && num % 10 == 0, "num {num}");
        on_canary += u64::from(*p <= 1);
    }
    let r = rollout(&admin).await;
    assert_eq!(r["records"], on_canary, "the canary's records: {r}");
    assert_eq!(r["live_records"], produced - on_canary);

    // The canary's host stops; another, without the rollout, takes every partition.
    host.terminate(Duration::from_secs(30)).await;
    let mut other = Host::spawn(&env, "other", &config(&env), false);
    let more = 1200;
    sluice::produce::produce(&sluice::produce::ProduceOptions::numbers(&sluice_tests::brokers(), &env.topic, produced, more))
        .await
        .unwrap();
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", other.log_tail(30)));
    let nums = by_num(&env.documents().await.unwrap());
    let mut moved = 0;
    for n in produced as i64..(produced + more) as i64 {
        let made = &nums[&n];
        assert!(made.len() == 1 && made[0].0 == live, "num {n} after the move: {made:?}");
        moved += u64::from(made[0].1 <= 1);
    }
    assert!(moved > 0, "records of the canary partitions were written by the other host");
    other.terminate(Duration::from_secs(30)).await;
}

/// A canary on every partition of a candidate that fails every odd `num`, with
/// a rule (above 20% failed over 200 records): rolled back by itself, under
/// load. Every record is written once by exactly one version, or (an odd num
/// the candidate ran) dead-lettered once; never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_and_every_record_lands_once() {
    let (env, mut host, admin) = start("rollback").await;
    let (live, candidate) = (label(&plugin("passthrough")), label(&hostile("halffail")));
    let path = "/rollouts?plugin=transform&mode=canary&partitions=0,1,2,3,4,5&max_failure_rate=0.2&min_records=200";
    let (status, started) = admin.post_body(path, std::fs::read(hostile("halffail")).unwrap()).await;
    assert_eq!(status, 200, "{started}");

    let produced = produce_for(&env, 5).await;
    env.wait_committed_at_end(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    let r = rollout(&admin).await;
    assert_eq!(r["state"], "rolled-back", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("exceeds 20.0%"), "{r}");
    assert_eq!(host.events("rollout_rolled_back").len(), 1);
    assert_eq!(admin.metric("sluice_rollouts_ended_total{state=\"rolled-back\"}").await, Some(1));
    let (_, plugins) = admin.get("/plugins").await;
    assert!(plugins.contains("\"trigger\":\"auto-rollback\""), "the history shows it: {plugins}");

    let failed = r["candidate_failures"].as_u64().unwrap();
    assert!(failed > 0 && r["records"].as_u64().unwrap() >= 200, "{r}");
    let dead = env.dead_letters(failed as usize).unwrap();
    assert_eq!(dead.len() as u64, failed, "one dead letter per record the candidate failed");
    let mut dead_nums = BTreeMap::new();
    for d in &dead {
        let v: Value = serde_json::from_slice(d.value.as_deref().unwrap()).unwrap();
        let n = v["num"].as_i64().unwrap();
        assert_eq!(n % 2, 1, "only odd nums fail");
        assert!(d.header("sluice.chain").contains(&candidate), "dead-lettered by the candidate: {:?}", d.headers);
        *dead_nums.entry(n).or_insert(0) += 1;
    }
    let nums = by_num(&env.documents().await.unwrap());
    let mut by_candidate = 0;
    for n in 0..produced as i64 {
        match (nums.get(&n), dead_nums.get(&n)) {
            (Some(made), None) => {
                assert_eq!(made.len(), 1, "num {n} written once: {made:?}");
                assert!(made[0].0 == live || (made[0].0 == candidate && n % 2 == 0), "num {n}: {made:?}");
                by_candidate += u64::from(made[0].0 == candidate);
            }
            (None, Some(1)) => {}
            other => panic!("num {n}: documents and dead letters {other:?}"),
        }
    }
    assert!(by_candidate > 0, "the candidate wrote before its rollback");
    // After the rollback the live version runs every partition: the last records are its.
    let last = &nums[&(produced as i64 - 1)];
    assert_eq!(last[0].0, live);
    host.terminate(Duration::from_secs(30)).await;
}
