//! The cold tier: an object store every native compute's WAL and backups
//! go to — a local directory by default, an S3-compatible bucket when
//! `[cold] s3` is configured. What is in it is enough to bring a database
//! back on a machine whose local disk is empty.
//!
//! - [`store`]: the [`ObjectStore`] trait and its two stores (local
//!   directory, S3 through aws-sdk-s3); a `put` returns once the object is
//!   durable, never before.
//! - [`lazy`]: the configured store, opened on first use.
//! - [`seal`]: the object format — zstd, our own SHA-256 of the content,
//!   optional AES-256-GCM at rest — and the check on the way back.

pub mod lazy;
pub mod seal;
pub mod store;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use lazy::LazyStore;
pub use seal::{open, seal, SealKey};
pub use store::{with_retry, ObjectMeta, ObjectStore, StoreError};

/// The `[cold]` section of `ogel.toml` (handed to the native backend as its
/// `cold` key).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColdConfig {
    /// The local directory used when no bucket is configured (default:
    /// `<data-dir>/native/cold`).
    pub dir: Option<PathBuf>,
    /// An S3-compatible bucket instead of the local directory.
    pub s3: Option<S3Config>,
    /// Encrypt objects at rest with AES-256-GCM under this key: 64 hex
    /// digits (32 bytes). Without it objects are compressed and
    /// checksummed, not encrypted.
    pub encryption_key: Option<String>,
    /// WAL segments uploaded at once per compute (default 4).
    pub upload_concurrency: Option<usize>,
    /// Longest a commit waits to be in the cold tier: Postgres's
    /// `archive_timeout` (default `60s`; `0` leaves it to full segments).
    pub archive_timeout: Option<String>,
    /// Which backups (and the WAL they need) are kept (the gateway's
    /// `[backup]` `keep_full` and `keep_for`).
    pub retention: Retention,
}

/// Which backups are kept: a chain (a full backup and the incremental ones
/// on it) stays if it is one of the newest `keep_full` chains or has a
/// backup younger than `keep_for`. The newest chain always stays (a cold
/// database lives on it).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Full chains kept by count (default 2).
    pub keep_full: usize,
    /// Chains kept by age (`7d`; default none).
    pub keep_for: Option<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_full: 2,
            keep_for: None,
        }
    }
}

/// `[cold.s3]`: where and how to reach the bucket. Credentials come from
/// the AWS chain (environment, profile, instance role).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket (default: none).
    pub prefix: String,
    /// An S3-compatible endpoint (MinIO, moto, …); AWS's when unset.
    pub endpoint: Option<String>,
    /// Default: from the AWS chain, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// S3-compatible servers need. Default: on when `endpoint` is set.
    pub force_path_style: Option<bool>,
}
