//! Every fenced block of README.md and docs/*.md runs as written (issue #14),
//! so a doc that drifts from the binary fails `make test`.
//!
//! # Tags
//!
//! Each fenced block is tagged by an HTML comment on the line right above its
//! opening fence (invisible when rendered; the fence keeps its language, and
//! docs/config.md's example stays the plain ```` ```toml ```` block that
//! host/src/config/'s unit tests read):
//!
//! - `<!-- doc-test: run -->`: the block is a bash script, run with
//!   `set -euo pipefail`; it must exit 0.
//! - `<!-- doc-test: run host=CONFIG -->`: the same, while
//!   `target/debug/sluice run --config CONFIG` runs beside it (what the docs
//!   say to start in another terminal): started by this test, ready
//!   (`/readyz`) before the block runs, stopped with SIGTERM after it, and it
//!   must exit 0.
//! - `<!-- doc-test: run slow -->`: builds a plugin crate (a minute or more):
//!   run only with `SLUICE_TEST_DOCS_SLOW=1`, otherwise listed as skipped.
//! - `<!-- doc-test: check-config -->`: a whole config file, through
//!   `target/debug/sluice check --config FILE`, with FILE in examples/ (so its
//!   relative plugin paths resolve as they would there).
//! - `<!-- doc-test: check-config fragment -->`: tables that replace
//!   examples/seed.toml's (and their sub-tables), then checked the same way.
//! - `<!-- doc-test: skip: REASON -->`: not run; listed with its reason.
//!
//! A block without a tag, an unknown tag, or a tag with no block under it
//! fails the test, naming the file and line.
//!
//! # Where the blocks run
//!
//! In document order, one Markdown file after another in parallel, each from a
//! scratch directory of its own that mirrors the repository root (symbolic
//! links; `examples/` is a copy, so a block may write a config there; and
//! `target/debug/sluice` is the binary built with this test), so paths are where
//! the docs say and nothing a block creates lands in the checkout. The
//! `SLUICE_*` variables of this process are not passed on, nor is
//! `CARGO_TARGET_DIR`; `target/debug` is not on `PATH` (the docs call
//! `target/debug/sluice`).
//!
//! The docs use the default addresses and the demo's names: topic `testnum`
//! (its dead letters `testnum.dlq`), group `sluice-testnum`, MongoDB
//! `testnum.testnum`, the admin API on port 9464. To run beside other tests and
//! a `make demo` without touching them, each file gets a name `U` of its own,
//! and `run` blocks get:
//!
//! - the configuration overridden from the environment, as docs/config.md
//!   documents: `SLUICE_KAFKA_BROKERS` and `SLUICE_MONGO_URI` (from
//!   `SLUICE_TEST_BROKERS` / `SLUICE_TEST_MONGO`), `SLUICE_KAFKA_TOPICS=["U"]`,
//!   `SLUICE_KAFKA_GROUP_ID=sluice-U`, `SLUICE_MONGO_DATABASE=U`,
//!   `SLUICE_MONGO_COLLECTION=U`, `SLUICE_ADMIN_ADDRESS=127.0.0.1:0`, `NO_COLOR=1`;
//! - their text substituted: `testnum` → `U`, `127.0.0.1:9092` → the test's
//!   brokers, `mongodb://127.0.0.1:27017` → the test's MongoDB,
//!   `http://127.0.0.1:8081` → the test's schema registry, and port 9464
//!   (`localhost:9464`, `127.0.0.1:9464`) → the port of the host of a `host=`
//!   block. Nothing else is changed.
//!
//! Before the first `run` block of a file the test leaves what `make demo`
//! leaves (the README's Quick start is "after `make demo`"): 500 numbers in the
//! topic, consumed by the group into the collection. After the last, it resets
//! them (`sluice reset`) and drops the database `U`.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{brokers, mongo_uri, registry_url, repo, sluice_bin, unique};

/// How a block is tested.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    Run { host: Option<String>, slow: bool },
    CheckConfig { fragment: bool },
    Skip(String),
}

/// One fenced block.
#[derive(Debug, Clone)]
struct Block {
    /// `README.md`, `docs/config.md`…
    file: String,
    /// 1-based line of the opening fence.
    line: usize,
    tag: Tag,
    /// The block's text, without the fences and the list indentation.
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

const TAG_START: &str = "<!-- doc-test:";

/// The fenced blocks of a Markdown text, with their tags; `Err` lists every
/// block without a (valid) tag and every tag without a block, as `file:line: why`.
fn blocks(file: &str, md: &str) -> Result<Vec<Block>, Vec<String>> {
    let lines: Vec<&str> = md.lines().collect();
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let mut used_tags = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let fence_char = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) => c,
            _ => {
                i += 1;
                continue;
            }
        };
        let fence_len = trimmed.chars().take_while(|&c| c == fence_char).count();
        if fence_len < 3 {
            i += 1;
            continue;
        }
        let indent = lines[i].len() - trimmed.len();
        let open = i;
        let mut text = String::new();
        i += 1;
        let mut closed = false;
        while i < lines.len() {
            let t = lines[i].trim_start();
            let run = t.chars().take_while(|&c| c == fence_char).count();
            if run >= fence_len && t[run..].trim().is_empty() {
                closed = true;
                break;
            }
            let l = lines[i];
            let strip = l.len() - l.trim_start().len();
            text.push_str(&l[strip.min(indent)..]);
            text.push('\n');
            i += 1;
        }
        i += 1;
        if !closed {
            errors.push(format!("{file}:{}: a fenced block that is never closed", open + 1));
            break;
        }
        let previous = if open > 0 { lines[open - 1].trim() } else { "" };
        let tag = match previous.strip_prefix(TAG_START).and_then(|t| t.strip_suffix("-->")) {
            None => Err(format!(
                "no tag: put `{TAG_START} run -->`, `{TAG_START} check-config -->` or `{TAG_START} skip: REASON -->` on the line above its fence"
            )),
            Some(t) => {
                used_tags.push(open - 1);
                parse_tag(t.trim())
            }
        };
        match tag {
            Ok(tag) => out.push(Block { file: file.to_owned(), line: open + 1, tag, text }),
            Err(why) => errors.push(format!("{file}:{}: {why}", open + 1)),
        }
    }
    for (n, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with(TAG_START) && !used_tags.contains(&n) {
            errors.push(format!("{file}:{}: a tag with no fenced block right under it", n + 1));
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn parse_tag(t: &str) -> Result<Tag, String> {
    if let Some(reason) = t.strip_prefix("skip:") {
        let reason = reason.trim();
        return if reason.is_empty() { Err("`skip:` needs a reason".into()) } else { Ok(Tag::Skip(reason.to_owned())) };
    }
    let mut words = t.split_whitespace();
    match words.next() {
        Some("run") => {
            let (mut host, mut slow) = (None, false);
            for w in words {
                match w {
                    "slow" => slow = true,
                    _ if w.starts_with("host=") => host = Some(w["host=".len()..].to_owned()),
                    _ => return Err(format!("unknown option `{w}` of `run` (slow, host=CONFIG)")),
                }
            }
            Ok(Tag::Run { host, slow })
        }
        Some("check-config") => match words.next() {
            None => Ok(Tag::CheckConfig { fragment: false }),
            Some("fragment") if words.next().is_none() => Ok(Tag::CheckConfig { fragment: true }),
            Some(w) => Err(format!("unknown option `{w}` of `check-config` (fragment)")),
        },
        _ => Err(format!("unknown tag `{t}`: run [slow] [host=CONFIG], check-config [fragment], skip: REASON")),
    }
}

/// README.md and docs/*.md, as (name relative to the repo, text).
fn markdown_files() -> Vec<(String, String)> {
    let root = repo();
    let mut names = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names.into_iter().map(|n| (n.clone(), std::fs::read_to_string(root.join(&n)).unwrap())).collect()
}

/// A directory that looks like the repository root to the blocks.
fn mirror(root: &Path) {
    let repo = repo();
    std::fs::create_dir_all(root.join("target/debug")).unwrap();
    std::os::unix::fs::symlink(sluice_bin(), root.join("target/debug/sluice")).unwrap();
    std::fs::create_dir_all(root.join("examples")).unwrap();
    for e in std::fs::read_dir(repo.join("examples")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), root.join("examples").join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(&repo).unwrap() {
        let name = e.unwrap().file_name();
        let n = name.to_string_lossy();
        if n.starts_with('.') || n == "target" || n == "examples" {
            continue;
        }
        std::os::unix::fs::symlink(repo.join(&name), root.join(&name)).unwrap();
    }
}

/// One Markdown file's run: its scratch root, its name `U`, its logs.
struct Session {
    root: PathBuf,
    logs: PathBuf,
    name: String,
    _dir: tempfile::TempDir,
}

impl Session {
    fn new() -> Session {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        mirror(&root);
        Session { root, logs, name: unique("docs").replace('-', "_"), _dir: dir }
    }

    /// A command run from the scratch root with the environment of `run` blocks
    /// (`sluice_env`) or without any `SLUICE_*` variable.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>, sluice_env: bool) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.root).stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("SLUICE_") || k == "CARGO_TARGET_DIR" || k == "CARGO_BUILD_TARGET_DIR" {
                c.env_remove(k);
            }
        }
        c.env("NO_COLOR", "1");
        if sluice_env {
            let u = &self.name;
            c.env("SLUICE_KAFKA_BROKERS", brokers())
                .env("SLUICE_MONGO_URI", mongo_uri())
                .env("SLUICE_KAFKA_TOPICS", format!("[\"{u}\"]"))
                .env("SLUICE_KAFKA_GROUP_ID", format!("sluice-{u}"))
                .env("SLUICE_MONGO_DATABASE", u)
                .env("SLUICE_MONGO_COLLECTION", u)
                .env("SLUICE_ADMIN_ADDRESS", "127.0.0.1:0");
        }
        c
    }

    /// `target/debug/sluice ARGS` with the `run` blocks' environment; `Err` with its output.
    fn sluice(&self, args: &[&str]) -> Result<(), String> {
        let out = self.command("target/debug/sluice", true).args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "sluice {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// What `make demo` leaves: 500 numbers in the topic, written to the collection.
    fn after_demo(&self) -> Result<(), String> {
        self.sluice(&["reset", "--config", "examples/seed.toml"])?;
        self.sluice(&["produce", "--config", "examples/seed.toml", "--count", "500"])?;
        self.sluice(&["run", "--config", "examples/seed.toml", "--until-caught-up"])
    }

    fn clean_up(&self) {
        let _ = self.sluice(&["reset", "--config", "examples/seed.toml"]);
        let name = self.name.clone();
        tokio::runtime::Runtime::new().unwrap().block_on(async move {
            if let Ok(client) = mongodb::Client::with_uri_str(mongo_uri()).await {
                let _ = client.database(&name).drop().await;
            }
        });
    }

    /// The text a `run` block runs (see the module's doc).
    fn substitute(&self, text: &str, admin_port: Option<u16>) -> String {
        let mut s = text
            .replace("testnum", &self.name)
            .replace("mongodb://127.0.0.1:27017", &mongo_uri())
            .replace("127.0.0.1:9092", &brokers())
            .replace("http://127.0.0.1:8081", &registry_url());
        if let Some(port) = admin_port {
            s = s.replace("localhost:9464", &format!("localhost:{port}")).replace("127.0.0.1:9464", &format!("127.0.0.1:{port}"));
        }
        s
    }

    /// Run a `run` block; `Err` with why and the end of its output.
    fn run(&self, b: &Block, host: Option<&str>, timeout: Duration) -> Result<(), String> {
        let mut host = match host {
            Some(config) => Some(Host::start(self, config, b.line)?),
            None => None,
        };
        let script = self.substitute(&b.text, host.as_ref().map(|h| h.port));
        let log = self.logs.join(format!("block-{}.log", b.line));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = self
            .command("bash", true)
            .args(["-euo", "pipefail", "-c", &script])
            .stderr(out.try_clone().unwrap())
            .stdout(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("bash: {e}"))?;
        let status = wait(&mut child, timeout);
        let output = tail(&log, 40);
        let result = match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!("exited with {s}; its output ends:\n{output}")),
            None => Err(format!("still running after {timeout:?} (killed); its output ends:\n{output}")),
        };
        match (result, host.take().map(Host::stop)) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(Err(e))) => Err(e),
            (Ok(()), _) => Ok(()),
        }
    }

    fn check_config(&self, b: &Block, fragment: bool) -> Result<(), String> {
        let text = if fragment {
            let seed = std::fs::read_to_string(self.root.join("examples/seed.toml")).unwrap();
            replace_tables(&seed, &b.text)
        } else {
            b.text.clone()
        };
        let name = format!("examples/doc-{}.toml", b.line);
        std::fs::write(self.root.join(&name), &text).unwrap();
        let out = self.command("target/debug/sluice", false).args(["check", "--config", &name]).output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("`sluice check` refused it: {}\n{text}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

/// `seed` without the tables `fragment` has (and their sub-tables), then `fragment`.
fn replace_tables(seed: &str, fragment: &str) -> String {
    fn header(line: &str) -> Option<String> {
        let t = line.trim();
        let t = t.split('#').next().unwrap().trim();
        let inner =
            t.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")).or_else(|| t.strip_prefix('[').and_then(|t| t.strip_suffix(']')))?;
        Some(inner.trim().to_owned())
    }
    let replaced: Vec<String> = fragment.lines().filter_map(header).collect();
    let mut keep = true;
    let mut out = String::new();
    for line in seed.lines() {
        if let Some(h) = header(line) {
            keep = !replaced.iter().any(|r| h == *r || h.starts_with(&format!("{r}.")));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    out.push_str(fragment);
    out
}

/// `sluice run --config CONFIG` beside a `host=` block.
struct Host {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Host {
    fn start(s: &Session, config: &str, line: usize) -> Result<Host, String> {
        let log = s.logs.join(format!("host-{line}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = s
            .command("target/debug/sluice", true)
            .args(["run", "--config", config])
            .stderr(out.try_clone().unwrap())
            .stdout(out)
            .spawn()
            .map_err(|e| format!("starting the host: {e}"))?;
        let mut host = Host { child, port: 0, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if host.port == 0 {
                let text = std::fs::read_to_string(&host.log).unwrap_or_default();
                if let Some(rest) = text.split("admin API listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    host.port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                }
            }
            if host.port != 0 && get(host.port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return Ok(host);
            }
            if let Ok(Some(status)) = host.child.try_wait() {
                return Err(format!("the host `sluice run --config {config}` exited with {status}:\n{}", tail(&host.log, 30)));
            }
            if Instant::now() > deadline {
                let log = tail(&host.log, 30);
                let _ = host.child.kill();
                let _ = host.child.wait();
                return Err(format!("the host `sluice run --config {config}` was not ready within 60 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; it must exit 0.
    fn stop(mut self) -> Result<(), String> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        match wait(&mut self.child, Duration::from_secs(40)) {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!("the host exited with {s} after SIGTERM:\n{}", tail(&self.log, 30))),
            None => Err(format!("the host still ran 40 s after SIGTERM (killed):\n{}", tail(&self.log, 30))),
        }
    }
}

/// A plain HTTP GET on 127.0.0.1; the response, or `None` if it could not be made.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

/// Wait for a child (and, for a process group leader, kill the group on timeout).
fn wait(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("    | {l}\n")).collect()
}

/// What happened to one block.
enum Outcome {
    Passed(Duration),
    Skipped(String),
    Failed(String),
}

/// Test one Markdown file's blocks, in order.
fn test_file(blocks: &[Block], slow: bool) -> Vec<(Block, Outcome)> {
    let runs = |b: &Block| matches!(b.tag, Tag::Run { slow: s, .. } if slow || !s);
    let session = Session::new();
    let needs_services = blocks.iter().any(runs);
    let mut setup = Ok(());
    if needs_services {
        setup = session.after_demo().map_err(|e| format!("setting up what `make demo` leaves: {e}"));
    }
    let mut results = Vec::new();
    for b in blocks {
        let started = Instant::now();
        let result = match &b.tag {
            Tag::Skip(reason) => {
                results.push((b.clone(), Outcome::Skipped(reason.clone())));
                continue;
            }
            Tag::Run { slow: true, .. } if !slow => {
                results.push((b.clone(), Outcome::Skipped("slow: builds a plugin crate (SLUICE_TEST_DOCS_SLOW=1 runs it)".into())));
                continue;
            }
            Tag::Run { host, slow: s } => match &setup {
                Err(e) => Err(e.clone()),
                Ok(()) => session.run(b, host.as_deref(), Duration::from_secs(if *s { 900 } else { 120 })),
            },
            Tag::CheckConfig { fragment } => session.check_config(b, *fragment),
        };
        results.push((
            b.clone(),
            match result {
                Ok(()) => Outcome::Passed(started.elapsed()),
                Err(e) => Outcome::Failed(e),
            },
        ));
    }
    if needs_services {
        session.clean_up();
    }
    results
}

#[test]
fn every_documented_block_runs_as_written() {
    let started = Instant::now();
    let slow = std::env::var("SLUICE_TEST_DOCS_SLOW").is_ok_and(|v| v == "1");
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for (name, text) in markdown_files() {
        match blocks(&name, &text) {
            Ok(b) => files.push(b),
            Err(e) => errors.extend(e),
        }
    }
    assert!(errors.is_empty(), "untagged or mistagged fenced blocks:\n  {}", errors.join("\n  "));

    let results: Vec<(Block, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files.iter().map(|f| scope.spawn(move || test_file(f, slow))).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });

    let mut failures = Vec::new();
    let (mut ran, mut checked, mut skipped) = (0, 0, 0);
    println!("documented blocks:");
    for (b, o) in &results {
        let what = match &b.tag {
            Tag::Run { host: Some(h), .. } => format!("run beside `sluice run --config {h}`"),
            Tag::Run { .. } => "run".into(),
            Tag::CheckConfig { fragment: true } => "check-config (over examples/seed.toml)".into(),
            Tag::CheckConfig { fragment: false } => "check-config".into(),
            Tag::Skip(_) => "skip".into(),
        };
        match o {
            Outcome::Passed(t) => {
                if matches!(b.tag, Tag::Run { .. }) {
                    ran += 1
                } else {
                    checked += 1
                }
                println!("  ok       {:<22} {what} ({:.1} s)", b.at(), t.as_secs_f64());
            }
            Outcome::Skipped(reason) => {
                skipped += 1;
                println!("  skipped  {:<22} {reason}", b.at());
            }
            Outcome::Failed(e) => {
                println!("  FAILED   {:<22} {what}", b.at());
                failures.push(format!("{} ({what}) failed: {e}", b.at()));
            }
        }
    }
    println!(
        "{ran} run, {checked} configs checked, {skipped} skipped, {} failed, in {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "documented blocks that do not run as written:\n\n{}", failures.join("\n\n"));
}

/// The extraction itself: tags are read, and a block without one is named by file and line.
#[test]
fn blocks_are_tagged_or_named() {
    let md = "# T\n\n<!-- doc-test: run -->\n```sh\necho hi\n```\n\n  <!-- doc-test: skip: output -->\n  ```text\n  out\n  ```\n\
              \n<!-- doc-test: check-config fragment -->\n~~~toml\n[mongo]\n~~~\n\n```sh\nuntagged\n```\n\n<!-- doc-test: rnu -->\n```sh\nx\n```\n\
              <!-- doc-test: run -->\n\ntext\n";
    let errors = blocks("T.md", md).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("T.md:18: no tag"), "{errors:?}");
    assert!(errors[1].starts_with("T.md:23: unknown tag `rnu`"), "{errors:?}");
    assert!(errors[2].starts_with("T.md:26: a tag with no fenced block"), "{errors:?}");
    let ok = md.split("\n```sh\nuntagged").next().unwrap();
    let b = blocks("T.md", ok).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!((b[0].line, &b[0].tag, b[0].text.as_str()), (4, &Tag::Run { host: None, slow: false }, "echo hi\n"));
    assert_eq!((b[1].line, &b[1].tag, b[1].text.as_str()), (9, &Tag::Skip("output".into()), "out\n"));
    assert_eq!(b[2].tag, Tag::CheckConfig { fragment: true });
    assert_eq!(parse_tag("run slow host=examples/seed.toml"), Ok(Tag::Run { host: Some("examples/seed.toml".into()), slow: true }));
    let merged = replace_tables("[kafka]\na = 1\n[kafka.options]\nb = 2\n[mongo]\nc = 3\n", "[kafka]\nz = 9\n");
    assert_eq!(merged, "[mongo]\nc = 3\n\n[kafka]\nz = 9\n");
}
