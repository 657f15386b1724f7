//! What the sandbox limits cost per record: the `even → enrich` chain and the
//! `passthrough` plugin through the real runtime, in batches of 1, 100 and 1000,
//! with epoch deadlines + memory cap (what Sluice runs), with fuel instead, and
//! with no limits at all. One run, ratios against the unlimited baseline.
//!
//!     make plugins && cargo bench -p sluice --bench limits
//!
//! (Plain `harness = false` benchmark: it prints a table; numbers vary between
//! machines, the ratios much less.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sluice::chain::{Chain, ChainSpec};
use sluice::config::PluginConfig;
use sluice::record::SourceRecord;
use sluice::runtime::{CallLimit, LoadedPlugin, Runtime};

fn wasm(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-unknown-unknown/release").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} missing: run `make plugins`", p.display());
    p
}

fn load(rt: &Runtime, names: &[&str]) -> Vec<Arc<LoadedPlugin>> {
    names.iter().map(|n| rt.load(&PluginConfig::new(*n, wasm(n))).unwrap()).collect()
}

fn records(n: usize) -> Vec<SourceRecord> {
    let topic: Arc<str> = Arc::from("bench");
    (0..n)
        .map(|i| SourceRecord {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
            timestamp: Some(1_700_000_000_000),
            key: None,
            value: Some(format!("{{\"num\":{i}}}").into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

/// ns per record over `total` records in batches of `batch`.
fn measure(chain: &mut Chain, batch: usize, total: usize) -> f64 {
    let recs = records(batch);
    // Warm up.
    for _ in 0..(2000 / batch).max(3) {
        chain.process(&recs).unwrap();
    }
    let rounds = (total / batch).max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(chain.process(&recs).unwrap());
    }
    t.elapsed().as_nanos() as f64 / (rounds * batch) as f64
}

fn main() {
    // `cargo test --all-targets` runs this too (without `--bench`): a quick smoke run then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let modes = [CallLimit::Unlimited, CallLimit::Epoch, CallLimit::Fuel(u64::MAX / 2)];
    let chains: [&[&str]; 2] = [&["passthrough"], &["even", "enrich"]];
    println!("| chain | batch | unlimited ns/rec | epoch+memory ns/rec | ratio | fuel+memory ns/rec | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for names in chains {
        for batch in [1usize, 100, 1000] {
            let total = match (quick, batch) {
                (true, _) => batch * 3,
                (false, 1) => 50_000,
                (false, _) => 300_000,
            };
            let mut ns = Vec::new();
            for mode in modes {
                let rt = Runtime::with_call_limit(mode).unwrap();
                let plugins = load(&rt, names);
                let mut chain = Chain::new(Arc::new(ChainSpec::new(1, plugins)), 1 << 20).unwrap();
                ns.push(measure(&mut chain, batch, total));
            }
            println!(
                "| {} | {batch} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
                names.join(" → "),
                ns[0],
                ns[1],
                ns[1] / ns[0],
                ns[2],
                ns[2] / ns[0]
            );
        }
    }
}
