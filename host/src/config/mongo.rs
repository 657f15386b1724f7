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
    /// `[[mongo.indexes]]`: created at the start of `sluice run` if absent. Default none.
    #[serde(default)]
    pub indexes: Vec<IndexConfig>,
    /// `[mongo.timeseries]`: `collection` is created as a time-series collection if absent. Default unset.
    #[serde(default)]
    pub timeseries: Option<TimeseriesConfig>,
}

/// One `[[mongo.indexes]]` entry: an index created at start if absent.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// The indexed fields, in order (the order of a compound index matters).
    pub keys: Vec<IndexKey>,
    /// Default: MongoDB's own name, `field_order` joined by `_` (`customer_1_ts_-1`).
    #[serde(default)]
    pub name: Option<String>,
    /// Refuse a second document with the same values. Default false.
    #[serde(default)]
    pub unique: bool,
    /// A TTL index: documents expire this long after the date in its (single) key field. Default unset.
    #[serde(default, with = "humantime_serde")]
    pub expire_after: Option<Duration>,
    /// Default: `mongo.collection`.
    #[serde(default)]
    pub collection: Option<String>,
    /// A partial index: only documents matching this filter (MongoDB's query syntax) are indexed.
    #[serde(default)]
    pub partial_filter: Option<toml::Table>,
}

/// One field of an index, `{ field = "ts", order = -1 }`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexKey {
    pub field: String,
    /// 1 ascending, -1 descending. Default 1.
    #[serde(default = "ascending")]
    pub order: i64,
}

impl IndexConfig {
    /// The index's name: the configured one, else MongoDB's default (`customer_1_ts_-1`).
    pub fn name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.keys.iter().map(|k| format!("{}_{}", k.field, k.order)).collect::<Vec<_>>().join("_"),
        }
    }

    /// The collection it is on: its own, else `mongo.collection`.
    pub fn collection_in<'a>(&'a self, mongo: &'a MongoConfig) -> &'a str {
        self.collection.as_deref().unwrap_or(&mongo.collection)
    }
}

/// `[mongo.timeseries]`: how `mongo.collection` is created (MongoDB 5.0+).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesConfig {
    /// The field holding each document's date (required).
    pub time_field: String,
    /// The field identifying a series (a sensor, a customer). Default unset.
    #[serde(default)]
    pub meta_field: Option<String>,
    /// `seconds` | `minutes` | `hours`: how far apart a series' measurements are. Default: the server's (seconds).
    #[serde(default)]
    pub granularity: Option<Granularity>,
    /// Documents are deleted this long after their `time_field`. Default unset (kept).
    #[serde(default, with = "humantime_serde")]
    pub expire_after: Option<Duration>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Seconds,
    Minutes,
    Hours,
}

impl Granularity {
    /// As MongoDB spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Seconds => "seconds",
            Granularity::Minutes => "minutes",
            Granularity::Hours => "hours",
        }
    }
}

impl MongoConfig {
    /// The checks of `indexes` and `timeseries` that serde cannot make.
    pub(super) fn validate_collections(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for (i, ix) in self.indexes.iter().enumerate() {
            let at = match &ix.name {
                Some(n) => format!("mongo.indexes[{i}] ({n:?})"),
                None => format!("mongo.indexes[{i}]"),
            };
            if ix.keys.is_empty() {
                return Err(format!("{at}: keys is empty: list the indexed fields, e.g. keys = [{{ field = \"ts\", order = -1 }}]"));
            }
            let mut fields = std::collections::HashSet::new();
            for k in &ix.keys {
                if k.field.is_empty() || k.field.starts_with('$') {
                    return Err(format!("{at}: {:?} is not a field name", k.field));
                }
                if !fields.insert(k.field.as_str()) {
                    return Err(format!("{at}: field {:?} is in keys twice", k.field));
                }
                if k.order != 1 && k.order != -1 {
                    return Err(format!("{at}: field {:?} has order = {}: use 1 (ascending) or -1 (descending)", k.field, k.order));
                }
            }
            if let Some(ttl) = ix.expire_after {
                if ix.keys.len() != 1 {
                    return Err(format!(
                        "{at}: expire_after (a TTL index) needs exactly one key, a date field; this index has {}",
                        ix.keys.len()
                    ));
                }
                whole_seconds(&format!("{at}: expire_after"), ttl)?;
            }
            if ix.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(format!("{at}: name is empty: remove it for MongoDB's default ({:?})", ix.name()));
            }
            let coll = ix.collection_in(self);
            if coll.trim().is_empty() {
                return Err(format!("{at}: collection is empty: remove it for mongo.collection"));
            }
            if coll == self.offsets_collection {
                return Err(format!("{at}: collection {coll:?} is Sluice's progress store (mongo.offsets_collection)"));
            }
            if !names.insert((coll.to_owned(), ix.name())) {
                return Err(format!("{at}: an index named {:?} on collection {coll:?} is configured twice", ix.name()));
            }
        }
        if let Some(ts) = &self.timeseries {
            for (what, field) in [("time_field", Some(&ts.time_field)), ("meta_field", ts.meta_field.as_ref())] {
                if let Some(f) = field
                    && (f.is_empty() || f.starts_with('$') || f == "_id")
                {
                    return Err(format!("mongo.timeseries.{what} {f:?} is not a usable field name"));
                }
            }
            if ts.meta_field.as_ref() == Some(&ts.time_field) {
                return Err(format!("mongo.timeseries: time_field and meta_field are both {:?}", ts.time_field));
            }
            if let Some(ttl) = ts.expire_after {
                whole_seconds("mongo.timeseries.expire_after", ttl)?;
            }
        }
        Ok(())
    }
}

/// MongoDB's `expireAfterSeconds`: whole seconds, a 32-bit number.
fn whole_seconds(what: &str, d: Duration) -> Result<(), String> {
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{what} = {:?} is not a whole number of seconds (MongoDB counts TTLs in seconds)",
            humantime::format_duration(d).to_string()
        ));
    }
    match i32::try_from(d.as_secs()) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{what} is longer than MongoDB allows ({} s)", i32::MAX)),
    }
}

fn ascending() -> i64 {
    1
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
            .field("indexes", &self.indexes)
            .field("timeseries", &self.timeseries)
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

    #[test]
    fn indexes_and_timeseries_parse_with_their_defaults() {
        let c = parse(&format!(
            "{MINIMAL}\n[[mongo.indexes]]\nkeys = [{{ field = \"customer\" }}, {{ field = \"ts\", order = -1 }}]\n\
             [[mongo.indexes]]\nkeys = [{{ field = \"ts\", order = 1 }}]\nexpire_after = \"7d\"\nname = \"ttl\"\ncollection = \"other\"\n\
             [mongo.timeseries]\ntime_field = \"ts\"\ngranularity = \"hours\"\n"
        ))
        .unwrap();
        let (a, b) = (&c.mongo.indexes[0], &c.mongo.indexes[1]);
        assert_eq!(a.keys, [IndexKey { field: "customer".into(), order: 1 }, IndexKey { field: "ts".into(), order: -1 }]);
        assert_eq!((a.name(), a.unique, a.expire_after, a.collection_in(&c.mongo)), ("customer_1_ts_-1".into(), false, None, "c"));
        assert_eq!((b.name(), b.expire_after, b.collection_in(&c.mongo)), ("ttl".into(), Some(Duration::from_secs(7 * 86400)), "other"));
        let ts = c.mongo.timeseries.as_ref().unwrap();
        assert_eq!(
            (ts.time_field.as_str(), &ts.meta_field, ts.granularity, ts.expire_after),
            ("ts", &None, Some(Granularity::Hours), None)
        );
        let d = parse(MINIMAL).unwrap();
        assert!(d.mongo.indexes.is_empty() && d.mongo.timeseries.is_none());
    }

    #[test]
    fn bad_indexes_and_timeseries_are_refused_by_name() {
        let ix = |body: &str| format!("{MINIMAL}\n[[mongo.indexes]]\n{body}\n");
        for (text, needle) in [
            (ix("keys = []"), "mongo.indexes[0]: keys is empty"),
            (ix("keys = [{ field = \"a\" }, { field = \"a\", order = -1 }]"), "field \"a\" is in keys twice"),
            (ix("keys = [{ field = \"a\", order = 2 }]"), "order = 2: use 1 (ascending) or -1 (descending)"),
            (ix("keys = [{ field = \"a\", order = \"text\" }]"), "invalid type"),
            (ix("keys = [{ field = \"$a\" }]"), "\"$a\" is not a field name"),
            (ix("keys = [{ field = \"a\", dir = 1 }]"), "unknown field `dir`"),
            (ix("keys = [{ field = \"a\" }]\nttl = \"1h\""), "unknown field `ttl`"),
            (
                ix("keys = [{ field = \"a\" }, { field = \"b\" }]\nexpire_after = \"1h\"\nname = \"x\""),
                "mongo.indexes[0] (\"x\"): expire_after (a TTL index) needs exactly one key",
            ),
            (ix("keys = [{ field = \"ts\" }]\nexpire_after = \"1500ms\""), "not a whole number of seconds"),
            (ix("keys = [{ field = \"ts\" }]\nexpire_after = \"soon\""), "expire_after"),
            (ix("keys = [{ field = \"a\" }]\ncollection = \"sluice_offsets\""), "progress store"),
            (
                format!("{}[[mongo.indexes]]\nkeys = [{{ field = \"a\", order = 1 }}]\n", ix("keys = [{ field = \"a\" }]")),
                "an index named \"a_1\" on collection \"c\" is configured twice",
            ),
            (format!("{MINIMAL}\n[mongo.timeseries]\nmeta_field = \"m\"\n"), "missing field `time_field`"),
            (format!("{MINIMAL}\n[mongo.timeseries]\ntime_field = \"ts\"\ngranularity = \"days\"\n"), "unknown variant `days`"),
            (format!("{MINIMAL}\n[mongo.timeseries]\ntime_field = \"_id\"\n"), "time_field \"_id\""),
            (format!("{MINIMAL}\n[mongo.timeseries]\ntime_field = \"t\"\nmeta_field = \"t\"\n"), "both \"t\""),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
