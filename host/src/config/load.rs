//! Reading a configuration: the file, the environment overrides, plugin paths, errors of one line.

use std::path::Path;

use serde::Deserialize;

use super::env::apply_env;
use super::redact::secret_values;
use super::{Config, ConfigError};

impl Config {
    /// Read, parse and check `path` with the `SLUICE_*` environment overrides;
    /// plugin paths become absolute.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_owned(), cause })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Absolute, so plugin paths stay right whatever the working directory (and the watcher sees them).
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
        let mut config = Config::parse_with_env(&text, path, &base, std::env::vars())?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parse `text` (named `path` in errors); relative plugin paths are joined to `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, path, base, std::iter::empty())
    }

    /// [`Config::parse`] with overrides from `env` (`SLUICE_<SECTION>_<KEY>` = value).
    /// Secret values (passwords, tokens) never appear in its errors, even in a
    /// file or variable too malformed to parse.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        Config::parse_env_vec(text, path, base, &env).map_err(|e| e.scrubbed(&secret_values(text, &env)))
    }

    fn parse_env_vec(text: &str, path: &Path, base: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.to_vec();
        let parse_err = |e: toml::de::Error| ConfigError::Parse { path: path.to_owned(), message: one_line(&e, text) };
        let file: toml::Table = toml::from_str(text).map_err(parse_err)?;
        let invalid = |message| ConfigError::Invalid { path: path.to_owned(), message };
        let mut raw = file.clone();
        let applied = apply_env(&mut raw, &env, false).map_err(invalid)?;
        let mut config: Config = if applied.is_empty() {
            // Straight from the text: errors say where in the file.
            toml::from_str(text).map_err(parse_err)?
        } else {
            tracing::info!(overrides = ?applied, "configuration keys set from the environment");
            match Config::deserialize(raw.clone()) {
                Ok(c) => c,
                Err(e) => {
                    // A value read as a number or boolean may have been meant as text
                    // (a token of digits): try the keys the file lacks as strings.
                    let mut as_text = file.clone();
                    apply_env(&mut as_text, &env, true).map_err(invalid)?;
                    match Config::deserialize(as_text.clone()) {
                        Ok(c) => {
                            raw = as_text;
                            c
                        }
                        Err(_) => {
                            let message = format!("{} (with environment overrides {})", one_line(&e, ""), applied.join(", "));
                            return Err(ConfigError::Parse { path: path.to_owned(), message });
                        }
                    }
                }
            }
        };
        config.raw = raw;
        for p in &mut config.plugins {
            if p.path.is_relative() {
                p.path = base.join(&p.path);
            }
        }
        if let Some(ca) = config.schema_registry.as_mut().and_then(|r| r.ca_file.as_mut())
            && ca.is_relative()
        {
            *ca = base.join(&*ca);
        }
        config.validate().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        Ok(config)
    }
}

/// toml's messages span several lines (with a source excerpt); keep the first
/// line plus the location, so the error stays one line in logs.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().to_owned();
    match e.span() {
        Some(span) if span.start <= text.len() => {
            let before = &text[..span.start];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
            match key_at(text, span.start) {
                Some(key) => format!("{msg} (key `{key}`, line {line}, column {column})"),
                None => format!("{msg} (line {line}, column {column})"),
            }
        }
        _ => msg,
    }
}

/// The dotted key whose value is at byte `at` of a TOML `text`: the last
/// `[table]` header before it and the key before `=` on its line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let line = &text[line_start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{MINIMAL, parse};

    #[test]
    fn unknown_key_is_rejected_naming_key_and_file() {
        let text = MINIMAL.replace("group_id = \"g\"", "group_id = \"g\"\n        grup_id = \"typo\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("grup_id"), "{err}");
        assert!(err.contains("/etc/sluice/test.toml"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");

        let err = parse(&format!("{MINIMAL}\n[pipeline]\nbatch_size = 3\n")).unwrap_err().to_string();
        assert!(err.contains("batch_size") && err.contains("test.toml"), "{err}");

        let err = parse(&format!("{MINIMAL}\n[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nparam = {{}}\n")).unwrap_err().to_string();
        assert!(err.contains("param") && err.contains("test.toml"), "{err}");
    }

    #[test]
    fn config_errors_name_the_key_line_and_column() {
        let text = MINIMAL.replace("collection = \"c\"", "collection = 5");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("key `mongo.collection`, line 9, column 22"), "{e}");
        let e = parse(&MINIMAL.replace("topics = [\"t\"]", "topics = [\"t\"\noops")).unwrap_err().to_string();
        assert!(e.contains("line 6, column 1") && !e.contains("at byte"), "{e}");
    }
}
