//! The `sluice` command line. `sluice --help`, and `--help` on every command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

/// Every record allocates a few times on its way (its bytes, their BSON, the
/// driver's buffers): mimalloc takes about 10% off the CPU per message that
/// glibc's allocator costs (a release host draining the same backlog,
/// alternately with each: 11.2 against 12.6 µs per message, 2026-12-02).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka -> WebAssembly plugins -> MongoDB, no message lost or duplicated",
    after_help = "Config keys can be set from the environment: SLUICE_<SECTION>_<KEY>, e.g. SLUICE_MONGO_URI, SLUICE_KAFKA_BROKERS,\nSLUICE_ADMIN_TOKEN, SLUICE_PIPELINE_BATCH_MAX_RECORDS. Logs: SLUICE_LOG (a tracing filter, default \"info,librdkafka=warn\"), colours only on a terminal."
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    // Boolish: the environment may say 1/0, yes/no, true/false, on/off (a plain bool flag takes only true/false).
    #[arg(long, global = true, env = "SLUICE_LOG_JSON", action = clap::ArgAction::SetTrue)]
    #[arg(value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The configuration file (TOML; every key is in docs/config.md).
#[derive(Args)]
struct ConfigArg {
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Consume, transform and write until stopped (SIGINT/SIGTERM). SIGHUP reloads
    /// the config's [[plugins]]; changed plugin files are swapped in while running.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Exit 0 once every assigned partition is written up to the end offset seen at assignment.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Check a configuration without connecting to anything: keys and values,
    /// plugin files, the contract, init with the params, self-tests.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Send messages to a topic: the tutorial's {"num": n}, or JSON lines from a file or stdin.
    Produce(ProduceArgs),
    /// Print the number of documents in the configured collection.
    Count {
        #[command(flatten)]
        config: ConfigArg,
        /// Also check the tutorial's numbers: exactly one document per `num` in 0..N.
        /// Prints `produced=N stored=S missing=M duplicates=D`; exits 1 unless exact.
        #[arg(long, value_name = "N")]
        expect_nums: Option<u64>,
        /// Also count by the plugin versions that made the documents
        /// (`pipeline.versions_field`), with each version's offsets per partition.
        #[arg(long)]
        by_version: bool,
    },
    /// Delete the configured topics, their dead-letter topics, the consumer group and its stored progress,
    /// the documents plugins routed to other collections, and drop the collection (destructive).
    Reset {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The group's offsets in both stores (Kafka's committed offset and MongoDB's progress): show or move them.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// Write and try plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Dead-letter queue tools.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Args)]
struct ProduceArgs {
    /// Connect as this config's [kafka] says (brokers, TLS and SASL options); its first topic is the default --topic.
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The topic [default: the config's first topic, else testnum].
    #[arg(long)]
    topic: Option<String>,
    /// How many numbers (without --input).
    #[arg(long, default_value_t = 500)]
    count: u64,
    /// First number.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Send each line of this file (`-`: stdin) as a message instead of numbers.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Key each message with this field of its JSON value.
    #[arg(long, value_name = "FIELD")]
    key_field: Option<String>,
    /// A header for every message; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Pause between messages, e.g. "5s" (default: none).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    interval: Duration,
    /// At most this many messages per second (default: no limit).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bootstrap servers, over the config's [default: the config's, else 127.0.0.1:9092]. The older SLUICE_BROKERS works too.
    #[arg(long, env = "SLUICE_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate that builds as it is (a map function with a unit test).
    New {
        /// Crate name: lowercase letters, digits, `-`, `_`.
        name: String,
        /// Where to create it (default: ./<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The sluice-plugin crate (guest-sdk/) to depend on, by absolute path (default: the guest-sdk/ of the
        /// checkout this binary was built from; pass this when that checkout moved or is not on this machine).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Run plugins on records from a file with the real runtime and limits (no Kafka,
    /// no MongoDB) and print the write plan: per record, the MongoDB operations, or drop, or error.
    Test {
        /// The plugin's .wasm; several make a chain, in order (each named after its file).
        #[arg(value_name = "PLUGIN.wasm", required_unless_present = "config", conflicts_with = "config")]
        plugins: Vec<PathBuf>,
        /// Instead of .wasm files: the chain of this config's [[plugins]] (names, paths, params, limits,
        /// self-tests) and its pipeline.versions_field.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// JSON lines, one record value per line (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Each input line is {"key", "value", "value_raw", "headers"} instead of a value.
        #[arg(long)]
        envelope: bool,
        /// A parameter for the plugins' init (with --config: added to each plugin's params); repeat for more.
        #[arg(long = "params", value_name = "KEY=VALUE", value_parser = key_value)]
        params: Vec<(String, String)>,
        /// The topic the records come from (in derived _ids).
        #[arg(long, default_value = "test")]
        topic: String,
        /// Add the chain's versions under this field, as pipeline.versions_field does (over the config's).
        #[arg(long, value_name = "FIELD")]
        versions_field: Option<String>,
        /// Compare the plan with this file (JSON lines); exit 1 where they differ.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
        /// Records per plugin call.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

#[derive(Subcommand)]
enum OffsetsCommand {
    /// Per partition: Kafka's committed offset, MongoDB's progress, where a run starts (the later), the topic's ends.
    Show {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move both stores together (stop the group's hosts first: Kafka refuses while they run).
    /// A rewind makes the next run consume again, idempotently.
    Set {
        #[command(flatten)]
        config: ConfigArg,
        /// To the start of each partition.
        #[arg(long, conflicts_with_all = ["to_end", "to_offset"])]
        to_beginning: bool,
        /// To the end of each partition (skip everything there now).
        #[arg(long, conflicts_with = "to_offset")]
        to_end: bool,
        /// To this offset (clamped to what the partition has).
        #[arg(long, value_name = "OFFSET")]
        to_offset: Option<i64>,
        /// Only this partition (of every configured topic).
        #[arg(long)]
        partition: Option<i32>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Send dead-lettered records back through the chain into MongoDB, idempotently;
    /// report what landed and what failed again.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The dead-letter topic (default: the first configured topic's, by dlq.topic).
        #[arg(long, value_name = "TOPIC")]
        from: Option<String>,
        /// Replay with a new file (a fixed version) for a plugin of the config's chain, which keeps its name,
        /// params, limits and self-tests: NAME=PATH, or PATH alone when the chain has one plugin or one
        /// named after the file. Repeat for more plugins.
        #[arg(long = "plugin", value_name = "[NAME=]PLUGIN.wasm")]
        plugins: Vec<sluice::cli::replay::PluginFile>,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
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
    let result = rt.block_on(real_main(cli.command));
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

async fn real_main(command: Command) -> anyhow::Result<()> {
    use sluice::config::Config;
    match command {
        Command::Run { config, until_caught_up } => {
            let cfg = Config::load(&config.config)?;
            tracing::debug!(config = ?cfg, "configuration");
            let summary = sluice::run(cfg, sluice::RunOptions { until_caught_up, reload_on_sighup: true }, shutdown_signal()).await?;
            // One machine-readable line on stdout (`duplicates` = inserts found already stored).
            println!("summary: {summary}");
            Ok(())
        }
        Command::Check { config } => {
            let cfg = Config::load(&config.config)?;
            let report = sluice::cli::store::check(&cfg)?;
            println!("{} is valid (nothing was contacted)", config.config.display());
            print!("{report}");
            Ok(())
        }
        Command::Produce(a) => {
            let kafka = a.config.as_deref().map(Config::load).transpose()?.map(|c| c.kafka);
            let mut client = kafka.as_ref().map(sluice::config::KafkaConfig::client_config).unwrap_or_default();
            if let Some(brokers) = a.brokers.or_else(|| std::env::var("SLUICE_BROKERS").ok()) {
                client.set("bootstrap.servers", brokers);
            } else if kafka.is_none() {
                client.set("bootstrap.servers", "127.0.0.1:9092");
            }
            let opts = sluice::produce::ProduceOptions {
                client,
                topic: a.topic.or_else(|| kafka.map(|k| k.topics[0].clone())).unwrap_or_else(|| "testnum".into()),
                count: a.count,
                start: a.start,
                interval: a.interval,
                rate: a.rate,
                partitions: a.partitions,
                input: a.input,
                key_field: a.key_field,
                headers: a.headers,
            };
            let bar = progress_bar(&opts, a.no_progress);
            let t = std::time::Instant::now();
            let sent = sluice::produce::produce_with_progress(&opts, |n| bar.set_position(n)).await.context("producing")?;
            bar.finish_and_clear();
            let secs = t.elapsed().as_secs_f64();
            println!("sent {sent} messages to {} in {secs:.2}s ({:.0}/s)", opts.topic, sent as f64 / secs.max(1e-9));
            Ok(())
        }
        Command::Count { config, expect_nums, by_version } => {
            let cfg = Config::load(&config.config)?;
            let n = sluice::cli::store::count(&cfg).await?;
            println!("{n} documents in {}.{}", cfg.mongo.database, cfg.mongo.collection);
            if by_version {
                for v in sluice::cli::store::count_by_version(&cfg).await? {
                    let chain = if v.chain.is_empty() { "(no versions field)" } else { &v.chain };
                    let ranges: Vec<String> = v.offsets.iter().map(|(p, (lo, hi))| format!("{p} offsets {lo}..={hi}")).collect();
                    println!("  {chain}: {} documents; {}", v.documents, ranges.join(", "));
                }
            }
            if let Some(expected) = expect_nums {
                let c = sluice::cli::store::check_nums(&cfg, expected).await?;
                println!("produced={expected} stored={} missing={} duplicates={}", c.stored, c.missing, c.duplicates);
                // Say what is wrong, and only that. A number stored twice is also what
                // numbers produced twice give (each record is its own document).
                let mut wrong = Vec::new();
                if c.missing > 0 {
                    wrong.push(format!("{} of the numbers 0..{expected} missing", c.missing));
                }
                if c.duplicates > 0 {
                    wrong.push(format!(
                        "{} extra documents for numbers stored more than once (were they produced more than once? \
                         `sluice reset` starts over from an empty topic, group and collection)",
                        c.duplicates
                    ));
                }
                if c.unexpected > 0 {
                    wrong.push(format!("{} documents without a num in 0..{expected}", c.unexpected));
                }
                anyhow::ensure!(wrong.is_empty(), "not exact: {}", wrong.join("; "));
            }
            Ok(())
        }
        Command::Reset { config } => {
            let cfg = Config::load(&config.config)?;
            let r = sluice::cli::store::reset(&cfg).await?;
            println!(
                "deleted topics {:?} and group {} (and its progress in {}), dropped {}.{}",
                r.topics, cfg.kafka.group_id, cfg.mongo.offsets_collection, cfg.mongo.database, cfg.mongo.collection
            );
            for (c, n) in &r.routed {
                println!("  deleted {n} documents routed to {}.{c}", cfg.mongo.database);
            }
            Ok(())
        }
        Command::Offsets(OffsetsCommand::Show { config }) => {
            let cfg = Config::load(&config.config)?;
            for p in sluice::cli::store::offsets(&cfg).await? {
                println!("{p}");
            }
            Ok(())
        }
        Command::Offsets(OffsetsCommand::Set { config, to_beginning, to_end, to_offset, partition }) => {
            use sluice::cli::store::OffsetTarget;
            let cfg = Config::load(&config.config)?;
            let to = match (to_beginning, to_end, to_offset) {
                (true, _, _) => OffsetTarget::Beginning,
                (_, true, _) => OffsetTarget::End,
                (_, _, Some(o)) => OffsetTarget::Offset(o),
                _ => anyhow::bail!("say where: --to-beginning, --to-end or --to-offset N"),
            };
            for p in sluice::cli::store::set_offsets(&cfg, to, partition).await? {
                println!("{p}");
            }
            Ok(())
        }
        Command::Plugin(PluginCommand::New { name, dir, sdk_path }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk_path.or_else(sluice::cli::scaffold::default_sdk_path).context(
                "where is the sluice-plugin crate? pass --sdk-path <sluice checkout>/guest-sdk (this binary was not built from one)",
            )?;
            let wasm = sluice::cli::scaffold::new_plugin(&name, &dir, &sdk)?;
            println!("created plugin {name} in {}", dir.display());
            println!(
                "next: cd {} && cargo build --release   # makes {}",
                dir.display(),
                wasm.strip_prefix(&dir).unwrap_or(&wasm).display()
            );
            println!("then: sluice plugin test {} --input records.jsonl", wasm.strip_prefix(&dir).unwrap_or(&wasm).display());
            Ok(())
        }
        Command::Plugin(PluginCommand::Test { plugins, config, input, envelope, params, topic, versions_field, expect, batch }) => {
            let (plugins, versions_field) = match config {
                Some(path) => {
                    let cfg = Config::load(&path)?;
                    (cfg.plugins, versions_field.or(cfg.pipeline.versions_field))
                }
                None => (sluice::cli::testbed::chain_of_files(&plugins), versions_field),
            };
            let opts = sluice::cli::testbed::TestOptions { plugins, params, input, envelope, topic, versions_field, batch };
            let records = sluice::cli::testbed::read_records(&opts)?;
            let plan = sluice::cli::testbed::run(&opts, &records)?;
            for line in &plan {
                println!("{line}");
            }
            let count = |key: &str| plan.iter().filter(|l| l.get(key).is_some()).count();
            eprintln!("{} records: {} written, {} dropped, {} failed", plan.len(), count("ops"), count("dropped"), count("error"));
            if let Some(expected) = expect {
                sluice::cli::testbed::check_expected(&plan, &expected, opts.versions_field.as_deref())?;
                eprintln!("the plan matches {}", expected.display());
            }
            Ok(())
        }
        Command::Dlq(DlqCommand::Replay { config, from, plugins }) => {
            let cfg = Config::load(&config.config)?;
            let from = from.unwrap_or_else(|| cfg.dlq.topic_for(&cfg.kafka.topics[0]));
            let r = sluice::cli::replay::replay(&cfg, &from, &plugins).await?;
            println!(
                "replayed {} dead letters from {from}: {} documents written, {} already there, {} dropped, {} failed again",
                r.read,
                r.written,
                r.already_there,
                r.dropped,
                r.failed.len()
            );
            if r.other_groups > 0 {
                println!("  {} dead letters of other consumer groups left alone (sluice.group)", r.other_groups);
            }
            if r.from_source > 0 {
                println!("  {} truncated dead letters took their value from the source topic", r.from_source);
            }
            if r.without_source > 0 {
                println!("  {} had no sluice.source.* headers (replayed with their dead-letter coordinates)", r.without_source);
            }
            for (at, f) in r.failed.iter().take(50) {
                println!("  failed again: {at} ({}, plugin {}): {}", f.kind.as_str(), f.plugin.as_deref().unwrap_or("-"), f.message);
            }
            anyhow::ensure!(r.failed.is_empty(), "{} records failed again (listed above)", r.failed.len());
            Ok(())
        }
    }
}

/// A progress bar with the rate, on stderr when it is a terminal.
fn progress_bar(opts: &sluice::produce::ProduceOptions, off: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if off {
        return ProgressBar::hidden();
    }
    let bar = match opts.input {
        None => ProgressBar::with_draw_target(Some(opts.count), ProgressDrawTarget::stderr()),
        Some(_) => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = match opts.input {
        None => "{bar:40} {pos}/{len} messages, {per_sec}, {eta} left",
        Some(_) => "{spinner} {pos} messages, {per_sec}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
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
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
