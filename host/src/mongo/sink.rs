//! The MongoDB writer.
//!
//! A batch of [`WriteOp`]s is written in order, as runs of the same kind:
//! inserts as one unordered `insertMany` per collection (ordered when the
//! plugin asked for it), upserts as `replaceOne(upsert)`, deletes as
//! `deleteOne`, updates as `updateOne`, filter replaces as `replaceOne` and
//! filter deletes as `deleteOne`, one at a time, so per-partition order holds
//! where it matters (an upsert then a delete of one `_id`).
//!
//! An update carries a replay guard ([`Guard`]): its filter also requires the
//! document's stored position for the record's topic partition to be below the
//! record's (or absent), and the update stores it. A replayed update finds its
//! position there and matches nothing: already applied. A guarded upsert that
//! matches nothing is sent without upsert first; when that too matches nothing
//! and a document matching the plugin's filter exists (it is newer), it was
//! already applied; otherwise it is upserted, and a duplicate-key error then
//! (the same `_id` inserted meanwhile) counts as already applied too.
//!
//! Every error is classified once, by [`classify`] ([`super::classify`]): retryable (network, election,
//! timeout, write concern, authorization of the configured collection: not the
//! record's fault; the caller retries) or refused (this document cannot be
//! stored: it is rejected alone, the rest of the batch is written).
//!
//! A duplicate-key error on an insert is read back by `_id`: a document with
//! that `_id` from the same source record (derived id) or with the same content
//! means a replay after a crash (counted as written); anything else (another
//! unique index, another document's `_id`) is a rejection, never a silent loss.
//! FerretDB's E11000 message does not name the index, so the read-back decides.

use std::time::Duration;

use mongodb::bson::{Bson, Document, RawBsonRef, RawDocumentBuf, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use mongodb::{Client, Collection, Database};

use crate::config::{MongoConfig, WriteAck, redact_uri};

/// MongoDB's duplicate key error code.
pub const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's largest document (BSON bytes).
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024;

use crate::mongo::classify::code_of;
pub use crate::mongo::classify::{ErrorClass, classify, classify_code, precheck};
pub use crate::record::Op;

/// The replay guard of an update: where its position is kept in the document
/// (a dotted path) and the position (see `pipeline::plan::guard`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub field: String,
    pub position: i64,
}

/// One document to write, as BSON bytes (what the driver sends as it is).
#[derive(Debug, Clone)]
pub struct WriteOp {
    pub op: Op,
    /// `None`: the configured collection.
    pub collection: Option<String>,
    /// The document (insert, upsert, delete: by its `_id`; replace: the
    /// replacement), the update operators (update), or empty (delete-where).
    pub doc: RawDocumentBuf,
    /// Update, replace, delete-where: the filter, each field already `{$eq: value}`.
    pub filter: Option<RawDocumentBuf>,
    /// Update, replace: insert when nothing matches.
    pub upsert: bool,
    /// Update: the replay guard.
    pub guard: Option<Guard>,
    /// The `_id` was derived from the source coordinates (a document already
    /// there with this `_id` came from the same record: a replay).
    pub derived_id: bool,
    /// The record may have been written before, by another plugin version: a
    /// derived-id document found there is replaced, not kept.
    pub replay: bool,
}

impl WriteOp {
    /// An op on the configured collection from a [`Document`].
    pub fn new(op: Op, doc: &Document) -> WriteOp {
        WriteOp {
            op,
            collection: None,
            doc: RawDocumentBuf::from_document(doc).expect("a document encodes as BSON"),
            filter: None,
            upsert: false,
            guard: None,
            derived_id: false,
            replay: false,
        }
    }

    /// An update, replace or delete-where on the configured collection; the
    /// filter is given as the host sends it (values already `{$eq: …}`).
    pub fn with_filter(op: Op, filter: &Document, doc: &Document) -> WriteOp {
        WriteOp { filter: Some(RawDocumentBuf::from_document(filter).expect("a filter encodes as BSON")), ..WriteOp::new(op, doc) }
    }
}

/// What a batch write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    pub inserted: u64,
    /// Inserts that found their document already stored (replays).
    pub duplicates: u64,
    pub upserted: u64,
    pub deleted: u64,
    /// Replayed inserts whose document, made by another version (or an earlier
    /// incarnation of the topic), was replaced.
    pub replaced: u64,
    /// Updates and filter replaces that matched a document or inserted one.
    pub updated: u64,
    /// Updates that matched nothing (their filter found no document) or, by
    /// their replay guard, had already been applied.
    pub unmatched: u64,
}

/// A document the server (or the driver) refused; retrying will not help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Index into the batch given to [`Sink::write`].
    pub index: usize,
    /// MongoDB's error code; 0 when refused before reaching the server.
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

/// A key to find an `_id` by (its canonical extended JSON).
fn id_key(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// A connected MongoDB writer. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct Sink {
    db: Database,
    default_collection: String,
    write_concern: WriteConcern,
    ignored_field: Option<String>,
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
        Ok(Sink { db, default_collection: cfg.collection.clone(), write_concern, ignored_field: None })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The progress store of `group` in `collection`, with this sink's write concern.
    pub fn progress(&self, collection: &str, group: &str) -> crate::mongo::progress::Progress {
        crate::mongo::progress::Progress::new(&self.db, collection, group, self.write_concern.clone())
    }

    fn collection(&self, name: Option<&str>) -> Collection<RawDocumentBuf> {
        self.db.collection(name.unwrap_or(&self.default_collection))
    }

    /// Documents stored and documents to store are compared without this field
    /// (`pipeline.versions_field`: a replay under another version is still a replay).
    pub fn ignoring_field(mut self, field: Option<&str>) -> Sink {
        self.ignored_field = field.map(str::to_owned);
        self
    }

    /// Write `ops` in order. `Ok` means every op is acknowledged (or was already
    /// there). `Rejected` lists refused documents; every other op was written.
    pub async fn write(&self, ops: &[WriteOp]) -> Result<WriteReport, SinkError> {
        self.write_ordered(ops, false).await
    }

    /// [`write`](Self::write); `ordered`: inserts too are written strictly in
    /// order (each run as an ordered `insertMany`, resumed after a refused document).
    pub async fn write_ordered(&self, ops: &[WriteOp], ordered: bool) -> Result<WriteReport, SinkError> {
        let mut w = Writing { ops, report: WriteReport::default(), rejected: Vec::new() };
        // What cannot be stored is refused before sending; the rest is written in runs.
        let mut sendable = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            match precheck(op) {
                Some(message) => w.reject(i, 0, message),
                None => sendable.push(i),
            }
        }
        let mut start = 0;
        while start < sendable.len() {
            let first = &ops[sendable[start]];
            let (kind, coll) = (first.op, first.collection.as_deref());
            let mut end = start + 1;
            while end < sendable.len() && ops[sendable[end]].op == kind && ops[sendable[end]].collection.as_deref() == coll {
                end += 1;
            }
            let run = &sendable[start..end];
            match kind {
                Op::Insert if ordered => {
                    let mut rest = run;
                    while !rest.is_empty() {
                        let done = self.insert_ordered(coll, rest, &mut w).await?;
                        rest = &rest[done..];
                    }
                }
                Op::Insert => self.insert_run(coll, run, &mut w).await?,
                Op::Update | Op::Replace | Op::DeleteWhere => {
                    for &i in run {
                        self.filtered(coll, i, &mut w).await?;
                    }
                }
                Op::Upsert | Op::Delete => {
                    for &i in run {
                        self.single(coll, i, &mut w).await?;
                    }
                }
            }
            start = end;
        }
        let Writing { report, mut rejected, .. } = w;
        rejected.sort_by_key(|r| r.index);
        if rejected.is_empty() { Ok(report) } else { Err(SinkError::Rejected { rejections: rejected, report }) }
    }

    /// Insert `run` (indexes into the batch, one collection) unordered.
    async fn insert_run(&self, coll: Option<&str>, run: &[usize], w: &mut Writing<'_>) -> Result<(), SinkError> {
        let routed = coll.is_some();
        let ops = w.ops;
        let result = self
            .collection(coll)
            .insert_many(run.iter().map(|&i| &ops[i].doc))
            .ordered(false)
            .write_concern(self.write_concern.clone())
            .await;
        let e = match result {
            Ok(r) => {
                w.report.inserted += r.inserted_ids.len() as u64;
                return Ok(());
            }
            Err(e) => e,
        };
        match e.kind.as_ref() {
            ErrorKind::InsertMany(im) if im.write_concern_error.is_none() && im.write_errors.is_some() => {
                let errors = im.write_errors.as_deref().unwrap_or_default();
                if errors.iter().any(|we| we.code != DUPLICATE_KEY && classify_code(we.code, routed, true) == ErrorClass::Retry) {
                    // Written again whole: what went in now is found there (read back as a replay).
                    return Err(SinkError::Transient(e));
                }
                let mut duplicates = Vec::new();
                for we in errors {
                    let Some(&i) = run.get(we.index) else { continue };
                    if we.code == DUPLICATE_KEY {
                        duplicates.push((i, we.message.clone()));
                    } else {
                        w.reject(i, we.code, we.message.clone());
                    }
                }
                w.report.inserted += run.len().saturating_sub(errors.len()) as u64;
                self.resolve_duplicates(coll, &duplicates, w).await
            }
            _ => match classify(&e, routed) {
                ErrorClass::Retry => Err(SinkError::Transient(e)),
                ErrorClass::Refused if run.len() == 1 => {
                    w.reject(run[0], code_of(&e), e.to_string());
                    Ok(())
                }
                ErrorClass::Refused => {
                    // Refused as a whole: one at a time, so only the documents at fault are rejected.
                    for &i in run {
                        Box::pin(self.insert_run(coll, &[i], w)).await?;
                    }
                    Ok(())
                }
            },
        }
    }

    /// Insert `run` in order, up to the first refused document (which is
    /// decided as [`insert_run`](Self::insert_run) does, alone); returns how
    /// many of `run` are done.
    async fn insert_ordered(&self, coll: Option<&str>, run: &[usize], w: &mut Writing<'_>) -> Result<usize, SinkError> {
        let ops = w.ops;
        let result = self
            .collection(coll)
            .insert_many(run.iter().map(|&i| &ops[i].doc))
            .ordered(true)
            .write_concern(self.write_concern.clone())
            .await;
        match result {
            Ok(r) => {
                w.report.inserted += r.inserted_ids.len() as u64;
                Ok(run.len())
            }
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(im) if im.write_concern_error.is_none() => {
                    let Some(first) = im.write_errors.as_deref().unwrap_or_default().iter().map(|we| we.index).min() else {
                        return Err(SinkError::Transient(e));
                    };
                    let first = first.min(run.len() - 1);
                    w.report.inserted += first as u64;
                    // The one that failed, alone: a replay, a rejection, or a retry.
                    self.insert_run(coll, &run[first..first + 1], w).await?;
                    Ok(first + 1)
                }
                _ if classify(&e, coll.is_some()) == ErrorClass::Retry => Err(SinkError::Transient(e)),
                _ => {
                    self.insert_run(coll, &run[..1], w).await?;
                    Ok(1)
                }
            },
        }
    }

    /// Inserts refused as duplicate keys: a replay when the document with that
    /// `_id` came from the same record (derived id) or is the same; otherwise rejected.
    async fn resolve_duplicates(&self, coll: Option<&str>, duplicates: &[(usize, String)], w: &mut Writing<'_>) -> Result<(), SinkError> {
        if duplicates.is_empty() {
            return Ok(());
        }
        let ids: Vec<Bson> = duplicates.iter().filter_map(|(i, _)| id_of(&w.ops[*i].doc)).collect();
        let mut stored = std::collections::HashMap::new();
        let mut cursor = self.collection(coll).find(doc! { "_id": { "$in": ids } }).await.map_err(SinkError::Transient)?;
        while cursor.advance().await.map_err(SinkError::Transient)? {
            let d = cursor.deserialize_current().map_err(SinkError::Transient)?;
            if let Some(id) = id_of(&d) {
                stored.insert(id_key(&id), d);
            }
        }
        let ops = w.ops;
        for (i, message) in duplicates {
            let op = &ops[*i];
            let id = id_of(&op.doc);
            match id.as_ref().and_then(|id| stored.get(&id_key(id))) {
                Some(there) if op.derived_id && op.replay && !same_document(there, &op.doc) => {
                    let c = self.collection(coll);
                    let filter = doc! { "_id": { "$eq": id.clone().unwrap_or(Bson::Null) } };
                    match c.replace_one(filter, &op.doc).write_concern(self.write_concern.clone()).await {
                        Ok(_) => w.report.replaced += 1,
                        Err(e) if classify(&e, coll.is_some()) == ErrorClass::Retry => return Err(SinkError::Transient(e)),
                        Err(e) => w.reject(*i, code_of(&e), e.to_string()),
                    }
                }
                Some(_) if op.derived_id => w.report.duplicates += 1,
                Some(there) if self.same(there, &op.doc) => w.report.duplicates += 1,
                Some(_) => w.reject(
                    *i,
                    DUPLICATE_KEY,
                    format!("another document with `_id` {} is already stored, with other content ({message})", id.unwrap_or(Bson::Null)),
                ),
                None => w.reject(*i, DUPLICATE_KEY, format!("the document repeats a value of a unique index ({message})")),
            }
        }
        Ok(())
    }

    /// Whether two documents are the same, but for the ignored field.
    fn same(&self, a: &RawDocumentBuf, b: &RawDocumentBuf) -> bool {
        let (Ok(mut a), Ok(mut b)) = (a.to_document(), b.to_document()) else { return false };
        if let Some(f) = &self.ignored_field {
            a.remove(f);
            b.remove(f);
        }
        a == b
    }

    /// One upsert or delete, by `_id` with `$eq` (an `_id` taken from a record never acts as an operator).
    async fn single(&self, coll: Option<&str>, index: usize, w: &mut Writing<'_>) -> Result<(), SinkError> {
        let ops = w.ops;
        let op = &ops[index];
        let Some(id) = id_of(&op.doc) else {
            w.reject(index, 0, "upsert/delete needs an `_id` in the document".into());
            return Ok(());
        };
        let filter = doc! { "_id": { "$eq": id } };
        let c = self.collection(coll);
        let result = match op.op {
            Op::Upsert => c.replace_one(filter, &op.doc).upsert(true).write_concern(self.write_concern.clone()).await.map(|_| (1, 0)),
            Op::Delete => c.delete_one(filter).write_concern(self.write_concern.clone()).await.map(|r| (0, r.deleted_count)),
            _ => unreachable!("inserts are written in runs, filter operations by `filtered`"),
        };
        match result {
            Ok((upserted, deleted)) => {
                w.report.upserted += upserted;
                w.report.deleted += deleted;
                Ok(())
            }
            Err(e) => match classify(&e, coll.is_some()) {
                ErrorClass::Retry => Err(SinkError::Transient(e)),
                ErrorClass::Refused => {
                    let message = match e.kind.as_ref() {
                        ErrorKind::Write(WriteFailure::WriteError(we)) => we.message.clone(),
                        _ => e.to_string(),
                    };
                    w.reject(index, code_of(&e), message);
                    Ok(())
                }
            },
        }
    }
}

impl Sink {
    /// One update, filter replace or filter delete. An update's filter gets its
    /// replay guard and the update stores it (see the module's doc).
    async fn filtered(&self, coll: Option<&str>, index: usize, w: &mut Writing<'_>) -> Result<(), SinkError> {
        let ops = w.ops;
        let op = &ops[index];
        let Some(user_filter) = op.filter.as_ref() else {
            w.reject(index, 0, format!("{} needs a filter", op.op.name()));
            return Ok(());
        };
        let c = self.collection(coll);
        let wc = self.write_concern.clone();
        let (filter, update) = match &op.guard {
            Some(g) => {
                let mut filter = user_filter.clone();
                let mut gte = RawDocumentBuf::new();
                gte.append("$gte", g.position);
                let mut not = RawDocumentBuf::new();
                not.append_ref("$not", RawBsonRef::Document(&gte));
                filter.append_ref(g.field.as_str(), RawBsonRef::Document(&not));
                let update = set_in_update(&op.doc, &g.field, RawBsonRef::Int64(g.position));
                (filter, update)
            }
            None => (user_filter.clone(), op.doc.clone()),
        };
        // The driver takes filters and updates as `Document`s.
        let (Ok(filter), Ok(update), Ok(user_filter)) = (filter.to_document(), update.to_document(), user_filter.to_document()) else {
            w.reject(index, 0, format!("the {}'s filter or document cannot be read as BSON", op.op.name()));
            return Ok(());
        };
        let result: Result<(u64, u64, u64), mongodb::error::Error> = match op.op {
            Op::Update if op.upsert && op.guard.is_some() => {
                // Without upsert first: a document that is newer must not get a twin.
                match c.update_one(filter.clone(), update.clone()).write_concern(wc.clone()).await {
                    Ok(r) if r.matched_count > 0 => Ok((1, 0, 0)),
                    Ok(_) => match c.find_one(user_filter).projection(doc! { "_id": 1 }).await {
                        Ok(Some(_)) => Ok((0, 1, 0)),
                        Ok(None) => match c.update_one(filter, update).upsert(true).write_concern(wc).await {
                            Ok(r) => Ok(if r.matched_count > 0 || r.upserted_id.is_some() { (1, 0, 0) } else { (0, 1, 0) }),
                            Err(e) if code_of(&e) == DUPLICATE_KEY => Ok((0, 1, 0)),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
            Op::Update => c
                .update_one(filter, update)
                .upsert(op.upsert)
                .write_concern(wc)
                .await
                .map(|r| if r.matched_count > 0 || r.upserted_id.is_some() { (1, 0, 0) } else { (0, 1, 0) }),
            Op::Replace => c
                .replace_one(filter, &op.doc)
                .upsert(op.upsert)
                .write_concern(wc)
                .await
                .map(|r| if r.matched_count > 0 || r.upserted_id.is_some() { (1, 0, 0) } else { (0, 1, 0) }),
            Op::DeleteWhere => c.delete_one(filter).write_concern(wc).await.map(|r| (0, 0, r.deleted_count)),
            _ => unreachable!("only the filter operations"),
        };
        match result {
            Ok((updated, unmatched, deleted)) => {
                w.report.updated += updated;
                w.report.unmatched += unmatched;
                w.report.deleted += deleted;
                Ok(())
            }
            Err(e) => match classify(&e, coll.is_some()) {
                ErrorClass::Retry => Err(SinkError::Transient(e)),
                ErrorClass::Refused => {
                    let message = match e.kind.as_ref() {
                        ErrorKind::Write(WriteFailure::WriteError(we)) => we.message.clone(),
                        _ => e.to_string(),
                    };
                    w.reject(index, code_of(&e), message);
                    Ok(())
                }
            },
        }
    }

    /// The string `_id`s in `[from, to)` of a collection (`None`: the configured one).
    pub async fn ids_between(&self, coll: Option<&str>, from: &str, to: &str) -> Result<Vec<String>, SinkError> {
        let c = self.collection(coll);
        let mut cursor =
            c.find(doc! { "_id": { "$gte": from, "$lt": to } }).projection(doc! { "_id": 1 }).await.map_err(SinkError::Transient)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(SinkError::Transient)? {
            if let Ok(id) = cursor.current().get_str("_id") {
                out.push(id.to_owned());
            }
        }
        Ok(out)
    }

    /// Delete the documents with these `_id`s; returns how many were there.
    pub async fn delete_ids(&self, coll: Option<&str>, ids: &[String]) -> Result<u64, SinkError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .collection(coll)
            .delete_many(doc! { "_id": { "$in": ids } })
            .write_concern(self.write_concern.clone())
            .await
            .map_err(SinkError::Transient)?;
        Ok(r.deleted_count)
    }
}

/// A batch being written: its ops, and what happened to them so far.
struct Writing<'a> {
    ops: &'a [WriteOp],
    report: WriteReport,
    rejected: Vec<Rejection>,
}

impl Writing<'_> {
    fn reject(&mut self, index: usize, code: i32, message: String) {
        self.rejected.push(Rejection { index, code, message });
    }
}

/// Whether two stored documents hold the same fields and values, in any order
/// (the server moves `_id` first).
fn same_document(a: &RawDocumentBuf, b: &RawDocumentBuf) -> bool {
    a.as_bytes() == b.as_bytes() || matches!((a.to_document(), b.to_document()), (Ok(a), Ok(b)) if a == b)
}

/// A document's `_id`, if it has one.
fn id_of(doc: &RawDocumentBuf) -> Option<Bson> {
    doc.get("_id").ok().flatten().and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
}

/// `update` with `field: value` added to its `$set` (appended, or a `$set` made).
pub fn set_in_update(update: &RawDocumentBuf, field: &str, value: RawBsonRef<'_>) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    let mut done = false;
    for (k, v) in update.iter().filter_map(Result::ok) {
        match (k, v) {
            ("$set", RawBsonRef::Document(set)) => {
                let mut set = set.to_raw_document_buf();
                set.append_ref(field, value);
                out.append_ref("$set", RawBsonRef::Document(&set));
                done = true;
            }
            _ => out.append_ref(k, v),
        }
    }
    if !done {
        let mut set = RawDocumentBuf::new();
        set.append_ref(field, value);
        out.append_ref("$set", RawBsonRef::Document(&set));
    }
    out
}
