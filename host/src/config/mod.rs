//! The host configuration: one TOML file, read at start (and again on a reload).
//!
//! Environment variables override keys of the file: `SLUICE_<SECTION>_<KEY>`,
//! e.g. `SLUICE_MONGO_URI`, `SLUICE_KAFKA_GROUP_ID`, `SLUICE_ADMIN_TOKEN`,
//! `SLUICE_PIPELINE_BATCH_MAX_RECORDS` (sections `kafka`, `mongo`, `pipeline`,
//! `dlq`, `admin`, `hot_swap`; top-level keys of a section). A key the file has
//! keeps its type (a group id of digits stays a string); a new one is read as a
//! TOML value (`5`, `true`, `["a", "b"]`), else as a string.
//!
//! Every table rejects unknown keys (a typo is an error that names the key and the
//! file, never a silently ignored setting). Durations are written the human way
//! (`"20ms"`, `"5s"`, `"1m"`). Relative plugin paths are resolved against the
//! directory of the config file. Secrets (a password in the MongoDB URI, librdkafka
//! options whose name mentions a password, secret or key) never appear in `Debug`.
//!
//! ```toml
//! [kafka]
//! brokers = "127.0.0.1:9092"
//! group_id = "sluice-testnum"
//! topics = ["testnum"]
//! auto_offset_reset = "earliest"   # earliest | latest | error
//! [kafka.options]                  # raw librdkafka settings, passed through as they are
//! "fetch.wait.max.ms" = "50"
//!
//! [mongo]
//! uri = "mongodb://127.0.0.1:27017"
//! database = "testnum"
//! collection = "testnum"
//!
//! [[plugins]]                      # the chain, in order; none = documents as consumed
//! name = "passthrough"
//! path = "../plugins/target/wasm32-unknown-unknown/release/passthrough.wasm"
//! params = { }
//!
//! [pipeline]
//! batch_max_records = 500
//! batch_linger = "20ms"
//! on_error = "dead-letter"         # dead-letter | skip | stop
//!
//! [dlq]
//! topic = "{topic}.dlq"
//!
//! [admin]                          # the admin HTTP API (plugins, reload, health, metrics)
//! address = "127.0.0.1:9464"
//!
//! [hot_swap]
//! watch = true                     # a changed plugin file is validated and swapped in
//!
//! [schema_registry]                # for kafka.key_format / value_format avro | protobuf | json-schema
//! url = "http://127.0.0.1:8081"
//! ```
//!
//! One file per section (`kafka`, `mongo`, `plugins`, `pipeline`, `dlq`, `admin`,
//! `hot_swap`: its keys, defaults and `Debug`); `load` reads a file into a [`Config`],
//! `env` applies the `SLUICE_*` overrides, `validate` checks what serde cannot, and
//! `redact` keeps secrets out of `Debug` and errors.

mod admin;
mod dlq;
mod env;
mod hot_swap;
mod kafka;
mod load;
mod mongo;
mod pipeline;
mod plugins;
mod redact;
mod registry;
mod validate;

pub use admin::AdminConfig;
pub use dlq::DlqConfig;
pub use env::cache_home;
pub use hot_swap::HotSwapConfig;
pub use kafka::{KafkaConfig, OffsetReset};
pub use mongo::{DEFAULT_OFFSETS_COLLECTION, MongoConfig, WriteAck, WriteConcernConfig};
pub use pipeline::{OnError, PipelineConfig};
pub use plugins::{PluginConfig, PluginLimits, SelfTest};
pub use redact::{is_secret_option, redact_kafka_error, redact_uri};
pub use registry::{Decimals, Format, SchemaRegistryConfig};

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub mongo: MongoConfig,
    /// The plugin chain, in order. Empty: each record's JSON value is written as it is.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub dlq: DlqConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub hot_swap: HotSwapConfig,
    /// Where Avro, Protobuf and JSON Schema keys and values find their schemas.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// The file this configuration was loaded from (what a reload reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The file's tables as written, to tell which sections a reload changed.
    #[serde(skip)]
    raw: toml::Table,
}

impl Config {
    /// The top-level sections (other than `[[plugins]]`, which a reload applies)
    /// that differ between this configuration and `newer`: they need a restart.
    pub fn restart_needed(&self, newer: &Config) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = self.raw.keys().chain(newer.raw.keys()).collect();
        keys.into_iter().filter(|k| *k != "plugins" && self.raw.get(*k) != newer.raw.get(*k)).cloned().collect()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("kafka", &self.kafka)
            .field("mongo", &self.mongo)
            .field("plugins", &self.plugins)
            .field("pipeline", &self.pipeline)
            .field("dlq", &self.dlq)
            .field("admin", &self.admin)
            .field("hot_swap", &self.hot_swap)
            .field("schema_registry", &self.schema_registry)
            .finish()
    }
}

fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests;
