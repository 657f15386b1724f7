//! `[kafka]`: the brokers, the consumer group and its topics, raw librdkafka options.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::default_connect_timeout;
use super::redact::redacted;
use super::registry::{Decimals, Format};

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `group.id`: hosts with the same group share the topics' partitions.
    pub group_id: String,
    pub topics: Vec<String>,
    /// Where a partition without a committed offset starts. Default `earliest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// How long the brokers may take to answer at start, and the configured
    /// topics to exist (then `run` fails naming them). Default 10s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Raw librdkafka settings (TLS, SASL, tuning…), applied after Sluice's own;
    /// `enable.auto.offset.store` cannot be overridden (offsets are stored only
    /// after MongoDB acknowledged the write).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// How record keys are read before the plugins. Default `json` (as they are).
    #[serde(default)]
    pub key_format: Format,
    /// How record values are read before the plugins. Default `json` (as they are).
    #[serde(default)]
    pub value_format: Format,
    /// What decoded decimals become: `decimal128` (default) or `string`.
    #[serde(default)]
    pub decimals: Decimals,
}

impl KafkaConfig {
    /// A librdkafka config with the brokers and the connection and security
    /// options (TLS, SASL, sockets) — for Sluice's helper clients (probe, DLQ, admin).
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut cc = rdkafka::ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.options {
            if ["security.", "ssl.", "sasl.", "socket.", "broker.", "client.dns"].iter().any(|p| k.starts_with(p)) {
                cc.set(k, v);
            }
        }
        cc
    }
}

#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
    Error,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
            OffsetReset::Error => "error",
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = redacted(&self.options);
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &options)
            .field("key_format", &self.key_format)
            .field("value_format", &self.value_format)
            .field("decimals", &self.decimals)
            .finish()
    }
}
