//! Branches and snapshots as the gateway offers them for every backend:
//! checks against the backend's capabilities, the catalog's branch records
//! (with TTLs), and the care a branch operation needs around live clients —
//! the parent's pool is paused when the backend cannot snapshot a running
//! compute atomically (it stops it briefly), and a branch being replaced is
//! held exclusively so no client is handed its compute meanwhile.
//!
//! A branch's compute is named `database@branch` everywhere below the
//! gateway (lifecycles, pools, backends); `main` is the database itself.

use crate::catalog::BranchRecord;
use crate::control::databases::{unix_now, Gateway, ServiceError};
use ogel_plugin_sdk::{
    BackendError, BackendErrorKind, BranchPoint, BranchSpec, Branching, ComputeName, SnapshotInfo,
};
use std::time::Duration;

/// The compute name of a branch ([`ComputeName`]'s text form).
pub fn compute_name(database: &str, branch: &str) -> String {
    ComputeName::new(database, branch).to_string()
}

/// Splits `shop@dev` into (`shop`, `dev`); a plain name is its `main`
/// ([`ComputeName::parse`]).
pub fn split(name: &str) -> (String, String) {
    let ComputeName { database, branch } = ComputeName::parse(name);
    (database, branch)
}

/// Branch names: like database names, plus `-`.
pub fn validate_branch_name(name: &str) -> Result<(), String> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_start || !ok_rest || name.len() > 48 {
        return Err(format!(
            "invalid branch name \"{name}\": use 1–48 characters a-z, 0-9, _ and -, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Reads `--at`: `now`, an LSN (`0/16B3740`) or a time (RFC 3339).
pub fn parse_point(at: Option<&str>, snapshot: Option<&str>) -> BranchPoint {
    if let Some(id) = snapshot {
        return BranchPoint::Snapshot { id: id.to_string() };
    }
    match at.map(str::trim) {
        None | Some("") | Some("now") => BranchPoint::Now,
        Some(at) if at.contains('/') && !at.contains(['-', ':']) => BranchPoint::Lsn {
            lsn: at.to_string(),
        },
        Some(at) => BranchPoint::Timestamp { at: at.to_string() },
    }
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::Backend(BackendError::new(BackendErrorKind::InvalidRequest, message))
}

fn no_branch(database: &str, branch: &str) -> ServiceError {
    ServiceError::Backend(BackendError::not_found(format!(
        "database \"{database}\" has no branch \"{branch}\"; see `ogel branch list {database}`"
    )))
}

/// An operation listed in `GET /v1/operations` while it runs.
pub struct OperationGuard {
    operations: std::sync::Arc<
        std::sync::Mutex<std::collections::BTreeMap<String, (&'static str, std::time::Instant)>>,
    >,
    compute: String,
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.compute);
    }
}

impl Gateway {
    /// Lists `kind` on `compute` as running until the guard is dropped.
    pub fn operation(&self, compute: &str, kind: &'static str) -> OperationGuard {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(compute.to_string(), (kind, std::time::Instant::now()));
        OperationGuard {
            operations: self.operations.clone(),
            compute: compute.to_string(),
        }
    }

    /// Whether `branch` of `database` exists (`main` always does).
    pub fn branch_exists(&self, database: &str, branch: &str) -> Result<bool, ServiceError> {
        Ok(branch == "main" || self.catalog.branch(database, branch)?.is_some())
    }

    /// The branches of a database, `main` first.
    pub fn branches(&self, database: &str) -> Result<Vec<BranchRecord>, ServiceError> {
        let record = self.ready_database(database)?;
        let mut out = vec![BranchRecord {
            database: database.to_string(),
            name: "main".into(),
            parent: String::new(),
            created_at_unix: record.created_at_unix,
            expires_at_unix: None,
        }];
        out.extend(self.catalog.branches(database)?);
        Ok(out)
    }

    /// Runs `op` with the pool of compute `name` paused when `quiesce` (its
    /// compute may be stopped for a consistent copy): running transactions
    /// finish first, new ones wait, nobody gets an error.
    async fn quiesced<T>(
        &self,
        name: &str,
        quiesce: bool,
        op: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let pools = if quiesce {
            self.pools.find_all(name)
        } else {
            Vec::new()
        };
        crate::pool::pause_all(&pools, self.pools.config().pause_timeout)
            .await
            .map_err(|e| {
                invalid(format!(
                    "could not pause \"{name}\" for a consistent copy: {e}"
                ))
            })?;
        for pool in &pools {
            pool.pool.close_idle();
        }
        let result = op.await;
        for pool in &pools {
            pool.pool.resume();
        }
        result
    }

    /// Creates `branch` of `database` from `parent` at `point`, optionally
    /// deleted after `ttl`.
    pub async fn create_branch(
        &self,
        database: &str,
        branch: &str,
        parent: Option<&str>,
        point: BranchPoint,
        ttl: Option<Duration>,
        allow_slow: bool,
    ) -> Result<BranchRecord, ServiceError> {
        validate_branch_name(branch).map_err(invalid)?;
        if branch == "main" {
            return Err(invalid(
                "every database has its branch \"main\"; pick another name",
            ));
        }
        let record = self.ready_database(database)?;
        let lifecycle = self.lifecycle(&record)?;
        let caps = lifecycle.backend().capabilities();
        if caps.branching == Branching::None {
            return Err(ServiceError::Backend(BackendError::unsupported(format!(
                "backend {} cannot make branches",
                record.backend
            ))));
        }
        if caps.slow_branches && !allow_slow {
            return Err(ServiceError::Backend(BackendError::unsupported(format!(
                "backend {} makes a branch as a full copy through a snapshot, which takes minutes on large data; ask for it with --allow-slow (\"allow_slow\": true)",
                record.backend
            ))));
        }
        if matches!(
            point,
            BranchPoint::Lsn { .. } | BranchPoint::Timestamp { .. }
        ) && !caps.point_in_time
        {
            return Err(ServiceError::Backend(BackendError::unsupported(format!(
                "backend {} cannot branch at a point in time; use --at now",
                record.backend
            ))));
        }
        let parent = parent.unwrap_or("main");
        if !self.branch_exists(database, parent)? {
            return Err(no_branch(database, parent));
        }
        if self.branch_exists(database, branch)? {
            return Err(ServiceError::Backend(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!("branch \"{branch}\" of \"{database}\" already exists; `ogel branch reset {database} {branch}` refreshes it"),
            )));
        }
        let spec = BranchSpec {
            database: database.to_string(),
            branch: branch.to_string(),
            parent: parent.to_string(),
            point: point.clone(),
        };
        let started = std::time::Instant::now();
        let _op = self.operation(&compute_name(database, branch), "create branch");
        let parent_compute = compute_name(database, parent);
        if point == BranchPoint::Now {
            // Copying the parent may stop it briefly (drivers without atomic
            // snapshots): pause its clients, and make the next one ask for
            // its (new) endpoint.
            self.quiesced(&parent_compute, !caps.online_snapshot, async {
                lifecycle
                    .exclusive(
                        &parent_compute,
                        "make a branch",
                        move |backend| async move { backend.create_branch(&spec).await },
                    )
                    .await
                    .map_err(ServiceError::from)
            })
            .await?;
        } else {
            lifecycle.backend().create_branch(&spec).await?;
        }
        tracing::info!(
            database,
            branch,
            parent,
            ?point,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "branch created"
        );
        let now = unix_now();
        let record = BranchRecord {
            database: database.to_string(),
            name: branch.to_string(),
            parent: parent.to_string(),
            created_at_unix: now,
            expires_at_unix: ttl.map(|t| now + t.as_secs().max(1)),
        };
        self.catalog.put_branch(&record)?;
        Ok(record)
    }

    /// Deletes a branch and its data.
    pub async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), ServiceError> {
        let record = self.ready_database(database)?;
        if branch == "main" {
            return Err(invalid(format!(
                "\"main\" is the database itself; `ogel db delete {database}` deletes it"
            )));
        }
        if !self.branch_exists(database, branch)? {
            return Err(no_branch(database, branch));
        }
        let name = compute_name(database, branch);
        let (db, br) = (database.to_string(), branch.to_string());
        self.lifecycle(&record)?
            .exclusive(&name, "delete a branch", move |backend| async move {
                backend.delete_branch(&db, &br).await
            })
            .await?;
        self.pools.remove(&name);
        self.catalog.remove_branch(database, branch)?;
        Ok(())
    }

    /// Resets a branch to its parent's current state.
    pub async fn reset_branch(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<BranchRecord, ServiceError> {
        let record = self.ready_database(database)?;
        let Some(mut branch_record) = self.catalog.branch(database, branch)? else {
            return Err(if branch == "main" {
                invalid("\"main\" has no parent to reset to")
            } else {
                no_branch(database, branch)
            });
        };
        let lifecycle = self.lifecycle(&record)?;
        let online = lifecycle.backend().capabilities().online_snapshot;
        let name = compute_name(database, branch);
        let parent_compute = compute_name(database, &branch_record.parent);
        let (db, br) = (database.to_string(), branch.to_string());
        let _op = self.operation(&name, "reset branch");
        self.quiesced(&parent_compute, !online, async {
            lifecycle
                .exclusive(&name, "reset a branch", move |backend| async move {
                    backend.reset_branch(&db, &br).await
                })
                .await
                .map_err(ServiceError::from)
        })
        .await?;
        for pool in self.pools.find_all(&name) {
            pool.pool.close_idle();
        }
        branch_record.created_at_unix = unix_now();
        self.catalog.put_branch(&branch_record)?;
        Ok(branch_record)
    }

    /// Takes a snapshot of a branch.
    pub async fn create_snapshot(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<SnapshotInfo, ServiceError> {
        let record = self.ready_database(database)?;
        if !self.branch_exists(database, branch)? {
            return Err(no_branch(database, branch));
        }
        let lifecycle = self.lifecycle(&record)?;
        let caps = lifecycle.backend().capabilities();
        if !caps.snapshots {
            return Err(ServiceError::Backend(BackendError::unsupported(format!(
                "backend {} cannot take snapshots",
                record.backend
            ))));
        }
        let name = compute_name(database, branch);
        let (db, br) = (database.to_string(), branch.to_string());
        let _op = self.operation(&name, "take snapshot");
        self.quiesced(&name, !caps.online_snapshot, async {
            lifecycle
                .exclusive(&name, "take a snapshot", move |backend| async move {
                    backend.create_snapshot(&db, &br).await
                })
                .await
                .map_err(ServiceError::from)
        })
        .await
    }

    /// The snapshots of a database.
    pub async fn snapshots(&self, database: &str) -> Result<Vec<SnapshotInfo>, ServiceError> {
        let record = self.ready_database(database)?;
        Ok(self
            .lifecycle(&record)?
            .backend()
            .list_snapshots(database)
            .await?)
    }

    /// Restores a snapshot as `as_branch` (its own branch by default).
    pub async fn restore_snapshot(
        &self,
        database: &str,
        id: &str,
        as_branch: Option<&str>,
    ) -> Result<BranchRecord, ServiceError> {
        let record = self.ready_database(database)?;
        let lifecycle = self.lifecycle(&record)?;
        let snapshot = lifecycle
            .backend()
            .list_snapshots(database)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                ServiceError::Backend(BackendError::not_found(format!(
                    "database \"{database}\" has no snapshot \"{id}\"; see `ogel snapshot list {database}`"
                )))
            })?;
        let target = as_branch.unwrap_or(&snapshot.branch).to_string();
        validate_branch_name(&target).map_err(invalid)?;
        let name = compute_name(database, &target);
        let (db, snap, br) = (database.to_string(), id.to_string(), target.clone());
        let _op = self.operation(&name, "restore snapshot");
        self.quiesced(&name, true, async {
            lifecycle
                .exclusive(&name, "restore a snapshot", move |backend| async move {
                    backend.restore_snapshot(&db, &snap, &br).await
                })
                .await
                .map_err(ServiceError::from)
        })
        .await?;
        let existing = self.catalog.branch(database, &target)?;
        let record = match existing {
            Some(r) => r,
            None if target == "main" => return Ok(self.branches(database)?.remove(0)),
            None => {
                let r = BranchRecord {
                    database: database.to_string(),
                    name: target.clone(),
                    parent: snapshot.branch.clone(),
                    created_at_unix: unix_now(),
                    expires_at_unix: None,
                };
                self.catalog.put_branch(&r)?;
                r
            }
        };
        Ok(record)
    }

    /// Branches whose TTL has passed, as (database, branch).
    pub fn expired_branches(&self) -> Vec<(String, String)> {
        let now = unix_now();
        match self.catalog.branches("") {
            Ok(list) => list
                .into_iter()
                .filter(|b| b.expires_at_unix.is_some_and(|t| t <= now))
                .map(|b| (b.database, b.name))
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "could not read branches for the TTL reaper");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_and_names() {
        assert_eq!(parse_point(None, None), BranchPoint::Now);
        assert_eq!(parse_point(Some("now"), None), BranchPoint::Now);
        assert_eq!(
            parse_point(Some("0/16B3740"), None),
            BranchPoint::Lsn {
                lsn: "0/16B3740".into()
            }
        );
        assert_eq!(
            parse_point(Some("2026-11-25T13:00:00Z"), None),
            BranchPoint::Timestamp {
                at: "2026-11-25T13:00:00Z".into()
            }
        );
        assert_eq!(
            parse_point(Some("now"), Some("s1")),
            BranchPoint::Snapshot { id: "s1".into() }
        );
        assert_eq!(split("shop@dev"), ("shop".into(), "dev".into()));
        assert_eq!(split("shop"), ("shop".into(), "main".into()));
        assert_eq!(compute_name("shop", "main"), "shop");
        assert!(validate_branch_name("pr-42").is_ok());
        assert!(validate_branch_name("Dev").is_err());
        assert!(validate_branch_name("a@b").is_err());
        assert!(validate_branch_name("").is_err());
    }
}
