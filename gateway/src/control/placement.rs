//! Standbys on another gateway's disk, in a cluster, and the failover to
//! them when the primary's gateway is gone.
//!
//! A database's record says which gateway serves it (`node`) and, when it
//! has a standby, which gateway holds that (`standby.node`) and whether the
//! standby may take over (`standby.in_sync`). Every gateway runs
//! [`Placement::run`]; each does its own part for each such database:
//!
//! - **The primary's gateway** picks a live gateway for the standby (the
//!   one holding the fewest), tells its backend `ReplicaRole::Primary`, and
//!   sets `in_sync` once a reading shows the standby streaming with
//!   synchronous replication on and nothing left to replay. While the
//!   standby is being built commits do not wait for it; from then on they
//!   do. Before commits stop waiting for a standby that went away, it clears
//!   `in_sync` in the catalog, under its fence: a standby is never both
//!   behind and eligible.
//! - **The standby's gateway** keeps `ReplicaRole::Standby`, streaming
//!   through the primary's gateway (`accept/replication.rs`). When the
//!   primary's gateway is gone from the cluster (its lease expired: it
//!   stopped acting before that, `cluster/mod.rs`) and the standby is
//!   `in_sync`, it takes the database over in one conditional catalog
//!   write (`node` = itself, the record unchanged since it was read, with
//!   its own fence), then promotes. A primary cut off from etcd but alive
//!   can acknowledge nothing after that: its commits wait for the standby,
//!   which stopped following it when it was promoted.
//! - **Any other gateway** that still holds a copy of the database as a
//!   primary (the old one, back after a takeover) fences it and sets it
//!   aside (`ReplicaRole::Detached`), unless it was chosen as the new
//!   standby, which fences it the same way before it follows.
//!
//! Clients follow `node`: every gateway carries them to the one serving.

use super::databases::Databases;
use crate::catalog::{Catalog, DatabaseRecord, StandbyPlacement};
use crate::cluster::{Cluster, NodeInfo};
use crate::error::ControlError;
use ogel_plugin_sdk::{
    BackendError, BackendErrorKind, ComputeName, ReplicaRole, Takeover, Upstream,
};
use ogel_policies::Lifecycle;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often each gateway looks at the placements.
const TICK: Duration = Duration::from_millis(250);
/// How often an unchanged role is told to the backend again (it restarts
/// a standby that stopped, and is cheap otherwise).
const REPEAT: Duration = Duration::from_secs(3);
/// How long commits keep waiting for an in-sync standby that stopped
/// streaming (a restart, a short network blip) before its gateway gives
/// up on it: clears `in_sync`, then stops waiting.
const SYNC_GRACE: Duration = Duration::from_secs(5);

/// The placement service; see the module doc.
pub struct Placement {
    databases: Arc<Databases>,
    catalog: Catalog,
    cluster: Arc<Cluster>,
    state: Arc<Mutex<State>>,
    /// This gateway's admin token (every gateway accepts it): a switchover
    /// asks the new primary's gateway when it serves.
    admin_token: String,
    /// Takeovers of another gateway's database done here (`/metrics`).
    pub takeovers: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The role last told to the backend, and when.
    told: HashMap<String, (Told, Instant)>,
    /// Databases whose standby is being built or started now.
    busy: HashSet<String>,
    /// Since when an in-sync standby has not been streaming.
    not_streaming_since: HashMap<String, Instant>,
    /// Warnings logged once while they hold.
    warned: HashSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Told {
    Primary { synchronous: bool },
    Standby { upstream: String },
    Detached,
}

impl Placement {
    /// The service.
    pub fn new(
        databases: Arc<Databases>,
        catalog: Catalog,
        cluster: Arc<Cluster>,
        admin_token: String,
    ) -> Arc<Self> {
        Arc::new(Placement {
            databases,
            catalog,
            cluster,
            admin_token,
            state: Arc::default(),
            takeovers: AtomicU64::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::pool::lock(&self.state)
    }

    /// Whether `database` gets a standby on another gateway (a cluster and
    /// a backend that can): `Standbys::set` then records it here.
    pub fn applies(&self, lifecycle: &Lifecycle) -> bool {
        self.cluster.is_clustered() && lifecycle.backend().capabilities().remote_standby
    }

    /// Wants (`true`) or drops a standby of `database` on another gateway.
    pub async fn set(&self, database: &str, wanted: bool) -> Result<(), ControlError> {
        let record = self.databases.ready(database)?;
        if wanted == record.standby.is_some() {
            return Ok(());
        }
        let mut new = record.clone();
        new.standby = wanted.then(StandbyPlacement::default);
        self.catalog.swap_database(&record, &new)?;
        if !wanted {
            // Commits stop waiting; `Detached` would fence this copy, which
            // is the one serving (the standby's gateway drops its own).
            let lifecycle = self.databases.lifecycle(&record)?;
            lifecycle
                .backend()
                .replicate(
                    &ComputeName::main(database),
                    ReplicaRole::Primary { synchronous: false },
                )
                .await?;
            self.state().told.remove(database);
        }
        Ok(())
    }

    /// Planned switchover to the standby on another gateway: new
    /// transactions wait (the pools pause), the catalog names the standby's
    /// gateway (conditional, under this gateway's fence), the copy here is
    /// fenced, the standby's gateway promotes at its next look (≤ 250 ms),
    /// and once it serves the pools resume: their clients reconnect and are
    /// carried there. Nothing acknowledged is lost: commits waited for the
    /// standby, and the pause let every transaction finish first. This
    /// gateway then follows the new primary as its standby.
    pub async fn switchover(
        &self,
        database: &str,
        pools: &crate::pool::Pools,
    ) -> Result<(u64, u64), ControlError> {
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let placement = record.standby.clone().unwrap_or_default();
        let target = placement
            .node
            .as_deref()
            .filter(|_| placement.in_sync)
            .and_then(|n| self.cluster.node(n))
            .ok_or_else(|| {
                ControlError::Unavailable(format!(
                    "database \"{database}\" has no standby in sync on a live gateway to switch over to; see `ogel db standby {database}`"
                ))
            })?;
        let name = ComputeName::main(database);
        let paused = pools.find_all(database);
        let started = Instant::now();
        pools.pause(&paused).await.map_err(|e| {
            ControlError::Unavailable(format!(
                "could not pause \"{database}\" for the switchover: {e}; {}",
                crate::pool::PAUSE_HINT
            ))
        })?;
        let resume = || {
            for pool in &paused {
                pool.pool.resume();
            }
        };
        let mut new = record.clone();
        new.node = Some(target.name.clone());
        new.standby = Some(StandbyPlacement {
            node: Some(self.cluster.name().to_string()),
            in_sync: false,
        });
        if let Err(e) = self.catalog.swap_database(&record, &new) {
            resume();
            return Err(e.into());
        }
        tracing::warn!(database, to = %target.name, "switchover: the standby's gateway serves the database now");
        // Fenced here: nothing wakes the old primary again (clients and
        // replication connections go to the new gateway from now on).
        let fenced = lifecycle
            .backend()
            .replicate(&name, ReplicaRole::Detached)
            .await;
        self.state().told.remove(database);
        let served = self.served_by(&target, database).await;
        resume();
        fenced?;
        let generation = served?;
        Ok((started.elapsed().as_millis() as u64, generation))
    }

    /// Waits (≤ 30 s) until `node` serves `database` with a running
    /// compute; its generation.
    async fn served_by(&self, node: &NodeInfo, database: &str) -> Result<u64, ControlError> {
        let http = reqwest::Client::new();
        let url = format!("http://{}/v1/databases/{database}", node.api);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = http
                .get(&url)
                .bearer_auth(&self.admin_token)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(answer) = answer {
                if let Ok(view) = answer.json::<serde_json::Value>().await {
                    if view["node"] == node.name.as_str() && view["compute"]["state"] == "running" {
                        return Ok(view["compute"]["generation"].as_u64().unwrap_or(0));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ControlError::Unavailable(format!(
                    "gateway {} did not serve \"{database}\" within 30 s of the switchover; see its log",
                    node.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs every gateway's part until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        if !self.cluster.is_clustered() {
            return;
        }
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            // An isolated gateway decides nothing.
            if self.cluster.acts_for(Some(self.cluster.name())).is_none() {
                continue;
            }
            let records = match self.catalog.databases() {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(error = %e, "placement: reading the catalog");
                    continue;
                }
            };
            let me = self.cluster.name().to_string();
            let held = standbys_held(&records);
            for record in records.iter().cloned() {
                let Some(placement) = record.standby.clone() else {
                    continue;
                };
                let result = if record.node.as_deref() == Some(me.as_str()) {
                    self.as_primary(&record, &placement, &held).await
                } else if placement.node.as_deref() == Some(me.as_str()) {
                    self.as_standby(&record, &placement).await
                } else {
                    self.tell(&record, ReplicaRole::Detached, Told::Detached)
                        .await
                };
                if let Err(e) = result {
                    let key = format!("{}: {e}", record.name);
                    if self.state().warned.insert(key) {
                        tracing::warn!(database = %record.name, error = %e, "placement");
                    }
                }
            }
        }
    }

    fn backend(&self, record: &DatabaseRecord) -> Result<Arc<Lifecycle>, ControlError> {
        self.databases.backend_lifecycle(Some(&record.backend))
    }

    /// Tells the backend `role` when it differs from the last told, or
    /// every [`REPEAT`].
    async fn tell(
        &self,
        record: &DatabaseRecord,
        role: ReplicaRole,
        told: Told,
    ) -> Result<(), ControlError> {
        if let Some((last, at)) = self.state().told.get(&record.name) {
            if *last == told && at.elapsed() < REPEAT {
                return Ok(());
            }
        }
        let lifecycle = self.backend(record)?;
        lifecycle
            .backend()
            .replicate(&ComputeName::main(&record.name), role)
            .await?;
        self.state()
            .told
            .insert(record.name.clone(), (told, Instant::now()));
        Ok(())
    }

    /// The primary's gateway's part.
    async fn as_primary(
        &self,
        record: &DatabaseRecord,
        placement: &StandbyPlacement,
        held: &HashMap<String, usize>,
    ) -> Result<(), ControlError> {
        let lifecycle = self.databases.lifecycle(record)?;
        let name = ComputeName::main(&record.name);
        // First look as the primary's gateway (since it started, took
        // over, or the database moved here by a switchover): the role
        // as the catalog has it. A backend holding no primary here
        // (NotFound) holds the standby of a takeover whose promotion did
        // not finish (a crash right after the catalog write): finish it.
        let first = !matches!(
            self.state().told.get(&record.name),
            Some((Told::Primary { .. }, _))
        );
        if first {
            let synchronous = placement.in_sync;
            match lifecycle
                .backend()
                .replicate(&name, ReplicaRole::Primary { synchronous })
                .await
            {
                Ok(()) => {
                    self.state().told.insert(
                        record.name.clone(),
                        (Told::Primary { synchronous }, Instant::now()),
                    );
                }
                Err(e) if e.kind == BackendErrorKind::NotFound => {
                    tracing::warn!(database = %record.name, "finishing a takeover: promoting the standby here");
                    return self.promote(record, &lifecycle).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let standby_live = placement
            .node
            .as_deref()
            .and_then(|n| self.cluster.node(n))
            .is_some();
        if !standby_live {
            // No standby, or its gateway is gone: choose another (which
            // also clears `in_sync` before commits stop waiting).
            let Some(node) = self.choose(record, held) else {
                self.warn_once(record, "no other gateway is live to hold its standby");
                return self.tell_primary(record, placement, false).await;
            };
            let mut new = record.clone();
            new.standby = Some(StandbyPlacement {
                node: Some(node.clone()),
                in_sync: false,
            });
            self.catalog.swap_database(record, &new)?;
            tracing::info!(database = %record.name, standby = %node, "standby placed on another gateway");
            return self
                .tell_primary(record, &new.standby.unwrap_or_default(), false)
                .await;
        }
        let status = lifecycle.backend().standby_status(&name).await?;
        let streaming = status.as_ref().is_some_and(|s| s.streaming > 0);
        if placement.in_sync {
            if streaming {
                self.state().not_streaming_since.remove(&record.name);
                return self.tell_primary(record, placement, true).await;
            }
            let since = *self
                .state()
                .not_streaming_since
                .entry(record.name.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < SYNC_GRACE {
                return self.tell_primary(record, placement, true).await;
            }
            // Given up on: not eligible first, then commits stop waiting.
            let mut new = record.clone();
            new.standby = Some(StandbyPlacement {
                in_sync: false,
                ..placement.clone()
            });
            self.catalog.swap_database(record, &new)?;
            tracing::warn!(database = %record.name, standby = ?placement.node, "the standby stopped streaming; commits no longer wait for it");
            self.state().not_streaming_since.remove(&record.name);
            return self
                .tell_primary(record, &new.standby.unwrap_or_default(), false)
                .await;
        }
        // Not in sync yet: commits wait once it streams; it is in sync
        // once a reading with that on shows nothing left to replay.
        self.tell_primary(record, placement, streaming).await?;
        let caught_up = status
            .is_some_and(|s| s.streaming > 0 && s.synchronous && s.replay_lag_bytes == Some(0));
        if caught_up && self.told_synchronous(&record.name) {
            let mut new = record.clone();
            new.standby = Some(StandbyPlacement {
                in_sync: true,
                ..placement.clone()
            });
            self.catalog.swap_database(record, &new)?;
            tracing::info!(database = %record.name, standby = ?placement.node, "the standby is in sync: it may take over");
        }
        Ok(())
    }

    fn told_synchronous(&self, database: &str) -> bool {
        matches!(
            self.state().told.get(database),
            Some((Told::Primary { synchronous: true }, _))
        )
    }

    async fn tell_primary(
        &self,
        record: &DatabaseRecord,
        _placement: &StandbyPlacement,
        synchronous: bool,
    ) -> Result<(), ControlError> {
        self.tell(
            record,
            ReplicaRole::Primary { synchronous },
            Told::Primary { synchronous },
        )
        .await
    }

    /// A live gateway other than this one for `record`'s standby: the one
    /// holding the fewest standbys, then by name.
    fn choose(&self, record: &DatabaseRecord, held: &HashMap<String, usize>) -> Option<String> {
        let me = self.cluster.name();
        self.cluster
            .view()
            .nodes
            .into_iter()
            .filter(|n| n.name != me && Some(&n.name) != record.node.as_ref())
            .min_by_key(|n| (held.get(&n.name).copied().unwrap_or(0), n.name.clone()))
            .map(|n| n.name)
    }

    /// The standby's gateway's part.
    async fn as_standby(
        &self,
        record: &DatabaseRecord,
        placement: &StandbyPlacement,
    ) -> Result<(), ControlError> {
        let primary = record.node.as_deref().and_then(|n| self.cluster.node(n));
        match primary {
            Some(node) => self.follow(record, &node),
            None if placement.in_sync => self.take_over(record).await,
            None => {
                self.warn_once(
                    record,
                    "its gateway is gone, and the standby here was not in sync: no takeover (it could lose acknowledged writes)",
                );
                Ok(())
            }
        }
    }

    /// Keeps the standby following the primary at `node` (built in the
    /// background: a base backup takes a while).
    fn follow(&self, record: &DatabaseRecord, node: &NodeInfo) -> Result<(), ControlError> {
        let (host, port) = split_address(&node.postgres).ok_or_else(|| {
            ControlError::Unavailable(format!(
                "gateway {} publishes no usable address ({})",
                node.name, node.postgres
            ))
        })?;
        let loopback = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || host == "localhost";
        let upstream = Upstream {
            host: host.clone(),
            port,
            database: record.name.clone(),
            tls_ca_pem: if loopback { None } else { node.ca_pem.clone() },
            owner: record.owner.clone(),
        };
        let told = Told::Standby {
            upstream: node.postgres.clone(),
        };
        {
            let mut state = self.state();
            if state.busy.contains(&record.name) {
                return Ok(());
            }
            if let Some((last, at)) = state.told.get(&record.name) {
                if *last == told && at.elapsed() < REPEAT {
                    return Ok(());
                }
            }
            state.busy.insert(record.name.clone());
        }
        let lifecycle = match self.backend(record) {
            Ok(lifecycle) => lifecycle,
            Err(e) => {
                self.state().busy.remove(&record.name);
                return Err(e);
            }
        };
        let database = record.name.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let result = lifecycle
                .backend()
                .replicate(
                    &ComputeName::main(&database),
                    ReplicaRole::Standby { upstream },
                )
                .await;
            let mut state = crate::pool::lock(&state);
            state.busy.remove(&database);
            match result {
                Ok(()) => {
                    state.told.insert(database, (told, Instant::now()));
                }
                Err(e) => {
                    // Tried again after REPEAT.
                    state.told.insert(database.clone(), (told, Instant::now()));
                    drop(state);
                    tracing::warn!(database = %database, error = %e, "the standby could not follow its primary");
                }
            }
        });
        Ok(())
    }

    /// The primary's gateway is gone and this standby is in sync: take the
    /// database over (conditional catalog write first), then promote.
    async fn take_over(&self, record: &DatabaseRecord) -> Result<(), ControlError> {
        let me = self.cluster.name().to_string();
        let mut new = record.clone();
        new.node = Some(me.clone());
        new.standby = Some(StandbyPlacement::default());
        let started = Instant::now();
        self.catalog.swap_database(record, &new)?;
        tracing::warn!(database = %record.name, from = ?record.node, "the primary's gateway is gone: taking the database over");
        // A crash here leaves the record naming this gateway and the
        // standby not promoted: `as_primary` promotes it at the next start.
        crash_point("takeover-claimed");
        let lifecycle = self.backend(record)?;
        self.promote(&new, &lifecycle).await?;
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(database = %record.name, ms = started.elapsed().as_millis() as u64, "took the database over: its standby here is the primary");
        Ok(())
    }

    async fn promote(
        &self,
        record: &DatabaseRecord,
        lifecycle: &Arc<Lifecycle>,
    ) -> Result<(), ControlError> {
        let name = ComputeName::main(&record.name);
        match lifecycle
            .takeover(&name.to_string(), None, Takeover::Failover)
            .await
        {
            Ok(_) => {
                self.state().told.remove(&record.name);
                Ok(())
            }
            Err(e) if e.kind == BackendErrorKind::NotFound => Err(ControlError::Backend(
                BackendError::not_found(format!(
                    "database \"{}\" is recorded as served here but this gateway holds neither it nor its standby: {}",
                    record.name, e.message
                )),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn warn_once(&self, record: &DatabaseRecord, what: &str) {
        let key = format!("{}: {what}", record.name);
        if self.state().warned.insert(key) {
            tracing::warn!(database = %record.name, "{what}");
        }
    }

    /// What the catalog says about `database`'s standby on another gateway
    /// (`ogel db standby`), if it has one.
    pub fn describe(&self, record: &DatabaseRecord) -> Option<String> {
        let placement = record.standby.as_ref()?;
        Some(match &placement.node {
            None => "standby on another gateway: none is live to hold it".to_string(),
            Some(node) => format!(
                "standby on gateway {node}{}; {}",
                if self.cluster.node(node).is_some() {
                    ""
                } else {
                    " (gone)"
                },
                if placement.in_sync {
                    "in sync: it takes over if this gateway is gone"
                } else {
                    "not in sync yet: no takeover until it is"
                }
            ),
        })
    }
}

/// Where a crash test kills the gateway (`OGEL_TEST_CRASH_AT=<step>`),
/// as a kill -9 would.
fn crash_point(step: &str) {
    if std::env::var("OGEL_TEST_CRASH_AT").is_ok_and(|at| at == step) {
        tracing::error!(step, "OGEL_TEST_CRASH_AT: aborting here");
        std::process::abort();
    }
}

/// How many standbys each gateway holds.
fn standbys_held(records: &[DatabaseRecord]) -> HashMap<String, usize> {
    let mut held = HashMap::new();
    for record in records {
        if let Some(node) = record.standby.as_ref().and_then(|p| p.node.clone()) {
            *held.entry(node).or_insert(0) += 1;
        }
    }
    held
}

/// `host:port` (IPv6 in brackets) apart.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_matches(|c| c == '[' || c == ']').to_string();
    Some((host, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_split() {
        assert_eq!(
            split_address("10.0.0.1:6432"),
            Some(("10.0.0.1".into(), 6432))
        );
        assert_eq!(split_address("[::1]:5"), Some(("::1".into(), 5)));
        assert_eq!(split_address("nohost"), None);
        assert_eq!(split_address("h:notaport"), None);
    }
}
