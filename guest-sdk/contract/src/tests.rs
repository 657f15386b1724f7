//! The contract version against the WIT, and the columns against `wit/vectors.json`
//! in both directions (read with a small JSON reader: the crate has no dependencies).

use std::borrow::ToOwned;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;
use std::{format, println};

use super::*;

#[test]
fn the_version_is_the_wit_package() {
    let wit = include_str!("../../wit/plugin.wit");
    let line = wit.lines().find(|l| l.starts_with("package ")).expect("a package line");
    assert_eq!(line, format!("package {PACKAGE};"));
    assert_eq!(PACKAGE, format!("sluice:plugin@{VERSION}"));
    assert!(HOST_INTERFACE.starts_with(INTERFACE_PREFIX) && HOST_INTERFACE.ends_with(VERSION));
    assert!(wit.contains("interface host"));
}

#[test]
fn the_codes_and_widths_are_those_of_the_wit() {
    let wit = include_str!("../../wit/plugin.wit");
    assert!(wit.contains("`spans[6i .. 6i+6]`") && RecordSpans::WIDTH == 6);
    assert!(wit.contains("`header-spans[4h .. 4h+4]`") && HeaderSpans::WIDTH == 4);
    assert!(wit.contains("`outcomes[3i .. 3i+3]`") && OutcomeEntry::WIDTH == 3);
    assert!(wit.contains("`outputs[8j .. 8j+8]`") && OutputEntry::WIDTH == 8);
    assert!(wit.contains("bit 0 (1), upsert") && FLAG_UPSERT == 1);
    assert!(wit.contains("bit 0 (1), ordered") && OPTION_ORDERED == 1);
    assert!(wit.contains("4294967295 (0xffffffff)") && ABSENT == 4294967295);
    for k in OutcomeKind::ALL {
        assert!(wit.contains(&format!("kind {}, {}", k.code(), k.name())), "{k:?}");
        assert_eq!(OutcomeKind::from_code(k.code()), Some(k));
    }
    for op in Operation::ALL {
        assert!(wit.contains(&format!("operation {}, {}", op.code(), op.name())), "{op:?}");
        assert_eq!(Operation::from_code(op.code()), Some(op));
    }
    assert_eq!((OutcomeKind::from_code(3), Operation::from_code(6)), (None, None));
}

#[test]
fn an_error_discards_what_the_record_emitted() {
    let mut w = ResultColumns::default();
    let mark = w.mark();
    w.output(Operation::Insert, b"{\"a\":1}", Some("c"));
    w.failed(mark, "second output failed", false);
    let mark = w.mark();
    w.output(Operation::Delete, b"{\"_id\":2}", None);
    w.emitted(mark);
    assert_eq!(w.outcomes, [2, 0, 20, 1, 0, 1]);
    assert_eq!(w.outputs, [2, 0, 0, ABSENT, 20, 9, 0, ABSENT]);
    assert_eq!(&w.data[..20], b"second output failed");
}

#[test]
fn the_legacy_contract_is_the_one_kept_beside_the_wit() {
    let wit = include_str!("../../wit/legacy/plugin-0.2.0.wit");
    assert!(wit.lines().any(|l| l == format!("package {LEGACY_PACKAGE};")));
    assert!(wit.contains("`outputs[5j .. 5j+5]`") && OutputEntry::LEGACY_WIDTH == 5);
    assert!(LEGACY_HOST_INTERFACE.ends_with(LEGACY_VERSION));
    for op in Operation::LEGACY {
        assert!(wit.contains(&format!("operation {}, {}", op.code(), op.name())), "{op:?}");
    }
    assert_eq!(upgrade_legacy_outputs(&[1, 2, 3, 4]).unwrap_err(), "4 output numbers: not a multiple of 5");
    assert_eq!(upgrade_legacy_outputs(&[3, 0, 2, 0, ABSENT]).unwrap_err(), "output 0: unknown operation 3");
}

#[test]
fn the_invalid_input_tag_must_be_just_before_the_message() {
    let mut data = INVALID_INPUT_TAG.to_vec();
    data.extend_from_slice(b"xbad");
    let at = INVALID_INPUT_TAG.len() as u32;
    assert!(is_invalid_input(&data, Span { start: at, len: 4 }));
    assert!(!is_invalid_input(&data, Span { start: at + 1, len: 3 }), "one byte off");
    assert!(!is_invalid_input(&data, Span { start: 0, len: 1 }));
    assert!(is_invalid_input(b"record has no value (tombstone)", Span { start: 0, len: 31 }));
    assert!(!is_invalid_input(b"reading: value is not JSON", Span { start: 0, len: 26 }), "a prefix, not anywhere");
}

// ---- the vectors ----

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(i128),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v).unwrap_or(&Json::Null),
            _ => panic!("not an object: {self:?}"),
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn num(&self) -> i128 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn opt(&self) -> Option<&Json> {
        (*self != Json::Null).then_some(self)
    }
    fn bytes(&self) -> Vec<u8> {
        let s = self.str();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }
    fn nums<T: TryFrom<i128>>(&self) -> Vec<T> {
        self.arr().iter().map(|n| T::try_from(n.num()).ok().expect("in range")).collect()
    }
}

/// Enough JSON for the vectors: no floats, no escapes beyond `\"`, `\\` and `\uXXXX`.
fn parse(text: &str) -> Json {
    fn ws(s: &mut &str) {
        *s = s.trim_start();
    }
    fn value(s: &mut &str) -> Json {
        ws(s);
        let c = s.chars().next().expect("more JSON");
        if let Some(rest) = s.strip_prefix("null") {
            *s = rest;
            return Json::Null;
        }
        for (word, b) in [("true", true), ("false", false)] {
            if let Some(rest) = s.strip_prefix(word) {
                *s = rest;
                return Json::Bool(b);
            }
        }
        match c {
            '"' => Json::Str(string(s)),
            '[' => {
                *s = &s[1..];
                let mut items = Vec::new();
                loop {
                    ws(s);
                    if let Some(rest) = s.strip_prefix(']') {
                        *s = rest;
                        return Json::Arr(items);
                    }
                    if let Some(rest) = s.strip_prefix(',') {
                        *s = rest;
                    }
                    items.push(value(s));
                }
            }
            '{' => {
                *s = &s[1..];
                let mut fields = Vec::new();
                loop {
                    ws(s);
                    if let Some(rest) = s.strip_prefix('}') {
                        *s = rest;
                        return Json::Obj(fields);
                    }
                    if let Some(rest) = s.strip_prefix(',') {
                        *s = rest;
                        ws(s);
                    }
                    let key = string(s);
                    ws(s);
                    *s = s.strip_prefix(':').expect(":");
                    fields.push((key, value(s)));
                }
            }
            _ => {
                let end = s.find(|c: char| !(c == '-' || c.is_ascii_digit())).unwrap_or(s.len());
                let n = s[..end].parse().expect("an integer");
                *s = &s[end..];
                Json::Num(n)
            }
        }
    }
    fn string(s: &mut &str) -> String {
        *s = s.strip_prefix('"').expect("a string");
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    *s = &s[i + 1..];
                    return out;
                }
                '\\' => match chars.next().expect("an escape").1 {
                    'u' => {
                        let hex: String = (0..4).map(|_| chars.next().expect("4 hex digits").1).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).expect("a char"));
                    }
                    'n' => out.push('\n'),
                    e => out.push(e),
                },
                c => out.push(c),
            }
        }
        panic!("an unterminated string")
    }
    let mut s = text;
    let v = value(&mut s);
    assert!(s.trim().is_empty(), "trailing JSON");
    v
}

fn vectors() -> Json {
    parse(include_str!("../../wit/vectors.json"))
}

type Record = (i64, Option<i64>, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn record(r: &Json) -> Record {
    let headers = r.get("headers").arr().iter().map(|h| (h.arr()[0].bytes(), h.arr()[1].opt().map(Json::bytes))).collect();
    (
        r.get("offset").num() as i64,
        r.get("timestamp").opt().map(|t| t.num() as i64),
        r.get("key").opt().map(Json::bytes),
        r.get("value").opt().map(Json::bytes),
        headers,
    )
}

#[test]
fn the_vectors_are_of_this_contract() {
    let v = vectors();
    assert_eq!(v.get("contract").str(), PACKAGE);
    assert_eq!(v.get("absent").num(), ABSENT as i128);
    assert_eq!(v.get("no_timestamp").num(), NO_TIMESTAMP as i128);
    assert_eq!(v.get("invalid_input_tag").bytes(), INVALID_INPUT_TAG);
}

#[test]
fn batches_match_the_vectors_both_ways() {
    let v = vectors();
    for b in v.get("batches").arr() {
        let name = b.get("name").str();
        let records: Vec<Record> = b.get("records").arr().iter().map(record).collect();
        let cols = b.get("columns");
        // Records -> columns (what a host writes).
        let (mut offsets, mut timestamps, mut spans, mut header_spans, mut data) = (vec![], vec![], vec![], vec![], vec![]);
        let mut w = BatchColumns {
            offsets: &mut offsets,
            timestamps: &mut timestamps,
            spans: &mut spans,
            header_spans: &mut header_spans,
            data: &mut data,
        };
        for (offset, ts, key, value, headers) in &records {
            w.push(*offset, *ts, key.as_deref(), value.as_deref(), headers.iter().map(|(k, v)| (k.as_slice(), v.as_deref())));
        }
        assert_eq!(offsets, cols.get("offsets").nums::<i64>(), "{name}: offsets");
        assert_eq!(timestamps, cols.get("timestamps").nums::<i64>(), "{name}: timestamps");
        assert_eq!(spans, cols.get("spans").nums::<u32>(), "{name}: spans");
        assert_eq!(header_spans, cols.get("header_spans").nums::<u32>(), "{name}: header_spans");
        assert_eq!(data, cols.get("data").bytes(), "{name}: data");
        // Columns -> records (what a plugin reads).
        let view = BatchView { offsets: &offsets, timestamps: &timestamps, spans: &spans, header_spans: &header_spans, data: &data };
        let read: Vec<Record> = view
            .records()
            .map(|r| {
                let headers = r.headers().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
                (r.offset, r.timestamp, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec), headers)
            })
            .collect();
        let expected: Vec<Record> = match b.get("decoded").opt() {
            Some(d) => d.arr().iter().map(record).collect(),
            None => records,
        };
        assert_eq!(read, expected, "{name}: records read");
    }
}

/// An outcome as the vectors write it.
#[derive(Debug, PartialEq)]
enum Expected {
    Drop,
    Emit(Vec<(Operation, Option<String>, Option<String>, bool, Option<String>)>),
    Error(String, bool),
}

fn expected(o: &Json) -> Expected {
    match o.get("kind").str() {
        "drop" => Expected::Drop,
        "emit" => Expected::Emit(
            o.get("outputs")
                .arr()
                .iter()
                .map(|out| {
                    let op = Operation::ALL.into_iter().find(|op| op.name() == out.get("operation").str()).expect("an operation");
                    (
                        op,
                        out.get("filter").opt().map(|c| c.str().to_owned()),
                        out.get("document").opt().map(|c| c.str().to_owned()),
                        out.get("upsert") == &Json::Bool(true),
                        out.get("collection").opt().map(|c| c.str().to_owned()),
                    )
                })
                .collect(),
        ),
        "error" => Expected::Error(o.get("message").str().to_owned(), o.get("invalid_input") == &Json::Bool(true)),
        k => panic!("unknown kind {k}"),
    }
}

fn read(view: &ResultView, i: usize) -> Expected {
    match view.outcome(i) {
        Outcome::Drop => Expected::Drop,
        Outcome::Emit(range) => Expected::Emit(
            range
                .map(|j| {
                    let o = view.output(j);
                    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                    let document = o.operation.has_document().then(|| text(o.document));
                    (o.operation, o.filter.map(text), document, o.upsert, o.collection.map(ToString::to_string))
                })
                .collect(),
        ),
        Outcome::Error(e) => Expected::Error(e.message().into_owned(), e.invalid_input),
    }
}

#[test]
fn results_match_the_vectors_both_ways() {
    let v = vectors();
    for r in v.get("results").arr() {
        let name = r.get("name").str();
        let outcomes: Vec<Expected> = r.get("outcomes").arr().iter().map(expected).collect();
        let cols = r.get("columns");
        let (o, p, d) = (cols.get("outcomes").nums::<u32>(), cols.get("outputs").nums::<u32>(), cols.get("data").bytes());
        let options = cols.get("options").num() as u32;
        // Outcomes -> columns (what a plugin writes).
        if r.get("decode_only") != &Json::Bool(true) {
            let mut w = ResultColumns::default();
            for outcome in &outcomes {
                let mark = w.mark();
                match outcome {
                    Expected::Drop => w.emitted(mark),
                    Expected::Emit(outputs) => {
                        for (op, filter, doc, upsert, coll) in outputs {
                            let flags = if *upsert { FLAG_UPSERT } else { 0 };
                            match (filter, doc) {
                                (None, Some(doc)) if flags == 0 => w.output(*op, doc.as_bytes(), coll.as_deref()),
                                _ => w.output_full(
                                    *op,
                                    flags,
                                    filter.as_deref().map(str::as_bytes),
                                    doc.as_deref().map(str::as_bytes),
                                    coll.as_deref(),
                                ),
                            }
                        }
                        w.emitted(mark);
                    }
                    Expected::Error(m, invalid) => w.failed(mark, m, *invalid),
                }
            }
            w.set_ordered(r.get("ordered") == &Json::Bool(true));
            assert_eq!((&w.outcomes, &w.outputs, &w.data, w.options), (&o, &p, &d, options), "{name}: columns written");
        }
        // Columns -> outcomes (what a host reads).
        let view = ResultView { outcomes: &o, outputs: &p, data: &d, options };
        assert_eq!(view.ordered(), r.get("ordered") == &Json::Bool(true), "{name}: ordered");
        let records = r.get("records").num() as usize;
        assert_eq!(records, outcomes.len(), "{name}");
        view.check(records).unwrap_or_else(|e| panic!("{name}: {e}"));
        let read: Vec<Expected> = (0..records).map(|i| read(&view, i)).collect();
        assert_eq!(read, outcomes, "{name}: outcomes read");
        println!("{name}: ok");
    }
}

#[test]
fn malformed_results_are_refused_as_the_vectors_say() {
    let v = vectors();
    for m in v.get("malformed").arr() {
        let cols = m.get("columns");
        let (o, p, d) = (cols.get("outcomes").nums::<u32>(), cols.get("outputs").nums::<u32>(), cols.get("data").bytes());
        let options = cols.get("options").num() as u32;
        let view = ResultView { outcomes: &o, outputs: &p, data: &d, options };
        let err = view.check(m.get("records").num() as usize).expect_err(m.get("name").str());
        assert!(err.contains(m.get("error").str()), "{}: {err}", m.get("name").str());
    }
}

#[test]
fn legacy_results_are_read_through_the_upgrade() {
    let v = vectors();
    for r in v.get("legacy").arr() {
        let name = r.get("name").str();
        let outcomes: Vec<Expected> = r.get("outcomes").arr().iter().map(expected).collect();
        let cols = r.get("columns");
        let (o, p, d) = (cols.get("outcomes").nums::<u32>(), cols.get("outputs").nums::<u32>(), cols.get("data").bytes());
        let p = upgrade_legacy_outputs(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let view = ResultView { outcomes: &o, outputs: &p, data: &d, options: 0 };
        view.check(outcomes.len()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let read: Vec<Expected> = (0..outcomes.len()).map(|i| read(&view, i)).collect();
        assert_eq!(read, outcomes, "{name}: outcomes read");
    }
}
