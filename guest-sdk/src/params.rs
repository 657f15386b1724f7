//! The plugin's parameters from the host config.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Result, anyhow};

/// The plugin's parameters, from `[[plugins]] params = { ... }` in the host config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Params(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// The parameter, or an error that names it.
    pub fn require(&self, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| anyhow!("missing parameter `{key}`"))
    }
    /// The parameter parsed as `T`, or `default` when absent; an error naming it when unparsable.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| anyhow!("parameter `{key}` = {raw:?}: {e}")),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
