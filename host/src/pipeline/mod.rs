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
//! [`run`] reads top-down: start (plugins, background services, the stores),
//! serve (the consumer on its thread), wait (shutdown, a fatal error, or caught
//! up), stop (drain and commit).
//!
//! Each worker follows the running chain generation ([`HotSwap`]): when a new one
//! is published it builds its instances of it, and the next batch (never a batch
//! in progress) runs through it.

pub mod decode;
pub mod plan;
mod progress;
mod retry;
mod worker;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, OnError};
use crate::kafka::dlq::DeadLetters;
use crate::kafka::source::{Source, SourceEnd, SourceSettings, SpawnWorker, StoredLookup, WorkerHandle};
use crate::mongo::progress::Progress;
use crate::mongo::sink::Sink;
use crate::plugin::runtime::Runtime;
use crate::plugin::swap::HotSwap;
use crate::telemetry::{Health, Stats};
use worker::{WorkerCtx, worker};

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

impl Summary {
    fn of(s: &Stats, caught_up: bool) -> Summary {
        Summary {
            consumed: s.consumed.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            caught_up,
        }
    }
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
    let hot = load_plugins(&config)?;
    let (stats, health) = (Arc::new(Stats::default()), Arc::new(Health::default()));
    // Stops the admin server, the watcher and the SIGHUP listener however `run` ends.
    let cancel = CancellationToken::new();
    let _stop_background = cancel.clone().drop_guard();
    serve_background(&config, &hot, &stats, &health, hup, &cancel).await?;
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<anyhow::Error>();
    let ctx = Arc::new(connect(&config, hot, stats.clone(), health.clone(), fatal_tx).await?);
    let consumer = consume(&config, &options, ctx.clone()).await?;
    let (end, fatal) = wait(&config, consumer, shutdown, &mut fatal_rx, &health).await?;
    drop(ctx);
    if let Some(e) = fatal.or_else(|| fatal_rx.try_recv().ok()) {
        return Err(e);
    }
    if let Some(SourceEnd::Failed(why)) = &end {
        anyhow::bail!("{why}");
    }
    Ok(Summary::of(&stats, end == Some(SourceEnd::CaughtUp)))
}

/// Compile the configuration's plugins into the first chain generation.
fn load_plugins(config: &Config) -> anyhow::Result<Arc<HotSwap>> {
    let runtime = Arc::new(Runtime::new().context("starting the wasm runtime")?);
    let hot = Arc::new(HotSwap::start(runtime, config)?);
    for p in &hot.current().plugins {
        tracing::info!(plugin = %p.name, version = %p.version, path = %p.path.display(), "plugin loaded");
    }
    Ok(hot)
}

/// The admin API, the plugin files' watcher and the SIGHUP reloader, until `cancel`.
async fn serve_background(
    config: &Config,
    hot: &Arc<HotSwap>,
    stats: &Arc<Stats>,
    health: &Arc<Health>,
    hup: Option<tokio::signal::unix::Signal>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if config.admin.enabled {
        let state = crate::ops::admin::AdminState {
            hot: hot.clone(),
            stats: stats.clone(),
            health: health.clone(),
            token: config.admin.token.clone(),
        };
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
    Ok(())
}

/// MongoDB, the brokers (one probe) and, under `on_error = "dead-letter"`, the
/// dead-letter producer and topics: what every worker shares.
async fn connect(
    config: &Config,
    hot: Arc<HotSwap>,
    stats: Arc<Stats>,
    health: Arc<Health>,
    fatal: mpsc::UnboundedSender<anyhow::Error>,
) -> anyhow::Result<WorkerCtx> {
    let sink = Sink::connect(&config.mongo).await?.ignoring_field(config.pipeline.versions_field.as_deref());
    let progress = sink.progress(&config.mongo.offsets_collection, &config.kafka.group_id);
    tracing::info!(database = %config.mongo.database, collection = %config.mongo.collection, "connected to MongoDB");
    crate::mongo::collections::prepare(&config.mongo, sink.database()).await?;
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
    let decoder = crate::formats::Decoder::new(&config.kafka, config.schema_registry.as_ref()).map_err(anyhow::Error::msg)?;
    Ok(WorkerCtx {
        decoder,
        hot,
        dlq_unavailable_timeout: config.dlq.unavailable_timeout,
        offsets_collection: config.mongo.offsets_collection.clone(),
        health,
        dlq,
        sink,
        progress,
        pipeline: config.pipeline.clone(),
        stats,
        fatal,
    })
}

/// The consumer, polling on its own thread.
struct Consuming {
    stop: Arc<AtomicBool>,
    done: oneshot::Receiver<SourceEnd>,
    thread: std::thread::JoinHandle<()>,
}

/// Subscribe, and poll on a thread of its own; partitions get workers as they are assigned.
async fn consume(config: &Config, options: &RunOptions, ctx: Arc<WorkerCtx>) -> anyhow::Result<Consuming> {
    let settings = SourceSettings {
        drain_timeout: config.pipeline.drain_timeout,
        max_queued: config.pipeline.max_queued(),
        max_queued_bytes: config.pipeline.max_queued_bytes_per_partition,
        until_caught_up: options.until_caught_up,
        joined: ctx.health.joined.clone(),
        commits: ctx.stats.commits.clone(),
    };
    let (kafka, lookup, spawn) = (config.kafka.clone(), stored_lookup(ctx.progress.clone()), spawn_worker(ctx));
    let source =
        tokio::task::spawn_blocking(move || Source::new(&kafka, spawn, settings, lookup)).await.context("creating the consumer")??;
    tracing::info!(event = "consuming", brokers = %config.kafka.brokers, group = %config.kafka.group_id, topics = ?config.kafka.topics, "consuming");
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done) = oneshot::channel();
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new().name("sluice-source".into()).spawn(move || {
            let _ = done_tx.send(source.run(stop));
        })?
    };
    Ok(Consuming { stop, done, thread })
}

/// Until `shutdown`, a fatal error or the consumer's end; then stop the consumer,
/// which drains the workers and commits (within `pipeline.shutdown_timeout`).
async fn wait(
    config: &Config,
    consumer: Consuming,
    shutdown: impl Future<Output = ()>,
    fatal_rx: &mut mpsc::UnboundedReceiver<anyhow::Error>,
    health: &Health,
) -> anyhow::Result<(Option<SourceEnd>, Option<anyhow::Error>)> {
    let Consuming { stop, mut done, thread } = consumer;
    tokio::pin!(shutdown);
    let mut fatal = None;
    let end = tokio::select! {
        _ = &mut shutdown => { tracing::info!("shutting down: draining in-flight batches"); None }
        Some(e) = fatal_rx.recv() => { fatal = Some(e); None }
        end = &mut done => end.ok(),
    };
    health.stopping.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let end = match end {
        Some(end) => Some(end),
        None => match tokio::time::timeout(config.pipeline.shutdown_timeout, done).await {
            Ok(end) => end.ok(),
            Err(_) => anyhow::bail!(
                "draining and committing took longer than pipeline.shutdown_timeout ({:?}); uncommitted records will be replayed",
                config.pipeline.shutdown_timeout
            ),
        },
    };
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok((end, fatal))
}

/// Starts a worker task per assigned partition. The consumer's rendezvous with
/// it is a channel whose sender the task holds: dropped when the task ends.
fn spawn_worker(ctx: Arc<WorkerCtx>) -> SpawnWorker {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |topic, partition, rx, state| {
        let ctx = ctx.clone();
        let (finished_tx, finished) = std::sync::mpsc::channel::<()>();
        let task = handle.spawn(async move {
            let _finished = finished_tx;
            use futures::FutureExt as _;
            let (fatal, at) = (ctx.fatal.clone(), format!("{topic}:{partition}"));
            // A bug must stop the run (its records are replayed), never leave a partition unserved.
            if let Err(panic) = std::panic::AssertUnwindSafe(worker(ctx, topic, partition, rx, state)).catch_unwind().await {
                let why = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                let _ = fatal.send(anyhow::anyhow!("the worker of {at} panicked: {}", why.unwrap_or_default()));
            }
        });
        WorkerHandle { finished, abort: Box::new(move || task.abort()) }
    })
}

/// Each partition's progress in MongoDB, read at every assignment. Asked on
/// librdkafka's rebalance callback (the consumer's thread, not the runtime's),
/// which must not return before the start offsets are known.
fn stored_lookup(progress: Progress) -> StoredLookup {
    let handle = tokio::runtime::Handle::current();
    Arc::new(move |parts: &[(String, i32)]| {
        match handle.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(10), progress.load_stored(parts)).await }) {
            Ok(Ok(stored)) => Ok(stored),
            Ok(Err(e)) => Err(format!("MongoDB: {e}")),
            Err(_) => Err("reading MongoDB timed out".into()),
        }
    })
}
