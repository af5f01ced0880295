//! `ogel chaos …`: fault injection anyone can run against a database
//! marked `chaos_allowed` (`ogel chaos allow NAME`). While a writer
//! workload runs through the gateway (one row per transaction, every
//! acknowledged id recorded), a scenario injects its fault; the run then
//! prints the time until a client first saw it, the time until writes
//! were acknowledged again, the acknowledged writes missing afterwards
//! (must be 0) and the client errors seen; `--json` for CI and
//! `bench/failover.sh`.
//!
//! Scenarios: `kill-primary` (SIGKILL of the primary's postmaster, as a
//! crash), `kill-standby`, `switchover` (planned; its write pause is the
//! gateway's own figure). Faults that need what this build cannot do
//! here (`kill-gateway`, `partition-gateway`, `latency`, `disk-95`,
//! `corrupt-snapshot`) are refused, naming what is missing. Kills signal
//! the compute's process, so the command runs on the gateway's machine.

use super::ApiClient;
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `ogel chaos …`.
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Inject a fault while a writer runs; report detection, recovery,
    /// acknowledged writes lost and client errors.
    Run {
        /// The database (it must be marked with `ogel chaos allow`).
        #[arg(long)]
        db: String,
        /// kill-primary, kill-standby, switchover or all.
        #[arg(long, default_value = "kill-primary")]
        scenario: String,
        /// Longest the run waits for writes to come back after the fault.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// One JSON object per scenario instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let `ogel chaos run` disrupt a database.
    Allow {
        /// Database.
        name: String,
    },
    /// Forbid it again.
    Deny {
        /// Database.
        name: String,
    },
}

/// Scenarios this build runs.
const SCENARIOS: [&str; 3] = ["kill-primary", "kill-standby", "switchover"];
/// Scenarios the issue names that need more than this machine allows.
const NOT_HERE: [(&str, &str); 5] = [
    ("kill-gateway", "a second gateway of a cluster to serve the database (run it against a cluster member with `ogel cluster status`)"),
    ("partition-gateway", "a network namespace or proxy between gateway and compute"),
    ("latency", "a proxy between gateway and compute"),
    ("disk-95", "a compute on a filesystem of its own"),
    ("corrupt-snapshot", "the snapshot files (covered by the test suite's corrupted-snapshot tests)"),
];

/// What one scenario did.
#[derive(Debug, Serialize)]
struct ChaosReport {
    /// The scenario.
    scenario: String,
    /// The database.
    database: String,
    /// Fault to the first client error (none: no client noticed).
    detected_ms: Option<u64>,
    /// Fault to the first write acknowledged after it.
    recovered_ms: Option<u64>,
    /// Writes acknowledged during the run.
    acknowledged: usize,
    /// Acknowledged writes missing afterwards (must be 0).
    lost: usize,
    /// Errors the writer saw (failed or unanswered writes).
    client_errors: u64,
    /// For a switchover: the gateway's measured write pause.
    write_pause_ms: Option<u64>,
}

pub(super) async fn run(api: &ApiClient, command: &ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::Allow { name } | ChaosCommand::Deny { name } => {
            let allowed = matches!(command, ChaosCommand::Allow { .. });
            let done: crate::api::Done = api
                .call(
                    Method::POST,
                    &format!("/v1/databases/{name}/chaos"),
                    Some(serde_json::json!({ "allowed": allowed })),
                )
                .await?;
            println!("{}", done.done);
            Ok(())
        }
        ChaosCommand::Run {
            db,
            scenario,
            duration,
            json,
        } => {
            let scenarios: Vec<&str> = match scenario.as_str() {
                "all" => SCENARIOS.to_vec(),
                s if SCENARIOS.contains(&s) => vec![s],
                s => {
                    if let Some((_, needs)) = NOT_HERE.iter().find(|(n, _)| *n == s) {
                        bail!("scenario {s} is not available in this build: it needs {needs}");
                    }
                    bail!(
                        "unknown scenario \"{s}\": use one of {} or all",
                        SCENARIOS.join(", ")
                    );
                }
            };
            let info: crate::api::DatabaseInfo = api
                .call(Method::GET, &format!("/v1/databases/{db}"), None)
                .await?;
            if !info.chaos_allowed {
                bail!("database \"{db}\" is not marked chaos_allowed: its clients would see the faults; mark it with `ogel chaos allow {db}` first");
            }
            let url = writer_url(api, db).await?;
            for s in scenarios {
                let report = run_one(api, db, s, &url, *duration).await?;
                if *json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print_report(&report);
                }
                if report.lost > 0 {
                    bail!("{} acknowledged writes were lost", report.lost);
                }
            }
            Ok(())
        }
    }
}

fn print_report(r: &ChaosReport) {
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
    println!("{} on {}:", r.scenario, r.database);
    println!("  detected by a client after   {}", ms(r.detected_ms));
    println!("  writes acknowledged again    {}", ms(r.recovered_ms));
    if let Some(p) = r.write_pause_ms {
        println!("  write pause (gateway)        {p} ms");
    }
    println!(
        "  acknowledged writes lost     {} of {}",
        r.lost, r.acknowledged
    );
    println!("  client errors                {}", r.client_errors);
}

/// A short-lived token URL for the writer (plaintext: the CLI runs on
/// the gateway's machine, and tokens are accepted over loopback).
async fn writer_url(api: &ApiClient, db: &str) -> anyhow::Result<String> {
    let issued: crate::control::access::IssuedToken = api
        .call(
            Method::POST,
            &format!("/v1/databases/{db}/tokens"),
            Some(serde_json::json!({ "ttl": "1h" })),
        )
        .await?;
    Ok(issued.url.replace("sslmode=require", "sslmode=disable"))
}

/// The writer: one row per transaction, reconnecting after errors.
struct Writer {
    /// (id, when sent, when acknowledged)
    acked: Arc<Mutex<Vec<(i64, Instant, Instant)>>>,
    /// When each error was seen.
    errors: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(url: String, first: i64) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, e, s) = (acked.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut next = first;
            let mut client: Option<tokio_postgres::Client> = None;
            while !s.load(Ordering::SeqCst) {
                let Some(c) = client.as_ref() else {
                    match connect(&url).await {
                        Ok(c) => client = Some(c),
                        Err(_) => {
                            crate::pool::lock(&e).push(Instant::now());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    continue;
                };
                let sent = Instant::now();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
                let insert = c.execute("INSERT INTO ogel_chaos_writes (id) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(5), insert).await {
                    Ok(Ok(_)) => crate::pool::lock(&a).push((next, sent, Instant::now())),
                    _ => {
                        crate::pool::lock(&e).push(Instant::now());
                        client = None;
                    }
                }
                next += 1;
            }
        });
        Writer {
            acked,
            errors,
            stop,
            task,
        }
    }

    fn acked_since(&self, t: Instant) -> usize {
        crate::pool::lock(&self.acked)
            .iter()
            .filter(|(_, _, at)| *at > t)
            .count()
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| anyhow!("connecting timed out"))??;
    tokio::spawn(connection);
    Ok(client)
}

async fn run_one(
    api: &ApiClient,
    db: &str,
    scenario: &str,
    url: &str,
    limit: Duration,
) -> anyhow::Result<ChaosReport> {
    wait_for_standby(api, db, scenario, limit).await?;
    let setup = connect(url)
        .await
        .with_context(|| format!("connecting to \"{db}\" through the gateway"))?;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS ogel_chaos_writes (id int8 PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .await?;
    let max: i64 = setup
        .query_one("SELECT coalesce(max(id), 0) FROM ogel_chaos_writes", &[])
        .await?
        .get(0);
    let first = max + 1;
    drop(setup);
    let writer = Writer::start(url.to_string(), first);
    // Writes flow before the fault.
    let warm = Instant::now();
    while writer.acked_since(warm) < 50 {
        if warm.elapsed() > limit {
            bail!("the writer got no acknowledgement in {limit:?} before the fault");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut write_pause_ms = None;
    let mut fault = Instant::now();
    match scenario {
        "kill-primary" => {
            let info: crate::api::DatabaseInfo = api
                .call(Method::GET, &format!("/v1/databases/{db}"), None)
                .await?;
            let pid = info
                .compute
                .pid
                .ok_or_else(|| anyhow!("database \"{db}\"'s compute reports no process to kill"))?;
            kill(pid)?;
            fault = Instant::now();
        }
        "kill-standby" => {
            let standby: crate::api::standby::StandbyInfo = api
                .call(Method::GET, &format!("/v1/databases/{db}/standby"), None)
                .await?;
            let pid = standby.pid.ok_or_else(|| {
                anyhow!(
                    "database \"{db}\" has no running standby to kill (`ogel db standby {db} add`)"
                )
            })?;
            kill(pid)?;
            fault = Instant::now();
        }
        "switchover" => {
            let done: crate::api::standby::SwitchoverResult = api
                .call(
                    Method::POST,
                    &format!("/v1/databases/{db}/switchover"),
                    None,
                )
                .await?;
            write_pause_ms = Some(done.write_pause_ms);
        }
        other => bail!("unknown scenario {other}"),
    }
    // Until writes are acknowledged again (and a little more), or the limit.
    let mut recovered = None;
    while fault.elapsed() < limit {
        // The first write sent after the fault that was acknowledged.
        let first_ack = crate::pool::lock(&writer.acked)
            .iter()
            .find(|(_, sent, _)| *sent > fault)
            .map(|(_, _, at)| *at);
        if let Some(at) = first_ack {
            recovered = Some(at);
            if writer.acked_since(at) >= 50 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.stop.store(true, Ordering::SeqCst);
    let _ = writer.task.await;
    let acked = crate::pool::lock(&writer.acked).clone();
    let errors = crate::pool::lock(&writer.errors).clone();
    // What is there now, through a new connection.
    let check = reconnect(url, limit).await?;
    let ids: std::collections::HashSet<i64> = check
        .query("SELECT id FROM ogel_chaos_writes WHERE id >= $1", &[&first])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = acked.iter().filter(|(id, _, _)| !ids.contains(id)).count();
    Ok(ChaosReport {
        scenario: scenario.to_string(),
        database: db.to_string(),
        detected_ms: errors
            .iter()
            .find(|at| **at > fault)
            .map(|at| at.duration_since(fault).as_millis() as u64),
        recovered_ms: recovered.map(|at| at.duration_since(fault).as_millis() as u64),
        acknowledged: acked.len(),
        lost,
        client_errors: errors.iter().filter(|at| **at > fault).count() as u64,
        write_pause_ms,
    })
}

/// A scenario that needs a standby (or runs on a database that wants
/// one) waits, within `limit`, until one streams: after a failover the
/// next is being built.
async fn wait_for_standby(
    api: &ApiClient,
    db: &str,
    scenario: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    // A suspended database has nothing running to disrupt: wake it.
    let _: crate::api::DatabaseInfo = api
        .call(Method::POST, &format!("/v1/databases/{db}/wake"), None)
        .await?;
    let started = Instant::now();
    loop {
        let standby: crate::api::standby::StandbyInfo = api
            .call(Method::GET, &format!("/v1/databases/{db}/standby"), None)
            .await?;
        let needed = standby.wanted > 0 || scenario != "kill-primary";
        if !needed || standby.streaming > 0 {
            return Ok(());
        }
        if standby.wanted == 0 {
            bail!("scenario {scenario} needs a standby: `ogel db standby {db} add`");
        }
        if started.elapsed() > limit {
            bail!(
                "database \"{db}\"'s standby is not streaming after {limit:?}: {}",
                standby.note.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects, retrying within `limit` (the database may still be failing
/// over).
async fn reconnect(url: &str, limit: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let started = Instant::now();
    loop {
        match connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) if started.elapsed() > limit => {
                return Err(e.context("the database did not come back to check the writes"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn kill(pid: u32) -> anyhow::Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| {
        format!("could not signal process {pid} (run `ogel chaos` on the gateway's machine, as its user)")
    })
}
