//! librdkafka's side of a rebalance, as a thin adapter: on assignment, start
//! each partition where the later of Kafka's committed offset and the stored
//! progress (a lookup the pipeline injects) says, and start its worker; on
//! revocation, release the workers, wait on each one's rendezvous until its batch
//! in flight is written (up to the drain timeout), then store and synchronously
//! commit their offsets before librdkafka lets the partitions go.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, error::KafkaError};
use tokio::sync::mpsc;

use crate::kafka::source::{SpawnWorker, StoredLookup, WorkerHandle};
use crate::record::{PartitionState, Since, SourceRecord, Stored};
use crate::telemetry::CommitCounts;

pub(super) struct Entry {
    pub(super) topic: Arc<str>,
    tx: mpsc::UnboundedSender<SourceRecord>,
    pub(super) state: Arc<PartitionState>,
    worker: WorkerHandle,
    /// The offset last stored with librdkafka.
    pub(super) stored: i64,
    pub(super) paused: bool,
    /// Where consumption started and the end offset seen then (caught-up, and
    /// the lag's origin when nothing was committed).
    pub(super) start: Option<i64>,
    pub(super) target: Option<i64>,
}

impl Entry {
    /// Queue `record` for the worker; `false` when the worker has ended.
    pub(super) fn send(&self, record: SourceRecord) -> bool {
        self.tx.send(record).is_ok()
    }
}

#[derive(Default)]
pub(super) struct Assigned {
    pub(super) by_topic: HashMap<String, HashMap<i32, Entry>>,
    /// Set after the first assignment (possibly empty) arrived.
    pub(super) assigned_once: bool,
}

pub struct SourceContext {
    pub(super) assigned: Mutex<Assigned>,
    pub(super) joined: Arc<AtomicBool>,
    pub(super) commits: Arc<CommitCounts>,
    pub(super) spawn: SpawnWorker,
    pub(super) drain_timeout: Duration,
    pub(super) stored: StoredLookup,
    /// `auto_offset_reset = "latest"`: a partition with no offset in either store
    /// starts at the high watermark read at assignment, recorded as its start.
    pub(super) start_at_end: bool,
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
        let since = inherited(&parts, &ids, &mut stored);
        for key in parts {
            let kafka = match committed.get(&key) {
                Some(Offset::Offset(o)) => Some(*o),
                _ => None,
            };
            let mongo = stored.get(&key).and_then(|s| s.next_offset);
            if let Some(start) = self.start_of(consumer, tpl, &key, kafka, mongo) {
                starts.insert(key, start);
            }
        }
        (starts, since)
    }

    /// Where one partition starts: the later of Kafka's committed offset and the
    /// stored progress (set in `tpl` when it is the stored one); with neither, the
    /// end under `auto_offset_reset = "latest"`, else librdkafka's reset (`None`).
    fn start_of(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        key: &(String, i32),
        kafka: Option<i64>,
        mongo: Option<i64>,
    ) -> Option<i64> {
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
            return Some(start);
        }
        if self.start_at_end {
            // Left to librdkafka, "latest" is resolved anew by every run until a record of the
            // partition is written: records sent between two runs would be skipped. Resolved
            // here, the start is stored (and committed) like any written offset.
            match consumer.fetch_watermarks(&key.0, key.1, Duration::from_secs(5)) {
                Ok((_, high)) => match tpl.set_partition_offset(&key.0, key.1, Offset::Offset(high)) {
                    Ok(()) => {
                        tracing::info!(topic = %key.0, partition = key.1, offset = high, "no offset stored: starting at the end (auto_offset_reset = \"latest\")");
                        return Some(high);
                    }
                    Err(e) => tracing::warn!("cannot set the start offset of {}:{}: {e}", key.0, key.1),
                },
                Err(e) => {
                    tracing::warn!(topic = %key.0, partition = key.1, "cannot read the end offset (librdkafka resolves \"latest\" itself): {e}")
                }
            }
        }
        None
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
            let worker = (self.spawn)(topic.clone(), key.1, rx, state.clone());
            map.insert(key.1, Entry { topic, tx, state, worker, stored: -1, paused: false, start, target: None });
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
    pub(super) fn drain_and_commit(&self, consumer: &BaseConsumer<Self>, entries: Vec<(i32, Entry)>) {
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
                (p, e.topic, e.state, e.worker)
            })
            .collect();
        for (p, topic, state, worker) in entries {
            let left = deadline.saturating_duration_since(Instant::now());
            // The rendezvous: the worker's end (its batch in flight written, or left) disconnects it.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = worker.finished.recv_timeout(left) {
                tracing::warn!(topic = %topic, partition = p, "drain timeout: in-flight batch abandoned (it will be replayed)");
                (worker.abort)();
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

/// What each partition inherits from its stored progress: where replays end
/// (the `intent`), the topic's id, and whether the progress belonged to an
/// earlier incarnation of the topic (then it is removed from `stored`).
fn inherited(
    parts: &[(String, i32)],
    ids: &HashMap<String, String>,
    stored: &mut HashMap<(String, i32), Stored>,
) -> HashMap<(String, i32), Since> {
    let mut since: HashMap<(String, i32), Since> = HashMap::new();
    for key in parts {
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
    since
}

fn fmt_parts(parts: &[(String, i32)]) -> String {
    let mut v: Vec<String> = parts.iter().map(|(t, p)| format!("{t}:{p}")).collect();
    v.sort();
    v.join(",")
}

pub(super) fn fmt_tpl(tpl: &TopicPartitionList) -> String {
    let mut v: Vec<String> =
        tpl.elements().iter().map(|e| format!("{}:{}@{}", e.topic(), e.partition(), e.offset().to_raw().unwrap_or(-1))).collect();
    v.sort();
    v.join(",")
}
