//! The Kafka side: one consumer on a dedicated thread.
//!
//! The thread polls, hands each record to its partition's worker (a channel per
//! partition), and between polls does the bookkeeping that must happen on the
//! consumer: store the offsets workers report as written (`enable.auto.offset.store`
//! is off, so librdkafka commits only what MongoDB has acknowledged), pause a
//! partition whose queue is full and resume it when drained, and tell whether
//! every partition has caught up. Rebalances are handled in [`super::rebalance`];
//! on stop the thread drains and commits every partition the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::{KafkaConfig, OffsetReset, redact_kafka_error};
pub use crate::kafka::rebalance::SourceContext;
use crate::kafka::rebalance::{Assigned, Entry, fmt_tpl};
use crate::record::{PartitionState, SourceRecord, Stored};
use crate::telemetry::CommitCounts;

/// Each partition's stored progress, asked at every assignment (on librdkafka's
/// rebalance callback, so it blocks): the pipeline reads it from MongoDB.
pub type StoredLookup = Arc<dyn Fn(&[(String, i32)]) -> Result<HashMap<(String, i32), Stored>, String> + Send + Sync>;

/// Starts a worker for a newly assigned partition: it reads the partition's
/// records from the receiver until the sender is dropped or `released` is set.
pub type SpawnWorker = Arc<dyn Fn(Arc<str>, i32, mpsc::UnboundedReceiver<SourceRecord>, Arc<PartitionState>) -> WorkerHandle + Send + Sync>;

/// A running worker as the consumer sees it. The rebalance callback, which
/// must not return before a revoked partition's batch in flight is written,
/// waits on `finished`: its sender lives as long as the worker does.
pub struct WorkerHandle {
    pub finished: std::sync::mpsc::Receiver<()>,
    /// Stops the worker (its batch in flight is replayed by the next owner).
    pub abort: Box<dyn FnOnce() + Send>,
}

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
    /// Set once the group assigned this consumer its partitions (possibly none).
    pub joined: Arc<AtomicBool>,
    pub commits: Arc<CommitCounts>,
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
    pub fn new(cfg: &KafkaConfig, spawn: SpawnWorker, settings: SourceSettings, stored: StoredLookup) -> Result<Source, SourceError> {
        let SourceSettings { drain_timeout, max_queued, max_queued_bytes, until_caught_up, joined, commits } = settings;
        let cc = consumer_config(cfg);
        let start_at_end = cfg.auto_offset_reset == OffsetReset::Latest;
        let ctx = SourceContext { assigned: Mutex::new(Assigned::default()), joined, commits, spawn, drain_timeout, stored, start_at_end };
        let consumer: BaseConsumer<SourceContext> = cc.create_with_context(ctx).map_err(|e| SourceError::Create(redact_kafka_error(e)))?;
        // The brokers answered `check_reachable` already: subscribing needs no second probe.
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
        if !entry.send(record) {
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
