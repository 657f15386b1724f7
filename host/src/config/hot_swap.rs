//! `[hot_swap]`: how plugin files are watched and versions kept.

use std::time::Duration;

use serde::Deserialize;

use super::default_true;

/// How plugins are replaced while running. Every new version is compiled off
/// the hot path and validated (a component of the contract, instantiates, init
/// succeeds, self-tests pass) before partition workers switch to it at their
/// next batch; a failure keeps the running version.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HotSwapConfig {
    /// Watch the plugin files: a changed file is validated and swapped in. Default true.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet time after the last change in a plugin's directory before the file
    /// is read (a copy in progress is not read half-written). Default 100ms.
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub debounce: Duration,
    /// Earlier versions kept per plugin for rollback. Default 5.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: usize,
    /// Write a version uploaded or rolled back through the admin API to the
    /// plugin's `path` (atomically), so a restart runs it too. Default true.
    #[serde(default = "default_true")]
    pub persist_uploads: bool,
}

impl Default for HotSwapConfig {
    fn default() -> Self {
        HotSwapConfig { watch: true, debounce: default_debounce(), keep_versions: default_keep_versions(), persist_uploads: true }
    }
}

fn default_debounce() -> Duration {
    Duration::from_millis(100)
}
fn default_keep_versions() -> usize {
    5
}
