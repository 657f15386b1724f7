//! The MongoDB layer: JSON to BSON bytes in one pass ([`encode`]), writes ([`sink`])
//! with their errors classified once ([`classify`]) and the progress store ([`progress`]);
//! the configured indexes and time-series collection, made at start ([`collections`]).
//! It knows nothing of Kafka or plugins.

pub mod classify;
pub mod collections;
pub mod encode;
pub mod progress;
pub mod sink;
