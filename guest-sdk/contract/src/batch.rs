//! A batch's columns: written by the host, read by a plugin.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use crate::{HeaderSpans, NO_TIMESTAMP, RecordSpans, Span};

/// Writes records into a batch's columns (the WIT `batch` record's lists).
/// It borrows them, so a host can write straight into its generated bindings.
pub struct BatchColumns<'a> {
    pub offsets: &'a mut Vec<i64>,
    pub timestamps: &'a mut Vec<i64>,
    pub spans: &'a mut Vec<u32>,
    pub header_spans: &'a mut Vec<u32>,
    pub data: &'a mut Vec<u8>,
}

impl BatchColumns<'_> {
    /// Append one record: its headers' bytes, then its key's and value's go to
    /// `data`; where they lie goes to the integer columns. A header key that is
    /// not UTF-8 (the contract promises UTF-8) is written with U+FFFD for its bad bytes.
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'h [u8], Option<&'h [u8]>)>,
    ) {
        self.offsets.push(offset);
        self.timestamps.push(timestamp.unwrap_or(NO_TIMESTAMP));
        let first_header = (self.header_spans.len() / HeaderSpans::WIDTH) as u32;
        let mut header_count = 0;
        for (k, v) in headers {
            let key = Span::append(self.data, Some(String::from_utf8_lossy(k).as_bytes()));
            let value = Span::append(self.data, v);
            self.header_spans.extend_from_slice(&HeaderSpans { key, value }.to_words());
            header_count += 1;
        }
        let key = Span::append(self.data, key);
        let value = Span::append(self.data, value);
        self.spans.extend_from_slice(&RecordSpans { key, value, first_header, header_count }.to_words());
    }
}

/// Reads a batch's columns. The host wrote them: a span outside `data` is a
/// host bug and panics.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub offsets: &'a [i64],
    pub timestamps: &'a [i64],
    pub spans: &'a [u32],
    pub header_spans: &'a [u32],
    pub data: &'a [u8],
}

/// One record of a [`BatchView`].
#[derive(Debug, Clone)]
pub struct RecordRef<'a> {
    pub offset: i64,
    /// Milliseconds since the Unix epoch; `None` for [`NO_TIMESTAMP`].
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None`: a tombstone.
    pub value: Option<&'a [u8]>,
    headers: Range<usize>,
    header_spans: &'a [u32],
    data: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Its headers, key and value (a header may have no value). Keys are UTF-8
    /// as the contract promises, but not checked here.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let (header_spans, data) = (self.header_spans, self.data);
        self.headers.clone().map(move |h| {
            let hs = HeaderSpans::at(header_spans, h);
            (hs.key.read(data).unwrap_or_default(), hs.value.read(data))
        })
    }
}

impl<'a> BatchView<'a> {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Record `i`.
    pub fn record(&self, i: usize) -> RecordRef<'a> {
        let s = RecordSpans::at(self.spans, i);
        let ts = self.timestamps[i];
        RecordRef {
            offset: self.offsets[i],
            timestamp: (ts != NO_TIMESTAMP).then_some(ts),
            key: s.key.read(self.data),
            value: s.value.read(self.data),
            headers: s.first_header as usize..s.first_header as usize + s.header_count as usize,
            header_spans: self.header_spans,
            data: self.data,
        }
    }

    /// Every record, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordRef<'a>> + '_ {
        (0..self.len()).map(|i| self.record(i))
    }
}
