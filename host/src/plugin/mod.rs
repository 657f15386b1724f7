//! The plugin layer: wasmtime, loading and sandboxed instances ([`runtime`]), a
//! batch through the chain ([`chain`]), and hot swap of chain generations
//! ([`swap`]). It knows nothing of Kafka or MongoDB.

pub mod chain;
pub mod runtime;
pub mod swap;
