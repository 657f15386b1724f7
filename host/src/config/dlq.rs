//! `[dlq]`: the dead-letter topic and its producer.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::default_true;
use super::redact::redacted;

/// The dead-letter queue: a Kafka topic on the same cluster.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {
    /// Topic name; `{topic}` is replaced by the source topic. Default `{topic}.dlq`.
    #[serde(default = "default_dlq_topic")]
    pub topic: String,
    /// Create missing dead-letter topics at start (1 partition per source
    /// partition is not needed: order is kept per source partition by key). Default true.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// How long dead letters may fail to be sent before `/readyz` fails (and
    /// `sluice_dlq_unavailable` is 1). The partition waits meanwhile, committing
    /// nothing past the record; sending is retried until it works. Default 30s.
    #[serde(default = "default_dlq_unavailable", with = "humantime_serde")]
    pub unavailable_timeout: Duration,
    /// Raw librdkafka producer settings for the dead-letter producer, over
    /// Sluice's (`acks = all`, idempotence, `message.timeout.ms = 10000`) and
    /// after `kafka.options`' TLS/SASL ones. Secret values are hidden.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            topic: default_dlq_topic(),
            create_topics: true,
            unavailable_timeout: default_dlq_unavailable(),
            options: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for DlqConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options = redacted(&self.options);
        f.debug_struct("DlqConfig")
            .field("topic", &self.topic)
            .field("create_topics", &self.create_topics)
            .field("unavailable_timeout", &self.unavailable_timeout)
            .field("options", &options)
            .finish()
    }
}

impl DlqConfig {
    pub fn topic_for(&self, source_topic: &str) -> String {
        self.topic.replace("{topic}", source_topic)
    }
}

fn default_dlq_topic() -> String {
    "{topic}.dlq".into()
}
fn default_dlq_unavailable() -> Duration {
    Duration::from_secs(30)
}
