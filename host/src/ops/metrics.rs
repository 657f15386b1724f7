//! `/metrics`: the run's counters in the Prometheus text format (version 0.0.4).
//!
//! Names follow Prometheus conventions: `sluice_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters. Lock-free [`Histogram`]s are
//! observed on the hot path (one per plugin call and per sink write, never per
//! record).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::plugin::swap::HotSwap;
use crate::telemetry::{Health, Histogram, Stats};

/// A metric family being written: `# HELP`, `# TYPE`, then samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_str(name, labels, &value.to_string());
    }

    fn sample_f(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_str(name, labels, &value.to_string());
    }

    fn sample_str(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }
}

/// A histogram's samples: cumulative buckets, sum and count.
fn render_histogram(h: &Histogram, o: &mut Out, name: &str, labels: &[(&str, &str)]) {
    let mut cumulative = 0;
    let bucket = format!("{name}_bucket");
    for (i, b) in h.bounds().iter().map(|b| b.to_string()).chain(["+Inf".to_owned()]).enumerate() {
        cumulative += h.bucket(i);
        let mut l = labels.to_vec();
        l.push(("le", &b));
        o.sample(&bucket, &l, cumulative);
    }
    o.sample_f(&format!("{name}_sum"), labels, h.sum());
    o.sample(&format!("{name}_count"), labels, h.count());
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(stats: &Stats, hot: &HotSwap, health: &Health) -> String {
    let mut o = Out(String::with_capacity(8192));
    records(&mut o, stats);
    chain(&mut o, stats, hot);
    partitions(&mut o, stats);
    swaps_and_health(&mut o, hot, health);
    o.0
}

fn n(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// What happened to records and batches, and the writes' histograms.
fn records(o: &mut Out, stats: &Stats) {
    use crate::record::FailureKind;
    o.counter("sluice_records_consumed_total", "Records taken from Kafka by the partition workers.", n(&stats.consumed));
    o.counter("sluice_documents_written_total", "Documents MongoDB acknowledged (inserted, upserted or deleted).", n(&stats.written));
    o.counter(
        "sluice_documents_duplicate_total",
        "Inserts that found their _id already stored (replays after a crash).",
        n(&stats.duplicates),
    );
    o.counter("sluice_records_dropped_total", "Records the plugins filtered out.", n(&stats.dropped));
    o.family("sluice_records_dead_lettered_total", "counter", "Failed records sent to the dead-letter topic, by failure kind.");
    for kind in FailureKind::ALL {
        o.sample("sluice_records_dead_lettered_total", &[("kind", kind.as_str())], n(&stats.dead_lettered_by_kind[kind as usize]));
    }
    o.family("sluice_records_skipped_total", "counter", "Failed records skipped (on_error = skip), by failure kind.");
    for kind in FailureKind::ALL {
        o.sample("sluice_records_skipped_total", &[("kind", kind.as_str())], n(&stats.skipped_by_kind[kind as usize]));
    }
    o.counter("sluice_batches_total", "Batches written.", n(&stats.batches));
    o.counter("sluice_retries_total", "Retried MongoDB writes and dead-letter sends.", n(&stats.retries));
    o.family("sluice_kafka_commits_total", "counter", "Offset commits to Kafka (automatic and on drain), by result.");
    o.sample("sluice_kafka_commits_total", &[("result", "ok")], n(&stats.commits.ok));
    o.sample("sluice_kafka_commits_total", &[("result", "error")], n(&stats.commits.failed));

    o.family(
        "sluice_sink_write_duration_seconds",
        "histogram",
        "Time to write one batch to MongoDB until acknowledged (retries included).",
    );
    render_histogram(&stats.sink_write_seconds, o, "sluice_sink_write_duration_seconds", &[]);
    o.family("sluice_sink_write_documents", "histogram", "Documents per batch write.");
    render_histogram(&stats.sink_write_documents, o, "sluice_sink_write_documents", &[]);
}

/// Plugin calls and the running chain.
fn chain(o: &mut Out, stats: &Stats, hot: &HotSwap) {
    let plugins = stats.plugins.lock().unwrap().clone();
    o.family("sluice_plugin_call_duration_seconds", "histogram", "Time of one plugin call (one batch through one plugin).");
    for (name, m) in &plugins {
        render_histogram(&m.call_seconds, o, "sluice_plugin_call_duration_seconds", &[("plugin", name)]);
    }
    o.family("sluice_plugin_call_records", "histogram", "Records given to one plugin call.");
    for (name, m) in &plugins {
        render_histogram(&m.call_records, o, "sluice_plugin_call_records", &[("plugin", name)]);
    }

    let spec = hot.current();
    o.family("sluice_chain_generation", "gauge", "The running plugin chain generation (1 at start, +1 per swap or reload).");
    o.sample("sluice_chain_generation", &[], spec.generation);
    o.family("sluice_plugin_info", "gauge", "The running plugin versions (content hash), by position in the chain.");
    for (i, p) in spec.plugins.iter().enumerate() {
        let position = i.to_string();
        o.sample("sluice_plugin_info", &[("plugin", &p.name), ("version", &p.version), ("position", &position)], 1);
    }
}

/// Per assigned partition: generation, lag, queue.
fn partitions(o: &mut Out, stats: &Stats) {
    let partitions: Vec<_> = stats.partitions.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    o.family(
        "sluice_partition_chain_generation",
        "gauge",
        "Per assigned partition, the chain generation that made its last written batch (before the first: the one it started with).",
    );
    for ((topic, partition), p) in &partitions {
        o.sample("sluice_partition_chain_generation", &[("topic", topic), ("partition", &partition.to_string())], n(&p.generation));
    }
    o.family(
        "sluice_consumer_lag",
        "gauge",
        "Per assigned partition, records not yet written to MongoDB: the broker's high watermark minus the next offset to write.",
    );
    for ((topic, partition), p) in &partitions {
        if let Some(lag) = p.state.lag() {
            o.sample("sluice_consumer_lag", &[("topic", topic), ("partition", &partition.to_string())], lag);
        }
    }
    o.family(
        "sluice_partition_queued_records",
        "gauge",
        "Per assigned partition, records fetched and not yet written (at max_queued_per_partition the partition is paused).",
    );
    for ((topic, partition), p) in &partitions {
        o.sample(
            "sluice_partition_queued_records",
            &[("topic", topic), ("partition", &partition.to_string())],
            p.state.queued.load(Ordering::Relaxed) as u64,
        );
    }
    o.family(
        "sluice_partition_queued_bytes",
        "gauge",
        "Per assigned partition, the bytes those records count for (key, value, headers + 128 each; max_queued_bytes_per_partition pauses).",
    );
    for ((topic, partition), p) in &partitions {
        o.sample(
            "sluice_partition_queued_bytes",
            &[("topic", topic), ("partition", &partition.to_string())],
            p.state.queued_bytes.load(Ordering::Relaxed) as u64,
        );
    }
}

/// Hot swaps, readiness and the dead-letter topic's availability.
fn swaps_and_health(o: &mut Out, hot: &HotSwap, health: &Health) {
    let counts = hot.counts();
    o.family("sluice_plugin_swaps_total", "counter", "Plugin versions swapped in, by trigger (file, api, rollback, reload, promote).");
    for (plugin, trigger, v) in &counts.swaps {
        o.sample("sluice_plugin_swaps_total", &[("plugin", plugin), ("trigger", trigger.as_str())], *v);
    }
    o.family(
        "sluice_plugin_swap_rejections_total",
        "counter",
        "New versions or reloads refused by validation (the running version stayed); plugin \"-\" = the config file.",
    );
    for (plugin, trigger, v) in &counts.rejections {
        o.sample("sluice_plugin_swap_rejections_total", &[("plugin", plugin), ("trigger", trigger.as_str())], *v);
    }
    o.counter(
        "sluice_plugin_file_checks_total",
        "Times the watcher had plugin files read after a change in their directory.",
        counts.file_checks,
    );
    rollouts(o, hot);
    o.family("sluice_ready", "gauge", "1 when /readyz answers 200.");
    o.sample("sluice_ready", &[], health.readiness().is_ok() as u64);
    o.family(
        "sluice_dlq_unavailable",
        "gauge",
        "Partitions waiting longer than dlq.unavailable_timeout for a dead letter to be sent (nothing is committed past it).",
    );
    o.sample("sluice_dlq_unavailable", &[], health.dlq_failing.load(std::sync::atomic::Ordering::Relaxed) as u64);
}

/// The running rollout's counts (labelled by plugin and mode) and rollouts ended.
fn rollouts(o: &mut Out, hot: &HotSwap) {
    let view = hot.rollouts();
    let families = [
        ("sluice_rollout_records", "Records the running rollout's candidate ran (shadow: compared; canary: processed)."),
        ("sluice_rollout_differences", "Shadow: records whose candidate outputs differ from the live ones."),
        ("sluice_rollout_candidate_failures", "Records the running rollout's candidate failed."),
    ];
    for (i, (name, help)) in families.into_iter().enumerate() {
        o.family(name, "gauge", help);
        if let Some(r) = &view.current {
            let v = [r.records, r.differences, r.candidate_failures][i];
            o.sample(name, &[("plugin", &r.plugin), ("mode", r.mode.name()), ("rollout", &r.id.to_string())], v);
        }
    }
    o.family(
        "sluice_rollouts_ended_total",
        "counter",
        "Rollouts ended, by how: promoted, aborted, rolled-back (its rule tripped), superseded.",
    );
    for (state, v) in hot.rollout_ends() {
        o.sample("sluice_rollouts_ended_total", &[("state", state)], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 1.0, 3.0, 7.0] {
            h.observe(v);
        }
        let mut o = Out(String::new());
        render_histogram(&h, &mut o, "x", &[("p", "a")]);
        assert_eq!(
            o.0,
            "x_bucket{p=\"a\",le=\"1\"} 2\nx_bucket{p=\"a\",le=\"5\"} 3\nx_bucket{p=\"a\",le=\"+Inf\"} 4\nx_sum{p=\"a\"} 11.5\nx_count{p=\"a\"} 4\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut o = Out(String::new());
        o.sample("m", &[("a", "x\"y\\z\nw"), ("b", "c")], 3);
        assert_eq!(o.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 3\n");
    }
}
