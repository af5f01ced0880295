//! Limits on who may connect, before any work is done for them: clients in
//! all (`max_connections`), new connections per second from one address,
//! and failed logins per address — past the threshold an address is
//! refused for a backoff that doubles with each further failure (up to a
//! minute) and resets on a successful login. Each refusal is a clear
//! ErrorResponse; the numbers live in `[limits]`.

use crate::config::LimitsConfig;
use crate::error::ClientError;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Source {
    second: Option<Instant>,
    attempts_this_second: u32,
    failures: Vec<Instant>,
    blocked_until: Option<Instant>,
    backoff: Duration,
}

/// Admission state of the front end.
pub struct Limits {
    config: LimitsConfig,
    sources: Mutex<HashMap<IpAddr, Source>>,
    connections: Arc<AtomicUsize>,
    /// Clients of each tenant now.
    tenants: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// Counts a connection until dropped.
pub struct Admitted {
    connections: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sources remembered at most (the quietest are forgotten first).
const SOURCES_MAX: usize = 100_000;

impl Limits {
    /// Limits from the configuration.
    pub fn new(config: LimitsConfig) -> Self {
        Limits {
            config,
            sources: Mutex::new(HashMap::new()),
            connections: Arc::new(AtomicUsize::new(0)),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Admits a client of `tenant` when it has fewer than `max` (0: no
    /// limit); the slot is held until dropped.
    pub fn admit_tenant(&self, tenant: &str, max: usize) -> Result<Admitted, ClientError> {
        let counter = self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_default()
            .clone();
        let open = counter.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted {
            connections: counter,
        };
        if max > 0 && open >= max {
            return Err(ClientError::new(
                "53300",
                format!("too many clients for tenant \"{tenant}\" ({max} at most)"),
            )
            .hint("close idle connections, or raise the tenant's max_clients (limits.clients_per_tenant)"));
        }
        Ok(admitted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Source>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, ClientError> {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> Result<Admitted, ClientError> {
        let open = self.connections.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted {
            connections: self.connections.clone(),
        };
        if open >= self.config.max_connections {
            return Err(ClientError::new(
                "53300",
                format!(
                    "sorry, too many clients already ({} connections)",
                    self.config.max_connections
                ),
            )
            .hint("raise limits.max_connections, or close idle connections"));
        }
        let mut sources = self.lock();
        if sources.len() >= SOURCES_MAX {
            let window = self.config.failure_window;
            sources.retain(|_, s| {
                s.blocked_until.is_some_and(|t| t > now)
                    || s.failures.iter().any(|f| now.duration_since(*f) < window)
            });
        }
        let source = sources.entry(ip).or_default();
        if let Some(until) = source.blocked_until.filter(|t| *t > now) {
            let wait = until.duration_since(now).as_secs() + 1;
            return Err(ClientError::new(
                "28000",
                format!("too many failed logins from {ip}; retry in {wait}s"),
            )
            .hint("check the user name and password"));
        }
        match source.second {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                source.attempts_this_second += 1;
            }
            _ => {
                source.second = Some(now);
                source.attempts_this_second = 1;
            }
        }
        if source.attempts_this_second > self.config.connections_per_second_per_source {
            return Err(ClientError::new(
                "53300",
                format!(
                    "too many new connections from {ip} ({} per second at most)",
                    self.config.connections_per_second_per_source
                ),
            )
            .hint("slow down, or reuse connections"));
        }
        Ok(admitted)
    }

    /// A login from `ip` failed.
    pub fn auth_failed(&self, ip: IpAddr) {
        self.auth_failed_at(ip, Instant::now());
    }

    fn auth_failed_at(&self, ip: IpAddr, now: Instant) {
        let window = self.config.failure_window;
        let mut sources = self.lock();
        let source = sources.entry(ip).or_default();
        source.failures.retain(|f| now.duration_since(*f) < window);
        source.failures.push(now);
        if source.failures.len() as u32 >= self.config.auth_failures_before_backoff {
            source.backoff =
                (source.backoff * 2).clamp(Duration::from_secs(1), self.config.max_backoff);
            source.blocked_until = Some(now + source.backoff);
            tracing::warn!(%ip, backoff = ?source.backoff, "too many failed logins; refusing this address for a while");
        }
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub fn auth_succeeded(&self, ip: IpAddr) {
        if let Some(source) = self.lock().get_mut(&ip) {
            source.failures.clear();
            source.backoff = Duration::ZERO;
            source.blocked_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(LimitsConfig {
            max_connections: 2,
            connections_per_second_per_source: 3,
            auth_failures_before_backoff: 2,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn connections_in_all_are_bounded() {
        let l = limits();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert_eq!(l.admit(ip).err().unwrap().code, "53300");
        drop(a);
        assert!(l.admit(ip).is_ok());
    }

    #[test]
    fn new_connections_per_second_are_bounded_per_address() {
        let l = Limits::new(LimitsConfig {
            connections_per_second_per_source: 3,
            ..LimitsConfig::default()
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..3 {
            drop(l.admit_at(a, t).unwrap());
        }
        assert_eq!(l.admit_at(a, t).err().unwrap().code, "53300");
        assert!(l.admit_at(b, t).is_ok(), "another address is not affected");
        assert!(
            l.admit_at(a, t + Duration::from_millis(1100)).is_ok(),
            "the next second"
        );
    }

    #[test]
    fn failed_logins_back_off_and_a_success_resets() {
        let l = limits();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        l.auth_failed_at(ip, t);
        assert!(l.admit_at(ip, t).is_ok());
        l.auth_failed_at(ip, t);
        let err = l.admit_at(ip, t).err().unwrap();
        assert_eq!(err.code, "28000");
        assert!(err.message.contains("retry in"), "{}", err.message);
        assert!(
            l.admit_at(ip, t + Duration::from_secs(2)).is_ok(),
            "after the backoff"
        );
        l.auth_failed_at(ip, t + Duration::from_secs(2));
        assert!(
            l.admit_at(ip, t + Duration::from_secs(3)).is_err(),
            "the backoff doubled"
        );
        l.auth_succeeded(ip);
        assert!(l.admit_at(ip, t + Duration::from_secs(3)).is_ok());
    }
}
