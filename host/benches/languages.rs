//! The same plugin (the tutorial's `enrich`: square + source) in Rust, Python
//! and JavaScript through the real host runtime: compile time without and with
//! the on-disk cache, instantiate time, memory per instance, and CPU per record
//! on batches of 500 `{"num": n}`, limits on.
//!
//!     make plugins lang-plugins && cargo bench -p sluice --bench languages
//!
//! Prints a Markdown table (bench/languages.md keeps one run). Each figure is a
//! median of interleaved rounds, so the languages share the machine's noise.

use std::path::PathBuf;
use std::time::Instant;

use sluice::config::PluginConfig;
use sluice::runtime::{Batch, OutcomeRef, Runtime};

const BATCH: usize = 500;
const ROUNDS: usize = 15;

fn plugins() -> Vec<(&'static str, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let list = vec![
        ("Rust enrich", root.join("plugins/target/wasm32-unknown-unknown/release/enrich.wasm")),
        ("Python enrich", root.join("target/lang-plugins/enrich-py.wasm")),
        ("JavaScript enrich", root.join("target/lang-plugins/enrich-js.wasm")),
    ];
    // Extra rows: `cargo bench -p sluice --bench languages -- LABEL=PATH …`.
    let extra: Vec<(&'static str, PathBuf)> = std::env::args()
        .skip(1)
        .filter_map(|a| a.split_once('=').map(|(l, p)| (&*Box::leak(l.to_owned().into_boxed_str()), PathBuf::from(p))))
        .collect();
    let list: Vec<_> = list.into_iter().chain(extra).collect();
    for (_, p) in &list {
        assert!(p.exists(), "{} missing: run `make plugins lang-plugins`", p.display());
    }
    list
}

fn batch() -> Batch {
    let mut b = Batch::new("testnum", 0);
    for i in 0..BATCH {
        let value = format!("{{\"num\":{i}}}");
        b.push(i as i64, Some(1_700_000_000_000), None, Some(value.as_bytes()), &[]);
    }
    b
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds to load (compile, link, instantiate, init) with the cache in `dir`, or none.
fn load_secs(cache: Option<&std::path::Path>, name: &str, path: &PathBuf) -> f64 {
    // SAFETY: the benchmark is single-threaded while it sets the variable.
    match cache {
        Some(dir) => unsafe { std::env::set_var("SLUICE_COMPILE_CACHE", dir) },
        None => unsafe { std::env::set_var("SLUICE_COMPILE_CACHE", "off") },
    }
    let rt = Runtime::new().unwrap();
    let t = Instant::now();
    rt.load(&PluginConfig::new(name, path.clone())).unwrap();
    t.elapsed().as_secs_f64()
}

fn main() {
    let plugins = plugins();
    let cache = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (lang, path) in &plugins {
        let size = std::fs::metadata(path).unwrap().len() as f64 / 1e6;
        let cold = load_secs(None, lang, path);
        load_secs(Some(cache.path()), lang, path); // fills the cache
        let warm = median((0..3).map(|_| load_secs(Some(cache.path()), lang, path)).collect());
        rows.push((lang, size, cold, warm));
    }
    unsafe { std::env::set_var("SLUICE_COMPILE_CACHE", cache.path()) };
    let rt = Runtime::new().unwrap();
    let loaded: Vec<_> = plugins.iter().map(|(lang, p)| rt.load(&PluginConfig::new(*lang, p.clone())).unwrap()).collect();
    let batch = batch();
    let mut inst_ms = vec![Vec::new(); loaded.len()];
    let mut mem = vec![0usize; loaded.len()];
    let mut per_record = vec![Vec::new(); loaded.len()];
    let mut instances: Vec<_> = loaded.iter().map(|p| p.instantiate().unwrap()).collect();
    for _ in 0..ROUNDS {
        for (k, plugin) in loaded.iter().enumerate() {
            let t = Instant::now();
            let fresh = plugin.instantiate().unwrap();
            inst_ms[k].push(t.elapsed().as_secs_f64() * 1e3);
            mem[k] = fresh.memory_bytes();
            let t = Instant::now();
            let r = instances[k].process(&batch).unwrap();
            per_record[k].push(t.elapsed().as_secs_f64() * 1e6 / BATCH as f64);
            assert!(matches!(r.outcome(BATCH - 1), OutcomeRef::Emit(_)), "{lang} enriched the batch", lang = plugins[k].0);
        }
    }
    let rust = median(per_record[0].clone());
    println!("| plugin | .wasm MB | load, no cache s | load, cached s | instantiate ms | memory MiB | µs/record | × Rust |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k, (lang, size, cold, warm)) in rows.iter().enumerate() {
        let us = median(per_record[k].clone());
        println!(
            "| {lang} | {size:.1} | {cold:.2} | {warm:.3} | {:.2} | {:.1} | {us:.2} | {:.1} |",
            median(inst_ms[k].clone()),
            mem[k] as f64 / (1 << 20) as f64,
            us / rust
        );
    }
}
