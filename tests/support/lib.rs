//! Shared helpers of the integration tests: they talk to the real services that
//! `scripts/services up` starts (Kafka on 127.0.0.1:9092, FerretDB on
//! 127.0.0.1:27017; override with `SLUICE_TEST_BROKERS` / `SLUICE_TEST_MONGO`).
//!
//! # Layout (by concern; everything is re-exported here)
//! - here: where things are: the services' addresses, [`plugin`], [`hostile`], [`sluice_bin`].
//! - `env`: [`TestEnv`], one test's unique topic, consumer group and collection, with
//!   helpers to produce, build a config, read what landed, wait, and clean up.
//! - `host`: [`Host`], a `sluice run` process (signals, logs, summary, readiness
//!   from its `event=` fields), and [`Admin`], a client of its admin API.
//! - `checks`: [`num_report`], [`by_partition`], [`segments`]: what landed, and
//!   which chain version made each document, in offset order.
//! - `config`: [`ConfigBuilder`] and [`PluginToml`], a config as TOML tables (no format strings).
//! - `dead_letters`: [`DeadLetter`]; `services`: [`stop_mongo`] and friends (fault tests).
//! - `formats`: [`sr_produce`] (records written by Confluent's serializers), [`registry_url`], [`stop_registry`].
//! - [`watch::ProgressWatch`]: both progress stores sampled against the documents while a test runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

mod checks;
mod config;
mod dead_letters;
mod env;
mod formats;
mod host;
mod services;
pub mod watch;

pub use checks::*;
pub use config::*;
pub use dead_letters::*;
pub use env::*;
pub use formats::*;
pub use host::*;
pub use services::*;

pub fn brokers() -> String {
    std::env::var("SLUICE_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn mongo_uri() -> String {
    std::env::var("SLUICE_TEST_MONGO").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// The database every test writes to (each test has its own collection).
pub const DATABASE: &str = "sluice_test";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_owned()
}

/// The built `.wasm` of an example plugin; fails with the command to build it.
pub fn plugin(name: &str) -> PathBuf {
    // Cargo names a crate's artifact with `_` for `-`.
    let file = format!("{}.wasm", name.replace('-', "_"));
    let p = repo().join("plugins/target/wasm32-unknown-unknown/release").join(file);
    assert!(p.exists(), "{} is missing: run `make plugins` (or `make test`, which builds them)", p.display());
    p
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The `sluice` binary next to this test binary (built by `make build`/`make test`),
/// or `SLUICE_BIN`.
pub fn sluice_bin() -> PathBuf {
    // Another build (or a wrapper such as a heap profiler's) for a test run.
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("sluice");
    assert!(bin.exists(), "{} is missing: run `cargo build -p sluice` (make test does)", bin.display());
    bin
}

/// The built `.wasm` of a hostile test plugin (`tests/hostile/`).
pub fn hostile(name: &str) -> PathBuf {
    let p = repo().join("tests/hostile/target/wasm32-unknown-unknown/release").join(format!("hostile_{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make hostile` (make test does)", p.display());
    p
}

/// A Python or JavaScript plugin built by `make lang-plugins` (`enrich-py`,
/// `enrich-js`, `hostile-py`, `hostile-js`).
pub fn lang_plugin(name: &str) -> PathBuf {
    let p = repo().join("target/lang-plugins").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make lang-plugins` (make test does)", p.display());
    p
}

/// The built `.wasm` of a hostile plugin that imports WASI (`tests/hostile/wasi-<name>`),
/// for `target`: `wasm32-wasip2` (a component) or `wasm32-wasip1` (a core module).
pub fn hostile_wasi(target: &str, name: &str) -> PathBuf {
    let p = repo().join("tests/hostile/target").join(target).join("release").join(format!("hostile_wasi_{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make hostile` (make test does)", p.display());
    p
}
