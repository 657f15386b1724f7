//! Progress kept in the sink: the next offset to consume per (group, topic,
//! partition), written to a MongoDB collection by each partition worker at most
//! once per `pipeline.progress_interval` (1 s) and when the partition is released.
//!
//! On assignment the consumer starts each partition at the later of Kafka's
//! committed offset and the one stored here. So a crash replays at most about
//! the last interval (idempotently), and Kafka offsets that expired (or a group
//! that was deleted, or a commit lost in a broker restart) do not rewind the pipeline. The stored value only
//! grows (`$max`), so a late writer from a revoked partition cannot move it back.
//!
//! Each document also keeps an `intent`: an offset no write has gone past,
//! saved (ahead, by a margin) before a worker writes beyond it. On assignment,
//! records from the start up to the intent may have been written already (by
//! an owner that crashed, possibly under another plugin version): the worker
//! removes the derived-id documents of those records that its version no longer
//! makes, so every record's documents come from one version.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

/// Default name of the progress collection (in the configured database).
pub const DEFAULT_COLLECTION: &str = crate::config::DEFAULT_OFFSETS_COLLECTION;

#[derive(Clone)]
pub struct Progress {
    coll: Collection<Document>,
    group: String,
    write_concern: WriteConcern,
}

impl Progress {
    pub fn new(db: &Database, collection: &str, group: &str, write_concern: WriteConcern) -> Progress {
        Progress { coll: db.collection(collection), group: group.to_owned(), write_concern }
    }

    fn id(&self, topic: &str, partition: i32) -> String {
        format!("{}/{}/{}", self.group, topic, partition)
    }

    /// What every save sets besides its offset (the topic's id when known).
    fn identity(&self, topic: &str, partition: i32, topic_id: Option<&str>) -> Document {
        let mut set = doc! { "group": &self.group, "topic": topic, "partition": partition };
        if let Some(id) = topic_id {
            set.insert("topic_id", id);
        }
        set
    }

    /// Update (or create) a partition's progress document.
    async fn upsert(&self, topic: &str, partition: i32, update: Document) -> mongodb::error::Result<()> {
        self.coll
            .update_one(doc! { "_id": self.id(topic, partition) }, update)
            .upsert(true)
            .write_concern(self.write_concern.clone())
            .await
            .map(|_| ())
    }

    /// Record that everything before `next_offset` is written.
    pub async fn save(&self, topic: &str, partition: i32, next_offset: i64, topic_id: Option<&str>) -> mongodb::error::Result<()> {
        self.upsert(topic, partition, doc! { "$max": { "next_offset": next_offset }, "$set": self.identity(topic, partition, topic_id) })
            .await
    }

    /// Record that no write will go past `intent` until a later intent is saved.
    /// `chain` (the running plugin versions, `name@version,…`) joins the
    /// versions that may have written below the intent; `fresh`: it is the only one.
    pub async fn save_intent(
        &self,
        topic: &str,
        partition: i32,
        intent: i64,
        topic_id: Option<&str>,
        chain: &str,
        fresh: bool,
    ) -> mongodb::error::Result<()> {
        let mut set = self.identity(topic, partition, topic_id);
        let mut update = doc! { "$max": { "intent": intent } };
        if fresh {
            set.insert("chains", vec![chain]);
        } else {
            update.insert("$addToSet", doc! { "chains": chain });
        }
        update.insert("$set", set);
        self.upsert(topic, partition, update).await
    }

    /// At a clean release (every write done): bring the intent back from `from`
    /// to `to`, the next offset, unless another owner has moved it meanwhile.
    /// The next owner then has no replay window to clean.
    /// `done`: nothing is left below the intent to replay (the versions are forgotten).
    pub async fn settle_intent(&self, topic: &str, partition: i32, from: i64, to: i64, done: bool) -> mongodb::error::Result<()> {
        let mut set = doc! { "intent": to };
        if done {
            set.insert("chains", Vec::<String>::new());
        }
        self.coll
            .update_one(doc! { "_id": self.id(topic, partition), "intent": from }, doc! { "$set": set })
            .write_concern(self.write_concern.clone())
            .await
            .map(|_| ())
    }

    /// Stored next offsets of these partitions (absent ones are missing from the map).
    pub async fn load(&self, parts: &[(String, i32)]) -> mongodb::error::Result<HashMap<(String, i32), i64>> {
        Ok(self.load_stored(parts).await?.into_iter().filter_map(|(k, s)| Some((k, s.next_offset?))).collect())
    }

    /// What is stored of these partitions (absent ones are missing from the map).
    pub async fn load_stored(&self, parts: &[(String, i32)]) -> mongodb::error::Result<HashMap<(String, i32), Stored>> {
        let ids: Vec<Bson> = parts.iter().map(|(t, p)| Bson::String(self.id(t, *p))).collect();
        let docs: Vec<Document> = self.coll.find(doc! { "_id": { "$in": ids } }).await?.try_collect().await?;
        let mut out = HashMap::new();
        for d in docs {
            let (Ok(t), Some(p)) = (d.get_str("topic"), int(d.get("partition"))) else {
                tracing::warn!("ignoring malformed progress document {d}");
                continue;
            };
            // A document of an earlier release has no intent; one saved only an intent has no next offset yet.
            let stored = Stored {
                next_offset: int(d.get("next_offset")),
                intent: int(d.get("intent")),
                topic_id: d.get_str("topic_id").ok().map(str::to_owned),
                chains: d.get_array("chains").map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()).unwrap_or_default(),
            };
            out.insert((t.to_owned(), p as i32), stored);
        }
        Ok(out)
    }

    /// Move the stored next offset to `next_offset`, back or forth (`sluice
    /// offsets set`). A rewind keeps the intent at least where the progress
    /// was, so the records written again are replays that clean up after
    /// themselves.
    pub async fn set(&self, topic: &str, partition: i32, next_offset: i64, written_until: Option<i64>) -> mongodb::error::Result<()> {
        let mut update = doc! {
            "$set": { "next_offset": next_offset, "group": &self.group, "topic": topic, "partition": partition },
        };
        if let Some(w) = written_until {
            update.insert("$max", doc! { "intent": w });
        }
        self.upsert(topic, partition, update).await
    }

    /// Start a partition's progress over for a new incarnation of its topic
    /// (deleted and created again): no next offset, the new topic id, and an
    /// intent covering what the old incarnation wrote (its derived ids are
    /// those the new records get: they are replaced, not taken for replays).
    pub async fn renew(&self, topic: &str, partition: i32, topic_id: &str, written_until: i64) -> mongodb::error::Result<()> {
        let mut d = self.identity(topic, partition, Some(topic_id));
        d.insert("intent", written_until);
        self.coll
            .replace_one(doc! { "_id": self.id(topic, partition) }, d)
            .upsert(true)
            .write_concern(self.write_concern.clone())
            .await
            .map(|_| ())
    }

    /// Forget this group's progress (used by `sluice reset`).
    pub async fn forget_group(&self) -> mongodb::error::Result<u64> {
        Ok(self.coll.delete_many(doc! { "group": &self.group }).await?.deleted_count)
    }
}

pub use crate::record::Stored;

fn int(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}
