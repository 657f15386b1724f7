//! Writing a batch's plan to MongoDB, and the one place that decides what a
//! failed record becomes under `on_error`: a dead letter, a skip, or a stop.

use std::sync::atomic::Ordering;

use crate::config::OnError;
use crate::kafka::dlq::SendError;
use crate::mongo::sink::SinkError;
use crate::pipeline::plan::{Plan, rejected};
use crate::pipeline::retry::Retry;
use crate::pipeline::worker::WorkerCtx;
use crate::plugin::chain::ChainSpec;
use crate::record::{Failure, SourceRecord};

/// Write a batch's planned writes until acknowledged, and decide every failed
/// record. `Err` means the run must stop.
pub(super) async fn write_batch(
    ctx: &WorkerCtx,
    spec: &ChainSpec,
    records: &[SourceRecord],
    planned: Plan,
    log: &mut FailureLog,
) -> anyhow::Result<()> {
    let Plan { ops, op_source, failures, dropped, ordered } = planned;
    ctx.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
    decide(ctx, spec, records, &failures, log).await?;
    if ops.is_empty() {
        return Ok(());
    }
    let at = format!("{}:{}", records[0].topic, records[0].partition);
    // Counts this worker as failing while it retries (also if the task is aborted).
    let retry = Retry { gauge: Some(&ctx.health.sink_failing), ..ctx.retry("writing to MongoDB", &at) };
    let started = std::time::Instant::now();
    // Records MongoDB refused for good are decided below; anything else is retried.
    let ((report, rejections), _) = retry
        .run(|| async {
            match ctx.sink.write_ordered(&ops, ordered).await {
                Ok(report) => Ok((report, Vec::new())),
                Err(SinkError::Rejected { rejections, report }) => Ok((report, rejections)),
                Err(e) => Err(e),
            }
        })
        .await;
    ctx.stats.sink_write_seconds.observe(started.elapsed().as_secs_f64());
    ctx.stats.sink_write_documents.observe(ops.len() as f64);
    ctx.stats.written.fetch_add(report.inserted + report.upserted + report.deleted + report.replaced + report.updated, Ordering::Relaxed);
    ctx.stats.duplicates.fetch_add(report.duplicates, Ordering::Relaxed);
    if !rejections.is_empty() {
        decide(ctx, spec, records, &rejected(&rejections, &op_source), log).await?;
    }
    Ok(())
}

/// Failed records, logged per partition as one line at most every
/// [`FailureLog::EVERY`] (the first failure at once), never one per record
/// above debug: a bad stream does not flood the log.
pub(super) struct FailureLog {
    pub next: tokio::time::Instant,
    pub counts: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    last: Option<String>,
    where_: String,
}

impl FailureLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub(super) fn new(topic: &str, partition: i32) -> Self {
        FailureLog { next: tokio::time::Instant::now(), counts: Default::default(), last: None, where_: format!("{topic}:{partition}") }
    }

    fn note(&mut self, rec: &SourceRecord, f: &Failure, action: &'static str) {
        let plugin = f.plugin.as_deref().unwrap_or("-");
        tracing::debug!(topic = %rec.topic, partition = rec.partition, offset = rec.offset, kind = f.kind.as_str(), plugin, "record {action}: {}", f.message);
        *self.counts.entry((action, f.kind.as_str())).or_default() += 1;
        self.last = Some(format!("offset {} ({}, plugin {plugin}): {}", rec.offset, f.kind.as_str(), f.message));
        self.flush_if_due();
    }

    pub(super) fn flush_if_due(&mut self) {
        if !self.counts.is_empty() && tokio::time::Instant::now() >= self.next {
            self.flush();
        }
    }

    pub(super) fn flush(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let summary: Vec<String> = self.counts.iter().map(|((action, kind), n)| format!("{n} {action} ({kind})")).collect();
        tracing::warn!(partition = %self.where_, "failed records: {}; last: {}", summary.join(", "), self.last.take().unwrap_or_default());
        self.counts.clear();
        self.next = tokio::time::Instant::now() + Self::EVERY;
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
    let dlq = ctx.dlq.as_ref().expect("a DLQ producer exists under on_error = dead-letter");
    let at = format!("{}:{}@{}", rec.topic, rec.partition, rec.offset);
    let retry = Retry {
        gauge: Some(&ctx.health.dlq_failing),
        unhealthy_after: Some(ctx.dlq_unavailable_timeout),
        ..ctx.retry("sending the dead letter", &at)
    };
    // Once too large, always sent truncated.
    let truncated = std::sync::atomic::AtomicBool::new(false);
    retry
        .run(|| async {
            loop {
                let e = match dlq.send(rec, f, &spec.label, truncated.load(Ordering::Relaxed)).await {
                    Ok(()) => return Ok(()),
                    Err(SendError::TooLarge(e)) if !truncated.load(Ordering::Relaxed) => e,
                    Err(SendError::NoTopic(e)) => {
                        return Err(match dlq.recreate_topic(&rec.topic).await {
                            Ok(()) => format!("{e}; the topic was created again"),
                            Err(c) => format!("{e}; creating it failed: {c:#}"),
                        });
                    }
                    Err(e) => return Err(e.to_string()),
                };
                tracing::warn!(record = %at, "the dead letter is too large ({e}): sending it without its value and headers (sluice.error.truncated)");
                truncated.store(true, Ordering::Relaxed);
            }
        })
        .await;
}
