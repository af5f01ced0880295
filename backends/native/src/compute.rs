//! One compute process: starting `postgres` directly, knowing the moment it
//! is ready, stopping it cleanly, and adopting one left running by an
//! earlier gateway.
//!
//! Why not `pg_ctl start -w`: it polls `postmaster.pid` on a fixed interval
//! (up to 100 ms per check in PostgreSQL ≤ 16). Starting `postgres` ourselves
//! and reading the same status line every millisecond puts readiness within
//! a millisecond of the postmaster's own "ready" write.

use crate::os_user::ComputeUser;
use crate::pg_binaries::PgBinaries;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ogel_plugin_kit::time::unix_now;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// How often the readiness and exit checks look again.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How many times a start is retried when the chosen port was taken meanwhile.
const PORT_RETRIES_MAX: u32 = 3;

/// The parsed `postmaster.pid` of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    /// Process id of the postmaster.
    pub pid: u32,
    /// Unix time the postmaster started.
    pub started_at_unix: u64,
    /// Port it listens on.
    pub port: u16,
    /// `ready`, `starting`, `stopping` or `standby` once written (line 8).
    pub status: Option<String>,
}

/// Reads `<data_dir>/postmaster.pid`; `None` when there is none or it is
/// still being written.
pub fn read_postmaster_pid(data_dir: &Path) -> Option<PostmasterPid> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    parse_postmaster_pid(&text)
}

fn parse_postmaster_pid(text: &str) -> Option<PostmasterPid> {
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    let started_at_unix = lines.get(2)?.trim().parse().ok()?;
    let port = lines.get(3)?.trim().parse().ok()?;
    let status = lines
        .get(7)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Some(PostmasterPid {
        pid,
        started_at_unix,
        port,
        status,
    })
}

/// Why a compute did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `postgres` process could not be spawned at all.
    #[error("could not run {binary}: {source}")]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Postgres exited during start-up; `log_tail` says why.
    #[error("postgres exited during start-up: {log_tail}")]
    Exited {
        /// The last lines of the compute's log.
        log_tail: String,
    },
    /// Postgres did not become ready in time.
    #[error("postgres was not ready after {0:?}; see the compute log")]
    Timeout(Duration),
    /// No free loopback port.
    #[error("no free loopback port: {0}")]
    NoPort(#[source] std::io::Error),
}

/// A running postmaster this backend is responsible for.
#[derive(Debug)]
pub struct RunningCompute {
    /// The postmaster's pid.
    pub pid: u32,
    /// The loopback port it listens on.
    pub port: u16,
    /// Unix time it became ready.
    pub started_at_unix: u64,
    /// Present when this gateway started it; absent when adopted.
    child: Option<Child>,
}

/// What to start.
pub struct StartSpec<'a> {
    /// Server binaries.
    pub bins: &'a PgBinaries,
    /// The OS user the postmaster runs as.
    pub user: &'a ComputeUser,
    /// The cluster's data directory.
    pub data_dir: &'a Path,
    /// Where the postmaster's stderr goes.
    pub log_path: &'a Path,
    /// How long to wait for readiness.
    pub timeout: Duration,
    /// Settings passed as `-c name=value` (they override the config files).
    pub settings: &'a [(String, String)],
}

/// Starts a postmaster on a free loopback port and returns once it accepts
/// connections.
pub async fn start(spec: &StartSpec<'_>) -> Result<RunningCompute, StartError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_loopback_port().map_err(StartError::NoPort)?;
        match start_on_port(spec, port).await {
            Err(StartError::Exited { log_tail })
                if attempt < PORT_RETRIES_MAX && log_tail.contains("could not bind") =>
            {
                tracing::debug!(port, "port was taken before postgres bound it; retrying");
            }
            other => return other,
        }
    }
}

async fn start_on_port(spec: &StartSpec<'_>, port: u16) -> Result<RunningCompute, StartError> {
    let log_offset = std::fs::metadata(spec.log_path)
        .map(|m| m.len())
        .unwrap_or(0);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.log_path)
        .map_err(|source| StartError::Spawn {
            binary: spec.log_path.to_path_buf(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| StartError::Spawn {
        binary: spec.log_path.to_path_buf(),
        source,
    })?;
    let binary = spec.bins.postgres();
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg("-D")
        .arg(spec.data_dir)
        .arg("-p")
        .arg(port.to_string());
    for (name, value) in spec.settings {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        // Own process group: a Ctrl-C in the gateway's terminal must not
        // reach computes; the gateway stops them itself, in order.
        .process_group(0)
        .kill_on_drop(false);
    spec.user.apply_tokio(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
        binary: binary.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    loop {
        if let Ok(Some(_status)) = child.try_wait() {
            return Err(StartError::Exited {
                log_tail: log_tail(spec.log_path, log_offset),
            });
        }
        if let Some(file) = read_postmaster_pid(spec.data_dir) {
            // A standby says `standby` once it takes read-only queries.
            if file.pid == pid && matches!(file.status.as_deref(), Some("ready" | "standby")) {
                tracing::debug!(
                    pid,
                    port,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compute ready"
                );
                return Ok(RunningCompute {
                    pid,
                    port,
                    started_at_unix: unix_now(),
                    child: Some(child),
                });
            }
        }
        if started.elapsed() > spec.timeout {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT);
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            return Err(StartError::Timeout(spec.timeout));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

impl RunningCompute {
    /// Adopts a postmaster left running in `data_dir` by an earlier gateway,
    /// if there is one and it is ready.
    pub fn adopt(data_dir: &Path) -> Option<RunningCompute> {
        let file = read_postmaster_pid(data_dir)?;
        if !is_postgres_process(file.pid)
            || !matches!(file.status.as_deref(), Some("ready" | "standby"))
        {
            return None;
        }
        Some(RunningCompute {
            pid: file.pid,
            port: file.port,
            started_at_unix: file.started_at_unix,
            child: None,
        })
    }

    /// Whether the postmaster is still running.
    pub fn is_alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => is_postgres_process(self.pid),
        }
    }

    /// Fast shutdown (SIGINT: end sessions, checkpoint, exit): nothing
    /// committed is lost. After `timeout`, immediate shutdown (SIGQUIT),
    /// which is also safe for committed data (recovery replays the WAL).
    pub async fn stop(mut self, timeout: Duration) -> std::io::Result<()> {
        let pid = Pid::from_raw(self.pid as i32);
        if kill(pid, Signal::SIGINT).is_err() {
            return Ok(()); // already gone
        }
        if self.wait_exit(timeout).await {
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            "compute did not stop in {timeout:?}; sending SIGQUIT"
        );
        let _ = kill(pid, Signal::SIGQUIT);
        if self.wait_exit(Duration::from_secs(10)).await {
            return Ok(());
        }
        let _ = kill(pid, Signal::SIGKILL);
        Err(std::io::Error::other(format!(
            "postgres pid {} did not exit after SIGINT and SIGQUIT; killed",
            self.pid
        )))
    }

    async fn wait_exit(&mut self, timeout: Duration) -> bool {
        match &mut self.child {
            Some(child) => tokio::time::timeout(timeout, child.wait()).await.is_ok(),
            None => {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    if !is_postgres_process(self.pid) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                false
            }
        }
    }
}

/// True when `pid` is a live process whose executable is a postgres server
/// (pids are reused; a stale postmaster.pid must not make us signal another program).
pub(crate) fn is_postgres_process(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has exited already.
    let zombie = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        .unwrap_or(false);
    !zombie
        && cmdline
            .split(|b| *b == 0)
            .next()
            .map(|arg0| String::from_utf8_lossy(arg0).contains("postgres"))
            .unwrap_or(false)
}

fn free_loopback_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The last lines written to the log since `offset`, for error messages.
fn log_tail(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        "no output; see the compute log".to_string()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postmaster_pid_in_each_phase() {
        let starting = "4242\n/data\n1700000000\n5433\n\n127.0.0.1\n  1234   5678\nstarting\n";
        let ready = starting.replace("starting", "ready   ");
        let early = "4242\n/data\n1700000000\n5433\n";
        assert_eq!(
            parse_postmaster_pid(starting).unwrap().status.as_deref(),
            Some("starting")
        );
        let parsed = parse_postmaster_pid(&ready).unwrap();
        assert_eq!(parsed.status.as_deref(), Some("ready"));
        assert_eq!((parsed.pid, parsed.port), (4242, 5433));
        assert_eq!(parse_postmaster_pid(early).unwrap().status, None);
        assert_eq!(parse_postmaster_pid("garbage"), None);
        assert_eq!(parse_postmaster_pid(""), None);
    }

    #[test]
    fn pid_of_a_non_postgres_process_is_not_adopted() {
        assert!(!is_postgres_process(std::process::id()));
        assert!(!is_postgres_process(u32::MAX));
    }
}
