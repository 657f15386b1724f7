//! Telemetry, below every layer that reports: what `/readyz` and `/metrics`
//! read ([`Health`], [`Stats`], [`Histogram`]), filled in by the Kafka, plugin
//! and MongoDB layers and the pipeline, rendered by [`crate::ops::metrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::record::PartitionState;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// The group has assigned this host its partitions (possibly none) at least once.
    pub joined: Arc<AtomicBool>,
    /// Shutdown has begun.
    pub stopping: AtomicBool,
    /// Partition workers currently retrying a failed MongoDB write.
    pub sink_failing: AtomicUsize,
    /// Partition workers whose dead letter has not been sent for longer than `dlq.unavailable_timeout`.
    pub dlq_failing: AtomicUsize,
    /// Partition workers waiting for the schema registry (retrying).
    pub registry_failing: AtomicUsize,
}

impl Health {
    /// `Err` says why this host is not ready.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            Err("shutting down")
        } else if !self.joined.load(Ordering::Relaxed) {
            Err("not yet assigned partitions by the consumer group")
        } else if self.sink_failing.load(Ordering::Relaxed) > 0 {
            Err("MongoDB writes are failing (retrying)")
        } else if self.registry_failing.load(Ordering::Relaxed) > 0 {
            Err("the schema registry is unavailable (retrying; nothing is committed past it)")
        } else if self.dlq_failing.load(Ordering::Relaxed) > 0 {
            Err("dead letters cannot be sent (retrying; nothing is committed past them)")
        } else {
            Ok(())
        }
    }
}

/// Counters and histograms of a run (what `/metrics` shows).
#[derive(Debug)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    pub dropped: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// By [`crate::record::FailureKind`] (`kind as usize`).
    pub skipped_by_kind: [AtomicU64; 8],
    pub dead_lettered_by_kind: [AtomicU64; 8],
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub commits: Arc<CommitCounts>,
    pub sink_write_seconds: Histogram,
    pub sink_write_documents: Histogram,
    /// Per plugin name.
    pub plugins: std::sync::Mutex<std::collections::BTreeMap<String, Arc<PluginMetrics>>>,
    /// Per assigned partition.
    pub partitions: std::sync::Mutex<std::collections::BTreeMap<(Arc<str>, i32), Arc<PartitionGauges>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            consumed: AtomicU64::new(0),
            written: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            skipped_by_kind: Default::default(),
            dead_lettered_by_kind: Default::default(),
            batches: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            commits: Default::default(),
            sink_write_seconds: Histogram::new(SECONDS),
            sink_write_documents: Histogram::new(COUNTS),
            plugins: Default::default(),
            partitions: Default::default(),
        }
    }
}

impl Stats {
    /// Where plugin `name`'s calls are measured.
    pub fn plugin(&self, name: &str) -> Arc<PluginMetrics> {
        self.plugins.lock().unwrap().entry(name.to_owned()).or_default().clone()
    }
}

/// What `/metrics` shows of one assigned partition.
#[derive(Debug)]
pub struct PartitionGauges {
    /// Offsets (written, high watermark) and queue.
    pub state: Arc<PartitionState>,
    /// The chain generation that made its last written batch (how far a swap has rolled out);
    /// before the first, the one the partition's worker started with.
    pub generation: AtomicU64,
}

/// Offset commits, as librdkafka reports them.
#[derive(Debug, Default)]
pub struct CommitCounts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// A histogram with fixed bucket bounds; observing is a few atomic adds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for `+Inf`.
    buckets: Vec<AtomicU64>,
    /// The sum's bits (f64), updated by compare-and-swap.
    sum: AtomicU64,
    count: AtomicU64,
}

/// Seconds, for calls and writes: 100 µs to 10 s.
pub const SECONDS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Items per call or write.
pub const COUNTS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Observations in bucket `i` (not cumulative; the last is `+Inf`).
    pub fn bucket(&self, i: usize) -> u64 {
        self.buckets[i].load(Ordering::Relaxed)
    }
}

/// What is measured per plugin (by name, across versions).
#[derive(Debug)]
pub struct PluginMetrics {
    /// Wall time of one call (one batch through this plugin).
    pub call_seconds: Histogram,
    /// Records given to one call.
    pub call_records: Histogram,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        PluginMetrics { call_seconds: Histogram::new(SECONDS), call_records: Histogram::new(COUNTS) }
    }
}
