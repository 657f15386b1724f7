//! JSON documents to BSON bytes, in one pass and one buffer: the parser's
//! keys and values are written straight into the BSON encoding that MongoDB
//! receives (no `serde_json::Value` and no `bson::Document` in between, whose
//! per-field allocations and second encoding cost more than the write itself).
//!
//! The mapping is what pymongo and the bson crate do: integers that fit in 32
//! bits become int32, larger ones int64, other numbers doubles; key order is kept.
//! An object whose first key starts with `$` is MongoDB extended JSON
//! (`{"$oid": …}`, `{"$date": …}`, `{"$numberLong": …}`, …) and is converted by
//! the bson crate. Keys may not contain a NUL byte (BSON cannot store it), and
//! an object may not have the same key twice (MongoDB's behaviour with such a
//! document is undefined): both are errors, never a panic or a silent choice.

use mongodb::bson::RawDocumentBuf;
use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

// BSON element types.
const DOUBLE: u8 = 0x01;
const STRING: u8 = 0x02;
const DOCUMENT: u8 = 0x03;
const ARRAY: u8 = 0x04;
const BOOLEAN: u8 = 0x08;
const NULL: u8 = 0x0A;
const INT32: u8 = 0x10;
const INT64: u8 = 0x12;

/// A JSON object as a BSON document. The errors read like the ones the host
/// reports for a plugin's output: "output is not JSON: …", "output is JSON but
/// not an object (found …)", "output cannot be stored as BSON: …".
pub fn json_to_bson(json: &[u8]) -> Result<RawDocumentBuf, String> {
    let mut buf = Vec::with_capacity(json.len() + json.len() / 2 + 16);
    let mut de = serde_json::Deserializer::from_slice(json);
    let kind = de.deserialize_any(ValueVisitor { buf: &mut buf }).and_then(|k| de.end().map(|()| k));
    match kind {
        Ok(DOCUMENT) => RawDocumentBuf::from_bytes(buf).map_err(|e| format!("output cannot be stored as BSON: {e}")),
        Ok(other) => {
            let found = mongodb::bson::spec::ElementType::from(other).map(|t| format!("{t:?}")).unwrap_or_else(|| other.to_string());
            Err(format!("output is JSON but not an object (found {found})"))
        }
        Err(e) if e.is_data() => Err(format!("output cannot be stored as BSON: {e}")),
        Err(e) => Err(format!("output is not JSON: {e}")),
    }
}

/// Writes one value's bytes (after its type byte and key) and returns its type.
struct ValueVisitor<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ValueVisitor<'_> {
    type Value = u8;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u8, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueVisitor<'_> {
    fn int(self, v: i64) -> u8 {
        match i32::try_from(v) {
            Ok(small) => {
                self.buf.extend_from_slice(&small.to_le_bytes());
                INT32
            }
            Err(_) => {
                self.buf.extend_from_slice(&v.to_le_bytes());
                INT64
            }
        }
    }

    /// Reserve a document's length; returns where it starts.
    fn open(buf: &mut Vec<u8>) -> usize {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        start
    }

    /// Terminate the document begun at `start` and write its length.
    fn close(buf: &mut Vec<u8>, start: usize) {
        buf.push(0);
        let len = (buf.len() - start) as i32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = u8;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<u8, E> {
        self.buf.push(v as u8);
        Ok(BOOLEAN)
    }
    fn visit_i64<E>(self, v: i64) -> Result<u8, E> {
        Ok(self.int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u8, E> {
        // A double would silently lose digits (an id, a counter): refused instead.
        match i64::try_from(v) {
            Ok(v) => Ok(self.int(v)),
            Err(_) => Err(E::custom(format!("integer {v} is above BSON's largest integer (int64, {})", i64::MAX))),
        }
    }
    fn visit_f64<E>(self, v: f64) -> Result<u8, E> {
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(DOUBLE)
    }
    fn visit_str<E>(self, v: &str) -> Result<u8, E> {
        self.buf.extend_from_slice(&(v.len() as i32 + 1).to_le_bytes());
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(0);
        Ok(STRING)
    }
    fn visit_unit<E>(self) -> Result<u8, E> {
        Ok(NULL)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u8, A::Error> {
        let buf = self.buf;
        let start = Self::open(buf);
        let mut index = 0usize;
        loop {
            // Type placeholder and key ("0", "1", …) before knowing whether an element follows.
            let at = buf.len();
            buf.push(0);
            buf.extend_from_slice(index.to_string().as_bytes());
            buf.push(0);
            match seq.next_element_seed(ValueVisitor { buf: &mut *buf })? {
                Some(kind) => buf[at] = kind,
                None => {
                    buf.truncate(at);
                    break;
                }
            }
            index += 1;
        }
        Self::close(buf, start);
        Ok(ARRAY)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u8, A::Error> {
        let buf = self.buf;
        let start = Self::open(buf);
        let mut first = true;
        // This object's keys, to refuse a repeated one in linear time.
        let mut keys = KeySet::default();
        loop {
            let at = buf.len();
            buf.push(0);
            if map.next_key_seed(KeyWriter { buf: &mut *buf })?.is_none() {
                buf.truncate(at);
                break;
            }
            let key = (at + 1, buf.len() - 1);
            if !keys.insert(buf, key) {
                let name = String::from_utf8_lossy(&buf[key.0..key.1]).into_owned();
                return Err(de::Error::custom(format!("key {name:?} appears twice in one object")));
            }
            if first && buf.get(at + 1) == Some(&b'$') {
                // Extended JSON: read the whole object as JSON and let the bson crate convert it.
                let key = String::from_utf8_lossy(&buf[at + 1..buf.len() - 1]).into_owned();
                buf.truncate(start);
                return extended(buf, key, map);
            }
            first = false;
            buf[at] = map.next_value_seed(ValueVisitor { buf: &mut *buf })?;
        }
        Self::close(buf, start);
        Ok(DOCUMENT)
    }
}

/// The rest of an object that began with `first` (a `$` key), converted by the
/// bson crate; its value's bytes are appended and its type returned.
fn extended<'de, A: MapAccess<'de>>(buf: &mut Vec<u8>, first: String, mut map: A) -> Result<u8, A::Error> {
    let mut object = serde_json::Map::new();
    object.insert(first, map.next_value()?);
    while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
        if object.contains_key(&k) {
            return Err(de::Error::custom(format!("key {k:?} appears twice in one object")));
        }
        object.insert(k, v);
    }
    let value = mongodb::bson::Bson::try_from(serde_json::Value::Object(object)).map_err(de::Error::custom)?;
    // Encoded as the only element of a document, keyed "": [len][type][""\0][value][\0].
    // (The encoder errs, where appending would panic, on a NUL in a regex or key.)
    let one = RawDocumentBuf::from_document(&mongodb::bson::doc! { "": value }).map_err(de::Error::custom)?;
    let bytes = one.as_bytes();
    buf.extend_from_slice(&bytes[6..bytes.len() - 1]);
    Ok(bytes[4])
}

/// The keys of one object seen so far, as ranges of the output buffer: a scan
/// while few (most objects), a hash set beyond, so an object with n keys costs
/// O(n) comparisons, never O(n²) (a 1 MiB record can hold ~150 000 keys).
#[derive(Default)]
struct KeySet {
    few: Vec<(usize, usize)>,
    many: Option<std::collections::HashSet<Box<[u8]>>>,
    /// Key comparisons made (the linearity test counts them).
    #[cfg(test)]
    compared: usize,
}

impl KeySet {
    const SCAN: usize = 16;

    /// `false` when `buf[key]` is already in the set.
    fn insert(&mut self, buf: &[u8], key: (usize, usize)) -> bool {
        let bytes = &buf[key.0..key.1];
        if let Some(many) = &mut self.many {
            #[cfg(test)]
            {
                self.compared += 1;
            }
            return many.insert(bytes.into());
        }
        #[cfg(test)]
        {
            self.compared += self.few.len();
        }
        if self.few.iter().any(|&(s, e)| &buf[s..e] == bytes) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > Self::SCAN {
            self.many = Some(self.few.drain(..).map(|(s, e)| Box::<[u8]>::from(&buf[s..e])).collect());
        }
        true
    }
}

/// Writes a key as a BSON cstring.
struct KeyWriter<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for KeyWriter<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyWriter<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            return Err(E::custom(format!("key {v:?} contains a NUL byte")));
        }
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{Bson, Document, doc};

    /// Comparisons made for an object of `n` distinct keys, and for one with a repeat at the end.
    fn comparisons(n: usize) -> usize {
        let mut buf = Vec::new();
        let mut keys = KeySet::default();
        for i in 0..n {
            let start = buf.len();
            buf.extend_from_slice(format!("k{i}").as_bytes());
            assert!(keys.insert(&buf, (start, buf.len())));
        }
        let start = buf.len();
        buf.extend_from_slice(b"k0");
        assert!(!keys.insert(&buf, (start, buf.len())), "a repeat is found");
        keys.compared
    }

    #[test]
    fn duplicate_key_checks_are_linear() {
        // Without a clock: 10x the keys cost about 10x the comparisons (a quadratic check: 100x).
        let (small, large) = (comparisons(10_000), comparisons(100_000));
        let ratio = large as f64 / small as f64;
        assert!((9.0..11.0).contains(&ratio), "{small} vs {large} comparisons: ratio {ratio}");
        // And a real object with 150 000 keys converts, with its repeat found.
        let mut json = String::from("{");
        for i in 0..150_000 {
            json.push_str(&format!("\"k{i}\":{i},"));
        }
        let ok = format!("{}}}", json.trim_end_matches(','));
        assert_eq!(json_to_bson(ok.as_bytes()).unwrap().iter().count(), 150_000);
        let repeated = format!("{json}\"k7\":1}}");
        assert!(json_to_bson(repeated.as_bytes()).unwrap_err().contains("\"k7\" appears twice"));
    }

    fn via_value(json: &[u8]) -> Document {
        match Bson::try_from(serde_json::from_slice::<serde_json::Value>(json).unwrap()).unwrap() {
            Bson::Document(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_documents_as_the_bson_crate_makes() {
        for json in [
            &br#"{"num": 3}"#[..],
            br#"{"z": -3, "big": -5000000000, "pos": 5000000000, "f": 1.5, "t": true, "u": false, "n": null, "s": "h\u00e9\"llo\n"}"#,
            br#"{"a": [1, "x", {"k": [[], {}]}, null], "e": {}, "ea": []}"#,
            br#"{"id": {"$oid": "507f1f77bcf86cd799439011"}, "when": {"$date": {"$numberLong": "1700000000000"}}, "l": {"$numberLong": "7"}}"#,
            br#"{"nested": {"deep": {"id": {"$oid": "507f1f77bcf86cd799439011"}}}, "after": 1}"#,
            br#"{"dollar": {"x": 1, "$y": 2}}"#,
        ] {
            let raw = json_to_bson(json).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(json)));
            assert_eq!(raw.to_document().unwrap(), via_value(json), "{}", String::from_utf8_lossy(json));
        }
        let d = json_to_bson(br#"{"z": 1, "a": 2, "max": 9223372036854775807}"#).unwrap().to_document().unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["z", "a", "max"], "order as written");
        assert_eq!(d.get("z"), Some(&Bson::Int32(1)));
        assert_eq!(d.get("max"), Some(&Bson::Int64(i64::MAX)));
        assert_eq!(json_to_bson(br#"{"a": [10, 20]}"#).unwrap().to_document().unwrap(), doc! { "a": [10, 20] });
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (json, needle) in [
            (&b"[1,2]"[..], "not an object (found Array)"),
            (b"5", "not an object (found Int32)"),
            (br#"{"$oid": "507f1f77bcf86cd799439011"}"#, "not an object (found ObjectId)"),
            (b"{", "output is not JSON"),
            (b"{} x", "output is not JSON"),
            (br#"{"num": 9, oops"#, "output is not JSON"),
            (br#"{"a\u0000b": 1}"#, "cannot be stored as BSON: key \"a\\0b\" contains a NUL byte"),
            (br#"{"x": {"$date": "not a date"}}"#, "cannot be stored as BSON"),
            (br#"{"a": 1, "b": 2, "a": 3}"#, "cannot be stored as BSON: key \"a\" appears twice"),
            (br#"{"r": {"$regularExpression": {"pattern": "a\u0000", "options": ""}}}"#, "cannot be stored as BSON"),
            (br#"{"huge": 9223372036854775808}"#, "above BSON's largest integer"),
            (br#"{"huge": [18446744073709551615]}"#, "above BSON's largest integer"),
            (br#"{"l": {"$numberLong": "1", "$numberLong": "2"}}"#, "appears twice"),
        ] {
            let e = json_to_bson(json).unwrap_err();
            assert!(e.contains(needle), "{}: {e}", String::from_utf8_lossy(json));
        }
    }

    mod properties {
        use super::super::json_to_bson;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                "\\PC{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(6, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("[$a-z.\\x00]{0,4}", inner, 0..8)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Any JSON text: a document of bounded size that the bson crate reads back, or an error; never a panic.
            #[test]
            fn any_json_is_a_bounded_document_or_an_error(v in json()) {
                let text = serde_json::to_vec(&v).unwrap();
                if let Ok(doc) = json_to_bson(&text) {
                    prop_assert!(doc.to_document().is_ok());
                    // Each JSON byte becomes at most a few BSON bytes (array keys, lengths, int64).
                    prop_assert!(doc.as_bytes().len() <= 16 + text.len() * 8, "{} -> {}", text.len(), doc.as_bytes().len());
                }
            }

            /// Arbitrary bytes never panic the converter.
            #[test]
            fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = json_to_bson(&bytes);
            }
        }
    }
}
