//! Standbys and failover on RDS (`Backend::set_standbys`,
//! `standby_status`, `promote`; ABI 1.5).
//!
//! # What a standby is
//!
//! - **RDS for PostgreSQL instance** (`engine = "postgres"`): the standby
//!   is RDS's Multi-AZ standby. `set_standbys(c, 1, true)` is
//!   ModifyDBInstance `MultiAZ=true, ApplyImmediately=true` (0:
//!   `MultiAZ=false`); the call waits (at most `create_timeout`) until
//!   RDS reports the instance `available` with the new setting. A Multi-AZ
//!   *instance* deployment has exactly one standby, which serves no
//!   reads, so a count above 1 is refused (Aurora Replicas, or an RDS
//!   Multi-AZ *DB cluster*, which this plugin does not manage, give more).
//!   While RDS converts the instance (`modifying` with only
//!   `PendingModifiedValues.MultiAZ`), the instance keeps serving
//!   ([`crate::rds::serving`]): RDS makes the conversion without an outage.
//! - **Aurora** (`engine = "aurora-postgresql"`): a standby is an Aurora
//!   Replica, a reader instance of the cluster (CreateDBInstance with
//!   `DBClusterIdentifier`, identifier `<cluster>-reader<n>`, tag
//!   `ogel:reader-of`); the count is the number of readers (at most 15,
//!   Aurora's limit). Extra readers are deleted (those not available
//!   first).
//!
//! # Synchronous only
//!
//! Both kinds are synchronous by construction, and neither can be made
//! asynchronous, so `synchronous = false` is **refused** with
//! `InvalidRequest` rather than accepted and silently ignored: a caller
//! asking for asynchronous commits (to avoid their latency) would get
//! neither what they asked for nor an error. A Multi-AZ instance's standby
//! receives every write synchronously (block-level replication to the
//! other AZ: a commit is acknowledged once both copies have it); an Aurora
//! commit is acknowledged once the cluster's shared storage has it (a
//! quorum of copies across three AZs), which is also what the replicas
//! read. `standby_status` reports `synchronous: true` whenever a standby
//! is wanted. There is no replay lag to report (`replay_lag_bytes`
//! `None`): RDS does not expose one for Multi-AZ, and Aurora's replica lag
//! is a CloudWatch metric, not part of DescribeDBInstances.
//!
//! # Takeover
//!
//! `promote` (for `Takeover::Failover` and `Takeover::Switchover` alike):
//!
//! - instance: RebootDBInstance `ForceFailover=true`. That is RDS's
//!   switchover: RDS stops the primary, the synchronous standby (which has
//!   every acknowledged commit) becomes the primary behind the same DNS
//!   name, and the old primary's host becomes the new standby, so the
//!   instance stays Multi-AZ and nothing has to be rebuilt. RDS does the
//!   fencing (the old primary is shut down before the standby takes the
//!   name). The plugin waits (at most `failover_timeout`) until the
//!   instance is available again and the failover has visibly happened —
//!   the reboot was seen or the AvailabilityZone changed — so a
//!   DescribeDBInstances answered before RDS started the reboot (its API
//!   is eventually consistent) cannot end the wait early.
//! - Aurora: FailoverDBCluster with `TargetDBInstanceIdentifier` = the
//!   first available Aurora Replica; the plugin waits until the cluster is
//!   available and its writer is another instance. The endpoint stays the
//!   cluster's writer endpoint, which RDS moves to the new writer. The
//!   instances keep their names and tags (`ogel:writer-of`,
//!   `ogel:reader-of` say what the plugin made them as); which one writes
//!   is the cluster's `DBClusterMembers`.
//!
//! Polls during these waits go on through throttling or a moment without
//! the API (`Rds::wait_until`); each call is retried by the SDK with
//! backoff first ([`crate::aws`]).
//!
//! # Generation
//!
//! A compute's generation is `max(created, ogel:generation)`: the
//! instance's (Aurora: the cluster's) creation time in Unix seconds, or
//! the value of its tag `ogel:generation` if higher. `promote` computes
//! `new = max(current + 1, now)`, writes it with AddTagsToResource
//! **before** asking RDS to fail over, and returns an endpoint with it.
//! So the generation:
//!
//! - survives a gateway restart and lives with the instance (nothing
//!   local; any gateway reading the instance sees it);
//! - is strictly higher after each promote, and never lower than before
//!   it — if the failover request then fails, the generation has only
//!   gone up once too often, which costs the pools one needless fence;
//!   the reverse order could leave a failed-over instance with its old
//!   generation, so old connections would not be fenced;
//! - stays above what came before when a restore replaces the instance
//!   (the replacement is tagged with the old generation + 1), and, being
//!   at least the time of the promote, also when a new instance is made.
//!
//! `ogel:failovers` counts takeovers (written after the failover ends).
//!
//! # Reads the gateway repeats
//!
//! The gateway's watch asks `standby_status` every `check_interval` and,
//! since an RDS standby has no process id, asks `set_standbys` again and
//! again to "restart" it. One reading (a DescribeDB* call or two) is kept
//! for [`STATUS_TTL`] and answers both, so RDS's API is not asked ten
//! times a second per database; the plugin's own changes drop it.

use crate::names::{check_compute, reader_id, TAG_FAILOVERS, TAG_GENERATION};
use crate::rds::{self, Instance, Phase, WaitError};
use crate::{human, RdsBackend};
use ogel_plugin_sdk::{
    BackendError, BackendErrorKind, ComputeEndpoint, ComputeName, StandbyStatus, Takeover,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a standby reading is reused.
pub const STATUS_TTL: Duration = Duration::from_secs(1);

/// Aurora's limit on replicas per cluster.
pub const MAX_AURORA_REPLICAS: u32 = 15;

/// The generation of a compute served by `i`: the newer of its creation
/// time and its `ogel:generation` tag, at least 1.
pub fn generation(i: &Instance) -> u64 {
    let tagged = i
        .tags
        .get(TAG_GENERATION)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    i.created_unix.max(tagged).max(1)
}

fn failovers(i: &Instance) -> u64 {
    i.tags
        .get(TAG_FAILOVERS)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, message)
}

/// Refuses `synchronous = false` (see the module docs).
fn check_synchronous(count: u32, synchronous: bool, aurora: bool) -> Result<(), BackendError> {
    if count == 0 || synchronous {
        return Ok(());
    }
    Err(invalid(if aurora {
        "Aurora Replicas cannot be asynchronous: an Aurora commit is acknowledged once the cluster's shared storage (a quorum across three AZs) has it, and the replicas read that storage; add the standby without --async"
    } else {
        "an RDS Multi-AZ standby cannot be asynchronous: RDS replicates every write to it synchronously (a commit is acknowledged once the standby's AZ has it too); add the standby without --async"
    }))
}

impl RdsBackend {
    fn cached_status(&self, compute: &ComputeName) -> Option<Option<StandbyStatus>> {
        let cache = self.standby_cache.lock().ok()?;
        let (at, status) = cache.get(compute)?;
        (at.elapsed() < STATUS_TTL).then(|| status.clone())
    }

    fn remember_status(&self, compute: &ComputeName, status: &Option<StandbyStatus>) {
        if let Ok(mut cache) = self.standby_cache.lock() {
            cache.insert(compute.clone(), (Instant::now(), status.clone()));
        }
    }

    fn forget_status(&self, compute: &ComputeName) {
        if let Ok(mut cache) = self.standby_cache.lock() {
            cache.remove(compute);
        }
    }

    /// `Backend::set_standbys`.
    pub(crate) async fn set_standbys_impl(
        &self,
        compute: &ComputeName,
        count: u32,
        synchronous: bool,
    ) -> Result<(), BackendError> {
        let (database, branch) = check_compute(compute)?;
        let aurora = self.config.aurora();
        check_synchronous(count, synchronous, aurora)?;
        if !aurora && count > 1 {
            return Err(invalid(format!(
                "an RDS Multi-AZ instance deployment has exactly one standby (and it serves no reads), so \"{compute}\" cannot have {count}; for more standbys or readable ones use engine = \"aurora-postgresql\" (Aurora Replicas, up to {MAX_AURORA_REPLICAS}), or an RDS Multi-AZ DB cluster, which this plugin does not manage"
            )));
        }
        if aurora && count > MAX_AURORA_REPLICAS {
            return Err(invalid(format!(
                "an Aurora cluster has at most {MAX_AURORA_REPLICAS} Aurora Replicas; \"{compute}\" cannot have {count}"
            )));
        }
        // Nothing to do (the watch asks again and again): no API call.
        match self.cached_status(compute) {
            Some(Some(s)) if s.wanted == count && s.streaming == count => return Ok(()),
            Some(None) if count == 0 => return Ok(()),
            _ => {}
        }
        self.forget_status(compute);
        let i = self.existing(database, branch).await?;
        // A stopped instance is started first: RDS changes a running one.
        let i = if rds::serving(&i) {
            i
        } else {
            self.wake(database, i).await?
        };
        let result = if aurora {
            self.set_readers(compute, &i, count).await
        } else {
            self.set_multi_az(compute, &i, count == 1).await
        };
        self.forget_status(compute);
        result
    }

    /// Multi-AZ on or off, waiting until RDS has applied it.
    async fn set_multi_az(
        &self,
        compute: &ComputeName,
        i: &Instance,
        on: bool,
    ) -> Result<(), BackendError> {
        let wanted_now = i.pending_multi_az.unwrap_or(i.multi_az);
        if wanted_now != on {
            tracing::info!(instance = %i.id, multi_az = on, "changing the RDS instance's Multi-AZ setting");
            self.rds.set_multi_az(&i.id, on).await?;
        }
        if i.multi_az == on && i.pending_multi_az.is_none() {
            return Ok(());
        }
        let bound = self.config.create_timeout;
        match self
            .rds
            .wait_until(&i.id, false, bound, |now| {
                now.multi_az == on
                    && now.pending_multi_az.is_none()
                    && phase_usable(&now.status)
            })
            .await
        {
            Ok(_) => {
                tracing::info!(instance = %i.id, multi_az = on, "the RDS instance's Multi-AZ setting is applied");
                Ok(())
            }
            Err(WaitError::Timeout(status)) => Err(BackendError::unavailable(format!(
                "RDS is still {} the standby of \"{compute}\" (instance {} is \"{status}\" after {}, `create_timeout`); the change goes on at RDS: see `ogel db standby {}`",
                if on { "adding" } else { "removing" },
                i.id,
                human(bound),
                compute.database
            ))),
            Err(WaitError::Gone) => Err(BackendError::not_found(format!(
                "RDS instance {} of \"{compute}\" disappeared while its standby was being changed",
                i.id
            ))),
            Err(WaitError::Failed(e)) => Err(e),
        }
    }

    /// Aurora: `count` Aurora Replicas in `unit`'s cluster.
    async fn set_readers(
        &self,
        compute: &ComputeName,
        unit: &Instance,
        count: u32,
    ) -> Result<(), BackendError> {
        let cluster = &unit.id;
        let members = self.rds.members(cluster).await?.ok_or_else(|| {
            BackendError::not_found(format!(
                "Aurora cluster {cluster} of \"{compute}\" disappeared"
            ))
        })?;
        let mut readers: Vec<_> = members
            .iter()
            .filter(|m| !m.writer && m.status != "deleting")
            .collect();
        let have = u32::try_from(readers.len()).unwrap_or(u32::MAX);
        let mut added = Vec::new();
        if have < count {
            let mut n = 1;
            while added.len() < (count - have) as usize {
                let id = reader_id(cluster, n);
                n += 1;
                if members.iter().any(|m| m.id == id) {
                    continue;
                }
                tracing::info!(cluster = %cluster, reader = %id, "adding an Aurora Replica");
                self.rds.add_reader(cluster, &id).await?;
                added.push(id);
            }
        } else if have > count {
            // Not-available readers go first, then the newest names.
            readers.sort_by_key(|m| {
                (
                    rds::phase(&m.status) == Phase::Usable,
                    std::cmp::Reverse(m.id.clone()),
                )
            });
            for m in readers.iter().take((have - count) as usize) {
                tracing::info!(cluster = %cluster, reader = %m.id, "removing an Aurora Replica");
                self.rds.delete_member(&m.id).await?;
            }
            return Ok(());
        }
        let bound = self.config.create_timeout;
        let started = Instant::now();
        // Every reader wanted must be available, the new ones and any
        // still being made by an earlier call.
        let waiting: Vec<String> = readers
            .iter()
            .filter(|m| rds::phase(&m.status) != Phase::Usable)
            .map(|m| m.id.clone())
            .chain(added)
            .collect();
        for id in waiting {
            let left = bound.saturating_sub(started.elapsed());
            match self
                .rds
                .wait_until(&id, true, left, |r| phase_usable(&r.status))
                .await
            {
                Ok(_) => {}
                Err(WaitError::Timeout(status)) => {
                    return Err(BackendError::unavailable(format!(
                        "Aurora Replica {id} of \"{compute}\" is still \"{status}\" after {} (`create_timeout`); RDS goes on making it: see `ogel db standby {}`",
                        human(bound),
                        compute.database
                    )))
                }
                Err(WaitError::Gone) => {
                    return Err(BackendError::unavailable(format!(
                        "Aurora Replica {id} of \"{compute}\" disappeared while being made (deleted by someone else?); retry"
                    )))
                }
                Err(WaitError::Failed(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// `Backend::standby_status`.
    pub(crate) async fn standby_status_impl(
        &self,
        compute: &ComputeName,
    ) -> Result<Option<StandbyStatus>, BackendError> {
        let (database, branch) = check_compute(compute)?;
        if let Some(s) = self.cached_status(compute) {
            return Ok(s);
        }
        let i = self.existing(database, branch).await?;
        let status = if self.config.aurora() {
            self.readers_status(&i).await?
        } else {
            multi_az_status(&i)
        };
        self.remember_status(compute, &status);
        Ok(status)
    }

    async fn readers_status(&self, unit: &Instance) -> Result<Option<StandbyStatus>, BackendError> {
        let members = self.rds.members(&unit.id).await?.unwrap_or_default();
        let readers: Vec<_> = members
            .iter()
            .filter(|m| !m.writer && m.status != "deleting")
            .collect();
        let wanted = u32::try_from(readers.len()).unwrap_or(u32::MAX);
        let failovers = failovers(unit);
        if wanted == 0 && failovers == 0 {
            return Ok(None);
        }
        let cluster_up = rds::phase(&unit.status) == Phase::Usable;
        let streaming = if cluster_up {
            readers
                .iter()
                .filter(|m| rds::phase(&m.status) == Phase::Usable)
                .count()
        } else {
            0
        };
        let note = if !cluster_up && wanted > 0 {
            Some(format!("Aurora cluster {} is \"{}\"", unit.id, unit.status))
        } else {
            let busy: Vec<String> = readers
                .iter()
                .filter(|m| rds::phase(&m.status) != Phase::Usable)
                .map(|m| format!("Aurora Replica {} is \"{}\"", m.id, m.status))
                .collect();
            (!busy.is_empty()).then(|| busy.join("; "))
        };
        Ok(Some(StandbyStatus {
            wanted,
            streaming: u32::try_from(streaming).unwrap_or(u32::MAX),
            synchronous: wanted > 0,
            replay_lag_bytes: None,
            failovers,
            pid: None,
            note,
            ..StandbyStatus::default()
        }))
    }

    /// `Backend::promote`.
    pub(crate) async fn promote_impl(
        &self,
        compute: &ComputeName,
        why: Takeover,
    ) -> Result<ComputeEndpoint, BackendError> {
        let (database, branch) = check_compute(compute)?;
        self.forget_status(compute);
        let i = self.existing(database, branch).await?;
        let result = if self.config.aurora() {
            self.promote_reader(compute, &i, why).await
        } else {
            self.promote_standby(compute, &i, why).await
        };
        self.forget_status(compute);
        let (after, generation) = result?;
        let mut endpoint = self.endpoint(database, &after)?;
        endpoint.generation = endpoint.generation.max(generation);
        Ok(endpoint)
    }

    /// Writes the raised generation to `i`'s tags before a failover;
    /// returns it.
    async fn raise_generation(&self, i: &Instance) -> Result<u64, BackendError> {
        let arn = i.arn.as_deref().ok_or_else(|| {
            BackendError::new(
                BackendErrorKind::Internal,
                format!(
                    "RDS did not report the ARN of {} {}, which its generation tag needs; nothing was failed over",
                    self.rds.unit(),
                    i.id
                ),
            )
        })?;
        let now = u64::try_from(crate::now_millis() / 1000).unwrap_or(u64::MAX);
        let next = (generation(i) + 1).max(now);
        self.rds
            .tag(
                arn,
                &BTreeMap::from([(TAG_GENERATION.to_string(), next.to_string())]),
            )
            .await
            .map_err(|e| {
                BackendError::new(e.kind, format!("{}; nothing was failed over", e.message))
            })?;
        Ok(next)
    }

    /// Counts a takeover in `i`'s tags (best effort: the failover is done).
    async fn count_failover(&self, i: &Instance) {
        let Some(arn) = i.arn.as_deref() else {
            return;
        };
        let tags = BTreeMap::from([(TAG_FAILOVERS.to_string(), (failovers(i) + 1).to_string())]);
        if let Err(e) = self.rds.tag(arn, &tags).await {
            tracing::warn!(id = %i.id, error = %e, "could not count the failover in the tags");
        }
    }

    /// Multi-AZ instance: RebootDBInstance with ForceFailover.
    async fn promote_standby(
        &self,
        compute: &ComputeName,
        i: &Instance,
        why: Takeover,
    ) -> Result<(Instance, u64), BackendError> {
        if !i.multi_az {
            return Err(BackendError::unavailable(
                if i.pending_multi_az == Some(true) {
                    format!(
                        "the standby of \"{compute}\" is still being made (RDS instance {} is \"{}\", becoming Multi-AZ); retry once `ogel db standby {}` shows it streaming",
                        i.id, i.status, compute.database
                    )
                } else {
                    format!(
                        "\"{compute}\" has no standby to take over: its RDS instance {} is not Multi-AZ; add one with `ogel db standby {} add`",
                        i.id, compute.database
                    )
                },
            ));
        }
        if rds::phase(&i.status) != Phase::Usable {
            return Err(BackendError::unavailable(format!(
                "RDS instance {} of \"{compute}\" is \"{}\": RDS fails over only an available instance (it may be failing over on its own); retry once it is available",
                i.id, i.status
            )));
        }
        let generation = self.raise_generation(i).await?;
        tracing::warn!(instance = %i.id, ?why, generation, az = ?i.availability_zone, standby_az = ?i.secondary_az, "failing the RDS instance over to its Multi-AZ standby (RebootDBInstance ForceFailover)");
        self.rds.reboot_with_failover(&i.id).await?;
        let bound = self.config.failover_timeout;
        let before_az = i.availability_zone.clone();
        let mut rebooted = false;
        let waited = self
            .rds
            .wait_until(&i.id, false, bound, |now| {
                if rds::phase(&now.status) != Phase::Usable {
                    rebooted = true;
                }
                let moved = now.availability_zone.is_some() && now.availability_zone != before_az;
                (rebooted || moved) && rds::phase(&now.status) == Phase::Usable
            })
            .await;
        let after = self.failover_waited(compute, i, waited, bound)?;
        self.count_failover(&after).await;
        tracing::warn!(instance = %i.id, generation, az = ?after.availability_zone, "the Multi-AZ standby is the primary");
        Ok((after, generation))
    }

    /// Aurora: FailoverDBCluster to an available Aurora Replica.
    async fn promote_reader(
        &self,
        compute: &ComputeName,
        unit: &Instance,
        why: Takeover,
    ) -> Result<(Instance, u64), BackendError> {
        let members = self.rds.members(&unit.id).await?.unwrap_or_default();
        let old_writer = members
            .iter()
            .find(|m| m.writer)
            .map(|m| m.id.clone())
            .or_else(|| unit.writer.clone());
        let readers: Vec<_> = members.iter().filter(|m| !m.writer).collect();
        let Some(target) = readers
            .iter()
            .find(|m| rds::phase(&m.status) == Phase::Usable)
        else {
            return Err(BackendError::unavailable(if readers.is_empty() {
                format!(
                    "\"{compute}\" has no standby to take over: Aurora cluster {} has no Aurora Replica; add one with `ogel db standby {} add`",
                    unit.id, compute.database
                )
            } else {
                format!(
                    "no Aurora Replica of \"{compute}\" can take over now: {}; retry once one is available",
                    readers
                        .iter()
                        .map(|m| format!("{} is \"{}\"", m.id, m.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        };
        if rds::phase(&unit.status) != Phase::Usable {
            return Err(BackendError::unavailable(format!(
                "Aurora cluster {} of \"{compute}\" is \"{}\": RDS fails over only an available cluster (it may be failing over on its own); retry once it is available",
                unit.id, unit.status
            )));
        }
        let generation = self.raise_generation(unit).await?;
        tracing::warn!(cluster = %unit.id, ?why, generation, from = ?old_writer, to = %target.id, "failing the Aurora cluster over (FailoverDBCluster)");
        self.rds.failover_cluster(&unit.id, &target.id).await?;
        let bound = self.config.failover_timeout;
        let waited = self
            .rds
            .wait_until(&unit.id, false, bound, |now| {
                now.writer.is_some()
                    && now.writer != old_writer
                    && rds::phase(&now.status) == Phase::Usable
            })
            .await;
        let after = self.failover_waited(compute, unit, waited, bound)?;
        self.count_failover(&after).await;
        tracing::warn!(cluster = %unit.id, generation, writer = ?after.writer, "the Aurora Replica is the writer");
        Ok((after, generation))
    }

    fn failover_waited(
        &self,
        compute: &ComputeName,
        i: &Instance,
        waited: Result<Instance, WaitError>,
        bound: Duration,
    ) -> Result<Instance, BackendError> {
        let unit = self.rds.unit();
        match waited {
            Ok(after) => Ok(after),
            Err(WaitError::Timeout(status)) => Err(BackendError::unavailable(format!(
                "{unit} {} of \"{compute}\" was still \"{status}\" {} after the failover was asked for (`failover_timeout`); the failover goes on at RDS: retry, or see the events in the AWS console",
                i.id,
                human(bound)
            ))),
            Err(WaitError::Gone) => Err(BackendError::not_found(format!(
                "{unit} {} of \"{compute}\" disappeared during its failover",
                i.id
            ))),
            Err(WaitError::Failed(e)) => Err(e),
        }
    }
}

fn phase_usable(status: &str) -> bool {
    rds::phase(status) == Phase::Usable
}

/// A Multi-AZ instance's standby as the SDK reports it.
fn multi_az_status(i: &Instance) -> Option<StandbyStatus> {
    let wanted = u32::from(i.pending_multi_az.unwrap_or(i.multi_az));
    let failovers = failovers(i);
    if wanted == 0 && failovers == 0 && !i.multi_az {
        return None;
    }
    let up = rds::phase(&i.status) == Phase::Usable;
    let streaming = u32::from(i.multi_az && up);
    let note = match (i.pending_multi_az, rds::phase(&i.status)) {
        (Some(true), _) => Some(format!(
            "RDS is making instance {} Multi-AZ (status \"{}\"): the standby is being built",
            i.id, i.status
        )),
        (Some(false), _) => Some(format!(
            "RDS is removing the Multi-AZ standby of instance {} (status \"{}\")",
            i.id, i.status
        )),
        (None, Phase::Stopped | Phase::Stopping) if wanted > 0 => Some(format!(
            "instance {} is \"{}\": its standby runs only while it does",
            i.id, i.status
        )),
        (None, Phase::Usable) => None,
        (None, _) if wanted > 0 => Some(format!("instance {} is \"{}\"", i.id, i.status)),
        _ => None,
    };
    Some(StandbyStatus {
        wanted,
        streaming,
        synchronous: wanted > 0,
        replay_lag_bytes: None,
        failovers,
        pid: None,
        note,
        ..StandbyStatus::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(status: &str, multi_az: bool, pending: Option<bool>) -> Instance {
        Instance {
            id: "ogel-shop-12345678".into(),
            status: status.into(),
            address: None,
            port: None,
            tags: BTreeMap::new(),
            created_unix: 1_700_000_000,
            storage_gib: 20,
            engine: "postgres".into(),
            writer: None,
            restorable: None,
            arn: Some("arn:aws:rds:us-east-1:1:db:ogel-shop-12345678".into()),
            multi_az,
            pending_multi_az: pending,
            pending_other: false,
            availability_zone: Some("us-east-1a".into()),
            secondary_az: multi_az.then(|| "us-east-1b".into()),
        }
    }

    #[test]
    fn generation_is_the_newer_of_creation_and_tag() {
        let mut i = instance("available", false, None);
        assert_eq!(generation(&i), 1_700_000_000);
        i.tags.insert(TAG_GENERATION.into(), "1700000042".into());
        assert_eq!(generation(&i), 1_700_000_042);
        // A tag below the creation time (an old value copied along) or
        // one that does not parse never lowers it.
        i.tags.insert(TAG_GENERATION.into(), "5".into());
        assert_eq!(generation(&i), 1_700_000_000);
        i.tags.insert(TAG_GENERATION.into(), "x".into());
        assert_eq!(generation(&i), 1_700_000_000);
        i.created_unix = 0;
        i.tags.clear();
        assert_eq!(generation(&i), 1);
    }

    #[test]
    fn multi_az_readings() {
        assert_eq!(multi_az_status(&instance("available", false, None)), None);
        let s = multi_az_status(&instance("available", true, None)).unwrap();
        assert_eq!((s.wanted, s.streaming, s.synchronous), (1, 1, true));
        assert_eq!(s.note, None);
        let s = multi_az_status(&instance("modifying", false, Some(true))).unwrap();
        assert_eq!((s.wanted, s.streaming), (1, 0));
        assert!(s.note.unwrap().contains("being built"));
        let s = multi_az_status(&instance("modifying", true, Some(false))).unwrap();
        assert_eq!((s.wanted, s.streaming), (0, 0));
        assert!(s.note.unwrap().contains("removing"));
        let s = multi_az_status(&instance("rebooting", true, None)).unwrap();
        assert_eq!((s.wanted, s.streaming), (1, 0));
        assert!(s.note.unwrap().contains("rebooting"));
        let s = multi_az_status(&instance("stopped", true, None)).unwrap();
        assert!(s.note.unwrap().contains("only while"));
        // Failed over once, standby removed since: still reported.
        let mut i = instance("available", false, None);
        i.tags.insert(TAG_FAILOVERS.into(), "1".into());
        let s = multi_az_status(&i).unwrap();
        assert_eq!((s.wanted, s.failovers, s.synchronous), (0, 1, false));
    }

    #[test]
    fn a_multi_az_conversion_keeps_serving() {
        assert!(rds::serving(&instance("modifying", false, Some(true))));
        let mut other = instance("modifying", false, Some(true));
        other.pending_other = true;
        assert!(!rds::serving(&other));
        assert!(!rds::serving(&instance("modifying", false, None)));
        assert!(!rds::serving(&instance("rebooting", true, None)));
    }

    #[test]
    fn asynchronous_is_refused_with_the_reason() {
        assert!(check_synchronous(1, true, false).is_ok());
        assert!(check_synchronous(0, false, true).is_ok());
        let e = check_synchronous(1, false, false).unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::InvalidRequest);
        assert!(e.message.contains("synchronously"), "{}", e.message);
        let e = check_synchronous(2, false, true).unwrap_err();
        assert!(e.message.contains("Aurora"), "{}", e.message);
    }
}
