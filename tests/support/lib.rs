//! Shared helpers of the integration tests: they talk to the real services that
//! `scripts/services up` starts (Kafka on 127.0.0.1:9092, FerretDB on
//! 127.0.0.1:27017; override with `SLUICE_TEST_BROKERS` / `SLUICE_TEST_MONGO`).
//!
//! # Layout
//! - [`TestEnv`]: one test's unique topic, consumer group and collection, with
//!   helpers to produce, build a config, read what landed and check offsets.
//! - [`plugin`]: path of a built example plugin; [`hostile`]: of a hostile test plugin.
//! - [`Host`]: a `sluice run` process (signals, logs, summary) and its [`Admin`] API.
//! - [`by_partition`], [`segments`]: which chain version made each document, in offset order.
//! - [`watch::ProgressWatch`]: both progress stores sampled against the documents while a test runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice::config::Config;

pub mod watch;

pub fn brokers() -> String {
    std::env::var("SLUICE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn mongo_uri() -> String {
    std::env::var("SLUICE_TEST_MONGO").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// The database every test writes to (each test has its own collection).
pub const DATABASE: &str = "sluice_test";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_owned()
}

/// The built `.wasm` of an example plugin; fails with the command to build it.
pub fn plugin(name: &str) -> PathBuf {
    let p = repo().join("plugins/target/wasm32-unknown-unknown/release").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make plugins` (or `make test`, which builds them)", p.display());
    p
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// One test's world: a topic, a group and a collection of its own.
pub struct TestEnv {
    pub topic: String,
    pub group: String,
    pub collection: String,
    pub dir: tempfile::TempDir,
}

/// A passing test leaves nothing behind: its topics (and dead-letter topic), its
/// collection and its progress documents are deleted. A failing one keeps them
/// for a look.
impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let (topic, group, collection) = (self.topic.clone(), self.group.clone(), self.collection.clone());
        // Drop runs inside the test's runtime: the clean-up gets a thread and a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                use rdkafka::admin::{AdminClient, AdminOptions};
                if let Ok(admin) = ClientConfig::new().set("bootstrap.servers", brokers()).create::<AdminClient<_>>() {
                    let dlq = format!("{topic}.dlq");
                    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
                    let _ = tokio::time::timeout(Duration::from_secs(10), admin.delete_topics(&[&topic, &dlq], &opts)).await;
                }
                if let Ok(client) = mongodb::Client::with_uri_str(mongo_uri()).await {
                    let db = client.database(DATABASE);
                    let _ = db.collection::<Document>(&collection).drop().await;
                    let progress = db.collection::<Document>(sluice::progress::DEFAULT_COLLECTION);
                    let _ = progress.delete_many(doc! { "group": &group }).await;
                }
            });
            Some(())
        })
        .join();
    }
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        let base = unique(name);
        TestEnv {
            topic: format!("t-{base}"),
            group: format!("g-{base}"),
            collection: format!("c-{base}"),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub async fn create_topic(&self, partitions: i32) -> anyhow::Result<()> {
        sluice::produce::ensure_topic(ClientConfig::new().set("bootstrap.servers", brokers()), &self.topic, partitions).await
    }

    /// Send `{"num": n}` for n in 0..count.
    pub async fn produce_nums(&self, count: u64) -> anyhow::Result<()> {
        let opts = sluice::produce::ProduceOptions::numbers(&brokers(), &self.topic, 0, count);
        let sent = sluice::produce::produce(&opts).await?;
        anyhow::ensure!(sent == count, "sent {sent} of {count}");
        Ok(())
    }

    /// The TOML text of a config for this env, with the given plugin chain and extra TOML appended.
    pub fn config_text(&self, plugins: &[&str], extra: &str) -> String {
        let mut s = format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\ntopics = [\"{}\"]\nauto_offset_reset = \"earliest\"\n\n\
             [mongo]\nuri = \"{}\"\ndatabase = \"{DATABASE}\"\ncollection = \"{}\"\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\n",
            brokers(),
            self.group,
            self.topic,
            mongo_uri(),
            self.collection
        );
        for p in plugins {
            s.push_str(&format!("[[plugins]]\nname = \"{p}\"\npath = \"{}\"\n\n", plugin(p).display()));
        }
        s.push_str(extra);
        s
    }

    /// Write the config file and load it as the binary would.
    /// A config for an in-process run ([`sluice::run`]): it does not watch the
    /// plugin files, which live in the build directory every test shares.
    pub fn config(&self, plugins: &[&str], extra: &str) -> anyhow::Result<Config> {
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, self.config_text(plugins, extra))?;
        let mut config = Config::load(&path)?;
        config.hot_swap.watch = false;
        Ok(config)
    }

    pub async fn collection(&self) -> anyhow::Result<mongodb::Collection<Document>> {
        let client = mongodb::Client::with_uri_str(mongo_uri()).await?;
        Ok(client.database(DATABASE).collection(&self.collection))
    }

    /// Every stored document.
    pub async fn documents(&self) -> anyhow::Result<Vec<Document>> {
        let docs: Vec<Document> = self.collection().await?.find(doc! {}).await?.try_collect().await?;
        Ok(docs)
    }

    /// MongoDB's progress (`sluice_offsets`, next offset) of this env's group per
    /// partition (a document with only a write intent has none yet).
    pub async fn progress(&self) -> BTreeMap<i32, i64> {
        let client = mongodb::Client::with_uri_str(mongo_uri()).await.unwrap();
        let coll = client.database(DATABASE).collection::<Document>(sluice::progress::DEFAULT_COLLECTION);
        let docs: Vec<Document> =
            coll.find(doc! { "group": &self.group, "topic": &self.topic }).await.unwrap().try_collect().await.unwrap();
        docs.iter().filter(|d| d.contains_key("next_offset")).map(|d| (int(d, "partition") as i32, int(d, "next_offset"))).collect()
    }

    /// Kafka's committed offset of this env's group per partition, and the end offsets.
    pub fn offsets(&self) -> anyhow::Result<(BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &self.group)
            .create()
            .context("creating the checking consumer")?;
        let md = c.fetch_metadata(Some(&self.topic), Duration::from_secs(10))?;
        let Some(t) = md.topics().first() else { bail!("topic {} has no metadata", self.topic) };
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in t.partitions() {
            tpl.add_partition(&self.topic, p.id());
            let (_, high) = c.fetch_watermarks(&self.topic, p.id(), Duration::from_secs(10))?;
            ends.insert(p.id(), high);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
        let committed =
            committed.elements().iter().map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 })).collect();
        Ok((committed, ends))
    }
}

/// An integer field, whether stored as int32, int64 or an integral double.
pub fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Int32(n)) => *n as i64,
        Some(mongodb::bson::Bson::Double(f)) if f.fract() == 0.0 => *f as i64,
        other => panic!("field `{key}` is not an integer in {d}: {other:?}"),
    }
}

/// Distinct values, duplicates and missing numbers of `num` in `docs`, against 0..n.
pub fn num_report(docs: &[Document], expected: impl IntoIterator<Item = i64>) -> NumReport {
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for d in docs {
        let n = int(d, "num");
        *seen.entry(n).or_default() += 1;
    }
    let expected: Vec<i64> = expected.into_iter().collect();
    NumReport {
        missing: expected.iter().filter(|n| !seen.contains_key(n)).copied().collect(),
        duplicates: seen.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect(),
        unexpected: seen.keys().filter(|n| !expected.contains(n)).copied().collect(),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct NumReport {
    pub missing: Vec<i64>,
    pub duplicates: Vec<i64>,
    pub unexpected: Vec<i64>,
}

impl NumReport {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.duplicates.is_empty() && self.unexpected.is_empty()
    }
}

/// The `sluice` binary next to this test binary (built by `make build`/`make test`).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("sluice");
    assert!(bin.exists(), "{} is missing: run `cargo build -p sluice` (make test does)", bin.display());
    bin
}

/// Run `scripts/services <args>` (stop/start a service for fault tests).
pub fn services(args: &[&str]) {
    let status = std::process::Command::new(repo().join("scripts/services")).args(args).status().expect("scripts/services");
    assert!(status.success(), "scripts/services {args:?} failed: {status}");
}

/// MongoDB stopped by a fault test ([`stop_mongo`]); started again when
/// dropped, also when the test fails half-way, so the rest of the suite has it.
pub struct MongoStopped {
    started: bool,
}

/// Stop FerretDB until [`MongoStopped::start`] (or the guard's drop): killed
/// (SIGKILL, at once: a crash) or stopped gracefully (SIGTERM, ~1 s).
pub fn stop_mongo(kill: bool) -> MongoStopped {
    services(&[if kill { "kill-mongo" } else { "stop-mongo" }]);
    MongoStopped { started: false }
}

impl MongoStopped {
    pub fn start(mut self) {
        self.started = true;
        services(&["start-mongo"]);
    }
}

impl Drop for MongoStopped {
    fn drop(&mut self) {
        if !self.started {
            let _ = std::process::Command::new(repo().join("scripts/services")).arg("start-mongo").status();
        }
    }
}

/// The value of `key=value` in a plain-text log line (quotes removed; empty if the value is).
pub fn field(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).map(|v| v.trim_matches('"').to_owned())
}

/// A `sluice run` process.
pub struct Host {
    pub name: String,
    child: std::process::Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Host {
    /// Start `sluice run --config <config>` (with `--until-caught-up` if asked).
    pub fn spawn(env: &TestEnv, name: &str, config: &std::path::Path, until_caught_up: bool) -> Host {
        Host::spawn_bin(&sluice_bin(), env, name, config, until_caught_up)
    }

    /// [`Host::spawn`] with a given `sluice` binary (a release build, say).
    pub fn spawn_bin(bin: &std::path::Path, env: &TestEnv, name: &str, config: &std::path::Path, until_caught_up: bool) -> Host {
        let stdout = env.dir.path().join(format!("{name}.out"));
        let stderr = env.dir.path().join(format!("{name}.err"));
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("run").arg("--config").arg(config);
        if until_caught_up {
            cmd.arg("--until-caught-up");
        }
        cmd.env("SLUICE_LOG", "info,librdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn sluice");
        Host { name: name.into(), child, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Send signal `name` (`TERM`, `STOP`, `CONT`, …) to the host process.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// The host's admin API, once it logged its address (the `event="admin_listening"` line's `url`).
    pub async fn admin(&self, token: Option<&str>) -> Admin {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(url) = self.events("admin_listening").first().and_then(|l| field(l, "url")) {
                return Admin { base: url, token: token.map(str::to_owned), client: reqwest::Client::new() };
            }
            assert!(std::time::Instant::now() < deadline, "host {} never served its admin API:\n{}", self.name, self.log_tail(20));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log lines of one structured event (`event="…"`: what tests wait for, not the wording).
    pub fn events(&self, event: &str) -> Vec<String> {
        self.log_lines(&format!("event=\"{event}\""))
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }

    /// SIGTERM, then assert a clean exit (status 0) within `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) {
        self.sigterm();
        let status = self.wait(timeout).await;
        assert!(status.success(), "host {} exit after SIGTERM: {status}\n{}", self.name, self.log_tail(30));
    }

    /// Wait for exit; panics with the log tail on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("host {} did not exit within {timeout:?}; log tail:\n{}", self.name, self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// How many non-empty partition assignments this host has logged.
    pub fn assignments(&self) -> usize {
        self.events("assigned").iter().filter(|l| field(l, "partitions").is_some_and(|p| !p.is_empty())).count()
    }

    /// A field of the `summary:` line the host prints on a clean exit.
    pub fn summary(&self, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(&self.stdout).ok()?;
        let line = text.lines().find(|l| l.starts_with("summary: "))?;
        line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestEnv {
    /// Write a config file for hosts of this env and return its path.
    pub fn config_file(&self, plugins: &[&str], extra: &str) -> PathBuf {
        let path = self.dir.path().join("host.toml");
        std::fs::write(&path, self.config_text(plugins, extra)).unwrap();
        path
    }

    /// Documents stored so far.
    pub async fn count(&self) -> u64 {
        match self.collection().await {
            Ok(c) => c.count_documents(doc! {}).await.unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Wait until at least `n` documents are stored.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let c = self.count().await;
            if c >= n {
                return Ok(c);
            }
            if std::time::Instant::now() > deadline {
                bail!("only {c} of {n} documents after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Send `{"num": n}` for n in 0..total in chunks with pauses, in the
    /// background, so a stream is flowing while faults are injected.
    pub fn produce_stream(&self, total: u64, chunk: u64, pause: Duration) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let topic = self.topic.clone();
        tokio::spawn(async move {
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("linger.ms", "5")
                .set("acks", "all")
                .set("enable.idempotence", "true")
                .set("message.timeout.ms", "120000")
                .create()?;
            let mut n = 0;
            while n < total {
                let end = (n + chunk).min(total);
                let payloads: Vec<String> = (n..end).map(|i| format!("{{\"num\":{i}}}")).collect();
                let mut pending = Vec::new();
                for payload in &payloads {
                    let rec: FutureRecord<'_, (), String> = FutureRecord::to(&topic).payload(payload);
                    pending.push(producer.send(rec, Duration::from_secs(60)));
                }
                for p in futures::future::join_all(pending).await {
                    if let Err((e, _)) = p {
                        bail!("delivery failed: {e}");
                    }
                }
                n = end;
                tokio::time::sleep(pause).await;
            }
            Ok(())
        })
    }

    /// Assert: one document per num in 0..n, and committed offsets = end offsets.
    pub async fn assert_exact(&self, n: u64) {
        let docs = self.documents().await.unwrap();
        let report = num_report(&docs, 0..n as i64);
        assert!(
            report.is_exact(),
            "missing {} duplicates {} unexpected {}: {:?}",
            report.missing.len(),
            report.duplicates.len(),
            report.unexpected.len(),
            report
        );
        assert_eq!(docs.len() as u64, n);
        self.assert_committed_at_end();
    }

    /// Every partition's committed offset is its end offset (an empty partition
    /// may have no committed offset at all).
    pub fn assert_committed_at_end(&self) {
        let (committed, ends) = self.offsets().unwrap();
        for (p, end) in &ends {
            let c = committed.get(p).copied().unwrap_or(-1);
            assert!(c == *end || (*end == 0 && c == -1), "partition {p}: committed {c}, end {end} (all: {committed:?} vs {ends:?})");
        }
    }
}

/// The built `.wasm` of a hostile test plugin (`tests/hostile/`).
pub fn hostile(name: &str) -> PathBuf {
    let p = repo().join("tests/hostile/target/wasm32-unknown-unknown/release").join(format!("hostile_{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make hostile` (make test does)", p.display());
    p
}

/// The built `.wasm` of a hostile plugin that imports WASI (`tests/hostile/wasi-<name>`),
/// for `target`: `wasm32-wasip2` (a component) or `wasm32-wasip1` (a core module).
pub fn hostile_wasi(target: &str, name: &str) -> PathBuf {
    let p = repo().join("tests/hostile/target").join(target).join("release").join(format!("hostile_wasi_{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make hostile` (make test does)", p.display());
    p
}

/// One dead-lettered record as read back from the DLQ topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Keys and values as text (bytes that are not UTF-8 become U+FFFD).
    pub headers: BTreeMap<String, String>,
    /// As they came, keys as bytes, in order.
    pub raw_headers: Vec<sluice::kafka_raw::Header>,
}

impl DeadLetter {
    pub fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> DeadLetter {
        use rdkafka::Message as _;
        let raw_headers = m.headers().map(sluice::kafka_raw::read_headers).unwrap_or_default();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let headers = raw_headers.iter().map(|(k, v)| (text(k), text(v.as_deref().unwrap_or_default()))).collect();
        DeadLetter { key: m.key().map(<[u8]>::to_vec), value: m.payload().map(<[u8]>::to_vec), headers, raw_headers }
    }

    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or_else(|| panic!("no header {k} in {:?}", self.headers))
    }
}

impl TestEnv {
    /// A config with a raw `[[plugins]]` TOML section.
    pub fn config_with(&self, plugins_toml: &str, extra: &str) -> anyhow::Result<Config> {
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, format!("{}{plugins_toml}\n{extra}", self.config_text(&[], "")))?;
        let mut config = Config::load(&path)?;
        config.hot_swap.watch = false;
        Ok(config)
    }

    /// Send raw records (key, value; `None` value = tombstone) to partition 0 in order.
    pub async fn produce_raw(&self, records: &[(Option<&[u8]>, Option<&[u8]>)]) -> anyhow::Result<()> {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", brokers()).set("message.max.bytes", "10000000").create()?;
        for (k, v) in records {
            let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).partition(0);
            if let Some(k) = k {
                r = r.key(*k);
            }
            if let Some(v) = v {
                r = r.payload(*v);
            }
            producer.send(r, Duration::from_secs(30)).await.map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
        }
        Ok(())
    }

    /// Read `expected` records from this env's dead-letter topic (`<topic>.dlq`).
    pub fn dead_letters(&self, expected: usize) -> anyhow::Result<Vec<DeadLetter>> {
        let dlq = format!("{}.dlq", self.topic);
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("dlq-reader"))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&dlq, 0, Offset::Beginning)?;
        c.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m?;
                out.push(DeadLetter::of(&m));
            }
            if out.len() >= expected {
                // Make sure there is nothing more (and keep what there is: the count is checked).
                match c.poll(Duration::from_millis(500)) {
                    None => break,
                    Some(m) => {
                        out.push(DeadLetter::of(&m?));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A client of a host's admin API.
pub struct Admin {
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Admin {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `GET` with extra headers: status and body text.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.send_with(reqwest::Method::GET, path, None, headers).await
    }

    /// One sample of `/metrics` (no labels), if present.
    pub async fn metric(&self, name: &str) -> Option<u64> {
        let (_, text) = self.get("/metrics").await;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Status and body text.
    pub async fn put_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Status and JSON body.
    pub async fn put(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let (status, text) = self.send(reqwest::Method::PUT, path, Some(body)).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("PUT {path}: {e}: {text}")))
    }

    /// Status and JSON body.
    pub async fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.send(reqwest::Method::POST, path, None).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}")))
    }

    /// `GET /plugins` (must answer 200).
    pub async fn plugins(&self) -> serde_json::Value {
        let (status, text) = self.get("/plugins").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}

impl TestEnv {
    /// Send `{"num": n}` for n = 0, 1, 2, … at about `per_second`, until `stop`
    /// is set; returns how many were sent (all acknowledged).
    pub fn produce_until(
        &self,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        per_second: u64,
    ) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
        let topic = self.topic.clone();
        tokio::spawn(async move {
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("linger.ms", "5")
                .set("acks", "all")
                .set("enable.idempotence", "true")
                .create()?;
            let chunk = (per_second / 20).max(1);
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let payloads: Vec<String> = (n..n + chunk).map(|i| format!("{{\"num\":{i}}}")).collect();
                let pending: Vec<_> = payloads
                    .iter()
                    .map(|p| producer.send(FutureRecord::<(), String>::to(&topic).payload(p), Duration::from_secs(60)))
                    .collect();
                for p in futures::future::join_all(pending).await {
                    if let Err((e, _)) = p {
                        bail!("delivery failed: {e}");
                    }
                }
                n += chunk;
            }
            Ok(n)
        })
    }

    /// Every record of the topic: (partition, offset) → its `num`.
    pub fn read_topic(&self) -> anyhow::Result<BTreeMap<(i32, i64), i64>> {
        use rdkafka::message::Message;
        let (_, ends) = self.offsets()?;
        let total: i64 = ends.values().sum();
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in ends.keys() {
            tpl.add_partition_offset(&self.topic, *p, Offset::Beginning)?;
        }
        c.assign(&tpl)?;
        let mut out = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < total {
            anyhow::ensure!(std::time::Instant::now() < deadline, "read {} of {total} records", out.len());
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m?;
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
                out.insert((m.partition(), m.offset()), v["num"].as_i64().context("num")?);
            }
        }
        Ok(out)
    }

    /// Wait until every partition's committed offset is its end offset.
    pub async fn wait_committed_at_end(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (committed, ends) = self.offsets()?;
            if ends.iter().all(|(p, end)| committed.get(p).copied().unwrap_or(-1) == *end || *end == 0) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("committed {committed:?}, end {ends:?} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Where a document came from, from its derived `_id` (`topic:partition:offset:index`).
pub fn source_of(d: &Document) -> (i32, i64) {
    let parsed = d.get_str("_id").ok().and_then(sluice::record::parse_derived_id);
    let (_, partition, offset, _) = parsed.unwrap_or_else(|| panic!("no derived _id in {d}"));
    (partition, offset)
}

/// The chain that made a document, from the versions field: `name@version,…`.
pub fn made_by(d: &Document, field: &str) -> String {
    let plugins = d.get_document(field).and_then(|v| v.get_array("plugins")).unwrap_or_else(|_| panic!("no {field}.plugins in {d}"));
    plugins.iter().map(|b| b.as_str().unwrap().to_owned()).collect::<Vec<_>>().join(",")
}

/// Per partition, (offset, chain that made it) in offset order.
pub fn by_partition(docs: &[Document], field: &str) -> BTreeMap<i32, Vec<(i64, String)>> {
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for d in docs {
        let (p, o) = source_of(d);
        out.entry(p).or_default().push((o, made_by(d, field)));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The runs of one partition: consecutive documents made by the same chain
/// collapse into one (`[v1, v2]` = one switch offset).
pub fn segments(docs: &[(i64, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, v) in docs {
        if out.last() != Some(v) {
            out.push(v.clone());
        }
    }
    out
}
