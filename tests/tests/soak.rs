//! A soak: one host under steady load, its plugin hot-swapped again and again
//! (admin API uploads, alternating two versions) and its group rebalanced again
//! and again (a second host joins and leaves), while its resident memory, open
//! file descriptors and threads are sampled from /proc. After the warm-up the
//! memory must not grow faster than 5 MiB a minute (least squares over the
//! samples), descriptors and threads must not drift by more than a few, and
//! every record ends stored once.
//!
//! Ignored for now (it is red, see the attribute): `scripts/soak` runs the
//! short form (about 2.5 minutes), `scripts/soak --long` the long one (30
//! minutes, 500 swaps, 50 rebalances), with the samples written to
//! `SLUICE_SOAK_OUT` (CSV). Settings, from the environment:
//! `SLUICE_SOAK_SECS` (150), `SLUICE_SOAK_WARMUP_SECS` (60),
//! `SLUICE_SOAK_SWAP_EVERY_MS` (2000), `SLUICE_SOAK_CHURN_EVERY_SECS` (20),
//! `SLUICE_SOAK_SAMPLE_SECS` (5), `SLUICE_SOAK_RATE` (1000 records a second).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::*;

const PARTITIONS: i32 = 6;
const EXTRA: &str = r#"
[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[pipeline]
batch_max_records = 200
batch_linger = "10ms"
drain_timeout = "4s"
versions_field = "_sluice"
"#;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory (KiB), open descriptors, threads of `pid`.
fn sample(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.split_whitespace().next()?.parse().ok());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "red: with swaps and rebalances together RSS grew ~18 MiB/min (troughs 140 -> 167 MiB in 90 s); swaps alone 2.5, rebalances alone -0.2 (#19); scripts/soak runs it"]
async fn a_host_soaks_swaps_and_rebalances_without_growing() {
    let (secs, warmup) = (setting("SLUICE_SOAK_SECS", 150), setting("SLUICE_SOAK_WARMUP_SECS", 60));
    let swap_every = Duration::from_millis(setting("SLUICE_SOAK_SWAP_EVERY_MS", 2000));
    let churn_every = Duration::from_secs(setting("SLUICE_SOAK_CHURN_EVERY_SECS", 20));
    let sample_every = Duration::from_secs(setting("SLUICE_SOAK_SAMPLE_SECS", 5));
    let rate = setting("SLUICE_SOAK_RATE", 1000);

    let env = TestEnv::new("soak");
    env.create_topic(PARTITIONS).await.unwrap();
    let file = env.dir.path().join("transform.wasm");
    std::fs::copy(plugin("passthrough"), &file).unwrap();
    let plugins = format!("[[plugins]]\nname = \"transform\"\npath = \"{}\"\n", file.display());
    let config = env.dir.path().join("host.toml");
    // The churning host writes the plugin file nowhere: it has a copy of its own.
    let churn_file = env.dir.path().join("churn.wasm");
    std::fs::copy(plugin("passthrough"), &churn_file).unwrap();
    let churn_config = env.dir.path().join("churn.toml");
    std::fs::write(&config, format!("{}{plugins}{EXTRA}", env.config_text(&[], ""))).unwrap();
    let churn_plugins = format!("[[plugins]]\nname = \"transform\"\npath = \"{}\"\n", churn_file.display());
    std::fs::write(&churn_config, format!("{}{churn_plugins}{EXTRA}", env.config_text(&[], ""))).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let producer = env.produce_until(stop.clone(), rate);
    let mut host = Host::spawn(&env, "soak", &config, false);
    let admin = host.admin(None).await;
    let pid = host.pid();
    let versions = [std::fs::read(plugin("enrich")).unwrap(), std::fs::read(plugin("passthrough")).unwrap()];
    let out = std::env::var("SLUICE_SOAK_OUT").ok();
    let mut csv = String::from("seconds,rss_kib,fds,threads,swaps,rebalances,written\n");

    let started = Instant::now();
    let (mut next_swap, mut next_churn, mut next_sample) = (started + swap_every, started + churn_every, started);
    let (mut swaps, mut rebalances) = (0u64, 0u64);
    let mut churn: Option<Host> = None;
    let mut samples: Vec<(f64, u64, u64, u64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        if now >= next_swap {
            let (status, body) = admin.put("/plugins/transform", versions[(swaps % 2) as usize].clone()).await;
            assert_eq!(status, 200, "swap {swaps}: {body}");
            swaps += 1;
            next_swap += swap_every;
        }
        if now >= next_churn {
            match churn.take() {
                None => churn = Some(Host::spawn(&env, &format!("churn-{rebalances}"), &churn_config, false)),
                Some(mut h) => h.terminate(Duration::from_secs(30)).await,
            }
            rebalances += 1;
            next_churn += churn_every;
        }
        if now >= next_sample {
            let (rss, fds, threads) = sample(pid).unwrap_or_else(|| panic!("the host is gone:\n{}", host.log_tail(30)));
            let t = started.elapsed().as_secs_f64();
            let written = admin.metric("sluice_documents_written_total").await.unwrap_or(0);
            csv += &format!("{t:.1},{rss},{fds},{threads},{swaps},{rebalances},{written}\n");
            samples.push((t, rss, fds, threads));
            next_sample += sample_every;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(mut h) = churn.take() {
        h.terminate(Duration::from_secs(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let produced = producer.await.unwrap().expect("producer");
    env.wait_committed_at_end(Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("{e}\n{}", host.log_tail(30)));
    host.terminate(Duration::from_secs(30)).await;
    if let Some(path) = &out {
        std::fs::write(path, &csv).unwrap();
    }

    let warm: Vec<_> = samples.iter().filter(|s| s.0 >= warmup as f64).collect();
    assert!(warm.len() >= 5, "too few samples after the warm-up: {csv}");
    let xs: Vec<f64> = warm.iter().map(|s| s.0 / 60.0).collect();
    let rss_mib: Vec<f64> = warm.iter().map(|s| s.1 as f64 / 1024.0).collect();
    let growth = slope(&xs, &rss_mib);
    let spread = |f: fn(&&(f64, u64, u64, u64)) -> u64| warm.iter().map(f).max().unwrap() - warm.iter().map(f).min().unwrap();
    let (fd_drift, thread_drift) = (spread(|s| s.2), spread(|s| s.3));
    eprintln!(
        "soak: {secs} s, {swaps} swaps, {rebalances} rebalances, {produced} records; RSS {:.1} -> {:.1} MiB, {growth:.2} MiB/min after the warm-up; fds drift {fd_drift}, threads drift {thread_drift}",
        samples[0].1 as f64 / 1024.0,
        samples.last().unwrap().1 as f64 / 1024.0
    );
    assert!(growth < 5.0, "RSS grows {growth:.2} MiB/min after the warm-up (limit 5):\n{csv}");
    assert!(fd_drift <= 8, "open descriptors drift by {fd_drift}:\n{csv}");
    assert!(thread_drift <= 6, "threads drift by {thread_drift}:\n{csv}");
    env.assert_exact(produced).await;
}
