//! `sluice produce`: send the tutorial's `{"num": n}` messages, or JSON lines
//! from a file or stdin, to a topic, with a progress bar on a terminal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::common::key_value;
use crate::config::{Config, KafkaConfig};
use crate::kafka::produce::{ProduceOptions, produce_with_progress};

#[derive(Args)]
pub struct ProduceArgs {
    /// Connect as this config's [kafka] says (brokers, TLS and SASL options); its first topic is the default --topic.
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The topic [default: the config's first topic, else testnum].
    #[arg(long)]
    pub topic: Option<String>,
    /// How many numbers (without --input).
    #[arg(long, default_value_t = 500)]
    pub count: u64,
    /// First number.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Send each line of this file (`-`: stdin) as a message instead of numbers.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Key each message with this field of its JSON value.
    #[arg(long, value_name = "FIELD")]
    pub key_field: Option<String>,
    /// A header for every message; repeat for more.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = key_value)]
    pub headers: Vec<(String, String)>,
    /// Pause between messages, e.g. "5s" (default: none).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub interval: Duration,
    /// At most this many messages per second (default: no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Bootstrap servers, over the config's [default: the config's, else 127.0.0.1:9092]. The older SLUICE_BROKERS works too.
    #[arg(long, env = "SLUICE_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Partitions of the topic if it has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// Send the messages and print how many went where, how fast.
pub async fn execute(a: ProduceArgs) -> anyhow::Result<()> {
    let kafka = a.config.as_deref().map(Config::load).transpose()?.map(|c| c.kafka);
    let mut client = kafka.as_ref().map(KafkaConfig::client_config).unwrap_or_default();
    if let Some(brokers) = a.brokers.or_else(|| std::env::var("SLUICE_BROKERS").ok()) {
        client.set("bootstrap.servers", brokers);
    } else if kafka.is_none() {
        client.set("bootstrap.servers", "127.0.0.1:9092");
    }
    let opts = ProduceOptions {
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
    let sent = produce_with_progress(&opts, |n| bar.set_position(n)).await.context("producing")?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    println!("sent {sent} messages to {} in {secs:.2}s ({:.0}/s)", opts.topic, sent as f64 / secs.max(1e-9));
    Ok(())
}

/// A progress bar with the rate, on stderr when it is a terminal.
fn progress_bar(opts: &ProduceOptions, off: bool) -> indicatif::ProgressBar {
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
