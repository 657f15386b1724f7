//! What several commands share: the `--config` argument and `KEY=VALUE` values.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;

/// The configuration file (TOML; every key is in docs/config.md).
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    #[arg(long, short, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

impl ConfigArg {
    /// Load and check the configuration file.
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.config)?)
    }
}

/// `KEY=VALUE` as a pair (for `--header`, `--params`).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}
