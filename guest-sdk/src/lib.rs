//! Write Sluice plugins as plain Rust functions.
//!
//! A Sluice plugin is a WebAssembly component that the Sluice host runs on every
//! record it consumes from Kafka, before the result is written to MongoDB. With
//! this crate a plugin is one ordinary function and one attribute:
//!
//! - [`filter`]: `fn(&Value) -> Result<bool>` keeps (`true`) or drops a record;
//!   a kept record is written unchanged.
//! - [`map`]: `fn(Value) -> Result<T>` turns a record into one document
//!   (`T` is a [`Value`], an [`Output`], or an `Option` of either; `None` drops).
//! - [`flat_map`]: `fn(Value) -> Result<I>` turns a record into zero or more
//!   documents (`I` iterates over [`Value`]s or [`Output`]s).
//!
//! Each may take the source [`Record`] (topic, partition, offset, key, headers…)
//! as a second parameter: `fn(Value, &Record)`. Each may name an init function,
//! `#[map(init = setup)]`, with the signature `fn(&Params) -> Result<()>`; it is
//! called once per instance with the plugin's parameters from the host config,
//! and an error there stops the plugin from loading.
//!
//! A per-record `Err` is data, not a crash: the host dead-letters, skips or stops
//! according to its policy. A value that is not JSON is reported the same way.
//!
//! # Layout
//! - [`Record`], [`Output`], [`Operation`], [`Params`]: the plugin's view of the
//!   contract (`wit/plugin.wit`, package `sluice:plugin@0.1.0`).
//! - [`filter`], [`map`], [`flat_map`]: the attribute macros. They leave your
//!   function as it is and add, for `target_arch = "wasm32"` only, the glue that
//!   exports it through the contract, so `cargo test` runs your function natively.
//! - [`log`]: log through the host (to stderr when run natively).
//!
//! # A complete plugin
//! ```
//! use sluice_plugin::{map, Params, Record, Result, Value, bail};
//! use std::sync::OnceLock;
//!
//! static FACTOR: OnceLock<i64> = OnceLock::new();
//!
//! fn setup(params: &Params) -> Result<()> {
//!     FACTOR.get_or_init(|| params.parse_or("factor", 2).unwrap_or(2));
//!     Ok(())
//! }
//!
//! /// `{"num": 3}` from partition 0 becomes `{"num": 3, "scaled": 6, "partition": 0}`.
//! #[map(init = setup)]
//! fn scale(mut doc: Value, record: &Record) -> Result<Value> {
//!     let Some(n) = doc["num"].as_i64() else { bail!("no integer field `num`") };
//!     doc["scaled"] = (n * FACTOR.get().copied().unwrap_or(2)).into();
//!     doc["partition"] = record.partition.into();
//!     Ok(doc)
//! }
//!
//! # fn main() -> Result<()> {
//! setup(&Params::from_pairs([("factor", "3")]))?;
//! let out = scale(serde_json::json!({"num": 3}), &Record::new("t", 0, 7, r#"{"num":3}"#))?;
//! assert_eq!(out, serde_json::json!({"num": 3, "scaled": 9, "partition": 0}));
//! # Ok(()) }
//! ```
//! Build it with `cargo build --release --target wasm32-unknown-unknown` (crate
//! type `cdylib`); the host accepts the resulting `.wasm` as it is.

// Lets paths in generated code (`::sluice_plugin::…`) resolve inside this crate too.
extern crate self as sluice_plugin;

use std::collections::BTreeMap;
use std::fmt;

pub use ::anyhow::{Error, Result, anyhow, bail, ensure};
pub use ::serde_json::{Value, json};
pub use sluice_plugin_macros::{filter, flat_map, map};
#[doc(hidden)]
pub use {::anyhow as __anyhow, ::serde_json};

pub mod log;

/// The version of the plugin contract this SDK builds against.
pub const CONTRACT_VERSION: &str = "sluice:plugin@0.1.0";

/// One input record: a Kafka record, or, later in a chain, one output of the
/// previous plugin (same coordinates, `value` = that output's document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the producer or broker set one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// A record with a value and no key, timestamp or headers (handy in tests).
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64, value: impl Into<Vec<u8>>) -> Self {
        Record { topic: topic.into(), partition, offset, timestamp: None, key: None, value: Some(value.into()), headers: Vec::new() }
    }

    /// The first header named `key`, if any (a header without a value gives `Some(None)`).
    pub fn header(&self, key: &str) -> Option<Option<&[u8]>> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_deref())
    }

    /// The key as UTF-8 text, if there is a key and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value parsed as JSON; an error that says why when it is absent or not JSON.
    pub fn json(&self) -> Result<Value> {
        let Some(bytes) = &self.value else { bail!("record has no value (tombstone)") };
        serde_json::from_slice(bytes).map_err(|e| anyhow!("value is not JSON: {e}"))
    }
}

/// What the host does with an output document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Insert. Without `_id` the host derives one from the source coordinates.
    Insert,
    /// Replace the document with the same `_id`, or insert it (needs `_id`).
    Upsert,
    /// Delete the document with this `_id` (needs `_id`).
    Delete,
}

/// One document to write, with its operation and an optional collection override.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub operation: Operation,
    pub document: Value,
    pub collection: Option<String>,
}

impl Output {
    pub fn insert(document: Value) -> Self {
        Output { operation: Operation::Insert, document, collection: None }
    }
    pub fn upsert(document: Value) -> Self {
        Output { operation: Operation::Upsert, document, collection: None }
    }
    /// Delete the document whose `_id` is `id`.
    pub fn delete(id: Value) -> Self {
        Output { operation: Operation::Delete, document: json!({ "_id": id }), collection: None }
    }
    /// Write to `collection` instead of the configured one.
    pub fn in_collection(mut self, collection: impl Into<String>) -> Self {
        self.collection = Some(collection.into());
        self
    }
}

impl From<Value> for Output {
    fn from(document: Value) -> Self {
        Output::insert(document)
    }
}

/// What a [`map`] function may return: one document, or none.
pub trait IntoOutputs {
    fn into_outputs(self) -> Vec<Output>;
}
impl IntoOutputs for Value {
    fn into_outputs(self) -> Vec<Output> {
        vec![Output::insert(self)]
    }
}
impl IntoOutputs for Output {
    fn into_outputs(self) -> Vec<Output> {
        vec![self]
    }
}
impl<T: IntoOutputs> IntoOutputs for Option<T> {
    fn into_outputs(self) -> Vec<Output> {
        self.map(IntoOutputs::into_outputs).unwrap_or_default()
    }
}

/// The plugin's parameters, from `[[plugins]] params = { ... }` in the host config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Params(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// The parameter, or an error that names it.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| anyhow!("missing parameter `{key}`"))
    }
    /// The parameter parsed as `T`, or `default` when absent; an error naming it when unparsable.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| anyhow!("parameter `{key}` = {raw:?}: {e}")),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The result for one input record, in SDK terms (mirrors the contract's `outcome`).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Drop,
    Emit(Vec<Output>),
    Error(String),
}

/// Glue used by the attribute macros. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    fn error(e: anyhow::Error) -> Outcome {
        // `{:#}` keeps the context chain on one line.
        Outcome::Error(format!("{e:#}"))
    }

    pub fn filter_one(record: &Record, f: &mut impl FnMut(&Value, &Record) -> Result<bool>) -> Outcome {
        let value = match record.json() {
            Ok(v) => v,
            Err(e) => return error(e),
        };
        match f(&value, record) {
            Ok(true) => Outcome::Emit(vec![Output::insert(value)]),
            Ok(false) => Outcome::Drop,
            Err(e) => error(e),
        }
    }

    pub fn map_one<T: IntoOutputs>(record: &Record, f: &mut impl FnMut(Value, &Record) -> Result<T>) -> Outcome {
        let value = match record.json() {
            Ok(v) => v,
            Err(e) => return error(e),
        };
        match f(value, record) {
            Ok(out) => emit(out.into_outputs()),
            Err(e) => error(e),
        }
    }

    pub fn flat_map_one<I>(record: &Record, f: &mut impl FnMut(Value, &Record) -> Result<I>) -> Outcome
    where
        I: IntoIterator,
        I::Item: Into<Output>,
    {
        let value = match record.json() {
            Ok(v) => v,
            Err(e) => return error(e),
        };
        match f(value, record) {
            Ok(out) => emit(out.into_iter().map(Into::into).collect()),
            Err(e) => error(e),
        }
    }

    fn emit(outputs: Vec<Output>) -> Outcome {
        if outputs.is_empty() { Outcome::Drop } else { Outcome::Emit(outputs) }
    }

    pub fn run_init(pairs: Vec<(String, String)>, init: Option<fn(&Params) -> Result<()>>) -> Result<(), String> {
        // A panic aborts the instance (a trap); say why through the host first.
        #[cfg(target_arch = "wasm32")]
        std::panic::set_hook(Box::new(|info| host_log(crate::log::Level::Error, &format!("panic: {info}"))));
        match init {
            None => Ok(()),
            Some(f) => f(&Params::from_pairs(pairs)).map_err(|e| format!("{e:#}")),
        }
    }

    #[cfg(target_arch = "wasm32")]
    pub use wit::*;

    #[cfg(target_arch = "wasm32")]
    mod wit {
        use super::*;
        pub use ::wit_bindgen;

        pub mod bindings {
            wit_bindgen::generate!({
                path: "wit/plugin.wit",
                world: "plugin",
                pub_export_macro: true,
                export_macro_name: "export",
                default_bindings_module: "::sluice_plugin::__private::bindings",
                runtime_path: "::sluice_plugin::__private::wit_bindgen::rt",
            });
        }
        pub use bindings::export;
        pub use bindings::exports::sluice::plugin::transform::Guest;
        use bindings::sluice::plugin::types as t;

        pub type WitRecord = t::Record;
        pub type WitOutcome = t::Outcome;

        fn to_record(r: t::Record) -> Record {
            Record {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            }
        }

        fn to_wit(outcome: Outcome) -> t::Outcome {
            match outcome {
                Outcome::Drop => t::Outcome::Drop,
                Outcome::Error(message) => t::Outcome::Error(t::PluginError { message }),
                Outcome::Emit(outputs) => {
                    let mut wit = Vec::with_capacity(outputs.len());
                    for o in outputs {
                        let document = match serde_json::to_vec(&o.document) {
                            Ok(d) => d,
                            Err(e) => return t::Outcome::Error(t::PluginError { message: format!("cannot serialise output: {e}") }),
                        };
                        wit.push(t::Output {
                            operation: match o.operation {
                                Operation::Insert => t::Operation::Insert,
                                Operation::Upsert => t::Operation::Upsert,
                                Operation::Delete => t::Operation::Delete,
                            },
                            document,
                            collection: o.collection,
                        });
                    }
                    t::Outcome::Emit(wit)
                }
            }
        }

        /// Run `one` over a batch, converting to and from the contract's types.
        pub fn process(batch: Vec<t::Record>, mut one: impl FnMut(&Record) -> Outcome) -> Vec<t::Outcome> {
            batch.into_iter().map(|r| to_wit(one(&to_record(r)))).collect()
        }

        pub fn host_log(level: crate::log::Level, message: &str) {
            use crate::log::Level;
            let level = match level {
                Level::Trace => t::Level::Trace,
                Level::Debug => t::Level::Debug,
                Level::Info => t::Level::Info,
                Level::Warn => t::Level::Warn,
                Level::Error => t::Level::Error,
            };
            bindings::sluice::plugin::host::log(level, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::__private::*;
    use super::*;

    fn rec(v: &str) -> Record {
        Record::new("t", 1, 42, v)
    }

    #[test]
    fn filter_keeps_drops_and_reports_bad_json() {
        let mut even = |v: &Value, _: &Record| Ok(v["num"].as_i64().unwrap_or(1) % 2 == 0);
        assert_eq!(filter_one(&rec(r#"{"num":2}"#), &mut even), Outcome::Emit(vec![Output::insert(json!({"num": 2}))]));
        assert_eq!(filter_one(&rec(r#"{"num":3}"#), &mut even), Outcome::Drop);
        match filter_one(&rec("not json"), &mut even) {
            Outcome::Error(m) => assert!(m.starts_with("value is not JSON"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut tomb = rec("{}");
        tomb.value = None;
        assert_eq!(filter_one(&tomb, &mut even), Outcome::Error("record has no value (tombstone)".into()));
    }

    #[test]
    fn map_none_drops_and_err_is_data() {
        let mut f = |v: Value, _: &Record| -> Result<Option<Value>> {
            match v["num"].as_i64() {
                Some(0) => Ok(None),
                Some(n) => Ok(Some(json!({ "n": n }))),
                None => Err(anyhow!("no num")).map_err(|e| e.context("reading")),
            }
        };
        assert_eq!(map_one(&rec(r#"{"num":0}"#), &mut f), Outcome::Drop);
        assert_eq!(map_one(&rec(r#"{"num":5}"#), &mut f), Outcome::Emit(vec![Output::insert(json!({"n": 5}))]));
        assert_eq!(map_one(&rec(r#"{}"#), &mut f), Outcome::Error("reading: no num".into()));
    }

    #[test]
    fn flat_map_fans_out_and_empty_is_drop() {
        let mut f = |v: Value, _: &Record| -> Result<Vec<Output>> {
            let n = v["num"].as_i64().unwrap_or(0);
            Ok((0..n).map(|i| Output::upsert(json!({ "_id": i })).in_collection("c")).collect())
        };
        assert_eq!(flat_map_one(&rec(r#"{"num":0}"#), &mut f), Outcome::Drop);
        match flat_map_one(&rec(r#"{"num":2}"#), &mut f) {
            Outcome::Emit(o) => {
                assert_eq!(o.len(), 2);
                assert_eq!(o[1].operation, Operation::Upsert);
                assert_eq!(o[1].collection.as_deref(), Some("c"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn params_and_init() {
        let p = Params::from_pairs([("a", "1"), ("b", "x")]);
        assert_eq!(p.parse_or("a", 0i64).unwrap(), 1);
        assert_eq!(p.parse_or("zz", 7i64).unwrap(), 7);
        assert!(p.parse_or::<i64>("b", 0).unwrap_err().to_string().contains("parameter `b`"));
        assert!(p.require("nope").unwrap_err().to_string().contains("`nope`"));
        fn failing(_: &Params) -> Result<()> {
            bail!("bad factor")
        }
        assert_eq!(run_init(vec![], Some(failing)), Err("bad factor".into()));
        assert_eq!(run_init(vec![], None), Ok(()));
    }

    #[test]
    fn record_helpers() {
        let mut r = rec("{}");
        r.key = Some(b"k1".to_vec());
        r.headers = vec![("h".into(), Some(b"v".to_vec())), ("e".into(), None)];
        assert_eq!(r.key_str(), Some("k1"));
        assert_eq!(r.header("h"), Some(Some(&b"v"[..])));
        assert_eq!(r.header("e"), Some(None));
        assert_eq!(r.header("x"), None);
    }
}
