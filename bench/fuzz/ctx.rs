//! The run's shared state (`Ctx`): where the gateway is, whom to log in
//! as, the timeouts, the counters, the stop flag, the cancel keys seen at
//! logins; and connecting to the gateway with retries.

use crate::check::process_alive;
use crate::conn::{dial, Conn};
use crate::report::{inc, Stats};
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::{sleep, timeout_at, Instant};

/// Shared by every worker of a run.
pub struct Ctx {
    pub addr: String,
    /// `addr` resolved.
    pub target: SocketAddr,
    /// Connect from many loopback addresses (the target is on loopback).
    pub spread: bool,
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub admin_password: Option<String>,
    pub seed: u64,
    pub auth_timeout: Duration,
    pub reply_timeout: Duration,
    pub pid: Option<i32>,
    pub max_reports: usize,
    pub stats: Stats,
    pub stop: AtomicBool,
    pub markers: AtomicU64,
    /// Whose probe each recent marker is (to name the input whose answer
    /// went to another client).
    pub owners: Mutex<(HashMap<u64, String>, VecDeque<u64>)>,
    /// Cancel keys seen at logins (for hostile cancel requests).
    pub keys: Mutex<Vec<(u32, u32)>>,
    /// `--skip-known-hangs`.
    pub skip_known: bool,
    /// `--max-hangs`.
    pub max_hangs: u64,
    /// Findings printed so far, by kind.
    pub reported: Mutex<HashMap<&'static str, usize>>,
    /// Why the gateway closed connections (its FATAL errors), counted.
    pub reasons: Mutex<HashMap<String, u64>>,
    pub started: Instant,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    pub fn gateway_gone(&self) -> bool {
        self.pid.is_some_and(|pid| !process_alive(pid))
    }

    pub fn count_input(&self, post: bool) {
        inc(if post {
            &self.stats.post
        } else {
            &self.stats.pre
        });
        inc(&self.stats.inputs);
    }

    /// Connects, retrying while the kernel runs short of ports or the
    /// listener refuses (until `deadline`). `None`: a crash or a hang was
    /// recorded.
    pub async fn connect(&self, deadline: Instant, what: &str, source: Ipv4Addr) -> Option<Conn> {
        let source = self.spread.then_some(IpAddr::V4(source));
        let mut last = String::new();
        loop {
            match timeout_at(deadline, dial(self.target, source)).await {
                Ok(Ok(stream)) => return Some(Conn::new(stream)),
                Ok(Err(e)) => {
                    if e.kind() == ErrorKind::ConnectionRefused
                        && (self.gateway_gone() || self.pid.is_none())
                    {
                        self.crash(|| {
                            format!(
                                "{what}: connection refused and the gateway process is gone ({e})"
                            )
                        });
                        return None;
                    }
                    inc(&self.stats.connect_retries);
                    last = e.to_string();
                    if Instant::now() + Duration::from_millis(50) >= deadline {
                        break;
                    }
                    sleep(Duration::from_millis(50)).await;
                }
                Err(_) => break,
            }
        }
        if self.gateway_gone() {
            self.crash(|| format!("{what}: cannot connect and the gateway process is gone"));
        } else if !self.stopped() {
            self.hang(|| {
                format!("{what}: could not connect within the deadline (last error: {last:?})")
            });
        }
        None
    }
}
