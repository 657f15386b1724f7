//! Small operator commands on a configuration's Kafka and MongoDB objects:
//! `sluice count` (documents in the configured collection, optionally by the
//! chain version that made them) and `sluice reset`
//! (delete the topics, the consumer group, its stored progress and the collection — destructive, for
//! demos and local experiments).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mongodb::bson::doc;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::{Config, redact_kafka_error};
use crate::mongo::sink::Sink;

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

/// Both stores' offsets of the configured topics' partitions.
pub async fn offsets(config: &Config) -> anyhow::Result<Vec<PartitionOffsets>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let k = config.kafka.clone();
    let kafka = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, i32, Option<i64>, i64, i64)>> {
        let mut cc = k.client_config();
        cc.set("group.id", &k.group_id).set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cc.create().map_err(redact_kafka_error).context("creating a Kafka client")?;
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
    })
    .await??;
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

/// Move the group's offsets in both stores at once (Kafka's committed offset
/// and MongoDB's progress) for the configured topics, or only `partition`.
/// Kafka refuses while hosts of the group run: stop them first. A rewind is
/// replayed idempotently (documents written again are found already there).
pub async fn set_offsets(config: &Config, to: OffsetTarget, partition: Option<i32>) -> anyhow::Result<Vec<PartitionOffsets>> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
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
        let mut cc = k.client_config();
        cc.set("group.id", &k.group_id).set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cc.create().map_err(redact_kafka_error).context("creating a Kafka client")?;
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

/// Documents in the configured collection.
pub async fn count(config: &Config) -> anyhow::Result<u64> {
    let sink = Sink::connect(&config.mongo).await?;
    let n = sink
        .database()
        .collection::<mongodb::bson::Document>(&config.mongo.collection)
        .count_documents(doc! {})
        .await
        .with_context(|| format!("counting {}.{}", config.mongo.database, config.mongo.collection))?;
    Ok(n)
}

/// How the tutorial's numbers landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumCheck {
    /// Documents stored.
    pub stored: u64,
    /// Numbers in 0..expected with no document.
    pub missing: u64,
    /// Extra documents for numbers that have more than one.
    pub duplicates: u64,
    /// Documents whose `num` is absent or outside 0..expected.
    pub unexpected: u64,
}

/// Count, from MongoDB, one document per `num` in 0..expected.
pub async fn check_nums(config: &Config, expected: u64) -> anyhow::Result<NumCheck> {
    use futures::TryStreamExt;
    use mongodb::bson::Bson;
    let sink = Sink::connect(&config.mongo).await?;
    let mut cursor =
        sink.database().collection::<mongodb::bson::Document>(&config.mongo.collection).find(doc! {}).projection(doc! { "num": 1 }).await?;
    let mut seen = vec![0u32; expected as usize];
    let (mut stored, mut unexpected) = (0u64, 0u64);
    while let Some(d) = cursor.try_next().await? {
        stored += 1;
        let n = match d.get("num") {
            Some(Bson::Int32(n)) => *n as i64,
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Double(f)) if f.fract() == 0.0 => *f as i64,
            _ => -1,
        };
        match usize::try_from(n).ok().filter(|&n| n < seen.len()) {
            Some(i) => seen[i] += 1,
            None => unexpected += 1,
        }
    }
    Ok(NumCheck {
        stored,
        missing: seen.iter().filter(|&&c| c == 0).count() as u64,
        duplicates: seen.iter().map(|&c| c.saturating_sub(1) as u64).sum(),
        unexpected,
    })
}

/// Documents made by one chain version (`pipeline.versions_field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    /// `name@version,…`; empty for documents without the field.
    pub chain: String,
    pub documents: u64,
    /// Per source `topic:partition`, the lowest and highest offset among these
    /// documents (from the derived `_id`; documents with their own `_id` are not placed).
    pub offsets: BTreeMap<String, (i64, i64)>,
}

/// Count the documents by the chain version that made them, in order of the
/// first offset each version wrote: after a swap, one line per version, and per
/// partition where each version starts and ends.
pub async fn count_by_version(config: &Config) -> anyhow::Result<Vec<VersionCount>> {
    use futures::TryStreamExt;
    let Some(field) = &config.pipeline.versions_field else {
        bail!("pipeline.versions_field is not set in the config: documents do not record which plugin versions made them")
    };
    let sink = Sink::connect(&config.mongo).await?;
    let coll = sink.database().collection::<mongodb::bson::Document>(&config.mongo.collection);
    let mut cursor = coll.find(doc! {}).projection(doc! { "_id": 1, field.as_str(): 1 }).await?;
    let mut by: BTreeMap<String, VersionCount> = BTreeMap::new();
    while let Some(d) = cursor.try_next().await? {
        let chain = d
            .get_document(field)
            .and_then(|v| v.get_array("plugins"))
            .map(|a| a.iter().filter_map(|b| b.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let entry = by.entry(chain.clone()).or_insert_with(|| VersionCount { chain, documents: 0, offsets: BTreeMap::new() });
        entry.documents += 1;
        if let Some((topic, partition, offset, _)) = d.get_str("_id").ok().and_then(crate::record::parse_derived_id) {
            let range = entry.offsets.entry(format!("{topic}:{partition}")).or_insert((offset, offset));
            range.0 = range.0.min(offset);
            range.1 = range.1.max(offset);
        }
    }
    let mut out: Vec<VersionCount> = by.into_values().collect();
    out.sort_by_key(|v| (v.offsets.values().map(|r| r.0).min().unwrap_or(i64::MAX), v.chain.clone()));
    Ok(out)
}

/// `sluice check`: what a valid configuration will run, found without
/// connecting to anything (plugins loaded and validated as at start).
pub fn check(config: &Config) -> anyhow::Result<String> {
    let runtime = crate::plugin::runtime::Runtime::new()?;
    let mut out = String::new();
    use std::fmt::Write as _;
    let k = &config.kafka;
    // librdkafka checks every setting's name and value when it is set: offline, no client is made.
    crate::kafka::source::consumer_config(k)
        .create_native_config()
        .map_err(|e| anyhow::anyhow!("kafka.options: {}", redact_kafka_error(e)))?;
    if config.pipeline.on_error == crate::config::OnError::DeadLetter {
        crate::kafka::dlq::producer_config(k, &config.dlq)
            .create_native_config()
            .map_err(|e| anyhow::anyhow!("dlq.options: {}", redact_kafka_error(e)))?;
    }
    let _ = writeln!(out, "  kafka: {} group {} topics {:?}", k.brokers, k.group_id, k.topics);
    let m = &config.mongo;
    let _ = writeln!(out, "  mongo: {} -> {}.{}", crate::config::redact_uri(&m.uri), m.database, m.collection);
    if config.plugins.is_empty() {
        let _ = writeln!(out, "  plugins: none (values are written as they are)");
    }
    for p in &config.plugins {
        let loaded = runtime.load(p)?;
        let tests = if p.self_test.is_empty() { String::new() } else { format!(", {} self-tests passed", p.self_test.len()) };
        let _ = writeln!(out, "  plugin {}: version {} ({}){tests}", p.name, loaded.version, p.path.display());
    }
    let a = &config.admin;
    let _ = writeln!(
        out,
        "  admin: {}",
        if a.enabled { format!("http://{}{}", a.address, if a.token.is_some() { " (token)" } else { "" }) } else { "off".into() }
    );
    let _ = writeln!(out, "  on_error: {:?}", config.pipeline.on_error);
    Ok(out)
}

/// What [`reset`] removed besides the configured collection.
#[derive(Debug, Default)]
pub struct ResetReport {
    /// The topics deleted: the configured ones and their dead-letter topics.
    pub topics: Vec<String>,
    /// Other collections of the database and how many of their documents came
    /// from these topics (derived `_id`s: what plugins routed there).
    pub routed: Vec<(String, u64)>,
}

/// Delete the configured topics, their dead-letter topics and the consumer
/// group, the group's stored progress, the documents the pipeline routed to
/// other collections (by derived `_id`), and drop the collection.
pub async fn reset(config: &Config) -> anyhow::Result<ResetReport> {
    let k = &config.kafka;
    let admin: AdminClient<DefaultClientContext> =
        k.client_config().create().map_err(redact_kafka_error).context("creating the Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut names: Vec<String> = k.topics.clone();
    names.extend(k.topics.iter().map(|t| config.dlq.topic_for(t)));
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    for r in admin.delete_topics(&topics, &opts).await.context("deleting topics")? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, e)) => bail!("deleting topic {t}: {e}"),
        }
    }
    for r in admin.delete_groups(&[k.group_id.as_str()], &opts).await.context("deleting the consumer group")? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((g, e)) => bail!("deleting consumer group {g}: {e}"),
        }
    }
    let sink = Sink::connect(&config.mongo).await?;
    sink.progress(&config.mongo.offsets_collection, &k.group_id).forget_group().await.context("deleting the group's stored progress")?;
    sink.database()
        .collection::<mongodb::bson::Document>(&config.mongo.collection)
        .drop()
        .await
        .with_context(|| format!("dropping {}.{}", config.mongo.database, config.mongo.collection))?;
    let mut report = ResetReport { topics: names.clone(), routed: Vec::new() };
    let skip = |c: &str| c == config.mongo.collection || c == config.mongo.offsets_collection || c.starts_with("system.");
    for c in sink.database().list_collection_names().await.context("listing collections")? {
        if skip(&c) {
            continue;
        }
        let coll = sink.database().collection::<mongodb::bson::Document>(&c);
        let mut removed = 0;
        for t in &k.topics {
            // Derived ids of topic t: `t:partition:offset:index`, all between "t:" and "t;".
            let filter = doc! { "_id": { "$gte": format!("{t}:"), "$lt": format!("{t};") } };
            removed += coll.delete_many(filter).await.with_context(|| format!("deleting {t}'s documents from {c}"))?.deleted_count;
        }
        if removed > 0 {
            report.routed.push((c, removed));
        }
    }
    // Topic deletion is asynchronous in Kafka: wait until the topics are gone.
    let probe: rdkafka::consumer::BaseConsumer = k.client_config().create().map_err(redact_kafka_error)?;
    for _ in 0..100 {
        let md = rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(10))?;
        if !md.topics().iter().any(|t| topics.contains(&t.name())) {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("topics {topics:?} still exist 10 s after their deletion")
}
