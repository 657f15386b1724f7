//! Helpers the config tests share, and the tests of the configuration as a whole.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::*;

pub(super) const MINIMAL: &str = r#"
        [kafka]
        brokers = "127.0.0.1:9092"
        group_id = "g"
        topics = ["t"]
        [mongo]
        uri = "mongodb://127.0.0.1:27017"
        database = "d"
        collection = "c"
    "#;

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/sluice/test.toml"), Path::new("/etc/sluice"))
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.kafka.auto_offset_reset, OffsetReset::Earliest);
    assert_eq!(c.pipeline.batch_max_records, 500);
    assert_eq!(c.pipeline.batch_linger, Duration::from_millis(20));
    assert_eq!(c.pipeline.max_queued(), 50_000);
    assert_eq!(c.pipeline.max_queued_bytes_per_partition, 16 << 20);
    assert_eq!(c.pipeline.on_error, OnError::DeadLetter);
    assert_eq!(c.dlq.topic_for("t"), "t.dlq");
    assert_eq!(c.pipeline.max_value_bytes, 1 << 20);
    assert_eq!(c.mongo.write_concern.w, WriteAck::Nodes(1));
    assert!(c.mongo.write_concern.journal);
    assert!(c.plugins.is_empty());
    assert!(c.admin.enabled);
    assert_eq!(c.admin.address.to_string(), "127.0.0.1:9464");
    assert!(c.hot_swap.watch && c.hot_swap.persist_uploads);
    assert_eq!(c.hot_swap.debounce, Duration::from_millis(100));
    assert_eq!(c.hot_swap.keep_versions, 5);
    assert_eq!(c.pipeline.progress_interval, Duration::from_secs(1));
}

#[test]
fn a_reload_tells_which_sections_need_a_restart() {
    let a = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n")).unwrap();
    let b = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"b\"\npath = \"b.wasm\"\n")).unwrap();
    assert!(a.restart_needed(&b).is_empty());
    let c =
        parse(&format!("{}\n[pipeline]\nbatch_max_records = 7\n", MINIMAL.replace("collection = \"c\"", "collection = \"c2\""))).unwrap();
    assert_eq!(a.restart_needed(&c), ["mongo", "pipeline"]);
}

/// The complete example of docs/config.md (its first TOML block).
fn documented_example() -> &'static str {
    let md = include_str!("../../../docs/config.md");
    let start = md.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + md[start..].find("```").expect("its end");
    &md[start..end]
}

/// docs/config.md's example parses, and the defaults it states are the code's.
#[test]
fn the_documented_example_parses_with_the_defaults_it_states() {
    let c = parse(documented_example()).unwrap_or_else(|e| panic!("docs/config.md: {e}"));
    let d = parse(MINIMAL).unwrap();
    let (p, dp) = (&c.pipeline, &d.pipeline);
    assert_eq!(
        (p.batch_max_records, p.batch_linger, p.max_queued(), p.max_queued_bytes_per_partition, p.on_error, p.max_value_bytes),
        (dp.batch_max_records, dp.batch_linger, dp.max_queued(), dp.max_queued_bytes_per_partition, dp.on_error, dp.max_value_bytes)
    );
    assert_eq!(
        (p.drain_timeout, p.progress_interval, p.shutdown_timeout, p.retry_backoff, p.retry_max_backoff, &p.versions_field),
        (dp.drain_timeout, dp.progress_interval, dp.shutdown_timeout, dp.retry_backoff, dp.retry_max_backoff, &dp.versions_field)
    );
    assert_eq!(c.plugins[0].limits, PluginLimits::default());
    assert_eq!(c.hot_swap, d.hot_swap);
    assert_eq!((c.admin.enabled, c.admin.address, c.admin.max_upload_bytes), (d.admin.enabled, d.admin.address, d.admin.max_upload_bytes));
    assert_eq!((c.dlq.topic.as_str(), c.dlq.create_topics), (d.dlq.topic.as_str(), d.dlq.create_topics));
    let (m, dm) = (&c.mongo, &d.mongo);
    assert_eq!((m.connect_timeout, &m.offsets_collection), (dm.connect_timeout, &dm.offsets_collection));
    assert_eq!(
        (&m.write_concern.w, m.write_concern.journal, m.write_concern.timeout),
        (&dm.write_concern.w, dm.write_concern.journal, dm.write_concern.timeout)
    );
    assert_eq!((c.kafka.auto_offset_reset, c.kafka.connect_timeout), (d.kafka.auto_offset_reset, d.kafka.connect_timeout));
    assert_eq!(c.plugins[0].self_test.len(), 1);
}

/// The fields of a struct as serde reads them (what its derive passes to `deserialize_struct`).
fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut out));
    out
}

/// Every key of every table is in docs/config.md's example (commented out where it has no default).
#[test]
fn every_key_is_documented() {
    let example = documented_example();
    let tables = [
        ("kafka", fields::<KafkaConfig>()),
        ("mongo", fields::<MongoConfig>()),
        ("mongo.write_concern", fields::<WriteConcernConfig>()),
        ("mongo.indexes", fields::<mongo::IndexConfig>()),
        ("mongo.timeseries", fields::<mongo::TimeseriesConfig>()),
        ("plugins", fields::<PluginConfig>()),
        ("plugins.limits", fields::<PluginLimits>()),
        ("plugins.self_test", fields::<SelfTest>()),
        ("pipeline", fields::<PipelineConfig>()),
        ("dlq", fields::<DlqConfig>()),
        ("admin", fields::<AdminConfig>()),
        ("hot_swap", fields::<HotSwapConfig>()),
        ("schema_registry", fields::<SchemaRegistryConfig>()),
    ];
    let sections: Vec<&str> = tables.iter().map(|(t, _)| *t).filter(|t| !t.contains('.')).collect();
    assert_eq!(fields::<Config>(), sections, "a new section of Config: list its table here");
    // The `key =` lines (commented out or not) under each `[table]` header.
    let mut section = String::new();
    let mut lines: Vec<(String, &str)> = Vec::new();
    for l in example.lines().map(|l| l.trim_start_matches([' ', '#'])) {
        if let Some(header) = l.strip_prefix('[') {
            section = header.trim_start_matches('[').split(']').next().unwrap_or_default().to_owned();
        } else {
            lines.push((section.clone(), l));
        }
    }
    let documented = |table: &str, key: &str| {
        lines.iter().any(|(t, l)| t == table && l.starts_with(&format!("{key} =")))
            || example.contains(&format!("[{table}.{key}]"))
            || example.contains(&format!("[[{table}.{key}]]"))
    };
    for (table, keys) in tables {
        assert!(example.contains(&format!("[{table}]")) || example.contains(&format!("[[{table}]]")), "[{table}] is not in docs/config.md");
        for key in keys {
            assert!(documented(table, key), "{table}.{key} is not in docs/config.md's example");
        }
    }
}
