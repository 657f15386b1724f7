//! Sluice: consume Kafka records, transform them with sandboxed WebAssembly
//! plugins, write the results to MongoDB — committing a record's offset only
//! after MongoDB acknowledged what it became.
//!
//! # Layout
//! - [`record`]: a consumed record and its derived `_id`; [`config`]: the TOML configuration (strict, documented defaults).
//! - [`telemetry`]: health, counters and histograms every layer fills in.
//! - [`swap`]: hot swap: chain generations, validation, rollback, reload, the file watcher.
//! - [`admin`]: the admin HTTP API (plugins, reload, health, metrics); [`metrics`]: its `/metrics`.
//! - [`source`]: the Kafka consumer thread (dispatch, offset store, pause, rebalance).
//! - [`runtime`]: wasmtime engine, plugin loading, sandboxed instances.
//! - [`chain`]: a batch through the plugin chain, per-record results.
//! - [`sink`]: MongoDB writes (idempotent inserts, upserts, deletes); [`bson_json`]: JSON to BSON bytes in one pass.
//! - [`progress`]: next offsets kept in MongoDB, the later of it and Kafka's wins.
//! - [`kafka_raw`]: Kafka headers as bytes (keys that are not UTF-8);
//!   [`dlq`]: failed records to a Kafka dead-letter topic, with the reason in headers.
//! - [`plan`]: chain results to MongoDB writes (the pipeline writes it, the tools print it).
//! - [`pipeline`]: per-partition workers and [`run`], which ties it all together.
//! - [`produce`]: the tutorial's producer (`sluice produce`).
//! - [`ops`]: `sluice count`, `sluice reset`, `sluice check`.
//! - [`testbed`]: `sluice plugin test` (plugins on a file of records, the write plan);
//!   [`scaffold`]: `sluice plugin new`; [`replay`]: `sluice dlq replay`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = sluice::config::Config::load("examples/seed.toml".as_ref())?;
//! let options = sluice::RunOptions { until_caught_up: true, ..Default::default() };
//! let summary = sluice::run(config, options, std::future::pending()).await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```

pub mod admin;
pub mod bson_json;
pub mod chain;
pub mod config;
pub mod dlq;
pub mod kafka_raw;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod produce;
pub mod progress;
pub mod record;
pub mod replay;
pub mod runtime;
pub mod scaffold;
pub mod sink;
pub mod source;
pub mod swap;
pub mod telemetry;
pub mod testbed;

pub use pipeline::{RunOptions, Summary, run};

#[cfg(test)]
mod layers;
