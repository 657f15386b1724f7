//! The status page (`GET /`, [`PAGE`]) and the one JSON answer it reads
//! (`GET /status`, [`render`]): readiness, the chain and its swap history,
//! what happened to records, failures by kind, dead letters, and per-partition
//! lag and throughput over the last minutes, which a [`Sampler`] records.
//!
//! Bounds: the sampler keeps [`KEEP`] points ([`KEEP`] × [`INTERVAL`] = 10
//! minutes) per assigned partition (24 bytes each: under 1 MB for 256
//! partitions). An answer carries the totals at every point and, per
//! partition, at most [`POINT_BUDGET`] / partitions points per series (one per
//! `step_secs`), numbers rounded: with 256 partitions it stays under
//! [`BOUND_256`] bytes whatever the values (checked below with 12-digit lags).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::plugin::swap::HotSwap;
use crate::record::FailureKind;
use crate::telemetry::{Health, Stats};

/// The page: plain HTML with its script and style inline; no data in it.
pub const PAGE: &str = include_str!("status.html");

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept per partition.
pub const KEEP: usize = 120;
/// Points per series (lag, throughput) across all partitions in one answer.
pub const POINT_BUDGET: usize = 6144;
/// Swap history entries in an answer (the newest).
pub const HISTORY: usize = 20;
/// The most bytes `/status` answers with 256 partitions (a chain of a few plugins).
pub const BOUND_256: usize = 192 * 1024;

/// The page's `Content-Security-Policy`: its own inline script and style (by
/// hash), requests to this address only, no forms sent anywhere, no framing.
pub static PAGE_CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self' data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash(PAGE, "script"),
        inline_hash(PAGE, "style")
    )
});

/// `'sha256-…'` of the text inside the page's `<tag>…</tag>`.
fn inline_hash(page: &str, tag: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let open = format!("<{tag}>");
    let start = page.find(&open).map(|i| i + open.len()).unwrap_or(0);
    let end = page[start..].find(&format!("</{tag}>")).map(|i| start + i).unwrap_or(start);
    let digest = sha2::Sha256::digest(&page.as_bytes()[start..end]);
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// One sample of one partition.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// Unix milliseconds.
    at_ms: u64,
    /// The next offset to write (everything before it is written); -1 until known.
    offset: i64,
    /// Records not yet written; -1 until known.
    lag: i64,
}

/// Per (topic, partition), its samples, oldest first.
type Rings = BTreeMap<(Arc<str>, i32), VecDeque<Point>>;

/// Per assigned partition, its last [`KEEP`] samples.
#[derive(Debug, Default)]
pub struct Sampler {
    rings: Mutex<Rings>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Sampler {
    /// Sample `stats` now and every [`INTERVAL`] until `cancel`.
    pub fn start(self: &Arc<Self>, stats: Arc<Stats>, cancel: CancellationToken) {
        let sampler = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => sampler.sample(&stats, unix_ms()),
                }
            }
        });
    }

    /// Record every assigned partition's offset and lag; forget the partitions no longer assigned.
    pub fn sample(&self, stats: &Stats, at_ms: u64) {
        let assigned: Vec<_> = stats.partitions.lock().unwrap().iter().map(|(k, g)| (k.clone(), g.state.clone())).collect();
        let mut rings = self.rings.lock().unwrap();
        rings.retain(|k, _| assigned.binary_search_by(|(a, _)| a.cmp(k)).is_ok());
        for (key, state) in assigned {
            let ring = rings.entry(key).or_insert_with(|| VecDeque::with_capacity(KEEP));
            if ring.len() == KEEP {
                ring.pop_front();
            }
            let lag = state.lag().map_or(-1, |l| l as i64);
            ring.push_back(Point { at_ms, offset: state.acked.load(Ordering::Relaxed), lag });
        }
    }
}

/// Records per second between two samples (`None` unless both offsets are known).
fn rate(a: &Point, b: &Point) -> Option<f64> {
    (a.offset >= 0 && b.offset >= a.offset && b.at_ms > a.at_ms).then(|| (b.offset - a.offset) as f64 * 1000.0 / (b.at_ms - a.at_ms) as f64)
}

/// A number as short as it can be said: integers from 100 on, one decimal below.
fn short(x: f64) -> Value {
    if x >= 100.0 || x.fract() == 0.0 { json!(x.round() as u64) } else { json!((x * 10.0).round() / 10.0) }
}

fn lag(p: &Point) -> Value {
    if p.lag >= 0 { json!(p.lag) } else { Value::Null }
}

/// The `/status` answer.
pub fn render(stats: &Stats, hot: &HotSwap, health: &Health, sampler: &Sampler) -> Value {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (generation, plugins) = hot.list();
    let failures: Vec<Value> = FailureKind::ALL
        .iter()
        .map(|k| {
            let i = *k as usize;
            json!({ "kind": k.as_str(), "skipped": n(&stats.skipped_by_kind[i]), "dead_lettered": n(&stats.dead_lettered_by_kind[i]) })
        })
        .collect();
    let gauges: BTreeMap<_, _> = stats.partitions.lock().unwrap().iter().map(|(k, g)| (k.clone(), g.clone())).collect();
    let rings = sampler.rings.lock().unwrap();
    let mut history = hot.history();
    history.drain(..history.len().saturating_sub(HISTORY));
    let mut answer = json!({
        "now": unix_ms() / 1000,
        "ready": health.readiness().is_ok(),
        "reason": health.readiness().err(),
        "generation": generation,
        "plugins": plugins,
        "history": history,
        "records": {
            "consumed": n(&stats.consumed),
            "written": n(&stats.written),
            "duplicates": n(&stats.duplicates),
            "dropped": n(&stats.dropped),
            "skipped": n(&stats.skipped),
            "dead_lettered": n(&stats.dead_lettered),
            "batches": n(&stats.batches),
            "retries": n(&stats.retries),
        },
        "failures": failures,
    });
    let (sampling, totals, partitions) = series(&rings, &gauges);
    answer["sampling"] = sampling;
    answer["totals"] = totals;
    answer["partitions"] = partitions;
    answer
}

type Gauges = BTreeMap<(Arc<str>, i32), Arc<crate::telemetry::PartitionGauges>>;

/// The sampling settings, the totals at every sample, and each partition with its series.
fn series(rings: &Rings, gauges: &Gauges) -> (Value, Value, Value) {
    // Every sample of every partition is taken at one of the sampler's ticks.
    let mut totals: BTreeMap<u64, (i64, Option<f64>)> = BTreeMap::new();
    for ring in rings.values() {
        for (i, p) in ring.iter().enumerate() {
            let t = totals.entry(p.at_ms).or_insert((0, None));
            t.0 += p.lag.max(0);
            if let Some(r) = i.checked_sub(1).and_then(|j| rate(&ring[j], p)) {
                t.1 = Some(t.1.unwrap_or(0.0) + r);
            }
        }
    }
    let step = (KEEP * rings.len().max(1)).div_ceil(POINT_BUDGET).max(1);
    let sampling = json!({
        "interval_secs": INTERVAL.as_secs(),
        "keep_secs": INTERVAL.as_secs() * KEEP as u64,
        "step_secs": INTERVAL.as_secs() * step as u64,
    });
    let totals = json!({
        "at": totals.keys().map(|t| t / 1000).collect::<Vec<_>>(),
        "lag": totals.values().map(|(l, _)| *l).collect::<Vec<_>>(),
        "rate": totals.values().map(|(_, r)| r.map(short)).collect::<Vec<_>>(),
    });
    let partitions = gauges
        .iter()
        .map(|((topic, partition), g)| {
            let state = &g.state;
            let mut row = json!({
                "topic": &**topic,
                "partition": partition,
                "offset": state.acked.load(Ordering::Relaxed),
                "high_watermark": state.high_watermark.load(Ordering::Relaxed),
                "lag": state.lag(),
                "queued": state.queued.load(Ordering::Relaxed),
                "generation": g.generation.load(Ordering::Relaxed),
            });
            let ring = rings.get(&(topic.clone(), *partition));
            // Oldest first, one point per `step` samples, ending with the last.
            let picked: Vec<usize> =
                ring.map(|r| (0..r.len()).rev().step_by(step).collect::<Vec<_>>().into_iter().rev().collect()).unwrap_or_default();
            let (mut lags, mut rates) = (Vec::with_capacity(picked.len()), Vec::with_capacity(picked.len()));
            if let Some(r) = ring {
                for &i in &picked {
                    lags.push(lag(&r[i]));
                    rates.push(i.checked_sub(step.min(i).max(1)).and_then(|j| rate(&r[j], &r[i])).map_or(Value::Null, short));
                }
            }
            row["rate"] = rates.last().cloned().unwrap_or(Value::Null);
            row["lag_series"] = Value::Array(lags);
            row["rate_series"] = Value::Array(rates);
            row
        })
        .collect();
    (sampling, totals, Value::Array(partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PartitionState, Since};
    use crate::telemetry::PartitionGauges;

    fn stats_with(partitions: i32) -> (Stats, Vec<Arc<PartitionState>>) {
        let stats = Stats::default();
        let mut states = Vec::new();
        for p in 0..partitions {
            let state = Arc::new(PartitionState::new(Some(0), Since::default()));
            states.push(state.clone());
            let gauges = Arc::new(PartitionGauges { state, generation: 1.into() });
            stats.partitions.lock().unwrap().insert((Arc::from("a-topic-name-of-forty-characters-or-so.x"), p), gauges);
        }
        (stats, states)
    }

    #[test]
    fn throughput_is_the_offset_delta_over_time_and_rings_are_bounded() {
        let (stats, states) = stats_with(2);
        let sampler = Sampler::default();
        for i in 0..(KEEP as u64 + 10) {
            states[0].acked.store(i as i64 * 50, Ordering::Relaxed); // 10 records/s at 5 s
            states[0].high_watermark.store(i as i64 * 50 + 7, Ordering::Relaxed);
            sampler.sample(&stats, 1_000_000 + i * 5000);
        }
        let rings = sampler.rings.lock().unwrap();
        assert!(rings.values().all(|r| r.len() == KEEP));
        let gauges: Gauges = stats.partitions.lock().unwrap().clone();
        let (sampling, totals, partitions) = series(&rings, &gauges);
        assert_eq!(sampling["step_secs"], 5);
        assert_eq!(partitions[0]["rate"], 10);
        assert_eq!(partitions[0]["lag"], 7);
        assert_eq!(partitions[0]["lag_series"].as_array().unwrap().len(), KEEP);
        assert_eq!(partitions[1]["rate"], 0, "a partition that does not move: 0 records/s");
        assert_eq!(totals["rate"].as_array().unwrap().last().unwrap(), 10);
        assert_eq!(totals["at"].as_array().unwrap().len(), KEEP);
        assert_eq!(totals["rate"][0], Value::Null, "no rate before the second sample");
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let (stats, _) = stats_with(3);
        let sampler = Sampler::default();
        sampler.sample(&stats, 1000);
        stats.partitions.lock().unwrap().retain(|(_, p), _| *p != 1);
        sampler.sample(&stats, 6000);
        let rings = sampler.rings.lock().unwrap();
        assert_eq!(rings.keys().map(|(_, p)| *p).collect::<Vec<_>>(), [0, 2]);
    }

    /// The stated bound, with values as long as they get: 256 partitions,
    /// 12-digit lags and offsets, throughput with decimals, a full ring.
    #[test]
    fn status_of_256_partitions_stays_within_its_bound() {
        let (stats, states) = stats_with(256);
        let sampler = Sampler::default();
        for i in 0..KEEP as i64 {
            for (p, s) in states.iter().enumerate() {
                s.acked.store(100_000_000_000 + i * (5 * 97 + p as i64), Ordering::Relaxed);
                s.high_watermark.store(900_000_000_000 + i * 1_000_003, Ordering::Relaxed);
            }
            sampler.sample(&stats, 1_700_000_000_000 + i as u64 * 5000);
        }
        let rings = sampler.rings.lock().unwrap();
        let gauges: Gauges = stats.partitions.lock().unwrap().clone();
        let (sampling, totals, partitions) = series(&rings, &gauges);
        let text = serde_json::to_string(&json!({ "sampling": sampling, "totals": totals, "partitions": partitions })).unwrap();
        // The rest of the answer (chain, the last 20 swaps, counters) is under 16 KB.
        assert!(text.len() + 16 * 1024 <= BOUND_256, "{} bytes", text.len());
        assert_eq!(sampling["step_secs"], 25);
        assert_eq!(partitions[0]["lag_series"].as_array().unwrap().len(), KEEP / 5);
    }

    #[test]
    fn the_page_policy_hashes_its_inline_script_and_style() {
        assert!(PAGE_CSP.contains("script-src 'sha256-"), "{}", *PAGE_CSP);
        assert!(PAGE_CSP.contains("style-src 'sha256-"), "{}", *PAGE_CSP);
        assert!(!PAGE.contains("innerHTML"), "the page inserts data as text only");
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        assert!(!page.contains(" src=") && !page.contains("http://") && !page.contains("https://"), "nothing from elsewhere");
    }
}
