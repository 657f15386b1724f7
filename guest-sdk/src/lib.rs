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
//! An [`Output`] is an insert (a plain [`Value`] is one), an upsert or delete by
//! `_id`, or (contract 0.3.0) a write by filter: [`Output::update`] with update
//! operators, [`Output::replace_where`], [`Output::delete_where`]; `.or_insert()`
//! makes an update or replace an upsert. [`set_ordered`] asks the host to write
//! the outputs strictly in order.
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
//!   contract (`wit/plugin.wit`, package `sluice:plugin@0.3.0`; its columns are
//!   laid out as `wit/columns.md` says, by the `sluice-contract` crate).
//! - [`filter`], [`map`], [`flat_map`], [`process`]: the attribute macros. They leave your
//!   function as it is and add, for `target_arch = "wasm32"` only, the glue that
//!   exports it through the contract, so `cargo test` runs your function natively.
//! - [`log`]: log through the host (to stderr when run natively).
//! - `abi` (hidden, `__private`): the glue the macros call. It reads a batch's
//!   columns into [`Record`]s and writes the outcomes into the result's columns
//!   with the contract crate, and holds the wit-bindgen bindings on wasm32.
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

pub use ::anyhow::{Error, Result, anyhow, bail, ensure};
pub use ::serde_json::{Value, json};
pub use sluice_contract::Operation;
pub use sluice_plugin_macros::{filter, flat_map, map, process};
#[doc(hidden)]
pub use {::anyhow as __anyhow, ::serde_json};

pub use output::{IntoOutputs, Output};
pub use params::Params;
pub use record::Record;

#[doc(hidden)]
pub use abi::Outcome;

pub mod log;

mod output;
mod params;
mod record;

#[doc(hidden)]
pub mod abi;

/// Glue used by the attribute macros. Not a stable API.
#[doc(hidden)]
pub use abi as __private;

/// The version of the plugin contract this SDK builds against.
pub const CONTRACT_VERSION: &str = sluice_contract::PACKAGE;

static ORDERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ask the host to write this plugin's outputs strictly in order, batch after
/// batch (e.g. call it in your init function). Off by default: the host then
/// writes consecutive inserts as one unordered `insertMany` (faster), and
/// everything else one at a time, in order.
pub fn set_ordered(ordered: bool) {
    ORDERED.store(ordered, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_ordered`] asked for ordered writes.
pub fn ordered() -> bool {
    ORDERED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests;
