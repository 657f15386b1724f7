//! The admin HTTP API (`[admin]`, default `127.0.0.1:9464`).
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the status page (HTML; no data in it: it reads `/status` and `/rollouts` with the token it asks for) |
//! | `GET /status` | one JSON for the page: readiness, chain, swap history, failures by kind, per-partition lag and throughput over 10 minutes |
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 200 when partitions are assigned and writes succeed; 503 and the reason otherwise |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /plugins` | the running chain: each plugin's version (content hash), earlier versions, last rejection |
//! | `PUT /plugins/{name}` | body: a `.wasm` file. Validated, then swapped in (200), or refused (422, the running version stays) |
//! | `POST /plugins/{name}/rollback` | back to the version before the current one (200; 409 when there is none) |
//! | `POST /reload` | read the config file again and apply its `[[plugins]]` (200, or 422 and nothing changes) |
//! | `GET /rollouts` | the running rollout (counts, samples, switch offsets) and the finished ones |
//! | `POST /rollouts?plugin=NAME&mode=shadow&share=0.1` | body: a `.wasm` file, the candidate: validated, then shadowed (200; 422 refused; 409 one runs) |
//! | `POST /rollouts?plugin=NAME&mode=canary&partitions=0,1` (or `count=2`) | the candidate runs those partitions on this host |
//! | … `&max_failure_rate=0.2&min_records=100[&over_live=true]` | the rollback rule: above the rate the rollout rolls itself back |
//! | `POST /rollouts/widen?partitions=2,3` (or `count=N`) | a canary takes more partitions |
//! | `POST /rollouts/promote`, `POST /rollouts/abort` | the candidate becomes the live version; or the rollout ends (409: none runs) |
//!
//! With `admin.token` set, every request but `/`, `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>` (401 otherwise). Without a token (allowed on
//! loopback only) a request must name this address in `Host` (`127.0.0.1:<port>`,
//! `localhost:<port>`, `[::1]:<port>`) and carry no foreign `Origin`: a web page in
//! a local browser cannot reach the API (cross-site requests, DNS rebinding); 403
//! otherwise. Errors are JSON `{"error": "…"}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use std::collections::BTreeSet;

use crate::ops::status::{self, Sampler};
use crate::plugin::rollout::{Mode, RollbackRule};
use crate::plugin::swap::{HotSwap, SwapError};
use crate::telemetry::{Health, Stats};

/// What the handlers see.
pub struct AdminState {
    pub hot: Arc<HotSwap>,
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    pub token: Option<String>,
}

/// The handlers' state plus the `Host` values a tokenless request may name.
struct Shared {
    state: AdminState,
    hosts: Vec<String>,
    /// Per-partition lag and offsets over the last minutes (for `/status`).
    sampler: Arc<Sampler>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on admin.address {address}: {cause} (set another [admin] address, port 0 for any free one, or enabled = false)")]
    Bind { address: SocketAddr, cause: std::io::Error },
}

/// Bind `admin.address` and serve until `cancel`; returns the bound address
/// (logged as `admin API listening on http://…`).
pub async fn serve(cfg: &AdminConfig, state: AdminState, cancel: CancellationToken) -> Result<SocketAddr, AdminError> {
    let bind_err = |cause| AdminError::Bind { address: cfg.address, cause };
    let listener = tokio::net::TcpListener::bind(cfg.address).await.map_err(bind_err)?;
    let address = listener.local_addr().map_err(bind_err)?;
    tracing::info!(event = "admin_listening", url = %format_args!("http://{address}"), "admin API listening on http://{address}");
    let port = address.port();
    let hosts = [address.to_string(), format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")].into();
    let sampler = Arc::new(Sampler::default());
    sampler.start(state.stats.clone(), cancel.clone());
    let app = router(Arc::new(Shared { state, hosts, sampler }), cfg.max_upload_bytes);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
            tracing::error!("admin API stopped: {e}");
        }
    });
    Ok(address)
}

fn router(state: Arc<Shared>, max_upload: usize) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status_json))
        .route("/plugins", get(list))
        .route("/plugins/{name}", axum::routing::put(upload).layer(DefaultBodyLimit::max(max_upload)))
        .route("/plugins/{name}/rollback", post(rollback))
        .route("/reload", post(reload))
        .route("/rollouts", get(rollouts).post(start_rollout).layer(DefaultBodyLimit::max(max_upload)))
        .route("/rollouts/widen", post(widen))
        .route("/rollouts/promote", post(promote))
        .route("/rollouts/abort", post(abort))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(guarded)
        .with_state(state)
}

async fn authorize(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    match s.state.token.as_deref() {
        Some(token) => {
            let given = text(header::AUTHORIZATION)
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim());
            if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                let body = axum::Json(json!({ "error": "missing or wrong bearer token (admin.token)" }));
                return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
            }
        }
        None => {
            let host_ok = text(header::HOST).is_some_and(|h| s.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
            let origin_ok = text(header::ORIGIN).is_none_or(|o| s.hosts.iter().any(|a| o.eq_ignore_ascii_case(&format!("http://{a}"))));
            if !(host_ok && origin_ok) {
                let body = axum::Json(json!({ "error": "request from another site or host name refused (set admin.token to allow any)" }));
                return (StatusCode::FORBIDDEN, body).into_response();
            }
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    match s.state.health.readiness() {
        Ok(()) => (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "ready": false, "reason": reason }))).into_response(),
    }
}

/// The status page: served to anyone (it holds no data); what it shows comes
/// from `/status` and `/rollouts`, guarded like the rest.
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, status::PAGE_CSP.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        status::PAGE,
    )
        .into_response()
}

async fn status_json(State(s): State<Arc<Shared>>) -> Response {
    let st = &s.state;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(status::render(&st.stats, &st.hot, &st.health, &s.sampler))).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = crate::ops::metrics::render(&s.state.stats, &s.state.hot, &s.state.health);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn list(State(s): State<Arc<Shared>>) -> Response {
    let (generation, plugins) = s.state.hot.list();
    axum::Json(json!({ "generation": generation, "plugins": plugins, "history": s.state.hot.history() })).into_response()
}

type Params = Query<std::collections::HashMap<String, String>>;

async fn rollouts(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.state.hot.rollouts()).into_response()
}

async fn start_rollout(State(s): State<Arc<Shared>>, Query(q): Params, body: Bytes) -> Response {
    let request = (|| {
        let plugin = q.get("plugin").ok_or("the plugin to roll out: ?plugin=NAME")?.clone();
        let mode = match q.get("mode").map(String::as_str) {
            Some("shadow") => Mode::Shadow { share: number(&q, "share")?.unwrap_or(1.0) },
            Some("canary") => Mode::Canary { partitions: partitions(&s.state.stats, &q)? },
            _ => return Err("mode=shadow or mode=canary".to_owned()),
        };
        let rule = match number(&q, "max_failure_rate")? {
            Some(max_failure_rate) => Some(RollbackRule {
                max_failure_rate,
                min_records: number(&q, "min_records")?.map_or(100, |n| n as u64),
                over_live: q.get("over_live").is_some_and(|v| v == "true"),
            }),
            None => None,
        };
        Ok::<_, String>((plugin, mode, rule))
    })();
    match request {
        Ok((plugin, mode, rule)) => answer(s.state.hot.start_rollout(&plugin, body.to_vec(), mode, rule).await),
        Err(e) => bad_request(e),
    }
}

async fn widen(State(s): State<Arc<Shared>>, Query(q): Params) -> Response {
    match partitions(&s.state.stats, &q) {
        Ok(p) => answer(s.state.hot.widen(p).await),
        Err(e) => bad_request(e),
    }
}

async fn promote(State(s): State<Arc<Shared>>) -> Response {
    answer(s.state.hot.promote().await)
}

async fn abort(State(s): State<Arc<Shared>>) -> Response {
    answer(s.state.hot.abort().await)
}

fn bad_request(e: String) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": e }))).into_response()
}

/// Query parameter `name` as a number, if given.
fn number(q: &std::collections::HashMap<String, String>, name: &str) -> Result<Option<f64>, String> {
    q.get(name).map(|v| v.parse::<f64>().map_err(|_| format!("{name}={v:?} is not a number"))).transpose()
}

/// A canary's partitions: `partitions=0,1`, or `count=N` (the first N of those
/// this host is assigned now, by number).
fn partitions(stats: &Stats, q: &std::collections::HashMap<String, String>) -> Result<BTreeSet<i32>, String> {
    match (q.get("partitions"), q.get("count")) {
        (Some(list), None) => list
            .split(',')
            .map(|p| p.trim().parse::<i32>().map_err(|_| format!("partitions={list:?}: a list of partition numbers, e.g. 0,1")))
            .collect(),
        (None, Some(n)) => {
            let n: usize = n.parse().map_err(|_| format!("count={n:?} is not a number"))?;
            let assigned: BTreeSet<i32> = stats.partitions.lock().unwrap().keys().map(|(_, p)| *p).collect();
            if assigned.len() < n {
                return Err(format!("count={n}: this host is assigned {} partition(s) now", assigned.len()));
            }
            Ok(assigned.into_iter().take(n).collect())
        }
        _ => Err("the partitions: partitions=0,1 or count=N".into()),
    }
}

async fn upload(State(s): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> Response {
    answer(s.state.hot.upload(&name, body.to_vec()).await)
}

async fn rollback(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    answer(s.state.hot.rollback(&name).await)
}

async fn reload(State(s): State<Arc<Shared>>) -> Response {
    answer(s.state.hot.reload().await)
}

fn answer<T: serde::Serialize>(result: Result<T, SwapError>) -> Response {
    match result {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => {
            let status = match &e {
                SwapError::UnknownPlugin(_) => StatusCode::NOT_FOUND,
                SwapError::NothingToRollBack(_) | SwapError::NoConfigFile | SwapError::NoRollout | SwapError::RolloutRunning { .. } => {
                    StatusCode::CONFLICT
                }
                SwapError::Rejected(_) | SwapError::Config(_) | SwapError::BadRollout(_) => StatusCode::UNPROCESSABLE_ENTITY,
                SwapError::Persist { cause, .. } if cause.kind() == std::io::ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
                SwapError::Persist { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, axum::Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    /// An upload over a plugin path that is a symbolic link is refused as a request (422), not a server failure.
    #[test]
    fn a_symlinked_plugin_path_is_a_422() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v3.wasm");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("current.wasm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let cause = crate::plugin::swap::write_atomically(&link, b"new").unwrap_err();
        let e = crate::plugin::swap::SwapError::Persist { plugin: "p".into(), version: "v".into(), path: link.clone(), cause };
        assert_eq!(super::answer::<()>(Err(e)).status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(std::fs::read(&target).unwrap(), b"old", "the link's target is untouched");
    }
}
