//! The contract's columns on the host's side: the WIT bindings, a [`Batch`]
//! written with the contract crate's [`BatchColumns`], and a [`BatchResult`]
//! checked and read with its [`ResultView`]. The layout itself lives in
//! `sluice-contract` (and `guest-sdk/wit/columns.md`).

use sluice_contract::{BatchColumns, ResultView};

pub use sluice_contract::{ABSENT, ErrorRef, Operation, OutputRef};

/// The contract this host implements (`sluice:plugin@0.3.0`).
pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/plugin.wit",
        world: "plugin",
    });
}

/// The older contract the host still runs unchanged (`sluice:plugin@0.2.0`): its
/// batch is the same columns, its result is read through
/// [`sluice_contract::upgrade_legacy_outputs`] ([`BatchResult::from_legacy`]).
pub(super) mod legacy_bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit/legacy/plugin-0.2.0.wit",
        world: "plugin",
    });
}

pub use bindings::sluice::plugin::types::{Batch, BatchResult};

/// One record's outcome in a checked [`BatchResult`]: drop, the indices of its
/// outputs ([`BatchResult::output`]), or its error (with whether it signals invalid input).
pub type OutcomeRef<'a> = sluice_contract::Outcome<'a>;

impl Batch {
    /// An empty batch of records from `topic` partition `partition`.
    pub fn new(topic: &str, partition: i32) -> Batch {
        Batch {
            topic: topic.to_owned(),
            partition,
            offsets: Vec::new(),
            timestamps: Vec::new(),
            spans: Vec::new(),
            header_spans: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Empty it for records of `topic` partition `partition`, keeping the buffers.
    pub fn reset(&mut self, topic: &str, partition: i32) {
        if self.topic != topic {
            self.topic.clear();
            self.topic.push_str(topic);
        }
        self.partition = partition;
        self.offsets.clear();
        self.timestamps.clear();
        self.spans.clear();
        self.header_spans.clear();
        self.data.clear();
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Append one record: its bytes go to `data`, where they are go to the columns.
    pub fn push(
        &mut self,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[crate::record::Header],
    ) {
        let headers = headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref()));
        self.columns().push(offset, timestamp, key, value, headers);
    }

    fn columns(&mut self) -> BatchColumns<'_> {
        BatchColumns {
            offsets: &mut self.offsets,
            timestamps: &mut self.timestamps,
            spans: &mut self.spans,
            header_spans: &mut self.header_spans,
            data: &mut self.data,
        }
    }
}

impl Batch {
    /// The same batch in the types of contract 0.2.0 (the columns did not change).
    pub(super) fn to_legacy(&self) -> legacy_bindings::sluice::plugin::types::Batch {
        legacy_bindings::sluice::plugin::types::Batch {
            topic: self.topic.clone(),
            partition: self.partition,
            offsets: self.offsets.clone(),
            timestamps: self.timestamps.clone(),
            spans: self.spans.clone(),
            header_spans: self.header_spans.clone(),
            data: self.data.clone(),
        }
    }
}

impl BatchResult {
    fn view(&self) -> ResultView<'_> {
        ResultView { outcomes: &self.outcomes, outputs: &self.outputs, data: &self.data, options: self.options }
    }

    /// A contract 0.2.0 result in this version's layout (5 numbers per output
    /// become 8; no options). `Err`: it breaks the 0.2.0 rules (malformed).
    pub(super) fn from_legacy(r: legacy_bindings::sluice::plugin::types::BatchResult) -> Result<BatchResult, String> {
        let outputs = sluice_contract::upgrade_legacy_outputs(&r.outputs)?;
        Ok(BatchResult { outcomes: r.outcomes, outputs, data: r.data, options: 0 })
    }

    /// The plugin asked for its outputs to be written in order.
    pub fn ordered(&self) -> bool {
        self.view().ordered()
    }

    /// Every rule of the contract, checked once: afterwards [`outcome`](Self::outcome)
    /// and [`output`](Self::output) cannot fail. A plugin is not trusted.
    pub fn check(&self, records: usize) -> Result<(), String> {
        self.view().check(records)
    }

    /// Outcome of record `i` (after [`check`](Self::check)).
    pub fn outcome(&self, i: usize) -> OutcomeRef<'_> {
        self.view().outcome(i)
    }

    /// Output `j` (after [`check`](Self::check)).
    pub fn output(&self, j: u32) -> OutputRef<'_> {
        self.view().output(j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcomes: &[u32], outputs: &[u32], data: &[u8]) -> BatchResult {
        BatchResult { outcomes: outcomes.to_vec(), outputs: outputs.to_vec(), data: data.to_vec(), options: 0 }
    }

    #[test]
    fn a_batch_result_is_checked_before_it_is_read() {
        let ok = result(&[1, 0, 1, 2, 7, 3, 0, 0, 0], &[0, 0, 0, ABSENT, 0, 7, 10, 1], b"{\"a\":1}errc");
        ok.check(3).unwrap();
        assert!(matches!(ok.outcome(1), OutcomeRef::Error(m) if m.message() == "err"));
        let out = ok.output(0);
        assert_eq!((out.operation, out.document, out.collection), (Operation::Insert, &b"{\"a\":1}"[..], Some("c")));
        for (bad, needle) in [
            (result(&[1, 0, 1], &[0, 0, 0, ABSENT, 0, 7, 0, ABSENT], b"{}"), "document outside"),
            (result(&[1, 0, 2], &[0, 0, 0, ABSENT, 0, 2, 0, ABSENT], b"{}"), "beyond the 1 given"),
            (result(&[1, 0, 1], &[9, 0, 0, ABSENT, 0, 2, 0, ABSENT], b"{}"), "unknown operation 9"),
            (result(&[1, 0, 1], &[3, 0, 0, ABSENT, 0, 2, 0, ABSENT], b"{}"), "update needs a filter"),
            (result(&[9, 0, 0], &[], b""), "unknown outcome kind 9"),
            (result(&[2, 0, 5], &[], b"ab"), "error message outside"),
            (result(&[1, 0, 1], &[0, 0, 0, ABSENT, 0, 2, 1, 1], b"{\xff"), "not UTF-8"),
            (result(&[0, 0, 0, 0, 0, 0], &[], b""), "6 outcome numbers for 1 records"),
            (result(&[1, 4294967295, 2], &[], b""), "beyond"),
        ] {
            let e = bad.check(1).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn a_legacy_result_is_read_in_this_layout() {
        use legacy_bindings::sluice::plugin::types::BatchResult as Legacy;
        let legacy = Legacy { outcomes: vec![1, 0, 1], outputs: vec![1, 0, 9, 0, ABSENT], data: b"{\"_id\":1}".to_vec() };
        let r = BatchResult::from_legacy(legacy).unwrap();
        r.check(1).unwrap();
        let out = r.output(0);
        assert_eq!((out.operation, out.filter, out.document, out.upsert), (Operation::Upsert, None, &b"{\"_id\":1}"[..], false));
        assert!(!r.ordered());
        let bad = Legacy { outcomes: vec![1, 0, 1], outputs: vec![3, 0, 9, 0, ABSENT], data: b"{\"_id\":1}".to_vec() };
        assert_eq!(BatchResult::from_legacy(bad).unwrap_err(), "output 0: unknown operation 3");
    }

    #[test]
    fn a_batch_puts_bytes_in_data_and_places_in_columns() {
        let mut b = Batch::new("t", 2);
        b.push(5, Some(9), Some(b"k"), Some(b"{}"), &[("h".into(), None)]);
        b.push(6, None, None, None, &[]);
        assert_eq!(b.data, b"hk{}");
        assert_eq!(b.header_spans, [0, 1, 0, ABSENT]);
        assert_eq!(b.spans, [1, 1, 2, 2, 0, 1, 0, ABSENT, 0, ABSENT, 1, 0]);
        assert_eq!((b.offsets.as_slice(), b.timestamps.as_slice()), (&[5, 6][..], &[9, -1][..]));
        b.reset("u", 0);
        assert!(b.is_empty() && b.data.is_empty() && b.topic == "u");
    }
}
