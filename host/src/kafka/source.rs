//! The Kafka side: one consumer on a dedicated thread.
//!
//! The thread polls, hands each record to its partition's worker (a channel per
//! partition), and between polls does the bookkeeping that must happen on the
//! consumer: store the offsets workers report as written (`enable.auto.offset.store`
//! is off, so librdkafka commits only what MongoDB has acknowledged), pause a
//! partition whose queue is full and resume it when drained, and tell whether
//! every partition has caught up. On revoke it stops the revoked partitions'
//! workers, waits (up to the drain timeout) for their in-flight batches, stores
//! their offsets and commits synchronously before the partitions are released;
//! on stop it does the same for all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, error::KafkaError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{KafkaConfig, OffsetReset, redact_kafka_error};
use crate::record::{PartitionState, Since, SourceRecord, Stored};
use crate::telemetry::CommitCounts;

/// Each partition's stored progress, asked at every assignment (on librdkafka's
/// rebalance callback, so it blocks): the pipeline reads it from MongoDB.
pub type StoredLookup = Arc<dyn Fn(&[(String, i32)]) -> Result<HashMap<(String, i32), Stored>, String> + Send + Sync>;

/// Starts a worker for a newly assigned partition.
pub type SpawnWorker =
    Arc<dyn Fn(Arc<str>, i32, mpsc::UnboundedReceiver<SourceRecord>, Arc<PartitionState>) -> JoinHandle<()> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("Kafka brokers {brokers} did not answer within {timeout:?}: {cause}")]
    Unreachable { brokers: String, timeout: Duration, cause: KafkaError },
    #[error("cannot subscribe to {topics:?}: {cause}")]
    Subscribe { topics: Vec<String>, cause: KafkaError },
    #[error("topic(s) {topics:?} do not exist on {brokers} (waited {timeout:?}); create them, or check the names in kafka.topics")]
    MissingTopics { topics: Vec<String>, brokers: String, timeout: Duration },
}

struct Entry {
    topic: Arc<str>,
    tx: mpsc::UnboundedSender<SourceRecord>,
    state: Arc<PartitionState>,
    task: JoinHandle<()>,
    /// The offset last stored with librdkafka.
    stored: i64,
    paused: bool,
    /// Where consumption started and the end offset seen then (caught-up, and
    /// the lag's origin when nothing was committed).
    start: Option<i64>,
    target: Option<i64>,
}

#[derive(Default)]
struct Assigned {
    by_topic: HashMap<String, HashMap<i32, Entry>>,
    /// Set after the first assignment (possibly empty) arrived.
    assigned_once: bool,
}

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// On revoke and stop, how long in-flight batches may take.
    pub drain_timeout: Duration,
    /// Queued records per partition above which it is paused.
    pub max_queued: usize,
    /// Queued key and value bytes per partition above which it is paused.
    pub max_queued_bytes: usize,
    /// End once every assigned partition is written up to its end offset at assignment.
    pub until_caught_up: bool,
    /// How long the brokers may take to answer at start.
    pub connect_timeout: Duration,
    /// Set once the group assigned this consumer its partitions (possibly none).
    pub joined: Arc<AtomicBool>,
    pub commits: Arc<CommitCounts>,
}

pub struct SourceContext {
    assigned: Mutex<Assigned>,
    joined: Arc<AtomicBool>,
    commits: Arc<CommitCounts>,
    spawn: SpawnWorker,
    runtime: tokio::runtime::Handle,
    drain_timeout: Duration,
    stored: StoredLookup,
    /// `auto_offset_reset = "latest"`: a partition with no offset in either store
    /// starts at the high watermark read at assignment, recorded as its start.
    start_at_end: bool,
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!(target: "librdkafka", "{fac}: {log_message}"),
            L::Warning => tracing::warn!(target: "librdkafka", "{fac}: {log_message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", "{fac}: {log_message}"),
            L::Debug => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    /// Every `statistics.interval.ms`: note each assigned partition's high
    /// watermark (for the lag). Only ever forward: for a paused partition these
    /// statistics are older than what [`Source::housekeeping`] asked the broker.
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let a = self.assigned.lock().unwrap();
        for (name, topic) in &statistics.topics {
            let Some(parts) = a.by_topic.get(name) else { continue };
            for (p, stats) in &topic.partitions {
                if let Some(e) = parts.get(p)
                    && stats.hi_offset >= 0
                {
                    e.state.high_watermark.fetch_max(stats.hi_offset, Ordering::Relaxed);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    /// Assign at the later of Kafka's committed offset and the progress stored in
    /// MongoDB; on revoke, drain and commit before the partitions are released.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let (starts, since) = self.start_positions(consumer, tpl);
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = result {
                    tracing::error!("assigning partitions failed: {e}");
                    return;
                }
                // librdkafka keeps a partition's pause flag across assignments: a
                // partition paused (queue full) before a revoke would stay paused.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!("cannot resume newly assigned partitions: {e}");
                }
                self.on_assigned(tpl, &starts, &since);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoked(consumer, tpl);
                let result = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = result {
                    tracing::error!("releasing partitions failed: {e}");
                }
            }
            other => {
                tracing::error!("rebalance failed: {other:?}; releasing all partitions");
                let all = {
                    self.assigned
                        .lock()
                        .unwrap()
                        .by_topic
                        .iter()
                        .flat_map(|(t, m)| m.keys().map(move |p| (t.clone(), *p)))
                        .collect::<Vec<_>>()
                };
                let mut revoked = TopicPartitionList::new();
                for (t, p) in all {
                    revoked.add_partition(&t, p);
                }
                self.on_revoked(consumer, &revoked);
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                self.commits.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.commits.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("offset commit failed (the next commit carries the same offsets): {e}");
            }
        }
    }
}

impl SourceContext {
    /// Where each assigned partition starts: the later of Kafka's committed offset
    /// and MongoDB's stored progress. Sets the MongoDB one in `tpl` when it is later.
    /// Also returns what each partition inherits: where replays end (MongoDB's
    /// `intent`), the topic's id, and whether the stored progress belonged to
    /// an earlier incarnation of the topic (then it is not used).
    fn start_positions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> (HashMap<(String, i32), i64>, HashMap<(String, i32), Since>) {
        let parts: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let mut starts = HashMap::new();
        if parts.is_empty() {
            return (starts, HashMap::new());
        }
        let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => c.to_topic_map(),
            Err(e) => {
                tracing::warn!("cannot read Kafka's committed offsets at assignment: {e}");
                HashMap::new()
            }
        };
        let mut topics: Vec<String> = parts.iter().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        let ids = crate::kafka::kafka_raw::topic_ids(consumer.client().native_ptr(), &topics, Duration::from_secs(5)).unwrap_or_else(|e| {
            tracing::warn!("cannot read the topics' ids (progress is used without checking the topic's incarnation): {e}");
            HashMap::new()
        });
        let mut stored = (self.stored)(&parts).unwrap_or_else(|e| {
            tracing::warn!("cannot read the progress stored at assignment (using Kafka's offsets): {e}");
            HashMap::new()
        });
        let mut since: HashMap<(String, i32), Since> = HashMap::new();
        for key in &parts {
            let current = ids.get(&key.0).cloned();
            let s = stored.get(key).cloned().unwrap_or_default();
            let renewed = matches!((&s.topic_id, &current), (Some(a), Some(b)) if a != b);
            let mut replay_until = s.intent.unwrap_or(-1);
            if renewed {
                // Offsets of a deleted topic mean nothing for the new one; its records reuse the old derived ids.
                replay_until = replay_until.max(s.next_offset.unwrap_or(-1));
                tracing::warn!(topic = %key.0, partition = key.1, stored_id = ?s.topic_id, topic_id = ?current, stored_next_offset = ?s.next_offset,
                    "the topic was deleted and created again since the progress in MongoDB was stored: starting it over; documents of the old topic with the same derived ids are replaced");
                stored.remove(key);
            }
            let chains = if renewed { Vec::new() } else { s.chains };
            since.insert(key.clone(), Since { replay_until, topic_id: current, renewed, chains });
        }
        for key in parts {
            let kafka = match committed.get(&key) {
                Some(Offset::Offset(o)) => Some(*o),
                _ => None,
            };
            let mongo = stored.get(&key).and_then(|s| s.next_offset);
            if let Some(m) = mongo
                && kafka.is_none_or(|k| m > k)
            {
                // Kafka's offset is a little behind after a crash (MongoDB's is saved more often); a rewind of
                // Kafka's alone (kafka-consumer-groups --reset-offsets) is overridden: `sluice offsets set` moves both.
                match kafka {
                    Some(k) => tracing::warn!(topic = %key.0, partition = key.1, kafka = k, mongo = m,
                        "Kafka's committed offset is behind MongoDB's progress (a crash before the commit, or a rewind of Kafka's offsets alone): starting at MongoDB's; to rewind, use `sluice offsets set`, which moves both"),
                    None => {
                        tracing::info!(topic = %key.0, partition = key.1, mongo = m, "starting at the progress stored in MongoDB (Kafka has no offset)")
                    }
                }
                if let Err(e) = tpl.set_partition_offset(&key.0, key.1, Offset::Offset(m)) {
                    tracing::warn!("cannot set the start offset of {}:{}: {e}", key.0, key.1);
                }
            }
            if let Some(start) = kafka.max(mongo) {
                starts.insert(key, start);
            } else if self.start_at_end {
                // Left to librdkafka, "latest" is resolved anew by every run until a record of the
                // partition is written: records sent between two runs would be skipped. Resolved
                // here, the start is stored (and committed) like any written offset.
                match consumer.fetch_watermarks(&key.0, key.1, Duration::from_secs(5)) {
                    Ok((_, high)) => match tpl.set_partition_offset(&key.0, key.1, Offset::Offset(high)) {
                        Ok(()) => {
                            tracing::info!(topic = %key.0, partition = key.1, offset = high, "no offset stored: starting at the end (auto_offset_reset = \"latest\")");
                            starts.insert(key, high);
                        }
                        Err(e) => tracing::warn!("cannot set the start offset of {}:{}: {e}", key.0, key.1),
                    },
                    Err(e) => {
                        tracing::warn!(topic = %key.0, partition = key.1, "cannot read the end offset (librdkafka resolves \"latest\" itself): {e}")
                    }
                }
            }
        }
        (starts, since)
    }

    fn on_assigned(&self, tpl: &TopicPartitionList, starts: &HashMap<(String, i32), i64>, since: &HashMap<(String, i32), Since>) {
        let mut a = self.assigned.lock().unwrap();
        a.assigned_once = true;
        self.joined.store(true, Ordering::Relaxed);
        let mut parts = Vec::new();
        for e in tpl.elements() {
            let key = (e.topic().to_owned(), e.partition());
            let topic: Arc<str> = Arc::from(e.topic());
            let map = a.by_topic.entry(key.0.clone()).or_default();
            if map.contains_key(&key.1) {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let start = starts.get(&key).copied();
            let state =
                Arc::new(PartitionState::new(start, since.get(&key).cloned().unwrap_or(Since { replay_until: -1, ..Since::default() })));
            let task = (self.spawn)(topic.clone(), key.1, rx, state.clone());
            map.insert(key.1, Entry { topic, tx, state, task, stored: -1, paused: false, start, target: None });
            parts.push(key);
        }
        tracing::info!(event = "assigned", partitions = %fmt_parts(&parts), "partitions assigned");
    }

    fn on_revoked(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let parts: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let entries = {
            let mut a = self.assigned.lock().unwrap();
            parts.iter().filter_map(|(t, p)| a.by_topic.get_mut(t).and_then(|m| m.remove(p)).map(|e| (*p, e))).collect::<Vec<_>>()
        };
        if !entries.is_empty() {
            tracing::info!(event = "revoked", partitions = %fmt_parts(&parts), "partitions revoked: draining");
        }
        self.drain_and_commit(consumer, entries);
    }

    /// Close the workers' inputs, wait for their in-flight batches, then store
    /// and synchronously commit their offsets.
    fn drain_and_commit(&self, consumer: &BaseConsumer<Self>, entries: Vec<(i32, Entry)>) {
        if entries.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.drain_timeout;
        let mut tpl = TopicPartitionList::new();
        // Every worker at once: finish the batch in flight, leave the queue.
        let entries: Vec<_> = entries
            .into_iter()
            .map(|(p, e)| {
                e.state.released.store(true, Ordering::Release);
                drop(e.tx);
                (p, e.topic, e.state, e.task)
            })
            .collect();
        for (p, topic, state, mut task) in entries {
            let left = deadline.saturating_duration_since(Instant::now());
            let finished = self.runtime.block_on(async { tokio::time::timeout(left, &mut task).await.is_ok() });
            if !finished {
                tracing::warn!(topic = %topic, partition = p, "drain timeout: in-flight batch abandoned (it will be replayed)");
                task.abort();
            }
            let acked = state.acked.load(Ordering::Acquire);
            if acked >= 0 {
                let _ = tpl.add_partition_offset(&topic, p, Offset::Offset(acked));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.store_offsets(&tpl) {
                tracing::debug!("store_offsets on drain: {e}");
            }
            // A commit can fail while the group coordinator moves (a broker
            // restart): retry within the drain deadline. If it still fails, the
            // offsets stay stored and MongoDB's progress covers them.
            let mut attempt = 0;
            loop {
                match consumer.commit(&tpl, CommitMode::Sync) {
                    Ok(()) => {
                        tracing::info!(offsets = %fmt_tpl(&tpl), "committed");
                        break;
                    }
                    Err(e) if attempt < 5 && Instant::now() + Duration::from_millis(500) < deadline => {
                        attempt += 1;
                        tracing::warn!(attempt, "synchronous commit on drain failed (retrying): {e}");
                        std::thread::sleep(Duration::from_millis(200 * attempt));
                    }
                    Err(e) => {
                        tracing::warn!("synchronous commit on drain failed: {e}; MongoDB's stored progress still covers these offsets");
                        break;
                    }
                }
            }
        }
    }
}

fn fmt_parts(parts: &[(String, i32)]) -> String {
    let mut v: Vec<String> = parts.iter().map(|(t, p)| format!("{t}:{p}")).collect();
    v.sort();
    v.join(",")
}

fn fmt_tpl(tpl: &TopicPartitionList) -> String {
    let mut v: Vec<String> =
        tpl.elements().iter().map(|e| format!("{}:{}@{}", e.topic(), e.partition(), e.offset().to_raw().unwrap_or(-1))).collect();
    v.sort();
    v.join(",")
}

/// Check that the brokers answer within `timeout` (a metadata request), with the
/// configured connection and security options, and that the topics exist by
/// then (a producer started at the same moment may still be creating them): a
/// misspelled topic is an error at start, not a host that waits forever.
pub fn check_reachable(cfg: &KafkaConfig, timeout: Duration) -> Result<(), SourceError> {
    let probe: BaseConsumer = cfg.client_config().create().map_err(|e| SourceError::Create(redact_kafka_error(e)))?;
    let started = Instant::now();
    loop {
        let md = probe.fetch_metadata(None, timeout).map_err(|cause| SourceError::Unreachable {
            brokers: cfg.brokers.clone(),
            timeout,
            cause,
        })?;
        let missing: Vec<String> = cfg
            .topics
            .iter()
            .filter(|t| !md.topics().iter().any(|m| m.name() == t.as_str() && !m.partitions().is_empty()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(SourceError::MissingTopics { topics: missing, brokers: cfg.brokers.clone(), timeout });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The consumer and its settings, ready to run on its own thread.
pub struct Source {
    consumer: BaseConsumer<SourceContext>,
    max_queued: usize,
    max_queued_bytes: usize,
    until_caught_up: bool,
    reset: OffsetReset,
    /// When the broker was last asked for watermarks ([`Source::housekeeping`]).
    last_watermarks: Option<Instant>,
}

/// How a [`Source::run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SourceEnd {
    Stopped,
    CaughtUp,
    /// The consumer cannot go on: the reason.
    Failed(String),
}

impl Source {
    pub fn new(
        cfg: &KafkaConfig,
        spawn: SpawnWorker,
        runtime: tokio::runtime::Handle,
        settings: SourceSettings,
        stored: StoredLookup,
    ) -> Result<Source, SourceError> {
        let SourceSettings { drain_timeout, max_queued, max_queued_bytes, until_caught_up, connect_timeout, joined, commits } = settings;
        let cc = consumer_config(cfg);
        let start_at_end = cfg.auto_offset_reset == OffsetReset::Latest;
        let ctx = SourceContext {
            assigned: Mutex::new(Assigned::default()),
            joined,
            commits,
            spawn,
            runtime,
            drain_timeout,
            stored,
            start_at_end,
        };
        let consumer: BaseConsumer<SourceContext> = cc.create_with_context(ctx).map_err(|e| SourceError::Create(redact_kafka_error(e)))?;
        consumer.fetch_metadata(None, connect_timeout).map_err(|cause| SourceError::Unreachable {
            brokers: cfg.brokers.clone(),
            timeout: connect_timeout,
            cause,
        })?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|cause| SourceError::Subscribe { topics: cfg.topics.clone(), cause })?;
        Ok(Source { consumer, max_queued, max_queued_bytes, until_caught_up, reset: cfg.auto_offset_reset, last_watermarks: None })
    }
}

/// The consumer's librdkafka settings: Sluice's, then `kafka.options`, then
/// the one Sluice's guarantees need. `sluice check` validates them offline.
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        // A resumed partition is fetched again without waiting out a long poll.
        .set("fetch.wait.max.ms", "100")
        // High watermarks for the lag metric.
        .set("statistics.interval.ms", "1000")
        .set("client.id", "sluice")
        .set("auto.offset.reset", cfg.auto_offset_reset.as_str())
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.partition.eof", "false");
    for (k, v) in &cfg.options {
        cc.set(k, v);
    }
    cc.set("enable.auto.offset.store", "false");
    cc
}

impl Source {
    /// Poll until `stop` is set (or, with `until_caught_up`, until every assigned
    /// partition is written up to the end offset seen at assignment); then drain
    /// the workers and commit.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> SourceEnd {
        let mut last_housekeeping = Instant::now();
        let mut poll_errors = 0u64;
        let mut since_clock = 0u32;
        let end = loop {
            if stop.load(Ordering::Relaxed) {
                break SourceEnd::Stopped;
            }
            let idle = match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(msg)) => {
                    self.dispatch(&msg);
                    false
                }
                Some(Err(e)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AutoOffsetReset) => {
                    // `auto_offset_reset = "error"`: a partition without an offset is the operator's to decide.
                    break SourceEnd::Failed(format!(
                        "{e} — a partition has no committed offset and kafka.auto_offset_reset = \"error\": set its offsets (`sluice offsets set`) or choose earliest/latest"
                    ));
                }
                Some(Err(e)) => {
                    poll_errors += 1;
                    if poll_errors.is_power_of_two() {
                        tracing::warn!(count = poll_errors, "Kafka consumer error: {e}");
                    }
                    true
                }
                None => true,
            };
            // Reading the clock for every message costs: look every 64 of them, or when idle.
            since_clock += 1;
            if (idle || since_clock >= 64) && {
                since_clock = 0;
                last_housekeeping.elapsed() >= Duration::from_millis(20)
            } {
                last_housekeeping = Instant::now();
                if self.housekeeping() {
                    tracing::info!("every assigned partition is caught up");
                    break SourceEnd::CaughtUp;
                }
            }
        };
        let entries: Vec<(i32, Entry)> = {
            let mut a = self.consumer.context().assigned.lock().unwrap();
            a.by_topic.drain().flat_map(|(_, m)| m.into_iter()).collect()
        };
        self.consumer.context().drain_and_commit(&self.consumer, entries);
        self.consumer.unsubscribe();
        end
    }

    fn dispatch(&self, msg: &rdkafka::message::BorrowedMessage<'_>) {
        let mut a = self.consumer.context().assigned.lock().unwrap();
        let Some(entry) = a.by_topic.get_mut(msg.topic()).and_then(|m| m.get_mut(&msg.partition())) else {
            tracing::error!(
                topic = msg.topic(),
                partition = msg.partition(),
                "record from a partition that is not assigned: ignored (not committed)"
            );
            return;
        };
        let headers = msg.headers().map(crate::kafka::kafka_raw::read_headers).unwrap_or_default();
        let record = SourceRecord {
            topic: entry.topic.clone(),
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
        };
        let size = PartitionState::size_of(&record);
        let queued = entry.state.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let queued_bytes = entry.state.queued_bytes.fetch_add(size, Ordering::AcqRel) + size;
        if entry.tx.send(record).is_err() {
            // The worker ended (fatal error); the run is stopping. Not committed.
            entry.state.queued.fetch_sub(1, Ordering::AcqRel);
            entry.state.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return;
        }
        if (queued >= self.max_queued || queued_bytes >= self.max_queued_bytes) && !entry.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(msg.topic(), msg.partition());
            match self.consumer.pause(&tpl) {
                Ok(()) => {
                    entry.paused = true;
                    tracing::debug!(topic = msg.topic(), partition = msg.partition(), queued, queued_bytes, "paused: queue full");
                }
                Err(e) => tracing::warn!("cannot pause {}:{}: {e}", msg.topic(), msg.partition()),
            }
        }
    }

    /// Store written offsets, resume drained partitions, and report whether
    /// everything assigned is caught up (only with `until_caught_up`).
    fn housekeeping(&mut self) -> bool {
        let mut store = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        let mut need_targets = Vec::new();
        let mut paused = Vec::new();
        // Asking the broker blocks this thread: at most once a second.
        let watermarks_due = self.last_watermarks.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let mut all_caught_up;
        {
            let mut a = self.consumer.context().assigned.lock().unwrap();
            all_caught_up = a.assigned_once;
            for (topic, parts) in a.by_topic.iter_mut() {
                for (&p, e) in parts.iter_mut() {
                    let acked = e.state.acked.load(Ordering::Acquire);
                    if acked >= 0 && acked != e.stored {
                        let _ = store.add_partition_offset(topic, p, Offset::Offset(acked));
                        e.stored = acked;
                    }
                    // Resumed low: librdkafka drops what it prefetched for a
                    // partition when it is paused, so every pause costs a
                    // fetch again; a wide gap makes them rare.
                    let drained = e.state.queued.load(Ordering::Acquire) <= self.max_queued / 4
                        && e.state.queued_bytes.load(Ordering::Acquire) <= self.max_queued_bytes / 4;
                    if e.paused && drained {
                        resume.add_partition(topic, p);
                        e.paused = false;
                    } else if e.paused && watermarks_due {
                        paused.push((topic.clone(), p));
                    }
                    if watermarks_due && e.target.is_none() && (self.until_caught_up || e.start.is_none()) {
                        need_targets.push((topic.clone(), p));
                    }
                    if self.until_caught_up {
                        match (e.start, e.target) {
                            (Some(start), Some(target)) => all_caught_up &= start.max(acked) >= target,
                            _ => all_caught_up = false,
                        }
                    }
                }
            }
        }
        if store.count() > 0
            && let Err(e) = self.consumer.store_offsets(&store)
        {
            tracing::debug!("store_offsets: {e}");
        }
        if resume.count() > 0 {
            match self.consumer.resume(&resume) {
                Ok(()) => tracing::debug!(partitions = %fmt_tpl(&resume), "resumed"),
                Err(e) => tracing::warn!("cannot resume: {e}"),
            }
        }
        if !need_targets.is_empty() || !paused.is_empty() {
            self.last_watermarks = Some(Instant::now());
            // However many partitions, and even with a leader away: polling
            // (and so dispatch and rebalances) stops for at most this long.
            let deadline = Instant::now() + WATERMARKS_BUDGET;
            self.resolve_targets(need_targets, deadline);
            self.refresh_high_watermarks(paused, deadline);
        }
        self.until_caught_up && all_caught_up
    }

    /// librdkafka learns a partition's high watermark from its fetches, and a
    /// paused partition is not fetched: ask the broker, so that the lag keeps
    /// counting new records while a slow or failing sink holds the partition.
    fn refresh_high_watermarks(&self, parts: Vec<(String, i32)>, deadline: Instant) {
        let mut fresh = Vec::new();
        for (t, p) in parts {
            let Some(timeout) = left_until(deadline) else { break };
            match self.consumer.fetch_watermarks(&t, p, timeout) {
                Ok((_, high)) => fresh.push((t, p, high)),
                Err(e) => tracing::debug!("cannot read the high watermark of {t}:{p}: {e}"),
            }
        }
        let a = self.consumer.context().assigned.lock().unwrap();
        for (t, p, high) in fresh {
            if let Some(e) = a.by_topic.get(&t).and_then(|m| m.get(&p)) {
                e.state.high_watermark.fetch_max(high, Ordering::Relaxed);
            }
        }
    }

    /// The end offset each new partition must reach (and where it starts when
    /// neither Kafka nor MongoDB had an offset for it).
    fn resolve_targets(&self, parts: Vec<(String, i32)>, deadline: Instant) {
        let mut resolved = Vec::new();
        for (t, p) in parts {
            // Those not asked this time are asked the next.
            let Some(timeout) = left_until(deadline) else { break };
            match self.consumer.fetch_watermarks(&t, p, timeout) {
                Ok((low, high)) => resolved.push((t, p, low, high)),
                Err(e) => tracing::warn!("cannot read watermarks of {t}:{p} (will retry): {e}"),
            }
        }
        let mut a = self.consumer.context().assigned.lock().unwrap();
        for (t, p, low, high) in resolved {
            if let Some(e) = a.by_topic.get_mut(&t).and_then(|m| m.get_mut(&p)) {
                let origin = if self.reset == OffsetReset::Latest { high } else { low };
                if e.start.is_none() {
                    e.state.origin.store(origin, Ordering::Relaxed);
                }
                let start = *e.start.get_or_insert(origin);
                tracing::debug!(topic = %t, partition = p, start, end = high, "catch-up target");
                e.target = Some(high);
            }
        }
    }
}

/// How long the poll thread may spend asking the broker for watermarks in one
/// round (once a second at most).
const WATERMARKS_BUDGET: Duration = Duration::from_secs(1);

fn left_until(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS and SASL (PLAIN, SCRAM) settings pass through to librdkafka, which is
    /// built with OpenSSL; creating a client validates them without connecting.
    #[test]
    fn tls_and_sasl_options_are_accepted() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let c: Result<BaseConsumer, _> = ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .set("group.id", "g")
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", "u")
                .set("sasl.password", "p")
                .set("ssl.endpoint.identification.algorithm", "https")
                .create();
            assert!(c.is_ok(), "{mechanism}: {:?}", c.err());
        }
    }
}
