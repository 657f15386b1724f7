//! The ABI: what the attribute macros generate calls to (as `sluice_plugin::__private`).
//! Not a stable API.
//!
//! A batch arrives as the contract's columns (`wit/plugin.wit`, laid out as
//! `wit/columns.md` says); [`for_each_record`] reads it with the contract crate
//! and hands each [`Record`] to the plugin function through [`filter_one`],
//! [`map_one`] or [`flat_map_one`], which write its outcome into a
//! [`ResultWriter`]: the result's columns, written with the contract crate. On
//! wasm32, `wit` holds the wit-bindgen glue that exports it all.

use std::ops::{Deref, DerefMut};

use sluice_contract::{BatchView, ResultColumns};

use crate::record::InvalidInput;
use crate::{IntoOutputs, Operation, Output, Params, Record, Result, Value, anyhow, bail};

pub use sluice_contract::ABSENT;

/// The result for one input record, in SDK terms (decoded from a batch result;
/// what the SDK's own tests compare).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Drop,
    Emit(Vec<Output>),
    Error(String),
}

/// Builds a batch result (the contract's `batch-result` columns, which it
/// derefs to) one record at a time; outputs are serialised straight into `data`.
#[derive(Debug, Default)]
pub struct ResultWriter {
    columns: ResultColumns,
}

impl Deref for ResultWriter {
    type Target = ResultColumns;
    fn deref(&self) -> &ResultColumns {
        &self.columns
    }
}

impl DerefMut for ResultWriter {
    fn deref_mut(&mut self) -> &mut ResultColumns {
        &mut self.columns
    }
}

impl ResultWriter {
    pub fn with_capacity(records: usize, data: usize) -> Self {
        ResultWriter { columns: ResultColumns::with_capacity(records, data) }
    }

    /// The outcome of one record: `f` emits its outputs; an `Err` discards
    /// what it emitted and records the error instead (as invalid input when it
    /// is the SDK's own "value is absent / not JSON / not an object" error).
    pub fn record(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) {
        let mark = self.columns.mark();
        match f(self) {
            Ok(()) => self.columns.emitted(mark),
            // `{:#}` keeps the context chain on one line.
            Err(e) => self.columns.failed(mark, &format!("{e:#}"), InvalidInput::is(&e)),
        }
    }

    /// Emit a document serialised from `value` (a JSON object).
    pub fn emit_json(&mut self, op: Operation, value: &Value, collection: Option<&str>) -> Result<()> {
        if !value.is_object() {
            bail!("the output is not a JSON object: {value}");
        }
        let start = self.columns.data.len();
        serde_json::to_writer(&mut self.columns.data, value).map_err(|e| anyhow!("cannot serialise output: {e}"))?;
        self.columns.output_written(op, start, collection);
        Ok(())
    }

    /// Emit an update, replace or delete-where: its filter then (but for
    /// delete-where) its document, serialised from JSON objects.
    pub fn emit_filtered(&mut self, op: Operation, filter: &Value, document: &Value, upsert: bool, collection: Option<&str>) -> Result<()> {
        if !op.has_filter() {
            bail!("a {} takes no filter", op.name());
        }
        if !filter.is_object() {
            bail!("the filter is not a JSON object: {filter}");
        }
        if op.has_document() && !document.is_object() {
            bail!("the {} document is not a JSON object: {document}", op.name());
        }
        let data = &mut self.columns.data;
        let start = data.len();
        serde_json::to_writer(&mut *data, filter).map_err(|e| anyhow!("cannot serialise the filter: {e}"))?;
        let filter_span = sluice_contract::Span { start: start as u32, len: (data.len() - start) as u32 };
        let document_span = if op.has_document() {
            let start = data.len();
            serde_json::to_writer(&mut *data, document).map_err(|e| anyhow!("cannot serialise output: {e}"))?;
            sluice_contract::Span { start: start as u32, len: (data.len() - start) as u32 }
        } else {
            sluice_contract::Span::ABSENT
        };
        let flags = if upsert && op.may_upsert() { sluice_contract::FLAG_UPSERT } else { 0 };
        self.columns.output_spans(op, flags, filter_span, document_span, collection);
        Ok(())
    }

    /// Emit a document given as JSON bytes, as they are.
    pub fn emit_raw(&mut self, op: Operation, document: &[u8], collection: Option<&str>) {
        self.columns.output(op, document, collection);
    }

    /// The columns written.
    pub fn into_columns(self) -> ResultColumns {
        self.columns
    }

    /// Outcome `i` decoded (for tests).
    pub fn outcome(&self, i: usize) -> Outcome {
        let view = self.columns.view();
        match view.outcome(i) {
            sluice_contract::Outcome::Drop => Outcome::Drop,
            sluice_contract::Outcome::Error(e) => Outcome::Error(e.message().into_owned()),
            sluice_contract::Outcome::Emit(outputs) => Outcome::Emit(
                outputs
                    .map(|j| {
                        let o = view.output(j);
                        Output {
                            operation: o.operation,
                            document: if o.operation.has_document() {
                                serde_json::from_slice(o.document).expect("JSON")
                            } else {
                                Value::Null
                            },
                            filter: o.filter.map(|f| serde_json::from_slice(f).expect("JSON")),
                            upsert: o.upsert,
                            collection: o.collection.map(str::to_owned),
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
        return Err(InvalidInput::error(format!("value is not a JSON object: {value}")));
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

pub fn process_one<I>(record: &Record, f: &mut impl FnMut(&Record) -> Result<I>, w: &mut ResultWriter) -> Result<()>
where
    I: IntoIterator,
    I::Item: Into<Output>,
{
    for o in f(record)? {
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

/// Run `one` over every record of a batch given as the contract's columns. A
/// span outside `data` is a host bug: it panics (the call traps).
#[allow(clippy::too_many_arguments)]
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
    let batch = BatchView { offsets, timestamps, spans, header_spans, data };
    let mut w = ResultWriter::with_capacity(batch.len(), data.len());
    w.columns.set_ordered(crate::ordered());
    for r in batch.records() {
        let headers = r.headers().map(|(k, v)| (std::str::from_utf8(k).unwrap_or(""), v)).collect();
        let record = Record { topic, partition, offset: r.offset, timestamp: r.timestamp, key: r.key, value: r.value, headers };
        w.record(|w| one(&record, w));
    }
    w
}

#[cfg(target_arch = "wasm32")]
pub use wit::*;

/// The wit-bindgen glue: the contract's types and the export macro.
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
        let c = w.into_columns();
        t::BatchResult { outcomes: c.outcomes, outputs: c.outputs, data: c.data, options: c.options }
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
