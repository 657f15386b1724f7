//! `sluice reset`: delete the configured topics, their dead-letter topics, the
//! consumer group, its stored progress, the documents routed to other
//! collections, and drop the collection (destructive: for demos and local
//! experiments).

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use mongodb::bson::doc;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::common::ConfigArg;
use crate::config::{Config, redact_kafka_error};
use crate::mongo::sink::Sink;

#[derive(Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Reset, and print what was deleted.
pub async fn execute(args: ResetArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    let r = reset(&cfg).await?;
    println!(
        "deleted topics {:?} and group {} (and its progress in {}), dropped {}.{}",
        r.topics, cfg.kafka.group_id, cfg.mongo.offsets_collection, cfg.mongo.database, cfg.mongo.collection
    );
    for (c, n) in &r.routed {
        println!("  deleted {n} documents routed to {}.{c}", cfg.mongo.database);
    }
    Ok(())
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
    let report = ResetReport { topics: names.clone(), routed: delete_routed(config, &sink).await? };
    wait_until_deleted(config, &topics).await?;
    Ok(report)
}

/// From every other collection of the database, delete the documents with a
/// derived `_id` of the configured topics; per collection, how many.
async fn delete_routed(config: &Config, sink: &Sink) -> anyhow::Result<Vec<(String, u64)>> {
    let mut routed = Vec::new();
    let skip = |c: &str| c == config.mongo.collection || c == config.mongo.offsets_collection || c.starts_with("system.");
    for c in sink.database().list_collection_names().await.context("listing collections")? {
        if skip(&c) {
            continue;
        }
        let coll = sink.database().collection::<mongodb::bson::Document>(&c);
        let mut removed = 0;
        for t in &config.kafka.topics {
            // Derived ids of topic t: `t:partition:offset:index`, all between "t:" and "t;".
            let filter = doc! { "_id": { "$gte": format!("{t}:"), "$lt": format!("{t};") } };
            removed += coll.delete_many(filter).await.with_context(|| format!("deleting {t}'s documents from {c}"))?.deleted_count;
        }
        if removed > 0 {
            routed.push((c, removed));
        }
    }
    Ok(routed)
}

/// Topic deletion is asynchronous in Kafka: wait until the topics are gone.
async fn wait_until_deleted(config: &Config, topics: &[&str]) -> anyhow::Result<()> {
    let probe: rdkafka::consumer::BaseConsumer = config.kafka.client_config().create().map_err(redact_kafka_error)?;
    for _ in 0..100 {
        let md = rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(10))?;
        if !md.topics().iter().any(|t| topics.contains(&t.name())) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("topics {topics:?} still exist 10 s after their deletion")
}
