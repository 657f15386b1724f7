//! `sluice rollout …`: shadow runs, canaries, promotion and rollback of a
//! plugin version on a running host, through its admin API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::config::Config;

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Run FILE as a candidate for plugin NAME beside the live version: on a share of the
    /// batches it runs the same records, its outputs are compared and never written.
    Shadow(ShadowArgs),
    /// Let FILE, a candidate for plugin NAME, run some partitions of this host (written).
    Canary(CanaryArgs),
    /// A canary takes more partitions.
    Widen(WidenArgs),
    /// The candidate becomes the live version on every partition.
    Promote(AdminArgs),
    /// End the rollout: the live version runs every partition again.
    Abort(AdminArgs),
    /// The running rollout (counts, samples of differences, switch offsets) and the finished ones.
    Status(StatusArgs),
}

/// Where the admin API is and its token.
#[derive(Args, Clone)]
pub struct AdminArgs {
    /// The host's admin API. Default: `[admin] address` of --config, else http://127.0.0.1:9464.
    #[arg(long, env = "SLUICE_ADMIN_URL", value_name = "URL")]
    pub admin: Option<String>,
    /// The admin token (`[admin] token`). Default: --config's.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The host's configuration file, for the two above.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// When the rollout rolls itself back.
#[derive(Args, Clone)]
pub struct RuleArgs {
    /// Roll back by itself when the candidate fails more than this share of its records (0–1, or a percentage: 5%).
    #[arg(long, value_name = "RATE", value_parser = rate)]
    pub rollback_above: Option<f64>,
    /// … once it has run at least this many records.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub rollback_min_records: u64,
    /// … counting only what it fails beyond the live version's own rate.
    #[arg(long)]
    pub over_live: bool,
}

#[derive(Args)]
pub struct ShadowArgs {
    /// The plugin (its name in the chain).
    pub name: String,
    /// The candidate `.wasm`.
    pub file: PathBuf,
    /// The share of each partition's batches the candidate shadows (0–1 or a percentage).
    #[arg(long, default_value = "1", value_parser = rate)]
    pub share: f64,
    #[command(flatten)]
    pub rule: RuleArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct CanaryArgs {
    pub name: String,
    pub file: PathBuf,
    #[command(flatten)]
    pub partitions: PartitionArgs,
    #[command(flatten)]
    pub rule: RuleArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct PartitionArgs {
    /// These partitions (of every topic), e.g. 0,1.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub partitions: Vec<i32>,
    /// The first N partitions this host is assigned now.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
}

#[derive(Args)]
pub struct WidenArgs {
    #[command(flatten)]
    pub partitions: PartitionArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `0.2`, `20%`: a share within 0–1.
fn rate(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share (0.2 or 20%)"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{s:?} is not within 0–1 (0%–100%)")) }
}

impl PartitionArgs {
    fn query(&self) -> String {
        match self.count {
            Some(n) => format!("count={n}"),
            None => format!("partitions={}", self.partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

impl RuleArgs {
    fn query(&self) -> String {
        match self.rollback_above {
            Some(r) => format!("&max_failure_rate={r}&min_records={}&over_live={}", self.rollback_min_records, self.over_live),
            None => String::new(),
        }
    }
}

/// A client of one host's admin API.
struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    fn new(args: &AdminArgs) -> anyhow::Result<Admin> {
        let config = args.config.as_deref().map(Config::load).transpose()?;
        let base = match (&args.admin, &config) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(c)) if c.admin.address.port() == 0 => {
                bail!("[admin] address has port 0 (any free port): give the address the host logged with --admin")
            }
            (None, Some(c)) => format!("http://{}", c.admin.address),
            (None, None) => "http://127.0.0.1:9464".to_owned(),
        };
        let token = args.token.clone().or_else(|| config.and_then(|c| c.admin.token));
        Ok(Admin { base, token, http: reqwest::Client::new() })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).timeout(std::time::Duration::from_secs(120));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/wasm").body(b);
        }
        // The URL never holds the token: safe to name.
        let resp = req.send().await.with_context(|| format!("reaching the admin API at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = json.get("error").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| json.to_string());
            bail!("{status}: {msg}");
        }
        Ok(json)
    }
}

pub async fn execute(command: RolloutCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let (admin, answer) = match &command {
        RolloutCommand::Shadow(a) => {
            let admin = Admin::new(&a.admin)?;
            let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
            let path = format!("/rollouts?plugin={}&mode=shadow&share={}{}", encode(&a.name), a.share, a.rule.query());
            (&a.admin, admin.call(Method::POST, &path, Some(bytes)).await?)
        }
        RolloutCommand::Canary(a) => {
            let admin = Admin::new(&a.admin)?;
            let bytes = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
            let path = format!("/rollouts?plugin={}&mode=canary&{}{}", encode(&a.name), a.partitions.query(), a.rule.query());
            (&a.admin, admin.call(Method::POST, &path, Some(bytes)).await?)
        }
        RolloutCommand::Widen(a) => {
            (&a.admin, Admin::new(&a.admin)?.call(Method::POST, &format!("/rollouts/widen?{}", a.partitions.query()), None).await?)
        }
        RolloutCommand::Promote(a) => (a, Admin::new(a)?.call(Method::POST, "/rollouts/promote", None).await?),
        RolloutCommand::Abort(a) => (a, Admin::new(a)?.call(Method::POST, "/rollouts/abort", None).await?),
        RolloutCommand::Status(a) => (&a.admin, Admin::new(&a.admin)?.call(Method::GET, "/rollouts", None).await?),
    };
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match command {
        RolloutCommand::Promote(_) => println!("promoted: generation {} runs the candidate on every partition", answer["generation"]),
        RolloutCommand::Status(_) => {
            match answer.get("current").filter(|c| !c.is_null()) {
                Some(r) => print!("{}", summary(r)),
                None => println!("no rollout is running"),
            }
            for r in answer["history"].as_array().into_iter().flatten().take(5) {
                print!("{}", summary(r));
            }
        }
        _ => print!("{}", summary(&answer)),
    }
    Ok(())
}

/// A plugin name in a query string (names are plain, but say so safely).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A rollout in a few lines.
fn summary(r: &Value) -> String {
    let mode = match r["mode"]["mode"].as_str() {
        Some("shadow") => format!("shadow on {}% of batches", r["mode"]["share"].as_f64().unwrap_or(0.0) * 100.0),
        Some("canary") => format!("canary on partitions {}", r["mode"]["partitions"]),
        _ => r["mode"].to_string(),
    };
    let short = |v: &Value| v.as_str().map(|s| s.chars().take(12).collect::<String>()).unwrap_or_default();
    let mut out = format!(
        "rollout {} of {}: {mode}, {}{}\n  live {} -> candidate {}\n  records {}, differences {}, candidate failures {} (live {} of {}), candidate time {} ms\n",
        r["id"],
        r["plugin"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["reason"].as_str().map(|s| format!(" ({s})")).unwrap_or_default(),
        short(&r["from"]),
        short(&r["version"]),
        r["records"],
        r["differences"],
        r["candidate_failures"],
        r["live_failures"],
        r["live_records"],
        r["candidate_cpu_ms"],
    );
    for s in r["samples"].as_array().into_iter().flatten().take(5) {
        out += &format!(
            "  differs at {}:{}@{}: live {} | candidate {}\n",
            s["topic"].as_str().unwrap_or("?"),
            s["partition"],
            s["offset"],
            s["live"],
            s["candidate"]
        );
    }
    out
}
