//! [`Host`]: a `sluice run` process (signals, logs, summary, readiness from its
//! structured events) and [`Admin`], a client of its admin API.

use std::path::PathBuf;
use std::time::Duration;

use crate::*;

/// The value of `key=value` in a plain-text log line (quotes removed; empty if the value is).
pub fn field(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace().find_map(|w| w.strip_prefix(&prefix)).map(|v| v.trim_matches('"').to_owned())
}

/// A `sluice run` process.
pub struct Host {
    pub name: String,
    child: std::process::Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Host {
    /// Start `sluice run --config <config>` (with `--until-caught-up` if asked).
    pub fn spawn(env: &TestEnv, name: &str, config: &std::path::Path, until_caught_up: bool) -> Host {
        Host::spawn_bin(&sluice_bin(), env, name, config, until_caught_up)
    }

    /// [`Host::spawn`] with a given `sluice` binary (a release build, say).
    pub fn spawn_bin(bin: &std::path::Path, env: &TestEnv, name: &str, config: &std::path::Path, until_caught_up: bool) -> Host {
        let stdout = env.dir.path().join(format!("{name}.out"));
        let stderr = env.dir.path().join(format!("{name}.err"));
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("run").arg("--config").arg(config);
        if until_caught_up {
            cmd.arg("--until-caught-up");
        }
        cmd.env("SLUICE_LOG", "info,librdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn sluice");
        Host { name: name.into(), child, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Send signal `name` (`TERM`, `STOP`, `CONT`, …) to the host process.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{name} {}", self.pid());
    }

    /// The host's admin API, once it logged its address (the `event="admin_listening"` line's `url`).
    pub async fn admin(&self, token: Option<&str>) -> Admin {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(url) = self.events("admin_listening").first().and_then(|l| field(l, "url")) {
                return Admin { base: url, token: token.map(str::to_owned), client: reqwest::Client::new() };
            }
            assert!(std::time::Instant::now() < deadline, "host {} never served its admin API:\n{}", self.name, self.log_tail(20));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log lines of one structured event (`event="…"`: what tests wait for, not the wording).
    pub fn events(&self, event: &str) -> Vec<String> {
        self.log_lines(&format!("event=\"{event}\""))
    }

    /// Lines of the log that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }

    /// SIGTERM, then assert a clean exit (status 0) within `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) {
        self.sigterm();
        let status = self.wait(timeout).await;
        assert!(status.success(), "host {} exit after SIGTERM: {status}\n{}", self.name, self.log_tail(30));
    }

    /// Wait for exit; panics with the log tail on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("host {} did not exit within {timeout:?}; log tail:\n{}", self.name, self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// How many non-empty partition assignments this host has logged.
    pub fn assignments(&self) -> usize {
        self.events("assigned").iter().filter(|l| field(l, "partitions").is_some_and(|p| !p.is_empty())).count()
    }

    /// A field of the `summary:` line the host prints on a clean exit.
    pub fn summary(&self, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(&self.stdout).ok()?;
        let line = text.lines().find(|l| l.starts_with("summary: "))?;
        line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of a host's admin API.
pub struct Admin {
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Admin {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `GET` with extra headers: status and body text.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.send_with(reqwest::Method::GET, path, None, headers).await
    }

    /// One sample of `/metrics` (no labels), if present.
    pub async fn metric(&self, name: &str) -> Option<u64> {
        let (_, text) = self.get("/metrics").await;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Status and body text.
    pub async fn put_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Status and JSON body.
    pub async fn put(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let (status, text) = self.send(reqwest::Method::PUT, path, Some(body)).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("PUT {path}: {e}: {text}")))
    }

    /// `POST` with a body: status and JSON body.
    pub async fn post_body(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let (status, text) = self.send(reqwest::Method::POST, path, Some(body)).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}")))
    }

    /// Status and JSON body.
    pub async fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.send(reqwest::Method::POST, path, None).await;
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}")))
    }

    /// `GET /plugins` (must answer 200).
    pub async fn plugins(&self) -> serde_json::Value {
        let (status, text) = self.get("/plugins").await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}
