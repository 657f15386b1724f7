//! `sluice dlq replay`: send dead-lettered records back through the config's
//! plugin chain, possibly with fixed files for some of its plugins, into
//! MongoDB, and report what landed and what failed again.
//!
//! A fixed file replaces only the file: the plugin keeps its name, params,
//! limits and self-tests (the new version must pass them), so it runs as it
//! would after a hot swap.
//!
//! Each dead letter becomes the record it was: its original topic, partition,
//! offset and timestamp come from the `sluice.source.*` headers, its key, value
//! and headers (without the `sluice.*` ones) are as they were. So the documents
//! get the `_id`s they would have had (`topic:partition:offset:index`), and a
//! replay is idempotent: replaying again finds them already there. The dead-letter
//! topic is read from its start to its end at the time of the replay, streamed
//! in batches (never held in memory whole); nothing is
//! committed, and records that fail again are reported, not dead-lettered again.
//!
//! Dead letters of another consumer group (`sluice.group`) are left alone. A
//! truncated dead letter (`sluice.error.truncated`: it was too large to send
//! whole) gets its value and headers from the source topic, at its coordinates.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::common::ConfigArg;
use crate::config::{Config, PluginConfig};
use crate::formats::Decoder;
use crate::mongo::sink::{Sink, SinkError};
use crate::pipeline::decode::process;
use crate::pipeline::plan::{Target, plan, rejected};
use crate::plugin::chain::{Chain, ChainSpec};
use crate::plugin::runtime::Runtime;
use crate::record::{Failure, Header, SourceRecord};

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The dead-letter topic (default: the first configured topic's, by dlq.topic).
    #[arg(long, value_name = "TOPIC")]
    pub from: Option<String>,
    /// Replay with a new file (a fixed version) for a plugin of the config's chain, which keeps its name,
    /// params, limits and self-tests: NAME=PATH, or PATH alone when the chain has one plugin or one
    /// named after the file. Repeat for more plugins.
    #[arg(long = "plugin", value_name = "[NAME=]PLUGIN.wasm")]
    pub plugins: Vec<PluginFile>,
}

/// Replay and print the report; `Err` when records failed again.
pub async fn execute(args: ReplayArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    let from = args.from.unwrap_or_else(|| cfg.dlq.topic_for(&cfg.kafka.topics[0]));
    let r = replay(&cfg, &from, &args.plugins).await?;
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

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub read: u64,
    /// Documents MongoDB acknowledged (inserted, upserted, deleted).
    pub written: u64,
    /// Inserts that found their `_id` already there (an earlier replay).
    pub already_there: u64,
    pub dropped: u64,
    /// Dead letters without `sluice.source.*` headers (replayed with the dead-letter coordinates).
    pub without_source: u64,
    /// Dead letters of other consumer groups (`sluice.group`), not replayed.
    pub other_groups: u64,
    /// Truncated dead letters whose value was read from the source topic.
    pub from_source: u64,
    /// `topic:partition@offset` of the original record, and why it failed again.
    pub failed: Vec<(String, Failure)>,
}

/// `--plugin [NAME=]PATH`: a new file for one plugin of the config's chain.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginFile {
    /// The plugin it replaces; `None`: the chain's only plugin, or the one named after the file.
    pub name: Option<String>,
    pub path: PathBuf,
}

impl std::str::FromStr for PluginFile {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<PluginFile, Self::Err> {
        // A name has no path separator: `out/v=2/fixed.wasm` is a path.
        Ok(match s.split_once('=') {
            Some((name, path)) if !name.is_empty() && !name.contains(['/', '\\']) => {
                PluginFile { name: Some(name.to_owned()), path: path.into() }
            }
            _ => PluginFile { name: None, path: s.into() },
        })
    }
}

/// `chain` with the files of `files` replaced; each plugin keeps its name,
/// params, limits and self-tests.
pub fn chain_with(chain: &[PluginConfig], files: &[PluginFile]) -> anyhow::Result<Vec<PluginConfig>> {
    if chain.is_empty() && !files.is_empty() {
        bail!("--plugin replaces the file of a plugin of the config's chain, and its [[plugins]] is empty");
    }
    let names = chain.iter().map(|p| format!("`{}`", p.name)).collect::<Vec<_>>().join(", ");
    let mut out = chain.to_vec();
    let mut replaced = HashSet::new();
    for f in files {
        let position = |name: &str| chain.iter().position(|p| p.name == name);
        let i = match &f.name {
            Some(name) => position(name.as_str())
                .with_context(|| format!("--plugin {name}=…: the config's chain has no plugin `{name}` (it has {names})"))?,
            None if chain.len() == 1 => 0,
            None => f.path.file_stem().and_then(|s| s.to_str()).and_then(position).with_context(|| {
                format!("--plugin {}: which of the chain's plugins ({names}) does it replace? Write --plugin NAME={0}", f.path.display())
            })?,
        };
        if !replaced.insert(i) {
            bail!("--plugin: plugin `{}` is given two files", chain[i].name);
        }
        out[i].path = f.path.clone();
    }
    Ok(out)
}

/// Replay every record of dead-letter topic `from` through the config's chain,
/// with the plugin files of `files` replaced, into the config's MongoDB.
pub async fn replay(config: &Config, from: &str, files: &[PluginFile]) -> anyhow::Result<ReplayReport> {
    let configs = chain_with(&config.plugins, files)?;
    let runtime = Runtime::new().context("starting the wasm runtime")?;
    let loaded = configs.iter().map(|p| runtime.load(p)).collect::<Result<Vec<_>, _>>()?;
    let spec = Arc::new(ChainSpec::new(1, loaded));
    let mut chain = Chain::new(spec.clone(), config.pipeline.max_value_bytes)?;
    // Dead letters keep the record's bytes as consumed: Avro, Protobuf… are decoded again.
    let decoder = Decoder::new(&config.kafka, config.schema_registry.as_ref()).map_err(anyhow::Error::msg)?;
    let sink = Sink::connect(&config.mongo).await?.ignoring_field(config.pipeline.versions_field.as_deref());

    // Streamed: a reader thread hands over batches as it reads, so a large
    // dead-letter topic is never held in memory whole.
    let (kafka, topic, chunk) = (config.kafka.clone(), from.to_owned(), config.pipeline.batch_max_records);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(SourceRecord, bool)>>(2);
    let reader = tokio::task::spawn_blocking(move || read_all(&kafka, &topic, chunk, tx));
    let mut report = ReplayReport::default();
    while let Some(read) = rx.recv().await {
        report.read += read.len() as u64;
        report.without_source += read.iter().filter(|(_, had_source)| !had_source).count() as u64;
        let batch: Vec<SourceRecord> = read.into_iter().map(|(r, _)| r).collect();
        let batch = batch.as_slice();
        if let Some(d) = &decoder {
            d.prepare(batch).await.context("fetching schemas (the replay can be run again)")?;
        }
        let results = process(&mut chain, decoder.as_deref(), batch)?;
        let target =
            Target { versions_field: config.pipeline.versions_field.as_deref(), offsets_collection: &config.mongo.offsets_collection };
        let p = plan(&spec, &target, batch, &results);
        report.dropped += p.dropped;
        let coords = |i: usize| format!("{}:{}@{}", batch[i].topic, batch[i].partition, batch[i].offset);
        report.failed.extend(p.failures.iter().map(|(i, f)| (coords(*i), f.clone())));
        if p.ops.is_empty() {
            continue;
        }
        let w = match sink.write(&p.ops).await {
            Ok(w) => w,
            Err(SinkError::Rejected { rejections, report: w }) => {
                report.failed.extend(rejected(&rejections, &p.op_source).into_iter().map(|(i, f)| (coords(i), f)));
                w
            }
            Err(e) => return Err(e).context("writing to MongoDB (the replay can be run again)"),
        };
        report.written += w.inserted + w.upserted + w.deleted + w.replaced;
        report.already_there += w.duplicates;
    }
    let counts = reader.await??;
    (report.other_groups, report.from_source) = (counts.other_groups, counts.from_source);
    Ok(report)
}

/// What [`read_all`] counted besides the records it sent.
#[derive(Default)]
struct Counts {
    other_groups: u64,
    from_source: u64,
}

/// This group's records of `topic`, from the start to the end offsets seen now,
/// each rebuilt from its `sluice.source.*` headers, sent to `tx` in batches of
/// `chunk` records (each with `true` when it had those headers).
fn read_all(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<Vec<(SourceRecord, bool)>>,
) -> anyhow::Result<Counts> {
    let mut out = Counts::default();
    let Some((consumer, mut ends)) = open_to_end(kafka, topic)? else { return Ok(out) };
    let mut batch = Vec::with_capacity(chunk);
    let mut last_progress = std::time::Instant::now();
    while !ends.is_empty() {
        if last_progress.elapsed() > Duration::from_secs(30) {
            bail!("reading {topic}: nothing for 30 s with {} partition(s) not read to their end", ends.len());
        }
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m?;
        last_progress = std::time::Instant::now();
        // Only up to the end seen at the start: later dead letters wait for the next replay.
        let Some(&end) = ends.get(&m.partition()) else { continue };
        if m.offset() >= end {
            ends.remove(&m.partition());
            continue;
        }
        if m.offset() + 1 >= end {
            ends.remove(&m.partition());
        }
        let letter = Letter::of(m.headers().map(crate::kafka::kafka_raw::read_headers).unwrap_or_default());
        if letter.group.as_deref().is_some_and(|g| g != kafka.group_id.as_bytes()) {
            out.other_groups += 1;
            continue;
        }
        let original = letter.original();
        let had_source = original.is_some();
        let (t, p, o) = original.unwrap_or_else(|| (topic.to_owned(), m.partition(), m.offset()));
        let mut record = SourceRecord {
            topic: Arc::from(t.as_str()),
            partition: p,
            offset: o,
            timestamp: letter.source.get("timestamp").and_then(|ts| ts.parse().ok()),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: letter.headers,
        };
        if letter.truncated && had_source {
            let (value, headers) = read_source(kafka, &t, p, o)?;
            (record.value, record.headers) = (value, headers);
            out.from_source += 1;
        }
        batch.push((record, had_source));
        if batch.len() >= chunk && tx.blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(chunk))).is_err() {
            return Ok(out); // the replay stopped (its error is reported there)
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(out)
}

/// A reader of `topic` assigned from the start of each partition that has
/// records, with the end offset of each seen now; `None` when all are empty.
fn open_to_end(kafka: &crate::config::KafkaConfig, topic: &str) -> anyhow::Result<Option<(BaseConsumer, HashMap<i32, i64>)>> {
    let mut cc = kafka.client_config();
    cc.set("group.id", format!("sluice-dlq-replay-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc.create().map_err(crate::config::redact_kafka_error).context("creating the dead-letter reader")?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).with_context(|| format!("reading the metadata of {topic}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic).filter(|t| !t.partitions().is_empty()) else {
        bail!("topic {topic} does not exist on {}", kafka.brokers);
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
            ends.insert(p.id(), high);
        }
    }
    if ends.is_empty() {
        return Ok(None);
    }
    consumer.assign(&tpl)?;
    Ok(Some((consumer, ends)))
}

/// A dead letter's headers, sorted: its record's own, and what the `sluice.*` ones say.
#[derive(Default)]
struct Letter {
    /// The record's own headers (without the `sluice.*` ones).
    headers: Vec<Header>,
    /// `sluice.group`: the consumer group that dead-lettered it.
    group: Option<Vec<u8>>,
    /// `sluice.error.truncated`: sent without its value and headers.
    truncated: bool,
    /// `sluice.source.*`, by the name after the prefix.
    source: HashMap<String, String>,
}

impl Letter {
    fn of(raw: Vec<Header>) -> Letter {
        let mut letter = Letter::default();
        for (key, value) in raw {
            match key.strip_prefix(b"sluice.source.") {
                Some(k) => {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    letter.source.insert(text(k), text(value.as_deref().unwrap_or_default()));
                }
                None if key == b"sluice.group" => letter.group = value,
                None if key == b"sluice.error.truncated" => letter.truncated = true,
                None if key.starts_with(b"sluice.") => {}
                None => letter.headers.push((key, value)),
            }
        }
        letter
    }

    /// The original record's topic, partition and offset, when the headers say all three.
    fn original(&self) -> Option<(String, i32, i64)> {
        let s = &self.source;
        Some((s.get("topic")?.clone(), s.get("partition")?.parse().ok()?, s.get("offset")?.parse().ok()?))
    }
}

/// The value and headers of the record at `topic:partition@offset`, read from
/// the source topic (for a dead letter that was sent without them).
fn read_source(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<(Option<Vec<u8>>, Vec<crate::record::Header>)> {
    let at = format!("{topic}:{partition}@{offset}");
    let mut cc = kafka.client_config();
    cc.set("group.id", format!("sluice-dlq-replay-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc.create().map_err(crate::config::redact_kafka_error).context("creating the source reader")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) if m.offset() == offset => {
                return Ok((m.payload().map(<[u8]>::to_vec), m.headers().map(crate::kafka::kafka_raw::read_headers).unwrap_or_default()));
            }
            Some(Ok(m)) => {
                bail!("the dead letter of {at} was truncated, and the source topic no longer has it (it starts at {})", m.offset())
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {at} from the source topic")),
            None => {}
        }
    }
    bail!("the dead letter of {at} was truncated, and its record could not be read from the source topic within 30 s")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_plugin_file_replaces_only_the_file_of_its_plugin() {
        let mut enrich = PluginConfig::new("enrich", "/old/enrich.wasm");
        enrich.params.insert("square_field".into(), "sq".into());
        let chain = [PluginConfig::new("even", "/old/even.wasm"), enrich.clone()];
        let file = |s: &str| s.parse::<PluginFile>().unwrap();

        let new = chain_with(&chain, &[file("enrich=/new/e.wasm")]).unwrap();
        assert_eq!(new[1], PluginConfig { path: "/new/e.wasm".into(), ..enrich.clone() }, "params kept");
        assert_eq!(new[0], chain[0]);
        // By the file's name, or the only plugin.
        assert_eq!(chain_with(&chain, &[file("/new/even.wasm")]).unwrap()[0].path, Path::new("/new/even.wasm"));
        assert_eq!(chain_with(&chain[1..], &[file("fixed.wasm")]).unwrap()[0], PluginConfig { path: "fixed.wasm".into(), ..enrich });
        assert_eq!(chain_with(&chain, &[]).unwrap(), chain);
        assert_eq!(file("out/v=2/even.wasm"), PluginFile { name: None, path: "out/v=2/even.wasm".into() });

        for (files, needle) in [
            (vec![file("fixed.wasm")], "which of the chain's plugins (`even`, `enrich`) does it replace? Write --plugin NAME=fixed.wasm"),
            (vec![file("other=x.wasm")], "has no plugin `other`"),
            (vec![file("even=a.wasm"), file("/b/even.wasm")], "`even` is given two files"),
        ] {
            let err = chain_with(&chain, &files).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(chain_with(&[], &[file("x.wasm")]).unwrap_err().to_string().contains("[[plugins]] is empty"));
    }
}
