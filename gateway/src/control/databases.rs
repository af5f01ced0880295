//! The databases service: create, delete, describe, suspend and wake
//! databases on whichever backend holds them, recover after a crash, and
//! tell the gateway's loops which computes to keep warm or suspend. It owns
//! the link from a catalog record to its backend's lifecycle.

use super::operations::Operations;
use super::urls::Urls;
use crate::auth::scram::ScramVerifier;
use crate::catalog::etcd::Fence;
use crate::catalog::{Catalog, DatabaseRecord, DatabaseState, RoleRecord, StandbyPlacement};
use crate::cluster::{Cluster, NodeInfo};
use crate::error::ControlError;
use crate::names;
use crate::pool::{DbPool, Pools};
use crate::wake::Backends;
use ogel_plugin_sdk::{ComputeState, ComputeStatus, DatabaseSpec};
use ogel_policies::{Lifecycle, LifecycleStats};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A database with its compute, as the API and `ogel status` show it.
#[derive(Clone, Debug)]
pub struct DatabaseView {
    /// The catalog record.
    pub record: DatabaseRecord,
    /// The backend's report on its compute.
    pub compute: ComputeStatus,
    /// Client counters.
    pub stats: LifecycleStats,
    /// Effective idle window (`None`: never suspends).
    pub suspend_after: Option<Duration>,
    /// The continuous WAL archive's lag, if the backend keeps one.
    pub archive: Option<ogel_plugin_sdk::ArchiveStatus>,
}

/// What the service needs from the configuration.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// The data dir (the default database's password file lives there).
    pub data_dir: PathBuf,
    /// Backend of databases created without one.
    pub default_backend: String,
    /// The database `ogel up` makes on first start ("" for none).
    pub default_database: String,
    /// Idle window of databases that set none.
    pub suspend_after: Duration,
}

/// Where `ogel up` keeps the default database's password (0600), so each
/// start can print a working URL.
pub fn default_password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("default-database.password")
}

fn new_password() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// The databases service.
pub struct Databases {
    catalog: Catalog,
    backends: Arc<Backends>,
    pools: Arc<Pools>,
    operations: Arc<Operations>,
    urls: Urls,
    settings: DatabaseSettings,
    /// This gateway among the others: which databases it serves and acts for.
    cluster: Arc<Cluster>,
    /// One create or delete at a time (names are checked, then taken).
    create_lock: tokio::sync::Mutex<()>,
}

impl Databases {
    /// The service; [`recover`](Self::recover) must run before serving.
    pub fn new(
        catalog: Catalog,
        backends: Arc<Backends>,
        pools: Arc<Pools>,
        operations: Arc<Operations>,
        urls: Urls,
        settings: DatabaseSettings,
        cluster: Arc<Cluster>,
    ) -> Self {
        Databases {
            catalog,
            backends,
            pools,
            operations,
            urls,
            settings,
            cluster,
            create_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// After a restart: undoes creates a crash interrupted and lets the
    /// lifecycle know about computes that are still running (adopted).
    pub async fn recover(&self) -> Result<(), ControlError> {
        for db in self.catalog.databases()? {
            // Another gateway's databases are its own to recover.
            if !self.is_local(&db) {
                continue;
            }
            let Ok(lifecycle) = self.lifecycle(&db) else {
                tracing::warn!(database = %db.name, backend = %db.backend, "its backend is not loaded; the database is unavailable until it is");
                continue;
            };
            if db.state == DatabaseState::Creating {
                tracing::warn!(database = %db.name, "undoing a create interrupted by a crash");
                lifecycle.backend().delete_database(&db.name).await?;
                self.catalog.remove_database(&db)?;
                continue;
            }
            let mut computes = vec![db.name.clone()];
            computes.extend(self.catalog.branches(&db.name)?.iter().map(|b| b.key()));
            for name in computes {
                // A branch the backend lost is reported, not fatal.
                match lifecycle
                    .backend()
                    .compute_status(&name.as_str().into())
                    .await
                {
                    Ok(status) if status.state == ComputeState::Running => {
                        lifecycle.adopt(&name).await?;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(compute = %name, error = %e, "could not read the compute's state")
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates a database with an owner role `<name>_owner` and a fresh
    /// password, returned once (only its SCRAM verifier is kept).
    pub async fn create(
        &self,
        name: &str,
        backend: Option<&str>,
        suspend_after_secs: Option<u64>,
        min_warm: u32,
        tenant: &str,
    ) -> Result<(DatabaseRecord, String), ControlError> {
        names::validate_database(name)?;
        if !self.catalog.tenant_exists(tenant)? {
            return Err(ControlError::Invalid(format!(
                "tenant \"{tenant}\" does not exist; create it with `ogel tenants create {tenant}`"
            )));
        }
        let backend = backend.unwrap_or(&self.settings.default_backend);
        let lifecycle = self.backend_named(backend)?.clone();
        let _guard = self.create_lock.lock().await;
        if let Some(existing) = self.catalog.database(name)? {
            // A create of this gateway's that did not finish (a catalog
            // write that went unanswered may still have been applied):
            // undone now, under the create lock, like at start-up.
            if existing.state == DatabaseState::Creating && self.is_local(&existing) {
                tracing::warn!(
                    database = name,
                    "undoing an earlier create that did not finish"
                );
                if let Err(e) = lifecycle.backend().delete_database(name).await {
                    tracing::debug!(database = name, error = %e, "nothing of it at the backend");
                }
                self.catalog.remove_database(&existing)?;
            } else {
                return Err(ControlError::AlreadyExists(format!(
                    "database \"{name}\" already exists; pick another name or `ogel db delete {name}` first"
                )));
            }
        }
        let owner = format!("{name}_owner");
        let password = new_password();
        let mut record = DatabaseRecord {
            name: name.to_string(),
            backend: backend.to_string(),
            owner: owner.clone(),
            state: DatabaseState::Creating,
            created_at_unix: names::unix_now(),
            suspend_after_secs,
            min_warm,
            tenant: tenant.to_string(),
            node: self.home(),
            chaos_allowed: false,
            standby: None,
        };
        let role = RoleRecord {
            name: owner.clone(),
            verifier: ScramVerifier::hash_password(&password),
            databases: vec![name.to_string()],
        };
        self.catalog.put_database(&record, &role)?;
        let spec = DatabaseSpec {
            name: name.to_string(),
            owner,
        };
        // Minutes on RDS: listed in GET /v1/operations with the backend's progress.
        let _op = self.operations.start(name, "create database");
        if let Err(e) = lifecycle.backend().create_database(&spec).await {
            tracing::warn!(database = name, error = %e, cause = ?e.source, "create failed; rolling back");
            self.catalog.remove_database(&record)?;
            return Err(e.into());
        }
        record.state = DatabaseState::Ready;
        self.catalog.put_database(&record, &role)?;
        // A backend may leave a new database's compute running: track it so
        // that idle suspend covers it.
        if lifecycle
            .backend()
            .compute_status(&name.into())
            .await?
            .state
            == ComputeState::Running
        {
            lifecycle.adopt(name).await?;
        }
        Ok((record, password))
    }

    /// Restores database `name` from `backend`'s durable store onto this
    /// gateway, which does not know it yet (an empty disk, another
    /// machine), and records it with a fresh password, returned once.
    /// Under the create lock, so the name cannot be taken meanwhile.
    pub async fn restore_new(
        &self,
        spec: &ogel_plugin_sdk::RestoreSpec,
        backend: Option<&str>,
        tenant: &str,
    ) -> Result<(DatabaseRecord, String, ogel_plugin_sdk::Restored), ControlError> {
        names::validate_database(&spec.database)?;
        let backend = backend.unwrap_or(&self.settings.default_backend);
        let lifecycle = self.backend_named(backend)?.clone();
        let _guard = self.create_lock.lock().await;
        if self.catalog.database(&spec.database)?.is_some() {
            return Err(ControlError::AlreadyExists(format!(
                "database \"{}\" exists on this gateway; restore it as a branch (`--as NAME`) instead",
                spec.database
            )));
        }
        let _op = self.operations.start(&spec.database, "restore backup");
        let restored = lifecycle.backend().restore_backup(spec).await?;
        let password = new_password();
        let record = DatabaseRecord {
            name: spec.database.clone(),
            backend: backend.to_string(),
            owner: restored.owner.clone(),
            state: DatabaseState::Ready,
            created_at_unix: names::unix_now(),
            suspend_after_secs: None,
            min_warm: 0,
            tenant: tenant.to_string(),
            node: self.home(),
            chaos_allowed: false,
            standby: None,
        };
        let role = RoleRecord {
            name: restored.owner.clone(),
            verifier: ScramVerifier::hash_password(&password),
            databases: vec![spec.database.clone()],
        };
        self.catalog.put_database(&record, &role)?;
        Ok((record, password, restored))
    }

    /// Deletes a database, its data and its owner role.
    pub async fn delete(&self, name: &str) -> Result<(), ControlError> {
        let _guard = self.create_lock.lock().await;
        let record = self.ready(name)?;
        let branches = self.catalog.branches(name)?;
        self.lifecycle(&record)?.delete(name).await?;
        self.pools.remove(name);
        for branch in branches {
            self.pools.remove(&branch.key());
        }
        self.catalog.remove_database(&record)?;
        Ok(())
    }

    /// Gives the owner role a new password and returns it.
    pub async fn reset_password(&self, name: &str) -> Result<String, ControlError> {
        let record = self.ready(name)?;
        let password = new_password();
        self.catalog.put_role(&RoleRecord {
            name: record.owner.clone(),
            verifier: ScramVerifier::hash_password(&password),
            databases: vec![record.name.clone()],
        })?;
        if record.name == self.settings.default_database {
            let path = default_password_path(&self.settings.data_dir);
            if let Err(e) = ogel_plugin_sdk::files::write_private(&path, password.as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "could not record the default database's new password");
            }
        }
        Ok(password)
    }

    /// The database's record, if it exists and is usable.
    pub fn ready(&self, name: &str) -> Result<DatabaseRecord, ControlError> {
        match self.catalog.database(name)? {
            Some(db) if db.state == DatabaseState::Ready => Ok(db),
            _ => Err(ControlError::no_database(name)),
        }
    }

    /// The connection URL; with the password when it is known.
    pub fn url(&self, record: &DatabaseRecord, password: Option<&str>) -> String {
        self.urls
            .database_on(record, password, &self.cluster.other_addresses())
    }

    /// The effective idle window of a database.
    pub fn suspend_after(&self, record: &DatabaseRecord) -> Option<Duration> {
        let window = record
            .suspend_after_secs
            .map(Duration::from_secs)
            .unwrap_or(self.settings.suspend_after);
        (!window.is_zero()).then_some(window)
    }

    /// Every ready database's computes (main, then branches), with its
    /// lifecycle, for the loops below.
    fn computes(&self) -> Vec<(DatabaseRecord, Arc<Lifecycle>, Vec<String>)> {
        let (databases, branches) = match (self.catalog.databases(), self.catalog.branches("")) {
            (Ok(d), Ok(b)) => (d, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "could not read the catalog for the compute loops");
                return Vec::new();
            }
        };
        databases
            .into_iter()
            .filter(|d| d.state == DatabaseState::Ready)
            .filter_map(|d| {
                let lifecycle = self.lifecycle(&d).ok()?;
                let names = std::iter::once(d.name.clone())
                    .chain(
                        branches
                            .iter()
                            .filter(|b| b.database == d.name)
                            .map(|b| b.key()),
                    )
                    .collect();
                Some((d, lifecycle, names))
            })
            .collect()
    }

    /// Every compute of a backend that can suspend, with its idle window,
    /// for the idle-suspend loop. Branches share their database's window;
    /// the first `min_warm` computes never suspend.
    pub fn idle_policies(&self) -> Vec<(Arc<Lifecycle>, String, Option<Duration>)> {
        self.computes()
            .into_iter()
            .flat_map(|(d, lifecycle, names)| {
                let window = self
                    .suspend_after(&d)
                    .filter(|_| lifecycle.backend().capabilities().suspend);
                let warm = d.min_warm as usize;
                names
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| (lifecycle.clone(), name, window.filter(|_| i >= warm)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Marks database `name` as one `ogel chaos run` may disrupt (or not).
    pub fn set_chaos_allowed(&self, name: &str, allowed: bool) -> Result<(), ControlError> {
        let mut record = self.ready(name)?;
        record.chaos_allowed = allowed;
        self.catalog.update_database(&record)?;
        Ok(())
    }

    /// Every ready database this gateway serves, with its lifecycle.
    pub fn local_databases(&self) -> Vec<(DatabaseRecord, Arc<Lifecycle>)> {
        self.computes()
            .into_iter()
            .map(|(d, lifecycle, _)| (d, lifecycle))
            .collect()
    }

    /// Computes `min_warm` keeps running: each database's first N (main,
    /// then branches).
    pub fn warm_computes(&self) -> Vec<String> {
        self.computes()
            .into_iter()
            .flat_map(|(d, _, names)| names.into_iter().take(d.min_warm as usize))
            .collect()
    }

    /// Whether gateway `name` is a live member of the cluster.
    pub fn gateway_live(&self, name: &str) -> bool {
        self.cluster.node(name).is_some()
    }

    /// Whether several gateways run together.
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_clustered()
    }

    /// What new databases record as their gateway: this one, in a cluster.
    fn home(&self) -> Option<String> {
        self.cluster
            .is_clustered()
            .then(|| self.cluster.name().to_string())
    }

    /// Whether this gateway serves `record` (its disk and computes).
    pub fn is_local(&self, record: &DatabaseRecord) -> bool {
        match &record.node {
            Some(node) => !self.cluster.is_clustered() || node == self.cluster.name(),
            None => true,
        }
    }

    /// The other gateway that serves database `name`, when it is not this
    /// one: `Ok(Some)` while that gateway is up (clients are carried
    /// there), an `Unavailable` error while it is down, `Ok(None)` for a
    /// database of this gateway or one the catalog does not know.
    pub fn served_elsewhere(&self, name: &str) -> Result<Option<NodeInfo>, ControlError> {
        // A gateway alone serves everything: no catalog read on its logins.
        if !self.cluster.is_clustered() {
            return Ok(None);
        }
        let Some(record) = self.catalog.database(name)? else {
            return Ok(None);
        };
        if self.is_local(&record) {
            return Ok(None);
        }
        let node = record.node.as_deref().unwrap_or_default();
        match self.cluster.node(node) {
            Some(info) => Ok(Some(info)),
            None => Err(ControlError::Unavailable(gone(&record))),
        }
    }

    /// Whether this gateway does `record`'s control-plane work now (see
    /// [`Cluster::acts_for`]); `Some(Some(fence))` as the cluster's leader.
    pub fn acts_for(&self, record: &DatabaseRecord) -> Option<Option<Fence>> {
        self.cluster.acts_for(record.node.as_deref())
    }

    /// The lifecycle of a database's backend, on the gateway that serves
    /// it; another gateway's database is a clear "connect there" (57P03).
    pub fn lifecycle(&self, record: &DatabaseRecord) -> Result<Arc<Lifecycle>, ControlError> {
        if !self.is_local(record) {
            let node = record.node.as_deref().unwrap_or_default();
            return Err(ControlError::Unavailable(match self.cluster.node(node) {
                Some(info) => format!(
                    "database \"{}\" is served by gateway {node} (postgres {}); connect there, or list every gateway in the URL (host=a,b,c)",
                    record.name, info.postgres
                ),
                None => gone(record),
            }));
        }
        self.backends.get(&record.backend).cloned().ok_or_else(|| {
            ControlError::Unavailable(format!(
                "database \"{}\" is on backend {}, which is not loaded; see `ogel plugins list`",
                record.name, record.backend
            ))
        })
    }

    /// The lifecycle of backend `name` (default: the default backend).
    pub fn backend_lifecycle(&self, name: Option<&str>) -> Result<Arc<Lifecycle>, ControlError> {
        self.backend_named(name.unwrap_or(&self.settings.default_backend))
            .cloned()
    }

    fn backend_named(&self, name: &str) -> Result<&Arc<Lifecycle>, ControlError> {
        self.backends.get(name).ok_or_else(|| {
            ControlError::Invalid(format!(
                "no backend named \"{name}\" is loaded (loaded: {}); see `ogel plugins list`",
                self.backends.names().join(", ")
            ))
        })
    }

    /// A database with its compute.
    pub async fn describe(&self, name: &str) -> Result<DatabaseView, ControlError> {
        let record = self.ready(name)?;
        self.view(record).await
    }

    async fn view(&self, record: DatabaseRecord) -> Result<DatabaseView, ControlError> {
        if !self.is_local(&record) {
            // Another gateway's: its compute is that gateway's to report.
            return Ok(DatabaseView {
                suspend_after: self.suspend_after(&record),
                record,
                compute: ComputeStatus::default(),
                stats: LifecycleStats::default(),
                archive: None,
            });
        }
        let lifecycle = self.lifecycle(&record)?;
        let compute = lifecycle
            .backend()
            .compute_status(&record.name.as_str().into())
            .await?;
        let stats = lifecycle.stats(&record.name);
        let suspend_after = self.suspend_after(&record);
        // Reported, never fatal to a status read.
        let archive = lifecycle
            .backend()
            .archive_status(&record.name.as_str().into())
            .await
            .ok()
            .flatten();
        Ok(DatabaseView {
            record,
            compute,
            stats,
            suspend_after,
            archive,
        })
    }

    /// Each ready database's continuous WAL archive (backends that keep
    /// one; an unanswered backend is left out).
    pub async fn archive_statuses(&self) -> Vec<(String, ogel_plugin_sdk::ArchiveStatus)> {
        let mut out = Vec::new();
        for record in self.catalog.databases().unwrap_or_default() {
            if record.state != DatabaseState::Ready {
                continue;
            }
            let Ok(lifecycle) = self.lifecycle(&record) else {
                continue;
            };
            if let Ok(Some(status)) = lifecycle
                .backend()
                .archive_status(&record.name.as_str().into())
                .await
            {
                out.push((record.name, status));
            }
        }
        out
    }

    /// Every ready database with its compute.
    pub async fn describe_all(&self) -> Result<Vec<DatabaseView>, ControlError> {
        let mut out = Vec::new();
        for record in self.catalog.databases()? {
            if record.state == DatabaseState::Ready {
                out.push(self.view(record).await?);
            }
        }
        Ok(out)
    }

    /// Suspends a database's compute now.
    pub async fn suspend(&self, name: &str) -> Result<DatabaseView, ControlError> {
        let record = self.ready(name)?;
        let lifecycle = self.lifecycle(&record)?;
        if !lifecycle.backend().capabilities().suspend {
            return Err(ControlError::Unsupported(format!(
                "backend {} cannot suspend its computes; \"{name}\" stays running",
                record.backend
            )));
        }
        lifecycle.suspend(name).await?;
        for pool in self.pools.find_all(name) {
            pool.pool.close_idle();
        }
        self.describe(name).await
    }

    /// Wakes a database's compute now.
    pub async fn wake(&self, name: &str) -> Result<DatabaseView, ControlError> {
        let record = self.ready(name)?;
        self.lifecycle(&record)?.wake(name).await?;
        self.describe(name).await
    }

    /// Wakes a compute (`db` or `db@branch`) unless it runs already.
    pub async fn wake_compute(&self, name: &str) -> Result<(), ControlError> {
        let record = self.ready(&names::split_compute(name).database)?;
        let lifecycle = self.lifecycle(&record)?;
        if !lifecycle.stats(name).running {
            lifecycle.wake(name).await?;
        }
        Ok(())
    }

    /// Whether `branch` of `database` exists (`false` if the catalog cannot
    /// be read: the client is told the branch is unknown).
    pub fn branch_exists(&self, database: &str, branch: &str) -> bool {
        self.catalog
            .branch_exists(database, branch)
            .unwrap_or(false)
    }

    /// The pools of a ready database: its read-write pool (made on first
    /// use) and its read-only one if it has one.
    pub fn pools_of(&self, name: &str) -> Result<Vec<Arc<DbPool>>, ControlError> {
        let record = self.ready(name)?;
        let lifecycle = self.lifecycle(&record)?;
        self.pools.get(name, &lifecycle, false);
        Ok(self.pools.find_all(name))
    }

    /// Stops every compute (gateway shutdown).
    pub async fn suspend_all(&self) {
        for (lifecycle, name, _) in self.idle_policies() {
            if !lifecycle.backend().capabilities().suspend {
                continue;
            }
            if let Err(e) = lifecycle.suspend(&name).await {
                tracing::warn!(database = %name, error = %e, "could not stop compute at shutdown");
            }
        }
        // Standbys held here for another gateway's primaries stop too (the
        // next start has them follow again; meanwhile their primaries'
        // gateways stop waiting for them after a few seconds).
        if !self.cluster.is_clustered() {
            return;
        }
        for record in self.catalog.databases().unwrap_or_default() {
            let held_here = record
                .standby
                .as_ref()
                .is_some_and(|p| p.node.as_deref() == Some(self.cluster.name()));
            if !held_here || self.is_local(&record) {
                continue;
            }
            let Some(lifecycle) = self.backends.get(&record.backend) else {
                continue;
            };
            let name = ogel_plugin_sdk::ComputeName::main(&record.name);
            if let Err(e) = lifecycle.backend().suspend(&name).await {
                tracing::warn!(database = %record.name, error = %e, "could not stop the standby at shutdown");
            }
        }
    }
}

/// What a client of a database whose gateway is down is told.
fn gone(record: &DatabaseRecord) -> String {
    let node = record.node.as_deref().unwrap_or_default();
    match record.standby.as_ref() {
        Some(StandbyPlacement {
            node: Some(standby),
            in_sync: true,
        }) => format!(
            "database \"{}\" is served by gateway {node}, which is down; its standby on gateway {standby} is taking over: retry in a few seconds",
            record.name
        ),
        _ => format!(
            "database \"{}\" is served by gateway {node}, which is down; it is back when {node} is",
            record.name
        ),
    }
}
