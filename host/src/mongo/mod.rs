//! The MongoDB layer: JSON to BSON bytes in one pass ([`encode`]), writes with
//! their errors classified once ([`sink`]) and the progress store ([`progress`]). It knows nothing of Kafka or plugins.

pub mod encode;
pub mod progress;
pub mod sink;
