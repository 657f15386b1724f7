//! The plugin's view of one input record.

use crate::{Result, Value};

/// One input record: a Kafka record, or, later in a chain, one output of the
/// previous plugin (same coordinates, `value` = that output's document). It
/// borrows the batch's buffer: nothing is copied to hand it to your function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the producer or broker set one.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Header keys and values (a header may have no value).
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

impl<'a> Record<'a> {
    /// A record with a value and no key, timestamp or headers (handy in tests).
    pub fn new(topic: &'a str, partition: i32, offset: i64, value: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        Record { topic, partition, offset, timestamp: None, key: None, value: Some(value.as_ref()), headers: Vec::new() }
    }

    /// The first header named `key`, if any (a header without a value gives `Some(None)`).
    pub fn header(&self, key: &str) -> Option<Option<&'a [u8]>> {
        self.headers.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The key as UTF-8 text, if there is a key and it is UTF-8.
    pub fn key_str(&self) -> Option<&'a str> {
        self.key.and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value parsed as JSON; an error that says why when it is absent or not JSON.
    pub fn json(&self) -> Result<Value> {
        let Some(bytes) = self.value else { return Err(InvalidInput::error("record has no value (tombstone)".into())) };
        serde_json::from_slice(bytes).map_err(|e| InvalidInput::error(format!("value is not JSON: {e}")))
    }
}

/// The record's value is absent, not JSON, or not a JSON object. The host
/// counts it as invalid input, not as the plugin's error: the SDK marks its
/// message with the contract's invalid-input tag when it is the whole error
/// (no context added to it).
#[derive(Debug)]
pub(crate) struct InvalidInput(String);

impl InvalidInput {
    pub(crate) fn error(message: String) -> crate::Error {
        crate::Error::new(InvalidInput(message))
    }

    /// Whether `e` is an invalid-input error, as it was made (its message is this one's).
    pub(crate) fn is(e: &crate::Error) -> bool {
        e.downcast_ref::<InvalidInput>().is_some() && e.chain().count() == 1
    }
}

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}
