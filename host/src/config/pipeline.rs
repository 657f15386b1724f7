//! `[pipeline]`: batching, back-pressure, the failure policy, draining and retries.

use std::time::Duration;

use serde::Deserialize;

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

fn default_max_value() -> usize {
    1 << 20
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
