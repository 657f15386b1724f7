//! The Sluice plugin contract's columns, written once.
//!
//! `wit/plugin.wit` declares what crosses the boundary between the host and a
//! plugin (a `batch` in, a `batch-result` out); this crate owns what the WIT
//! cannot say: how records, outcomes and outputs are laid out in those columns.
//! The host writes batches and reads results with it, the Rust SDK reads batches
//! and writes results with it, and `wit/columns.md` with `wit/vectors.json` say
//! the same in prose and bytes for SDKs in other languages.
//!
//! - [`VERSION`], [`PACKAGE`], [`HOST_INTERFACE`]: the contract version (the WIT package).
//! - [`Span`], [`ABSENT`], [`NO_TIMESTAMP`]: where a part lies in `data`, or that it is absent.
//! - [`RecordSpans`], [`HeaderSpans`], [`OutcomeEntry`], [`OutputEntry`]: one entry
//!   of each integer column, with its width ([`RecordSpans::WIDTH`]…).
//! - [`OutcomeKind`], [`Operation`]: the codes in those entries.
//! - [`BatchColumns`] writes a batch, [`BatchView`] reads one.
//! - [`ResultColumns`] writes a batch result, [`ResultView`] checks and reads one.
//! - [`INVALID_INPUT_TAG`], [`is_invalid_input`]: the invalid-input signal.
//!
//! No dependencies, `no_std` with `alloc`: it builds for wasm32 and natively.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

use alloc::vec::Vec;
use core::ops::Range;

mod batch;
mod result;
#[cfg(test)]
mod tests;

pub use batch::{BatchColumns, BatchView, RecordRef};
pub use result::{ErrorRef, Mark, Outcome, OutputRef, ResultColumns, ResultView};

macro_rules! version {
    () => {
        "0.3.0"
    };
}

macro_rules! legacy_version {
    () => {
        "0.2.0"
    };
}

/// The contract version: the version of the WIT package `sluice:plugin`.
pub const VERSION: &str = version!();

/// The WIT package with its version, as `wit/plugin.wit` declares it.
pub const PACKAGE: &str = concat!("sluice:plugin@", version!());

/// The one interface the host provides to plugins (logging).
pub const HOST_INTERFACE: &str = concat!("sluice:plugin/host@", version!());

/// The older contract version the host still runs, unchanged: its results are
/// read through [`upgrade_legacy_outputs`] (`wit/legacy/plugin-0.2.0.wit`).
pub const LEGACY_VERSION: &str = legacy_version!();

/// [`PACKAGE`] of the older contract version the host still runs.
pub const LEGACY_PACKAGE: &str = concat!("sluice:plugin@", legacy_version!());

/// [`HOST_INTERFACE`] of the older contract version the host still runs.
pub const LEGACY_HOST_INTERFACE: &str = concat!("sluice:plugin/host@", legacy_version!());

/// Every interface of the contract, any version, starts with this.
pub const INTERFACE_PREFIX: &str = "sluice:plugin/";

/// A length that means "absent": no key, no value (a tombstone), a header
/// without a value, no collection override.
pub const ABSENT: u32 = u32::MAX;

/// The timestamp of a record that has none.
pub const NO_TIMESTAMP: i64 = -1;

/// Where a part lies in a batch's or result's `data`: `data[start .. start + len]`,
/// or absent when `len` is [`ABSENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    /// An absent part (start 0, length [`ABSENT`]).
    pub const ABSENT: Span = Span { start: 0, len: ABSENT };

    pub fn is_absent(self) -> bool {
        self.len == ABSENT
    }

    /// The bytes it names, or `None` when they are not all inside `data`
    /// (an absent span is never inside). For input that is not trusted.
    #[inline]
    pub fn get(self, data: &[u8]) -> Option<&[u8]> {
        data.get(self.start as usize..(self.start as usize).checked_add(self.len as usize)?)
    }

    /// The bytes it names, `None` when absent. A span outside `data` panics:
    /// for input that is trusted (a batch from the host).
    #[inline]
    pub fn read(self, data: &[u8]) -> Option<&[u8]> {
        (!self.is_absent()).then(|| &data[self.start as usize..self.start as usize + self.len as usize])
    }

    /// The span of the bytes appended to `data` (absent for `None`).
    #[inline]
    pub fn append(data: &mut Vec<u8>, bytes: Option<&[u8]>) -> Span {
        match bytes {
            Some(b) => {
                let start = data.len() as u32;
                data.extend_from_slice(b);
                Span { start, len: b.len() as u32 }
            }
            None => Span::ABSENT,
        }
    }

    /// The span `start .. start + len` in a buffer, as the columns store it.
    pub(crate) fn of(range: Range<usize>) -> Span {
        Span { start: range.start as u32, len: (range.end - range.start) as u32 }
    }
}

/// One record's entry in `batch.spans`: key, value, and which headers are its.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpans {
    pub key: Span,
    pub value: Span,
    /// Index of its first header entry in `batch.header-spans`.
    pub first_header: u32,
    pub header_count: u32,
}

impl RecordSpans {
    /// Numbers per record: key-start, key-len, value-start, value-len, first-header, header-count.
    pub const WIDTH: usize = 6;

    pub fn to_words(self) -> [u32; Self::WIDTH] {
        [self.key.start, self.key.len, self.value.start, self.value.len, self.first_header, self.header_count]
    }

    /// Entry `i` of `spans` (panics if the column is too short).
    pub fn at(spans: &[u32], i: usize) -> RecordSpans {
        let w = &spans[Self::WIDTH * i..Self::WIDTH * (i + 1)];
        RecordSpans { key: Span { start: w[0], len: w[1] }, value: Span { start: w[2], len: w[3] }, first_header: w[4], header_count: w[5] }
    }
}

/// One header's entry in `batch.header-spans`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpans {
    /// Never absent; UTF-8.
    pub key: Span,
    /// Absent: a header without a value.
    pub value: Span,
}

impl HeaderSpans {
    /// Numbers per header: key-start, key-len, value-start, value-len.
    pub const WIDTH: usize = 4;

    pub fn to_words(self) -> [u32; Self::WIDTH] {
        [self.key.start, self.key.len, self.value.start, self.value.len]
    }

    /// Entry `h` of `header_spans` (panics if the column is too short).
    pub fn at(header_spans: &[u32], h: usize) -> HeaderSpans {
        let w = &header_spans[Self::WIDTH * h..Self::WIDTH * (h + 1)];
        HeaderSpans { key: Span { start: w[0], len: w[1] }, value: Span { start: w[2], len: w[3] } }
    }
}

/// What a plugin made of one record: the first number of its outcome entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum OutcomeKind {
    /// Filtered out (first and count are 0).
    Drop = 0,
    /// Became outputs `first .. first + count` (a count of 0 is the same as drop).
    Emit = 1,
    /// Could not be processed: the message (UTF-8) is `data[first .. first + count]`.
    Error = 2,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 3] = [OutcomeKind::Drop, OutcomeKind::Emit, OutcomeKind::Error];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<OutcomeKind> {
        Self::ALL.get(code as usize).copied()
    }

    /// Its name in the WIT and `columns.md`.
    pub fn name(self) -> &'static str {
        ["drop", "emit", "error"][self as usize]
    }
}

/// What the host does with an output: the first number of its output entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Operation {
    /// Insert the document. Without `_id` the host derives one from the source coordinates.
    Insert = 0,
    /// Replace the document with the same `_id`, or insert it (needs `_id`).
    Upsert = 1,
    /// Delete the document with this `_id` (needs `_id`).
    Delete = 2,
    /// Update one document matching the filter with the document's update
    /// operators (`$set`, `$inc`…); [`FLAG_UPSERT`]: insert when none matches. Since 0.3.0.
    Update = 3,
    /// Replace one document matching the filter with the document (no
    /// operators); [`FLAG_UPSERT`]: insert when none matches. Since 0.3.0.
    Replace = 4,
    /// Delete one document matching the filter (no document). Since 0.3.0.
    DeleteWhere = 5,
}

impl Operation {
    pub const ALL: [Operation; 6] =
        [Operation::Insert, Operation::Upsert, Operation::Delete, Operation::Update, Operation::Replace, Operation::DeleteWhere];

    /// The operations of contract 0.2.0.
    pub const LEGACY: [Operation; 3] = [Operation::Insert, Operation::Upsert, Operation::Delete];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Operation> {
        Self::ALL.get(code as usize).copied()
    }

    /// Its name in the WIT and `columns.md`.
    pub fn name(self) -> &'static str {
        ["insert", "upsert", "delete", "update", "replace", "delete-where"][self as usize]
    }

    /// It names its document by a filter (update, replace, delete-where), not by the document's `_id`.
    pub fn has_filter(self) -> bool {
        matches!(self, Operation::Update | Operation::Replace | Operation::DeleteWhere)
    }

    /// It carries a document (every operation but delete-where).
    pub fn has_document(self) -> bool {
        self != Operation::DeleteWhere
    }

    /// It may carry [`FLAG_UPSERT`] (update, replace).
    pub fn may_upsert(self) -> bool {
        matches!(self, Operation::Update | Operation::Replace)
    }
}

/// An output's flag: update or replace inserts a document when none matches its filter.
pub const FLAG_UPSERT: u32 = 1;

/// A batch result's option: the host writes its outputs strictly in order
/// (see `columns.md`); without it, consecutive inserts may be written in any order.
pub const OPTION_ORDERED: u32 = 1;

/// One record's entry in `batch-result.outcomes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeEntry {
    /// An [`OutcomeKind`] code (not checked here).
    pub kind: u32,
    pub first: u32,
    pub count: u32,
}

impl OutcomeEntry {
    /// Numbers per record: kind, first, count.
    pub const WIDTH: usize = 3;

    pub fn to_words(self) -> [u32; Self::WIDTH] {
        [self.kind, self.first, self.count]
    }

    /// Entry `i` of `outcomes` (panics if the column is too short).
    pub fn at(outcomes: &[u32], i: usize) -> OutcomeEntry {
        let w = &outcomes[Self::WIDTH * i..Self::WIDTH * (i + 1)];
        OutcomeEntry { kind: w[0], first: w[1], count: w[2] }
    }
}

/// One output's entry in `batch-result.outputs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputEntry {
    /// An [`Operation`] code (not checked here).
    pub operation: u32,
    /// [`FLAG_UPSERT`] or 0 (not checked here).
    pub flags: u32,
    /// A JSON object, UTF-8; absent unless the operation [has a filter](Operation::has_filter).
    pub filter: Span,
    /// A JSON object, UTF-8; absent for delete-where.
    pub document: Span,
    /// Absent: the configured collection.
    pub collection: Span,
}

impl OutputEntry {
    /// Numbers per output: operation, flags, filter-start, filter-len, document-start,
    /// document-len, collection-start, collection-len.
    pub const WIDTH: usize = 8;

    /// Numbers per output in contract 0.2.0: operation, document-start,
    /// document-len, collection-start, collection-len.
    pub const LEGACY_WIDTH: usize = 5;

    pub fn to_words(self) -> [u32; Self::WIDTH] {
        [
            self.operation,
            self.flags,
            self.filter.start,
            self.filter.len,
            self.document.start,
            self.document.len,
            self.collection.start,
            self.collection.len,
        ]
    }

    /// Entry `j` of `outputs` (panics if the column is too short).
    pub fn at(outputs: &[u32], j: usize) -> OutputEntry {
        let w = &outputs[Self::WIDTH * j..Self::WIDTH * (j + 1)];
        OutputEntry {
            operation: w[0],
            flags: w[1],
            filter: Span { start: w[2], len: w[3] },
            document: Span { start: w[4], len: w[5] },
            collection: Span { start: w[6], len: w[7] },
        }
    }
}

/// The `outputs` column of a contract 0.2.0 result in this version's layout
/// (the other columns are the same; its `options` are 0): each 5-number entry
/// becomes an 8-number one with no flags and no filter. Refuses what 0.2.0
/// refused (a length that is not a multiple of 5, an operation it did not have).
pub fn upgrade_legacy_outputs(outputs: &[u32]) -> Result<Vec<u32>, alloc::string::String> {
    const W: usize = OutputEntry::LEGACY_WIDTH;
    if !outputs.len().is_multiple_of(W) {
        return Err(alloc::format!("{} output numbers: not a multiple of {W}", outputs.len()));
    }
    let mut out = Vec::with_capacity(outputs.len() / W * OutputEntry::WIDTH);
    for (j, w) in outputs.chunks_exact(W).enumerate() {
        if w[0] as usize >= Operation::LEGACY.len() {
            return Err(alloc::format!("output {j}: unknown operation {}", w[0]));
        }
        let entry = OutputEntry {
            operation: w[0],
            flags: 0,
            filter: Span::ABSENT,
            document: Span { start: w[1], len: w[2] },
            collection: Span { start: w[3], len: w[4] },
        };
        out.extend_from_slice(&entry.to_words());
    }
    Ok(out)
}

/// Marks an error outcome as invalid input (the record's value is absent, not
/// JSON, or not a JSON object) rather than a plugin error: these bytes lie in
/// `data` immediately before the error message. Hosts that do not know the tag
/// never read them, so the message and the WIT are unchanged.
pub const INVALID_INPUT_TAG: &[u8] = b"\0sluice:invalid-input\0";

/// The messages that SDKs before [`INVALID_INPUT_TAG`] gave invalid input.
/// A host still reads an error outcome whose message starts with one of these
/// as invalid input, so plugins built before the tag behave as they did.
pub const LEGACY_INVALID_INPUT_PREFIXES: [&str; 3] = ["value is not JSON", "value is not a JSON object", "record has no value"];

/// Whether the error message at `message` in a result's `data` signals invalid
/// input: tagged with [`INVALID_INPUT_TAG`], or (plugins built before the tag)
/// starting with one of [`LEGACY_INVALID_INPUT_PREFIXES`].
pub fn is_invalid_input(data: &[u8], message: Span) -> bool {
    let start = message.start as usize;
    let tagged = start >= INVALID_INPUT_TAG.len() && data.get(start - INVALID_INPUT_TAG.len()..start) == Some(INVALID_INPUT_TAG);
    tagged || message.get(data).is_some_and(|m| LEGACY_INVALID_INPUT_PREFIXES.iter().any(|p| m.starts_with(p.as_bytes())))
}
