//! The WebAssembly runtime: loads plugins once, makes sandboxed instances of them.
//!
//! One [`Runtime`] per process holds the wasmtime `Engine` and `Linker`; each
//! [`LoadedPlugin`] is compiled and pre-linked once; each partition worker owns a
//! [`PluginInstance`] (its own `Store`, memory cap and per-call deadline) that it
//! reuses for every batch. The only import a plugin gets is `host.log`: a plugin
//! importing anything else (WASI files, sockets, clocks, environment…) is refused at load.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store};

use crate::config::{PluginConfig, SelfTest};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/plugin.wit",
        world: "plugin",
    });
}

use bindings::sluice::plugin::types::Level;
pub use bindings::sluice::plugin::types::{Batch, BatchResult};
use bindings::{Plugin, PluginPre};

/// The contract version this host implements (the WIT package).
pub const CONTRACT: &str = "sluice:plugin@0.2.0";

/// The one interface the host provides to plugins (see [`RuntimeError::SystemImports`]).
pub const HOST_INTERFACE: &str = "sluice:plugin/host@0.2.0";

/// The core-module import namespaces of WASI preview 1 (and its predecessor).
const WASI_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// A length that means "absent" in the contract's spans.
pub const ABSENT: u32 = u32::MAX;

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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
    #[error("plugin `{name}` ({path}) does not match the contract {CONTRACT}: {message}")]
    Contract { name: String, path: PathBuf, message: String },
    /// The component imports something other than the contract's host interface
    /// (WASI filesystem, sockets, clocks, environment…): refused at load.
    #[error(
        "plugin `{name}` ({path}) imports {}: plugins get no system interfaces (filesystem, sockets, clocks, environment, …); \
         only `{HOST_INTERFACE}` is provided (build with the guest SDK for wasm32-unknown-unknown)",
        quoted(.imports)
    )]
    SystemImports { name: String, path: PathBuf, imports: Vec<String> },
    /// A core module built for WASI preview 1 (`wasm32-wasip1`): refused at load.
    #[error(
        "plugin `{name}` ({path}) is a WASI module: it imports {} from `{module}`: plugins get no system interfaces \
         (filesystem, sockets, clocks, environment, …); build it with the guest SDK for wasm32-unknown-unknown",
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
    engine: Engine,
    linker: Linker<HostState>,
    stop_ticker: Arc<AtomicBool>,
    limit: CallLimit,
}

impl Runtime {
    /// The runtime Sluice uses: epoch deadlines and memory caps always on.
    pub fn new() -> Result<Runtime, RuntimeError> {
        Runtime::with_call_limit(CallLimit::Epoch)
    }

    #[doc(hidden)]
    pub fn with_call_limit(limit: CallLimit) -> Result<Runtime, RuntimeError> {
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
        let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
        let mut linker = Linker::new(&engine);
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(RuntimeError::Engine)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.weak();
            let stop = stop_ticker.clone();
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
        }
        Ok(Runtime { engine, linker, stop_ticker, limit })
    }

    /// Read the plugin's file and [`validate`](Runtime::validate) it.
    pub fn load(&self, cfg: &PluginConfig) -> Result<Arc<LoadedPlugin>, RuntimeError> {
        self.validate(cfg, read_plugin(cfg)?)
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

    fn load_bytes(&self, cfg: &PluginConfig, bytes: Vec<u8>) -> Result<Arc<LoadedPlugin>, RuntimeError> {
        let (name, path) = (cfg.name.as_str(), cfg.path.as_path());
        let version = version_of(&bytes);
        let component_bytes = match wasm_kind(&bytes) {
            Some(WasmKind::Component) => None,
            Some(WasmKind::Module) => {
                if let Some((module, functions)) = wasi_imports(&bytes) {
                    return Err(RuntimeError::WasiModule { name: name.into(), path: path.into(), module, functions });
                }
                Some(componentize(&bytes).map_err(|message| RuntimeError::Componentize {
                    name: name.into(),
                    path: path.into(),
                    message,
                })?)
            }
            None => return Err(RuntimeError::NotWasm { name: name.into(), path: path.into() }),
        };
        let component_bytes = component_bytes.as_deref().unwrap_or(&bytes);
        let component = Component::new(&self.engine, component_bytes).map_err(|e| RuntimeError::Compile {
            name: name.into(),
            path: path.into(),
            message: format!("{e:#}"),
        })?;
        // No system interfaces: anything imported besides the contract's own is
        // refused here, naming it (a contract mismatch is left to the linker).
        let refused = refused_imports(component.component_type().imports(&self.engine).map(|(n, _)| n));
        if !refused.is_empty() {
            return Err(RuntimeError::SystemImports { name: name.into(), path: path.into(), imports: refused });
        }
        // On a mismatch, say what the component does offer and need.
        let contract_err = |e: wasmtime::Error| {
            let ty = component.component_type();
            let exports: Vec<&str> = ty.exports(&self.engine).map(|(n, _)| n).collect();
            let imports: Vec<&str> = ty.imports(&self.engine).map(|(n, _)| n).collect();
            RuntimeError::Contract {
                name: name.into(),
                path: path.into(),
                message: format!("{e:#} (the component exports {exports:?} and imports {imports:?})"),
            }
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(contract_err)?;
        let pre = PluginPre::new(instance_pre).map_err(contract_err)?;
        Ok(Arc::new(LoadedPlugin {
            name: name.into(),
            version,
            path: path.into(),
            params: cfg.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            config: cfg.clone(),
            bytes: bytes.into(),
            limit: self.limit,
            engine: self.engine.clone(),
            pre,
        }))
    }
}

/// Read a plugin's file.
pub fn read_plugin(cfg: &PluginConfig) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(&cfg.path).map_err(|cause| RuntimeError::Read { name: cfg.name.clone(), path: cfg.path.clone(), cause })
}

/// A plugin version: the first 12 hex digits of the SHA-256 of its file.
pub fn version_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

enum WasmKind {
    Module,
    Component,
}

/// Core modules and components share the magic; the version/layer word differs.
fn wasm_kind(bytes: &[u8]) -> Option<WasmKind> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return None;
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Some(WasmKind::Module),
        [0x0d, 0, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

/// The imports of a component that are not the contract's (`sluice:plugin/…`,
/// any version): WASI and everything else the host does not provide.
fn refused_imports<'a>(imports: impl Iterator<Item = &'a str>) -> Vec<String> {
    imports.filter(|n| !n.starts_with("sluice:plugin/")).map(String::from).collect()
}

/// A core module built for WASI preview 1: the WASI namespace it imports from and
/// the functions it imports (`fd_write`, `environ_get`…). `None` if it imports none
/// (or cannot be read: [`componentize`] reports that).
fn wasi_imports(module: &[u8]) -> Option<(String, Vec<String>)> {
    let mut found: Option<(String, Vec<String>)> = None;
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let Ok(wasmparser::Payload::ImportSection(section)) = payload else { continue };
        for import in section.into_imports().map_while(Result::ok) {
            if WASI_MODULES.contains(&import.module) {
                let (module, functions) = found.get_or_insert_with(|| (import.module.to_string(), Vec::new()));
                if module == import.module {
                    functions.push(import.name.to_string());
                }
            }
        }
    }
    found
}

/// Wrap a core module built with the guest SDK (it carries its component type in
/// a custom section) into a component, in-process.
/// Any bytes on disk give an error, never a panic: the module is validated
/// first (wit-component indexes out of range on some truncated files), and
/// the encoder runs under `catch_unwind` all the same.
fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(module)
        .map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
    std::panic::catch_unwind(|| {
        wit_component::ComponentEncoder::default().module(module).and_then(|e| e.validate(true).encode()).map_err(|e| format!("{e:#}"))
    })
    .unwrap_or_else(|_| Err("the module could not be read (malformed)".into()))
}

/// A compiled, pre-linked plugin version. Cheap to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    /// First 12 hex digits of the SHA-256 of the file ([`version_of`]).
    pub version: String,
    pub path: PathBuf,
    params: Vec<(String, String)>,
    /// The configuration it was validated with (params, limits, self-tests).
    pub config: PluginConfig,
    /// The file as loaded (kept for rollback).
    pub bytes: Arc<[u8]>,
    limit: CallLimit,
    engine: Engine,
    pre: PluginPre<HostState>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("version", &self.version).field("path", &self.path).finish()
    }
}

impl LoadedPlugin {
    pub fn max_output_bytes(&self) -> usize {
        self.config.limits.max_output_bytes
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Run one self-test record through `instance`; returns it for the next test.
    /// A trap fails the test (and validation) at once.
    fn self_test(self: &Arc<Self>, mut instance: PluginInstance, index: usize, test: &SelfTest) -> Result<PluginInstance, RuntimeError> {
        let fail = |message: String| RuntimeError::SelfTest { name: self.name.clone(), index, message };
        let mut batch = Batch::new(&test.topic, 0);
        batch.push(0, None, test.key.as_ref().map(|k| k.as_bytes()), Some(test.input.as_bytes()), &[]);
        let result = match instance.process(&batch) {
            Ok(r) => r,
            Err(RuntimeError::Trap { kind, message, .. }) => return Err(fail(format!("{kind}: {message}"))),
            Err(e) => return Err(fail(e.to_string())),
        };
        let documents = match result.outcome(0) {
            OutcomeRef::Error(_) if test.expect_error => return Ok(instance),
            OutcomeRef::Error(e) => return Err(fail(format!("the plugin failed the record: {e}"))),
            OutcomeRef::Drop => Vec::new(),
            OutcomeRef::Emit(outputs) => outputs
                .map(|j| match serde_json::from_slice::<serde_json::Value>(result.output(j).document) {
                    Ok(v @ serde_json::Value::Object(_)) => Ok(v),
                    Ok(_) => Err(fail("an output is JSON but not an object".into())),
                    Err(e) => Err(fail(format!("an output is not JSON: {e}"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if test.expect_error {
            return Err(fail(format!("expected an error, got {} document(s)", documents.len())));
        }
        if let Some(expect) = &test.expect {
            let expected: serde_json::Value = serde_json::from_str(expect).map_err(|e| fail(format!("`expect` is not JSON: {e}")))?;
            let got = serde_json::Value::Array(documents);
            if got != expected {
                return Err(fail(format!("expected {expected}, got {got}")));
            }
        }
        Ok(instance)
    }

    /// A fresh instance with its own store and limits, initialised with the params.
    pub fn instantiate(self: &Arc<Self>) -> Result<PluginInstance, RuntimeError> {
        let limits = Limits { memory_bytes: self.config.limits.memory_bytes, memory_refused: false };
        let mut store = Store::new(
            &self.engine,
            HostState { plugin: self.name.clone(), limits, last_panic: None, log_limit: LogLimit::new(Instant::now()) },
        );
        if self.limit != CallLimit::Unlimited {
            store.limiter(|s| &mut s.limits);
        }
        let call_ticks = ticks(self.config.limits.call_timeout);
        let limit = self.limit;
        arm(&mut store, limit, call_ticks);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| RuntimeError::Instantiate { name: self.name.clone(), message: format!("{e:#}") })?;
        let mut instance = PluginInstance { plugin: self.clone(), store, bindings, call_ticks };
        arm(&mut instance.store, limit, call_ticks);
        let init = instance.bindings.sluice_plugin_transform().call_init(&mut instance.store, &self.params);
        match init {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(message)) => Err(RuntimeError::Init { name: self.name.clone(), message }),
            Err(e) => Err(RuntimeError::Init { name: self.name.clone(), message: format!("trapped: {e:#}") }),
        }
    }
}

/// Give the next call its time budget.
fn arm(store: &mut Store<HostState>, limit: CallLimit, call_ticks: u64) {
    match limit {
        CallLimit::Epoch => store.set_epoch_deadline(call_ticks),
        CallLimit::Fuel(f) => {
            let _ = store.set_fuel(f);
        }
        CallLimit::Unlimited => {}
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// One sandboxed instance of a plugin.
pub struct PluginInstance {
    plugin: Arc<LoadedPlugin>,
    store: Store<HostState>,
    bindings: Plugin,
    call_ticks: u64,
}

impl PluginInstance {
    /// Run one batch; the result is checked against the contract (one outcome
    /// per record, spans inside the data). A trap poisons the instance: the
    /// caller must make a new one before the next call.
    pub fn process(&mut self, batch: &Batch) -> Result<BatchResult, RuntimeError> {
        arm(&mut self.store, self.plugin.limit, self.call_ticks);
        self.store.data_mut().limits.memory_refused = false;
        let result = self.bindings.sluice_plugin_transform().call_process(&mut self.store, batch);
        match result {
            Ok(r) => match r.check(batch.len()) {
                Ok(()) => Ok(r),
                Err(message) => Err(RuntimeError::Malformed { name: self.plugin.name.clone(), message }),
            },
            Err(e) => {
                let data = self.store.data_mut();
                let panic = data.last_panic.take();
                let (kind, message) = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt | wasmtime::Trap::OutOfFuel) => (
                        TrapKind::Timeout,
                        format!("call exceeded limits.call_timeout ({:?}): wasm trap: interrupt", self.plugin.config.limits.call_timeout),
                    ),
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

impl Batch {
    /// An empty batch of records from `topic` partition `partition`.
    pub fn new(topic: &str, partition: i32) -> Batch {
        Batch {
            topic: topic.to_owned(),
            partition,
            offsets: Vec::new(),
            timestamps: Vec::new(),
            spans: Vec::new(),
            header_spans: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Empty it for records of `topic` partition `partition`, keeping the buffers.
    pub fn reset(&mut self, topic: &str, partition: i32) {
        if self.topic != topic {
            self.topic.clear();
            self.topic.push_str(topic);
        }
        self.partition = partition;
        self.offsets.clear();
        self.timestamps.clear();
        self.spans.clear();
        self.header_spans.clear();
        self.data.clear();
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Append one record: its bytes go to `data`, where they are go to the columns.
    pub fn push(
        &mut self,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[crate::record::Header],
    ) {
        self.offsets.push(offset);
        self.timestamps.push(timestamp.unwrap_or(-1));
        let first_header = (self.header_spans.len() / 4) as u32;
        for (k, v) in headers {
            // The contract promises UTF-8 keys: one that is not is passed with U+FFFD for its bad bytes.
            let k = self.append(Some(&String::from_utf8_lossy(k).as_bytes()));
            let v = self.append(v.as_deref());
            self.header_spans.extend_from_slice(&[k.0, k.1, v.0, v.1]);
        }
        let k = self.append(key);
        let v = self.append(value);
        self.spans.extend_from_slice(&[k.0, k.1, v.0, v.1, first_header, headers.len() as u32]);
    }

    fn append(&mut self, bytes: Option<&[u8]>) -> (u32, u32) {
        match bytes {
            Some(b) => {
                let start = self.data.len() as u32;
                self.data.extend_from_slice(b);
                (start, b.len() as u32)
            }
            None => (0, ABSENT),
        }
    }
}

/// What the host does with an output document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Upsert,
    Delete,
}

/// One record's outcome in a checked [`BatchResult`].
#[derive(Debug)]
pub enum OutcomeRef<'a> {
    Drop,
    /// Indices of its outputs ([`BatchResult::output`]).
    Emit(std::ops::Range<u32>),
    Error(std::borrow::Cow<'a, str>),
}

/// One output in a checked [`BatchResult`].
#[derive(Debug)]
pub struct OutputRef<'a> {
    pub operation: Operation,
    /// JSON, as the plugin wrote it (the host parses it before writing).
    pub document: &'a [u8],
    /// `None`: the configured collection.
    pub collection: Option<&'a str>,
}

impl BatchResult {
    fn span(&self, start: u32, len: u32) -> Option<&[u8]> {
        self.data.get(start as usize..(start as usize).checked_add(len as usize)?)
    }

    /// Every rule of the contract, checked once: afterwards [`outcome`](Self::outcome)
    /// and [`output`](Self::output) cannot fail. A plugin is not trusted.
    pub fn check(&self, records: usize) -> Result<(), String> {
        if self.outcomes.len() != 3 * records {
            return Err(format!("{} outcome numbers for {records} records (3 per record)", self.outcomes.len()));
        }
        if !self.outputs.len().is_multiple_of(5) {
            return Err(format!("{} output numbers: not a multiple of 5", self.outputs.len()));
        }
        let outputs = (self.outputs.len() / 5) as u64;
        for (i, o) in self.outcomes.chunks_exact(3).enumerate() {
            let (first, count) = (o[1] as u64, o[2] as u64);
            match o[0] {
                0 => {}
                1 if first + count <= outputs => {}
                1 => return Err(format!("record {i}: outputs {first}..{} beyond the {outputs} given", first + count)),
                2 if self.span(o[1], o[2]).is_some() => {}
                2 => return Err(format!("record {i}: error message outside the data")),
                k => return Err(format!("record {i}: unknown outcome kind {k}")),
            }
        }
        for (j, o) in self.outputs.chunks_exact(5).enumerate() {
            if o[0] > 2 {
                return Err(format!("output {j}: unknown operation {}", o[0]));
            }
            if self.span(o[1], o[2]).is_none() {
                return Err(format!("output {j}: document outside the data"));
            }
            if o[4] != ABSENT {
                match self.span(o[3], o[4]).map(std::str::from_utf8) {
                    Some(Ok(_)) => {}
                    Some(Err(_)) => return Err(format!("output {j}: collection name is not UTF-8")),
                    None => return Err(format!("output {j}: collection name outside the data")),
                }
            }
        }
        Ok(())
    }

    /// Outcome of record `i` (after [`check`](Self::check)).
    pub fn outcome(&self, i: usize) -> OutcomeRef<'_> {
        let o = &self.outcomes[3 * i..3 * i + 3];
        match o[0] {
            0 => OutcomeRef::Drop,
            1 => OutcomeRef::Emit(o[1]..o[1] + o[2]),
            _ => OutcomeRef::Error(String::from_utf8_lossy(self.span(o[1], o[2]).unwrap_or_default())),
        }
    }

    /// Output `j` (after [`check`](Self::check)).
    pub fn output(&self, j: u32) -> OutputRef<'_> {
        let o = &self.outputs[5 * j as usize..5 * j as usize + 5];
        OutputRef {
            operation: match o[0] {
                0 => Operation::Insert,
                1 => Operation::Upsert,
                _ => Operation::Delete,
            },
            document: self.span(o[1], o[2]).unwrap_or_default(),
            collection: (o[4] != ABSENT).then(|| self.span(o[3], o[4]).and_then(|c| std::str::from_utf8(c).ok()).unwrap_or_default()),
        }
    }
}

/// Per-store host state: the plugin's name (for its log lines) and its limits.
pub struct HostState {
    plugin: String,
    limits: Limits,
    /// The SDK's panic hook logs `panic: …` just before the abort trap.
    last_panic: Option<String>,
    log_limit: LogLimit,
}

/// The memory cap, remembering whether it refused a growth (a guest usually
/// turns a refused `memory.grow` into an abort, which is then a memory-limit trap).
struct Limits {
    memory_bytes: usize,
    memory_refused: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_bytes;
        if !ok {
            self.memory_refused = true;
        }
        Ok(ok)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
    fn instances(&self) -> usize {
        16
    }
    fn tables(&self) -> usize {
        16
    }
    fn memories(&self) -> usize {
        4
    }
}

/// Longest log line a plugin may write; the rest is cut.
const MAX_LOG_LINE: usize = 4096;

/// Plugin log lines at info and above that an instance may write per second (and in a burst).
const LOG_LINES_PER_SECOND: u32 = 10;

/// A token bucket for an instance's log lines, so that a plugin logging on
/// every record (or every bad one) cannot flood the host's log.
struct LogLimit {
    tokens: f64,
    at: Instant,
    /// Lines refused since the last one let through.
    suppressed: u64,
}

impl LogLimit {
    fn new(now: Instant) -> LogLimit {
        LogLimit { tokens: f64::from(LOG_LINES_PER_SECOND), at: now, suppressed: 0 }
    }

    /// Whether a line may be logged at `now`: `Some(lines suppressed before it)`, or `None`.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let rate = f64::from(LOG_LINES_PER_SECOND);
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl bindings::sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.as_str();
        if message.starts_with("panic: ") {
            // It becomes the failure's reason (dead-letter header, failure summary);
            // logged at info it would be one line per failing record.
            tracing::debug!(plugin, "{message}");
            self.last_panic = Some(message);
            return;
        }
        // Debug and trace are off unless asked for; the others are limited.
        if !matches!(level, Level::Trace | Level::Debug) {
            match self.log_limit.admit(Instant::now()) {
                None => return,
                Some(0) => {}
                Some(n) => tracing::warn!(plugin, "{n} plugin log lines suppressed (more than {LOG_LINES_PER_SECOND} a second)"),
            }
        }
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl bindings::sluice::plugin::types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcomes: &[u32], outputs: &[u32], data: &[u8]) -> BatchResult {
        BatchResult { outcomes: outcomes.to_vec(), outputs: outputs.to_vec(), data: data.to_vec() }
    }

    /// Every prefix of a real plugin (a file still being copied, a truncated
    /// download) is refused with an error, never a panic.
    #[test]
    fn truncated_plugin_files_are_errors_not_panics() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-unknown-unknown/release/passthrough.wasm");
        let bytes = std::fs::read(&path).expect("make plugins");
        let rt = Runtime::new().unwrap();
        let cfg = PluginConfig::new("p", &path);
        let step = (bytes.len() / 97).max(1);
        for cut in (8..bytes.len()).step_by(step) {
            let e = rt.validate(&cfg, bytes[..cut].to_vec()).map(|_| ()).unwrap_err().to_string();
            assert!(!e.is_empty() && !e.contains('\n'), "cut at {cut}: {e}");
        }
        rt.validate(&cfg, bytes).unwrap();
    }

    #[test]
    fn a_batch_result_is_checked_before_it_is_read() {
        let ok = result(&[1, 0, 1, 2, 7, 3, 0, 0, 0], &[0, 0, 7, 10, 1], b"{\"a\":1}errc");
        ok.check(3).unwrap();
        assert!(matches!(ok.outcome(1), OutcomeRef::Error(m) if m == "err"));
        let out = ok.output(0);
        assert_eq!((out.operation, out.document, out.collection), (Operation::Insert, &b"{\"a\":1}"[..], Some("c")));
        for (bad, needle) in [
            (result(&[1, 0, 1], &[0, 0, 7, 0, ABSENT], b"{}"), "document outside"),
            (result(&[1, 0, 2], &[0, 0, 2, 0, ABSENT], b"{}"), "beyond the 1 given"),
            (result(&[1, 0, 1], &[3, 0, 2, 0, ABSENT], b"{}"), "unknown operation 3"),
            (result(&[9, 0, 0], &[], b""), "unknown outcome kind 9"),
            (result(&[2, 0, 5], &[], b"ab"), "error message outside"),
            (result(&[1, 0, 1], &[0, 0, 2, 1, 1], b"{\xff"), "not UTF-8"),
            (result(&[0, 0, 0, 0, 0, 0], &[], b""), "6 outcome numbers for 1 records"),
            (result(&[1, 4294967295, 2], &[], b""), "beyond"),
        ] {
            let e = bad.check(1).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn a_batch_puts_bytes_in_data_and_places_in_columns() {
        let mut b = Batch::new("t", 2);
        b.push(5, Some(9), Some(b"k"), Some(b"{}"), &[("h".into(), None)]);
        b.push(6, None, None, None, &[]);
        assert_eq!(b.data, b"hk{}");
        assert_eq!(b.header_spans, [0, 1, 0, ABSENT]);
        assert_eq!(b.spans, [1, 1, 2, 2, 0, 1, 0, ABSENT, 0, ABSENT, 1, 0]);
        assert_eq!((b.offsets.as_slice(), b.timestamps.as_slice()), (&[5, 6][..], &[9, -1][..]));
        b.reset("u", 0);
        assert!(b.is_empty() && b.data.is_empty() && b.topic == "u");
    }

    #[test]
    fn plugin_log_lines_are_limited_and_the_suppressed_ones_counted() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(t0);
        // A burst of 10, then nothing until tokens come back (one per 100 ms).
        let burst: Vec<Option<u64>> = (0..15).map(|_| limit.admit(t0)).collect();
        assert_eq!(burst, [vec![Some(0); 10], vec![None; 5]].concat());
        assert_eq!(limit.admit(t0 + Duration::from_millis(50)), None);
        assert_eq!(limit.admit(t0 + Duration::from_millis(100)), Some(6), "the next line says how many were dropped");
        assert_eq!(limit.admit(t0 + Duration::from_millis(150)), None);
        // A long pause refills the bucket, up to the burst only.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..11).filter_map(|_| limit.admit(later)).collect::<Vec<_>>(), [vec![1], vec![0; 9]].concat());
        // A steady 10 lines a second all pass.
        let mut limit = LogLimit::new(t0);
        assert!((0..100).all(|i| limit.admit(t0 + Duration::from_millis(100 * i)).is_some()));
    }

    #[test]
    fn wasm_kinds_are_told_apart() {
        assert!(matches!(wasm_kind(b"\0asm\x01\0\0\0rest"), Some(WasmKind::Module)));
        assert!(matches!(wasm_kind(b"\0asm\x0d\0\x01\0rest"), Some(WasmKind::Component)));
        assert!(wasm_kind(b"\x7fELF\x02\x01\x01\0").is_none());
        assert!(wasm_kind(b"\0asm").is_none());
    }

    #[test]
    fn not_wasm_is_a_clear_error() {
        let rt = Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::fs::write(&path, b"#!/bin/sh\necho hi\n").unwrap();
        let cfg = PluginConfig::new("x", path.clone());
        let err = rt.load(&cfg).unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly module or component") && err.contains("x.wasm"), "{err}");
        let cfg = PluginConfig { path: dir.path().join("missing.wasm"), ..cfg };
        let err = rt.load(&cfg).unwrap_err().to_string();
        assert!(err.contains("cannot read") && err.contains("missing.wasm"), "{err}");
    }

    #[test]
    fn only_the_contracts_own_imports_are_allowed() {
        let imports =
            ["sluice:plugin/host@0.2.0", "wasi:clocks/wall-clock@0.2.6", "sluice:plugin/types@0.2.0", "env", "sluice:plugin/host@0.0.9"];
        assert_eq!(refused_imports(imports.into_iter()), ["wasi:clocks/wall-clock@0.2.6", "env"]);
        assert!(refused_imports(["sluice:plugin/host@0.2.0"].into_iter()).is_empty());
    }

    /// A core module importing `wasi_snapshot_preview1.fd_write` (what a wasm32-wasip1 build has).
    const WASI_MODULE: &[u8] = b"\0asm\x01\0\0\0\
        \x01\x09\x01\x60\x04\x7f\x7f\x7f\x7f\x01\x7f\
        \x02\x23\x01\x16wasi_snapshot_preview1\x08fd_write\x00\x00";

    #[test]
    fn a_wasi_module_is_refused_naming_its_imports() {
        assert_eq!(wasi_imports(WASI_MODULE), Some(("wasi_snapshot_preview1".into(), vec!["fd_write".into()])));
        assert_eq!(wasi_imports(b"\0asm\x01\0\0\0"), None);
        assert_eq!(wasi_imports(&WASI_MODULE[..20]), None, "a truncated module is left to componentize");
        let rt = Runtime::new().unwrap();
        let err = rt.validate(&PluginConfig::new("w", "w.wasm"), WASI_MODULE.to_vec()).unwrap_err().to_string();
        assert_eq!(
            err,
            "plugin `w` (w.wasm) is a WASI module: it imports `fd_write` from `wasi_snapshot_preview1`: plugins get no system \
             interfaces (filesystem, sockets, clocks, environment, …); build it with the guest SDK for wasm32-unknown-unknown"
        );
    }

    #[test]
    fn a_module_without_the_contract_is_rejected() {
        let rt = Runtime::new().unwrap();
        // The smallest valid core module: no component-type section, no exports.
        let module = b"\0asm\x01\0\0\0";
        let cfg = PluginConfig::new("empty", "empty.wasm");
        let err = rt.validate(&cfg, module.to_vec()).unwrap_err().to_string();
        assert!(err.contains("plugin `empty`"), "{err}");
    }
}
