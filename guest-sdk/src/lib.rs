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
//!   contract (`wit/plugin.wit`, package `sluice:plugin@0.2.0`).
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
pub const CONTRACT_VERSION: &str = "sluice:plugin@0.2.0";

/// One input record: a Kafka record, or, later in a chain, one output of the
/// previous plugin (same coordinates, `value` = that output's document). It
/// borrows the batch's buffer: nothing is copied to hand it to your function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the producer or broker set one.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Header keys and values (a header may have no value).
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> Record<'a> {
    /// A record with a value and no key, timestamp or headers (handy in tests).
    pub fn new(topic: &'a str, partition: i32, offset: i64, value: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        Record { topic, partition, offset, timestamp: None, key: None, value: Some(value.as_ref()), headers: Vec::new() }
    }

    /// The first header named `key`, if any (a header without a value gives `Some(None)`).
    pub fn header(&self, key: &str) -> Option<Option<&'a [u8]>> {
        self.headers.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The key as UTF-8 text, if there is a key and it is UTF-8.
    pub fn key_str(&self) -> Option<&'a str> {
        self.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value parsed as JSON; an error that says why when it is absent or not JSON.
    pub fn json(&self) -> Result<Value> {
        let Some(bytes) = self.value else { bail!("record has no value (tombstone)") };
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
    #[doc(hidden)]
    fn emit_into(self, w: &mut __private::ResultWriter) -> Result<()>;
}
impl IntoOutputs for Value {
    fn emit_into(self, w: &mut __private::ResultWriter) -> Result<()> {
        w.emit_json(Operation::Insert, &self, None)
    }
}
impl IntoOutputs for Output {
    fn emit_into(self, w: &mut __private::ResultWriter) -> Result<()> {
        w.emit_json(self.operation, &self.document, self.collection.as_deref())
    }
}
impl<T: IntoOutputs> IntoOutputs for Option<T> {
    fn emit_into(self, w: &mut __private::ResultWriter) -> Result<()> {
        match self {
            Some(t) => t.emit_into(w),
            None => Ok(()),
        }
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

/// The result for one input record, in SDK terms (decoded from a batch result;
/// what the SDK's own tests compare).
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

    /// A length that means "absent" in the contract's spans.
    pub const ABSENT: u32 = u32::MAX;

    /// Builds a batch result (the contract's `batch-result` columns) one record
    /// at a time; outputs are serialised straight into `data`.
    #[derive(Debug, Default)]
    pub struct ResultWriter {
        pub outcomes: Vec<u32>,
        pub outputs: Vec<u32>,
        pub data: Vec<u8>,
    }

    impl ResultWriter {
        pub fn with_capacity(records: usize, data: usize) -> Self {
            ResultWriter {
                outcomes: Vec::with_capacity(3 * records),
                outputs: Vec::with_capacity(5 * records),
                data: Vec::with_capacity(data),
            }
        }

        /// The outcome of one record: `f` emits its outputs; an `Err` discards
        /// what it emitted and records the error instead.
        pub fn record(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) {
            let (outputs, data) = (self.outputs.len(), self.data.len());
            match f(self) {
                Ok(()) => {
                    let first = (outputs / 5) as u32;
                    let count = (self.outputs.len() / 5) as u32 - first;
                    let outcome = if count == 0 { [0, 0, 0] } else { [1, first, count] };
                    self.outcomes.extend_from_slice(&outcome);
                }
                Err(e) => {
                    self.outputs.truncate(outputs);
                    self.data.truncate(data);
                    // `{:#}` keeps the context chain on one line.
                    let message = format!("{e:#}");
                    let start = self.data.len() as u32;
                    self.data.extend_from_slice(message.as_bytes());
                    self.outcomes.extend_from_slice(&[2, start, message.len() as u32]);
                }
            }
        }

        /// Emit a document serialised from `value` (a JSON object).
        pub fn emit_json(&mut self, op: Operation, value: &Value, collection: Option<&str>) -> Result<()> {
            if !value.is_object() {
                bail!("the output is not a JSON object: {value}");
            }
            let start = self.data.len();
            serde_json::to_writer(&mut self.data, value).map_err(|e| anyhow!("cannot serialise output: {e}"))?;
            self.push_output(op, start, collection);
            Ok(())
        }

        /// Emit a document given as JSON bytes, as they are.
        pub fn emit_raw(&mut self, op: Operation, document: &[u8], collection: Option<&str>) {
            let start = self.data.len();
            self.data.extend_from_slice(document);
            self.push_output(op, start, collection);
        }

        fn push_output(&mut self, op: Operation, start: usize, collection: Option<&str>) {
            let len = self.data.len() - start;
            let (cs, cl) = match collection {
                Some(c) => {
                    let cs = self.data.len();
                    self.data.extend_from_slice(c.as_bytes());
                    (cs as u32, c.len() as u32)
                }
                None => (0, ABSENT),
            };
            let op = match op {
                Operation::Insert => 0,
                Operation::Upsert => 1,
                Operation::Delete => 2,
            };
            self.outputs.extend_from_slice(&[op, start as u32, len as u32, cs, cl]);
        }

        /// Outcome `i` decoded (for tests).
        pub fn outcome(&self, i: usize) -> Outcome {
            let o = &self.outcomes[3 * i..3 * i + 3];
            let text = |s: usize, l: usize| String::from_utf8_lossy(&self.data[s..s + l]).into_owned();
            match o[0] {
                0 => Outcome::Drop,
                2 => Outcome::Error(text(o[1] as usize, o[2] as usize)),
                _ => Outcome::Emit(
                    (o[1]..o[1] + o[2])
                        .map(|j| {
                            let f = &self.outputs[5 * j as usize..5 * j as usize + 5];
                            Output {
                                operation: [Operation::Insert, Operation::Upsert, Operation::Delete][f[0] as usize],
                                document: serde_json::from_slice(&self.data[f[1] as usize..(f[1] + f[2]) as usize]).expect("JSON"),
                                collection: (f[4] != ABSENT).then(|| text(f[3] as usize, f[4] as usize)),
                            }
                        })
                        .collect(),
                ),
            }
        }
    }

    pub fn filter_one(record: &Record, f: &mut impl FnMut(&Value, &Record) -> Result<bool>, w: &mut ResultWriter) -> Result<()> {
        let value = record.json()?;
        if !value.is_object() {
            bail!("value is not a JSON object: {value}");
        }
        if f(&value, record)? {
            // Kept unchanged: the bytes as they came, no serialising again.
            w.emit_raw(Operation::Insert, record.value.unwrap_or_default(), None);
        }
        Ok(())
    }

    pub fn map_one<T: IntoOutputs>(record: &Record, f: &mut impl FnMut(Value, &Record) -> Result<T>, w: &mut ResultWriter) -> Result<()> {
        let value = record.json()?;
        f(value, record)?.emit_into(w)
    }

    pub fn flat_map_one<I>(record: &Record, f: &mut impl FnMut(Value, &Record) -> Result<I>, w: &mut ResultWriter) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Into<Output>,
    {
        let value = record.json()?;
        for o in f(value, record)? {
            o.into().emit_into(w)?;
        }
        Ok(())
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

    /// The part of `data` a span names; `None` for an absent one. A span outside
    /// `data` is a host bug: it panics (the call traps).
    fn span(data: &[u8], start: u32, len: u32) -> Option<&[u8]> {
        (len != ABSENT).then(|| &data[start as usize..start as usize + len as usize])
    }

    /// Run `one` over every record of a batch given as the contract's columns.
    pub fn for_each_record(
        topic: &str,
        partition: i32,
        offsets: &[i64],
        timestamps: &[i64],
        spans: &[u32],
        header_spans: &[u32],
        data: &[u8],
        mut one: impl FnMut(&Record, &mut ResultWriter) -> Result<()>,
    ) -> ResultWriter {
        let mut w = ResultWriter::with_capacity(offsets.len(), data.len());
        for (i, (&offset, &ts)) in offsets.iter().zip(timestamps).enumerate() {
            let s = &spans[6 * i..6 * i + 6];
            let headers = (s[4]..s[4] + s[5])
                .map(|h| {
                    let hs = &header_spans[4 * h as usize..4 * h as usize + 4];
                    let key = span(data, hs[0], hs[1]).and_then(|k| std::str::from_utf8(k).ok()).unwrap_or("");
                    (key, span(data, hs[2], hs[3]))
                })
                .collect();
            let record = Record {
                topic,
                partition,
                offset,
                timestamp: (ts != -1).then_some(ts),
                key: span(data, s[0], s[1]),
                value: span(data, s[2], s[3]),
                headers,
            };
            w.record(|w| one(&record, w));
        }
        w
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

        pub type WitBatch = t::Batch;
        pub type WitBatchResult = t::BatchResult;

        /// Run `one` over a batch and return the contract's result columns.
        pub fn process(batch: t::Batch, one: impl FnMut(&Record, &mut ResultWriter) -> Result<()>) -> t::BatchResult {
            let b = &batch;
            let w = for_each_record(&b.topic, b.partition, &b.offsets, &b.timestamps, &b.spans, &b.header_spans, &b.data, one);
            t::BatchResult { outcomes: w.outcomes, outputs: w.outputs, data: w.data }
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

    fn rec(v: &str) -> Record<'_> {
        Record::new("t", 1, 42, v)
    }

    /// Run `f` on one record through a fresh writer and decode its outcome.
    fn one(f: impl FnOnce(&mut ResultWriter) -> Result<()>) -> Outcome {
        let mut w = ResultWriter::default();
        w.record(f);
        w.outcome(0)
    }

    #[test]
    fn filter_keeps_drops_and_reports_bad_json() {
        let mut even = |v: &Value, _: &Record| Ok(v["num"].as_i64().unwrap_or(1) % 2 == 0);
        assert_eq!(one(|w| filter_one(&rec(r#"{"num":2}"#), &mut even, w)), Outcome::Emit(vec![Output::insert(json!({"num": 2}))]));
        assert_eq!(one(|w| filter_one(&rec(r#"{"num":3}"#), &mut even, w)), Outcome::Drop);
        match one(|w| filter_one(&rec("not json"), &mut even, w)) {
            Outcome::Error(m) => assert!(m.starts_with("value is not JSON"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut tomb = rec("{}");
        tomb.value = None;
        assert_eq!(one(|w| filter_one(&tomb, &mut even, w)), Outcome::Error("record has no value (tombstone)".into()));
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
        assert_eq!(one(|w| map_one(&rec(r#"{"num":0}"#), &mut f, w)), Outcome::Drop);
        assert_eq!(one(|w| map_one(&rec(r#"{"num":5}"#), &mut f, w)), Outcome::Emit(vec![Output::insert(json!({"n": 5}))]));
        assert_eq!(one(|w| map_one(&rec(r#"{}"#), &mut f, w)), Outcome::Error("reading: no num".into()));
        let mut to_array = |_: Value, _: &Record| -> Result<Value> { Ok(json!([1])) };
        assert_eq!(one(|w| map_one(&rec(r#"{}"#), &mut to_array, w)), Outcome::Error("the output is not a JSON object: [1]".into()));
        let mut keep = |_: &Value, _: &Record| Ok(true);
        assert_eq!(one(|w| filter_one(&rec("[1]"), &mut keep, w)), Outcome::Error("value is not a JSON object: [1]".into()));
    }

    #[test]
    fn flat_map_fans_out_and_empty_is_drop() {
        let mut f = |v: Value, _: &Record| -> Result<Vec<Output>> {
            let n = v["num"].as_i64().unwrap_or(0);
            Ok((0..n).map(|i| Output::upsert(json!({ "_id": i })).in_collection("c")).collect())
        };
        assert_eq!(one(|w| flat_map_one(&rec(r#"{"num":0}"#), &mut f, w)), Outcome::Drop);
        match one(|w| flat_map_one(&rec(r#"{"num":2}"#), &mut f, w)) {
            Outcome::Emit(o) => {
                assert_eq!(o.len(), 2);
                assert_eq!(o[1].operation, Operation::Upsert);
                assert_eq!(o[1].collection.as_deref(), Some("c"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_after_some_outputs_discards_them() {
        let mut w = ResultWriter::default();
        w.record(|w| {
            w.emit_json(Operation::Insert, &json!({"a": 1}), None)?;
            bail!("second output failed")
        });
        w.record(|w| w.emit_json(Operation::Delete, &json!({"_id": 2}), Some("other")));
        assert_eq!(w.outcome(0), Outcome::Error("second output failed".into()));
        assert_eq!(w.outcome(1), Outcome::Emit(vec![Output::delete(json!(2)).in_collection("other")]));
        assert_eq!(w.outputs.len(), 5, "the discarded output left no trace");
    }

    #[test]
    fn a_batch_is_read_from_the_contract_columns() {
        // Two records: key "k" + value {"num":1} with header h=v; then a tombstone without key.
        let data = br#"k{"num":1}hv"#;
        let spans = [0, 1, 1, 9, 0, 1, 0, ABSENT, 0, ABSENT, 1, 0];
        let header_spans = [10, 1, 11, 1];
        let mut seen = Vec::new();
        let w = for_each_record("t", 3, &[7, 8], &[1000, -1], &spans, &header_spans, data, |r, w| {
            seen.push((r.key_str().map(str::to_owned), r.timestamp, r.header("h").flatten().map(<[u8]>::to_vec), r.offset, r.partition));
            map_one(r, &mut |v: Value, _: &Record| Ok(v), w)
        });
        assert_eq!(seen, [(Some("k".into()), Some(1000), Some(b"v".to_vec()), 7, 3), (None, None, None, 8, 3)]);
        assert_eq!(w.outcome(0), Outcome::Emit(vec![Output::insert(json!({"num": 1}))]));
        assert_eq!(w.outcome(1), Outcome::Error("record has no value (tombstone)".into()));
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
        r.key = Some(b"k1");
        r.headers = vec![("h", Some(b"v")), ("e", None)];
        assert_eq!(r.key_str(), Some("k1"));
        assert_eq!(r.header("h"), Some(Some(&b"v"[..])));
        assert_eq!(r.header("e"), Some(None));
        assert_eq!(r.header("x"), None);
    }
}
