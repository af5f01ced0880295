//! Branches and snapshots as the gateway offers them for every backend:
//! checks against the backend's capabilities, the catalog's branch records
//! (with TTLs), and the care a branch operation needs around live clients —
//! the parent's pool is paused when the backend cannot snapshot a running
//! compute atomically (it stops it briefly), and a branch being replaced is
//! held exclusively so no client is handed its compute meanwhile.
//!
//! A branch's compute is named `database@branch` everywhere below the
//! gateway (lifecycles, pools, backends); `main` is the database itself
//! (`names::compute_name`).

use super::databases::Databases;
use super::operations::Operations;
use crate::catalog::etcd::Fence;
use crate::catalog::{BranchRecord, Catalog};
use crate::error::ControlError;
use crate::names::{self, compute_name, unix_now};
use crate::pool::Pools;
use ogel_plugin_sdk::{BranchPoint, BranchSpec, Branching, SnapshotInfo};
use std::sync::Arc;
use std::time::Duration;

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

/// The branches and snapshots service.
pub struct Branches {
    databases: Arc<Databases>,
    catalog: Catalog,
    pools: Arc<Pools>,
    operations: Arc<Operations>,
}

impl Branches {
    /// The service.
    pub fn new(
        databases: Arc<Databases>,
        catalog: Catalog,
        pools: Arc<Pools>,
        operations: Arc<Operations>,
    ) -> Self {
        Branches {
            databases,
            catalog,
            pools,
            operations,
        }
    }

    /// The branches of a database, `main` first.
    pub fn branches(&self, database: &str) -> Result<Vec<BranchRecord>, ControlError> {
        let record = self.databases.ready(database)?;
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
        op: impl std::future::Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        let pools = if quiesce {
            self.pools.find_all(name)
        } else {
            Vec::new()
        };
        self.pools.pause(&pools).await.map_err(|e| {
            ControlError::Invalid(format!(
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
    ) -> Result<BranchRecord, ControlError> {
        names::validate_branch(branch)?;
        if branch == "main" {
            return Err(ControlError::Invalid(
                "every database has its branch \"main\"; pick another name".into(),
            ));
        }
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let caps = lifecycle.backend().capabilities();
        if caps.branching == Branching::None {
            return Err(ControlError::Unsupported(format!(
                "backend {} cannot make branches",
                record.backend
            )));
        }
        if caps.slow_branches && !allow_slow {
            return Err(ControlError::Unsupported(format!(
                "backend {} makes a branch as a full copy through a snapshot, which takes minutes on large data; ask for it with --allow-slow (\"allow_slow\": true)",
                record.backend
            )));
        }
        if matches!(
            point,
            BranchPoint::Lsn { .. } | BranchPoint::Timestamp { .. }
        ) && !caps.point_in_time
        {
            return Err(ControlError::Unsupported(format!(
                "backend {} cannot branch at a point in time; use --at now",
                record.backend
            )));
        }
        let parent = parent.unwrap_or("main");
        if !self.catalog.branch_exists(database, parent)? {
            return Err(ControlError::no_branch(database, parent));
        }
        if self.catalog.branch_exists(database, branch)? {
            return Err(ControlError::AlreadyExists(format!("branch \"{branch}\" of \"{database}\" already exists; `ogel branch reset {database} {branch}` refreshes it"
            )));
        }
        let spec = BranchSpec {
            database: database.to_string(),
            branch: branch.to_string(),
            parent: parent.to_string(),
            point: point.clone(),
        };
        let started = std::time::Instant::now();
        let _op = self
            .operations
            .start(&compute_name(database, branch), "create branch");
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
                    .map_err(ControlError::from)
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
    pub async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), ControlError> {
        let record = self.databases.ready(database)?;
        if branch == "main" {
            return Err(ControlError::Invalid(format!(
                "\"main\" is the database itself; `ogel db delete {database}` deletes it"
            )));
        }
        if !self.catalog.branch_exists(database, branch)? {
            return Err(ControlError::no_branch(database, branch));
        }
        let name = compute_name(database, branch);
        let (db, br) = (database.to_string(), branch.to_string());
        self.databases
            .lifecycle(&record)?
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
    ) -> Result<BranchRecord, ControlError> {
        let record = self.databases.ready(database)?;
        let Some(mut branch_record) = self.catalog.branch(database, branch)? else {
            return Err(if branch == "main" {
                ControlError::Invalid("\"main\" has no parent to reset to".into())
            } else {
                ControlError::no_branch(database, branch)
            });
        };
        let lifecycle = self.databases.lifecycle(&record)?;
        let online = lifecycle.backend().capabilities().online_snapshot;
        let name = compute_name(database, branch);
        let parent_compute = compute_name(database, &branch_record.parent);
        let (db, br) = (database.to_string(), branch.to_string());
        let _op = self.operations.start(&name, "reset branch");
        self.quiesced(&parent_compute, !online, async {
            lifecycle
                .exclusive(&name, "reset a branch", move |backend| async move {
                    backend.reset_branch(&db, &br).await
                })
                .await
                .map_err(ControlError::from)
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
    ) -> Result<SnapshotInfo, ControlError> {
        let record = self.databases.ready(database)?;
        if !self.catalog.branch_exists(database, branch)? {
            return Err(ControlError::no_branch(database, branch));
        }
        let lifecycle = self.databases.lifecycle(&record)?;
        let caps = lifecycle.backend().capabilities();
        if !caps.snapshots {
            return Err(ControlError::Unsupported(format!(
                "backend {} cannot take snapshots",
                record.backend
            )));
        }
        let name = compute_name(database, branch);
        let (db, br) = (database.to_string(), branch.to_string());
        let _op = self.operations.start(&name, "take snapshot");
        self.quiesced(&name, !caps.online_snapshot, async {
            lifecycle
                .exclusive(&name, "take a snapshot", move |backend| async move {
                    backend.create_snapshot(&db, &br).await
                })
                .await
                .map_err(ControlError::from)
        })
        .await
    }

    /// The snapshots of a database.
    pub async fn snapshots(&self, database: &str) -> Result<Vec<SnapshotInfo>, ControlError> {
        let record = self.databases.ready(database)?;
        Ok(self
            .databases
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
    ) -> Result<BranchRecord, ControlError> {
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let snapshot = lifecycle
            .backend()
            .list_snapshots(database)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "database \"{database}\" has no snapshot \"{id}\"; see `ogel snapshot list {database}`"
                ))
            })?;
        let target = as_branch.unwrap_or(&snapshot.branch).to_string();
        names::validate_branch(&target)?;
        let name = compute_name(database, &target);
        let (db, snap, br) = (database.to_string(), id.to_string(), target.clone());
        let _op = self.operations.start(&name, "restore snapshot");
        self.quiesced(&name, true, async {
            lifecycle
                .exclusive(&name, "restore a snapshot", move |backend| async move {
                    backend.restore_snapshot(&db, &snap, &br).await
                })
                .await
                .map_err(ControlError::from)
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
    /// Only those whose database this gateway acts for (its own, or, as
    /// the leader, those of a gateway that is gone), each with the fence
    /// its delete carries.
    pub fn expired_branches(&self) -> Vec<(String, String, Option<Fence>)> {
        let now = unix_now();
        match self.catalog.branches("") {
            Ok(list) => list
                .into_iter()
                .filter(|b| b.expires_at_unix.is_some_and(|t| t <= now))
                .filter_map(|b| {
                    let record = self.catalog.database(&b.database).ok().flatten()?;
                    let fence = self.databases.acts_for(&record)?;
                    Some((b.database, b.name, fence))
                })
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
    }
}
