//! A sandboxed instance of a plugin: its own store, memory cap and per-call
//! deadline, the host interface it may call (logging, rate-limited), and one
//! call of `process` with its trap turned into a [`RuntimeError::Trap`].

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{ResourceLimiter, Store};

use super::columns::bindings::{self, Plugin};
use super::columns::{Batch, BatchResult};
use super::engine::{arm, ticks};
use super::load::LoadedPlugin;
use super::runtime::{CallLimit, RuntimeError, TrapKind};
use bindings::sluice::plugin::types::Level;

impl LoadedPlugin {
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

/// One sandboxed instance of a plugin.
pub struct PluginInstance {
    pub(super) plugin: Arc<LoadedPlugin>,
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
    use std::time::Duration;

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
}
