//! Several gateways as one (`[cluster] etcd`): this gateway's membership,
//! the election of the leader, who acts for databases whose gateway is
//! gone, and the view `ogel cluster status` shows. One gateway alone (no
//! etcd) is [`Cluster::single`]: always its own leader, acting for
//! everything, with nothing to fence.
//!
//! - **Membership**: `{prefix}/nodes/{name}` holds the node's [`NodeInfo`]
//!   under the node's lease, created only if absent, so a second gateway
//!   with the same name is refused while the first one's lease lives. Its
//!   create revision fences every catalog write of this node (the
//!   store-wide [`Fence`]): once the lease is gone, so is the key, and a
//!   paused or partitioned gateway can write nothing.
//! - **Leadership**: `{prefix}/leader` names the leader, created only if
//!   absent, under the leader's node lease; its create revision is the
//!   **generation**. The leader's own writes carry that fence too
//!   ([`Cluster::leader_fence`], through `catalog::etcd::with_fence`).
//! - **Timing**: a keep-alive is sent every `lease_ttl / 4`. When etcd
//!   acknowledges one sent at local time `S`, the lease lives on the
//!   server until at least `S + lease_ttl` (the server renews it on
//!   receipt, after `S`). The node counts itself a member (and a leader
//!   a leader) only until `S + lease_ttl - lease_ttl / 4` on its monotonic
//!   clock: the last quarter covers clock-rate drift and the time to stop
//!   acting. A node that misses that deadline (pause, partition, etcd
//!   down) is `isolated`: it stops its control-plane work at once, and
//!   what it still tries is refused by the fences; clients of its running
//!   computes are still served (failsafe). It rejoins with a new lease.

pub mod backend_key;

use crate::catalog::etcd::{ClientHandle, Fence};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a node tells the others about itself (the value of its key).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NodeInfo {
    /// Its name (`--node-name`).
    pub name: String,
    /// Where clients and other gateways reach its Postgres listener.
    pub postgres: String,
    /// Its HTTP API.
    pub api: String,
    /// Its process id.
    pub pid: u32,
    /// Unix time it joined.
    pub joined_at_unix: u64,
    /// Computes running on it (refreshed every few seconds).
    pub computes_running: usize,
    /// Clients connected to it (refreshed every few seconds).
    pub clients: usize,
    /// The CA its Postgres listener's certificate is signed by (PEM), so
    /// other gateways verify it when they carry clients there.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// SHA-256 (hex) of its admin token: every gateway accepts every
    /// gateway's, so an API call can go to any of them (and be forwarded).
    /// Never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_sha256: Option<String>,
}

/// This node's part in the cluster now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It holds the leader key.
    Leader,
    /// Another node (or none yet) leads.
    Follower,
    /// Its lease may have expired (etcd unreachable, the process paused):
    /// no control-plane work until it rejoins.
    Isolated,
    /// No cluster: one gateway, its own leader.
    Single,
}

/// The cluster as this node sees it (`GET /v1/cluster`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// Its role.
    pub role: Role,
    /// The leader's name, when known.
    pub leader: Option<String>,
    /// The leader's generation (the leader key's create revision), when known.
    pub generation: Option<i64>,
    /// Live nodes (their keys exist), by name.
    pub nodes: Vec<NodeInfo>,
    /// Whether etcd answered within the timeout lately.
    pub etcd_reachable: bool,
    /// This gateway's leader beats refused by the leader fence since start
    /// (late writes of a deposed leader; other refused writes are errors
    /// to their callers).
    pub fenced_writes: u64,
}

#[derive(Clone, Debug)]
struct State {
    role: Role,
    leader: Option<String>,
    generation: Option<i64>,
    /// The node key's create revision while registered.
    node_revision: Option<i64>,
    etcd_reachable: bool,
}

/// Membership and leadership of this gateway; see the module doc.
pub struct Cluster {
    name: String,
    etcd: Option<Etcd>,
    state: watch::Sender<State>,
    nodes: RwLock<BTreeMap<String, NodeInfo>>,
    info: RwLock<NodeInfo>,
    fenced: std::sync::atomic::AtomicU64,
}

struct Etcd {
    handle: ClientHandle,
    ttl: Duration,
    /// Called with the node fence each time the node (re)registers.
    on_fence: Box<dyn Fn(Option<Fence>) + Send + Sync>,
}

/// Why this gateway could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Another live gateway has the name.
    #[error("another gateway named {name} is running ({other}); give this one another --node-name, or stop that one")]
    NameTaken {
        /// The name.
        name: String,
        /// What the other one said about itself.
        other: String,
    },
    /// etcd did not answer.
    #[error("joining the cluster through etcd: {0}; is etcd running at [cluster] etcd?")]
    Etcd(String),
}

/// Waits for the leader key's deletion on `watch` (`true`), or for the
/// watch to end (`false`: it is made again); pends without a watch.
async fn leader_deleted(watch: &mut Option<etcd_client::WatchStream>) -> bool {
    let Some(stream) = watch.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match stream.message().await {
            Ok(Some(response)) => {
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == etcd_client::EventType::Delete)
                {
                    return true;
                }
            }
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Runs `work` with `fence` on its catalog writes when it is leader work
/// (`Some`), as it is otherwise.
pub async fn fenced<F: std::future::Future>(fence: Option<Fence>, work: F) -> F::Output {
    match fence {
        Some(fence) => crate::catalog::etcd::with_fence(fence, work).await,
        None => work.await,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

impl Cluster {
    /// One gateway alone: its own leader, acting for every database.
    pub fn single(name: &str) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: name.to_string(),
            etcd: None,
            state: watch::channel(State {
                role: Role::Single,
                leader: Some(name.to_string()),
                generation: None,
                node_revision: None,
                etcd_reachable: false,
            })
            .0,
            nodes: RwLock::new(BTreeMap::new()),
            info: RwLock::new(NodeInfo {
                name: name.to_string(),
                ..NodeInfo::default()
            }),
            fenced: Default::default(),
        })
    }

    /// Registers this node in etcd (refused if the name is taken) and
    /// starts keeping its lease and campaigning; `on_fence` receives the
    /// node fence for the catalog store each time it changes.
    pub async fn join(
        info: NodeInfo,
        handle: ClientHandle,
        ttl: Duration,
        on_fence: Box<dyn Fn(Option<Fence>) + Send + Sync>,
    ) -> Result<Arc<Cluster>, JoinError> {
        let cluster = Arc::new(Cluster {
            name: info.name.clone(),
            etcd: Some(Etcd {
                handle,
                ttl,
                on_fence,
            }),
            state: watch::channel(State {
                role: Role::Isolated,
                leader: None,
                generation: None,
                node_revision: None,
                etcd_reachable: false,
            })
            .0,
            nodes: RwLock::new(BTreeMap::new()),
            info: RwLock::new(info),
            fenced: Default::default(),
        });
        let lease = cluster.register().await?;
        tokio::spawn(cluster.clone().run(lease));
        Ok(cluster)
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether several gateways run together.
    pub fn is_clustered(&self) -> bool {
        self.etcd.is_some()
    }

    fn key(&self, rest: &str) -> String {
        let prefix = self.etcd.as_ref().map_or("", |e| e.handle.prefix.as_str());
        format!("{prefix}/{rest}")
    }

    fn node_key(&self, name: &str) -> String {
        self.key(&format!("nodes/{name}"))
    }

    fn current(&self) -> State {
        self.state.borrow().clone()
    }

    fn set(&self, change: impl FnOnce(&mut State)) {
        self.state.send_modify(change);
    }

    /// The fence of this node's leader work: `Some` only while it leads a
    /// cluster (writes carrying it fail once another node leads).
    pub fn leader_fence(&self) -> Option<Fence> {
        let state = self.current();
        match (state.role, state.generation) {
            (Role::Leader, Some(generation)) => Some(Fence {
                key: self.key("leader"),
                create_revision: generation,
            }),
            _ => None,
        }
    }

    /// Whether this node does the control-plane work for a database whose
    /// records name `owner` (the gateway whose disk holds it; `None` on a
    /// single gateway or for databases imported without one): its owner
    /// does while it is a member; the leader does for databases whose owner
    /// is gone. `Some(fence)` = as the leader, with that fence on its writes.
    pub fn acts_for(&self, owner: Option<&str>) -> Option<Option<Fence>> {
        let state = self.current();
        match state.role {
            Role::Single => Some(None),
            Role::Isolated => None,
            Role::Leader | Role::Follower => match owner {
                Some(owner) if owner == self.name => Some(None),
                Some(owner) if self.node(owner).is_some() => None,
                _ => self.leader_fence().map(Some),
            },
        }
    }

    /// A live node's info.
    pub fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Whether `sha256` is the admin token hash of a live gateway of the
    /// cluster (hashes compared, so timing tells nothing of the token).
    pub fn accepts_admin_token(&self, sha256: &str) -> bool {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|n| n.admin_token_sha256.as_deref() == Some(sha256))
    }

    /// The other live gateways' Postgres addresses, by name.
    pub fn other_addresses(&self) -> Vec<String> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|n| n.name != self.name)
            .map(|n| n.postgres.clone())
            .collect()
    }

    /// Notes a leader beat the leader fence refused (for status and metrics).
    pub fn note_fenced(&self) {
        self.fenced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Updates what this node tells the others about its load.
    pub fn set_load(&self, computes_running: usize, clients: usize) {
        let mut info = self.info.write().unwrap_or_else(PoisonError::into_inner);
        info.computes_running = computes_running;
        info.clients = clients;
    }

    /// Sets the addresses this node is reached at.
    pub fn set_addresses(&self, postgres: String, api: String) {
        let mut info = self.info.write().unwrap_or_else(PoisonError::into_inner);
        info.postgres = postgres;
        info.api = api;
    }

    /// The cluster as this node sees it.
    pub fn view(&self) -> ClusterView {
        let state = self.current();
        let mut nodes: Vec<NodeInfo> = self
            .nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        if self.etcd.is_none() {
            nodes.push(
                self.info
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            );
        }
        for node in &mut nodes {
            node.admin_token_sha256 = None;
        }
        ClusterView {
            node: self.name.clone(),
            role: state.role,
            leader: state.leader,
            generation: state.generation,
            nodes,
            etcd_reachable: state.etcd_reachable,
            fenced_writes: self.fenced.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Grants a lease and creates the node key under it; the lease id.
    async fn register(&self) -> Result<i64, JoinError> {
        let Some(etcd) = &self.etcd else {
            return Ok(0);
        };
        let mut client = etcd.handle.client.clone();
        let timeout = etcd.handle.timeout;
        let ttl_secs = etcd.ttl.as_secs().max(1) as i64;
        let granted = bounded(timeout, client.lease_grant(ttl_secs, None))
            .await
            .map_err(JoinError::Etcd)?;
        let lease = granted.id();
        if granted.ttl() != ttl_secs {
            // Longer on the server: failover is slower, the local deadline
            // (from the shorter TTL asked for) stays on the safe side.
            tracing::info!(asked = ttl_secs, granted = granted.ttl(), "etcd granted a longer lease than [cluster] lease_ttl (its minimum is 1.5x its election timeout)");
        }
        let key = self.node_key(&self.name);
        let info = {
            let mut info = self.info.write().unwrap_or_else(PoisonError::into_inner);
            info.joined_at_unix = unix_now();
            info.clone()
        };
        let value = serde_json::to_vec(&info).map_err(|e| JoinError::Etcd(e.to_string()))?;
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key.clone(), None)]);
        let response = bounded(timeout, client.txn(txn))
            .await
            .map_err(JoinError::Etcd)?;
        if !response.succeeded() {
            let _ = bounded(timeout, client.lease_revoke(lease)).await;
            let other = response
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                        serde_json::from_slice::<NodeInfo>(kv.value())
                            .map(|o| {
                                format!("pid {}, postgres {}, api {}", o.pid, o.postgres, o.api)
                            })
                            .unwrap_or_else(|_| "its key exists".into())
                    }),
                    _ => None,
                })
                .unwrap_or_else(|| "its key exists".into());
            return Err(JoinError::NameTaken {
                name: self.name.clone(),
                other,
            });
        }
        let revision = response.header().map_or(0, |h| h.revision());
        (etcd.on_fence)(Some(Fence {
            key,
            create_revision: revision,
        }));
        self.set(|s| {
            s.node_revision = Some(revision);
            s.etcd_reachable = true;
            s.role = Role::Follower;
        });
        tracing::info!(
            node = self.name.as_str(),
            lease,
            revision,
            "joined the cluster"
        );
        Ok(lease)
    }

    /// Keeps the lease, campaigns, refreshes the view; rejoins after an
    /// isolation. Runs for the process's life.
    async fn run(self: Arc<Self>, mut lease: i64) {
        let Some(etcd) = &self.etcd else {
            return;
        };
        let ttl = etcd.ttl;
        let tick = ttl / 4;
        let margin = ttl / 4;
        loop {
            // Member while `valid_until` is ahead; renewed by each ack.
            let mut valid_until = Instant::now() + ttl - margin;
            let outcome = self
                .serve_lease(lease, tick, ttl, margin, &mut valid_until)
                .await;
            self.step_down(&outcome);
            // The old lease goes now if etcd answers (its keys with it), so
            // the node can take its name again at once; else it expires.
            let mut client = etcd.handle.client.clone();
            let _ = bounded(etcd.handle.timeout, client.lease_revoke(lease)).await;
            // Rejoin: a new lease and node key.
            loop {
                tokio::time::sleep(tick).await;
                match self.register().await {
                    Ok(new_lease) => {
                        lease = new_lease;
                        break;
                    }
                    Err(e) => {
                        self.set(|s| s.etcd_reachable = false);
                        tracing::warn!(error = %e, "rejoining the cluster failed; retrying");
                    }
                }
            }
        }
    }

    fn step_down(&self, why: &str) {
        let was = self.current().role;
        // The node fence stays: once the old lease is gone, so is its key,
        // and every write of this gateway is refused until it rejoins.
        self.set(|s| {
            s.role = Role::Isolated;
            s.generation = None;
            s.node_revision = None;
        });
        tracing::warn!(node = self.name.as_str(), was = ?was, why, "isolated from the cluster: control-plane work stops until it rejoins");
    }

    /// One lease's life: keep-alives, campaign, refresh; returns why it
    /// ended (deadline missed, lease gone).
    async fn serve_lease(
        &self,
        lease: i64,
        tick: Duration,
        ttl: Duration,
        margin: Duration,
        valid_until: &mut Instant,
    ) -> String {
        let Some(etcd) = &self.etcd else {
            return "no etcd".into();
        };
        let mut client = etcd.handle.client.clone();
        let timeout = etcd.handle.timeout.min(tick * 2);
        let mut keeper = None;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publish_at = Instant::now();
        // The leader key's deletion wakes the campaign at once, rather than
        // at the next tick: failover is the lease's expiry, not a poll.
        let mut leader_watch = None;
        loop {
            if leader_watch.is_none() {
                leader_watch = bounded(timeout, client.watch(self.key("leader"), None))
                    .await
                    .ok();
            }
            tokio::select! {
                _ = ticker.tick() => {}
                deleted = leader_deleted(&mut leader_watch) => {
                    if !deleted {
                        // Made again, but not faster than once a tick.
                        leader_watch = None;
                        ticker.tick().await;
                    }
                }
            }
            if Instant::now() >= *valid_until {
                return "the lease was not renewed in time".into();
            }
            // Keep-alive: one request, its answer (in order).
            if keeper.is_none() {
                match bounded(timeout, client.lease_keep_alive(lease)).await {
                    Ok(k) => keeper = Some(k),
                    Err(e) => {
                        self.set(|s| s.etcd_reachable = false);
                        tracing::debug!(error = %e, "lease keep-alive stream");
                        continue;
                    }
                }
            }
            if let Some((k, stream)) = keeper.as_mut() {
                let at = Instant::now();
                let answer = async {
                    k.keep_alive().await?;
                    stream.message().await
                };
                match bounded(timeout, answer).await {
                    // Renewed on the server after `at`: alive until at
                    // least `at + ttl` there.
                    Ok(Some(response)) if response.ttl() > 0 => {
                        *valid_until = at + ttl - margin;
                        self.set(|s| s.etcd_reachable = true);
                    }
                    Ok(Some(_)) => return "the lease expired".into(),
                    Ok(None) | Err(_) => {
                        keeper = None;
                        self.set(|s| s.etcd_reachable = false);
                        continue;
                    }
                }
            }
            if let Err(e) = self.campaign_and_refresh(&mut client, lease, timeout).await {
                self.set(|s| s.etcd_reachable = false);
                tracing::debug!(error = %e, "cluster refresh");
                continue;
            }
            if Instant::now() >= publish_at {
                publish_at = Instant::now() + Duration::from_secs(2);
                let value =
                    serde_json::to_vec(&*self.info.read().unwrap_or_else(PoisonError::into_inner))
                        .unwrap_or_default();
                let key = self.node_key(&self.name);
                // Only our own key under our own lease: a put with a dead
                // lease fails rather than re-creating it.
                let _ = bounded(
                    timeout,
                    client.put(key, value, Some(PutOptions::new().with_lease(lease))),
                )
                .await;
            }
        }
    }

    /// Takes the leader key if it is free; reads the leader and the nodes.
    async fn campaign_and_refresh(
        &self,
        client: &mut Client,
        lease: i64,
        timeout: Duration,
    ) -> Result<(), String> {
        let leader_key = self.key("leader");
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                leader_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                leader_key.clone(),
                self.name.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(leader_key.clone(), None)]);
        let response = bounded(timeout, client.txn(txn)).await?;
        let (leader, generation) = if response.succeeded() {
            let revision = response.header().map_or(0, |h| h.revision());
            tracing::info!(
                node = self.name.as_str(),
                generation = revision,
                "leader now"
            );
            (Some(self.name.clone()), Some(revision))
        } else {
            let kv = response.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
            match kv {
                Some(kv) => (
                    Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    Some(kv.create_revision()),
                ),
                None => (None, None),
            }
        };
        let nodes = bounded(
            timeout,
            client.get(self.key("nodes/"), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut live = BTreeMap::new();
        for kv in nodes.kvs() {
            if let Ok(info) = serde_json::from_slice::<NodeInfo>(kv.value()) {
                live.insert(info.name.clone(), info);
            }
        }
        *self.nodes.write().unwrap_or_else(PoisonError::into_inner) = live;
        let leads = leader.as_deref() == Some(self.name.as_str());
        self.set(|s| {
            s.etcd_reachable = true;
            s.leader = leader;
            s.role = if leads { Role::Leader } else { Role::Follower };
            s.generation = generation;
        });
        Ok(())
    }
}
