//! Hostile plugins on the real services: each misbehaves on one number. The bad
//! record is dead-lettered with the right kind and reason, every other record
//! lands exactly once, offsets reach the end, and the host keeps going.

use std::time::Duration;

use sluice::RunOptions;
use sluice_tests::{TestEnv, hostile, num_report, plugin};

const N: u64 = 40;

async fn run_hostile(name: &str, trigger: i64, limits: &str, kind: &str, reason: &str) {
    let env = TestEnv::new(&format!("hostile-{name}"));
    env.create_topic(2).await.unwrap();
    env.produce_nums(N).await.unwrap();
    let plugin = format!("[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n[plugins.limits]\n{limits}\n", hostile(name).display());
    let config = env.config_with(&plugin, "[pipeline]\nbatch_max_records = 16\n").unwrap();
    let summary = tokio::time::timeout(
        Duration::from_secs(240),
        sluice::run(config, RunOptions { until_caught_up: true, ..Default::default() }, std::future::pending()),
    )
    .await
    .expect("finished in time")
    .expect("the host stays up and finishes");
    assert_eq!(summary.consumed, N, "{summary}");
    assert_eq!(summary.dead_lettered, 1, "{summary}");

    let docs = env.documents().await.unwrap();
    let report = num_report(&docs, (0..N as i64).filter(|n| *n != trigger));
    assert!(report.is_exact(), "{name}: {report:?}");
    env.assert_committed_at_end();

    let dl = env.dead_letters(1).unwrap();
    assert_eq!(dl.len(), 1, "{dl:?}");
    let d = &dl[0];
    assert_eq!(d.value.as_deref(), Some(format!("{{\"num\":{trigger}}}").as_bytes()), "the original value is kept");
    assert_eq!(d.header("sluice.error.kind"), kind, "{d:?}");
    assert!(d.header("sluice.error.reason").contains(reason), "{name}: reason {:?} lacks {reason:?}", d.header("sluice.error.reason"));
    assert_eq!(d.header("sluice.plugin"), name);
    assert_eq!(d.header("sluice.plugin.version").len(), 12);
    // The whole chain generation that processed it (here: the one plugin).
    assert_eq!(d.header("sluice.chain"), format!("{name}@{}", d.header("sluice.plugin.version")));
    assert_eq!(d.header("sluice.source.topic"), env.topic);
    assert!(d.header("sluice.source.offset").parse::<i64>().is_ok());
    println!("{name}: kind={} reason={}", d.header("sluice.error.kind"), d.header("sluice.error.reason"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_time_limit() {
    run_hostile("spin", 13, "call_timeout = \"300ms\"", "timeout", "limits.call_timeout (300ms)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_cap() {
    run_hostile("bomb", 7, "memory_bytes = 33554432", "memory", "memory limit of 33554432 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_on_one_input_fails_only_that_record() {
    run_hostile("panic", 5, "", "trap", "boom on 5").await;
}

/// Built for wasm32-unknown-unknown, the plugin's `std::fs`, `std::net` and
/// `std::env` calls are stubs that fail inside the plugin without reaching the
/// host: this shows such a plugin gets errors (and the record is dead-lettered),
/// not that the host refuses system access. That is what [`wasi`] shows, with
/// plugins that really import WASI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_files_and_opening_sockets_is_impossible() {
    run_hostile("escape", 3, "", "plugin-error", "sandbox held").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_output_hits_the_output_cap() {
    run_hostile("flood", 11, "memory_bytes = 536870912", "output-too-large", "exceed limits.max_output_bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_output_under_the_default_memory_cap_is_a_memory_trap() {
    run_hostile("flood", 11, "", "memory", "memory limit of 67108864 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_output_is_dead_lettered() {
    run_hostile("badjson", 9, "", "invalid-output", "not JSON").await;
}

mod isolation {
    //! A failed batch is isolated by halves within a time budget, and stops
    //! between calls when its partition is released (no services needed).
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sluice::chain::{Chain, ChainSpec};
    use sluice::config::PluginConfig;
    use sluice::record::SourceRecord;
    use sluice::runtime::{Runtime, RuntimeError};

    fn records(n: usize) -> Vec<SourceRecord> {
        let topic: Arc<str> = Arc::from("t");
        (0..n)
            .map(|i| SourceRecord {
                topic: topic.clone(),
                partition: 0,
                offset: i as i64,
                timestamp: None,
                key: None,
                value: Some(format!("{{\"num\":{i}}}").into_bytes()),
                headers: Vec::new(),
            })
            .collect()
    }

    fn panic_chain() -> (Chain, Arc<sluice::telemetry::PluginMetrics>) {
        let rt = Runtime::new().unwrap();
        let plugin = rt.load(&PluginConfig::new("panic", sluice_tests::hostile("panic"))).unwrap();
        let metrics = Arc::new(sluice::telemetry::PluginMetrics::default());
        let chain = Chain::new(Arc::new(ChainSpec::new(1, vec![plugin])), 1 << 20).unwrap().with_metrics(vec![metrics.clone()]);
        (chain, metrics)
    }

    #[test]
    fn one_bad_record_in_256_costs_a_few_calls_not_one_per_record() {
        let (mut chain, metrics) = panic_chain();
        let results = chain.process(&records(256)).unwrap();
        let failed: Vec<usize> = (0..256).filter(|&i| results.get(i).is_err()).collect();
        assert_eq!(failed, [5], "only the record that panics fails");
        // The whole batch, then two halves per level down to the culprit: 1 + 2 × 8.
        let calls = metrics.call_records.count();
        assert!(calls <= 17, "{calls} calls");
    }

    #[test]
    fn a_released_partition_stops_the_isolation_between_calls() {
        let (chain, metrics) = panic_chain();
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let mut chain = chain.with_cancel(Arc::new(move || flag.load(Ordering::Relaxed)));
        released.store(true, Ordering::Relaxed);
        match chain.process(&records(256)) {
            Err(RuntimeError::Cancelled) => {}
            other => panic!("expected a cancellation, got {:?}", other.map(|_| "results")),
        }
        assert_eq!(metrics.call_records.count(), 1, "only the first, failed, call ran");
    }
}

mod wasi {
    //! Plugins built for WASI targets import system interfaces (files, sockets,
    //! clocks, environment); the host provides none, so it refuses them at load,
    //! naming the imports (no services needed).
    use std::process::Command;

    use sluice::config::PluginConfig;
    use sluice::runtime::{Runtime, RuntimeError};
    use sluice_tests::{TestEnv, hostile_wasi, sluice_bin};

    const NO_SYSTEM: &str = "plugins get no system interfaces (filesystem, sockets, clocks, environment, …)";

    fn load_error(target: &str, family: &str) -> RuntimeError {
        let rt = Runtime::new().unwrap();
        match rt.load(&PluginConfig::new(family, hostile_wasi(target, family))) {
            Ok(_) => panic!("{target} {family}: loaded"),
            Err(e) => e,
        }
    }

    /// One component per family (`tests/hostile/wasi-*` built for wasm32-wasip2);
    /// every one also imports `wasi:io` and `wasi:cli` (the Rust standard library's).
    #[test]
    fn components_importing_wasi_are_refused_at_load_naming_the_import() {
        for (family, interface) in [
            ("fs", "wasi:filesystem/types@"),
            ("sockets", "wasi:sockets/tcp@"),
            ("clocks", "wasi:clocks/wall-clock@"),
            ("env", "wasi:cli/environment@"),
        ] {
            let err = load_error("wasm32-wasip2", family);
            let message = err.to_string();
            let RuntimeError::SystemImports { imports, .. } = err else { panic!("{family}: not refused for its imports: {message}") };
            let import =
                imports.iter().find(|i| i.starts_with(interface)).unwrap_or_else(|| panic!("{family}: {interface} not in {imports:?}"));
            assert!(message.contains(&format!("`{import}`")), "{family}: {message}");
            assert!(message.contains(NO_SYSTEM), "{family}: {message}");
            assert!(message.contains("only `sluice:plugin/host@0.2.0` is provided"), "{family}: {message}");
            assert!(!message.contains('\n'), "{family}: {message}");
        }
    }

    /// Core modules built for wasm32-wasip1 import functions of `wasi_snapshot_preview1`.
    #[test]
    fn a_wasi_core_module_is_refused_at_load_naming_its_wasi_imports() {
        for (family, function) in [("fs", "path_open"), ("clocks", "clock_time_get"), ("env", "environ_get")] {
            let err = load_error("wasm32-wasip1", family);
            let message = err.to_string();
            let RuntimeError::WasiModule { module, functions, .. } = err else { panic!("{family}: not refused as WASI: {message}") };
            assert_eq!(module, "wasi_snapshot_preview1", "{message}");
            assert!(functions.iter().any(|f| f == function), "{family}: {function} not in {functions:?}");
            assert!(message.contains("is a WASI module") && message.contains(&format!("`{function}`")), "{family}: {message}");
            assert!(message.contains("from `wasi_snapshot_preview1`") && message.contains(NO_SYSTEM), "{family}: {message}");
            assert!(message.contains("build it with the guest SDK for wasm32-unknown-unknown"), "{family}: {message}");
            assert!(!message.contains('\n'), "{family}: {message}");
        }
    }

    /// `sluice check` refuses them offline, exit code 1, with one error line naming the import.
    #[test]
    fn sluice_check_refuses_wasi_plugins_with_one_line_naming_the_import() {
        let env = TestEnv::new("hostile-wasi-check");
        for (target, family, needle) in [
            ("wasm32-wasip2", "sockets", "`wasi:sockets/tcp@"),
            ("wasm32-wasip2", "fs", "`wasi:filesystem/types@"),
            ("wasm32-wasip1", "env", "`environ_get`"),
        ] {
            let plugin = hostile_wasi(target, family);
            let text = format!("{}[[plugins]]\nname = \"{family}\"\npath = \"{}\"\n", env.config_text(&[], ""), plugin.display());
            let path = env.dir.path().join("check.toml");
            std::fs::write(&path, text).unwrap();
            let out = Command::new(sluice_bin()).args(["check", "--config"]).arg(&path).env_remove("SLUICE_LOG").output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{target} {family}: {err}");
            let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
            assert_eq!(errors.len(), 1, "{target} {family}: {err}");
            let line = errors[0];
            assert!(line.contains(&format!("plugin `{family}` ({})", plugin.display())), "{line}");
            assert!(line.contains(needle) && line.contains(NO_SYSTEM), "{target} {family}: {line}");
        }
    }
}

/// Every prefix of a real plugin (a file still being copied, a truncated
/// download) is refused with an error, never a panic.
#[test]
fn truncated_plugin_files_are_errors_not_panics() {
    let path = plugin("passthrough");
    let bytes = std::fs::read(&path).unwrap();
    let rt = sluice::runtime::Runtime::new().unwrap();
    let cfg = sluice::config::PluginConfig::new("p", &path);
    let step = (bytes.len() / 97).max(1);
    for cut in (8..bytes.len()).step_by(step) {
        let e = rt.validate(&cfg, bytes[..cut].to_vec()).map(|_| ()).unwrap_err().to_string();
        assert!(!e.is_empty() && !e.contains('\n'), "cut at {cut}: {e}");
    }
    rt.validate(&cfg, bytes).unwrap();
}
