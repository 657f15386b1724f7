//! [`ConfigBuilder`]: a Sluice config built as TOML tables and written by the
//! toml crate, not pieced together with format strings: every value is quoted
//! and escaped as TOML wants, whatever it holds (a path, a URI, a JSON text).
//!
//! ```ignore
//! let text = env
//!     .builder()
//!     .plugin(PluginToml::example("enrich").param("square_field", "sq"))
//!     .set("pipeline", "batch_max_records", 64)
//!     .to_toml();
//! ```
//!
//! A test that writes a config as text on purpose (bad input, a typo, a
//! parse error) keeps writing it as text.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// A whole config: sections of `key = value`, and the `[[plugins]]` chain.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    root: Table,
}

impl ConfigBuilder {
    /// A config with no sections at all ([`crate::TestEnv::builder`] starts one for a test).
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// `key = value` in `[section]`; `section` may be dotted for a sub-table
    /// (`kafka.options`, `mongo.write_concern`), `key` is taken as it is (a
    /// librdkafka option's dots stay in its name).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        table_at(&mut self.root, section).insert(key.to_owned(), value.into());
        self
    }

    /// A raw librdkafka setting: `[kafka.options]`.
    pub fn kafka_option(self, key: &str, value: &str) -> ConfigBuilder {
        self.set("kafka.options", key, value)
    }

    /// One more plugin at the end of the chain.
    pub fn plugin(mut self, plugin: PluginToml) -> ConfigBuilder {
        let chain = self.root.entry("plugins").or_insert_with(|| Value::Array(Vec::new()));
        chain.as_array_mut().expect("plugins is an array of tables").push(Value::Table(plugin.table));
        self
    }

    /// These plugins at the end of the chain, in order.
    pub fn chain(self, plugins: impl IntoIterator<Item = PluginToml>) -> ConfigBuilder {
        plugins.into_iter().fold(self, ConfigBuilder::plugin)
    }

    /// The example plugins (`plugins/`), by name, in order, with no parameters.
    pub fn example_plugins(self, names: &[&str]) -> ConfigBuilder {
        self.chain(names.iter().map(|name| PluginToml::example(name)))
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.root).expect("a config serialises")
    }

    /// Write the TOML text to `path` and return the path.
    pub fn write(&self, path: impl Into<PathBuf>) -> PathBuf {
        let path = path.into();
        std::fs::write(&path, self.to_toml()).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

/// One `[[plugins]]` entry: name, path, and optional params, limits and self-tests.
#[derive(Clone, Debug)]
pub struct PluginToml {
    table: Table,
}

impl PluginToml {
    pub fn new(name: &str, path: impl AsRef<Path>) -> PluginToml {
        let mut table = Table::new();
        table.insert("name".into(), name.into());
        table.insert("path".into(), path.as_ref().display().to_string().into());
        PluginToml { table }
    }

    /// An example plugin of `plugins/` (built by `make plugins`).
    pub fn example(name: &str) -> PluginToml {
        PluginToml::new(name, crate::plugin(name))
    }

    /// `[plugins.params]`: `key = "value"`.
    pub fn param(mut self, key: &str, value: &str) -> PluginToml {
        table_at(&mut self.table, "params").insert(key.to_owned(), value.into());
        self
    }

    /// `[plugins.limits]`: `key = value` (`memory_bytes`, `call_timeout`, `max_output_bytes`).
    pub fn limit(mut self, key: &str, value: impl Into<Value>) -> PluginToml {
        table_at(&mut self.table, "limits").insert(key.to_owned(), value.into());
        self
    }

    /// `[[plugins.self_test]]`: a record's value, and the documents it must become (JSON), if stated.
    pub fn self_test(mut self, input: &str, expect: Option<&str>) -> PluginToml {
        let mut test = Table::new();
        test.insert("input".into(), input.into());
        if let Some(expect) = expect {
            test.insert("expect".into(), expect.into());
        }
        let tests = self.table.entry("self_test").or_insert_with(|| Value::Array(Vec::new()));
        tests.as_array_mut().expect("self_test is an array of tables").push(Value::Table(test));
        self
    }
}

/// The table at dotted `path` under `root`, created as needed.
fn table_at<'a>(root: &'a mut Table, path: &str) -> &'a mut Table {
    path.split('.').fold(root, |t, name| {
        t.entry(name).or_insert_with(|| Value::Table(Table::new())).as_table_mut().unwrap_or_else(|| panic!("{name} is not a table"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_sections_sub_tables_and_the_chain() {
        let text = ConfigBuilder::new()
            .set("kafka", "topics", vec!["t"])
            .kafka_option("sasl.username", "u")
            .set("pipeline", "batch_max_records", 16)
            .plugin(PluginToml::new("a", "/p/a.wasm").param("k", "v \"quoted\"").limit("call_timeout", "1s"))
            .plugin(PluginToml::new("b", "/p/b.wasm").self_test(r#"{"num": 3}"#, Some("[]")))
            .to_toml();
        let back: Table = toml::from_str(&text).unwrap();
        assert_eq!(back["kafka"]["topics"].as_array().unwrap()[0].as_str(), Some("t"));
        assert_eq!(back["kafka"]["options"]["sasl.username"].as_str(), Some("u"));
        assert_eq!(back["pipeline"]["batch_max_records"].as_integer(), Some(16));
        let chain = back["plugins"].as_array().unwrap();
        assert_eq!(chain[0]["params"]["k"].as_str(), Some("v \"quoted\""));
        assert_eq!(chain[0]["limits"]["call_timeout"].as_str(), Some("1s"));
        assert_eq!(chain[1]["self_test"][0]["input"].as_str(), Some(r#"{"num": 3}"#));
        assert_eq!(chain[1]["self_test"][0]["expect"].as_str(), Some("[]"));
    }
}
