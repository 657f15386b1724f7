//! The SDK's own tests: plugin functions through the ABI glue, natively.

use super::__private::*;
use super::*;

fn rec(v: &str) -> Record<'_> {
    Record::new("t", 1, 42, v)
}

/// Run `f` on one record through a fresh writer and decode its outcome.
fn one(f: impl FnOnce(&mut ResultWriter) -> Result<()>) -> Outcome {
    let mut w = ResultWriter::default();
    w.record(f);
    w.outcome(0)
}

#[test]
fn filter_keeps_drops_and_reports_bad_json() {
    let mut even = |v: &Value, _: &Record| Ok(v["num"].as_i64().unwrap_or(1) % 2 == 0);
    assert_eq!(one(|w| filter_one(&rec(r#"{"num":2}"#), &mut even, w)), Outcome::Emit(vec![Output::insert(json!({"num": 2}))]));
    assert_eq!(one(|w| filter_one(&rec(r#"{"num":3}"#), &mut even, w)), Outcome::Drop);
    match one(|w| filter_one(&rec("not json"), &mut even, w)) {
        Outcome::Error(m) => assert!(m.starts_with("value is not JSON"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut tomb = rec("{}");
    tomb.value = None;
    assert_eq!(one(|w| filter_one(&tomb, &mut even, w)), Outcome::Error("record has no value (tombstone)".into()));
}

#[test]
fn map_none_drops_and_err_is_data() {
    let mut f = |v: Value, _: &Record| -> Result<Option<Value>> {
        match v["num"].as_i64() {
            Some(0) => Ok(None),
            Some(n) => Ok(Some(json!({ "n": n }))),
            None => Err(anyhow!("no num")).map_err(|e| e.context("reading")),
        }
    };
    assert_eq!(one(|w| map_one(&rec(r#"{"num":0}"#), &mut f, w)), Outcome::Drop);
    assert_eq!(one(|w| map_one(&rec(r#"{"num":5}"#), &mut f, w)), Outcome::Emit(vec![Output::insert(json!({"n": 5}))]));
    assert_eq!(one(|w| map_one(&rec(r#"{}"#), &mut f, w)), Outcome::Error("reading: no num".into()));
    let mut to_array = |_: Value, _: &Record| -> Result<Value> { Ok(json!([1])) };
    assert_eq!(one(|w| map_one(&rec(r#"{}"#), &mut to_array, w)), Outcome::Error("the output is not a JSON object: [1]".into()));
    let mut keep = |_: &Value, _: &Record| Ok(true);
    assert_eq!(one(|w| filter_one(&rec("[1]"), &mut keep, w)), Outcome::Error("value is not a JSON object: [1]".into()));
}

#[test]
fn flat_map_fans_out_and_empty_is_drop() {
    let mut f = |v: Value, _: &Record| -> Result<Vec<Output>> {
        let n = v["num"].as_i64().unwrap_or(0);
        Ok((0..n).map(|i| Output::upsert(json!({ "_id": i })).in_collection("c")).collect())
    };
    assert_eq!(one(|w| flat_map_one(&rec(r#"{"num":0}"#), &mut f, w)), Outcome::Drop);
    match one(|w| flat_map_one(&rec(r#"{"num":2}"#), &mut f, w)) {
        Outcome::Emit(o) => {
            assert_eq!(o.len(), 2);
            assert_eq!(o[1].operation, Operation::Upsert);
            assert_eq!(o[1].collection.as_deref(), Some("c"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_error_after_some_outputs_discards_them() {
    let mut w = ResultWriter::default();
    w.record(|w| {
        w.emit_json(Operation::Insert, &json!({"a": 1}), None)?;
        bail!("second output failed")
    });
    w.record(|w| w.emit_json(Operation::Delete, &json!({"_id": 2}), Some("other")));
    assert_eq!(w.outcome(0), Outcome::Error("second output failed".into()));
    assert_eq!(w.outcome(1), Outcome::Emit(vec![Output::delete(json!(2)).in_collection("other")]));
    assert_eq!(w.outputs.len(), sluice_contract::OutputEntry::WIDTH, "the discarded output left no trace");
}

#[test]
fn a_batch_is_read_from_the_contract_columns() {
    // Two records: key "k" + value {"num":1} with header h=v; then a tombstone without key.
    let data = br#"k{"num":1}hv"#;
    let spans = [0, 1, 1, 9, 0, 1, 0, ABSENT, 0, ABSENT, 1, 0];
    let header_spans = [10, 1, 11, 1];
    let mut seen = Vec::new();
    let w = for_each_record("t", 3, &[7, 8], &[1000, -1], &spans, &header_spans, data, |r, w| {
        seen.push((r.key_str().map(str::to_owned), r.timestamp, r.header("h").flatten().map(<[u8]>::to_vec), r.offset, r.partition));
        map_one(r, &mut |v: Value, _: &Record| Ok(v), w)
    });
    assert_eq!(seen, [(Some("k".into()), Some(1000), Some(b"v".to_vec()), 7, 3), (None, None, None, 8, 3)]);
    assert_eq!(w.outcome(0), Outcome::Emit(vec![Output::insert(json!({"num": 1}))]));
    assert_eq!(w.outcome(1), Outcome::Error("record has no value (tombstone)".into()));
}

#[test]
fn params_and_init() {
    let p = Params::from_pairs([("a", "1"), ("b", "x")]);
    assert_eq!(p.parse_or("a", 0i64).unwrap(), 1);
    assert_eq!(p.parse_or("zz", 7i64).unwrap(), 7);
    assert!(p.parse_or::<i64>("b", 0).unwrap_err().to_string().contains("parameter `b`"));
    assert!(p.require("nope").unwrap_err().to_string().contains("`nope`"));
    fn failing(_: &Params) -> Result<()> {
        bail!("bad factor")
    }
    assert_eq!(run_init(vec![], Some(failing)), Err("bad factor".into()));
    assert_eq!(run_init(vec![], None), Ok(()));
}

#[test]
fn record_helpers() {
    let mut r = rec("{}");
    r.key = Some(b"k1");
    r.headers = vec![("h", Some(b"v")), ("e", None)];
    assert_eq!(r.key_str(), Some("k1"));
    assert_eq!(r.header("h"), Some(Some(&b"v"[..])));
    assert_eq!(r.header("e"), Some(None));
    assert_eq!(r.header("x"), None);
}

/// Whether outcome `i` is an error whose message carries the contract's invalid-input tag.
fn tagged(w: &ResultWriter, i: usize) -> bool {
    let tag = sluice_contract::INVALID_INPUT_TAG;
    let (kind, first) = (w.outcomes[3 * i], w.outcomes[3 * i + 1] as usize);
    kind == 2 && first >= tag.len() && &w.data[first - tag.len()..first] == tag
}

#[test]
fn the_sdks_invalid_input_errors_carry_the_tag_and_others_do_not() {
    let mut w = ResultWriter::default();
    let mut keep = |_: &Value, _: &Record| Ok(true);
    let mut same = |v: Value, _: &Record| Ok(v);
    let mut tomb = rec("{}");
    tomb.value = None;
    w.record(|w| filter_one(&rec("not json"), &mut keep, w));
    w.record(|w| filter_one(&rec("[1]"), &mut keep, w));
    w.record(|w| map_one(&tomb, &mut same, w));
    // The plugin's own errors, even about the value, are its errors.
    w.record(|w| map_one(&rec("{}"), &mut |_: Value, _: &Record| -> Result<Value> { tomb.json().map_err(|e| e.context("reading")) }, w));
    w.record(|w| map_one(&rec("{}"), &mut |_: Value, _: &Record| -> Result<Value> { bail!("no num") }, w));
    w.record(|w| map_one(&rec(r#"{"a":1}"#), &mut same, w));
    let tags: Vec<bool> = (0..6).map(|i| tagged(&w, i)).collect();
    assert_eq!(tags, [true, true, true, false, false, false]);
    // The message is the same as without the tag.
    assert_eq!(w.outcome(2), Outcome::Error("record has no value (tombstone)".into()));
    assert_eq!(w.outcome(3), Outcome::Error("reading: record has no value (tombstone)".into()));
    let view = w.view();
    let invalid: Vec<bool> = (0..6).map(|i| matches!(view.outcome(i), sluice_contract::Outcome::Error(e) if e.invalid_input)).collect();
    assert_eq!(invalid, [true, true, true, false, false, false]);
}

#[test]
fn writes_by_filter_round_trip_through_the_columns() {
    let mut f = |_: Value, _: &Record| -> Result<Vec<Output>> {
        Ok(vec![
            Output::update(json!({"_id": "k"}), json!({"$inc": {"n": 1}})).or_insert(),
            Output::replace_where(json!({"name": "a"}), json!({"name": "a", "v": 2})).in_collection("c"),
            Output::delete_where(json!({"name": {"$gt": ""}})),
            Output::insert(json!({"x": 1})).or_insert(),
        ])
    };
    match one(|w| flat_map_one(&rec("{}"), &mut f, w)) {
        Outcome::Emit(o) => {
            assert_eq!(o[0], Output::update(json!({"_id": "k"}), json!({"$inc": {"n": 1}})).or_insert());
            assert!(o[0].upsert && !o[1].upsert && !o[3].upsert, "or_insert only for update and replace");
            assert_eq!((o[1].operation, o[1].collection.as_deref()), (Operation::Replace, Some("c")));
            assert_eq!(
                (o[2].operation, &o[2].filter, &o[2].document),
                (Operation::DeleteWhere, &Some(json!({"name": {"$gt": ""}})), &Value::Null)
            );
        }
        other => panic!("{other:?}"),
    }
    let mut bad = |_: Value, _: &Record| -> Result<Output> { Ok(Output::update(json!([1]), json!({"$set": {}}))) };
    assert_eq!(one(|w| map_one(&rec("{}"), &mut bad, w)), Outcome::Error("the filter is not a JSON object: [1]".into()));
}

#[test]
fn ordered_is_a_switch_for_every_batch() {
    set_ordered(true);
    let w = for_each_record("t", 0, &[], &[], &[], &[], &[], |_, _| Ok(()));
    assert_eq!(w.options, sluice_contract::OPTION_ORDERED);
    set_ordered(false);
    let w = for_each_record("t", 0, &[], &[], &[], &[], &[], |_, _| Ok(()));
    assert_eq!(w.options, 0);
}
