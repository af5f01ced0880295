//! Configuration: built-in defaults, then `ogel.toml`, then `OGEL_*`
//! environment variables (nested keys with `__`, e.g.
//! `OGEL_NATIVE__PG_BIN`), then command-line flags — read with figment.
//! This module owns every section's type; it is a leaf and imports no
//! other module of the gateway.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `ogel up` reads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct Config {
    /// Where the catalog, secrets and the native backend's clusters live.
    pub data_dir: PathBuf,
    /// Postgres wire listener (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// HTTP API listener.
    pub api: String,
    /// Default idle window before a database's compute is suspended
    /// (a database may set its own; `0s` means never).
    #[serde(with = "humantime_serde")]
    pub suspend_after: Duration,
    /// Longest a client waits for a compute to wake.
    #[serde(with = "humantime_serde")]
    pub wake_timeout: Duration,
    /// Longest a client may take from connect to authenticated.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Largest startup packet accepted (Postgres itself allows 10,000 bytes).
    pub startup_packet_max_bytes: usize,
    /// The database `ogel up` creates on first start (empty: none).
    pub default_database: String,
    /// Backend new databases get when none is named.
    pub default_backend: String,
    /// Third-party backend plugins (`*.so`); default `<data-dir>/plugins`.
    pub plugins_dir: Option<PathBuf>,
    /// Longest one call into a backend plugin may take.
    #[serde(with = "humantime_serde")]
    pub plugin_call_timeout: Duration,
    /// The native backend's section (`[native]`), handed to the plugin, which
    /// checks it (`pg_bin`, `os_user`, `start_timeout_ms`, `stop_timeout_ms`,
    /// `storage`).
    pub native: serde_json::Value,
    /// The cold tier (`[cold]`: `dir`, or `s3 = { bucket, prefix, endpoint,
    /// region }`, `encryption_key`, `upload_concurrency`), where the native
    /// backend archives WAL and keeps backups; handed to it as its `cold`.
    pub cold: serde_json::Value,
    /// Other backends' sections (`[backends.NAME]`), handed to each plugin.
    pub backends: BTreeMap<String, serde_json::Value>,
    /// Connection pooling (`[pool]`); the one section `ogel reload` re-reads.
    pub pool: PoolConfig,
    /// Pre-waking computes ahead of their clients' usual arrival (`[prewake]`).
    pub prewake: PrewakeConfig,
    /// Who may connect, how often (`[limits]`).
    pub limits: LimitsConfig,
    /// TLS on the Postgres listener (`[tls]`).
    pub tls: TlsConfig,
    /// Token URLs (`[tokens]`).
    pub tokens: TokensConfig,
    /// Backups: schedule and retention (`[backup]`).
    pub backup: BackupConfig,
    /// Hot, warm and cold tiers: when idle databases move down (`[tiers]`).
    pub tiers: TiersConfig,
    /// Several gateways as one, agreeing through etcd (`[cluster]`).
    pub cluster: ClusterConfig,
    /// When a standby takes over a dead primary (`[failover]`).
    pub failover: FailoverConfig,
}

/// `[failover]`: how the gateway watches primaries that have a standby.
/// A primary whose process is gone is failed over at the next check; one
/// that runs but does not answer a health query within `probe_timeout`,
/// `probe_failures` times in a row, too. With `preempt`, a primary whose
/// trends say it will fail soon is switched over first
/// (`control::health`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// How often each primary with a standby is checked (process alive).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// How often a health query (`SELECT 1` over a fresh login) runs.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Longest a health query may take.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Failed health queries in a row before a failover (0: never on
    /// probes, only on a dead process).
    pub probe_failures: u32,
    /// Switch over before a failure when the health model's trends call
    /// for it (crash restarts, flapping probes, a disk filling up).
    pub preempt: bool,
    /// The window the health model fits its trends over.
    #[serde(with = "humantime_serde")]
    pub health_window: Duration,
    /// Crash restarts of a primary within `health_window` that call for
    /// a switchover (0: never on restarts).
    pub max_restarts: u32,
    /// Switch over when the primary's disk is projected full within this
    /// (only to a standby on another filesystem).
    #[serde(with = "humantime_serde")]
    pub disk_horizon: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            check_interval: Duration::from_millis(100),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            probe_failures: 3,
            preempt: true,
            health_window: Duration::from_secs(300),
            max_restarts: 3,
            disk_horizon: Duration::from_secs(600),
        }
    }
}

/// `[cluster]`: with `etcd` set, the catalog lives in etcd, this gateway
/// joins the others as `node_name`, and one leader runs the control loops
/// for databases whose gateway is gone. Without it: one node, the
/// embedded catalog, always its own leader.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs (`--etcd http://a:2379,http://b:2379`); empty: no cluster.
    pub etcd: Vec<String>,
    /// This gateway's name in the cluster, unique (default: the host name).
    pub node_name: Option<String>,
    /// The address other gateways and clients reach this one at (default:
    /// the Postgres listener's host).
    pub advertise: Option<String>,
    /// Key prefix in etcd (several deployments can share one etcd).
    pub prefix: String,
    /// The node's and the leader's lease: a dead gateway's lease expires
    /// this long after its last renewal, and another takes over (whole
    /// seconds; etcd raises it to 1.5× its election timeout, so 2 s on an
    /// etcd with default settings).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Longest an etcd call may take before it counts as unreachable.
    #[serde(with = "humantime_serde")]
    pub etcd_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: Vec::new(),
            node_name: None,
            advertise: None,
            prefix: "/ogel".into(),
            lease_ttl: Duration::from_secs(1),
            etcd_timeout: Duration::from_secs(2),
        }
    }
}

impl ClusterConfig {
    /// Whether several gateways run together (etcd configured).
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }
}

/// `[tiers]`: a suspended database with no connections for `warm_after`
/// goes warm (a compressed local copy in `warm_dir`), for `cold_after`
/// cold (only in the cold tier); a connection brings it back.
/// `[tiers.databases.NAME]` sets one database's policy.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TiersConfig {
    /// Idle time before a suspended database goes warm (unset: never).
    #[serde(with = "humantime_serde")]
    pub warm_after: Option<Duration>,
    /// Idle time before it goes cold (unset: never).
    #[serde(with = "humantime_serde")]
    pub cold_after: Option<Duration>,
    /// Where warm copies go (handed to the native backend; default
    /// `<data-dir>/native/warm`).
    pub warm_dir: Option<PathBuf>,
    /// Longest a client waits for a warm or cold database to come back
    /// (a hot one: `wake_timeout`).
    #[serde(with = "humantime_serde")]
    pub restore_timeout: Duration,
    /// Per-database policies.
    pub databases: BTreeMap<String, TierPolicy>,
}

impl Default for TiersConfig {
    fn default() -> Self {
        TiersConfig {
            warm_after: None,
            cold_after: None,
            warm_dir: None,
            restore_timeout: Duration::from_secs(600),
            databases: BTreeMap::new(),
        }
    }
}

/// `[tiers.databases.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TierPolicy {
    /// See [`TiersConfig::warm_after`].
    #[serde(with = "humantime_serde")]
    pub warm_after: Option<Duration>,
    /// See [`TiersConfig::cold_after`].
    #[serde(with = "humantime_serde")]
    pub cold_after: Option<Duration>,
}

impl TiersConfig {
    /// Database `name`'s policy: its own section over the defaults.
    pub fn policy(&self, name: &str) -> TierPolicy {
        let own = self.databases.get(name);
        TierPolicy {
            warm_after: own.and_then(|p| p.warm_after).or(self.warm_after),
            cold_after: own.and_then(|p| p.cold_after).or(self.cold_after),
        }
    }

    /// How often the policy is looked at: every 30 s, or four times per
    /// the shortest idle time when shorter (not under a second).
    pub fn check_interval(&self) -> Duration {
        let shortest = self
            .databases
            .values()
            .flat_map(|p| [p.warm_after, p.cold_after])
            .chain([self.warm_after, self.cold_after])
            .flatten()
            .min();
        let quarter = shortest.map_or(Duration::from_secs(30), |d| d / 4);
        quarter.clamp(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// `[backup]`: when the gateway makes backups by itself, and which the
/// backend keeps. `[backup.databases.NAME]` sets one database's schedule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// A backup of each database's main branch this often (unset: none).
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Make it a full one when the last full one is this old (PostgreSQL
    /// 17+; before, every backup is full).
    #[serde(with = "humantime_serde")]
    pub full_every: Option<Duration>,
    /// Full backups (with their incremental ones) kept by count (default 2).
    pub keep_full: Option<usize>,
    /// Backups kept by age, whatever their count.
    #[serde(with = "humantime_serde")]
    pub keep_for: Option<Duration>,
    /// Per-database schedules.
    pub databases: BTreeMap<String, BackupSchedule>,
}

/// `[backup.databases.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSchedule {
    /// See [`BackupConfig::every`].
    #[serde(with = "humantime_serde")]
    pub every: Option<Duration>,
    /// See [`BackupConfig::full_every`].
    #[serde(with = "humantime_serde")]
    pub full_every: Option<Duration>,
}

impl BackupConfig {
    /// How often the schedule is looked at: every 30 s, or twice per the
    /// shortest `every` when that is shorter (not under a second).
    pub fn check_interval(&self) -> Duration {
        let shortest = self
            .databases
            .values()
            .filter_map(|s| s.every)
            .chain(self.every)
            .min();
        let half = shortest.map_or(Duration::from_secs(30), |d| d / 2);
        half.clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Database `name`'s schedule: its own section over the defaults.
    pub fn schedule(&self, name: &str) -> BackupSchedule {
        let own = self.databases.get(name);
        BackupSchedule {
            every: own.and_then(|s| s.every).or(self.every),
            full_every: own.and_then(|s| s.full_every).or(self.full_every),
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct LimitsConfig {
    /// Client connections at once, all databases together.
    pub max_connections: usize,
    /// New connections per second from one address.
    pub connections_per_second_per_source: u32,
    /// Failed logins from one address (within `failure_window`) before it
    /// is refused for a while.
    pub auth_failures_before_backoff: u32,
    /// The window failed logins are counted in.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// The longest an address is refused after failed logins.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Clients at once across one tenant's databases (0: no limit); a
    /// tenant's own `max_clients` overrides it.
    pub clients_per_tenant: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 20_000,
            connections_per_second_per_source: 2_000,
            auth_failures_before_backoff: 10,
            failure_window: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            clients_per_tenant: 0,
        }
    }
}

/// `[tls]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct TlsConfig {
    /// Offer TLS at all.
    pub enabled: bool,
    /// Certificate chain (PEM); with `key`. Default: the generated one.
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
    /// Refuse plaintext clients that are not on loopback.
    pub require_for_remote: bool,
    /// The domain SNI routing names end with (`shop--dev.<domain>`).
    pub domain: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            cert: None,
            key: None,
            require_for_remote: true,
            domain: "localhost".into(),
        }
    }
}

/// `[tokens]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct TokensConfig {
    /// The `aud` claim: tokens of another deployment are refused.
    pub audience: String,
    /// Lifetime of a token when none is asked for.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The longest lifetime a token may get.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// The user name that says "my password is a token" (cleartext
    /// password, only over TLS or from loopback). Reserved: no role has it.
    pub password_user: String,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            audience: "ogelbase".into(),
            default_ttl: Duration::from_secs(30 * 86_400),
            max_ttl: Duration::from_secs(366 * 86_400),
            password_user: "token".into(),
        }
    }
}

/// Why a reload did not happen; the previous configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started without a configuration file.
    #[error("this gateway was not started from a configuration file")]
    NoSource,
    /// The file does not parse or check.
    #[error("configuration: {0}")]
    Config(#[from] Box<figment::Error>),
    /// A part refused the new configuration.
    #[error("{what}: {message}; the previous one stays in use")]
    Refused {
        /// The part (e.g. "TLS certificate").
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// A part of the gateway that applies a new configuration live.
pub trait Reload: Send + Sync {
    /// Applies what it can of `config`, or refuses it whole.
    fn reload(&self, config: &Config) -> Result<(), ReloadError>;
}

/// `[prewake]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct PrewakeConfig {
    /// Learn and pre-wake at all.
    pub enabled: bool,
    /// The rhythm of clients' arrivals (a day).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// How long before the expected arrival to wake.
    #[serde(with = "humantime_serde")]
    pub lead: Duration,
    /// Earlier periods that must agree before a pre-wake.
    pub min_history: usize,
}

impl Default for PrewakeConfig {
    fn default() -> Self {
        let d = ogel_policies::warm::PredictorSettings::default();
        PrewakeConfig {
            enabled: true,
            period: d.period,
            lead: d.lead,
            min_history: d.min_history,
        }
    }
}

impl PrewakeConfig {
    /// The predictor's settings.
    pub fn settings(&self) -> ogel_policies::warm::PredictorSettings {
        ogel_policies::warm::PredictorSettings {
            period: self.period,
            lead: self.lead,
            min_history: self.min_history.max(1),
        }
    }
}

/// How a client's server connection is shared.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per client for the client's whole session.
    Session,
    /// A server connection per transaction.
    #[default]
    Transaction,
}

impl PoolMode {
    /// As written in the config and shown by `SHOW POOLS`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `[pool]`: defaults for every database, with per-database and per-role
/// overrides.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct PoolConfig {
    /// `transaction` (default) or `session`.
    pub mode: PoolMode,
    /// Server connections per database.
    pub size: usize,
    /// Idle server connections kept open while the compute runs.
    pub min_idle: usize,
    /// Clients per database.
    pub max_clients: usize,
    /// An idle server connection is closed after this long unused.
    #[serde(with = "humantime_serde")]
    pub server_idle_timeout: Duration,
    /// A server connection is closed when it comes back after this age.
    #[serde(with = "humantime_serde")]
    pub server_lifetime: Duration,
    /// Longest a client waits for a server connection (then 53300).
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Longest `PAUSE` waits for running transactions.
    #[serde(with = "humantime_serde")]
    pub pause_timeout: Duration,
    /// A plain-TCP client that has sent nothing for this long is parked:
    /// it keeps its connection, statements and settings but no task until
    /// it sends again (0: never).
    #[serde(with = "humantime_serde")]
    pub park_idle_after: Duration,
    /// Per-database overrides (`[pool.databases.NAME]`).
    pub databases: BTreeMap<String, PoolOverride>,
    /// Per-role pool mode (`[pool.roles.NAME]`), over the database's.
    pub roles: BTreeMap<String, RolePool>,
}

/// `[pool.databases.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct PoolOverride {
    /// Pool mode for this database.
    pub mode: Option<PoolMode>,
    /// Server connections.
    pub size: Option<usize>,
    /// Idle connections kept.
    pub min_idle: Option<usize>,
    /// Clients.
    pub max_clients: Option<usize>,
}

/// `[pool.roles.NAME]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct RolePool {
    /// Pool mode for this role's clients.
    pub mode: Option<PoolMode>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            size: 20,
            min_idle: 0,
            max_clients: 10_000,
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            queue_timeout: Duration::from_secs(30),
            pause_timeout: Duration::from_secs(30),
            park_idle_after: Duration::from_secs(1),
            databases: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

impl PoolConfig {
    /// The pool settings of `database`.
    pub fn settings(&self, database: &str) -> ogel_policies::PoolSettings {
        let o = self.databases.get(database).cloned().unwrap_or_default();
        ogel_policies::PoolSettings {
            size: o.size.unwrap_or(self.size).max(1),
            min_idle: o.min_idle.unwrap_or(self.min_idle),
            max_clients: o.max_clients.unwrap_or(self.max_clients),
            idle_timeout: self.server_idle_timeout,
            lifetime: self.server_lifetime,
            queue_timeout: self.queue_timeout,
        }
    }

    /// The pool mode of `role`'s clients of `database`.
    pub fn mode(&self, database: &str, role: &str) -> PoolMode {
        self.roles
            .get(role)
            .and_then(|r| r.mode)
            .or_else(|| self.databases.get(database).and_then(|d| d.mode))
            .unwrap_or(self.mode)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".ogel"),
            listen: "127.0.0.1:6432".into(),
            api: "127.0.0.1:6480".into(),
            suspend_after: Duration::from_secs(300),
            wake_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(30),
            startup_packet_max_bytes: 10_000,
            default_database: "app".into(),
            default_backend: "native".into(),
            plugins_dir: None,
            plugin_call_timeout: Duration::from_secs(120),
            native: serde_json::json!({}),
            cold: serde_json::json!({}),
            backends: BTreeMap::new(),
            pool: PoolConfig::default(),
            prewake: PrewakeConfig::default(),
            limits: LimitsConfig::default(),
            tls: TlsConfig::default(),
            tokens: TokensConfig::default(),
            backup: BackupConfig::default(),
            tiers: TiersConfig::default(),
            cluster: ClusterConfig::default(),
            failover: FailoverConfig::default(),
        }
    }
}

/// Flags of `ogel up` that override the file and the environment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// `--etcd`, `--node-name`, `--advertise`.
    #[serde(skip_serializing_if = "ClusterOverrides::is_empty")]
    pub cluster: ClusterOverrides,
}

/// The `[cluster]` keys `ogel up` takes as flags.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterOverrides {
    /// etcd client URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Vec<String>>,
    /// This gateway's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Its advertised address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

impl ClusterOverrides {
    fn is_empty(&self) -> bool {
        self.etcd.is_none() && self.node_name.is_none() && self.advertise.is_none()
    }
}

impl Config {
    /// Each backend's configuration, as its plugin receives it. The native
    /// backend also gets its root, `<data-dir>/native`.
    pub fn backend_configs(&self) -> BTreeMap<String, serde_json::Value> {
        let mut configs = self.backends.clone();
        let mut native = match &self.native {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        native.insert(
            "root".into(),
            serde_json::json!(self.data_dir.join("native")),
        );
        if let Some(dir) = &self.tiers.warm_dir {
            native.insert("warm_dir".into(), serde_json::json!(dir));
        }
        let mut cold = match &self.cold {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        let mut retention = serde_json::Map::new();
        if let Some(keep) = self.backup.keep_full {
            retention.insert("keep_full".into(), keep.into());
        }
        if let Some(age) = self.backup.keep_for {
            retention.insert(
                "keep_for".into(),
                humantime::format_duration(age).to_string().into(),
            );
        }
        if !retention.is_empty() {
            cold.insert("retention".into(), retention.into());
        }
        if !cold.is_empty() {
            native.insert("cold".into(), serde_json::Value::Object(cold));
        }
        configs.insert("native".into(), serde_json::Value::Object(native));
        configs
    }

    /// Where third-party plugins are loaded from.
    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    /// Loads defaults ← `file` (if it exists) ← `OGEL_*` ← `overrides`.
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Config, Box<figment::Error>> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(
                Env::prefixed("OGEL_")
                    .split("__")
                    // OGEL_TOKEN and OGEL_CONFIG belong to the CLI, not to `up`.
                    .ignore(&["token", "config"]),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return its large error
mod tests {
    use super::*;

    #[test]
    fn pool_overrides_by_database_and_role() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ogel.toml",
                "[pool]\nsize = 8\nqueue_timeout = \"2s\"\n[pool.databases.shop]\nsize = 3\nmode = \"session\"\n[pool.roles.reporting]\nmode = \"transaction\"\n",
            )?;
            let config =
                Config::load(Path::new("ogel.toml"), &Overrides::default()).map_err(|e| *e)?;
            assert_eq!(config.pool.settings("shop").size, 3);
            assert_eq!(config.pool.settings("other").size, 8);
            assert_eq!(
                config.pool.settings("other").queue_timeout,
                Duration::from_secs(2)
            );
            assert_eq!(config.pool.mode("shop", "app"), PoolMode::Session);
            assert_eq!(config.pool.mode("shop", "reporting"), PoolMode::Transaction);
            assert_eq!(config.pool.mode("other", "app"), PoolMode::Transaction);
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ogel.toml",
                "listen = \"127.0.0.1:7000\"\nsuspend_after = \"2m\"\n[native]\nos_user = \"pg\"\n",
            )?;
            jail.set_env("OGEL_API", "127.0.0.1:7100");
            jail.set_env("OGEL_NATIVE__START_TIMEOUT_MS", "1234");
            let flags = Overrides {
                listen: Some("127.0.0.1:7200".into()),
                ..Overrides::default()
            };
            let config = Config::load(Path::new("ogel.toml"), &flags).map_err(|e| *e)?;
            assert_eq!(config.listen, "127.0.0.1:7200");
            assert_eq!(config.api, "127.0.0.1:7100");
            assert_eq!(config.suspend_after, Duration::from_secs(120));
            assert_eq!(config.native["os_user"], "pg");
            assert_eq!(config.native["start_timeout_ms"], 1234);
            assert_eq!(config.data_dir, PathBuf::from(".ogel"));
            assert_eq!(config.pool.mode, PoolMode::Transaction);
            Ok(())
        });
    }
}
