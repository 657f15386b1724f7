//! What an operator reaches while a pipeline runs: the admin HTTP API ([`admin`])
//! and its Prometheus rendering of the telemetry ([`metrics`]).

pub mod admin;
pub mod metrics;
