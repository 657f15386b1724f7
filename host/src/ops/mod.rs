//! What an operator reaches while a pipeline runs: the admin HTTP API ([`admin`]),
//! its Prometheus rendering of the telemetry ([`metrics`]) and its status page ([`status`]).

pub mod admin;
pub mod metrics;
pub mod status;
