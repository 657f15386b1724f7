//! `sluice plugin build <dir>`: a plugin directory in Rust, Python or
//! JavaScript to one `.wasm` the host loads.
//!
//! - Rust (`Cargo.toml`): `cargo build --release` for wasm32-unknown-unknown.
//! - Python (`plugin.py`): componentize-py with the Python SDK.
//! - JavaScript (`plugin.js`): bundled with rolldown (the SDK resolved to its
//!   own copy), then componentize-js.
//!
//! The Python and JavaScript tools are installed on first use, pinned, into
//! Sluice's cache (`SLUICE_CACHE`, default `~/.cache/sluice`); the SDKs and the
//! WIT are compiled into this binary and written there too, so a build does not
//! need a Sluice checkout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use crate::config::PluginConfig;
use crate::plugin::runtime::Runtime;

/// componentize-py, from PyPI.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js and rolldown, from npm: the versions in `guest-sdk/js/tools/package.json`.
pub const COMPONENTIZE_JS: &str = "0.23.0";

const WIT: &str = include_str!("../../../guest-sdk/wit/plugin.wit");
const PY_SDK: [(&str, &str); 5] = [
    ("__init__.py", include_str!("../../../guest-sdk/python/src/sluice_plugin/__init__.py")),
    ("_columns.py", include_str!("../../../guest-sdk/python/src/sluice_plugin/_columns.py")),
    ("_guest.py", include_str!("../../../guest-sdk/python/src/sluice_plugin/_guest.py")),
    ("log.py", include_str!("../../../guest-sdk/python/src/sluice_plugin/log.py")),
    ("testing.py", include_str!("../../../guest-sdk/python/src/sluice_plugin/testing.py")),
];
const JS_SDK: [(&str, &str); 5] = [
    ("package.json", include_str!("../../../guest-sdk/js/package.json")),
    ("src/index.js", include_str!("../../../guest-sdk/js/src/index.js")),
    ("src/columns.js", include_str!("../../../guest-sdk/js/src/columns.js")),
    ("src/log.js", include_str!("../../../guest-sdk/js/src/log.js")),
    ("src/testing.js", include_str!("../../../guest-sdk/js/src/testing.js")),
];
const JS_TOOLS: [(&str, &str); 2] = [
    ("package.json", include_str!("../../../guest-sdk/js/tools/package.json")),
    ("package-lock.json", include_str!("../../../guest-sdk/js/tools/package-lock.json")),
];

#[derive(Args)]
pub struct PluginBuildArgs {
    /// The plugin's directory: a crate (`Cargo.toml`), `plugin.py` or `plugin.js`.
    pub dir: PathBuf,
    /// Where to write the `.wasm` (default: <dir>/<dir name>.wasm).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

/// A plugin's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    /// The language of the plugin in `dir`, by the file it is written in.
    pub fn of(dir: &Path) -> anyhow::Result<Lang> {
        let found: Vec<Lang> = [("Cargo.toml", Lang::Rust), ("plugin.py", Lang::Python), ("plugin.js", Lang::Js)]
            .into_iter()
            .filter(|(f, _)| dir.join(f).is_file())
            .map(|(_, l)| l)
            .collect();
        match found[..] {
            [lang] => Ok(lang),
            [] => bail!(
                "{} has no Cargo.toml, plugin.py or plugin.js: not a plugin directory (`sluice plugin new --lang rust|python|js NAME` makes one)",
                dir.display()
            ),
            _ => bail!("{} has more than one of Cargo.toml, plugin.py and plugin.js: which language is it?", dir.display()),
        }
    }
}

/// Build the plugin and say where it went.
pub fn execute(args: PluginBuildArgs) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&args.dir).with_context(|| format!("plugin directory {}", args.dir.display()))?;
    let lang = Lang::of(&dir)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
    let out = match args.out {
        Some(out) => std::path::absolute(out)?,
        None => dir.join(format!("{name}.wasm")),
    };
    let started = Instant::now();
    build(lang, &dir, &out)?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let built = started.elapsed();
    // Compile and link it as the host will (its imports, the contract): a
    // mismatch fails here, and the compiled code is cached for the first load.
    let runtime = Runtime::new()?;
    let plugin = runtime.prepare(&PluginConfig::new(&name, out.clone()))?;
    println!(
        "built {} ({}, {:.1} MB, {:.1} s; version {}, compiled and checked against {} in {:.1} s)",
        out.display(),
        lang.name(),
        size as f64 / 1e6,
        built.as_secs_f64(),
        plugin.version,
        crate::plugin::runtime::CONTRACT,
        (started.elapsed() - built).as_secs_f64()
    );
    println!("next: sluice plugin test {} --input records.jsonl", out.display());
    Ok(())
}

/// Build the plugin in `dir` (of `lang`) into `out`.
pub fn build(lang: Lang, dir: &Path, out: &Path) -> anyhow::Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    match lang {
        Lang::Rust => build_rust(dir, out),
        Lang::Python => build_python(dir, out),
        Lang::Js => build_js(dir, out),
    }
}

fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let target = "wasm32-unknown-unknown";
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--lib", "--target", target, "--message-format=json-render-diagnostics"])
        .current_dir(dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo (is Rust installed? `rustup target add wasm32-unknown-unknown` too)")?;
    if !output.status.success() {
        bail!("cargo build failed in {} ({})", dir.display(), output.status);
    }
    // The crate's own cdylib, from cargo's messages (the target dir may be a workspace's).
    let manifest = dir.join("Cargo.toml");
    let wasm = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"));
    let wasm =
        wasm.with_context(|| format!("cargo built no .wasm for {}: is it a `crate-type = [\"cdylib\"]` library?", manifest.display()))?;
    std::fs::copy(&wasm, out).with_context(|| format!("copying {} to {}", wasm.display(), out.display()))?;
    Ok(())
}

fn build_python(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let sdk = sdk_dir()?;
    let venv = tool_dir(&format!("componentize-py-{COMPONENTIZE_PY}"), |tmp| {
        run(Command::new(python()).args(["-m", "venv"]).arg(tmp), "creating a Python venv for componentize-py")?;
        run(
            Command::new(tmp.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
            "installing componentize-py from PyPI",
        )
    })?;
    let work = tempfile_dir("py")?;
    std::fs::write(
        work.join("_sluice_main.py"),
        "import plugin  # noqa: F401 - registers the plugin's function\n\
         from sluice_plugin._guest import Transform  # noqa: F401 - the component's export\n",
    )?;
    let result = run(
        // Through the venv's python, not its `componentize-py` script: the
        // script's #! names the directory the venv was made in.
        Command::new(venv.join("bin/python"))
            .env_remove("VIRTUAL_ENV")
            .env_remove("PYTHONPATH")
            .args(["-c", "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())"])
            .arg("-d")
            .arg(sdk.join("wit"))
            .args(["-w", "plugin", "componentize", "-p"])
            .arg(&work)
            .arg("-p")
            .arg(dir)
            .arg("-p")
            .arg(sdk.join("python"))
            .arg("_sluice_main")
            .arg("-o")
            .arg(out),
        "componentize-py",
    );
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn build_js(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let sdk = sdk_dir()?;
    let tools = tool_dir(&format!("componentize-js-{COMPONENTIZE_JS}"), |tmp| {
        for (file, text) in JS_TOOLS {
            std::fs::write(tmp.join(file), text)?;
        }
        run(
            Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(tmp),
            "installing componentize-js and rolldown from npm (is Node.js installed?)",
        )
    })?;
    // componentize-js wants the WIT under its working directory.
    let work = tempfile_dir("js")?;
    copy_dir(&sdk.join("wit"), &work.join("wit"))?;
    let entry = format!(
        "import {{ log as sdkLog }} from 'sluice-plugin';\n\
         import {{ log as hostLog }} from '{}';\n\
         import plugin from {};\n\
         sdkLog.setHost(hostLog);\n\
         export const transform = plugin;\n",
        crate::plugin::runtime::HOST_INTERFACE,
        serde_json::to_string(&dir.join("plugin.js").to_string_lossy())?
    );
    std::fs::write(work.join("entry.js"), entry)?;
    let config = format!(
        "export default {{\n  input: 'entry.js',\n  external: [/^sluice:plugin\\//],\n  \
         resolve: {{ alias: {{ 'sluice-plugin': {} }} }},\n  output: {{ file: 'bundle.js', format: 'esm' }},\n}};\n",
        serde_json::to_string(&sdk.join("js/src/index.js").to_string_lossy())?
    );
    std::fs::write(work.join("rolldown.config.mjs"), config)?;
    let result =
        run(Command::new(tools.join("node_modules/.bin/rolldown")).args(["-c", "rolldown.config.mjs"]).current_dir(&work), "rolldown")
            .and_then(|()| {
                // Without `-d http fetch-event` the component would import wasi:http, which the host refuses.
                run(
                    Command::new("node")
                        .arg(tools.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
                        .args(["bundle.js", "-w", "wit", "-n", "plugin", "-d", "http", "fetch-event", "-o"])
                        .arg(out)
                        .current_dir(&work),
                    "componentize-js",
                )
            });
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run a command, its output shown; an error names `what`.
fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// A tool installed once into `<cache>/<name>`: made in a temporary directory
/// beside it and renamed into place, so concurrent builds never see half of one.
fn tool_dir(name: &str, install: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<PathBuf> {
    let cache = crate::config::cache_home().context("no cache directory: set SLUICE_CACHE or HOME")?;
    let dir = cache.join(name);
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let tmp = cache.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    eprintln!("installing {name} into {} (once)", dir.display());
    let installed = install(&tmp).and_then(|()| Ok(std::fs::write(tmp.join(".complete"), "")?));
    if let Err(e) = installed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // One rename puts the whole tool in place; if another build won, use its copy.
    // A directory without `.complete` is an interrupted install.
    if dir.exists() && !dir.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join(".complete").exists() {
            bail!("cannot install {name} into {}", dir.display());
        }
    }
    Ok(dir)
}

/// The SDKs and the WIT this binary carries, written once into the cache
/// (keyed by their content).
pub fn sdk_dir() -> anyhow::Result<PathBuf> {
    let files: Vec<(String, &str)> = std::iter::once(("wit/plugin.wit".to_owned(), WIT))
        .chain(PY_SDK.iter().map(|(f, t)| (format!("python/sluice_plugin/{f}"), *t)))
        .chain(JS_SDK.iter().map(|(f, t)| (format!("js/{f}"), *t)))
        .collect();
    let all: Vec<u8> = files.iter().flat_map(|(f, t)| [f.as_bytes(), t.as_bytes()].concat()).collect();
    let version = crate::plugin::runtime::version_of(&all);
    let cache = crate::config::cache_home().context("no cache directory: set SLUICE_CACHE or HOME")?;
    let dir = cache.join(format!("sdk-{version}"));
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    let tmp = cache.join(format!(".sdk-{version}.{}", std::process::id()));
    for (file, text) in &files {
        let path = tmp.join(file);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(tmp.join(".complete"), "")?;
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}

/// A fresh private working directory.
fn tempfile_dir(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-build-{what}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_told_by_the_plugins_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Lang::of(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a plugin directory"), "{err}");
        std::fs::write(dir.path().join("plugin.py"), "").unwrap();
        assert_eq!(Lang::of(dir.path()).unwrap(), Lang::Python);
        std::fs::write(dir.path().join("plugin.js"), "").unwrap();
        assert!(Lang::of(dir.path()).unwrap_err().to_string().contains("more than one"));
    }

    #[test]
    fn the_embedded_sdks_are_the_checkouts() {
        // include_str! paths and the SDK's file list agree with the tree.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        let listed = |dir: &Path, ext: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(ext))
                .collect();
            v.sort();
            v
        };
        let mut py: Vec<String> = PY_SDK.iter().map(|(f, _)| f.to_string()).collect();
        py.sort();
        assert_eq!(py, listed(&root.join("python/src/sluice_plugin"), ".py"), "PY_SDK lists every SDK module");
        let mut js: Vec<String> = JS_SDK.iter().filter_map(|(f, _)| f.strip_prefix("src/").map(String::from)).collect();
        js.sort();
        assert_eq!(js, listed(&root.join("js/src"), ".js"), "JS_SDK lists every SDK module");
    }
}
