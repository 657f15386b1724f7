//! The commands of the `sluice` binary, one module per command. Each module
//! holds the command's arguments, its `execute` (what the binary runs, output
//! included) and the library functions behind it:
//!
//! | command              | module          | what it does                                              |
//! |----------------------|-----------------|-----------------------------------------------------------|
//! | `sluice run`         | [`run`]         | consume, transform and write until stopped                |
//! | `sluice check`       | [`check`]       | check a configuration without connecting to anything      |
//! | `sluice produce`     | [`produce`]     | send the tutorial's numbers or JSON lines to a topic      |
//! | `sluice count`       | [`count`]       | count the documents (by number, by plugin version)        |
//! | `sluice reset`       | [`reset`]       | delete the topics, group, progress and collection         |
//! | `sluice offsets …`   | [`offsets`]     | show or move the group's offsets in Kafka and MongoDB     |
//! | `sluice plugin new`  | [`plugin_new`]  | create a plugin (Rust, Python or JavaScript)              |
//! | `sluice plugin build`| [`plugin_build`]| build a plugin directory into one `.wasm`                 |
//! | `sluice plugin test` | [`plugin_test`] | run plugins on records from a file, print the write plan  |
//! | `sluice dlq replay`  | [`dlq_replay`]  | send dead letters back through the chain into MongoDB     |
//! | `sluice rollout …`   | [`rollout`]     | shadow, canary, promote or abort a plugin version live    |
//!
//! [`common`] has what several of them share. The binary (`main.rs`) parses
//! [`Cli`], sets up logging and the runtime, and calls [`dispatch`].

pub mod check;
pub mod common;
pub mod count;
pub mod dlq_replay;
pub mod offsets;
pub mod plugin_build;
pub mod plugin_new;
pub mod plugin_test;
pub mod produce;
pub mod reset;
pub mod rollout;
pub mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kafka -> WebAssembly plugins -> MongoDB, no message lost or duplicated",
    after_help = "Config keys can be set from the environment: SLUICE_<SECTION>_<KEY>, e.g. SLUICE_MONGO_URI, SLUICE_KAFKA_BROKERS,\nSLUICE_ADMIN_TOKEN, SLUICE_PIPELINE_BATCH_MAX_RECORDS. Logs: SLUICE_LOG (a tracing filter, default \"info,librdkafka=warn\"), colours only on a terminal."
)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    // Boolish: the environment may say 1/0, yes/no, true/false, on/off (a plain bool flag takes only true/false).
    #[arg(long, global = true, env = "SLUICE_LOG_JSON", action = clap::ArgAction::SetTrue)]
    #[arg(value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Consume, transform and write until stopped (SIGINT/SIGTERM). SIGHUP reloads
    /// the config's [[plugins]]; changed plugin files are swapped in while running.
    Run(run::RunArgs),
    /// Check a configuration without connecting to anything: keys and values,
    /// plugin files, the contract, init with the params, self-tests.
    Check(check::CheckArgs),
    /// Send messages to a topic: the tutorial's {"num": n}, or JSON lines from a file or stdin.
    Produce(produce::ProduceArgs),
    /// Print the number of documents in the configured collection.
    Count(count::CountArgs),
    /// Delete the configured topics, their dead-letter topics, the consumer group and its stored progress,
    /// the documents plugins routed to other collections, and drop the collection (destructive).
    Reset(reset::ResetArgs),
    /// The group's offsets in both stores (Kafka's committed offset and MongoDB's progress): show or move them.
    #[command(subcommand)]
    Offsets(offsets::OffsetsCommand),
    /// Write and try plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Dead-letter queue tools.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Roll a new plugin version out on a running host (its admin API): shadow run, canary,
    /// promote, abort, status.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin that builds as it is (a map function with a unit test), in Rust, Python or JavaScript.
    New(plugin_new::PluginNewArgs),
    /// Build a plugin directory (Rust, Python or JavaScript) into one `.wasm`.
    Build(plugin_build::PluginBuildArgs),
    /// Run plugins on records from a file with the real runtime and limits (no Kafka,
    /// no MongoDB) and print the write plan: per record, the MongoDB operations, or drop, or error.
    Test(plugin_test::PluginTestArgs),
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Send dead-lettered records back through the chain into MongoDB, idempotently;
    /// report what landed and what failed again.
    Replay(dlq_replay::ReplayArgs),
}

/// Run a command to its end. `Err` is the failure to report (the binary prints
/// it and exits 1); `sluice run` exits the process itself on a second signal (130).
pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::execute(args).await,
        Command::Check(args) => check::execute(args),
        Command::Produce(args) => produce::execute(args).await,
        Command::Count(args) => count::execute(args).await,
        Command::Reset(args) => reset::execute(args).await,
        Command::Offsets(command) => offsets::execute(command).await,
        Command::Plugin(PluginCommand::New(args)) => plugin_new::execute(args),
        Command::Plugin(PluginCommand::Build(args)) => plugin_build::execute(args),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test::execute(args),
        Command::Dlq(DlqCommand::Replay(args)) => dlq_replay::execute(args).await,
        Command::Rollout(command) => rollout::execute(command).await,
    }
}
