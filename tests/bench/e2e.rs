//! End-to-end throughput and CPU of Sluice next to its peers, on the real
//! services, in one run (`scripts/bench`, which writes `bench/results.md`).
//!
//! Every system reads the same kind of topic (`{"num": n}`, 6 partitions) and
//! writes to its own collection of the same FerretDB:
//! - raw sink: the documents Sluice would write, inserted straight with the
//!   mongodb driver (same batch size, unordered, same write concern, one task
//!   per partition); raw consume: a plain rdkafka consumer draining the topic.
//!   Both time themselves (first to last operation) and read their own CPU.
//! - Sluice (no plugin, passthrough, even → enrich), the tutorial's
//!   `consume.py`, and Kafka Connect with the MongoDB sink connector: measured
//!   from outside, alike: the consumer group's committed offsets and the
//!   process's CPU (`/proc/<pid>/stat`, user + sys) are sampled every 100 ms;
//!   the window runs from the first commit to the one that reaches the end
//!   offsets (all commit about once a second, so each end is ±0.5 s).
//!
//! Then the scaling figures: 1, 2, 3 Sluice processes in one group, and CPU per
//! message for 100 B, 1 KB and 10 KB messages.
//!
//! Subcommands used by the run itself: `raw-consume TOPIC N`, `raw-sink COLLECTION TOPIC N`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::{DATABASE, TestEnv, brokers, lang_plugin, mongo_uri, plugin, registry_url, repo, unique};

const PARTITIONS: i32 = 6;
const BATCH: usize = 500;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// user + sys CPU seconds of a process, and whether it has exited (a zombie
/// keeps its counters until it is reaped).
fn proc_cpu(pid: u32) -> Option<(f64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at `state`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some(((utime + stime) / ticks, f[0] == "Z"))
}

fn self_cpu() -> f64 {
    proc_cpu(std::process::id()).map(|c| c.0).unwrap_or(0.0)
}

/// CPU seconds so far of the Kafka broker and of FerretDB (their pid files in `.services/`).
fn services_cpu() -> (f64, f64) {
    let cpu = |name: &str| -> f64 {
        std::fs::read_to_string(repo().join(format!(".services/{name}.pid")))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .and_then(proc_cpu)
            .map_or(0.0, |c| c.0)
    };
    (cpu("kafka"), cpu("ferretdb"))
}

/// One measured system.
#[derive(Debug, Clone)]
struct Measured {
    name: String,
    messages: u64,
    secs: f64,
    cpu: f64,
    /// CPU seconds of the Kafka broker and of FerretDB in the same window.
    kafka_cpu: f64,
    mongo_cpu: f64,
    note: String,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.messages as f64
    }
    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            self.name,
            self.messages,
            self.secs,
            self.rate(),
            self.cpu,
            self.cpu_us(),
            self.kafka_cpu * 1e6 / self.messages as f64,
            self.mongo_cpu * 1e6 / self.messages as f64,
            self.note
        )
    }
}

/// A topic of `count` messages `{"num": n[, "pad": "…"]}`, each about `size` bytes.
async fn topic(name: &str, count: u64, size: usize) -> anyhow::Result<TestEnv> {
    let env = TestEnv::new(name);
    env.create_topic(PARTITIONS).await?;
    if size == 0 {
        env.produce_nums(count).await?;
        return Ok(env);
    }
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers()).set("linger.ms", "20").set("message.max.bytes", "20000000").create()?;
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for n in 0..count {
        let head = format!("{{\"num\":{n},\"pad\":\"");
        let pad = "x".repeat(size.saturating_sub(head.len() + 2));
        let payload = format!("{head}{pad}\"}}");
        let queued = loop {
            match producer.send_result(FutureRecord::<(), String>::to(&env.topic).payload(&payload)) {
                Ok(f) => break f,
                // Queue full: let deliveries complete.
                Err(_) => {
                    if let Some(r) = pending.next().await {
                        delivered(r)?;
                    }
                }
            }
        };
        pending.push(queued);
        while pending.len() >= 5000 {
            if let Some(r) = pending.next().await {
                delivered(r)?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        delivered(r)?;
    }
    Ok(env)
}

/// A topic of `count` messages `{"num": n}` in Avro (Confluent's wire format), the
/// schema registered in the test registry: the same messages as [`topic`]'s, another format.
async fn avro_topic(name: &str, count: u64) -> anyhow::Result<TestEnv> {
    let env = TestEnv::new(name);
    env.create_topic(PARTITIONS).await?;
    let schema = r#"{"type": "record", "name": "Num", "fields": [{"name": "num", "type": "long"}]}"#;
    let registry = sluice::formats::Registry::new(&sluice::config::SchemaRegistryConfig::at(registry_url())).map_err(anyhow::Error::msg)?;
    let id = registry.register(&format!("{}-value", env.topic), schema, "AVRO").await.map_err(anyhow::Error::msg)?;
    let encoder = sluice::formats::encode::AvroEncoder::new(schema, id).map_err(anyhow::Error::msg)?;
    let mut opts = sluice::produce::ProduceOptions::numbers(&brokers(), &env.topic, 0, count);
    opts.partitions = PARTITIONS;
    opts.encode = Some(std::sync::Arc::new(move |line: &str| encoder.encode(line)));
    let sent = sluice::produce::produce(&opts).await?;
    anyhow::ensure!(sent == count, "sent {sent} of {count}");
    Ok(env)
}

fn delivered(
    r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> anyhow::Result<()> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => bail!("delivery failed: {e}"),
        Err(_) => bail!("the producer dropped a message"),
    }
}

/// Sum of the committed offsets of `group` on `topic`.
struct Committed {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl Committed {
    fn new(group: &str, topic: &str) -> anyhow::Result<Committed> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).set("group.id", group).create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(topic, p);
        }
        Ok(Committed { consumer, tpl })
    }
    fn sum(&self) -> i64 {
        match self.consumer.committed_offsets(self.tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => c.elements().iter().map(|e| if let Offset::Offset(o) = e.offset() { o } else { 0 }).sum(),
            Err(_) => 0,
        }
    }
}

/// Sample the group's commits and the processes' CPU until `total` is committed.
fn measure(name: &str, pids: &[u32], group: &str, topic: &str, total: i64, timeout: Duration) -> anyhow::Result<Measured> {
    let committed = Committed::new(group, topic)?;
    let started = Instant::now();
    let mut first: Option<(Instant, i64, f64, (f64, f64))> = None;
    loop {
        let c = committed.sum();
        let now = Instant::now();
        let cpu: f64 = pids.iter().filter_map(|p| proc_cpu(*p)).map(|c| c.0).sum();
        let services = services_cpu();
        if c > 0 && first.is_none() {
            first = Some((now, c, cpu, services));
        }
        if c >= total {
            let (t0, c0, cpu0, services0) = first.expect("a first commit");
            if c0 >= total {
                bail!("{name}: everything was committed at the first sample; use more messages");
            }
            return Ok(Measured {
                name: name.into(),
                messages: (c - c0) as u64,
                secs: (now - t0).as_secs_f64(),
                cpu: cpu - cpu0,
                kafka_cpu: services.0 - services0.0,
                mongo_cpu: services.1 - services0.1,
                note: String::new(),
            });
        }
        if started.elapsed() > timeout {
            bail!("{name}: {c} of {total} committed after {timeout:?}");
        }
        for p in pids {
            if proc_cpu(*p).is_none_or(|(_, zombie)| zombie) {
                bail!("{name}: process {p} exited with {c} of {total} committed");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    }
    for c in children.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn log_to(dir: &Path, name: &str) -> (Stdio, Stdio) {
    let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
    let err = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
    (out.into(), err.into())
}

struct Bench {
    sluice: PathBuf,
    python: PathBuf,
    connect_libs: PathBuf,
    work: tempfile::TempDir,
    db: mongodb::Database,
}

impl Bench {
    /// A fresh collection name; the collection is dropped by [`Bench::done`].
    fn collection(&self, prefix: &str) -> String {
        unique(prefix)
    }

    /// Drop what a measurement wrote (FerretDB slows down as its SQLite file grows).
    async fn done(&self, collection: &str) {
        let _ = self.db.collection::<mongodb::bson::Document>(collection).drop().await;
    }
}

impl Bench {
    /// A Sluice config: `plugins` (example plugin names) on `env`'s topic, to `collection`.
    fn sluice_config(&self, env: &TestEnv, group: &str, collection: &str, plugins: &[&str], avro: bool) -> PathBuf {
        // Avro values: the format, and the registry that has their schema.
        let (format, registry) = match avro {
            true => ("value_format = \"avro\"\n".to_owned(), format!("[schema_registry]\nurl = \"{}\"\n", registry_url())),
            false => (String::new(), String::new()),
        };
        let mut text = format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{group}\"\ntopics = [\"{}\"]\n{format}\n\
             [mongo]\nuri = \"{}\"\ndatabase = \"{DATABASE}\"\ncollection = \"{collection}\"\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\n{registry}\n",
            brokers(),
            env.topic,
            mongo_uri()
        );
        for p in plugins {
            // `enrich-py`, `enrich-js`: built by `make lang-plugins`.
            let path = if p.ends_with("-py") || p.ends_with("-js") { lang_plugin(p) } else { plugin(p) };
            text.push_str(&format!("[[plugins]]\nname = \"{p}\"\npath = \"{}\"\n\n", path.display()));
        }
        let path = self.work.path().join(format!("{group}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `hosts` Sluice processes in one group on `env`'s topic.
    async fn sluice(&self, name: &str, env: &TestEnv, plugins: &[&str], hosts: usize, total: i64) -> anyhow::Result<Measured> {
        self.sluice_with(name, env, plugins, false, hosts, total).await
    }

    /// [`Bench::sluice`], the values in Avro when `avro`.
    async fn sluice_with(
        &self,
        name: &str,
        env: &TestEnv,
        plugins: &[&str],
        avro: bool,
        hosts: usize,
        total: i64,
    ) -> anyhow::Result<Measured> {
        let group = unique("g-bench");
        let collection = self.collection("c-bench");
        let config = self.sluice_config(env, &group, &collection, plugins, avro);
        let mut children: Vec<Child> = (0..hosts)
            .map(|i| {
                let (out, err) = log_to(self.work.path(), &format!("{group}-{i}"));
                Command::new(&self.sluice).args(["run", "--config"]).arg(&config).stdout(out).stderr(err).spawn().unwrap()
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        let m = measure(name, &pids, &group, &env.topic, total, Duration::from_secs(900));
        stop(&mut children);
        self.done(&collection).await;
        m
    }

    async fn consume_py(&self, env: &TestEnv, total: i64) -> anyhow::Result<Measured> {
        let group = unique("g-py");
        let collection = self.collection("c-py");
        let (_, err) = log_to(self.work.path(), "consume-py");
        let mut child = Command::new(&self.python)
            .arg(repo().join("bench/consume.py"))
            .env("BENCH_TOPIC", &env.topic)
            .env("BENCH_GROUP", &group)
            .env("BENCH_BROKERS", brokers())
            .env("BENCH_MONGO", mongo_uri())
            .env("BENCH_DATABASE", DATABASE)
            .env("BENCH_COLLECTION", &collection)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("starting consume.py")?;
        let m =
            measure("consume.py (kafka-python, pymongo insert_one)", &[child.id()], &group, &env.topic, total, Duration::from_secs(900));
        stop(std::slice::from_mut(&mut child));
        self.done(&collection).await;
        m
    }

    async fn kafka_connect(&self, env: &TestEnv, total: i64) -> anyhow::Result<Measured> {
        let collection = self.collection("c-connect");
        let name = unique("bench-sink");
        let dir = self.work.path().join(&name);
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::write(
            dir.join("worker.properties"),
            format!(
                "bootstrap.servers={}\nkey.converter=org.apache.kafka.connect.storage.StringConverter\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\nvalue.converter.schemas.enable=false\n\
                 offset.storage.file.filename={}\noffset.flush.interval.ms=1000\nlisteners=http://127.0.0.1:{port}\n",
                brokers(),
                dir.join("offsets").display()
            ),
        )?;
        std::fs::write(
            dir.join("sink.properties"),
            format!(
                "name={name}\nconnector.class=com.mongodb.kafka.connect.MongoSinkConnector\ntasks.max={PARTITIONS}\ntopics={}\n\
                 connection.uri={}\ndatabase={DATABASE}\ncollection={}\nmax.batch.size={BATCH}\nbulk.write.ordered=false\n\
                 document.id.strategy=com.mongodb.kafka.connect.sink.processor.id.strategy.KafkaMetaDataStrategy\n\
                 writemodel.strategy=com.mongodb.kafka.connect.sink.writemodel.strategy.InsertOneDefaultStrategy\n",
                env.topic,
                mongo_uri(),
                collection
            ),
        )?;
        let (out, err) = log_to(&dir, "connect");
        let mut child = Command::new("java")
            .arg(format!("-Dlog4j2.configurationFile={}", repo().join("scripts/kafka/tools-log4j2.properties").display()))
            .arg("-cp")
            .arg(format!("{}/*", self.connect_libs.display()))
            .arg("org.apache.kafka.connect.cli.ConnectStandalone")
            .arg(dir.join("worker.properties"))
            .arg(dir.join("sink.properties"))
            .current_dir(&dir)
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting Kafka Connect (java)")?;
        let m = measure(
            "Kafka Connect + MongoDB sink connector",
            &[child.id()],
            &format!("connect-{name}"),
            &env.topic,
            total,
            Duration::from_secs(900),
        );
        stop(std::slice::from_mut(&mut child));
        self.done(&collection).await;
        m.with_context(|| format!("Kafka Connect log: {}", dir.join("connect.err").display()))
    }

    /// A subcommand of this binary, timing itself; its last stdout line is `messages secs cpu`.
    fn own(&self, name: &str, args: &[&str]) -> anyhow::Result<Measured> {
        let out = Command::new(std::env::current_exe()?).args(args).stderr(Stdio::inherit()).output()?;
        anyhow::ensure!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stdout));
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = text.lines().last().unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
        anyhow::ensure!(f.len() == 5, "{name}: unexpected output {text}");
        Ok(Measured {
            name: name.into(),
            messages: f[0] as u64,
            secs: f[1],
            cpu: f[2],
            kafka_cpu: f[3],
            mongo_cpu: f[4],
            note: String::new(),
        })
    }
}

/// `raw-consume TOPIC N`: drain N messages with a plain rdkafka consumer.
fn raw_consume(topic: &str, n: u64) -> anyhow::Result<()> {
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("g-raw"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let (mut got, mut bytes) = (0u64, 0usize);
    let mut start = None;
    while got < n {
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            let m = m?;
            start.get_or_insert_with(|| (Instant::now(), self_cpu(), services_cpu()));
            bytes += m.payload().map_or(0, <[u8]>::len);
            got += 1;
        }
    }
    let (t0, cpu0, s0) = start.unwrap();
    std::hint::black_box(bytes);
    let s1 = services_cpu();
    println!("{got} {} {} {} {}", t0.elapsed().as_secs_f64(), self_cpu() - cpu0, s1.0 - s0.0, s1.1 - s0.1);
    Ok(())
}

/// `raw-sink COLLECTION TOPIC N`: insert the N documents Sluice writes for the
/// topic, one task per partition, batches of BATCH, unordered, w:1 j:true.
async fn raw_sink(collection: &str, topic: &str, n: u64) -> anyhow::Result<()> {
    use mongodb::bson::{Document, doc};
    use mongodb::options::{Acknowledgment, WriteConcern};
    let client = mongodb::Client::with_uri_str(mongo_uri()).await?;
    let coll = client.database(DATABASE).collection::<Document>(collection);
    let wc = WriteConcern::builder().w(Acknowledgment::Nodes(1)).journal(true).build();
    // Built before the clock starts, as Sluice receives its records.
    let per: Vec<Vec<Document>> = (0..PARTITIONS as u64)
        .map(|p| {
            (0..n).filter(|i| i % PARTITIONS as u64 == p).map(|i| doc! { "num": i as i32, "_id": format!("{topic}:{p}:{i}:0") }).collect()
        })
        .collect();
    let (t0, cpu0, s0) = (Instant::now(), self_cpu(), services_cpu());
    let tasks: Vec<_> = per
        .into_iter()
        .map(|docs| {
            let (coll, wc) = (coll.clone(), wc.clone());
            tokio::spawn(async move {
                for chunk in docs.chunks(BATCH) {
                    coll.insert_many(chunk).ordered(false).write_concern(wc.clone()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let s1 = services_cpu();
    println!("{n} {} {} {} {}", t0.elapsed().as_secs_f64(), self_cpu() - cpu0, s1.0 - s0.0, s1.1 - s0.1);
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("raw-consume") => return raw_consume(&args[1], args[2].parse()?),
        Some("raw-sink") => return raw_sink(&args[1], &args[2], args[3].parse()?).await,
        Some("shadow") => return shadow_cost(env_u64("BENCH_SHADOW_MESSAGES", 1_000_000), env_u64("BENCH_SHADOW_ROUNDS", 3)).await,
        _ => {}
    }
    let n = env_u64("BENCH_MESSAGES", 1_000_000);
    let n_py = env_u64("BENCH_PY_MESSAGES", 20_000);
    let n_scale = env_u64("BENCH_SCALE_MESSAGES", 600_000);
    let bench = Bench {
        sluice: std::env::var("SLUICE_BIN").map(PathBuf::from).unwrap_or_else(|_| repo().join("target/release/sluice")),
        python: PathBuf::from(std::env::var("BENCH_PYTHON").context("BENCH_PYTHON (a python with kafka-python and pymongo)")?),
        connect_libs: PathBuf::from(std::env::var("BENCH_CONNECT_LIBS").context("BENCH_CONNECT_LIBS (Kafka Connect jars)")?),
        work: tempfile::tempdir()?,
        db: mongodb::Client::with_uri_str(mongo_uri()).await?.database(DATABASE),
    };
    anyhow::ensure!(bench.sluice.exists(), "{} is missing: cargo build --release -p sluice", bench.sluice.display());
    let _ = plugin("passthrough");

    eprintln!("[bench] topic of {n} messages, {PARTITIONS} partitions");
    let main_topic = topic("bench", n, 0).await?;
    let total = n as i64;
    let mut rows = Vec::new();
    eprintln!("[bench] raw consume");
    rows.push(bench.own("raw consume (rdkafka BaseConsumer)", &["raw-consume", &main_topic.topic, &n.to_string()])?);
    eprintln!("[bench] raw sink");
    let raw = bench.collection("c-raw");
    rows.push(bench.own(
        "raw sink (mongodb driver, insert_many 500, unordered, w:1 j:true)",
        &["raw-sink", &raw, &main_topic.topic, &n.to_string()],
    )?);
    bench.done(&raw).await;
    for (name, plugins) in [
        ("Sluice, no plugin", &[][..]),
        ("Sluice, passthrough plugin", &["passthrough"][..]),
        ("Sluice, even → enrich plugins", &["even", "enrich"][..]),
        ("Sluice, Rust enrich", &["enrich"][..]),
        ("Sluice, Python enrich", &["enrich-py"][..]),
        ("Sluice, JavaScript enrich", &["enrich-js"][..]),
    ] {
        eprintln!("[bench] {name}");
        rows.push(bench.sluice(name, &main_topic, plugins, 1, total).await?);
    }
    eprintln!("[bench] Kafka Connect");
    rows.push(bench.kafka_connect(&main_topic, total).await?);
    eprintln!("[bench] consume.py on its own topic of {n_py} messages");
    let py_topic = topic("bench-py", n_py, 0).await?;
    rows.push(bench.consume_py(&py_topic, n_py as i64).await?);
    let by = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix)).cloned().unwrap();
    let (raw_sink, none, pass, chain, connect, py) =
        (by("raw sink"), by("Sluice, no plugin"), by("Sluice, passthrough"), by("Sluice, even"), by("Kafka Connect"), by("consume.py"));

    println!("## Throughput and CPU ({n} messages of ~12 bytes, {PARTITIONS} partitions; consume.py: {n_py})\n");
    println!(
        "| system | messages | seconds | messages/s | CPU seconds | CPU µs/message | Kafka broker CPU µs/message | FerretDB CPU µs/message | |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.row());
    }
    println!("\n## Ratios (same run)\n");
    println!("| ratio | value | target |");
    println!("|---|---|---|");
    println!("| Sluice (passthrough) / raw sink, messages/s | {:.2} | ≥ 0.9 |", pass.rate() / raw_sink.rate());
    println!("| Sluice (no plugin) / raw sink, messages/s | {:.2} | |", none.rate() / raw_sink.rate());
    println!("| identity plugin / no plugin, messages/s | {:.2} | ≥ 0.95 |", pass.rate() / none.rate());
    println!("| even → enrich / no plugin, messages/s | {:.2} | |", chain.rate() / none.rate());
    println!("| Sluice (passthrough) / consume.py, messages/s | {:.1} | ≥ 100 |", pass.rate() / py.rate());
    println!("| raw sink / consume.py, messages/s (the most any MongoDB writer gets here) | {:.1} | |", raw_sink.rate() / py.rate());
    println!("| Sluice (passthrough) CPU per message / Kafka Connect's | {:.2} | ≤ 0.5 |", pass.cpu_us() / connect.cpu_us());
    println!("| Sluice (passthrough) CPU per message / consume.py's | {:.3} | |", pass.cpu_us() / py.cpu_us());
    let (rust, enrich_py, enrich_js) = (by("Sluice, Rust enrich"), by("Sluice, Python enrich"), by("Sluice, JavaScript enrich"));
    println!("| Python enrich / Rust enrich, CPU per message | {:.2} | |", enrich_py.cpu_us() / rust.cpu_us());
    println!("| JavaScript enrich / Rust enrich, CPU per message | {:.2} | |", enrich_js.cpu_us() / rust.cpu_us());
    println!("| Sluice (Python enrich) CPU per message / consume.py's | {:.3} | |", enrich_py.cpu_us() / py.cpu_us());

    println!("\n## Avro values: the same {n} messages `{{\"num\": n}}` in Avro (Confluent's wire format, schema registry), no plugin\n");
    println!(
        "| system | messages | seconds | messages/s | CPU seconds | CPU µs/message | Kafka broker CPU µs/message | FerretDB CPU µs/message | |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    eprintln!("[bench] Avro topic of {n} messages");
    let avro = avro_topic("bench-avro", n).await?;
    let avro_row = bench.sluice_with("Sluice, no plugin, Avro values", &avro, &[], true, 1, total).await.context("the Avro run")?;
    println!("{}", none.row());
    println!("{}", avro_row.row());
    println!("\n| ratio | value |\n|---|---|");
    println!("| Avro / JSON, CPU per message (no plugin) | {:.2} |", avro_row.cpu_us() / none.cpu_us());
    println!("| Avro / JSON, messages/s (no plugin) | {:.2} |", avro_row.rate() / none.rate());

    println!("\n## Scaling: Sluice processes in one group ({n_scale} messages, {PARTITIONS} partitions, passthrough)\n");
    println!(
        "| hosts | messages | seconds | messages/s | CPU seconds (all hosts) | CPU µs/message | Kafka broker CPU µs/message | FerretDB CPU µs/message | |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let scale_topic = topic("bench-scale", n_scale, 0).await?;
    for hosts in 1..=3 {
        eprintln!("[bench] {hosts} host(s)");
        let mut m = bench.sluice(&hosts.to_string(), &scale_topic, &["passthrough"], hosts, n_scale as i64).await?;
        m.note = String::new();
        println!("{}", m.row());
    }

    println!("\n## CPU per message by message size (1 host, passthrough)\n");
    println!(
        "| message size | messages | seconds | messages/s | CPU seconds | CPU µs/message | Kafka broker CPU µs/message | FerretDB CPU µs/message | MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut topics = vec![main_topic.topic.clone(), py_topic.topic.clone(), scale_topic.topic.clone(), avro.topic.clone()];
    for (size, count) in [(100usize, n_scale), (1000, n_scale / 2), (10_000, n_scale / 10)] {
        eprintln!("[bench] {size}-byte messages");
        let t = topic(&format!("bench-{size}b"), count, size).await?;
        topics.push(t.topic.clone());
        let mut m = bench.sluice(&format!("{size} B"), &t, &["passthrough"], 1, count as i64).await?;
        m.note = format!("{:.1}", m.rate() * size as f64 / 1e6);
        println!("{}", m.row());
    }
    // The topics go too (and their dead-letter topics).
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create()?;
    topics.extend(topics.iter().map(|t| format!("{t}.dlq")).collect::<Vec<_>>());
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
    Ok(())
}

/// `bench-e2e shadow` (scripts/bench-rollout): what a shadow run costs the
/// host. Each run: a fresh topic, a host (live plugin `passthrough`) started
/// on it, then (except for the baseline) a shadow rollout of a candidate that
/// does the same work (`tenths`: passthrough that marks every tenth number),
/// then `n` messages produced and the host measured as in the main bench. The
/// three settings are interleaved over `rounds`, on one machine in one run.
async fn shadow_cost(n: u64, rounds: u64) -> anyhow::Result<()> {
    let bench = Bench {
        sluice: std::env::var("SLUICE_BIN").map(PathBuf::from).unwrap_or_else(|_| repo().join("target/release/sluice")),
        python: PathBuf::new(),
        connect_libs: PathBuf::new(),
        work: tempfile::tempdir()?,
        db: mongodb::Client::with_uri_str(mongo_uri()).await?.database(DATABASE),
    };
    anyhow::ensure!(bench.sluice.exists(), "{} is missing: cargo build --release -p sluice", bench.sluice.display());
    let candidate = std::fs::read(sluice_tests::hostile("tenths"))?;
    let settings: [(&str, Option<f64>); 3] = [("no rollout", None), ("shadow 10%", Some(0.1)), ("shadow 100%", Some(1.0))];
    let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); settings.len()];
    for round in 0..rounds {
        for (i, (name, share)) in settings.iter().enumerate() {
            eprintln!("[bench] round {} of {rounds}: {name}", round + 1);
            runs[i].push(bench.shadow_run(name, *share, &candidate, n).await.with_context(|| format!("the run {name}"))?);
        }
    }
    println!(
        "## Shadow runs: the host's CPU ({n} messages `{{\"num\": n}}` per run, {PARTITIONS} partitions, live plugin passthrough, {rounds} rounds interleaved)\n"
    );
    println!(
        "| run | messages | seconds | messages/s | CPU seconds | CPU µs/message | Kafka broker CPU µs/message | FerretDB CPU µs/message | shadowed records (candidate time each, as the host measures it) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in runs.iter().flatten() {
        println!("{}", r.row());
    }
    let cpu = |i: usize| runs[i].iter().map(|m| m.cpu).sum::<f64>() / runs[i].iter().map(|m| m.messages as f64).sum::<f64>() * 1e6;
    println!("\n| ratio (CPU µs/message over all rounds) | value |\n|---|---|");
    println!("| shadow 10% / no rollout | {:.2} |", cpu(1) / cpu(0));
    println!("| shadow 100% / no rollout | {:.2} |", cpu(2) / cpu(0));
    println!("| extra CPU per message, shadow 100% | {:.2} µs |", cpu(2) - cpu(0));
    println!("| extra CPU per message, shadow 10% | {:.2} µs |", cpu(1) - cpu(0));
    Ok(())
}

impl Bench {
    /// One run of [`shadow_cost`]: `share` of the batches shadowed by `candidate` (`None`: no rollout).
    async fn shadow_run(&self, name: &str, share: Option<f64>, candidate: &[u8], n: u64) -> anyhow::Result<Measured> {
        let env = TestEnv::new("bench-shadow");
        env.create_topic(PARTITIONS).await?;
        let group = unique("g-shadow");
        let collection = self.collection("c-shadow");
        let config = self.sluice_config(&env, &group, &collection, &["passthrough"], false);
        let (out, err) = log_to(self.work.path(), &group);
        let mut child = Command::new(&self.sluice).args(["run", "--config"]).arg(&config).stdout(out).stderr(err).spawn()?;
        let log = self.work.path().join(format!("{group}.err"));
        let http = reqwest::Client::new();
        // Its admin API (logged), then ready (its partitions assigned).
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text.split_whitespace().find_map(|w| w.strip_prefix("url=")) {
                break url.trim_matches('"').to_owned();
            }
            anyhow::ensure!(Instant::now() < deadline, "the host never served its admin API: {}", log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        while http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
            anyhow::ensure!(Instant::now() < deadline, "the host never got ready: {}", log.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(share) = share {
            let url = format!("{base}/rollouts?plugin=passthrough&mode=shadow&share={share}");
            let resp = http.post(url).body(candidate.to_vec()).send().await?;
            anyhow::ensure!(resp.status().is_success(), "starting the shadow run: {}", resp.text().await?);
        }
        let pid = child.id();
        let (group2, topic2, name2) = (group.clone(), env.topic.clone(), name.to_owned());
        let measuring = tokio::task::spawn_blocking(move || measure(&name2, &[pid], &group2, &topic2, n as i64, Duration::from_secs(900)));
        let mut opts = sluice::produce::ProduceOptions::numbers(&brokers(), &env.topic, 0, n);
        opts.partitions = PARTITIONS;
        let sent = sluice::produce::produce(&opts).await?;
        anyhow::ensure!(sent == n, "sent {sent} of {n}");
        let m = measuring.await?;
        // The host's own measure of the candidate's time, per shadowed record.
        let shadowed = match share {
            Some(_) => {
                let v: serde_json::Value = serde_json::from_str(&http.get(format!("{base}/rollouts")).send().await?.text().await?)?;
                let records = v["current"]["records"].as_u64().unwrap_or(0);
                let ms = v["current"]["candidate_cpu_ms"].as_f64().unwrap_or(0.0);
                format!("{records} ({:.2} µs each)", ms * 1000.0 / records.max(1) as f64)
            }
            None => "0".into(),
        };
        stop(std::slice::from_mut(&mut child));
        self.done(&collection).await;
        let mut m = m?;
        m.note = shadowed;
        Ok(m)
    }
}
