//! A Neon control-plane emulator: Neon API v2 (projects, branches,
//! endpoints, roles, databases, operations) with real PostgreSQL behind
//! it, and an SNI proxy like Neon's in front of the computes.
//!
//! Start it in-process with [`serve`] (or as the `neon-emulator` binary,
//! which prints one JSON line when ready):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let emulator = ogel_neon_emulator::serve(ogel_neon_emulator::Config::new(
//!     "/var/tmp/neon-emu".into(),
//!     "secret-key",
//! ))
//! .await?;
//! println!("{}", emulator.ready_line());
//! // ... reqwest against emulator.api_url, psql through emulator.proxy_addr ...
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: `api` (HTTP), `core` (state and operations), `data` (the
//! clusters, through the native backend), `proxy` (the SNI proxy), `tls`
//! (its certificate), `faults` (fault injection), `model` (Neon's JSON).
//! See README.md for the covered API, faults and how clients connect.

mod api;
mod core;
mod data;
pub mod faults;
mod model;
mod proxy;
mod tls;

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How to run the emulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where clusters, the CA and everything else go (created if missing).
    pub data_dir: PathBuf,
    /// Address of the HTTP API (port 0: any free port).
    pub listen: SocketAddr,
    /// Address of the Postgres proxy (port 0: any free port).
    pub proxy_listen: SocketAddr,
    /// API keys accepted as `Authorization: Bearer <key>`.
    pub api_keys: Vec<String>,
    /// Endpoint host names are `<endpoint_id>.<domain>`.
    pub domain: String,
    /// Directory of `postgres`/`initdb`; found as the native backend does when unset.
    pub pg_bin: Option<PathBuf>,
    /// OS user the computes run as when the emulator runs as root.
    pub os_user: String,
    /// What `suspend_timeout_seconds: 0` means (Neon: 300).
    pub default_suspend_timeout_seconds: u64,
    /// How often idle endpoints are looked for.
    pub idle_check_interval: Duration,
    /// The region projects report by default.
    pub region_id: String,
}

impl Config {
    /// Defaults: loopback on free ports, domain `localtest.neon`.
    pub fn new(data_dir: PathBuf, api_key: &str) -> Config {
        Config {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_keys: vec![api_key.to_string()],
            domain: "localtest.neon".into(),
            pg_bin: None,
            os_user: "ogel".into(),
            default_suspend_timeout_seconds: 300,
            idle_check_interval: Duration::from_millis(500),
            region_id: "aws-us-east-2".into(),
        }
    }
}

/// A running emulator. Dropping it stops the servers and every postgres
/// it started; [`RunningEmulator::shutdown`] does the same and waits.
pub struct RunningEmulator {
    /// Base URL of the Neon API, e.g. `http://127.0.0.1:PORT/api/v2`.
    pub api_url: String,
    /// Base URL of the emulator's own endpoints, e.g. `http://127.0.0.1:PORT/_emulator`.
    pub emulator_url: String,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the Postgres proxy listens (clients: `hostaddr` + `port`).
    pub proxy_addr: SocketAddr,
    /// The CA that signed the proxy's certificate (`sslrootcert`).
    pub ca_path: PathBuf,
    /// The same CA, PEM.
    pub ca_pem: String,
    /// Endpoint host names are `<endpoint_id>.<domain>`.
    pub domain: String,
    core: Arc<core::Core>,
    native_root: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl RunningEmulator {
    /// The line the binary prints when ready.
    pub fn ready_line(&self) -> String {
        serde_json::json!({
            "api": self.api_url,
            "emulator": self.emulator_url,
            "proxy": self.proxy_addr.to_string(),
            "ca": self.ca_path,
            "domain": self.domain,
        })
        .to_string()
    }

    /// Stops the servers and every compute (fast shutdown), waiting for them.
    pub async fn shutdown(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.core.stop_all().await;
        let root = self.native_root.clone();
        let _ = tokio::task::spawn_blocking(move || data::stop_all_blocking(&root)).await;
        self.stopped = true;
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        for task in &self.tasks {
            task.abort();
        }
        data::stop_all_blocking(&self.native_root);
    }
}

/// For tests: an emulator on free loopback ports with its data in a new
/// temp dir under /tmp (mode 0755: the compute OS user must reach it),
/// endpoints suspending after 200 ms checks. Drop the emulator before the
/// dir (its computes stop first).
pub async fn serve_in_temp_dir(
    prefix: &str,
    api_key: &str,
) -> anyhow::Result<(RunningEmulator, tempfile::TempDir)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let mut config = Config::new(dir.path().join("emu"), api_key);
    config.idle_check_interval = Duration::from_millis(200);
    Ok((serve(config).await?, dir))
}

/// Starts the emulator: the native backend under `data_dir/native` (the
/// first start runs `initdb` once), the CA and proxy certificate under
/// `data_dir/tls`, the API, the proxy and the idle-suspend loop.
pub async fn serve(config: Config) -> anyhow::Result<RunningEmulator> {
    if config.api_keys.iter().all(|k| k.is_empty()) {
        anyhow::bail!("at least one non-empty API key is needed");
    }
    if config.domain.is_empty() || config.domain.contains(['/', ' ']) {
        anyhow::bail!("invalid domain {:?}", config.domain);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let data_dir = config.data_dir.canonicalize()?;
    let tls = tls::make(&data_dir.join("tls"), &config.domain)?;
    let native_root = data_dir.join("native");
    let data = data::DataPlane::open(&native_root, config.pg_bin.clone(), config.os_user.clone())
        .await
        .context("starting the data plane")?;
    let native_root = native_root.canonicalize()?;
    let settings = core::Settings {
        domain: config.domain.clone(),
        region_id: config.region_id.clone(),
        default_suspend_timeout_seconds: config.default_suspend_timeout_seconds,
        pg_version: data.pg_major(),
    };
    let core = Arc::new(core::Core::new(data, settings));

    let api_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.listen))?;
    let api_addr = api_listener.local_addr()?;
    let proxy_listener = tokio::net::TcpListener::bind(config.proxy_listen)
        .await
        .with_context(|| format!("binding the proxy to {}", config.proxy_listen))?;
    let proxy_addr = proxy_listener.local_addr()?;

    let app = api::router(api::AppState {
        core: core.clone(),
        api_keys: Arc::new(
            config
                .api_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
        ),
    });
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, app).await {
            tracing::error!(error = %e, "the API server stopped");
        }
    }));
    tasks.push(tokio::spawn(proxy::serve(
        proxy_listener,
        core.clone(),
        tls.acceptor.clone(),
    )));
    let idle_core = core.clone();
    let interval = config.idle_check_interval;
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            idle_core.suspend_idle().await;
        }
    }));
    Ok(RunningEmulator {
        api_url: format!("http://{api_addr}/api/v2"),
        emulator_url: format!("http://{api_addr}/_emulator"),
        api_addr,
        proxy_addr,
        ca_path: tls.ca_path,
        ca_pem: tls.ca_pem,
        domain: config.domain,
        core,
        native_root,
        tasks,
        stopped: false,
    })
}
