//! The plugin layer: wasmtime, loading and sandboxed instances ([`runtime`], in
//! parts: `engine`, `load`, `instance`, `sandbox` (what WASI gives a plugin), and `columns`, the contract's columns
//! through the `sluice-contract` crate), a batch through the chain ([`chain`]),
//! and hot swap of chain generations ([`swap`]). It knows nothing of Kafka or MongoDB.

pub mod chain;
mod columns;
mod engine;
mod instance;
mod load;
pub mod rollout;
pub mod runtime;
mod sandbox;
pub mod swap;
