//! Loading a plugin version: read its file, tell a component from a core module
//! (wrapping a core module built with the guest SDK into a component), refuse
//! WASI preview 1 and any other import the host does not offer, compile and pre-link it
//! against the contract, and run its self-tests.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::columns::{Batch, OutcomeRef};
use super::columns::{bindings, legacy_bindings};
use super::instance::{HostState, PluginInstance};
use super::runtime::{CallLimit, Runtime, RuntimeError};
use crate::config::{PluginConfig, SelfTest};

/// The core-module import namespaces of WASI preview 1 (and its predecessor).
const WASI_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

impl Runtime {
    pub(super) fn load_bytes(&self, cfg: &PluginConfig, bytes: Vec<u8>) -> Result<Arc<LoadedPlugin>, RuntimeError> {
        let (name, path) = (cfg.name.as_str(), cfg.path.as_path());
        let version = version_of(&bytes);
        let component_bytes = match wasm_kind(&bytes) {
            Some(WasmKind::Component) => None,
            Some(WasmKind::Module) => {
                if let Some((module, functions)) = wasi_imports(&bytes) {
                    return Err(RuntimeError::WasiModule { name: name.into(), path: path.into(), module, functions });
                }
                Some(componentize(&bytes).map_err(|message| RuntimeError::Componentize {
                    name: name.into(),
                    path: path.into(),
                    message,
                })?)
            }
            None => return Err(RuntimeError::NotWasm { name: name.into(), path: path.into() }),
        };
        let component_bytes = component_bytes.as_deref().unwrap_or(&bytes);
        let component = Component::new(&self.engine, component_bytes).map_err(|e| RuntimeError::Compile {
            name: name.into(),
            path: path.into(),
            message: format!("{e:#}"),
        })?;
        // Only the contract and the sandbox's WASI: anything else is refused
        // here, naming it (a contract mismatch is left to the linker).
        let refused = super::sandbox::refused_imports(component.component_type().imports(&self.engine).map(|(n, _)| n));
        if !refused.is_empty() {
            return Err(RuntimeError::SystemImports { name: name.into(), path: path.into(), imports: refused });
        }
        // On a mismatch, say what the component does offer and need.
        let contract_err = |e: wasmtime::Error| {
            let ty = component.component_type();
            let exports: Vec<&str> = ty.exports(&self.engine).map(|(n, _)| n).collect();
            let imports: Vec<&str> = ty.imports(&self.engine).map(|(n, _)| n).collect();
            RuntimeError::Contract {
                name: name.into(),
                path: path.into(),
                message: format!("{e:#} (the component exports {exports:?} and imports {imports:?})"),
            }
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(contract_err)?;
        // This contract, or the older one the host still runs unchanged.
        let pre = match bindings::PluginPre::new(instance_pre.clone()) {
            Ok(pre) => PluginPre::Current(pre),
            Err(e) => match legacy_bindings::PluginPre::new(instance_pre) {
                Ok(pre) => PluginPre::Legacy(pre),
                Err(_) => return Err(contract_err(e)),
            },
        };
        Ok(Arc::new(LoadedPlugin {
            name: name.into(),
            version,
            path: path.into(),
            params: cfg.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            config: cfg.clone(),
            bytes: bytes.into(),
            limit: self.limit,
            engine: self.engine.clone(),
            pre,
        }))
    }
}

/// Read a plugin's file.
pub fn read_plugin(cfg: &PluginConfig) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(&cfg.path).map_err(|cause| RuntimeError::Read { name: cfg.name.clone(), path: cfg.path.clone(), cause })
}

/// A plugin version: the first 12 hex digits of the SHA-256 of its file.
pub fn version_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..6].iter().map(|b| format!("{b:02x}")).collect()
}

enum WasmKind {
    Module,
    Component,
}

/// Core modules and components share the magic; the version/layer word differs.
fn wasm_kind(bytes: &[u8]) -> Option<WasmKind> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return None;
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Some(WasmKind::Module),
        [0x0d, 0, 1, 0] => Some(WasmKind::Component),
        _ => None,
    }
}

/// A core module built for WASI preview 1: the WASI namespace it imports from and
/// the functions it imports (`fd_write`, `environ_get`…). `None` if it imports none
/// (or cannot be read: [`componentize`] reports that).
fn wasi_imports(module: &[u8]) -> Option<(String, Vec<String>)> {
    let mut found: Option<(String, Vec<String>)> = None;
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let Ok(wasmparser::Payload::ImportSection(section)) = payload else { continue };
        for import in section.into_imports().map_while(Result::ok) {
            if WASI_MODULES.contains(&import.module) {
                let (module, functions) = found.get_or_insert_with(|| (import.module.to_string(), Vec::new()));
                if module == import.module {
                    functions.push(import.name.to_string());
                }
            }
        }
    }
    found
}

/// Wrap a core module built with the guest SDK (it carries its component type in
/// a custom section) into a component, in-process.
/// Any bytes on disk give an error, never a panic: the module is validated
/// first (wit-component indexes out of range on some truncated files), and
/// the encoder runs under `catch_unwind` all the same.
fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(module)
        .map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
    std::panic::catch_unwind(|| {
        wit_component::ComponentEncoder::default().module(module).and_then(|e| e.validate(true).encode()).map_err(|e| format!("{e:#}"))
    })
    .unwrap_or_else(|_| Err("the module could not be read (malformed)".into()))
}

/// A component pre-linked against the contract it exports.
pub(super) enum PluginPre {
    /// `sluice:plugin@0.3.0`, this host's.
    Current(bindings::PluginPre<HostState>),
    /// `sluice:plugin@0.2.0`: batches and results are converted at the call.
    Legacy(legacy_bindings::PluginPre<HostState>),
}

/// A compiled, pre-linked plugin version. Cheap to instantiate.
pub struct LoadedPlugin {
    pub name: String,
    /// First 12 hex digits of the SHA-256 of the file ([`version_of`]).
    pub version: String,
    pub path: PathBuf,
    pub(super) params: Vec<(String, String)>,
    /// The configuration it was validated with (params, limits, self-tests).
    pub config: PluginConfig,
    /// The file as loaded (kept for rollback).
    pub bytes: Arc<[u8]>,
    pub(super) limit: CallLimit,
    pub(super) engine: Engine,
    pub(super) pre: PluginPre,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("version", &self.version).field("path", &self.path).finish()
    }
}

impl LoadedPlugin {
    pub fn max_output_bytes(&self) -> usize {
        self.config.limits.max_output_bytes
    }

    /// The contract package the plugin was built against (`sluice:plugin@0.3.0` or `@0.2.0`).
    pub fn contract(&self) -> &'static str {
        match self.pre {
            PluginPre::Current(_) => sluice_contract::PACKAGE,
            PluginPre::Legacy(_) => sluice_contract::LEGACY_PACKAGE,
        }
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Run one self-test record through `instance`; returns it for the next test.
    /// A trap fails the test (and validation) at once.
    pub(super) fn self_test(
        self: &Arc<Self>,
        mut instance: PluginInstance,
        index: usize,
        test: &SelfTest,
    ) -> Result<PluginInstance, RuntimeError> {
        let fail = |message: String| RuntimeError::SelfTest { name: self.name.clone(), index, message };
        let mut batch = Batch::new(&test.topic, 0);
        batch.push(0, None, test.key.as_ref().map(|k| k.as_bytes()), Some(test.input.as_bytes()), &[]);
        let result = match instance.process(&batch) {
            Ok(r) => r,
            Err(RuntimeError::Trap { kind, message, .. }) => return Err(fail(format!("{kind}: {message}"))),
            Err(e) => return Err(fail(e.to_string())),
        };
        let documents = match result.outcome(0) {
            OutcomeRef::Error(_) if test.expect_error => return Ok(instance),
            OutcomeRef::Error(e) => return Err(fail(format!("the plugin failed the record: {e}"))),
            OutcomeRef::Drop => Vec::new(),
            OutcomeRef::Emit(outputs) => outputs
                .map(|j| match serde_json::from_slice::<serde_json::Value>(result.output(j).document) {
                    Ok(v @ serde_json::Value::Object(_)) => Ok(v),
                    Ok(_) => Err(fail("an output is JSON but not an object".into())),
                    Err(e) => Err(fail(format!("an output is not JSON: {e}"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if test.expect_error {
            return Err(fail(format!("expected an error, got {} document(s)", documents.len())));
        }
        if let Some(expect) = &test.expect {
            let expected: serde_json::Value = serde_json::from_str(expect).map_err(|e| fail(format!("`expect` is not JSON: {e}")))?;
            let got = serde_json::Value::Array(documents);
            if got != expected {
                return Err(fail(format!("expected {expected}, got {got}")));
            }
        }
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_kinds_are_told_apart() {
        assert!(matches!(wasm_kind(b"\0asm\x01\0\0\0rest"), Some(WasmKind::Module)));
        assert!(matches!(wasm_kind(b"\0asm\x0d\0\x01\0rest"), Some(WasmKind::Component)));
        assert!(wasm_kind(b"\x7fELF\x02\x01\x01\0").is_none());
        assert!(wasm_kind(b"\0asm").is_none());
    }

    #[test]
    fn not_wasm_is_a_clear_error() {
        let rt = Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wasm");
        std::fs::write(&path, b"#!/bin/sh\necho hi\n").unwrap();
        let cfg = PluginConfig::new("x", path.clone());
        let err = rt.load(&cfg).unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly module or component") && err.contains("x.wasm"), "{err}");
        let cfg = PluginConfig { path: dir.path().join("missing.wasm"), ..cfg };
        let err = rt.load(&cfg).unwrap_err().to_string();
        assert!(err.contains("cannot read") && err.contains("missing.wasm"), "{err}");
    }

    /// A core module importing `wasi_snapshot_preview1.fd_write` (what a wasm32-wasip1 build has).
    const WASI_MODULE: &[u8] = b"\0asm\x01\0\0\0\
        \x01\x09\x01\x60\x04\x7f\x7f\x7f\x7f\x01\x7f\
        \x02\x23\x01\x16wasi_snapshot_preview1\x08fd_write\x00\x00";

    #[test]
    fn a_wasi_module_is_refused_naming_its_imports() {
        assert_eq!(wasi_imports(WASI_MODULE), Some(("wasi_snapshot_preview1".into(), vec!["fd_write".into()])));
        assert_eq!(wasi_imports(b"\0asm\x01\0\0\0"), None);
        assert_eq!(wasi_imports(&WASI_MODULE[..20]), None, "a truncated module is left to componentize");
        let rt = Runtime::new().unwrap();
        let err = rt.validate(&PluginConfig::new("w", "w.wasm"), WASI_MODULE.to_vec()).unwrap_err().to_string();
        assert_eq!(
            err,
            "plugin `w` (w.wasm) is a WASI preview 1 module: it imports `fd_write` from `wasi_snapshot_preview1`, which the \
             host does not provide; build it with the guest SDK for wasm32-unknown-unknown (or as a WASI 0.2 component)"
        );
    }

    #[test]
    fn a_module_without_the_contract_is_rejected() {
        let rt = Runtime::new().unwrap();
        // The smallest valid core module: no component-type section, no exports.
        let module = b"\0asm\x01\0\0\0";
        let cfg = PluginConfig::new("empty", "empty.wasm");
        let err = rt.validate(&cfg, module.to_vec()).unwrap_err().to_string();
        assert!(err.contains("plugin `empty`"), "{err}");
    }
}
