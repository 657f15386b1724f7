//! The `sluice` command line. `sluice --help`, and `--help` on every command;
//! the commands themselves are in `sluice::cli`, one module each.

use std::process::ExitCode;

use clap::Parser as _;

/// Every record allocates a few times on its way (its bytes, their BSON, the
/// driver's buffers): mimalloc takes about 10% off the CPU per message that
/// glibc's allocator costs (a release host draining the same backlog,
/// alternately with each: 11.2 against 12.6 µs per message, 2026-12-02).
/// The `system-alloc` feature leaves it out, for heap profilers that hook
/// malloc (heaptrack, used for the soak of #19).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    init_logging(cli.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(sluice::cli::dispatch(cli.command));
    // A plugin call still running on a blocking thread (a drain that timed out)
    // must not keep the process alive past pipeline.shutdown_timeout.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
