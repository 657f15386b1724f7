//! [`DeadLetter`]: a dead-lettered record read back from the DLQ topic.

use std::collections::BTreeMap;

/// One dead-lettered record as read back from the DLQ topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Keys and values as text (bytes that are not UTF-8 become U+FFFD).
    pub headers: BTreeMap<String, String>,
    /// As they came, keys as bytes, in order.
    pub raw_headers: Vec<sluice::kafka_raw::Header>,
}

impl DeadLetter {
    pub fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> DeadLetter {
        use rdkafka::Message as _;
        let raw_headers = m.headers().map(sluice::kafka_raw::read_headers).unwrap_or_default();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let headers = raw_headers.iter().map(|(k, v)| (text(k), text(v.as_deref().unwrap_or_default()))).collect();
        DeadLetter { key: m.key().map(<[u8]>::to_vec), value: m.payload().map(<[u8]>::to_vec), headers, raw_headers }
    }

    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or_else(|| panic!("no header {k} in {:?}", self.headers))
    }
}
