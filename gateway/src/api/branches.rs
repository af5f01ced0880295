//! The API's branch and snapshot routes:
//! `/v1/databases/{name}/branches[/{branch}[/reset]]` and
//! `/v1/databases/{name}/snapshots[/{id}/restore]`.

use super::{ApiError, ApiErrorBody, ApiResult, ApiState};
use crate::catalog::BranchRecord;
use crate::control::branches::parse_point;
use crate::names::compute_name;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Request body of `POST /v1/databases/{name}/branches`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBranch {
    /// Branch name (a-z, 0-9, _, -).
    pub name: String,
    /// The branch to start from (default `main`).
    #[serde(default)]
    pub parent: Option<String>,
    /// `now` (default), an LSN (`0/16B3740`) or a time (RFC 3339).
    #[serde(default)]
    pub at: Option<String>,
    /// Start from this snapshot instead.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Delete the branch this many seconds after it is made.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Accept a slow branch (a backend that copies through a snapshot,
    /// such as RDS); refused without it.
    #[serde(default)]
    pub allow_slow: bool,
}

/// A branch as the API reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BranchInfo {
    /// Database.
    pub database: String,
    /// Branch (`main` is the database's own).
    pub name: String,
    /// The branch it was made from (empty for `main`).
    pub parent: String,
    /// Unix time it was made (or last reset).
    pub created_at_unix: u64,
    /// Unix time it will be deleted, if it has a TTL.
    pub expires_at_unix: Option<u64>,
    /// Its compute's state (suspended, running, …).
    pub compute: String,
    /// How to connect (the database's owner; password as for the database).
    pub url: String,
}

/// Request body of `POST /v1/databases/{name}/snapshots`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// The branch to snapshot (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
}

/// Request body of `POST /v1/databases/{name}/snapshots/{id}/restore`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshot {
    /// The branch to replace or create (default: the snapshot's branch).
    #[serde(default, rename = "as")]
    pub as_branch: Option<String>,
}

/// A snapshot as the API reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotEntry {
    /// Id.
    pub id: String,
    /// Database.
    pub database: String,
    /// Branch it was taken of.
    pub branch: String,
    /// Unix time it was taken.
    pub created_at_unix: u64,
    /// Size in bytes, when known.
    pub size_bytes: Option<u64>,
}

impl From<ogel_plugin_sdk::SnapshotInfo> for SnapshotEntry {
    fn from(s: ogel_plugin_sdk::SnapshotInfo) -> Self {
        SnapshotEntry {
            id: s.id,
            database: s.database,
            branch: s.branch,
            created_at_unix: s.created_at_unix,
            size_bytes: s.size_bytes,
        }
    }
}

/// A long operation running now, with its progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationInfo {
    /// The compute it works on (`db` or `db@branch`).
    pub compute: String,
    /// What it does.
    pub kind: String,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
    /// Bytes copied so far (when the backend reports it).
    pub done_bytes: u64,
    /// Bytes to copy (0 while unknown).
    pub total_bytes: u64,
}

/// Long operations running now (branch copies, snapshots, restores) and
/// how far they are.
#[utoipa::path(get, path = "/v1/operations", responses((status = 200, body = [OperationInfo])))]
pub async fn list_operations(
    State(state): State<ApiState>,
    axum::Extension(scope): axum::Extension<crate::control::access::Scope>,
) -> ApiResult<Vec<OperationInfo>> {
    let running = state.operations.list();
    let mut out = Vec::new();
    for (compute, kind, started) in running {
        // A tenant sees its own databases' operations only.
        let database = state
            .catalog
            .database(&crate::names::split_compute(&compute).database)
            .ok()
            .flatten();
        // One not in the catalog yet (restored onto this gateway) is the
        // default backend's, and only the admin's to see.
        let lifecycle = match &database {
            Some(db) if scope.sees(db) => state.databases.lifecycle(db),
            None if scope == crate::control::access::Scope::Global => {
                state.databases.backend_lifecycle(None)
            }
            _ => continue,
        };
        // Any state: a database being created reports its progress too.
        let progress = match lifecycle {
            Ok(l) => l
                .backend()
                .progress(&compute.as_str().into())
                .await
                .ok()
                .flatten(),
            _ => None,
        }
        .unwrap_or_default();
        out.push(OperationInfo {
            compute,
            kind: kind.to_string(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            done_bytes: progress.done_bytes,
            total_bytes: progress.total_bytes,
        });
    }
    Ok(Json(out))
}

/// The routes (they need the admin token, like the rest of `/v1`).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/operations", get(list_operations))
        .route(
            "/v1/databases/{name}/branches",
            get(list_branches).post(create_branch),
        )
        .route(
            "/v1/databases/{name}/branches/{branch}",
            axum::routing::delete(delete_branch),
        )
        .route(
            "/v1/databases/{name}/branches/{branch}/reset",
            post(reset_branch),
        )
        .route(
            "/v1/databases/{name}/snapshots",
            get(list_snapshots).post(create_snapshot),
        )
        .route(
            "/v1/databases/{name}/snapshots/{id}/restore",
            post(restore_snapshot),
        )
}

pub(super) fn bad_body(e: axum::extract::rejection::JsonRejection, example: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!("{}; expected {example}", e.body_text()),
    )
}

impl ApiState {
    pub(super) async fn branch_info(&self, record: BranchRecord) -> BranchInfo {
        let name = compute_name(&record.database, &record.name);
        let compute = match self.databases.ready(&record.database) {
            Ok(db) => match self.databases.lifecycle(&db) {
                Ok(l) => l
                    .backend()
                    .compute_status(&name.as_str().into())
                    .await
                    .map(|s| format!("{:?}", s.state).to_lowercase())
                    .unwrap_or_else(|_| "unknown".into()),
                Err(_) => "unknown".into(),
            },
            Err(_) => "unknown".into(),
        };
        let url = self
            .databases
            .ready(&record.database)
            .map(|db| {
                let url = self.databases.url(&db, None);
                if record.name == "main" {
                    url
                } else {
                    format!("{url}@{}", record.name)
                }
            })
            .unwrap_or_default();
        BranchInfo {
            database: record.database,
            name: record.name,
            parent: record.parent,
            created_at_unix: record.created_at_unix,
            expires_at_unix: record.expires_at_unix,
            compute,
            url,
        }
    }
}

/// Branches of a database, `main` first.
#[utoipa::path(get, path = "/v1/databases/{name}/branches", params(("name" = String, Path)),
    responses((status = 200, body = [BranchInfo]), (status = 404, body = ApiErrorBody)))]
pub async fn list_branches(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<BranchInfo>> {
    let mut out = Vec::new();
    for record in state.branches.branches(&name)? {
        out.push(state.branch_info(record).await);
    }
    Ok(Json(out))
}

/// Makes a branch: a full, writable, isolated copy of its parent (now, at an
/// LSN, at a time, or from a snapshot).
#[utoipa::path(post, path = "/v1/databases/{name}/branches", params(("name" = String, Path)), request_body = CreateBranch,
    responses((status = 201, body = BranchInfo), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn create_branch(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<CreateBranch>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<BranchInfo>), ApiError> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"name\": \"dev\"}"))?;
    let point = parse_point(body.at.as_deref(), body.snapshot.as_deref());
    let ttl = body.ttl_secs.map(std::time::Duration::from_secs);
    let record = state
        .branches
        .create_branch(
            &name,
            &body.name,
            body.parent.as_deref(),
            point,
            ttl,
            body.allow_slow,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(state.branch_info(record).await)))
}

/// Deletes a branch and its data.
#[utoipa::path(delete, path = "/v1/databases/{name}/branches/{branch}", params(("name" = String, Path), ("branch" = String, Path)),
    responses((status = 204), (status = 404, body = ApiErrorBody)))]
pub async fn delete_branch(
    State(state): State<ApiState>,
    Path((name, branch)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.branches.delete_branch(&name, &branch).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resets a branch to its parent's current state.
#[utoipa::path(post, path = "/v1/databases/{name}/branches/{branch}/reset", params(("name" = String, Path), ("branch" = String, Path)),
    responses((status = 200, body = BranchInfo), (status = 404, body = ApiErrorBody)))]
pub async fn reset_branch(
    State(state): State<ApiState>,
    Path((name, branch)): Path<(String, String)>,
) -> ApiResult<BranchInfo> {
    let record = state.branches.reset_branch(&name, &branch).await?;
    Ok(Json(state.branch_info(record).await))
}

/// Snapshots of a database.
#[utoipa::path(get, path = "/v1/databases/{name}/snapshots", params(("name" = String, Path)),
    responses((status = 200, body = [SnapshotEntry]), (status = 404, body = ApiErrorBody)))]
pub async fn list_snapshots(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<SnapshotEntry>> {
    let list = state.branches.snapshots(&name).await?;
    Ok(Json(list.into_iter().map(SnapshotEntry::from).collect()))
}

/// Takes a snapshot of a branch (with a manifest of checksums).
#[utoipa::path(post, path = "/v1/databases/{name}/snapshots", params(("name" = String, Path)), request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotEntry), (status = 404, body = ApiErrorBody)))]
pub async fn create_snapshot(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Json<CreateSnapshot>>,
) -> Result<(StatusCode, Json<SnapshotEntry>), ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let branch = body.branch.unwrap_or_else(|| "main".into());
    let snapshot = state.branches.create_snapshot(&name, &branch).await?;
    Ok((StatusCode::CREATED, Json(snapshot.into())))
}

/// Restores a snapshot into a branch (after checking every file against
/// its manifest; a corrupted snapshot is refused and nothing changes).
#[utoipa::path(post, path = "/v1/databases/{name}/snapshots/{id}/restore", params(("name" = String, Path), ("id" = String, Path)),
    request_body = RestoreSnapshot, responses((status = 200, body = BranchInfo), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn restore_snapshot(
    State(state): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    body: Option<Json<RestoreSnapshot>>,
) -> ApiResult<BranchInfo> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let record = state
        .branches
        .restore_snapshot(&name, &id, body.as_branch.as_deref())
        .await?;
    Ok(Json(state.branch_info(record).await))
}
