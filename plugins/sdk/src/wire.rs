//! The JSON messages that cross the plugin ABI: one [`Request`] per
//! [`Backend`](crate::Backend) method, one [`Response`] back.

use crate::{BackendError, BackendErrorKind, BranchSpec, DatabaseSpec};
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
        /// Database.
        name: String,
    },
    /// [`Backend::suspend`](crate::Backend::suspend).
    Suspend {
        /// Database.
        name: String,
    },
    /// [`Backend::compute_status`](crate::Backend::compute_status).
    ComputeStatus {
        /// Database.
        name: String,
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
    /// [`Backend::progress`](crate::Backend::progress) (ABI 1.1).
    Progress {
        /// Compute name.
        name: String,
    },
}

impl Request {
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
