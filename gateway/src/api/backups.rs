//! The API's durability routes: `/v1/databases/{name}/backups` (make,
//! list), `/v1/databases/{name}/backups/restore`, the continuous archive's
//! state, `/v1/databases/{name}/archive`, and tiers,
//! `/v1/databases/{name}/tier`.

use super::branches::{bad_body, BranchInfo};
use super::{ApiError, ApiErrorBody, ApiResult, ApiState, DatabaseCredentials};
use crate::control::access::Scope;
use crate::control::backups::{parse_target, RestoreOutcome};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ogel_plugin_sdk::{ArchiveStatus, BackupInfo, RestoreSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Request body of `POST /v1/databases/{name}/backups`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBackup {
    /// The branch (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// Full even where it would be incremental (PostgreSQL 17+).
    #[serde(default)]
    pub full: bool,
}

/// A backup as the API reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupEntry {
    /// Id (sorts by time).
    pub id: String,
    /// Database.
    pub database: String,
    /// Branch.
    pub branch: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// The backup an incremental one builds on.
    pub parent: Option<String>,
    /// What a restore of it fetches, full backup first.
    pub chain: Vec<String>,
    /// Unix time it started.
    pub created_at_unix: u64,
    /// Unix time it finished.
    pub finished_at_unix: u64,
    /// WAL range it needs.
    pub start_lsn: String,
    /// See `start_lsn`.
    pub end_lsn: String,
    /// Bytes of data in it.
    pub size_bytes: u64,
    /// Bytes it takes in the store (compressed).
    pub stored_bytes: u64,
    /// PostgreSQL major version.
    pub pg_major: u32,
}

impl From<BackupInfo> for BackupEntry {
    fn from(b: BackupInfo) -> Self {
        BackupEntry {
            id: b.id,
            database: b.database,
            branch: b.branch,
            kind: match b.kind {
                ogel_plugin_sdk::BackupKind::Full => "full".into(),
                ogel_plugin_sdk::BackupKind::Incremental => "incremental".into(),
            },
            parent: b.parent,
            chain: b.chain,
            created_at_unix: b.created_at_unix,
            finished_at_unix: b.finished_at_unix,
            start_lsn: b.start_lsn,
            end_lsn: b.end_lsn,
            size_bytes: b.size_bytes,
            stored_bytes: b.stored_bytes,
            pg_major: b.pg_major,
        }
    }
}

/// Query of `GET /v1/databases/{name}/backups`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ListBackups {
    /// For a database this gateway does not have: whose store to look in
    /// (default: the default backend's).
    #[serde(default)]
    pub backend: Option<String>,
}

/// Request body of `POST /v1/databases/{name}/backups/restore`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBackup {
    /// The branch whose backups are used (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// `latest` (default: everything archived), an LSN or a time (RFC 3339).
    #[serde(default)]
    pub at: Option<String>,
    /// A backup id (default: the newest one before `at`).
    #[serde(default)]
    pub backup: Option<String>,
    /// Restore as this branch (default: the branch itself, replaced once
    /// the restored copy is whole).
    #[serde(default, rename = "as")]
    pub as_branch: Option<String>,
    /// For a database this gateway does not have: its backend (default:
    /// the default backend).
    #[serde(default)]
    pub backend: Option<String>,
}

/// Response of a restore.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "restored", rename_all = "snake_case")]
pub enum RestoreResult {
    /// Into a branch of a database this gateway has.
    Branch(BranchInfo),
    /// A database new to this gateway, with its owner's new password.
    Database(Box<DatabaseCredentials>),
}

/// The continuous WAL archive of a database's branch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArchiveInfo {
    /// Where WAL goes (empty if the backend archives none).
    pub store: String,
    /// WAL files not yet durable there.
    pub pending_files: u64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: u64,
    /// The last upload error, while uploads fail.
    pub last_error: Option<String>,
}

impl From<Option<ArchiveStatus>> for ArchiveInfo {
    fn from(s: Option<ArchiveStatus>) -> Self {
        let s = s.unwrap_or_default();
        ArchiveInfo {
            store: s.store,
            pending_files: s.pending_files,
            lag_seconds: s.lag_seconds,
            last_error: s.last_error,
        }
    }
}

/// Query of `GET /v1/databases/{name}/archive`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ArchiveQuery {
    /// The branch (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
}

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/databases/{name}/backups",
            get(list_backups).post(create_backup),
        )
        .route("/v1/databases/{name}/backups/restore", post(restore_backup))
        .route("/v1/databases/{name}/archive", get(archive))
        .route("/v1/databases/{name}/tier", get(get_tier).post(set_tier))
}

/// Request body of `POST /v1/databases/{name}/tier`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTier {
    /// `hot`, `warm` or `cold`.
    pub tier: String,
    /// The branch (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
}

/// Where a branch's data is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TierInfo {
    /// The compute (`db` or `db@branch`).
    pub compute: String,
    /// `hot`, `warm` or `cold` (null: the backend has no tiers).
    pub tier: Option<String>,
}

/// Where a branch's data is: hot (local disk), warm (a compressed local
/// copy) or cold (only in the cold tier).
#[utoipa::path(get, path = "/v1/databases/{name}/tier", params(("name" = String, Path), ("branch" = Option<String>, Query)),
    responses((status = 200, body = TierInfo), (status = 404, body = ApiErrorBody)))]
pub async fn get_tier(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<ArchiveQuery>,
) -> ApiResult<TierInfo> {
    let branch = query.branch.unwrap_or_else(|| "main".into());
    let tier = state.tiers.tier(&name, &branch).await?;
    Ok(Json(TierInfo {
        compute: crate::names::compute_name(&name, &branch),
        tier: tier.map(|t| t.to_string()),
    }))
}

/// Moves a branch's data to another tier (its compute is suspended first;
/// a connection to a warm or cold one brings it back).
#[utoipa::path(post, path = "/v1/databases/{name}/tier", params(("name" = String, Path)), request_body = SetTier,
    responses((status = 200, body = TierInfo), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn set_tier(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<SetTier>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<TierInfo> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"tier\": \"cold\"}"))?;
    let tier: ogel_plugin_sdk::Tier = body
        .tier
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e))?;
    let branch = body.branch.unwrap_or_else(|| "main".into());
    state.tiers.set_tier(&name, &branch, tier).await?;
    let now = state.tiers.tier(&name, &branch).await?;
    Ok(Json(TierInfo {
        compute: crate::names::compute_name(&name, &branch),
        tier: now.map(|t| t.to_string()),
    }))
}

/// Makes a backup of a branch in the backend's durable store (the native
/// backend's cold tier).
#[utoipa::path(post, path = "/v1/databases/{name}/backups", params(("name" = String, Path)), request_body = CreateBackup,
    responses((status = 201, body = BackupEntry), (status = 404, body = ApiErrorBody), (status = 501, body = ApiErrorBody)))]
pub async fn create_backup(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Json<CreateBackup>>,
) -> Result<(StatusCode, Json<BackupEntry>), ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let branch = body.branch.unwrap_or_else(|| "main".into());
    let backup = state.backups.create(&name, &branch, body.full).await?;
    Ok((StatusCode::CREATED, Json(backup.into())))
}

/// The backups of a database, oldest first.
#[utoipa::path(get, path = "/v1/databases/{name}/backups", params(("name" = String, Path), ("backend" = Option<String>, Query)),
    responses((status = 200, body = [BackupEntry]), (status = 404, body = ApiErrorBody)))]
pub async fn list_backups(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<ListBackups>,
) -> ApiResult<Vec<BackupEntry>> {
    let list = state.backups.list(&name, query.backend.as_deref()).await?;
    Ok(Json(list.into_iter().map(BackupEntry::from).collect()))
}

/// Restores a branch from its backups and archived WAL, to the end of the
/// archive or to a point; onto this gateway if it does not have the
/// database (the backend's store alone is enough).
#[utoipa::path(post, path = "/v1/databases/{name}/backups/restore", params(("name" = String, Path)), request_body = RestoreBackup,
    responses((status = 200, body = RestoreResult), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn restore_backup(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: Result<Json<RestoreBackup>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<RestoreResult> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"at\": \"latest\"}"))?;
    let spec = RestoreSpec {
        database: name,
        branch: body.branch.unwrap_or_else(|| "main".into()),
        target: parse_target(body.at.as_deref()),
        backup: body.backup,
        as_branch: body.as_branch,
    };
    let outcome = state
        .backups
        .restore(spec, body.backend.as_deref(), scope.tenant())
        .await?;
    Ok(Json(match outcome {
        RestoreOutcome::Branch(record) => RestoreResult::Branch(state.branch_info(record).await),
        RestoreOutcome::Database(record, password) => {
            let url = state.databases.url(&record, Some(&password));
            let view = state.databases.describe(&record.name).await?;
            RestoreResult::Database(Box::new(DatabaseCredentials {
                database: state.info(view),
                password,
                url,
            }))
        }
    }))
}

/// How far behind the continuous WAL archive of a branch is.
#[utoipa::path(get, path = "/v1/databases/{name}/archive", params(("name" = String, Path), ("branch" = Option<String>, Query)),
    responses((status = 200, body = ArchiveInfo), (status = 404, body = ApiErrorBody)))]
pub async fn archive(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<ArchiveQuery>,
) -> ApiResult<ArchiveInfo> {
    let branch = query.branch.unwrap_or_else(|| "main".into());
    Ok(Json(
        state.backups.archive_status(&name, &branch).await?.into(),
    ))
}
