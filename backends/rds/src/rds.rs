//! The RDS control plane: DB instances and DB snapshots (create, describe,
//! delete, start, stop, restore) through aws-sdk-rds, and the bounded waits
//! on their states. Knows RDS's state names and what each means for a
//! compute; knows nothing of Postgres.

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

    /// The instance `id`, or `None`.
    pub async fn describe(&self, id: &str) -> Result<Option<Instance>, BackendError> {
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

    /// Every instance this gateway made (tag `ogel:prefix`).
    pub async fn list(&self) -> Result<Vec<Instance>, BackendError> {
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

    /// CreateDBInstance (engine postgres) with the configured shape.
    pub async fn create(
        &self,
        id: &str,
        master_password: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .create_db_instance()
            .db_instance_identifier(id)
            .engine("postgres")
            .db_instance_class(&c.instance_class)
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

    /// RestoreDBInstanceFromDBSnapshot into a new instance `id`.
    pub async fn restore(
        &self,
        snapshot: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let mut req = self
            .client()
            .await?
            .restore_db_instance_from_db_snapshot()
            .db_snapshot_identifier(snapshot)
            .db_instance_identifier(id)
            .db_instance_class(&c.instance_class)
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
    /// Does not wait.
    pub async fn delete(&self, id: &str) -> Result<(), BackendError> {
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
                match self.describe(id).await? {
                    None => Ok(()),
                    Some(i) if i.status == "deleting" => Ok(()),
                    Some(_) => Err(aws::error(&format!("delete RDS instance {id}"), e)),
                }
            }
            Err(e) => Err(aws::error(&format!("delete RDS instance {id}"), e)),
        }
    }

    /// StartDBInstance; an instance that is not stopped is left as it is.
    pub async fn start(&self, id: &str) -> Result<(), BackendError> {
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

    /// StopDBInstance (a clean shutdown).
    pub async fn stop(&self, id: &str) -> Result<(), BackendError> {
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
                        "RDS instance {id} is \"{}\": it needs attention in the AWS console (see its events)",
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

    /// CreateDBSnapshot of instance `instance`.
    pub async fn create_snapshot(
        &self,
        instance: &str,
        id: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
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
