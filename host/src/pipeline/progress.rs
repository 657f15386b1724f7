//! What a worker records in MongoDB's progress store beside its writes: how far
//! it got ([`ProgressSaver`]), how far it may write before saying so again
//! ([`Intent`]), and, after replaying records an earlier owner wrote, the
//! removal of what the running version no longer makes ([`remove_stale`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::pipeline::plan::Plan;
use crate::pipeline::retry::Retry;
use crate::pipeline::worker::WorkerCtx;
use crate::record::{PartitionState, SourceRecord, parse_derived_id};

/// The progress `intent`: saved ahead (by `margin` records) before a batch is
/// written past it, so that a later owner knows which records it may replay.
pub(super) struct Intent {
    pub saved: i64,
    margin: i64,
    topic_id: Option<String>,
    /// The chain version last added to the intent's versions (`None`: none yet by this worker).
    chain: Option<String>,
    /// Whether the window this worker inherited is empty (then its first save names one version only).
    inherited_empty: bool,
}

impl Intent {
    /// The intent a new worker of the partition starts from.
    pub(super) fn inherited(state: &PartitionState, batch_max_records: usize) -> Intent {
        Intent {
            saved: state.replay_until,
            margin: (batch_max_records as i64 * 20).max(10_000),
            topic_id: state.topic_id.clone(),
            chain: None,
            inherited_empty: state.replay_until < 0 || state.acked.load(Ordering::Acquire) >= state.replay_until,
        }
    }

    /// Make sure the saved intent covers writes up to `end` by `chain` (retried until MongoDB takes it).
    pub(super) async fn cover(&mut self, ctx: &WorkerCtx, topic: &str, partition: i32, end: i64, chain: &str) {
        let new_chain = self.chain.as_deref() != Some(chain);
        if end <= self.saved && !new_chain {
            return;
        }
        let fresh = self.chain.is_none() && self.inherited_empty;
        let target = (end + self.margin).max(self.saved);
        let at = format!("{topic}:{partition}");
        let retry = Retry { gauge: Some(&ctx.health.sink_failing), ..ctx.retry("saving the write intent to MongoDB", &at) };
        let topic_id = self.topic_id.as_deref();
        retry.run(|| ctx.progress.save_intent(topic, partition, target, topic_id, chain, fresh)).await;
        self.saved = target;
        self.chain = Some(chain.to_owned());
    }
}

/// When a worker records its progress in MongoDB: at most once per
/// `pipeline.progress_interval`, when idle after that, and when the partition is
/// released. Saving is best effort: Kafka's committed offset covers the same
/// records, and a failed save is tried again at the next occasion.
pub(super) struct ProgressSaver {
    pub topic_id: Option<String>,
    interval: std::time::Duration,
    last: tokio::time::Instant,
    /// Written but not yet saved: the next offset.
    pub unsaved: Option<i64>,
}

impl ProgressSaver {
    pub(super) fn new(interval: std::time::Duration) -> Self {
        ProgressSaver { topic_id: None, interval, last: tokio::time::Instant::now(), unsaved: None }
    }

    pub(super) fn written(&mut self, next_offset: i64) {
        self.unsaved = Some(next_offset);
    }

    pub(super) fn pending(&self) -> bool {
        self.unsaved.is_some()
    }

    pub(super) fn is_due(&self) -> bool {
        self.pending() && self.last.elapsed() >= self.interval
    }

    pub(super) async fn due(&self) {
        tokio::time::sleep_until(self.last + self.interval).await
    }

    pub(super) async fn flush(&mut self, ctx: &WorkerCtx, topic: &str, partition: i32) {
        let Some(next_offset) = self.unsaved else { return };
        self.last = tokio::time::Instant::now();
        match ctx.progress.save(topic, partition, next_offset, self.topic_id.as_deref()).await {
            Ok(()) => self.unsaved = None,
            Err(e) => tracing::warn!(topic, partition, "saving progress to MongoDB failed (tried again later): {e}"),
        }
    }
}

/// For each record of `records` before `until`: the derived-id indexes this
/// batch's plan writes to the configured collection (the rest are stale).
pub(super) fn kept_ids(planned: &Plan, records: &[SourceRecord], until: i64) -> BTreeMap<i64, Vec<usize>> {
    let mut kept: BTreeMap<i64, Vec<usize>> = records.iter().filter(|r| r.offset < until).map(|r| (r.offset, Vec::new())).collect();
    for (op, &i) in planned.ops.iter().zip(&planned.op_source) {
        if !op.derived_id || op.collection.is_some() {
            continue;
        }
        if let (Some(k), Ok(id)) = (kept.get_mut(&records[i].offset), op.doc.get_str("_id"))
            && let Some((_, _, _, index)) = parse_derived_id(id)
        {
            k.push(index);
        }
    }
    kept
}

/// After a replay: delete the configured collection's derived-id documents of
/// these records that the running version no longer makes (an earlier
/// version's fan-out), so each record's documents come from one version.
/// Collections a plugin routed to are not searched.
pub(super) async fn remove_stale(ctx: &WorkerCtx, topic: &str, partition: i32, kept: &BTreeMap<i64, Vec<usize>>) {
    // `_id`s are strings: offsets of one decimal length form one range.
    let mut by_len: BTreeMap<usize, (i64, i64)> = Default::default();
    for &o in kept.keys() {
        let e = by_len.entry(o.to_string().len()).or_insert((o, o));
        e.0 = e.0.min(o);
        e.1 = e.1.max(o);
    }
    let at = format!("{topic}:{partition}");
    let retry = ctx.retry("removing stale documents after a replay", &at);
    let is_stale = |id: &String| {
        parse_derived_id(id).is_some_and(|(t, p, o, k)| t == topic && p == partition && kept.get(&o).is_some_and(|keep| !keep.contains(&k)))
    };
    for (lo, hi) in by_len.into_values() {
        let (from, to) = (format!("{topic}:{partition}:{lo}:"), format!("{topic}:{partition}:{hi};"));
        let (removed, _) = retry
            .run(|| async {
                let stale: Vec<String> = ctx.sink.ids_between(None, &from, &to).await?.into_iter().filter(is_stale).collect();
                ctx.sink.delete_ids(None, &stale).await
            })
            .await;
        if removed > 0 {
            tracing::info!(topic, partition, offsets = %format!("{lo}..={hi}"), removed, "replayed records: removed documents the running version no longer makes");
        }
    }
}
