//! The WebAssembly runtime: loads plugins once, makes sandboxed instances of them.
//!
//! One [`Runtime`] per process holds the wasmtime `Engine` and `Linker`; each
//! [`LoadedPlugin`] is compiled and pre-linked once; each partition worker owns a
//! [`PluginInstance`] (its own `Store`, memory cap and per-call deadline) that it
//! reuses for every batch. A plugin imports the contract's `host.log` and, for
//! Python and JavaScript runtimes, WASI 0.2 with nothing behind it (see
//! `sandbox`: no files, sockets or environment; deterministic clocks and
//! randomness); anything else (`wasi:http`, WASI preview 1…) is refused at load.

//!
//! The parts: [`engine`](super::engine) (wasmtime config, epoch ticker),
//! [`load`](super::load) (reading, checking and compiling a version),
//! [`instance`](super::instance) (store, limits, a call) and
//! [`columns`](super::columns) (the WIT bindings and the contract's columns).
//! This module holds the runtime and its errors, and re-exports the rest.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::config::PluginConfig;

pub use super::columns::{ABSENT, Batch, BatchResult, ErrorRef, Operation, OutcomeRef, OutputRef};
pub use super::instance::{HostState, PluginInstance};
pub use super::load::{LoadedPlugin, read_plugin, version_of};

/// The contract version this host implements (the WIT package).
pub const CONTRACT: &str = sluice_contract::PACKAGE;

/// The older contract version whose plugins the host still runs unchanged.
pub const LEGACY_CONTRACT: &str = sluice_contract::LEGACY_PACKAGE;

/// The contract's interface the host provides to plugins (see [`RuntimeError::SystemImports`]).
pub const HOST_INTERFACE: &str = sluice_contract::HOST_INTERFACE;

/// Why a plugin could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot set up the wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("plugin `{name}`: cannot read {path}: {cause}")]
    Read { name: String, path: PathBuf, cause: std::io::Error },
    #[error("plugin `{name}`: {path} is not a WebAssembly module or component")]
    NotWasm { name: String, path: PathBuf },
    #[error("plugin `{name}`: cannot turn the core module {path} into a component: {message}")]
    Componentize { name: String, path: PathBuf, message: String },
    #[error("plugin `{name}`: cannot compile {path}: {message}")]
    Compile { name: String, path: PathBuf, message: String },
    #[error("plugin `{name}` ({path}) does not match the contract {CONTRACT} (nor {LEGACY_CONTRACT}): {message}")]
    Contract { name: String, path: PathBuf, message: String },
    /// The component imports something besides the contract and the sandbox's
    /// WASI 0.2 (`wasi:http`, another version or package…): refused at load.
    #[error(
        "plugin `{name}` ({path}) imports {}, which the host does not provide: plugins may import `{HOST_INTERFACE}` and \
         WASI 0.2 cli, io, clocks, random, filesystem and sockets (sandboxed: no files, network or environment)",
        quoted(.imports)
    )]
    SystemImports { name: String, path: PathBuf, imports: Vec<String> },
    /// A core module built for WASI preview 1 (`wasm32-wasip1`): refused at load.
    #[error(
        "plugin `{name}` ({path}) is a WASI preview 1 module: it imports {} from `{module}`, which the host does not \
         provide; build it with the guest SDK for wasm32-unknown-unknown (or as a WASI 0.2 component)",
        quoted(.functions)
    )]
    WasiModule { name: String, path: PathBuf, module: String, functions: Vec<String> },
    #[error("plugin `{name}`: cannot instantiate: {message}")]
    Instantiate { name: String, message: String },
    #[error("plugin `{name}`: init failed: {message}")]
    Init { name: String, message: String },
    #[error("plugin `{name}` trapped in process ({kind}): {message}")]
    Trap { name: String, kind: TrapKind, message: String },
    /// The result breaks the contract's rules (wrong counts, spans outside the data…).
    #[error("plugin `{name}` returned a malformed batch result: {message}")]
    Malformed { name: String, message: String },
    #[error("plugin `{name}` failed self_test {index}: {message}")]
    SelfTest { name: String, index: usize, message: String },
    /// The partition was released (revoke, shutdown) while its batch was being
    /// isolated: the batch is left unwritten and uncommitted, for the next owner.
    #[error("the batch was cancelled: its partition was released")]
    Cancelled,
}

/// `a`, `b`: names for an error message.
fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// What kind of trap ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    Timeout,
    Memory,
    Trap,
}

impl std::fmt::Display for TrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrapKind::Timeout => "time limit",
            TrapKind::Memory => "memory limit",
            TrapKind::Trap => "trap",
        })
    }
}

/// How a call's time is limited. Sluice always runs with [`CallLimit::Epoch`];
/// the others exist for the limits benchmark (`cargo bench -p sluice --bench limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallLimit {
    /// Epoch interruption: a ticker thread advances the epoch every 10 ms; a call
    /// traps once its deadline (in ticks) passes. Default.
    Epoch,
    /// Fuel: each call gets a budget of wasm instructions (roughly).
    Fuel(u64),
    /// No time limit and no memory cap (benchmark baseline only).
    Unlimited,
}

/// Process-wide wasm state: the engine (with its epoch ticker) and the linker.
pub struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<HostState>,
    stop_ticker: Arc<AtomicBool>,
    pub(super) limit: CallLimit,
}

impl Runtime {
    /// The runtime Sluice uses: epoch deadlines and memory caps always on.
    pub fn new() -> Result<Runtime, RuntimeError> {
        Runtime::with_call_limit(CallLimit::Epoch)
    }

    #[doc(hidden)]
    pub fn with_call_limit(limit: CallLimit) -> Result<Runtime, RuntimeError> {
        let (engine, linker, stop_ticker) = super::engine::start(limit)?;
        Ok(Runtime { engine, linker, stop_ticker, limit })
    }

    /// Read the plugin's file and [`validate`](Runtime::validate) it.
    pub fn load(&self, cfg: &PluginConfig) -> Result<Arc<LoadedPlugin>, RuntimeError> {
        self.validate(cfg, read_plugin(cfg)?)
    }

    /// Read, compile and link the plugin against the contract, without running
    /// it (its init may need params): what `sluice plugin build` checks. The
    /// compiled code lands in the compile cache.
    pub fn prepare(&self, cfg: &PluginConfig) -> Result<Arc<LoadedPlugin>, RuntimeError> {
        self.load_bytes(cfg, read_plugin(cfg)?)
    }

    /// Everything a version must pass before it runs (at start and before a hot
    /// swap): it is wasm, compiles, matches the contract, instantiates, its init
    /// accepts the configured parameters, and it handles the self-test records as
    /// the config says. Fails at load, not on the first record.
    pub fn validate(&self, cfg: &PluginConfig, bytes: Vec<u8>) -> Result<Arc<LoadedPlugin>, RuntimeError> {
        let plugin = self.load_bytes(cfg, bytes)?;
        let mut instance = plugin.instantiate()?;
        for (i, test) in cfg.self_test.iter().enumerate() {
            instance = plugin.self_test(instance, i + 1, test)?;
        }
        Ok(plugin)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}
