//! `sluice produce`: the tutorial's producer. Sends `{"num": n}` for n in
//! `start..start+count` to a topic, creating it first with the requested number of
//! partitions if it does not exist. Fast by default (batched, asynchronous
//! delivery); `interval` paces it like the tutorial.

use std::time::Duration;

use anyhow::{Context as _, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub brokers: String,
    pub topic: String,
    pub count: u64,
    pub start: u64,
    /// Pause between messages (zero: as fast as possible).
    pub interval: Duration,
    /// At most this many messages per second (zero: no limit).
    pub rate: u64,
    /// Partitions for the topic if it has to be created.
    pub partitions: i32,
}

/// Create `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating the Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
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

/// Send the numbers; returns once every message is acknowledged by the broker.
pub async fn produce(o: &ProduceOptions) -> anyhow::Result<u64> {
    ensure_topic(&o.brokers, &o.topic, o.partitions).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &o.brokers)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .context("creating the Kafka producer")?;
    let mut pending = futures::stream::FuturesUnordered::new();
    let started = tokio::time::Instant::now();
    let mut sent = 0u64;
    use futures::StreamExt;
    for n in o.start..o.start + o.count {
        let payload = format!("{{\"num\":{n}}}");
        let record: FutureRecord<'_, (), String> = FutureRecord::to(&o.topic).payload(&payload);
        let fut = producer.send_result(record).map_err(|(e, _)| anyhow::anyhow!("queueing message {n}: {e}"))?;
        pending.push(fut);
        while pending.len() >= 10_000 {
            check(pending.next().await)?;
            sent += 1;
        }
        if o.rate > 0 {
            // Pace in 10 ms steps: after k messages, wait until k / rate seconds have passed.
            let sent_so_far = n - o.start + 1;
            if sent_so_far.is_multiple_of((o.rate / 100).max(1)) {
                let due = started + Duration::from_secs_f64(sent_so_far as f64 / o.rate as f64);
                tokio::time::sleep_until(due).await;
            }
        }
        if !o.interval.is_zero() {
            while let Some(r) = futures::FutureExt::now_or_never(pending.next()).flatten() {
                check(Some(r))?;
                sent += 1;
            }
            tokio::time::sleep(o.interval).await;
        }
    }
    while let Some(r) = pending.next().await {
        check(Some(r))?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
    Ok(sent)
}

type Delivery = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

fn check(r: Option<Delivery>) -> anyhow::Result<()> {
    match r {
        Some(Ok(Ok(_))) => Ok(()),
        Some(Ok(Err((e, _)))) => bail!("message not delivered: {e}"),
        Some(Err(_)) => bail!("producer dropped a message"),
        None => Ok(()),
    }
}
