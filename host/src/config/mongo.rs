//! `[mongo]`: where documents are written, with which write concern, and where progress is kept.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::redact::redact_uri;
use super::{default_connect_timeout, default_true};

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

/// Where progress is kept unless `mongo.offsets_collection` says otherwise.
pub const DEFAULT_OFFSETS_COLLECTION: &str = "sluice_offsets";

fn default_offsets_collection() -> String {
    DEFAULT_OFFSETS_COLLECTION.into()
}
fn default_w() -> WriteAck {
    WriteAck::Nodes(1)
}
fn default_wtimeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::OnError;
    use crate::config::tests::{MINIMAL, parse};

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
}
