//! The contract between the OgelBase gateway and a storage backend.
//!
//! A backend owns where a database's data lives and how a compute (a running
//! Postgres that serves it) is started and stopped. Everything else — the
//! wire front end, authentication, wake coalescing, scale to zero — is the
//! gateway's and is shared by every backend.
//!
//! Design rules:
//! - this crate depends on no backend and not on the gateway;
//! - every method is cancel-safe from the gateway's point of view: if the
//!   future is dropped, the backend is left in a state the next call can
//!   repair (a half-created database is deleted by a retried `create`, a
//!   half-started compute is found by `compute_status`);
//! - errors carry a [`BackendErrorKind`] that the gateway maps to SQLSTATEs and
//!   HTTP status codes, and a message that is safe to show to a client.
//!
//! Computes are named by a [`ComputeName`] (a database and one of its
//! branches, `main` being the database itself), never by a `db@branch`
//! string: `ComputeName::parse` and its `Display` are the only code that
//! reads or writes that text form. Since ABI 1.3 the typed form
//! `{"database": .., "branch": ..}` crosses the ABI; the host still sends
//! the string to plugins built for 1.0–1.2, and a plugin accepts both.
//!
//! ```
//! use ogel_plugin_sdk::*;
//!
//! /// A backend that fronts one fixed Postgres server and never suspends.
//! struct Fixed;
//!
//! #[async_trait::async_trait]
//! impl Backend for Fixed {
//!     fn name(&self) -> &str { "fixed" }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::default() // no suspend, no branches, no snapshots
//!     }
//!     async fn create_database(&self, _: &DatabaseSpec) -> Result<(), BackendError> { Ok(()) }
//!     async fn delete_database(&self, _: &str) -> Result<(), BackendError> { Ok(()) }
//!     async fn ensure_running(&self, compute: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
//!         if !compute.is_main() {
//!             return Err(BackendError::not_found(format!("{compute}: no branches here")));
//!         }
//!         Ok(ComputeEndpoint {
//!             host: "127.0.0.1".into(),
//!             port: 5432,
//!             database: compute.database.clone(),
//!             generation: 1,
//!             credentials: Credentials::Password { user: "app".into(), password: "secret".into() },
//!             read_only: None, // no read-only role: read-only tokens are refused
//!             tls: None,       // a compute on loopback
//!         })
//!     }
//!     async fn suspend(&self, _: &ComputeName) -> Result<(), BackendError> {
//!         Err(BackendError::unsupported("the fixed backend cannot suspend"))
//!     }
//!     async fn compute_status(&self, _: &ComputeName) -> Result<ComputeStatus, BackendError> {
//!         Ok(ComputeStatus::default())
//!     }
//! }
//! ```
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod abi;
pub mod export;
pub mod files;
pub mod names;
pub mod wire;

pub use names::{ComputeName, MAIN_BRANCH};

#[doc(hidden)]
pub use serde_json as __serde_json;

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a backend can do; the gateway refuses, with a clear message, what it cannot.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Capabilities {
    /// The backend can stop a compute and start it again later (scale to zero).
    pub suspend: bool,
    /// How branches are made.
    pub branching: Branching,
    /// Branches can start at an LSN or a timestamp.
    pub point_in_time: bool,
    /// Snapshots can be taken, listed and restored.
    pub snapshots: bool,
    /// A crash-consistent snapshot of a running compute in one atomic step.
    pub online_snapshot: bool,
    /// Making a branch takes minutes (a snapshot restored into a new
    /// instance, as on RDS): the gateway asks the caller to say
    /// `--allow-slow`. ABI 1.2; absent means false.
    pub slow_branches: bool,
    /// A compute can have hot standbys to fail over to (`set_standbys`,
    /// `promote`). ABI 1.5; absent means false.
    pub standby: bool,
    /// A compute's standby can live on another gateway of a cluster and
    /// stream through the gateways (`replicate`). ABI 1.6; absent means
    /// false.
    pub remote_standby: bool,
}

/// How a backend makes branches.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Branching {
    /// No branches.
    #[default]
    None,
    /// Instant copy-on-write clones.
    CopyOnWrite,
    /// A full copy through a snapshot (minutes on large data).
    SnapshotCopy,
}

/// Where a new branch starts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BranchPoint {
    /// The parent as it is now.
    Now,
    /// The parent at a WAL position (e.g. `0/16B3740`).
    Lsn {
        /// The LSN.
        lsn: String,
    },
    /// The parent at a time (RFC 3339).
    Timestamp {
        /// The time.
        at: String,
    },
    /// A snapshot's contents.
    Snapshot {
        /// Snapshot id.
        id: String,
    },
}

/// A branch to create.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BranchSpec {
    /// The database.
    pub database: String,
    /// The new branch's name.
    pub branch: String,
    /// The branch it starts from.
    pub parent: String,
    /// Where in the parent's history.
    pub point: BranchPoint,
}

/// How far a long operation on a compute has come (a clone, a restore).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Progress {
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes in all (0 while unknown).
    pub total_bytes: u64,
}

/// A snapshot a backend keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Backend-unique id.
    pub id: String,
    /// The database.
    pub database: String,
    /// The branch it was taken of.
    pub branch: String,
    /// Unix time it was taken.
    pub created_at_unix: u64,
    /// Size, when known.
    pub size_bytes: Option<u64>,
}

/// Full or incremental (ABI 1.4).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Everything.
    Full,
    /// What changed since the previous backup of its chain.
    Incremental,
}

/// A backup in a backend's durable store (ABI 1.4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupInfo {
    /// Id, unique per branch; ids sort by time.
    pub id: String,
    /// The database.
    pub database: String,
    /// The branch it is of.
    pub branch: String,
    /// Full or incremental.
    pub kind: BackupKind,
    /// The backup an incremental one is relative to.
    pub parent: Option<String>,
    /// The ids a restore of it needs, from the full backup to this one.
    pub chain: Vec<String>,
    /// Unix time it started.
    pub created_at_unix: u64,
    /// Unix time it finished.
    pub finished_at_unix: u64,
    /// The WAL range it needs (start, end).
    pub start_lsn: String,
    /// See `start_lsn`.
    pub end_lsn: String,
    /// Bytes of data it holds (before compression).
    pub size_bytes: u64,
    /// Bytes it takes in the store.
    pub stored_bytes: u64,
    /// The PostgreSQL major version it is of.
    pub pg_major: u32,
}

/// How far a restore replays (ABI 1.4).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestoreTarget {
    /// Everything the store holds.
    #[default]
    Latest,
    /// Up to this WAL position.
    Lsn {
        /// `X/Y`.
        lsn: String,
    },
    /// Up to this time.
    Timestamp {
        /// RFC 3339.
        at: String,
    },
}

/// A restore from the backend's durable store (ABI 1.4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreSpec {
    /// The database.
    pub database: String,
    /// The branch whose backups are used.
    pub branch: String,
    /// How far to replay.
    #[serde(default)]
    pub target: RestoreTarget,
    /// Restore this backup (default: the newest one before the target).
    #[serde(default)]
    pub backup: Option<String>,
    /// Restore as this branch (default: `branch` itself, replaced once the
    /// restored copy is whole).
    #[serde(default)]
    pub as_branch: Option<String>,
}

/// What a restore made (ABI 1.4).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Restored {
    /// The database.
    pub database: String,
    /// The branch restored into.
    pub branch: String,
    /// The backup used.
    pub backup: String,
    /// The database's owner role.
    pub owner: String,
}

/// How far behind a compute's continuous archive is (ABI 1.4).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveStatus {
    /// Where WAL goes.
    pub store: String,
    /// WAL files not yet durable there.
    pub pending_files: u64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: u64,
    /// The last upload error, while uploads fail.
    pub last_error: Option<String>,
}

/// A compute's standbys (ABI 1.5).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct StandbyStatus {
    /// Standbys wanted.
    pub wanted: u32,
    /// Standbys streaming from the primary now.
    pub streaming: u32,
    /// Commits wait until a standby has flushed them.
    pub synchronous: bool,
    /// WAL bytes the slowest standby has not replayed yet, while the
    /// primary runs.
    pub replay_lag_bytes: Option<u64>,
    /// Times a standby took over this compute.
    pub failovers: u64,
    /// The standby's process, where the backend has one (fault injection).
    pub pid: Option<u32>,
    /// Why a wanted standby is not streaming (being built, restarting).
    pub note: Option<String>,
    /// The filesystem holding the primary's data, where the backend knows
    /// it (the gateway's health model fits its trend). Optional: plugins
    /// of ABI 1.5 that leave it out load unchanged.
    pub primary_disk: Option<DiskUse>,
    /// The filesystem holding the standby's data.
    pub standby_disk: Option<DiskUse>,
}

/// Use of one filesystem.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DiskUse {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes usable (used + available to unprivileged users).
    pub size_bytes: u64,
    /// Which filesystem (two readings with the same device share one).
    pub device: u64,
}

/// A compute's part in a standby arrangement that spans two gateways of a
/// cluster (ABI 1.6). The gateway decides, holding the cluster's fence;
/// the backend only does what it is told.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ReplicaRole {
    /// This node holds the primary; its standby is another gateway's and
    /// streams through replication connections the gateways relay. Keep no
    /// standby here. With `synchronous`, commits wait for that standby and
    /// keep waiting while it is away: only the gateway turns it off (after
    /// recording, under its fence, that the standby may no longer take
    /// over).
    Primary {
        /// Commits wait until the remote standby has flushed them.
        synchronous: bool,
    },
    /// This node keeps a standby of the compute, whose primary is another
    /// gateway's, reached at `upstream`. A copy of the compute this node
    /// still holds as a primary (an old primary coming back) is fenced
    /// first and never served again.
    Standby {
        /// Where the primary is reached.
        upstream: Upstream,
    },
    /// Neither: drop what the arrangement kept here. A primary copy of a
    /// compute that another gateway now serves is fenced and set aside.
    Detached,
}

/// Where a remote standby reaches its primary: the serving gateway's
/// Postgres listener, which relays replication connections to the compute
/// (ABI 1.6).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Upstream {
    /// Host of the serving gateway.
    pub host: String,
    /// Its Postgres port.
    pub port: u16,
    /// The database name to send: the gateway routes on it (`db@branch`).
    pub database: String,
    /// PEM of the CA that signed the serving gateway's certificate: the
    /// standby verifies it. `None` on loopback (TLS if offered).
    pub tls_ca_pem: Option<String>,
    /// The database's owner role, which a promoted standby serves.
    pub owner: String,
}

/// Why a standby takes over (ABI 1.5).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Takeover {
    /// The primary is dead or unhealthy: fence it at once (it must take no
    /// write after `promote` returns), then promote.
    Failover,
    /// Planned: stop the primary cleanly, wait until the standby has
    /// replayed all of its WAL, then promote. Nothing is lost.
    Switchover,
}

/// Where a compute's data is (ABI 1.4).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A data directory on local disk (running or suspended).
    Hot,
    /// Suspended, kept as a compressed local copy on a cheaper path.
    Warm,
    /// Only in the durable store; nothing local.
    Cold,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        })
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hot" => Ok(Tier::Hot),
            "warm" => Ok(Tier::Warm),
            "cold" => Ok(Tier::Cold),
            other => Err(format!("unknown tier \"{other}\" (hot, warm or cold)")),
        }
    }
}

/// A database to create.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseSpec {
    /// The database name clients use (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub name: String,
    /// The role that owns the database inside the compute.
    pub owner: String,
}

/// How the gateway logs in to a compute. Clients never see these.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Credentials {
    /// SCRAM or cleartext password authentication as `user`.
    Password {
        /// Role name inside the compute.
        user: String,
        /// Password only the gateway holds.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// Where a running compute can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeEndpoint {
    /// Host name or IP; a value starting with `/` is a unix socket directory.
    pub host: String,
    /// TCP port (or the unix socket's port suffix).
    pub port: u16,
    /// The database name inside the compute.
    pub database: String,
    /// Increases every time a different compute takes over this database;
    /// connections tagged with an older generation are stale.
    pub generation: u64,
    /// How the gateway logs in.
    pub credentials: Credentials,
    /// How the gateway logs in for read-only clients (token URLs minted
    /// `--read-only`): a role that cannot write, enforced by the database,
    /// not by a session setting. `None`: the backend has none, and
    /// read-only tokens are refused for its databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<Credentials>,
    /// Connect with TLS (SSLRequest, then a verified handshake): needed by
    /// computes across a network, such as Neon's (which routes by SNI) or
    /// RDS's. `None`: plaintext, for computes on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ComputeTls>,
}

/// How the gateway speaks TLS to a compute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeTls {
    /// Sent as SNI and verified against the certificate (a host name, e.g.
    /// `ep-cool-name-123456.us-east-2.aws.neon.tech`); `host` may then be
    /// another address that reaches it (a tunnel, a test proxy).
    pub server_name: String,
    /// PEM certificates to trust instead of the public web roots (a
    /// private CA, an emulator's). `None`: the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// The lifecycle state of a compute.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ComputeState {
    /// Not running; the next connection wakes it.
    #[default]
    Suspended,
    /// Being started.
    Starting,
    /// Accepting connections.
    Running,
    /// Being stopped.
    Draining,
}

impl fmt::Display for ComputeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeState::Suspended => "suspended",
            ComputeState::Starting => "starting",
            ComputeState::Running => "running",
            ComputeState::Draining => "draining",
        })
    }
}

/// What a backend reports about one database's compute.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComputeStatus {
    /// Lifecycle state.
    pub state: ComputeState,
    /// Process id of the compute's postmaster, where the backend has one.
    pub pid: Option<u32>,
    /// Port the compute listens on, where it has one.
    pub port: Option<u16>,
    /// Unix time (seconds) the compute became ready, when running.
    pub started_at_unix: Option<u64>,
    /// Current generation.
    pub generation: u64,
}

/// What kind of failure a backend call had; the gateway maps it to a
/// SQLSTATE for clients and an HTTP status for API callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendErrorKind {
    /// The database does not exist (3D000 / 404).
    NotFound,
    /// The database already exists (42P04 / 409).
    AlreadyExists,
    /// The request itself is invalid (22023 / 400).
    InvalidRequest,
    /// The backend cannot do this at all (0A000 / 422).
    Unsupported,
    /// The compute could not be started or reached (57P03 / 503).
    Unavailable,
    /// Disk full or another resource limit (53100 / 507).
    OutOfResources,
    /// A fault inside the backend (XX000 / 500).
    Internal,
}

/// An error from a backend: a kind, a client-safe message and an optional cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What kind of failure this is.
    pub kind: BackendErrorKind,
    /// A message safe to show to clients and API callers; says what to do.
    pub message: String,
    /// The underlying cause, for logs only.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// An error of `kind` with a client-safe message.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: None,
        }
    }
    /// Attaches the underlying cause (logged, never sent to clients).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Shorthand for [`BackendErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::NotFound, message)
    }
    /// Shorthand for [`BackendErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Unsupported, message)
    }
    /// Shorthand for [`BackendErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Unavailable, message)
    }
    /// Shorthand for [`BackendErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Internal, message)
    }
}

fn unsupported(backend: &str, what: &str) -> BackendError {
    BackendError::unsupported(format!("backend {backend} cannot {what}"))
}

/// A storage backend: owns databases' data and their computes.
///
/// The gateway serializes lifecycle calls per database (never two of
/// `ensure_running`/`suspend`/`delete_database` at once for the same name),
/// so a backend need not coordinate them itself.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short, stable name (`native`, `neon`, `rds`, …).
    fn name(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// One line for `ogel status` and `ogel plugins list` (versions, paths).
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// Creates the database and its owner role. On error nothing is left
    /// behind that would make a retry fail.
    async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError>;

    /// Stops the compute if running and deletes all of the database's data.
    /// Deleting a database that does not exist is not an error.
    async fn delete_database(&self, name: &str) -> Result<(), BackendError>;

    /// Returns a reachable endpoint, starting the compute if it is suspended.
    /// Returns only once the compute accepts connections. The endpoint's
    /// credentials log in as the database's owner role; only the gateway
    /// holds them.
    async fn ensure_running(&self, compute: &ComputeName) -> Result<ComputeEndpoint, BackendError>;

    /// Stops the compute cleanly: no committed transaction is lost.
    /// Suspending a suspended database is not an error.
    async fn suspend(&self, compute: &ComputeName) -> Result<(), BackendError>;

    /// The compute's current state, without changing it.
    async fn compute_status(&self, compute: &ComputeName) -> Result<ComputeStatus, BackendError>;

    /// Whether the backend can serve at all (its control plane answers, its
    /// disks are writable). The default says yes.
    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Names of the databases the backend holds.
    async fn list_databases(&self) -> Result<Vec<String>, BackendError> {
        Err(unsupported(self.name(), "list its databases"))
    }

    /// Creates a branch ([`Capabilities::branching`]). On error nothing is
    /// left that would make a retry fail.
    async fn create_branch(&self, spec: &BranchSpec) -> Result<(), BackendError> {
        let _ = spec;
        Err(unsupported(self.name(), "make branches"))
    }

    /// Deletes a branch and its data; deleting a missing branch is not an error.
    async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        let _ = (database, branch);
        Err(unsupported(self.name(), "delete branches"))
    }

    /// Resets a branch to its parent's current state.
    async fn reset_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        let _ = (database, branch);
        Err(unsupported(self.name(), "reset branches"))
    }

    /// Takes a snapshot of a branch ([`Capabilities::snapshots`]).
    async fn create_snapshot(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<SnapshotInfo, BackendError> {
        let _ = (database, branch);
        Err(unsupported(self.name(), "take snapshots"))
    }

    /// The snapshots of a database.
    async fn list_snapshots(&self, database: &str) -> Result<Vec<SnapshotInfo>, BackendError> {
        let _ = database;
        Err(unsupported(self.name(), "list snapshots"))
    }

    /// Restores a snapshot as branch `as_branch` (replacing it if it exists).
    async fn restore_snapshot(
        &self,
        database: &str,
        snapshot: &str,
        as_branch: &str,
    ) -> Result<(), BackendError> {
        let _ = (database, snapshot, as_branch);
        Err(unsupported(self.name(), "restore snapshots"))
    }

    /// Makes a backup of a branch in the backend's durable store; `full`
    /// asks for a full one where it would be incremental. (ABI 1.4.)
    async fn create_backup(
        &self,
        database: &str,
        branch: &str,
        full: bool,
    ) -> Result<BackupInfo, BackendError> {
        let _ = (database, branch, full);
        Err(unsupported(self.name(), "make backups"))
    }

    /// The backups of a database's branches, oldest first. (ABI 1.4.)
    async fn list_backups(&self, database: &str) -> Result<Vec<BackupInfo>, BackendError> {
        let _ = database;
        Err(unsupported(self.name(), "list backups"))
    }

    /// Restores a branch from the durable store alone. (ABI 1.4.)
    async fn restore_backup(&self, spec: &RestoreSpec) -> Result<Restored, BackendError> {
        let _ = spec;
        Err(unsupported(self.name(), "restore backups"))
    }

    /// The continuous archive's lag for `compute`, if the backend has
    /// one. (ABI 1.4.)
    async fn archive_status(
        &self,
        compute: &ComputeName,
    ) -> Result<Option<ArchiveStatus>, BackendError> {
        let _ = compute;
        Ok(None)
    }

    /// Which tier `compute`'s data is in, for backends with tiers.
    /// (ABI 1.4.)
    async fn tier(&self, compute: &ComputeName) -> Result<Option<Tier>, BackendError> {
        let _ = compute;
        Ok(None)
    }

    /// Moves a suspended compute's data to `tier` (stopping it first if
    /// it runs); `ensure_running` of a warm or cold compute brings it back
    /// hot. (ABI 1.4.)
    async fn set_tier(&self, compute: &ComputeName, tier: Tier) -> Result<(), BackendError> {
        let _ = (compute, tier);
        Err(unsupported(self.name(), "move data between tiers"))
    }

    /// Keeps `count` hot standbys of `compute` (0 removes them); with
    /// `synchronous`, a commit is acknowledged only once a standby has
    /// flushed it. (ABI 1.5.)
    async fn set_standbys(
        &self,
        compute: &ComputeName,
        count: u32,
        synchronous: bool,
    ) -> Result<(), BackendError> {
        let _ = (compute, count, synchronous);
        Err(unsupported(self.name(), "keep standbys"))
    }

    /// `compute`'s standbys, if it has any. (ABI 1.5.)
    async fn standby_status(
        &self,
        compute: &ComputeName,
    ) -> Result<Option<StandbyStatus>, BackendError> {
        let _ = compute;
        Ok(None)
    }

    /// Makes a standby `compute`'s primary. The old primary is fenced
    /// first (stopped, never to take a write again) and the returned
    /// endpoint has a higher generation than any before it. (ABI 1.5.)
    async fn promote(
        &self,
        compute: &ComputeName,
        why: Takeover,
    ) -> Result<ComputeEndpoint, BackendError> {
        let _ = (compute, why);
        Err(unsupported(self.name(), "promote a standby"))
    }

    /// Takes `role` for `compute` in a standby arrangement spanning two
    /// gateways; idempotent (the gateway repeats it). `promote` then
    /// works on a `Standby` as on a local one, except that fencing the
    /// old primary is the gateway's part. (ABI 1.6.)
    async fn replicate(
        &self,
        compute: &ComputeName,
        role: ReplicaRole,
    ) -> Result<(), BackendError> {
        let _ = (compute, role);
        Err(unsupported(
            self.name(),
            "keep a standby on another gateway",
        ))
    }

    /// Progress of the long operation running on `compute` (a branch
    /// being made, restored or snapshotted), if any. Asked while that
    /// operation's call is still running. (ABI 1.1.)
    async fn progress(&self, compute: &ComputeName) -> Result<Option<Progress>, BackendError> {
        let _ = compute;
        Ok(None)
    }
}
