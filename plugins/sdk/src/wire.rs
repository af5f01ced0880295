//! The JSON messages that cross the plugin ABI: one [`Request`] per
//! [`Backend`](crate::Backend) method, one [`Response`] back.

use crate::{BackendError, BackendErrorKind, BranchSpec, ComputeName, DatabaseSpec};
use serde::{Deserialize, Serialize};

/// A call into a plugin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// [`Backend::capabilities`](crate::Backend::capabilities).
    Capabilities,
    /// [`Backend::create_database`](crate::Backend::create_database).
    CreateDatabase {
        /// What to create.
        spec: DatabaseSpec,
    },
    /// [`Backend::delete_database`](crate::Backend::delete_database).
    DeleteDatabase {
        /// Database.
        name: String,
    },
    /// [`Backend::ensure_running`](crate::Backend::ensure_running).
    EnsureRunning {
        /// The compute (a string before ABI 1.3).
        name: ComputeName,
    },
    /// [`Backend::suspend`](crate::Backend::suspend).
    Suspend {
        /// The compute (a string before ABI 1.3).
        name: ComputeName,
    },
    /// [`Backend::compute_status`](crate::Backend::compute_status).
    ComputeStatus {
        /// The compute (a string before ABI 1.3).
        name: ComputeName,
    },
    /// [`Backend::describe`](crate::Backend::describe).
    Describe,
    /// [`Backend::health`](crate::Backend::health).
    Health,
    /// [`Backend::list_databases`](crate::Backend::list_databases).
    ListDatabases,
    /// [`Backend::create_branch`](crate::Backend::create_branch).
    CreateBranch {
        /// What to create.
        spec: BranchSpec,
    },
    /// [`Backend::delete_branch`](crate::Backend::delete_branch).
    DeleteBranch {
        /// Database.
        database: String,
        /// Branch.
        branch: String,
    },
    /// [`Backend::reset_branch`](crate::Backend::reset_branch).
    ResetBranch {
        /// Database.
        database: String,
        /// Branch.
        branch: String,
    },
    /// [`Backend::create_snapshot`](crate::Backend::create_snapshot).
    CreateSnapshot {
        /// Database.
        database: String,
        /// Branch.
        branch: String,
    },
    /// [`Backend::list_snapshots`](crate::Backend::list_snapshots).
    ListSnapshots {
        /// Database.
        database: String,
    },
    /// [`Backend::restore_snapshot`](crate::Backend::restore_snapshot).
    RestoreSnapshot {
        /// Database.
        database: String,
        /// Snapshot id.
        snapshot: String,
        /// Branch to restore into.
        as_branch: String,
    },
    /// [`Backend::create_backup`](crate::Backend::create_backup) (ABI 1.4).
    CreateBackup {
        /// Database.
        database: String,
        /// Branch.
        branch: String,
        /// Full even where it would be incremental.
        full: bool,
    },
    /// [`Backend::list_backups`](crate::Backend::list_backups) (ABI 1.4).
    ListBackups {
        /// Database.
        database: String,
    },
    /// [`Backend::restore_backup`](crate::Backend::restore_backup) (ABI 1.4).
    RestoreBackup {
        /// What to restore.
        spec: crate::RestoreSpec,
    },
    /// [`Backend::archive_status`](crate::Backend::archive_status) (ABI 1.4).
    ArchiveStatus {
        /// The compute.
        name: ComputeName,
    },
    /// [`Backend::tier`](crate::Backend::tier) (ABI 1.4).
    Tier {
        /// The compute.
        name: ComputeName,
    },
    /// [`Backend::set_tier`](crate::Backend::set_tier) (ABI 1.4).
    SetTier {
        /// The compute.
        name: ComputeName,
        /// Where its data goes.
        tier: crate::Tier,
    },
    /// [`Backend::set_standbys`](crate::Backend::set_standbys) (ABI 1.5).
    SetStandbys {
        /// The compute.
        name: ComputeName,
        /// Standbys wanted.
        count: u32,
        /// Commits wait for a standby.
        synchronous: bool,
    },
    /// [`Backend::standby_status`](crate::Backend::standby_status) (ABI 1.5).
    StandbyStatus {
        /// The compute.
        name: ComputeName,
    },
    /// [`Backend::promote`](crate::Backend::promote) (ABI 1.5).
    Promote {
        /// The compute.
        name: ComputeName,
        /// Failover or switchover.
        why: crate::Takeover,
    },
    /// [`Backend::replicate`](crate::Backend::replicate) (ABI 1.6).
    Replicate {
        /// The compute.
        name: ComputeName,
        /// Its part.
        role: crate::ReplicaRole,
    },
    /// [`Backend::progress`](crate::Backend::progress) (ABI 1.1).
    Progress {
        /// The compute (a string before ABI 1.3).
        name: ComputeName,
    },
}

/// The first ABI minor whose plugins read compute names in the typed form.
pub const TYPED_NAMES_MINOR: u32 = 3;
/// The first ABI minor whose plugins know backups and archive status.
pub const BACKUPS_MINOR: u32 = 4;
/// The first ABI minor whose plugins know standbys and promotion.
pub const STANDBY_MINOR: u32 = 5;
/// The first ABI minor whose plugins keep standbys on another gateway.
pub const REMOTE_STANDBY_MINOR: u32 = 6;

impl Request {
    /// Encodes the request for a plugin built for ABI minor `minor`: compute
    /// names go as `{"database": .., "branch": ..}` from 1.3 on, and as the
    /// `db@branch` string a 1.0–1.2 plugin expects before.
    pub fn encode_for(&self, minor: u32) -> Result<Vec<u8>, serde_json::Error> {
        let mut value = serde_json::to_value(self)?;
        if minor < TYPED_NAMES_MINOR {
            let name = match self {
                Request::EnsureRunning { name }
                | Request::Suspend { name }
                | Request::ComputeStatus { name }
                | Request::Progress { name } => Some(name),
                _ => None,
            };
            if let (Some(name), Some(fields)) = (name, value.as_object_mut()) {
                fields.insert("name".into(), serde_json::Value::String(name.to_string()));
            }
        }
        serde_json::to_vec(&value)
    }

    /// Calls that copy data and may take long (minutes on large data with
    /// a copying driver): they get a longer time limit.
    pub fn is_long(&self) -> bool {
        matches!(
            self,
            Request::CreateDatabase { .. }
                | Request::CreateBranch { .. }
                | Request::ResetBranch { .. }
                | Request::CreateSnapshot { .. }
                | Request::RestoreSnapshot { .. }
                | Request::CreateBackup { .. }
                | Request::RestoreBackup { .. }
                | Request::SetTier { .. }
                | Request::SetStandbys { .. }
                | Request::Promote { .. }
                | Request::Replicate { .. }
        )
    }
}

/// A plugin's answer: the method's value as JSON, or an error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Success.
    Ok {
        /// The method's return value.
        value: serde_json::Value,
    },
    /// Failure.
    Err {
        /// Error kind.
        kind: BackendErrorKind,
        /// Client-safe message.
        message: String,
    },
}

impl Response {
    /// Wraps a method's result.
    pub fn from_result<T: Serialize>(result: Result<T, BackendError>) -> Response {
        match result {
            Ok(value) => match serde_json::to_value(value) {
                Ok(value) => Response::Ok { value },
                Err(e) => Response::error(BackendError::internal(format!(
                    "plugin could not encode its answer: {e}"
                ))),
            },
            Err(e) => Response::error(e),
        }
    }

    /// An error response.
    pub fn error(e: BackendError) -> Response {
        Response::Err {
            kind: e.kind,
            message: e.message,
        }
    }

    /// Unwraps into the method's return type.
    pub fn into_result<T: serde::de::DeserializeOwned>(self) -> Result<T, BackendError> {
        match self {
            Response::Ok { value } => serde_json::from_value(value).map_err(|e| {
                BackendError::internal(format!("plugin answered with an unexpected shape: {e}"))
            }),
            Response::Err { kind, message } => Err(BackendError::new(kind, message)),
        }
    }

    /// Encodes to JSON bytes (never fails for these types).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"result":"err","kind":"internal","message":"encoding failed"}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compute_names_are_typed_from_1_3_and_strings_before() {
        let request = Request::ComputeStatus {
            name: ComputeName::new("shop", "dev"),
        };
        let typed: serde_json::Value =
            serde_json::from_slice(&request.encode_for(3).unwrap()).unwrap();
        assert_eq!(
            typed,
            json!({"op": "compute_status", "name": {"database": "shop", "branch": "dev"}})
        );
        let old: serde_json::Value =
            serde_json::from_slice(&request.encode_for(2).unwrap()).unwrap();
        assert_eq!(old, json!({"op": "compute_status", "name": "shop@dev"}));
        // Both decode to the same request.
        for form in [typed, old] {
            match serde_json::from_value(form).unwrap() {
                Request::ComputeStatus { name } => {
                    assert_eq!(name, ComputeName::new("shop", "dev"))
                }
                other => panic!("{other:?}"),
            }
        }
        // Other requests are unchanged.
        let other = Request::DeleteDatabase {
            name: "shop".into(),
        };
        assert_eq!(other.encode_for(0).unwrap(), other.encode_for(3).unwrap());
    }
}
