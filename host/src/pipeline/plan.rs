//! The write plan: what a batch's chain results become in MongoDB — each output
//! parsed to BSON, inserts given their derived `_id`, the chain's versions
//! recorded, and what MongoDB would refuse failed before it is sent. The
//! pipeline writes it; `sluice plugin test` prints it; `sluice dlq replay` uses it.

use mongodb::bson::{Bson, RawBsonRef, RawDocumentBuf};

use crate::mongo::encode::json_to_bson;
use crate::mongo::sink::{Guard, WriteOp, set_in_update};
use crate::plugin::chain::{ChainSpec, Results};
use crate::record::{Failure, FailureKind, Op, SourceRecord, write_derived_id};

/// What a batch's chain results become in MongoDB.
#[derive(Debug, Default)]
pub struct Plan {
    /// The writes, in record order.
    pub ops: Vec<WriteOp>,
    /// For each op, the index of the record it came from.
    pub op_source: Vec<usize>,
    /// Records that failed (in the plugins, or whose output is not a storable document).
    pub failures: Vec<(usize, Failure)>,
    /// Records the plugins dropped.
    pub dropped: u64,
    /// The last plugin asked for its outputs to be written strictly in order.
    pub ordered: bool,
}

/// The update operators a plugin may use (contract 0.3.0); any other top-level
/// key of an update document fails the record as `invalid-output`.
pub const UPDATE_OPERATORS: [&str; 12] =
    ["$set", "$unset", "$inc", "$mul", "$min", "$max", "$currentDate", "$push", "$addToSet", "$pull", "$rename", "$setOnInsert"];

/// The field under which the host keeps, per topic partition, the position of
/// the last update it applied to a document (the replay guard, see [`guard`]).
pub const GUARD_FIELD: &str = "_sluice_src";

/// Outputs per record a guard can tell apart (the position is `offset * GUARD_SLOTS + n`).
pub const GUARD_SLOTS: i64 = 1 << 16;

/// The replay guard of the `n`-th output of `rec`: the field
/// `_sluice_src.<topic>.<partition>` (dots in the topic written `%2E`, so a
/// topic stays one level) and the position `offset * 65536 + n`. An update is
/// applied only to a document whose stored position there is below it (or
/// absent), and stores it; a replayed update finds its own position and is
/// skipped. `None` when the position does not fit (offset beyond 2^47).
pub fn guard(rec: &SourceRecord, n: usize) -> Option<Guard> {
    let position = rec.offset.checked_mul(GUARD_SLOTS)?.checked_add(i64::try_from(n).ok().filter(|&n| n < GUARD_SLOTS)?)?;
    let field = format!("{GUARD_FIELD}.{}.{}", rec.topic.replace('.', "%2E"), rec.partition);
    Some(Guard { field, position })
}

/// A plugin's filter as the host sends it: every top-level `f: v` becomes
/// `f: {$eq: v}`, so a value taken from a record (`{"$gt": ""}`) is matched
/// literally, never read as an operator. A key starting with `$` is refused.
pub fn literal_filter(filter: &RawDocumentBuf) -> Result<RawDocumentBuf, String> {
    let mut out = RawDocumentBuf::new();
    for element in filter.iter() {
        let (key, value) = element.map_err(|e| format!("filter cannot be read as BSON: {e}"))?;
        if key.starts_with('$') {
            return Err(format!("filter key {key:?} is an operator: a filter names fields and values, matched as they are"));
        }
        let mut eq = RawDocumentBuf::new();
        eq.append_ref("$eq", value);
        out.append_ref(key, RawBsonRef::Document(&eq));
    }
    Ok(out)
}

/// Why an update document is not one (every top-level key one of
/// [`UPDATE_OPERATORS`], each with an object of fields), if it is not.
pub fn check_update(update: &RawDocumentBuf) -> Option<String> {
    let mut any = false;
    for element in update.iter() {
        let Ok((key, value)) = element else { return Some("update cannot be read as BSON".into()) };
        if !UPDATE_OPERATORS.contains(&key) {
            return Some(if key.starts_with('$') {
                format!("update operator {key:?} is not allowed (allowed: {})", UPDATE_OPERATORS.join(", "))
            } else {
                format!("update key {key:?} is not an operator: an update document holds only operators ({})", UPDATE_OPERATORS.join(", "))
            });
        }
        if !matches!(value, RawBsonRef::Document(_)) {
            return Some(format!("update operator {key:?} needs an object of fields"));
        }
        any = true;
    }
    (!any).then(|| "update document is empty: it needs at least one operator".into())
}

/// Why a replacement document is not one (a top-level key starting with `$`), if it is not.
fn check_replacement(doc: &RawDocumentBuf) -> Option<String> {
    doc.iter()
        .filter_map(Result::ok)
        .find(|(k, _)| k.starts_with('$'))
        .map(|(k, _)| format!("replacement key {k:?} starts with `$`: a replacement is a document, not operators (use update)"))
}

/// Where outputs go and what they carry.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `pipeline.versions_field`.
    pub versions_field: Option<&'a str>,
    /// `mongo.offsets_collection`: Sluice's own; no plugin output may go there.
    pub offsets_collection: &'a str,
}

impl Target<'_> {
    /// Why a plugin may not write to collection `name`, if it may not.
    fn refuses(&self, name: &str) -> Option<String> {
        if name.is_empty() || name.len() > 200 || name.contains(['\0', '$']) {
            Some(format!("collection name {name:?} is not valid (empty, too long, or with `$` or NUL)"))
        } else if name.starts_with("system.") {
            Some(format!("collection {name:?} is reserved by MongoDB"))
        } else if name == self.offsets_collection {
            Some(format!("collection {name:?} is Sluice's progress store (mongo.offsets_collection)"))
        } else {
            None
        }
    }
}

/// Turn chain results into MongoDB operations, as the pipeline writes them: each
/// output parsed to BSON, inserts without `_id` given `topic:partition:offset:index`,
/// and the chain's versions under `versions_field` (when set) on inserts and upserts.
/// An output for a collection a plugin may not write to fails its record.
pub fn plan(spec: &ChainSpec, target: &Target<'_>, records: &[SourceRecord], results: &Results) -> Plan {
    let mut plan = Plan {
        ops: Vec::with_capacity(records.len()),
        op_source: Vec::with_capacity(records.len()),
        ordered: results.ordered,
        ..Plan::default()
    };
    let mut id = String::new();
    // `{ "plugins": ["name@version", …] }`, once per batch.
    let versions = target.versions_field.map(|_| {
        let list: Vec<Bson> = spec.labels.iter().map(|l| Bson::String(l.clone())).collect();
        RawDocumentBuf::from_document(&mongodb::bson::doc! { "plugins": list }).expect("strings encode as BSON")
    });
    for (i, rec) in records.iter().enumerate() {
        let outputs = match results.get(i) {
            Err(f) => {
                plan.failures.push((i, f.clone()));
                continue;
            }
            Ok([]) => {
                plan.dropped += 1;
                continue;
            }
            Ok(outputs) => outputs,
        };
        let first_op = plan.ops.len();
        // Derived ids number a record's inserts without `_id` only: a version that
        // adds or drops an upsert or delete does not shift them.
        let mut derived = 0usize;
        for (n, out) in outputs.iter().enumerate() {
            let parsed = match out.collection.as_deref().and_then(|c| target.refuses(c)) {
                Some(refusal) => Err(refusal),
                None => parse_output(results, out),
            };
            let (mut doc, filter) = match parsed {
                Ok(parts) => parts,
                Err(message) => {
                    // Without plugins the output is the input: a value that is no JSON object is bad input;
                    // otherwise the last plugin made this output.
                    let f = match spec.plugins.last() {
                        None => Failure { plugin: None, plugin_version: None, kind: FailureKind::InvalidInput, message },
                        Some(p) => Failure {
                            plugin: Some(p.name.clone()),
                            plugin_version: Some(p.version.clone()),
                            kind: FailureKind::InvalidOutput,
                            message,
                        },
                    };
                    plan.ops.truncate(first_op);
                    plan.op_source.truncate(first_op);
                    plan.failures.push((i, f));
                    break;
                }
            };
            let derived_id = out.op == Op::Insert && doc.get("_id").ok().flatten().is_none();
            if derived_id {
                // Derived from the source coordinates: a replay finds it already there.
                write_derived_id(&mut id, rec, derived);
                doc.append_ref("_id", id.as_str());
                derived += 1;
            }
            if let (Some(field), Some(versions)) = (target.versions_field, &versions) {
                match out.op {
                    Op::Insert | Op::Upsert | Op::Replace => set_field(&mut doc, field, versions),
                    Op::Update => doc = set_in_update(&doc, field, RawBsonRef::Document(versions)),
                    Op::Delete | Op::DeleteWhere => {}
                }
            }
            // Every update is guarded (not only `$inc` and the like): an idempotent
            // `$set` replayed after a later guarded `$inc` of the same document would
            // otherwise undo it (see docs/plugins.md, "Replays").
            let guard = match out.op {
                Op::Update => guard(rec, n),
                _ => None,
            };
            let op = WriteOp {
                op: out.op,
                collection: out.collection.clone(),
                doc,
                filter,
                upsert: out.upsert,
                guard,
                derived_id,
                replay: false,
            };
            // What MongoDB would refuse is known now: failed here, where `plugin test` sees it too.
            if let Some(message) = crate::mongo::sink::precheck(&op) {
                let (plugin, plugin_version) = match spec.plugins.last() {
                    Some(p) => (Some(p.name.clone()), Some(p.version.clone())),
                    None => (None, None),
                };
                plan.ops.truncate(first_op);
                plan.op_source.truncate(first_op);
                plan.failures.push((i, Failure { plugin, plugin_version, kind: FailureKind::SinkRejected, message }));
                break;
            }
            plan.ops.push(op);
            plan.op_source.push(i);
        }
    }
    plan
}

/// An output's document and filter as BSON, checked as its operation needs them
/// (`Err`: why the output is invalid).
fn parse_output(results: &Results, out: &crate::plugin::chain::ChainOutput) -> Result<(RawDocumentBuf, Option<RawDocumentBuf>), String> {
    let filter = match results.filter(out) {
        Some(f) => Some(literal_filter(&json_to_bson(f).map_err(|e| format!("filter: {e}"))?)?),
        None if out.op.has_filter() => return Err(format!("{} without a filter", out.op.name())),
        None => None,
    };
    let doc = match out.op {
        Op::DeleteWhere => RawDocumentBuf::new(),
        _ => json_to_bson(results.document(out))?,
    };
    let refusal = match out.op {
        Op::Update => check_update(&doc),
        Op::Replace => check_replacement(&doc),
        _ => None,
    };
    match refusal {
        Some(r) => Err(r),
        None => Ok((doc, filter)),
    }
}

/// The records whose documents MongoDB refused (once each), as failures.
pub fn rejected(rejections: &[crate::mongo::sink::Rejection], op_source: &[usize]) -> Vec<(usize, Failure)> {
    let mut seen = std::collections::HashSet::new();
    rejections
        .iter()
        .filter(|r| seen.insert(op_source[r.index]))
        .map(|r| {
            let message = format!("MongoDB refused the document (code {}): {}", r.code, r.message);
            (op_source[r.index], Failure { plugin: None, plugin_version: None, kind: FailureKind::SinkRejected, message })
        })
        .collect()
}

/// Set `field` to the document `value`: appended, or (when the plugin wrote the
/// field too, which is rare) replaced in place.
fn set_field(doc: &mut RawDocumentBuf, field: &str, value: &RawDocumentBuf) {
    if doc.get(field).ok().flatten().is_none() {
        doc.append_ref(field, RawBsonRef::Document(value));
        return;
    }
    if let (Ok(mut d), Ok(v)) = (doc.to_document(), value.to_document()) {
        d.insert(field, Bson::Document(v));
        if let Ok(raw) = RawDocumentBuf::from_document(&d) {
            *doc = raw;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn plugins_may_not_write_to_sluice_s_or_mongodb_s_own_collections() {
        use crate::plugin::chain::{ChainOutput, Results};
        let target = Target { versions_field: None, offsets_collection: "progress" };
        for name in ["progress", "system.users", "", "a$b", "a\0b"] {
            assert!(target.refuses(name).is_some(), "{name:?}");
        }
        assert_eq!(target.refuses("orders"), None);
        let rec = SourceRecord { topic: Arc::from("t"), partition: 0, offset: 7, timestamp: None, key: None, value: None, headers: vec![] };
        let out = |c: &str| ChainOutput::new(Op::Upsert, Some(c.into()), 0..12);
        let results = Results {
            outputs: vec![out("orders"), out("progress")],
            records: vec![Ok(0..1), Ok(1..2)],
            data: br#"{"_id": "x"}"#.to_vec(),
            ordered: false,
        };
        let p = plan(&ChainSpec::new(1, vec![]), &target, &[rec.clone(), rec], &results);
        assert_eq!((p.ops.len(), p.op_source.as_slice()), (1, &[0][..]));
        assert_eq!(p.failures.len(), 1);
        assert!(p.failures[0].1.message.contains("progress store"), "{:?}", p.failures);
    }

    #[test]
    fn filters_are_literal_and_updates_only_operators() {
        use crate::plugin::chain::{ChainOutput, Results};
        let rec =
            SourceRecord { topic: Arc::from("a.b"), partition: 3, offset: 7, timestamp: None, key: None, value: None, headers: vec![] };
        let mut data = Vec::new();
        let mut outputs = Vec::new();
        let mut records = Vec::new();
        for (op, filter, doc, upsert) in [
            (Op::Update, r#"{"name":{"$gt":""},"_id":1}"#, r#"{"$inc":{"n":1}}"#, true),
            (Op::Update, r#"{"_id":1}"#, r#"{"n":1}"#, false),
            (Op::Update, r#"{"_id":1}"#, r#"{"$where":{"n":1}}"#, false),
            (Op::Update, r#"{"$or":[]}"#, r#"{"$set":{"n":1}}"#, false),
            (Op::Replace, r#"{"_id":1}"#, r#"{"$set":{"n":1}}"#, false),
            (Op::DeleteWhere, r#"{"k":"v"}"#, "", false),
        ] {
            let f = data.len()..data.len() + filter.len();
            data.extend_from_slice(filter.as_bytes());
            let d = data.len()..data.len() + doc.len();
            data.extend_from_slice(doc.as_bytes());
            records.push(Ok(outputs.len()..outputs.len() + 1));
            outputs.push(ChainOutput { op, collection: None, document: d, filter: Some(f), upsert });
        }
        let n = records.len();
        let results = Results { outputs, records, data, ordered: true };
        let target = Target { versions_field: Some("_v"), offsets_collection: "progress" };
        let p = plan(&ChainSpec::new(1, vec![]), &target, &vec![rec.clone(); n], &results);
        assert!(p.ordered);
        assert_eq!(p.op_source, [0, 5]);
        let failed: Vec<(usize, &str)> = p.failures.iter().map(|(i, f)| (*i, f.message.as_str())).collect();
        assert!(failed[0].0 == 1 && failed[0].1.contains("not an operator"), "{failed:?}");
        assert!(failed[1].0 == 2 && failed[1].1.contains("\"$where\" is not allowed"), "{failed:?}");
        assert!(failed[2].0 == 3 && failed[2].1.contains("is an operator"), "{failed:?}");
        assert!(failed[3].0 == 4 && failed[3].1.contains("replacement key"), "{failed:?}");
        let update = &p.ops[0];
        let filter = update.filter.as_ref().unwrap().to_document().unwrap();
        assert_eq!(filter, mongodb::bson::doc! { "name": { "$eq": { "$gt": "" } }, "_id": { "$eq": 1 } });
        assert!(update.upsert);
        assert_eq!(update.guard, Some(Guard { field: "_sluice_src.a%2Eb.3".into(), position: 7 * 65536 }));
        let doc = update.doc.to_document().unwrap();
        assert!(doc.get_document("$set").unwrap().contains_key("_v"), "the versions field is set: {doc}");
        assert_eq!(p.ops[1].guard, None, "no guard on a delete");
        assert_eq!(guard(&SourceRecord { offset: i64::MAX, ..rec }, 0), None, "beyond 2^47");
    }

    mod properties {
        use super::super::*;
        use crate::plugin::chain::{ChainOutput, Results};
        use crate::record::parse_derived_id;
        use proptest::prelude::*;
        use std::sync::Arc;

        /// One output: an operation, maybe a collection, and a document that may or may not be JSON.
        fn output() -> impl Strategy<Value = (u8, Option<String>, Vec<u8>, bool)> {
            let doc = prop_oneof![
                Just(br#"{"num": 1}"#.to_vec()),
                Just(br#"{"_id": "x", "n": 2}"#.to_vec()),
                Just(br#"{"_id": {"$gt": ""}}"#.to_vec()),
                Just(br#"{"$set": {"a": 1}}"#.to_vec()),
                Just(br#"{"big": 18446744073709551615}"#.to_vec()),
                Just(br#"{"a": 1, "a": 2}"#.to_vec()),
                Just(b"[1, 2]".to_vec()),
                prop::collection::vec(any::<u8>(), 0..24),
            ];
            let collection = prop::option::of(prop_oneof![Just("other".to_string()), Just("progress".to_string()), "[a-z$.\\x00]{0,6}"]);
            (0u8..6, collection, doc, any::<bool>())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Whatever the plugins return, planning never panics and every record
            /// ends exactly one way: written (its ops, in record order), failed, or dropped.
            #[test]
            fn every_record_is_planned_exactly_once(records in prop::collection::vec(prop::collection::vec(output(), 0..4), 1..12)) {
                let mut results = Results::default();
                for outs in &records {
                    let first = results.outputs.len();
                    for (op, collection, doc, op_upsert) in outs {
                        let start = results.data.len();
                        results.data.extend_from_slice(doc);
                        let op = [Op::Insert, Op::Upsert, Op::Delete, Op::Update, Op::Replace, Op::DeleteWhere][*op as usize];
                        let document = start..results.data.len();
                        // The filter ops take the document as their filter too.
                        let filter = op.has_filter().then(|| document.clone());
                        results.outputs.push(ChainOutput { op, collection: collection.clone(), document, filter, upsert: *op_upsert });
                    }
                    results.records.push(Ok(first..results.outputs.len()));
                }
                let sources: Vec<SourceRecord> = (0..records.len())
                    .map(|i| SourceRecord { topic: Arc::from("t"), partition: 0, offset: i as i64, timestamp: None, key: None, value: None, headers: vec![] })
                    .collect();
                let target = Target { versions_field: Some("_v"), offsets_collection: "progress" };
                let p = plan(&ChainSpec::new(1, vec![]), &target, &sources, &results);
                let failed: std::collections::BTreeSet<usize> = p.failures.iter().map(|(i, _)| *i).collect();
                let written: std::collections::BTreeSet<usize> = p.op_source.iter().copied().collect();
                prop_assert_eq!(failed.len(), p.failures.len(), "a record fails once");
                prop_assert!(failed.is_disjoint(&written), "a failed record has no ops");
                prop_assert_eq!(failed.len() + written.len() + p.dropped as usize, records.len());
                prop_assert!(p.op_source.windows(2).all(|w| w[0] <= w[1]), "ops in record order");
                for op in &p.ops {
                    prop_assert!(op.doc.to_document().is_ok());
                    prop_assert!(op.collection.as_deref() != Some("progress"), "never Sluice's progress collection");
                    if op.derived_id {
                        prop_assert!(op.doc.get_str("_id").ok().and_then(parse_derived_id).is_some());
                    }
                }
            }
        }
    }
}
