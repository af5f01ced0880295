//! The RDS control plane: DB instances and DB snapshots (create, describe,
//! delete, start, stop, restore) through aws-sdk-rds, and the bounded waits
//! on their states. Knows RDS's state names and what each means for a
//! compute; knows nothing of Postgres.
//!
//! With `engine = "aurora-postgresql"` the unit that serves a compute is a
//! DB cluster with one writer instance, and the same calls go to the
//! cluster API: an [`Instance`] then describes the cluster (its writer
//! endpoint, its tags; its status is the cluster's, or the writer's once
//! the cluster is available), snapshots are DB cluster snapshots, start and
//! stop are StartDBCluster/StopDBCluster, and delete removes the writer
//! then the cluster. [`Rds::clone_cluster`] is the copy-on-write clone.
//!
//! Standbys (see `standby.rs`): Multi-AZ (ModifyDBInstance,
//! RebootDBInstance with ForceFailover), Aurora Replicas and
//! FailoverDBCluster, the generation tag (AddTagsToResource), and
//! [`Rds::wait_until`], the wait that polls on through a failed poll.

use crate::aws;
use crate::config::RdsConfig;
use crate::names::TAG_PREFIX;
use aws_sdk_rds::types::Tag;
use ogel_plugin_sdk::{BackendError, BackendErrorKind, ComputeState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// What the plugin needs of one DB instance.
#[derive(Clone, Debug)]
pub struct Instance {
    /// DBInstanceIdentifier.
    pub id: String,
    /// DBInstanceStatus.
    pub status: String,
    /// Endpoint address, once RDS has one.
    pub address: Option<String>,
    /// Endpoint port.
    pub port: Option<u16>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// InstanceCreateTime, Unix seconds.
    pub created_unix: u64,
    /// AllocatedStorage, GiB.
    pub storage_gib: u64,
    /// Engine (postgres, aurora-postgresql, …).
    pub engine: String,
    /// Aurora: the writer instance's identifier, once there is one.
    pub writer: Option<String>,
    /// Aurora: the cluster's restorable window (EarliestRestorableTime,
    /// LatestRestorableTime), Unix seconds.
    pub restorable: Option<(i64, i64)>,
    /// DBInstanceArn (Aurora: DBClusterArn): what tags are written to.
    pub arn: Option<String>,
    /// MultiAZ: the instance has a synchronous standby in another AZ.
    pub multi_az: bool,
    /// PendingModifiedValues.MultiAZ: a Multi-AZ change RDS has not
    /// finished applying.
    pub pending_multi_az: Option<bool>,
    /// Pending modifications other than MultiAZ.
    pub pending_other: bool,
    /// AvailabilityZone (the primary's).
    pub availability_zone: Option<String>,
    /// SecondaryAvailabilityZone (the Multi-AZ standby's).
    pub secondary_az: Option<String>,
}

/// Whether instance `i` serves connections: a usable state, or
/// `modifying` for nothing but a Multi-AZ conversion, which RDS makes
/// without an outage (a snapshot of the primary restored into the
/// standby's AZ, then synchronous replication).
pub fn serving(i: &Instance) -> bool {
    phase(&i.status) == Phase::Usable
        || (i.status == "modifying" && i.pending_multi_az.is_some() && !i.pending_other)
}

/// What the plugin needs of one DB snapshot.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// DBSnapshotIdentifier.
    pub id: String,
    /// Status (creating, available, …).
    pub status: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// SnapshotCreateTime, Unix seconds.
    pub created_unix: u64,
    /// PercentProgress.
    pub percent: u64,
    /// AllocatedStorage, GiB.
    pub storage_gib: u64,
}

/// What an instance state means for a compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepts connections (available, backing-up, …).
    Usable,
    /// Stopped: StartDBInstance wakes it.
    Stopped,
    /// Being stopped.
    Stopping,
    /// Being created, started, modified, rebooted, renamed, upgraded, …
    Busy,
    /// Being deleted.
    Deleting,
    /// Needs an operator (failed, storage-full, incompatible-*, …).
    Broken,
}

/// Classifies an RDS DBInstanceStatus.
pub fn phase(status: &str) -> Phase {
    match status {
        "available"
        | "backing-up"
        | "storage-optimization"
        | "configuring-enhanced-monitoring"
        | "configuring-iam-database-auth"
        | "configuring-log-exports"
        | "configuring-activity-stream" => Phase::Usable,
        "stopped" => Phase::Stopped,
        "stopping" => Phase::Stopping,
        "deleting" => Phase::Deleting,
        "failed"
        | "storage-full"
        | "restore-error"
        | "insufficient-capacity"
        | "inaccessible-encryption-credentials"
        | "inaccessible-encryption-credentials-recoverable" => Phase::Broken,
        s if s.starts_with("incompatible-") => Phase::Broken,
        _ => Phase::Busy,
    }
}

/// The compute state an RDS state shows as.
pub fn compute_state(status: &str) -> ComputeState {
    match phase(status) {
        Phase::Usable => ComputeState::Running,
        Phase::Busy => ComputeState::Starting,
        Phase::Stopping | Phase::Deleting => ComputeState::Draining,
        Phase::Stopped | Phase::Broken => ComputeState::Suspended,
    }
}

/// Why a wait ended without reaching its goal.
#[derive(Debug)]
pub enum WaitError {
    /// The bound passed; the instance was in this state.
    Timeout(String),
    /// The instance is gone.
    Gone,
    /// Any other failure (a Broken state, an API error).
    Failed(BackendError),
}

impl From<BackendError> for WaitError {
    fn from(e: BackendError) -> Self {
        WaitError::Failed(e)
    }
}

/// The RDS client of one plugin instance, made on first use.
pub struct Rds {
    config: Arc<RdsConfig>,
    client: OnceCell<aws_sdk_rds::Client>,
}

fn tags_of(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn tag_list(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn secs(t: Option<&aws_smithy_types::DateTime>) -> u64 {
    t.map(|t| t.secs().max(0) as u64).unwrap_or(0)
}

fn instance(i: &aws_sdk_rds::types::DbInstance) -> Instance {
    let pending = i.pending_modified_values();
    let pending_other = pending.is_some_and(|p| {
        let mut rest = p.clone();
        rest.multi_az = None;
        rest != aws_sdk_rds::types::PendingModifiedValues::builder().build()
    });
    Instance {
        id: i.db_instance_identifier().unwrap_or_default().to_string(),
        status: i.db_instance_status().unwrap_or("unknown").to_string(),
        address: i
            .endpoint()
            .and_then(|e| e.address())
            .map(|a| a.to_string()),
        port: i
            .endpoint()
            .and_then(|e| e.port())
            .and_then(|p| u16::try_from(p).ok()),
        tags: tags_of(i.tag_list()),
        created_unix: secs(i.instance_create_time()),
        storage_gib: i.allocated_storage().unwrap_or(0).max(0) as u64,
        engine: i.engine().unwrap_or_default().to_string(),
        writer: None,
        restorable: None,
        arn: i.db_instance_arn().map(str::to_string),
        multi_az: i.multi_az().unwrap_or(false),
        pending_multi_az: pending.and_then(|p| p.multi_az()),
        pending_other,
        availability_zone: i.availability_zone().map(str::to_string),
        secondary_az: i.secondary_availability_zone().map(str::to_string),
    }
}

/// The writer instance of cluster `c` (the member marked as writer, else
/// the first member).
fn writer_of(c: &aws_sdk_rds::types::DbCluster) -> Option<String> {
    let members = c.db_cluster_members();
    members
        .iter()
        .find(|m| m.is_cluster_writer() == Some(true))
        .or_else(|| members.first())
        .and_then(|m| m.db_instance_identifier())
        .map(str::to_string)
}

/// A cluster as the unit serving a compute; `writer_instance` is its
/// writer instance as described (if any).
fn cluster_unit(c: &aws_sdk_rds::types::DbCluster, writer_instance: Option<&Instance>) -> Instance {
    let cluster_status = c.status().unwrap_or("unknown");
    let status = if phase(cluster_status) != Phase::Usable {
        cluster_status.to_string()
    } else {
        match writer_instance {
            Some(w) => w.status.clone(),
            None => NO_WRITER.to_string(),
        }
    };
    let restorable = match (c.earliest_restorable_time(), c.latest_restorable_time()) {
        (Some(e), Some(l)) => Some((e.secs(), l.secs())),
        _ => None,
    };
    Instance {
        id: c.db_cluster_identifier().unwrap_or_default().to_string(),
        status,
        address: c.endpoint().map(str::to_string),
        port: c.port().and_then(|p| u16::try_from(p).ok()),
        tags: tags_of(c.tag_list()),
        created_unix: secs(c.cluster_create_time()),
        storage_gib: c.allocated_storage().unwrap_or(0).max(0) as u64,
        engine: c.engine().unwrap_or_default().to_string(),
        writer: writer_of(c),
        restorable,
        arn: c.db_cluster_arn().map(str::to_string),
        multi_az: c.multi_az().unwrap_or(false),
        pending_multi_az: None,
        pending_other: false,
        availability_zone: writer_instance.and_then(|w| w.availability_zone.clone()),
        secondary_az: None,
    }
}

/// The status of an available Aurora cluster that has no writer instance
/// yet (a Busy phase: the plugin adds the writer).
pub const NO_WRITER: &str = "available-without-writer";

/// Tag on an Aurora writer instance: its cluster. (Writer instances carry
/// no `ogel:prefix` tag: the cluster is what the plugin lists.)
pub const TAG_WRITER_OF: &str = "ogel:writer-of";

/// Tag on an Aurora Replica the plugin added as a standby: its cluster.
pub const TAG_READER_OF: &str = "ogel:reader-of";

/// One instance of an Aurora cluster.
#[derive(Clone, Debug)]
pub struct Member {
    /// DBInstanceIdentifier.
    pub id: String,
    /// IsClusterWriter.
    pub writer: bool,
    /// DBInstanceStatus (`unknown` when DescribeDBInstances did not find it).
    pub status: String,
}

fn cluster_snapshot(s: &aws_sdk_rds::types::DbClusterSnapshot) -> Snapshot {
    Snapshot {
        id: s
            .db_cluster_snapshot_identifier()
            .unwrap_or_default()
            .to_string(),
        status: s.status().unwrap_or("unknown").to_string(),
        tags: tags_of(s.tag_list()),
        created_unix: secs(s.snapshot_create_time()),
        percent: s.percent_progress().unwrap_or(0).clamp(0, 100) as u64,
        storage_gib: s.allocated_storage().unwrap_or(0).max(0) as u64,
    }
}

fn snapshot(s: &aws_sdk_rds::types::DbSnapshot) -> Snapshot {
    Snapshot {
        id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
        status: s.status().unwrap_or("unknown").to_string(),
        tags: tags_of(s.tag_list()),
        created_unix: secs(s.snapshot_create_time()),
        percent: s.percent_progress().unwrap_or(0).clamp(0, 100) as u64,
        storage_gib: s.allocated_storage().unwrap_or(0).max(0) as u64,
    }
}

impl Rds {
    /// A client for `config` (nothing is sent until the first call).
    pub fn new(config: Arc<RdsConfig>) -> Rds {
        Rds {
            config,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&aws_sdk_rds::Client, BackendError> {
        self.client
            .get_or_try_init(|| aws::client(&self.config))
            .await
    }

    /// One page of instances: the API answers (credentials, network).
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.client()
            .await?
            .describe_db_instances()
            .max_records(20)
            .send()
            .await
            .map_err(|e| aws::error("list RDS instances", e))?;
        Ok(())
    }

    /// "RDS instance" or "Aurora cluster": what an identifier names, for messages.
    pub fn unit(&self) -> &'static str {
        if self.config.aurora() {
            "Aurora cluster"
        } else {
            "RDS instance"
        }
    }

    /// The instance `id` (Aurora: the cluster `id`), or `None`.
    pub async fn describe(&self, id: &str) -> Result<Option<Instance>, BackendError> {
        if self.config.aurora() {
            return self.describe_cluster(id).await;
        }
        self.describe_instance(id).await
    }

    /// The DB instance `id`, or `None`.
    pub async fn describe_instance(&self, id: &str) -> Result<Option<Instance>, BackendError> {
        match self
            .client()
            .await?
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_instances().first().map(instance)),
            Err(e) if aws::code(&e) == Some("DBInstanceNotFound") => Ok(None),
            Err(e) => Err(aws::error(&format!("describe RDS instance {id}"), e)),
        }
    }

    /// Every instance this gateway made (tag `ogel:prefix`); Aurora: every cluster.
    pub async fn list(&self) -> Result<Vec<Instance>, BackendError> {
        if self.config.aurora() {
            return self.list_clusters().await;
        }
        let mut pages = self
            .client()
            .await?
            .describe_db_instances()
            .into_paginator()
            .send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws::error("list RDS instances", e))?;
            all.extend(
                page.db_instances()
                    .iter()
                    .map(instance)
                    .filter(|i| i.tags.get(TAG_PREFIX) == Some(&self.config.identifier_prefix)),
            );
        }
        Ok(all)
    }

    /// CreateDBInstance (engine postgres) with the configured shape;
    /// Aurora: CreateDBCluster (its writer comes with [`Rds::add_writer`]).
    pub async fn create(
        &self,
        id: &str,
        master_password: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.create_cluster(id, master_password, tags).await;
        }
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .create_db_instance()
            .db_instance_identifier(id)
            .engine("postgres")
            .db_instance_class(c.instance_class())
            .allocated_storage(c.allocated_storage_gib)
            .master_username(&c.master_username)
            .master_user_password(master_password)
            .copy_tags_to_snapshot(false)
            .set_tags(Some(tag_list(tags)))
            .set_engine_version(c.engine_version.clone())
            .set_storage_type(c.storage_type.clone())
            .set_db_subnet_group_name(c.db_subnet_group_name.clone())
            .set_publicly_accessible(c.publicly_accessible)
            .set_backup_retention_period(c.backup_retention_days);
        if !c.vpc_security_group_ids.is_empty() {
            req = req.set_vpc_security_group_ids(Some(c.vpc_security_group_ids.clone()));
        }
        req.send()
            .await
            .map_err(|e| aws::error(&format!("create RDS instance {id}"), e))?;
        Ok(())
    }

    /// RestoreDBInstanceFromDBSnapshot into a new instance `id`; Aurora:
    /// RestoreDBClusterFromSnapshot into a new cluster `id`.
    pub async fn restore(
        &self,
        snapshot: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.restore_cluster(snapshot, id, tags).await;
        }
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .restore_db_instance_from_db_snapshot()
            .db_snapshot_identifier(snapshot)
            .db_instance_identifier(id)
            .db_instance_class(c.instance_class())
            .set_tags(Some(tag_list(tags)))
            .set_storage_type(c.storage_type.clone())
            .set_db_subnet_group_name(c.db_subnet_group_name.clone())
            .set_publicly_accessible(c.publicly_accessible);
        if !c.vpc_security_group_ids.is_empty() {
            req = req.set_vpc_security_group_ids(Some(c.vpc_security_group_ids.clone()));
        }
        req.send().await.map_err(|e| {
            aws::error(
                &format!("restore snapshot {snapshot} into RDS instance {id}"),
                e,
            )
        })?;
        Ok(())
    }

    /// DeleteDBInstance; a missing or already-deleting instance is fine.
    /// Does not wait. Aurora: the cluster's instances, then the cluster.
    pub async fn delete(&self, id: &str) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.delete_cluster(id).await;
        }
        let mut req = self
            .client()
            .await?
            .delete_db_instance()
            .db_instance_identifier(id)
            .delete_automated_backups(true);
        req = if self.config.final_snapshot {
            let millis = crate::now_millis();
            req.skip_final_snapshot(false)
                .final_db_snapshot_identifier(format!("{id}-final-s{millis}"))
        } else {
            req.skip_final_snapshot(true)
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("DBInstanceNotFound") => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidDBInstanceState") => {
                match self.describe_instance(id).await? {
                    None => Ok(()),
                    Some(i) if i.status == "deleting" => Ok(()),
                    Some(_) => Err(aws::error(&format!("delete RDS instance {id}"), e)),
                }
            }
            Err(e) => Err(aws::error(&format!("delete RDS instance {id}"), e)),
        }
    }

    /// StartDBInstance; an instance that is not stopped is left as it is.
    /// Aurora: StartDBCluster.
    pub async fn start(&self, id: &str) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.start_cluster(id).await;
        }
        match self
            .client()
            .await?
            .start_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidDBInstanceState") => Ok(()),
            Err(e) => Err(aws::error(&format!("start RDS instance {id}"), e)),
        }
    }

    /// StopDBInstance (a clean shutdown); Aurora: StopDBCluster.
    pub async fn stop(&self, id: &str) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.stop_cluster(id).await;
        }
        self.client()
            .await?
            .stop_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| aws::error(&format!("stop RDS instance {id}"), e))?;
        Ok(())
    }

    /// Polls instance `id` until `done` says so, for at most `bound`.
    /// A Broken state fails at once; `on_poll` sees every state.
    pub async fn wait(
        &self,
        id: &str,
        bound: Duration,
        done: impl Fn(Phase) -> bool,
        on_poll: impl Fn(&Instance),
    ) -> Result<Instance, WaitError> {
        let deadline = Instant::now() + bound;
        loop {
            let Some(i) = self.describe(id).await? else {
                return Err(WaitError::Gone);
            };
            on_poll(&i);
            let p = phase(&i.status);
            if done(p) {
                return Ok(i);
            }
            if p == Phase::Broken {
                let kind = if i.status == "storage-full" {
                    BackendErrorKind::OutOfResources
                } else {
                    BackendErrorKind::Unavailable
                };
                return Err(WaitError::Failed(BackendError::new(
                    kind,
                    format!(
                        "{} {id} is \"{}\": it needs attention in the AWS console (see its events)",
                        self.unit(),
                        i.status
                    ),
                )));
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout(i.status));
            }
            tokio::time::sleep(self.config.poll_interval.min(deadline - Instant::now())).await;
        }
    }

    /// Waits until instance `id` is gone, for at most `bound`.
    pub async fn wait_gone(&self, id: &str, bound: Duration) -> Result<(), WaitError> {
        match self.wait(id, bound, |_| false, |_| {}).await {
            Err(WaitError::Gone) => Ok(()),
            Err(WaitError::Failed(e)) if e.kind == BackendErrorKind::Unavailable => {
                // Broken states also end in deletion: keep waiting.
                match self.wait(id, bound, |_| false, |_| {}).await {
                    Err(WaitError::Gone) => Ok(()),
                    Err(e) => Err(e),
                    Ok(i) => Err(WaitError::Timeout(i.status)),
                }
            }
            Err(e) => Err(e),
            Ok(i) => Err(WaitError::Timeout(i.status)),
        }
    }

    /// CreateDBSnapshot of instance `instance`; Aurora: CreateDBClusterSnapshot.
    pub async fn create_snapshot(
        &self,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.create_cluster_snapshot(instance, id, tags).await;
        }
        self.client()
            .await?
            .create_db_snapshot()
            .db_instance_identifier(instance)
            .db_snapshot_identifier(id)
            .set_tags(Some(tag_list(tags)))
            .send()
            .await
            .map_err(|e| {
                aws::error(&format!("take snapshot {id} of RDS instance {instance}"), e)
            })?;
        Ok(())
    }

    /// The snapshot `id`, or `None`.
    pub async fn describe_snapshot(&self, id: &str) -> Result<Option<Snapshot>, BackendError> {
        if self.config.aurora() {
            return self.describe_cluster_snapshot(id).await;
        }
        match self
            .client()
            .await?
            .describe_db_snapshots()
            .db_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_snapshots().first().map(snapshot)),
            Err(e) if aws::code(&e) == Some("DBSnapshotNotFound") => Ok(None),
            Err(e) => Err(aws::error(&format!("describe RDS snapshot {id}"), e)),
        }
    }

    /// Every manual snapshot this gateway made.
    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>, BackendError> {
        if self.config.aurora() {
            return self.list_cluster_snapshots().await;
        }
        let mut pages = self
            .client()
            .await?
            .describe_db_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws::error("list RDS snapshots", e))?;
            all.extend(
                page.db_snapshots()
                    .iter()
                    .map(snapshot)
                    .filter(|s| s.tags.get(TAG_PREFIX) == Some(&self.config.identifier_prefix)),
            );
        }
        Ok(all)
    }

    /// Polls snapshot `id` until available, for at most `bound`.
    pub async fn wait_snapshot(
        &self,
        id: &str,
        bound: Duration,
        on_poll: impl Fn(&Snapshot),
    ) -> Result<Snapshot, WaitError> {
        let deadline = Instant::now() + bound;
        loop {
            let Some(s) = self.describe_snapshot(id).await? else {
                return Err(WaitError::Gone);
            };
            on_poll(&s);
            match s.status.as_str() {
                "available" => return Ok(s),
                "failed" | "error" => {
                    return Err(WaitError::Failed(BackendError::unavailable(format!(
                        "RDS snapshot {id} failed (status \"{}\"); see its events in the AWS console",
                        s.status
                    ))))
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout(s.status));
            }
            tokio::time::sleep(self.config.poll_interval.min(deadline - Instant::now())).await;
        }
    }

    /// DeleteDBSnapshot; a missing one is fine.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), BackendError> {
        if self.config.aurora() {
            return self.delete_cluster_snapshot(id).await;
        }
        match self
            .client()
            .await?
            .delete_db_snapshot()
            .db_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("DBSnapshotNotFound") => Ok(()),
            Err(e) => Err(aws::error(&format!("delete RDS snapshot {id}"), e)),
        }
    }
}

/// Aurora: the DB cluster API.
impl Rds {
    async fn describe_cluster_raw(
        &self,
        id: &str,
    ) -> Result<Option<aws_sdk_rds::types::DbCluster>, BackendError> {
        match self
            .client()
            .await?
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_clusters().first().cloned()),
            Err(e) if aws::code(&e) == Some("DBClusterNotFoundFault") => Ok(None),
            Err(e) => Err(aws::error(&format!("describe Aurora cluster {id}"), e)),
        }
    }

    /// The cluster `id` as the unit serving a compute, or `None`.
    async fn describe_cluster(&self, id: &str) -> Result<Option<Instance>, BackendError> {
        let Some(c) = self.describe_cluster_raw(id).await? else {
            return Ok(None);
        };
        let writer = match writer_of(&c) {
            Some(w) => self.describe_instance(&w).await?,
            None => None,
        };
        Ok(Some(cluster_unit(&c, writer.as_ref())))
    }

    /// Every cluster this gateway made (tag `ogel:prefix`), with its writer.
    async fn list_clusters(&self) -> Result<Vec<Instance>, BackendError> {
        let client = self.client().await?;
        let mut pages = client.describe_db_clusters().into_paginator().send();
        let mut clusters = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws::error("list Aurora clusters", e))?;
            clusters.extend(
                page.db_clusters()
                    .iter()
                    .filter(|c| {
                        tags_of(c.tag_list()).get(TAG_PREFIX)
                            == Some(&self.config.identifier_prefix)
                    })
                    .cloned(),
            );
        }
        if clusters.is_empty() {
            return Ok(Vec::new());
        }
        let mut instances = BTreeMap::new();
        let mut pages = client.describe_db_instances().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws::error("list RDS instances", e))?;
            for i in page.db_instances() {
                let i = instance(i);
                instances.insert(i.id.clone(), i);
            }
        }
        Ok(clusters
            .iter()
            .map(|c| cluster_unit(c, writer_of(c).and_then(|w| instances.get(&w))))
            .collect())
    }

    /// CreateDBCluster (engine aurora-postgresql) with the configured shape.
    async fn create_cluster(
        &self,
        id: &str,
        master_password: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .create_db_cluster()
            .db_cluster_identifier(id)
            .engine(c.engine.name())
            .master_username(&c.master_username)
            .master_user_password(master_password)
            .copy_tags_to_snapshot(false)
            .set_tags(Some(tag_list(tags)))
            .set_engine_version(c.engine_version.clone())
            .set_storage_type(c.storage_type.clone())
            .set_db_subnet_group_name(c.db_subnet_group_name.clone())
            .set_backup_retention_period(c.backup_retention_days);
        if !c.vpc_security_group_ids.is_empty() {
            req = req.set_vpc_security_group_ids(Some(c.vpc_security_group_ids.clone()));
        }
        req.send()
            .await
            .map_err(|e| aws::error(&format!("create Aurora cluster {id}"), e))?;
        Ok(())
    }

    /// RestoreDBClusterFromSnapshot into a new cluster `id`.
    async fn restore_cluster(
        &self,
        snapshot: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .restore_db_cluster_from_snapshot()
            .snapshot_identifier(snapshot)
            .db_cluster_identifier(id)
            .engine(c.engine.name())
            .set_tags(Some(tag_list(tags)))
            .set_engine_version(c.engine_version.clone())
            .set_db_subnet_group_name(c.db_subnet_group_name.clone());
        if !c.vpc_security_group_ids.is_empty() {
            req = req.set_vpc_security_group_ids(Some(c.vpc_security_group_ids.clone()));
        }
        req.send().await.map_err(|e| {
            aws::error(
                &format!("restore cluster snapshot {snapshot} into Aurora cluster {id}"),
                e,
            )
        })?;
        Ok(())
    }

    /// RestoreDBClusterToPointInTime from cluster `source` into a new
    /// cluster `id`: with `at` unset, the copy-on-write clone of the
    /// source as it is now (`RestoreType=copy-on-write`,
    /// `UseLatestRestorableTime`); with `at`, a full copy of the source at
    /// that time (RDS refuses `RestoreToTime` with copy-on-write).
    pub async fn clone_cluster(
        &self,
        source: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
        at: Option<aws_smithy_types::DateTime>,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .restore_db_cluster_to_point_in_time()
            .source_db_cluster_identifier(source)
            .db_cluster_identifier(id)
            .set_tags(Some(tag_list(tags)))
            .set_db_subnet_group_name(c.db_subnet_group_name.clone());
        req = match at {
            None => req
                .restore_type("copy-on-write")
                .use_latest_restorable_time(true),
            Some(at) => req.restore_type("full-copy").restore_to_time(at),
        };
        if !c.vpc_security_group_ids.is_empty() {
            req = req.set_vpc_security_group_ids(Some(c.vpc_security_group_ids.clone()));
        }
        let what = if at.is_none() {
            "clone"
        } else {
            "restore to a point in time"
        };
        req.send().await.map_err(|e| {
            aws::error(
                &format!("{what} Aurora cluster {source} into cluster {id}"),
                e,
            )
        })?;
        Ok(())
    }

    /// Waits (at most `bound`) for cluster `id` to be available, then
    /// creates its writer instance (same identifier as the cluster: DB
    /// instances and clusters are separate namespaces) unless it has one.
    pub async fn add_writer(&self, id: &str, bound: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now() + bound;
        let cluster = loop {
            let Some(c) = self.describe_cluster_raw(id).await? else {
                return Err(WaitError::Gone);
            };
            let status = c.status().unwrap_or("unknown").to_string();
            match phase(&status) {
                Phase::Usable => break c,
                Phase::Broken => {
                    return Err(WaitError::Failed(BackendError::unavailable(format!(
                        "Aurora cluster {id} is \"{status}\": it needs attention in the AWS console (see its events)"
                    ))))
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout(status));
            }
            tokio::time::sleep(self.config.poll_interval.min(deadline - Instant::now())).await;
        };
        if writer_of(&cluster).is_some() {
            return Ok(());
        }
        Ok(self
            .create_member(id, id, TAG_WRITER_OF, "the writer instance of")
            .await?)
    }

    /// Deletes the cluster's instances, then the cluster (RDS accepts the
    /// cluster's deletion once its instances are `deleting`). A missing or
    /// already-deleting cluster is fine. Does not wait.
    async fn delete_cluster(&self, id: &str) -> Result<(), BackendError> {
        let Some(cluster) = self.describe_cluster_raw(id).await? else {
            return Ok(());
        };
        if cluster.status() == Some("deleting") {
            return Ok(());
        }
        for m in cluster.db_cluster_members() {
            let Some(member) = m.db_instance_identifier() else {
                continue;
            };
            // Aurora instances take no final snapshot (the cluster does).
            match self
                .client()
                .await?
                .delete_db_instance()
                .db_instance_identifier(member)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if aws::code(&e) == Some("DBInstanceNotFound") => {}
                Err(e) if aws::code(&e) == Some("InvalidDBInstanceState") => {
                    match self.describe_instance(member).await? {
                        None => {}
                        Some(i) if i.status == "deleting" => {}
                        Some(_) => {
                            return Err(aws::error(
                                &format!("delete instance {member} of Aurora cluster {id}"),
                                e,
                            ))
                        }
                    }
                }
                Err(e) => {
                    return Err(aws::error(
                        &format!("delete instance {member} of Aurora cluster {id}"),
                        e,
                    ))
                }
            }
        }
        let mut req = self
            .client()
            .await?
            .delete_db_cluster()
            .db_cluster_identifier(id);
        req = if self.config.final_snapshot {
            let millis = crate::now_millis();
            req.skip_final_snapshot(false)
                .final_db_snapshot_identifier(format!("{id}-final-s{millis}"))
        } else {
            req.skip_final_snapshot(true)
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("DBClusterNotFoundFault") => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidDBClusterStateFault") => {
                match self.describe_cluster_raw(id).await? {
                    None => Ok(()),
                    Some(c) if c.status() == Some("deleting") => Ok(()),
                    Some(_) => Err(aws::error(&format!("delete Aurora cluster {id}"), e)),
                }
            }
            Err(e) => Err(aws::error(&format!("delete Aurora cluster {id}"), e)),
        }
    }

    /// StartDBCluster; a cluster that is not stopped is left as it is.
    async fn start_cluster(&self, id: &str) -> Result<(), BackendError> {
        match self
            .client()
            .await?
            .start_db_cluster()
            .db_cluster_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidDBClusterStateFault") => Ok(()),
            Err(e) => Err(aws::error(&format!("start Aurora cluster {id}"), e)),
        }
    }

    /// StopDBCluster (stops its instances).
    async fn stop_cluster(&self, id: &str) -> Result<(), BackendError> {
        self.client()
            .await?
            .stop_db_cluster()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(|e| aws::error(&format!("stop Aurora cluster {id}"), e))?;
        Ok(())
    }

    async fn create_cluster_snapshot(
        &self,
        cluster: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        self.client()
            .await?
            .create_db_cluster_snapshot()
            .db_cluster_identifier(cluster)
            .db_cluster_snapshot_identifier(id)
            .set_tags(Some(tag_list(tags)))
            .send()
            .await
            .map_err(|e| {
                aws::error(
                    &format!("take snapshot {id} of Aurora cluster {cluster}"),
                    e,
                )
            })?;
        Ok(())
    }

    async fn describe_cluster_snapshot(&self, id: &str) -> Result<Option<Snapshot>, BackendError> {
        match self
            .client()
            .await?
            .describe_db_cluster_snapshots()
            .db_cluster_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_cluster_snapshots().first().map(cluster_snapshot)),
            Err(e) if aws::code(&e) == Some("DBClusterSnapshotNotFoundFault") => Ok(None),
            Err(e) => Err(aws::error(
                &format!("describe Aurora cluster snapshot {id}"),
                e,
            )),
        }
    }

    async fn list_cluster_snapshots(&self) -> Result<Vec<Snapshot>, BackendError> {
        let mut pages = self
            .client()
            .await?
            .describe_db_cluster_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws::error("list Aurora cluster snapshots", e))?;
            all.extend(
                page.db_cluster_snapshots()
                    .iter()
                    .map(cluster_snapshot)
                    .filter(|s| s.tags.get(TAG_PREFIX) == Some(&self.config.identifier_prefix)),
            );
        }
        Ok(all)
    }

    async fn delete_cluster_snapshot(&self, id: &str) -> Result<(), BackendError> {
        match self
            .client()
            .await?
            .delete_db_cluster_snapshot()
            .db_cluster_snapshot_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("DBClusterSnapshotNotFoundFault") => Ok(()),
            Err(e) => Err(aws::error(
                &format!("delete Aurora cluster snapshot {id}"),
                e,
            )),
        }
    }
}

/// Standbys: Multi-AZ instances and Aurora Replicas, failovers, tags.
impl Rds {
    /// ModifyDBInstance `MultiAZ=on`, `ApplyImmediately=true`. An instance
    /// busy with something else is `Unavailable` (retry), not an error of
    /// the request.
    pub async fn set_multi_az(&self, id: &str, on: bool) -> Result<(), BackendError> {
        let what = if on {
            format!("make RDS instance {id} Multi-AZ")
        } else {
            format!("make RDS instance {id} Single-AZ")
        };
        match self
            .client()
            .await?
            .modify_db_instance()
            .db_instance_identifier(id)
            .multi_az(on)
            .apply_immediately(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidDBInstanceState") => {
                Err(BackendError::unavailable(format!(
                    "RDS cannot {what} now: the instance is busy with another change ({}); retry once it is available",
                    aws::message(&e)
                )))
            }
            Err(e) => Err(aws::error(&format!("{what} (ModifyDBInstance)"), e)),
        }
    }

    /// RebootDBInstance with `ForceFailover=true`: RDS shuts the primary
    /// down and its Multi-AZ standby takes over (the old primary's host
    /// becomes the new standby).
    pub async fn reboot_with_failover(&self, id: &str) -> Result<(), BackendError> {
        match self
            .client()
            .await?
            .reboot_db_instance()
            .db_instance_identifier(id)
            .force_failover(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidParameterCombination") => {
                Err(BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    format!(
                        "RDS refused to fail RDS instance {id} over: it is not Multi-AZ ({}); add a standby first",
                        aws::message(&e)
                    ),
                ))
            }
            Err(e) if aws::code(&e) == Some("InvalidDBInstanceState") => {
                Err(BackendError::unavailable(format!(
                    "RDS cannot fail RDS instance {id} over now: it is not available ({}); retry once it is",
                    aws::message(&e)
                )))
            }
            Err(e) => Err(aws::error(
                &format!("fail RDS instance {id} over (RebootDBInstance with ForceFailover)"),
                e,
            )),
        }
    }

    /// FailoverDBCluster to the Aurora Replica `target`.
    pub async fn failover_cluster(&self, id: &str, target: &str) -> Result<(), BackendError> {
        match self
            .client()
            .await?
            .failover_db_cluster()
            .db_cluster_identifier(id)
            .target_db_instance_identifier(target)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    aws::code(&e),
                    Some("InvalidDBClusterStateFault" | "InvalidDBInstanceState")
                ) =>
            {
                Err(BackendError::unavailable(format!(
                    "RDS cannot fail Aurora cluster {id} over to {target} now ({}); retry once the cluster and the replica are available",
                    aws::message(&e)
                )))
            }
            Err(e) => Err(aws::error(
                &format!("fail Aurora cluster {id} over to {target} (FailoverDBCluster)"),
                e,
            )),
        }
    }

    /// AddTagsToResource on `arn` (a tag that exists gets the new value).
    pub async fn tag(
        &self,
        arn: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        self.client()
            .await?
            .add_tags_to_resource()
            .resource_name(arn)
            .set_tags(Some(tag_list(tags)))
            .send()
            .await
            .map_err(|e| aws::error(&format!("tag {arn}"), e))?;
        Ok(())
    }

    /// The instances of Aurora cluster `id` with their states (`None`: no
    /// such cluster).
    pub async fn members(&self, id: &str) -> Result<Option<Vec<Member>>, BackendError> {
        let Some(c) = self.describe_cluster_raw(id).await? else {
            return Ok(None);
        };
        let mut members = Vec::new();
        for m in c.db_cluster_members() {
            let Some(member) = m.db_instance_identifier() else {
                continue;
            };
            let status = self
                .describe_instance(member)
                .await?
                .map(|i| i.status)
                .unwrap_or_else(|| "unknown".to_string());
            members.push(Member {
                id: member.to_string(),
                writer: m.is_cluster_writer() == Some(true),
                status,
            });
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Some(members))
    }

    /// CreateDBInstance of an Aurora Replica `id` in cluster `cluster`
    /// (same class as the writer; tag `ogel:reader-of`).
    pub async fn add_reader(&self, cluster: &str, id: &str) -> Result<(), BackendError> {
        self.create_member(cluster, id, TAG_READER_OF, "Aurora Replica of")
            .await
    }

    /// CreateDBInstance `id` in Aurora cluster `cluster`, tagged `tag` =
    /// the cluster (the writer's and the replicas' class are the same).
    /// One that exists already is fine.
    async fn create_member(
        &self,
        cluster: &str,
        id: &str,
        tag: &str,
        role: &str,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let tags = BTreeMap::from([(tag.to_string(), cluster.to_string())]);
        match self
            .client()
            .await?
            .create_db_instance()
            .db_instance_identifier(id)
            .db_cluster_identifier(cluster)
            .engine(c.engine.name())
            .db_instance_class(c.instance_class())
            .set_publicly_accessible(c.publicly_accessible)
            .set_tags(Some(tag_list(&tags)))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("DBInstanceAlreadyExists") => Ok(()),
            Err(e) => Err(aws::error(
                &format!("create instance {id}, {role} Aurora cluster {cluster}"),
                e,
            )),
        }
    }

    /// DeleteDBInstance of one instance, without a final snapshot (an
    /// Aurora Replica: the cluster keeps the data). A missing or
    /// already-deleting one is fine. Does not wait.
    pub async fn delete_member(&self, id: &str) -> Result<(), BackendError> {
        match self
            .client()
            .await?
            .delete_db_instance()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if aws::code(&e) == Some("DBInstanceNotFound") => Ok(()),
            Err(e) if aws::code(&e) == Some("InvalidDBInstanceState") => {
                match self.describe_instance(id).await? {
                    None => Ok(()),
                    Some(i) if i.status == "deleting" => Ok(()),
                    Some(_) => Err(aws::error(&format!("delete instance {id}"), e)),
                }
            }
            Err(e) => Err(aws::error(&format!("delete instance {id}"), e)),
        }
    }

    /// Polls `id` (an instance; Aurora: the cluster, with `member` a DB
    /// instance of it instead) until `done` says so, for at most `bound`.
    /// Unlike [`Rds::wait`], an `Unavailable` error of a poll (throttling
    /// still failing after the SDK's retries, the API unreachable for a
    /// moment) does not end the wait: a failover in progress is not
    /// abandoned for one failed DescribeDB* call; the last such error is
    /// returned only if the bound passes. A Broken state fails at once.
    pub async fn wait_until(
        &self,
        id: &str,
        member: bool,
        bound: Duration,
        mut done: impl FnMut(&Instance) -> bool,
    ) -> Result<Instance, WaitError> {
        let deadline = Instant::now() + bound;
        let mut last_status = "unknown".to_string();
        loop {
            let polled = if member {
                self.describe_instance(id).await
            } else {
                self.describe(id).await
            };
            match polled {
                Ok(None) => return Err(WaitError::Gone),
                Ok(Some(i)) => {
                    if done(&i) {
                        return Ok(i);
                    }
                    if phase(&i.status) == Phase::Broken {
                        return Err(WaitError::Failed(BackendError::unavailable(format!(
                            "{} {id} is \"{}\": it needs attention in the AWS console (see its events)",
                            if member { "RDS instance" } else { self.unit() },
                            i.status
                        ))));
                    }
                    last_status = i.status;
                }
                Err(e) if e.kind == BackendErrorKind::Unavailable => {
                    if Instant::now() >= deadline {
                        return Err(WaitError::Failed(e));
                    }
                    tracing::warn!(id, error = %e, "a poll failed; polling on");
                }
                Err(e) => return Err(WaitError::Failed(e)),
            }
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout(last_status));
            }
            tokio::time::sleep(self.config.poll_interval.min(deadline - Instant::now())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_compute_states() {
        assert_eq!(compute_state("available"), ComputeState::Running);
        assert_eq!(compute_state("backing-up"), ComputeState::Running);
        assert_eq!(compute_state("starting"), ComputeState::Starting);
        assert_eq!(compute_state("creating"), ComputeState::Starting);
        assert_eq!(compute_state("modifying"), ComputeState::Starting);
        assert_eq!(compute_state("stopping"), ComputeState::Draining);
        assert_eq!(compute_state("stopped"), ComputeState::Suspended);
        assert_eq!(phase("incompatible-parameters"), Phase::Broken);
        assert_eq!(phase("storage-full"), Phase::Broken);
        assert_eq!(phase("rebooting"), Phase::Busy);
    }
}
