//! The benchmark transform — parse `{"num": n}`, drop odd, add `square`,
//! serialise — as native Rust and as a plugin through the real host runtime
//! (the same function: `plugins/evensquare`), in batches of 1, 100 and 1000,
//! with the sandbox limits on (epoch deadline, memory cap), in ns per record.
//!
//!     make plugins && cargo bench -p sluice --bench transform
//!
//! Criterion measures each (batch, native|plugin) pair; the table at the end
//! divides the two estimates of each batch size (same run).

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use sluice::chain::{Chain, ChainSpec};
use sluice::config::PluginConfig;
use sluice::record::SourceRecord;
use sluice::runtime::Runtime;

const BATCHES: [usize; 3] = [1, 100, 1000];

fn records(n: usize) -> Vec<SourceRecord> {
    let topic: Arc<str> = Arc::from("bench");
    (0..n)
        .map(|i| SourceRecord {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
            timestamp: Some(1_700_000_000_000),
            key: None,
            value: Some(format!("{{\"num\":{}}}", 1_000_000 + i).into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

/// What the host needs back per record: the output document's JSON, or none (dropped).
fn native(batch: &[SourceRecord]) -> Vec<Option<Vec<u8>>> {
    batch
        .iter()
        .map(|r| {
            let doc: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            evensquare::evensquare(doc).unwrap().map(|d| serde_json::to_vec(&d).unwrap())
        })
        .collect()
}

fn plugin_chain() -> Chain {
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-unknown-unknown/release/evensquare.wasm");
    assert!(wasm.exists(), "{} missing: run `make plugins`", wasm.display());
    // Leaked: the runtime (engine, epoch ticker) lives for the whole benchmark.
    let rt: &'static Runtime = Box::leak(Box::new(Runtime::new().unwrap()));
    let plugin = rt.load(&PluginConfig::new("evensquare", wasm)).unwrap();
    Chain::new(Arc::new(ChainSpec::new(1, vec![plugin])), 1 << 20).unwrap()
}

fn main() {
    let mut c = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).configure_from_args();
    let mut chain = plugin_chain();
    // Both produce the same documents.
    let check = records(10);
    let results = chain.process(&check).unwrap();
    let from_plugin: Vec<Option<Vec<u8>>> = (0..results.len())
        .map(|i| match results.get(i) {
            Ok(o) => o.first().map(|o| results.document(o).to_vec()),
            Err(f) => panic!("{f:?}"),
        })
        .collect();
    assert_eq!(from_plugin, native(&check));

    for n in BATCHES {
        let batch = records(n);
        let mut g = c.benchmark_group(format!("transform/batch-{n}"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter("native"), |b| b.iter(|| native(std::hint::black_box(&batch))));
        g.bench_function(BenchmarkId::from_parameter("plugin"), |b| b.iter(|| chain.process(std::hint::black_box(&batch)).unwrap()));
        g.finish();
    }
    c.final_summary();

    // The same comparison interleaved: each round times native then plugin on
    // the same batch, so whatever else the machine does weighs on both; the
    // median of the rounds' ratios is the figure to quote.
    // Where the plugin's time goes: the call alone (lowering, the guest's work,
    // lifting; no chain bookkeeping), and the chain with no limits at all.
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-unknown-unknown/release/evensquare.wasm");
    let plugin = chain.spec().plugins[0].clone();
    let mut instance = plugin.instantiate().unwrap();
    let unlimited: &'static Runtime = Box::leak(Box::new(Runtime::with_call_limit(sluice::runtime::CallLimit::Unlimited).unwrap()));
    let mut chain_unlimited =
        Chain::new(Arc::new(ChainSpec::new(1, vec![unlimited.load(&PluginConfig::new("evensquare", wasm)).unwrap()])), 1 << 20).unwrap();
    println!("\n| batch | rounds | median plugin / native (interleaved) | min | max | call alone / native | limits off / native |");
    println!("|---|---|---|---|---|---|---|");
    // `cargo test --all-targets` runs this too (without `--bench`): one quick round then.
    let quick = !std::env::args().any(|a| a == "--bench");
    for n in BATCHES {
        let batch = records(n);
        let mut columns = sluice::runtime::Batch::new("bench", 0);
        for r in &batch {
            columns.push(r.offset, r.timestamp, None, r.value.as_deref(), &[]);
        }
        let reps = if quick { 1 } else { (20_000 / n).max(20) };
        let time = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64()
        };
        let (mut ratios, mut call, mut off) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..if quick { 1 } else { 31 } {
            let a = time(&mut || {
                std::hint::black_box(native(std::hint::black_box(&batch)));
            });
            let b = time(&mut || {
                std::hint::black_box(chain.process(std::hint::black_box(&batch)).unwrap());
            });
            let c = time(&mut || {
                std::hint::black_box(instance.process(std::hint::black_box(&columns)).unwrap());
            });
            let d = time(&mut || {
                std::hint::black_box(chain_unlimited.process(std::hint::black_box(&batch)).unwrap());
            });
            ratios.push(b / a);
            call.push(c / a);
            off.push(d / a);
        }
        for v in [&mut ratios, &mut call, &mut off] {
            v.sort_by(f64::total_cmp);
        }
        let m = |v: &[f64]| v[v.len() / 2];
        println!(
            "| {n} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ratios.len(),
            m(&ratios),
            ratios[0],
            ratios[ratios.len() - 1],
            m(&call),
            m(&off)
        );
    }

    // The ratio table, from criterion's estimates of this run.
    let dir = criterion_dir();
    println!("\n| batch | native ns/record | plugin ns/record | plugin / native |");
    println!("|---|---|---|---|");
    for n in BATCHES {
        let est = |f: &str| -> Option<f64> {
            let path = dir.join(format!("transform_batch-{n}")).join(f).join("new/estimates.json");
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            Some(v["mean"]["point_estimate"].as_f64()? / n as f64)
        };
        match (est("native"), est("plugin")) {
            (Some(a), Some(b)) => println!("| {n} | {a:.0} | {b:.0} | {:.2} |", b / a),
            _ => println!("| {n} | - | - | (no estimates in {}) |", dir.display()),
        }
    }
}

/// Where criterion writes: `$CARGO_TARGET_DIR/criterion`, else `target/criterion`
/// next to this benchmark's executable.
fn criterion_dir() -> std::path::PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return std::path::PathBuf::from(d).join("criterion");
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| "target/criterion".into())
}
