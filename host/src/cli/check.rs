//! `sluice check`: what a valid configuration will run, found without
//! connecting to anything (plugins loaded and validated as at start).

use clap::Args;

use super::common::ConfigArg;
use crate::config::{Config, redact_kafka_error};

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Check the configuration and print what it will run.
pub fn execute(args: CheckArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    let report = check(&cfg)?;
    println!("{} is valid (nothing was contacted)", args.config.config.display());
    print!("{report}");
    Ok(())
}

/// `sluice check`: what a valid configuration will run, found without
/// connecting to anything (plugins loaded and validated as at start).
pub fn check(config: &Config) -> anyhow::Result<String> {
    let runtime = crate::plugin::runtime::Runtime::new()?;
    let mut out = String::new();
    use std::fmt::Write as _;
    let k = &config.kafka;
    // librdkafka checks every setting's name and value when it is set: offline, no client is made.
    crate::kafka::source::consumer_config(k)
        .create_native_config()
        .map_err(|e| anyhow::anyhow!("kafka.options: {}", redact_kafka_error(e)))?;
    if config.pipeline.on_error == crate::config::OnError::DeadLetter {
        crate::kafka::dlq::producer_config(k, &config.dlq)
            .create_native_config()
            .map_err(|e| anyhow::anyhow!("dlq.options: {}", redact_kafka_error(e)))?;
    }
    let _ = writeln!(out, "  kafka: {} group {} topics {:?}", k.brokers, k.group_id, k.topics);
    let m = &config.mongo;
    let _ = writeln!(out, "  mongo: {} -> {}.{}", crate::config::redact_uri(&m.uri), m.database, m.collection);
    if config.plugins.is_empty() {
        let _ = writeln!(out, "  plugins: none (values are written as they are)");
    }
    for p in &config.plugins {
        let loaded = runtime.load(p)?;
        let tests = if p.self_test.is_empty() { String::new() } else { format!(", {} self-tests passed", p.self_test.len()) };
        let _ = writeln!(out, "  plugin {}: version {} ({}){tests}", p.name, loaded.version, p.path.display());
    }
    let a = &config.admin;
    let _ = writeln!(
        out,
        "  admin: {}",
        if a.enabled { format!("http://{}{}", a.address, if a.token.is_some() { " (token)" } else { "" }) } else { "off".into() }
    );
    let _ = writeln!(out, "  on_error: {:?}", config.pipeline.on_error);
    Ok(out)
}
