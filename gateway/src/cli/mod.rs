//! The `ogel` command line: `up` runs the gateway; every other command is
//! a client of the HTTP API, found through `--api`/`OGEL_API`, else the
//! running gateway's `<data-dir>/gateway.json`, else the default address;
//! authenticated with `--admin-token`/`OGEL_TOKEN`, else `<data-dir>/admin-token`.

mod access;
mod backup;
mod chaos;
mod cluster;
pub mod conformance;

use crate::api::branches::{BranchInfo, SnapshotEntry};
use crate::api::{DatabaseCredentials, DatabaseInfo, GatewayStatus, PluginList};
use crate::app::{run_info_path, token_path, RunInfo};
use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// OgelBase: one Postgres endpoint in front of interchangeable backends.
#[derive(Debug, Parser)]
#[command(name = "ogel", version, about)]
pub struct Cli {
    /// Data directory (catalog, secrets, the native backend's clusters).
    #[arg(long, global = true, env = "OGEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP API address (for `up`: where to listen; otherwise: where to connect).
    #[arg(long, global = true, env = "OGEL_API")]
    pub api: Option<String>,
    /// Admin token for the API: the gateway's (default: read from
    /// <data-dir>/admin-token) or a tenant's.
    #[arg(long, global = true, env = "OGEL_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground (Ctrl-C stops it and its computes).
    Up {
        /// Postgres wire listener.
        #[arg(long, env = "OGEL_LISTEN")]
        listen: Option<String>,
        /// Configuration file.
        #[arg(long, env = "OGEL_CONFIG", default_value = "ogel.toml")]
        config: PathBuf,
        /// Join a cluster of gateways through these etcd members
        /// (comma-separated client URLs); the catalog then lives in etcd.
        #[arg(long, value_delimiter = ',')]
        etcd: Option<Vec<String>>,
        /// This gateway's name in the cluster (default: the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// The address other gateways and clients reach this one at.
        #[arg(long)]
        advertise: Option<String>,
    },
    /// Databases.
    #[command(subcommand)]
    Db(DbCommand),
    /// Branches: full, writable, isolated copies of a database. Connect to
    /// one as database `NAME@BRANCH` (or `options=branch=BRANCH`).
    #[command(subcommand)]
    Branch(BranchCommand),
    /// Snapshots of a database's branches (with checksummed manifests).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Backups in the durable store (the native backend's cold tier):
    /// make, list, restore anywhere.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Gateway, databases and computes.
    Status,
    /// Re-read the configuration's [pool] section (sizes, limits, modes)
    /// without dropping connections; SIGHUP does the same.
    Reload,
    /// Backend plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Token URLs issued (`ogel db url NAME --token` mints one).
    #[command(subcommand)]
    Tokens(access::TokensCommand),
    /// Token signing keys (Ed25519): list, rotate, remove.
    #[command(subcommand)]
    Keys(access::KeysCommand),
    /// Tenants: each owns databases, with an admin token scoped to them.
    #[command(subcommand)]
    Tenants(access::TenantsCommand),
    /// Several gateways as one (etcd): status, import of a single catalog.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Fault injection under a writer: kill the primary or the standby,
    /// switch over; prints detection, recovery and writes lost.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
}

/// `ogel plugins …`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Loaded plugins (name, version, ABI, file, capabilities) and refused files.
    List,
    /// Run the conformance suite against a plugin library, through a
    /// throwaway gateway (needs no running gateway).
    Check {
        /// The plugin library (`.so`).
        file: PathBuf,
        /// TOML file with the plugin's configuration section (its keys, no header).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `ogel db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a database; prints its URL (the password is shown only now).
    Create {
        /// Name: a-z, 0-9, _.
        name: String,
        /// Backend to put it on (`ogel plugins list`); default: native.
        #[arg(long)]
        backend: Option<String>,
        /// Idle time before its compute is suspended (e.g. 300s, 5m; 0s = never):
        /// the window a compute is kept warm after its last client.
        #[arg(long, value_parser = humantime::parse_duration)]
        suspend_after: Option<std::time::Duration>,
        /// Keep this many of its computes running at all times (main, then branches).
        #[arg(long, default_value_t = 0)]
        min_warm: u32,
        /// Tenant that owns it (with the gateway's admin token; a tenant's
        /// token creates in its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Keep a hot standby (1) to fail over to; commits wait for it
        /// unless `--async-standby`.
        #[arg(long, default_value_t = 0)]
        standby: u32,
        /// The standby does not confirm commits (faster writes; a failover
        /// may lose the last ones).
        #[arg(long)]
        async_standby: bool,
    },
    /// Show, add or remove a database's hot standby.
    Standby {
        /// Database.
        name: String,
        /// `add` or `remove` (nothing: show it).
        action: Option<String>,
        /// With `add`: the standby does not confirm commits.
        #[arg(long = "async")]
        asynchronous: bool,
    },
    /// Planned switchover to the standby: new transactions wait while the
    /// primary stops and the standby, caught up, is promoted.
    Switchover {
        /// Database.
        name: String,
    },
    /// List databases.
    List,
    /// Print a database's URL; with `--token`, a token URL that needs no
    /// password: `postgresql://<JWT>@host:port/db?sslmode=require`.
    Url {
        /// Database.
        name: String,
        /// Give the owner a new password and print the full URL with it.
        #[arg(long, conflicts_with = "token")]
        reset_password: bool,
        /// Mint a signed token URL (revocable: `ogel tokens revoke ID`).
        #[arg(long = "token")]
        token: bool,
        /// The token's branch (default main).
        #[arg(long, requires = "token")]
        branch: Option<String>,
        /// The token can only read: the backend serves it as a read-only role.
        #[arg(long, requires = "token")]
        read_only: bool,
        /// The token's lifetime, e.g. 30d, 12h (default tokens.default_ttl).
        #[arg(long, requires = "token")]
        ttl: Option<String>,
    },
    /// Move a database's data between tiers: hot (local disk), warm (a
    /// compressed local copy in tiers.warm_dir), cold (only in the cold
    /// tier). A connection to a warm or cold database brings it back.
    Tier {
        /// Database.
        name: String,
        /// hot, warm or cold.
        tier: String,
        /// Branch.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// Stop a database's compute now.
    Suspend {
        /// Database.
        name: String,
    },
    /// Start a database's compute now.
    Wake {
        /// Database.
        name: String,
    },
    /// Let running transactions finish and hold new ones (for maintenance).
    Pause {
        /// Database.
        name: String,
    },
    /// Release clients held by `pause`.
    Resume {
        /// Database.
        name: String,
    },
    /// Delete a database and all its data.
    Delete {
        /// Database.
        name: String,
    },
}

/// `ogel branch …`.
#[derive(Debug, Subcommand)]
pub enum BranchCommand {
    /// Make a branch (prints its URL's form).
    Create {
        /// Database.
        database: String,
        /// New branch name (a-z, 0-9, _, -).
        branch: String,
        /// The branch to start from.
        #[arg(long, default_value = "main")]
        from: String,
        /// now, an LSN (0/16B3740) or a time (RFC 3339, e.g. 2026-11-25T13:00:00Z).
        #[arg(long)]
        at: Option<String>,
        /// Start from this snapshot instead (`ogel snapshot list`).
        #[arg(long, conflicts_with = "at")]
        snapshot: Option<String>,
        /// Delete the branch after this long (e.g. 2h, 30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Accept a slow branch: on backends that copy through a snapshot
        /// (RDS) a branch takes minutes.
        #[arg(long)]
        allow_slow: bool,
    },
    /// List a database's branches.
    List {
        /// Database.
        database: String,
    },
    /// Delete a branch and its data.
    Delete {
        /// Database.
        database: String,
        /// Branch.
        branch: String,
    },
    /// Reset a branch to its parent's current state.
    Reset {
        /// Database.
        database: String,
        /// Branch.
        branch: String,
    },
}

/// `ogel snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot.
    Create {
        /// Database.
        database: String,
        /// Branch.
        #[arg(long, default_value = "main")]
        branch: String,
    },
    /// List a database's snapshots.
    List {
        /// Database.
        database: String,
    },
    /// Restore a snapshot into its branch, or into another one (`--as`).
    Restore {
        /// Database.
        database: String,
        /// Snapshot id.
        snapshot: String,
        /// The branch to replace or create.
        #[arg(long = "as")]
        as_branch: Option<String>,
    },
}

/// A client of the gateway's API.
struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
    /// The gateway's data directory (`ogel chaos` reaches into it).
    data_dir: PathBuf,
}

impl ApiClient {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        let data_dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".ogel"));
        let run_info: Option<RunInfo> = std::fs::read(run_info_path(&data_dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let addr = cli
            .api
            .clone()
            .or_else(|| run_info.map(|r| r.api))
            .unwrap_or_else(|| "127.0.0.1:6480".to_string());
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr
        } else {
            format!("http://{addr}")
        };
        let token = match &cli.admin_token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(token_path(&data_dir))
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "no admin token: pass --admin-token or OGEL_TOKEN, or run where {} is readable (start the gateway with `ogel up --data-dir {}`)",
                        token_path(&data_dir).display(),
                        data_dir.display()
                    )
                })?,
        };
        Ok(ApiClient {
            base,
            token,
            http: reqwest::Client::new(),
            data_dir,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!("could not reach the gateway API at {}: {e}; is `ogel up` running? (set --api or OGEL_API)", self.base)
        })?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{message}");
        }
        let text = if text.is_empty() {
            "null".to_string()
        } else {
            text
        };
        serde_json::from_str(&text).with_context(|| format!("unexpected response from {path}"))
    }

    /// The gateway's `/metrics` text.
    async fn metrics(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(response.error_for_status()?.text().await?)
    }
}

/// Runs a client command.
pub async fn run_client(cli: &Cli) -> anyhow::Result<()> {
    use reqwest::Method;
    if let Command::Cluster(cluster::ClusterCommand::Import {
        etcd,
        node_name,
        prefix,
    }) = &cli.command
    {
        let data_dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".ogel"));
        return cluster::import(&data_dir, etcd, node_name, prefix);
    }
    let api = ApiClient::new(cli)?;
    match &cli.command {
        Command::Up { .. } | Command::Plugins(PluginsCommand::Check { .. }) => {
            unreachable!("`up` and `plugins check` are not API client commands")
        }
        Command::Cluster(cluster::ClusterCommand::Status) => cluster::status(&api).await?,
        Command::Chaos(command) => chaos::run(&api, command).await?,
        Command::Cluster(cluster::ClusterCommand::Import { .. }) => {
            bail!("`ogel cluster import` runs without the API")
        }
        Command::Status => {
            let status: GatewayStatus = api.call(Method::GET, "/v1/status", None).await?;
            println!(
                "gateway  OgelBase {}  up {}s",
                status.version, status.uptime_secs
            );
            println!(
                "         postgres {}  api http://{}",
                status.listen, status.api
            );
            println!("         backend {}", status.backend);
            print_databases(&status.databases);
        }
        Command::Branch(command) => branch_command(&api, command).await?,
        Command::Tokens(command) => access::tokens(&api, command).await?,
        Command::Keys(command) => access::keys(&api, command).await?,
        Command::Tenants(command) => access::tenants(&api, command).await?,
        Command::Snapshot(command) => snapshot_command(&api, command).await?,
        Command::Backup(command) => backup::backup(&api, command).await?,
        Command::Reload => {
            let done: crate::api::Done = api.call(Method::POST, "/v1/reload", None).await?;
            println!("{}", done.done);
        }
        Command::Plugins(PluginsCommand::List) => {
            let list: PluginList = api.call(Method::GET, "/v1/plugins", None).await?;
            for p in &list.plugins {
                println!("{} {} (ABI {}) from {}", p.name, p.version, p.abi, p.file);
                println!("    {}", p.status);
                if let Some(c) = &p.capabilities {
                    println!(
                        "    suspend: {}  branching: {:?}  point in time: {}  snapshots: {}  online snapshot: {}",
                        yes(c.suspend),
                        c.branching,
                        yes(c.point_in_time),
                        yes(c.snapshots),
                        yes(c.online_snapshot)
                    );
                }
            }
            for r in &list.refused {
                println!("refused {}: {}", r.file, r.reason);
            }
        }
        Command::Db(db) => match db {
            DbCommand::Create {
                name,
                backend,
                suspend_after,
                min_warm,
                tenant,
                standby,
                async_standby,
            } => {
                let body = serde_json::json!({
                    "name": name,
                    "backend": backend,
                    "suspend_after_secs": suspend_after.map(|d| d.as_secs()),
                    "min_warm": min_warm,
                    "tenant": tenant,
                });
                let created: DatabaseCredentials = with_progress(
                    &api,
                    name,
                    api.call(Method::POST, "/v1/databases", Some(body)),
                )
                .await?;
                eprintln!(
                    "created database \"{}\" (owner {}); the password is shown only now",
                    created.database.name, created.database.owner
                );
                if *standby > 0 {
                    let body =
                        serde_json::json!({ "count": standby, "synchronous": !async_standby });
                    let info: crate::api::standby::StandbyInfo = with_progress(
                        &api,
                        name,
                        api.call(
                            Method::POST,
                            &format!("/v1/databases/{name}/standby"),
                            Some(body),
                        ),
                    )
                    .await?;
                    print_standby(name, &info);
                }
                println!("{}", created.url);
            }
            DbCommand::Standby {
                name,
                action,
                asynchronous,
            } => {
                let path = format!("/v1/databases/{name}/standby");
                let count = match action.as_deref() {
                    None => None,
                    Some("add") => Some(1),
                    Some("remove") => Some(0),
                    Some(other) => {
                        return Err(anyhow!(
                            "unknown action \"{other}\": use `ogel db standby {name} add` or `… remove`"
                        ))
                    }
                };
                let info: crate::api::standby::StandbyInfo = match count {
                    None => api.call(Method::GET, &path, None).await?,
                    Some(count) => {
                        let body =
                            serde_json::json!({ "count": count, "synchronous": !asynchronous });
                        with_progress(&api, name, api.call(Method::POST, &path, Some(body))).await?
                    }
                };
                print_standby(name, &info);
            }
            DbCommand::Switchover { name } => {
                let done: crate::api::standby::SwitchoverResult = api
                    .call(
                        Method::POST,
                        &format!("/v1/databases/{name}/switchover"),
                        None,
                    )
                    .await?;
                println!(
                    "{name}: the standby is the primary (generation {}); writes paused {} ms",
                    done.generation, done.write_pause_ms
                );
            }
            DbCommand::List => {
                let dbs: Vec<DatabaseInfo> = api.call(Method::GET, "/v1/databases", None).await?;
                print_databases(&dbs);
            }
            DbCommand::Url {
                name,
                reset_password,
                token,
                branch,
                read_only,
                ttl,
            } => {
                if *token {
                    access::mint(&api, name, branch.as_deref(), *read_only, ttl.as_deref()).await?;
                } else if *reset_password {
                    let creds: DatabaseCredentials = api
                        .call(
                            Method::POST,
                            &format!("/v1/databases/{name}/password"),
                            None,
                        )
                        .await?;
                    println!("{}", creds.url);
                } else {
                    let db: DatabaseInfo = api
                        .call(Method::GET, &format!("/v1/databases/{name}"), None)
                        .await?;
                    eprintln!("(the password was shown at creation; `ogel db url {name} --reset-password` prints a URL with a new one)");
                    println!("{}", db.url);
                }
            }
            DbCommand::Tier { name, tier, branch } => {
                let path = format!("/v1/databases/{name}/tier");
                let body = serde_json::json!({ "tier": tier, "branch": branch });
                let compute = crate::names::compute_name(name, branch);
                let started = std::time::Instant::now();
                let info: crate::api::backups::TierInfo =
                    with_progress(&api, &compute, api.call(Method::POST, &path, Some(body)))
                        .await?;
                println!(
                    "{}: {} ({:.1}s)",
                    info.compute,
                    info.tier.as_deref().unwrap_or("-"),
                    started.elapsed().as_secs_f64()
                );
            }
            DbCommand::Suspend { name } => {
                let db: DatabaseInfo = api
                    .call(Method::POST, &format!("/v1/databases/{name}/suspend"), None)
                    .await?;
                println!("{}: {}", db.name, db.compute.state);
            }
            DbCommand::Wake { name } => {
                let db: DatabaseInfo = api
                    .call(Method::POST, &format!("/v1/databases/{name}/wake"), None)
                    .await?;
                println!(
                    "{}: {} (pid {}, port {})",
                    db.name,
                    db.compute.state,
                    opt(db.compute.pid),
                    opt(db.compute.port)
                );
            }
            DbCommand::Pause { name } | DbCommand::Resume { name } => {
                let action = if matches!(db, DbCommand::Pause { .. }) {
                    "pause"
                } else {
                    "resume"
                };
                let done: crate::api::Done = api
                    .call(
                        Method::POST,
                        &format!("/v1/databases/{name}/{action}"),
                        None,
                    )
                    .await?;
                println!("{}", done.done);
            }
            DbCommand::Delete { name } => {
                let _: serde_json::Value = api
                    .call(Method::DELETE, &format!("/v1/databases/{name}"), None)
                    .await?;
                println!("deleted database \"{name}\"");
            }
        },
    }
    Ok(())
}

/// Runs a long API call while showing the operation's progress on
/// `compute` (a bar on a terminal, once the backend reports a size).
async fn with_progress<T>(
    api: &ApiClient,
    compute: &str,
    call: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use crate::api::branches::OperationInfo;
    tokio::pin!(call);
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            result = &mut call => {
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                return result;
            }
            _ = tick.tick() => {
                let Ok(ops) = api.call::<Vec<OperationInfo>>(reqwest::Method::GET, "/v1/operations", None).await else {
                    continue;
                };
                let Some(op) = ops.into_iter().find(|o| o.compute == compute && o.total_bytes > 0) else {
                    continue;
                };
                let bar = bar.get_or_insert_with(|| {
                    let bar = indicatif::ProgressBar::new(op.total_bytes);
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.set_message(format!("{} {}", op.kind, op.compute));
                    bar
                });
                bar.set_position(op.done_bytes);
            }
        }
    }
}

async fn branch_command(api: &ApiClient, command: &BranchCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        BranchCommand::Create {
            database,
            branch,
            from,
            at,
            snapshot,
            ttl,
            allow_slow,
        } => {
            let body = serde_json::json!({
                "name": branch,
                "parent": from,
                "at": at,
                "snapshot": snapshot,
                "ttl_secs": ttl.map(|t| t.as_secs()),
                "allow_slow": allow_slow,
            });
            eprintln!("making branch \"{branch}\" of \"{database}\" from \"{from}\"…");
            let started = std::time::Instant::now();
            let path = format!("/v1/databases/{database}/branches");
            let compute = crate::names::compute_name(database, branch);
            let made: BranchInfo =
                with_progress(api, &compute, api.call(Method::POST, &path, Some(body))).await?;
            eprintln!("done in {:.2}s", started.elapsed().as_secs_f64());
            println!("{}", made.url);
        }
        BranchCommand::List { database } => {
            let list: Vec<BranchInfo> = api
                .call(
                    Method::GET,
                    &format!("/v1/databases/{database}/branches"),
                    None,
                )
                .await?;
            println!(
                "{:<20} {:<12} {:<10} {:>12}  URL",
                "BRANCH", "PARENT", "COMPUTE", "EXPIRES"
            );
            let now = crate::names::unix_now();
            for b in list {
                let expires = b
                    .expires_at_unix
                    .map(|t| format!("in {}s", t.saturating_sub(now)))
                    .unwrap_or_else(|| "-".into());
                let parent = if b.parent.is_empty() {
                    "-".to_string()
                } else {
                    b.parent
                };
                println!(
                    "{:<20} {:<12} {:<10} {:>12}  {}",
                    b.name, parent, b.compute, expires, b.url
                );
            }
        }
        BranchCommand::Delete { database, branch } => {
            let _: serde_json::Value = api
                .call(
                    Method::DELETE,
                    &format!("/v1/databases/{database}/branches/{branch}"),
                    None,
                )
                .await?;
            println!("deleted branch \"{branch}\" of \"{database}\"");
        }
        BranchCommand::Reset { database, branch } => {
            let path = format!("/v1/databases/{database}/branches/{branch}/reset");
            let compute = crate::names::compute_name(database, branch);
            let b: BranchInfo =
                with_progress(api, &compute, api.call(Method::POST, &path, None)).await?;
            println!(
                "reset branch \"{}\" to \"{}\" as it is now",
                b.name, b.parent
            );
        }
    }
    Ok(())
}

async fn snapshot_command(api: &ApiClient, command: &SnapshotCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        SnapshotCommand::Create { database, branch } => {
            let path = format!("/v1/databases/{database}/snapshots");
            let body = serde_json::json!({ "branch": branch });
            let compute = crate::names::compute_name(database, branch);
            let s: SnapshotEntry =
                with_progress(api, &compute, api.call(Method::POST, &path, Some(body))).await?;
            println!("{}", s.id);
        }
        SnapshotCommand::List { database } => {
            let list: Vec<SnapshotEntry> = api
                .call(
                    Method::GET,
                    &format!("/v1/databases/{database}/snapshots"),
                    None,
                )
                .await?;
            println!(
                "{:<32} {:<16} {:>12} {:>12}",
                "SNAPSHOT", "BRANCH", "TAKEN", "SIZE"
            );
            for s in list {
                println!(
                    "{:<32} {:<16} {:>12} {:>12}",
                    s.id,
                    s.branch,
                    s.created_at_unix,
                    opt(s.size_bytes)
                );
            }
        }
        SnapshotCommand::Restore {
            database,
            snapshot,
            as_branch,
        } => {
            let path = format!("/v1/databases/{database}/snapshots/{snapshot}/restore");
            let body = serde_json::json!({ "as": as_branch });
            // The snapshot's own branch unless --as names another.
            let target = as_branch.clone().unwrap_or_else(|| {
                snapshot
                    .rsplit_once('-')
                    .map(|(b, _)| b.to_string())
                    .unwrap_or_default()
            });
            let compute = crate::names::compute_name(database, &target);
            let b: BranchInfo =
                with_progress(api, &compute, api.call(Method::POST, &path, Some(body))).await?;
            println!("restored {snapshot} into branch \"{}\": {}", b.name, b.url);
        }
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

fn print_databases(dbs: &[DatabaseInfo]) {
    println!(
        "{:<16} {:<8} {:<10} {:>8} {:>6} {:>8} {:>7} {:>6} {:>9}  URL",
        "DATABASE", "BACKEND", "COMPUTE", "PID", "PORT", "UPTIME", "CLIENTS", "WAKES", "WAL LAG"
    );
    for db in dbs {
        println!(
            "{:<16} {:<8} {:<10} {:>8} {:>6} {:>8} {:>7} {:>6} {:>9}  {}",
            db.name,
            db.backend,
            db.compute.state,
            opt(db.compute.pid),
            opt(db.compute.port),
            db.compute
                .uptime_secs
                .map(|s| format!("{s}s"))
                .unwrap_or_else(|| "-".into()),
            db.compute.active_clients,
            db.compute.wakes,
            db.archive
                .as_ref()
                .map(|a| format!("{}f/{}s", a.pending_files, a.lag_seconds))
                .unwrap_or_else(|| "-".into()),
            db.url
        );
        if let Some(error) = db.archive.as_ref().and_then(|a| a.last_error.as_ref()) {
            println!("    archive: {error}");
        }
    }
}

/// One line about a database's standby.
fn print_standby(name: &str, info: &crate::api::standby::StandbyInfo) {
    if info.wanted == 0 {
        println!("{name}: no standby (failovers so far: {})", info.failovers);
        return;
    }
    println!(
        "{name}: standby {}/{} streaming, {}, replay lag {}, failovers {}{}",
        info.streaming,
        info.wanted,
        if info.synchronous {
            "synchronous"
        } else {
            "asynchronous"
        },
        info.replay_lag_bytes
            .map(|b| format!("{b} bytes"))
            .unwrap_or_else(|| "-".into()),
        info.failovers,
        info.note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    let Some(health) = &info.health else { return };
    let disk = health
        .disk_full_in_secs
        .map(|s| {
            format!(
                ", disk full in {}",
                humantime::format_duration(std::time::Duration::from_secs(s))
            )
        })
        .unwrap_or_default();
    let fsync = health
        .wal_fsync_ms
        .map(|ms| format!(", WAL fsync {ms} ms"))
        .unwrap_or_default();
    println!(
        "  health: {} crash restart(s) in the window{disk}{fsync}",
        health.restarts
    );
    for warning in &health.warnings {
        println!("  warning: {warning}");
    }
    if let (Some(why), Some(at)) = (
        &health.last_preemptive_switchover,
        health.last_preemptive_switchover_at,
    ) {
        println!("  last switchover before failure (unix {at}): {why}");
    }
}
