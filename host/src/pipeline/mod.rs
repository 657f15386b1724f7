//! Wires source, plugin chain and sink together: [`run`].
//!
//! Per assigned partition a worker task takes records from its queue in batches
//! (up to `batch_max_records`, waiting at most `batch_linger` to fill one), runs
//! them through its own instance of the plugin chain, writes the results to
//! MongoDB (retrying transient failures with capped exponential backoff and
//! jitter), and only then reports the batch's next offset as committable. Failed
//! records are decided in one place, `decide`, by the `on_error` policy
//! (dead-letter, skip or stop).
//!
//! Each worker follows the running chain generation ([`HotSwap`]): when a new one
//! is published it builds its instances of it, and the next batch (never a batch
//! in progress) runs through it.

pub mod plan;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use anyhow::Context as _;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, OnError, PipelineConfig};
use crate::kafka::dlq::DeadLetters;
use crate::kafka::source::{Source, SourceEnd, SourceSettings, SpawnWorker, StoredLookup};
use crate::mongo::progress::Progress;
use crate::mongo::sink::{Sink, SinkError};
use crate::pipeline::plan::{Plan, Target, plan, rejected};
use crate::plugin::chain::{Chain, ChainSpec};
use crate::plugin::runtime::Runtime;
use crate::plugin::swap::HotSwap;
use crate::record::PartitionState;
use crate::record::{Failure, SourceRecord, parse_derived_id};
use crate::telemetry::{Health, PartitionGauges, Stats};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Exit once every assigned partition is written up to the end offset seen
    /// when it was assigned.
    pub until_caught_up: bool,
    /// Reload the configuration's `[[plugins]]` on SIGHUP (the binary sets it;
    /// signals are process-wide, so tests leave it off).
    pub reload_on_sighup: bool,
}

/// Lists a partition in [`Stats`] while its worker runs.
struct Registered<'a> {
    stats: &'a Stats,
    key: (Arc<str>, i32),
    gauges: Arc<PartitionGauges>,
}

impl<'a> Registered<'a> {
    fn new(stats: &'a Stats, topic: Arc<str>, partition: i32, state: Arc<PartitionState>) -> Self {
        let gauges = Arc::new(PartitionGauges { state, generation: AtomicU64::new(0) });
        stats.partitions.lock().unwrap().insert((topic.clone(), partition), gauges.clone());
        Registered { stats, key: (topic, partition), gauges }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        // Only its own entry: a newer worker of the same partition may have registered since.
        let mut partitions = self.stats.partitions.lock().unwrap();
        if partitions.get(&self.key).is_some_and(|g| Arc::ptr_eq(g, &self.gauges)) {
            partitions.remove(&self.key);
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub consumed: u64,
    pub written: u64,
    pub duplicates: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub batches: u64,
    pub retries: u64,
    pub caught_up: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "consumed={} batches={} written={} duplicates={} dropped={} skipped={} dead_lettered={} retries={} caught_up={}",
            self.consumed,
            self.batches,
            self.written,
            self.duplicates,
            self.dropped,
            self.skipped,
            self.dead_lettered,
            self.retries,
            self.caught_up
        )
    }
}

/// Load the plugins, connect to MongoDB and Kafka, and process until `shutdown`
/// completes (or, with `until_caught_up`, until caught up). In-flight batches are
/// written and their offsets committed before it returns. A fatal error (a
/// failed record under `on_error = "stop"`, a plugin that cannot be
/// re-instantiated) stops the run and is returned.
pub async fn run(config: Config, options: RunOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<Summary> {
    // First of all: until a handler exists, SIGHUP's default action kills the
    // process (compiling the plugins below takes seconds). One that arrives
    // before the reload loop starts is kept and acted on then.
    let hup = match options.reload_on_sighup {
        true => Some(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("installing the SIGHUP handler")?),
        false => None,
    };
    let runtime = Arc::new(Runtime::new().context("starting the wasm runtime")?);
    let hot = Arc::new(HotSwap::start(runtime, &config)?);
    for p in &hot.current().plugins {
        tracing::info!(plugin = %p.name, version = %p.version, path = %p.path.display(), "plugin loaded");
    }
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    // Stops the admin server, the watcher and the SIGHUP listener however `run` ends.
    let _stop_background = cancel.clone().drop_guard();
    if config.admin.enabled {
        let state =
            crate::ops::admin::AdminState { hot: hot.clone(), stats: stats.clone(), health: health.clone(), token: config.admin.token.clone() };
        crate::ops::admin::serve(&config.admin, state, cancel.clone()).await?;
    }
    if config.hot_swap.watch {
        let watcher = crate::plugin::swap::spawn_watcher(hot.clone(), config.hot_swap.debounce).context("watching the plugin files")?;
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            watcher.abort();
        });
    }
    if let Some(mut hup) = hup {
        let (hot, cancel) = (hot.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration's [[plugins]]");
                        // The outcome is logged (and counted) by the reload itself.
                        let _ = hot.reload().await;
                    }
                }
            }
        });
    }
    let sink = Sink::connect(&config.mongo).await?.ignoring_field(config.pipeline.versions_field.as_deref());
    let progress = sink.progress(&config.mongo.offsets_collection, &config.kafka.group_id);
    tracing::info!(database = %config.mongo.database, collection = %config.mongo.collection, "connected to MongoDB");

    {
        let (kafka, timeout) = (config.kafka.clone(), config.kafka.connect_timeout);
        tokio::task::spawn_blocking(move || crate::kafka::source::check_reachable(&kafka, timeout)).await??;
    }
    let dlq = match config.pipeline.on_error {
        OnError::DeadLetter => {
            let d = DeadLetters::new(&config.kafka, &config.dlq).context("creating the dead-letter producer")?;
            d.ensure_topics(&config.kafka).await.context("creating the dead-letter topics")?;
            Some(d)
        }
        _ => None,
    };
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<anyhow::Error>();
    let worker_ctx = Arc::new(WorkerCtx {
        hot: hot.clone(),
        dlq_unavailable_timeout: config.dlq.unavailable_timeout,
        offsets_collection: config.mongo.offsets_collection.clone(),
        health: health.clone(),
        dlq,
        sink,
        progress: progress.clone(),
        pipeline: config.pipeline.clone(),
        stats: stats.clone(),
        fatal: fatal_tx,
    });
    let spawn: SpawnWorker = {
        let ctx = worker_ctx.clone();
        let handle = tokio::runtime::Handle::current();
        Arc::new(move |topic, partition, rx, state| {
            let ctx = ctx.clone();
            handle.spawn(async move {
                use futures::FutureExt as _;
                let (fatal, at) = (ctx.fatal.clone(), format!("{topic}:{partition}"));
                // A bug must stop the run (its records are replayed), never leave a partition unserved.
                if let Err(panic) = std::panic::AssertUnwindSafe(worker(ctx, topic, partition, rx, state)).catch_unwind().await {
                    let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                    let _ = fatal.send(anyhow::anyhow!("the worker of {at} panicked: {}", why.unwrap_or_default()));
                }
            })
        })
    };

    let kafka = config.kafka.clone();
    let settings = SourceSettings {
        drain_timeout: config.pipeline.drain_timeout,
        max_queued: config.pipeline.max_queued(),
        max_queued_bytes: config.pipeline.max_queued_bytes_per_partition,
        until_caught_up: options.until_caught_up,
        connect_timeout: config.kafka.connect_timeout,
        joined: health.joined.clone(),
        commits: stats.commits.clone(),
    };
    let handle = tokio::runtime::Handle::current();
    // Asked on librdkafka's rebalance callback, which must not return before the start offsets are known.
    let lookup: StoredLookup = {
        let (handle, progress) = (handle.clone(), progress.clone());
        Arc::new(move |parts: &[(String, i32)]| {
            match handle.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), progress.load_stored(parts)).await }) {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(e)) => Err(format!("MongoDB: {e}")),
                Err(_) => Err("reading MongoDB timed out".into()),
            }
        })
    };
    let source = tokio::task::spawn_blocking(move || Source::new(&kafka, spawn, handle, settings, lookup))
        .await
        .context("creating the consumer")??;
    tracing::info!(event = "consuming", brokers = %config.kafka.brokers, group = %config.kafka.group_id, topics = ?config.kafka.topics, "consuming");

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let source_thread = {
        let stop = stop.clone();
        std::thread::Builder::new().name("sluice-source".into()).spawn(move || {
            let end = source.run(stop);
            let _ = done_tx.send(end);
        })?
    };

    tokio::pin!(shutdown);
    let mut fatal = None;
    let mut done_rx = done_rx;
    let end = tokio::select! {
        _ = &mut shutdown => { tracing::info!("shutting down: draining in-flight batches"); None }
        Some(e) = fatal_rx.recv() => { fatal = Some(e); None }
        end = &mut done_rx => end.ok(),
    };
    health.stopping.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let end = match end {
        Some(end) => Some(end),
        None => match tokio::time::timeout(config.pipeline.shutdown_timeout, done_rx).await {
            Ok(end) => end.ok(),
            Err(_) => anyhow::bail!(
                "draining and committing took longer than pipeline.shutdown_timeout ({:?}); uncommitted records will be replayed",
                config.pipeline.shutdown_timeout
            ),
        },
    };
    let _ = tokio::task::spawn_blocking(move || source_thread.join()).await;
    drop(worker_ctx);
    if fatal.is_none() {
        fatal = fatal_rx.try_recv().ok();
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    if let Some(SourceEnd::Failed(why)) = &end {
        anyhow::bail!("{why}");
    }
    let s = &stats;
    Ok(Summary {
        consumed: s.consumed.load(Ordering::Relaxed),
        written: s.written.load(Ordering::Relaxed),
        duplicates: s.duplicates.load(Ordering::Relaxed),
        dropped: s.dropped.load(Ordering::Relaxed),
        skipped: s.skipped.load(Ordering::Relaxed),
        dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
        batches: s.batches.load(Ordering::Relaxed),
        retries: s.retries.load(Ordering::Relaxed),
        caught_up: end == Some(SourceEnd::CaughtUp),
    })
}

struct WorkerCtx {
    hot: Arc<HotSwap>,
    dlq_unavailable_timeout: std::time::Duration,
    offsets_collection: String,
    health: Arc<Health>,
    dlq: Option<DeadLetters>,
    sink: Sink,
    progress: Progress,
    pipeline: PipelineConfig,
    stats: Arc<Stats>,
    fatal: mpsc::UnboundedSender<anyhow::Error>,
}

async fn worker(
    ctx: Arc<WorkerCtx>,
    topic: Arc<str>,
    partition: i32,
    mut rx: mpsc::UnboundedReceiver<SourceRecord>,
    state: Arc<PartitionState>,
) {
    let registered = Registered::new(&ctx.stats, topic.clone(), partition, state.clone());
    let mut specs = ctx.hot.subscribe();
    let spec = specs.borrow_and_update().clone();
    // Released (revoke, shutdown): the isolation of a failed batch stops between calls.
    let cancel: Arc<dyn Fn() -> bool + Send + Sync> = {
        let state = state.clone();
        Arc::new(move || state.released.load(Ordering::Acquire))
    };
    let Some(mut chain) = build_chain(&ctx, spec, &topic, partition).await else { return };
    chain = chain.with_cancel(cancel.clone());
    // Until its first batch is written, the generation it starts with (a partition assigned again
    // after its last record, e.g. by a late rebalance, otherwise shows no generation at all).
    registered.gauges.generation.store(chain.spec().generation, Ordering::Relaxed);
    let max = ctx.pipeline.batch_max_records;
    let mut batch: Vec<SourceRecord> = Vec::with_capacity(max);
    let mut progress = ProgressSaver::new(ctx.pipeline.progress_interval);
    let mut intent = Intent {
        saved: state.replay_until,
        margin: (ctx.pipeline.batch_max_records as i64 * 20).max(10_000),
        topic_id: state.topic_id.clone(),
        chain: None,
        inherited_empty: state.replay_until < 0 || state.acked.load(Ordering::Acquire) >= state.replay_until,
    };
    progress.topic_id = state.topic_id.clone();
    if state.renewed
        && let Some(id) = &state.topic_id
    {
        // A new incarnation of the topic: its progress starts over (a failure only leaves the old one ignored again).
        if let Err(e) = ctx.progress.renew(&topic, partition, id, state.replay_until).await {
            tracing::warn!(topic = %topic, partition, "starting the progress over for the recreated topic failed: {e}");
        }
    }
    let mut failures = FailureLog::new(&topic, partition);
    // The generation that ran the last batch.
    let mut ran: Option<u64> = None;
    loop {
        batch.clear();
        // Revoked or stopping: the rest of the queue is left to the next owner.
        if state.released.load(Ordering::Acquire) {
            break;
        }
        let first = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
            // Idle: build the new generation's instances now, not when records come.
            Ok(()) = specs.changed() => {
                let Some(c) = switch(&ctx, &mut specs, chain, &topic, partition).await else { return };
                chain = c.with_cancel(cancel.clone());
                continue;
            }
            // Idle with progress not yet saved.
            _ = progress.due(), if progress.pending() => {
                progress.flush(&ctx, &topic, partition).await;
                continue;
            }
            // Idle with failures not yet logged.
            _ = tokio::time::sleep_until(failures.next), if !failures.counts.is_empty() => {
                failures.flush();
                continue;
            }
        };
        batch.push(first);
        let linger_until = tokio::time::Instant::now() + ctx.pipeline.batch_linger;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(linger_until, rx.recv()).await {
                    Ok(Some(r)) => batch.push(r),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        // Released while it lingered: not in flight yet, left too.
        if state.released.load(Ordering::Acquire) {
            break;
        }
        // The batch boundary: a generation published meanwhile runs this batch.
        if specs.has_changed().unwrap_or(false) {
            let Some(c) = switch(&ctx, &mut specs, chain, &topic, partition).await else { return };
            chain = c.with_cancel(cancel.clone());
        }
        // Where this partition's documents change version: the first record of a new generation.
        let generation = chain.spec().generation;
        if let Some(from) = ran.filter(|&g| g != generation) {
            tracing::info!(topic = %topic, partition, from, to = generation, at_offset = batch[0].offset, "partition switched chain generation");
        }
        ran = Some(generation);
        let n = batch.len();
        let bytes: usize = batch.iter().map(PartitionState::size_of).sum();
        let next_offset = batch.last().map(|r| r.offset + 1).expect("non-empty batch");
        ctx.stats.consumed.fetch_add(n as u64, Ordering::Relaxed);

        // Plugins and planning (JSON to BSON) are CPU work: off the async threads, moving the chain there and back.
        let (c, records, planned) = {
            let mut c = chain;
            let records = std::mem::take(&mut batch);
            let shared = ctx.clone();
            match tokio::task::spawn_blocking(move || {
                let ctx = shared;
                let target = Target { versions_field: ctx.pipeline.versions_field.as_deref(), offsets_collection: &ctx.offsets_collection };
                let planned = c.process(&records).map(|results| plan(c.spec(), &target, &records, &results));
                (c, records, planned)
            })
            .await
            {
                Ok(t) => t,
                Err(e) => {
                    let _ = ctx.fatal.send(anyhow::anyhow!("plugin chain for {topic}:{partition} panicked: {e}"));
                    return;
                }
            }
        };
        chain = c;
        let planned = match planned {
            Ok(p) => p,
            // Released mid-isolation: nothing of this batch is written or committed; the next owner runs it.
            Err(crate::plugin::runtime::RuntimeError::Cancelled) => {
                tracing::info!(topic = %topic, partition, "batch left to the next owner: the partition was released while it was isolated");
                break;
            }
            Err(e) => {
                let _ = ctx.fatal.send(anyhow::Error::new(e).context(format!("plugin chain for {topic}:{partition}")));
                return;
            }
        };
        // Records an earlier owner may have written under another version (or of an earlier
        // incarnation of the topic, or versions unknown): which derived ids this version keeps.
        let foreign = state.renewed || state.window_chains.is_empty() || state.window_chains.iter().any(|c| *c != chain.spec().label);
        let replayed = (foreign && records[0].offset < state.replay_until).then(|| kept_ids(&planned, &records, state.replay_until));
        let mut planned = planned;
        if replayed.is_some() {
            for (op, &i) in planned.ops.iter_mut().zip(&planned.op_source) {
                op.replay = records[i].offset < state.replay_until;
            }
        }
        intent.cover(&ctx, &topic, partition, next_offset, &chain.spec().label).await;
        if let Err(e) = write_batch(&ctx, chain.spec(), &records, planned, &mut failures).await {
            let _ = ctx.fatal.send(e);
            return;
        }
        if let Some(kept) = replayed {
            remove_stale(&ctx, &topic, partition, &kept).await;
        }
        batch = records;
        ctx.stats.batches.fetch_add(1, Ordering::Relaxed);
        registered.gauges.generation.store(chain.spec().generation, Ordering::Relaxed);
        state.acked.store(next_offset, Ordering::Release);
        state.queued.fetch_sub(n, Ordering::AcqRel);
        state.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        failures.flush_if_due();
        progress.written(next_offset);
        if progress.is_due() {
            progress.flush(&ctx, &topic, partition).await;
        }
    }
    // Released (revoke, shutdown): record how far it got.
    progress.flush(&ctx, &topic, partition).await;
    failures.flush();
    // Not below what an earlier owner may have written (this worker's window, perhaps not all replayed yet).
    let settled = state.acked.load(Ordering::Acquire).max(state.replay_until);
    if settled >= 0 && intent.saved > settled && progress.unsaved.is_none() {
        let done = settled == state.acked.load(Ordering::Acquire);
        if let Err(e) = ctx.progress.settle_intent(&topic, partition, intent.saved, settled, done).await {
            tracing::debug!(topic = %topic, partition, "settling the write intent failed (the next owner checks a few more records): {e}");
        }
    }
}

/// The progress `intent`: saved ahead (by `margin` records) before a batch is
/// written past it, so that a later owner knows which records it may replay.
struct Intent {
    saved: i64,
    margin: i64,
    topic_id: Option<String>,
    /// The chain version last added to the intent's versions (`None`: none yet by this worker).
    chain: Option<String>,
    /// Whether the window this worker inherited is empty (then its first save names one version only).
    inherited_empty: bool,
}

impl Intent {
    /// Make sure the saved intent covers writes up to `end` (retried until MongoDB takes it).
    /// Make sure the saved intent covers writes up to `end` by `chain`.
    async fn cover(&mut self, ctx: &WorkerCtx, topic: &str, partition: i32, end: i64, chain: &str) {
        let new_chain = self.chain.as_deref() != Some(chain);
        if end <= self.saved && !new_chain {
            return;
        }
        let fresh = self.chain.is_none() && self.inherited_empty;
        let target = (end + self.margin).max(self.saved);
        let mut backoff = Backoff::new(&ctx.pipeline);
        let mut failing: Option<Failing<'_>> = None;
        while let Err(e) = ctx.progress.save_intent(topic, partition, target, self.topic_id.as_deref(), chain, fresh).await {
            failing.get_or_insert_with(|| Failing::new(&ctx.health.sink_failing));
            ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
            let wait = backoff.next();
            tracing::warn!(topic, partition, attempt = backoff.attempt, retry_in = ?wait, "saving the write intent to MongoDB failed (will retry): {e}");
            tokio::time::sleep(wait).await;
        }
        self.saved = target;
        self.chain = Some(chain.to_owned());
    }
}

/// For each record of `records` before `until`: the derived-id indexes this
/// batch's plan writes to the configured collection (the rest are stale).
fn kept_ids(planned: &Plan, records: &[SourceRecord], until: i64) -> std::collections::BTreeMap<i64, Vec<usize>> {
    let mut kept: std::collections::BTreeMap<i64, Vec<usize>> =
        records.iter().filter(|r| r.offset < until).map(|r| (r.offset, Vec::new())).collect();
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
async fn remove_stale(ctx: &WorkerCtx, topic: &str, partition: i32, kept: &std::collections::BTreeMap<i64, Vec<usize>>) {
    // `_id`s are strings: offsets of one decimal length form one range.
    let mut by_len: std::collections::BTreeMap<usize, (i64, i64)> = Default::default();
    for &o in kept.keys() {
        let e = by_len.entry(o.to_string().len()).or_insert((o, o));
        e.0 = e.0.min(o);
        e.1 = e.1.max(o);
    }
    let mut backoff = Backoff::new(&ctx.pipeline);
    for (lo, hi) in by_len.into_values() {
        let (from, to) = (format!("{topic}:{partition}:{lo}:"), format!("{topic}:{partition}:{hi};"));
        loop {
            let result = async {
                let ids = ctx.sink.ids_between(None, &from, &to).await?;
                let stale: Vec<String> = ids
                    .into_iter()
                    .filter(|id| {
                        parse_derived_id(id)
                            .is_some_and(|(t, p, o, k)| t == topic && p == partition && kept.get(&o).is_some_and(|keep| !keep.contains(&k)))
                    })
                    .collect();
                ctx.sink.delete_ids(None, &stale).await
            }
            .await;
            match result {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(topic, partition, offsets = %format!("{lo}..={hi}"), removed = n, "replayed records: removed documents the running version no longer makes");
                    break;
                }
                Err(e) => {
                    ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next();
                    tracing::warn!(topic, partition, retry_in = ?wait, "removing stale documents after a replay failed (will retry): {e}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// When a worker records its progress in MongoDB: at most once per
/// `pipeline.progress_interval`, when idle after that, and when the partition is
/// released. Saving is best effort: Kafka's committed offset covers the same
/// records, and a failed save is tried again at the next occasion.
struct ProgressSaver {
    topic_id: Option<String>,
    interval: std::time::Duration,
    last: tokio::time::Instant,
    /// Written but not yet saved: the next offset.
    unsaved: Option<i64>,
}

impl ProgressSaver {
    fn new(interval: std::time::Duration) -> Self {
        ProgressSaver { topic_id: None, interval, last: tokio::time::Instant::now(), unsaved: None }
    }

    fn written(&mut self, next_offset: i64) {
        self.unsaved = Some(next_offset);
    }

    fn pending(&self) -> bool {
        self.unsaved.is_some()
    }

    fn is_due(&self) -> bool {
        self.pending() && self.last.elapsed() >= self.interval
    }

    async fn due(&self) {
        tokio::time::sleep_until(self.last + self.interval).await
    }

    async fn flush(&mut self, ctx: &WorkerCtx, topic: &str, partition: i32) {
        let Some(next_offset) = self.unsaved else { return };
        self.last = tokio::time::Instant::now();
        match ctx.progress.save(topic, partition, next_offset, self.topic_id.as_deref()).await {
            Ok(()) => self.unsaved = None,
            Err(e) => tracing::warn!(topic, partition, "saving progress to MongoDB failed (tried again later): {e}"),
        }
    }
}

/// Instances of `spec` for one partition worker, built on a blocking thread
/// (init runs wasm). `None`: the run must stop (reported as fatal).
async fn build_chain(ctx: &WorkerCtx, spec: Arc<ChainSpec>, topic: &str, partition: i32) -> Option<Chain> {
    let max_value = ctx.pipeline.max_value_bytes;
    let generation = spec.generation;
    let metrics = spec.plugins.iter().map(|p| ctx.stats.plugin(&p.name)).collect();
    match tokio::task::spawn_blocking(move || Chain::new(spec, max_value).map(|c| c.with_metrics(metrics))).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            let context = format!("starting generation {generation} of the plugin chain for {topic}:{partition}");
            let _ = ctx.fatal.send(anyhow::Error::new(e).context(context));
            None
        }
        Err(e) => {
            let _ = ctx.fatal.send(anyhow::anyhow!("plugin chain start for {topic}:{partition} panicked: {e}"));
            None
        }
    }
}

/// Switch a worker to the newest generation. The old chain is dropped only
/// once the new one is built.
async fn switch(ctx: &WorkerCtx, specs: &mut watch::Receiver<Arc<ChainSpec>>, old: Chain, topic: &str, partition: i32) -> Option<Chain> {
    let spec = specs.borrow_and_update().clone();
    if Arc::ptr_eq(&spec, old.spec()) {
        return Some(old);
    }
    let (from, to) = (old.spec().generation, spec.generation);
    let chain = build_chain(ctx, spec, topic, partition).await?;
    tracing::debug!(topic, partition, from, to, "partition worker built the new chain generation");
    Some(chain)
}

/// Write a batch's planned writes until acknowledged, and decide every failed
/// record. `Err` means the run must stop.
async fn write_batch(
    ctx: &WorkerCtx,
    spec: &ChainSpec,
    records: &[SourceRecord],
    planned: Plan,
    log: &mut FailureLog,
) -> anyhow::Result<()> {
    let Plan { ops, op_source, failures, dropped } = planned;
    ctx.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
    decide(ctx, spec, records, &failures, log).await?;
    let (topic, partition) = (&records[0].topic, records[0].partition);
    let mut backoff = Backoff::new(&ctx.pipeline);
    // Counts this worker as failing while it retries (also if the task is aborted).
    let mut failing: Option<Failing<'_>> = None;
    if ops.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let (report, rejections) = loop {
        let message = match ctx.sink.write(&ops).await {
            Ok(report) => break (report, Vec::new()),
            Err(SinkError::Rejected { rejections, report }) => break (report, rejections),
            Err(e) => e.to_string(),
        };
        failing.get_or_insert_with(|| Failing::new(&ctx.health.sink_failing));
        ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
        let wait = backoff.next();
        tracing::warn!(topic = %topic, partition, attempt = backoff.attempt, retry_in = ?wait, "{message}");
        tokio::time::sleep(wait).await;
    };
    ctx.stats.sink_write_seconds.observe(started.elapsed().as_secs_f64());
    ctx.stats.sink_write_documents.observe(ops.len() as f64);
    ctx.stats.written.fetch_add(report.inserted + report.upserted + report.deleted + report.replaced, Ordering::Relaxed);
    ctx.stats.duplicates.fetch_add(report.duplicates, Ordering::Relaxed);
    if !rejections.is_empty() {
        decide(ctx, spec, records, &rejected(&rejections, &op_source), log).await?;
    }
    if backoff.attempt > 0 {
        tracing::info!(topic = %topic, partition, attempts = backoff.attempt + 1, "MongoDB write succeeded after retrying");
    }
    Ok(())
}

/// Failed records, logged per partition as one line at most every
/// [`FailureLog::EVERY`] (the first failure at once), never one per record
/// above debug: a bad stream does not flood the log.
struct FailureLog {
    next: tokio::time::Instant,
    counts: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    last: Option<String>,
    where_: String,
}

impl FailureLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn new(topic: &str, partition: i32) -> Self {
        FailureLog { next: tokio::time::Instant::now(), counts: Default::default(), last: None, where_: format!("{topic}:{partition}") }
    }

    fn note(&mut self, rec: &SourceRecord, f: &Failure, action: &'static str) {
        let plugin = f.plugin.as_deref().unwrap_or("-");
        tracing::debug!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, kind = f.kind.as_str(), plugin, "record {action}: {}", f.message);
        *self.counts.entry((action, f.kind.as_str())).or_default() += 1;
        self.last = Some(format!("offset {} ({}, plugin {plugin}): {}", rec.offset, f.kind.as_str(), f.message));
        self.flush_if_due();
    }

    fn flush_if_due(&mut self) {
        if !self.counts.is_empty() && tokio::time::Instant::now() >= self.next {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let summary: Vec<String> = self.counts.iter().map(|((action, kind), n)| format!("{n} {action} ({kind})")).collect();
        tracing::warn!(partition = %self.where_, "failed records: {}; last: {}", summary.join(", "), self.last.take().unwrap_or_default());
        self.counts.clear();
        self.next = tokio::time::Instant::now() + Self::EVERY;
    }
}

/// Counted in a gauge while alive.
struct Failing<'a>(&'a AtomicUsize);

impl<'a> Failing<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Failing(gauge)
    }
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Capped exponential backoff with jitter: each wait is 50–100% of a delay that
/// doubles from `retry_backoff` up to `retry_max_backoff`.
struct Backoff {
    delay: std::time::Duration,
    max: std::time::Duration,
    attempt: u32,
}

impl Backoff {
    fn new(cfg: &PipelineConfig) -> Backoff {
        Backoff { delay: cfg.retry_backoff, max: cfg.retry_max_backoff, attempt: 0 }
    }

    /// The wait before the next attempt.
    fn next(&mut self) -> std::time::Duration {
        self.attempt += 1;
        let wait = self.delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }
}

/// The one place that decides what failed records do: dead-letter them (before
/// their offset can be committed), skip them, or stop the run.
async fn decide(
    ctx: &WorkerCtx,
    spec: &ChainSpec,
    records: &[SourceRecord],
    failures: &[(usize, Failure)],
    log: &mut FailureLog,
) -> anyhow::Result<()> {
    for (i, f) in failures {
        let rec = &records[*i];
        let plugin = f.plugin.as_deref().unwrap_or("-");
        match ctx.pipeline.on_error {
            OnError::Skip => {
                ctx.stats.skipped.fetch_add(1, Ordering::Relaxed);
                ctx.stats.skipped_by_kind[f.kind as usize].fetch_add(1, Ordering::Relaxed);
                log.note(rec, f, "skipped");
            }
            OnError::Stop => anyhow::bail!(
                "record {}:{}@{} failed ({}, plugin {plugin}): {} — stopping (on_error = \"stop\"); its offset is not committed",
                rec.topic,
                rec.partition,
                rec.offset,
                f.kind.as_str(),
                f.message
            ),
            OnError::DeadLetter => {
                send_dead_letter(ctx, spec, rec, f).await;
                ctx.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                ctx.stats.dead_lettered_by_kind[f.kind as usize].fetch_add(1, Ordering::Relaxed);
                log.note(rec, f, "dead-lettered");
            }
        }
    }
    Ok(())
}

/// Send `rec`'s dead letter until the broker acknowledges it. Too large: sent
/// truncated. Topic deleted: created again. Failing for longer than
/// `dlq.unavailable_timeout`: the host reports not ready until it is sent.
async fn send_dead_letter(ctx: &WorkerCtx, spec: &ChainSpec, rec: &SourceRecord, f: &Failure) {
    use crate::kafka::dlq::SendError;
    let dlq = ctx.dlq.as_ref().expect("a DLQ producer exists under on_error = dead-letter");
    let at = format!("{}:{}@{}", rec.topic, rec.partition, rec.offset);
    let mut backoff = Backoff::new(&ctx.pipeline);
    let give_up_at = tokio::time::Instant::now() + ctx.dlq_unavailable_timeout;
    let mut unavailable: Option<Failing<'_>> = None;
    let mut truncated = false;
    loop {
        let send = dlq.send(rec, f, &spec.label, truncated);
        tokio::pin!(send);
        let result = loop {
            tokio::select! {
                r = &mut send => break r,
                _ = tokio::time::sleep_until(give_up_at), if unavailable.is_none() => {
                    unavailable = Some(Failing::new(&ctx.health.dlq_failing));
                    tracing::error!(record = %at, "dead letters have failed for {:?} (dlq.unavailable_timeout): not ready; still trying", ctx.dlq_unavailable_timeout);
                }
            }
        };
        let e = match result {
            Ok(()) => break,
            Err(SendError::TooLarge(e)) if !truncated => {
                tracing::warn!(record = %at, "the dead letter is too large ({e}): sending it without its value and headers (sluice.error.truncated)");
                truncated = true;
                continue;
            }
            Err(SendError::NoTopic(e)) => match dlq.recreate_topic(&rec.topic).await {
                Ok(()) => format!("{e}; the topic was created again"),
                Err(c) => format!("{e}; creating it failed: {c:#}"),
            },
            Err(e) => e.to_string(),
        };
        ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
        let wait = backoff.next();
        tracing::warn!(record = %at, attempt = backoff.attempt, retry_in = ?wait, "sending the dead letter failed (will retry): {e}");
        if unavailable.is_none() && tokio::time::Instant::now() + wait >= give_up_at {
            unavailable = Some(Failing::new(&ctx.health.dlq_failing));
            tracing::error!(record = %at, "dead letters have failed for {:?} (dlq.unavailable_timeout): not ready; still trying", ctx.dlq_unavailable_timeout);
        }
        tokio::time::sleep(wait).await;
    }
    if unavailable.is_some() {
        tracing::info!(record = %at, "the dead letter was sent after all: ready again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let cfg = PipelineConfig {
            retry_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_millis(450),
            ..Default::default()
        };
        let mut b = Backoff::new(&cfg);
        let bounds = [(50, 100), (100, 200), (200, 400), (225, 450), (225, 450)];
        for (lo, hi) in bounds {
            let w = b.next();
            assert!(w >= Duration::from_millis(lo) && w <= Duration::from_millis(hi), "{w:?} not in {lo}..{hi} ms");
        }
        assert_eq!(b.attempt, 5);
    }
}
