//! What a plugin function returns: documents to write.

use crate::abi::ResultWriter;
use crate::{Operation, Result, Value, json};

/// One document to write, with its operation and an optional collection override.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub operation: Operation,
    pub document: Value,
    pub collection: Option<String>,
}

impl Output {
    pub fn insert(document: Value) -> Self {
        Output { operation: Operation::Insert, document, collection: None }
    }
    pub fn upsert(document: Value) -> Self {
        Output { operation: Operation::Upsert, document, collection: None }
    }
    /// Delete the document whose `_id` is `id`.
    pub fn delete(id: Value) -> Self {
        Output { operation: Operation::Delete, document: json!({ "_id": id }), collection: None }
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
        w.emit_json(self.operation, &self.document, self.collection.as_deref())
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
