//! `wake-bench`: how long a client waits when it connects to a suspended
//! database through the gateway, next to the plain-Postgres equivalent.
//!
//! (a) gateway wake: suspend the database through the API (and wait until
//!     it reports `suspended`), then time `tokio_postgres::connect(url)`
//!     through the first row of `SELECT 1` on that fresh connection.
//! (b) reference: `pg_ctl -w start` of an ordinary cluster, then a direct
//!     connection and the first row of `SELECT 1`, timed together; then
//!     `pg_ctl -m fast stop` (not timed).
//!
//! `bench/wake.sh` sets everything up and runs this; see there.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// The goal for a wake seen by a client (p50).
const GOAL_P50_MS: f64 = 150.0;
/// How long a suspend may take to be reported by the API.
const SUSPEND_WAIT: Duration = Duration::from_secs(60);
/// Longest one timed connect + query (or pg_ctl start) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Measures the gateway's wake-on-connect against `pg_ctl start` + query.
#[derive(Debug, Parser)]
#[command(name = "wake-bench", about)]
struct Args {
    /// Gateway HTTP API (e.g. http://127.0.0.1:6480 or 127.0.0.1:6480).
    #[arg(long)]
    api: String,
    /// Admin token for the API.
    #[arg(long, env = "OGEL_TOKEN", hide_env_values = true)]
    token: String,
    /// Postgres URL of the database through the gateway, with password.
    #[arg(long)]
    url: String,
    /// Name of that database (for the API).
    #[arg(long)]
    db: String,
    /// Measured iterations per side.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Unmeasured iterations per side before the measured ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Directory holding pg_ctl (the reference run).
    #[arg(long)]
    pg_bin: PathBuf,
    /// Data directory of the reference cluster (stopped; trust auth on loopback).
    #[arg(long)]
    reference_pgdata: PathBuf,
    /// OS user that owns the reference cluster; pg_ctl runs as it (via
    /// runuser) when this program runs as root. Also the role it logs in as.
    /// Default: the current user.
    #[arg(long)]
    reference_user: Option<String>,
    /// Skip the reference run.
    #[arg(long)]
    skip_reference: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let api = Api::new(&args.api, &args.token)?;

    eprintln!(
        "wake-bench: gateway wake of \"{}\": {} warm-up + {} measured iterations",
        args.db, args.warmup, args.iterations
    );
    let gateway = measure_gateway(&api, &args).await?;
    // Leave the gateway's compute stopped while the reference runs.
    api.suspend_and_wait(&args.db).await?;

    let reference = if args.skip_reference {
        None
    } else {
        let reference = Reference::new(&args)?;
        eprintln!(
            "wake-bench: reference pg_ctl start + query of {}: {} warm-up + {} measured iterations",
            args.reference_pgdata.display(),
            args.warmup,
            args.iterations
        );
        Some(reference.measure(args.warmup, args.iterations).await?)
    };

    report(&gateway, reference.as_ref(), args.iterations);
    Ok(())
}

// ---------------------------------------------------------------- gateway

/// A small client of the gateway's HTTP API.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(addr: &str, token: &str) -> Result<Self> {
        let addr = addr.trim_end_matches('/');
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base,
            token: token.trim().to_string(),
            http,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{method} {url}: could not reach the gateway API"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the response"))?;
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: response is not JSON: {text}"))
    }

    async fn database(&self, db: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, &format!("/v1/databases/{db}"))
            .await
    }

    /// Suspends `db` and waits until the API reports it suspended.
    async fn suspend_and_wait(&self, db: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/databases/{db}/suspend"),
        )
        .await
        .with_context(|| format!("suspending \"{db}\""))?;
        let deadline = Instant::now() + SUSPEND_WAIT;
        loop {
            let info = self.database(db).await?;
            let state = compute_state(&info)?;
            if state == "suspended" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("\"{db}\" still reports compute state \"{state}\" {SUSPEND_WAIT:?} after a suspend");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn compute_state(info: &Value) -> Result<String> {
    info["compute"]["state"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no compute.state in the API's answer: {info}"))
}

fn compute_wakes(info: &Value) -> Option<u64> {
    info["compute"]["wakes"].as_u64()
}

async fn measure_gateway(api: &Api, args: &Args) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(args.iterations);
    for i in 0..args.warmup + args.iterations {
        let warmup = i < args.warmup;
        api.suspend_and_wait(&args.db)
            .await
            .with_context(|| format!("gateway iteration {}", i + 1))?;
        let wakes_before = compute_wakes(&api.database(&args.db).await?);
        let elapsed = connect_and_select_one(&args.url).await.with_context(|| {
            format!(
                "gateway iteration {}: connect + SELECT 1 through the gateway",
                i + 1
            )
        })?;
        let after = api.database(&args.db).await?;
        // The measurement is only a wake if the connection really woke it.
        if let (Some(before), Some(now)) = (wakes_before, compute_wakes(&after)) {
            if now <= before {
                bail!(
                    "gateway iteration {}: the connection did not wake the compute (wakes {before} → {now}); the measurement would not be a wake",
                    i + 1
                );
            }
        }
        print_sample("gateway-wake", i, args.warmup, elapsed, warmup);
        if !warmup {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// Connects with `config`, runs `SELECT 1` and returns the time from the
/// start of the connect through its first row. The connection is closed
/// (not timed).
async fn connect_and_select_one_with(
    connect: impl std::future::Future<
        Output = Result<
            (
                tokio_postgres::Client,
                tokio_postgres::Connection<
                    tokio_postgres::Socket,
                    tokio_postgres::tls::NoTlsStream,
                >,
            ),
            tokio_postgres::Error,
        >,
    >,
    started: Instant,
) -> Result<Duration> {
    let (client, connection) = tokio::time::timeout(STEP_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow!("connect did not finish within {STEP_TIMEOUT:?}"))?
        .context("connect")?;
    let conn_task = tokio::spawn(connection);
    let messages = tokio::time::timeout(STEP_TIMEOUT, client.simple_query("SELECT 1"))
        .await
        .map_err(|_| anyhow!("SELECT 1 did not finish within {STEP_TIMEOUT:?}"))?
        .context("SELECT 1")?;
    let elapsed = started.elapsed();
    let value = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
        _ => None,
    });
    match value {
        Some(Some(v)) if v == "1" => {}
        other => bail!("SELECT 1 returned {other:?} instead of one row with 1"),
    }
    drop(client);
    match tokio::time::timeout(Duration::from_secs(10), conn_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("wake-bench: note: closing the connection: {e}"),
        Ok(Err(e)) => eprintln!("wake-bench: note: the connection task failed: {e}"),
        Err(_) => eprintln!("wake-bench: note: the connection did not close within 10s"),
    }
    Ok(elapsed)
}

async fn connect_and_select_one(url: &str) -> Result<Duration> {
    let config: tokio_postgres::Config = url
        .parse()
        .context("parsing the --url (expected postgresql://user:password@host:port/db)")?;
    let started = Instant::now();
    connect_and_select_one_with(config.connect(NoTls), started).await
}

// -------------------------------------------------------------- reference

/// The reference cluster and how to run pg_ctl on it.
struct Reference {
    pg_ctl: PathBuf,
    pgdata: PathBuf,
    log: PathBuf,
    /// `runuser -u USER --` when running as root.
    runuser: Option<String>,
    /// Role to log in as (trust auth).
    role: String,
    port: u16,
}

impl Reference {
    fn new(args: &Args) -> Result<Self> {
        let pg_ctl = args.pg_bin.join("pg_ctl");
        if !pg_ctl.is_file() {
            bail!(
                "{} does not exist; pass --pg-bin DIR with pg_ctl in it",
                pg_ctl.display()
            );
        }
        let pgdata = args
            .reference_pgdata
            .canonicalize()
            .with_context(|| format!("reference cluster {}", args.reference_pgdata.display()))?;
        if !pgdata.join("PG_VERSION").is_file() {
            bail!(
                "{} is not a Postgres data directory (no PG_VERSION); initdb it first",
                pgdata.display()
            );
        }
        if pgdata.join("postmaster.pid").exists() {
            bail!(
                "{} has a postmaster.pid: the reference cluster seems to be running; stop it first (pg_ctl -D {} stop)",
                pgdata.display(),
                pgdata.display()
            );
        }
        let root = running_as_root()?;
        let current = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| command_output("id", &["-un"]).ok());
        let (runuser, role) = match (&args.reference_user, root) {
            (Some(user), true) => (Some(user.clone()), user.clone()),
            (Some(user), false) => (None, user.clone()),
            (None, true) => bail!(
                "running as root: pass --reference-user OSUSER (postgres does not run as root)"
            ),
            (None, false) => (
                None,
                current.ok_or_else(|| {
                    anyhow!("cannot tell the current user; pass --reference-user")
                })?,
            ),
        };
        // Inside the data directory: the cluster's owner can write there.
        let log = pgdata.join("wake-bench-pg_ctl.log");
        let port = free_loopback_port()?;
        Ok(Reference {
            pg_ctl,
            pgdata,
            log,
            runuser,
            role,
            port,
        })
    }

    fn pg_ctl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = match &self.runuser {
            Some(user) => {
                let mut cmd = tokio::process::Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(&self.pg_ctl);
                cmd
            }
            None => tokio::process::Command::new(&self.pg_ctl),
        };
        cmd.arg("-D")
            .arg(&self.pgdata)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run_pg_ctl(&self, what: &str, args: &[&str]) -> Result<()> {
        let output = tokio::time::timeout(STEP_TIMEOUT, self.pg_ctl_command(args).output())
            .await
            .map_err(|_| anyhow!("pg_ctl {what} did not finish within {STEP_TIMEOUT:?}"))?
            .with_context(|| format!("running {} {what}", self.pg_ctl.display()))?;
        if !output.status.success() {
            let log_tail = std::fs::read_to_string(&self.log)
                .map(|t| tail_lines(&t, 5))
                .unwrap_or_default();
            bail!(
                "pg_ctl {what} failed ({}): {}{}\n{}\nlog {}:\n{log_tail}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                if output.stderr.is_empty() { "" } else { "\n" },
                String::from_utf8_lossy(&output.stderr).trim(),
                self.log.display()
            );
        }
        Ok(())
    }

    /// One timed `pg_ctl -w start` + connect + first row of SELECT 1.
    async fn start_and_query(&self) -> Result<Duration> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            self.port
        );
        let log = self.log.display().to_string();
        let started = Instant::now();
        self.run_pg_ctl("start", &["-w", "-l", &log, "-o", &options, "start"])
            .await?;
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(&self.role)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        connect_and_select_one_with(config.connect(NoTls), started)
            .await
            .context("connect + SELECT 1 to the reference cluster")
    }

    async fn stop(&self) -> Result<()> {
        self.run_pg_ctl("stop", &["-w", "-m", "fast", "stop"]).await
    }

    async fn measure(&self, warmup: usize, iterations: usize) -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(iterations);
        for i in 0..warmup + iterations {
            let result = self.start_and_query().await;
            // Stop whatever started, even when the query failed.
            let stopped = if self.pgdata.join("postmaster.pid").exists() {
                self.stop().await
            } else {
                Ok(())
            };
            let elapsed = result.with_context(|| format!("reference iteration {}", i + 1))?;
            stopped.with_context(|| format!("reference iteration {}: stopping", i + 1))?;
            print_sample("pg_ctl-start+query", i, warmup, elapsed, i < warmup);
            if i >= warmup {
                samples.push(elapsed);
            }
        }
        Ok(samples)
    }
}

fn running_as_root() -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    let meta = std::fs::metadata("/proc/self").context("reading /proc/self to tell the uid")?;
    Ok(meta.uid() == 0)
}

fn command_output(program: &str, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!("{program} failed: {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn free_loopback_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------- report

fn print_sample(label: &str, i: usize, warmup: usize, elapsed: Duration, is_warmup: bool) {
    if is_warmup {
        eprintln!(
            "  {label:<20} warm-up {:>3}: {:>8.1} ms",
            i + 1,
            ms(elapsed)
        );
    } else {
        eprintln!(
            "  {label:<20} {:>11}: {:>8.1} ms",
            i + 1 - warmup,
            ms(elapsed)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples: the ⌈p/100·n⌉-th smallest.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

struct Summary {
    p50: f64,
    p99: f64,
    min: f64,
    max: f64,
}

fn summarize(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    Summary {
        p50: ms(percentile(&sorted, 50.0)),
        p99: ms(percentile(&sorted, 99.0)),
        min: ms(sorted[0]),
        max: ms(sorted[sorted.len() - 1]),
    }
}

fn report(gateway: &[Duration], reference: Option<&Vec<Duration>>, iterations: usize) {
    let g = summarize(gateway);
    println!();
    println!("wake latency, ms ({iterations} iterations each; nearest-rank percentiles)");
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p99", "min", "max"
    );
    let row = |label: &str, s: &Summary| {
        println!(
            "{label:<20} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            s.p50, s.p99, s.min, s.max
        );
    };
    row("gateway-wake", &g);
    if let Some(reference) = reference {
        let r = summarize(reference);
        row("pg_ctl-start+query", &r);
        println!();
        println!(
            "ratio p50 gateway / reference: {:.2} ({:.1} ms / {:.1} ms)",
            g.p50 / r.p50,
            g.p50,
            r.p50
        );
    }
    let met = g.p50 <= GOAL_P50_MS;
    println!(
        "goal p50 <= {GOAL_P50_MS:.0} ms: {} (gateway p50 {:.1} ms)",
        if met { "MET" } else { "NOT MET" },
        g.p50
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=30).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(15));
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(30));
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 50.0), Duration::from_millis(7));
        assert_eq!(percentile(&one, 99.0), Duration::from_millis(7));
        let s: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(198));
    }

    #[test]
    fn tail() {
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("", 2), "");
    }
}
