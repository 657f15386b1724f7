//! Checks of what landed: numbers stored once, where each document came from,
//! which chain version made it.

use std::collections::BTreeMap;

use mongodb::bson::Document;

/// An integer field, whether stored as int32, int64 or an integral double.
pub fn int(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Int32(n)) => *n as i64,
        Some(mongodb::bson::Bson::Double(f)) if f.fract() == 0.0 => *f as i64,
        other => panic!("field `{key}` is not an integer in {d}: {other:?}"),
    }
}

/// Distinct values, duplicates and missing numbers of `num` in `docs`, against 0..n.
pub fn num_report(docs: &[Document], expected: impl IntoIterator<Item = i64>) -> NumReport {
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for d in docs {
        let n = int(d, "num");
        *seen.entry(n).or_default() += 1;
    }
    let expected: Vec<i64> = expected.into_iter().collect();
    // A set for the membership test: runs store 100k+ documents.
    let expected_set: std::collections::HashSet<i64> = expected.iter().copied().collect();
    NumReport {
        missing: expected.iter().filter(|n| !seen.contains_key(n)).copied().collect(),
        duplicates: seen.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect(),
        unexpected: seen.keys().filter(|n| !expected_set.contains(n)).copied().collect(),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct NumReport {
    pub missing: Vec<i64>,
    pub duplicates: Vec<i64>,
    pub unexpected: Vec<i64>,
}

impl NumReport {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.duplicates.is_empty() && self.unexpected.is_empty()
    }
}

/// Where a document came from, from its derived `_id` (`topic:partition:offset:index`).
pub fn source_of(d: &Document) -> (i32, i64) {
    let parsed = d.get_str("_id").ok().and_then(sluice::record::parse_derived_id);
    let (_, partition, offset, _) = parsed.unwrap_or_else(|| panic!("no derived _id in {d}"));
    (partition, offset)
}

/// The chain that made a document, from the versions field: `name@version,…`.
pub fn made_by(d: &Document, field: &str) -> String {
    let plugins = d.get_document(field).and_then(|v| v.get_array("plugins")).unwrap_or_else(|_| panic!("no {field}.plugins in {d}"));
    plugins.iter().map(|b| b.as_str().unwrap().to_owned()).collect::<Vec<_>>().join(",")
}

/// Per partition, (offset, chain that made it) in offset order.
pub fn by_partition(docs: &[Document], field: &str) -> BTreeMap<i32, Vec<(i64, String)>> {
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for d in docs {
        let (p, o) = source_of(d);
        out.entry(p).or_default().push((o, made_by(d, field)));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The runs of one partition: consecutive documents made by the same chain
/// collapse into one (`[v1, v2]` = one switch offset).
pub fn segments(docs: &[(i64, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, v) in docs {
        if out.last() != Some(v) {
            out.push(v.clone());
        }
    }
    out
}
