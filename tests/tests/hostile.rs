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
/// not that the host denies system access. That is what [`wasi`] shows, with
/// plugins that really import WASI: the host's sandbox denies them.
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
    //! Plugins built for WASI targets (no services needed). A WASI 0.2 component
    //! (`tests/hostile/wasi-*` built for wasm32-wasip2) loads and runs in the
    //! host's deny-all sandbox: no preopened directory, no environment, every
    //! socket denied, the wall clock at the batch's newest record time. Each
    //! reaches for the system on `{"num":3}` only: the sandbox denies it, so the
    //! plugin fails that record with its own error (not a trap) and every other
    //! record passes. WASI preview 1 core modules (wasm32-wasip1) are still
    //! refused at load, naming their imports.
    use std::process::Command;

    use sluice::config::PluginConfig;
    use sluice::runtime::{Batch, OutcomeRef, PluginInstance, Runtime, RuntimeError};
    use sluice_tests::{ConfigBuilder, PluginToml, hostile_wasi, sluice_bin};

    /// The records' timestamps: a minute apart from this one (milliseconds, not whole seconds).
    const T0_MS: i64 = 1_700_000_000_123;

    fn timestamp(num: i64) -> i64 {
        T0_MS + num * 60_000
    }

    /// `{"num":n}` for each of `nums`, at offset n and [`timestamp`]`(n)`.
    fn batch(nums: impl IntoIterator<Item = i64>) -> Batch {
        let mut batch = Batch::new("t", 0);
        for n in nums {
            batch.push(n, Some(timestamp(n)), None, Some(format!("{{\"num\":{n}}}").as_bytes()), &[]);
        }
        batch
    }

    /// An instance of the wasm32-wasip2 component of `family`: it loads.
    fn component(family: &str) -> PluginInstance {
        let rt = Runtime::new().unwrap();
        let plugin = rt
            .load(&PluginConfig::new(family, hostile_wasi("wasm32-wasip2", family)))
            .unwrap_or_else(|e| panic!("{family}: the component is refused: {e}"));
        plugin.instantiate().unwrap_or_else(|e| panic!("{family}: {e}"))
    }

    /// What the plugin made of each record: its one output document, or the
    /// error it returned. A trap fails the test.
    fn process(family: &str, instance: &mut PluginInstance, batch: &Batch) -> Vec<Result<String, String>> {
        let result = instance.process(batch).unwrap_or_else(|e| panic!("{family}: the call failed: {e}"));
        (0..batch.len())
            .map(|i| match result.outcome(i) {
                OutcomeRef::Emit(outputs) => {
                    let docs: Vec<String> = outputs.map(|j| String::from_utf8_lossy(result.output(j).document).into_owned()).collect();
                    assert_eq!(docs.len(), 1, "{family}: record {i}: {docs:?}");
                    Ok(docs.into_iter().next().unwrap())
                }
                OutcomeRef::Drop => panic!("{family}: record {i} dropped"),
                OutcomeRef::Error(e) => Err(e.message().into_owned()),
            })
            .collect()
    }

    /// Every record but num 3 came through unchanged; num 3's outcome.
    fn all_but_3_unchanged(family: &str, outcomes: Vec<Result<String, String>>) -> Result<String, String> {
        assert_eq!(outcomes.len(), 7, "{family}");
        for (n, outcome) in outcomes.iter().enumerate().filter(|(n, _)| *n != 3) {
            assert_eq!(outcome.as_deref(), Ok(format!("{{\"num\":{n}}}").as_str()), "{family}: record {n}");
        }
        outcomes.into_iter().nth(3).unwrap()
    }

    /// Files, sockets and the environment: the component loads, the call
    /// returns, and num 3 fails inside the plugin with the sandbox's denial.
    #[test]
    fn components_load_and_their_system_calls_are_denied_inside_the_plugin() {
        for (family, denied) in [
            // No preopened directory: no path resolves, not even one that exists on the host.
            ("fs", "No such file or directory"),
            // TCP is off and every address refused: `connect` is not permitted.
            ("sockets", "Permission denied"),
            // No environment variables.
            ("env", "environment variable not found"),
        ] {
            let mut instance = component(family);
            let outcomes = process(family, &mut instance, &batch(0..7));
            let message = all_but_3_unchanged(family, outcomes).expect_err(&format!("{family}: num 3 got through"));
            println!("{family}: num 3 failed: {message}");
            assert!(message.contains(denied), "{family}: {message:?} lacks {denied:?}");
            // The instance is not poisoned: the next batch runs.
            let again = process(family, &mut instance, &batch([3, 4]));
            assert_eq!(again[0].as_ref().unwrap_err(), &message, "{family}: the same denial");
            assert_eq!(again[1].as_deref(), Ok("{\"num\":4}"), "{family}");
        }
    }

    /// The wall clock is deterministic: the newest record timestamp of the batch,
    /// in the batch that reads it (so a replay gives the same `now`).
    #[test]
    fn a_component_reading_the_clock_gets_the_records_time() {
        let mut instance = component("clocks");
        let now = |outcome: Result<String, String>| -> i64 {
            let doc: serde_json::Value = serde_json::from_str(&outcome.expect("num 3 passes")).unwrap();
            assert_eq!(doc["num"], 3, "{doc}");
            doc["now"].as_i64().unwrap_or_else(|| panic!("{doc}"))
        };
        // Alone in its batch: num 3's own timestamp, in seconds.
        let alone = now(process("clocks", &mut instance, &batch([3])).remove(0));
        assert_eq!(alone, timestamp(3) / 1000);
        // With the others: the batch's newest (num 6's), not the host's time.
        let outcomes = process("clocks", &mut instance, &batch(0..7));
        assert_eq!(now(all_but_3_unchanged("clocks", outcomes)), timestamp(6) / 1000);
        // A fresh instance replaying the batch reads the same.
        let outcomes = process("clocks", &mut component("clocks"), &batch(0..7));
        assert_eq!(now(all_but_3_unchanged("clocks", outcomes)), timestamp(6) / 1000);
    }

    /// Core modules built for wasm32-wasip1 import functions of `wasi_snapshot_preview1`:
    /// refused at load, in one line naming them.
    #[test]
    fn a_wasi_preview_1_module_is_refused_at_load_naming_its_wasi_imports() {
        for (family, function) in [("fs", "path_open"), ("clocks", "clock_time_get"), ("env", "environ_get"), ("sockets", "fd_write")] {
            let rt = Runtime::new().unwrap();
            let err = match rt.load(&PluginConfig::new(family, hostile_wasi("wasm32-wasip1", family))) {
                Ok(_) => panic!("{family}: a wasip1 module loaded"),
                Err(e) => e,
            };
            let message = err.to_string();
            let RuntimeError::WasiModule { module, functions, .. } = err else { panic!("{family}: not refused as WASI: {message}") };
            assert_eq!(module, "wasi_snapshot_preview1", "{message}");
            assert!(functions.iter().any(|f| f == function), "{family}: {function} not in {functions:?}");
            assert!(message.contains("is a WASI preview 1 module") && message.contains(&format!("`{function}`")), "{family}: {message}");
            assert!(message.contains("from `wasi_snapshot_preview1`, which the host does not provide"), "{family}: {message}");
            assert!(
                message.contains("build it with the guest SDK for wasm32-unknown-unknown (or as a WASI 0.2 component)"),
                "{family}: {message}"
            );
            assert!(!message.contains('\n'), "{family}: {message}");
        }
    }

    /// `sluice check`, offline: a WASI 0.2 component passes; a preview 1 module
    /// fails, exit code 1, with one error line naming the import.
    #[test]
    fn sluice_check_passes_wasi_components_and_refuses_preview_1_modules() {
        // A config of its own, not a `TestEnv`'s: nothing is contacted, and nothing to clean up on the services.
        let dir = tempfile::tempdir().unwrap();
        let check = |target: &str, family: &str| {
            let plugin = hostile_wasi(target, family);
            let path = ConfigBuilder::new()
                .set("kafka", "brokers", "127.0.0.1:9092")
                .set("kafka", "group_id", "g")
                .set("kafka", "topics", vec!["t"])
                .set("mongo", "uri", "mongodb://127.0.0.1:27017")
                .set("mongo", "database", "d")
                .set("mongo", "collection", "c")
                .plugin(PluginToml::new(family, &plugin))
                .write(dir.path().join("check.toml"));
            let out = Command::new(sluice_bin()).args(["check", "--config"]).arg(&path).env_remove("SLUICE_LOG").output().unwrap();
            (
                plugin,
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        for family in ["fs", "sockets", "clocks", "env"] {
            let (plugin, code, out, err) = check("wasm32-wasip2", family);
            assert_eq!(code, Some(0), "{family}: {out}{err}");
            assert!(
                out.contains(&format!("plugin {family}: version ")) && out.contains(&format!("({})", plugin.display())),
                "{family}: {out}"
            );
        }
        let (plugin, code, _, err) = check("wasm32-wasip1", "env");
        assert_eq!(code, Some(1), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        let line = errors[0];
        assert!(line.contains(&format!("plugin `env` ({})", plugin.display())), "{line}");
        assert!(line.contains("is a WASI preview 1 module") && line.contains("`environ_get`"), "{line}");
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
