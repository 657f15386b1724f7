//! `sluice offsets show|set`: the group's offsets in both stores (Kafka's
//! committed offset and MongoDB's progress), shown or moved together.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use rdkafka::consumer::BaseConsumer;

use super::common::ConfigArg;
use crate::config::{Config, KafkaConfig, redact_kafka_error};
use crate::mongo::sink::Sink;

#[derive(Subcommand)]
pub enum OffsetsCommand {
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

/// Show or move the offsets; print one line per partition.
pub async fn execute(command: OffsetsCommand) -> anyhow::Result<()> {
    let partitions = match command {
        OffsetsCommand::Show { config } => offsets(&config.load()?).await?,
        OffsetsCommand::Set { config, to_beginning, to_end, to_offset, partition } => {
            let cfg = config.load()?;
            let to = match (to_beginning, to_end, to_offset) {
                (true, _, _) => OffsetTarget::Beginning,
                (_, true, _) => OffsetTarget::End,
                (_, _, Some(o)) => OffsetTarget::Offset(o),
                _ => bail!("say where: --to-beginning, --to-end or --to-offset N"),
            };
            set_offsets(&cfg, to, partition).await?
        }
    };
    for p in partitions {
        println!("{p}");
    }
    Ok(())
}

/// One partition's offsets in both stores (`sluice offsets show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// Kafka's committed offset of the group (`None`: none).
    pub kafka: Option<i64>,
    /// MongoDB's stored next offset (`None`: none).
    pub mongo: Option<i64>,
    /// Where the next run starts: the later of the two.
    pub start: Option<i64>,
    pub low: i64,
    pub high: i64,
}

impl std::fmt::Display for PartitionOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        write!(
            f,
            "{}:{} kafka={} mongo={} start={} low={} high={}",
            self.topic,
            self.partition,
            o(self.kafka),
            o(self.mongo),
            o(self.start),
            self.low,
            self.high
        )
    }
}

/// Where `sluice offsets set` moves partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetTarget {
    Beginning,
    End,
    Offset(i64),
}

/// A client of the configured group that never commits by itself.
fn group_client(k: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    let mut cc = k.client_config();
    cc.set("group.id", &k.group_id).set("enable.auto.commit", "false");
    cc.create().map_err(redact_kafka_error).context("creating a Kafka client")
}

/// Both stores' offsets of the configured topics' partitions.
pub async fn offsets(config: &Config) -> anyhow::Result<Vec<PartitionOffsets>> {
    let k = config.kafka.clone();
    let kafka = tokio::task::spawn_blocking(move || kafka_offsets(&k)).await??;
    let sink = Sink::connect(&config.mongo).await?;
    let progress = sink.progress(&config.mongo.offsets_collection, &config.kafka.group_id);
    let parts: Vec<(String, i32)> = kafka.iter().map(|(t, p, ..)| (t.clone(), *p)).collect();
    let stored = progress.load(&parts).await.context("reading the progress stored in MongoDB")?;
    Ok(kafka
        .into_iter()
        .map(|(topic, partition, kafka, low, high)| {
            let mongo = stored.get(&(topic.clone(), partition)).copied();
            PartitionOffsets { start: kafka.max(mongo), topic, partition, kafka, mongo, low, high }
        })
        .collect())
}

/// Kafka's side of a partition: topic, partition, the group's committed offset, low and high watermarks.
type KafkaOffsets = (String, i32, Option<i64>, i64, i64);

/// Per partition of the configured topics: the group's committed offset and the watermarks (blocking).
fn kafka_offsets(k: &KafkaConfig) -> anyhow::Result<Vec<KafkaOffsets>> {
    use rdkafka::consumer::Consumer;
    let consumer = group_client(k)?;
    let timeout = Duration::from_secs(10);
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut out = Vec::new();
    for t in &k.topics {
        let md = consumer.fetch_metadata(Some(t), timeout).with_context(|| format!("reading the metadata of {t}"))?;
        let Some(meta) = md.topics().iter().find(|m| m.name() == t).filter(|m| !m.partitions().is_empty()) else {
            bail!("topic {t} does not exist on {}", k.brokers);
        };
        for p in meta.partitions() {
            tpl.add_partition(t, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl.clone(), timeout).context("reading the group's committed offsets")?;
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let kafka = match e.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        };
        out.push((e.topic().to_owned(), e.partition(), kafka, low, high));
    }
    Ok(out)
}

/// Move the group's offsets in both stores at once (Kafka's committed offset
/// and MongoDB's progress) for the configured topics, or only `partition`.
/// Kafka refuses while hosts of the group run: stop them first. A rewind is
/// replayed idempotently (documents written again are found already there).
pub async fn set_offsets(config: &Config, to: OffsetTarget, partition: Option<i32>) -> anyhow::Result<Vec<PartitionOffsets>> {
    use rdkafka::consumer::{CommitMode, Consumer};
    let before = offsets(config).await?;
    let moves: Vec<(String, i32, i64, Option<i64>)> = before
        .iter()
        .filter(|p| partition.is_none_or(|want| want == p.partition))
        .map(|p| {
            let target = match to {
                OffsetTarget::Beginning => p.low,
                OffsetTarget::End => p.high,
                OffsetTarget::Offset(o) => o.clamp(p.low, p.high),
            };
            (p.topic.clone(), p.partition, target, p.start)
        })
        .collect();
    if moves.is_empty() {
        bail!("no partition {} in the configured topics", partition.unwrap_or_default());
    }
    let (k, kafka_moves) = (config.kafka.clone(), moves.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let consumer = group_client(&k)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (t, p, o, _) in &kafka_moves {
            tpl.add_partition_offset(t, *p, rdkafka::Offset::Offset(*o))?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing the group's offsets (are hosts of the group still running? stop them first)")
    })
    .await??;
    let sink = Sink::connect(&config.mongo).await?;
    let progress = sink.progress(&config.mongo.offsets_collection, &config.kafka.group_id);
    for (t, p, o, start) in &moves {
        progress.set(t, *p, *o, *start).await.with_context(|| format!("setting the progress of {t}:{p} in MongoDB"))?;
    }
    offsets(config).await
}
