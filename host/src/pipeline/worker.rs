//! One partition's worker: next batch → switch generation → run the chain →
//! write (deciding failed records once) → store the offset as written.
//!
//! It ends when the partition is released (revoke, stop: it records its
//! progress first) or when the run must stop (reported on `fatal`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};

use crate::config::PipelineConfig;
use crate::formats::{Decoder, RegistryError};
use crate::kafka::dlq::DeadLetters;
use crate::mongo::progress::Progress;
use crate::mongo::sink::Sink;
use crate::pipeline::decode::process;
use crate::pipeline::plan::{Plan, Target, plan};
use crate::pipeline::progress::{Intent, ProgressSaver, kept_ids, remove_stale};
use crate::pipeline::retry::Retry;
use crate::pipeline::write::{FailureLog, write_batch};
use crate::plugin::chain::{Chain, ChainSpec, Results};
use crate::plugin::rollout::Rollout;
use crate::plugin::runtime::RuntimeError;
use crate::plugin::swap::HotSwap;
use crate::record::{PartitionState, SourceRecord};
use crate::telemetry::{Health, PartitionGauges, Stats};

/// What every worker of a run shares.
pub(super) struct WorkerCtx {
    /// Reads keys and values that are not JSON (`None`: all JSON, nothing to do).
    pub decoder: Option<Arc<Decoder>>,
    pub hot: Arc<HotSwap>,
    pub dlq_unavailable_timeout: std::time::Duration,
    pub offsets_collection: String,
    pub health: Arc<Health>,
    pub dlq: Option<DeadLetters>,
    pub sink: Sink,
    pub progress: Progress,
    pub pipeline: PipelineConfig,
    pub stats: Arc<Stats>,
    pub fatal: mpsc::UnboundedSender<anyhow::Error>,
}

impl WorkerCtx {
    /// A retry of `what` at `at`, counted in `sluice_retries_total`, raising no gauge.
    pub(super) fn retry<'a>(&'a self, what: &'a str, at: &'a str) -> Retry<'a> {
        Retry { what, at, cfg: &self.pipeline, retries: &self.stats.retries, gauge: None, unhealthy_after: None }
    }
}

/// Why a worker's loop ended.
enum Exit {
    /// Revoked, stopping, or its queue closed: record how far it got.
    Released,
    /// The run must stop; the reason was sent on `fatal`.
    Fatal,
}

/// Serve one partition until it is released or the run must stop.
pub(super) async fn worker(
    ctx: Arc<WorkerCtx>,
    topic: Arc<str>,
    partition: i32,
    rx: mpsc::UnboundedReceiver<SourceRecord>,
    state: Arc<PartitionState>,
) {
    let Some(mut w) = Worker::start(ctx, topic, partition, rx, state).await else { return };
    loop {
        match w.one_batch().await {
            Ok(()) => {}
            Err(Exit::Released) => return w.release().await,
            Err(Exit::Fatal) => return,
        }
    }
}

struct Worker {
    ctx: Arc<WorkerCtx>,
    topic: Arc<str>,
    partition: i32,
    rx: mpsc::UnboundedReceiver<SourceRecord>,
    state: Arc<PartitionState>,
    registered: Registered,
    specs: watch::Receiver<Arc<ChainSpec>>,
    /// Released (revoke, shutdown): the isolation of a failed batch stops between calls.
    cancel: Arc<dyn Fn() -> bool + Send + Sync>,
    /// `None` only while a batch runs through it on a blocking thread.
    chain: Option<Chain>,
    /// The generation published last (the chain runs it, or its rollout's candidate).
    published: Arc<ChainSpec>,
    /// A shadow rollout's candidate chain (taken like `chain` while a batch runs).
    shadow: Option<Chain>,
    /// Batches run since the worker started (which ones a shadow share takes).
    batches: u64,
    /// The rollout of the generation that ran the last batch: a canary
    /// partition's switch back to the live version is recorded there.
    last_rollout: Option<Arc<Rollout>>,
    /// The records' buffer, kept between batches.
    batch: Vec<SourceRecord>,
    progress: ProgressSaver,
    intent: Intent,
    failures: FailureLog,
    /// The generation and chain label that ran the last batch.
    ran: Option<(u64, String)>,
}

impl Worker {
    async fn start(
        ctx: Arc<WorkerCtx>,
        topic: Arc<str>,
        partition: i32,
        rx: mpsc::UnboundedReceiver<SourceRecord>,
        state: Arc<PartitionState>,
    ) -> Option<Worker> {
        let registered = Registered::new(ctx.stats.clone(), topic.clone(), partition, state.clone());
        let mut specs = ctx.hot.subscribe();
        let spec = specs.borrow_and_update().clone();
        let cancel: Arc<dyn Fn() -> bool + Send + Sync> = {
            let state = state.clone();
            Arc::new(move || state.released.load(Ordering::Acquire))
        };
        let chain = build_chain(&ctx, spec.for_partition(partition), &topic, partition).await?.with_cancel(cancel.clone());
        let shadow = match shadow_spec(&spec) {
            Some(candidate) => Some(build_chain(&ctx, candidate, &topic, partition).await?),
            None => None,
        };
        // Until its first batch is written, the generation it starts with (a partition assigned again
        // after its last record, e.g. by a late rebalance, otherwise shows no generation at all).
        registered.gauges.generation.store(chain.spec().generation, Ordering::Relaxed);
        let intent = Intent::inherited(&state, ctx.pipeline.batch_max_records);
        let mut progress = ProgressSaver::new(ctx.pipeline.progress_interval);
        progress.topic_id = state.topic_id.clone();
        if state.renewed
            && let Some(id) = &state.topic_id
        {
            // A new incarnation of the topic: its progress starts over (a failure only leaves the old one ignored again).
            if let Err(e) = ctx.progress.renew(&topic, partition, id, state.replay_until).await {
                tracing::warn!(topic = %topic, partition, "starting the progress over for the recreated topic failed: {e}");
            }
        }
        let batch = Vec::with_capacity(ctx.pipeline.batch_max_records);
        let failures = FailureLog::new(&topic, partition);
        Some(Worker {
            ctx,
            topic,
            partition,
            rx,
            state,
            registered,
            specs,
            cancel,
            chain: Some(chain),
            published: spec,
            shadow,
            batches: 0,
            last_rollout: None,
            batch,
            progress,
            intent,
            failures,
            ran: None,
        })
    }

    fn chain(&self) -> &Chain {
        self.chain.as_ref().expect("the chain is back from its blocking thread")
    }

    fn released(&self) -> bool {
        self.state.released.load(Ordering::Acquire)
    }

    async fn one_batch(&mut self) -> Result<(), Exit> {
        let records = self.next_batch().await?;
        self.switch_at_boundary(records[0].offset).await?;
        let (n, bytes) = (records.len(), records.iter().map(PartitionState::size_of).sum::<usize>());
        let next_offset = records.last().map(|r| r.offset + 1).expect("non-empty batch");
        self.ctx.stats.consumed.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(decoder) = &self.ctx.decoder {
            let at = format!("{}:{}", self.topic, self.partition);
            if let Err(e) = fetch_schemas(&self.ctx, decoder, &at, &records).await {
                return Err(self.fatal(anyhow::Error::new(e).context(format!("reading {at}"))));
            }
        }
        let (records, planned) = self.run_chain(records).await?;
        self.write(&records, planned, next_offset).await?;
        self.store(next_offset, n, bytes).await;
        self.batch = records;
        self.check_rollback();
        Ok(())
    }

    /// A rollout whose rule tripped is rolled back (once, by the first worker that sees it).
    fn check_rollback(&self) {
        let Some(r) = &self.published.rollout else { return };
        let Some(reason) = r.rule.as_ref().and_then(|rule| rule.tripped(&r.stats)) else { return };
        if !r.stats.tripped.swap(true, Ordering::AcqRel) {
            let (hot, id) = (self.ctx.hot.clone(), r.id);
            tokio::spawn(async move { hot.auto_rollback(id, reason).await });
        }
    }

    /// Wait for a record (doing idle work meanwhile), then take what else came
    /// within `batch_linger`, up to `batch_max_records`.
    async fn next_batch(&mut self) -> Result<Vec<SourceRecord>, Exit> {
        self.batch.clear();
        let first = loop {
            // Revoked or stopping: the rest of the queue is left to the next owner.
            if self.released() {
                return Err(Exit::Released);
            }
            tokio::select! {
                r = self.rx.recv() => break r.ok_or(Exit::Released)?,
                // Idle: build the new generation's instances now, not when records come.
                Ok(()) = self.specs.changed() => self.switch().await?,
                // Idle with progress not yet saved.
                _ = self.progress.due(), if self.progress.pending() => self.progress.flush(&self.ctx, &self.topic, self.partition).await,
                // Idle with failures not yet logged.
                _ = tokio::time::sleep_until(self.failures.next), if !self.failures.counts.is_empty() => self.failures.flush(),
            }
        };
        self.batch.push(first);
        let linger_until = tokio::time::Instant::now() + self.ctx.pipeline.batch_linger;
        while self.batch.len() < self.ctx.pipeline.batch_max_records {
            match self.rx.try_recv() {
                Ok(r) => self.batch.push(r),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(linger_until, self.rx.recv()).await {
                    Ok(Some(r)) => self.batch.push(r),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        // Released while it lingered: not in flight yet, left too.
        if self.released() {
            return Err(Exit::Released);
        }
        Ok(std::mem::take(&mut self.batch))
    }

    /// The batch boundary: a generation published meanwhile runs this batch.
    async fn switch_at_boundary(&mut self, at_offset: i64) -> Result<(), Exit> {
        if self.specs.has_changed().unwrap_or(false) {
            self.switch().await?;
        }
        // Where this partition's documents change version: the first record of a new generation.
        let (generation, label) = (self.chain().spec().generation, self.chain().spec().label.clone());
        let changed = match &self.ran {
            Some((from, from_label)) if *from != generation => {
                tracing::info!(topic = %self.topic, partition = self.partition, from, to = generation, at_offset, "partition switched chain generation");
                *from_label != label
            }
            Some(_) => false,
            // The worker's first batch: a canary partition's first record under the candidate.
            None => self.published.rollout.as_ref().is_some_and(|r| Arc::ptr_eq(self.chain().spec(), &r.candidate)),
        };
        // A rollout's partition that changes versions: the offset is part of its record.
        if changed && let Some(r) = self.published.rollout.as_ref().or(self.last_rollout.as_ref()) {
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            r.stats.switched(&self.topic, self.partition, at_offset, &label, at);
            tracing::info!(event = "rollout_switch", rollout = r.id, topic = %self.topic, partition = self.partition, at_offset, chain = %label, "partition switched version");
        }
        self.ran = Some((generation, label));
        self.last_rollout = self.published.rollout.clone();
        Ok(())
    }

    /// Follow the newest generation: the chain this partition runs (a canary
    /// partition runs the candidate), and a shadow rollout's candidate beside it.
    /// An old chain is dropped only once its successor is built.
    async fn switch(&mut self) -> Result<(), Exit> {
        let spec = self.specs.borrow_and_update().clone();
        let runs = spec.for_partition(self.partition);
        if !Arc::ptr_eq(&runs, self.chain().spec()) {
            let (from, to) = (self.chain().spec().generation, runs.generation);
            let chain = build_chain(&self.ctx, runs, &self.topic, self.partition).await.ok_or(Exit::Fatal)?;
            tracing::debug!(topic = %self.topic, partition = self.partition, from, to, "partition worker built the new chain generation");
            self.chain = Some(chain.with_cancel(self.cancel.clone()));
        }
        self.shadow = match (shadow_spec(&spec), self.shadow.take()) {
            (Some(candidate), Some(built)) if Arc::ptr_eq(&candidate, built.spec()) => Some(built),
            (Some(candidate), _) => Some(build_chain(&self.ctx, candidate, &self.topic, self.partition).await.ok_or(Exit::Fatal)?),
            (None, _) => None,
        };
        self.published = spec;
        Ok(())
    }

    /// Plugins and planning (JSON to BSON) are CPU work: off the async threads,
    /// moving the chain there and back.
    async fn run_chain(&mut self, records: Vec<SourceRecord>) -> Result<(Vec<SourceRecord>, Plan), Exit> {
        let mut chain = self.chain.take().expect("the chain is not in use");
        let ctx = self.ctx.clone();
        let rollout = self.published.rollout.clone();
        // A shadowed batch: the candidate runs it too, after the live chain.
        let shadowed = rollout.as_ref().is_some_and(|r| r.shadows(self.batches));
        let mut shadow = if shadowed { self.shadow.take() } else { None };
        self.batches += 1;
        let ran = tokio::task::spawn_blocking(move || {
            let target = Target { versions_field: ctx.pipeline.versions_field.as_deref(), offsets_collection: &ctx.offsets_collection };
            let planned = process(&mut chain, ctx.decoder.as_deref(), &records).map(|results| {
                if let Some(r) = &rollout {
                    rollout_ran(r, &chain, shadow.as_mut(), ctx.decoder.as_deref(), &records, &results);
                }
                plan(chain.spec(), &target, &records, &results)
            });
            (chain, shadow, records, planned)
        })
        .await;
        let (chain, shadow, records, planned) = match ran {
            Ok(t) => t,
            Err(e) => return Err(self.fatal(anyhow::anyhow!("plugin chain for {}:{} panicked: {e}", self.topic, self.partition))),
        };
        self.chain = Some(chain);
        if shadow.is_some() {
            self.shadow = shadow;
        }
        match planned {
            Ok(p) => Ok((records, p)),
            // Released mid-isolation: nothing of this batch is written or committed; the next owner runs it.
            Err(RuntimeError::Cancelled) => {
                tracing::info!(topic = %self.topic, partition = self.partition, "batch left to the next owner: the partition was released while it was isolated");
                Err(Exit::Released)
            }
            Err(e) => Err(self.fatal(anyhow::Error::new(e).context(format!("plugin chain for {}:{}", self.topic, self.partition)))),
        }
    }

    /// Cover the batch with the write intent, write it (failed records decided
    /// there), and after a replay remove what the running version no longer makes.
    async fn write(&mut self, records: &[SourceRecord], mut planned: Plan, next_offset: i64) -> Result<(), Exit> {
        // Records an earlier owner may have written under another version (or of an earlier
        // incarnation of the topic, or versions unknown): which derived ids this version keeps.
        // The spec alone crosses the awaits below: the chain's stores are not `Sync`.
        let spec = self.chain.as_ref().expect("the chain is back from its blocking thread").spec().clone();
        let state = &self.state;
        let foreign = state.renewed || state.window_chains.is_empty() || state.window_chains.iter().any(|c| *c != spec.label);
        let replayed = (foreign && records[0].offset < state.replay_until).then(|| kept_ids(&planned, records, state.replay_until));
        if replayed.is_some() {
            for (op, &i) in planned.ops.iter_mut().zip(&planned.op_source) {
                op.replay = records[i].offset < state.replay_until;
            }
        }
        self.intent.cover(&self.ctx, &self.topic, self.partition, next_offset, &spec.label).await;
        if let Err(e) = write_batch(&self.ctx, &spec, records, planned, &mut self.failures).await {
            return Err(self.fatal(e));
        }
        if let Some(kept) = replayed {
            remove_stale(&self.ctx, &self.topic, self.partition, &kept).await;
        }
        Ok(())
    }

    /// The batch is written: its offsets may be stored and committed.
    async fn store(&mut self, next_offset: i64, n: usize, bytes: usize) {
        self.ctx.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.registered.gauges.generation.store(self.chain().spec().generation, Ordering::Relaxed);
        self.state.acked.store(next_offset, Ordering::Release);
        self.state.queued.fetch_sub(n, Ordering::AcqRel);
        self.state.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.failures.flush_if_due();
        self.progress.written(next_offset);
        if self.progress.is_due() {
            self.progress.flush(&self.ctx, &self.topic, self.partition).await;
        }
    }

    /// Released (revoke, shutdown): record how far it got.
    async fn release(mut self) {
        let (ctx, topic, partition, state) = (&self.ctx, &self.topic, self.partition, &self.state);
        self.progress.flush(ctx, topic, partition).await;
        self.failures.flush();
        // Not below what an earlier owner may have written (this worker's window, perhaps not all replayed yet).
        let settled = state.acked.load(Ordering::Acquire).max(state.replay_until);
        if settled >= 0 && self.intent.saved > settled && self.progress.unsaved.is_none() {
            let done = settled == state.acked.load(Ordering::Acquire);
            if let Err(e) = ctx.progress.settle_intent(topic, partition, self.intent.saved, settled, done).await {
                tracing::debug!(topic = %topic, partition, "settling the write intent failed (the next owner checks a few more records): {e}");
            }
        }
    }

    fn fatal(&self, e: anyhow::Error) -> Exit {
        let _ = self.ctx.fatal.send(e);
        Exit::Fatal
    }
}

/// Bring the schemas of a batch's ids into the decoder's cache, retrying while
/// the registry is away (nothing is consumed past the batch meanwhile). `Err`:
/// the registry refused the credentials; the run stops.
async fn fetch_schemas(ctx: &WorkerCtx, decoder: &Decoder, at: &str, records: &[SourceRecord]) -> Result<(), RegistryError> {
    let ids = decoder.missing(records);
    if ids.is_empty() {
        return Ok(());
    }
    let retry = Retry { gauge: Some(&ctx.health.registry_failing), ..ctx.retry("fetching schemas from the registry", at) };
    let (result, _) = retry
        .run(|| async {
            match decoder.fetch(&ids).await {
                Ok(()) => Ok(Ok(())),
                Err(e @ RegistryError::Refused { .. }) => Ok(Err(e)),
                Err(e) => Err(e),
            }
        })
        .await;
    result
}

/// Lists a partition in [`Stats`] while its worker runs.
struct Registered {
    stats: Arc<Stats>,
    key: (Arc<str>, i32),
    gauges: Arc<PartitionGauges>,
}

impl Registered {
    fn new(stats: Arc<Stats>, topic: Arc<str>, partition: i32, state: Arc<PartitionState>) -> Self {
        let gauges = Arc::new(PartitionGauges { state, generation: AtomicU64::new(0) });
        stats.partitions.lock().unwrap().insert((topic.clone(), partition), gauges.clone());
        Registered { stats, key: (topic, partition), gauges }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Only its own entry: a newer worker of the same partition may have registered since.
        let mut partitions = self.stats.partitions.lock().unwrap();
        if partitions.get(&self.key).is_some_and(|g| Arc::ptr_eq(g, &self.gauges)) {
            partitions.remove(&self.key);
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

/// A shadow rollout's candidate chain of `spec`, if it has one.
fn shadow_spec(spec: &ChainSpec) -> Option<Arc<ChainSpec>> {
    spec.rollout.as_ref().filter(|r| matches!(r.mode, crate::plugin::rollout::Mode::Shadow { .. })).map(|r| r.candidate.clone())
}

/// What a rollout learns from a batch the live or canary chain ran: a canary
/// counts the records of each version; a shadow runs its candidate (when
/// given) on the same records and compares. A candidate that cannot run at
/// all counts its records as failed; the live pipeline goes on.
fn rollout_ran(
    r: &Rollout,
    chain: &Chain,
    shadow: Option<&mut Chain>,
    decoder: Option<&crate::formats::Decoder>,
    records: &[SourceRecord],
    live: &Results,
) {
    match shadow {
        Some(candidate) => {
            let started = std::time::Instant::now();
            let ran = process(candidate, decoder, records);
            let nanos = started.elapsed().as_nanos() as u64;
            match ran {
                Ok(results) => r.stats.compare(records, live, &results, nanos),
                Err(e) => {
                    tracing::warn!(rollout = r.id, "the shadow candidate could not run a batch: {e}");
                    let n = records.len() as u64;
                    r.stats.records.fetch_add(n, Ordering::Relaxed);
                    r.stats.candidate_failures.fetch_add(n, Ordering::Relaxed);
                    r.stats.differences.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        None if matches!(r.mode, crate::plugin::rollout::Mode::Canary { .. }) => {
            r.stats.ran(live, Arc::ptr_eq(chain.spec(), &r.candidate));
        }
        None => {}
    }
}
