//! `sluice plugin new [--lang rust|python|js] <name>`: a plugin that builds as
//! it is: a `map` function with a unit test, sample records and a README with
//! the next commands (test natively, `sluice plugin build`, try with `sluice
//! plugin test`, deploy). Rust: a crate with the wasm32 target set and an
//! LTO-and-strip release profile. Python and JavaScript: one `plugin` file and
//! its test, the SDK from Sluice's cache (see [`super::plugin_build`]).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

use super::plugin_build::{Lang, sdk_dir};

#[derive(Args)]
pub struct PluginNewArgs {
    /// Plugin name: lowercase letters, digits, `-`, `_`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Where to create it (default: ./<name>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Rust only: the sluice-plugin crate (guest-sdk/) to depend on, by absolute path (default: the guest-sdk/ of
    /// the checkout this binary was built from; pass this when that checkout moved or is not on this machine).
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

/// Create the crate and print the next commands.
pub fn execute(args: PluginNewArgs) -> anyhow::Result<()> {
    let PluginNewArgs { name, lang, dir, sdk_path } = args;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    if lang != Lang::Rust {
        if sdk_path.is_some() {
            bail!("--sdk-path is for Rust plugins: the Python and JavaScript SDKs come with this binary");
        }
        new_script_plugin(&name, lang, &dir)?;
        println!("created {} plugin {name} in {}", lang.name(), dir.display());
        println!("next: sluice plugin build {}   # makes {}/{name}.wasm", dir.display(), dir.display());
        println!("then: sluice plugin test {}/{name}.wasm --input {}/records.jsonl", dir.display(), dir.display());
        return Ok(());
    }
    let sdk = sdk_path
        .or_else(default_sdk_path)
        .context("where is the sluice-plugin crate? pass --sdk-path <sluice checkout>/guest-sdk (this binary was not built from one)")?;
    let wasm = new_plugin(&name, &dir, &sdk)?;
    println!("created plugin {name} in {}", dir.display());
    println!("next: cd {} && cargo build --release   # makes {}", dir.display(), wasm.strip_prefix(&dir).unwrap_or(&wasm).display());
    println!("then: sluice plugin test {} --input records.jsonl", wasm.strip_prefix(&dir).unwrap_or(&wasm).display());
    Ok(())
}

/// Where the guest SDK of this source tree is, if this binary was built from one.
pub fn default_sdk_path() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    std::fs::canonicalize(p).ok().filter(|p| p.join("Cargo.toml").exists())
}

fn check_new(name: &str, dir: &Path) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        bail!("plugin name {name:?}: use lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    if dir.exists() {
        bail!("{} exists already: choose another name or --dir", dir.display());
    }
    Ok(())
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

const RECORDS: &str = "{\"num\": 1}\n{\"num\": 2}\n{\"n\": 3}\n";

/// Write a Python or JavaScript plugin `name` into `dir` (which must not exist yet).
pub fn new_script_plugin(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<()> {
    check_new(name, dir)?;
    let sdk = sdk_dir()?;
    let files = match lang {
        Lang::Python => vec![
            ("plugin.py", PY_PLUGIN.replace("NAME", name)),
            ("test_plugin.py", PY_TEST.to_owned()),
            ("records.jsonl", RECORDS.to_owned()),
            (".gitignore", "*.wasm\n__pycache__/\n".to_owned()),
            ("README.md", script_readme(name, lang, &format!("PYTHONPATH={}:. python3 -m pytest -q", sdk.join("python").display()))),
        ],
        Lang::Js => vec![
            ("plugin.js", JS_PLUGIN.replace("NAME", name)),
            ("plugin.test.js", JS_TEST.to_owned()),
            (
                "package.json",
                format!(
                    "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \"main\": \"plugin.js\",\n  \
                     \"dependencies\": {{ \"sluice-plugin\": {} }},\n  \"scripts\": {{ \"test\": \"node --test\" }}\n}}\n",
                    serde_json::to_string(&format!("file:{}", sdk.join("js").display()))?
                ),
            ),
            ("records.jsonl", RECORDS.to_owned()),
            (".gitignore", "*.wasm\nnode_modules/\n".to_owned()),
            ("README.md", script_readme(name, lang, "npm install && npm test")),
        ],
        Lang::Rust => bail!("a Rust plugin is a crate: see new_plugin"),
    };
    write_files(dir, &files)
}

const PY_PLUGIN: &str = r#""""NAME: a Sluice plugin. It adds `doubled` (twice `num`) to each record's JSON
document; a record without an integer `num` fails (and only that record)."""
from sluice_plugin import Error, Record, map


@map
def double(doc, record: Record):
    n = doc.get("num") if isinstance(doc, dict) else None
    if type(n) is not int:
        raise Error(f"no integer field `num` in {doc}")
    doc["doubled"] = n * 2
    return doc
"#;

const PY_TEST: &str = r#""""The plugin's function, natively (no WebAssembly)."""
from sluice_plugin import Output
from sluice_plugin.testing import run

import plugin  # noqa: F401 - registers the plugin's function


def test_adds_doubled():
    outcomes = run(['{"num": 21}', '{"n": 1}'])
    assert outcomes[0] == ("emit", [Output.insert({"num": 21, "doubled": 42})])
    assert outcomes[1][0] == "error"
"#;

const JS_PLUGIN: &str = r#"// NAME: a Sluice plugin. It adds `doubled` (twice `num`) to each record's JSON
// document; a record without an integer `num` fails (and only that record).
import { map, PluginError } from 'sluice-plugin';

export default map((doc, record) => {
  if (doc === null || typeof doc !== 'object' || !Number.isInteger(doc.num)) {
    throw new PluginError(`no integer field \`num\` in ${JSON.stringify(doc)}`);
  }
  return { ...doc, doubled: doc.num * 2 };
});
"#;

const JS_TEST: &str = r#"// The plugin's function, natively (no WebAssembly).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from 'sluice-plugin/testing';
import plugin from './plugin.js';

test('adds doubled', () => {
  const [ok, bad] = run(plugin, ['{"num": 21}', '{"n": 1}'], { raw: true });
  assert.deepEqual(ok.outputs.map((o) => o.document), ['{"num":21,"doubled":42}']);
  assert.equal(bad.kind, 'error');
});
"#;

fn script_readme(name: &str, lang: Lang, test: &str) -> String {
    let file = if lang == Lang::Python { "plugin.py" } else { "plugin.js" };
    format!(
        r#"# {name}

A Sluice plugin in {lang}: one plain function in `{file}`.

```sh
{test}                                   # the function, natively
sluice plugin build .                    # -> {name}.wasm (tools installed into ~/.cache/sluice once)
sluice plugin test {name}.wasm --input records.jsonl
```

To deploy, list `{name}.wasm` under `[[plugins]]` in the host's config; to
replace a running version, write the file, or upload it:
`curl -X PUT --data-binary @{name}.wasm localhost:9464/plugins/NAME`,
where NAME is the `name` you gave it under `[[plugins]]`.
"#,
        lang = lang.name()
    )
}

/// Write the crate `name` into `dir` (which must not exist yet); returns the
/// path of the `.wasm` a release build makes.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    check_new(name, dir)?;
    let sdk = std::fs::canonicalize(sdk).with_context(|| format!("the guest SDK at {}", sdk.display()))?;
    if !sdk.join("Cargo.toml").exists() {
        bail!("{} is not the sluice-plugin crate (no Cargo.toml)", sdk.display());
    }
    let ident = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (".cargo/config.toml", "# Plugins are built for WebAssembly.\n[build]\ntarget = \"wasm32-unknown-unknown\"\n".to_owned()),
        (".gitignore", "/target\n".to_owned()),
        ("src/lib.rs", lib_rs(name, &ident)),
        ("records.jsonl", "{\"num\": 1}\n{\"num\": 2}\n{\"n\": 3}\n".to_owned()),
        ("README.md", readme(name, &ident)),
    ];
    write_files(dir, &files)?;
    Ok(dir.join(format!("target/wasm32-unknown-unknown/release/{ident}.wasm")))
}

/// The crate's manifest: the SDK by absolute path, a release profile for small plugins.
fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm plugin; rlib: `cargo test` runs the function natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The guest SDK by absolute path: the checkout `sluice plugin new` was built from,
# or its --sdk-path. If that checkout moves, change this path.
sluice-plugin = {{ path = "{sdk}" }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A workspace of its own.
[workspace]
"#,
        sdk = sdk.display()
    )
}

/// The plugin: a `map` function with a unit test.
fn lib_rs(name: &str, ident: &str) -> String {
    format!(
        r##"//! {name}: a Sluice plugin. It adds `doubled` (twice `num`) to each record's
//! JSON document; a record without an integer `num` fails (and only that record).

use sluice_plugin::{{Record, Result, Value, anyhow, map}};

#[map]
pub fn {ident}(mut doc: Value, _record: &Record) -> Result<Value> {{
    let n = doc.get("num").and_then(Value::as_i64).ok_or_else(|| anyhow!("no integer field `num` in {{doc}}"))?;
    doc["doubled"] = (n * 2).into();
    Ok(doc)
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use sluice_plugin::json;

    #[test]
    fn adds_doubled() {{
        let record = Record::new("t", 0, 0, r#"{{"num": 21}}"#);
        assert_eq!({ident}(json!({{"num": 21}}), &record).unwrap(), json!({{"num": 21, "doubled": 42}}));
        assert!({ident}(json!({{"n": 1}}), &record).is_err());
    }}
}}
"##
    )
}

/// The next commands: test, build, try, deploy.
fn readme(name: &str, ident: &str) -> String {
    format!(
        r#"# {name}

A Sluice plugin: one plain function in `src/lib.rs`, exported through the
contract by `#[map]`.

```sh
cargo test --target "$(rustc -vV | sed -n 's/^host: //p')"   # the function, natively
cargo build --release                                        # -> target/wasm32-unknown-unknown/release/{ident}.wasm
sluice plugin test target/wasm32-unknown-unknown/release/{ident}.wasm --input records.jsonl
```

To deploy, list the `.wasm` under `[[plugins]]` in the host's config; to
replace a running version, write the file, or upload it:
`curl -X PUT --data-binary @target/wasm32-unknown-unknown/release/{ident}.wasm localhost:9464/plugins/NAME`,
where NAME is the `name` you gave it under `[[plugins]]`.
"#
    )
}
