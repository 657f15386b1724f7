//! The checks a parsed configuration must pass (what serde cannot say).

use std::time::Duration;

use super::redact::redact_uri;
use super::{Config, OnError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), String> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty".into());
        }
        if k.group_id.trim().is_empty() {
            return Err("kafka.group_id is empty".into());
        }
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err("kafka.topics must list at least one non-empty topic".into());
        }
        if let Some(t) = k.topics.iter().find(|t| t.starts_with('^')) {
            return Err(format!("kafka.topics: {t:?} is a pattern (it starts with `^`); Sluice reads the topics it is given: list them"));
        }
        for key in k.options.keys() {
            if key == "enable.auto.offset.store" {
                return Err("kafka.options.\"enable.auto.offset.store\" cannot be set: Sluice stores offsets only after MongoDB acknowledged the write".into());
            }
        }
        for (what, format) in [("key_format", k.key_format), ("value_format", k.value_format)] {
            if format.uses_registry() && self.schema_registry.is_none() {
                return Err(format!("kafka.{what} = \"{format}\" needs a [schema_registry] with its url"));
            }
        }
        if let Some(r) = &self.schema_registry {
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                return Err(format!("schema_registry.url {:?} is not an http:// or https:// URL", redact_uri(&r.url)));
            }
            if r.password.is_some() != r.username.is_some() {
                return Err("schema_registry: username and password go together".into());
            }
            if r.username.is_some() && r.bearer_token.is_some() {
                return Err("schema_registry: give either username/password or bearer_token, not both".into());
            }
        }
        let m = &self.mongo;
        for (what, v) in [("mongo.uri", &m.uri), ("mongo.database", &m.database), ("mongo.collection", &m.collection)] {
            if v.trim().is_empty() {
                return Err(format!("{what} is empty"));
            }
        }
        if !(m.uri.starts_with("mongodb://") || m.uri.starts_with("mongodb+srv://")) {
            return Err(format!("mongo.uri {:?} is not a MongoDB connection string (mongodb:// or mongodb+srv://)", redact_uri(&m.uri)));
        }
        if m.collection == m.offsets_collection {
            return Err(format!(
                "mongo.collection and mongo.offsets_collection are both {:?}: documents and Sluice's progress must not share a collection",
                m.collection
            ));
        }
        m.validate_collections()?;
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins {
            if !names.insert(p.name.as_str()) {
                return Err(format!("plugin name `{}` is used twice in [[plugins]]", p.name));
            }
            if p.limits.memory_bytes < (1 << 20) {
                return Err(format!("plugins `{}`: limits.memory_bytes must be at least 1 MiB", p.name));
            }
            if p.limits.call_timeout.is_zero() {
                return Err(format!("plugins `{}`: limits.call_timeout must be more than zero", p.name));
            }
            for (i, t) in p.self_test.iter().enumerate() {
                let at = format!("plugins `{}`: self_test {}", p.name, i + 1);
                match &t.expect {
                    Some(_) if t.expect_error => return Err(format!("{at}: set `expect` or `expect_error`, not both")),
                    Some(e) => match serde_json::from_str::<serde_json::Value>(e) {
                        Ok(serde_json::Value::Array(_)) => {}
                        Ok(_) => return Err(format!("{at}: `expect` must be a JSON array of documents (\"[]\" = dropped)")),
                        Err(err) => return Err(format!("{at}: `expect` is not JSON: {err}")),
                    },
                    None => {}
                }
            }
        }
        let pl = &self.pipeline;
        if pl.on_error == OnError::DeadLetter {
            for t in &k.topics {
                if self.dlq.topic_for(t) == *t {
                    return Err(format!("dlq.topic {:?} would dead-letter topic {t} into itself", self.dlq.topic));
                }
            }
        }
        if let Some(f) = &pl.versions_field
            && (f.is_empty() || f.starts_with('$') || f.contains('.') || f == "_id")
        {
            return Err(format!("pipeline.versions_field {f:?} is not a usable top-level field name"));
        }
        if pl.batch_max_records == 0 {
            return Err("pipeline.batch_max_records must be at least 1".into());
        }
        if pl.max_queued() < pl.batch_max_records {
            return Err("pipeline.max_queued_per_partition must be at least batch_max_records".into());
        }
        if pl.max_queued_bytes_per_partition < (1 << 20) {
            return Err("pipeline.max_queued_bytes_per_partition must be at least 1 MiB".into());
        }
        for (key, default_ms) in [("session.timeout.ms", 45_000u64), ("max.poll.interval.ms", 300_000)] {
            let ms = match k.options.get(key) {
                Some(v) => v.parse::<u64>().map_err(|_| format!("kafka.options.\"{key}\" = {v:?} is not a number of milliseconds"))?,
                None => default_ms,
            };
            if pl.drain_timeout >= Duration::from_millis(ms) {
                return Err(format!(
                    "pipeline.drain_timeout ({:?}) must be shorter than Kafka's {key} ({ms} ms), or the group evicts this host while it drains",
                    pl.drain_timeout
                ));
            }
        }
        if pl.shutdown_timeout <= pl.drain_timeout {
            return Err("pipeline.shutdown_timeout must be longer than pipeline.drain_timeout".into());
        }
        if pl.retry_backoff.is_zero() || pl.retry_max_backoff < pl.retry_backoff {
            return Err("pipeline.retry_backoff must be > 0 and <= retry_max_backoff".into());
        }
        let a = &self.admin;
        if a.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err("admin.token is empty: remove it (loopback only) or set a real one".into());
        }
        if a.enabled && !a.address.ip().is_loopback() && a.token.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "admin.address {} is reachable from other machines: set admin.token (anyone reaching it could replace the plugins)",
                a.address
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn invalid_values_are_rejected() {
        for (text, needle) in [
            (MINIMAL.replace("topics = [\"t\"]", "topics = []"), "kafka.topics"),
            (format!("{MINIMAL}\n[pipeline]\nbatch_max_records = 0\n"), "batch_max_records"),
            (
                format!("{MINIMAL}\n[kafka.options]\n\"enable.auto.offset.store\" = \"true\"\n").replace("[kafka]\n", "[kafka]\n"),
                "enable.auto.offset.store",
            ),
            (
                format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n[[plugins]]\nname = \"a\"\npath = \"b.wasm\"\n"),
                "used twice",
            ),
            (format!("{MINIMAL}\n[pipeline]\ndrain_timeout = \"50s\"\nshutdown_timeout = \"60s\"\n"), "session.timeout.ms"),
            (
                MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"session.timeout.ms\" = \"10000\""),
                "shorter than Kafka's session.timeout.ms (10000 ms)",
            ),
            (format!("{MINIMAL}\n[pipeline]\nshutdown_timeout = \"5s\"\n"), "shutdown_timeout"),
            (MINIMAL.replace("collection = \"c\"", "collection = \"sluice_offsets\""), "must not share a collection"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
