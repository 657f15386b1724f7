//! `sluice produce`: the tutorial's producer. Sends `{"num": n}` for n in
//! `start..start+count` to a topic, or JSON lines from a file or standard input,
//! creating the topic first with the requested number of partitions if it does
//! not exist. A key can come from a field of each value, and headers can be
//! added. Fast by default (batched, asynchronous delivery); `interval` and
//! `rate` pace it. The Kafka client settings (brokers, TLS, SASL) come from the
//! caller: `sluice produce --config` takes a config's [`KafkaConfig::client_config`].
//!
//! [`KafkaConfig::client_config`]: crate::config::KafkaConfig::client_config

use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Not `Debug`: the client config may hold a SASL password.
#[derive(Clone)]
pub struct ProduceOptions {
    /// `bootstrap.servers` and the connection and security settings.
    pub client: ClientConfig,
    pub topic: String,
    pub count: u64,
    pub start: u64,
    /// Pause between messages (zero: as fast as possible).
    pub interval: Duration,
    /// At most this many messages per second (zero: no limit).
    pub rate: u64,
    /// Partitions for the topic if it has to be created.
    pub partitions: i32,
    /// Send these JSON lines (a file, or `-` for standard input) instead of the numbers.
    pub input: Option<std::path::PathBuf>,
    /// The key of each message: this field of its JSON value (strings as they are, other values as JSON).
    pub key_field: Option<String>,
    /// Headers added to every message.
    pub headers: Vec<(String, String)>,
    /// Turns each line into the message's bytes (e.g. Avro in Confluent's wire format); `None`: as it is.
    pub encode: Option<Encode>,
}

/// A message's text to its bytes; `Err` says why the line cannot be sent.
pub type Encode = std::sync::Arc<dyn Fn(&str) -> Result<Vec<u8>, String> + Send + Sync>;

impl ProduceOptions {
    /// The tutorial's numbers: `{"num": n}` for n in `start..start+count`.
    pub fn numbers(brokers: &str, topic: &str, start: u64, count: u64) -> ProduceOptions {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", brokers);
        ProduceOptions {
            client,
            topic: topic.into(),
            count,
            start,
            interval: Duration::ZERO,
            rate: 0,
            partitions: 1,
            input: None,
            key_field: None,
            headers: Vec::new(),
            encode: None,
        }
    }
}

/// Create `topic` with `partitions` partitions unless it exists, with the
/// broker's default replication factor (`default.replication.factor`; -1 asks
/// for it, KIP-464, brokers since 2.4). `client`: the brokers and their security settings.
pub async fn ensure_topic(client: &ClientConfig, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let brokers = client.get("bootstrap.servers").unwrap_or("(no bootstrap.servers)");
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(crate::config::redact_kafka_error).context("creating the Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&new], &opts).await.with_context(|| format!("creating topic {topic} on {brokers}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => bail!("creating topic {t} on {brokers}: {code}"),
        }
    }
    Ok(())
}

/// Send the messages; returns once every one is acknowledged by the broker.
pub async fn produce(o: &ProduceOptions) -> anyhow::Result<u64> {
    produce_with_progress(o, |_| {}).await
}

/// [`produce`], calling `progress` with the number acknowledged so far: every
/// 1000 acknowledgements, before each pause (`rate`, `interval`) and whenever
/// the last ones arrive, so the count moves however few messages are sent.
pub async fn produce_with_progress(o: &ProduceOptions, progress: impl Fn(u64)) -> anyhow::Result<u64> {
    ensure_topic(&o.client, &o.topic, o.partitions).await?;
    let producer: FutureProducer = o
        .client
        .clone()
        .set("linger.ms", "5")
        // Keyless messages spread over the partitions one by one (librdkafka's default sticks
        // to one partition per 10 ms: a fast run lands nearly all in one).
        .set("sticky.partitioning.linger.ms", "0")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .map_err(crate::config::redact_kafka_error)
        .context("creating the Kafka producer")?;
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut acks = Acks { sent: 0, reported: 0, progress };
    let started = tokio::time::Instant::now();
    use futures::StreamExt;
    let mut headers = rdkafka::message::OwnedHeaders::new();
    for (k, v) in &o.headers {
        headers = headers.insert(rdkafka::message::Header { key: k, value: Some(v) });
    }
    let mut lines = match &o.input {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdin().lock()) as Box<dyn std::io::BufRead>),
        Some(p) => Some(Box::new(std::io::BufReader::new(std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?))
            as Box<dyn std::io::BufRead>),
    };
    let mut line = String::new();
    let mut n = o.start;
    loop {
        let payload = match &mut lines {
            None if n >= o.start + o.count => break,
            None => format!("{{\"num\":{n}}}"),
            Some(reader) => {
                line.clear();
                if reader.read_line(&mut line).context("reading the input")? == 0 {
                    break;
                }
                if line.trim().is_empty() {
                    continue;
                }
                line.trim_end_matches(['\n', '\r']).to_owned()
            }
        };
        let key = match &o.key_field {
            None => None,
            Some(field) => {
                let v: serde_json::Value = serde_json::from_str(&payload)
                    .with_context(|| format!("message {}: not JSON, so no key field `{field}`", n - o.start + 1))?;
                match v.get(field) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => Some(other.to_string()),
                    None => bail!("message {}: no field `{field}` for the key in {payload}", n - o.start + 1),
                }
            }
        };
        let payload: Vec<u8> = match &o.encode {
            None => payload.into_bytes(),
            Some(encode) => encode(&payload).map_err(|e| anyhow::anyhow!("message {}: {e}", n - o.start + 1))?,
        };
        let mut record: FutureRecord<'_, String, Vec<u8>> = FutureRecord::to(&o.topic).payload(&payload);
        if let Some(k) = &key {
            record = record.key(k);
        }
        if !o.headers.is_empty() {
            record = record.headers(headers.clone());
        }
        let fut = producer.send_result(record).map_err(|(e, _)| anyhow::anyhow!("queueing message {}: {e}", n - o.start + 1))?;
        pending.push(fut);
        n += 1;
        // Count what has been delivered meanwhile, without waiting (a poll, no system call).
        while let Some(r) = futures::FutureExt::now_or_never(pending.next()).flatten() {
            acks.ack(r)?;
        }
        acks.report(false);
        while pending.len() >= 10_000 {
            acks.ack(pending.next().await.expect("pending deliveries"))?;
            acks.report(false);
        }
        if o.rate > 0 {
            // Pace in 10 ms steps: after k messages, wait until k / rate seconds have passed.
            let sent_so_far = n - o.start;
            if sent_so_far.is_multiple_of((o.rate / 100).max(1)) {
                acks.report(true);
                let due = started + Duration::from_secs_f64(sent_so_far as f64 / o.rate as f64);
                tokio::time::sleep_until(due).await;
            }
        }
        if !o.interval.is_zero() {
            acks.report(true);
            tokio::time::sleep(o.interval).await;
        }
    }
    while let Some(r) = pending.next().await {
        acks.ack(r)?;
        while let Some(r) = futures::FutureExt::now_or_never(pending.next()).flatten() {
            acks.ack(r)?;
        }
        // One report per wake-up: the acknowledgements that arrived together.
        acks.report(true);
    }
    producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
    Ok(acks.sent)
}

type Delivery = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

/// Acknowledged messages, and how many of them `progress` has been told about.
struct Acks<F> {
    sent: u64,
    reported: u64,
    progress: F,
}

impl<F: Fn(u64)> Acks<F> {
    fn ack(&mut self, r: Delivery) -> anyhow::Result<()> {
        match r {
            Ok(Ok(_)) => self.sent += 1,
            Ok(Err((e, _))) => bail!("message not delivered: {e}"),
            Err(_) => bail!("producer dropped a message"),
        }
        Ok(())
    }

    /// Tell `progress` about new acknowledgements: with `now`, any; else once 1000 more arrived.
    fn report(&mut self, now: bool) {
        if self.sent > self.reported && (now || self.sent - self.reported >= 1000) {
            (self.progress)(self.sent);
            self.reported = self.sent;
        }
    }
}
