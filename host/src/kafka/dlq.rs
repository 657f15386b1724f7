//! The dead-letter queue: failed records go to a Kafka topic (default
//! `<topic>.dlq`) before their offset is committed, with the original key, value
//! and headers, plus headers that say why:
//!
//! | header | value |
//! |---|---|
//! | `sluice.error.kind` | `plugin-error`, `trap`, `timeout`, `memory`, `invalid-input`, `invalid-output`, `output-too-large`, `sink-rejected` |
//! | `sluice.error.reason` | the message (at most 4 KiB) |
//! | `sluice.plugin`, `sluice.plugin.version` | the failing plugin and its content hash (absent when no plugin failed it) |
//! | `sluice.chain` | every plugin of the chain generation that processed the record, `name@version,…` (empty without plugins) |
//! | `sluice.source.topic`, `sluice.source.partition`, `sluice.source.offset` | where the record came from |
//! | `sluice.source.timestamp` | its timestamp (ms), when it had one |
//! | `sluice.group` | the consumer group that failed it (`dlq replay` takes only its own group's) |
//! | `sluice.error.truncated` | `true` when the record was too large to dead-letter whole: the value and the original headers are left out (`dlq replay` reads the value from the source topic) |
//!
//! Sending is retried until it works: a dead-letter topic that was deleted is
//! created again (with `create_topics`), one that stays unwritable past
//! `dlq.unavailable_timeout` makes the host not ready. Nothing is committed past
//! a record whose dead letter is not acknowledged.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{DlqConfig, KafkaConfig};
use crate::record::Failure;
use crate::record::SourceRecord;

/// Longest reason header; the rest is cut.
const MAX_REASON: usize = 4096;

pub struct DeadLetters {
    producer: FutureProducer,
    cfg: DlqConfig,
    kafka: KafkaConfig,
    group: String,
}

/// Why a dead letter was not sent, classified once.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Larger than the producer's `message.max.bytes` or the topic's
    /// `max.message.bytes`: sending it again cannot work; a truncated one may.
    #[error("the dead letter is too large for its topic: {0}")]
    TooLarge(KafkaError),
    /// The topic does not exist (deleted while running): created again, then retried.
    #[error("the dead-letter topic does not exist: {0}")]
    NoTopic(KafkaError),
    /// Anything else (broker down, timeout, authorization): retried.
    #[error("{0}")]
    Other(KafkaError),
}

impl SendError {
    fn classify(e: KafkaError) -> SendError {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => SendError::TooLarge(e),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => SendError::NoTopic(e),
            _ => SendError::Other(e),
        }
    }
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig, cfg: &DlqConfig) -> Result<DeadLetters, KafkaError> {
        let cc = producer_config(kafka, cfg);
        Ok(DeadLetters {
            producer: cc.create().map_err(crate::config::redact_kafka_error)?,
            cfg: cfg.clone(),
            kafka: kafka.clone(),
            group: kafka.group_id.clone(),
        })
    }
}

/// The dead-letter producer's librdkafka settings (`sluice check` validates them offline).
pub fn producer_config(kafka: &KafkaConfig, cfg: &DlqConfig) -> rdkafka::ClientConfig {
    let mut cc = kafka.client_config();
    // A bounded delivery time: an unreachable topic is reported (and retried) rather than queued for 5 minutes.
    cc.set("client.id", "sluice-dlq")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "10000");
    for (k, v) in &cfg.options {
        cc.set(k, v);
    }
    cc
}

impl DeadLetters {
    /// Create `topic`'s dead-letter topic again (after [`SendError::NoTopic`]), if allowed.
    pub async fn recreate_topic(&self, source_topic: &str) -> anyhow::Result<()> {
        if !self.cfg.create_topics {
            anyhow::bail!("dlq.create_topics is off");
        }
        crate::kafka::produce::ensure_topic(&self.kafka.client_config(), &self.topic_for(source_topic), 1).await
    }

    pub fn topic_for(&self, source_topic: &str) -> String {
        self.cfg.topic_for(source_topic)
    }

    /// Create the dead-letter topics of `topics` unless they exist (if allowed):
    /// one partition each, the broker's default replication, through the same
    /// TLS/SASL settings as every other client.
    pub async fn ensure_topics(&self, kafka: &KafkaConfig) -> anyhow::Result<()> {
        if !self.cfg.create_topics {
            return Ok(());
        }
        let client = kafka.client_config();
        for t in &kafka.topics {
            crate::kafka::produce::ensure_topic(&client, &self.topic_for(t), 1).await?;
        }
        Ok(())
    }

    /// Send one failed record (`chain`: the generation's `name@version,…`);
    /// returns once the broker acknowledged it. `truncated`: without its value
    /// and original headers (after [`SendError::TooLarge`]).
    pub async fn send(&self, rec: &SourceRecord, f: &Failure, chain: &str, truncated: bool) -> Result<(), SendError> {
        let topic = self.topic_for(&rec.topic);
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len() + 10);
        if !truncated {
            for (k, v) in &rec.headers {
                headers = crate::kafka::kafka_raw::add_header(headers, k, v.as_deref());
            }
        }
        let mut reason = f.message.clone();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let (partition, offset) = (rec.partition.to_string(), rec.offset.to_string());
        headers = headers
            .insert(Header { key: "sluice.error.kind", value: Some(f.kind.as_str()) })
            .insert(Header { key: "sluice.error.reason", value: Some(&reason) })
            .insert(Header { key: "sluice.source.topic", value: Some(&*rec.topic) })
            .insert(Header { key: "sluice.source.partition", value: Some(&partition) })
            .insert(Header { key: "sluice.source.offset", value: Some(&offset) })
            .insert(Header { key: "sluice.chain", value: Some(chain) })
            .insert(Header { key: "sluice.group", value: Some(&self.group) });
        if truncated {
            headers = headers.insert(Header { key: "sluice.error.truncated", value: Some("true") });
        }
        if let Some(ts) = rec.timestamp {
            headers = headers.insert(Header { key: "sluice.source.timestamp", value: Some(&ts.to_string()) });
        }
        if let Some(p) = &f.plugin {
            headers = headers.insert(Header { key: "sluice.plugin", value: Some(p) });
        }
        if let Some(v) = &f.plugin_version {
            headers = headers.insert(Header { key: "sluice.plugin.version", value: Some(v) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(k) = &rec.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = rec.value.as_ref().filter(|_| !truncated) {
            record = record.payload(v.as_slice());
        }
        match self.producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(SendError::classify(e)),
        }
    }
}
