//! `sluice count`: the documents in the configured collection, optionally
//! checked against the tutorial's numbers, or counted by the chain version
//! that made them.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use clap::Args;
use mongodb::bson::doc;

use super::common::ConfigArg;
use crate::config::Config;
use crate::mongo::sink::Sink;

#[derive(Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also check the tutorial's numbers: exactly one document per `num` in 0..N.
    /// Prints `produced=N stored=S missing=M duplicates=D`; exits 1 unless exact.
    #[arg(long, value_name = "N")]
    pub expect_nums: Option<u64>,
    /// Also count by the plugin versions that made the documents
    /// (`pipeline.versions_field`), with each version's offsets per partition.
    #[arg(long)]
    pub by_version: bool,
}

/// Print the count, then what `--by-version` and `--expect-nums` ask for;
/// `Err` unless the numbers are exact.
pub async fn execute(args: CountArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    let n = count(&cfg).await?;
    println!("{n} documents in {}.{}", cfg.mongo.database, cfg.mongo.collection);
    if args.by_version {
        for v in count_by_version(&cfg).await? {
            let chain = if v.chain.is_empty() { "(no versions field)" } else { &v.chain };
            let ranges: Vec<String> = v.offsets.iter().map(|(p, (lo, hi))| format!("{p} offsets {lo}..={hi}")).collect();
            println!("  {chain}: {} documents; {}", v.documents, ranges.join(", "));
        }
    }
    if let Some(expected) = args.expect_nums {
        let c = check_nums(&cfg, expected).await?;
        println!("produced={expected} stored={} missing={} duplicates={}", c.stored, c.missing, c.duplicates);
        let wrong = c.what_is_wrong(expected);
        anyhow::ensure!(wrong.is_empty(), "not exact: {}", wrong.join("; "));
    }
    Ok(())
}

/// Documents in the configured collection.
pub async fn count(config: &Config) -> anyhow::Result<u64> {
    let sink = Sink::connect(&config.mongo).await?;
    let n = sink
        .database()
        .collection::<mongodb::bson::Document>(&config.mongo.collection)
        .count_documents(doc! {})
        .await
        .with_context(|| format!("counting {}.{}", config.mongo.database, config.mongo.collection))?;
    Ok(n)
}

/// How the tutorial's numbers landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumCheck {
    /// Documents stored.
    pub stored: u64,
    /// Numbers in 0..expected with no document.
    pub missing: u64,
    /// Extra documents for numbers that have more than one.
    pub duplicates: u64,
    /// Documents whose `num` is absent or outside 0..expected.
    pub unexpected: u64,
}

impl NumCheck {
    /// What is wrong, and only that (empty: exact). A number stored twice is
    /// also what numbers produced twice give (each record is its own document).
    pub fn what_is_wrong(&self, expected: u64) -> Vec<String> {
        let mut wrong = Vec::new();
        if self.missing > 0 {
            wrong.push(format!("{} of the numbers 0..{expected} missing", self.missing));
        }
        if self.duplicates > 0 {
            wrong.push(format!(
                "{} extra documents for numbers stored more than once (were they produced more than once? \
                 `sluice reset` starts over from an empty topic, group and collection)",
                self.duplicates
            ));
        }
        if self.unexpected > 0 {
            wrong.push(format!("{} documents without a num in 0..{expected}", self.unexpected));
        }
        wrong
    }
}

/// Count, from MongoDB, one document per `num` in 0..expected.
pub async fn check_nums(config: &Config, expected: u64) -> anyhow::Result<NumCheck> {
    use futures::TryStreamExt;
    use mongodb::bson::Bson;
    let sink = Sink::connect(&config.mongo).await?;
    let mut cursor =
        sink.database().collection::<mongodb::bson::Document>(&config.mongo.collection).find(doc! {}).projection(doc! { "num": 1 }).await?;
    let mut seen = vec![0u32; expected as usize];
    let (mut stored, mut unexpected) = (0u64, 0u64);
    while let Some(d) = cursor.try_next().await? {
        stored += 1;
        let n = match d.get("num") {
            Some(Bson::Int32(n)) => *n as i64,
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Double(f)) if f.fract() == 0.0 => *f as i64,
            _ => -1,
        };
        match usize::try_from(n).ok().filter(|&n| n < seen.len()) {
            Some(i) => seen[i] += 1,
            None => unexpected += 1,
        }
    }
    Ok(NumCheck {
        stored,
        missing: seen.iter().filter(|&&c| c == 0).count() as u64,
        duplicates: seen.iter().map(|&c| c.saturating_sub(1) as u64).sum(),
        unexpected,
    })
}

/// Documents made by one chain version (`pipeline.versions_field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    /// `name@version,…`; empty for documents without the field.
    pub chain: String,
    pub documents: u64,
    /// Per source `topic:partition`, the lowest and highest offset among these
    /// documents (from the derived `_id`; documents with their own `_id` are not placed).
    pub offsets: BTreeMap<String, (i64, i64)>,
}

/// Count the documents by the chain version that made them, in order of the
/// first offset each version wrote: after a swap, one line per version, and per
/// partition where each version starts and ends.
pub async fn count_by_version(config: &Config) -> anyhow::Result<Vec<VersionCount>> {
    use futures::TryStreamExt;
    let Some(field) = &config.pipeline.versions_field else {
        bail!("pipeline.versions_field is not set in the config: documents do not record which plugin versions made them")
    };
    let sink = Sink::connect(&config.mongo).await?;
    let coll = sink.database().collection::<mongodb::bson::Document>(&config.mongo.collection);
    let mut cursor = coll.find(doc! {}).projection(doc! { "_id": 1, field.as_str(): 1 }).await?;
    let mut by: BTreeMap<String, VersionCount> = BTreeMap::new();
    while let Some(d) = cursor.try_next().await? {
        let chain = d
            .get_document(field)
            .and_then(|v| v.get_array("plugins"))
            .map(|a| a.iter().filter_map(|b| b.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        let entry = by.entry(chain.clone()).or_insert_with(|| VersionCount { chain, documents: 0, offsets: BTreeMap::new() });
        entry.documents += 1;
        if let Some((topic, partition, offset, _)) = d.get_str("_id").ok().and_then(crate::record::parse_derived_id) {
            let range = entry.offsets.entry(format!("{topic}:{partition}")).or_insert((offset, offset));
            range.0 = range.0.min(offset);
            range.1 = range.1.max(offset);
        }
    }
    let mut out: Vec<VersionCount> = by.into_values().collect();
    out.sort_by_key(|v| (v.offsets.values().map(|r| r.0).min().unwrap_or(i64::MAX), v.chain.clone()));
    Ok(out)
}
