//! The HTTP API: Neon API v2 under `/api/v2` (Bearer auth, Neon's error
//! shape `{"request_id", "code", "message"}`, Neon's paths, bodies and
//! status codes) and the emulator's own fault-injection endpoints under
//! `/_emulator/` (no auth).

use crate::core::{new_branch, Core, Step, Undo};
use crate::data::{quote_ident, DataPlane, NEON_SUPERUSER};
use crate::faults::{ApiFault, FaultRequest};
use crate::model::{self, Database, Endpoint, Operation, Project, ProjectState, Role};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ogel_plugin_kit::url::percent_encode as pct;
use ogel_plugin_sdk::BranchPoint;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub core: Arc<Core>,
    pub api_keys: Arc<Vec<String>>,
}

/// An error in Neon's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    fn locked() -> ApiError {
        ApiError::new(
            StatusCode::LOCKED,
            "project already has running operations, scheduling of new ones is prohibited",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "request_id": model::uuid_v4(),
            "code": "",
            "message": self.message,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    Ok((StatusCode::OK, Json(value)).into_response())
}

fn created(value: Value) -> ApiResult {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// Parses a JSON body; an empty body is `{}` where `empty_ok`.
fn parse<T: DeserializeOwned>(body: &Bytes, empty_ok: bool) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        if !empty_ok {
            return Err(ApiError::bad_request("request body is required"));
        }
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// The router: the Neon API and the emulator's endpoints.
pub(crate) fn router(state: AppState) -> Router {
    let neon = Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/shared", get(list_shared_projects))
        .route("/users/me", get(current_user))
        .route("/users/me/organizations", get(user_organizations))
        .route(
            "/projects/{project_id}",
            get(get_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route("/projects/{project_id}/operations", get(list_operations))
        .route(
            "/projects/{project_id}/operations/{operation_id}",
            get(get_operation),
        )
        .route("/projects/{project_id}/connection_uri", get(connection_uri))
        .route(
            "/projects/{project_id}/branches",
            get(list_branches).post(create_branch),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}",
            get(get_branch).patch(update_branch).delete(delete_branch),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/endpoints",
            get(list_branch_endpoints),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles",
            get(list_roles).post(create_role),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}",
            get(get_role).delete(delete_role),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reveal_password",
            get(reveal_password),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/roles/{role_name}/reset_password",
            post(reset_password),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/databases",
            get(list_databases).post(create_database),
        )
        .route(
            "/projects/{project_id}/branches/{branch_id}/databases/{database_name}",
            get(get_database).delete(delete_database),
        )
        .route(
            "/projects/{project_id}/endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}/start",
            post(start_endpoint),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}/suspend",
            post(suspend_endpoint),
        )
        .route(
            "/projects/{project_id}/endpoints/{endpoint_id}/restart",
            post(restart_endpoint),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    Router::new()
        .nest("/api/v2", neon)
        .route(
            "/_emulator/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/_emulator/health", get(health))
        .fallback(unknown_route)
        .with_state(state)
}

async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    tracing::warn!(%method, %uri, "a route the emulator does not implement");
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Injected faults, then the API key.
async fn gate(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match app.core.faults.take_api_fault() {
        Some(ApiFault::Down) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
                .into_response()
        }
        Some(ApiFault::RateLimited { retry_after }) => {
            return ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "rate limit exceeded, please retry later".into(),
                retry_after: Some(retry_after),
            }
            .into_response()
        }
        Some(ApiFault::ServerError) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
                .into_response()
        }
        None => {}
    }
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    match key {
        None => ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response(),
        Some(key) if !app.api_keys.iter().any(|k| k == key) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication failed: invalid API key",
        )
        .into_response(),
        Some(_) => {
            let (method, uri) = (request.method().clone(), request.uri().clone());
            let response = next.run(request).await;
            tracing::debug!(%method, %uri, status = response.status().as_u16(), "api call");
            response
        }
    }
}

// ---------------------------------------------------------------- faults

async fn get_faults(State(app): State<AppState>) -> Json<Value> {
    Json(json!(app.core.faults.get()))
}

async fn set_faults(State(app): State<AppState>, body: Bytes) -> ApiResult {
    let request: FaultRequest = parse(&body, false)?;
    let state = app.core.faults.apply(request);
    tracing::info!(?state, "faults set");
    ok(json!(state))
}

async fn clear_faults(State(app): State<AppState>) -> Json<Value> {
    app.core.faults.clear();
    Json(json!(app.core.faults.get()))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

// ---------------------------------------------------------------- helpers

/// Runs `f` on a project that exists, with the state locked.
fn with_project<T>(
    app: &AppState,
    project_id: &str,
    f: impl FnOnce(&mut ProjectState, &mut i64) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut state = app.core.state();
    let mut next_id = state.next_database_id;
    let project = state
        .project_mut(project_id)
        .ok_or_else(|| ApiError::not_found("project"))?;
    let result = f(project, &mut next_id);
    state.next_database_id = next_id;
    result
}

/// The same for a mutating call: 423 while the project has operations in progress.
fn mutate_project<T>(
    app: &AppState,
    project_id: &str,
    f: impl FnOnce(&mut ProjectState, &mut i64) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    with_project(app, project_id, |project, next_id| {
        if project.locked() {
            return Err(ApiError::locked());
        }
        f(project, next_id)
    })
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn endpoint_host(app: &AppState, endpoint_id: &str) -> String {
    format!("{endpoint_id}.{}", app.core.settings.domain)
}

fn pooler_host(app: &AppState, endpoint_id: &str) -> String {
    format!("{endpoint_id}-pooler.{}", app.core.settings.domain)
}

/// A connection URI in Neon's form (no port: clients use 5432, or the
/// proxy's port through `PGPORT`).
fn uri(host: &str, role: &str, password: &str, database: &str) -> String {
    format!(
        "postgresql://{}:{}@{host}/{}?sslmode=require",
        pct(role),
        pct(password),
        pct(database)
    )
}

fn connection_details(app: &AppState, endpoint_id: &str, role: &Role, db: &Database) -> Value {
    let password = role.password.clone().unwrap_or_default();
    let host = endpoint_host(app, endpoint_id);
    json!({
        "connection_uri": uri(&host, &role.name, &password, &db.name),
        "connection_parameters": {
            "database": db.name,
            "password": password,
            "role": role.name,
            "host": host,
            "pooler_host": pooler_host(app, endpoint_id),
        }
    })
}

#[derive(Deserialize, Default)]
struct EndpointOptions {
    #[serde(rename = "type")]
    kind: Option<String>,
    suspend_timeout_seconds: Option<i64>,
    autoscaling_limit_min_cu: Option<f64>,
    autoscaling_limit_max_cu: Option<f64>,
    provisioner: Option<String>,
    settings: Option<Value>,
    disabled: Option<bool>,
    name: Option<String>,
    region_id: Option<String>,
    branch_id: Option<String>,
    pooler_enabled: Option<bool>,
    passwordless_access: Option<bool>,
}

fn check_suspend_timeout(secs: i64) -> Result<(), ApiError> {
    if !(-1..=604_800).contains(&secs) {
        return Err(ApiError::bad_request(format!(
            "suspend_timeout_seconds must be between -1 and 604800, got {secs}"
        )));
    }
    Ok(())
}

fn endpoint_kind(kind: Option<&str>) -> Result<String, ApiError> {
    match kind {
        Some(k @ ("read_write" | "read_only")) => Ok(k.to_string()),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid endpoint type \"{other}\" (read_write or read_only)"
        ))),
        None => Err(ApiError::bad_request("endpoint type is required")),
    }
}

/// A new endpoint in `init`, to be started by a `start_compute` operation.
fn new_endpoint(
    app: &AppState,
    project: &ProjectState,
    branch_id: &str,
    options: &EndpointOptions,
) -> Result<Endpoint, ApiError> {
    let kind = endpoint_kind(options.kind.as_deref())?;
    let defaults = &project.project.default_endpoint_settings;
    let suspend = options
        .suspend_timeout_seconds
        .or_else(|| {
            defaults
                .get("suspend_timeout_seconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(0);
    check_suspend_timeout(suspend)?;
    let min_cu = options
        .autoscaling_limit_min_cu
        .or_else(|| {
            defaults
                .get("autoscaling_limit_min_cu")
                .and_then(Value::as_f64)
        })
        .unwrap_or(0.25);
    let max_cu = options
        .autoscaling_limit_max_cu
        .or_else(|| {
            defaults
                .get("autoscaling_limit_max_cu")
                .and_then(Value::as_f64)
        })
        .unwrap_or(min_cu.max(0.25));
    if min_cu < 0.25 || max_cu < min_cu {
        return Err(ApiError::bad_request(
            "autoscaling limits must be at least 0.25 and min <= max",
        ));
    }
    if kind == "read_write" && project.read_write_endpoint(branch_id).is_some() {
        return Err(ApiError::conflict(format!(
            "branch {branch_id} already has a read_write endpoint"
        )));
    }
    let id = model::generate_id("ep");
    let now = model::now();
    Ok(Endpoint {
        host: endpoint_host(app, &id),
        name: options.name.clone(),
        project_id: project.project.id.clone(),
        branch_id: branch_id.to_string(),
        autoscaling_limit_min_cu: min_cu,
        autoscaling_limit_max_cu: max_cu,
        region_id: project.project.region_id.clone(),
        kind,
        current_state: "init".into(),
        pending_state: Some("active".into()),
        settings: options
            .settings
            .clone()
            .unwrap_or_else(|| json!({"pg_settings": {}})),
        pooler_enabled: options.pooler_enabled.unwrap_or(false),
        pooler_mode: "transaction".into(),
        disabled: options.disabled.unwrap_or(false),
        passwordless_access: options.passwordless_access.unwrap_or(false),
        last_active: None,
        creation_source: "console".into(),
        created_at: now.clone(),
        updated_at: now,
        started_at: None,
        suspended_at: None,
        proxy_host: app.core.settings.domain.clone(),
        suspend_timeout_seconds: suspend,
        provisioner: options
            .provisioner
            .clone()
            .unwrap_or_else(|| "k8s-neonvm".into()),
        id,
    })
}

fn start_op(project_id: &str, endpoint: &Endpoint) -> (Operation, Step) {
    (
        Operation::new(
            project_id,
            Some(&endpoint.branch_id),
            Some(&endpoint.id),
            "start_compute",
        ),
        Step::StartCompute {
            endpoint_id: endpoint.id.clone(),
        },
    )
}

fn suspend_op(project_id: &str, endpoint: &Endpoint) -> (Operation, Step) {
    (
        Operation::new(
            project_id,
            Some(&endpoint.branch_id),
            Some(&endpoint.id),
            "suspend_compute",
        ),
        Step::SuspendCompute {
            endpoint_id: endpoint.id.clone(),
            branch_id: endpoint.branch_id.clone(),
        },
    )
}

/// An `apply_config` operation on a branch (its read-write endpoint named, if any).
fn config_op(
    project: &ProjectState,
    branch_id: &str,
    sql: Vec<String>,
    undo: Undo,
) -> (Operation, Step) {
    let endpoint = project.read_write_endpoint(branch_id).map(|e| e.id.clone());
    (
        Operation::new(
            &project.project.id,
            Some(branch_id),
            endpoint.as_deref(),
            "apply_config",
        ),
        Step::ApplyConfig {
            branch_id: branch_id.to_string(),
            sql,
            undo,
        },
    )
}

fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 63 || name.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "invalid {kind} name \"{name}\": 1 to 63 bytes"
        )));
    }
    Ok(())
}

fn ops_json(ops: &[Operation]) -> Value {
    to_value(&ops)
}

// ---------------------------------------------------------------- projects

#[derive(Deserialize)]
struct ListProjectsQuery {
    cursor: Option<String>,
    limit: Option<String>,
    search: Option<String>,
}

fn parse_limit(limit: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be an integer from 1 to {max}"
            ))),
        },
    }
}

async fn list_projects(
    State(app): State<AppState>,
    Query(query): Query<ListProjectsQuery>,
) -> ApiResult {
    let limit = parse_limit(query.limit.as_deref(), 10, 400)?;
    let state = app.core.state();
    let mut projects: Vec<&Project> = state
        .projects
        .iter()
        .map(|p| &p.project)
        .filter(|p| {
            query
                .search
                .as_deref()
                .is_none_or(|s| p.id.contains(s) || p.name.contains(s))
        })
        .collect();
    if let Some(cursor) = query.cursor.as_deref().filter(|c| !c.is_empty()) {
        if let Some(pos) = projects.iter().position(|p| p.id == cursor) {
            projects.drain(..=pos);
        }
    }
    projects.truncate(limit);
    let cursor = projects.last().map(|p| p.id.clone()).unwrap_or_default();
    let items: Vec<Value> = projects.iter().map(|p| p.list_item()).collect();
    ok(json!({
        "projects": items,
        "pagination": {"cursor": cursor},
        "applications": {},
        "integrations": {},
    }))
}

/// Projects shared with the caller: none in the emulator.
async fn list_shared_projects() -> ApiResult {
    ok(json!({ "projects": [], "pagination": {"cursor": ""} }))
}

/// The caller: one emulator user without organizations.
async fn current_user() -> ApiResult {
    ok(json!({
        "id": "emulator-user",
        "email": "emulator@localtest.neon",
        "name": "Neon",
        "last_name": "Emulator",
        "login": "emulator",
        "image": "",
        "active_seconds_limit": 0,
        "auth_accounts": [],
        "projects_limit": 1000,
        "branches_limit": 5000,
        "max_autoscaling_limit": 8,
        "plan": "free",
    }))
}

async fn user_organizations() -> ApiResult {
    ok(json!({ "organizations": [] }))
}

#[derive(Deserialize)]
struct CreateProjectRequest {
    project: Option<CreateProject>,
}

#[derive(Deserialize, Default)]
struct CreateProject {
    name: Option<String>,
    region_id: Option<String>,
    pg_version: Option<u32>,
    branch: Option<CreateProjectBranch>,
    default_endpoint_settings: Option<Value>,
    settings: Option<Value>,
    history_retention_seconds: Option<i64>,
    org_id: Option<String>,
    store_passwords: Option<bool>,
    provisioner: Option<String>,
    autoscaling_limit_min_cu: Option<f64>,
    autoscaling_limit_max_cu: Option<f64>,
}

#[derive(Deserialize, Default)]
struct CreateProjectBranch {
    name: Option<String>,
    role_name: Option<String>,
    database_name: Option<String>,
}

async fn create_project(State(app): State<AppState>, body: Bytes) -> ApiResult {
    let request: CreateProjectRequest = parse(&body, false)?;
    let spec = request
        .project
        .ok_or_else(|| ApiError::bad_request("`project` is required"))?;
    if let Some(v) = spec.pg_version {
        if !(14..=18).contains(&v) {
            return Err(ApiError::bad_request(format!("unsupported pg_version {v}")));
        }
        if v != app.core.settings.pg_version {
            tracing::warn!(
                requested = v,
                serving = app.core.settings.pg_version,
                "pg_version differs from the local PostgreSQL; the project reports the real one"
            );
        }
    }
    if let Some(name) = &spec.name {
        if name.is_empty() || name.len() > 256 {
            return Err(ApiError::bad_request(
                "project name must be 1 to 256 characters",
            ));
        }
    }
    let history = spec.history_retention_seconds.unwrap_or(86_400);
    if !(0..=2_592_000).contains(&history) {
        return Err(ApiError::bad_request(
            "history_retention_seconds must be between 0 and 2592000",
        ));
    }
    let branch_spec = spec.branch.unwrap_or_default();
    let database_name = branch_spec.database_name.unwrap_or_else(|| "neondb".into());
    let role_name = branch_spec
        .role_name
        .unwrap_or_else(|| format!("{database_name}_owner"));
    check_name("database", &database_name)?;
    check_name("role", &role_name)?;
    if role_name == NEON_SUPERUSER || role_name.starts_with("pg_") {
        return Err(ApiError::bad_request(format!(
            "role name \"{role_name}\" is reserved"
        )));
    }
    let branch_name = branch_spec.name.unwrap_or_else(|| "main".into());
    let mut endpoint_defaults = match spec.default_endpoint_settings {
        Some(Value::Object(map)) => Value::Object(map),
        Some(_) => {
            return Err(ApiError::bad_request(
                "default_endpoint_settings must be an object",
            ))
        }
        None => json!({}),
    };
    if let Value::Object(map) = &mut endpoint_defaults {
        if let Some(min) = spec.autoscaling_limit_min_cu {
            map.entry("autoscaling_limit_min_cu").or_insert(json!(min));
        }
        if let Some(max) = spec.autoscaling_limit_max_cu {
            map.entry("autoscaling_limit_max_cu").or_insert(json!(max));
        }
        map.entry("autoscaling_limit_min_cu").or_insert(json!(0.25));
        map.entry("autoscaling_limit_max_cu").or_insert(json!(0.25));
        map.entry("suspend_timeout_seconds").or_insert(json!(0));
    }

    let now = model::now();
    let id = model::generate_id("");
    let project = Project {
        id: id.clone(),
        platform_id: "aws".into(),
        region_id: spec
            .region_id
            .unwrap_or_else(|| app.core.settings.region_id.clone()),
        name: spec.name.unwrap_or_else(|| id.clone()),
        provisioner: spec.provisioner.unwrap_or_else(|| "k8s-neonvm".into()),
        default_endpoint_settings: endpoint_defaults,
        settings: spec.settings.unwrap_or_else(|| {
            json!({
                "allowed_ips": {"ips": [], "protected_branches_only": false},
                "enable_logical_replication": false,
                "block_public_connections": false,
                "block_vpc_connections": false,
                "hipaa": false,
            })
        }),
        pg_version: app.core.settings.pg_version,
        proxy_host: app.core.settings.domain.clone(),
        branch_logical_size_limit: 0,
        branch_logical_size_limit_bytes: -1,
        store_passwords: spec.store_passwords.unwrap_or(true),
        cpu_used_sec: 0,
        active_time_seconds: 0,
        compute_time_seconds: 0,
        written_data_bytes: 0,
        data_transfer_bytes: 0,
        data_storage_bytes_hour: 0,
        creation_source: "console".into(),
        history_retention_seconds: history,
        created_at: now.clone(),
        updated_at: now.clone(),
        consumption_period_start: now.clone(),
        consumption_period_end: model::in_seconds(30 * 86_400),
        owner_id: "emulator-user".into(),
        org_id: spec.org_id,
        compute_last_active_at: None,
    };
    let branch_id = model::generate_id("br");
    let branch = new_branch(
        &id,
        branch_id.clone(),
        branch_name,
        None,
        None,
        None,
        true,
        "main".into(),
    );
    let mut project_state = ProjectState {
        project,
        branches: vec![branch.clone()],
        endpoints: Vec::new(),
        roles: Vec::new(),
        databases: Vec::new(),
        operations: Vec::new(),
    };
    let endpoint = new_endpoint(
        &app,
        &project_state,
        &branch_id,
        &EndpointOptions {
            kind: Some("read_write".into()),
            ..EndpointOptions::default()
        },
    )?;
    let password = model::generate_password();
    let role = Role {
        branch_id: branch_id.clone(),
        name: role_name.clone(),
        password: Some(password.clone()),
        protected: false,
        authentication_method: "password".into(),
        created_at: now.clone(),
        updated_at: now.clone(),
    };
    let mut state = app.core.state();
    let database = Database {
        id: state.next_database_id(),
        branch_id: branch_id.clone(),
        name: database_name.clone(),
        owner_name: role_name.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    project_state.endpoints.push(endpoint.clone());
    project_state.roles.push(role.clone());
    project_state.databases.push(database.clone());
    let (ops, jobs) = Core::record(
        &mut project_state,
        vec![
            (
                Operation::new(&id, Some(&branch_id), Some(&endpoint.id), "create_timeline"),
                Step::CreateTimeline {
                    branch_id: branch_id.clone(),
                    role: role_name,
                    password,
                    database: database_name,
                },
            ),
            start_op(&id, &endpoint),
        ],
    );
    let response = json!({
        "project": to_value(&project_state.project),
        "connection_uris": [connection_details(&app, &endpoint.id, &role, &database)],
        "roles": [to_value(&role)],
        "databases": [to_value(&database)],
        "operations": ops_json(&ops),
        "branch": to_value(&branch),
        "endpoints": [to_value(&endpoint)],
    });
    state.projects.push(project_state);
    drop(state);
    app.core.schedule(&id, jobs);
    created(response)
}

async fn get_project(State(app): State<AppState>, Path(project_id): Path<String>) -> ApiResult {
    let project = with_project(&app, &project_id, |p, _| Ok(to_value(&p.project)))?;
    ok(json!({ "project": project }))
}

#[derive(Deserialize)]
struct UpdateProjectRequest {
    project: Option<UpdateProject>,
}

#[derive(Deserialize)]
struct UpdateProject {
    name: Option<String>,
    default_endpoint_settings: Option<Value>,
    settings: Option<Value>,
    history_retention_seconds: Option<i64>,
}

async fn update_project(
    State(app): State<AppState>,
    Path(project_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: UpdateProjectRequest = parse(&body, false)?;
    let update = request
        .project
        .ok_or_else(|| ApiError::bad_request("`project` is required"))?;
    let project = mutate_project(&app, &project_id, |p, _| {
        if let Some(name) = update.name {
            if name.is_empty() || name.len() > 256 {
                return Err(ApiError::bad_request(
                    "project name must be 1 to 256 characters",
                ));
            }
            p.project.name = name;
        }
        if let Some(Value::Object(settings)) = update.default_endpoint_settings {
            if let Value::Object(current) = &mut p.project.default_endpoint_settings {
                current.extend(settings);
            }
        }
        if let Some(Value::Object(settings)) = update.settings {
            if let Value::Object(current) = &mut p.project.settings {
                current.extend(settings);
            }
        }
        if let Some(h) = update.history_retention_seconds {
            if !(0..=2_592_000).contains(&h) {
                return Err(ApiError::bad_request(
                    "history_retention_seconds must be between 0 and 2592000",
                ));
            }
            p.project.history_retention_seconds = h;
        }
        p.project.updated_at = model::now();
        Ok(to_value(&p.project))
    })?;
    ok(json!({ "project": project, "operations": [] }))
}

async fn delete_project(State(app): State<AppState>, Path(project_id): Path<String>) -> ApiResult {
    let project = {
        let mut state = app.core.state();
        let index = state
            .projects
            .iter()
            .position(|p| p.project.id == project_id)
            .ok_or_else(|| ApiError::not_found("project"))?;
        if state.projects[index].locked() {
            return Err(ApiError::locked());
        }
        state.projects.remove(index).project
    };
    if let Err(e) = app.core.delete_project_data(&project_id).await {
        tracing::warn!(project = %project_id, error = %e, "deleting the project's clusters failed");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not delete the project's data: {e}"),
        ));
    }
    ok(json!({ "project": to_value(&project) }))
}

// ---------------------------------------------------------------- operations

#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

async fn list_operations(
    State(app): State<AppState>,
    Path(project_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult {
    let limit = parse_limit(query.limit.as_deref(), 1000, 1000)?;
    let mut ops = with_project(&app, &project_id, |p, _| {
        Ok(p.operations.iter().rev().cloned().collect::<Vec<_>>())
    })?;
    if let Some(cursor) = query.cursor.as_deref().filter(|c| !c.is_empty()) {
        if let Some(pos) = ops.iter().position(|o| o.id == cursor) {
            ops.drain(..=pos);
        }
    }
    ops.truncate(limit);
    let cursor = ops.last().map(|o| o.id.clone()).unwrap_or_default();
    ok(json!({ "operations": ops_json(&ops), "pagination": {"cursor": cursor} }))
}

async fn get_operation(
    State(app): State<AppState>,
    Path((project_id, operation_id)): Path<(String, String)>,
) -> ApiResult {
    let op = with_project(&app, &project_id, |p, _| {
        p.operations
            .iter()
            .find(|o| o.id == operation_id)
            .map(to_value)
            .ok_or_else(|| ApiError::not_found("operation"))
    })?;
    ok(json!({ "operation": op }))
}

// ---------------------------------------------------------------- connection URI

#[derive(Deserialize)]
struct ConnectionUriQuery {
    branch_id: Option<String>,
    endpoint_id: Option<String>,
    database_name: Option<String>,
    role_name: Option<String>,
    pooled: Option<String>,
}

async fn connection_uri(
    State(app): State<AppState>,
    Path(project_id): Path<String>,
    Query(query): Query<ConnectionUriQuery>,
) -> ApiResult {
    let database_name = query
        .database_name
        .ok_or_else(|| ApiError::bad_request("database_name is required"))?;
    let role_name = query
        .role_name
        .ok_or_else(|| ApiError::bad_request("role_name is required"))?;
    let pooled = match query.pooled.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "pooled must be true or false, got \"{other}\""
            )))
        }
    };
    let uri = with_project(&app, &project_id, |p, _| {
        let branch = match &query.branch_id {
            Some(id) => p.branch(id).ok_or_else(|| ApiError::not_found("branch"))?,
            None => p
                .default_branch()
                .ok_or_else(|| ApiError::not_found("branch"))?,
        };
        let endpoint = match &query.endpoint_id {
            Some(id) => p
                .endpoint(id)
                .filter(|e| e.branch_id == branch.id)
                .ok_or_else(|| ApiError::not_found("endpoint"))?,
            None => p
                .read_write_endpoint(&branch.id)
                .ok_or_else(|| ApiError::not_found("read_write endpoint"))?,
        };
        let role = p
            .role(&branch.id, &role_name)
            .ok_or_else(|| ApiError::not_found("role"))?;
        p.database(&branch.id, &database_name)
            .ok_or_else(|| ApiError::not_found("database"))?;
        let password = role
            .password
            .clone()
            .ok_or_else(|| ApiError::unprocessable("the role cannot log in (no password)"))?;
        let host = if pooled {
            pooler_host(&app, &endpoint.id)
        } else {
            endpoint_host(&app, &endpoint.id)
        };
        Ok(uri(&host, &role.name, &password, &database_name))
    })?;
    ok(json!({ "uri": uri }))
}

// ---------------------------------------------------------------- branches

async fn list_branches(State(app): State<AppState>, Path(project_id): Path<String>) -> ApiResult {
    let branches = with_project(&app, &project_id, |p, _| Ok(to_value(&p.branches)))?;
    ok(json!({ "branches": branches, "annotations": {} }))
}

#[derive(Deserialize, Default)]
struct CreateBranchRequest {
    branch: Option<CreateBranch>,
    endpoints: Option<Vec<EndpointOptions>>,
}

#[derive(Deserialize, Default)]
struct CreateBranch {
    parent_id: Option<String>,
    name: Option<String>,
    parent_lsn: Option<String>,
    parent_timestamp: Option<String>,
    protected: Option<bool>,
    init_source: Option<String>,
    expires_at: Option<String>,
}

fn valid_lsn(lsn: &str) -> bool {
    ogel_backend_native::branches::parse_lsn(lsn).is_some()
}

fn valid_timestamp(at: &str) -> bool {
    humantime::parse_rfc3339_weak(at.trim().trim_end_matches('Z').trim_end_matches("+00:00"))
        .is_ok()
}

async fn create_branch(
    State(app): State<AppState>,
    Path(project_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: CreateBranchRequest = parse(&body, true)?;
    let spec = request.branch.unwrap_or_default();
    let endpoint_specs = request.endpoints.unwrap_or_default();
    if spec.parent_lsn.is_some() && spec.parent_timestamp.is_some() {
        return Err(ApiError::bad_request(
            "specify at most one of parent_lsn and parent_timestamp",
        ));
    }
    let point = match (&spec.parent_lsn, &spec.parent_timestamp) {
        (Some(lsn), _) if !valid_lsn(lsn) => {
            return Err(ApiError::bad_request(format!(
                "invalid parent_lsn \"{lsn}\""
            )))
        }
        (Some(lsn), _) => BranchPoint::Lsn { lsn: lsn.clone() },
        (_, Some(at)) if !valid_timestamp(at) => {
            return Err(ApiError::bad_request(format!(
                "invalid parent_timestamp \"{at}\" (RFC 3339, e.g. 2024-02-26T12:00:00Z)"
            )))
        }
        (_, Some(at)) => BranchPoint::Timestamp { at: at.clone() },
        _ => BranchPoint::Now,
    };
    match spec.init_source.as_deref() {
        None | Some("parent-data") => {}
        Some("schema-only") => {
            return Err(ApiError::unprocessable(
                "init_source schema-only is not supported by the emulator",
            ))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid init_source \"{other}\""
            )))
        }
    }
    if let Some(name) = &spec.name {
        if name.is_empty() || name.len() > 256 {
            return Err(ApiError::bad_request(
                "branch name must be 1 to 256 characters",
            ));
        }
    }
    if endpoint_specs
        .iter()
        .filter(|e| e.kind.as_deref() == Some("read_write"))
        .count()
        > 1
    {
        return Err(ApiError::bad_request(
            "a branch can have only one read_write endpoint",
        ));
    }
    let (response, jobs) = mutate_project(&app, &project_id, |p, next_id| {
        let parent = match spec.parent_id.as_deref().filter(|s| !s.is_empty()) {
            Some(id) => p
                .branch(id)
                .ok_or_else(|| ApiError::not_found("parent branch"))?,
            None => p
                .default_branch()
                .ok_or_else(|| ApiError::not_found("default branch"))?,
        }
        .clone();
        if let Some(name) = &spec.name {
            if p.branches.iter().any(|b| b.name == *name) {
                return Err(ApiError::conflict(format!(
                    "branch \"{name}\" already exists"
                )));
            }
        }
        let id = model::generate_id("br");
        let mut branch = new_branch(
            &project_id,
            id.clone(),
            spec.name.clone().unwrap_or_else(|| id.clone()),
            Some(parent.id.clone()),
            spec.parent_lsn.clone(),
            spec.parent_timestamp.clone(),
            false,
            id.clone(),
        );
        branch.protected = spec.protected.unwrap_or(false);
        branch.expires_at = spec.expires_at.clone();
        let mut endpoints = Vec::new();
        for options in &endpoint_specs {
            let endpoint = new_endpoint(&app, p, &id, options)?;
            endpoints.push(endpoint);
        }
        // A branch is a clone: its parent's roles (and passwords) and databases.
        let now = model::now();
        let roles: Vec<Role> = p
            .roles
            .iter()
            .filter(|r| r.branch_id == parent.id)
            .map(|r| Role {
                branch_id: id.clone(),
                created_at: now.clone(),
                updated_at: now.clone(),
                ..r.clone()
            })
            .collect();
        let databases: Vec<Database> = p
            .databases
            .iter()
            .filter(|d| d.branch_id == parent.id)
            .map(|d| {
                *next_id += 1;
                Database {
                    id: *next_id,
                    branch_id: id.clone(),
                    created_at: now.clone(),
                    updated_at: now.clone(),
                    ..d.clone()
                }
            })
            .collect();
        let mut ops = vec![(
            Operation::new(&project_id, Some(&id), None, "create_branch"),
            Step::CreateBranch {
                branch_id: id.clone(),
                parent_branch_id: parent.id.clone(),
                point: point.clone(),
            },
        )];
        for endpoint in endpoints.iter().filter(|e| !e.disabled) {
            ops.push(start_op(&project_id, endpoint));
        }
        p.branches.push(branch.clone());
        p.endpoints.extend(endpoints.iter().cloned());
        p.roles.extend(roles.iter().cloned());
        p.databases.extend(databases.iter().cloned());
        let (ops, jobs) = Core::record(p, ops);
        let mut response = json!({
            "branch": to_value(&branch),
            "endpoints": to_value(&endpoints),
            "operations": ops_json(&ops),
            "roles": roles.iter().map(|r| to_value(&r.public())).collect::<Vec<_>>(),
            "databases": to_value(&databases),
        });
        if let (Some(endpoint), [role], [db]) = (
            endpoints.iter().find(|e| e.kind == "read_write"),
            roles.as_slice(),
            databases.as_slice(),
        ) {
            response["connection_uris"] = json!([connection_details(&app, &endpoint.id, role, db)]);
        }
        Ok((response, jobs))
    })?;
    app.core.schedule(&project_id, jobs);
    created(response)
}

async fn get_branch(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
) -> ApiResult {
    let branch = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .map(to_value)
            .ok_or_else(|| ApiError::not_found("branch"))
    })?;
    ok(json!({ "branch": branch }))
}

#[derive(Deserialize)]
struct UpdateBranchRequest {
    branch: Option<UpdateBranch>,
}

#[derive(Deserialize)]
struct UpdateBranch {
    name: Option<String>,
    protected: Option<bool>,
    expires_at: Option<Option<String>>,
}

async fn update_branch(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: UpdateBranchRequest = parse(&body, false)?;
    let update = request
        .branch
        .ok_or_else(|| ApiError::bad_request("`branch` is required"))?;
    let branch = mutate_project(&app, &project_id, |p, _| {
        if let Some(name) = &update.name {
            if name.is_empty() || name.len() > 256 {
                return Err(ApiError::bad_request(
                    "branch name must be 1 to 256 characters",
                ));
            }
            if p.branches
                .iter()
                .any(|b| b.name == *name && b.id != branch_id)
            {
                return Err(ApiError::conflict(format!(
                    "branch \"{name}\" already exists"
                )));
            }
        }
        let branch = p
            .branch_mut(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        if let Some(name) = update.name {
            branch.name = name;
        }
        if let Some(protected) = update.protected {
            branch.protected = protected;
        }
        if let Some(expires) = update.expires_at {
            branch.expires_at = expires;
        }
        branch.updated_at = model::now();
        Ok(to_value(&*branch))
    })?;
    ok(json!({ "branch": branch, "operations": [] }))
}

async fn delete_branch(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
) -> ApiResult {
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        let branch = p
            .branch(&branch_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("branch"))?;
        if branch.default {
            return Err(ApiError::unprocessable(
                "cannot delete the project's default branch",
            ));
        }
        if p.branches
            .iter()
            .any(|b| b.parent_id.as_deref() == Some(&branch_id))
        {
            return Err(ApiError::unprocessable(
                "cannot delete a branch that has child branches; delete them first",
            ));
        }
        let mut ops: Vec<(Operation, Step)> = p
            .endpoints
            .iter()
            .filter(|e| e.branch_id == branch_id && e.current_state == "active")
            .map(|e| suspend_op(&project_id, e))
            .collect();
        ops.push((
            Operation::new(&project_id, Some(&branch_id), None, "delete_timeline"),
            Step::DeleteTimeline {
                native_branch: branch.native_branch.clone(),
            },
        ));
        p.branches.retain(|b| b.id != branch_id);
        p.endpoints.retain(|e| e.branch_id != branch_id);
        p.roles.retain(|r| r.branch_id != branch_id);
        p.databases.retain(|d| d.branch_id != branch_id);
        let (ops, jobs) = Core::record(p, ops);
        Ok((
            json!({ "branch": to_value(&branch), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

async fn list_branch_endpoints(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
) -> ApiResult {
    let endpoints = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        let list: Vec<&Endpoint> = p
            .endpoints
            .iter()
            .filter(|e| e.branch_id == branch_id)
            .collect();
        Ok(to_value(&list))
    })?;
    ok(json!({ "endpoints": endpoints }))
}

// ---------------------------------------------------------------- roles

async fn list_roles(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
) -> ApiResult {
    let roles = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        Ok(p.roles
            .iter()
            .filter(|r| r.branch_id == branch_id)
            .map(|r| to_value(&r.public()))
            .collect::<Vec<_>>())
    })?;
    ok(json!({ "roles": roles }))
}

#[derive(Deserialize)]
struct CreateRoleRequest {
    role: Option<CreateRole>,
}

#[derive(Deserialize)]
struct CreateRole {
    name: Option<String>,
    no_login: Option<bool>,
}

async fn create_role(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: CreateRoleRequest = parse(&body, false)?;
    let spec = request
        .role
        .ok_or_else(|| ApiError::bad_request("`role` is required"))?;
    let name = spec
        .name
        .ok_or_else(|| ApiError::bad_request("role name is required"))?;
    check_name("role", &name)?;
    if name == NEON_SUPERUSER || name.starts_with("pg_") || name == "ogel_admin" {
        return Err(ApiError::bad_request(format!(
            "role name \"{name}\" is reserved"
        )));
    }
    let no_login = spec.no_login.unwrap_or(false);
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        if p.role(&branch_id, &name).is_some() {
            return Err(ApiError::conflict(format!(
                "role \"{name}\" already exists"
            )));
        }
        let now = model::now();
        let password = (!no_login).then(model::generate_password);
        let role = Role {
            branch_id: branch_id.clone(),
            name: name.clone(),
            password: password.clone(),
            protected: false,
            authentication_method: if no_login { "no_login" } else { "password" }.into(),
            created_at: now.clone(),
            updated_at: now,
        };
        let sql = match &password {
            Some(pw) => format!(
                "CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD '{}' IN ROLE {}",
                quote_ident(&name),
                DataPlane::verifier(pw),
                quote_ident(NEON_SUPERUSER)
            ),
            None => format!(
                "CREATE ROLE {} NOLOGIN IN ROLE {}",
                quote_ident(&name),
                quote_ident(NEON_SUPERUSER)
            ),
        };
        let op = config_op(
            p,
            &branch_id,
            vec![sql],
            Undo::RemoveRole {
                branch_id: branch_id.clone(),
                name: name.clone(),
            },
        );
        p.roles.push(role.clone());
        let (ops, jobs) = Core::record(p, vec![op]);
        Ok((
            json!({ "role": to_value(&role), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    created(response)
}

async fn get_role(
    State(app): State<AppState>,
    Path((project_id, branch_id, role_name)): Path<(String, String, String)>,
) -> ApiResult {
    let role = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        p.role(&branch_id, &role_name)
            .map(|r| to_value(&r.public()))
            .ok_or_else(|| ApiError::not_found("role"))
    })?;
    ok(json!({ "role": role }))
}

async fn delete_role(
    State(app): State<AppState>,
    Path((project_id, branch_id, role_name)): Path<(String, String, String)>,
) -> ApiResult {
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        let role = p
            .role(&branch_id, &role_name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("role"))?;
        if p.databases
            .iter()
            .any(|d| d.branch_id == branch_id && d.owner_name == role_name)
        {
            return Err(ApiError::unprocessable(format!(
                "role \"{role_name}\" owns databases; delete them or change their owner first"
            )));
        }
        let op = config_op(
            p,
            &branch_id,
            vec![format!("DROP ROLE {}", quote_ident(&role_name))],
            Undo::RestoreRole(role.clone()),
        );
        p.roles
            .retain(|r| !(r.branch_id == branch_id && r.name == role_name));
        let (ops, jobs) = Core::record(p, vec![op]);
        Ok((
            json!({ "role": to_value(&role.public()), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

async fn reveal_password(
    State(app): State<AppState>,
    Path((project_id, branch_id, role_name)): Path<(String, String, String)>,
) -> ApiResult {
    let password = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        if !p.project.store_passwords {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "passwords are not stored for this project",
            ));
        }
        let role = p
            .role(&branch_id, &role_name)
            .ok_or_else(|| ApiError::not_found("role"))?;
        role.password
            .clone()
            .ok_or_else(|| ApiError::not_found("role password"))
    })?;
    ok(json!({ "password": password }))
}

async fn reset_password(
    State(app): State<AppState>,
    Path((project_id, branch_id, role_name)): Path<(String, String, String)>,
) -> ApiResult {
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        let old = p
            .role(&branch_id, &role_name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("role"))?;
        if old.authentication_method == "no_login" {
            return Err(ApiError::unprocessable("the role cannot log in"));
        }
        let password = model::generate_password();
        let op = config_op(
            p,
            &branch_id,
            vec![format!(
                "ALTER ROLE {} PASSWORD '{}'",
                quote_ident(&role_name),
                DataPlane::verifier(&password)
            )],
            Undo::RestoreRole(old.clone()),
        );
        let role = Role {
            password: Some(password),
            updated_at: model::now(),
            ..old
        };
        p.roles
            .retain(|r| !(r.branch_id == branch_id && r.name == role_name));
        p.roles.push(role.clone());
        let (ops, jobs) = Core::record(p, vec![op]);
        Ok((
            json!({ "role": to_value(&role), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

// ---------------------------------------------------------------- databases

async fn list_databases(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
) -> ApiResult {
    let databases = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        let list: Vec<&Database> = p
            .databases
            .iter()
            .filter(|d| d.branch_id == branch_id)
            .collect();
        Ok(to_value(&list))
    })?;
    ok(json!({ "databases": databases }))
}

#[derive(Deserialize)]
struct CreateDatabaseRequest {
    database: Option<CreateDatabase>,
}

#[derive(Deserialize)]
struct CreateDatabase {
    name: Option<String>,
    owner_name: Option<String>,
}

async fn create_database(
    State(app): State<AppState>,
    Path((project_id, branch_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: CreateDatabaseRequest = parse(&body, false)?;
    let spec = request
        .database
        .ok_or_else(|| ApiError::bad_request("`database` is required"))?;
    let name = spec
        .name
        .ok_or_else(|| ApiError::bad_request("database name is required"))?;
    let owner = spec
        .owner_name
        .ok_or_else(|| ApiError::bad_request("owner_name is required"))?;
    check_name("database", &name)?;
    if matches!(name.as_str(), "postgres" | "template0" | "template1") || name == project_id {
        return Err(ApiError::bad_request(format!(
            "database name \"{name}\" is reserved"
        )));
    }
    let (response, jobs) = mutate_project(&app, &project_id, |p, next_id| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        if p.role(&branch_id, &owner).is_none() {
            return Err(ApiError::bad_request(format!(
                "role \"{owner}\" does not exist"
            )));
        }
        if p.database(&branch_id, &name).is_some() {
            return Err(ApiError::conflict(format!(
                "database \"{name}\" already exists"
            )));
        }
        let now = model::now();
        *next_id += 1;
        let database = Database {
            id: *next_id,
            branch_id: branch_id.clone(),
            name: name.clone(),
            owner_name: owner.clone(),
            created_at: now.clone(),
            updated_at: now,
        };
        let op = config_op(
            p,
            &branch_id,
            vec![format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&name),
                quote_ident(&owner)
            )],
            Undo::RemoveDatabase {
                branch_id: branch_id.clone(),
                name: name.clone(),
            },
        );
        p.databases.push(database.clone());
        let (ops, jobs) = Core::record(p, vec![op]);
        Ok((
            json!({ "database": to_value(&database), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    created(response)
}

async fn get_database(
    State(app): State<AppState>,
    Path((project_id, branch_id, database_name)): Path<(String, String, String)>,
) -> ApiResult {
    let database = with_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        p.database(&branch_id, &database_name)
            .map(to_value)
            .ok_or_else(|| ApiError::not_found("database"))
    })?;
    ok(json!({ "database": database }))
}

async fn delete_database(
    State(app): State<AppState>,
    Path((project_id, branch_id, database_name)): Path<(String, String, String)>,
) -> ApiResult {
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        let database = p
            .database(&branch_id, &database_name)
            .cloned()
            .ok_or_else(|| ApiError::not_found("database"))?;
        let op = config_op(
            p,
            &branch_id,
            vec![format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_ident(&database_name)
            )],
            Undo::RestoreDatabase(database.clone()),
        );
        p.databases
            .retain(|d| !(d.branch_id == branch_id && d.name == database_name));
        let (ops, jobs) = Core::record(p, vec![op]);
        Ok((
            json!({ "database": to_value(&database), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

// ---------------------------------------------------------------- endpoints

async fn list_endpoints(State(app): State<AppState>, Path(project_id): Path<String>) -> ApiResult {
    let endpoints = with_project(&app, &project_id, |p, _| Ok(to_value(&p.endpoints)))?;
    ok(json!({ "endpoints": endpoints }))
}

#[derive(Deserialize)]
struct EndpointRequest {
    endpoint: Option<EndpointOptions>,
}

async fn create_endpoint(
    State(app): State<AppState>,
    Path(project_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let request: EndpointRequest = parse(&body, false)?;
    let options = request
        .endpoint
        .ok_or_else(|| ApiError::bad_request("`endpoint` is required"))?;
    let branch_id = options
        .branch_id
        .clone()
        .ok_or_else(|| ApiError::bad_request("branch_id is required"))?;
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        p.branch(&branch_id)
            .ok_or_else(|| ApiError::not_found("branch"))?;
        if let Some(region) = &options.region_id {
            if *region != p.project.region_id {
                return Err(ApiError::bad_request(
                    "only the project's region_id is permitted",
                ));
            }
        }
        let endpoint = new_endpoint(&app, p, &branch_id, &options)?;
        let mut ops = Vec::new();
        let mut shown = endpoint.clone();
        if endpoint.disabled {
            shown.current_state = "idle".into();
            shown.pending_state = None;
        } else {
            ops.push(start_op(&project_id, &endpoint));
        }
        p.endpoints.push(shown.clone());
        let (ops, jobs) = Core::record(p, ops);
        Ok((
            json!({ "endpoint": to_value(&shown), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    created(response)
}

async fn get_endpoint(
    State(app): State<AppState>,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> ApiResult {
    let endpoint = with_project(&app, &project_id, |p, _| {
        p.endpoint(&endpoint_id)
            .map(to_value)
            .ok_or_else(|| ApiError::not_found("endpoint"))
    })?;
    ok(json!({ "endpoint": endpoint }))
}

async fn update_endpoint(
    State(app): State<AppState>,
    Path((project_id, endpoint_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let request: EndpointRequest = parse(&body, false)?;
    let update = request
        .endpoint
        .ok_or_else(|| ApiError::bad_request("`endpoint` is required"))?;
    if let Some(secs) = update.suspend_timeout_seconds {
        check_suspend_timeout(secs)?;
    }
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        let current = p
            .endpoint(&endpoint_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        if let Some(branch) = &update.branch_id {
            if *branch != current.branch_id {
                return Err(ApiError::unprocessable(
                    "moving an endpoint to another branch is not supported by the emulator",
                ));
            }
        }
        if let Some(kind) = &update.kind {
            if *kind != current.kind {
                return Err(ApiError::bad_request("the endpoint type cannot be changed"));
            }
        }
        let min = update
            .autoscaling_limit_min_cu
            .unwrap_or(current.autoscaling_limit_min_cu);
        let max = update
            .autoscaling_limit_max_cu
            .unwrap_or(current.autoscaling_limit_max_cu);
        if min < 0.25 || max < min {
            return Err(ApiError::bad_request(
                "autoscaling limits must be at least 0.25 and min <= max",
            ));
        }
        let project_id = p.project.id.clone();
        let Some(ep) = p.endpoint_mut(&endpoint_id) else {
            return Err(ApiError::not_found("endpoint"));
        };
        ep.autoscaling_limit_min_cu = min;
        ep.autoscaling_limit_max_cu = max;
        if let Some(secs) = update.suspend_timeout_seconds {
            ep.suspend_timeout_seconds = secs;
        }
        if let Some(name) = &update.name {
            ep.name = Some(name.clone());
        }
        if let Some(settings) = &update.settings {
            ep.settings = settings.clone();
        }
        if let Some(provisioner) = &update.provisioner {
            ep.provisioner = provisioner.clone();
        }
        if let Some(pooler) = update.pooler_enabled {
            ep.pooler_enabled = pooler;
        }
        if let Some(pw) = update.passwordless_access {
            ep.passwordless_access = pw;
        }
        let mut ops = Vec::new();
        if let Some(disabled) = update.disabled {
            ep.disabled = disabled;
        }
        ep.updated_at = model::now();
        if ep.disabled && ep.current_state == "active" {
            // Disabling schedules a suspend, as on Neon.
            ep.pending_state = Some("idle".into());
            ops.push(suspend_op(&project_id, ep));
        } else if ep.current_state == "active" {
            ops.push((
                Operation::new(
                    &project_id,
                    Some(&ep.branch_id),
                    Some(&ep.id),
                    "apply_config",
                ),
                Step::ApplyConfig {
                    branch_id: ep.branch_id.clone(),
                    sql: Vec::new(),
                    undo: Undo::Nothing,
                },
            ));
        }
        let shown = ep.clone();
        let (ops, jobs) = Core::record(p, ops);
        Ok((
            json!({ "endpoint": to_value(&shown), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

async fn delete_endpoint(
    State(app): State<AppState>,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> ApiResult {
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        let endpoint = p
            .endpoint(&endpoint_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        let mut ops = Vec::new();
        if endpoint.current_state == "active" {
            ops.push(suspend_op(&project_id, &endpoint));
        }
        p.endpoints.retain(|e| e.id != endpoint_id);
        let (ops, jobs) = Core::record(p, ops);
        Ok((
            json!({ "endpoint": to_value(&endpoint), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

/// `start`, `suspend` or `restart` of an endpoint.
async fn endpoint_action(
    app: AppState,
    project_id: String,
    endpoint_id: String,
    action: &str,
) -> ApiResult {
    let (response, jobs) = mutate_project(&app, &project_id, |p, _| {
        let Some(ep) = p.endpoint_mut(&endpoint_id) else {
            return Err(ApiError::not_found("endpoint"));
        };
        if ep.disabled && action != "suspend" {
            return Err(ApiError::unprocessable("the endpoint is disabled"));
        }
        let ops = match action {
            "start" => {
                ep.pending_state = Some("active".into());
                vec![start_op(&project_id, ep)]
            }
            "suspend" => {
                ep.pending_state = Some("idle".into());
                vec![suspend_op(&project_id, ep)]
            }
            _ => {
                ep.pending_state = Some("active".into());
                vec![suspend_op(&project_id, ep), start_op(&project_id, ep)]
            }
        };
        let shown = ep.clone();
        let (ops, jobs) = Core::record(p, ops);
        Ok((
            json!({ "endpoint": to_value(&shown), "operations": ops_json(&ops) }),
            jobs,
        ))
    })?;
    app.core.schedule(&project_id, jobs);
    ok(response)
}

async fn start_endpoint(
    State(app): State<AppState>,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> ApiResult {
    endpoint_action(app, project_id, endpoint_id, "start").await
}

async fn suspend_endpoint(
    State(app): State<AppState>,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> ApiResult {
    endpoint_action(app, project_id, endpoint_id, "suspend").await
}

async fn restart_endpoint(
    State(app): State<AppState>,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> ApiResult {
    endpoint_action(app, project_id, endpoint_id, "restart").await
}
