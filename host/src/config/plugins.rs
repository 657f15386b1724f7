//! `[[plugins]]`: the chain, each plugin's sandbox limits and self-tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Shown in logs; unique within the chain.
    pub name: String,
    /// A `.wasm` file: a component, or a core module built with the guest SDK.
    pub path: PathBuf,
    /// Given once to the plugin's init function.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Sandbox limits of this plugin (defaults are always on).
    #[serde(default)]
    pub limits: PluginLimits,
    /// Records every version of this plugin must handle as stated before it
    /// runs: at start, and before a hot swap (`[[plugins.self_test]]`).
    #[serde(default)]
    pub self_test: Vec<SelfTest>,
}

impl PluginConfig {
    /// A plugin with no parameters, default limits and no self-tests.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> PluginConfig {
        PluginConfig {
            name: name.into(),
            path: path.into(),
            params: BTreeMap::new(),
            limits: PluginLimits::default(),
            self_test: Vec::new(),
        }
    }
}

/// One self-test record: the plugin gets a record with this value (and key),
/// and must emit exactly `expect`, or fail it when `expect_error` is set, or, with
/// neither, at least not fail or trap.
///
/// ```toml
/// [[plugins.self_test]]
/// input = '{"num": 3}'
/// expect = '[{"num": 3, "square": 9}]'   # the documents, in order; "[]" = dropped
/// ```
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelfTest {
    /// The record's value (JSON text for most plugins).
    pub input: String,
    /// The record's key. Default: none.
    #[serde(default)]
    pub key: Option<String>,
    /// The record's topic. Default `self-test` (partition 0, offset 0).
    #[serde(default = "default_self_test_topic")]
    pub topic: String,
    /// A JSON array of the documents the plugin must emit for this record.
    #[serde(default)]
    pub expect: Option<String>,
    /// The plugin must return an error for this record.
    #[serde(default)]
    pub expect_error: bool,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory cap per instance. Default 64 MiB.
    #[serde(default = "default_memory")]
    pub memory_bytes: usize,
    /// Wall-clock cap of one call (one batch). Default 5s.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Cap on the total size of the documents one record becomes. Default 16 MiB
    /// (MongoDB's document limit).
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits { memory_bytes: default_memory(), call_timeout: default_call_timeout(), max_output_bytes: default_max_output() }
    }
}

fn default_self_test_topic() -> String {
    "self-test".into()
}
fn default_memory() -> usize {
    64 << 20
}
fn default_max_output() -> usize {
    16 << 20
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn self_tests_parse_and_are_checked() {
        let plugin = "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\n";
        let c = parse(&format!("{MINIMAL}\n{plugin}[[plugins.self_test]]\ninput = '{{\"num\": 3}}'\nexpect = '[{{\"num\": 3}}]'\n[[plugins.self_test]]\ninput = 'x'\nexpect_error = true\n")).unwrap();
        let t = &c.plugins[0].self_test;
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].topic, "self-test");
        assert!(t[1].expect_error && t[1].expect.is_none());
        for (bad, needle) in [
            ("input = '1'\nexpect = '{}'\n", "must be a JSON array"),
            ("input = '1'\nexpect = '[1'\n", "`expect` is not JSON"),
            ("input = '1'\nexpect = '[]'\nexpect_error = true\n", "not both"),
        ] {
            let err = parse(&format!("{MINIMAL}\n{plugin}[[plugins.self_test]]\n{bad}")).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("self_test 1"), "{needle}: {err}");
        }
    }

    #[test]
    fn plugin_paths_are_relative_to_the_config_file() {
        let c = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"p/a.wasm\"\nparams = {{ k = \"v\" }}\n")).unwrap();
        assert_eq!(c.plugins[0].path, Path::new("/etc/sluice/p/a.wasm"));
        assert_eq!(c.plugins[0].params["k"], "v");
        assert_eq!(c.plugins[0].limits.memory_bytes, 64 << 20);
    }
}
