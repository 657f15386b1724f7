//! A sandboxed instance of a plugin: its own store, memory cap and per-call
//! deadline, the host interface it may call (logging, rate-limited), its WASI
//! sandbox, and one call of `process` with its trap turned into a
//! [`RuntimeError::Trap`].

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::columns::{Batch, BatchResult, bindings, legacy_bindings};
use super::engine::{arm, ticks};
use super::load::{LoadedPlugin, PluginPre};
use super::runtime::{CallLimit, RuntimeError, TrapKind};
use super::sandbox::Sandbox;
use bindings::sluice::plugin::types::Level;

impl LoadedPlugin {
    /// A fresh instance with its own store and limits, initialised with the params.
    pub fn instantiate(self: &Arc<Self>) -> Result<PluginInstance, RuntimeError> {
        let limits = Limits { memory_bytes: self.config.limits.memory_bytes, memory_total: 0, memory_refused: false };
        let (wasi, sandbox) = Sandbox::new(&self.name, &self.version, self.config.limits.call_timeout);
        let state = HostState { plugin: self.name.clone(), limits, last_panic: None, wasi, table: ResourceTable::new(), sandbox };
        let mut store = Store::new(&self.engine, state);
        if self.limit != CallLimit::Unlimited {
            store.limiter(|s| &mut s.limits);
        }
        let call_ticks = ticks(self.config.limits.call_timeout);
        let limit = self.limit;
        arm(&mut store, limit, call_ticks);
        let bindings = off_async(|| match &self.pre {
            PluginPre::Current(pre) => pre.instantiate(&mut store).map(Bindings::Current),
            PluginPre::Legacy(pre) => pre.instantiate(&mut store).map(Bindings::Legacy),
        })
        .map_err(|e| RuntimeError::Instantiate { name: self.name.clone(), message: format!("{e:#}") })?;
        let mut instance = PluginInstance { plugin: self.clone(), store, bindings, call_ticks };
        arm(&mut instance.store, limit, call_ticks);
        let init = off_async(|| match &instance.bindings {
            Bindings::Current(b) => b.sluice_plugin_transform().call_init(&mut instance.store, &self.params),
            Bindings::Legacy(b) => b.sluice_plugin_transform().call_init(&mut instance.store, &self.params),
        });
        instance.store.data_mut().sandbox.end_call();
        match init {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(RuntimeError::Init { name: self.name.clone(), message }),
            Err(e) => Err(RuntimeError::Init { name: self.name.clone(), message: format!("trapped: {e:#}") }),
        }
    }
}

/// An instance's exports, by the contract version it was built against.
enum Bindings {
    Current(bindings::Plugin),
    Legacy(legacy_bindings::Plugin),
}

/// One sandboxed instance of a plugin.
pub struct PluginInstance {
    pub(super) plugin: Arc<LoadedPlugin>,
    store: Store<HostState>,
    bindings: Bindings,
    call_ticks: u64,
}

impl PluginInstance {
    /// Bytes of linear memory the instance holds (all its memories).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_total
    }

    /// Run one batch; the result is checked against the contract (one outcome
    /// per record, spans inside the data). A trap poisons the instance: the
    /// caller must make a new one before the next call.
    pub fn process(&mut self, batch: &Batch) -> Result<BatchResult, RuntimeError> {
        arm(&mut self.store, self.plugin.limit, self.call_ticks);
        let data = self.store.data_mut();
        data.limits.memory_refused = false;
        let newest = batch.timestamps.iter().copied().max();
        data.sandbox.begin_call(&batch.topic, batch.partition, batch.offsets.first().copied().unwrap_or(0), newest);
        // A 0.2.0 plugin gets the same columns in its own types (a copy), and its
        // result is read in this version's layout (a malformed one fails as such).
        let result = off_async(|| match &self.bindings {
            Bindings::Current(b) => b.sluice_plugin_transform().call_process(&mut self.store, batch).map(Ok),
            Bindings::Legacy(b) => {
                b.sluice_plugin_transform().call_process(&mut self.store, &batch.to_legacy()).map(BatchResult::from_legacy)
            }
        });
        self.store.data_mut().sandbox.end_call();
        match result {
            // Python and JavaScript turn a refused `memory.grow` into an exception the
            // SDK reports as the record's error: it is the memory limit all the same.
            Ok(_) if self.store.data().limits.memory_refused => Err(RuntimeError::Trap {
                name: self.plugin.name.clone(),
                kind: TrapKind::Memory,
                message: format!(
                    "memory limit of {} bytes reached (limits.memory_bytes): an allocation was refused",
                    self.plugin.config.limits.memory_bytes
                ),
            }),
            Ok(Ok(r)) => match r.check(batch.len()) {
                Ok(()) => Ok(r),
                Err(message) => Err(RuntimeError::Malformed { name: self.plugin.name.clone(), message }),
            },
            Ok(Err(message)) => Err(RuntimeError::Malformed { name: self.plugin.name.clone(), message }),
            Err(e) => {
                let data = self.store.data_mut();
                let panic = data.last_panic.take();
                let timeout = self.plugin.config.limits.call_timeout;
                let (kind, message) = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt | wasmtime::Trap::OutOfFuel) => {
                        (TrapKind::Timeout, format!("call exceeded limits.call_timeout ({timeout:?}): wasm trap: interrupt"))
                    }
                    _ if data.sandbox.waited_out => {
                        (TrapKind::Timeout, format!("call exceeded limits.call_timeout ({timeout:?}): {}", e.root_cause()))
                    }
                    _ if data.limits.memory_refused => (
                        TrapKind::Memory,
                        format!(
                            "memory limit of {} bytes reached (limits.memory_bytes): {}",
                            self.plugin.config.limits.memory_bytes,
                            e.root_cause()
                        ),
                    ),
                    _ => (
                        TrapKind::Trap,
                        match panic {
                            Some(p) => format!("{p} ({})", e.root_cause()),
                            None => e.root_cause().to_string(),
                        },
                    ),
                };
                Err(RuntimeError::Trap { name: self.plugin.name.clone(), kind, message })
            }
        }
    }
}

/// Run a plugin call where wasmtime-wasi may block on its own: its waits and
/// streams call `Handle::block_on`, which panics on an async worker thread.
fn off_async<R>(call: impl FnOnce() -> R + Send) -> R
where
    R: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => call(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        // A current-thread runtime cannot give its thread up: a thread of its own.
        Ok(_) => std::thread::scope(|s| s.spawn(call).join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
    }
}

/// Per-store host state: the plugin's name (for its log lines), its limits and its WASI sandbox.
pub struct HostState {
    pub(super) plugin: String,
    limits: Limits,
    /// The SDK's panic hook logs `panic: …` just before the abort trap.
    last_panic: Option<String>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) sandbox: Sandbox,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The memory cap for the store as a whole (a component has several memories),
/// remembering whether it refused a growth: a Rust guest aborts (a trap), Python
/// and JavaScript raise an exception; either way the call fails as `memory`.
struct Limits {
    memory_bytes: usize,
    /// Bytes of all the store's memories.
    memory_total: usize,
    memory_refused: bool,
}

impl ResourceLimiter for Limits {
    /// Also called when a memory is created (`current` 0).
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_total.saturating_add(desired.saturating_sub(current));
        if total > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
    // A componentize-py component has 17 core instances; these bound the
    // bookkeeping, the memory cap bounds the bytes.
    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

impl bindings::sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if message.starts_with("panic: ") {
            // It becomes the failure's reason (dead-letter header, failure summary);
            // logged at info it would be one line per failing record.
            tracing::debug!(plugin = %self.plugin, "{message}");
            self.last_panic = Some(message);
            return;
        }
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.sandbox.log.lock().unwrap_or_else(|e| e.into_inner()).line(level, &message);
    }
}

impl bindings::sluice::plugin::types::Host for HostState {}

/// Plugins built against contract 0.2.0 log the same way.
impl legacy_bindings::sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: legacy_bindings::sluice::plugin::types::Level, message: String) {
        use legacy_bindings::sluice::plugin::types::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        bindings::sluice::plugin::host::Host::log(self, level, message);
    }
}

impl legacy_bindings::sluice::plugin::types::Host for HostState {}
