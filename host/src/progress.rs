//! Progress kept in the sink: the next offset to consume per (group, topic,
//! partition), written to a MongoDB collection by each partition worker at most
//! once per `pipeline.progress_interval` (1 s) and when the partition is released.
//!
//! On assignment the consumer starts each partition at the later of Kafka's
//! committed offset and the one stored here. So a crash replays at most about
//! the last interval (idempotently), and Kafka offsets that expired (or a group
//! that was deleted, or a commit lost in a broker restart) do not rewind the pipeline. The stored value only
//! grows (`$max`), so a late writer from a revoked partition cannot move it back.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::WriteConcern;
use mongodb::{Collection, Database};

/// Default name of the progress collection (in the configured database).
pub const DEFAULT_COLLECTION: &str = "sluice_offsets";

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

    /// Record that everything before `next_offset` is written.
    pub async fn save(&self, topic: &str, partition: i32, next_offset: i64) -> mongodb::error::Result<()> {
        self.coll
            .update_one(
                doc! { "_id": self.id(topic, partition) },
                doc! {
                    "$max": { "next_offset": next_offset },
                    "$set": { "group": &self.group, "topic": topic, "partition": partition },
                },
            )
            .upsert(true)
            .write_concern(self.write_concern.clone())
            .await
            .map(|_| ())
    }

    /// Stored next offsets of these partitions (absent ones are missing from the map).
    pub async fn load(&self, parts: &[(String, i32)]) -> mongodb::error::Result<HashMap<(String, i32), i64>> {
        let ids: Vec<Bson> = parts.iter().map(|(t, p)| Bson::String(self.id(t, *p))).collect();
        let docs: Vec<Document> = self.coll.find(doc! { "_id": { "$in": ids } }).await?.try_collect().await?;
        let mut out = HashMap::new();
        for d in docs {
            let (Ok(t), Some(p), Some(o)) = (d.get_str("topic"), int(d.get("partition")), int(d.get("next_offset"))) else {
                tracing::warn!("ignoring malformed progress document {d}");
                continue;
            };
            out.insert((t.to_owned(), p as i32), o);
        }
        Ok(out)
    }

    /// Forget this group's progress (used by `sluice reset`).
    pub async fn forget_group(&self) -> mongodb::error::Result<u64> {
        Ok(self.coll.delete_many(doc! { "group": &self.group }).await?.deleted_count)
    }
}

fn int(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(n) => Some(*n as i64),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}
