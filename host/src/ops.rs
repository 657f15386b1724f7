//! Small operator commands on a configuration's Kafka and MongoDB objects:
//! `sluice count` (documents in the configured collection) and `sluice reset`
//! (delete the topics, the consumer group and the collection — destructive, for
//! demos and local experiments).

use std::time::Duration;

use anyhow::{Context as _, bail};
use mongodb::bson::doc;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::Config;
use crate::sink::Sink;

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

/// Delete the configured topics and consumer group, and drop the collection.
pub async fn reset(config: &Config) -> anyhow::Result<()> {
    let k = &config.kafka;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &k.brokers);
    for (key, v) in &k.options {
        cc.set(key, v);
    }
    let admin: AdminClient<DefaultClientContext> = cc.create().context("creating the Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
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
    sink.database()
        .collection::<mongodb::bson::Document>(&config.mongo.collection)
        .drop()
        .await
        .with_context(|| format!("dropping {}.{}", config.mongo.database, config.mongo.collection))?;
    // Topic deletion is asynchronous in Kafka: wait until the topics are gone.
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new().set("bootstrap.servers", &k.brokers).create()?;
    for _ in 0..100 {
        let md = rdkafka::consumer::Consumer::fetch_metadata(&probe, None, Duration::from_secs(10))?;
        if !md.topics().iter().any(|t| topics.contains(&t.name())) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("topics {topics:?} still exist 10 s after their deletion")
}
