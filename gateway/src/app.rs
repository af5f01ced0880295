//! `ogel up`, the composition root: opens the data dir, the catalog and the
//! backends, builds every service with the dependencies it names, binds
//! the Postgres and HTTP listeners, starts the loops (idle suspend, pool
//! upkeep, warm computes, branch TTLs, SIGHUP reload), makes the default
//! database on first start, and runs until Ctrl-C/SIGTERM, when it stops
//! every compute cleanly. Nothing else builds services.

use crate::accept::limits::Limits;
use crate::accept::login::Authenticator;
use crate::accept::tls::Tls;
use crate::accept::{Frontend, FrontendSettings};
use crate::admin::Console;
use crate::api::ApiServices;
use crate::auth::scram::ScramVerifier;
use crate::auth::tokens::KeyRing;
use crate::cancel::CancelRegistry;
use crate::catalog::etcd::{EtcdStore, Fence};
use crate::catalog::{CatalogError, LeaderBeat};
use crate::cluster::{Cluster, NodeInfo};
use crate::config::{Config, Overrides, Reload};
use crate::control::access::Access;
use crate::control::branches::Branches;
use crate::control::databases::{default_password_path, DatabaseSettings, Databases};
use crate::control::operations::Operations;
use crate::control::reload::Reloader;
use crate::control::urls::Urls;
use crate::pool::Pools;
use crate::relay::Parking;
use crate::wake::{self, Backends};
use crate::{accept, api, catalog::Catalog};
use anyhow::{anyhow, bail, Context};
use ogel_plugin_sdk::files::write_private;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::future::IntoFuture;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Written to `<data-dir>/gateway.json` while the gateway runs, so the CLI
/// finds the API (and tests find ports picked with `:0`).
#[derive(Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// Gateway pid.
    pub pid: u32,
    /// Postgres wire address.
    pub listen: String,
    /// HTTP API address.
    pub api: String,
}

/// File names inside the data dir.
pub fn run_info_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.json")
}
/// The admin token's file.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        _ => {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, token.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(token)
        }
    }
}

/// Holds an exclusive lock on the data dir for the gateway's lifetime: two
/// gateways managing the same computes would stop each other's Postgres.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = data_dir.join("gateway.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        let other = std::fs::read(run_info_path(data_dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<RunInfo>(&b).ok())
            .map(|r| format!(" (pid {}, postgres on {})", r.pid, r.listen))
            .unwrap_or_default();
        anyhow!(
            "another `ogel up` is already running on {}{other}; stop it first, or use another --data-dir",
            data_dir.display()
        )
    })
}

async fn bind(addr: &str, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow!("could not listen for {what} on {addr}: {e}; is another `ogel up` running? pick another address with {flag}")
    })
}

/// Raises the open-files limit to the hard limit: every client and every
/// server connection is a descriptor, and the default soft limit (1024)
/// would cap the gateway far below what it can serve.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let target = hard.min(1 << 20);
        if soft < target {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                tracing::warn!(error = %e, soft, "could not raise the open-files limit");
            }
        }
    }
}

/// Runs the gateway until a shutdown signal. `source` is where the
/// configuration came from, for `ogel reload` and SIGHUP.
pub async fn up(config: Config, source: Option<(PathBuf, Overrides)>) -> anyhow::Result<()> {
    raise_open_files_limit();
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    // Traversable but not listable: computes (another OS user) must reach
    // their clusters below; secrets stay 0600.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("setting permissions of {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let config = Config {
        data_dir: data_dir.clone(),
        ..config
    };
    let _lock = lock_data_dir(&data_dir)?;
    let token = load_or_create_token(&data_dir)?;
    let (catalog, etcd) = open_catalog(&config, &data_dir)?;
    if etcd.is_some() {
        crate::cluster::backend_key::share(&catalog, &data_dir.join("native"))?;
    }

    let plugins_dir = config.plugins_dir();
    eprintln!(
        "ogel: loading backend plugins (next to the ogel binary and in {}); the native backend's first start runs initdb once",
        plugins_dir.display()
    );
    let files = wake::plugin_files(&plugins_dir);
    let backends = Backends::load(
        &files,
        &config.backend_configs(),
        config.plugin_call_timeout,
        config.wake_timeout,
        config.tiers.restore_timeout,
    )
    .await;
    for (file, reason) in &backends.refused {
        eprintln!("ogel: plugin {} refused: {reason}", file.display());
    }
    if backends.get(&config.default_backend).is_none() {
        let why = backends
            .plugins
            .iter()
            .find(|p| p.name == config.default_backend)
            .map(|p| p.status.clone())
            .unwrap_or_else(|| {
                format!(
                    "no plugin named {} was found (looked at: {}); build it with `cargo build -p ogel-backend-{}` so that it sits next to the ogel binary, or put it in {}",
                    config.default_backend,
                    if files.is_empty() { "no *.so files".to_string() } else { files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ") },
                    config.default_backend,
                    plugins_dir.display()
                )
            });
        bail!(
            "the default backend {} is not available: {why}",
            config.default_backend
        );
    }

    let pg_listener = bind(&config.listen, "Postgres clients", "--listen").await?;
    let api_listener = bind(&config.api, "the HTTP API", "--api").await?;
    let pg_addr = pg_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;

    let tls = Arc::new(Tls::load(&data_dir, &config.tls).context("setting up TLS")?);
    let ca_pem = tls
        .ca_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok());
    let cluster = join_cluster(
        &config,
        etcd.as_ref(),
        pg_addr,
        api_addr,
        NodeInfo {
            ca_pem,
            admin_token_sha256: Some(crate::control::access::sha256_hex(&token)),
            ..NodeInfo::default()
        },
    )
    .await?;
    let keys = Arc::new(KeyRing::open(&data_dir).context("loading the token signing keys")?);
    let backends = Arc::new(backends);
    let urls = Urls::new(pg_addr);
    let pools = Arc::new(Pools::new(config.pool.clone()));
    let operations = Arc::new(Operations::default());
    let limits = Arc::new(Limits::new(config.limits.clone()));
    let predictor = Arc::new(ogel_policies::warm::Predictor::new(
        config.prewake.settings(),
    ));
    let cancels = Arc::new(CancelRegistry::default());
    let databases = Arc::new(Databases::new(
        catalog.clone(),
        backends.clone(),
        pools.clone(),
        operations.clone(),
        urls,
        DatabaseSettings {
            data_dir: data_dir.clone(),
            default_backend: config.default_backend.clone(),
            default_database: config.default_database.clone(),
            suspend_after: config.suspend_after,
        },
        cluster.clone(),
    ));
    let branches = Arc::new(Branches::new(
        databases.clone(),
        catalog.clone(),
        pools.clone(),
        operations.clone(),
    ));
    let backups = Arc::new(crate::control::backups::Backups::new(
        databases.clone(),
        catalog.clone(),
        operations.clone(),
    ));
    let tiers = Arc::new(crate::control::tiers::Tiers::new(
        databases.clone(),
        pools.clone(),
        operations.clone(),
    ));
    let placement = crate::control::placement::Placement::new(
        databases.clone(),
        catalog.clone(),
        cluster.clone(),
        token.clone(),
    );
    let standbys = Arc::new(crate::control::standby::Standbys::new(
        databases.clone(),
        pools.clone(),
        placement.clone(),
    ));
    let access = Arc::new(Access::new(
        catalog.clone(),
        databases.clone(),
        keys,
        config.tokens.clone(),
        config.limits.clients_per_tenant,
        urls,
    ));
    // TLS first: a certificate that does not load keeps the old [pool] too.
    let parking = Arc::new(Parking::new(config.pool.park_idle_after));
    let reloader = Arc::new(Reloader::new(
        source,
        vec![
            tls.clone() as Arc<dyn Reload>,
            pools.clone(),
            parking.clone(),
        ],
    ));
    let console = Arc::new(Console::new(
        pools.clone(),
        databases.clone(),
        reloader.clone(),
    ));
    let console_verifier = ScramVerifier::parse(&ScramVerifier::hash_password(&token)).ok();
    let frontend = Arc::new(Frontend::new(
        FrontendSettings {
            auth_timeout: config.auth_timeout,
            startup_packet_max_bytes: config.startup_packet_max_bytes,
            token_password_user: config.tokens.password_user.clone(),
        },
        tls.clone(),
        limits.clone(),
        cancels,
        Authenticator::new(
            catalog.clone(),
            databases.clone(),
            access.clone(),
            limits,
            console_verifier,
        ),
        databases.clone(),
        access.clone(),
        pools.clone(),
        predictor.clone(),
        console,
        parking,
    ));
    databases
        .recover()
        .await
        .map_err(|e| anyhow!("recovering the catalog: {e}"))?;

    let default_url =
        ensure_default_database(&databases, &config.default_database, &data_dir).await?;

    let info = RunInfo {
        pid: std::process::id(),
        listen: pg_addr.to_string(),
        api: api_addr.to_string(),
    };
    // Written whole, then renamed: a reader never sees half a file.
    let partial = data_dir.join("gateway.json.partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(&info)?)?;
    std::fs::rename(&partial, run_info_path(&data_dir))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let pg_task = tokio::spawn(accept::serve(
        pg_listener,
        frontend,
        stopped(stop_rx.clone()),
    ));
    let app = api::router(ApiServices {
        databases: databases.clone(),
        branches: branches.clone(),
        backups: backups.clone(),
        tiers: tiers.clone(),
        standbys: standbys.clone(),
        access,
        pools: pools.clone(),
        backends: backends.clone(),
        operations,
        reloader: reloader.clone(),
        predictor: predictor.clone(),
        catalog: catalog.clone(),
        token,
        pg_addr,
        api_addr,
        started_at: std::time::Instant::now(),
        cluster: cluster.clone(),
    });
    let api_task = tokio::spawn(
        axum::serve(api_listener, app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let idle_databases = databases.clone();
    let idle_task = tokio::spawn(ogel_policies::scale_to_zero::run(
        move || idle_databases.idle_policies(),
        stopped(stop_rx.clone()),
    ));

    let pool_task = tokio::spawn(pools.clone().maintain());
    let (warm_keep, warm_wake) = (databases.clone(), databases.clone());
    let prewake = config.prewake.enabled;
    let warm_task = tokio::spawn(ogel_policies::warm::run(
        predictor.clone(),
        move || warm_keep.warm_computes(),
        move |name: String| {
            let databases = warm_wake.clone();
            async move { databases.wake_compute(&name).await }
        },
        prewake,
        stopped(stop_rx.clone()),
    ));
    let (ttl_list, ttl_delete) = (branches.clone(), branches.clone());
    let ttl_task = tokio::spawn(ogel_policies::ttl_reaper::run(
        ogel_policies::ttl_reaper::CHECK_INTERVAL,
        move || ttl_list.expired_branches(),
        move |(database, branch, fence): (String, String, Option<Fence>)| {
            let branches = ttl_delete.clone();
            async move {
                crate::cluster::fenced(fence, branches.delete_branch(&database, &branch)).await
            }
        },
        stopped(stop_rx.clone()),
    ));
    let backup_task = tokio::spawn(backups.clone().run_schedule(
        config.backup.clone(),
        config.backup.check_interval(),
        stopped(stop_rx.clone()),
    ));
    let tier_task = tokio::spawn(tiers.clone().run_policy(
        config.tiers.clone(),
        config.tiers.check_interval(),
        stopped(stop_rx.clone()),
    ));
    let disk_task = tokio::spawn(crate::control::disk::run(
        data_dir.to_path_buf(),
        stopped(stop_rx.clone()),
    ));
    let failover_task = tokio::spawn(
        standbys
            .clone()
            .run_watch(config.failover.clone(), stopped(stop_rx.clone())),
    );
    let placement_task = tokio::spawn(placement.run(stopped(stop_rx.clone())));
    let cluster_task = tokio::spawn(beat_as_leader(
        cluster.clone(),
        catalog.clone(),
        databases.clone(),
        config.cluster.lease_ttl / 4,
        stopped(stop_rx.clone()),
    ));
    let sighup_reloader = reloader.clone();
    let reload_task = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = sighup_reloader.reload() {
                tracing::warn!(error = %e, "SIGHUP: reload failed; the previous configuration stays");
            }
        }
    });

    println!("OgelBase {} is up", env!("CARGO_PKG_VERSION"));
    println!(
        "  postgres: {pg_addr}    api: http://{api_addr}    data: {}",
        data_dir.display()
    );
    println!("  backend:  {}", backends.description());
    if cluster.is_clustered() {
        let view = cluster.view();
        println!(
            "  cluster:  node {} ({:?}; leader {}) through etcd {}",
            cluster.name(),
            view.role,
            view.leader.as_deref().unwrap_or("not yet elected"),
            config.cluster.etcd.join(",")
        );
    }
    if let Some(url) = default_url {
        println!("  database \"{}\": {url}", config.default_database);
    }
    if let Some(ca) = &tls.ca_file {
        println!(
            "  tls:      sslmode=require, or sslmode=verify-full sslrootcert={} (host localhost or 127.0.0.1)",
            ca.display()
        );
    }
    println!(
        "  admin:    psql postgresql://{}@{pg_addr}/ogel (password: the API token in {})",
        crate::names::ADMIN_USER,
        token_path(&data_dir).display()
    );
    println!("  try: psql \"<url above>\"   |   ogel status   |   Ctrl-C stops the gateway and its computes");

    wait_for_signal().await;
    eprintln!("ogel: stopping: suspending computes cleanly");
    let _ = stop_tx.send(true);
    let _ = pg_task.await;
    let _ = api_task.await;
    let _ = idle_task.await;
    let _ = ttl_task.await;
    let _ = backup_task.await;
    let _ = tier_task.await;
    let _ = failover_task.await;
    let _ = disk_task.await;
    let _ = cluster_task.await;
    let _ = placement_task.await;
    let _ = warm_task.await;
    pool_task.abort();
    reload_task.abort();
    databases.suspend_all().await;
    let _ = std::fs::remove_file(run_info_path(&data_dir));
    Ok(())
}

/// The catalog: in etcd with `[cluster] etcd` (then also the store, whose
/// fence the cluster sets), else the embedded file.
fn open_catalog(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<(Catalog, Option<Arc<EtcdStore>>)> {
    if !config.cluster.enabled() {
        return Ok((Catalog::open(&data_dir.join("catalog.redb"))?, None));
    }
    let store = tokio::task::block_in_place(|| {
        EtcdStore::connect(
            &config.cluster.etcd,
            &config.cluster.prefix,
            config.cluster.etcd_timeout,
        )
    })
    .map_err(|e| anyhow!("the cluster's catalog: {}", crate::error::chain(&e)))?;
    let store = Arc::new(store);
    Ok((Catalog::over(store.clone()), Some(store)))
}

/// This gateway's place among the others: joined through etcd (refused if
/// its name is taken), or alone.
async fn join_cluster(
    config: &Config,
    etcd: Option<&Arc<EtcdStore>>,
    pg_addr: std::net::SocketAddr,
    api_addr: std::net::SocketAddr,
    published: NodeInfo,
) -> anyhow::Result<Arc<Cluster>> {
    let name = config.cluster.node_name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "ogel".into())
    });
    let Some(store) = etcd else {
        return Ok(Cluster::single(&name));
    };
    let host = config
        .cluster
        .advertise
        .clone()
        .unwrap_or_else(|| pg_addr.ip().to_string());
    let info = NodeInfo {
        name,
        postgres: format!("{host}:{}", pg_addr.port()),
        api: format!("{host}:{}", api_addr.port()),
        pid: std::process::id(),
        ..published
    };
    let fenced_store = store.clone();
    Cluster::join(
        info,
        store.client_handle(),
        config.cluster.lease_ttl,
        Box::new(move |fence| fenced_store.set_fence(fence)),
    )
    .await
    .map_err(|e| anyhow!("{e}"))
}

/// The leader's beat (so a deposed leader's late writes are seen refused),
/// and this node's load for the others, every `every`.
async fn beat_as_leader(
    cluster: Arc<Cluster>,
    catalog: Catalog,
    databases: Arc<Databases>,
    every: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    if !cluster.is_clustered() {
        return;
    }
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(every.max(std::time::Duration::from_millis(50)));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let (mut running, mut clients) = (0, 0);
        for (lifecycle, name, _) in databases.idle_policies() {
            let stats = lifecycle.stats(&name);
            running += usize::from(stats.running);
            clients += stats.active_clients;
        }
        cluster.set_load(running, clients);
        let Some(fence) = cluster.leader_fence() else {
            continue;
        };
        let beat = LeaderBeat {
            node: cluster.name().to_string(),
            generation: fence.create_revision,
            at_unix_ms: ogel_plugin_kit::time::unix_millis(),
        };
        let written =
            crate::catalog::etcd::with_fence(fence, async { catalog.put_leader_beat(&beat) }).await;
        match written {
            Ok(()) => {}
            Err(CatalogError::Fenced { .. }) => {
                cluster.note_fenced();
                tracing::warn!(
                    generation = beat.generation,
                    "a late leader beat was refused: another gateway leads now"
                );
            }
            Err(e) => tracing::debug!(error = %e, "leader beat not written"),
        }
    }
}

/// Creates the default database on first start and returns its URL. Its
/// password is kept in a 0600 file so later starts can
/// print a working URL too; the catalog itself holds only the verifier.
async fn ensure_default_database(
    databases: &Databases,
    name: &str,
    data_dir: &Path,
) -> anyhow::Result<Option<String>> {
    if name.is_empty() {
        return Ok(None);
    }
    let path = default_password_path(data_dir);
    match databases.ready(name) {
        Ok(record) => {
            let password = std::fs::read_to_string(&path).ok();
            Ok(Some(
                databases.url(&record, password.as_deref().map(str::trim)),
            ))
        }
        Err(_) => {
            eprintln!("ogel: creating the default database \"{name}\"");
            let (record, password) = databases
                .create(name, None, None, 0, crate::catalog::DEFAULT_TENANT)
                .await
                .map_err(|e| anyhow!("creating the default database \"{name}\": {e}"))?;
            let url = databases.url(&record, Some(&password));
            write_private(&path, password.as_bytes())?;
            Ok(Some(url))
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
