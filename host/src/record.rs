//! The bottom layer: a record as consumed, the names derived from it, and the
//! state of an assigned partition that its consumer and its worker share; used
//! by every layer above (Kafka, plugins, MongoDB, the pipeline, the tools).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

/// A header: key and value as bytes (a client may send keys that are not UTF-8).
pub type Header = (Vec<u8>, Option<Vec<u8>>);

/// A record as consumed, owned.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Keys as bytes ([`crate::kafka::kafka_raw`] reads and writes them).
    pub headers: Vec<Header>,
}

/// `topic:partition:offset:index` — the default `_id` of the index-th output of a record.
pub fn derived_id(rec: &SourceRecord, index: usize) -> String {
    let mut id = String::new();
    write_derived_id(&mut id, rec, index);
    id
}

/// [`derived_id`] into a buffer (cleared first): the planner reuses one per batch.
pub fn write_derived_id(buf: &mut String, rec: &SourceRecord, index: usize) {
    use std::fmt::Write as _;
    buf.clear();
    let _ = write!(buf, "{}:{}:{}:{index}", rec.topic, rec.partition, rec.offset);
}

/// The parts of a [`derived_id`]: topic, partition, offset, index (the topic may contain `:`).
pub fn parse_derived_id(id: &str) -> Option<(&str, i32, i64, usize)> {
    let mut parts = id.rsplitn(4, ':');
    let index = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    Some((parts.next()?, partition, offset, index))
}

/// Shared between the consumer thread and a partition's worker.
#[derive(Debug)]
pub struct PartitionState {
    /// Next offset to consume once everything before it is written: what may be
    /// committed. -1 until the worker wrote its first batch.
    pub acked: AtomicI64,
    /// Records handed to the worker and not yet written (or dropped).
    pub queued: AtomicUsize,
    /// Their size ([`PartitionState::size_of`]).
    pub queued_bytes: AtomicUsize,
    /// The broker's high watermark, from librdkafka's statistics (asked of the
    /// broker while the partition is paused: librdkafka does not fetch it then,
    /// so its statistics stand still); -1 until known.
    pub high_watermark: AtomicI64,
    /// Where consumption began when neither Kafka nor MongoDB had an offset (the
    /// low or high watermark, by `auto_offset_reset`); -1 until known or when
    /// there was an offset. With `acked` still -1, the lag counts from here.
    pub origin: AtomicI64,
    /// Set when the partition is revoked or the host stops: the worker finishes
    /// the batch in flight and leaves the rest of its queue (uncommitted, it is
    /// consumed again by whoever gets the partition), so a deep queue does not
    /// slow a rebalance.
    pub released: AtomicBool,
    /// Records before this offset may have been written by an earlier owner
    /// (MongoDB's progress `intent`): the worker cleans up after their replay.
    pub replay_until: i64,
    /// The topic's id (incarnation), when the cluster told it.
    pub topic_id: Option<String>,
    /// The stored progress belonged to an earlier incarnation of the topic:
    /// the worker starts it over ([`crate::mongo::progress::Progress::renew`]).
    pub renewed: bool,
    /// The chain versions that may have written below `replay_until` (empty: unknown).
    pub window_chains: Vec<String>,
}

impl PartitionState {
    /// `start`: where consumption starts, already written (the later of Kafka's
    /// committed offset and MongoDB's progress). Committing it again is harmless,
    /// and it brings Kafka's offset up to MongoDB's when a commit was lost.
    pub fn new(start: Option<i64>, since: Since) -> Self {
        PartitionState {
            replay_until: since.replay_until,
            topic_id: since.topic_id,
            renewed: since.renewed,
            window_chains: since.chains,
            acked: AtomicI64::new(start.unwrap_or(-1)),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            high_watermark: AtomicI64::new(-1),
            origin: AtomicI64::new(-1),
            released: AtomicBool::new(false),
        }
    }

    /// Records not yet written: the high watermark minus the next offset to
    /// write (`None` until both are known).
    pub fn lag(&self) -> Option<u64> {
        let high = self.high_watermark.load(Ordering::Relaxed);
        let next = match self.acked.load(Ordering::Relaxed) {
            -1 => self.origin.load(Ordering::Relaxed),
            acked => acked,
        };
        (high >= 0 && next >= 0).then(|| (high - next).max(0) as u64)
    }

    /// The size a record counts for in `queued_bytes`: its key, value and
    /// headers, and [`RECORD_OVERHEAD`] for the record itself.
    pub fn size_of(record: &SourceRecord) -> usize {
        let headers: usize = record.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
        RECORD_OVERHEAD + record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len) + headers
    }
}

/// What a partition inherits from the stored progress besides its start.
#[derive(Debug, Clone, Default)]
pub struct Since {
    pub replay_until: i64,
    pub topic_id: Option<String>,
    pub renewed: bool,
    pub chains: Vec<String>,
}

/// What a queued record costs beyond its bytes (the struct, the allocations
/// behind it), so that the byte limit bounds memory also for tiny records.
pub const RECORD_OVERHEAD: usize = 128;

/// What a plugin output does to MongoDB (the contract's operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    /// Replace by `_id`, inserting when absent.
    Upsert,
    /// Delete by `_id`.
    Delete,
    /// Update one document matching a filter with update operators (contract 0.3.0).
    Update,
    /// Replace one document matching a filter (contract 0.3.0).
    Replace,
    /// Delete one document matching a filter (contract 0.3.0).
    DeleteWhere,
}

impl Op {
    /// Its name in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Update => "update",
            Op::Replace => "replace",
            Op::DeleteWhere => "delete-where",
        }
    }

    /// It names its document by a filter.
    pub fn has_filter(self) -> bool {
        matches!(self, Op::Update | Op::Replace | Op::DeleteWhere)
    }
}

/// Why a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The plugin that failed it, if a plugin did.
    pub plugin: Option<String>,
    /// That plugin's version (content hash).
    pub plugin_version: Option<String>,
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin returned an error for the record.
    PluginError,
    /// The plugin trapped on the record.
    Trap,
    Timeout,
    Memory,
    /// The record cannot be processed as it is (no value, not JSON, not an object).
    InvalidInput,
    /// A plugin output is not a storable document.
    InvalidOutput,
    /// A plugin's outputs for one record exceed `limits.max_output_bytes`.
    OutputTooLarge,
    /// MongoDB refused the document.
    SinkRejected,
}

impl FailureKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [FailureKind; 8] = [
        FailureKind::PluginError,
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::InvalidInput,
        FailureKind::InvalidOutput,
        FailureKind::OutputTooLarge,
        FailureKind::SinkRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::PluginError => "plugin-error",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::InvalidInput => "invalid-input",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::OutputTooLarge => "output-too-large",
            FailureKind::SinkRejected => "sink-rejected",
        }
    }
}

/// One partition's stored progress (kept in MongoDB by [`crate::mongo::progress`], read at
/// assignment by the Kafka layer through a lookup the pipeline gives it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Everything before it is written.
    pub next_offset: Option<i64>,
    /// No write went past it.
    pub intent: Option<i64>,
    /// The Kafka topic id (incarnation) these offsets belong to; absent in
    /// documents of earlier releases.
    pub topic_id: Option<String>,
    /// The chain versions that may have written below the intent (empty: unknown).
    pub chains: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_name_the_source_coordinates() {
        let rec = SourceRecord {
            topic: Arc::from("testnum"),
            partition: 2,
            offset: 41,
            timestamp: None,
            key: None,
            value: None,
            headers: vec![],
        };
        assert_eq!(derived_id(&rec, 0), "testnum:2:41:0");
        assert_eq!(derived_id(&rec, 3), "testnum:2:41:3");
        assert_eq!(parse_derived_id("a:b:2:41:3"), Some(("a:b", 2, 41, 3)));
        assert_eq!(parse_derived_id("testnum:2:x:3"), None);
        assert_eq!(parse_derived_id("2:41:3"), None);
    }
}
