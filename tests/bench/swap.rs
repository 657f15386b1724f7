//! What a hot swap costs, on the real services: swap latency (plugin file
//! written → first document made by the new version in MongoDB) and the
//! throughput dip around it, with the host busy on a backlog.
//!
//!     scripts/bench-swap            # = make plugins, release build, then this
//!
//! A 6-partition topic is filled with a backlog; a release `sluice run` drains it
//! with `transform` = passthrough while this program samples `/metrics` every
//! 10–50 ms. Every few seconds it overwrites the plugin file, alternating enrich
//! and passthrough (each time a new version: a custom section makes the hash
//! unique), and watches `sluice_chain_generation` (the new version validated and
//! published) and `sluice_partition_chain_generation` (set when MongoDB has
//! acknowledged a partition's first batch made by it: the first document, and
//! when every partition has switched). Printed: per swap the latency and its
//! parts, and the throughput dip: documents per second in the 2 s from the file
//! write against what an instant switch at the measured latency would give (the
//! old version's rate, from the 2 s before, until the first new document; the
//! new one's, from 3–5 s after, from then on), next to the same ratio for a 2 s
//! window with no swap near it against its own version's rate (the machine's
//! own noise); then a summary line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_tests::{Admin, Host, TestEnv, plugin};

const PARTITIONS: i32 = 6;
const SAMPLE: Duration = Duration::from_millis(50);

/// `module` with a custom section appended: same code, another version (hash).
fn variant(module: &[u8], n: usize) -> Vec<u8> {
    let (name, payload) = (b"sluice-bench", n.to_string());
    let content_len = 1 + name.len() + payload.len();
    assert!(content_len < 128 && module.starts_with(b"\0asm\x01\0\0\0"), "a core module and one-byte LEB sizes");
    let mut out = module.to_vec();
    out.extend_from_slice(&[0, content_len as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}

/// From one `/metrics` scrape: documents written, the published generation, and
/// the lowest and highest generation among the partitions' last written batches.
struct Scrape {
    written: u64,
    generation: u64,
    partitions_min: u64,
    partitions_max: u64,
}

async fn scrape(admin: &Admin) -> Scrape {
    let (_, text) = admin.get("/metrics").await;
    let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut s = Scrape { written: 0, generation: 0, partitions_min: u64::MAX, partitions_max: 0 };
    for l in text.lines() {
        if l.starts_with("sluice_documents_written_total ") {
            s.written = value(l);
        } else if l.starts_with("sluice_chain_generation ") {
            s.generation = value(l);
        } else if l.starts_with("sluice_partition_chain_generation{") {
            s.partitions_min = s.partitions_min.min(value(l));
            s.partitions_max = s.partitions_max.max(value(l));
        }
    }
    s
}

fn arg(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Enough for the warm-up and every swap at ~60 000 documents a second.
    let backlog = arg("SWAP_BENCH_MESSAGES", 3_500_000);
    let swaps = arg("SWAP_BENCH_SWAPS", 6) as usize;
    let every = Duration::from_secs(arg("SWAP_BENCH_EVERY_S", 8).max(6));
    let bin = std::env::var("SLUICE_BIN").map(PathBuf::from).unwrap_or_else(|_| sluice_tests::repo().join("target/release/sluice"));
    anyhow::ensure!(bin.exists(), "{} is missing: cargo build --release -p sluice", bin.display());

    let env = TestEnv::new("bench-swap");
    env.create_topic(PARTITIONS).await?;
    eprintln!("producing a backlog of {backlog} messages to {} ({PARTITIONS} partitions)", env.topic);
    let t = Instant::now();
    env.produce_nums(backlog).await?;
    eprintln!("produced in {:.1} s", t.elapsed().as_secs_f64());

    let file = env.dir.path().join("transform.wasm");
    let versions = [std::fs::read(plugin("passthrough"))?, std::fs::read(plugin("enrich"))?];
    std::fs::write(&file, &versions[0])?;
    let plugins = format!("[[plugins]]\nname = \"transform\"\npath = \"{}\"\n", file.display());
    let config = env.dir.path().join("host.toml");
    std::fs::write(&config, format!("{}{plugins}[pipeline]\nversions_field = \"_sluice\"\n", env.config_text(&[], "")))?;
    let mut host = Host::spawn_bin(&bin, &env, "host", &config, false);
    let admin = host.admin(None).await;

    let start = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    // Warm up: the group joined and documents flowing for 6 s (the first swap has a quiet window too).
    while scrape(&admin).await.written == 0 {
        tokio::time::sleep(SAMPLE).await;
    }
    let flowing = Instant::now();
    while flowing.elapsed() < Duration::from_secs(6) {
        samples.push((start.elapsed(), scrape(&admin).await.written));
        tokio::time::sleep(SAMPLE).await;
    }

    struct Swap {
        at: Duration,
        published: Duration,
        first_doc: Duration,
        all_switched: Duration,
    }
    let mut done: Vec<Swap> = Vec::new();
    for i in 0..swaps {
        let bytes = variant(&versions[(i + 1) % 2], i);
        let generation = 2 + i as u64;
        let at = start.elapsed();
        std::fs::write(&file, &bytes)?;
        let (mut published, mut first_doc, mut all_switched) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while all_switched.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "swap {} not complete within 30 s (did the backlog run out? raise SWAP_BENCH_MESSAGES):\n{}",
                i + 1,
                host.log_tail(20)
            );
            let s = scrape(&admin).await;
            let now = start.elapsed();
            samples.push((now, s.written));
            if s.generation >= generation {
                published.get_or_insert(now);
            }
            if s.partitions_max >= generation {
                first_doc.get_or_insert(now);
            }
            if s.partitions_min >= generation && s.partitions_min != u64::MAX {
                all_switched = Some(now);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done.push(Swap { at, published: published.unwrap(), first_doc: first_doc.unwrap(), all_switched: all_switched.unwrap() });
        let until = at + every;
        while start.elapsed() < until {
            samples.push((start.elapsed(), scrape(&admin).await.written));
            tokio::time::sleep(SAMPLE).await;
        }
    }
    let written = scrape(&admin).await.written;
    anyhow::ensure!(written < backlog, "the backlog ran out ({written} of {backlog} written): raise SWAP_BENCH_MESSAGES");
    host.terminate(Duration::from_secs(60)).await;
    // Leave nothing behind (FerretDB slows as its files grow).
    env.collection().await?.drop().await?;
    let admin_client: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", sluice_tests::brokers()).create()?;
    let _ = admin_client.delete_topics(&[env.topic.as_str(), &format!("{}.dlq", env.topic)], &rdkafka::admin::AdminOptions::new()).await;

    // Documents written by time t (interpolated between samples).
    let at = |t: Duration| -> f64 {
        let i = samples.partition_point(|(s, _)| *s <= t);
        match (i.checked_sub(1).map(|j| samples[j]), samples.get(i).copied()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                let f = (t - t0).as_secs_f64() / (t1 - t0).as_secs_f64();
                n0 as f64 + f * (n1 - n0) as f64
            }
            (Some((_, n)), _) | (None, Some((_, n))) => n as f64,
            (None, None) => 0.0,
        }
    };
    let rate = |a: Duration, b: Duration| (at(b) - at(a)) / (b - a).as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let s2 = Duration::from_secs(2);

    println!(
        "| swap | to | latency ms (file → first doc) | file → published ms | published → first doc ms | all {PARTITIONS} partitions switched ms | docs/s before | docs/s after | docs/s in the 2 s from the write | ratio to an instant switch | docs/s in a 2 s window without swap | ratio to its rate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut lat, mut dips, mut quiet) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in done.iter().enumerate() {
        // before: [-2 s, 0); during: [0, 2 s); after: [3 s, 5 s); quiet: [-5 s, -3 s) (no swap within 3 s of it).
        let before = rate(s.at.saturating_sub(s2), s.at);
        let after = rate(s.at + Duration::from_secs(3), s.at + Duration::from_secs(5));
        let during = rate(s.at, s.at + s2);
        // What the 2 s would hold with an instant switch at the measured latency:
        // the old version's rate until the first new document, the new one's after.
        let switch = (s.first_doc - s.at).as_secs_f64().min(2.0);
        let reference = (before * switch + after * (2.0 - switch)) / 2.0;
        // A quiet window runs the old version: compared with its rate.
        let q = (s.at >= Duration::from_secs(5)).then(|| rate(s.at - Duration::from_secs(5), s.at - Duration::from_secs(3)));
        let latency = ms(s.first_doc - s.at);
        lat.push(latency);
        dips.push(during / reference);
        if let Some(q) = q {
            quiet.push(q / before);
        }
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} |",
            i + 1,
            if i % 2 == 0 { "enrich" } else { "passthrough" },
            latency,
            ms(s.published - s.at),
            ms(s.first_doc.saturating_sub(s.published)),
            ms(s.all_switched - s.at),
            before,
            after,
            during,
            during / reference,
            q.map(|q| format!("{q:.0}")).unwrap_or_else(|| "-".into()),
            q.map(|q| format!("{:.2}", q / before)).unwrap_or_else(|| "-".into()),
        );
    }
    for v in [&mut lat, &mut dips, &mut quiet] {
        v.sort_by(f64::total_cmp);
    }
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    println!();
    println!(
        "swaps={} latency_ms median={:.0} max={:.0}; throughput in the 2 s after the write / with an instant switch: median={:.2} min={:.2}; 2 s without a swap / its rate: median={:.2} min={:.2}",
        done.len(),
        median(&lat),
        lat.last().copied().unwrap_or(f64::NAN),
        median(&dips),
        dips.first().copied().unwrap_or(f64::NAN),
        median(&quiet),
        quiet.first().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
