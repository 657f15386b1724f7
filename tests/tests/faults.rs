//! Faults on the real services: the host killed, a second host taking over,
//! MongoDB down, the Kafka broker restarted, a graceful stop. Each test ends with:
//! one document per number (none missing, none duplicated) and the group's
//! committed offsets equal to the end offsets. Throughout, a [`ProgressWatch`]
//! checks that neither Kafka's committed offsets nor MongoDB's progress ever
//! pass a record whose document is not there.
//!
//! These tests stop and start the shared services, so they run one at a time
//! (a lock) and in their own test binary (cargo runs test binaries one by one).

use std::time::Duration;

use sluice_tests::watch::ProgressWatch;
use sluice_tests::{Host, TestEnv, services};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

const N: u64 = 30_000;
const PARTITIONS: i32 = 6;
/// Small batches and a short session timeout so faults land mid-batch and a
/// dead host's partitions move quickly.
const EXTRA: &str = r#"
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[pipeline]
batch_max_records = 200
batch_linger = "10ms"
drain_timeout = "4s"
shutdown_timeout = "15s"
retry_backoff = "100ms"
retry_max_backoff = "2s"
"#;

async fn setup(name: &str) -> (TestEnv, std::path::PathBuf, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let env = TestEnv::new(name);
    env.create_topic(PARTITIONS).await.unwrap();
    let config = env.config_file(&["passthrough"], EXTRA);
    // ~6 s of production: the stream flows while the fault happens.
    let producer = env.produce_stream(N, 1000, Duration::from_millis(200));
    (env, config, producer)
}

async fn finish(env: &TestEnv, config: &std::path::Path, producer: tokio::task::JoinHandle<anyhow::Result<()>>) -> Host {
    producer.await.unwrap().expect("producer");
    let mut last = Host::spawn(env, "final", config, true);
    let status = last.wait(Duration::from_secs(180)).await;
    assert!(status.success(), "final run failed: {status}\n{}", last.log_tail(30));
    env.assert_exact(N).await;
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart() {
    let _serial = SERIAL.lock().await;
    let (env, config, producer) = setup("kill9").await;
    let watch = ProgressWatch::start(&env, PARTITIONS);
    // The victim records its progress in neither store for 30 s: what it writes before the kill
    // is certainly a tail the next host replays (with the usual 1 s, it may have caught up).
    let lagging = env.dir.path().join("victim.toml");
    let extra = EXTRA
        .replace("[kafka.options]\n", "[kafka.options]\n\"auto.commit.interval.ms\" = \"30000\"\n")
        .replace("[pipeline]\n", "[pipeline]\nprogress_interval = \"30s\"\n");
    std::fs::write(&lagging, env.config_text(&["passthrough"], &extra)).unwrap();
    let mut host = Host::spawn(&env, "victim", &lagging, false);
    env.wait_for_count(3_000, Duration::from_secs(90)).await.unwrap();
    host.kill9();
    let stored_at_kill = env.count().await;
    assert!(stored_at_kill < N, "the kill must land mid-stream");
    // Where the next host starts: per partition, the later of Kafka's committed offset and MongoDB's progress.
    let (committed, _) = env.offsets().unwrap();
    let progress = env.progress().await;
    let start: i64 =
        (0..PARTITIONS).map(|p| committed.get(&p).copied().unwrap_or(-1).max(progress.get(&p).copied().unwrap_or(-1)).max(0)).sum();
    let last = finish(&env, &config, producer).await;
    // The replay happened: the final host consumed exactly the tail neither store had recorded,
    // and found part of it already written by the killed host.
    assert_eq!(last.summary("consumed"), Some(N - start as u64), "{}", last.log_tail(20));
    assert!(last.summary("duplicates").unwrap() > 0, "the killed host had written past what was recorded: {}", last.log_tail(20));
    watch.finish(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_one_killed_the_survivor_takes_over() {
    let _serial = SERIAL.lock().await;
    let (env, config, producer) = setup("takeover").await;
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut a = Host::spawn(&env, "a", &config, false);
    let mut b = Host::spawn(&env, "b", &config, false);
    // Both hosts own partitions before one dies.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(a.assignments() >= 1 && b.assignments() >= 1) {
        assert!(std::time::Instant::now() < deadline, "both hosts never owned partitions:\n{}\n{}", a.log_tail(10), b.log_tail(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.wait_for_count(1, Duration::from_secs(60)).await.unwrap();
    let before = b.assignments();
    a.kill9();
    assert!(env.count().await < N, "the kill must land mid-stream");
    producer.await.unwrap().expect("producer");
    // The survivor alone must store everything.
    env.wait_for_count(N, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\nsurvivor log:\n{}", b.log_tail(30)));
    b.terminate(Duration::from_secs(30)).await;
    env.assert_exact(N).await;
    assert!(b.assignments() > before, "the survivor took the dead host's partitions over:\n{}", b.log_tail(20));
    watch.finish(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_down_for_10_s_mid_stream() {
    let _serial = SERIAL.lock().await;
    let (env, config, producer) = setup("mongo-outage").await;
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    env.wait_for_count(3_000, Duration::from_secs(90)).await.unwrap();
    assert_eq!(admin.get("/readyz").await.0, 200);
    // What MongoDB holds when it goes down, exactly: the host frozen meanwhile
    // (a second or so, well within its session timeout), then MongoDB killed.
    let client = mongodb::Client::with_uri_str(sluice_tests::mongo_uri()).await.unwrap();
    watch.pause(true).await;
    let frozen = std::time::Instant::now();
    host.signal("STOP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = watch.reader().first_missing(&client).await.unwrap();
    let stopped = sluice_tests::stop_mongo(true);
    host.signal("CONT");
    eprintln!("host frozen for {:?} while MongoDB's documents were read and MongoDB killed", frozen.elapsed());
    // /readyz tells the outage while the writes are retried; Kafka's committed
    // offsets never pass what MongoDB held, and stop moving once the last
    // acknowledged writes are committed (auto-commit every second).
    let outage = std::time::Instant::now();
    let mut seen = None;
    let mut committed = Vec::new();
    // A write waits for a server (the driver's server selection timeout) before it fails.
    while outage.elapsed() < Duration::from_secs(10) || (seen.is_none() && outage.elapsed() < Duration::from_secs(40)) {
        let (status, body) = admin.get("/readyz").await;
        if status == 503 {
            seen = Some(body);
        }
        let c = tokio::task::block_in_place(|| watch.reader().committed()).unwrap();
        for (p, o) in &c {
            assert!(*o <= held[p], "partition {p}: committed {o} during the outage, but MongoDB held documents up to {}", held[p]);
        }
        committed.push((outage.elapsed(), c));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled: Vec<_> = committed.iter().filter(|(t, _)| *t > Duration::from_secs(3)).map(|(_, c)| c).collect();
    assert!(settled.windows(2).all(|w| w[0] == w[1]), "Kafka's committed offsets moved while nothing could be written: {settled:?}");
    let seen = seen.unwrap_or_else(|| panic!("/readyz never answered 503 during the outage:\n{}", host.log_tail(30)));
    assert!(seen.contains("MongoDB writes are failing"), "{seen}");
    stopped.start();
    watch.pause(false).await;
    producer.await.unwrap().expect("producer");
    env.wait_for_count(N, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\nlog:\n{}", host.log_tail(30)));
    assert_eq!(admin.get("/readyz").await.0, 200, "ready again once writes succeed");
    host.terminate(Duration::from_secs(30)).await;
    assert!(host.summary("retries").unwrap() > 0, "the outage was seen and retried");
    env.assert_exact(N).await;
    watch.finish(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_restarted_mid_stream() {
    let _serial = SERIAL.lock().await;
    let (env, config, producer) = setup("kafka-restart").await;
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut host = Host::spawn(&env, "host", &config, false);
    env.wait_for_count(3_000, Duration::from_secs(90)).await.unwrap();
    services(&["restart-kafka"]);
    producer.await.unwrap().expect("producer");
    env.wait_for_count(N, Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("{e}\nlog:\n{}", host.log_tail(30)));
    host.terminate(Duration::from_secs(30)).await;
    env.assert_exact(N).await;
    watch.finish(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_0_and_a_restart_replays_nothing() {
    let _serial = SERIAL.lock().await;
    let (env, config, producer) = setup("sigterm").await;
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut host = Host::spawn(&env, "first", &config, false);
    env.wait_for_count(3_000, Duration::from_secs(90)).await.unwrap();
    host.terminate(Duration::from_secs(20)).await;
    let consumed_first = host.summary("consumed").expect("summary line");
    let stored_first = env.count().await;
    assert!(stored_first < N, "SIGTERM must land mid-stream");
    let last = finish(&env, &config, producer).await;
    // Nothing the first host wrote is consumed again.
    assert_eq!(last.summary("duplicates"), Some(0), "{}", last.log_tail(20));
    assert_eq!(last.summary("consumed"), Some(N - consumed_first));
    watch.finish(1).await;
}

/// A host joining mid-stream: the partitions it takes were drained and
/// committed by their owner first, so neither host writes anything twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_joining_causes_no_replay() {
    let _serial = SERIAL.lock().await;
    let (env, config, producer) = setup("join").await;
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut a = Host::spawn(&env, "a", &config, false);
    env.wait_for_count(3_000, Duration::from_secs(90)).await.unwrap();
    let mut b = Host::spawn(&env, "b", &config, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while b.assignments() == 0 {
        assert!(std::time::Instant::now() < deadline, "b never got partitions:\n{}", b.log_tail(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producer.await.unwrap().expect("producer");
    env.wait_for_count(N, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log_tail(20), b.log_tail(20)));
    a.terminate(Duration::from_secs(30)).await;
    b.terminate(Duration::from_secs(30)).await;
    env.assert_exact(N).await;
    for h in [&a, &b] {
        assert_eq!(h.summary("duplicates"), Some(0), "{}", h.log_tail(20));
        assert!(h.log_lines("drain timeout").is_empty(), "the drain finished in time: {}", h.log_tail(20));
    }
    watch.finish(1).await;
}

/// The host's resident memory in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

/// Back-pressure: MongoDB down and a backlog 8 times what the queues may hold
/// (Sluice's per-partition queues plus librdkafka's pre-fetch queue). Each
/// partition is paused at its queue limit (the queued gauges stay at it) and the
/// host's memory grows by no more than twice those limits plus 16 MiB (the
/// retried batch, allocator slack); without the pause it grows by the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_down_a_backlog_stays_within_the_queue_limits() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let _serial = SERIAL.lock().await;
    const PARTS: i32 = 2;
    const QUEUE_BYTES: u64 = 1 << 20;
    const PREFETCH_KB: u64 = 1024;
    const WARM: u64 = 100;
    let limits = PARTS as u64 * QUEUE_BYTES + PREFETCH_KB * 1024;
    let env = TestEnv::new("backpressure");
    env.create_topic(PARTS).await.unwrap();
    let extra = format!(
        "[kafka.options]\n\"queued.max.messages.kbytes\" = \"{PREFETCH_KB}\"\n\n[pipeline]\nbatch_max_records = 100\n\
         max_queued_bytes_per_partition = {QUEUE_BYTES}\nretry_backoff = \"100ms\"\nretry_max_backoff = \"1s\"\n"
    );
    let config = env.config_file(&["passthrough"], &extra);
    let mut host = Host::spawn(&env, "host", &config, false);
    let admin = host.admin(None).await;
    // Warm: plugin instances built, connections open, the first batches written.
    env.produce_nums(WARM).await.unwrap();
    env.wait_for_count(WARM, Duration::from_secs(60)).await.unwrap();
    let baseline = rss(host.pid());
    let stopped = sluice_tests::stop_mongo(true);

    // ~1 KiB records, numbered on from the warm-up's, round-robin over the partitions.
    let pad = "x".repeat(1000);
    let backlog = 8 * limits / 1024;
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", sluice_tests::brokers()).set("linger.ms", "5").create().unwrap();
    for chunk in (WARM..WARM + backlog).collect::<Vec<_>>().chunks(2000) {
        let payloads: Vec<String> = chunk.iter().map(|n| format!("{{\"num\":{n},\"pad\":\"{pad}\"}}")).collect();
        let sends = chunk.iter().zip(&payloads).map(|(n, p)| {
            producer
                .send(FutureRecord::<(), String>::to(&env.topic).partition((*n % PARTS as u64) as i32).payload(p), Duration::from_secs(60))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).unwrap();
        }
    }

    // Until the backlog's fetching has long settled: memory and queues sampled.
    let gauge = |name: &str, p: i32| format!("{name}{{topic=\"{}\",partition=\"{p}\"}}", env.topic);
    let (mut peak_rss, mut peak_queued) = (0u64, vec![0u64; PARTS as usize]);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        peak_rss = peak_rss.max(rss(host.pid()));
        let (_, text) = admin.get("/metrics").await;
        for p in 0..PARTS {
            let key = gauge("sluice_partition_queued_bytes", p);
            let v: u64 = text.lines().find_map(|l| l.strip_prefix(&key)?.trim().parse().ok()).unwrap_or_else(|| panic!("no {key}"));
            peak_queued[p as usize] = peak_queued[p as usize].max(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = peak_rss.saturating_sub(baseline);
    eprintln!(
        "backlog {backlog} records; RSS {baseline} -> peak {peak_rss} (+{grown}); queued bytes peaks {peak_queued:?}; limits {limits}"
    );
    for (p, q) in peak_queued.iter().enumerate() {
        // The queue fills to its limit (so the pause is what held it) and one record past it at most.
        assert!(*q >= QUEUE_BYTES && *q <= QUEUE_BYTES + 2048, "partition {p}: queued bytes peaked at {q}, limit {QUEUE_BYTES}");
    }
    assert!(grown <= 2 * limits + (16 << 20), "RSS grew by {grown} with MongoDB down; limits {limits}");

    stopped.start();
    env.wait_for_count(WARM + backlog, Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(20)));
    env.wait_committed_at_end(Duration::from_secs(60)).await.unwrap();
    host.terminate(Duration::from_secs(30)).await;
    env.assert_exact(WARM + backlog).await;
}

/// A host whose plugin is stuck (spinning on `num` 13 until its 30 s call limit)
/// in the batch of offsets 10..20 of one partition; the first batch is written.
async fn stuck_host(name: &str) -> (TestEnv, Host, sluice_tests::Admin) {
    let env = TestEnv::new(name);
    env.create_topic(1).await.unwrap();
    env.produce_nums(40).await.unwrap();
    let plugin = format!(
        "[[plugins]]\nname = \"spin\"\npath = \"{}\"\n[plugins.limits]\ncall_timeout = \"30s\"\n",
        sluice_tests::hostile("spin").display()
    );
    // A short session: the next run does not wait long for a member that left without a word.
    let extra = "[kafka.options]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n\
                 [pipeline]\nbatch_max_records = 10\ndrain_timeout = \"2s\"\nshutdown_timeout = \"6s\"\n";
    let config = env.dir.path().join("host.toml");
    std::fs::write(&config, format!("{}{plugin}{extra}", env.config_text(&[], ""))).unwrap();
    let host = Host::spawn(&env, "stuck", &config, false);
    let admin = host.admin(None).await;
    env.wait_for_count(10, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.count().await, 10, "the second batch is stuck");
    (env, host, admin)
}

/// SIGTERM while a plugin is stuck: /readyz says so at once, the drain gives up
/// after `drain_timeout` and abandons the batch in flight, the host exits 0
/// within `shutdown_timeout`, and the next run replays exactly that batch and what
/// followed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stuck_plugin_abandons_the_batch_within_the_timeouts() {
    let _serial = SERIAL.lock().await;
    let (env, mut host, admin) = stuck_host("stuck-term").await;
    let signalled = std::time::Instant::now();
    host.sigterm();
    // Not ready from the moment the signal is handled, while the drain goes on.
    let body = loop {
        let (status, body) = admin.get("/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(signalled.elapsed() < Duration::from_secs(1), "still ready after SIGTERM: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(body.contains("shutting down"), "{body}");
    let status = host.wait(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status}\n{}", host.log_tail(20));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "exit after {took:?}: drain_timeout 2 s, shutdown_timeout 6 s"
    );
    assert_eq!(host.log_lines("drain timeout: in-flight batch abandoned").len(), 1, "{}", host.log_tail(20));
    // The worker is stuck, so its MongoDB progress (saved every second) may lag; Kafka's commit on drain does not.
    let (committed, _) = env.offsets().unwrap();
    assert_eq!(committed.get(&0), Some(&10), "committed up to the abandoned batch\n{}", host.log_tail(20));
    assert!(env.progress().await.get(&0).is_none_or(|p| *p <= 10), "progress not past the abandoned batch");

    // The next run (a plugin that is not stuck) consumes the abandoned batch and the rest, once.
    let config = env.config_file(&["passthrough"], "");
    let mut last = Host::spawn(&env, "next", &config, true);
    assert!(last.wait(Duration::from_secs(60)).await.success(), "{}", last.log_tail(20));
    assert_eq!(last.summary("consumed"), Some(30), "{}", last.log_tail(20));
    env.assert_exact(40).await;
}

/// A second signal while draining exits at once, with status 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_130() {
    let _serial = SERIAL.lock().await;
    let (env, mut host, _admin) = stuck_host("stuck-twice").await;
    host.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = std::time::Instant::now();
    host.sigterm();
    let status = host.wait(Duration::from_secs(20)).await;
    assert!(signalled.elapsed() < Duration::from_secs(1), "exit after {:?}", signalled.elapsed());
    assert_eq!(status.code(), Some(130), "{status}\n{}", host.log_tail(20));
    // Nothing past what was written is recorded; the next run replays the rest, once.
    let start = env.progress().await.get(&0).copied().unwrap_or(-1).max(env.offsets().unwrap().0[&0]).max(0);
    assert!(start <= 10, "recorded up to {start}, but only offsets 0..10 were written");
    let config = env.config_file(&["passthrough"], "");
    let mut last = Host::spawn(&env, "next", &config, true);
    assert!(last.wait(Duration::from_secs(60)).await.success(), "{}", last.log_tail(20));
    assert_eq!(last.summary("consumed"), Some(40 - start as u64), "{}", last.log_tail(20));
    env.assert_exact(40).await;
}

/// Cooperative-sticky rebalancing (`partition.assignment.strategy =
/// "cooperative-sticky"`, librdkafka's incremental assign/unassign): three
/// hosts join one at a time and two leave (SIGTERM) under load. A rebalance
/// revokes only the partitions that move — the first host never gives up all
/// six at once — and every record is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_hosts_join_and_leave() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new("cooperative");
    env.create_topic(PARTITIONS).await.unwrap();
    let extra = EXTRA.replace("[kafka.options]\n", "[kafka.options]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"\n");
    let config = env.dir.path().join("host.toml");
    std::fs::write(&config, env.config_text(&["passthrough"], &extra)).unwrap();
    let producer = env.produce_stream(N, 500, Duration::from_millis(250));
    let watch = ProgressWatch::start(&env, PARTITIONS);
    let mut a = Host::spawn(&env, "a", &config, false);
    let grows = |by: u64| {
        let env = &env;
        async move {
            let now = env.count().await;
            env.wait_for_count((now + by).min(N), Duration::from_secs(90)).await.unwrap();
        }
    };
    grows(500).await;
    let mut b = Host::spawn(&env, "b", &config, false);
    let mut c = Host::spawn(&env, "c", &config, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(b.assignments() >= 1 && c.assignments() >= 1) {
        assert!(std::time::Instant::now() < deadline, "b and c never got partitions:\n{}\n{}", b.log_tail(10), c.log_tail(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    grows(1000).await;
    b.terminate(Duration::from_secs(30)).await;
    grows(1000).await;
    c.terminate(Duration::from_secs(30)).await;
    producer.await.unwrap().expect("producer");
    env.wait_for_count(N, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}\n{}", a.log_tail(30)));
    a.terminate(Duration::from_secs(30)).await;
    env.assert_exact(N).await;
    watch.finish(1).await;
    let revoked: Vec<usize> = a
        .events("revoked")
        .iter()
        .map(|l| sluice_tests::field(l, "partitions").map_or(0, |p| p.split(',').filter(|s| !s.is_empty()).count()))
        .collect();
    assert!(!revoked.is_empty(), "the joins took partitions from a:\n{}", a.log_tail(20));
    assert!(revoked.iter().all(|&n| n < PARTITIONS as usize), "incremental: a never gave up all its partitions at once: {revoked:?}");
    assert!(a.events("assigned").len() >= 3, "a got partitions back as b and c left:\n{}", a.log_tail(20));
}
