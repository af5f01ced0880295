//! The `[backends.neon]` configuration section: its keys, defaults and
//! checks, the API key (from the section or `NEON_API_KEY`, never shown in
//! Debug output), and the address map `endpoint_overrides` that says where
//! to open TCP connections for an endpoint's host name.

use ogel_plugin_sdk::{BackendError, BackendErrorKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The Neon API when `api_url` is not set.
pub const DEFAULT_API_URL: &str = "https://console.neon.tech/api/v2";
/// The environment variable read when `api_key` is not set.
pub const API_KEY_ENV: &str = "NEON_API_KEY";

/// The section as written in `ogel.toml` (unknown keys are refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeonConfig {
    /// Neon API key; `NEON_API_KEY` when absent.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Base URL of the Neon API v2.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Projects are named `<project_prefix><database>`.
    #[serde(default = "default_prefix")]
    pub project_prefix: String,
    /// Region of new projects (Neon's default when absent).
    #[serde(default)]
    pub region_id: Option<String>,
    /// PostgreSQL major version of new projects (Neon's default when absent).
    #[serde(default)]
    pub pg_version: Option<u32>,
    /// Organization new projects belong to.
    #[serde(default)]
    pub org_id: Option<String>,
    /// Neon's own autosuspend of our endpoints (`-1` never, `0` Neon's
    /// default); Neon's default when absent.
    #[serde(default)]
    pub suspend_timeout_seconds: Option<i64>,
    /// Endpoint host name (or `*.<suffix>`) → `host:port` to connect to.
    #[serde(default)]
    pub endpoint_overrides: BTreeMap<String, String>,
    /// PEM file of the CA that signs the endpoints' certificates (the public
    /// web roots when absent).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long 429 and 5xx answers (and an unreachable API) are retried.
    #[serde(default = "default_retry_budget_secs")]
    pub retry_budget_secs: u64,
    /// How long an operation (or a project locked by one, 423) is waited for.
    #[serde(default = "default_operation_timeout_secs")]
    pub operation_timeout_secs: u64,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Make the read-only role `ogel_readonly` in each compute (for
    /// read-only tokens).
    #[serde(default = "default_true")]
    pub read_only_role: bool,
}

fn default_true() -> bool {
    true
}

fn default_api_url() -> String {
    DEFAULT_API_URL.into()
}
fn default_prefix() -> String {
    "ogel-".into()
}
fn default_retry_budget_secs() -> u64 {
    60
}
fn default_operation_timeout_secs() -> u64 {
    600
}
fn default_request_timeout_secs() -> u64 {
    30
}

/// A secret string: usable, never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the API key came from (for `describe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The `api_key` key.
    Config,
    /// `NEON_API_KEY`.
    Env,
}

/// One `endpoint_overrides` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// `Some(".suffix")` for a `*.suffix` pattern, else an exact host.
    pattern: Pattern,
    /// Where to connect.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Suffix(String),
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The API key.
    pub api_key: Secret,
    /// Where it came from.
    pub key_source: KeySource,
    /// API base URL, without a trailing slash.
    pub api_url: String,
    /// Project name prefix.
    pub project_prefix: String,
    /// Region of new projects.
    pub region_id: Option<String>,
    /// PostgreSQL version of new projects.
    pub pg_version: Option<u32>,
    /// Organization of new projects.
    pub org_id: Option<String>,
    /// Autosuspend of new endpoints.
    pub suspend_timeout_seconds: Option<i64>,
    overrides: Vec<Override>,
    /// The CA PEM, when `ca_file` is set.
    pub ca_pem: Option<String>,
    /// Retry bound for 429/5xx/unreachable.
    pub retry_budget: Duration,
    /// Bound on waiting for operations and 423.
    pub operation_timeout: Duration,
    /// One request's timeout.
    pub request_timeout: Duration,
    /// Whether computes get the read-only role.
    pub read_only_role: bool,
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, message)
}

impl Settings {
    /// Parses and checks the section the gateway passes as JSON; `env_key`
    /// is the value of `NEON_API_KEY`, if set.
    pub fn from_json(
        value: serde_json::Value,
        env_key: Option<String>,
    ) -> Result<Settings, BackendError> {
        let config: NeonConfig = serde_json::from_value(value)
            .map_err(|e| invalid(format!("invalid [backends.neon] configuration: {e}")))?;
        Settings::check(config, env_key)
    }

    /// Checks a parsed section.
    pub fn check(config: NeonConfig, env_key: Option<String>) -> Result<Settings, BackendError> {
        let (api_key, key_source) = match config.api_key.filter(|k| !k.trim().is_empty()) {
            Some(key) => (key, KeySource::Config),
            None => match env_key.filter(|k| !k.trim().is_empty()) {
                Some(key) => (key, KeySource::Env),
                None => {
                    return Err(invalid(format!(
                        "the neon backend needs a Neon API key: set `api_key` in [backends.neon] or {API_KEY_ENV}"
                    )))
                }
            },
        };
        if api_key.chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid(format!(
                "the Neon API key (`api_key` in [backends.neon] or {API_KEY_ENV}) contains spaces or control characters"
            )));
        }
        let api_url = config.api_url.trim_end_matches('/').to_string();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(invalid(format!(
                "invalid [backends.neon] api_url {api_url:?}: an http(s) URL is needed"
            )));
        }
        if config.project_prefix.is_empty()
            || !config
                .project_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(invalid(
                "invalid [backends.neon] project_prefix: letters, digits, '-' and '_' only, not empty",
            ));
        }
        if let Some(secs) = config.suspend_timeout_seconds {
            if !(-1..=604_800).contains(&secs) {
                return Err(invalid(
                    "invalid [backends.neon] suspend_timeout_seconds: -1 (never), 0 (Neon's default) or up to 604800",
                ));
            }
        }
        let mut overrides = Vec::new();
        for (pattern, target) in &config.endpoint_overrides {
            overrides.push(parse_override(pattern, target)?);
        }
        let ca_pem = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    invalid(format!(
                        "[backends.neon] ca_file {}: cannot be read ({e})",
                        path.display()
                    ))
                })?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(format!(
                        "[backends.neon] ca_file {}: no PEM certificate in it",
                        path.display()
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        if config.operation_timeout_secs == 0 || config.request_timeout_secs == 0 {
            return Err(invalid(
                "[backends.neon] operation_timeout_secs and request_timeout_secs must be positive",
            ));
        }
        Ok(Settings {
            api_key: Secret::new(api_key),
            key_source,
            api_url,
            project_prefix: config.project_prefix,
            region_id: config.region_id,
            pg_version: config.pg_version,
            org_id: config.org_id,
            suspend_timeout_seconds: config.suspend_timeout_seconds,
            overrides,
            ca_pem,
            retry_budget: Duration::from_secs(config.retry_budget_secs),
            operation_timeout: Duration::from_secs(config.operation_timeout_secs),
            request_timeout: Duration::from_secs(config.request_timeout_secs),
            read_only_role: config.read_only_role,
        })
    }

    /// Where to open the TCP connection for endpoint host `host`: an exact
    /// override, else the longest matching `*.<suffix>`, else `host:5432`.
    pub fn address_of(&self, host: &str) -> (String, u16) {
        let host_lc = host.to_ascii_lowercase();
        if let Some(o) = self
            .overrides
            .iter()
            .find(|o| matches!(&o.pattern, Pattern::Exact(h) if *h == host_lc))
        {
            return (o.host.clone(), o.port);
        }
        self.overrides
            .iter()
            .filter_map(|o| match &o.pattern {
                Pattern::Suffix(s) if host_lc.ends_with(s.as_str()) && host_lc.len() > s.len() => {
                    Some((s.len(), o))
                }
                _ => None,
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, o)| (o.host.clone(), o.port))
            .unwrap_or_else(|| (host.to_string(), 5432))
    }

    /// How many overrides there are.
    pub fn override_count(&self) -> usize {
        self.overrides.len()
    }
}

fn parse_override(pattern: &str, target: &str) -> Result<Override, BackendError> {
    let bad = |why: &str| {
        invalid(format!(
            "invalid [backends.neon] endpoint_overrides entry {pattern:?} = {target:?}: {why}"
        ))
    };
    let pattern_lc = pattern.trim().to_ascii_lowercase();
    let pattern = if let Some(suffix) = pattern_lc.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return Err(bad("a pattern is a host name or *.<domain>"));
        }
        Pattern::Suffix(format!(".{suffix}"))
    } else {
        if pattern_lc.is_empty() || pattern_lc.contains('*') {
            return Err(bad("a pattern is a host name or *.<domain>"));
        }
        Pattern::Exact(pattern_lc)
    };
    let (host, port) = target
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| bad("the target is host:port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is a number from 1 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the target is host:port"));
    }
    Ok(Override {
        pattern,
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: serde_json::Value) -> Result<Settings, BackendError> {
        Settings::from_json(value, None)
    }

    #[test]
    fn key_from_config_or_env_and_never_printed() {
        let s = settings(json!({"api_key": "sekrit-key"})).unwrap();
        assert_eq!(s.key_source, KeySource::Config);
        assert!(!format!("{s:?}").contains("sekrit-key"));
        let s = Settings::from_json(json!({}), Some("env-key".into())).unwrap();
        assert_eq!(s.key_source, KeySource::Env);
        assert_eq!(s.api_key.expose(), "env-key");
        let e = settings(json!({})).unwrap_err();
        assert!(e.message.contains("api_key") && e.message.contains(API_KEY_ENV));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = settings(json!({"api_key": "k", "apikey": "x"})).unwrap_err();
        assert!(e.message.contains("apikey"), "{}", e.message);
    }

    #[test]
    fn overrides_exact_then_longest_suffix_then_5432() {
        let s = settings(json!({"api_key": "k", "endpoint_overrides": {
            "*.neon.tech": "127.0.0.1:1000",
            "*.us-east-2.aws.neon.tech": "127.0.0.1:2000",
            "ep-x.us-east-2.aws.neon.tech": "tunnel:3000",
            "*.v6.test": "[::1]:4000",
        }}))
        .unwrap();
        assert_eq!(
            s.address_of("ep-x.us-east-2.aws.neon.tech"),
            ("tunnel".into(), 3000)
        );
        assert_eq!(
            s.address_of("EP-Y.us-east-2.aws.neon.tech"),
            ("127.0.0.1".into(), 2000)
        );
        assert_eq!(
            s.address_of("ep-z.eu.aws.neon.tech"),
            ("127.0.0.1".into(), 1000)
        );
        assert_eq!(s.address_of("a.v6.test"), ("::1".into(), 4000));
        assert_eq!(s.address_of("neon.tech"), ("neon.tech".into(), 5432));
        assert_eq!(s.address_of("other.host"), ("other.host".into(), 5432));
    }

    #[test]
    fn bad_overrides_and_ca_files_are_refused() {
        for (pattern, target) in [
            ("*.x", "nohost"),
            ("*.x", "h:0"),
            ("*.x", "h:99999"),
            ("*", "h:1"),
            ("a.*.b", "h:1"),
        ] {
            let e = settings(json!({"api_key": "k", "endpoint_overrides": {pattern: target}}))
                .unwrap_err();
            assert!(e.message.contains("endpoint_overrides"), "{}", e.message);
        }
        let e = settings(json!({"api_key": "k", "ca_file": "/nonexistent/ca.pem"})).unwrap_err();
        assert!(e.message.contains("ca_file"), "{}", e.message);
    }
}
