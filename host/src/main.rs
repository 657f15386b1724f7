//! The `sluice` command line: `run`, `produce`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Kafka -> WebAssembly plugins -> MongoDB, no message lost or duplicated")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "SLUICE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume, transform and write until stopped (SIGINT/SIGTERM). SIGHUP reloads
    /// the config's [[plugins]]; changed plugin files are swapped in while running.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Exit 0 once every assigned partition is written up to the end offset seen at assignment.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Send the tutorial's messages, {"num": n}, to a topic.
    Produce {
        #[arg(long, default_value = "testnum")]
        topic: String,
        #[arg(long, default_value_t = 500)]
        count: u64,
        /// First number.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Pause between messages, e.g. "5s" (default: none).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        interval: Duration,
        /// At most this many messages per second (default: no limit).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value = "127.0.0.1:9092", env = "SLUICE_BROKERS")]
        brokers: String,
        /// Partitions of the topic if it has to be created.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// Print the number of documents in the configured collection.
    Count {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Also check the tutorial's numbers: exactly one document per `num` in 0..N.
        /// Prints `produced=N stored=S missing=M duplicates=D`; exits 1 unless exact.
        #[arg(long, value_name = "N")]
        expect_nums: Option<u64>,
        /// Also count by the plugin versions that made the documents
        /// (`pipeline.versions_field`), with each version's offsets per partition.
        #[arg(long)]
        by_version: bool,
    },
    /// Delete the configured topics and consumer group and drop the collection (destructive).
    Reset {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, until_caught_up } => {
            let cfg = sluice::config::Config::load(&config)?;
            tracing::debug!(config = ?cfg, "configuration");
            let summary = sluice::run(cfg, sluice::RunOptions { until_caught_up, reload_on_sighup: true }, shutdown_signal()).await?;
            // One machine-readable line on stdout (`duplicates` = inserts found already stored).
            println!("summary: {summary}");
            Ok(())
        }
        Command::Produce { topic, count, start, interval, rate, brokers, partitions } => {
            let opts = sluice::produce::ProduceOptions { brokers, topic, count, start, interval, rate, partitions };
            let t = std::time::Instant::now();
            let sent = sluice::produce::produce(&opts).await.context("producing")?;
            let secs = t.elapsed().as_secs_f64();
            println!("sent {sent} messages to {} in {secs:.2}s ({:.0}/s)", opts.topic, sent as f64 / secs.max(1e-9));
            Ok(())
        }
        Command::Count { config, expect_nums, by_version } => {
            let cfg = sluice::config::Config::load(&config)?;
            let n = sluice::ops::count(&cfg).await?;
            println!("{n} documents in {}.{}", cfg.mongo.database, cfg.mongo.collection);
            if by_version {
                for v in sluice::ops::count_by_version(&cfg).await? {
                    let chain = if v.chain.is_empty() { "(no versions field)" } else { &v.chain };
                    let ranges: Vec<String> = v.offsets.iter().map(|(p, (lo, hi))| format!("{p} offsets {lo}..={hi}")).collect();
                    println!("  {chain}: {} documents; {}", v.documents, ranges.join(", "));
                }
            }
            if let Some(expected) = expect_nums {
                let c = sluice::ops::check_nums(&cfg, expected).await?;
                println!("produced={expected} stored={} missing={} duplicates={}", c.stored, c.missing, c.duplicates);
                anyhow::ensure!(
                    c.missing == 0 && c.duplicates == 0 && c.unexpected == 0,
                    "not exact ({} documents without a num in 0..{expected})",
                    c.unexpected
                );
            }
            Ok(())
        }
        Command::Reset { config } => {
            let cfg = sluice::config::Config::load(&config)?;
            sluice::ops::reset(&cfg).await?;
            println!(
                "deleted topics {:?} and group {}, dropped {}.{}",
                cfg.kafka.topics, cfg.kafka.group_id, cfg.mongo.database, cfg.mongo.collection
            );
            Ok(())
        }
    }
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once
/// (nothing is lost: the uncommitted part is replayed idempotently).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received: draining (send it again to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: exiting now; uncommitted records will be replayed");
        std::process::exit(130);
    });
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
