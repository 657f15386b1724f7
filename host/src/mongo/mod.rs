//! The MongoDB layer: writes with their errors classified once ([`sink`]) and
//! the progress store ([`progress`]). It knows nothing of Kafka or plugins.

pub mod progress;
pub mod sink;
