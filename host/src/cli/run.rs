//! `sluice run`: consume, transform and write until stopped; the first
//! SIGINT/SIGTERM drains, a second one exits at once (status 130).

use clap::Args;

use super::common::ConfigArg;
use crate::pipeline::{RunOptions, run};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Exit 0 once every assigned partition is written up to the end offset seen at assignment.
    #[arg(long)]
    pub until_caught_up: bool,
}

/// Run the pipeline until stopped (or caught up), then print its summary line.
pub async fn execute(args: RunArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    // The binary's target, as when this was main.rs's: log filters and lines stay the same.
    tracing::debug!(target: "sluice", config = ?cfg, "configuration");
    let summary = run(cfg, RunOptions { until_caught_up: args.until_caught_up, reload_on_sighup: true }, shutdown_signal()).await?;
    // One machine-readable line on stdout (`duplicates` = inserts found already stored).
    println!("summary: {summary}");
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once
/// (nothing is lost: the uncommitted part is replayed idempotently).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(target: "sluice", "signal received: draining (send it again to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: exiting now; uncommitted records will be replayed");
        std::process::exit(130);
    });
}
