//! Sluice: consume Kafka records, transform them with sandboxed WebAssembly
//! plugins, write the results to MongoDB — committing a record's offset only
//! after MongoDB acknowledged what it became.
//!
//! # Layout
//! Layers, each using only those below it (checked by a unit test, `layers.rs`):
//! - [`record`]: a consumed record, its derived `_id`, failure kinds, shared partition
//!   state; [`config`]: the TOML configuration (strict, documented defaults).
//! - [`telemetry`]: health, counters and histograms every layer fills in;
//!   [`bson_json`]: JSON to BSON bytes in one pass.
//! - Three siblings that never use each other: [`kafka`] (the consumer and its
//!   offsets, headers as bytes, dead letters, the producer), [`plugin`] (wasmtime,
//!   the chain, hot swap) and [`mongo`] (writes, the progress store).
//! - [`plan`]: chain results to MongoDB writes; [`admin`] and [`metrics`]: the admin
//!   HTTP API and `/metrics`; [`ops`], [`testbed`], [`scaffold`], [`replay`]: the
//!   operator and plugin-author commands.
//! - [`pipeline`]: per-partition workers and [`run`], which ties it all together.
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
pub mod config;
pub mod kafka;
pub mod metrics;
pub mod mongo;
pub mod ops;
pub mod pipeline;
pub mod plan;
pub mod plugin;
pub mod record;
pub mod replay;
pub mod scaffold;
pub mod telemetry;
pub mod testbed;

pub use pipeline::{RunOptions, Summary, run};

// The layers' modules by their short names too (`sluice::sink`, `sluice::runtime`, …).
pub use kafka::{dlq, kafka_raw, produce, source};
pub use mongo::{progress, sink};
pub use plugin::{chain, runtime, swap};

#[cfg(test)]
mod layers;
