//! `[kafka] key_format / value_format` and `[schema_registry]`: how record keys
//! and values are read, and the Confluent-compatible registry that serves their schemas.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How a record key or value is read before the plugin chain.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// JSON text, handed on as it is (no schema id).
    #[default]
    Json,
    /// Confluent wire format (magic byte 0, 4-byte schema id), Avro binary.
    Avro,
    /// Confluent wire format, message indexes, then Protobuf binary.
    Protobuf,
    /// Confluent wire format, then JSON text validated against its schema.
    JsonSchema,
    /// Any bytes, handed on as `{"$binary": …}` extended JSON.
    Raw,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro => "avro",
            Format::Protobuf => "protobuf",
            Format::JsonSchema => "json-schema",
            Format::Raw => "raw",
        }
    }

    /// Whether records carry a schema id to look up in the registry.
    pub fn uses_registry(self) -> bool {
        matches!(self, Format::Avro | Format::Protobuf | Format::JsonSchema)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Format::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| format!("unknown format {s:?} (json, avro, protobuf, json-schema, raw)"))
    }
}

/// What Avro `decimal`s (and Protobuf `uint64`s past int64) become.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Decimals {
    /// BSON Decimal128: exact, and what MongoDB's sink connector writes.
    #[default]
    Decimal128,
    /// The decimal's text (`"12.34"`): for servers without Decimal128 (FerretDB v1).
    String,
}

/// `[schema_registry]`: a Confluent-compatible schema registry.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://127.0.0.1:8081` (https: TLS).
    pub url: String,
    /// HTTP basic auth user (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// `Authorization: Bearer …` instead of basic auth.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long one request may take. Default 10s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl SchemaRegistryConfig {
    /// A registry at `url`, no credentials, the default timeout.
    pub fn at(url: String) -> SchemaRegistryConfig {
        SchemaRegistryConfig {
            url,
            username: None,
            password: None,
            bearer_token: None,
            ca_file: None,
            request_timeout: default_request_timeout(),
        }
    }
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

impl fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &super::redact_uri(&self.url))
            .field("username", &self.username)
            .field("password", &hide(&self.password))
            .field("bearer_token", &hide(&self.bearer_token))
            .field("ca_file", &self.ca_file)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Format;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn formats_parse_and_registry_formats_need_a_registry() {
        let text = MINIMAL.replace("[kafka]", "[kafka]\nvalue_format = \"json-schema\"\nkey_format = \"raw\"");
        let cfg = parse(&(text + "\n[schema_registry]\nurl = \"https://reg:8081\"\n")).unwrap();
        assert_eq!((cfg.kafka.key_format, cfg.kafka.value_format), (Format::Raw, Format::JsonSchema));
        let e = parse(&MINIMAL.replace("[kafka]", "[kafka]\nvalue_format = \"avro\"")).unwrap_err().to_string();
        assert!(e.contains("kafka.value_format = \"avro\" needs a [schema_registry]"), "{e}");
        let e = parse(&MINIMAL.replace("[kafka]", "[kafka]\nvalue_format = \"avro2\"")).unwrap_err().to_string();
        assert!(e.contains("avro2"), "{e}");
        assert_eq!("json-schema".parse::<Format>(), Ok(Format::JsonSchema));
        assert!("xml".parse::<Format>().unwrap_err().contains("json, avro"));
    }

    #[test]
    fn registry_secrets_never_show() {
        let text = MINIMAL.to_owned() + "\n[schema_registry]\nurl = \"https://u:pw1@reg:8081\"\nusername = \"u\"\npassword = \"hunter2\"\n";
        let shown = format!("{:?}", parse(&text).unwrap());
        assert!(!shown.contains("hunter2") && !shown.contains("pw1"), "{shown}");
        let text = MINIMAL.to_owned()
            + "\n[schema_registry]\nurl = \"http://reg\"\nbearer_token = \"tok-secret\"\nusername = \"u\"\npassword = \"p\"\n";
        assert!(parse(&text).unwrap_err().to_string().contains("not both"));
        let text = MINIMAL.to_owned() + "\n[schema_registry]\nurl = \"reg:8081\"\n";
        assert!(parse(&text).unwrap_err().to_string().contains("not an http"));
    }
}
