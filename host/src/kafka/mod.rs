//! The Kafka layer: the consumer and its offsets ([`source`]), what a rebalance
//! does ([`rebalance`]), headers as bytes
//! ([`kafka_raw`]), the dead-letter producer ([`dlq`]) and the tutorial's
//! producer ([`produce`]). It knows nothing of plugins or MongoDB: stored
//! progress comes in through a lookup the pipeline gives it.

pub mod dlq;
pub mod kafka_raw;
pub mod produce;
pub mod rebalance;
pub mod source;
