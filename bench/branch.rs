//! `branch-bench`: the timed parts of `bench/branch.sh`, against a database
//! of the gateway's native backend.
//!
//! * `fill`: grows table `filler` (g bigint, pad text of 960 bytes, btree
//!   index on g) of the database until `pg_database_size` reaches a size.
//! * `branch`: times `POST /v1/databases/{db}/branches` (201 when the branch
//!   exists) with the parent's compute running and a client connected;
//!   checks that client still gets answers, waits until the branch's base
//!   snapshot is sealed (hashed in the background), deletes the branch, and
//!   removes the base snapshot if the delete left it behind. With
//!   `--quiet-secs` it first leaves the database alone that long (idle).
//! * `bulk`: the same right after a bulk load: a new table filled by one
//!   `INSERT … SELECT generate_series` through the gateway, and as soon as
//!   its COMMIT returns (no sync, no sleep) the timed branch; the table is
//!   dropped after the branch is deleted.
//! * `wake`: wake latency (suspended → first row of `SELECT 1` on a new
//!   connection) and the latency of the first real query after the wake —
//!   index lookups spread over a hot set that was in shared buffers before
//!   the suspend — immediately and a while after the wake, optionally with
//!   the OS page cache dropped while suspended. Run once on a gateway with
//!   `native.prewarm` on and once with it off.
//!
//! Progress goes to stderr; the result is one JSON object (flat) on stdout.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Longest a connect or a short query may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one fill batch (an INSERT of up to `BATCH_BYTES`) may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Roughly how much one fill batch adds.
const BATCH_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
/// How long a suspend may take to be reported by the API.
const SUSPEND_WAIT: Duration = Duration::from_secs(120);
/// Longest an API call (a branch of a large database by copying) may take.
const API_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Parser)]
#[command(
    name = "branch-bench",
    about = "Branch creation and wake/prewarm timings (see bench/branch.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Grow table `filler` until the database is at least --target-bytes.
    Fill(FillArgs),
    /// Time branch creation (and deletion) through the API.
    Branch(BranchArgs),
    /// Time branch creation right after a bulk load (no sync, no sleep).
    Bulk(BulkArgs),
    /// Time wakes and the first query after a wake.
    Wake(WakeArgs),
}

#[derive(Debug, Args)]
struct Gateway {
    /// Gateway HTTP API (http://HOST:PORT).
    #[arg(long)]
    api: String,
    /// Admin token for the API.
    #[arg(long, env = "OGEL_TOKEN", hide_env_values = true)]
    token: String,
    /// Postgres URL of the database through the gateway, with password.
    #[arg(long)]
    url: String,
    /// Name of that database.
    #[arg(long)]
    db: String,
}

#[derive(Debug, Args)]
struct FillArgs {
    /// Postgres URL of the database through the gateway, with password.
    #[arg(long)]
    url: String,
    /// Size `pg_database_size(current_database())` must reach.
    #[arg(long)]
    target_bytes: u64,
}

#[derive(Debug, Args)]
struct BranchArgs {
    #[command(flatten)]
    gw: Gateway,
    /// Branches made (and deleted) one after the other.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Branch names are PREFIX-r1, PREFIX-r2, …
    #[arg(long)]
    prefix: String,
    /// The native backend's root (`<data-dir>/native`): base snapshots a
    /// branch delete leaves behind are removed from there, so they do not
    /// pile up (each is a full copy with the copy driver).
    #[arg(long)]
    native_root: Option<PathBuf>,
    /// After the last run, connect to the branch and compare max(g) with
    /// the parent's (wakes the branch's compute).
    #[arg(long)]
    verify: bool,
    /// Before each timed branch, write back the dirty page cache of this
    /// path's filesystem (`sync -f`, not timed), so that the branch does
    /// not pay for writing back what the database wrote before.
    #[arg(long)]
    sync_first: Option<PathBuf>,
    /// Before each run, wait this long (seconds) with nothing sent to the
    /// database: the branch of an idle database.
    #[arg(long, default_value_t = 0.0)]
    quiet_secs: f64,
}

#[derive(Debug, Args)]
struct BulkArgs {
    #[command(flatten)]
    gw: Gateway,
    /// Bulk loads, each followed by a timed branch (then deleted).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Branch names are PREFIX-r1, PREFIX-r2, …
    #[arg(long)]
    prefix: String,
    /// About how much each load writes into its new table (bulk_N, one
    /// INSERT … SELECT generate_series, dropped after its run).
    #[arg(long)]
    bulk_bytes: u64,
    /// As for `branch`: base snapshots a delete leaves behind are removed.
    #[arg(long)]
    native_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WakeArgs {
    #[command(flatten)]
    gw: Gateway,
    /// Measured wakes per cell (OS cache warm/dropped × query right away/later).
    #[arg(long, default_value_t = 10)]
    wakes: usize,
    /// Unmeasured wakes first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Size of the hot set read into shared buffers before each suspend
    /// (stay below shared_buffers, 128 MB by default).
    #[arg(long, default_value_t = 96)]
    hot_mb: u64,
    /// Index lookups of the first query, spread evenly over the hot set.
    #[arg(long, default_value_t = 2000)]
    lookups: u64,
    /// The "later" first query runs this long after the wake.
    #[arg(long, default_value_t = 1000)]
    delay_ms: u64,
    /// Also measure with the OS page cache dropped while suspended (root:
    /// writes /proc/sys/vm/drop_caches after syncing --sync-path's filesystem).
    #[arg(long)]
    drop_caches: bool,
    /// A path on the filesystem that holds the database (synced before dropping).
    #[arg(long)]
    sync_path: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let result = match Cli::parse().command {
        Command::Fill(args) => fill(args).await?,
        Command::Branch(args) => branch(args).await?,
        Command::Bulk(args) => bulk(args).await?,
        Command::Wake(args) => wake(args).await?,
    };
    println!("{}", Value::Object(result));
    Ok(())
}

// ------------------------------------------------------------------ Postgres

fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    url.parse()
        .context("parsing the URL (expected postgresql://user:password@host:port/db)")
}

async fn connect_config(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = tokio::time::timeout(STEP_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| anyhow!("connect did not finish within {STEP_TIMEOUT:?}"))?
        .context("connect")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("branch-bench: note: connection ended with an error: {e}");
        }
    });
    Ok(client)
}

async fn connect(url: &str) -> Result<Client> {
    connect_config(&parse_url(url)?).await
}

/// Runs `sql` (simple protocol; may hold several statements) and returns
/// the rows of every result, as text.
async fn query_within(
    client: &Client,
    sql: &str,
    limit: Duration,
) -> Result<Vec<Vec<Option<String>>>> {
    let messages = tokio::time::timeout(limit, client.simple_query(sql))
        .await
        .map_err(|_| anyhow!("query did not finish within {limit:?}: {sql}"))?
        .with_context(|| format!("query failed: {sql}"))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

async fn query(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    query_within(client, sql, STEP_TIMEOUT).await
}

/// The first column of the first row, parsed.
async fn query_value<T: std::str::FromStr>(client: &Client, sql: &str) -> Result<T> {
    let rows = query(client, sql).await?;
    let text = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .ok_or_else(|| anyhow!("no value from: {sql}"))?;
    text.parse()
        .map_err(|_| anyhow!("unexpected value {text:?} from: {sql}"))
}

async fn select_one(client: &Client) -> Result<()> {
    let v: i64 = query_value(client, "SELECT 1").await?;
    if v != 1 {
        bail!("SELECT 1 returned {v}");
    }
    Ok(())
}

async fn database_size(client: &Client) -> Result<u64> {
    query_value(client, "SELECT pg_database_size(current_database())").await
}

// ----------------------------------------------------------------------- API

/// A small client of the gateway's HTTP API.
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(gw: &Gateway) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base: gw.api.trim_end_matches('/').to_string(),
            token: gw.token.trim().to_string(),
            http,
        })
    }

    /// One call; an HTTP error status is an error with the answer's body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}: could not reach the gateway API"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the response"))?;
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {}", text.trim());
        }
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{method} {url}: response is not JSON: {text}"))?
        };
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.call(Method::GET, path, None).await?.1)
    }

    async fn compute(&self, db: &str) -> Result<(String, Option<u64>)> {
        let info = self.get(&format!("/v1/databases/{db}")).await?;
        let state = info["compute"]["state"]
            .as_str()
            .ok_or_else(|| anyhow!("no compute.state in the API's answer: {info}"))?
            .to_string();
        Ok((state, info["compute"]["wakes"].as_u64()))
    }

    /// Suspends `db` and waits until the API reports it suspended.
    async fn suspend_and_wait(&self, db: &str) -> Result<()> {
        self.call(Method::POST, &format!("/v1/databases/{db}/suspend"), None)
            .await
            .with_context(|| format!("suspending \"{db}\""))?;
        let deadline = Instant::now() + SUSPEND_WAIT;
        loop {
            let (state, _) = self.compute(db).await?;
            if state == "suspended" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("\"{db}\" still reports compute state \"{state}\" {SUSPEND_WAIT:?} after a suspend");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The database's snapshots of `branch`: (id, sealed).
    async fn snapshots_of(&self, db: &str, branch: &str) -> Result<Vec<(String, bool)>> {
        let list = self.get(&format!("/v1/databases/{db}/snapshots")).await?;
        let list = list
            .as_array()
            .ok_or_else(|| anyhow!("the snapshot list is not an array: {list}"))?;
        Ok(list
            .iter()
            .filter(|s| s["branch"].as_str() == Some(branch))
            .filter_map(|s| {
                let id = s["id"].as_str()?.to_string();
                Some((id, !s["size_bytes"].is_null()))
            })
            .collect())
    }
}

// ---------------------------------------------------------------------- fill

async fn fill(args: FillArgs) -> Result<Map<String, Value>> {
    let client = connect(&args.url).await.context("connecting to fill")?;
    query(
        &client,
        "CREATE TABLE IF NOT EXISTS filler (g bigint NOT NULL, pad text NOT NULL); \
         CREATE INDEX IF NOT EXISTS filler_g ON filler (g)",
    )
    .await?;
    let mut next: i64 = query_value(&client, "SELECT coalesce(max(g), 0) + 1 FROM filler").await?;
    let mut size = database_size(&client).await?;
    let started = Instant::now();
    let target = args.target_bytes;
    eprintln!(
        "branch-bench: fill: {} MiB now, growing to {} MiB",
        size >> 20,
        target >> 20
    );
    // 960 bytes of pad + tuple header + index entry: about 8 rows a page.
    let mut per_row = 1030.0_f64;
    while size < target {
        let remaining = ((target - size) as f64 / per_row).ceil() as i64;
        let rows = remaining.clamp(1000, (BATCH_BYTES / per_row) as i64);
        let batch_started = Instant::now();
        query_within(
            &client,
            &format!(
                "INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series({next}::bigint, {}::bigint) g",
                next + rows - 1
            ),
            BATCH_TIMEOUT,
        )
        .await?;
        next += rows;
        let before = size;
        size = database_size(&client).await?;
        if size > before {
            per_row = (size - before) as f64 / rows as f64;
        }
        eprintln!(
            "  +{rows} rows in {:.1}s: {} MiB",
            batch_started.elapsed().as_secs_f64(),
            size >> 20
        );
    }
    let fill_secs = started.elapsed().as_secs_f64();
    query(&client, "ANALYZE filler").await?;
    // Without pg_checkpoint the owner may not; then the next stop does it.
    let checkpoint = match query(&client, "CHECKPOINT").await {
        Ok(_) => "done".to_string(),
        Err(e) => format!("refused ({})", root_cause(&e)),
    };
    eprintln!(
        "branch-bench: fill: {} MiB, {} rows, {fill_secs:.1}s; CHECKPOINT {checkpoint}",
        size >> 20,
        next - 1
    );
    let mut out = Map::new();
    out.insert("size_bytes".into(), json!(size));
    out.insert("rows".into(), json!(next - 1));
    out.insert("fill_secs".into(), json!(round1(fill_secs)));
    out.insert("checkpoint".into(), json!(checkpoint));
    Ok(out)
}

// -------------------------------------------------------------------- branch

struct Run {
    branch_ms: f64,
    /// Dirty + Writeback of the page cache (machine-wide) just before, MiB.
    dirty_mib: u64,
    /// The parent's connected client after the branch: its next SELECT 1.
    parent_after: Result<f64, String>,
    seal_ms: Option<f64>,
    delete_ms: f64,
    leaked: usize,
    /// `bulk`: the load right before the branch, seconds.
    load_secs: Option<f64>,
}

/// What one timed branch needs besides the gateway.
struct BranchOpts<'a> {
    native_root: Option<&'a Path>,
    sync_first: Option<&'a Path>,
    verify: bool,
}

/// One timed branch `name` of the parent, with `client` (connected to the
/// parent, its compute running) kept open across it: POST (timed) → the
/// client's next query → base snapshot sealed → (verify) → DELETE → base
/// snapshots the delete left behind removed. Returns the run and the verify
/// result (Null unless `opts.verify`).
async fn branch_run(
    api: &Api,
    gw: &Gateway,
    opts: &BranchOpts<'_>,
    client: Client,
    name: &str,
    load_secs: Option<f64>,
) -> Result<(Run, Value)> {
    let db = &gw.db;
    if let Some(path) = opts.sync_first {
        sync_fs(path)?;
    }
    let dirty_mib = dirty_kib() >> 10;
    let started = Instant::now();
    let (status, info) = api
        .call(
            Method::POST,
            &format!("/v1/databases/{db}/branches"),
            Some(json!({ "name": name })),
        )
        .await?;
    let branch_ms = ms(started.elapsed());
    if status != StatusCode::CREATED {
        bail!("expected 201 Created, got {status}: {info}");
    }
    let branched = Instant::now();

    let parent_after = {
        let t = Instant::now();
        match select_one(&client).await {
            Ok(()) => Ok(ms(t.elapsed())),
            Err(e) => Err(format!("{e:#}")),
        }
    };
    if let Err(e) = &parent_after {
        eprintln!("branch-bench: warning: branch \"{name}\": the parent's client connected during the branch failed its next query: {e}");
    }
    drop(client);

    // The branch's base snapshot is hashed in the background: let it
    // finish so that it does not run into the next measurement.
    let seal_ms = wait_sealed(api, db, name, branched).await?;

    let verified = if opts.verify {
        verify_branch(gw, name).await?
    } else {
        Value::Null
    };

    let t = Instant::now();
    api.call(
        Method::DELETE,
        &format!("/v1/databases/{db}/branches/{name}"),
        None,
    )
    .await?;
    let delete_ms = ms(t.elapsed());

    let left = api.snapshots_of(db, name).await?;
    if !left.is_empty() {
        if let Some(root) = opts.native_root {
            for (id, _) in &left {
                prune_snapshot(root, db, id).with_context(|| format!("removing snapshot {id}"))?;
            }
            let still = api.snapshots_of(db, name).await?;
            if !still.is_empty() {
                bail!("snapshots {still:?} are still listed after removing them");
            }
        }
    }
    eprintln!(
        "  {name}: {}branch {branch_ms:8.1} ms (dirty page cache before: {dirty_mib} MiB)   parent's next query {}   seal {}   delete {delete_ms:7.1} ms{}",
        load_secs.map_or(String::new(), |s| format!("load {s:6.1} s → ")),
        match &parent_after {
            Ok(v) => format!("{v:.1} ms"),
            Err(_) => "FAILED".to_string(),
        },
        seal_ms.map_or("-".to_string(), |v| format!("{:.1} s", v / 1000.0)),
        if left.is_empty() {
            String::new()
        } else {
            format!(
                "   ({} base snapshot(s) left by the delete{})",
                left.len(),
                if opts.native_root.is_some() { ", removed" } else { "" }
            )
        }
    );
    Ok((
        Run {
            branch_ms,
            dirty_mib,
            parent_after,
            seal_ms,
            delete_ms,
            leaked: left.len(),
            load_secs,
        },
        verified,
    ))
}

/// Connects to the parent and checks its compute runs.
async fn connect_parent(api: &Api, gw: &Gateway) -> Result<Client> {
    let client = connect(&gw.url).await.context("connecting to the parent")?;
    select_one(&client).await?;
    let (state, _) = api.compute(&gw.db).await?;
    if state != "running" {
        eprintln!("branch-bench: warning: the parent's compute is \"{state}\", not running, before the branch");
    }
    Ok(client)
}

async fn branch(args: BranchArgs) -> Result<Map<String, Value>> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let gw = &args.gw;
    let api = Api::new(gw)?;
    let opts = |verify| BranchOpts {
        native_root: args.native_root.as_deref(),
        sync_first: args.sync_first.as_deref(),
        verify,
    };
    let mut runs = Vec::with_capacity(args.runs);
    let mut verified = Value::Null;
    for run in 1..=args.runs {
        let name = format!("{}-r{run}", args.prefix);
        let context = || format!("branch run {run} (\"{name}\")");
        if args.quiet_secs > 0.0 {
            // Nothing from this side in that time: the database is idle
            // (its compute running, no client connected).
            tokio::time::sleep(Duration::from_secs_f64(args.quiet_secs)).await;
        }
        // The realistic case: the parent's compute runs, a client is connected.
        let client = connect_parent(&api, gw).await.with_context(context)?;
        let (r, v) = branch_run(
            &api,
            gw,
            &opts(args.verify && run == args.runs),
            client,
            &name,
            None,
        )
        .await
        .with_context(context)?;
        if !v.is_null() {
            verified = v;
        }
        runs.push(r);
    }
    let mut out = summarize(&runs);
    out.insert("synced_first".into(), json!(args.sync_first.is_some()));
    out.insert("quiet_secs".into(), json!(args.quiet_secs));
    out.insert("verified".into(), verified);
    Ok(out)
}

/// RUNS times: a bulk load into a new table on a connection to the parent,
/// and right after its COMMIT returns, on that same connection's database
/// and with nothing in between (no sync, no sleep), the timed branch. The
/// table is dropped after the branch is deleted.
async fn bulk(args: BulkArgs) -> Result<Map<String, Value>> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let gw = &args.gw;
    let api = Api::new(gw)?;
    let opts = BranchOpts {
        native_root: args.native_root.as_deref(),
        sync_first: None,
        verify: false,
    };
    // Same rows as filler (960 bytes of pad), no index: about 1030 bytes a
    // row on disk (tuple header, line pointer, 8 rows in a page).
    let rows = ((args.bulk_bytes as f64 / 1030.0).ceil() as i64).max(1);
    let mut runs = Vec::with_capacity(args.runs);
    let mut loaded_bytes = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let name = format!("{}-r{run}", args.prefix);
        let table = format!("bulk_{}", run);
        let context = || format!("bulk run {run} (\"{name}\", table {table})");
        let client = connect_parent(&api, gw).await.with_context(context)?;
        query(&client, &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (g bigint NOT NULL, pad text NOT NULL)"))
            .await
            .with_context(context)?;
        let t = Instant::now();
        query_within(
            &client,
            &format!("INSERT INTO {table} SELECT g, repeat(md5(g::text), 30) FROM generate_series(1::bigint, {rows}::bigint) g"),
            BATCH_TIMEOUT,
        )
        .await
        .with_context(context)?;
        let load_secs = t.elapsed().as_secs_f64();
        // Right away: the branch, the loading client still connected.
        let (r, _) = branch_run(&api, gw, &opts, client, &name, Some(round1(load_secs)))
            .await
            .with_context(context)?;
        runs.push(r);
        let client = connect(&gw.url).await.with_context(context)?;
        let size: u64 = query_value(
            &client,
            &format!("SELECT pg_total_relation_size('{table}')"),
        )
        .await
        .with_context(context)?;
        loaded_bytes.push(size);
        query(&client, &format!("DROP TABLE {table}"))
            .await
            .with_context(context)?;
        drop(client);
    }
    let mut out = summarize(&runs);
    out.insert("bulk_rows".into(), json!(rows));
    out.insert(
        "bulk_mib".into(),
        json!((loaded_bytes.iter().sum::<u64>() / loaded_bytes.len().max(1) as u64) >> 20),
    );
    out.insert(
        "load_secs_runs".into(),
        json!(runs
            .iter()
            .filter_map(|r| r.load_secs)
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(",")),
    );
    Ok(out)
}

/// The JSON figures of a series of timed branches.
fn summarize(runs: &[Run]) -> Map<String, Value> {
    let branch: Vec<f64> = runs.iter().map(|r| r.branch_ms).collect();
    let delete: Vec<f64> = runs.iter().map(|r| r.delete_ms).collect();
    let seal: Vec<f64> = runs.iter().filter_map(|r| r.seal_ms).collect();
    let parent_fail: Vec<String> = runs
        .iter()
        .filter_map(|r| r.parent_after.as_ref().err().cloned())
        .collect();
    let parent_ok: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.parent_after.as_ref().ok().copied())
        .collect();
    let mut out = Map::new();
    out.insert("runs".into(), json!(runs.len()));
    out.insert("median_ms".into(), json!(round1(median(&branch))));
    out.insert("p50_ms".into(), json!(round1(percentile(&branch, 50.0))));
    out.insert("p99_ms".into(), json!(round1(percentile(&branch, 99.0))));
    out.insert("min_ms".into(), json!(round1(min(&branch))));
    out.insert("max_ms".into(), json!(round1(max(&branch))));
    out.insert(
        "runs_ms".into(),
        json!(branch
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(",")),
    );
    out.insert(
        "dirty_mib_runs".into(),
        json!(runs
            .iter()
            .map(|r| r.dirty_mib.to_string())
            .collect::<Vec<_>>()
            .join(",")),
    );
    out.insert("delete_median_ms".into(), json!(round1(median(&delete))));
    out.insert(
        "seal_max_s".into(),
        if seal.is_empty() {
            Value::Null
        } else {
            json!(round1(max(&seal) / 1000.0))
        },
    );
    out.insert(
        "parent_next_query_max_ms".into(),
        if parent_ok.is_empty() {
            Value::Null
        } else {
            json!(round1(max(&parent_ok)))
        },
    );
    out.insert("parent_failures".into(), json!(parent_fail.len()));
    out.insert(
        "parent_failure".into(),
        json!(parent_fail.first().cloned().unwrap_or_default()),
    );
    out.insert(
        "leaked_snapshots".into(),
        json!(runs.iter().map(|r| r.leaked).sum::<usize>()),
    );
    out
}

/// Waits until the base snapshot of `branch` is sealed; the time since
/// `since` then, or None when the branch has no base snapshot.
async fn wait_sealed(api: &Api, db: &str, branch: &str, since: Instant) -> Result<Option<f64>> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let snaps = api.snapshots_of(db, branch).await?;
        if snaps.is_empty() {
            return Ok(None);
        }
        if snaps.iter().all(|(_, sealed)| *sealed) {
            return Ok(Some(ms(since.elapsed())));
        }
        if Instant::now() > deadline {
            bail!("the base snapshot of \"{branch}\" was not sealed within an hour");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects to `branch` and compares max(g) of `filler` with the parent's.
async fn verify_branch(gw: &Gateway, branch: &str) -> Result<Value> {
    let parent_config = parse_url(&gw.url)?;
    let mut config = parent_config.clone();
    config.dbname(format!("{}@{branch}", gw.db));
    let parent = connect_config(&parent_config).await?;
    let want: i64 = query_value(&parent, "SELECT coalesce(max(g), 0) FROM filler").await?;
    drop(parent);
    let started = Instant::now();
    let client = connect_config(&config)
        .await
        .context("connecting to the branch")?;
    let got: i64 = query_value(&client, "SELECT coalesce(max(g), 0) FROM filler").await?;
    let first_ms = ms(started.elapsed());
    drop(client);
    if got != want {
        bail!("the branch has max(g) = {got}, its parent {want}");
    }
    eprintln!("  verify: branch \"{branch}\" has the parent's rows (max(g) = {got}); its first connect + query {first_ms:.0} ms");
    Ok(json!(format!(
        "max(g) {got} matches; branch wake + query {first_ms:.0} ms"
    )))
}

/// Removes snapshot `id` of `db` (volume and manifest) from the native
/// backend's root.
fn prune_snapshot(root: &Path, db: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.contains('/') || id.contains("..") {
        bail!("unexpected snapshot id {id:?}");
    }
    let dir = root.join("snapshots").join(db);
    let volume = dir.join(id);
    if volume.exists() {
        use std::os::unix::fs::MetadataExt;
        let subvolume = std::fs::symlink_metadata(&volume)
            .map(|m| m.is_dir() && m.ino() == 256)
            .unwrap_or(false);
        let deleted = subvolume
            && std::process::Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(&volume)
                .stdout(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !deleted {
            std::fs::remove_dir_all(&volume)
                .with_context(|| format!("removing {}", volume.display()))?;
        }
    }
    for name in [format!("{id}.json"), format!("{id}.json.partial")] {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------- wake

/// The samples of one cell of the wake matrix.
#[derive(Default)]
struct Cell {
    wake_ms: Vec<f64>,
    query_ms: Vec<f64>,
    hit: u64,
    read: u64,
}

async fn wake(args: WakeArgs) -> Result<Map<String, Value>> {
    if args.wakes == 0 {
        bail!("--wakes must be at least 1");
    }
    let gw = &args.gw;
    let api = Api::new(gw)?;
    let db = &gw.db;

    let client = connect(&gw.url).await.context("connecting")?;
    let shared_buffers: String = query_value(&client, "SHOW shared_buffers").await?;
    // shared_preload_libraries is for superusers to read; the compute's
    // command line (the backend passes its settings as -c) and its
    // background workers are not.
    let leader: i64 = query_value(
        &client,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autoprewarm leader'",
    )
    .await?;
    let cmdline = compute_cmdline(&api, db).await;
    let prewarm = match &cmdline {
        Some(line) => line.contains("shared_preload_libraries=pg_prewarm"),
        None => leader > 0,
    };
    let how = match &cmdline {
        Some(_) if prewarm => "shared_preload_libraries=pg_prewarm on the compute's command line",
        Some(_) => "no pg_prewarm on the compute's command line",
        None if leader > 0 => "an autoprewarm leader in pg_stat_activity",
        None => "no autoprewarm leader in pg_stat_activity",
    };
    // Rows per page from the statistics (the table was analyzed after the fill).
    let rows = query(
        &client,
        "SELECT reltuples::bigint, relpages::bigint FROM pg_class WHERE relname = 'filler'",
    )
    .await?;
    let (tuples, pages) = rows
        .first()
        .and_then(|r| {
            Some((
                r.first()?.as_deref()?.parse::<i64>().ok()?,
                r.get(1)?.as_deref()?.parse::<i64>().ok()?,
            ))
        })
        .ok_or_else(|| anyhow!("table filler not found (run fill first)"))?;
    let max_g: i64 = query_value(&client, "SELECT coalesce(max(g), 0) FROM filler").await?;
    drop(client);
    if tuples <= 0 || pages <= 0 || max_g <= 0 {
        bail!("table filler is empty or not analyzed (reltuples {tuples}, relpages {pages})");
    }
    let per_page = tuples as f64 / pages as f64;
    let hot_rows = ((args.hot_mb * 1024 * 1024 / 8192) as f64 * per_page).round() as i64;
    let hot_rows = hot_rows.clamp(1, max_g);
    let step = (hot_rows / args.lookups.max(1) as i64).max(1);
    let lookups = (hot_rows + step - 1) / step;
    eprintln!(
        "branch-bench: wake of \"{db}\": pg_prewarm {} ({how}), shared_buffers {shared_buffers}; hot set g <= {hot_rows} (~{} MB), first query = {lookups} index lookups (every {step}th row)",
        if prewarm { "loaded" } else { "not loaded" },
        args.hot_mb
    );

    // Reads the hot set through the index, so it lands in shared buffers (a
    // sequential scan of a big table reads through a small ring instead).
    let warm_sql = format!(
        "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
         SELECT count(*), sum(length(pad)) FROM filler WHERE g BETWEEN 1 AND {hot_rows}; COMMIT"
    );
    // The first query; as EXPLAIN ANALYZE (without per-node timing) to read
    // where its pages came from.
    let first_sql = format!(
        "BEGIN; SET LOCAL enable_seqscan = off; \
         EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, COSTS OFF) \
         SELECT sum(length(pad)) FROM filler WHERE g = ANY (ARRAY(SELECT generate_series(1::bigint, {hot_rows}::bigint, {step}::bigint))); COMMIT"
    );

    let os_modes: &[bool] = if args.drop_caches {
        &[false, true]
    } else {
        &[false]
    };
    let mut cells: std::collections::BTreeMap<(bool, bool), Cell> = Default::default();
    for &cold in os_modes {
        let total = args.warmup + 2 * args.wakes;
        for i in 0..total {
            let warmup = i < args.warmup;
            let later = (i - args.warmup.min(i)) % 2 == 1;
            let context = || {
                format!(
                    "wake {} (OS cache {}, query {})",
                    i + 1,
                    if cold { "dropped" } else { "warm" },
                    if later { "later" } else { "right away" }
                )
            };
            let sample = wake_once(&api, gw, &args, cold, later, &warm_sql, &first_sql)
                .await
                .with_context(context)?;
            eprintln!(
                "  {:<7} OS {:<7} query {:<10} wake {:7.1} ms   first query {:8.1} ms   shared hit {} read {}",
                if warmup { "warm-up".to_string() } else { format!("{}", i + 1 - args.warmup) },
                if cold { "dropped" } else { "warm" },
                if later { format!("+{}ms", args.delay_ms) } else { "right away".into() },
                sample.0,
                sample.1,
                sample.2,
                sample.3
            );
            if !warmup {
                let cell = cells.entry((cold, later)).or_default();
                cell.wake_ms.push(sample.0);
                cell.query_ms.push(sample.1);
                cell.hit += sample.2;
                cell.read += sample.3;
            }
        }
    }

    let mut out = Map::new();
    out.insert("prewarm_loaded".into(), json!(prewarm));
    out.insert("shared_buffers".into(), json!(shared_buffers));
    out.insert("hot_rows".into(), json!(hot_rows));
    out.insert("lookups".into(), json!(lookups));
    out.insert("delay_ms".into(), json!(args.delay_ms));
    for &cold in os_modes {
        let os = if cold { "cold" } else { "warm" };
        let mut wake_all = Vec::new();
        for later in [false, true] {
            let Some(cell) = cells.get(&(cold, later)) else {
                continue;
            };
            wake_all.extend_from_slice(&cell.wake_ms);
            let when = if later { "later" } else { "now" };
            out.insert(
                format!("{os}_{when}_q_p50"),
                json!(round1(percentile(&cell.query_ms, 50.0))),
            );
            out.insert(
                format!("{os}_{when}_q_p99"),
                json!(round1(percentile(&cell.query_ms, 99.0))),
            );
            // Pages the query found outside shared buffers, per query.
            let n = cell.query_ms.len().max(1) as u64;
            out.insert(format!("{os}_{when}_read"), json!((cell.read + n / 2) / n));
            out.insert(format!("{os}_{when}_hit"), json!((cell.hit + n / 2) / n));
        }
        out.insert(
            format!("{os}_wake_p50"),
            json!(round1(percentile(&wake_all, 50.0))),
        );
        out.insert(
            format!("{os}_wake_p99"),
            json!(round1(percentile(&wake_all, 99.0))),
        );
        out.insert(format!("{os}_wakes"), json!(wake_all.len()));
    }
    Ok(out)
}

/// The command line of `db`'s running compute (its postmaster), read from
/// /proc with the pid the API reports; None when that does not work.
async fn compute_cmdline(api: &Api, db: &str) -> Option<String> {
    let info = api.get(&format!("/v1/databases/{db}")).await.ok()?;
    let pid = info["compute"]["pid"].as_u64()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// One wake: warm the hot set, suspend, (drop the OS cache), connect +
/// SELECT 1 (timed), (wait), first query (timed). Returns (wake ms, first
/// query ms, shared hit, shared read).
async fn wake_once(
    api: &Api,
    gw: &Gateway,
    args: &WakeArgs,
    cold: bool,
    later: bool,
    warm_sql: &str,
    first_sql: &str,
) -> Result<(f64, f64, u64, u64)> {
    let client = connect(&gw.url)
        .await
        .context("connecting to warm the hot set")?;
    query(&client, warm_sql).await?;
    drop(client);
    api.suspend_and_wait(&gw.db).await?;
    if cold {
        drop_os_cache(args.sync_path.as_deref())?;
    }
    let (state, wakes_before) = api.compute(&gw.db).await?;
    if state != "suspended" {
        bail!("the compute is \"{state}\" before the wake (woken by something else?)");
    }

    let started = Instant::now();
    let client = connect(&gw.url).await.context("connect (the wake)")?;
    select_one(&client).await.context("SELECT 1 (the wake)")?;
    let wake_ms = ms(started.elapsed());
    if later {
        tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
    }
    let started = Instant::now();
    let plan = query(&client, first_sql).await.context("the first query")?;
    let query_ms = ms(started.elapsed());
    drop(client);

    let (_, wakes_after) = api.compute(&gw.db).await?;
    if let (Some(before), Some(after)) = (wakes_before, wakes_after) {
        if after <= before {
            bail!("the connection did not wake the compute (wakes {before} → {after})");
        }
    }
    let (hit, read) = plan_buffers(&plan)
        .ok_or_else(|| anyhow!("no \"Buffers: shared\" line in the plan: {plan:?}"))?;
    Ok((wake_ms, query_ms, hit, read))
}

/// `shared hit=` and `read=` of the plan's first Buffers line (the top node's).
fn plan_buffers(plan: &[Vec<Option<String>>]) -> Option<(u64, u64)> {
    let line = plan
        .iter()
        .filter_map(|r| r.first().cloned().flatten())
        .find(|l| l.trim_start().starts_with("Buffers: shared"))?;
    let field = |key: &str| {
        line.split([' ', ','])
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((field("hit="), field("read=")))
}

/// `sync -f PATH`: writes back the dirty pages of PATH's filesystem.
fn sync_fs(path: &Path) -> Result<()> {
    let status = std::process::Command::new("sync")
        .arg("-f")
        .arg(path)
        .status()
        .context("running sync")?;
    if !status.success() {
        bail!("sync -f {} failed: {status}", path.display());
    }
    Ok(())
}

/// Dirty + Writeback of /proc/meminfo, KiB (0 when unreadable).
fn dirty_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Dirty:") || l.starts_with("Writeback:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn drop_os_cache(sync_path: Option<&Path>) -> Result<()> {
    match sync_path {
        Some(path) => sync_fs(path)?,
        None => {
            let status = std::process::Command::new("sync")
                .status()
                .context("running sync")?;
            if !status.success() {
                bail!("sync failed: {status}");
            }
        }
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("writing /proc/sys/vm/drop_caches (needs root)")
}

// ------------------------------------------------------------------- figures

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Nearest-rank percentile: the ⌈p/100·n⌉-th smallest (0 when empty).
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

fn min(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn root_cause(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 99.0), 20.0);
        assert_eq!(percentile(&s, 50.0), 10.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn buffers_of_a_plan() {
        let plan = |lines: &[&str]| -> Vec<Vec<Option<String>>> {
            lines.iter().map(|l| vec![Some(l.to_string())]).collect()
        };
        let p = plan(&[
            "Aggregate (actual rows=1 loops=1)",
            "  Buffers: shared hit=1990 read=12 dirtied=3",
            "  ->  Index Scan using filler_g on filler (actual rows=2000 loops=1)",
            "        Buffers: shared hit=5",
        ]);
        assert_eq!(plan_buffers(&p), Some((1990, 12)));
        assert_eq!(
            plan_buffers(&plan(&["  Buffers: shared read=7"])),
            Some((0, 7))
        );
        assert_eq!(plan_buffers(&plan(&["Result"])), None);
    }
}
