//! `sluice plugin test`: run a plugin, or a chain (`.wasm` files, or a config's
//! `[[plugins]]` with their params, limits and self-tests), on records from a file with
//! the real runtime and limits, without Kafka or MongoDB, and print the write
//! plan: per input record, the MongoDB operations the host would run (insert,
//! upsert or delete; collection; `_id`; document), or that it was dropped, or
//! why it failed. With an expected plan it becomes a check for CI.
//!
//! Input: JSON lines. By default each line is a record's value. With
//! `envelope`, each line is `{"key": "…", "value": <JSON or null>,
//! "value_raw": "<bytes as text>", "headers": {"name": "value" or null}}`
//! "key_b64": "…", "value_b64": "…"}` (all optional; `value: null` is a
//! tombstone; `*_b64`: the bytes as base64, e.g. an Avro record as consumed).
//! Record `i` is offset `i` of partition 0 of the given topic.
//!
//! Formats: with `--value-format avro|protobuf|json-schema|raw` (or a config's
//! `kafka.value_format`), each line without `--envelope` is a value's bytes in
//! base64, and keys and values are decoded as the host decodes them, schemas
//! from `--registry` (or the config's `[schema_registry]`).
//!
//! Output: one JSON line per record, e.g.
//! `{"offset":0,"ops":[{"op":"insert","collection":null,"_id":"test:0:0:0","document":{…}}]}`,
//! `{"offset":1,"dropped":true}`,
//! `{"offset":2,"error":{"kind":"plugin-error","plugin":"p","version":"…","message":"…"}}`.
//! (Whether MongoDB accepts a document is only known when writing: a refused
//! document shows here as an insert.)

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use mongodb::bson::Bson;
use serde_json::{Value, json};

use super::common::key_value;
use base64::Engine as _;

use crate::config::{Config, Decimals, Format, PluginConfig, SchemaRegistryConfig};
use crate::formats::Decoder;
use crate::pipeline::decode::process;
use crate::pipeline::plan::{Plan, Target, plan};
use crate::plugin::chain::{Chain, ChainSpec};
use crate::plugin::runtime::Runtime;
use crate::record::Op;
use crate::record::SourceRecord;

#[derive(Args)]
pub struct PluginTestArgs {
    /// The plugin's .wasm; several make a chain, in order (each named after its file).
    #[arg(value_name = "PLUGIN.wasm", required_unless_present = "config", conflicts_with = "config")]
    pub plugins: Vec<PathBuf>,
    /// Instead of .wasm files: the chain of this config's [[plugins]] (names, paths, params, limits,
    /// self-tests) and its pipeline.versions_field.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// JSON lines, one record value per line (`-`: stdin).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Each input line is {"key", "value", "value_raw", "headers"} instead of a value.
    #[arg(long)]
    pub envelope: bool,
    /// A parameter for the plugins' init (with --config: added to each plugin's params); repeat for more.
    #[arg(long = "params", value_name = "KEY=VALUE", value_parser = key_value)]
    pub params: Vec<(String, String)>,
    /// The topic the records come from (in derived _ids).
    #[arg(long, default_value = "test")]
    pub topic: String,
    /// Add the chain's versions under this field, as pipeline.versions_field does (over the config's).
    #[arg(long, value_name = "FIELD")]
    pub versions_field: Option<String>,
    /// Compare the plan with this file (JSON lines); exit 1 where they differ.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Records per plugin call.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// How keys are read (over the config's kafka.key_format): json, avro, protobuf, json-schema, raw.
    #[arg(long, value_name = "FORMAT")]
    pub key_format: Option<Format>,
    /// How values are read (over the config's kafka.value_format); not json: input lines are base64.
    #[arg(long, value_name = "FORMAT")]
    pub value_format: Option<Format>,
    /// The schema registry's URL (over the config's [schema_registry]).
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
}

/// Print the plan (stdout) and a summary (stderr); with `--expect`, `Err` where they differ.
pub fn execute(args: PluginTestArgs) -> anyhow::Result<()> {
    let PluginTestArgs {
        plugins,
        config,
        input,
        envelope,
        params,
        topic,
        versions_field,
        expect,
        batch,
        key_format,
        value_format,
        registry,
    } = args;
    let (plugins, versions_field, mut formats) = match config {
        Some(path) => {
            let cfg = Config::load(&path)?;
            let formats = Formats {
                key: cfg.kafka.key_format,
                value: cfg.kafka.value_format,
                decimals: cfg.kafka.decimals,
                registry: cfg.schema_registry,
            };
            (cfg.plugins, versions_field.or(cfg.pipeline.versions_field), formats)
        }
        None => (chain_of_files(&plugins), versions_field, Formats::default()),
    };
    formats.key = key_format.unwrap_or(formats.key);
    formats.value = value_format.unwrap_or(formats.value);
    if let Some(url) = registry {
        formats.registry = Some(SchemaRegistryConfig::at(url));
    }
    let opts = TestOptions { plugins, params, input, envelope, topic, versions_field, batch, formats };
    let records = read_records(&opts)?;
    let plan = run(&opts, &records)?;
    for line in &plan {
        println!("{line}");
    }
    let count = |key: &str| plan.iter().filter(|l| l.get(key).is_some()).count();
    eprintln!("{} records: {} written, {} dropped, {} failed", plan.len(), count("ops"), count("dropped"), count("error"));
    if let Some(expected) = expect {
        check_expected(&plan, &expected, opts.versions_field.as_deref())?;
        eprintln!("the plan matches {}", expected.display());
    }
    Ok(())
}

/// What to run and on what.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The chain, in order: a config's `[[plugins]]`, or [`chain_of_files`].
    pub plugins: Vec<PluginConfig>,
    /// Given to every plugin's init, over its configured params.
    pub params: Vec<(String, String)>,
    /// JSON lines; `-` = standard input.
    pub input: PathBuf,
    pub envelope: bool,
    pub topic: String,
    /// As `pipeline.versions_field` would add it.
    pub versions_field: Option<String>,
    pub batch: usize,
    pub formats: Formats,
}

/// How the input's keys and values are read.
#[derive(Debug, Clone, Default)]
pub struct Formats {
    pub key: Format,
    pub value: Format,
    pub decimals: Decimals,
    pub registry: Option<SchemaRegistryConfig>,
}

/// A chain of `.wasm` files, in order, each plugin named after its file (no
/// params, default limits, no self-tests).
pub fn chain_of_files(paths: &[PathBuf]) -> Vec<PluginConfig> {
    paths.iter().map(|p| PluginConfig::new(p.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin"), p.clone())).collect()
}

/// Read the input records.
pub fn read_records(opts: &TestOptions) -> anyhow::Result<Vec<SourceRecord>> {
    let reader: Box<dyn BufRead> = if opts.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(&opts.input).with_context(|| format!("reading {}", opts.input.display()))?))
    };
    let topic: Arc<str> = Arc::from(opts.topic.as_str());
    let mut records = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", opts.input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", opts.input.display(), n + 1);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.trim()).with_context(|| format!("{}: not base64", at()));
        let value = if opts.formats.value == Format::Json || opts.envelope { line.as_bytes().to_vec() } else { b64(&line)? };
        let mut record = SourceRecord {
            topic: topic.clone(),
            partition: 0,
            offset: records.len() as i64,
            timestamp: None,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        };
        if opts.envelope {
            let e: Value = serde_json::from_str(&line).with_context(|| format!("{}: not a JSON envelope", at()))?;
            let Some(e) = e.as_object() else { bail!("{}: an envelope is a JSON object", at()) };
            record.key = match (e.get("key_b64"), e.get("key")) {
                (Some(Value::String(k)), _) => Some(b64(k)?),
                (_, k) => k.and_then(Value::as_str).map(|k| k.as_bytes().to_vec()),
            };
            record.value = match (e.get("value_b64"), e.get("value_raw"), e.get("value")) {
                (Some(Value::String(v)), _, _) => Some(b64(v)?),
                (_, Some(Value::String(raw)), _) => Some(raw.as_bytes().to_vec()),
                (_, _, None | Some(Value::Null)) => None,
                (_, _, Some(v)) => Some(serde_json::to_vec(v)?),
            };
            if let Some(h) = e.get("headers").and_then(Value::as_object) {
                record.headers = h.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_str().map(|s| s.as_bytes().to_vec()))).collect();
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// Run the chain over `records`; one plan line per record.
pub fn run(opts: &TestOptions, records: &[SourceRecord]) -> anyhow::Result<Vec<Value>> {
    let runtime = Runtime::new().context("starting the wasm runtime")?;
    let mut plugins = Vec::new();
    for cfg in &opts.plugins {
        let mut cfg = cfg.clone();
        cfg.params.extend(opts.params.iter().cloned());
        plugins.push(runtime.load(&cfg)?);
    }
    let spec = Arc::new(ChainSpec::new(1, plugins));
    let mut chain = Chain::new(spec.clone(), 1 << 20)?;
    let f = &opts.formats;
    let decoder = Decoder::with_formats(f.key, f.value, f.decimals, f.registry.as_ref()).map_err(anyhow::Error::msg)?;
    if let Some(d) = &decoder {
        let fetch = d.prepare(records);
        let fetched = match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| handle.block_on(fetch)),
            Err(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fetch),
        };
        fetched.context("fetching schemas from the registry")?;
    }
    let mut lines = Vec::with_capacity(records.len());
    for batch in records.chunks(opts.batch.max(1)) {
        let results = process(&mut chain, decoder.as_deref(), batch)?;
        let target =
            Target { versions_field: opts.versions_field.as_deref(), offsets_collection: crate::mongo::progress::DEFAULT_COLLECTION };
        let p = plan(&spec, &target, batch, &results);
        lines.extend(plan_lines(batch, &p));
    }
    Ok(lines)
}

/// The plan of one batch as JSON lines, one per record.
pub fn plan_lines(records: &[SourceRecord], p: &Plan) -> Vec<Value> {
    let mut lines: Vec<Value> = records.iter().map(|r| json!({ "offset": r.offset, "ops": [] })).collect();
    for (op, &i) in p.ops.iter().zip(&p.op_source) {
        let doc = op.doc.to_document().map(|d| Bson::Document(d).into_relaxed_extjson()).unwrap_or(Value::Null);
        let mut entry = json!({
            "op": op.op.name(),
            "collection": op.collection,
            "_id": doc.get("_id").cloned().unwrap_or(Value::Null),
            "document": doc,
        });
        // The filter operations: the filter as sent (values as `{"$eq": …}`), the
        // upsert flag, and for updates the replay guard the host adds.
        if op.op.has_filter() {
            let filter = op.filter.as_ref().and_then(|f| f.to_document().ok());
            entry["filter"] = filter.map(|f| Bson::Document(f).into_relaxed_extjson()).unwrap_or(Value::Null);
            entry["upsert"] = json!(op.upsert);
            if let Some(g) = &op.guard {
                entry["guard"] = json!({ "field": g.field, "position": g.position });
            }
            if op.op == Op::DeleteWhere {
                entry.as_object_mut().expect("an object").remove("document");
            }
        }
        lines[i]["ops"].as_array_mut().expect("ops").push(entry);
    }
    for (i, f) in &p.failures {
        lines[*i] = json!({
            "offset": records[*i].offset,
            "error": { "kind": f.kind.as_str(), "plugin": f.plugin, "version": f.plugin_version, "message": f.message },
        });
    }
    for line in &mut lines {
        if line.get("ops").and_then(Value::as_array).is_some_and(Vec::is_empty) {
            *line = json!({ "offset": line["offset"], "dropped": true });
        } else if p.ordered && line.get("ops").is_some() {
            line["ordered"] = json!(true);
        }
    }
    lines
}

/// Compare a plan with an expected one (JSON lines); `Err` says where they differ.
///
/// Plugin versions are left out of the comparison: a version is the content
/// hash of the `.wasm`, which a rebuild (another toolchain, another path)
/// changes without changing what the plugin does. So neither an error's
/// `version` nor the `@version` of the chain recorded under `versions_field`
/// is compared (an expected plan may have them, stale, or not).
pub fn check_expected(got: &[Value], expected_file: &std::path::Path, versions_field: Option<&str>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(expected_file).with_context(|| format!("reading {}", expected_file.display()))?;
    let expected: Vec<Value> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{} line {}: not JSON", expected_file.display(), n + 1)))
        .collect::<anyhow::Result<_>>()?;
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        if without_versions(g, versions_field) != without_versions(e, versions_field) {
            bail!("record {i} differs from {}:\n  expected: {e}\n  got:      {g}", expected_file.display());
        }
    }
    if got.len() != expected.len() {
        bail!("{} records in the plan, {} expected in {}", got.len(), expected.len(), expected_file.display());
    }
    Ok(())
}

/// A plan line without plugin versions: an error's `version` is removed, and
/// each `name@version` under `versions_field` of an op's document becomes `name`.
fn without_versions(line: &Value, versions_field: Option<&str>) -> Value {
    let mut line = line.clone();
    if let Some(error) = line.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("version");
    }
    if let (Some(field), Some(ops)) = (versions_field, line.get_mut("ops").and_then(Value::as_array_mut)) {
        for op in ops {
            let plugins = op.get_mut("document").and_then(|d| d.get_mut(field)).and_then(|v| v.get_mut("plugins"));
            for p in plugins.and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some((name, _version)) = p.as_str().and_then(|s| s.rsplit_once('@')) {
                    *p = Value::String(name.to_owned());
                }
            }
        }
    }
    line
}
