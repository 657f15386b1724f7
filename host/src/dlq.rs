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

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::chain::Failure;
use crate::config::{DlqConfig, KafkaConfig};
use crate::source::SourceRecord;

/// Longest reason header; the rest is cut.
const MAX_REASON: usize = 4096;

pub struct DeadLetters {
    producer: FutureProducer,
    cfg: DlqConfig,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig, cfg: &DlqConfig) -> Result<DeadLetters, KafkaError> {
        let mut cc = kafka.client_config();
        cc.set("client.id", "sluice-dlq").set("acks", "all").set("enable.idempotence", "true").set("linger.ms", "5");
        Ok(DeadLetters { producer: cc.create()?, cfg: cfg.clone() })
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
            crate::produce::ensure_topic(&client, &self.topic_for(t), 1).await?;
        }
        Ok(())
    }

    /// Send one failed record (`chain`: the generation's `name@version,…`);
    /// returns once the broker acknowledged it.
    pub async fn send(&self, rec: &SourceRecord, f: &Failure, chain: &str) -> Result<(), KafkaError> {
        let topic = self.topic_for(&rec.topic);
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len() + 8);
        for (k, v) in &rec.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
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
            .insert(Header { key: "sluice.chain", value: Some(chain) });
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
        if let Some(v) = &rec.value {
            record = record.payload(v.as_slice());
        }
        match self.producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e),
        }
    }
}
