//! A client of a Confluent-compatible schema registry: schemas by id (with
//! their references), parsed once and cached for the life of the process (an
//! id's schema never changes).
//!
//! Errors are classified here, once: the registry away (connection, timeout,
//! 408/429/5xx, a 404 that is not the registry's own) is [`RegistryError::Unavailable`]
//! — retried by the caller, nothing consumed past it; credentials refused
//! (401/403) is [`RegistryError::Refused`] — the run stops; an id the registry
//! does not know, or a schema that does not parse, is the records' failure
//! (`invalid-input`), cached like a schema.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use super::avro::AvroSchema;
use super::json_schema::JsonSchema;
use super::protobuf::ProtoSchema;
use crate::config::{SchemaRegistryConfig, redact_uri};

/// A parsed schema, by the registry's `schemaType`.
#[derive(Debug)]
pub enum Schema {
    Avro(AvroSchema),
    Protobuf(ProtoSchema),
    Json(JsonSchema),
}

impl Schema {
    pub fn type_name(&self) -> &'static str {
        match self {
            Schema::Avro(_) => "AVRO",
            Schema::Protobuf(_) => "PROTOBUF",
            Schema::Json(_) => "JSON",
        }
    }
}

/// What a cached id resolves to: its schema, or why its records fail.
pub type Entry = Result<Arc<Schema>, String>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url} is unavailable: {message}")]
    Unavailable { url: String, message: String },
    #[error("schema registry {url} refused Sluice's credentials (HTTP {status}): {message}; check [schema_registry]")]
    Refused { url: String, status: u16, message: String },
}

enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

pub struct Registry {
    client: reqwest::Client,
    base: String,
    auth: Auth,
    cache: RwLock<HashMap<u32, Entry>>,
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/{v}` (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize, Clone)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

/// A permanent answer about one id: its records fail with this message.
struct Permanent(String);

impl Registry {
    pub fn new(cfg: &SchemaRegistryConfig) -> Result<Registry, String> {
        let mut builder = reqwest::Client::builder().timeout(cfg.request_timeout).connect_timeout(cfg.request_timeout);
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("schema_registry.ca_file {}: {e}", path.display()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("schema_registry.ca_file {}: {e}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| format!("cannot make the schema registry client: {e}"))?;
        let auth = match (&cfg.username, &cfg.password, &cfg.bearer_token) {
            (Some(u), Some(p), _) => Auth::Basic(u.clone(), p.clone()),
            (_, _, Some(t)) => Auth::Bearer(t.clone()),
            _ => Auth::None,
        };
        Ok(Registry { client, base: cfg.url.trim_end_matches('/').to_owned(), auth, cache: RwLock::new(HashMap::new()) })
    }

    /// The cached entry of `id`, if fetched.
    pub fn get(&self, id: u32) -> Option<Entry> {
        self.cache.read().unwrap().get(&id).cloned()
    }

    /// Fetch `id` unless cached; a permanent answer is cached as the id's failure.
    pub async fn fetch(&self, id: u32) -> Result<(), RegistryError> {
        if self.cache.read().unwrap().contains_key(&id) {
            return Ok(());
        }
        let entry = match self.load(id).await? {
            Ok(schema) => Ok(Arc::new(schema)),
            Err(Permanent(message)) => {
                tracing::warn!(schema_id = id, "schema registry: {message}");
                Err(message)
            }
        };
        self.cache.write().unwrap().insert(id, entry);
        Ok(())
    }

    async fn load(&self, id: u32) -> Result<Result<Schema, Permanent>, RegistryError> {
        let body: SchemaBody = match self.get_json(&format!("/schemas/ids/{id}")).await? {
            Ok(v) => v,
            Err(Permanent(m)) => return Ok(Err(Permanent(format!("schema id {id}: {m}")))),
        };
        let mut refs: Vec<(String, String)> = Vec::new();
        if let Err(Permanent(m)) = self.references(&body.references, &mut refs, 0).await? {
            return Ok(Err(Permanent(format!("schema id {id}: {m}"))));
        }
        let kind = body.schema_type.as_deref().unwrap_or("AVRO");
        let parsed = match kind {
            "AVRO" => AvroSchema::parse(&body.schema, &refs.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()).map(Schema::Avro),
            "PROTOBUF" => ProtoSchema::parse(&body.schema, &refs).map(Schema::Protobuf),
            "JSON" => JsonSchema::parse(&body.schema, &refs).map(Schema::Json),
            other => Err(format!("schema type {other:?} is not one Sluice reads")),
        };
        Ok(parsed.map_err(|m| Permanent(format!("schema id {id} ({kind}): {m}"))))
    }

    /// The referenced schemas' texts, dependencies first, each name once.
    fn references<'a>(
        &'a self,
        refs: &'a [Reference],
        out: &'a mut Vec<(String, String)>,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, Result<Result<(), Permanent>, RegistryError>> {
        Box::pin(async move {
            if depth > 32 {
                return Ok(Err(Permanent("schema references nest more than 32 deep".into())));
            }
            for r in refs {
                if out.iter().any(|(n, _)| *n == r.name) {
                    continue;
                }
                let path = format!("/subjects/{}/versions/{}", encode_path(&r.subject), r.version);
                let body: SchemaBody = match self.get_json(&path).await? {
                    Ok(b) => b,
                    Err(Permanent(m)) => {
                        return Ok(Err(Permanent(format!("reference {} ({} version {}): {m}", r.name, r.subject, r.version))));
                    }
                };
                if let Err(p) = self.references(&body.references, out, depth + 1).await? {
                    return Ok(Err(p));
                }
                out.push((r.name.clone(), body.schema));
            }
            Ok(Ok(()))
        })
    }

    /// Register `schema` (of `schema_type`: AVRO, PROTOBUF, JSON) under `subject`; its id.
    /// Registering a schema the subject has is harmless: the registry gives its id again.
    pub async fn register(&self, subject: &str, schema: &str, schema_type: &str) -> Result<u32, String> {
        #[derive(Deserialize)]
        struct Id {
            id: u32,
        }
        let mut body = serde_json::json!({ "schema": schema });
        if schema_type != "AVRO" {
            body["schemaType"] = schema_type.into();
        }
        let path = format!("/subjects/{}/versions", encode_path(subject));
        match self.request::<Id>(reqwest::Method::POST, &path, Some(body)).await {
            Ok(Ok(id)) => Ok(id.id),
            Ok(Err(Permanent(m))) => Err(format!("registering the schema under {subject}: {m}")),
            Err(e) => Err(format!("registering the schema under {subject}: {e}")),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Result<T, Permanent>, RegistryError> {
        self.request(reqwest::Method::GET, path, None).await
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Result<T, Permanent>, RegistryError> {
        let url = format!("{}{path}", self.base);
        let shown = redact_uri(&url);
        let unavailable = |message: String| RegistryError::Unavailable { url: shown.clone(), message };
        let mut req =
            self.client.request(method.clone(), &url).header("accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some(body) = body {
            req = req.header("content-type", "application/vnd.schemaregistry.v1+json").body(body.to_string());
        }
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        };
        let resp = req.send().await.map_err(|e| unavailable(describe(&e)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| unavailable(describe(&e)))?;
        let error: Option<(i64, String)> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| Some((v.get("error_code")?.as_i64()?, v.get("message").and_then(|m| m.as_str()).unwrap_or("").to_owned())));
        match status {
            200 => match serde_json::from_str(&text) {
                Ok(v) => Ok(Ok(v)),
                Err(e) => Err(unavailable(format!("{method} {path} answered 200 with a body Sluice cannot read ({e})"))),
            },
            401 | 403 => Err(RegistryError::Refused { url: shown, status, message: error.map(|e| e.1).unwrap_or_else(|| snippet(&text)) }),
            // The registry's own "not found" (40401 subject, 40402 version, 40403 schema): permanent.
            404 if error.as_ref().is_some_and(|(code, _)| (40400..40500).contains(code)) => {
                let (code, message) = error.expect("checked");
                Ok(Err(Permanent(format!("not found in the registry ({code} {message})"))))
            }
            400 | 422 => Ok(Err(Permanent(format!("the registry refused the request (HTTP {status}): {}", snippet(&text))))),
            _ => Err(unavailable(format!("{method} {path} answered HTTP {status}: {}", snippet(&text)))),
        }
    }
}

/// A reqwest error without its URL (the caller names the registry), with its causes.
fn describe(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() { "timed out".to_owned() } else { String::new() };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&s.to_string());
        source = s.source();
    }
    if message.is_empty() { e.to_string() } else { message }
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.is_empty() { "(no body)".into() } else { t }
}

/// A subject in a URL path: Confluent subjects may hold `/`, `:` and the like.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
