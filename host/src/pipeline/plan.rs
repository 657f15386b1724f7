//! The write plan: what a batch's chain results become in MongoDB — each output
//! parsed to BSON, inserts given their derived `_id`, the chain's versions
//! recorded, and what MongoDB would refuse failed before it is sent. The
//! pipeline writes it; `sluice plugin test` prints it; `sluice dlq replay` uses it.

use mongodb::bson::{Bson, RawBsonRef, RawDocumentBuf};

use crate::mongo::encode::json_to_bson;
use crate::mongo::sink::WriteOp;
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
    let mut plan = Plan { ops: Vec::with_capacity(records.len()), op_source: Vec::with_capacity(records.len()), ..Plan::default() };
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
        for out in outputs.iter() {
            let parsed = match out.collection.as_deref().and_then(|c| target.refuses(c)) {
                Some(refusal) => Err(refusal),
                None => json_to_bson(results.document(out)),
            };
            let mut doc = match parsed {
                Ok(doc) => doc,
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
            if let (Some(field), Some(versions)) = (target.versions_field, &versions)
                && out.op != Op::Delete
            {
                set_field(&mut doc, field, versions);
            }
            let op = WriteOp { op: out.op, collection: out.collection.clone(), doc, derived_id, replay: false };
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
        let out = |c: &str| ChainOutput { op: Op::Upsert, collection: Some(c.into()), document: 0..12 };
        let results =
            Results { outputs: vec![out("orders"), out("progress")], records: vec![Ok(0..1), Ok(1..2)], data: br#"{"_id": "x"}"#.to_vec() };
        let p = plan(&ChainSpec::new(1, vec![]), &target, &[rec.clone(), rec], &results);
        assert_eq!((p.ops.len(), p.op_source.as_slice()), (1, &[0][..]));
        assert_eq!(p.failures.len(), 1);
        assert!(p.failures[0].1.message.contains("progress store"), "{:?}", p.failures);
    }

    mod properties {
        use super::super::*;
        use crate::plugin::chain::{ChainOutput, Results};
        use crate::record::parse_derived_id;
        use proptest::prelude::*;
        use std::sync::Arc;

        /// One output: an operation, maybe a collection, and a document that may or may not be JSON.
        fn output() -> impl Strategy<Value = (u8, Option<String>, Vec<u8>)> {
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
            (0u8..3, collection, doc)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Whatever the plugins return, planning never panics and every record
            /// ends exactly one way: written (its ops, in record order), failed, or dropped.
            #[test]
            fn every_record_is_planned_exactly_once(records in prop::collection::vec(prop::collection::vec(output(), 0..4), 1..12)) {
                let mut results = Results { outputs: Vec::new(), records: Vec::new(), data: Vec::new() };
                for outs in &records {
                    let first = results.outputs.len();
                    for (op, collection, doc) in outs {
                        let start = results.data.len();
                        results.data.extend_from_slice(doc);
                        let op = [Op::Insert, Op::Upsert, Op::Delete][*op as usize];
                        results.outputs.push(ChainOutput { op, collection: collection.clone(), document: start..results.data.len() });
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
