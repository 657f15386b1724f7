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
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
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
    /// The file this configuration was loaded from (what a reload reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The file's tables as written, to tell which sections a reload changed.
    #[serde(skip)]
    raw: toml::Table,
}

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

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// A MongoDB connection string; credentials in it are hidden from logs.
    pub uri: String,
    pub database: String,
    /// The collection outputs go to unless a plugin names another.
    pub collection: String,
    /// How long to wait for a server at start before giving up. Default 10s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Write concern of every write. Default: `w = 1`, journaled.
    #[serde(default)]
    pub write_concern: WriteConcernConfig,
    /// Where the next offset per (group, topic, partition) is kept, in `database`.
    /// Default `sluice_offsets`.
    #[serde(default = "default_offsets_collection")]
    pub offsets_collection: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct WriteConcernConfig {
    /// A number of nodes, or `"majority"`. Default 1.
    #[serde(default = "default_w")]
    pub w: WriteAck,
    /// Wait for the journal. Default true.
    #[serde(default = "default_true")]
    pub journal: bool,
    /// Give up waiting for the acknowledgement after this long (then retry). Default 30s.
    #[serde(default = "default_wtimeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WriteConcernConfig {
    fn default() -> Self {
        WriteConcernConfig { w: default_w(), journal: true, timeout: default_wtimeout() }
    }
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum WriteAck {
    Nodes(u32),
    Tag(String),
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Shown in logs; unique within the chain.
    pub name: String,
    /// A `.wasm` file: a component, or a core module built with the guest SDK.
    pub path: PathBuf,
    /// Given once to the plugin's init function.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Sandbox limits of this plugin (defaults are always on).
    #[serde(default)]
    pub limits: PluginLimits,
    /// Records every version of this plugin must handle as stated before it
    /// runs: at start, and before a hot swap (`[[plugins.self_test]]`).
    #[serde(default)]
    pub self_test: Vec<SelfTest>,
}

impl PluginConfig {
    /// A plugin with no parameters, default limits and no self-tests.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> PluginConfig {
        PluginConfig {
            name: name.into(),
            path: path.into(),
            params: BTreeMap::new(),
            limits: PluginLimits::default(),
            self_test: Vec::new(),
        }
    }
}

/// One self-test record: the plugin gets a record with this value (and key),
/// and must emit exactly `expect`, or fail it when `expect_error` is set, or, with
/// neither, at least not fail or trap.
///
/// ```toml
/// [[plugins.self_test]]
/// input = '{"num": 3}'
/// expect = '[{"num": 3, "square": 9}]'   # the documents, in order; "[]" = dropped
/// ```
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// The record's value (JSON text for most plugins).
    pub input: String,
    /// The record's key. Default: none.
    #[serde(default)]
    pub key: Option<String>,
    /// The record's topic. Default `self-test` (partition 0, offset 0).
    #[serde(default = "default_self_test_topic")]
    pub topic: String,
    /// A JSON array of the documents the plugin must emit for this record.
    #[serde(default)]
    pub expect: Option<String>,
    /// The plugin must return an error for this record.
    #[serde(default)]
    pub expect_error: bool,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap per instance. Default 64 MiB.
    #[serde(default = "default_memory")]
    pub memory_bytes: usize,
    /// Wall-clock cap of one call (one batch). Default 5s.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Cap on the total size of the documents one record becomes. Default 16 MiB
    /// (MongoDB's document limit).
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits { memory_bytes: default_memory(), call_timeout: default_call_timeout(), max_output_bytes: default_max_output() }
    }
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most records per batch (one plugin call, one bulk write). Default 500.
    #[serde(default = "default_batch")]
    pub batch_max_records: usize,
    /// How long a partition worker waits to fill a batch. Default 20ms.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Records fetched but not yet written, per partition, above which the
    /// partition is paused (resumed at a quarter). The queue must outlast Kafka's
    /// resume latency, or the partition stalls, and each pause makes librdkafka
    /// fetch again what it had prefetched. Default 100 × batch_max_records.
    #[serde(default)]
    pub max_queued_per_partition: Option<usize>,
    /// The same limit in bytes (key, value, headers, and 128 per record):
    /// whichever is reached first pauses. Memory held per partition stays near
    /// it. Default 16 MiB.
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes_per_partition: usize,
    /// What a record that fails (plugin error or trap, bad input, refused by
    /// MongoDB) does: `dead-letter` (default), `skip` or `stop`.
    #[serde(default)]
    pub on_error: OnError,
    /// When set, every written document gets this field holding which plugin
    /// versions made it: `{ "plugins": ["name@version", …] }`. Default: not set.
    #[serde(default)]
    pub versions_field: Option<String>,
    /// Record values larger than this fail as invalid input. Default 1 MiB.
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// On revoke and shutdown, how long in-flight batches may take to finish.
    /// Must be below Kafka's `session.timeout.ms` and `max.poll.interval.ms`. Default 20s.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often each partition records its progress (next offset) in MongoDB's
    /// `offsets_collection`, at most; also when idle after that and when released.
    /// `"0s"`: after every batch (one more write per batch). Default 1s.
    #[serde(default = "default_progress_interval", with = "humantime_serde")]
    pub progress_interval: Duration,
    /// After SIGTERM/SIGINT, exit (non-zero) if draining and committing take longer. Default 30s.
    #[serde(default = "default_shutdown", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// First wait before retrying a failed MongoDB write; doubles up to `retry_max_backoff`.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max_records: default_batch(),
            batch_linger: default_linger(),
            max_queued_per_partition: None,
            max_queued_bytes_per_partition: default_max_queued_bytes(),
            on_error: OnError::default(),
            max_value_bytes: default_max_value(),
            versions_field: None,
            drain_timeout: default_drain(),
            progress_interval: default_progress_interval(),
            shutdown_timeout: default_shutdown(),
            retry_backoff: default_backoff(),
            retry_max_backoff: default_max_backoff(),
        }
    }
}

impl PipelineConfig {
    pub fn max_queued(&self) -> usize {
        self.max_queued_per_partition.unwrap_or(self.batch_max_records * 100)
    }
}

/// What happens to a record that cannot be processed.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Send it to the dead-letter topic (before its offset is committed), go on.
    #[default]
    DeadLetter,
    /// Exit non-zero; the offset is not committed past the record.
    Stop,
    /// Log and count it, then go on.
    Skip,
}

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

/// The admin HTTP API: `/plugins` (list, upload, rollback), `/reload`,
/// `/healthz`, `/readyz`, `/metrics`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Listen address. Default `127.0.0.1:9464` (this machine only); port 0
    /// picks a free port (the address is logged). An address other than loopback
    /// needs `token`.
    #[serde(default = "default_admin_address")]
    pub address: std::net::SocketAddr,
    /// When set, every request but `/healthz` and `/readyz` needs
    /// `Authorization: Bearer <token>`. Hidden in logs.
    #[serde(default)]
    pub token: Option<String>,
    /// Largest plugin upload. Default 64 MiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { enabled: true, address: default_admin_address(), token: None, max_upload_bytes: default_max_upload() }
    }
}

/// How plugins are replaced while running. Every new version is compiled off
/// the hot path and validated (a component of the contract, instantiates, init
/// succeeds, self-tests pass) before partition workers switch to it at their
/// next batch; a failure keeps the running version.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HotSwapConfig {
    /// Watch the plugin files: a changed file is validated and swapped in. Default true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet time after the last change in a plugin's directory before the file
    /// is read (a copy in progress is not read half-written). Default 100ms.
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub debounce: Duration,
    /// Earlier versions kept per plugin for rollback. Default 5.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: usize,
    /// Write a version uploaded or rolled back through the admin API to the
    /// plugin's `path` (atomically), so a restart runs it too. Default true.
    #[serde(default = "default_true")]
    pub persist_uploads: bool,
}

impl Default for HotSwapConfig {
    fn default() -> Self {
        HotSwapConfig { watch: true, debounce: default_debounce(), keep_versions: default_keep_versions(), persist_uploads: true }
    }
}

fn default_admin_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_max_upload() -> usize {
    64 << 20
}
fn default_debounce() -> Duration {
    Duration::from_millis(100)
}
fn default_keep_versions() -> usize {
    5
}
fn default_self_test_topic() -> String {
    "self-test".into()
}
/// Where progress is kept unless `mongo.offsets_collection` says otherwise.
pub const DEFAULT_OFFSETS_COLLECTION: &str = "sluice_offsets";

fn default_offsets_collection() -> String {
    DEFAULT_OFFSETS_COLLECTION.into()
}
fn default_true() -> bool {
    true
}
fn default_w() -> WriteAck {
    WriteAck::Nodes(1)
}
fn default_wtimeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_memory() -> usize {
    64 << 20
}
fn default_max_output() -> usize {
    16 << 20
}
fn default_max_value() -> usize {
    1 << 20
}
fn default_dlq_topic() -> String {
    "{topic}.dlq".into()
}
fn default_dlq_unavailable() -> Duration {
    Duration::from_secs(30)
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_batch() -> usize {
    500
}
fn default_linger() -> Duration {
    Duration::from_millis(20)
}
fn default_drain() -> Duration {
    Duration::from_secs(20)
}
fn default_max_queued_bytes() -> usize {
    16 << 20
}
fn default_progress_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_shutdown() -> Duration {
    Duration::from_secs(30)
}
fn default_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// Read, parse and check `path` with the `SLUICE_*` environment overrides;
    /// plugin paths become absolute.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_owned(), cause })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Absolute, so plugin paths stay right whatever the working directory (and the watcher sees them).
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
        let mut config = Config::parse_with_env(&text, path, &base, std::env::vars())?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parse `text` (named `path` in errors); relative plugin paths are joined to `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, path, base, std::iter::empty())
    }

    /// [`Config::parse`] with overrides from `env` (`SLUICE_<SECTION>_<KEY>` = value).
    /// Secret values (passwords, tokens) never appear in its errors, even in a
    /// file or variable too malformed to parse.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        Config::parse_env_vec(text, path, base, &env).map_err(|e| e.scrubbed(&secret_values(text, &env)))
    }

    fn parse_env_vec(text: &str, path: &Path, base: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.to_vec();
        let parse_err = |e: toml::de::Error| ConfigError::Parse { path: path.to_owned(), message: one_line(&e, text) };
        let file: toml::Table = toml::from_str(text).map_err(parse_err)?;
        let invalid = |message| ConfigError::Invalid { path: path.to_owned(), message };
        let mut raw = file.clone();
        let applied = apply_env(&mut raw, &env, false).map_err(invalid)?;
        let mut config: Config = if applied.is_empty() {
            // Straight from the text: errors say where in the file.
            toml::from_str(text).map_err(parse_err)?
        } else {
            tracing::info!(overrides = ?applied, "configuration keys set from the environment");
            match Config::deserialize(raw.clone()) {
                Ok(c) => c,
                Err(e) => {
                    // A value read as a number or boolean may have been meant as text
                    // (a token of digits): try the keys the file lacks as strings.
                    let mut as_text = file.clone();
                    apply_env(&mut as_text, &env, true).map_err(invalid)?;
                    match Config::deserialize(as_text.clone()) {
                        Ok(c) => {
                            raw = as_text;
                            c
                        }
                        Err(_) => {
                            let message = format!("{} (with environment overrides {})", one_line(&e, ""), applied.join(", "));
                            return Err(ConfigError::Parse { path: path.to_owned(), message });
                        }
                    }
                }
            }
        };
        config.raw = raw;
        for p in &mut config.plugins {
            if p.path.is_relative() {
                p.path = base.join(&p.path);
            }
        }
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        if k.group_id.trim().is_empty() {
            return Err("kafka.group_id is empty".into());
        }
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err("kafka.topics must list at least one non-empty topic".into());
        }
        if let Some(t) = k.topics.iter().find(|t| t.starts_with('^')) {
            return Err(format!("kafka.topics: {t:?} is a pattern (it starts with `^`); Sluice reads the topics it is given: list them"));
        }
        for key in k.options.keys() {
            if key == "enable.auto.offset.store" {
                return Err("kafka.options.\"enable.auto.offset.store\" cannot be set: Sluice stores offsets only after MongoDB acknowledged the write".into());
            }
        }
        let m = &self.mongo;
        for (what, v) in [("mongo.uri", &m.uri), ("mongo.database", &m.database), ("mongo.collection", &m.collection)] {
            if v.trim().is_empty() {
                return Err(format!("{what} is empty"));
            }
        }
        if !(m.uri.starts_with("mongodb://") || m.uri.starts_with("mongodb+srv://")) {
            return Err(format!("mongo.uri {:?} is not a MongoDB connection string (mongodb:// or mongodb+srv://)", redact_uri(&m.uri)));
        }
        if m.collection == m.offsets_collection {
            return Err(format!(
                "mongo.collection and mongo.offsets_collection are both {:?}: documents and Sluice's progress must not share a collection",
                m.collection
            ));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins {
            if !names.insert(p.name.as_str()) {
                return Err(format!("plugin name `{}` is used twice in [[plugins]]", p.name));
            }
            if p.limits.memory_bytes < (1 << 20) {
                return Err(format!("plugins `{}`: limits.memory_bytes must be at least 1 MiB", p.name));
            }
            if p.limits.call_timeout.is_zero() {
                return Err(format!("plugins `{}`: limits.call_timeout must be more than zero", p.name));
            }
            for (i, t) in p.self_test.iter().enumerate() {
                let at = format!("plugins `{}`: self_test {}", p.name, i + 1);
                match &t.expect {
                    Some(_) if t.expect_error => return Err(format!("{at}: set `expect` or `expect_error`, not both")),
                    Some(e) => match serde_json::from_str::<serde_json::Value>(e) {
                        Ok(serde_json::Value::Array(_)) => {}
                        Ok(_) => return Err(format!("{at}: `expect` must be a JSON array of documents (\"[]\" = dropped)")),
                        Err(err) => return Err(format!("{at}: `expect` is not JSON: {err}")),
                    },
                    None => {}
                }
            }
        }
        let pl = &self.pipeline;
        if pl.on_error == OnError::DeadLetter {
            for t in &k.topics {
                if self.dlq.topic_for(t) == *t {
                    return Err(format!("dlq.topic {:?} would dead-letter topic {t} into itself", self.dlq.topic));
                }
            }
        }
        if let Some(f) = &pl.versions_field
            && (f.is_empty() || f.starts_with('$') || f.contains('.') || f == "_id")
        {
            return Err(format!("pipeline.versions_field {f:?} is not a usable top-level field name"));
        }
        if pl.batch_max_records == 0 {
            return Err("pipeline.batch_max_records must be at least 1".into());
        }
        if pl.max_queued() < pl.batch_max_records {
            return Err("pipeline.max_queued_per_partition must be at least batch_max_records".into());
        }
        if pl.max_queued_bytes_per_partition < (1 << 20) {
            return Err("pipeline.max_queued_bytes_per_partition must be at least 1 MiB".into());
        }
        for (key, default_ms) in [("session.timeout.ms", 45_000u64), ("max.poll.interval.ms", 300_000)] {
            let ms = match k.options.get(key) {
                Some(v) => v.parse::<u64>().map_err(|_| format!("kafka.options.\"{key}\" = {v:?} is not a number of milliseconds"))?,
                None => default_ms,
            };
            if pl.drain_timeout >= Duration::from_millis(ms) {
                return Err(format!(
                    "pipeline.drain_timeout ({:?}) must be shorter than Kafka's {key} ({ms} ms), or the group evicts this host while it drains",
                    pl.drain_timeout
                ));
            }
        }
        if pl.shutdown_timeout <= pl.drain_timeout {
            return Err("pipeline.shutdown_timeout must be longer than pipeline.drain_timeout".into());
        }
        if pl.retry_backoff.is_zero() || pl.retry_max_backoff < pl.retry_backoff {
            return Err("pipeline.retry_backoff must be > 0 and <= retry_max_backoff".into());
        }
        let a = &self.admin;
        if a.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err("admin.token is empty: remove it (loopback only) or set a real one".into());
        }
        if a.enabled && !a.address.ip().is_loopback() && a.token.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "admin.address {} is reachable from other machines: set admin.token (anyone reaching it could replace the plugins)",
                a.address
            ));
        }
        Ok(())
    }

    /// The top-level sections (other than `[[plugins]]`, which a reload applies)
    /// that differ between this configuration and `newer`: they need a restart.
    pub fn restart_needed(&self, newer: &Config) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> = self.raw.keys().chain(newer.raw.keys()).collect();
        keys.into_iter().filter(|k| *k != "plugins" && self.raw.get(*k) != newer.raw.get(*k)).cloned().collect()
    }
}

/// The sections `SLUICE_<SECTION>_<KEY>` can set, as they appear in variable names.
const ENV_SECTIONS: [(&str, &str); 6] =
    [("KAFKA_", "kafka"), ("MONGO_", "mongo"), ("PIPELINE_", "pipeline"), ("DLQ_", "dlq"), ("ADMIN_", "admin"), ("HOT_SWAP_", "hot_swap")];

/// Set `SLUICE_<SECTION>_<KEY>` variables into `raw` (keys the file lacks as
/// TOML values, or with `text`, as strings); returns the names applied.
fn apply_env(raw: &mut toml::Table, env: &[(String, String)], text: bool) -> Result<Vec<String>, String> {
    let mut applied = Vec::new();
    let mut vars: Vec<&(String, String)> = env.iter().filter(|(k, _)| k.starts_with("SLUICE_")).collect();
    vars.sort();
    for (name, value) in vars {
        let rest = &name["SLUICE_".len()..];
        let Some((prefix, section)) = ENV_SECTIONS.iter().find(|(p, _)| rest.starts_with(p)) else {
            // Sluice's own variables that are not config keys; anything else is likely a typo (SLUICE_MONGODB_URI).
            const NOT_CONFIG: [&str; 8] = ["LOG", "LOG_JSON", "CONFIG", "CACHE", "PERFMAP", "BIN", "BROKERS", "TEST_"];
            if !text && !NOT_CONFIG.iter().any(|n| rest == *n || (n.ends_with('_') && rest.starts_with(n))) {
                let sections: Vec<&str> = ENV_SECTIONS.iter().map(|(_, s)| *s).collect();
                tracing::warn!("{name} names no config section ({}): ignored", sections.join(", "));
            }
            continue;
        };
        let key = rest[prefix.len()..].to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let table = raw
            .entry(*section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{name}: `{section}` is not a table in the file"))?;
        let parsed = |v: &str| toml::from_str::<toml::Table>(&format!("v = {v}")).ok().and_then(|mut t| t.remove("v"));
        let typed = match table.get(&key) {
            Some(toml::Value::String(_)) | None if parsed(value).is_none() => toml::Value::String(value.clone()),
            Some(toml::Value::String(_)) => toml::Value::String(value.clone()),
            Some(existing) => match parsed(value) {
                Some(v) if v.same_type(existing) => v,
                _ => return Err(format!("{name} = {value:?} is not of type {}, as {section}.{key} is in the file", existing.type_str())),
            },
            // Scalars as text; an inline table or array was meant as one.
            None if text => match parsed(value) {
                Some(v @ (toml::Value::Table(_) | toml::Value::Array(_))) => v,
                _ => toml::Value::String(value.clone()),
            },
            None => parsed(value).unwrap_or(toml::Value::String(value.clone())),
        };
        table.insert(key, typed);
        applied.push(name.clone());
    }
    Ok(applied)
}

/// toml's messages span several lines (with a source excerpt); keep the first
/// line plus the location, so the error stays one line in logs.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) if span.start <= text.len() => {
            let before = &text[..span.start];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            match key_at(text, span.start) {
                Some(key) => format!("{msg} (key `{key}`, line {line}, column {column})"),
                None => format!("{msg} (line {line}, column {column})"),
            }
        }
        _ => msg,
    }
}

/// The dotted key whose value is at byte `at` of a TOML `text`: the last
/// `[table]` header before it and the key before `=` on its line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let line = &text[line_start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

impl ConfigError {
    /// The error with every one of `secrets` replaced by `***`.
    fn scrubbed(self, secrets: &[String]) -> ConfigError {
        let scrub = |mut m: String| {
            for s in secrets {
                m = m.replace(s.as_str(), "***");
            }
            m
        };
        match self {
            ConfigError::Parse { path, message } => ConfigError::Parse { path, message: scrub(message) },
            ConfigError::Invalid { path, message } => ConfigError::Invalid { path, message: scrub(message) },
            other => other,
        }
    }
}

/// Secret values in a config text and environment, found without parsing
/// either (they may be what does not parse): the value after each key that
/// names a secret (`"sasl.password" = 123456`, `token = "…"`, inline tables
/// included), and whole variables whose name does.
fn secret_values(text: &str, env: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for source in std::iter::once(text).chain(env.iter().map(|(_, v)| v.as_str())) {
        secrets_after_keys(source, &mut out);
    }
    for (name, value) in env {
        let n = name.to_ascii_lowercase();
        if n.starts_with("sluice_") && (is_secret_option(&n) || n.ends_with("_uri")) && !value.is_empty() {
            out.push(value.clone());
        }
    }
    // Longest first, so a secret containing another is hidden whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// The values written after secret-naming keys in TOML-like `text`.
fn secrets_after_keys(text: &str, out: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|e| e + i) {
        // The key: the word (possibly quoted) before `=`.
        let before = text[..eq].trim_end();
        let key_start = before.rfind(|c: char| c.is_whitespace() || c == '{' || c == ',' || c == '\n').map_or(0, |k| k + 1);
        let key = before[key_start..].trim_matches(|c| c == '"' || c == '\'');
        let mut v = eq + 1;
        while v < bytes.len() && (bytes[v] == b' ' || bytes[v] == b'\t') {
            v += 1;
        }
        let end = match bytes.get(v) {
            Some(&q @ (b'"' | b'\'')) => {
                v += 1;
                text[v..].find(q as char).map_or(text.len(), |e| e + v)
            }
            _ => text[v..].find([',', '}', '\n', ' ', '#']).map_or(text.len(), |e| e + v),
        };
        if (is_secret_option(key) || key.eq_ignore_ascii_case("uri") && text[v..end].contains('@')) && end > v {
            let value = &text[v..end];
            // Of a URI only the password is secret: `scheme://user:PASSWORD@host`.
            let value = match key.eq_ignore_ascii_case("uri") {
                true => value
                    .split_once("://")
                    .and_then(|(_, r)| r.split_once('@'))
                    .and_then(|(cred, _)| cred.split_once(':'))
                    .map(|(_, pw)| pw),
                false => Some(value),
            };
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                out.push(value.to_owned());
            }
        }
        i = eq + 1;
    }
}

/// Raw librdkafka options as `Debug` shows them: secret values hidden.
fn redacted(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options.iter().map(|(k, v)| (k.as_str(), if is_secret_option(k) { "***" } else { v.as_str() })).collect()
}

/// Whether a librdkafka option's value must be hidden.
pub fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "private.key", "token", "sasl.jaas", "oauthbearer.config"].iter().any(|s| k.contains(s))
}

/// `e` with the value of a secret option hidden: rust-rdkafka's message for a
/// setting librdkafka refused ends with the value (and librdkafka's may quote it).
pub fn redact_kafka_error(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    match e {
        KafkaError::ClientConfig(code, desc, key, value) if is_secret_option(&key) => {
            let desc = if value.is_empty() { desc } else { desc.replace(&value, "***") };
            KafkaError::ClientConfig(code, desc, key, "***".into())
        }
        e => e,
    }
}

/// `mongodb://user:pw@host` → `mongodb://user:***@host`.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else { return uri.to_owned() };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &uri[..scheme_end + 3], user, &rest[at..])
        }
        None => uri.to_owned(),
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
            .finish()
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
            .finish()
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("max_upload_bytes", &self.max_upload_bytes)
            .finish()
    }
}

impl fmt::Debug for MongoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("database", &self.database)
            .field("collection", &self.collection)
            .field("connect_timeout", &self.connect_timeout)
            .field("write_concern", &self.write_concern)
            .field("offsets_collection", &self.offsets_collection)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        group_id = "g"
        topics = ["t"]
        [mongo]
        uri = "mongodb://127.0.0.1:27017"
        database = "d"
        collection = "c"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/sluice/test.toml"), Path::new("/etc/sluice"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.kafka.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(c.pipeline.batch_max_records, 500);
        assert_eq!(c.pipeline.batch_linger, Duration::from_millis(20));
        assert_eq!(c.pipeline.max_queued(), 50_000);
        assert_eq!(c.pipeline.max_queued_bytes_per_partition, 16 << 20);
        assert_eq!(c.pipeline.on_error, OnError::DeadLetter);
        assert_eq!(c.dlq.topic_for("t"), "t.dlq");
        assert_eq!(c.pipeline.max_value_bytes, 1 << 20);
        assert_eq!(c.mongo.write_concern.w, WriteAck::Nodes(1));
        assert!(c.mongo.write_concern.journal);
        assert!(c.plugins.is_empty());
        assert!(c.admin.enabled);
        assert_eq!(c.admin.address.to_string(), "127.0.0.1:9464");
        assert!(c.hot_swap.watch && c.hot_swap.persist_uploads);
        assert_eq!(c.hot_swap.debounce, Duration::from_millis(100));
        assert_eq!(c.hot_swap.keep_versions, 5);
        assert_eq!(c.pipeline.progress_interval, Duration::from_secs(1));
    }

    #[test]
    fn self_tests_parse_and_are_checked() {
        let plugin = "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n";
        let c = parse(&format!("{MINIMAL}\n{plugin}[[plugins.self_test]]\ninput = '{{\"num\": 3}}'\nexpect = '[{{\"num\": 3}}]'\n[[plugins.self_test]]\ninput = 'x'\nexpect_error = true\n")).unwrap();
        let t = &c.plugins[0].self_test;
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].topic, "self-test");
        assert!(t[1].expect_error && t[1].expect.is_none());
        for (bad, needle) in [
            ("input = '1'\nexpect = '{}'\n", "must be a JSON array"),
            ("input = '1'\nexpect = '[1'\n", "`expect` is not JSON"),
            ("input = '1'\nexpect = '[]'\nexpect_error = true\n", "not both"),
        ] {
            let err = parse(&format!("{MINIMAL}\n{plugin}[[plugins.self_test]]\n{bad}")).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("self_test 1"), "{needle}: {err}");
        }
    }

    #[test]
    fn an_admin_address_beyond_loopback_needs_a_token() {
        let err = parse(&format!("{MINIMAL}\n[admin]\naddress = \"0.0.0.0:9464\"\n")).unwrap_err().to_string();
        assert!(err.contains("admin.token"), "{err}");
        let c = parse(&format!("{MINIMAL}\n[admin]\naddress = \"0.0.0.0:9464\"\ntoken = \"t0ps3cret\"\n")).unwrap();
        assert!(!format!("{c:?}").contains("t0ps3cret"));
        assert!(parse(&format!("{MINIMAL}\n[admin]\naddress = \"[::1]:0\"\n")).is_ok());
        assert!(parse(&format!("{MINIMAL}\n[admin]\naddress = \"0.0.0.0:9464\"\nenabled = false\n")).is_ok());
    }

    #[test]
    fn a_reload_tells_which_sections_need_a_restart() {
        let a = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n")).unwrap();
        let b = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"b\"\npath = \"b.wasm\"\n")).unwrap();
        assert!(a.restart_needed(&b).is_empty());
        let c = parse(&format!("{}\n[pipeline]\nbatch_max_records = 7\n", MINIMAL.replace("collection = \"c\"", "collection = \"c2\"")))
            .unwrap();
        assert_eq!(a.restart_needed(&c), ["mongo", "pipeline"]);
    }

    #[test]
    fn unknown_key_is_rejected_naming_key_and_file() {
        let text = MINIMAL.replace("group_id = \"g\"", "group_id = \"g\"\n        grup_id = \"typo\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("grup_id"), "{err}");
        assert!(err.contains("/etc/sluice/test.toml"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        let err = parse(&format!("{MINIMAL}\n[pipeline]\nbatch_size = 3\n")).unwrap_err().to_string();
        assert!(err.contains("batch_size") && err.contains("test.toml"), "{err}");

        let err = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nparam = {{}}\n")).unwrap_err().to_string();
        assert!(err.contains("param") && err.contains("test.toml"), "{err}");
    }

    #[test]
    fn plugin_paths_are_relative_to_the_config_file() {
        let c = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"p/a.wasm\"\nparams = {{ k = \"v\" }}\n")).unwrap();
        assert_eq!(c.plugins[0].path, Path::new("/etc/sluice/p/a.wasm"));
        assert_eq!(c.plugins[0].params["k"], "v");
        assert_eq!(c.plugins[0].limits.memory_bytes, 64 << 20);
    }

    #[test]
    fn durations_and_write_concern_parse() {
        let c = parse(&format!(
            "{MINIMAL}\n[mongo.write_concern]\nw = \"majority\"\njournal = false\ntimeout = \"2s\"\n[pipeline]\nbatch_linger = \"5ms\"\non_error = \"skip\"\n"
        ));
        // `[mongo.write_concern]` after `[mongo]` in MINIMAL is a sub-table: fine.
        let c = c.unwrap();
        assert_eq!(c.mongo.write_concern.w, WriteAck::Tag("majority".into()));
        assert_eq!(c.mongo.write_concern.timeout, Duration::from_secs(2));
        assert_eq!(c.pipeline.batch_linger, Duration::from_millis(5));
        assert_eq!(c.pipeline.on_error, OnError::Skip);
        let err = parse(&format!("{MINIMAL}\n[pipeline]\nbatch_linger = \"5 parsecs\"\n")).unwrap_err().to_string();
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (text, needle) in [
            (MINIMAL.replace("topics = [\"t\"]", "topics = []"), "kafka.topics"),
            (format!("{MINIMAL}\n[pipeline]\nbatch_max_records = 0\n"), "batch_max_records"),
            (
                format!("{MINIMAL}\n[kafka.options]\n\"enable.auto.offset.store\" = \"true\"\n").replace("[kafka]\n", "[kafka]\n"),
                "enable.auto.offset.store",
            ),
            (
                format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n[[plugins]]\nname = \"a\"\npath = \"b.wasm\"\n"),
                "used twice",
            ),
            (format!("{MINIMAL}\n[pipeline]\ndrain_timeout = \"50s\"\nshutdown_timeout = \"60s\"\n"), "session.timeout.ms"),
            (
                MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"session.timeout.ms\" = \"10000\""),
                "shorter than Kafka's session.timeout.ms (10000 ms)",
            ),
            (format!("{MINIMAL}\n[pipeline]\nshutdown_timeout = \"5s\"\n"), "shutdown_timeout"),
            (MINIMAL.replace("collection = \"c\"", "collection = \"sluice_offsets\""), "must not share a collection"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    /// The complete example of docs/config.md (its first TOML block).
    fn documented_example() -> &'static str {
        let md = include_str!("../../docs/config.md");
        let start = md.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + md[start..].find("```").expect("its end");
        &md[start..end]
    }

    /// docs/config.md's example parses, and the defaults it states are the code's.
    #[test]
    fn the_documented_example_parses_with_the_defaults_it_states() {
        let c = parse(documented_example()).unwrap_or_else(|e| panic!("docs/config.md: {e}"));
        let d = parse(MINIMAL).unwrap();
        let (p, dp) = (&c.pipeline, &d.pipeline);
        assert_eq!(
            (p.batch_max_records, p.batch_linger, p.max_queued(), p.max_queued_bytes_per_partition, p.on_error, p.max_value_bytes),
            (dp.batch_max_records, dp.batch_linger, dp.max_queued(), dp.max_queued_bytes_per_partition, dp.on_error, dp.max_value_bytes)
        );
        assert_eq!(
            (p.drain_timeout, p.progress_interval, p.shutdown_timeout, p.retry_backoff, p.retry_max_backoff, &p.versions_field),
            (dp.drain_timeout, dp.progress_interval, dp.shutdown_timeout, dp.retry_backoff, dp.retry_max_backoff, &dp.versions_field)
        );
        assert_eq!(c.plugins[0].limits, PluginLimits::default());
        assert_eq!(c.hot_swap, d.hot_swap);
        assert_eq!(
            (c.admin.enabled, c.admin.address, c.admin.max_upload_bytes),
            (d.admin.enabled, d.admin.address, d.admin.max_upload_bytes)
        );
        assert_eq!((c.dlq.topic.as_str(), c.dlq.create_topics), (d.dlq.topic.as_str(), d.dlq.create_topics));
        let (m, dm) = (&c.mongo, &d.mongo);
        assert_eq!((m.connect_timeout, &m.offsets_collection), (dm.connect_timeout, &dm.offsets_collection));
        assert_eq!(
            (&m.write_concern.w, m.write_concern.journal, m.write_concern.timeout),
            (&dm.write_concern.w, dm.write_concern.journal, dm.write_concern.timeout)
        );
        assert_eq!((c.kafka.auto_offset_reset, c.kafka.connect_timeout), (d.kafka.auto_offset_reset, d.kafka.connect_timeout));
        assert_eq!(c.plugins[0].self_test.len(), 1);
    }

    /// The fields of a struct as serde reads them (what its derive passes to `deserialize_struct`).
    fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Probe<'a>(&'a mut &'static [&'static str]);
        impl<'de> serde::Deserializer<'de> for Probe<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(serde::de::Error::custom("probed"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
                unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut out: &'static [&'static str] = &[];
        let _ = T::deserialize(Probe(&mut out));
        out
    }

    /// Every key of every table is in docs/config.md's example (commented out where it has no default).
    #[test]
    fn every_key_is_documented() {
        let example = documented_example();
        let tables = [
            ("kafka", fields::<KafkaConfig>()),
            ("mongo", fields::<MongoConfig>()),
            ("mongo.write_concern", fields::<WriteConcernConfig>()),
            ("plugins", fields::<PluginConfig>()),
            ("plugins.limits", fields::<PluginLimits>()),
            ("plugins.self_test", fields::<SelfTest>()),
            ("pipeline", fields::<PipelineConfig>()),
            ("dlq", fields::<DlqConfig>()),
            ("admin", fields::<AdminConfig>()),
            ("hot_swap", fields::<HotSwapConfig>()),
        ];
        let sections: Vec<&str> = tables.iter().map(|(t, _)| *t).filter(|t| !t.contains('.')).collect();
        assert_eq!(fields::<Config>(), sections, "a new section of Config: list its table here");
        // The `key =` lines (commented out or not) under each `[table]` header.
        let mut section = String::new();
        let mut lines: Vec<(String, &str)> = Vec::new();
        for l in example.lines().map(|l| l.trim_start_matches([' ', '#'])) {
            if let Some(header) = l.strip_prefix('[') {
                section = header.trim_start_matches('[').split(']').next().unwrap_or_default().to_owned();
            } else {
                lines.push((section.clone(), l));
            }
        }
        let documented = |table: &str, key: &str| {
            lines.iter().any(|(t, l)| t == table && l.starts_with(&format!("{key} =")))
                || example.contains(&format!("[{table}.{key}]"))
                || example.contains(&format!("[[{table}.{key}]]"))
        };
        for (table, keys) in tables {
            assert!(
                example.contains(&format!("[{table}]")) || example.contains(&format!("[[{table}]]")),
                "[{table}] is not in docs/config.md"
            );
            for key in keys {
                assert!(documented(table, key), "{table}.{key} is not in docs/config.md's example");
            }
        }
    }

    #[test]
    fn environment_variables_override_keys() {
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let parse_env = |text: &str, e: &[(&str, &str)]| {
            Config::parse_with_env(text, Path::new("/etc/sluice/test.toml"), Path::new("/etc/sluice"), env(e))
        };
        let text = MINIMAL.replace("group_id = \"g\"", "group_id = \"007\"");
        let c = parse_env(
            &text,
            &[
                ("SLUICE_KAFKA_BROKERS", "kafka-1:9092,kafka-2:9092"),
                ("SLUICE_KAFKA_GROUP_ID", "123"),
                ("SLUICE_KAFKA_TOPICS", r#"["a", "b"]"#),
                ("SLUICE_MONGO_URI", "mongodb://u:pw@db:27017/?replicaSet=rs0"),
                ("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "1000"),
                ("SLUICE_PIPELINE_BATCH_LINGER", "5ms"),
                ("SLUICE_HOT_SWAP_WATCH", "false"),
                ("SLUICE_ADMIN_TOKEN", "from-env"),
                ("SLUICE_CONFIG", "/not/a/section"),
                ("SLUICE_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(c.kafka.group_id, "123", "a string key stays a string");
        assert_eq!(c.kafka.topics, ["a", "b"]);
        assert_eq!(c.mongo.uri, "mongodb://u:pw@db:27017/?replicaSet=rs0");
        assert_eq!(c.pipeline.batch_max_records, 1000);
        assert_eq!(c.pipeline.batch_linger, Duration::from_millis(5));
        assert!(!c.hot_swap.watch);
        assert_eq!(c.admin.token.as_deref(), Some("from-env"));
        // The overridden values are what a reload compares against.
        assert!(c.restart_needed(&parse_env(&text, &[]).unwrap()).contains(&"kafka".to_string()));

        // A table, written as a TOML inline table, replaces the file's whole table.
        let text = MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"client.id\" = \"me\"");
        let c = parse_env(&text, &[("SLUICE_KAFKA_OPTIONS", r#"{ "security.protocol" = "SASL_SSL", "sasl.password" = "pw" }"#)]).unwrap();
        assert_eq!(c.kafka.options.keys().collect::<Vec<_>>(), ["sasl.password", "security.protocol"]);

        // A secret of digits, absent from the file, is still text (and a table
        // beside it stays a table).
        let options = ("SLUICE_KAFKA_OPTIONS", r#"{ "sasl.password" = "pw" }"#);
        let c = parse_env(MINIMAL, &[("SLUICE_ADMIN_TOKEN", "123456"), ("SLUICE_DLQ_TOPIC", "2024"), options]).unwrap();
        assert_eq!((c.admin.token.as_deref(), c.dlq.topic.as_str()), (Some("123456"), "2024"));
        assert_eq!(c.kafka.options.keys().collect::<Vec<_>>(), ["sasl.password"]);

        let err = parse_env(MINIMAL, &[("SLUICE_PIPELINE_BATCH_SIZE", "3")]).unwrap_err().to_string();
        assert!(err.contains("batch_size") && err.contains("SLUICE_PIPELINE_BATCH_SIZE"), "{err}");
        let text = format!("{MINIMAL}\n[pipeline]\nbatch_max_records = 5\n");
        let err = parse_env(&text, &[("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "lots")]).unwrap_err().to_string();
        assert!(err.contains("SLUICE_PIPELINE_BATCH_MAX_RECORDS") && err.contains("is not of type integer"), "{err}");
        let err = parse_env(MINIMAL, &[("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "0")]).unwrap_err().to_string();
        assert!(err.contains("batch_max_records must be at least 1"), "{err}");
    }

    #[test]
    fn secrets_are_hidden_in_debug() {
        let text = MINIMAL
            .replace("mongodb://127.0.0.1:27017", "mongodb://app:hunter2@127.0.0.1:27017/?authSource=admin")
            .replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"sasl.password\" = \"s3cret\"\n\"client.id\" = \"me\"");
        let c = parse(&text).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("app:***@127.0.0.1") && dbg.contains("\"me\""), "{dbg}");
        assert_eq!(redact_uri("mongodb://h:1/db"), "mongodb://h:1/db");
        assert_eq!(redact_uri("mongodb+srv://u:p@a,b/x?y=@"), "mongodb+srv://u:***@a,b/x?y=@");
    }

    #[test]
    fn secret_options_are_hidden_in_librdkafka_errors() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID;
        // librdkafka's sensitive settings (its conf dump redacts them) are secret here too.
        for key in ["sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "ssl.key.password", "ssl.key.pem"] {
            assert!(is_secret_option(key), "{key}");
        }
        let refused = |key: &str, value: &str| {
            let desc = format!("Invalid value \"{value}\" for configuration property \"{key}\"");
            redact_kafka_error(KafkaError::ClientConfig(RD_KAFKA_CONF_INVALID, desc, key.into(), value.into())).to_string()
        };
        let e = refused("sasl.oauthbearer.client.secret", "hunter2");
        assert!(!e.contains("hunter2") && e.contains("sasl.oauthbearer.client.secret"), "{e}");
        let e = refused("linger.ms", "soon");
        assert!(e.contains("soon"), "other values are shown: {e}");
        // What this build says of an OIDC secret (it has no libcurl), or nothing if it takes it.
        let real = rdkafka::ClientConfig::new().set("sasl.oauthbearer.client.secret", "hunter2").create_native_config();
        if let Err(e) = real {
            let e = redact_kafka_error(e).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn secrets_never_appear_in_config_errors() {
        let path = Path::new("/etc/sluice/test.toml");
        let check = |text: &str, env: &[(&str, &str)], secret: &str| {
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let e = Config::parse_with_env(text, path, Path::new("/etc/sluice"), env).unwrap_err().to_string();
            assert!(!e.contains(secret), "{secret} in: {e}");
            assert!(e.contains("***") || !e.is_empty(), "{e}");
        };
        // An unquoted number where a string belongs: toml's message quotes the value.
        let text = MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"sasl.password\" = 123456");
        check(&text, &[], "123456");
        // A malformed SLUICE_KAFKA_OPTIONS.
        check(MINIMAL, &[("SLUICE_KAFKA_OPTIONS", r#"{ "sasl.password" = "hunter22", oops }"#)], "hunter22");
        check(MINIMAL, &[("SLUICE_KAFKA_OPTIONS", r#"{ "sasl.password" = 98765 }"#)], "98765");
        // A token of the wrong type, and a file that does not parse at all.
        let text = format!("{MINIMAL}\n[admin]\ntoken = 424242\n");
        check(&text, &[], "424242");
        check("[kafka]\nbrokers = \"x\"\n\"sasl.password\" = \"s3cr3t\nbroken", &[], "s3cr3t");
        // The URI's password.
        let text = MINIMAL.replace("mongodb://127.0.0.1:27017", "mongodb://u:pw-9911@h").replace("collection = \"c\"", "collection = 5");
        check(&text, &[], "pw-9911");
    }

    #[test]
    fn config_errors_name_the_key_line_and_column() {
        let text = MINIMAL.replace("collection = \"c\"", "collection = 5");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("key `mongo.collection`, line 9, column 22"), "{e}");
        let e = parse(&MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"\noops")).unwrap_err().to_string();
        assert!(e.contains("line 6, column 1") && !e.contains("at byte"), "{e}");
    }
}
