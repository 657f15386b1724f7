//! The wasmtime engine of a [`Runtime`](super::runtime::Runtime): its
//! configuration (with the on-disk cache of compiled plugins), the linker
//! offering the contract's host interface and the WASI sandbox, the epoch
//! ticker that call deadlines count in, and giving a call its time budget.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine, Store};

use super::columns::bindings::Plugin;
use super::columns::legacy_bindings::Plugin as LegacyPlugin;
use super::instance::HostState;
use super::runtime::{CallLimit, RuntimeError};

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine for `limit`, its linker, and the flag that stops its epoch ticker.
pub(super) fn start(limit: CallLimit) -> Result<(Engine, Linker<HostState>, Arc<AtomicBool>), RuntimeError> {
    let mut config = config(limit);
    if let Some(dir) = cache_dir() {
        let mut cache = CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(Cache::new(cache).map_err(RuntimeError::Engine)?));
    }
    let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
    let mut linker = Linker::new(&engine);
    Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(RuntimeError::Engine)?;
    LegacyPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(RuntimeError::Engine)?;
    super::sandbox::add_to_linker(&mut linker).map_err(RuntimeError::Engine)?;
    let stop_ticker = Arc::new(AtomicBool::new(false));
    spawn_ticker(&engine, stop_ticker.clone())?;
    Ok((engine, linker, stop_ticker))
}

fn config(limit: CallLimit) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(limit == CallLimit::Epoch);
    config.consume_fuel(matches!(limit, CallLimit::Fuel(_)));
    // Sync calls without the async-task bookkeeping: ~4x cheaper per call.
    config.concurrency_support(false);
    config.max_wasm_stack(1 << 20);
    // `SLUICE_PERFMAP=1`: write /tmp/perf-<pid>.map so `perf record` names plugin functions.
    if std::env::var_os("SLUICE_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// Where compiled plugins are kept, keyed by their bytes and the engine's
/// settings (a restart or a rollback to a known version does not recompile):
/// `SLUICE_COMPILE_CACHE` (a directory, or `off`), else `compiled/` in Sluice's cache.
fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("SLUICE_COMPILE_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => crate::config::cache_home().map(|d| d.join("compiled")),
    }
}

/// Advance the engine's epoch every [`EPOCH_TICK`] until `stop` (or the engine is gone).
fn spawn_ticker(engine: &Engine, stop: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        })
        .map_err(|e| RuntimeError::Engine(e.into()))?;
    Ok(())
}

/// Give the next call its time budget.
pub(super) fn arm(store: &mut Store<HostState>, limit: CallLimit, call_ticks: u64) {
    match limit {
        CallLimit::Epoch => store.set_epoch_deadline(call_ticks),
        CallLimit::Fuel(f) => {
            let _ = store.set_fuel(f);
        }
        CallLimit::Unlimited => {}
    }
}

pub(super) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}
