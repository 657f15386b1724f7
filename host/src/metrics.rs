//! `/metrics`: the run's counters in the Prometheus text format (version 0.0.4).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::pipeline::{Health, Stats};
use crate::swap::HotSwap;

/// A metric family being written: `# HELP`, `# TYPE`, then samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
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

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(stats: &Stats, hot: &HotSwap, health: &Health) -> String {
    let mut o = Out(String::with_capacity(4096));
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    o.counter("sluice_records_consumed_total", "Records taken from Kafka by the partition workers.", n(&stats.consumed));
    o.counter("sluice_documents_written_total", "Documents MongoDB acknowledged (inserted, upserted or deleted).", n(&stats.written));
    o.counter(
        "sluice_documents_duplicate_total",
        "Inserts that found their _id already stored (replays after a crash).",
        n(&stats.duplicates),
    );
    o.counter("sluice_records_dropped_total", "Records the plugins filtered out.", n(&stats.dropped));
    o.counter("sluice_records_skipped_total", "Failed records skipped (on_error = skip).", n(&stats.skipped));
    o.counter("sluice_records_dead_lettered_total", "Failed records sent to the dead-letter topic.", n(&stats.dead_lettered));
    o.counter("sluice_batches_total", "Batches written.", n(&stats.batches));
    o.counter("sluice_retries_total", "Retried MongoDB writes and dead-letter sends.", n(&stats.retries));

    let spec = hot.current();
    o.family("sluice_chain_generation", "gauge", "The running plugin chain generation (1 at start, +1 per swap or reload).");
    o.sample("sluice_chain_generation", &[], spec.generation);
    o.family("sluice_plugin_info", "gauge", "The running plugin versions (content hash), by position in the chain.");
    for (i, p) in spec.plugins.iter().enumerate() {
        let position = i.to_string();
        o.sample("sluice_plugin_info", &[("plugin", &p.name), ("version", &p.version), ("position", &position)], 1);
    }
    o.family(
        "sluice_partition_chain_generation",
        "gauge",
        "Per assigned partition, the chain generation that made its last written batch (a swap's rollout).",
    );
    for ((topic, partition), generation) in stats.partition_generation.lock().unwrap().iter() {
        o.sample("sluice_partition_chain_generation", &[("topic", topic), ("partition", &partition.to_string())], *generation);
    }
    let counts = hot.counts();
    o.family("sluice_plugin_swaps_total", "counter", "Plugin versions swapped in, by trigger (file, api, rollback, reload).");
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
    o.family("sluice_ready", "gauge", "1 when /readyz answers 200.");
    o.sample("sluice_ready", &[], health.readiness().is_ok() as u64);
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut o = Out(String::new());
        o.sample("m", &[("a", "x\"y\\z\nw"), ("b", "c")], 3);
        assert_eq!(o.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 3\n");
    }
}
