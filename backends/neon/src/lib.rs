//! `neon`: the OgelBase backend whose databases live in Neon
//! (<https://neon.tech>), driven through the Neon API v2. It owns the
//! mapping between OgelBase's databases, branches and computes and Neon's
//! projects, branches and endpoints, and implements the SDK's [`Backend`]
//! with it. (`config` owns the configuration section, `api` the HTTP
//! client with its retries and operation polling, `readonly` the read-only
//! role.)
//!
//! # Mapping
//!
//! | OgelBase | Neon |
//! |---|---|
//! | database `db` (owner role `DatabaseSpec.owner`) | project `ogel-<db>` (`project_prefix`), created with its default branch `main`, role `owner` and database `db` (`project.branch.{name, role_name, database_name}`) |
//! | branch `main` (compute `db`) | the project's default branch and its `read_write` endpoint |
//! | branch `dev` (compute `db@dev`) | a Neon branch named `dev` (copy-on-write) with a `read_write` endpoint |
//! | branch at now / LSN / time | `parent_id` + nothing / `parent_lsn` / `parent_timestamp` |
//! | credentials | the owner role and its password (`reveal_password`) |
//! | read-only credentials | role `ogel_readonly` made over SQL by the owner (`GRANT pg_read_all_data`), password derived from the owner's ([`readonly`]); `None` if that fails or `read_only_role = false` |
//! | compute address | the endpoint's `host` is the TLS server name (SNI); TCP to `host:5432` unless `endpoint_overrides` maps it |
//! | suspend / wake | `POST …/endpoints/{id}/suspend` / `…/start` (Neon also wakes a suspended endpoint on connect) |
//! | compute state | the endpoint's `current_state` and `pending_state` |
//!
//! Nothing is stored locally: every id is found again through the API
//! (projects by name, branches by name, the branch's `read_write`
//! endpoint, the database's owner from the branch's databases), so the
//! state survives a gateway restart; lookups are cached in memory and
//! forgotten when Neon says 404. Project names must therefore be unique
//! in the Neon account for `project_prefix` (two gateways sharing one
//! account need different prefixes).
//!
//! Every mutating call waits until its operations end (`finished`), so a
//! call returns once its effect is real. A create that fails deletes what
//! it made (the project, or the branch), so no half-made project remains.
//! `reset_branch` deletes the branch and makes it again from its parent at
//! now (the endpoint, and so the compute's host and generation, changes).
//! Snapshots are not offered (`Capabilities::snapshots = false`).
//!
//! # Configuration (`[backends.neon]`)
//!
//! `api_key` (else `NEON_API_KEY`), `api_url` (default
//! `https://console.neon.tech/api/v2`), `project_prefix` (`ogel-`),
//! `region_id`, `pg_version`, `org_id`, `suspend_timeout_seconds` (Neon's
//! own autosuspend of our endpoints), `endpoint_overrides` (host or
//! `*.<suffix>` → `host:port`), `ca_file` (PEM), `retry_budget_secs` (60),
//! `operation_timeout_secs` (600), `request_timeout_secs` (30),
//! `read_only_role` (true). Unknown keys
//! are refused. The API key is never logged, shown by `describe()`, put in
//! an error or printed by `Debug`.

#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod config;
pub mod readonly;

use api::{ApiError, NeonApi};
use config::{KeySource, Settings, API_KEY_ENV};
use ogel_plugin_kit::url::percent_encode as pct;
use ogel_plugin_sdk::{
    Backend, BackendError, BackendErrorKind, BranchPoint, BranchSpec, Branching, Capabilities,
    ComputeEndpoint, ComputeName, ComputeState, ComputeStatus, ComputeTls, Credentials,
    DatabaseSpec,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

ogel_plugin_sdk::export_backend!("neon", NeonBackend::from_config);

/// The name of the default branch, ours and the one we give Neon's.
const MAIN: &str = "main";

/// A Neon project, as listed.
#[derive(Clone, Debug, Deserialize)]
struct Project {
    id: String,
    name: String,
}

/// A Neon branch.
#[derive(Clone, Debug, Deserialize)]
struct Branch {
    id: String,
    name: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    default: bool,
}

/// A Neon compute endpoint.
#[derive(Clone, Debug, Deserialize)]
struct Endpoint {
    id: String,
    host: String,
    #[serde(rename = "type")]
    kind: String,
    current_state: String,
    #[serde(default)]
    pending_state: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// A database inside a Neon branch.
#[derive(Clone, Debug, Deserialize)]
struct Database {
    name: String,
    owner_name: String,
}

/// Where a compute lives in Neon (cached; found again after a 404).
#[derive(Clone, Debug)]
struct Target {
    project_id: String,
    branch_id: String,
    database: String,
    owner: String,
}

fn field<T: DeserializeOwned>(value: &Value, key: &str, what: &str) -> Result<T, ApiError> {
    serde_json::from_value(value[key].clone())
        .map_err(|e| ApiError::Protocol(format!("{what}: `{key}` is missing or malformed ({e})")))
}

fn find_branch<'a>(branches: &'a [Branch], name: &str) -> Option<&'a Branch> {
    if name == MAIN {
        branches
            .iter()
            .find(|b| b.default)
            .or_else(|| branches.iter().find(|b| b.name == MAIN))
    } else {
        branches.iter().find(|b| b.name == name && !b.default)
    }
}

fn unix_of(rfc3339: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339(rfc3339)
        .or_else(|_| humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z')))
        .ok()?;
    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// The compute state of an endpoint.
fn state_of(endpoint: &Endpoint) -> ComputeState {
    match (
        endpoint.current_state.as_str(),
        endpoint.pending_state.as_deref(),
    ) {
        ("active", Some("idle")) => ComputeState::Draining,
        ("active", _) => ComputeState::Running,
        ("init", _) | (_, Some("active")) => ComputeState::Starting,
        _ => ComputeState::Suspended,
    }
}

/// The Neon backend.
pub struct NeonBackend {
    api: NeonApi,
    settings: Settings,
    /// Database → project id.
    projects: Mutex<HashMap<String, String>>,
    /// Compute → where it lives.
    targets: Mutex<HashMap<ComputeName, Target>>,
    /// (project, branch, role) → password.
    passwords: Mutex<HashMap<(String, String, String), String>>,
    /// Compute → (endpoint id, generation).
    generations: Mutex<HashMap<ComputeName, (String, u64)>>,
    next_generation: AtomicU64,
    /// (project, branch, read-only password) → whether the role is there.
    read_only: Mutex<HashMap<(String, String, String), bool>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl NeonBackend {
    /// The plugin constructor: `config` is the `[backends.neon]` section as
    /// JSON. Makes no request.
    pub fn from_config(config: Value) -> Result<Self, BackendError> {
        let settings = Settings::from_json(config, std::env::var(API_KEY_ENV).ok())?;
        Self::new(settings)
    }

    /// Builds the backend from checked settings.
    pub fn new(settings: Settings) -> Result<Self, BackendError> {
        let api = NeonApi::new(&settings)?;
        let first_generation = ogel_plugin_kit::time::unix_now().max(1);
        Ok(NeonBackend {
            api,
            settings,
            projects: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            passwords: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(first_generation),
            read_only: Mutex::new(HashMap::new()),
        })
    }

    /// The Neon project name of database `db`.
    pub fn project_name(&self, db: &str) -> String {
        format!("{}{db}", self.settings.project_prefix)
    }

    /// Every project whose name contains `search`.
    async fn list_projects(&self, search: &str) -> Result<Vec<Project>, ApiError> {
        const LIMIT: usize = 400;
        let mut all: Vec<Project> = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut path = format!("/projects?limit={LIMIT}&search={}", pct(search));
            if let Some(org) = &self.settings.org_id {
                path.push_str(&format!("&org_id={}", pct(org)));
            }
            if !cursor.is_empty() {
                path.push_str(&format!("&cursor={}", pct(&cursor)));
            }
            let body = self.api.get(&path).await?;
            let page: Vec<Project> = field(&body, "projects", "list projects")?;
            let n = page.len();
            all.extend(page);
            let next = body["pagination"]["cursor"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if n < LIMIT || next.is_empty() || next == cursor {
                return Ok(all);
            }
            cursor = next;
        }
    }

    /// The project of database `db`, if there is one.
    async fn find_project(&self, db: &str) -> Result<Option<String>, ApiError> {
        if let Some(id) = lock(&self.projects).get(db) {
            return Ok(Some(id.clone()));
        }
        let name = self.project_name(db);
        let matches: Vec<Project> = self
            .list_projects(&name)
            .await?
            .into_iter()
            .filter(|p| p.name == name)
            .collect();
        match matches.as_slice() {
            [] => Ok(None),
            [one] => {
                lock(&self.projects).insert(db.to_string(), one.id.clone());
                Ok(Some(one.id.clone()))
            }
            many => Err(ApiError::Conflict(format!(
                "{} Neon projects are named {name} ({}); delete the extra ones or use another project_prefix",
                many.len(),
                many.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    async fn project_id(&self, db: &str) -> Result<String, BackendError> {
        self.find_project(db).await?.ok_or_else(|| {
            BackendError::not_found(format!(
                "database {db} does not exist in Neon (no project named {})",
                self.project_name(db)
            ))
        })
    }

    async fn branches(&self, project_id: &str) -> Result<Vec<Branch>, ApiError> {
        let body = self
            .api
            .get(&format!("/projects/{project_id}/branches"))
            .await?;
        field(&body, "branches", "list branches")
    }

    /// Forgets what is cached about database `db` and its branches.
    fn forget_database(&self, db: &str) {
        lock(&self.projects).remove(db);
        lock(&self.targets).retain(|k, _| k.database != db);
        lock(&self.generations).retain(|k, _| k.database != db);
    }

    fn forget_compute(&self, compute: &ComputeName) {
        lock(&self.targets).remove(compute);
    }

    /// Where compute `name` lives.
    async fn target(&self, name: &ComputeName) -> Result<Target, BackendError> {
        if let Some(t) = lock(&self.targets).get(name) {
            return Ok(t.clone());
        }
        let (db, branch) = (name.database.as_str(), name.branch.as_str());
        let project_id = self.project_id(db).await?;
        let branches = match self.branches(&project_id).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                self.forget_database(db);
                return Err(BackendError::not_found(format!(
                    "database {db} does not exist in Neon (its project is gone)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let b = find_branch(&branches, branch).ok_or_else(|| {
            BackendError::not_found(format!("branch {branch} of database {db} does not exist"))
        })?;
        let body = self
            .api
            .get(&format!(
                "/projects/{project_id}/branches/{}/databases",
                b.id
            ))
            .await?;
        let databases: Vec<Database> = field(&body, "databases", "list databases")?;
        let database = databases
            .into_iter()
            .find(|d| d.name == db)
            .ok_or_else(|| {
                BackendError::not_found(format!(
                    "Neon project {project_id} has no database named {db} on branch {branch}"
                ))
            })?;
        let target = Target {
            project_id,
            branch_id: b.id.clone(),
            database: database.name,
            owner: database.owner_name,
        };
        lock(&self.targets).insert(name.clone(), target.clone());
        Ok(target)
    }

    /// The branch's read-write endpoint; made if it has none.
    async fn endpoint(
        &self,
        name: &ComputeName,
        target: &Target,
    ) -> Result<Endpoint, BackendError> {
        let body = match self
            .api
            .get(&format!(
                "/projects/{}/branches/{}/endpoints",
                target.project_id, target.branch_id
            ))
            .await
        {
            Ok(body) => body,
            Err(e) if e.is_not_found() => {
                self.forget_compute(name);
                return Err(BackendError::not_found(format!(
                    "{name} no longer exists in Neon"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let endpoints: Vec<Endpoint> = field(&body, "endpoints", "list endpoints")?;
        // An enabled one first (a disabled endpoint cannot be started).
        if let Some(ep) = endpoints
            .into_iter()
            .filter(|e| e.kind == "read_write")
            .min_by_key(|e| e.disabled)
        {
            return Ok(ep);
        }
        tracing::info!(
            compute = %name,
            "the Neon branch has no read_write endpoint; making one"
        );
        let mut endpoint = json!({"branch_id": target.branch_id, "type": "read_write"});
        if let Some(secs) = self.settings.suspend_timeout_seconds {
            endpoint["suspend_timeout_seconds"] = json!(secs);
        }
        let created = self
            .api
            .post(
                &format!("/projects/{}/endpoints", target.project_id),
                &json!({ "endpoint": endpoint }),
            )
            .await
            .map_err(|e| e.context(&format!("making an endpoint for {name}")))?;
        self.api
            .wait_operations(&target.project_id, &created)
            .await
            .map_err(|e| e.context(&format!("starting the new endpoint of {name}")))?;
        Ok(field(&created, "endpoint", "create endpoint")?)
    }

    async fn password(&self, target: &Target) -> Result<String, BackendError> {
        let key = (
            target.project_id.clone(),
            target.branch_id.clone(),
            target.owner.clone(),
        );
        if let Some(pw) = lock(&self.passwords).get(&key) {
            return Ok(pw.clone());
        }
        let body = self
            .api
            .get(&format!(
                "/projects/{}/branches/{}/roles/{}/reveal_password",
                target.project_id,
                target.branch_id,
                pct(&target.owner)
            ))
            .await
            .map_err(|e| e.context(&format!("revealing the password of role {}", target.owner)))?;
        let password: String = field(&body, "password", "reveal password")?;
        lock(&self.passwords).insert(key, password.clone());
        Ok(password)
    }

    /// The generation of compute `name` served by endpoint `endpoint_id`:
    /// a new one whenever another endpoint serves it.
    fn generation(&self, name: &ComputeName, endpoint_id: &str) -> u64 {
        let mut generations = lock(&self.generations);
        match generations.get(name) {
            Some((id, generation)) if id == endpoint_id => *generation,
            _ => {
                let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                generations.insert(name.clone(), (endpoint_id.to_string(), generation));
                generation
            }
        }
    }

    /// Deletes project `id`; a missing project is fine.
    async fn delete_project_id(&self, id: &str) -> Result<(), ApiError> {
        match self.api.delete(&format!("/projects/{id}")).await {
            Ok(body) => {
                // Neon may answer with operations (deleting the timelines).
                if let Err(e) = self.api.wait_operations(id, &body).await {
                    if !e.is_not_found() {
                        tracing::warn!(project = id, error = %e, "waiting for a project delete");
                    }
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// After a create whose outcome is unknown: deletes any project of `db`.
    async fn cleanup_project(&self, db: &str) -> String {
        lock(&self.projects).remove(db);
        match self.find_project(db).await {
            Ok(None) => "nothing was left behind".into(),
            Ok(Some(id)) => {
                lock(&self.projects).remove(db);
                match self.delete_project_id(&id).await {
                    Ok(()) => format!("the half-made project {id} was deleted"),
                    Err(e) => format!(
                        "deleting the half-made project {id} failed too ({e}); delete it in the Neon console"
                    ),
                }
            }
            Err(e) => format!(
                "whether a project {} was left behind is unknown ({e}); check the Neon console",
                self.project_name(db)
            ),
        }
    }

    /// Deletes branch `branch_id` of `project_id` and waits; a missing one is fine.
    async fn delete_branch_id(&self, project_id: &str, branch_id: &str) -> Result<(), ApiError> {
        match self
            .api
            .delete(&format!("/projects/{project_id}/branches/{branch_id}"))
            .await
        {
            Ok(body) => self.api.wait_operations(project_id, &body).await,
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// After a branch create that failed: deletes a branch named `name`, if any.
    async fn cleanup_branch(&self, project_id: &str, name: &str) -> String {
        let branches = match self.branches(project_id).await {
            Ok(b) => b,
            Err(e) => {
                return format!("whether branch {name} was left behind is unknown ({e})");
            }
        };
        match branches.iter().find(|b| b.name == name && !b.default) {
            None => "nothing was left behind".into(),
            Some(b) => match self.delete_branch_id(project_id, &b.id).await {
                Ok(()) => format!("the half-made branch {} was deleted", b.id),
                Err(e) => format!(
                    "deleting the half-made branch {} failed too ({e}); delete it in the Neon console",
                    b.id
                ),
            },
        }
    }

    /// The read-only credentials of a compute, making the role once per
    /// branch and owner password (see [`readonly`]); `None` if it cannot be
    /// made (logged once): read-only tokens are then refused.
    async fn read_only_role(
        &self,
        name: &ComputeName,
        target: &Target,
        compute: &ComputeEndpoint,
        owner_password: &str,
    ) -> Option<Credentials> {
        let password = readonly::password(owner_password, &target.database);
        let key = (
            target.project_id.clone(),
            target.branch_id.clone(),
            password.clone(),
        );
        let known = lock(&self.read_only).get(&key).copied();
        let ready = match known {
            Some(ready) => ready,
            None => {
                let ready = match readonly::ensure(compute, &password).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(compute = %name, error = %e, cause = ?std::error::Error::source(&e), "could not make the read-only role {}; read-only tokens are refused for it", readonly::ROLE);
                        false
                    }
                };
                lock(&self.read_only).insert(key, ready);
                ready
            }
        };
        ready.then(|| ogel_plugin_kit::readonly::credentials(password))
    }

    fn new_endpoint_spec(&self) -> Value {
        let mut endpoint = json!({"type": "read_write"});
        if let Some(secs) = self.settings.suspend_timeout_seconds {
            endpoint["suspend_timeout_seconds"] = json!(secs);
        }
        endpoint
    }
}

#[async_trait::async_trait]
impl Backend for NeonBackend {
    fn name(&self) -> &str {
        "neon"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            suspend: true,
            branching: Branching::CopyOnWrite,
            point_in_time: true,
            snapshots: false,
            online_snapshot: false,
            slow_branches: false,
            // Neon's storage is replicated already: no standby to promote.
            standby: false,
            remote_standby: false,
        }
    }

    fn describe(&self) -> String {
        format!(
            "neon: Neon API {} (key from {}), projects {}<database>, {} endpoint override(s), {}",
            self.api.base(),
            match self.settings.key_source {
                KeySource::Config => "`api_key`",
                KeySource::Env => API_KEY_ENV,
            },
            self.settings.project_prefix,
            self.settings.override_count(),
            if self.settings.ca_pem.is_some() {
                "endpoint certificates checked against ca_file"
            } else {
                "endpoint certificates checked against the public roots"
            }
        )
    }

    async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError> {
        let db = spec.name.as_str();
        if db.is_empty() || db.contains('@') {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!("invalid database name {db:?}"),
            ));
        }
        let name = self.project_name(db);
        if let Some(id) = self
            .find_project(db)
            .await
            .map_err(|e| e.context(&format!("looking for Neon project {name}")))?
        {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!("a Neon project named {name} already exists ({id}); delete it first or use another project_prefix"),
            ));
        }
        let mut project = json!({
            "name": name,
            "branch": {"name": MAIN, "role_name": spec.owner, "database_name": db},
        });
        if let Some(region) = &self.settings.region_id {
            project["region_id"] = json!(region);
        }
        if let Some(version) = self.settings.pg_version {
            project["pg_version"] = json!(version);
        }
        if let Some(org) = &self.settings.org_id {
            project["org_id"] = json!(org);
        }
        if let Some(secs) = self.settings.suspend_timeout_seconds {
            project["default_endpoint_settings"] = json!({ "suspend_timeout_seconds": secs });
        }
        let created = match self
            .api
            .post("/projects", &json!({ "project": project }))
            .await
        {
            Ok(created) => created,
            Err(e) => {
                let kind = e.kind();
                let cleanup = if e.is_ambiguous() {
                    self.cleanup_project(db).await
                } else {
                    "nothing was created".into()
                };
                return Err(BackendError::new(
                    kind,
                    format!("creating Neon project {name} failed: {e}; {cleanup}"),
                ));
            }
        };
        let id = match created["project"]["id"].as_str() {
            Some(id) => id.to_string(),
            None => {
                let cleanup = self.cleanup_project(db).await;
                return Err(BackendError::internal(format!(
                    "creating Neon project {name}: the answer names no project id; {cleanup}"
                )));
            }
        };
        if let Err(e) = self.api.wait_operations(&id, &created).await {
            let kind = e.kind();
            let cleanup = match self.delete_project_id(&id).await {
                Ok(()) => format!("the half-made project {id} was deleted"),
                Err(d) => format!(
                    "deleting the half-made project {id} failed too ({d}); delete it in the Neon console"
                ),
            };
            lock(&self.projects).remove(db);
            tracing::warn!(project = %id, error = %e, "creating a Neon project failed; {cleanup}");
            return Err(BackendError::new(
                kind,
                format!("Neon could not create project {name} for database {db}: {e}; {cleanup}"),
            ));
        }
        self.forget_database(db);
        lock(&self.projects).insert(db.to_string(), id.clone());
        tracing::info!(database = db, project = %id, "Neon project created");
        Ok(())
    }

    async fn delete_database(&self, name: &str) -> Result<(), BackendError> {
        let found = self
            .find_project(name)
            .await
            .map_err(|e| e.context(&format!("looking for the Neon project of {name}")))?;
        self.forget_database(name);
        let Some(id) = found else {
            return Ok(());
        };
        self.delete_project_id(&id)
            .await
            .map_err(|e| e.context(&format!("deleting Neon project {id} of database {name}")))?;
        self.forget_database(name);
        tracing::info!(database = name, project = %id, "Neon project deleted");
        Ok(())
    }

    async fn ensure_running(&self, name: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
        let target = self.target(name).await?;
        let deadline = Instant::now() + self.settings.operation_timeout;
        let endpoint = loop {
            let ep = self.endpoint(name, &target).await?;
            match (ep.current_state.as_str(), ep.pending_state.as_deref()) {
                ("active", None) => break ep,
                ("idle", None) => {
                    let body = self
                        .api
                        .post(
                            &format!("/projects/{}/endpoints/{}/start", target.project_id, ep.id),
                            &json!({}),
                        )
                        .await
                        .map_err(|e| e.context(&format!("starting the Neon endpoint of {name}")))?;
                    self.api
                        .wait_operations(&target.project_id, &body)
                        .await
                        .map_err(|e| e.context(&format!("starting the Neon endpoint of {name}")))?;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
            if Instant::now() > deadline {
                return Err(BackendError::unavailable(format!(
                    "the Neon endpoint of {name} did not become active within {} s",
                    self.settings.operation_timeout.as_secs()
                )));
            }
        };
        let password = self.password(&target).await?;
        let (host, port) = self.settings.address_of(&endpoint.host);
        let mut compute = ComputeEndpoint {
            host,
            port,
            database: target.database.clone(),
            generation: self.generation(name, &endpoint.id),
            credentials: Credentials::Password {
                user: target.owner.clone(),
                password: password.clone(),
            },
            read_only: None,
            tls: Some(ComputeTls {
                server_name: endpoint.host.clone(),
                ca_pem: self.settings.ca_pem.clone(),
            }),
        };
        if self.settings.read_only_role {
            compute.read_only = self
                .read_only_role(name, &target, &compute, &password)
                .await;
        }
        Ok(compute)
    }

    async fn suspend(&self, name: &ComputeName) -> Result<(), BackendError> {
        let target = self.target(name).await?;
        let ep = self.endpoint(name, &target).await?;
        if ep.current_state != "active" && ep.pending_state.is_none() {
            return Ok(());
        }
        let body = self
            .api
            .post(
                &format!(
                    "/projects/{}/endpoints/{}/suspend",
                    target.project_id, ep.id
                ),
                &json!({}),
            )
            .await
            .map_err(|e| e.context(&format!("suspending the Neon endpoint of {name}")))?;
        self.api
            .wait_operations(&target.project_id, &body)
            .await
            .map_err(|e| e.context(&format!("suspending the Neon endpoint of {name}")))?;
        Ok(())
    }

    async fn compute_status(&self, name: &ComputeName) -> Result<ComputeStatus, BackendError> {
        let target = self.target(name).await?;
        let ep = self.endpoint(name, &target).await?;
        let state = state_of(&ep);
        let (_, port) = self.settings.address_of(&ep.host);
        Ok(ComputeStatus {
            state,
            pid: None,
            port: Some(port),
            started_at_unix: if state == ComputeState::Running {
                ep.started_at.as_deref().and_then(unix_of)
            } else {
                None
            },
            generation: self.generation(name, &ep.id),
        })
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.api
            .get("/projects?limit=1")
            .await
            .map(|_| ())
            .map_err(|e| e.context("the Neon API does not answer"))
    }

    async fn list_databases(&self) -> Result<Vec<String>, BackendError> {
        let prefix = &self.settings.project_prefix;
        let projects = self
            .list_projects(prefix)
            .await
            .map_err(|e| e.context("listing Neon projects"))?;
        let mut names: Vec<String> = projects
            .into_iter()
            .filter_map(|p| p.name.strip_prefix(prefix.as_str()).map(str::to_string))
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn create_branch(&self, spec: &BranchSpec) -> Result<(), BackendError> {
        let db = spec.database.as_str();
        if spec.branch == MAIN || spec.branch.is_empty() || spec.branch.contains('@') {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!("invalid branch name {:?}", spec.branch),
            ));
        }
        let mut branch = json!({ "name": spec.branch });
        match &spec.point {
            BranchPoint::Now => {}
            BranchPoint::Lsn { lsn } => branch["parent_lsn"] = json!(lsn),
            BranchPoint::Timestamp { at } => branch["parent_timestamp"] = json!(at),
            BranchPoint::Snapshot { .. } => {
                return Err(BackendError::unsupported(
                    "the neon backend has no snapshots; branch from a time or an LSN instead",
                ))
            }
        }
        let project_id = self.project_id(db).await?;
        let branches = self.branches(&project_id).await?;
        if find_branch(&branches, &spec.branch).is_some() {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!("branch {} of database {db} already exists", spec.branch),
            ));
        }
        let parent = find_branch(&branches, &spec.parent).ok_or_else(|| {
            BackendError::not_found(format!(
                "branch {} of database {db} does not exist",
                spec.parent
            ))
        })?;
        branch["parent_id"] = json!(parent.id);
        let body = json!({ "branch": branch, "endpoints": [self.new_endpoint_spec()] });
        let what = format!("creating Neon branch {} of {db}", spec.branch);
        let created = match self
            .api
            .post(&format!("/projects/{project_id}/branches"), &body)
            .await
        {
            Ok(created) => created,
            Err(e) => {
                let kind = e.kind();
                let cleanup = if e.is_ambiguous() {
                    self.cleanup_branch(&project_id, &spec.branch).await
                } else {
                    "nothing was created".into()
                };
                return Err(BackendError::new(
                    kind,
                    format!("{what} failed: {e}; {cleanup}"),
                ));
            }
        };
        if let Err(e) = self.api.wait_operations(&project_id, &created).await {
            let kind = e.kind();
            let cleanup = self.cleanup_branch(&project_id, &spec.branch).await;
            tracing::warn!(project = %project_id, error = %e, "{what} failed; {cleanup}");
            return Err(BackendError::new(
                kind,
                format!("{what} failed: {e}; {cleanup}"),
            ));
        }
        let compute = ComputeName::new(db, &spec.branch);
        self.forget_compute(&compute);
        lock(&self.generations).remove(&compute);
        Ok(())
    }

    async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        if branch == MAIN {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "the main branch is the database itself; delete the database instead",
            ));
        }
        let compute = ComputeName::new(database, branch);
        self.forget_compute(&compute);
        let project_id = self.project_id(database).await?;
        let branches = self.branches(&project_id).await?;
        let Some(b) = find_branch(&branches, branch) else {
            return Ok(());
        };
        self.delete_branch_id(&project_id, &b.id)
            .await
            .map_err(|e| e.context(&format!("deleting Neon branch {branch} of {database}")))?;
        self.forget_compute(&compute);
        lock(&self.generations).remove(&compute);
        Ok(())
    }

    async fn reset_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        if branch == MAIN {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "the main branch has no parent to reset to",
            ));
        }
        let project_id = self.project_id(database).await?;
        let branches = self.branches(&project_id).await?;
        let b = find_branch(&branches, branch).ok_or_else(|| {
            BackendError::not_found(format!(
                "branch {branch} of database {database} does not exist"
            ))
        })?;
        let parent = b
            .parent_id
            .as_deref()
            .and_then(|id| branches.iter().find(|p| p.id == id))
            .ok_or_else(|| {
                BackendError::internal(format!("Neon branch {} has no parent to reset to", b.id))
            })?;
        let parent_name = if parent.default {
            MAIN.to_string()
        } else {
            parent.name.clone()
        };
        self.delete_branch(database, branch).await?;
        self.create_branch(&BranchSpec {
            database: database.to_string(),
            branch: branch.to_string(),
            parent: parent_name,
            point: BranchPoint::Now,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(current: &str, pending: Option<&str>) -> Endpoint {
        Endpoint {
            id: "ep".into(),
            host: "ep.x".into(),
            kind: "read_write".into(),
            current_state: current.into(),
            pending_state: pending.map(str::to_string),
            started_at: None,
            disabled: false,
        }
    }

    #[test]
    fn compute_names_and_states() {
        assert_eq!(state_of(&endpoint("active", None)), ComputeState::Running);
        assert_eq!(
            state_of(&endpoint("active", Some("idle"))),
            ComputeState::Draining
        );
        assert_eq!(
            state_of(&endpoint("idle", Some("active"))),
            ComputeState::Starting
        );
        assert_eq!(state_of(&endpoint("init", None)), ComputeState::Starting);
        assert_eq!(state_of(&endpoint("idle", None)), ComputeState::Suspended);
        assert_eq!(unix_of("1970-01-01T00:01:00Z"), Some(60));
    }

    #[test]
    fn describe_and_debug_never_show_the_key() {
        let backend = NeonBackend::from_config(json!({"api_key": "very-secret-key-123"})).unwrap();
        assert!(!backend.describe().contains("very-secret-key-123"));
        assert!(!format!("{:?}", backend.settings).contains("very-secret-key-123"));
        assert!(backend.describe().contains("`api_key`"));
    }
}
