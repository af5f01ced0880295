//! `rds`: the OgelBase backend plugin that puts each database on its own
//! AWS RDS for PostgreSQL DB instance, made and driven through aws-sdk-rds.
//!
//! # Mapping
//!
//! - A database `shop` is the DB instance `ogel-shop-<hash>` (engine
//!   `postgres`): RDS identifiers allow only letters, digits and single
//!   hyphens, so the identifier is a readable part plus 8 hex characters of
//!   a hash of the exact names (see [`names`]); the exact names are in the
//!   instance's tags (`ogel:database`, `ogel:branch`, `ogel:owner`,
//!   `ogel:dbname`, `ogel:prefix`). Inside the instance the plugin creates
//!   the owner role (`CREATE ROLE … LOGIN PASSWORD <SCRAM verifier>`) and
//!   the database `shop` owned by it, closed to PUBLIC — as the
//!   out-of-tree `external` example does on a shared server.
//! - A branch `shop@dev` is its own instance, `ogel-shop-dev-<hash>`,
//!   restored from a fresh DB snapshot of its parent (capability
//!   `branching: snapshot_copy`: minutes, a full copy). Roles and
//!   passwords are the parent's, as the snapshot holds them.
//! - Snapshots are manual DB snapshots `<instance>-s<unix ms>`; a restore
//!   makes a new instance. Restoring into a branch that exists makes a new
//!   instance first and deletes the old one only once the new one is
//!   available, so a failed restore leaves the branch as it was.
//! - Scale to zero: `suspend` is StopDBInstance, waking is
//!   StartDBInstance. RDS takes minutes to start an instance, so
//!   `ensure_running` waits at most `start_timeout` and then answers
//!   `Unavailable` ("… is starting; retry shortly") instead of holding the
//!   client; the start goes on at RDS and a later connection finds it
//!   running. (RDS starts an instance by itself after 7 days stopped.)
//! - Point in time: not offered for instances (`point_in_time: false`).
//!   `RestoreDBInstanceToPointInTime` would be the path for RDS instances.
//! - Standbys (`standby: true`): the instance's Multi-AZ standby
//!   (ModifyDBInstance `MultiAZ`), taken over with RebootDBInstance
//!   `ForceFailover`; the generation is kept in the tag
//!   `ogel:generation`. See [`standby`].
//!
//! ## Aurora (`engine = "aurora-postgresql"`)
//!
//! - A database `shop` is the DB cluster `ogel-shop-<hash>` (CreateDBCluster,
//!   engine `aurora-postgresql`, the same master user and password) plus
//!   its writer instance (CreateDBInstance with `DBClusterIdentifier`, same
//!   identifier as the cluster, tag `ogel:writer-of`), made once the cluster
//!   is available. The cluster carries the tags; the endpoint is the
//!   cluster's writer endpoint (through `endpoint_overrides`). Owner role
//!   and database are made inside as for an instance.
//! - A branch is a copy-on-write clone of its parent's cluster:
//!   RestoreDBClusterToPointInTime with `RestoreType=copy-on-write` and
//!   `UseLatestRestorableTime`, then a writer instance in the new cluster
//!   (capability `branching: copy_on_write`: no `--allow-slow`). A failed
//!   clone deletes the partial cluster.
//! - A branch at a timestamp is RestoreDBClusterToPointInTime with
//!   `RestoreToTime` — as `RestoreType=full-copy`, since RDS refuses
//!   `RestoreToTime` with copy-on-write — within the parent's restorable
//!   window (`point_in_time: true`, except on a shared data server, which
//!   cannot reproduce past data and so refuses it).
//! - Snapshots are manual DB cluster snapshots (CreateDBClusterSnapshot,
//!   RestoreDBClusterFromSnapshot + a writer). Suspend/wake are
//!   StopDBCluster/StartDBCluster. Delete removes the writer instance and
//!   then the cluster.
//! - On a shared data server a clone's data is a `CREATE DATABASE …
//!   TEMPLATE` copy of the parent's database, as for snapshot restores.
//! - Standbys are Aurora Replicas (reader instances of the cluster),
//!   taken over with FailoverDBCluster. See [`standby`].
//!
//! # Configuration (`[backends.rds]`)
//!
//! See [`config::RdsConfig`] for every key. The AWS side uses the standard
//! chain (environment, profile, web identity, container and instance
//! roles); `region`, `profile` and `endpoint_url` override it. `secret`
//! (required) derives every password (see [`secrets`]): the master
//! password of every instance (one per gateway: a restored instance keeps
//! its source's master password) and each owner's. Change it and the
//! plugin can no longer log in to the instances it made.
//!
//! `tls` (default true) makes the gateway and the plugin connect to
//! instances with verified TLS against `ca_file` (the RDS CA bundle);
//! `endpoint_overrides` maps an instance host (or `*.suffix`) to the
//! `host:port` that reaches it, while TLS still verifies the RDS name.
//!
//! ## The shared data server (`shared_data_server = true`)
//!
//! For tests (moto as the control plane, one local Postgres as the data
//! path) or a single tunnel: every instance endpoint reaches the same
//! Postgres server. Nothing copies data there when RDS "restores" a
//! snapshot, so the plugin stands in for it: a snapshot's data is a
//! database named after the snapshot, copied with `CREATE DATABASE …
//! TEMPLATE` (ending the source's other sessions first, as a template
//! copy requires), and a restored instance's database is a copy of that,
//! named after the new instance (tag `ogel:dbname`). On real RDS
//! (`false`, the default) none of this happens: the snapshot holds the
//! data and the database keeps its name in every instance.
//!
//! # IAM
//!
//! rds:CreateDBInstance, DescribeDBInstances, DeleteDBInstance,
//! StartDBInstance, StopDBInstance, CreateDBSnapshot, DescribeDBSnapshots,
//! DeleteDBSnapshot, RestoreDBInstanceFromDBSnapshot, and AddTagsToResource
//! (RDS requires it for the tags given on create and restore; standbys
//! write the generation with it). Standbys add ModifyDBInstance and
//! RebootDBInstance. Aurora adds
//! CreateDBCluster, DescribeDBClusters, DeleteDBCluster, StartDBCluster,
//! StopDBCluster, RestoreDBClusterToPointInTime, CreateDBClusterSnapshot,
//! DescribeDBClusterSnapshots, DeleteDBClusterSnapshot,
//! RestoreDBClusterFromSnapshot and, for standbys, FailoverDBCluster.
//!
//! # Secrets
//!
//! AWS keys are the SDK's and never pass through this crate's messages;
//! the master and owner passwords are [`secrets::Password`]s, whose
//! `Debug`/`Display` print `<redacted>`; errors, logs and `describe()`
//! name instances, hosts and states only.

#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod aws;
pub mod config;
pub mod endpoints;
pub mod names;
pub mod rds;
pub mod secrets;
pub mod sql;
pub mod standby;

use crate::config::RdsConfig;
use crate::names::{
    check_branch, check_compute, check_database, check_role, instance_id, replacement_id,
    snapshot_id, TAG_BRANCH, TAG_DATABASE, TAG_DBNAME, TAG_GENERATION, TAG_OWNER, TAG_PREFIX,
};
use crate::rds::{Instance, Phase, Rds, WaitError};
use crate::secrets::{Password, Secret};
use ogel_plugin_sdk::{
    Backend, BackendError, BackendErrorKind, BranchPoint, BranchSpec, Branching, Capabilities,
    ComputeEndpoint, ComputeName, ComputeState, ComputeStatus, ComputeTls, Credentials,
    DatabaseSpec, Progress, SnapshotInfo, StandbyStatus, Takeover,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

ogel_plugin_sdk::export_backend!("rds", RdsBackend::from_config);

/// Tag on a snapshot made as the base of a branch: the branch's name.
/// Such snapshots are internal (not listed) and go with their branch.
const TAG_BASE_OF: &str = "ogel:base-of";

/// Milliseconds since the Unix epoch (the kit's clock), for unique names.
pub(crate) fn now_millis() -> u128 {
    u128::from(ogel_plugin_kit::time::unix_millis())
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 60 && d.as_secs().is_multiple_of(60) {
        format!("{} min", d.as_secs() / 60)
    } else if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The RDS backend.
pub struct RdsBackend {
    config: Arc<RdsConfig>,
    rds: Rds,
    secret: Secret,
    ca_pem: Option<String>,
    progress: Mutex<HashMap<ComputeName, Progress>>,
    /// Standby readings, reused for [`standby::STATUS_TTL`].
    standby_cache: Mutex<StandbyCache>,
}

type StandbyCache = HashMap<ComputeName, (Instant, Option<StandbyStatus>)>;

impl RdsBackend {
    /// The plugin constructor: checks the configuration, reads `ca_file`;
    /// does not call AWS.
    pub fn from_config(value: serde_json::Value) -> Result<Self, BackendError> {
        let config = RdsConfig::from_json(value)?;
        let ca_pem = match (&config.ca_file, config.tls) {
            (Some(path), true) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    config::invalid(format!(
                        "invalid [backends.rds] configuration: cannot read `ca_file` {path}: {e}"
                    ))
                })?;
                sql::tls_config(&pem)?;
                Some(pem)
            }
            _ => None,
        };
        let secret = Secret::new(&config.secret);
        let config = Arc::new(config);
        Ok(RdsBackend {
            rds: Rds::new(config.clone()),
            config,
            secret,
            ca_pem,
            progress: Mutex::new(HashMap::new()),
            standby_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The master password of the instances (for a test data server that
    /// must accept it; never logged).
    pub fn master_password(&self) -> Password {
        self.secret.master_password(&self.config.master_username)
    }

    /// The instance identifier of `database`'s `branch`.
    pub fn instance_id(&self, database: &str, branch: &str) -> String {
        instance_id(&self.config.identifier_prefix, database, branch)
    }

    fn set_progress(&self, compute: &ComputeName, p: Option<Progress>) {
        if let Ok(mut map) = self.progress.lock() {
            match p {
                Some(p) => {
                    map.insert(compute.clone(), p);
                }
                None => {
                    map.remove(compute);
                }
            }
        }
    }

    fn tags(
        &self,
        database: &str,
        branch: &str,
        owner: &str,
        dbname: &str,
    ) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                TAG_PREFIX.to_string(),
                self.config.identifier_prefix.clone(),
            ),
            (TAG_DATABASE.to_string(), database.to_string()),
            (TAG_BRANCH.to_string(), branch.to_string()),
            (TAG_OWNER.to_string(), owner.to_string()),
            (TAG_DBNAME.to_string(), dbname.to_string()),
        ])
    }

    /// The instance serving `database@branch`: the one at its identifier,
    /// else (after a restore replaced it) the newest one tagged with it.
    async fn find(&self, database: &str, branch: &str) -> Result<Option<Instance>, BackendError> {
        let id = self.instance_id(database, branch);
        if let Some(i) = self.rds.describe(&id).await? {
            if i.status != "deleting" {
                return Ok(Some(i));
            }
        }
        Ok(self
            .rds
            .list()
            .await?
            .into_iter()
            .filter(|i| {
                i.status != "deleting"
                    && i.tags.get(TAG_DATABASE).map(String::as_str) == Some(database)
                    && i.tags.get(TAG_BRANCH).map(String::as_str) == Some(branch)
            })
            .max_by_key(|i| (i.created_unix, i.id.clone())))
    }

    async fn existing(&self, database: &str, branch: &str) -> Result<Instance, BackendError> {
        self.find(database, branch).await?.ok_or_else(|| {
            if branch == "main" {
                BackendError::not_found(format!(
                    "database \"{database}\" has no RDS instance (expected {})",
                    self.instance_id(database, branch)
                ))
            } else {
                BackendError::not_found(format!(
                    "branch \"{branch}\" of \"{database}\" has no RDS instance"
                ))
            }
        })
    }

    /// Where `i` is reached: (host, port) after `endpoint_overrides`, and the RDS host.
    fn address(&self, i: &Instance) -> Result<(String, u16, String), BackendError> {
        let rds_host = i.address.clone().ok_or_else(|| {
            BackendError::unavailable(format!(
                "{} {} has no endpoint yet (status \"{}\"); retry shortly",
                self.rds.unit(),
                i.id,
                i.status
            ))
        })?;
        let port = i.port.unwrap_or(5432);
        let (host, port) = endpoints::resolve(&self.config.endpoint_overrides, &rds_host, port);
        Ok((host, port, rds_host))
    }

    /// A master connection to instance `i`.
    async fn master(&self, i: &Instance) -> Result<tokio_postgres::Client, BackendError> {
        let (host, port, rds_host) = self.address(i)?;
        let password = self.master_password();
        sql::connect(&sql::Target {
            rds_host: &rds_host,
            host: &host,
            port,
            user: &self.config.master_username,
            password: &password,
            dbname: &self.config.master_database,
            tls_roots: self.ca_pem.as_deref(),
            timeout: self.config.connect_timeout,
        })
        .await
    }

    fn endpoint(&self, database: &str, i: &Instance) -> Result<ComputeEndpoint, BackendError> {
        let (host, port, rds_host) = self.address(i)?;
        let owner = i
            .tags
            .get(TAG_OWNER)
            .cloned()
            .unwrap_or_else(|| format!("{database}_owner"));
        let dbname = i
            .tags
            .get(TAG_DBNAME)
            .cloned()
            .unwrap_or_else(|| database.to_string());
        let password = self.secret.owner_password(database, &owner);
        Ok(ComputeEndpoint {
            host,
            port,
            database: dbname,
            generation: standby::generation(i),
            credentials: Credentials::Password {
                user: owner,
                password: password.expose().to_string(),
            },
            read_only: None,
            tls: self.ca_pem.as_ref().map(|pem| ComputeTls {
                server_name: rds_host,
                ca_pem: Some(pem.clone()),
            }),
        })
    }

    /// Waits for a new or restored instance to be usable, reporting progress.
    async fn wait_created(
        &self,
        compute: &ComputeName,
        id: &str,
        what: &str,
    ) -> Result<Instance, BackendError> {
        let bound = self.config.create_timeout;
        let started = std::time::Instant::now();
        let mut result = Ok(());
        if self.config.aurora() {
            result = self.rds.add_writer(id, bound).await;
        }
        let unit = self.rds.unit();
        let result = match result {
            Err(e) => Err(e),
            Ok(()) => {
                self.rds
                    .wait(
                        id,
                        bound.saturating_sub(started.elapsed()),
                        |p| p == Phase::Usable,
                        |i| {
                            self.set_progress(
                                compute,
                                Some(Progress {
                                    done_bytes: 0,
                                    total_bytes: i.storage_gib << 30,
                                }),
                            )
                        },
                    )
                    .await
            }
        };
        match result {
            Ok(i) => Ok(i),
            Err(WaitError::Timeout(status)) => Err(BackendError::unavailable(format!(
                "{unit} {id} was still \"{status}\" after {} while {what}; it has been deleted: retry, or raise `create_timeout`",
                human(bound)
            ))),
            Err(WaitError::Gone) => Err(BackendError::unavailable(format!(
                "{unit} {id} disappeared while {what} (deleted by someone else?)"
            ))),
            Err(WaitError::Failed(e)) => Err(e),
        }
    }

    /// Deletes instance `id` after a failed create/restore and waits until
    /// it is gone, so a retry does not trip over it.
    async fn undo_instance(&self, id: &str) {
        if let Err(e) = self.rds.delete(id).await {
            tracing::error!(instance = id, error = %e, "could not delete the instance of a failed create");
            return;
        }
        if let Err(e) = self.rds.wait_gone(id, self.config.delete_timeout).await {
            tracing::warn!(instance = id, error = ?e, "the instance of a failed create is not gone yet");
        }
    }

    /// On a shared data server: drops `dbname` (best effort).
    async fn drop_shared(&self, via: &Instance, dbnames: &[String]) {
        if !self.config.shared_data_server || dbnames.is_empty() {
            return;
        }
        match self.master(via).await {
            Ok(client) => {
                for name in dbnames {
                    if let Err(e) = sql::drop_database(&client, name).await {
                        tracing::warn!(database = %name, error = %e, "could not drop a database on the shared data server");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not reach the shared data server to clean up")
            }
        }
    }

    async fn create_inner(
        &self,
        id: &str,
        spec: &DatabaseSpec,
        made: &mut (bool, bool),
    ) -> Result<(), BackendError> {
        let instance = self
            .wait_created(&ComputeName::main(&spec.name), id, "it was being created")
            .await?;
        let client = self.master(&instance).await?;
        if self.config.shared_data_server && sql::database_exists(&client, &spec.name).await? {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!(
                    "database \"{}\" already exists on the shared data server",
                    spec.name
                ),
            ));
        }
        let password = self.secret.owner_password(&spec.name, &spec.owner);
        sql::create_owner(&client, &spec.owner, &password).await?;
        made.0 = true;
        sql::create_database(&client, &spec.name, &spec.owner, None).await?;
        made.1 = true;
        Ok(())
    }

    /// Makes instance `target` (tags `tags`) from snapshot `snapshot` and,
    /// on a shared data server, its data copy. On error, nothing is left.
    async fn restore_into(
        &self,
        compute: &ComputeName,
        snapshot: &rds::Snapshot,
        target: &str,
        mut tags: BTreeMap<String, String>,
    ) -> Result<Instance, BackendError> {
        let dbname = if self.config.shared_data_server {
            target.to_string()
        } else {
            snapshot
                .tags
                .get(TAG_DBNAME)
                .cloned()
                .unwrap_or_else(|| tags.get(TAG_DATABASE).cloned().unwrap_or_default())
        };
        tags.insert(TAG_DBNAME.to_string(), dbname.clone());
        self.rds.restore(&snapshot.id, target, &tags).await?;
        let result = async {
            let i = self
                .wait_created(compute, target, "it was being restored from a snapshot")
                .await?;
            if self.config.shared_data_server {
                let source = snapshot.tags.get(TAG_DBNAME).cloned().unwrap_or_default();
                let owner = tags.get(TAG_OWNER).cloned().unwrap_or_default();
                let client = self.master(&i).await?;
                sql::drop_database(&client, &dbname).await?;
                sql::copy_database(&client, &source, &dbname, &owner).await?;
            }
            Ok(i)
        }
        .await;
        match result {
            Ok(i) => Ok(i),
            Err(e) => {
                self.undo_instance(target).await;
                Err(e)
            }
        }
    }

    /// Aurora: makes cluster `target` (tags `tags`) as a clone of `parent`'s
    /// cluster — copy-on-write as it is now, or a full copy at `at` — with
    /// its writer and, on a shared data server, its data copy. On error,
    /// nothing is left.
    async fn clone_into(
        &self,
        compute: &ComputeName,
        parent: &Instance,
        target: &str,
        mut tags: BTreeMap<String, String>,
        at: Option<aws_smithy_types::DateTime>,
    ) -> Result<Instance, BackendError> {
        let source_db = parent
            .tags
            .get(TAG_DBNAME)
            .cloned()
            .unwrap_or_else(|| tags.get(TAG_DATABASE).cloned().unwrap_or_default());
        let dbname = if self.config.shared_data_server {
            target.to_string()
        } else {
            source_db.clone()
        };
        tags.insert(TAG_DBNAME.to_string(), dbname.clone());
        self.rds
            .clone_cluster(&parent.id, target, &tags, at)
            .await?;
        let result = async {
            let i = self
                .wait_created(compute, target, "it was being cloned")
                .await?;
            if self.config.shared_data_server {
                let owner = tags.get(TAG_OWNER).cloned().unwrap_or_default();
                let client = self.master(&i).await?;
                sql::drop_database(&client, &dbname).await?;
                sql::copy_database(&client, &source_db, &dbname, &owner).await?;
            }
            Ok(i)
        }
        .await;
        match result {
            Ok(i) => Ok(i),
            Err(e) => {
                tracing::warn!(cluster = %target, error = %e, "clone failed: deleting the new cluster");
                self.undo_instance(target).await;
                Err(e)
            }
        }
    }

    /// Takes a snapshot of `i` (tags: `tags`), waits until it is available.
    /// On a shared data server, the snapshot's data is copied first.
    async fn snapshot_of(
        &self,
        compute: &ComputeName,
        i: &Instance,
        mut tags: BTreeMap<String, String>,
    ) -> Result<rds::Snapshot, BackendError> {
        let id = snapshot_id(&i.id, now_millis());
        let source_db = i.tags.get(TAG_DBNAME).cloned().unwrap_or_default();
        if self.config.shared_data_server {
            tags.insert(TAG_DBNAME.to_string(), id.clone());
            let owner = i.tags.get(TAG_OWNER).cloned().unwrap_or_default();
            let client = self.master(i).await?;
            sql::copy_database(&client, &source_db, &id, &owner).await?;
        } else {
            tags.insert(TAG_DBNAME.to_string(), source_db);
        }
        let undo_copy = || async {
            self.drop_shared(i, std::slice::from_ref(&id)).await;
        };
        if let Err(e) = self.rds.create_snapshot(&i.id, &id, &tags).await {
            undo_copy().await;
            return Err(e);
        }
        let bound = self.config.snapshot_timeout;
        let result = self
            .rds
            .wait_snapshot(&id, bound, |s| {
                let total = s.storage_gib << 30;
                self.set_progress(
                    compute,
                    Some(Progress {
                        done_bytes: total * s.percent / 100,
                        total_bytes: total,
                    }),
                )
            })
            .await;
        match result {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.rds.delete_snapshot(&id).await;
                undo_copy().await;
                Err(match e {
                    WaitError::Timeout(status) => BackendError::unavailable(format!(
                        "RDS snapshot {id} was still \"{status}\" after {}; it has been deleted: retry, or raise `snapshot_timeout`",
                        human(bound)
                    )),
                    WaitError::Gone => BackendError::unavailable(format!(
                        "RDS snapshot {id} disappeared while being taken"
                    )),
                    WaitError::Failed(e) => e,
                })
            }
        }
    }

    /// Snapshots of `database` this gateway made, including branch bases.
    async fn snapshots_of(&self, database: &str) -> Result<Vec<rds::Snapshot>, BackendError> {
        Ok(self
            .rds
            .list_snapshots()
            .await?
            .into_iter()
            .filter(|s| s.tags.get(TAG_DATABASE).map(String::as_str) == Some(database))
            .collect())
    }

    /// Deletes every instance of `database@branch` (all of `database` when
    /// `branch` is `None`) and, on a shared data server, their databases.
    async fn delete_instances(
        &self,
        database: &str,
        branch: Option<&str>,
    ) -> Result<Vec<Instance>, BackendError> {
        let mut instances: Vec<Instance> = self
            .rds
            .list()
            .await?
            .into_iter()
            .filter(|i| {
                i.tags.get(TAG_DATABASE).map(String::as_str) == Some(database)
                    && branch.is_none_or(|b| i.tags.get(TAG_BRANCH).map(String::as_str) == Some(b))
            })
            .collect();
        // An instance whose tags were lost still has its identifier.
        let id = self.instance_id(database, branch.unwrap_or("main"));
        if !instances.iter().any(|i| i.id == id) {
            if let Some(i) = self.rds.describe(&id).await? {
                instances.push(i);
            }
        }
        if let Some(via) = instances.first() {
            let dbnames: Vec<String> = instances
                .iter()
                .filter(|i| i.status != "deleting")
                .filter_map(|i| i.tags.get(TAG_DBNAME).cloned())
                .collect();
            self.drop_shared(via, &dbnames).await;
        }
        for i in &instances {
            self.rds.delete(&i.id).await?;
        }
        Ok(instances)
    }

    /// Deletes snapshots of `database` matching `keep_if_false`, and their
    /// shared-server copies.
    async fn delete_snapshots(
        &self,
        database: &str,
        via: Option<&Instance>,
        select: impl Fn(&rds::Snapshot) -> bool,
    ) -> Result<(), BackendError> {
        let doomed: Vec<rds::Snapshot> = self
            .snapshots_of(database)
            .await?
            .into_iter()
            .filter(|s| select(s))
            .collect();
        if let Some(via) = via {
            let names: Vec<String> = doomed.iter().map(|s| s.id.clone()).collect();
            self.drop_shared(via, &names).await;
        }
        for s in &doomed {
            self.rds.delete_snapshot(&s.id).await?;
        }
        Ok(())
    }

    /// Aurora: `at` (RFC 3339) as a restore time of `parent`'s cluster,
    /// checked against its restorable window.
    fn restore_time(
        &self,
        parent: &Instance,
        at: &str,
    ) -> Result<aws_smithy_types::DateTime, BackendError> {
        use aws_smithy_types::date_time::Format;
        if self.config.shared_data_server {
            return Err(BackendError::unsupported(
                "backend rds with `shared_data_server` cannot branch at a point in time: the shared server holds only the present data",
            ));
        }
        let t =
            aws_smithy_types::DateTime::from_str(at.trim(), Format::DateTime).map_err(|_| {
                config::invalid(format!(
                    "invalid time \"{at}\" (expected RFC 3339, e.g. 2026-11-25T13:00:00Z)"
                ))
            })?;
        if let Some((earliest, latest)) = parent.restorable {
            if t.secs() < earliest || t.secs() > latest {
                let show = |s: i64| {
                    aws_smithy_types::DateTime::from_secs(s)
                        .fmt(Format::DateTime)
                        .unwrap_or_else(|_| s.to_string())
                };
                return Err(config::invalid(format!(
                    "{at} is outside the restorable window of Aurora cluster {} ({} to {})",
                    parent.id,
                    show(earliest),
                    show(latest)
                )));
            }
        }
        Ok(t)
    }

    /// The instance of a compute, started if stopped, within `start_timeout`.
    async fn wake(&self, database: &str, i: Instance) -> Result<Instance, BackendError> {
        let bound = self.config.start_timeout;
        let id = i.id.clone();
        let mut status = i.status.clone();
        let phase0 = rds::phase(&status);
        if rds::serving(&i) {
            return Ok(i);
        }
        if phase0 == Phase::Deleting {
            return Err(BackendError::not_found(format!(
                "RDS instance {id} of \"{database}\" is being deleted"
            )));
        }
        if phase0 == Phase::Stopping {
            match self
                .rds
                .wait(&id, bound, |p| p != Phase::Stopping, |_| {})
                .await
            {
                Ok(i) => status = i.status,
                Err(WaitError::Timeout(_)) => {
                    return Err(BackendError::unavailable(format!(
                        "the RDS instance of \"{database}\" ({id}) is still stopping after {}; it will be started once stopped: retry in a few minutes",
                        human(bound)
                    )))
                }
                Err(WaitError::Gone) => {
                    return Err(BackendError::not_found(format!(
                        "RDS instance {id} of \"{database}\" is gone"
                    )))
                }
                Err(WaitError::Failed(e)) => return Err(e),
            }
        }
        let starting = rds::phase(&status) == Phase::Stopped;
        if starting {
            tracing::info!(instance = %id, "starting the stopped RDS instance");
            self.rds.start(&id).await?;
        }
        match self.rds.wait(&id, bound, |p| p == Phase::Usable, |_| {}).await {
            Ok(i) => Ok(i),
            Err(WaitError::Timeout(now)) if starting || now == "starting" => {
                Err(BackendError::unavailable(format!(
                    "the RDS instance of \"{database}\" ({id}) is starting (RDS takes minutes to start a stopped instance; status \"{now}\"); retry shortly"
                )))
            }
            Err(WaitError::Timeout(now)) => Err(BackendError::unavailable(format!(
                "the RDS instance of \"{database}\" ({id}) has been \"{now}\" for longer than {} (`start_timeout`); it cannot serve until RDS finishes: retry later, or see the instance's events in the AWS console",
                human(bound)
            ))),
            Err(WaitError::Gone) => Err(BackendError::not_found(format!(
                "RDS instance {id} of \"{database}\" is gone"
            ))),
            Err(WaitError::Failed(e)) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Backend for RdsBackend {
    fn name(&self) -> &str {
        "rds"
    }

    fn capabilities(&self) -> Capabilities {
        let aurora = self.config.aurora();
        Capabilities {
            suspend: true,
            branching: if aurora {
                Branching::CopyOnWrite
            } else {
                Branching::SnapshotCopy
            },
            // Aurora restores a cluster to a time; a shared data server
            // cannot reproduce the data of that time.
            point_in_time: aurora && !self.config.shared_data_server,
            snapshots: true,
            // RDS snapshots are taken of the running instance (storage-level, crash-consistent).
            online_snapshot: true,
            // A restore into a new instance takes minutes; Aurora clones don't.
            slow_branches: !aurora,
            // Multi-AZ standbys (RebootDBInstance ForceFailover) and Aurora
            // Replicas (FailoverDBCluster): see [`standby`].
            standby: true,
            // RDS places its standbys itself, whatever the gateways.
            remote_standby: false,
        }
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let endpoint = match &c.endpoint_url {
            Some(u) if !u.contains('@') => format!(", API {u}"),
            Some(_) => ", API <custom endpoint>".to_string(),
            None => String::new(),
        };
        format!(
            "rds: region {}{endpoint}, {}, TLS {}{}{}",
            c.region.as_deref().unwrap_or("from the AWS environment"),
            if c.aurora() {
                format!("Aurora PostgreSQL clusters, writer {}", c.instance_class())
            } else {
                format!(
                    "{} with {} GiB",
                    c.instance_class(),
                    c.allocated_storage_gib
                )
            },
            if self.ca_pem.is_some() {
                "verified"
            } else {
                "off"
            },
            if c.endpoint_overrides.is_empty() {
                String::new()
            } else {
                format!(", {} endpoint override(s)", c.endpoint_overrides.len())
            },
            if c.shared_data_server {
                ", shared data server"
            } else {
                ""
            }
        )
    }

    async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError> {
        check_database(&spec.name)?;
        check_role(&spec.owner)?;
        let id = self.instance_id(&spec.name, "main");
        if let Some(i) = self.rds.describe(&id).await? {
            return Err(if i.status == "deleting" {
                BackendError::unavailable(format!(
                    "the previous RDS instance of \"{}\" ({id}) is still being deleted; retry in a few minutes",
                    spec.name
                ))
            } else {
                BackendError::new(
                    BackendErrorKind::AlreadyExists,
                    format!(
                        "database \"{}\" already exists (RDS instance {id})",
                        spec.name
                    ),
                )
            });
        }
        let tags = self.tags(&spec.name, "main", &spec.owner, &spec.name);
        tracing::info!(instance = %id, database = %spec.name, "creating the RDS instance");
        let password = self.master_password();
        self.rds.create(&id, password.expose(), &tags).await?;
        let mut made = (false, false);
        let result = self.create_inner(&id, spec, &mut made).await;
        if let Err(e) = &result {
            tracing::warn!(instance = %id, error = %e, "create failed: deleting the instance");
            if self.config.shared_data_server && (made.0 || made.1) {
                if let Ok(Some(i)) = self.rds.describe(&id).await {
                    if let Ok(client) = self.master(&i).await {
                        if made.1 {
                            let _ = sql::drop_database(&client, &spec.name).await;
                        }
                        let _ = sql::drop_role(&client, &spec.owner).await;
                    }
                }
            }
            self.undo_instance(&id).await;
        }
        self.set_progress(&ComputeName::main(&spec.name), None);
        result
    }

    async fn delete_database(&self, name: &str) -> Result<(), BackendError> {
        check_database(name)?;
        let instances = self.delete_instances(name, None).await?;
        let via = instances.first();
        self.delete_snapshots(name, via, |_| true).await?;
        if self.config.shared_data_server {
            if let Some(via) = via {
                if let Ok(client) = self.master(via).await {
                    if let Some(owner) = via.tags.get(TAG_OWNER) {
                        sql::drop_role(&client, owner).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn ensure_running(&self, name: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
        let (database, branch) = check_compute(name)?;
        let i = self.existing(database, branch).await?;
        let i = self.wake(database, i).await?;
        self.endpoint(database, &i)
    }

    async fn suspend(&self, name: &ComputeName) -> Result<(), BackendError> {
        let (database, branch) = check_compute(name)?;
        let i = self.existing(database, branch).await?;
        match rds::phase(&i.status) {
            Phase::Stopped | Phase::Stopping => return Ok(()),
            Phase::Usable => {}
            _ => {
                return Err(BackendError::unavailable(format!(
                "the RDS instance of \"{name}\" ({}) cannot be stopped while \"{}\"; retry later",
                i.id, i.status
            )))
            }
        }
        tracing::info!(instance = %i.id, "stopping the RDS instance");
        self.rds.stop(&i.id).await?;
        match self
            .rds
            .wait(
                &i.id,
                self.config.stop_timeout,
                |p| p == Phase::Stopped,
                |_| {},
            )
            .await
        {
            Ok(_) => Ok(()),
            // The stop goes on at RDS; the next wake waits for it.
            Err(WaitError::Timeout(status)) => {
                tracing::info!(instance = %i.id, %status, "the instance is still stopping");
                Ok(())
            }
            Err(WaitError::Gone) => Ok(()),
            Err(WaitError::Failed(e)) => Err(e),
        }
    }

    async fn compute_status(&self, name: &ComputeName) -> Result<ComputeStatus, BackendError> {
        let (database, branch) = check_compute(name)?;
        let i = self.existing(database, branch).await?;
        Ok(ComputeStatus {
            state: if rds::serving(&i) {
                ComputeState::Running
            } else {
                rds::compute_state(&i.status)
            },
            pid: None,
            port: i.port,
            started_at_unix: None,
            generation: standby::generation(&i),
        })
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.rds.ping().await
    }

    async fn list_databases(&self) -> Result<Vec<String>, BackendError> {
        let mut names: Vec<String> = self
            .rds
            .list()
            .await?
            .into_iter()
            .filter(|i| {
                i.status != "deleting" && i.tags.get(TAG_BRANCH).map(String::as_str) == Some("main")
            })
            .filter_map(|i| i.tags.get(TAG_DATABASE).cloned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn create_branch(&self, spec: &BranchSpec) -> Result<(), BackendError> {
        check_database(&spec.database)?;
        check_branch(&spec.branch)?;
        check_branch(&spec.parent)?;
        if spec.branch == "main" {
            return Err(config::invalid("\"main\" is the database itself"));
        }
        let compute = ComputeName::new(&spec.database, &spec.branch);
        let target = self.instance_id(&spec.database, &spec.branch);
        if let Some(i) = self.find(&spec.database, &spec.branch).await? {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!(
                    "branch \"{}\" of \"{}\" already exists (RDS instance {})",
                    spec.branch, spec.database, i.id
                ),
            ));
        }
        if let Some(i) = self.rds.describe(&target).await? {
            return Err(BackendError::unavailable(format!(
                "a previous RDS instance of this branch ({}) is still \"{}\"; retry in a few minutes",
                i.id, i.status
            )));
        }
        let parent = self.existing(&spec.database, &spec.parent).await?;
        let owner = parent
            .tags
            .get(TAG_OWNER)
            .cloned()
            .unwrap_or_else(|| format!("{}_owner", spec.database));
        let tags = self.tags(&spec.database, &spec.branch, &owner, &spec.database);
        let aurora = self.config.aurora();
        let result = match &spec.point {
            BranchPoint::Now if aurora => {
                tracing::info!(branch = %compute, parent = %parent.id, cluster = %target, "branch: copy-on-write clone of the parent's cluster");
                self.clone_into(&compute, &parent, &target, tags, None)
                    .await
                    .map(|_| ())
            }
            BranchPoint::Timestamp { at } if aurora => {
                let at = self.restore_time(&parent, at)?;
                tracing::info!(branch = %compute, parent = %parent.id, cluster = %target, "branch: the parent's cluster restored to a point in time");
                self.clone_into(&compute, &parent, &target, tags, Some(at))
                    .await
                    .map(|_| ())
            }
            BranchPoint::Now => {
                let mut snap_tags = self.tags(&spec.database, &spec.parent, &owner, "");
                snap_tags.insert(TAG_BASE_OF.to_string(), spec.branch.clone());
                tracing::info!(branch = %compute, parent = %parent.id, "branch: snapshot of the parent");
                let snap = self.snapshot_of(&compute, &parent, snap_tags).await?;
                tracing::info!(branch = %compute, snapshot = %snap.id, instance = %target, "branch: restoring the snapshot");
                let r = self.restore_into(&compute, &snap, &target, tags).await;
                if r.is_err() {
                    let _ = self.rds.delete_snapshot(&snap.id).await;
                    self.drop_shared(&parent, std::slice::from_ref(&snap.id))
                        .await;
                }
                r.map(|_| ())
            }
            BranchPoint::Snapshot { id } => {
                let snap = self
                    .snapshots_of(&spec.database)
                    .await?
                    .into_iter()
                    .find(|s| &s.id == id)
                    .ok_or_else(|| {
                        BackendError::not_found(format!(
                            "database \"{}\" has no snapshot \"{id}\"",
                            spec.database
                        ))
                    })?;
                self.restore_into(&compute, &snap, &target, tags)
                    .await
                    .map(|_| ())
            }
            BranchPoint::Lsn { .. } if aurora => Err(BackendError::unsupported(
                "backend rds (Aurora) branches at a time, not at an LSN; use --at <RFC 3339 time>, now or a snapshot",
            )),
            BranchPoint::Lsn { .. } | BranchPoint::Timestamp { .. } => {
                Err(BackendError::unsupported(
                    "backend rds cannot branch at a point in time; use --at now or a snapshot",
                ))
            }
        };
        self.set_progress(&compute, None);
        result
    }

    async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        check_database(database)?;
        check_branch(branch)?;
        if branch == "main" {
            return Err(config::invalid(
                "\"main\" is the database itself: delete the database",
            ));
        }
        let instances = self.delete_instances(database, Some(branch)).await?;
        let via = match instances.first() {
            Some(i) => Some(i.clone()),
            None => self.find(database, "main").await?,
        };
        self.delete_snapshots(database, via.as_ref(), |s| {
            s.tags.get(TAG_BASE_OF).map(String::as_str) == Some(branch)
        })
        .await
    }

    async fn create_snapshot(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<SnapshotInfo, BackendError> {
        check_database(database)?;
        check_branch(branch)?;
        let compute = ComputeName::new(database, branch);
        let i = self.existing(database, branch).await?;
        let owner = i
            .tags
            .get(TAG_OWNER)
            .cloned()
            .unwrap_or_else(|| format!("{database}_owner"));
        let tags = self.tags(database, branch, &owner, "");
        let result = self.snapshot_of(&compute, &i, tags).await;
        self.set_progress(&compute, None);
        let s = result?;
        Ok(SnapshotInfo {
            id: s.id,
            database: database.to_string(),
            branch: branch.to_string(),
            created_at_unix: s.created_unix,
            size_bytes: None,
        })
    }

    async fn list_snapshots(&self, database: &str) -> Result<Vec<SnapshotInfo>, BackendError> {
        check_database(database)?;
        let mut list: Vec<SnapshotInfo> = self
            .snapshots_of(database)
            .await?
            .into_iter()
            .filter(|s| !s.tags.contains_key(TAG_BASE_OF))
            .map(|s| SnapshotInfo {
                database: database.to_string(),
                branch: s
                    .tags
                    .get(TAG_BRANCH)
                    .cloned()
                    .unwrap_or_else(|| "main".into()),
                created_at_unix: s.created_unix,
                size_bytes: None,
                id: s.id,
            })
            .collect();
        list.sort_by(|a, b| (a.created_at_unix, &a.id).cmp(&(b.created_at_unix, &b.id)));
        Ok(list)
    }

    async fn restore_snapshot(
        &self,
        database: &str,
        snapshot: &str,
        as_branch: &str,
    ) -> Result<(), BackendError> {
        check_database(database)?;
        check_branch(as_branch)?;
        let compute = ComputeName::new(database, as_branch);
        let snap = self
            .snapshots_of(database)
            .await?
            .into_iter()
            .find(|s| s.id == snapshot)
            .ok_or_else(|| {
                BackendError::not_found(format!(
                    "database \"{database}\" has no snapshot \"{snapshot}\""
                ))
            })?;
        let owner = snap
            .tags
            .get(TAG_OWNER)
            .cloned()
            .unwrap_or_else(|| format!("{database}_owner"));
        let mut tags = self.tags(database, as_branch, &owner, database);
        let existing = self.find(database, as_branch).await?;
        if let Some(old) = &existing {
            // The replacement serves the same compute: its generation
            // stays above the old one's (see [`standby`]).
            tags.insert(
                TAG_GENERATION.to_string(),
                (standby::generation(old) + 1).to_string(),
            );
        }
        let target = match &existing {
            None => self.instance_id(database, as_branch),
            Some(_) => replacement_id(&self.instance_id(database, as_branch), now_millis()),
        };
        if existing.is_none() {
            if let Some(i) = self.rds.describe(&target).await? {
                return Err(BackendError::unavailable(format!(
                    "a previous RDS instance of this branch ({}) is still \"{}\"; retry in a few minutes",
                    i.id, i.status
                )));
            }
        }
        tracing::info!(snapshot, instance = %target, "restoring a snapshot");
        let result = self.restore_into(&compute, &snap, &target, tags).await;
        self.set_progress(&compute, None);
        let new = result?;
        if let Some(old) = existing {
            // The new instance serves from now on (`find` picks the newest);
            // the old one goes.
            let old_db = old.tags.get(TAG_DBNAME).cloned();
            if self.config.shared_data_server {
                if let Some(name) = old_db {
                    if Some(&name) != new.tags.get(TAG_DBNAME) {
                        self.drop_shared(&new, &[name]).await;
                    }
                }
            }
            self.rds.delete(&old.id).await?;
        }
        Ok(())
    }

    async fn set_standbys(
        &self,
        compute: &ComputeName,
        count: u32,
        synchronous: bool,
    ) -> Result<(), BackendError> {
        self.set_standbys_impl(compute, count, synchronous).await
    }

    async fn standby_status(
        &self,
        compute: &ComputeName,
    ) -> Result<Option<StandbyStatus>, BackendError> {
        self.standby_status_impl(compute).await
    }

    async fn promote(
        &self,
        compute: &ComputeName,
        why: Takeover,
    ) -> Result<ComputeEndpoint, BackendError> {
        self.promote_impl(compute, why).await
    }

    async fn progress(&self, name: &ComputeName) -> Result<Option<Progress>, BackendError> {
        Ok(self.progress.lock().ok().and_then(|m| m.get(name).cloned()))
    }
}
