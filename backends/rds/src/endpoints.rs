//! `endpoint_overrides`: where the gateway and the plugin really connect
//! for an instance's endpoint (a tunnel, an SSH forward, a test server).
//! An exact host name wins over a `*.suffix` pattern; the longest suffix
//! wins among patterns. The instance's own host name is still what TLS
//! verifies (`ComputeTls.server_name`).

use std::collections::BTreeMap;

/// An address that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `:`.
    #[error("\"{0}\" is not host:port")]
    NotHostPort(String),
    /// The port is not 1–65535.
    #[error("\"{0}\" has no valid port")]
    BadPort(String),
    /// Nothing before the `:`.
    #[error("\"{0}\" has no host")]
    NoHost(String),
}

/// Parses `host:port` (`[v6]:port` for IPv6).
pub fn parse_host_port(s: &str) -> Result<(String, u16), AddressError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| AddressError::NotHostPort(s.to_string()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| AddressError::BadPort(s.to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(AddressError::NoHost(s.to_string()));
    }
    Ok((host.to_string(), port))
}

/// The address that reaches `host:port` under `overrides` (already checked
/// by the configuration).
pub fn resolve(overrides: &BTreeMap<String, String>, host: &str, port: u16) -> (String, u16) {
    let host_lc = host.to_ascii_lowercase();
    let exact = overrides.get(&host_lc).or_else(|| overrides.get(host));
    let pattern = || {
        overrides
            .iter()
            .filter_map(|(k, v)| {
                let suffix = k.strip_prefix('*')?; // ".example.com"
                host_lc
                    .ends_with(&suffix.to_ascii_lowercase())
                    .then_some((suffix.len(), v))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, v)| v)
    };
    match exact.or_else(pattern).map(|t| parse_host_port(t)) {
        Some(Ok(target)) => target,
        _ => (host.to_string(), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_longest_suffix() {
        let mut o = BTreeMap::new();
        o.insert(
            "*.rds.amazonaws.com".to_string(),
            "127.0.0.1:5433".to_string(),
        );
        o.insert(
            "*.us-east-1.rds.amazonaws.com".to_string(),
            "127.0.0.1:5434".to_string(),
        );
        o.insert(
            "a.us-east-1.rds.amazonaws.com".to_string(),
            "[::1]:5435".to_string(),
        );
        assert_eq!(
            resolve(&o, "a.us-east-1.rds.amazonaws.com", 5432),
            ("::1".to_string(), 5435)
        );
        assert_eq!(
            resolve(&o, "b.us-east-1.rds.amazonaws.com", 5432),
            ("127.0.0.1".to_string(), 5434)
        );
        assert_eq!(
            resolve(&o, "b.eu-west-1.rds.amazonaws.com", 5432),
            ("127.0.0.1".to_string(), 5433)
        );
        assert_eq!(
            resolve(&o, "db.example.com", 5432),
            ("db.example.com".to_string(), 5432)
        );
        assert!(parse_host_port("nohost").is_err());
        assert!(parse_host_port(":5432").is_err());
        assert!(parse_host_port("h:99999").is_err());
    }
}
