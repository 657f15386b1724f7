//! A batch result's columns: written by a plugin, checked and read by the host.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::{FLAG_UPSERT, INVALID_INPUT_TAG, OPTION_ORDERED, Operation, OutcomeEntry, OutcomeKind, OutputEntry, Span, is_invalid_input};

/// Where a [`ResultColumns`] stood when a record's outcome began.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    outputs: usize,
    data: usize,
}

/// Writes a batch result's columns (the WIT `batch-result` record's lists),
/// one record's outcome at a time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResultColumns {
    pub outcomes: Vec<u32>,
    pub outputs: Vec<u32>,
    pub data: Vec<u8>,
    /// [`OPTION_ORDERED`] or 0.
    pub options: u32,
}

impl ResultColumns {
    /// Room for `records` outcomes with one output each, and `data` bytes.
    pub fn with_capacity(records: usize, data: usize) -> ResultColumns {
        ResultColumns {
            outcomes: Vec::with_capacity(OutcomeEntry::WIDTH * records),
            outputs: Vec::with_capacity(OutputEntry::WIDTH * records),
            data: Vec::with_capacity(data),
            options: 0,
        }
    }

    /// Ask the host to write the result's outputs strictly in order ([`OPTION_ORDERED`]).
    pub fn set_ordered(&mut self, ordered: bool) {
        self.options = if ordered { self.options | OPTION_ORDERED } else { self.options & !OPTION_ORDERED };
    }

    /// Where things stand: take one before a record's outputs, give it to
    /// [`emitted`](Self::emitted) or [`failed`](Self::failed) after.
    pub fn mark(&self) -> Mark {
        Mark { outputs: self.outputs.len() / OutputEntry::WIDTH, data: self.data.len() }
    }

    /// Add an output whose document is `data[document_start..]` (written there
    /// by the caller, e.g. serialised in place), then its collection, if any.
    /// For insert, upsert and delete (no filter, no flags).
    pub fn output_written(&mut self, operation: Operation, document_start: usize, collection: Option<&str>) {
        let document = Span::of(document_start..self.data.len());
        self.output_spans(operation, 0, Span::ABSENT, document, collection);
    }

    /// Add an output whose filter and document already lie in `data` (the
    /// filter first, then the document, as written by the caller); its
    /// collection, if any, is appended.
    pub fn output_spans(&mut self, operation: Operation, flags: u32, filter: Span, document: Span, collection: Option<&str>) {
        let collection = Span::append(&mut self.data, collection.map(str::as_bytes));
        let entry = OutputEntry { operation: operation.code(), flags, filter, document, collection };
        self.outputs.extend_from_slice(&entry.to_words());
    }

    /// Add an output of any operation: its filter, document (JSON bytes, as
    /// they are) and collection go to `data`, in that order.
    pub fn output_full(
        &mut self,
        operation: Operation,
        flags: u32,
        filter: Option<&[u8]>,
        document: Option<&[u8]>,
        collection: Option<&str>,
    ) {
        let filter = Span::append(&mut self.data, filter);
        let document = Span::append(&mut self.data, document);
        self.output_spans(operation, flags, filter, document, collection);
    }

    /// Add an insert, upsert or delete: its document (JSON bytes, as they are) and collection go to `data`.
    pub fn output(&mut self, operation: Operation, document: &[u8], collection: Option<&str>) {
        let start = self.data.len();
        self.data.extend_from_slice(document);
        self.output_written(operation, start, collection);
    }

    /// The record's outcome: the outputs added since `mark` (none: drop).
    pub fn emitted(&mut self, mark: Mark) {
        let first = mark.outputs as u32;
        let count = (self.outputs.len() / OutputEntry::WIDTH) as u32 - first;
        let entry = match count {
            0 => OutcomeEntry { kind: OutcomeKind::Drop.code(), first: 0, count: 0 },
            _ => OutcomeEntry { kind: OutcomeKind::Emit.code(), first, count },
        };
        self.outcomes.extend_from_slice(&entry.to_words());
    }

    /// The record's outcome: an error with `message`. What was added since
    /// `mark` is discarded. `invalid_input`: the record's value is absent, not
    /// JSON or not a JSON object ([`INVALID_INPUT_TAG`] goes before the message).
    pub fn failed(&mut self, mark: Mark, message: &str, invalid_input: bool) {
        self.outputs.truncate(mark.outputs * OutputEntry::WIDTH);
        self.data.truncate(mark.data);
        if invalid_input {
            self.data.extend_from_slice(INVALID_INPUT_TAG);
        }
        let first = self.data.len() as u32;
        self.data.extend_from_slice(message.as_bytes());
        self.outcomes.extend_from_slice(&OutcomeEntry { kind: OutcomeKind::Error.code(), first, count: message.len() as u32 }.to_words());
    }

    pub fn view(&self) -> ResultView<'_> {
        ResultView { outcomes: &self.outcomes, outputs: &self.outputs, data: &self.data, options: self.options }
    }
}

/// Reads a batch result's columns. A plugin is not trusted: [`check`](Self::check)
/// first; afterwards [`outcome`](Self::outcome) and [`output`](Self::output) cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct ResultView<'a> {
    pub outcomes: &'a [u32],
    pub outputs: &'a [u32],
    pub data: &'a [u8],
    /// The result's `options` ([`OPTION_ORDERED`]).
    pub options: u32,
}

/// One record's outcome in a checked [`ResultView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    Drop,
    /// Indices of its outputs ([`ResultView::output`]).
    Emit(Range<u32>),
    Error(ErrorRef<'a>),
}

/// An error outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRef<'a> {
    /// The message's bytes (UTF-8 when the plugin keeps the contract).
    pub bytes: &'a [u8],
    /// See [`is_invalid_input`].
    pub invalid_input: bool,
}

impl<'a> ErrorRef<'a> {
    /// The message, with U+FFFD for bytes that are not UTF-8.
    pub fn message(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.bytes)
    }
}

impl core::fmt::Display for ErrorRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message())
    }
}

/// One output in a checked [`ResultView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputRef<'a> {
    pub operation: Operation,
    /// Update or replace: insert when nothing matches the filter ([`FLAG_UPSERT`]).
    pub upsert: bool,
    /// JSON, as the plugin wrote it: the filter of update, replace and delete-where.
    pub filter: Option<&'a [u8]>,
    /// JSON, as the plugin wrote it (a slice of the result's `data`); empty for delete-where.
    pub document: &'a [u8],
    /// `None`: the configured collection.
    pub collection: Option<&'a str>,
}

impl<'a> ResultView<'a> {
    /// Every rule of the contract, checked once, for a batch of `records`
    /// records; the error says which rule is broken.
    pub fn check(&self, records: usize) -> Result<(), String> {
        if self.outcomes.len() != OutcomeEntry::WIDTH * records {
            return Err(format!("{} outcome numbers for {records} records ({} per record)", self.outcomes.len(), OutcomeEntry::WIDTH));
        }
        if !self.outputs.len().is_multiple_of(OutputEntry::WIDTH) {
            return Err(format!("{} output numbers: not a multiple of {}", self.outputs.len(), OutputEntry::WIDTH));
        }
        let outputs = (self.outputs.len() / OutputEntry::WIDTH) as u64;
        for i in 0..records {
            let o = OutcomeEntry::at(self.outcomes, i);
            let (first, count) = (o.first as u64, o.count as u64);
            match OutcomeKind::from_code(o.kind) {
                Some(OutcomeKind::Drop) => {}
                Some(OutcomeKind::Emit) if first + count <= outputs => {}
                Some(OutcomeKind::Emit) => {
                    return Err(format!("record {i}: outputs {first}..{} beyond the {outputs} given", first + count));
                }
                Some(OutcomeKind::Error) if (Span { start: o.first, len: o.count }).get(self.data).is_some() => {}
                Some(OutcomeKind::Error) => return Err(format!("record {i}: error message outside the data")),
                None => return Err(format!("record {i}: unknown outcome kind {}", o.kind)),
            }
        }
        for j in 0..outputs as usize {
            let o = OutputEntry::at(self.outputs, j);
            let Some(op) = Operation::from_code(o.operation) else {
                return Err(format!("output {j}: unknown operation {}", o.operation));
            };
            if o.flags & !FLAG_UPSERT != 0 || (o.flags & FLAG_UPSERT != 0 && !op.may_upsert()) {
                return Err(format!("output {j}: flags {} not allowed for {}", o.flags, op.name()));
            }
            match (op.has_filter(), o.filter.is_absent()) {
                (true, true) => return Err(format!("output {j}: {} needs a filter", op.name())),
                (false, false) => return Err(format!("output {j}: {} takes no filter", op.name())),
                (true, false) if o.filter.get(self.data).is_none() => return Err(format!("output {j}: filter outside the data")),
                _ => {}
            }
            match (op.has_document(), o.document.is_absent()) {
                (true, true) => return Err(format!("output {j}: {} needs a document", op.name())),
                (false, false) => return Err(format!("output {j}: {} takes no document", op.name())),
                (true, false) if o.document.get(self.data).is_none() => return Err(format!("output {j}: document outside the data")),
                _ => {}
            }
            if !o.collection.is_absent() {
                match o.collection.get(self.data).map(core::str::from_utf8) {
                    Some(Ok(_)) => {}
                    Some(Err(_)) => return Err(format!("output {j}: collection name is not UTF-8")),
                    None => return Err(format!("output {j}: collection name outside the data")),
                }
            }
        }
        if self.options & !OPTION_ORDERED != 0 {
            return Err(format!("unknown options {}", self.options));
        }
        Ok(())
    }

    /// The plugin asked for its outputs to be written strictly in order ([`OPTION_ORDERED`]).
    pub fn ordered(&self) -> bool {
        self.options & OPTION_ORDERED != 0
    }

    /// Outcome of record `i` (after [`check`](Self::check)).
    pub fn outcome(&self, i: usize) -> Outcome<'a> {
        let o = OutcomeEntry::at(self.outcomes, i);
        match OutcomeKind::from_code(o.kind) {
            Some(OutcomeKind::Drop) => Outcome::Drop,
            Some(OutcomeKind::Emit) => Outcome::Emit(o.first..o.first + o.count),
            _ => {
                let message = Span { start: o.first, len: o.count };
                Outcome::Error(ErrorRef {
                    bytes: message.get(self.data).unwrap_or_default(),
                    invalid_input: is_invalid_input(self.data, message),
                })
            }
        }
    }

    /// Output `j` (after [`check`](Self::check)).
    pub fn output(&self, j: u32) -> OutputRef<'a> {
        let o = OutputEntry::at(self.outputs, j as usize);
        OutputRef {
            operation: Operation::from_code(o.operation).unwrap_or(Operation::Delete),
            upsert: o.flags & FLAG_UPSERT != 0,
            filter: (!o.filter.is_absent()).then(|| o.filter.get(self.data).unwrap_or_default()),
            document: if o.document.is_absent() { &[] } else { o.document.get(self.data).unwrap_or_default() },
            collection: (!o.collection.is_absent())
                .then(|| o.collection.get(self.data).and_then(|c| core::str::from_utf8(c).ok()).unwrap_or_default()),
        }
    }
}
