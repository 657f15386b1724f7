//! Hostile plugins on the real services: each misbehaves on one number. The bad
//! record is dead-lettered with the right kind and reason, every other record
//! lands exactly once, offsets reach the end, and the host keeps going.

use std::time::Duration;

use sluice::RunOptions;
use sluice_tests::{TestEnv, hostile, num_report};

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
    use sluice::runtime::{Runtime, RuntimeError};
    use sluice::source::SourceRecord;

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

    fn panic_chain() -> (Chain, Arc<sluice::metrics::PluginMetrics>) {
        let rt = Runtime::new().unwrap();
        let plugin = rt.load(&PluginConfig::new("panic", sluice_tests::hostile("panic"))).unwrap();
        let metrics = Arc::new(sluice::metrics::PluginMetrics::default());
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
