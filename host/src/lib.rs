//! Sluice: consume Kafka records, transform them with sandboxed WebAssembly
//! plugins, write the results to MongoDB — committing a record's offset only
//! after MongoDB acknowledged what it became.
//!
//! # Layout
//! Layers, each using only those below it (checked by a unit test, `layers.rs`):
//! 1. [`record`]: a consumed record, its derived `_id`, failure kinds, shared partition
//!    state; [`config`]: the TOML configuration (strict, documented defaults).
//! 2. [`telemetry`]: health, counters and histograms every layer fills in.
//! 3. Four siblings that never use each other: [`kafka`] (the consumer and its
//!    offsets, headers as bytes, dead letters, the producer), [`plugin`] (wasmtime,
//!    the chain, hot swap), [`mongo`] (JSON to BSON, writes, the progress store)
//!    and [`formats`] (Avro, Protobuf, JSON Schema to JSON; the schema registry).
//! 4. [`ops`]: the admin HTTP API and `/metrics`.
//! 5. [`pipeline`]: per-partition workers, the write plan, and [`run`], which ties it
//!    all together.
//! 6. [`cli`]: the binary's commands, one module each.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = sluice::config::Config::load("examples/seed.toml".as_ref())?;
//! let options = sluice::RunOptions { until_caught_up: true, ..Default::default() };
//! let summary = sluice::run(config, options, std::future::pending()).await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```

pub mod cli;
pub mod config;
pub mod formats;
pub mod kafka;
pub mod mongo;
pub mod ops;
pub mod pipeline;
pub mod plugin;
pub mod record;
pub mod telemetry;

pub use pipeline::{RunOptions, Summary, run};

// The layers' modules by their short names too (`sluice::sink`, `sluice::runtime`, …).
pub use kafka::{dlq, kafka_raw, produce, source};
pub use mongo::{progress, sink};
pub use plugin::{chain, runtime, swap};

#[cfg(test)]
mod layers;
