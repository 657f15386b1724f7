//! What a swap reports: what asked for it, what changed, what was refused, and
//! each plugin's status as the admin API lists it.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::ConfigError;
use crate::plugin::runtime::RuntimeError;

/// What asked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Initial load at start.
    Start,
    /// A plugin file changed on disk.
    File,
    /// A version uploaded through the admin API.
    Api,
    /// A rollback through the admin API.
    Rollback,
    /// The configuration reloaded (SIGHUP or the admin API).
    Reload,
    /// A rollout's candidate promoted (it becomes the live version).
    Promote,
    /// A rollout started, widened or ended by an operator.
    Rollout,
    /// A rollout ended by its rollback rule.
    AutoRollback,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::File => "file",
            Trigger::Api => "api",
            Trigger::Rollback => "rollback",
            Trigger::Reload => "reload",
            Trigger::Promote => "promote",
            Trigger::Rollout => "rollout",
            Trigger::AutoRollback => "auto-rollback",
        }
    }
}

/// Why a change was not made. The running chain is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("no plugin named `{0}` in the running chain")]
    UnknownPlugin(String),
    #[error("plugin `{0}` has no earlier version to roll back to")]
    NothingToRollBack(String),
    /// The new version failed validation.
    #[error("rejected, the running version stays: {0}")]
    Rejected(#[from] RuntimeError),
    #[error("reload rejected, the running chain stays: {0}")]
    Config(#[from] ConfigError),
    #[error("no configuration file to reload (the host was started from a configuration in memory)")]
    NoConfigFile,
    #[error("version {version} of plugin `{plugin}` is valid but cannot be written to {path}: {cause}; not swapped")]
    Persist { plugin: String, version: String, path: PathBuf, cause: std::io::Error },
    #[error("no rollout is running")]
    NoRollout,
    #[error("rollout {id} of plugin `{plugin}` is running: promote or abort it first")]
    RolloutRunning { id: u64, plugin: String },
    /// A rollout request that cannot be (same version, no partitions, a share out of range…).
    #[error("{0}")]
    BadRollout(String),
}

/// One entry of the swap history (newest last; the admin API lists it).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    pub plugin: String,
    /// The version before (`None`: added to the chain).
    pub from: Option<String>,
    /// The version after (`None`: removed; for a rollout, its candidate).
    pub to: Option<String>,
    pub trigger: Trigger,
    pub generation: u64,
    /// What happened, when more than a swap (`rollout 3 started: canary on 0,1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One plugin whose version changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub plugin: String,
    /// `None`: the plugin was added to the chain.
    pub from: Option<String>,
    /// `None`: the plugin was removed from the chain.
    pub to: Option<String>,
}

/// What an operation did.
#[derive(Debug, Clone, Serialize)]
pub struct SwapReport {
    /// False when there was nothing to change (same version, same chain).
    pub swapped: bool,
    /// The running generation afterwards.
    pub generation: u64,
    pub changes: Vec<Change>,
    /// Sections of a reloaded config that changed but need a restart to apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

/// A plugin as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    /// Unix seconds when this version started running, and what brought it.
    pub since: u64,
    pub trigger: Trigger,
    /// Earlier versions, newest first (what `rollback` goes back to).
    pub previous: Vec<String>,
    /// The last version refused for this plugin, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rejected: Option<Rejected>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub version: String,
    pub trigger: Trigger,
    pub at: u64,
    pub error: String,
}
