//! `SLUICE_<SECTION>_<KEY>` environment variables over the file's keys.

/// The sections `SLUICE_<SECTION>_<KEY>` can set, as they appear in variable names.
const ENV_SECTIONS: [(&str, &str); 7] = [
    ("KAFKA_", "kafka"),
    ("MONGO_", "mongo"),
    ("PIPELINE_", "pipeline"),
    ("DLQ_", "dlq"),
    ("ADMIN_", "admin"),
    ("HOT_SWAP_", "hot_swap"),
    ("SCHEMA_REGISTRY_", "schema_registry"),
];

/// Set `SLUICE_<SECTION>_<KEY>` variables into `raw` (keys the file lacks as
/// TOML values, or with `text`, as strings); returns the names applied.
pub(super) fn apply_env(raw: &mut toml::Table, env: &[(String, String)], text: bool) -> Result<Vec<String>, String> {
    let mut applied = Vec::new();
    let mut vars: Vec<&(String, String)> = env.iter().filter(|(k, _)| k.starts_with("SLUICE_")).collect();
    vars.sort();
    for (name, value) in vars {
        let rest = &name["SLUICE_".len()..];
        let Some((prefix, section)) = ENV_SECTIONS.iter().find(|(p, _)| rest.starts_with(p)) else {
            // Sluice's own variables that are not config keys; anything else is likely a typo (SLUICE_MONGODB_URI).
            const NOT_CONFIG: [&str; 9] = ["LOG", "LOG_JSON", "CONFIG", "CACHE", "COMPILE_CACHE", "PERFMAP", "BIN", "BROKERS", "TEST_"];
            if !text && !NOT_CONFIG.iter().any(|n| rest == *n || (n.ends_with('_') && rest.starts_with(n))) {
                let sections: Vec<&str> = ENV_SECTIONS.iter().map(|(_, s)| *s).collect();
                tracing::warn!("{name} names no config section ({}): ignored", sections.join(", "));
            }
            continue;
        };
        let key = rest[prefix.len()..].to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let table = raw
            .entry(*section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{name}: `{section}` is not a table in the file"))?;
        let parsed = |v: &str| toml::from_str::<toml::Table>(&format!("v = {v}")).ok().and_then(|mut t| t.remove("v"));
        let typed = match table.get(&key) {
            Some(toml::Value::String(_)) | None if parsed(value).is_none() => toml::Value::String(value.clone()),
            Some(toml::Value::String(_)) => toml::Value::String(value.clone()),
            Some(existing) => match parsed(value) {
                Some(v) if v.same_type(existing) => v,
                _ => return Err(format!("{name} = {value:?} is not of type {}, as {section}.{key} is in the file", existing.type_str())),
            },
            // Scalars as text; an inline table or array was meant as one.
            None if text => match parsed(value) {
                Some(v @ (toml::Value::Table(_) | toml::Value::Array(_))) => v,
                _ => toml::Value::String(value.clone()),
            },
            None => parsed(value).unwrap_or(toml::Value::String(value.clone())),
        };
        table.insert(key, typed);
        applied.push(name.clone());
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;
    use crate::config::tests::MINIMAL;

    #[test]
    fn environment_variables_override_keys() {
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let parse_env = |text: &str, e: &[(&str, &str)]| {
            Config::parse_with_env(text, Path::new("/etc/sluice/test.toml"), Path::new("/etc/sluice"), env(e))
        };
        let text = MINIMAL.replace("group_id = \"g\"", "group_id = \"007\"");
        let c = parse_env(
            &text,
            &[
                ("SLUICE_KAFKA_BROKERS", "kafka-1:9092,kafka-2:9092"),
                ("SLUICE_KAFKA_GROUP_ID", "123"),
                ("SLUICE_KAFKA_TOPICS", r#"["a", "b"]"#),
                ("SLUICE_MONGO_URI", "mongodb://u:pw@db:27017/?replicaSet=rs0"),
                ("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "1000"),
                ("SLUICE_PIPELINE_BATCH_LINGER", "5ms"),
                ("SLUICE_HOT_SWAP_WATCH", "false"),
                ("SLUICE_ADMIN_TOKEN", "from-env"),
                ("SLUICE_CONFIG", "/not/a/section"),
                ("SLUICE_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(c.kafka.group_id, "123", "a string key stays a string");
        assert_eq!(c.kafka.topics, ["a", "b"]);
        assert_eq!(c.mongo.uri, "mongodb://u:pw@db:27017/?replicaSet=rs0");
        assert_eq!(c.pipeline.batch_max_records, 1000);
        assert_eq!(c.pipeline.batch_linger, Duration::from_millis(5));
        assert!(!c.hot_swap.watch);
        assert_eq!(c.admin.token.as_deref(), Some("from-env"));
        // The overridden values are what a reload compares against.
        assert!(c.restart_needed(&parse_env(&text, &[]).unwrap()).contains(&"kafka".to_string()));

        // A table, written as a TOML inline table, replaces the file's whole table.
        let text = MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"client.id\" = \"me\"");
        let c = parse_env(&text, &[("SLUICE_KAFKA_OPTIONS", r#"{ "security.protocol" = "SASL_SSL", "sasl.password" = "pw" }"#)]).unwrap();
        assert_eq!(c.kafka.options.keys().collect::<Vec<_>>(), ["sasl.password", "security.protocol"]);

        // A secret of digits, absent from the file, is still text (and a table
        // beside it stays a table).
        let options = ("SLUICE_KAFKA_OPTIONS", r#"{ "sasl.password" = "pw" }"#);
        let c = parse_env(MINIMAL, &[("SLUICE_ADMIN_TOKEN", "123456"), ("SLUICE_DLQ_TOPIC", "2024"), options]).unwrap();
        assert_eq!((c.admin.token.as_deref(), c.dlq.topic.as_str()), (Some("123456"), "2024"));
        assert_eq!(c.kafka.options.keys().collect::<Vec<_>>(), ["sasl.password"]);

        let err = parse_env(MINIMAL, &[("SLUICE_PIPELINE_BATCH_SIZE", "3")]).unwrap_err().to_string();
        assert!(err.contains("batch_size") && err.contains("SLUICE_PIPELINE_BATCH_SIZE"), "{err}");
        let text = format!("{MINIMAL}\n[pipeline]\nbatch_max_records = 5\n");
        let err = parse_env(&text, &[("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "lots")]).unwrap_err().to_string();
        assert!(err.contains("SLUICE_PIPELINE_BATCH_MAX_RECORDS") && err.contains("is not of type integer"), "{err}");
        let err = parse_env(MINIMAL, &[("SLUICE_PIPELINE_BATCH_MAX_RECORDS", "0")]).unwrap_err().to_string();
        assert!(err.contains("batch_max_records must be at least 1"), "{err}");
    }
}

/// Sluice's cache directory (services, plugin build tools, compiled plugins):
/// `SLUICE_CACHE`, else `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
pub fn cache_home() -> Option<std::path::PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    var("SLUICE_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("sluice")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("sluice")))
}
