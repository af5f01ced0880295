//! Backups as the gateway offers them: made, listed and restored through
//! the database's backend (the native one keeps them in the cold tier),
//! with the compute held awake while a backup runs, a branch being
//! restored held exclusively (no client is handed it meanwhile), and a
//! database the gateway does not know — a restore onto an empty disk —
//! recorded in the catalog once the backend has brought it back.

use super::databases::Databases;
use super::operations::Operations;
use crate::catalog::{BranchRecord, Catalog, DatabaseRecord};
use crate::config::BackupConfig;
use crate::error::ControlError;
use crate::names::{self, compute_name, unix_now};
use ogel_plugin_sdk::{ArchiveStatus, BackendErrorKind, BackupInfo, RestoreSpec, RestoreTarget};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Reads `--at` of a restore: empty or `latest`, an LSN or a time.
pub fn parse_target(at: Option<&str>) -> RestoreTarget {
    match at.map(str::trim) {
        None | Some("") | Some("latest") => RestoreTarget::Latest,
        Some(at) if at.contains('/') && !at.contains(['-', ':']) => RestoreTarget::Lsn {
            lsn: at.to_string(),
        },
        Some(at) => RestoreTarget::Timestamp { at: at.to_string() },
    }
}

/// What a restore did.
pub enum RestoreOutcome {
    /// Into a branch of a database this gateway has.
    Branch(BranchRecord),
    /// A database this gateway did not have, with its new password.
    Database(DatabaseRecord, String),
}

/// The backups service.
pub struct Backups {
    databases: Arc<Databases>,
    catalog: Catalog,
    operations: Arc<Operations>,
}

impl Backups {
    /// The service.
    pub fn new(databases: Arc<Databases>, catalog: Catalog, operations: Arc<Operations>) -> Self {
        Backups {
            databases,
            catalog,
            operations,
        }
    }

    fn check_branch(&self, database: &str, branch: &str) -> Result<(), ControlError> {
        if branch != "main" && !self.databases.branch_exists(database, branch) {
            return Err(ControlError::NotFound(format!(
                "database \"{database}\" has no branch \"{branch}\"; see `ogel branch list {database}`"
            )));
        }
        Ok(())
    }

    /// Makes a backup of a branch (its compute is woken and kept awake).
    pub async fn create(
        &self,
        database: &str,
        branch: &str,
        full: bool,
    ) -> Result<BackupInfo, ControlError> {
        let record = self.databases.ready(database)?;
        self.check_branch(database, branch)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let name = compute_name(database, branch);
        let (_endpoint, _awake) = lifecycle.connect(&name).await?;
        let _op = self.operations.start(&name, "backup");
        Ok(lifecycle
            .backend()
            .create_backup(database, branch, full)
            .await?)
    }

    /// The backups of a database. One this gateway does not know is looked
    /// for in `backend`'s store (default: the default backend's).
    pub async fn list(
        &self,
        database: &str,
        backend: Option<&str>,
    ) -> Result<Vec<BackupInfo>, ControlError> {
        let lifecycle = match self.catalog.database(database)? {
            Some(record) => self.databases.lifecycle(&record)?,
            None => self.databases.backend_lifecycle(backend)?,
        };
        Ok(lifecycle.backend().list_backups(database).await?)
    }

    /// Restores a branch from its backups (and the archived WAL after
    /// them) into `spec.as_branch`, or the database itself onto this
    /// gateway when it does not have it.
    pub async fn restore(
        &self,
        spec: RestoreSpec,
        backend: Option<&str>,
        tenant: &str,
    ) -> Result<RestoreOutcome, ControlError> {
        names::validate_database(&spec.database)?;
        names::validate_branch(&spec.branch)?;
        if let Some(branch) = &spec.as_branch {
            names::validate_branch(branch)?;
        }
        let Some(record) = self.catalog.database(&spec.database)? else {
            if spec.as_branch.as_deref().is_some_and(|b| b != "main") {
                return Err(ControlError::NotFound(format!(
                    "database \"{}\" is not on this gateway: restore it first (without --as), then branches of it",
                    spec.database
                )));
            }
            let (record, password, _) = self.databases.restore_new(&spec, backend, tenant).await?;
            return Ok(RestoreOutcome::Database(record, password));
        };
        let record = self.databases.ready(&record.name)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let target = spec
            .as_branch
            .clone()
            .unwrap_or_else(|| spec.branch.clone());
        let name = compute_name(&spec.database, &target);
        let _op = self.operations.start(&name, "restore backup");
        let call = spec.clone();
        lifecycle
            .exclusive(&name, "restore a backup", move |backend| async move {
                backend.restore_backup(&call).await
            })
            .await?;
        let branch = match self.catalog.branch(&spec.database, &target)? {
            Some(r) => r,
            None if target == "main" => {
                return Ok(RestoreOutcome::Branch(
                    self.catalog
                        .branches(&spec.database)?
                        .into_iter()
                        .find(|b| b.name == "main")
                        .unwrap_or(BranchRecord {
                            database: spec.database.clone(),
                            name: "main".into(),
                            parent: String::new(),
                            created_at_unix: record.created_at_unix,
                            expires_at_unix: None,
                        }),
                ))
            }
            None => {
                let r = BranchRecord {
                    database: spec.database.clone(),
                    name: target.clone(),
                    parent: spec.branch.clone(),
                    created_at_unix: unix_now(),
                    expires_at_unix: None,
                };
                self.catalog.put_branch(&r)?;
                r
            }
        };
        Ok(RestoreOutcome::Branch(branch))
    }

    /// Makes the backups `config`'s schedule says are due, every `check`,
    /// until `stop` resolves. A database's last backups are read from its
    /// backend once, then remembered; a backend without backups is left
    /// alone; a failure is logged and retried at the next check.
    pub async fn run_schedule(
        self: Arc<Self>,
        config: BackupConfig,
        check: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // Database → (last backup, last full backup), Unix seconds.
        let mut last: HashMap<String, (u64, u64)> = HashMap::new();
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(check) => {}
            }
            let Ok(databases) = self.catalog.databases() else {
                continue;
            };
            for record in databases {
                // Its gateway's work (or the leader's, that gateway gone).
                let Some(fence) = self.databases.acts_for(&record) else {
                    continue;
                };
                let schedule = config.schedule(&record.name);
                let Some(every) = schedule.every else {
                    continue;
                };
                if self.databases.ready(&record.name).is_err() {
                    continue;
                }
                let (any, full) = match last.get(&record.name) {
                    Some(times) => *times,
                    None => match self.list(&record.name, None).await {
                        Ok(list) => {
                            let times = (
                                list.iter().map(|b| b.finished_at_unix).max().unwrap_or(0),
                                list.iter()
                                    .filter(|b| b.kind == ogel_plugin_sdk::BackupKind::Full)
                                    .map(|b| b.finished_at_unix)
                                    .max()
                                    .unwrap_or(0),
                            );
                            last.insert(record.name.clone(), times);
                            times
                        }
                        Err(ControlError::Backend(e))
                            if e.kind == BackendErrorKind::Unsupported =>
                        {
                            // Never due: this backend keeps no backups.
                            last.insert(record.name.clone(), (u64::MAX, u64::MAX));
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(database = %record.name, error = %e, "scheduled backup: could not list its backups");
                            continue;
                        }
                    },
                };
                let now = unix_now();
                if any != u64::MAX && now.saturating_sub(any) >= every.as_secs() {
                    let full = schedule
                        .full_every
                        .is_some_and(|f| now.saturating_sub(full) >= f.as_secs());
                    let made =
                        crate::cluster::fenced(fence, self.create(&record.name, "main", full));
                    match made.await {
                        Ok(b) => {
                            tracing::info!(database = %record.name, backup = %b.id, kind = ?b.kind, "scheduled backup made");
                            let entry = last.entry(record.name.clone()).or_default();
                            entry.0 = b.finished_at_unix;
                            if b.kind == ogel_plugin_sdk::BackupKind::Full {
                                entry.1 = b.finished_at_unix;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(database = %record.name, error = %e, "scheduled backup failed; retried at the next check")
                        }
                    }
                }
            }
        }
    }

    /// How far behind the continuous archive of a branch is.
    pub async fn archive_status(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<Option<ArchiveStatus>, ControlError> {
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        Ok(lifecycle
            .backend()
            .archive_status(&compute_name(database, branch).as_str().into())
            .await?)
    }
}
