//! The plugin chain of one partition worker: runs a batch through every plugin in
//! order (the outputs of one are the inputs of the next) and says, per source
//! record, which documents to write or why it failed.
//!
//! A trap (panic, time or memory limit) poisons the instance: the chain makes a
//! fresh one and runs that batch again one record at a time, so only the
//! record(s) that trap fail.
//!
//! A [`ChainSpec`] is one generation of the chain (which plugin versions, in
//! which order); a hot swap publishes a new one, and each worker builds a new
//! [`Chain`] from it at a batch boundary, so a batch is always processed by one
//! generation from start to end.

use std::sync::Arc;

use mongodb::bson::{Bson, doc};

use crate::runtime::{self, LoadedPlugin, Operation, Outcome, PluginInstance, Record, RuntimeError, TrapKind};
use crate::sink::Op;
use crate::source::SourceRecord;

/// One document a source record turned into.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainOutput {
    pub op: Op,
    pub collection: Option<String>,
    /// JSON, UTF-8.
    pub document: Vec<u8>,
}

/// Why a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The plugin that failed it, if a plugin did.
    pub plugin: Option<String>,
    /// That plugin's version (content hash).
    pub plugin_version: Option<String>,
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin returned an error for the record.
    PluginError,
    /// The plugin trapped on the record.
    Trap,
    Timeout,
    Memory,
    /// The record cannot be processed as it is (no value, not JSON, not an object).
    InvalidInput,
    /// A plugin output is not a storable document.
    InvalidOutput,
    /// A plugin's outputs for one record exceed `limits.max_output_bytes`.
    OutputTooLarge,
    /// MongoDB refused the document.
    SinkRejected,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::PluginError => "plugin-error",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::InvalidInput => "invalid-input",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::OutputTooLarge => "output-too-large",
            FailureKind::SinkRejected => "sink-rejected",
        }
    }
}

/// What became of one source record.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordResult {
    /// Zero outputs means the record was dropped (filtered).
    Outputs(Vec<ChainOutput>),
    Failed(Failure),
}

/// One generation of the plugin chain: validated plugin versions, in order.
#[derive(Debug)]
pub struct ChainSpec {
    /// Starts at 1 and grows with every swap.
    pub generation: u64,
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// `{ "plugins": ["name@version", …] }`: what `pipeline.versions_field` stores.
    pub versions: Bson,
    /// `name@version,name@version` (the dead-letter header `sluice.chain`; empty without plugins).
    pub label: String,
}

impl ChainSpec {
    pub fn new(generation: u64, plugins: Vec<Arc<LoadedPlugin>>) -> ChainSpec {
        let labels: Vec<String> = plugins.iter().map(|p| p.label()).collect();
        let versions = Bson::Document(doc! { "plugins": labels.iter().map(|l| Bson::String(l.clone())).collect::<Vec<_>>() });
        ChainSpec { generation, plugins, versions, label: labels.join(",") }
    }

    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

pub struct Chain {
    spec: Arc<ChainSpec>,
    plugins: Vec<Arc<LoadedPlugin>>,
    instances: Vec<PluginInstance>,
    /// Kind and message of the last trap, for the failure it becomes.
    last_trap: Option<(TrapKind, String)>,
    /// Larger values fail as invalid input before any plugin sees them.
    max_value_bytes: usize,
}

/// An item flowing between stages: which source record it came from and its document.
struct Item {
    source: usize,
    op: Op,
    collection: Option<String>,
    value: Option<Vec<u8>>,
}

impl Chain {
    /// Instances of every plugin of `spec` (each with its own store and limits).
    pub fn new(spec: Arc<ChainSpec>, max_value_bytes: usize) -> Result<Chain, RuntimeError> {
        let instances = spec.plugins.iter().map(|p| p.instantiate()).collect::<Result<_, _>>()?;
        Ok(Chain { plugins: spec.plugins.clone(), spec, instances, last_trap: None, max_value_bytes })
    }

    /// The generation this chain runs.
    pub fn spec(&self) -> &Arc<ChainSpec> {
        &self.spec
    }

    /// One result per record, in order. `Err` only when a plugin cannot even be
    /// re-instantiated after a trap (the pipeline cannot go on).
    pub fn process(&mut self, batch: &[SourceRecord]) -> Result<Vec<RecordResult>, RuntimeError> {
        match self.run(batch) {
            Ok(r) => Ok(r),
            Err(StageError::Runtime(e)) => Err(e),
            Err(StageError::Trap(first)) => {
                self.reinstantiate(first)?;
                if batch.len() == 1 {
                    return Ok(vec![RecordResult::Failed(trap_failure(&self.plugins[first], self.last_trap.take()))]);
                }
                // Isolate: one record at a time; only the ones that trap fail.
                let mut results = Vec::with_capacity(batch.len());
                for rec in batch {
                    match self.run(std::slice::from_ref(rec)) {
                        Ok(mut r) => results.push(r.pop().expect("one result per record")),
                        Err(StageError::Runtime(e)) => return Err(e),
                        Err(StageError::Trap(k)) => {
                            results.push(RecordResult::Failed(trap_failure(&self.plugins[k], self.last_trap.take())));
                            self.reinstantiate(k)?;
                        }
                    }
                }
                Ok(results)
            }
        }
    }

    fn failure(&self, k: usize, kind: FailureKind, message: String) -> Failure {
        let p = &self.plugins[k];
        Failure { plugin: Some(p.name.clone()), plugin_version: Some(p.version.clone()), kind, message }
    }

    fn reinstantiate(&mut self, k: usize) -> Result<(), RuntimeError> {
        self.instances[k] = self.plugins[k].instantiate()?;
        Ok(())
    }

    fn run(&mut self, batch: &[SourceRecord]) -> Result<Vec<RecordResult>, StageError> {
        let mut failed: Vec<Option<Failure>> = vec![None; batch.len()];
        let mut items: Vec<Item> = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            match &r.value {
                Some(v) if v.len() > self.max_value_bytes => {
                    failed[i] = Some(Failure {
                        plugin: None,
                        plugin_version: None,
                        kind: FailureKind::InvalidInput,
                        message: format!("value of {} bytes exceeds pipeline.max_value_bytes ({})", v.len(), self.max_value_bytes),
                    });
                }
                // Tombstones go to the plugins (one may turn it into a delete by key);
                // without plugins there is nothing to store.
                None if self.plugins.is_empty() => {
                    failed[i] = Some(Failure {
                        plugin: None,
                        plugin_version: None,
                        kind: FailureKind::InvalidInput,
                        message: "record has no value (tombstone)".into(),
                    });
                }
                _ => items.push(Item { source: i, op: Op::Insert, collection: None, value: r.value.clone() }),
            }
        }
        for k in 0..self.instances.len() {
            if items.is_empty() {
                break;
            }
            let records: Vec<Record> = items.iter().map(|it| to_wit(&batch[it.source], it.value.clone())).collect();
            let outcomes = match self.instances[k].process(&records) {
                Ok(o) => o,
                Err(RuntimeError::Trap { kind, message, .. }) => {
                    self.last_trap = Some((kind, message));
                    return Err(StageError::Trap(k));
                }
                Err(e) => return Err(StageError::Runtime(e)),
            };
            let mut next = Vec::with_capacity(items.len());
            for (item, outcome) in items.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Drop => {}
                    Outcome::Emit(outputs) => {
                        let size: usize = outputs.iter().map(|o| o.document.len()).sum();
                        let max = self.plugins[k].max_output_bytes();
                        if size > max {
                            let slot = &mut failed[item.source];
                            if slot.is_none() {
                                let message = format!("outputs of {size} bytes exceed limits.max_output_bytes ({max})");
                                *slot = Some(self.failure(k, FailureKind::OutputTooLarge, message));
                            }
                            continue;
                        }
                        for o in outputs {
                            next.push(Item {
                                source: item.source,
                                op: match o.operation {
                                    Operation::Insert => Op::Insert,
                                    Operation::Upsert => Op::Upsert,
                                    Operation::Delete => Op::Delete,
                                },
                                collection: o.collection.or_else(|| item.collection.clone()),
                                value: Some(o.document),
                            });
                        }
                    }
                    Outcome::Error(e) => {
                        let slot = &mut failed[item.source];
                        if slot.is_none() {
                            let kind =
                                if is_input_error(&e.message) && k == 0 { FailureKind::InvalidInput } else { FailureKind::PluginError };
                            *slot = Some(self.failure(k, kind, e.message));
                        }
                    }
                }
            }
            items = next;
        }
        let mut outputs: Vec<Vec<ChainOutput>> = vec![Vec::new(); batch.len()];
        for item in items {
            if failed[item.source].is_some() {
                continue;
            }
            match item.value {
                Some(document) => outputs[item.source].push(ChainOutput { op: item.op, collection: item.collection, document }),
                None => {
                    failed[item.source] = Some(Failure {
                        plugin: None,
                        plugin_version: None,
                        kind: FailureKind::InvalidInput,
                        message: "record has no value (tombstone)".into(),
                    })
                }
            }
        }
        Ok(failed
            .into_iter()
            .zip(outputs)
            .map(|(f, o)| match f {
                Some(f) => RecordResult::Failed(f),
                None => RecordResult::Outputs(o),
            })
            .collect())
    }
}

enum StageError {
    Trap(usize),
    Runtime(RuntimeError),
}

/// The SDK reports unparsable input with these prefixes.
fn is_input_error(message: &str) -> bool {
    message.starts_with("value is not JSON") || message.starts_with("record has no value")
}

fn trap_failure(plugin: &LoadedPlugin, trap: Option<(TrapKind, String)>) -> Failure {
    let (kind, message) = trap.unwrap_or((TrapKind::Trap, "trapped".into()));
    Failure {
        plugin: Some(plugin.name.clone()),
        plugin_version: Some(plugin.version.clone()),
        kind: match kind {
            TrapKind::Timeout => FailureKind::Timeout,
            TrapKind::Memory => FailureKind::Memory,
            TrapKind::Trap => FailureKind::Trap,
        },
        message,
    }
}

fn to_wit(r: &SourceRecord, value: Option<Vec<u8>>) -> Record {
    Record {
        topic: r.topic.to_string(),
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.clone(),
        value,
        headers: r.headers.iter().map(|(k, v)| runtime::Header { key: k.clone(), value: v.clone() }).collect(),
    }
}
