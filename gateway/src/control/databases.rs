//! The gateway's core: the catalog, the backends behind their lifecycles, the
//! cancel registry, and the operations the HTTP API and `ogel up` share
//! (create, delete, suspend, wake, describe a database).

use crate::auth::scram::ScramVerifier;
use crate::cancel::CancelRegistry;
use crate::catalog::{Catalog, CatalogError, DatabaseRecord, DatabaseState, RoleRecord};
use crate::config::Config;
use crate::error::{api_code, http_status};
use crate::pool::Pools;
use crate::wake::Backends;
use ogel_plugin_sdk::{BackendError, BackendErrorKind, ComputeStatus, DatabaseSpec};
use ogel_policies::{Lifecycle, LifecycleStats};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An error of a gateway operation, for API callers.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// From the backend.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// From the catalog.
    #[error("{0}")]
    Catalog(#[from] CatalogError),
}

impl ServiceError {
    fn kind(&self) -> BackendErrorKind {
        match self {
            ServiceError::Backend(e) => e.kind,
            ServiceError::Catalog(_) => BackendErrorKind::Internal,
        }
    }
    /// HTTP status.
    pub fn status(&self) -> u16 {
        http_status(self.kind())
    }
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        api_code(self.kind())
    }
    fn invalid(message: impl Into<String>) -> Self {
        ServiceError::Backend(BackendError::new(BackendErrorKind::InvalidRequest, message))
    }
    fn not_found(name: &str) -> Self {
        ServiceError::Backend(BackendError::not_found(format!(
            "database \"{name}\" does not exist; see `ogel db list`"
        )))
    }
}

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
}

/// Shared state of a running gateway.
pub struct Gateway {
    /// Configuration in force.
    pub config: Config,
    /// Databases and roles.
    pub catalog: Catalog,
    /// The backends, each with the lifecycle that wakes and suspends its computes.
    pub backends: Backends,
    /// Cancel keys of connected clients.
    pub cancels: Arc<CancelRegistry>,
    /// Key for mock SCRAM verifiers (unknown users).
    pub mock_secret: [u8; 32],
    /// The Postgres listener's address, for URLs.
    pub pg_addr: SocketAddr,
    /// When this gateway started.
    pub started_at: Instant,
    /// Server-connection pools and connected clients.
    pub pools: Arc<Pools>,
    /// Verifier of the admin console's password (the API token).
    pub admin_verifier: Option<ScramVerifier>,
    /// Long operations running now, by compute (`GET /v1/operations`).
    pub operations:
        Arc<std::sync::Mutex<std::collections::BTreeMap<String, (&'static str, Instant)>>>,
    /// TLS for the Postgres listener.
    pub tls: crate::accept::tls::Tls,
    /// Who may connect (`[limits]`).
    pub limits: crate::accept::limits::Limits,
    /// Learns clients' arrival times; pre-wakes computes ahead of them.
    pub predictor: Arc<ogel_policies::warm::Predictor>,
    /// Token signing keys.
    pub keys: crate::auth::tokens::KeyRing,
    /// Where `reload` re-reads the configuration from.
    pub config_source: Option<(std::path::PathBuf, crate::config::Overrides)>,
    create_lock: tokio::sync::Mutex<()>,
}

/// Where `ogel up` keeps the default database's password (0600), so each
/// start can print a working URL.
pub fn default_password_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("default-database.password")
}

/// Database names clients can type in every driver without quoting.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_start || !ok_rest || name.len() > 48 {
        return Err(format!(
            "invalid database name \"{name}\": use 1–48 characters a-z, 0-9 and _, starting with a letter"
        ));
    }
    if matches!(name, "postgres" | "template0" | "template1")
        || crate::admin::is_admin_database(name)
    {
        return Err(format!("\"{name}\" is reserved; choose another name"));
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_password() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

impl Gateway {
    /// Builds the core; `recover` must run before serving.
    pub fn new(
        config: Config,
        catalog: Catalog,
        backends: Backends,
        pg_addr: SocketAddr,
        tls: crate::accept::tls::Tls,
        keys: crate::auth::tokens::KeyRing,
    ) -> Self {
        Gateway {
            tls,
            keys,
            pools: Arc::new(Pools::new(config.pool.clone())),
            operations: Arc::default(),
            limits: crate::accept::limits::Limits::new(config.limits.clone()),
            predictor: Arc::new(ogel_policies::warm::Predictor::new(
                config.prewake.settings(),
            )),
            admin_verifier: None,
            config_source: None,
            config,
            catalog,
            backends,
            cancels: Arc::new(CancelRegistry::default()),
            mock_secret: rand::thread_rng().gen(),
            pg_addr,
            started_at: Instant::now(),
            create_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// After a restart: undoes creates a crash interrupted and lets the
    /// lifecycle know about computes that are still running (adopted).
    pub async fn recover(&self) -> Result<(), ServiceError> {
        for db in self.catalog.databases()? {
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
                    Ok(status) if status.state == ogel_plugin_sdk::ComputeState::Running => {
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
    pub async fn create_database(
        &self,
        name: &str,
        backend: Option<&str>,
        suspend_after_secs: Option<u64>,
        min_warm: u32,
        tenant: &str,
    ) -> Result<(DatabaseRecord, String), ServiceError> {
        validate_name(name).map_err(ServiceError::invalid)?;
        if !self.tenant_exists(tenant)? {
            return Err(ServiceError::invalid(format!(
                "tenant \"{tenant}\" does not exist; create it with `ogel tenants create {tenant}`"
            )));
        }
        let backend = backend.unwrap_or(&self.config.default_backend);
        let lifecycle = self.backend_named(backend)?.clone();
        let _guard = self.create_lock.lock().await;
        if self.catalog.database(name)?.is_some() {
            return Err(ServiceError::Backend(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!("database \"{name}\" already exists; pick another name or `ogel db delete {name}` first"),
            )));
        }
        let owner = format!("{name}_owner");
        let password = new_password();
        let mut record = DatabaseRecord {
            name: name.to_string(),
            backend: backend.to_string(),
            owner: owner.clone(),
            state: DatabaseState::Creating,
            created_at_unix: unix_now(),
            suspend_after_secs,
            min_warm,
            tenant: tenant.to_string(),
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
        let _op = self.operation(name, "create database");
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
            == ogel_plugin_sdk::ComputeState::Running
        {
            lifecycle.adopt(name).await?;
        }
        Ok((record, password))
    }

    /// Deletes a database, its data and its owner role.
    pub async fn delete_database(&self, name: &str) -> Result<(), ServiceError> {
        let _guard = self.create_lock.lock().await;
        let record = self.ready_database(name)?;
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
    pub async fn reset_password(&self, name: &str) -> Result<String, ServiceError> {
        let record = self.ready_database(name)?;
        let password = new_password();
        self.catalog.put_role(&RoleRecord {
            name: record.owner.clone(),
            verifier: ScramVerifier::hash_password(&password),
            databases: vec![record.name.clone()],
        })?;
        if record.name == self.config.default_database {
            let path = default_password_path(&self.config.data_dir);
            if let Err(e) = ogel_plugin_sdk::files::write_private(&path, password.as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "could not record the default database's new password");
            }
        }
        Ok(password)
    }

    /// The database's record, if it exists and is usable.
    pub fn ready_database(&self, name: &str) -> Result<DatabaseRecord, ServiceError> {
        match self.catalog.database(name)? {
            Some(db) if db.state == DatabaseState::Ready => Ok(db),
            _ => Err(ServiceError::not_found(name)),
        }
    }

    /// The connection URL; with the password when it is known.
    pub fn database_url(&self, record: &DatabaseRecord, password: Option<&str>) -> String {
        let credentials = match password {
            Some(p) => format!("{}:{p}", record.owner),
            None => record.owner.clone(),
        };
        format!(
            "postgresql://{credentials}@{}/{}",
            self.host_port(),
            record.name
        )
    }

    /// The effective idle window of a database.
    pub fn suspend_after(&self, record: &DatabaseRecord) -> Option<Duration> {
        let window = record
            .suspend_after_secs
            .map(Duration::from_secs)
            .unwrap_or(self.config.suspend_after);
        (!window.is_zero()).then_some(window)
    }

    /// Every ready database of a backend that can suspend, with its idle
    /// window, for the idle-suspend loop.
    pub fn idle_policies(&self) -> Vec<(Arc<Lifecycle>, String, Option<Duration>)> {
        let branches = self.catalog.branches("").unwrap_or_default();
        match self.catalog.databases() {
            Ok(dbs) => dbs
                .into_iter()
                .filter(|d| d.state == DatabaseState::Ready)
                .filter_map(|d| {
                    let lifecycle = self.lifecycle(&d).ok()?;
                    let window = self
                        .suspend_after(&d)
                        .filter(|_| lifecycle.backend().capabilities().suspend);
                    // Branches share their database's idle window; the
                    // first `min_warm` computes never suspend.
                    let names = std::iter::once(d.name.clone()).chain(
                        branches
                            .iter()
                            .filter(|b| b.database == d.name)
                            .map(|b| b.key()),
                    );
                    let warm = d.min_warm as usize;
                    Some(
                        names
                            .enumerate()
                            .map(|(i, name)| {
                                (lifecycle.clone(), name, window.filter(|_| i >= warm))
                            })
                            .collect::<Vec<_>>(),
                    )
                })
                .flatten()
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "could not read the catalog for idle suspend");
                Vec::new()
            }
        }
    }

    /// The lifecycle of a database's backend.
    pub fn lifecycle(&self, record: &DatabaseRecord) -> Result<Arc<Lifecycle>, ServiceError> {
        self.backends.get(&record.backend).cloned().ok_or_else(|| {
            ServiceError::Backend(BackendError::unavailable(format!(
                "database \"{}\" is on backend {}, which is not loaded; see `ogel plugins list`",
                record.name, record.backend
            )))
        })
    }

    fn backend_named(&self, name: &str) -> Result<&Arc<Lifecycle>, ServiceError> {
        self.backends.get(name).ok_or_else(|| {
            ServiceError::invalid(format!(
                "no backend named \"{name}\" is loaded (loaded: {}); see `ogel plugins list`",
                self.backends.names().join(", ")
            ))
        })
    }

    /// A database with its compute.
    pub async fn describe(&self, name: &str) -> Result<DatabaseView, ServiceError> {
        let record = self.ready_database(name)?;
        self.view(record).await
    }

    async fn view(&self, record: DatabaseRecord) -> Result<DatabaseView, ServiceError> {
        let lifecycle = self.lifecycle(&record)?;
        let compute = lifecycle
            .backend()
            .compute_status(&record.name.as_str().into())
            .await?;
        let stats = lifecycle.stats(&record.name);
        let suspend_after = self.suspend_after(&record);
        Ok(DatabaseView {
            record,
            compute,
            stats,
            suspend_after,
        })
    }

    /// Every ready database with its compute.
    pub async fn describe_all(&self) -> Result<Vec<DatabaseView>, ServiceError> {
        let mut out = Vec::new();
        for record in self.catalog.databases()? {
            if record.state == DatabaseState::Ready {
                out.push(self.view(record).await?);
            }
        }
        Ok(out)
    }

    /// Suspends a database's compute now.
    pub async fn suspend(&self, name: &str) -> Result<DatabaseView, ServiceError> {
        let record = self.ready_database(name)?;
        let lifecycle = self.lifecycle(&record)?;
        if !lifecycle.backend().capabilities().suspend {
            return Err(ServiceError::Backend(BackendError::unsupported(format!(
                "backend {} cannot suspend its computes; \"{name}\" stays running",
                record.backend
            ))));
        }
        lifecycle.suspend(name).await?;
        for pool in self.pools.find_all(name) {
            pool.pool.close_idle();
        }
        self.describe(name).await
    }

    /// Wakes a database's compute now.
    pub async fn wake(&self, name: &str) -> Result<DatabaseView, ServiceError> {
        let record = self.ready_database(name)?;
        self.lifecycle(&record)?.wake(name).await?;
        self.describe(name).await
    }

    /// One line per running backend (versions, paths).
    pub fn backend_description(&self) -> String {
        self.backends
            .plugins
            .iter()
            .filter(|p| p.capabilities.is_some())
            .map(|p| p.status.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The pools of a ready database: its read-write pool (made on first
    /// use) and its read-only one if it has one.
    pub fn pools_of(&self, name: &str) -> Result<Vec<Arc<crate::pool::DbPool>>, ServiceError> {
        let record = self.ready_database(name)?;
        let lifecycle = self.lifecycle(&record)?;
        self.pools.get(name, &lifecycle, false);
        Ok(self.pools.find_all(name))
    }

    /// `ogel reload` / SIGHUP / RELOAD: re-reads the configuration and
    /// applies its `[pool]` section to every pool without dropping a
    /// connection. Other sections take effect at the next `ogel up`.
    pub fn reload(&self) -> Result<(), String> {
        let Some((file, overrides)) = &self.config_source else {
            return Err("this gateway was not started from a configuration file".into());
        };
        let config = Config::load(file, overrides).map_err(|e| format!("configuration: {e}"))?;
        self.tls
            .reload()
            .map_err(|e| format!("TLS certificate: {e:#}; the previous one stays in use"))?;
        tracing::info!(file = %file.display(), "configuration reloaded: [pool] applied, TLS certificate re-read");
        self.pools.reconfigure(config.pool);
        Ok(())
    }

    /// Computes `min_warm` keeps running: each database's first N (main,
    /// then branches).
    pub fn warm_computes(&self) -> Vec<String> {
        let branches = self.catalog.branches("").unwrap_or_default();
        self.catalog
            .databases()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.state == DatabaseState::Ready && d.min_warm > 0)
            .flat_map(|d| {
                std::iter::once(d.name.clone())
                    .chain(
                        branches
                            .iter()
                            .filter(|b| b.database == d.name)
                            .map(|b| b.key()),
                    )
                    .take(d.min_warm as usize)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Wakes a compute (`db` or `db@branch`) unless it runs already.
    pub async fn wake_compute(&self, name: &str) -> Result<(), ServiceError> {
        let record = self.ready_database(&crate::control::branches::split(name).0)?;
        let lifecycle = self.lifecycle(&record)?;
        if !lifecycle.stats(name).running {
            lifecycle.wake(name).await?;
        }
        Ok(())
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["app", "shop", "a1", "my_db"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Shop",
            "a-b",
            "a b",
            "postgres",
            "template1",
            &"x".repeat(49),
            "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
