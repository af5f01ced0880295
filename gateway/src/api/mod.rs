//! The HTTP API under `/v1/` (axum), and its OpenAPI document generated
//! from these handlers and types (utoipa) at `/v1/openapi.json`.
//! Every route but the OpenAPI document needs the admin token as a Bearer
//! token. Errors are `{"error": {"code", "message"}}` with a message that
//! says what to do.

pub mod access;
pub mod backups;
pub mod branches;
mod forward;
pub mod metrics;
pub mod standby;

use crate::catalog::Catalog;
use crate::control::access::{Access, Scope};
use crate::control::branches::Branches;
use crate::control::databases::{DatabaseView, Databases};
use crate::control::operations::Operations;
use crate::control::reload::Reloader;
use crate::error::ControlError;
use crate::pool::Pools;
use crate::wake::Backends;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use utoipa::{OpenApi, ToSchema};

/// What the API serves from, built by `app`.
pub struct ApiServices {
    /// Databases.
    pub databases: Arc<Databases>,
    /// Branches and snapshots.
    pub branches: Arc<Branches>,
    /// Backups and the WAL archive.
    pub backups: Arc<crate::control::backups::Backups>,
    /// Hot, warm and cold tiers.
    pub tiers: Arc<crate::control::tiers::Tiers>,
    /// Standbys, switchover and failover.
    pub standbys: Arc<crate::control::standby::Standbys>,
    /// Tenants, tokens and keys.
    pub access: Arc<Access>,
    /// Pools (PAUSE/RESUME, metrics).
    pub pools: Arc<Pools>,
    /// Loaded plugins.
    pub backends: Arc<Backends>,
    /// Long operations running now.
    pub operations: Arc<Operations>,
    /// `POST /v1/reload`.
    pub reloader: Arc<Reloader>,
    /// Pre-wake statistics (metrics).
    pub predictor: Arc<ogel_policies::warm::Predictor>,
    /// The catalog (operations' databases).
    pub catalog: Catalog,
    /// The gateway's admin token.
    pub token: String,
    /// The Postgres listener's address.
    pub pg_addr: SocketAddr,
    /// The API listener's address.
    pub api_addr: SocketAddr,
    /// When the gateway started.
    pub started_at: Instant,
    /// This gateway among the others.
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// State handed to handlers.
#[derive(Clone)]
pub struct ApiState(Arc<ApiServices>);

impl std::ops::Deref for ApiState {
    type Target = ApiServices;
    fn deref(&self) -> &ApiServices {
        &self.0
    }
}

/// Request body of `POST /v1/databases`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabase {
    /// Name (a-z, 0-9, _; starts with a letter; ≤ 48 chars).
    pub name: String,
    /// Backend to put it on (see `GET /v1/plugins`); default: the gateway's default backend.
    #[serde(default)]
    pub backend: Option<String>,
    /// Idle seconds before the compute is suspended; 0 = never; absent = the gateway default.
    #[serde(default)]
    pub suspend_after_secs: Option<u64>,
    /// Computes of this database kept running (main, then branches); default 0.
    #[serde(default)]
    pub min_warm: u32,
    /// Tenant that owns it (only with the gateway's admin token; a
    /// tenant's token creates in its own tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A compute as the API reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComputeInfo {
    /// suspended, starting, running or draining.
    pub state: String,
    /// Postmaster pid when running.
    pub pid: Option<u32>,
    /// Private port when running.
    pub port: Option<u16>,
    /// Seconds since it became ready.
    pub uptime_secs: Option<u64>,
    /// Failover generation.
    pub generation: u64,
    /// Clients connected through the gateway now.
    pub active_clients: usize,
    /// Wakes caused by clients since the gateway started.
    pub wakes: u64,
}

/// A database as the API reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatabaseInfo {
    /// Name.
    pub name: String,
    /// Backend that stores it.
    pub backend: String,
    /// Owner role.
    pub owner: String,
    /// Connection URL without the password.
    pub url: String,
    /// Unix time of creation.
    pub created_at_unix: u64,
    /// Effective idle window in seconds; null = never suspends.
    pub suspend_after_secs: Option<u64>,
    /// Computes kept running (main, then branches).
    pub min_warm: u32,
    /// Tenant that owns it.
    pub tenant: String,
    /// Its compute.
    pub compute: ComputeInfo,
    /// Its continuous WAL archive (backends that keep one).
    pub archive: Option<backups::ArchiveInfo>,
    /// The gateway that serves it, in a cluster.
    pub node: Option<String>,
    /// `ogel chaos run` may disrupt it.
    #[serde(default)]
    pub chaos_allowed: bool,
}

/// Response of `POST /v1/databases` and of a password reset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatabaseCredentials {
    /// The database.
    pub database: DatabaseInfo,
    /// The owner's password; shown only now (the gateway keeps a SCRAM verifier).
    pub password: String,
    /// Full connection URL with the password.
    pub url: String,
}

/// Response of `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GatewayStatus {
    /// Gateway version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Postgres wire address.
    pub listen: String,
    /// HTTP API address.
    pub api: String,
    /// Backend description.
    pub backend: String,
    /// Every database.
    pub databases: Vec<DatabaseInfo>,
}

/// A plugin library as `GET /v1/plugins` reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginEntry {
    /// Backend name (what `--backend` takes).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Plugin ABI `major.minor`.
    pub abi: String,
    /// Library file.
    pub file: String,
    /// Whether its backend is running in this gateway.
    pub running: bool,
    /// Can suspend computes (scale to zero).
    pub can_suspend: Option<bool>,
    /// Everything it declares it can do (when running).
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<ogel_plugin_sdk::Capabilities>,
    /// Its description, or why it could not start.
    pub status: String,
}

/// A library that was refused.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefusedPlugin {
    /// Library file.
    pub file: String,
    /// Why: what was found and what was expected.
    pub reason: String,
}

/// Response of `GET /v1/plugins`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    /// Loaded plugins.
    pub plugins: Vec<PluginEntry>,
    /// Refused libraries.
    pub refused: Vec<RefusedPlugin>,
}

/// Error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiErrorDetail,
}

/// Error detail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorDetail {
    /// Stable code: not_found, already_exists, invalid_request, unauthorized, unavailable, …
    pub code: String,
    /// What happened and what to do.
    pub message: String,
}

/// An error response.
pub struct ApiError(StatusCode, ApiErrorDetail);

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError(
            status,
            ApiErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        )
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        if let ControlError::Backend(b) = &e {
            if b.source.is_some() {
                tracing::warn!(error = %e, cause = ?b.source, "API call failed");
            }
        } else {
            tracing::error!(error = %e, "API call failed");
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiErrorBody { error: self.1 })).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

impl ApiState {
    fn info(&self, view: DatabaseView) -> DatabaseInfo {
        let now = crate::names::unix_now();
        DatabaseInfo {
            url: self.databases.url(&view.record, None),
            name: view.record.name,
            backend: view.record.backend,
            owner: view.record.owner,
            created_at_unix: view.record.created_at_unix,
            suspend_after_secs: view.suspend_after.map(|d| d.as_secs()),
            min_warm: view.record.min_warm,
            tenant: view.record.tenant,
            node: view.record.node,
            chaos_allowed: view.record.chaos_allowed,
            compute: ComputeInfo {
                state: view.compute.state.to_string(),
                pid: view.compute.pid,
                port: view.compute.port,
                uptime_secs: view.compute.started_at_unix.map(|t| now.saturating_sub(t)),
                generation: view.compute.generation,
                active_clients: view.stats.active_clients,
                wakes: view.stats.wakes,
            },
            archive: view.archive.map(|a| backups::ArchiveInfo::from(Some(a))),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "OgelBase API", description = "Databases, computes and status of an OgelBase gateway."),
    paths(list_databases, create_database, get_database, delete_database, suspend_database, wake_database, pause_database, resume_database, reset_password, reload, status, cluster, list_plugins,
        branches::list_branches, branches::create_branch, branches::delete_branch, branches::reset_branch, branches::list_snapshots, branches::create_snapshot, branches::restore_snapshot, branches::list_operations,
        backups::create_backup, backups::list_backups, backups::restore_backup, backups::archive, backups::get_tier, backups::set_tier, standby::get_standby, standby::set_standby, standby::switchover, standby::set_chaos, standby::inject_fault,
        access::create_token, access::list_tokens, access::revoke_token, access::list_keys, access::rotate_key, access::remove_key, access::list_tenants, access::create_tenant, access::delete_tenant),
    components(schemas(Done, access::CreateToken, access::CreateTenant, access::TenantInfo, access::CreatedTenant, crate::control::access::IssuedToken, crate::catalog::TokenRecord, crate::auth::tokens::KeyInfo, branches::OperationInfo, branches::CreateBranch, branches::BranchInfo, branches::CreateSnapshot, branches::RestoreSnapshot, branches::SnapshotEntry, backups::CreateBackup, backups::BackupEntry, backups::RestoreBackup, backups::RestoreResult, backups::ArchiveInfo, backups::SetTier, backups::TierInfo, standby::SetStandby, standby::StandbyInfo, standby::HealthInfo, standby::SwitchoverResult, standby::SetChaos, standby::InjectFault, CreateDatabase, DatabaseInfo, ComputeInfo, DatabaseCredentials, GatewayStatus, ApiErrorBody, ApiErrorDetail, PluginEntry, RefusedPlugin, PluginList, ClusterStatus, crate::cluster::ClusterView, crate::cluster::NodeInfo, crate::cluster::Role, crate::catalog::LeaderBeat)),
    modifiers(&BearerAuth),
    security(("admin_token" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "admin_token",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The API's router.
pub fn router(services: ApiServices) -> Router {
    let state = ApiState(Arc::new(services));
    let authed = Router::new()
        .route("/v1/databases", get(list_databases).post(create_database))
        .route(
            "/v1/databases/{name}",
            get(get_database).delete(delete_database),
        )
        .route("/v1/databases/{name}/suspend", post(suspend_database))
        .route("/v1/databases/{name}/wake", post(wake_database))
        .route("/v1/databases/{name}/password", post(reset_password))
        .route("/v1/databases/{name}/pause", post(pause_database))
        .route("/v1/databases/{name}/resume", post(resume_database))
        .route("/v1/reload", post(reload))
        .merge(branches::routes())
        .merge(backups::routes())
        .merge(standby::routes())
        .merge(access::routes())
        .route("/v1/status", get(status))
        .route("/v1/cluster", get(cluster))
        .route("/v1/plugins", get(list_plugins))
        // Inner: runs after the token check.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            forward::to_serving_gateway,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/.well-known/jwks.json", get(access::jwks))
        .route(
            "/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }),
        )
        // Unauthenticated, as Prometheus scrapes; it names databases and
        // counts, nothing secret. The API listens on loopback by default.
        .route(
            "/metrics",
            get(|State(state): State<ApiState>| async move {
                let archives = state.databases.archive_statuses().await;
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::api::metrics::render(&state.pools, &state.predictor, &archives)
                        + &crate::api::metrics::render_cluster(&state.cluster.view())
                        + &crate::api::metrics::render_health(&state.standbys),
                )
            }),
        )
        .merge(authed)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such API route; see /v1/openapi.json",
            )
        })
        .with_state(state)
}

/// Resolves the bearer token to a [`Scope`] (the admin token, or a
/// tenant's) and keeps tenant tokens to their own databases: another
/// tenant's database is "not found", gateway-wide routes are forbidden.
async fn require_token(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(scope) = presented.and_then(|t| {
        state.access.scope_of(t, &state.token).or_else(|| {
            // Another gateway's admin token: valid across the cluster.
            state
                .cluster
                .accepts_admin_token(&crate::control::access::sha256_hex(t))
                .then_some(Scope::Global)
        })
    }) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token: send `Authorization: Bearer <token>` with the token from <data-dir>/admin-token (or a tenant's token from `ogel tenants create`)",
        )
        .into_response();
    };
    if let Scope::Tenant(_) = &scope {
        let path = request.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v1", "databases"] | ["v1", "operations"] | ["v1", "tokens", _, "revoke"] => {}
            ["v1", "databases", name, ..] => {
                if let Err(e) = state.access.database_in_scope(name, &scope) {
                    return ApiError::from(e).into_response();
                }
            }
            _ => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a tenant's token cannot use this route; it needs the gateway's admin token",
                )
                .into_response()
            }
        }
    }
    request.extensions_mut().insert(scope);
    next.run(request).await
}

/// List databases.
#[utoipa::path(get, path = "/v1/databases", responses((status = 200, body = [DatabaseInfo])))]
async fn list_databases(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Vec<DatabaseInfo>> {
    let views = state.databases.describe_all().await?;
    Ok(Json(
        views
            .into_iter()
            .filter(|v| scope.sees(&v.record))
            .map(|v| state.info(v))
            .collect(),
    ))
}

/// Create a database (its compute starts running).
#[utoipa::path(post, path = "/v1/databases", request_body = CreateDatabase,
    responses((status = 201, body = DatabaseCredentials), (status = 400, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
async fn create_database(
    State(state): State<ApiState>,
    Extension(scope): Extension<Scope>,
    body: Result<Json<CreateDatabase>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<DatabaseCredentials>), ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{}; expected {{\"name\": \"shop\"}}", e.body_text()),
        )
    })?;
    let tenant = match (&scope, &body.tenant) {
        (Scope::Global, Some(t)) => t.as_str(),
        (Scope::Tenant(t), Some(asked)) if asked != t => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                "this token belongs to tenant \"{t}\"; it cannot create databases for \"{asked}\""
            ),
            ))
        }
        (scope, _) => scope.tenant(),
    };
    let (record, password) = state
        .databases
        .create(
            &body.name,
            body.backend.as_deref(),
            body.suspend_after_secs,
            body.min_warm,
            tenant,
        )
        .await?;
    let url = state.databases.url(&record, Some(&password));
    let view = state.databases.describe(&record.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(DatabaseCredentials {
            database: state.info(view),
            password,
            url,
        }),
    ))
}

/// Get one database.
#[utoipa::path(get, path = "/v1/databases/{name}", params(("name" = String, Path)),
    responses((status = 200, body = DatabaseInfo), (status = 404, body = ApiErrorBody)))]
async fn get_database(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<DatabaseInfo> {
    Ok(Json(state.info(state.databases.describe(&name).await?)))
}

/// Delete a database and all its data.
#[utoipa::path(delete, path = "/v1/databases/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiErrorBody)))]
async fn delete_database(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.databases.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Suspend a database's compute now (connected sessions end).
#[utoipa::path(post, path = "/v1/databases/{name}/suspend", params(("name" = String, Path)),
    responses((status = 200, body = DatabaseInfo), (status = 404, body = ApiErrorBody)))]
async fn suspend_database(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<DatabaseInfo> {
    Ok(Json(state.info(state.databases.suspend(&name).await?)))
}

/// Wake a database's compute now.
#[utoipa::path(post, path = "/v1/databases/{name}/wake", params(("name" = String, Path)),
    responses((status = 200, body = DatabaseInfo), (status = 404, body = ApiErrorBody), (status = 503, body = ApiErrorBody)))]
async fn wake_database(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<DatabaseInfo> {
    Ok(Json(state.info(state.databases.wake(&name).await?)))
}

/// Give the owner role a new password (the old one stops working).
#[utoipa::path(post, path = "/v1/databases/{name}/password", params(("name" = String, Path)),
    responses((status = 200, body = DatabaseCredentials), (status = 404, body = ApiErrorBody)))]
async fn reset_password(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<DatabaseCredentials> {
    let password = state.databases.reset_password(&name).await?;
    let view = state.databases.describe(&name).await?;
    let url = state.databases.url(&view.record, Some(&password));
    Ok(Json(DatabaseCredentials {
        database: state.info(view),
        password,
        url,
    }))
}

/// The answer of an action with nothing else to report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Done {
    /// What was done.
    pub done: String,
}

/// PAUSE: waits for the database's running transactions to finish (at
/// most `pool.pause_timeout`), then holds new ones until resumed.
#[utoipa::path(post, path = "/v1/databases/{name}/pause", params(("name" = String, Path)),
    responses((status = 200, body = Done), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)))]
async fn pause_database(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Done> {
    let pools = state.databases.pools_of(&name)?;
    state.pools.pause(&pools).await.map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "pause_timeout",
            format!("{e}; {}", crate::pool::PAUSE_HINT),
        )
    })?;
    Ok(Json(Done {
        done: format!("paused {name}"),
    }))
}

/// RESUME: held clients proceed.
#[utoipa::path(post, path = "/v1/databases/{name}/resume", params(("name" = String, Path)),
    responses((status = 200, body = Done), (status = 404, body = ApiErrorBody)))]
async fn resume_database(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Done> {
    for db in state.databases.pools_of(&name)? {
        db.pool.resume();
    }
    Ok(Json(Done {
        done: format!("resumed {name}"),
    }))
}

/// Re-reads the configuration file and applies its `[pool]` section
/// (sizes, limits, modes) without dropping connections.
#[utoipa::path(post, path = "/v1/reload", responses((status = 200, body = Done), (status = 400, body = ApiErrorBody)))]
async fn reload(State(state): State<ApiState>) -> ApiResult<Done> {
    state.reloader.reload().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_config",
            format!("{e}; fix the file and reload again"),
        )
    })?;
    Ok(Json(Done {
        done: "reloaded [pool]".into(),
    }))
}

/// Gateway, databases and computes.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = GatewayStatus)))]
async fn status(State(state): State<ApiState>) -> ApiResult<GatewayStatus> {
    let views = state.databases.describe_all().await?;
    Ok(Json(GatewayStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: state.started_at.elapsed().as_secs(),
        listen: state.pg_addr.to_string(),
        api: state.api_addr.to_string(),
        backend: state.backends.description(),
        databases: views.into_iter().map(|v| state.info(v)).collect(),
    }))
}

/// `GET /v1/cluster`: this gateway's view of the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// Nodes, leader, generation, as this gateway sees them.
    #[serde(flatten)]
    pub view: crate::cluster::ClusterView,
    /// The leader's last beat in the catalog.
    pub leader_beat: Option<crate::catalog::LeaderBeat>,
}

/// Nodes, the leader and its generation, as this gateway sees them.
#[utoipa::path(get, path = "/v1/cluster", responses((status = 200, body = ClusterStatus)))]
async fn cluster(State(state): State<ApiState>) -> ApiResult<ClusterStatus> {
    Ok(Json(ClusterStatus {
        view: state.cluster.view(),
        leader_beat: state.catalog.leader_beat().ok().flatten(),
    }))
}

/// Backend plugins: loaded (with capabilities) and refused (with the reason).
#[utoipa::path(get, path = "/v1/plugins", responses((status = 200, body = PluginList)))]
async fn list_plugins(State(state): State<ApiState>) -> ApiResult<PluginList> {
    let backends = &state.backends;
    Ok(Json(PluginList {
        plugins: backends
            .plugins
            .iter()
            .map(|p| PluginEntry {
                name: p.name.clone(),
                version: p.version.clone(),
                abi: p.abi.clone(),
                file: p.file.display().to_string(),
                running: p.capabilities.is_some(),
                can_suspend: p.capabilities.map(|c| c.suspend),
                capabilities: p.capabilities,
                status: p.status.clone(),
            })
            .collect(),
        refused: backends
            .refused
            .iter()
            .map(|(file, reason)| RefusedPlugin {
                file: file.display().to_string(),
                reason: reason.clone(),
            })
            .collect(),
    }))
}
