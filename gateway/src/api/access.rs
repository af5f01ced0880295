//! The API's access routes: token URLs (`/v1/databases/{name}/tokens`,
//! `/v1/tokens/{id}/revoke`), signing keys (`/v1/keys`, rotation), the
//! public JWKS (`/.well-known/jwks.json`), and tenants (`/v1/tenants`).

use super::branches::bad_body;
use super::{ApiError, ApiErrorBody, ApiResult, ApiState};
use crate::auth::tokens::KeyInfo;
use crate::catalog::TokenRecord;
use crate::control::access::{IssuedToken, Scope};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Request body of `POST /v1/databases/{name}/tokens`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Branch (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// Read-only: the gateway logs in to the backend as a read-only role.
    #[serde(default)]
    pub read_only: bool,
    /// Lifetime, e.g. `30d`, `12h` (default `tokens.default_ttl`).
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Request body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Name (a-z, 0-9, _, -).
    pub name: String,
    /// Clients at once across its databases (default `limits.clients_per_tenant`).
    #[serde(default)]
    pub max_clients: Option<u32>,
}

/// A tenant as the API reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantInfo {
    /// Name.
    pub name: String,
    /// Its client limit, if it has its own.
    pub max_clients: Option<u32>,
    /// Unix time of creation.
    pub created_at_unix: u64,
    /// Databases it owns.
    pub databases: Vec<String>,
}

/// Response of `POST /v1/tenants`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: TenantInfo,
    /// Its admin API token: shown only now (the gateway keeps a hash).
    pub token: String,
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/databases/{name}/tokens",
            get(list_tokens).post(create_token),
        )
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/rotate", post(rotate_key))
        .route("/v1/keys/{kid}", delete(remove_key))
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route("/v1/tenants/{name}", delete(delete_tenant))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Mints a token URL: `postgresql://<JWT>@host:port/db?sslmode=require`.
#[utoipa::path(post, path = "/v1/databases/{name}/tokens", params(("name" = String, Path)), request_body = CreateToken,
    responses((status = 201, body = IssuedToken), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn create_token(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: Result<Json<CreateToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"read_only\": true, \"ttl\": \"30d\"}"))?;
    let ttl = body
        .ttl
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| invalid(format!("ttl: {e}; write it like 30d, 12h or 90m")))?;
    let issued =
        state
            .access
            .mint_token(&name, body.branch.as_deref(), body.read_only, ttl, &scope)?;
    tracing::info!(token = %issued.record.id, database = %name, branch = %issued.record.branch, read_only = issued.record.read_only, "token issued");
    Ok((StatusCode::CREATED, Json(issued)))
}

/// The tokens issued for a database (ids and grants, never the tokens).
#[utoipa::path(get, path = "/v1/databases/{name}/tokens", params(("name" = String, Path)),
    responses((status = 200, body = [TokenRecord]), (status = 404, body = ApiErrorBody)))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Vec<TokenRecord>> {
    Ok(Json(state.access.list_tokens(&name, &scope)?))
}

/// Revokes a token by id: the next login with it fails.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", params(("id" = String, Path)),
    responses((status = 200, body = TokenRecord), (status = 404, body = ApiErrorBody)))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> ApiResult<TokenRecord> {
    Ok(Json(state.access.revoke_token(&id, &scope)?))
}

/// The token signing keys.
#[utoipa::path(get, path = "/v1/keys", responses((status = 200, body = [KeyInfo])))]
pub async fn list_keys(State(state): State<ApiState>) -> ApiResult<Vec<KeyInfo>> {
    Ok(Json(state.access.keys().list()))
}

/// Makes a new signing key the signer; older keys keep verifying.
#[utoipa::path(post, path = "/v1/keys/rotate", responses((status = 200, body = [KeyInfo])))]
pub async fn rotate_key(State(state): State<ApiState>) -> ApiResult<Vec<KeyInfo>> {
    state.access.keys().rotate().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            crate::error::chain(&e),
        )
    })?;
    Ok(Json(state.access.keys().list()))
}

/// Removes a retired key: tokens it signed stop working.
#[utoipa::path(delete, path = "/v1/keys/{kid}", params(("kid" = String, Path)),
    responses((status = 200, body = [KeyInfo]), (status = 400, body = ApiErrorBody)))]
pub async fn remove_key(
    State(state): State<ApiState>,
    Path(kid): Path<String>,
) -> ApiResult<Vec<KeyInfo>> {
    state
        .access
        .keys()
        .remove(&kid)
        .map_err(|e| invalid(crate::error::chain(&e)))?;
    Ok(Json(state.access.keys().list()))
}

/// The public signing keys (JWKS), for anyone verifying tokens.
pub async fn jwks(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.access.keys().jwks().to_string(),
    )
}

fn tenant_info(state: &ApiState, record: crate::catalog::TenantRecord) -> TenantInfo {
    let databases = state
        .catalog
        .databases()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.tenant == record.name)
        .map(|d| d.name)
        .collect();
    TenantInfo {
        name: record.name,
        max_clients: record.max_clients,
        created_at_unix: record.created_at_unix,
        databases,
    }
}

/// Tenants.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantInfo])))]
pub async fn list_tenants(State(state): State<ApiState>) -> ApiResult<Vec<TenantInfo>> {
    let tenants = state
        .catalog
        .tenants()
        .map_err(crate::error::ControlError::from)?;
    Ok(Json(
        tenants
            .into_iter()
            .map(|t| tenant_info(&state, t))
            .collect(),
    ))
}

/// Makes a tenant and its admin API token (shown once).
#[utoipa::path(post, path = "/v1/tenants", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 400, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
pub async fn create_tenant(
    State(state): State<ApiState>,
    body: Result<Json<CreateTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"name\": \"acme\"}"))?;
    let (record, token) = state.access.create_tenant(&body.name, body.max_clients)?;
    tracing::info!(tenant = %record.name, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: tenant_info(&state, record),
            token,
        }),
    ))
}

/// Removes a tenant that owns no database.
#[utoipa::path(delete, path = "/v1/tenants/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn delete_tenant(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.access.delete_tenant(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
