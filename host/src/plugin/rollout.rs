//! Rollouts: a candidate version of one plugin run beside the live one before
//! it replaces it.
//!
//! - **Shadow**: on a share of the batches, the candidate chain runs the same
//!   records after the live chain; its outputs are compared with the live ones
//!   and never written. Differences are counted and the first few kept as
//!   samples.
//! - **Canary**: the candidate chain runs the batches of some partitions on
//!   this host (their documents are written); the others stay on the live one.
//!
//! A rollout is part of a chain generation ([`ChainSpec::rollout`]): workers
//! pick it up at a batch boundary like any swap, so a batch (and each source
//! record's documents) comes from exactly one version, and a canary partition
//! changes version only at a recorded offset. The counters live here, shared
//! by every worker; the decisions (start, widen, promote, abort, the automatic
//! rollback) are [`HotSwap`](crate::plugin::swap::HotSwap)'s.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::plugin::chain::{ChainSpec, Results};

/// Differences kept as samples per rollout (the rest are only counted).
pub const MAX_SAMPLES: usize = 20;
/// Switch offsets kept per rollout (a canary on many partitions, widened often).
pub const MAX_SWITCHES: usize = 1024;
/// Bytes of one side of a sample kept (a document may be large).
const MAX_SAMPLE_BYTES: usize = 4096;

/// How a candidate runs beside the live version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// On `share` of each partition's batches (0 < share ≤ 1), after the live
    /// chain; compared, never written.
    Shadow { share: f64 },
    /// The candidate runs these partitions (of every topic) on this host.
    Canary { partitions: BTreeSet<i32> },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Shadow { .. } => "shadow",
            Mode::Canary { .. } => "canary",
        }
    }
}

/// When a rollout rolls itself back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRule {
    /// The candidate's failure rate (failed records / records it ran) above
    /// which it is rolled back, 0–1.
    pub max_failure_rate: f64,
    /// Records the candidate must have run before the rate counts.
    pub min_records: u64,
    /// The rate is taken above the live version's own on the same records
    /// (shadow) or on the other partitions (canary): `true` rolls back only
    /// when the candidate fails more than the live version by the rate.
    #[serde(default)]
    pub over_live: bool,
}

impl RollbackRule {
    /// Why the rule trips on `stats`, if it does.
    pub fn tripped(&self, stats: &RolloutStats) -> Option<String> {
        let records = stats.records.load(Ordering::Relaxed);
        if records < self.min_records.max(1) {
            return None;
        }
        let rate = stats.candidate_failures.load(Ordering::Relaxed) as f64 / records as f64;
        let live = if self.over_live { stats.live_rate() } else { 0.0 };
        (rate > live + self.max_failure_rate).then(|| {
            let base = if self.over_live { format!(" over the live version's {:.1}%", live * 100.0) } else { String::new() };
            format!(
                "candidate failure rate {:.1}% ({} of {records} records){base} exceeds {:.1}%",
                rate * 100.0,
                stats.candidate_failures.load(Ordering::Relaxed),
                self.max_failure_rate * 100.0
            )
        })
    }
}

/// One rollout: the candidate, how it runs, and what it did so far.
#[derive(Debug)]
pub struct Rollout {
    pub id: u64,
    pub plugin: String,
    /// The live version when it started.
    pub from: String,
    /// The candidate's version.
    pub version: String,
    pub mode: Mode,
    pub rule: Option<RollbackRule>,
    /// Unix seconds.
    pub started: u64,
    /// The chain with the candidate in the plugin's place.
    pub candidate: Arc<ChainSpec>,
    /// Shared by every generation of the rollout (widening keeps the counts).
    pub stats: Arc<RolloutStats>,
}

impl Rollout {
    /// Does the candidate run `partition`'s batches (canary)?
    pub fn runs(&self, partition: i32) -> bool {
        matches!(&self.mode, Mode::Canary { partitions } if partitions.contains(&partition))
    }

    /// Shadow: does the candidate shadow a worker's `batch`-th batch (counted
    /// from 0)? Spread evenly: `share` 0.1 is every tenth batch.
    pub fn shadows(&self, batch: u64) -> bool {
        match self.mode {
            Mode::Shadow { share } => ((batch + 1) as f64 * share).floor() > (batch as f64 * share).floor(),
            Mode::Canary { .. } => false,
        }
    }
}

/// What a rollout's candidate did; every worker adds to it.
#[derive(Debug, Default)]
pub struct RolloutStats {
    /// Records the candidate ran (shadow: compared; canary: processed).
    pub records: AtomicU64,
    pub candidate_failures: AtomicU64,
    /// Shadow: the live version's failures on the same records; canary: on
    /// the records of the other partitions (with `live_records`).
    pub live_failures: AtomicU64,
    pub live_records: AtomicU64,
    /// Shadow: records whose candidate outputs (or failure) differ from the live ones.
    pub differences: AtomicU64,
    /// Shadow: time the candidate's runs took (its extra CPU), nanoseconds.
    pub candidate_nanos: AtomicU64,
    pub samples: Mutex<Vec<Sample>>,
    pub switches: Mutex<Vec<Switch>>,
    /// Set once by the worker that saw the rule trip (one rollback request).
    pub tripped: AtomicBool,
}

impl RolloutStats {
    fn live_rate(&self) -> f64 {
        let n = self.live_records.load(Ordering::Relaxed);
        if n == 0 { 0.0 } else { self.live_failures.load(Ordering::Relaxed) as f64 / n as f64 }
    }

    /// Compare a shadowed batch's results, record by record (same records, same order).
    pub fn compare(&self, records: &[crate::record::SourceRecord], live: &Results, candidate: &Results, nanos: u64) {
        let mut differences = 0;
        let (mut live_failed, mut candidate_failed) = (0, 0);
        for (i, r) in records.iter().enumerate() {
            live_failed += u64::from(live.get(i).is_err());
            candidate_failed += u64::from(candidate.get(i).is_err());
            if !same_record(live, candidate, i) {
                differences += 1;
                let mut samples = self.samples.lock().unwrap();
                if samples.len() < MAX_SAMPLES {
                    samples.push(Sample {
                        topic: r.topic.to_string(),
                        partition: r.partition,
                        offset: r.offset,
                        live: describe(live, i),
                        candidate: describe(candidate, i),
                    });
                }
            }
        }
        let n = records.len() as u64;
        self.records.fetch_add(n, Ordering::Relaxed);
        self.live_records.fetch_add(n, Ordering::Relaxed);
        self.live_failures.fetch_add(live_failed, Ordering::Relaxed);
        self.candidate_failures.fetch_add(candidate_failed, Ordering::Relaxed);
        self.differences.fetch_add(differences, Ordering::Relaxed);
        self.candidate_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A batch one of the chains ran for real (canary): `candidate` when the candidate's.
    pub fn ran(&self, results: &Results, candidate: bool) {
        let failed = (0..results.len()).filter(|&i| results.get(i).is_err()).count() as u64;
        let (records, failures) =
            if candidate { (&self.records, &self.candidate_failures) } else { (&self.live_records, &self.live_failures) };
        records.fetch_add(results.len() as u64, Ordering::Relaxed);
        failures.fetch_add(failed, Ordering::Relaxed);
    }

    /// A partition changed version at `offset` (its first record under `to`).
    pub fn switched(&self, topic: &str, partition: i32, offset: i64, to: &str, at: u64) {
        let mut switches = self.switches.lock().unwrap();
        if switches.len() < MAX_SWITCHES {
            switches.push(Switch { topic: topic.to_owned(), partition, offset, to: to.to_owned(), at });
        }
    }
}

/// A record whose candidate result differs from the live one.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `{"outputs": [...]}` or `{"failure": {...}}`.
    pub live: Value,
    pub candidate: Value,
}

/// Where a partition changed version.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    pub topic: String,
    pub partition: i32,
    /// The first record the new version ran.
    pub offset: i64,
    /// The chain label it switched to.
    pub to: String,
    pub at: u64,
}

/// Record `i` made the same writes (or failed the same way) in both results.
/// Documents are compared as JSON values: the same document with its keys in
/// another order is no difference.
fn same_record(a: &Results, b: &Results, i: usize) -> bool {
    match (a.get(i), b.get(i)) {
        (Err(x), Err(y)) => x.kind == y.kind,
        (Ok(x), Ok(y)) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|(o, p)| {
                    o.op == p.op
                        && o.collection == p.collection
                        && o.upsert == p.upsert
                        && same_json(a.document(o), b.document(p))
                        && match (a.filter(o), b.filter(p)) {
                            (Some(f), Some(g)) => same_json(f, g),
                            (None, None) => true,
                            _ => false,
                        }
                })
        }
        _ => false,
    }
}

fn same_json(a: &[u8], b: &[u8]) -> bool {
    a == b || matches!((serde_json::from_slice::<Value>(a), serde_json::from_slice::<Value>(b)), (Ok(x), Ok(y)) if x == y)
}

/// Record `i`'s result for a sample: its writes, or its failure.
fn describe(results: &Results, i: usize) -> Value {
    let text = |bytes: &[u8]| -> Value {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) if bytes.len() <= MAX_SAMPLE_BYTES => v,
            _ => {
                let s = String::from_utf8_lossy(bytes);
                let cut: String = s.chars().take(MAX_SAMPLE_BYTES).collect();
                Value::String(if cut.len() < s.len() { format!("{cut}… ({} bytes)", bytes.len()) } else { cut })
            }
        }
    };
    match results.get(i) {
        Err(f) => json!({ "failure": { "kind": f.kind.as_str(), "plugin": f.plugin, "message": f.message } }),
        Ok(outputs) => {
            let outputs: Vec<Value> = outputs
                .iter()
                .map(|o| {
                    let mut w = json!({ "op": o.op.name(), "document": text(results.document(o)) });
                    if let Some(f) = results.filter(o) {
                        w["filter"] = text(f);
                    }
                    if let Some(c) = &o.collection {
                        w["collection"] = json!(c);
                    }
                    if o.upsert {
                        w["upsert"] = json!(true);
                    }
                    w
                })
                .collect();
            json!({ "outputs": outputs })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::chain::ChainOutput;
    use crate::record::{Failure, FailureKind, Op};

    fn results(docs: &[Option<&str>]) -> Results {
        let mut r = Results::default();
        for d in docs {
            match d {
                Some(d) => {
                    let start = r.data.len();
                    r.data.extend_from_slice(d.as_bytes());
                    r.outputs.push(ChainOutput::new(Op::Insert, None, start..r.data.len()));
                    r.records.push(Ok(r.outputs.len() - 1..r.outputs.len()));
                }
                None => r.records.push(Err(Failure {
                    plugin: Some("p".into()),
                    plugin_version: Some("v".into()),
                    kind: FailureKind::PluginError,
                    message: "no".into(),
                })),
            }
        }
        r
    }

    fn recs(n: usize) -> Vec<crate::record::SourceRecord> {
        (0..n)
            .map(|i| crate::record::SourceRecord {
                topic: "t".into(),
                partition: 3,
                offset: i as i64,
                timestamp: None,
                key: None,
                value: Some(b"{}".to_vec()),
                headers: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn differences_are_counted_and_sampled() {
        let live = results(&[Some(r#"{"a":1,"b":2}"#), Some(r#"{"a":2}"#), Some(r#"{"a":3}"#), None]);
        let cand = results(&[Some(r#"{"b":2,"a":1}"#), Some(r#"{"a":20}"#), None, None]);
        let stats = RolloutStats::default();
        stats.compare(&recs(4), &live, &cand, 5);
        assert_eq!(stats.records.load(Ordering::Relaxed), 4);
        assert_eq!(stats.differences.load(Ordering::Relaxed), 2, "key order is no difference; equal failures are none");
        assert_eq!((stats.live_failures.load(Ordering::Relaxed), stats.candidate_failures.load(Ordering::Relaxed)), (1, 2));
        let samples = stats.samples.lock().unwrap();
        assert_eq!(samples.iter().map(|s| s.offset).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(samples[0].live, json!({"outputs": [{"op": "insert", "document": {"a": 2}}]}));
        assert_eq!(samples[1].candidate["failure"]["kind"], "plugin-error");
    }

    #[test]
    fn the_rule_trips_on_rate_after_enough_records() {
        let rule = RollbackRule { max_failure_rate: 0.2, min_records: 10, over_live: false };
        let stats = RolloutStats::default();
        stats.ran(&results(&[None, None, None, None, None]), true);
        assert_eq!(rule.tripped(&stats), None, "5 records are not enough");
        stats.ran(&results(&[Some("{}"); 5]), true);
        assert!(rule.tripped(&stats).unwrap().contains("50.0% (5 of 10 records)"));
        let over = RollbackRule { over_live: true, ..rule };
        stats.ran(&results(&[None, None, None, Some("{}")]), false);
        assert_eq!(over.tripped(&stats), None, "the live version fails 75% of its own records");
    }

    #[test]
    fn shadow_shares_spread_over_batches() {
        let count = |share: f64| (0..100).filter(|&b| shadows(share, b)).count();
        assert_eq!((count(1.0), count(0.1), count(0.25), count(0.01)), (100, 10, 25, 1));
    }

    fn shadows(share: f64, batch: u64) -> bool {
        let spec = Arc::new(ChainSpec::new(1, Vec::new()));
        let r = Rollout {
            id: 1,
            plugin: "p".into(),
            from: "a".into(),
            version: "b".into(),
            mode: Mode::Shadow { share },
            rule: None,
            started: 0,
            candidate: spec,
            stats: Default::default(),
        };
        r.shadows(batch)
    }
}
