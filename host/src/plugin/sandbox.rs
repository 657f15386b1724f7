//! What a plugin reaches besides the contract: WASI 0.2 with nothing behind it.
//!
//! Python and JavaScript runtimes read clocks, entropy and stdio as they start,
//! so a component may import WASI 0.2 `cli`, `io`, `clocks`, `random`,
//! `filesystem` and `sockets`; anything else is refused at load. Behind them:
//! no preopened directory, no environment, no arguments, stdin closed, every
//! socket and name lookup denied; stdout and stderr become the plugin's
//! rate-limited log lines, at most [`MAX_PRINT_PER_CALL`] bytes per call.
//!
//! Clocks and randomness are deterministic so that a replay, a retry or a
//! shadow run gives the same outputs: the wall clock reads the newest record
//! timestamp of the batch (host time until the first batch with one), the
//! monotonic clock advances 1 µs per read, and randomness is seeded per call
//! from (version, topic, partition, first offset). A wait on a clock (a sleep,
//! a timer) returns at once, advancing the monotonic clock; waits adding up to
//! more than `limits.call_timeout` in one call end it as a timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::{Linker, Resource};
use wasmtime::{StoreContextMut, format_err};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as MonotonicClock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::instance::HostState;

/// Bytes a plugin may print (stdout and stderr together) in one call; more traps.
pub const MAX_PRINT_PER_CALL: usize = 1 << 20;

/// Longest log line a plugin may write; the rest is cut.
pub const MAX_LOG_LINE: usize = 4096;

/// Plugin log lines at info and above that an instance may write per second (and in a burst).
pub const LOG_LINES_PER_SECOND: u32 = 10;

/// The WASI 0.2 packages a component may import, besides the contract's own.
const WASI_PACKAGES: [&str; 6] = ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/"];

/// The interface whose waits are replaced (the version wasmtime-wasi implements).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The imports of a component that the host does not offer: anything but the
/// contract's (`sluice:plugin/…`) and WASI 0.2.x [`WASI_PACKAGES`].
pub fn refused_imports<'a>(imports: impl Iterator<Item = &'a str>) -> Vec<String> {
    imports
        .filter(|n| {
            let wasi = WASI_PACKAGES.iter().any(|p| n.starts_with(p)) && n.split_once('@').is_some_and(|(_, v)| v.starts_with("0.2."));
            !(n.starts_with(sluice_contract::INTERFACE_PREFIX) || wasi)
        })
        .map(String::from)
        .collect()
}

/// Add WASI 0.2 to the linker, with clock waits that never block.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock
        .func_wrap("subscribe-duration", |mut store: StoreContextMut<HostState>, (nanos,): (u64,)| Ok((store.data_mut().wait(nanos)?,)))?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<HostState>, (when,): (u64,)| {
        let state = store.data_mut();
        let nanos = when.saturating_sub(state.sandbox.clock.monotonic.load(Ordering::Relaxed));
        Ok((state.wait(nanos)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

impl HostState {
    /// A wait of `nanos` on the monotonic clock: counted against the call's
    /// budget, then a pollable that is ready at once, the clock moved on.
    fn wait(&mut self, nanos: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let s = &mut self.sandbox;
        s.waited = s.waited.saturating_add(nanos);
        if Duration::from_nanos(s.waited) > s.call_timeout {
            s.waited_out = true;
            return Err(format_err!("the plugin waited {:?} on a clock in one call", Duration::from_nanos(s.waited)));
        }
        s.clock.monotonic.fetch_add(nanos, Ordering::Relaxed);
        MonotonicClock::subscribe_duration(&mut self.clocks(), 0)
    }
}

/// An instance's WASI state besides the context: the clocks and seeds it
/// shares with that context, and what it printed.
pub struct Sandbox {
    pub clock: Arc<Clocks>,
    seed: Arc<Seed>,
    pub log: Arc<Mutex<PluginLog>>,
    call_timeout: Duration,
    /// Nanoseconds waited on clocks in this call.
    waited: u64,
    /// The last call ended by waiting beyond its budget.
    pub waited_out: bool,
    version: String,
}

impl Sandbox {
    /// The deny-all context of an instance of `plugin`@`version` and its sandbox state.
    pub fn new(plugin: &str, version: &str, call_timeout: Duration) -> (WasiCtx, Sandbox) {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let clock = Arc::new(Clocks { wall: AtomicU64::new(now.as_nanos() as u64), monotonic: AtomicU64::new(0) });
        let seed = Arc::new(Seed { state: AtomicU64::new(hash(&[version.as_bytes()])) });
        let log = Arc::new(Mutex::new(PluginLog::new(plugin)));
        let mut b = WasiCtxBuilder::new();
        b.stdout(Print { log: log.clone(), stream: Stream::Stdout })
            .stderr(Print { log: log.clone(), stream: Stream::Stderr })
            .wall_clock(WallClock(clock.clone()))
            .monotonic_clock(MonoClock(clock.clone()))
            .secure_random(SeededRng { seed: seed.clone(), stream: 1 })
            .insecure_random(SeededRng { seed: seed.clone(), stream: 2 })
            .insecure_random_seed(u128::from(hash(&[version.as_bytes(), b"hash-seed"])))
            .max_random_size(1 << 20)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let sandbox = Sandbox { clock, seed, log, call_timeout, waited: 0, waited_out: false, version: version.to_owned() };
        (b.build(), sandbox)
    }

    /// Before a call of `process`: the wall clock at the batch's newest record
    /// timestamp (milliseconds; kept if it has none), randomness seeded from the
    /// batch's coordinates, the wait and print budgets full again.
    pub fn begin_call(&mut self, topic: &str, partition: i32, first_offset: i64, newest_ms: Option<i64>) {
        if let Some(ms) = newest_ms.filter(|ms| *ms >= 0) {
            self.clock.wall.store((ms as u64).saturating_mul(1_000_000), Ordering::Relaxed);
        }
        let seed = hash(&[self.version.as_bytes(), topic.as_bytes(), &partition.to_le_bytes(), &first_offset.to_le_bytes()]);
        self.seed.state.store(seed, Ordering::Relaxed);
        self.waited = 0;
        self.waited_out = false;
        self.log.lock().unwrap_or_else(|e| e.into_inner()).printed = 0;
    }

    /// After a call: print what is left of an unfinished line.
    pub fn end_call(&mut self) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// FNV-1a over the parts (with a separator), for seeds that do not change
/// across Rust versions.
fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The instance's clocks: wall in nanoseconds since the epoch, monotonic in nanoseconds.
pub struct Clocks {
    wall: AtomicU64,
    pub monotonic: AtomicU64,
}

struct WallClock(Arc<Clocks>);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.wall.load(Ordering::Relaxed))
    }
}

struct MonoClock(Arc<Clocks>);

impl HostMonotonicClock for MonoClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    /// Each read moves it 1 µs on: time passes, deterministically.
    fn now(&self) -> u64 {
        self.0.monotonic.fetch_add(1_000, Ordering::Relaxed) + 1_000
    }
}

/// Seed state shared by an instance's generators, reset per call.
struct Seed {
    state: AtomicU64,
}

/// SplitMix64 over the shared seed; `stream` keeps the secure and insecure
/// interfaces apart. Deterministic by design: not for secrets.
struct SeededRng {
    seed: Arc<Seed>,
    stream: u64,
}

impl rand_core::TryRng for SeededRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let s = self.seed.state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ self.stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        let mut z = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let n = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stream {
    Stdout,
    Stderr,
}

/// A plugin's log: `host.log` lines and printed lines, one rate limit for both.
pub struct PluginLog {
    plugin: String,
    limit: LogLimit,
    /// Bytes printed in this call.
    printed: usize,
    /// Unfinished printed lines, per stream.
    partial: [Vec<u8>; 2],
}

impl PluginLog {
    fn new(plugin: &str) -> PluginLog {
        PluginLog { plugin: plugin.to_owned(), limit: LogLimit::new(Instant::now()), printed: 0, partial: [Vec::new(), Vec::new()] }
    }

    /// Log `message` at `level` unless over the rate (trace and debug are not limited:
    /// they are off unless asked for).
    pub fn line(&mut self, level: tracing::Level, message: &str) {
        let message = cut(message);
        let plugin = self.plugin.as_str();
        if level < tracing::Level::DEBUG {
            match self.limit.admit(Instant::now()) {
                None => return,
                Some(0) => {}
                Some(n) => tracing::warn!(plugin, "{n} plugin log lines suppressed (more than {LOG_LINES_PER_SECOND} a second)"),
            }
        }
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        }
    }

    fn print(&mut self, stream: Stream, bytes: &[u8]) -> StreamResult<()> {
        self.printed = self.printed.saturating_add(bytes.len());
        if self.printed > MAX_PRINT_PER_CALL {
            return Err(StreamError::trap(&format!(
                "the plugin printed more than {MAX_PRINT_PER_CALL} bytes to stdout/stderr in one call"
            )));
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[stream as usize]);
            line.extend_from_slice(&rest[..nl]);
            self.emit(stream, &line);
            rest = &rest[nl + 1..];
        }
        let partial = &mut self.partial[stream as usize];
        let room = (MAX_LOG_LINE + 4).saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(())
    }

    fn flush(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.emit(stream, &line);
            }
        }
    }

    fn emit(&mut self, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        match stream {
            Stream::Stdout => self.line(tracing::Level::INFO, &format!("stdout: {text}")),
            Stream::Stderr => self.line(tracing::Level::WARN, &format!("stderr: {text}")),
        }
    }
}

/// `message`, cut to [`MAX_LOG_LINE`] bytes at a character boundary.
fn cut(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LOG_LINE {
        return message.into();
    }
    let mut end = MAX_LOG_LINE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end]).into()
}

/// A token bucket for an instance's log lines, so that a plugin logging on
/// every record (or every bad one) cannot flood the host's log.
pub struct LogLimit {
    tokens: f64,
    at: Instant,
    /// Lines refused since the last one let through.
    suppressed: u64,
}

impl LogLimit {
    pub fn new(now: Instant) -> LogLimit {
        LogLimit { tokens: f64::from(LOG_LINES_PER_SECOND), at: now, suppressed: 0 }
    }

    /// Whether a line may be logged at `now`: `Some(lines suppressed before it)`, or `None`.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
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

/// A plugin's stdout or stderr.
struct Print {
    log: Arc<Mutex<PluginLog>>,
    stream: Stream,
}

impl Print {
    fn write(&self, bytes: &[u8]) -> StreamResult<()> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).print(self.stream, bytes)
    }
}

impl IsTerminal for Print {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Print {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Print { log: self.log.clone(), stream: self.stream })
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(Print { log: self.log.clone(), stream: self.stream })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Print {
    async fn ready(&mut self) {}
}

impl OutputStream for Print {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        Print::write(self, &bytes)
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Print {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Print::write(&self, buf).map(|()| buf.len()).map_err(|_| std::io::Error::other("print limit reached")))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::TryRng;

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
    fn only_the_contract_and_wasi_0_2_imports_are_allowed() {
        let imports = [
            "sluice:plugin/host@0.2.0",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:sockets/tcp@0.2.9",
            "wasi:http/outgoing-handler@0.2.10",
            "wasi:clocks/wall-clock@0.3.0",
            "wasi:cli/environment",
            "env",
            "sluice:plugin/types@0.2.0",
        ];
        assert_eq!(
            refused_imports(imports.into_iter()),
            ["wasi:http/outgoing-handler@0.2.10", "wasi:clocks/wall-clock@0.3.0", "wasi:cli/environment", "env"]
        );
    }

    #[test]
    fn randomness_repeats_per_seed_and_differs_across_seeds() {
        let (_ctx, mut s) = Sandbox::new("p", "abc", Duration::from_secs(1));
        let mut rng = SeededRng { seed: s.seed.clone(), stream: 1 };
        let mut draw = |s: &mut Sandbox, offset| {
            s.begin_call("t", 0, offset, None);
            (0..4).map(|_| rng.try_next_u64().unwrap()).collect::<Vec<_>>()
        };
        let a = draw(&mut s, 10);
        assert_eq!(a, draw(&mut s, 10), "the same batch draws the same numbers");
        assert_ne!(a, draw(&mut s, 11));
        let mut other = SeededRng { seed: s.seed.clone(), stream: 2 };
        s.begin_call("t", 0, 10, None);
        assert_ne!(other.try_next_u64().unwrap(), a[0], "the insecure stream is another sequence");
    }

    #[test]
    fn the_wall_clock_reads_the_newest_record_time() {
        let (_ctx, mut s) = Sandbox::new("p", "abc", Duration::from_secs(1));
        let wall = WallClock(s.clock.clone());
        let started = wall.now();
        s.begin_call("t", 0, 0, None);
        assert_eq!(wall.now(), started, "no timestamp: the clock stays");
        s.begin_call("t", 0, 0, Some(1_700_000_000_123));
        assert_eq!(wall.now(), Duration::from_millis(1_700_000_000_123));
        let mono = MonoClock(s.clock.clone());
        assert_eq!((mono.now(), mono.now()), (1_000, 2_000));
    }

    #[test]
    fn printed_lines_are_split_and_the_budget_traps() {
        let mut log = PluginLog::new("p");
        log.print(Stream::Stdout, b"hello\nwor").unwrap();
        assert_eq!(log.partial[0], b"wor");
        log.print(Stream::Stdout, b"ld\n").unwrap();
        assert!(log.partial[0].is_empty());
        // An endless line is kept to about one log line.
        log.print(Stream::Stderr, &vec![b'x'; 10_000]).unwrap();
        assert!(log.partial[1].len() <= MAX_LOG_LINE + 4);
        let err = log.print(Stream::Stdout, &vec![b'y'; MAX_PRINT_PER_CALL]).unwrap_err();
        assert!(matches!(err, StreamError::Trap(_)));
    }
}
