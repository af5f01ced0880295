//! The shared connection pooler: one pool of logged-in server connections
//! per database (the bookkeeping is `ogel_policies::pool`, which knows no
//! protocol), and the wire-aware parts here: opening server connections
//! through the database's lifecycle ([`Pools::open`]), the per-client relay
//! in session or transaction mode ([`session`]), prepared statements and
//! session parameters carried across server connections, and what the
//! admin console and `/metrics` read ([`Pools::all`], [`registry`]).

pub mod compute_login;
pub mod faults;
pub mod params;
pub mod registry;
pub mod server_conn;

use crate::config::PoolConfig;
use crate::error::ClientError;
use compute_login::ComputeConnectError;
use ogel_policies::pool::{Checkout, Lease};
use ogel_policies::{Lifecycle, Pool};
use registry::{ClientInfo, Registry};
use server_conn::{ServerConn, ServerInfo};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// One database's pool and what the relay needs to open and describe its
/// server connections.
pub struct DbPool {
    /// The compute: `database` or `database@branch`.
    pub name: Arc<str>,
    /// Logs in as the backend's read-only role (read-only tokens).
    pub read_only: bool,
    /// Server connections.
    pub pool: Arc<Pool<ServerConn>>,
    /// The lifecycle that wakes the database's compute.
    pub lifecycle: Arc<Lifecycle>,
    /// ParameterStatus values of the first server connection (what clients
    /// are told at login, overlaid with their own startup parameters).
    server_params: Mutex<params::Params>,
    /// Open server connections (SHOW SERVERS).
    pub servers: Arc<Registry<ServerInfo>>,
    /// Server-side names of statements some server connection has
    /// prepared without error: a client's Parse of one of these is
    /// answered without a server connection.
    known_statements: Mutex<HashSet<Arc<str>>>,
    /// `name=value` → the server's spelling of a startup setting
    /// (`client_encoding=utf8` → `UTF8`).
    spellings: Mutex<HashMap<String, Arc<[u8]>>>,
    /// Server connection pid → the BackendKeyData pid of the client that
    /// last sent SQL that may notify through it (what listeners are shown).
    notifiers: Mutex<HashMap<u32, u32>>,
    /// The newest compute generation seen: a connection opened under an
    /// older one (a fenced primary's) is never handed out again.
    generation: AtomicU64,
}

/// What to do about a PAUSE that timed out (console, API and branch copies
/// say the same).
pub const PAUSE_HINT: &str =
    "retry when long transactions have finished, or raise pool.pause_timeout";

/// PAUSEs every pool of `pools` (a compute's read-write and read-only
/// pools): all paused, or, on a timeout, all resumed again.
async fn pause_all(
    pools: &[Arc<DbPool>],
    timeout: Duration,
) -> Result<(), ogel_policies::pool::PauseTimeout> {
    for (i, db) in pools.iter().enumerate() {
        if let Err(e) = db.pool.pause(timeout).await {
            for paused in &pools[..i] {
                paused.pool.resume();
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Pools are keyed by compute; a read-only pool's key has a suffix no
/// compute name can have.
fn pool_key(database: &str, read_only: bool) -> String {
    if read_only {
        format!("{database} (read-only)")
    } else {
        database.to_string()
    }
}

/// Bound on [`DbPool`]'s set of known statements (cleared when full).
const KNOWN_STATEMENTS_MAX: usize = 10_000;
/// Bound on [`DbPool`]'s remembered spellings (cleared when full).
const SPELLINGS_MAX: usize = 256;
/// Bound on [`DbPool`]'s notifier map (cleared when full: server
/// connections come and go).
const NOTIFIERS_MAX: usize = 4096;

/// All pools, the pool configuration in force, and the connected clients.
pub struct Pools {
    config: RwLock<PoolConfig>,
    pools: Mutex<BTreeMap<String, Arc<DbPool>>>,
    /// Connected clients (SHOW CLIENTS).
    pub clients: Arc<Registry<ClientInfo>>,
}

/// Locks `m`, carrying on past a poisoned lock (the data stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pools {
    /// No pools yet; they are made on a database's first client.
    pub fn new(config: PoolConfig) -> Self {
        Pools {
            config: RwLock::new(config),
            pools: Mutex::new(BTreeMap::new()),
            clients: Arc::new(Registry::default()),
        }
    }

    /// The pool configuration in force.
    pub fn config(&self) -> PoolConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// PAUSEs `pools` within `pool.pause_timeout`: all paused, or, on a
    /// timeout, all resumed again.
    pub async fn pause(
        &self,
        pools: &[Arc<DbPool>],
    ) -> Result<(), ogel_policies::pool::PauseTimeout> {
        pause_all(pools, self.config().pause_timeout).await
    }

    /// Applies a new `[pool]` section to every pool, keeping connections.
    pub fn reconfigure(&self, config: PoolConfig) {
        let pools: Vec<Arc<DbPool>> = lock(&self.pools).values().cloned().collect();
        for db in pools {
            db.pool
                .configure(config.settings(&crate::names::split_compute(&db.name).database));
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The pool of `database` (its read-write or its read-only one), made
    /// on first use.
    pub fn get(&self, database: &str, lifecycle: &Arc<Lifecycle>, read_only: bool) -> Arc<DbPool> {
        let key = pool_key(database, read_only);
        let mut pools = lock(&self.pools);
        if let Some(db) = pools.get(&key) {
            if Arc::ptr_eq(&db.lifecycle, lifecycle) {
                return db.clone();
            }
        }
        let db = Arc::new(DbPool {
            name: Arc::from(database),
            read_only,
            // Branches (`db@branch`) take their database's settings.
            pool: Pool::new(
                self.config()
                    .settings(&crate::names::split_compute(database).database),
            ),
            lifecycle: lifecycle.clone(),
            server_params: Mutex::new(params::Params::default()),
            servers: Arc::new(Registry::default()),
            known_statements: Mutex::new(HashSet::new()),
            spellings: Mutex::default(),
            notifiers: Mutex::default(),
            generation: AtomicU64::new(0),
        });
        pools.insert(key, db.clone());
        db
    }

    /// The existing pools of a compute (read-write and read-only).
    pub fn find_all(&self, database: &str) -> Vec<Arc<DbPool>> {
        let pools = lock(&self.pools);
        [false, true]
            .iter()
            .filter_map(|ro| pools.get(&pool_key(database, *ro)).cloned())
            .collect()
    }

    /// Every pool, by database name.
    pub fn all(&self) -> Vec<Arc<DbPool>> {
        lock(&self.pools).values().cloned().collect()
    }

    /// Drops a deleted database's pools (their connections close).
    pub fn remove(&self, database: &str) {
        for ro in [false, true] {
            if let Some(db) = lock(&self.pools).remove(&pool_key(database, ro)) {
                db.pool.close_idle();
            }
        }
    }

    /// Background upkeep every second: idle and lifetime limits, min_idle.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for db in self.all() {
                let want = db.pool.maintain();
                // min_idle only while the compute runs: it must not keep a
                // database awake or wake it.
                if want == 0 || !db.lifecycle.stats(&db.name).running {
                    continue;
                }
                for _ in 0..want {
                    let Some(slot) = db.pool.reserve() else { break };
                    let db = db.clone();
                    tokio::spawn(async move {
                        if let Ok(conn) = db.open().await {
                            slot.fill(conn).release();
                        }
                    });
                }
            }
        }
    }
}

impl crate::config::Reload for Pools {
    fn reload(&self, config: &crate::config::Config) -> Result<(), crate::config::ReloadError> {
        self.reconfigure(config.pool.clone());
        Ok(())
    }
}

impl DbPool {
    /// How SHOW POOLS names it: the compute, marked when read-only.
    pub fn label(&self) -> String {
        pool_key(&self.name, self.read_only)
    }

    /// Opens and logs in a new server connection, waking the compute if it
    /// is suspended. A cached endpoint that no longer answers (the compute
    /// died) is forgotten and woken once more.
    pub async fn open(&self) -> Result<ServerConn, ClientError> {
        let db = &self.name;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (endpoint, _active) = self.lifecycle.connect(db).await.map_err(|e| {
                tracing::warn!(database = %db, error = %e, cause = ?e.source, "wake failed");
                ClientError::from(&e)
            })?;
            let endpoint = match (self.read_only, endpoint.read_only.clone()) {
                (false, _) => endpoint,
                (true, Some(credentials)) => ogel_plugin_sdk::ComputeEndpoint {
                    credentials,
                    ..endpoint
                },
                (true, None) => {
                    return Err(ClientError::new(
                        "0A000",
                        format!("the backend of database \"{db}\" has no read-only role, so read-only tokens cannot be served"),
                    )
                    .hint("use a read-write token, or a backend that offers read-only credentials"))
                }
            };
            match compute_login::connect(&endpoint, &[]).await {
                Ok(link) => {
                    self.fence(endpoint.generation);
                    let mut conn = ServerConn::new(link, endpoint.generation, &self.servers);
                    let mut params = lock(&self.server_params);
                    if params.is_empty() {
                        *params = conn.params.clone();
                    } else if *params == conn.params {
                        // One list for the pool, its connections and the
                        // clients that changed nothing: `Relay::sync_session`
                        // then sees at a glance that nothing differs.
                        conn.params = params.clone();
                    }
                    return Ok(conn);
                }
                Err(ComputeConnectError::Unreachable { .. }) if attempts < 2 => {
                    self.lifecycle.forget(db, &endpoint);
                }
                Err(ComputeConnectError::Refused(raw)) => {
                    let message = server_conn::error_message(&raw);
                    return Err(ClientError::new(
                        crate::error::CANNOT_CONNECT_NOW,
                        format!("the compute for database \"{db}\" refused the gateway: {message}"),
                    ));
                }
                Err(e) => {
                    tracing::warn!(database = %db, error = %e, "compute login failed");
                    return Err(ClientError::new(
                        crate::error::CANNOT_CONNECT_NOW,
                        format!(
                            "the compute for database \"{db}\" is not accepting connections: {e}"
                        ),
                    ));
                }
            }
        }
    }

    /// A server connection for one transaction or session: an idle one, or
    /// a newly opened one. Waiting too long is 53300; a paused database
    /// that stays paused is 57P03.
    pub async fn lease(&self) -> Result<Lease<ServerConn>, ClientError> {
        let generation = self.generation.load(Ordering::Acquire);
        let epoch = faults::epoch();
        let checkout = self
            .pool
            .acquire(|c: &ServerConn| {
                c.info.entry.generation >= generation && c.fault_epoch == epoch && c.usable()
            })
            .await
            .map_err(|e| match e {
                ogel_policies::pool::AcquireError::Paused(_) => ClientError::new(
                    crate::error::CANNOT_CONNECT_NOW,
                    format!("database \"{}\" is paused: {e}", self.name),
                )
                .hint("wait for RESUME, or raise pool.queue_timeout"),
                e => ClientError::new("53300", format!("database \"{}\": {e}", self.name))
                    .hint("raise pool.size or pool.queue_timeout, or keep transactions short"),
            })?;
        match checkout {
            Checkout::Idle(lease) => Ok(lease),
            // Boxed: opening (SCRAM, start-up) is rare and its state large.
            Checkout::Open(slot) => Ok(slot.fill(Box::pin(self.open()).await?)),
        }
    }

    /// Raises the pool's generation to `generation` (a standby took over):
    /// idle connections of older ones close now, busy ones when they come
    /// back. Returns whether it rose.
    pub fn fence(&self, generation: u64) -> bool {
        let before = self.generation.fetch_max(generation, Ordering::AcqRel);
        if before < generation && before != 0 {
            self.pool.close_idle();
            tracing::info!(compute = %self.name, generation, "pool fenced: connections of older generations are closed");
        }
        before < generation
    }

    /// Closes the idle server connections (a fault was put on the path to
    /// the compute: new ones take that path).
    pub fn close_idle(&self) {
        self.pool.close_idle();
    }

    /// Whether a server accepted the statement `server_name` before.
    pub fn is_known(&self, server_name: &str) -> bool {
        lock(&self.known_statements).contains(server_name)
    }

    /// Notes that a server accepted the statement `server_name`.
    pub fn mark_known(&self, server_name: &Arc<str>) {
        let mut known = lock(&self.known_statements);
        if known.len() >= KNOWN_STATEMENTS_MAX {
            known.clear();
        }
        known.insert(server_name.clone());
    }

    /// The server's spelling of setting `name` = `value`, if learnt.
    pub fn spelling(&self, name: &str, value: &str) -> Option<Arc<[u8]>> {
        lock(&self.spellings)
            .get(&format!("{name}={value}"))
            .cloned()
    }

    /// Remembers the server's spelling of `name` = `value`.
    pub fn learn_spelling(&self, name: &str, value: &str, server_value: Arc<[u8]>) {
        let mut spellings = lock(&self.spellings);
        if spellings.len() >= SPELLINGS_MAX {
            spellings.clear();
        }
        spellings.insert(format!("{name}={value}"), server_value);
    }

    /// Notes that the client with pid `client_pid` may notify through the
    /// server connection `server_pid`.
    pub fn note_notifier(&self, server_pid: u32, client_pid: u32) {
        let mut notifiers = lock(&self.notifiers);
        if notifiers.len() >= NOTIFIERS_MAX && !notifiers.contains_key(&server_pid) {
            notifiers.clear();
        }
        notifiers.insert(server_pid, client_pid);
    }

    /// The client last noted as notifying through `server_pid`.
    pub fn notifier(&self, server_pid: u32) -> Option<u32> {
        lock(&self.notifiers).get(&server_pid).copied()
    }

    /// The parameters a new client is told, known once a server connection
    /// has been opened (`None` before).
    pub fn server_params(&self) -> Option<params::Params> {
        let params = lock(&self.server_params);
        (!params.is_empty()).then(|| params.clone())
    }
}
