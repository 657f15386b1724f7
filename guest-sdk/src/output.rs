//! What a plugin function returns: documents to write.

use crate::abi::ResultWriter;
use crate::{Operation, Result, Value, json};

/// One write: its operation, document, filter (update, replace, delete-where)
/// and an optional collection override.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub operation: Operation,
    /// The document; the update operators of an update; `Null` for delete-where.
    pub document: Value,
    /// Which document an update, replace or delete-where applies to: fields and
    /// values, each matched literally (the host sends `{"f": {"$eq": v}}`).
    pub filter: Option<Value>,
    /// Update, replace: insert a document when none matches the filter.
    pub upsert: bool,
    pub collection: Option<String>,
}

impl Output {
    fn of(operation: Operation, document: Value, filter: Option<Value>) -> Self {
        Output { operation, document, filter, upsert: false, collection: None }
    }
    pub fn insert(document: Value) -> Self {
        Output::of(Operation::Insert, document, None)
    }
    /// Replace the document with the same `_id`, inserting it when absent.
    pub fn upsert(document: Value) -> Self {
        Output::of(Operation::Upsert, document, None)
    }
    /// Delete the document whose `_id` is `id`.
    pub fn delete(id: Value) -> Self {
        Output::of(Operation::Delete, json!({ "_id": id }), None)
    }
    /// Update one document matching `filter` with update operators, e.g.
    /// `Output::update(json!({"_id": id}), json!({"$inc": {"n": 1}, "$set": {"seen": true}}))`.
    /// Allowed: `$set`, `$unset`, `$inc`, `$mul`, `$min`, `$max`, `$currentDate`,
    /// `$push`, `$addToSet`, `$pull`, `$rename`, `$setOnInsert`; anything else
    /// fails the record as `invalid-output`. A replayed update is applied once
    /// (the host guards it). [`or_insert`](Self::or_insert): upsert.
    pub fn update(filter: Value, update: Value) -> Self {
        Output::of(Operation::Update, update, Some(filter))
    }
    /// Replace one document matching `filter` with `document` (no operators).
    pub fn replace_where(filter: Value, document: Value) -> Self {
        Output::of(Operation::Replace, document, Some(filter))
    }
    /// Delete one document matching `filter`.
    pub fn delete_where(filter: Value) -> Self {
        Output::of(Operation::DeleteWhere, Value::Null, Some(filter))
    }
    /// An update or replace that inserts a document when none matches its filter
    /// (MongoDB's `upsert: true`). Ignored by other operations.
    pub fn or_insert(mut self) -> Self {
        self.upsert = self.operation.may_upsert();
        self
    }
    /// Write to `collection` instead of the configured one.
    pub fn in_collection(mut self, collection: impl Into<String>) -> Self {
        self.collection = Some(collection.into());
        self
    }
}

impl From<Value> for Output {
    fn from(document: Value) -> Self {
        Output::insert(document)
    }
}

/// What a [`map`] function may return: one document, or none.
pub trait IntoOutputs {
    #[doc(hidden)]
    fn emit_into(self, w: &mut ResultWriter) -> Result<()>;
}
impl IntoOutputs for Value {
    fn emit_into(self, w: &mut ResultWriter) -> Result<()> {
        w.emit_json(Operation::Insert, &self, None)
    }
}
impl IntoOutputs for Output {
    fn emit_into(self, w: &mut ResultWriter) -> Result<()> {
        match &self.filter {
            None => w.emit_json(self.operation, &self.document, self.collection.as_deref()),
            Some(filter) => w.emit_filtered(self.operation, filter, &self.document, self.upsert, self.collection.as_deref()),
        }
    }
}
impl<T: IntoOutputs> IntoOutputs for Option<T> {
    fn emit_into(self, w: &mut ResultWriter) -> Result<()> {
        match self {
            Some(t) => t.emit_into(w),
            None => Ok(()),
        }
    }
}
