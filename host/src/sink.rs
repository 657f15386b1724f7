//! The MongoDB writer.
//!
//! A batch of [`WriteOp`]s is written in order, as runs of the same kind:
//! inserts as one unordered `insertMany` per collection, upserts as
//! `replaceOne(upsert)`, deletes as `deleteOne`, so per-partition order holds where
//! it matters (an upsert then a delete of one `_id`). A duplicate-key error on an
//! insert means the document is already there (a replay after a crash): it counts
//! as written. Other per-document errors are rejections (bad document); anything
//! else (network, not primary, timeout, write concern) is transient and retried by
//! the caller.

use std::time::Duration;

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use mongodb::{Client, Collection, Database};

use crate::config::{MongoConfig, WriteAck, redact_uri};

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Upsert,
    Delete,
}

/// One document to write, as BSON bytes (what the driver sends as it is).
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub op: Op,
    /// `None`: the configured collection.
    pub collection: Option<String>,
    pub doc: RawDocumentBuf,
}

impl WriteOp {
    /// An op on the configured collection from a [`Document`].
    pub fn new(op: Op, doc: &Document) -> WriteOp {
        WriteOp { op, collection: None, doc: RawDocumentBuf::from_document(doc).expect("a document encodes as BSON") }
    }
}

/// What a batch write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    pub inserted: u64,
    /// Inserts that found their `_id` already stored (replays).
    pub duplicates: u64,
    pub upserted: u64,
    pub deleted: u64,
}

/// A document the server refused; retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Index into the batch given to [`Sink::write`].
    pub index: usize,
    pub code: i32,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot connect to MongoDB at {uri}: {message}")]
    Connect { uri: String, message: String },
    /// Worth retrying: network, election, timeout, write concern.
    #[error("MongoDB write failed (will retry): {0}")]
    Transient(mongodb::error::Error),
    /// Some documents were refused; the others in the batch are written (`report`).
    #[error("MongoDB refused {} document(s): {}", .rejections.len(), .rejections.first().map(|r| r.message.as_str()).unwrap_or(""))]
    Rejected { rejections: Vec<Rejection>, report: WriteReport },
}

/// A connected MongoDB writer. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Sink {
    db: Database,
    default_collection: String,
    write_concern: WriteConcern,
}

impl Sink {
    /// Connect and check the server answers within `connect_timeout`.
    pub async fn connect(cfg: &MongoConfig) -> Result<Sink, SinkError> {
        let uri = redact_uri(&cfg.uri);
        let connect_err = |e: &dyn std::fmt::Display| SinkError::Connect { uri: uri.clone(), message: e.to_string() };
        let mut options = ClientOptions::parse(&cfg.uri).await.map_err(|e| connect_err(&e))?;
        options.server_selection_timeout.get_or_insert(cfg.connect_timeout);
        options.connect_timeout.get_or_insert(cfg.connect_timeout);
        options.app_name.get_or_insert_with(|| "sluice".into());
        let client = Client::with_options(options).map_err(|e| connect_err(&e))?;
        let db = client.database(&cfg.database);
        tokio::time::timeout(cfg.connect_timeout + Duration::from_secs(1), db.run_command(doc! { "ping": 1 }))
            .await
            .map_err(|_| connect_err(&format!("no answer within {:?}", cfg.connect_timeout)))?
            .map_err(|e| connect_err(&e))?;
        let wc = &cfg.write_concern;
        let w = match &wc.w {
            WriteAck::Nodes(n) => Acknowledgment::Nodes(*n),
            WriteAck::Tag(t) if t == "majority" => Acknowledgment::Majority,
            WriteAck::Tag(t) => Acknowledgment::Custom(t.clone()),
        };
        let write_concern = WriteConcern::builder().w(w).journal(wc.journal).w_timeout(wc.timeout).build();
        Ok(Sink { db, default_collection: cfg.collection.clone(), write_concern })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The progress store of `group` in `collection`, with this sink's write concern.
    pub fn progress(&self, collection: &str, group: &str) -> crate::progress::Progress {
        crate::progress::Progress::new(&self.db, collection, group, self.write_concern.clone())
    }

    fn collection(&self, name: Option<&str>) -> Collection<RawDocumentBuf> {
        self.db.collection(name.unwrap_or(&self.default_collection))
    }

    /// Write `ops` in order. `Ok` means every op is acknowledged (or was already
    /// there). `Rejected` lists refused documents; every other op was written.
    pub async fn write(&self, ops: &[WriteOp]) -> Result<WriteReport, SinkError> {
        let mut report = WriteReport::default();
        let mut rejected = Vec::new();
        let mut start = 0;
        while start < ops.len() {
            let kind = ops[start].op;
            let coll = ops[start].collection.as_deref();
            let mut end = start + 1;
            while end < ops.len() && ops[end].op == kind && ops[end].collection.as_deref() == coll {
                end += 1;
            }
            let run = &ops[start..end];
            match kind {
                Op::Insert => self.insert_run(coll, run, start, &mut report, &mut rejected).await?,
                Op::Upsert | Op::Delete => {
                    for (i, op) in run.iter().enumerate() {
                        self.single(coll, op, start + i, &mut report, &mut rejected).await?;
                    }
                }
            }
            start = end;
        }
        if rejected.is_empty() { Ok(report) } else { Err(SinkError::Rejected { rejections: rejected, report }) }
    }

    async fn insert_run(
        &self,
        coll: Option<&str>,
        run: &[WriteOp],
        offset: usize,
        report: &mut WriteReport,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), SinkError> {
        let result =
            self.collection(coll).insert_many(run.iter().map(|o| &o.doc)).ordered(false).write_concern(self.write_concern.clone()).await;
        match result {
            Ok(r) => {
                report.inserted += r.inserted_ids.len() as u64;
                Ok(())
            }
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(im) if im.write_concern_error.is_none() && im.write_errors.is_some() => {
                    let errors = im.write_errors.as_deref().unwrap_or_default();
                    let mut failed = 0;
                    for we in errors {
                        failed += 1;
                        if we.code == DUPLICATE_KEY {
                            report.duplicates += 1;
                        } else {
                            rejected.push(Rejection { index: offset + we.index, code: we.code, message: we.message.clone() });
                        }
                    }
                    report.inserted += (run.len() - failed.min(run.len())) as u64;
                    Ok(())
                }
                _ => Err(SinkError::Transient(e)),
            },
        }
    }

    async fn single(
        &self,
        coll: Option<&str>,
        op: &WriteOp,
        index: usize,
        report: &mut WriteReport,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), SinkError> {
        let id = op.doc.get("_id").ok().flatten().and_then(|id| Bson::try_from(id.to_raw_bson()).ok());
        let Some(id) = id else {
            rejected.push(Rejection { index, code: 0, message: "upsert/delete needs an `_id` in the document".into() });
            return Ok(());
        };
        let filter = doc! { "_id": id };
        let c = self.collection(coll);
        let result = match op.op {
            Op::Upsert => {
                c.replace_one(filter, &op.doc).upsert(true).write_concern(self.write_concern.clone()).await.map(|_| report.upserted += 1)
            }
            Op::Delete => c.delete_one(filter).write_concern(self.write_concern.clone()).await.map(|r| report.deleted += r.deleted_count),
            Op::Insert => unreachable!("inserts are written in runs"),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::Write(WriteFailure::WriteError(we)) => {
                    rejected.push(Rejection { index, code: we.code, message: we.message.clone() });
                    Ok(())
                }
                _ => Err(SinkError::Transient(e)),
            },
        }
    }
}
