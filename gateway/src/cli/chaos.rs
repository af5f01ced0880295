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
//! gateway's own figure), `corrupt-snapshot` (a fresh local snapshot gets
//! a flipped byte; restoring it must be refused by its checksums and
//! nothing served, then the byte is put back) and `disk-95` (a balloon
//! file fills the compute's filesystem to 95% for a while: writes must go
//! on, and the gateway's disk alert must say so; only on a filesystem
//! that is not also `/`), `latency` (100 ms on each chunk between the
//! gateway and the primary for 5 s: writes slow, none fail) and
//! `partition-gateway` (nothing passes between them: the watch's probes
//! time out and the standby takes over), both through the gateway's fault
//! proxy (`pool::faults`). `kill-gateway` (in a cluster, with an in-sync
//! standby on another gateway, and `--url` naming every gateway) has the
//! serving gateway kill itself; the standby's gateway takes over. Kills, the corruption and the balloon act on the
//! gateway's machine, so the command runs there (with `--data-dir`).

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
        /// kill-primary, kill-standby, switchover, latency,
        /// partition-gateway, corrupt-snapshot, disk-95, or all (all of
        /// them but disk-95, which needs a filesystem of the compute's own).
        #[arg(long, default_value = "kill-primary")]
        scenario: String,
        /// Longest the run waits for writes to come back after the fault.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// One JSON object per scenario instead of text.
        #[arg(long)]
        json: bool,
        /// Connect the writer with this URL (list every gateway:
        /// host=a,b,c) instead of a fresh token; kill-gateway needs it,
        /// since a token is checked by the gateway that issued it.
        #[arg(long)]
        url: Option<String>,
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
const SCENARIOS: [&str; 8] = [
    "kill-primary",
    "kill-standby",
    "switchover",
    "latency",
    "partition-gateway",
    "corrupt-snapshot",
    "disk-95",
    "kill-gateway",
];
/// Run by name only, never by `all`: disk-95 fills a filesystem;
/// kill-gateway needs a cluster and a standby on another gateway.
const BY_NAME_ONLY: [&str; 2] = ["disk-95", "kill-gateway"];
/// How long after answering a gateway told to die kills itself.
const KILL_GATEWAY_AFTER: Duration = Duration::from_millis(200);
/// The delay `latency` adds to each chunk, either way.
const LATENCY: Duration = Duration::from_millis(100);
/// How long `latency` lasts.
const LATENCY_FOR: Duration = Duration::from_secs(5);

/// How full `disk-95` makes the filesystem.
const DISK_FILL: f64 = 0.95;
/// How long `disk-95` holds the balloon: longer than the gateway's disk
/// check interval, so its alert must fire.
const DISK_HOLD: Duration = Duration::from_secs(15);

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
    /// For corrupt-snapshot: the restore was refused, naming the file.
    corruption_detected: Option<bool>,
    /// For corrupt-snapshot: the corrupted data was served as a branch
    /// (must be false).
    corruption_served: Option<bool>,
    /// For corrupt-snapshot: what the gateway answered the restore.
    corruption_answer: Option<String>,
    /// For latency: the median write's time to acknowledgement before
    /// the fault and during it.
    write_ms_before: Option<u64>,
    write_ms_during: Option<u64>,
    /// For disk-95: the filesystem's use while the balloon held.
    disk_used_percent: Option<f64>,
    /// For disk-95: the gateway's disk alert (`ogel_data_disk_used_ratio`
    /// ≥ 0.9) was raised.
    disk_alert: Option<bool>,
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
            url,
        } => {
            let scenarios: Vec<&str> = match scenario.as_str() {
                "all" => SCENARIOS
                    .into_iter()
                    .filter(|s| !BY_NAME_ONLY.contains(s))
                    .collect(),
                s if SCENARIOS.contains(&s) => vec![s],
                s => {
                    bail!(
                        "unknown scenario \"{s}\": use one of {} or all",
                        SCENARIOS.join(", ")
                    );
                }
            };
            if scenarios.contains(&"kill-gateway") && url.is_none() {
                bail!("kill-gateway needs --url: a URL that lists every gateway (host=a,b,c) with a password, since a token is checked only by the gateway that issued it, and that one is killed");
            }
            let info: crate::api::DatabaseInfo = api
                .call(Method::GET, &format!("/v1/databases/{db}"), None)
                .await?;
            if !info.chaos_allowed {
                bail!("database \"{db}\" is not marked chaos_allowed: its clients would see the faults; mark it with `ogel chaos allow {db}` first");
            }
            let url = match url {
                Some(url) => url.clone(),
                None => writer_url(api, db).await?,
            };
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
                if report.corruption_served == Some(true) {
                    bail!("a corrupted snapshot was served");
                }
                if report.corruption_detected == Some(false) {
                    bail!("a corrupted snapshot was not refused");
                }
                if report.disk_alert == Some(false) {
                    bail!("the disk was 95% full and the gateway did not alert");
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
    if let (Some(detected), Some(served)) = (r.corruption_detected, r.corruption_served) {
        println!("  corruption refused           {}", yes_no(detected));
        println!("  corrupted data served        {}", yes_no(served));
    }
    if let (Some(before), Some(during)) = (r.write_ms_before, r.write_ms_during) {
        println!("  write latency before, during {before} ms, {during} ms (median)");
    }
    if let (Some(used), Some(alert)) = (r.disk_used_percent, r.disk_alert) {
        println!("  disk used while held         {used:.1}%");
        println!("  gateway's disk alert         {}", yes_no(alert));
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
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
    let (mut corruption_detected, mut corruption_served, mut corruption_answer) =
        (None, None, None);
    let (mut disk_used_percent, mut disk_alert) = (None, None);
    let (mut write_ms_before, mut write_ms_during) = (None, None);
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
        "latency" => {
            inject(api, db, "latency", LATENCY, LATENCY_FOR).await?;
            fault = Instant::now();
            tokio::time::sleep(LATENCY_FOR).await;
            let acked = crate::pool::lock(&writer.acked).clone();
            let median = |from: Instant, to: Instant| {
                let mut ms: Vec<u64> = acked
                    .iter()
                    .filter(|(_, sent, _)| *sent >= from && *sent < to)
                    .map(|(_, sent, at)| at.duration_since(*sent).as_millis() as u64)
                    .collect();
                ms.sort_unstable();
                ms.get(ms.len() / 2).copied()
            };
            write_ms_before = median(warm, fault);
            write_ms_during = median(fault, fault + LATENCY_FOR);
        }
        "kill-gateway" => {
            let done: crate::api::Done = api
                .call(
                    Method::POST,
                    &format!("/v1/databases/{db}/chaos/fault"),
                    Some(serde_json::json!({ "fault": "kill-gateway", "seconds": 1 })),
                )
                .await?;
            tracing::info!("{}", done.done);
            // The gateway kills itself a moment after answering.
            fault = Instant::now() + KILL_GATEWAY_AFTER;
            tokio::time::sleep(KILL_GATEWAY_AFTER).await;
        }
        "partition-gateway" => {
            // Long enough for the watch to fail over to the standby; a
            // database without one comes back when the partition ends.
            let hold = limit.min(Duration::from_secs(30));
            inject(api, db, "partition", Duration::ZERO, hold).await?;
            fault = Instant::now();
        }
        "corrupt-snapshot" => {
            fault = Instant::now();
            let (detected, served, answer) = corrupt_snapshot(api, db).await?;
            corruption_detected = Some(detected);
            corruption_served = Some(served);
            corruption_answer = Some(answer);
        }
        "disk-95" => {
            fault = Instant::now();
            let (used, alert) = fill_disk(api, &writer).await?;
            disk_used_percent = Some(used * 100.0);
            disk_alert = Some(alert);
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
        corruption_detected,
        corruption_served,
        corruption_answer,
        write_ms_before,
        write_ms_during,
        disk_used_percent,
        disk_alert,
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
        let needed = standby.wanted > 0
            || !matches!(
                scenario,
                "kill-primary" | "latency" | "partition-gateway" | "corrupt-snapshot" | "disk-95"
            );
        if scenario == "kill-gateway" {
            if standby.in_sync == Some(true) && standby.streaming > 0 {
                return Ok(());
            }
            if standby.standby_gateway.is_none() {
                bail!("kill-gateway needs a standby on another gateway of a cluster: `ogel db standby {db} add` on a cluster");
            }
        } else if !needed || standby.streaming > 0 {
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

/// `corrupt-snapshot`: takes a snapshot of `db`, flips one byte of one of
/// its data files, asks for it as a new branch, and puts the byte back.
/// Returns (the restore was refused naming the file, a branch was served,
/// the gateway's answer).
async fn corrupt_snapshot(api: &ApiClient, db: &str) -> anyhow::Result<(bool, bool, String)> {
    let snapshot: crate::api::branches::SnapshotEntry = api
        .call(
            Method::POST,
            &format!("/v1/databases/{db}/snapshots"),
            Some(serde_json::json!({})),
        )
        .await?;
    let dir = api.data_dir.join("native/snapshots").join(db);
    let manifest_path = dir.join(format!("{}.json", snapshot.id));
    let manifest: serde_json::Value = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            anyhow!(
                "corrupt-snapshot needs the native backend's local snapshots on this machine: {} is not readable (pass the gateway's --data-dir)",
                manifest_path.display()
            )
        })?;
    let victim = manifest["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["size"].as_u64().unwrap_or(0) > 0)
        .filter_map(|f| f["path"].as_str())
        .find(|p| p.starts_with("base/"))
        .ok_or_else(|| anyhow!("snapshot {} lists no data file to corrupt", snapshot.id))?
        .to_string();
    let file = dir.join(&snapshot.id).join("pgdata").join(&victim);
    flip_byte(&file)?;
    let branch = format!("chaos-{}", ogel_plugin_kit::time::unix_millis());
    let restored: anyhow::Result<serde_json::Value> = api
        .call(
            Method::POST,
            &format!("/v1/databases/{db}/snapshots/{}/restore", snapshot.id),
            Some(serde_json::json!({ "as": branch })),
        )
        .await;
    let put_back = flip_byte(&file);
    let answer = match &restored {
        Ok(v) => format!("restored: {v}"),
        Err(e) => format!("{e:#}"),
    };
    let detected = restored.is_err() && answer.contains("corrupt") && answer.contains(&victim);
    let branches: Vec<crate::api::branches::BranchInfo> = api
        .call(Method::GET, &format!("/v1/databases/{db}/branches"), None)
        .await?;
    let served = branches.iter().any(|b| b.name == branch);
    if served {
        let _: anyhow::Result<serde_json::Value> = api
            .call(
                Method::DELETE,
                &format!("/v1/databases/{db}/branches/{branch}"),
                None,
            )
            .await;
    }
    put_back.with_context(|| format!("putting back the byte flipped in {}", file.display()))?;
    Ok((detected, served, answer))
}

/// Inverts the middle byte of `path`.
fn flip_byte(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let at = f.metadata()?.len() / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut byte)?;
    byte[0] ^= 0xff;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&byte)?;
    f.sync_all()?;
    Ok(())
}

/// `disk-95`: fills the filesystem under the gateway's data directory to
/// 95% with a balloon file for [`DISK_HOLD`] while the writer goes on,
/// reading the gateway's disk gauge; then frees it. Returns (use while
/// held, the alert was raised). Refused on the filesystem of `/`.
async fn fill_disk(api: &ApiClient, writer: &Writer) -> anyhow::Result<(f64, bool)> {
    use ogel_plugin_kit::disk::{usage, used_ratio};
    let data = &api.data_dir;
    let disk =
        usage(data).ok_or_else(|| anyhow!("cannot read the filesystem of {}", data.display()))?;
    if usage(std::path::Path::new("/")).is_some_and(|root| root.device == disk.device) {
        bail!(
            "disk-95 fills the compute's filesystem, and {} is on the one holding / (the machine's own): give the gateway a data filesystem of its own",
            data.display()
        );
    }
    let want = (disk.size_bytes as f64 * DISK_FILL) as u64;
    let balloon = data.join("ogel-chaos-balloon");
    let fill = want.saturating_sub(disk.used_bytes);
    let file = std::fs::File::create(&balloon)
        .with_context(|| format!("creating {}", balloon.display()))?;
    let filled = nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FallocateFlags::empty(),
        0,
        fill as i64,
    );
    let result = async {
        filled.with_context(|| format!("allocating {fill} bytes in {}", balloon.display()))?;
        let held = Instant::now();
        let (mut used, mut alert) = (0.0f64, false);
        let before = writer.acked_since(held);
        while held.elapsed() < DISK_HOLD {
            if let Some(now) = usage(data) {
                used = used.max(used_ratio(&now));
            }
            let metrics = api.metrics().await.unwrap_or_default();
            alert |= metrics
                .lines()
                .filter_map(|l| l.strip_prefix("ogel_data_disk_used_ratio "))
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .any(|v| v >= crate::control::disk::ALERT_AT);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if writer.acked_since(held) <= before {
            bail!(
                "no write was acknowledged while the disk was {:.0}% full",
                used * 100.0
            );
        }
        Ok((used, alert))
    }
    .await;
    drop(file);
    std::fs::remove_file(&balloon)
        .with_context(|| format!("removing the balloon {}", balloon.display()))?;
    result
}

/// Puts a network fault between the gateway and `db`'s primary.
async fn inject(
    api: &ApiClient,
    db: &str,
    fault: &str,
    latency: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    let _: crate::api::Done = api
        .call(
            Method::POST,
            &format!("/v1/databases/{db}/chaos/fault"),
            Some(serde_json::json!({
                "fault": fault,
                "latency_ms": latency.as_millis() as u64,
                "seconds": duration.as_secs().max(1),
            })),
        )
        .await?;
    Ok(())
}
