//! Rollouts ([`crate::plugin::rollout`]) started, widened, promoted and ended:
//! each a new chain generation, published like any swap.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Event, HotSwap, SwapError, SwapReport, Trigger, hashed, now, with_replaced};
use crate::plugin::chain::ChainSpec;
use crate::plugin::rollout::{Mode, RollbackRule, Rollout, RolloutStats, Sample, Switch};

/// Finished rollouts kept for the listing.
const KEEP_FINISHED: usize = 10;

/// A rollout as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    pub id: u64,
    pub plugin: String,
    pub from: String,
    pub version: String,
    pub mode: Mode,
    pub rule: Option<RollbackRule>,
    /// `running`, `promoted`, `aborted`, `rolled-back` (its rule tripped) or
    /// `superseded` (another swap of the chain ended it).
    pub state: &'static str,
    pub reason: Option<String>,
    pub started: u64,
    pub ended: Option<u64>,
    pub records: u64,
    pub differences: u64,
    pub candidate_failures: u64,
    pub live_records: u64,
    pub live_failures: u64,
    /// Shadow: the candidate's time on the records it shadowed.
    pub candidate_cpu_ms: f64,
    pub samples: Vec<Sample>,
    pub switches: Vec<Switch>,
}

impl RolloutView {
    fn of(r: &Rollout, state: &'static str, reason: Option<String>, ended: Option<u64>) -> RolloutView {
        let s: &RolloutStats = &r.stats;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        RolloutView {
            id: r.id,
            plugin: r.plugin.clone(),
            from: r.from.clone(),
            version: r.version.clone(),
            mode: r.mode.clone(),
            rule: r.rule.clone(),
            state,
            reason,
            started: r.started,
            ended,
            records: n(&s.records),
            differences: n(&s.differences),
            candidate_failures: n(&s.candidate_failures),
            live_records: n(&s.live_records),
            live_failures: n(&s.live_failures),
            candidate_cpu_ms: (n(&s.candidate_nanos) as f64 / 1e4).round() / 100.0,
            samples: s.samples.lock().unwrap().clone(),
            switches: s.switches.lock().unwrap().clone(),
        }
    }
}

/// The running rollout and the finished ones, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutsView {
    pub current: Option<RolloutView>,
    pub history: Vec<RolloutView>,
}

/// A rollout that ended, and how.
pub(super) struct Finished {
    rollout: Arc<Rollout>,
    state: &'static str,
    reason: Option<String>,
    ended: u64,
}

/// Counters of rollouts ended, by how (for `/metrics`).
pub type RolloutEnds = Vec<(&'static str, u64)>;

impl HotSwap {
    /// Start a rollout of `bytes` as the candidate for plugin `name`. The
    /// candidate is validated like any new version first.
    pub async fn start_rollout(
        &self,
        name: &str,
        bytes: Vec<u8>,
        mode: Mode,
        rule: Option<RollbackRule>,
    ) -> Result<RolloutView, SwapError> {
        let _running = self.running.lock().await;
        let spec = self.current();
        if let Some(r) = &spec.rollout {
            return Err(SwapError::RolloutRunning { id: r.id, plugin: r.plugin.clone() });
        }
        check_mode(&mode)?;
        if let Some(rule) = &rule
            && !(rule.max_failure_rate >= 0.0 && rule.max_failure_rate < 1.0)
        {
            return Err(SwapError::BadRollout(format!("max_failure_rate {} is not within 0–1", rule.max_failure_rate)));
        }
        let live = spec.plugin(name).ok_or_else(|| SwapError::UnknownPlugin(name.into()))?.clone();
        let (bytes, version) = hashed(bytes).await;
        if version == live.version {
            return Err(SwapError::BadRollout(format!("the candidate is the live version of `{name}` ({version})")));
        }
        let candidate = self.validate(live.config.clone(), bytes, Trigger::Rollout).await?;
        let generation = spec.generation + 1;
        let id = {
            let mut st = self.status.lock().unwrap();
            st.next_rollout += 1;
            st.next_rollout
        };
        let rollout = Rollout {
            id,
            plugin: name.to_owned(),
            from: live.version.clone(),
            version: candidate.version.clone(),
            mode,
            rule,
            started: now(),
            candidate: Arc::new(ChainSpec::new(generation, with_replaced(&spec, vec![candidate]))),
            stats: Arc::new(RolloutStats::default()),
        };
        let note = format!("rollout {id} started: {}", describe(&rollout.mode));
        tracing::info!(event = "rollout_started", rollout = id, plugin = %name, from = %live.version, to = %rollout.version, mode = %rollout.mode.name(), generation, "{note}");
        let view = RolloutView::of(&rollout, "running", None, None);
        self.publish_rollout(&spec, Some(Arc::new(rollout)), name, Some(view.version.clone()), note);
        Ok(view)
    }

    /// Canary: the candidate takes these partitions too.
    pub async fn widen(&self, partitions: BTreeSet<i32>) -> Result<RolloutView, SwapError> {
        let _running = self.running.lock().await;
        let spec = self.current();
        let r = spec.rollout.as_ref().ok_or(SwapError::NoRollout)?;
        let Mode::Canary { partitions: now_on } = &r.mode else {
            return Err(SwapError::BadRollout(format!("rollout {} is a shadow run: only a canary widens", r.id)));
        };
        let mode = Mode::Canary { partitions: now_on.union(&partitions).copied().collect() };
        check_mode(&mode)?;
        let candidate = Arc::new(ChainSpec::new(spec.generation + 1, r.candidate.plugins.clone()));
        let widened = Rollout {
            mode,
            candidate,
            stats: r.stats.clone(),
            rule: r.rule.clone(),
            plugin: r.plugin.clone(),
            from: r.from.clone(),
            version: r.version.clone(),
            ..**r
        };
        let note = format!("rollout {} widened: {}", r.id, describe(&widened.mode));
        tracing::info!(event = "rollout_widened", rollout = r.id, plugin = %r.plugin, "{note}");
        let view = RolloutView::of(&widened, "running", None, None);
        let (plugin, to) = (r.plugin.clone(), r.version.clone());
        self.publish_rollout(&spec, Some(Arc::new(widened)), &plugin, Some(to), note);
        Ok(view)
    }

    /// The candidate becomes the live version on every partition (today's swap:
    /// persisted to the plugin's path when `persist_uploads`; the old version
    /// goes onto the rollback history).
    pub async fn promote(&self) -> Result<SwapReport, SwapError> {
        let _running = self.running.lock().await;
        let spec = self.current();
        let r = spec.rollout.clone().ok_or(SwapError::NoRollout)?;
        let candidate = r.candidate.plugin(&r.plugin).expect("the candidate chain holds the plugin").clone();
        self.persist(&candidate, Trigger::Promote).await?;
        tracing::info!(event = "rollout_promoted", rollout = r.id, plugin = %r.plugin, version = %r.version, "rollout {} promoted", r.id);
        Ok(self.replace_chain(&spec, r.candidate.plugins.clone(), Trigger::Promote, true))
    }

    /// End the running rollout; the live version runs every partition again
    /// (canary partitions switch back at their next batch).
    pub async fn abort(&self) -> Result<RolloutView, SwapError> {
        let _running = self.running.lock().await;
        let spec = self.current();
        let r = spec.rollout.clone().ok_or(SwapError::NoRollout)?;
        tracing::info!(event = "rollout_aborted", rollout = r.id, plugin = %r.plugin, "rollout {} aborted", r.id);
        Ok(self.end_rollout(&spec, &r, "aborted", None, Trigger::Rollout))
    }

    /// The rollback rule of rollout `id` tripped (a worker saw it): end it,
    /// unless it already ended.
    pub async fn auto_rollback(&self, id: u64, reason: String) {
        let _running = self.running.lock().await;
        let spec = self.current();
        let Some(r) = spec.rollout.clone().filter(|r| r.id == id) else { return };
        tracing::warn!(event = "rollout_rolled_back", rollout = id, plugin = %r.plugin, version = %r.version, "rollout {id} rolled back: {reason}");
        self.end_rollout(&spec, &r, "rolled-back", Some(reason), Trigger::AutoRollback);
    }

    /// The running rollout and the finished ones. A finished rollout's counts
    /// are read now: batches its candidate had started still count when they end.
    pub fn rollouts(&self) -> RolloutsView {
        let current = self.current().rollout.as_ref().map(|r| RolloutView::of(r, "running", None, None));
        let st = self.status.lock().unwrap();
        let history =
            st.rollout_history.iter().rev().map(|f| RolloutView::of(&f.rollout, f.state, f.reason.clone(), Some(f.ended))).collect();
        RolloutsView { current, history }
    }

    /// Rollouts ended, by how.
    pub fn rollout_ends(&self) -> RolloutEnds {
        self.status.lock().unwrap().rollout_ends.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Publish the next generation: the same live plugins, with `rollout`.
    fn publish_rollout(&self, spec: &ChainSpec, rollout: Option<Arc<Rollout>>, plugin: &str, to: Option<String>, note: String) {
        let generation = spec.generation + 1;
        let from = spec.plugin(plugin).map(|p| p.version.clone());
        self.event(Event { at: now(), plugin: plugin.to_owned(), from, to, trigger: Trigger::Rollout, generation, note: Some(note) });
        let next = ChainSpec { rollout, ..ChainSpec::new(generation, spec.plugins.clone()) };
        tracing::info!(generation, chain = %next.label, "chain generation published");
        self.tx.send_replace(Arc::new(next));
    }

    /// Record rollout `r` as ended (`state`) and publish the live chain without it.
    fn end_rollout(
        &self,
        spec: &ChainSpec,
        r: &Arc<Rollout>,
        state: &'static str,
        reason: Option<String>,
        trigger: Trigger,
    ) -> RolloutView {
        let view = self.finish(r, state, reason.clone());
        let note = format!("rollout {} {state}{}", r.id, reason.map(|r| format!(": {r}")).unwrap_or_default());
        let generation = spec.generation + 1;
        self.event(Event {
            at: now(),
            plugin: r.plugin.clone(),
            from: Some(r.version.clone()),
            to: Some(r.from.clone()),
            trigger,
            generation,
            note: Some(note),
        });
        let next = ChainSpec::new(generation, spec.plugins.clone());
        tracing::info!(generation, chain = %next.label, "chain generation published");
        self.tx.send_replace(Arc::new(next));
        view
    }

    /// Keep `r` as finished (`state`); count how it ended.
    pub(super) fn finish(&self, r: &Arc<Rollout>, state: &'static str, reason: Option<String>) -> RolloutView {
        let ended = now();
        let view = RolloutView::of(r, state, reason.clone(), Some(ended));
        let mut st = self.status.lock().unwrap();
        st.rollout_history.push_back(Finished { rollout: r.clone(), state, reason, ended });
        if st.rollout_history.len() > KEEP_FINISHED {
            st.rollout_history.pop_front();
        }
        *st.rollout_ends.entry(state).or_default() += 1;
        view
    }
}

fn check_mode(mode: &Mode) -> Result<(), SwapError> {
    match mode {
        Mode::Shadow { share } if !(*share > 0.0 && *share <= 1.0) => {
            Err(SwapError::BadRollout(format!("share {share} is not within (0, 1]: 1 shadows every batch, 0.1 one in ten")))
        }
        Mode::Canary { partitions } if partitions.is_empty() => Err(SwapError::BadRollout("a canary needs at least one partition".into())),
        Mode::Canary { partitions } if partitions.iter().any(|p| *p < 0) => {
            Err(SwapError::BadRollout("partitions are numbered from 0".into()))
        }
        _ => Ok(()),
    }
}

fn describe(mode: &Mode) -> String {
    match mode {
        Mode::Shadow { share } => format!("shadow on {}% of batches", share * 100.0),
        Mode::Canary { partitions } => {
            format!("canary on partitions {}", partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
        }
    }
}
