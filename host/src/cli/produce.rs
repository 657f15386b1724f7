//! `sluice produce`: send the tutorial's `{"num": n}` messages, or JSON lines
//! from a file or stdin, to a topic, with a progress bar on a terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use super::common::key_value;
use crate::config::{Config, Format, KafkaConfig, SchemaRegistryConfig};
use crate::formats::Registry;
use crate::formats::encode::{AvroEncoder, JsonSchemaEncoder};
use crate::kafka::produce::{Encode, ProduceOptions, produce_with_progress};

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
    /// Send values as avro or json-schema (Confluent's wire format) with --schema, registered
    /// under `<topic>-value` in the schema registry [default: json, as they are].
    #[arg(long, value_name = "FORMAT", default_value = "json", requires_if("avro", "schema"), requires_if("json-schema", "schema"))]
    pub value_format: Format,
    /// The value schema (.avsc for avro, a JSON Schema for json-schema).
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// The schema registry's URL [default: the config's [schema_registry]].
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
}

/// Send the messages and print how many went where, how fast.
pub async fn execute(a: ProduceArgs) -> anyhow::Result<()> {
    let config = a.config.as_deref().map(Config::load).transpose()?;
    let registry = a.registry.map(SchemaRegistryConfig::at).or_else(|| config.as_ref().and_then(|c| c.schema_registry.clone()));
    let kafka = config.map(|c| c.kafka);
    let mut client = kafka.as_ref().map(KafkaConfig::client_config).unwrap_or_default();
    if let Some(brokers) = a.brokers.or_else(|| std::env::var("SLUICE_BROKERS").ok()) {
        client.set("bootstrap.servers", brokers);
    } else if kafka.is_none() {
        client.set("bootstrap.servers", "127.0.0.1:9092");
    }
    let topic = a.topic.or_else(|| kafka.map(|k| k.topics[0].clone())).unwrap_or_else(|| "testnum".into());
    let encode = encoder(a.value_format, a.schema.as_deref(), registry.as_ref(), &topic).await?;
    let opts = ProduceOptions {
        encode,
        client,
        topic,
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

/// How lines become message values: registered with the registry, then encoded by the schema.
async fn encoder(
    format: Format,
    schema: Option<&Path>,
    registry: Option<&SchemaRegistryConfig>,
    topic: &str,
) -> anyhow::Result<Option<Encode>> {
    let kind = match format {
        Format::Json => return Ok(None),
        Format::Avro => "AVRO",
        Format::JsonSchema => "JSON",
        other => bail!("sluice produce writes json, avro or json-schema values, not {other} (Confluent's clients write the others)"),
    };
    let path = schema.context("--schema FILE is needed with --value-format")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let registry = registry.context("a schema registry is needed: --registry URL, or a config with [schema_registry]")?;
    let client = Registry::new(registry).map_err(anyhow::Error::msg)?;
    let subject = format!("{topic}-value");
    let id = client.register(&subject, &text, kind).await.map_err(anyhow::Error::msg)?;
    eprintln!("schema {} registered under {subject}: id {id}", path.display());
    Ok(Some(match format {
        Format::Avro => {
            let enc = AvroEncoder::new(&text, id).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            std::sync::Arc::new(move |line: &str| enc.encode(line))
        }
        _ => {
            let checker = JsonSchemaEncoder::new(&text, id).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            std::sync::Arc::new(move |line: &str| checker.encode(line))
        }
    }))
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
