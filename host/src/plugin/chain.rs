//! The plugin chain of one partition worker: runs a batch through every plugin in
//! order (the outputs of one are the inputs of the next) and says, per source
//! record, which documents to write or why it failed.
//!
//! A stage's input crosses into the plugin as one columnar batch (buffers reused
//! from call to call); its outputs are read in place from the result and copied
//! once, into the documents that leave the chain.
//!
//! A trap (panic, time or memory limit) poisons the instance: the chain makes a
//! fresh one and runs that batch again one record at a time, so only the
//! record(s) that trap fail. A malformed result is isolated the same way and
//! fails as `invalid-output`.
//!
//! A [`ChainSpec`] is one generation of the chain (which plugin versions, in
//! which order); a hot swap publishes a new one, and each worker builds a new
//! [`Chain`] from it at a batch boundary, so a batch is always processed by one
//! generation from start to end.

use std::sync::Arc;

use crate::plugin::runtime::{self, Batch, LoadedPlugin, Operation, OutcomeRef, PluginInstance, RuntimeError, TrapKind};
use crate::record::Op;
use crate::record::SourceRecord;
pub use crate::record::{Failure, FailureKind};

/// One document a source record turned into.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainOutput {
    pub op: Op,
    pub collection: Option<String>,
    /// Where the document (JSON, UTF-8) lies in [`Results::data`]: no copy per
    /// document. Empty for delete-where.
    pub document: std::ops::Range<usize>,
    /// Update, replace, delete-where: where the filter (JSON) lies in [`Results::data`].
    pub filter: Option<std::ops::Range<usize>>,
    /// Update, replace: insert when nothing matches the filter.
    pub upsert: bool,
}

impl ChainOutput {
    /// An output of `op` whose document lies at `document` (no filter).
    pub fn new(op: Op, collection: Option<String>, document: std::ops::Range<usize>) -> ChainOutput {
        ChainOutput { op, collection, document, filter: None, upsert: false }
    }
}

/// What a batch became: every output document, in record order, and per
/// record which of them are its (none: dropped) or why it failed. One list for
/// all outputs: no allocation per record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Results {
    pub outputs: Vec<ChainOutput>,
    pub records: Vec<Result<std::ops::Range<usize>, Failure>>,
    /// The documents' bytes (the last plugin's result buffer, as it came).
    pub data: Vec<u8>,
    /// The last plugin asked for the outputs to be written strictly in order.
    pub ordered: bool,
}

impl Results {
    fn with_capacity(records: usize) -> Results {
        Results { outputs: Vec::with_capacity(records), records: Vec::with_capacity(records), data: Vec::new(), ordered: false }
    }

    /// An output's document.
    pub fn document(&self, out: &ChainOutput) -> &[u8] {
        &self.data[out.document.clone()]
    }

    /// An output's filter (update, replace, delete-where).
    pub fn filter(&self, out: &ChainOutput) -> Option<&[u8]> {
        out.filter.clone().map(|f| &self.data[f])
    }

    /// Record `i`'s outputs, or its failure.
    pub fn get(&self, i: usize) -> Result<&[ChainOutput], &Failure> {
        match &self.records[i] {
            Ok(range) => Ok(&self.outputs[range.clone()]),
            Err(f) => Err(f),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn failed(&mut self, f: Failure) {
        self.records.push(Err(f));
    }

    /// These results, of the records at `positions` of a batch of `len`, spread
    /// over the whole batch: the others take their failures from `failed`
    /// (records that failed before the chain, e.g. values that did not decode).
    pub fn spread(self, len: usize, positions: &[usize], failed: Vec<(usize, Failure)>) -> Results {
        if failed.is_empty() {
            return self;
        }
        let mut records: Vec<Option<Result<std::ops::Range<usize>, Failure>>> = (0..len).map(|_| None).collect();
        for (r, &i) in self.records.into_iter().zip(positions) {
            records[i] = Some(r);
        }
        for (i, f) in failed {
            records[i] = Some(Err(f));
        }
        let records = records.into_iter().map(|r| r.expect("every record has a result or a failure")).collect();
        Results { outputs: self.outputs, records, data: self.data, ordered: self.ordered }
    }

    /// Append `other`'s records after these.
    fn append(&mut self, other: Results) {
        let (base, data) = (self.outputs.len(), self.data.len());
        self.data.extend_from_slice(&other.data);
        self.ordered |= other.ordered;
        self.outputs.extend(other.outputs.into_iter().map(|o| ChainOutput {
            document: o.document.start + data..o.document.end + data,
            filter: o.filter.map(|f| f.start + data..f.end + data),
            ..o
        }));
        self.records.extend(other.records.into_iter().map(|r| r.map(|range| range.start + base..range.end + base)));
    }
}

/// One generation of the plugin chain: validated plugin versions, in order.
#[derive(Debug)]
pub struct ChainSpec {
    /// Starts at 1 and grows with every swap.
    pub generation: u64,
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// Each plugin's `name@version`, in order: what `pipeline.versions_field` stores.
    pub labels: Vec<String>,
    /// `name@version,name@version` (the dead-letter header `sluice.chain`; empty without plugins).
    pub label: String,
    /// A candidate version run beside this chain (shadow) or instead of it on
    /// some partitions (canary).
    pub rollout: Option<Arc<crate::plugin::rollout::Rollout>>,
}

impl ChainSpec {
    pub fn new(generation: u64, plugins: Vec<Arc<LoadedPlugin>>) -> ChainSpec {
        let labels: Vec<String> = plugins.iter().map(|p| p.label()).collect();
        ChainSpec { generation, plugins, label: labels.join(","), labels, rollout: None }
    }

    /// The chain a partition runs: the rollout's candidate on a canary
    /// partition, this one otherwise.
    pub fn for_partition(self: &Arc<ChainSpec>, partition: i32) -> Arc<ChainSpec> {
        match &self.rollout {
            Some(r) if r.runs(partition) => r.candidate.clone(),
            _ => self.clone(),
        }
    }

    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

pub struct Chain {
    spec: Arc<ChainSpec>,
    instances: Vec<PluginInstance>,
    /// Kind and message of the last call failure (trap, malformed result), for
    /// the failure it becomes.
    last_failure: Option<(FailureKind, String)>,
    /// Larger values fail as invalid input before any plugin sees them.
    max_value_bytes: usize,
    /// The input columns, reused from call to call (no allocation per record).
    input: Batch,
    /// Per plugin (same order), where its calls are measured; empty: not measured.
    metrics: Vec<Arc<crate::telemetry::PluginMetrics>>,
    /// Asked between the calls that isolate a failed batch: `true` stops them.
    cancelled: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

/// Where an item's value lies: in its source record, or in the previous
/// stage's result data.
#[derive(Clone)]
enum Value {
    Source,
    Prev(std::ops::Range<usize>),
}

/// An item flowing between stages: which source record it came from and its document.
struct Item {
    source: usize,
    op: Op,
    collection: Option<String>,
    value: Value,
    /// Where the filter lies in the stage's result (update, replace, delete-where).
    filter: Option<std::ops::Range<usize>>,
    upsert: bool,
}

impl Chain {
    /// Instances of every plugin of `spec` (each with its own store and limits).
    pub fn new(spec: Arc<ChainSpec>, max_value_bytes: usize) -> Result<Chain, RuntimeError> {
        let instances = spec.plugins.iter().map(|p| p.instantiate()).collect::<Result<_, _>>()?;
        Ok(Chain { spec, instances, last_failure: None, max_value_bytes, input: Batch::new("", 0), metrics: Vec::new(), cancelled: None })
    }

    /// Stop isolating a failed batch (with [`RuntimeError::Cancelled`]) once `cancelled` says so.
    pub fn with_cancel(mut self, cancelled: Arc<dyn Fn() -> bool + Send + Sync>) -> Chain {
        self.cancelled = Some(cancelled);
        self
    }

    /// How long the calls that isolate a failed batch may take in all before
    /// its parts are no longer split: each part left is then run once, whole.
    fn isolation_budget(&self) -> std::time::Duration {
        let longest = self.spec.plugins.iter().map(|p| p.config.limits.call_timeout).max().unwrap_or_default();
        (longest * 4).max(std::time::Duration::from_secs(10))
    }

    /// Measure each plugin's calls into `metrics` (one per plugin, in chain order).
    pub fn with_metrics(mut self, metrics: Vec<Arc<crate::telemetry::PluginMetrics>>) -> Chain {
        self.metrics = metrics;
        self
    }

    /// The generation this chain runs.
    pub fn spec(&self) -> &Arc<ChainSpec> {
        &self.spec
    }

    /// One result per record, in order. `Err` only when a plugin cannot even be
    /// re-instantiated after a trap (the pipeline cannot go on). Records of
    /// several topic partitions are run partition by partition (a batch of the
    /// contract is one partition's).
    pub fn process(&mut self, batch: &[SourceRecord]) -> Result<Results, RuntimeError> {
        let same = |a: &SourceRecord, b: &SourceRecord| a.partition == b.partition && a.topic == b.topic;
        if let Some(split) = batch.iter().position(|r| !same(r, &batch[0])) {
            let mut results = self.process(&batch[..split])?;
            results.append(self.process(&batch[split..])?);
            return Ok(results);
        }
        match self.run(batch) {
            Ok(r) => Ok(r),
            Err(StageError::Runtime(e)) => Err(e),
            Err(StageError::Failed(first)) => {
                self.reinstantiate(first)?;
                let mut results = Results::with_capacity(batch.len());
                if batch.len() == 1 {
                    results.failed(self.call_failure(first));
                    return Ok(results);
                }
                // Isolate by halves: only the records that fail a call alone fail
                // (a few calls per culprit, not one per record).
                let deadline = std::time::Instant::now() + self.isolation_budget();
                let (left, right) = batch.split_at(batch.len() / 2);
                self.isolate(left, deadline, &mut results)?;
                self.isolate(right, deadline, &mut results)?;
                Ok(results)
            }
        }
    }

    /// Run `part` of a batch whose call failed; split it again while it fails,
    /// down to single records. Past `deadline` a failing part fails whole (its
    /// records are dead-lettered with the call's failure), so a plugin that
    /// fails every call cannot hold the partition for records × call_timeout.
    fn isolate(&mut self, part: &[SourceRecord], deadline: std::time::Instant, results: &mut Results) -> Result<(), RuntimeError> {
        if self.cancelled.as_ref().is_some_and(|c| c()) {
            return Err(RuntimeError::Cancelled);
        }
        match self.run(part) {
            Ok(r) => results.append(r),
            Err(StageError::Runtime(e)) => return Err(e),
            Err(StageError::Failed(k)) => {
                let failure = self.call_failure(k);
                self.reinstantiate(k)?;
                if part.len() == 1 || std::time::Instant::now() >= deadline {
                    let mut failure = failure;
                    if part.len() > 1 {
                        failure.message =
                            format!("{} (with {} other records: the batch's isolation time ran out)", failure.message, part.len() - 1);
                    }
                    for _ in part {
                        results.failed(failure.clone());
                    }
                } else {
                    let (left, right) = part.split_at(part.len() / 2);
                    self.isolate(left, deadline, results)?;
                    self.isolate(right, deadline, results)?;
                }
            }
        }
        Ok(())
    }

    fn failure(&self, k: usize, kind: FailureKind, message: String) -> Failure {
        let p = &self.spec.plugins[k];
        Failure { plugin: Some(p.name.clone()), plugin_version: Some(p.version.clone()), kind, message }
    }

    /// The failure of a call of plugin `k` that trapped or returned a malformed result.
    fn call_failure(&mut self, k: usize) -> Failure {
        let (kind, message) = self.last_failure.take().unwrap_or((FailureKind::Trap, "trapped".into()));
        self.failure(k, kind, message)
    }

    fn reinstantiate(&mut self, k: usize) -> Result<(), RuntimeError> {
        self.instances[k] = self.spec.plugins[k].instantiate()?;
        Ok(())
    }

    /// One batch (one topic partition) through every plugin: prepare the
    /// input, call each plugin on what the one before it emitted, then gather
    /// per record its documents or its failure.
    fn run(&mut self, batch: &[SourceRecord]) -> Result<Results, StageError> {
        let (mut failed, mut items) = self.prepare(batch);
        // The previous stage's result: where `Value::Prev` items lie.
        let mut prev: Option<runtime::BatchResult> = None;
        for k in 0..self.instances.len() {
            if items.is_empty() {
                break;
            }
            let result = self.call(k, batch, &items, prev.as_ref())?;
            items = self.collect(k, &result, items, &mut failed);
            prev = Some(result);
        }
        Ok(gather(batch, items, failed, prev))
    }

    /// The records that go to the first plugin, and a failure slot per record:
    /// too large a value fails as invalid input here; so does a tombstone when
    /// there is no plugin (a plugin may turn it into a delete by key).
    fn prepare(&self, batch: &[SourceRecord]) -> (Slots, Vec<Item>) {
        // Boxed: a failure is rare, and the slots are set up for every record.
        let mut failed: Slots = vec![None; batch.len()];
        let mut items: Vec<Item> = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            match &r.value {
                Some(v) if v.len() > self.max_value_bytes => {
                    failed[i] = Some(Box::new(Failure {
                        plugin: None,
                        plugin_version: None,
                        kind: FailureKind::InvalidInput,
                        message: format!("value of {} bytes exceeds pipeline.max_value_bytes ({})", v.len(), self.max_value_bytes),
                    }));
                }
                None if self.spec.plugins.is_empty() => failed[i] = Some(Box::new(tombstone())),
                _ => items.push(Item { source: i, op: Op::Insert, collection: None, value: Value::Source, filter: None, upsert: false }),
            }
        }
        (failed, items)
    }

    /// Call plugin `k` on `items` (their values in their source records or in
    /// `prev`), measured. A trap or a malformed result is [`StageError::Failed`].
    fn call(
        &mut self,
        k: usize,
        batch: &[SourceRecord],
        items: &[Item],
        prev: Option<&runtime::BatchResult>,
    ) -> Result<runtime::BatchResult, StageError> {
        let input = &mut self.input;
        input.reset(&batch[0].topic, batch[0].partition);
        for it in items {
            let r = &batch[it.source];
            let value = resolve(&it.value, r, prev);
            input.push(r.offset, r.timestamp, r.key.as_deref(), value, &r.headers);
        }
        let started = std::time::Instant::now();
        let called = self.instances[k].process(&self.input);
        if let Some(m) = self.metrics.get(k) {
            m.call_seconds.observe(started.elapsed().as_secs_f64());
            m.call_records.observe(self.input.len() as f64);
        }
        match called {
            Ok(o) => Ok(o),
            Err(RuntimeError::Trap { kind, message, .. }) => {
                let kind = match kind {
                    TrapKind::Timeout => FailureKind::Timeout,
                    TrapKind::Memory => FailureKind::Memory,
                    TrapKind::Trap => FailureKind::Trap,
                };
                self.last_failure = Some((kind, message));
                Err(StageError::Failed(k))
            }
            Err(RuntimeError::Malformed { message, .. }) => {
                self.last_failure = Some((FailureKind::InvalidOutput, format!("malformed batch result: {message}")));
                Err(StageError::Failed(k))
            }
            Err(e) => Err(StageError::Runtime(e)),
        }
    }

    /// Plugin `k`'s outcomes for `items`: the outputs become the next stage's
    /// items (in order); errors and oversized outputs fill the records' failure
    /// slots (the first failure of a record is the one it keeps).
    fn collect(&self, k: usize, result: &runtime::BatchResult, items: Vec<Item>, failed: &mut Slots) -> Vec<Item> {
        let max = self.spec.plugins[k].max_output_bytes();
        let mut next = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match result.outcome(i) {
                OutcomeRef::Drop => {}
                OutcomeRef::Emit(outputs) => {
                    let size: usize =
                        outputs.clone().map(|j| result.output(j)).map(|o| o.document.len() + o.filter.map_or(0, <[u8]>::len)).sum();
                    if size > max {
                        let slot = &mut failed[item.source];
                        if slot.is_none() {
                            let message = format!("outputs of {size} bytes exceed limits.max_output_bytes ({max})");
                            *slot = Some(Box::new(self.failure(k, FailureKind::OutputTooLarge, message)));
                        }
                        continue;
                    }
                    next.extend(outputs.map(|j| emitted(result, j, &item)));
                }
                OutcomeRef::Error(error) => {
                    let slot = &mut failed[item.source];
                    if slot.is_none() {
                        // Invalid input is the record's fault only when the first plugin says so.
                        let kind = if error.invalid_input && k == 0 { FailureKind::InvalidInput } else { FailureKind::PluginError };
                        *slot = Some(Box::new(self.failure(k, kind, error.message().into_owned())));
                    }
                }
            }
        }
        next
    }
}

/// Per source record, its failure if it has one (boxed: a failure is rare).
type Slots = Vec<Option<Box<Failure>>>;

/// Output `j` of `result`, emitted for `item`: an item of the next stage. Its
/// value there is the output's document (delete-where: its filter); only the
/// last stage's operation, filter and upsert flag are written.
fn emitted(result: &runtime::BatchResult, j: u32, item: &Item) -> Item {
    let o = result.output(j);
    let range = |b: &[u8]| {
        let start = b.as_ptr() as usize - result.data.as_ptr() as usize;
        start..start + b.len()
    };
    let filter = o.filter.map(range);
    let document = if o.operation.has_document() { range(o.document) } else { filter.clone().unwrap_or(0..0) };
    Item {
        source: item.source,
        op: match o.operation {
            Operation::Insert => Op::Insert,
            Operation::Upsert => Op::Upsert,
            Operation::Delete => Op::Delete,
            Operation::Update => Op::Update,
            Operation::Replace => Op::Replace,
            Operation::DeleteWhere => Op::DeleteWhere,
        },
        collection: o.collection.map(str::to_owned).or_else(|| item.collection.clone()),
        value: Value::Prev(document),
        filter,
        upsert: o.upsert,
    }
}

/// The chain's results: per record, its failure, or the documents of the items
/// that came out of the last stage (`last`: its result, whose data they keep;
/// `None` without plugins: each record's value is its document).
fn gather(batch: &[SourceRecord], items: Vec<Item>, failed: Slots, last: Option<runtime::BatchResult>) -> Results {
    // Items are in record order (each stage keeps its inputs' order).
    let mut results = Results::with_capacity(batch.len());
    let from_plugins = last.is_some();
    if let Some(p) = last {
        results.ordered = p.ordered();
        results.data = p.data;
    }
    let mut items = items.into_iter().peekable();
    for (i, failure) in failed.into_iter().enumerate() {
        let start = results.outputs.len();
        let mut failure = failure;
        while let Some(item) = items.next_if(|it| it.source == i) {
            if failure.is_some() {
                continue;
            }
            let document = match &item.value {
                Value::Prev(range) if from_plugins => Some(range.clone()),
                _ => batch[i].value.as_deref().map(|v| {
                    // No plugin: the record's value is the document.
                    let start = results.data.len();
                    results.data.extend_from_slice(v);
                    start..results.data.len()
                }),
            };
            match document {
                Some(document) => {
                    let (filter, document) = match item.op {
                        Op::DeleteWhere => (item.filter, 0..0),
                        _ => (item.filter, document),
                    };
                    results.outputs.push(ChainOutput { op: item.op, collection: item.collection, document, filter, upsert: item.upsert })
                }
                None => failure = Some(Box::new(tombstone())),
            }
        }
        match failure {
            Some(f) => {
                results.outputs.truncate(start);
                results.failed(*f);
            }
            None => results.records.push(Ok(start..results.outputs.len())),
        }
    }
    results
}

/// The bytes of an item's value.
fn resolve<'a>(value: &Value, record: &'a SourceRecord, prev: Option<&'a runtime::BatchResult>) -> Option<&'a [u8]> {
    match value {
        Value::Source => record.value.as_deref(),
        Value::Prev(range) => prev.and_then(|p| p.data.get(range.clone())),
    }
}

fn tombstone() -> Failure {
    Failure { plugin: None, plugin_version: None, kind: FailureKind::InvalidInput, message: "record has no value (tombstone)".into() }
}

enum StageError {
    /// Plugin `k`'s call trapped or returned a malformed result (see `last_failure`).
    Failed(usize),
    Runtime(RuntimeError),
}
