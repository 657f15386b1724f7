//! Secrets kept out of `Debug`, errors and logs: URI passwords, secret librdkafka options, tokens.

use std::collections::BTreeMap;

use super::ConfigError;

impl ConfigError {
    /// The error with every one of `secrets` replaced by `***`.
    pub(super) fn scrubbed(self, secrets: &[String]) -> ConfigError {
        let scrub = |mut m: String| {
            for s in secrets {
                m = m.replace(s.as_str(), "***");
            }
            m
        };
        match self {
            ConfigError::Parse { path, message } => ConfigError::Parse { path, message: scrub(message) },
            ConfigError::Invalid { path, message } => ConfigError::Invalid { path, message: scrub(message) },
            other => other,
        }
    }
}

/// Secret values in a config text and environment, found without parsing
/// either (they may be what does not parse): the value after each key that
/// names a secret (`"sasl.password" = 123456`, `token = "…"`, inline tables
/// included), and whole variables whose name does.
pub(super) fn secret_values(text: &str, env: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for source in std::iter::once(text).chain(env.iter().map(|(_, v)| v.as_str())) {
        secrets_after_keys(source, &mut out);
    }
    for (name, value) in env {
        let n = name.to_ascii_lowercase();
        if n.starts_with("sluice_") && (is_secret_option(&n) || n.ends_with("_uri")) && !value.is_empty() {
            out.push(value.clone());
        }
    }
    // Longest first, so a secret containing another is hidden whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// The values written after secret-naming keys in TOML-like `text`.
fn secrets_after_keys(text: &str, out: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|e| e + i) {
        // The key: the word (possibly quoted) before `=`.
        let before = text[..eq].trim_end();
        let key_start = before.rfind(|c: char| c.is_whitespace() || c == '{' || c == ',' || c == '\n').map_or(0, |k| k + 1);
        let key = before[key_start..].trim_matches(|c| c == '"' || c == '\'');
        let mut v = eq + 1;
        while v < bytes.len() && (bytes[v] == b' ' || bytes[v] == b'\t') {
            v += 1;
        }
        let end = match bytes.get(v) {
            Some(&q @ (b'"' | b'\'')) => {
                v += 1;
                text[v..].find(q as char).map_or(text.len(), |e| e + v)
            }
            _ => text[v..].find([',', '}', '\n', ' ', '#']).map_or(text.len(), |e| e + v),
        };
        if (is_secret_option(key) || key.eq_ignore_ascii_case("uri") && text[v..end].contains('@')) && end > v {
            let value = &text[v..end];
            // Of a URI only the password is secret: `scheme://user:PASSWORD@host`.
            let value = match key.eq_ignore_ascii_case("uri") {
                true => value
                    .split_once("://")
                    .and_then(|(_, r)| r.split_once('@'))
                    .and_then(|(cred, _)| cred.split_once(':'))
                    .map(|(_, pw)| pw),
                false => Some(value),
            };
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                out.push(value.to_owned());
            }
        }
        i = eq + 1;
    }
}

/// Raw librdkafka options as `Debug` shows them: secret values hidden.
pub(super) fn redacted(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options.iter().map(|(k, v)| (k.as_str(), if is_secret_option(k) { "***" } else { v.as_str() })).collect()
}

/// Whether a librdkafka option's value must be hidden.
pub fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "private.key", "token", "sasl.jaas", "oauthbearer.config"].iter().any(|s| k.contains(s))
}

/// `e` with the value of a secret option hidden: rust-rdkafka's message for a
/// setting librdkafka refused ends with the value (and librdkafka's may quote it).
pub fn redact_kafka_error(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    match e {
        KafkaError::ClientConfig(code, desc, key, value) if is_secret_option(&key) => {
            let desc = if value.is_empty() { desc } else { desc.replace(&value, "***") };
            KafkaError::ClientConfig(code, desc, key, "***".into())
        }
        e => e,
    }
}

/// `mongodb://user:pw@host` → `mongodb://user:***@host`.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else { return uri.to_owned() };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &uri[..scheme_end + 3], user, &rest[at..])
        }
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn secrets_are_hidden_in_debug() {
        let text = MINIMAL
            .replace("mongodb://127.0.0.1:27017", "mongodb://app:hunter2@127.0.0.1:27017/?authSource=admin")
            .replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"sasl.password\" = \"s3cret\"\n\"client.id\" = \"me\"");
        let c = parse(&text).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("app:***@127.0.0.1") && dbg.contains("\"me\""), "{dbg}");
        assert_eq!(redact_uri("mongodb://h:1/db"), "mongodb://h:1/db");
        assert_eq!(redact_uri("mongodb+srv://u:p@a,b/x?y=@"), "mongodb+srv://u:***@a,b/x?y=@");
    }

    #[test]
    fn secret_options_are_hidden_in_librdkafka_errors() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID;
        // librdkafka's sensitive settings (its conf dump redacts them) are secret here too.
        for key in ["sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "ssl.key.password", "ssl.key.pem"] {
            assert!(is_secret_option(key), "{key}");
        }
        let refused = |key: &str, value: &str| {
            let desc = format!("Invalid value \"{value}\" for configuration property \"{key}\"");
            redact_kafka_error(KafkaError::ClientConfig(RD_KAFKA_CONF_INVALID, desc, key.into(), value.into())).to_string()
        };
        let e = refused("sasl.oauthbearer.client.secret", "hunter2");
        assert!(!e.contains("hunter2") && e.contains("sasl.oauthbearer.client.secret"), "{e}");
        let e = refused("linger.ms", "soon");
        assert!(e.contains("soon"), "other values are shown: {e}");
        // What this build says of an OIDC secret (it has no libcurl), or nothing if it takes it.
        let real = rdkafka::ClientConfig::new().set("sasl.oauthbearer.client.secret", "hunter2").create_native_config();
        if let Err(e) = real {
            let e = redact_kafka_error(e).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn secrets_never_appear_in_config_errors() {
        let path = Path::new("/etc/sluice/test.toml");
        let check = |text: &str, env: &[(&str, &str)], secret: &str| {
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let e = Config::parse_with_env(text, path, Path::new("/etc/sluice"), env).unwrap_err().to_string();
            assert!(!e.contains(secret), "{secret} in: {e}");
            assert!(e.contains("***") || !e.is_empty(), "{e}");
        };
        // An unquoted number where a string belongs: toml's message quotes the value.
        let text = MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"]\n[kafka.options]\n\"sasl.password\" = 123456");
        check(&text, &[], "123456");
        // A malformed SLUICE_KAFKA_OPTIONS.
        check(MINIMAL, &[("SLUICE_KAFKA_OPTIONS", r#"{ "sasl.password" = "hunter22", oops }"#)], "hunter22");
        check(MINIMAL, &[("SLUICE_KAFKA_OPTIONS", r#"{ "sasl.password" = 98765 }"#)], "98765");
        // A token of the wrong type, and a file that does not parse at all.
        let text = format!("{MINIMAL}\n[admin]\ntoken = 424242\n");
        check(&text, &[], "424242");
        check("[kafka]\nbrokers = \"x\"\n\"sasl.password\" = \"s3cr3t\nbroken", &[], "s3cr3t");
        // The URI's password.
        let text = MINIMAL.replace("mongodb://127.0.0.1:27017", "mongodb://u:pw-9911@h").replace("collection = \"c\"", "collection = 5");
        check(&text, &[], "pw-9911");
    }
}
