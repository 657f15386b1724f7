//! [`TestEnv`]: one test's topic, group and collection, with what a test does
//! with them: produce, configure, read back, wait, clean up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice::config::Config;

use crate::*;

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

    /// The config of this env: its topic (from the earliest offset), group and
    /// collection, the test services, and the admin API on a free port.
    pub fn builder(&self) -> ConfigBuilder {
        ConfigBuilder::new()
            .set("kafka", "brokers", brokers())
            .set("kafka", "group_id", self.group.as_str())
            .set("kafka", "topics", vec![self.topic.as_str()])
            .set("kafka", "auto_offset_reset", "earliest")
            .set("mongo", "uri", mongo_uri())
            .set("mongo", "database", DATABASE)
            .set("mongo", "collection", self.collection.as_str())
            .set("admin", "address", "127.0.0.1:0")
    }

    /// The TOML text of a config for this env, with the given plugin chain and extra TOML appended.
    pub fn config_text(&self, plugins: &[&str], extra: &str) -> String {
        self.builder().example_plugins(plugins).to_toml() + "\n" + extra
    }

    /// Write the config file and load it as the binary would.
    /// A config for an in-process run ([`sluice::run`]): it does not watch the
    /// plugin files, which live in the build directory every test shares.
    pub fn config(&self, plugins: &[&str], extra: &str) -> anyhow::Result<Config> {
        self.load(&self.config_text(plugins, extra))
    }

    /// `builder`'s config written and loaded as [`TestEnv::config`] does.
    pub fn config_from(&self, builder: &ConfigBuilder) -> anyhow::Result<Config> {
        self.load(&builder.to_toml())
    }

    /// `text` written to this env's `sluice.toml` and loaded, not watching the plugin files.
    fn load(&self, text: &str) -> anyhow::Result<Config> {
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, text)?;
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

impl TestEnv {
    /// Write a config file for hosts of this env and return its path.
    pub fn config_file(&self, plugins: &[&str], extra: &str) -> PathBuf {
        let path = self.dir.path().join("host.toml");
        std::fs::write(&path, self.config_text(plugins, extra)).unwrap();
        path
    }

    /// `builder`'s config written as [`TestEnv::config_file`] does; its path.
    pub fn config_file_from(&self, builder: &ConfigBuilder) -> PathBuf {
        builder.write(self.dir.path().join("host.toml"))
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

impl TestEnv {
    /// A config with a raw `[[plugins]]` TOML section.
    pub fn config_with(&self, plugins_toml: &str, extra: &str) -> anyhow::Result<Config> {
        self.load(&format!("{}{plugins_toml}\n{extra}", self.config_text(&[], "")))
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

/// Run `config` in-process until every partition is caught up (at most 3 minutes).
pub async fn run_until_caught_up(config: Config) -> sluice::Summary {
    let run = sluice::run(config, sluice::RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending());
    let summary = tokio::time::timeout(Duration::from_secs(180), run).await.expect("the run ends by itself").expect("the run succeeds");
    assert!(summary.caught_up, "{summary}");
    summary
}
