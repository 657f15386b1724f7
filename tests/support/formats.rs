//! Records in Confluent's wire format, written by Confluent's own serializers
//! (`confluent-kafka` from PyPI, through `scripts/sr-produce`) against the test
//! schema registry: the format is checked against an implementation we did not write.

use std::io::Write as _;

use crate::*;

/// The test registry (`scripts/services` runs it; `SLUICE_TEST_REGISTRY` overrides).
pub fn registry_url() -> String {
    std::env::var("SLUICE_TEST_REGISTRY")
        .unwrap_or_else(|_| format!("http://127.0.0.1:{}", std::env::var("REGISTRY_PORT").unwrap_or_else(|_| "8081".into())))
}

/// A file of the format tests' data (`tests/data/formats/`).
pub fn format_data(name: &str) -> std::path::PathBuf {
    repo().join("tests/data/formats").join(name)
}

/// Run `scripts/sr-produce` to `topic` with `args` (formats, schemas), the JSON
/// `lines` on its standard input; its summary (`produced`, schema ids).
pub fn sr_produce(topic: &str, args: &[&str], lines: &str) -> serde_json::Value {
    let mut child = std::process::Command::new(repo().join("scripts/sr-produce"))
        .args(["--bootstrap", &brokers(), "--registry", &registry_url(), "--topic", topic])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("scripts/sr-produce");
    child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("writing to sr-produce");
    let out = child.wait_with_output().expect("sr-produce");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sr-produce {args:?} failed: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let last =
        stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_else(|| panic!("no summary from sr-produce: {stdout}"));
    serde_json::from_str(last).expect("sr-produce's summary is JSON")
}

/// The registry stopped by a test; started again when dropped (also when the test fails).
pub struct RegistryStopped {
    started: bool,
}

pub fn stop_registry() -> RegistryStopped {
    services(&["stop-registry"]);
    RegistryStopped { started: false }
}

impl RegistryStopped {
    pub fn start(mut self) {
        self.started = true;
        services(&["start-registry"]);
    }
}

impl Drop for RegistryStopped {
    fn drop(&mut self) {
        if !self.started {
            let _ = std::process::Command::new(repo().join("scripts/services")).arg("start-registry").status();
        }
    }
}
