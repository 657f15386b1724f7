//! [`ProgressWatch`]: the promise behind both stores of progress, sampled while
//! a test runs. Every ~200 ms (less often as the documents grow) it reads
//! Kafka's committed offsets of the group, then MongoDB's progress
//! (`sluice_offsets`), then which documents exist; per
//! partition, every offset below the larger of the two stores must have its
//! document (read after the offsets, so a document written since only helps).
//! A store that ran ahead of MongoDB's acknowledgement shows up as a gap.
//!
//! It needs one document per record (the passthrough-like plugins the fault
//! and hot-swap tests run) and pauses while MongoDB is stopped on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::{DATABASE, TestEnv, brokers, mongo_uri};

/// Per partition, an offset.
pub type Offsets = BTreeMap<i32, i64>;

/// A background sampler of one [`TestEnv`]'s two progress stores against its documents.
pub struct ProgressWatch {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// Held while a sample is taken.
    busy: Arc<tokio::sync::Mutex<()>>,
    task: Option<tokio::task::JoinHandle<Report>>,
    reader: Arc<Reader>,
}

/// What a watch saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Samples with every store at or below the documents.
    pub samples: usize,
    /// Samples where a store was ahead: (partition, Kafka committed, MongoDB progress, first missing offset).
    pub violations: Vec<(i32, i64, i64, i64)>,
    /// Errors reading a store (the services being restarted): not samples.
    pub errors: usize,
}

/// What a sample reads: the topic's committed offsets (one consumer kept), progress and documents.
pub struct Reader {
    topic: String,
    group: String,
    collection: String,
    partitions: i32,
    consumer: std::sync::Mutex<BaseConsumer>,
}

impl Reader {
    fn new(env: &TestEnv, partitions: i32) -> Reader {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &env.group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("the watching consumer");
        Reader {
            topic: env.topic.clone(),
            group: env.group.clone(),
            collection: env.collection.clone(),
            partitions,
            consumer: std::sync::Mutex::new(consumer),
        }
    }

    /// Kafka's committed offsets of the group (-1: none).
    pub fn committed(&self) -> anyhow::Result<Offsets> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let c = self.consumer.lock().unwrap().committed_offsets(tpl, Duration::from_secs(5))?;
        Ok(c.elements().iter().map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 })).collect())
    }

    /// MongoDB's progress (next offset) per partition.
    pub async fn progress(&self, client: &mongodb::Client) -> anyhow::Result<Offsets> {
        let coll = client.database(DATABASE).collection::<Document>(sluice::progress::DEFAULT_COLLECTION);
        let docs: Vec<Document> = coll.find(doc! { "group": &self.group, "topic": &self.topic }).await?.try_collect().await?;
        Ok(docs
            .iter()
            .filter(|d| d.contains_key("next_offset"))
            .map(|d| (crate::int(d, "partition") as i32, crate::int(d, "next_offset")))
            .collect())
    }

    /// Per partition, the first offset without a document (the documents' derived ids).
    pub async fn first_missing(&self, client: &mongodb::Client) -> anyhow::Result<Offsets> {
        let coll = client.database(DATABASE).collection::<Document>(&self.collection);
        let docs: Vec<Document> = coll.find(doc! {}).projection(doc! { "_id": 1 }).await?.try_collect().await?;
        let mut have: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for d in &docs {
            if let Some((_, p, o, _)) = d.get_str("_id").ok().and_then(sluice::record::parse_derived_id) {
                have.entry(p).or_default().insert(o);
            }
        }
        Ok((0..self.partitions)
            .map(|p| {
                let set = have.remove(&p).unwrap_or_default();
                let first = set.iter().zip(0..).find(|(o, i)| **o != *i).map_or(set.len() as i64, |(_, i)| i);
                (p, first)
            })
            .collect())
    }

    /// One sample: the stores first, then the documents.
    async fn sample(&self, client: &mongodb::Client, report: &mut Report) -> anyhow::Result<()> {
        let committed = tokio::task::block_in_place(|| self.committed())?;
        let progress = self.progress(client).await?;
        let missing = self.first_missing(client).await?;
        for p in 0..self.partitions {
            let (c, g) = (committed.get(&p).copied().unwrap_or(-1), progress.get(&p).copied().unwrap_or(-1));
            if c.max(g) > missing[&p] {
                report.violations.push((p, c, g, missing[&p]));
            }
        }
        report.samples += 1;
        Ok(())
    }
}

impl ProgressWatch {
    /// Start sampling `env`'s topic of `partitions` partitions.
    pub fn start(env: &TestEnv, partitions: i32) -> ProgressWatch {
        let reader = Arc::new(Reader::new(env, partitions));
        let (stop, paused) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let busy = Arc::new(tokio::sync::Mutex::new(()));
        let task = tokio::spawn({
            let (reader, stop, paused, busy) = (reader.clone(), stop.clone(), paused.clone(), busy.clone());
            async move {
                let client = mongodb::Client::with_uri_str(mongo_uri()).await.expect("mongo client");
                let mut report = Report::default();
                while !stop.load(Ordering::Relaxed) {
                    let _busy = busy.lock().await;
                    let started = std::time::Instant::now();
                    if !paused.load(Ordering::Relaxed) {
                        let r = tokio::time::timeout(Duration::from_secs(10), reader.sample(&client, &mut report)).await;
                        if !matches!(r, Ok(Ok(()))) {
                            report.errors += 1;
                        }
                    }
                    drop(_busy);
                    // Reading every document gets slower as they grow: the watch keeps to about
                    // a quarter of the time, so that it does not slow the run it watches.
                    tokio::time::sleep(Duration::from_millis(200).max(started.elapsed() * 3)).await;
                }
                report
            }
        });
        ProgressWatch { stop, paused, busy, task: Some(task), reader }
    }

    /// The reader, for samples a test takes itself (e.g. while MongoDB is down).
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Stop sampling (MongoDB about to be stopped; returns once a sample under way is done) or start again.
    pub async fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        drop(self.busy.lock().await);
    }

    /// Stop and assert: at least `min_samples` were taken (reading every document
    /// takes seconds on a loaded machine: few, but each a full check) and none
    /// found a store ahead of the documents.
    pub async fn finish(mut self, min_samples: usize) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.task.take().unwrap().await.expect("the watch task");
        assert!(report.violations.is_empty(), "a progress store ran ahead of the documents: {:?}", report.violations);
        assert!(report.samples >= min_samples, "only {} samples ({} errors)", report.samples, report.errors);
        report
    }
}

impl Drop for ProgressWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
