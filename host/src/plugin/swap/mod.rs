//! Hot swap: replace a plugin version, or the whole chain, while records flow.
//!
//! # Layout
//! - [`HotSwap`]: the running chain generation (a `watch` channel that every
//!   partition worker follows), the earlier versions kept for rollback, and the
//!   operations that change them: [`HotSwap::upload`] (admin API),
//!   [`HotSwap::files_changed`] (the watcher), [`HotSwap::rollback`] and
//!   [`HotSwap::reload`] (SIGHUP or the admin API: the config's `[[plugins]]`).
//! - [`spawn_watcher`]: the plugin-file watcher (inotify through `notify`),
//!   debounced per directory.
//!
//! Operations run one at a time. Each one compiles and validates the new version
//! on a blocking thread, off the partition workers (a component of the contract,
//! instantiates, init accepts the params, self-tests pass: [`Runtime::validate`]),
//! and only then publishes a new [`ChainSpec`]. Workers switch to it at their next
//! batch boundary, so a batch is processed by exactly one generation and each
//! partition has one switch offset. A failure publishes nothing: the running
//! version stays, and the failure is logged, returned to the caller, counted
//! (`sluice_plugin_swap_rejections_total`) and shown in the plugin listing.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::config::{Config, HotSwapConfig, PluginConfig};
use crate::plugin::chain::ChainSpec;
use crate::plugin::runtime::{LoadedPlugin, Runtime, RuntimeError, read_plugin, version_of};

mod report;
mod rollouts;
mod watcher;

pub use report::*;
pub use rollouts::{RolloutView, RolloutsView};
pub use watcher::{spawn_watcher, watch_dir, write_atomically};

/// A version kept for rollback.
#[derive(Clone)]
struct Kept {
    version: String,
    bytes: Arc<[u8]>,
}

#[derive(Default)]
struct Status {
    /// Per plugin, earlier versions, oldest first.
    history: HashMap<String, Vec<Kept>>,
    since: HashMap<String, (u64, Trigger)>,
    /// Per plugin, what its file held when last read or written by us: the
    /// watcher and reloads act when the file changes, not when it differs from
    /// what runs (an upload that is not persisted must not be undone by an
    /// unrelated event).
    file_seen: HashMap<String, FileSeen>,
    /// Directory checks the watcher asked for.
    file_checks: u64,
    rejected: HashMap<String, Rejected>,
    swaps: BTreeMap<(String, Trigger), u64>,
    rejections: BTreeMap<(String, Trigger), u64>,
    /// The swap history, oldest first, bounded ([`KEEP_EVENTS`]).
    events: VecDeque<Event>,
    next_rollout: u64,
    /// Finished rollouts, oldest first.
    rollout_history: VecDeque<rollouts::Finished>,
    rollout_ends: BTreeMap<&'static str, u64>,
}

/// Entries of the swap history kept.
const KEEP_EVENTS: usize = 100;

struct FileSeen {
    path: PathBuf,
    version: String,
    /// The watcher refused this version: it does not retry it until the file
    /// changes, but to a reload it counts as a change (the reload's params or
    /// self-tests may be what it was waiting for).
    refused: bool,
}

impl FileSeen {
    fn new(path: &Path, version: &str) -> FileSeen {
        FileSeen { path: path.to_owned(), version: version.to_owned(), refused: false }
    }
}

/// Counters of swaps and rejections, by plugin and trigger (for `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct SwapCounts {
    pub swaps: Vec<(String, Trigger, u64)>,
    pub rejections: Vec<(String, Trigger, u64)>,
    pub file_checks: u64,
}

pub struct HotSwap {
    runtime: Arc<Runtime>,
    tx: watch::Sender<Arc<ChainSpec>>,
    settings: HotSwapConfig,
    /// Held for a whole operation (validation included): one change at a time.
    /// Holds the running configuration (its `[[plugins]]` follow reloads).
    running: tokio::sync::Mutex<Config>,
    status: Mutex<Status>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl HotSwap {
    /// Load and validate the configured chain: generation 1.
    pub fn start(runtime: Arc<Runtime>, config: &Config) -> Result<HotSwap, RuntimeError> {
        let plugins: Vec<Arc<LoadedPlugin>> = config.plugins.iter().map(|p| runtime.load(p)).collect::<Result<_, _>>()?;
        let mut status = Status::default();
        for p in &plugins {
            status.since.insert(p.name.clone(), (now(), Trigger::Start));
            status.file_seen.insert(p.name.clone(), FileSeen::new(&p.path, &p.version));
        }
        let (tx, _) = watch::channel(Arc::new(ChainSpec::new(1, plugins)));
        Ok(HotSwap {
            runtime,
            tx,
            settings: config.hot_swap.clone(),
            running: tokio::sync::Mutex::new(config.clone()),
            status: Mutex::new(status),
        })
    }

    /// The running generation.
    pub fn current(&self) -> Arc<ChainSpec> {
        self.tx.borrow().clone()
    }

    /// Follow the running generation (partition workers do).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ChainSpec>> {
        self.tx.subscribe()
    }

    /// The running chain, in order, with versions, history and last rejection.
    pub fn list(&self) -> (u64, Vec<PluginStatus>) {
        let spec = self.current();
        let st = self.status.lock().unwrap();
        let plugins = spec
            .plugins
            .iter()
            .map(|p| {
                let (since, trigger) = st.since.get(&p.name).copied().unwrap_or((0, Trigger::Start));
                PluginStatus {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    path: p.path.clone(),
                    since,
                    trigger,
                    previous: st.history.get(&p.name).map(|h| h.iter().rev().map(|k| k.version.clone()).collect()).unwrap_or_default(),
                    last_rejected: st.rejected.get(&p.name).cloned(),
                }
            })
            .collect();
        (spec.generation, plugins)
    }

    /// The swap history, oldest first: swaps, removals, rollouts.
    pub fn history(&self) -> Vec<Event> {
        self.status.lock().unwrap().events.iter().cloned().collect()
    }

    fn event(&self, e: Event) {
        let mut st = self.status.lock().unwrap();
        st.events.push_back(e);
        if st.events.len() > KEEP_EVENTS {
            st.events.pop_front();
        }
    }

    pub fn counts(&self) -> SwapCounts {
        let st = self.status.lock().unwrap();
        let flat = |m: &BTreeMap<(String, Trigger), u64>| m.iter().map(|((p, t), n)| (p.clone(), *t, *n)).collect();
        SwapCounts { swaps: flat(&st.swaps), rejections: flat(&st.rejections), file_checks: st.file_checks }
    }

    /// Replace plugin `name` with `bytes` (admin API upload).
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<SwapReport, SwapError> {
        let _running = self.running.lock().await;
        let spec = self.current();
        let current = spec.plugin(name).ok_or_else(|| SwapError::UnknownPlugin(name.into()))?.clone();
        let (bytes, version) = hashed(bytes).await;
        if version == current.version {
            return Ok(unchanged(&spec));
        }
        let plugin = self.validate(current.config.clone(), bytes, Trigger::Api).await?;
        self.persist(&plugin, Trigger::Api).await?;
        Ok(self.replace_chain(&spec, with_replaced(&spec, vec![plugin]), Trigger::Api, true))
    }

    /// Go back to the version plugin `name` ran before the current one (the
    /// history is a stack: rolling back again goes further back). That version
    /// is validated again, with the current params and self-tests; one that no
    /// longer passes is dropped from the history.
    pub async fn rollback(&self, name: &str) -> Result<SwapReport, SwapError> {
        let _running = self.running.lock().await;
        let spec = self.current();
        let current = spec.plugin(name).ok_or_else(|| SwapError::UnknownPlugin(name.into()))?.clone();
        let previous = {
            let mut st = self.status.lock().unwrap();
            st.history.get_mut(name).and_then(Vec::pop).ok_or_else(|| SwapError::NothingToRollBack(name.into()))?
        };
        let plugin = match self.validate(current.config.clone(), previous.bytes.to_vec(), Trigger::Rollback).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(plugin = %name, version = %previous.version, "removed from the rollback history: it fails validation now");
                return Err(e);
            }
        };
        if let Err(e) = self.persist(&plugin, Trigger::Rollback).await {
            self.status.lock().unwrap().history.entry(name.to_owned()).or_default().push(previous);
            return Err(e);
        }
        Ok(self.replace_chain(&spec, with_replaced(&spec, vec![plugin]), Trigger::Rollback, false))
    }

    /// Plugin files in `dir` (a directory the watcher reported) may have changed:
    /// read every plugin there, and validate and swap in those whose file content
    /// changed since it was last read. Each plugin file is its own unit: one that
    /// fails validation does not hold back another (change several plugins at once
    /// with a config reload, which applies all or nothing). A refused version is
    /// not retried until the file changes again; a missing file keeps the running
    /// version.
    pub async fn files_changed(&self, dir: &Path) -> Option<SwapReport> {
        let _running = self.running.lock().await;
        self.status.lock().unwrap().file_checks += 1;
        let spec = self.current();
        let mut replacements = Vec::new();
        for p in spec.plugins.iter().filter(|p| watch_dir(&p.path).as_deref() == Some(dir)) {
            let (bytes, version) = match read_hashed(&p.config).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(plugin = %p.name, "plugin file unreadable, the running version {} stays: {e}", p.version);
                    continue;
                }
            };
            if self.status.lock().unwrap().file_seen.get(&p.name).is_some_and(|s| s.path == p.path && s.version == version) {
                continue;
            }
            let mut refused = false;
            if version != p.version {
                match self.validate(p.config.clone(), bytes, Trigger::File).await {
                    Ok(plugin) => replacements.push(plugin),
                    Err(_) => refused = true,
                }
            }
            self.status.lock().unwrap().file_seen.insert(p.name.clone(), FileSeen { path: p.path.clone(), version, refused });
        }
        (!replacements.is_empty()).then(|| self.replace_chain(&spec, with_replaced(&spec, replacements), Trigger::File, true))
    }

    /// Read the configuration file again and apply its `[[plugins]]`, all or
    /// nothing: plugins added, removed, reordered, or with new params, limits or
    /// self-tests. A plugin whose file changed since it was last read, or holds a
    /// version the watcher refused, runs the file's version; otherwise it keeps
    /// the version it runs (an upload that was not persisted stays). Unchanged
    /// plugins keep their compiled instance. Other sections that changed are
    /// reported as needing a restart.
    pub async fn reload(&self) -> Result<SwapReport, SwapError> {
        let mut running = self.running.lock().await;
        let Some(path) = running.source.clone() else { return Err(SwapError::NoConfigFile) };
        let newer = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                self.reject("-", None, Trigger::Reload, &e.to_string());
                return Err(e.into());
            }
        };
        let spec = self.current();
        let mut plugins = Vec::with_capacity(newer.plugins.len());
        let mut seen = Vec::with_capacity(newer.plugins.len());
        for pc in &newer.plugins {
            let (bytes, version) = read_hashed(pc).await.inspect_err(|e| self.reject(&pc.name, None, Trigger::Reload, &e.to_string()))?;
            let mut file = FileSeen::new(&pc.path, &version);
            let (file_unchanged, refused_before) = match self.status.lock().unwrap().file_seen.get(&pc.name) {
                Some(s) => (s.path == file.path && s.version == file.version, s.refused),
                None => (false, false),
            };
            let plugin = match spec.plugin(&pc.name) {
                Some(cur) if file_unchanged => {
                    // A file the watcher refused is tried with the reloaded params;
                    // refused again (reported), the running version stays as if
                    // the file had not changed, so that the rest of the reload applies.
                    let retried = if refused_before { self.validate(pc.clone(), bytes, Trigger::Reload).await.ok() } else { None };
                    match retried {
                        Some(p) => p,
                        None => {
                            file.refused = refused_before;
                            if cur.config == *pc {
                                cur.clone()
                            } else {
                                self.validate(pc.clone(), cur.bytes.to_vec(), Trigger::Reload).await?
                            }
                        }
                    }
                }
                _ => self.validate(pc.clone(), bytes, Trigger::Reload).await?,
            };
            plugins.push(plugin);
            seen.push((pc.name.clone(), file));
        }
        // Only now, everything valid: what the files hold counts as seen.
        self.status.lock().unwrap().file_seen.extend(seen);
        let restart_needed = running.restart_needed(&newer);
        if !restart_needed.is_empty() {
            tracing::warn!(sections = ?restart_needed, "reload: these sections changed and need a restart to apply");
        }
        running.plugins = newer.plugins;
        let same = plugins.len() == spec.plugins.len() && plugins.iter().zip(&spec.plugins).all(|(a, b)| Arc::ptr_eq(a, b));
        let mut report = if same {
            tracing::info!(generation = spec.generation, "reload: the chain is unchanged");
            unchanged(&spec)
        } else {
            self.replace_chain(&spec, plugins, Trigger::Reload, true)
        };
        report.restart_needed = restart_needed;
        Ok(report)
    }

    /// Validate on a blocking thread; a failure is recorded and logged.
    async fn validate(&self, cfg: PluginConfig, bytes: Vec<u8>, trigger: Trigger) -> Result<Arc<LoadedPlugin>, SwapError> {
        let name = cfg.name.clone();
        let runtime = self.runtime.clone();
        let started = std::time::Instant::now();
        let (version, result) =
            tokio::task::spawn_blocking(move || (version_of(&bytes), runtime.validate(&cfg, bytes))).await.unwrap_or_else(|e| {
                (String::new(), Err(RuntimeError::Init { name: name.clone(), message: format!("validation panicked: {e}") }))
            });
        match result {
            Ok(p) => {
                tracing::debug!(plugin = %name, version = %version, took = ?started.elapsed(), "new version validated");
                Ok(p)
            }
            Err(e) => {
                self.reject(&name, Some(version).filter(|v| !v.is_empty()), trigger, &e.to_string());
                Err(e.into())
            }
        }
    }

    fn reject(&self, plugin: &str, version: Option<String>, trigger: Trigger, error: &str) {
        tracing::warn!(plugin = %plugin, version = %version.as_deref().unwrap_or("-"), trigger = %trigger.as_str(), "swap rejected: {error}");
        let mut st = self.status.lock().unwrap();
        *st.rejections.entry((plugin.to_owned(), trigger)).or_default() += 1;
        if let Some(version) = version {
            st.rejected.insert(plugin.to_owned(), Rejected { version, trigger, at: now(), error: error.to_owned() });
        }
    }

    /// Write an API-given version to the plugin's path (temp file + rename), on a
    /// blocking thread; the written content counts as seen by the watcher.
    async fn persist(&self, plugin: &Arc<LoadedPlugin>, trigger: Trigger) -> Result<(), SwapError> {
        if !self.settings.persist_uploads {
            // The upload supersedes a file the watcher refused: a reload must
            // not bring that file back because it would pass now.
            if let Some(seen) = self.status.lock().unwrap().file_seen.get_mut(&plugin.name) {
                seen.refused = false;
            }
            return Ok(());
        }
        let p = plugin.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&p.path, &p.bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("writing panicked: {e}"))));
        if let Err(cause) = written {
            let e = SwapError::Persist { plugin: plugin.name.clone(), version: plugin.version.clone(), path: plugin.path.clone(), cause };
            self.reject(&plugin.name, Some(plugin.version.clone()), trigger, &e.to_string());
            return Err(e);
        }
        self.status.lock().unwrap().file_seen.insert(plugin.name.clone(), FileSeen::new(&plugin.path, &plugin.version));
        Ok(())
    }

    /// Publish a new generation running `plugins`; with `keep_old`, versions
    /// replaced go onto their plugin's rollback history. One log line per change.
    fn replace_chain(&self, spec: &ChainSpec, plugins: Vec<Arc<LoadedPlugin>>, trigger: Trigger, keep_old: bool) -> SwapReport {
        let mut changes = Vec::new();
        if let Some(r) = &spec.rollout {
            // A promotion ends its rollout; any other change of the chain supersedes it.
            let (state, reason) = match trigger {
                Trigger::Promote => ("promoted", None),
                t => ("superseded", Some(format!("the chain changed ({})", t.as_str()))),
            };
            self.finish(r, state, reason);
        }
        let old: HashMap<&str, &Arc<LoadedPlugin>> = spec.plugins.iter().map(|p| (p.name.as_str(), p)).collect();
        let new_names: HashSet<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
        let generation = spec.generation + 1;
        {
            let mut st = self.status.lock().unwrap();
            for p in &plugins {
                let before = old.get(p.name.as_str());
                if before.is_some_and(|b| Arc::ptr_eq(b, p)) {
                    continue;
                }
                if let Some(b) = before.filter(|b| keep_old && b.version != p.version) {
                    let h = st.history.entry(p.name.clone()).or_default();
                    h.retain(|k| k.version != b.version && k.version != p.version);
                    h.push(Kept { version: b.version.clone(), bytes: b.bytes.clone() });
                    let excess = h.len().saturating_sub(self.settings.keep_versions);
                    h.drain(..excess);
                }
                st.since.insert(p.name.clone(), (now(), trigger));
                *st.swaps.entry((p.name.clone(), trigger)).or_default() += 1;
                let from = before.map(|b| b.version.clone());
                tracing::info!(
                    plugin = %p.name, from = %from.as_deref().unwrap_or("-"), to = %p.version, trigger = %trigger.as_str(), generation,
                    "plugin swapped (partition workers switch at their next batch)"
                );
                changes.push(Change { plugin: p.name.clone(), from, to: Some(p.version.clone()) });
            }
            for b in spec.plugins.iter().filter(|b| !new_names.contains(b.name.as_str())) {
                tracing::info!(plugin = %b.name, version = %b.version, trigger = %trigger.as_str(), generation, "plugin removed from the chain");
                changes.push(Change { plugin: b.name.clone(), from: Some(b.version.clone()), to: None });
            }
        }
        let at = now();
        for c in &changes {
            let note = spec.rollout.as_ref().filter(|_| trigger == Trigger::Promote).map(|r| format!("rollout {} promoted", r.id));
            self.event(Event { at, plugin: c.plugin.clone(), from: c.from.clone(), to: c.to.clone(), trigger, generation, note });
        }
        let next = Arc::new(ChainSpec::new(generation, plugins));
        tracing::info!(generation, chain = %next.label, trigger = %trigger.as_str(), "chain generation published");
        self.tx.send_replace(next);
        SwapReport { swapped: true, generation, changes, restart_needed: Vec::new() }
    }
}

/// `spec`'s plugins with some replaced by new versions (same names, same positions).
fn with_replaced(spec: &ChainSpec, replacements: Vec<Arc<LoadedPlugin>>) -> Vec<Arc<LoadedPlugin>> {
    spec.plugins.iter().map(|p| replacements.iter().find(|r| r.name == p.name).cloned().unwrap_or_else(|| p.clone())).collect()
}

fn unchanged(spec: &ChainSpec) -> SwapReport {
    SwapReport { swapped: false, generation: spec.generation, changes: Vec::new(), restart_needed: Vec::new() }
}

/// A plugin's file read and hashed on a blocking thread (a component can be tens of MB).
async fn read_hashed(cfg: &PluginConfig) -> Result<(Vec<u8>, String), RuntimeError> {
    let cfg = cfg.clone();
    let name = cfg.name.clone();
    tokio::task::spawn_blocking(move || {
        read_plugin(&cfg).map(|b| {
            let v = version_of(&b);
            (b, v)
        })
    })
    .await
    .unwrap_or_else(|e| Err(RuntimeError::Init { name, message: format!("reading the file panicked: {e}") }))
}

/// `bytes` and their version, hashed on a blocking thread.
async fn hashed(bytes: Vec<u8>) -> (Vec<u8>, String) {
    tokio::task::spawn_blocking(move || {
        let v = version_of(&bytes);
        (bytes, v)
    })
    .await
    .expect("hashing does not panic")
}
