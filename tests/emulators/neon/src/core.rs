//! The emulator's state and its operations: every mutating API call (and
//! every wake by the proxy, every idle suspend) records operations in
//! `scheduling`, and a background task per project runs them one at a time
//! (`running` → `finished`, or `failed` / `cancelled`), applying their
//! effect to the clusters and to the state the API shows. While a project
//! has an operation in progress, mutating calls get 423 Locked.

use crate::data::{quote_ident, DataPlane, NEON_SUPERUSER};
use crate::faults::Faults;
use crate::model::{self, Branch, Database, Endpoint, Operation, ProjectState, Role};
use ogel_plugin_sdk::BranchPoint;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Settings the API and the proxy share.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub domain: String,
    pub region_id: String,
    pub default_suspend_timeout_seconds: u64,
    pub pg_version: u32,
}

/// All projects.
#[derive(Default)]
pub(crate) struct State {
    pub projects: Vec<ProjectState>,
    pub next_database_id: i64,
}

impl State {
    pub(crate) fn project(&self, id: &str) -> Option<&ProjectState> {
        self.projects.iter().find(|p| p.project.id == id)
    }
    pub(crate) fn project_mut(&mut self, id: &str) -> Option<&mut ProjectState> {
        self.projects.iter_mut().find(|p| p.project.id == id)
    }
    /// The project holding an endpoint.
    pub(crate) fn endpoint_project(&self, endpoint_id: &str) -> Option<&ProjectState> {
        self.projects
            .iter()
            .find(|p| p.endpoint(endpoint_id).is_some())
    }
    pub(crate) fn next_database_id(&mut self) -> i64 {
        self.next_database_id += 1;
        self.next_database_id
    }
}

/// What an operation does when it runs.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// `create_timeline`: the project's cluster with its first role and database.
    CreateTimeline {
        branch_id: String,
        role: String,
        password: String,
        database: String,
    },
    /// `create_branch`: a branch cluster cloned from its parent.
    CreateBranch {
        branch_id: String,
        parent_branch_id: String,
        point: BranchPoint,
    },
    /// `start_compute`.
    StartCompute { endpoint_id: String },
    /// `suspend_compute` (the endpoint may be gone: a deleted one's cluster still stops).
    SuspendCompute {
        endpoint_id: String,
        branch_id: String,
    },
    /// `apply_config`: SQL in the branch's cluster; undone in the state on failure.
    ApplyConfig {
        branch_id: String,
        sql: Vec<String>,
        undo: Undo,
    },
    /// `delete_timeline`: the branch's cluster goes.
    DeleteTimeline { native_branch: String },
}

/// How to take back a state change made at request time when its operation fails.
#[derive(Clone, Debug)]
pub(crate) enum Undo {
    Nothing,
    RemoveRole { branch_id: String, name: String },
    RestoreRole(Role),
    RemoveDatabase { branch_id: String, name: String },
    RestoreDatabase(Database),
}

/// Live proxy connections of an endpoint.
#[derive(Clone, Copy, Debug)]
struct ConnStats {
    count: usize,
    last_active: Instant,
}

/// Why the proxy could not get a compute.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WakeError {
    #[error("endpoint {0} not found")]
    NotFound(String),
    #[error("endpoint {0} is disabled")]
    Disabled(String),
    #[error("could not start the compute: {0}")]
    Failed(String),
}

/// The emulator's core, shared by the API, the proxy and the background tasks.
pub(crate) struct Core {
    state: Mutex<State>,
    pub data: DataPlane,
    pub faults: Faults,
    pub settings: Settings,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    conns: Mutex<HashMap<String, ConnStats>>,
}

/// Decrements an endpoint's connection count when a proxied connection ends.
pub(crate) struct ConnGuard {
    core: Arc<Core>,
    endpoint_id: String,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut conns = self.core.lock_conns();
        let stats = conns.entry(self.endpoint_id.clone()).or_insert(ConnStats {
            count: 1,
            last_active: Instant::now(),
        });
        stats.count = stats.count.saturating_sub(1);
        stats.last_active = Instant::now();
    }
}

impl Core {
    pub(crate) fn new(data: DataPlane, settings: Settings) -> Core {
        Core {
            state: Mutex::new(State::default()),
            data,
            faults: Faults::default(),
            settings,
            locks: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// The state; never held across an await.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_conns(&self) -> MutexGuard<'_, HashMap<String, ConnStats>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn project_lock(&self, project_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project_id.to_string())
            .or_default()
            .clone()
    }

    /// The native compute of a branch.
    fn compute_of(&self, project_id: &str, branch_id: &str) -> Option<String> {
        let state = self.state();
        let branch = state.project(project_id)?.branch(branch_id)?;
        Some(DataPlane::compute(project_id, &branch.native_branch))
    }

    /// Counts a proxied connection to an endpoint until the guard drops.
    pub(crate) fn connection(self: &Arc<Self>, endpoint_id: &str) -> ConnGuard {
        let mut conns = self.lock_conns();
        let stats = conns.entry(endpoint_id.to_string()).or_insert(ConnStats {
            count: 0,
            last_active: Instant::now(),
        });
        stats.count += 1;
        stats.last_active = Instant::now();
        ConnGuard {
            core: self.clone(),
            endpoint_id: endpoint_id.to_string(),
        }
    }

    fn touch(&self, endpoint_id: &str) {
        let mut conns = self.lock_conns();
        let stats = conns.entry(endpoint_id.to_string()).or_insert(ConnStats {
            count: 0,
            last_active: Instant::now(),
        });
        stats.last_active = Instant::now();
    }

    /// Runs recorded operations in the background, after those already queued.
    pub(crate) fn schedule(self: &Arc<Self>, project_id: &str, jobs: Vec<(String, Step)>) {
        if jobs.is_empty() {
            return;
        }
        let core = self.clone();
        let project_id = project_id.to_string();
        tokio::spawn(async move {
            let lock = core.project_lock(&project_id);
            let _guard = lock.lock().await;
            let _ = core.run_locked(&project_id, jobs).await;
        });
    }

    /// Runs operations in order, with the project's lock held. After a
    /// failure the rest are cancelled. Returns the first error.
    async fn run_locked(&self, project_id: &str, jobs: Vec<(String, Step)>) -> Result<(), String> {
        let mut failure: Option<String> = None;
        let mut touched: Vec<String> = Vec::new();
        for (op_id, step) in jobs {
            if failure.is_some() {
                self.undo(project_id, &step);
                self.finish(
                    project_id,
                    &op_id,
                    "cancelled",
                    Some("a previous operation failed".into()),
                );
                continue;
            }
            self.set_running(project_id, &op_id);
            let started = Instant::now();
            let delay = Duration::from_millis(self.faults.operation_delay_ms());
            let result = if self.faults.take_operation_failure() {
                Err("operation failed (injected by the emulator)".to_string())
            } else {
                self.execute(project_id, &step)
                    .await
                    .map_err(|e| format!("{e:#}"))
            };
            if let Some(rest) = delay.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            if let Some(branch_id) = step_branch(&step) {
                touched.push(branch_id);
            }
            match result {
                Ok(()) => self.finish(project_id, &op_id, "finished", None),
                Err(e) => {
                    tracing::warn!(project = project_id, operation = %op_id, error = %e, "operation failed");
                    self.undo(project_id, &step);
                    self.finish(project_id, &op_id, "failed", Some(e.clone()));
                    failure = Some(e);
                }
            }
        }
        // Clusters started only to apply something go back to sleep.
        touched.sort();
        touched.dedup();
        for branch_id in touched {
            let (active, compute) = {
                let state = self.state();
                let Some(project) = state.project(project_id) else {
                    continue;
                };
                let Some(branch) = project.branch(&branch_id) else {
                    continue;
                };
                (
                    project.branch_active(&branch_id),
                    DataPlane::compute(project_id, &branch.native_branch),
                )
            };
            if !active {
                if let Err(e) = self.data.stop(&compute).await {
                    tracing::warn!(compute = %compute, error = %e, "could not stop an unused compute");
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    fn set_running(&self, project_id: &str, op_id: &str) {
        let mut state = self.state();
        if let Some(op) = state
            .project_mut(project_id)
            .and_then(|p| p.operation_mut(op_id))
        {
            op.status = "running".into();
            op.updated_at = model::now();
            op.started_ms = model::unix_ms();
        }
    }

    fn finish(&self, project_id: &str, op_id: &str, status: &str, error: Option<String>) {
        let mut state = self.state();
        if let Some(op) = state
            .project_mut(project_id)
            .and_then(|p| p.operation_mut(op_id))
        {
            op.status = status.into();
            op.updated_at = model::now();
            if op.started_ms > 0 {
                op.total_duration_ms = model::unix_ms().saturating_sub(op.started_ms) as i64;
            }
            if error.is_some() && status == "failed" {
                op.failures_count += 1;
            }
            op.error = error;
        }
    }

    /// Does an operation's work and applies its effect to the state.
    async fn execute(&self, project_id: &str, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::CreateTimeline {
                branch_id,
                role,
                password,
                database,
            } => {
                self.data.create_project(project_id).await?;
                self.data
                    .exec(
                        project_id,
                        &[
                            format!(
                                "CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD '{}' IN ROLE {}",
                                quote_ident(role),
                                DataPlane::verifier(password),
                                quote_ident(NEON_SUPERUSER)
                            ),
                            format!(
                                "CREATE DATABASE {} OWNER {}",
                                quote_ident(database),
                                quote_ident(role)
                            ),
                        ],
                    )
                    .await?;
                self.set_branch_ready(project_id, branch_id, None);
                Ok(())
            }
            Step::CreateBranch {
                branch_id,
                parent_branch_id,
                point,
            } => {
                let (native, parent_native) = {
                    let state = self.state();
                    let project = state
                        .project(project_id)
                        .ok_or_else(|| anyhow::anyhow!("the project is gone"))?;
                    let branch = project
                        .branch(branch_id)
                        .ok_or_else(|| anyhow::anyhow!("the branch is gone"))?;
                    let parent = project
                        .branch(parent_branch_id)
                        .ok_or_else(|| anyhow::anyhow!("the parent branch is gone"))?;
                    (branch.native_branch.clone(), parent.native_branch.clone())
                };
                let parent_compute = DataPlane::compute(project_id, &parent_native);
                // A running parent is not interrupted: "now" becomes its
                // current LSN and the branch is made by WAL replay.
                let (point, lsn) = match point {
                    BranchPoint::Now => match self.data.live_branch_point(&parent_compute).await? {
                        Some(lsn) => (BranchPoint::Lsn { lsn: lsn.clone() }, Some(lsn)),
                        None => (BranchPoint::Now, None),
                    },
                    other => (other.clone(), None),
                };
                self.data
                    .create_branch(project_id, &native, &parent_native, point)
                    .await?;
                // Roles and databases are the cluster's: a branch at a past
                // point has only those that existed then.
                let compute = DataPlane::compute(project_id, &native);
                let (roles, databases) = self.data.catalog(project_id, &compute).await?;
                {
                    let mut state = self.state();
                    if let Some(project) = state.project_mut(project_id) {
                        project
                            .roles
                            .retain(|r| r.branch_id != *branch_id || roles.contains(&r.name));
                        project.databases.retain(|d| {
                            d.branch_id != *branch_id || databases.iter().any(|(n, _)| *n == d.name)
                        });
                    }
                }
                self.set_branch_ready(project_id, branch_id, lsn);
                Ok(())
            }
            Step::StartCompute { endpoint_id } => {
                let branch_id = self.endpoint_branch(project_id, endpoint_id)?;
                let compute = self
                    .compute_of(project_id, &branch_id)
                    .ok_or_else(|| anyhow::anyhow!("the branch is gone"))?;
                self.data.start(&compute).await?;
                let now = model::now();
                {
                    let mut state = self.state();
                    if let Some(project) = state.project_mut(project_id) {
                        project.project.compute_last_active_at = Some(now.clone());
                        if let Some(ep) = project.endpoint_mut(endpoint_id) {
                            ep.current_state = "active".into();
                            ep.pending_state = None;
                            ep.started_at = Some(now.clone());
                            ep.last_active = Some(now.clone());
                            ep.updated_at = now;
                        }
                    }
                }
                self.touch(endpoint_id);
                Ok(())
            }
            Step::SuspendCompute {
                endpoint_id,
                branch_id,
            } => {
                let (compute, others_active) = {
                    let state = self.state();
                    let Some(project) = state.project(project_id) else {
                        return Ok(());
                    };
                    // A deleted branch's cluster is stopped by delete_timeline.
                    let Some(branch) = project.branch(branch_id) else {
                        return Ok(());
                    };
                    let others = project.endpoints.iter().any(|e| {
                        e.branch_id == *branch_id
                            && e.id != *endpoint_id
                            && e.current_state == "active"
                    });
                    (
                        DataPlane::compute(project_id, &branch.native_branch),
                        others,
                    )
                };
                // Endpoints of one branch share its cluster.
                if !others_active {
                    self.data.stop(&compute).await?;
                }
                let now = model::now();
                let mut state = self.state();
                if let Some(ep) = state
                    .project_mut(project_id)
                    .and_then(|p| p.endpoint_mut(endpoint_id))
                {
                    ep.current_state = "idle".into();
                    ep.pending_state = None;
                    ep.suspended_at = Some(now.clone());
                    ep.updated_at = now;
                }
                Ok(())
            }
            Step::ApplyConfig { branch_id, sql, .. } => {
                let compute = self
                    .compute_of(project_id, branch_id)
                    .ok_or_else(|| anyhow::anyhow!("the branch is gone"))?;
                self.data.exec(&compute, sql).await
            }
            Step::DeleteTimeline { native_branch } => {
                self.data.delete_branch(project_id, native_branch).await
            }
        }
    }

    fn endpoint_branch(&self, project_id: &str, endpoint_id: &str) -> anyhow::Result<String> {
        let state = self.state();
        state
            .project(project_id)
            .and_then(|p| p.endpoint(endpoint_id))
            .map(|e| e.branch_id.clone())
            .ok_or_else(|| anyhow::anyhow!("the endpoint is gone"))
    }

    fn set_branch_ready(&self, project_id: &str, branch_id: &str, lsn: Option<String>) {
        let mut state = self.state();
        if let Some(branch) = state
            .project_mut(project_id)
            .and_then(|p| p.branch_mut(branch_id))
        {
            branch.current_state = "ready".into();
            branch.pending_state = None;
            branch.state_changed_at = model::now();
            branch.updated_at = branch.state_changed_at.clone();
            if branch.parent_lsn.is_none() {
                branch.parent_lsn = lsn;
            }
        }
    }

    /// Takes back what a failed or cancelled operation's request changed.
    fn undo(&self, project_id: &str, step: &Step) {
        let mut state = self.state();
        let Some(project) = state.project_mut(project_id) else {
            return;
        };
        match step {
            Step::CreateTimeline { .. } => {}
            Step::CreateBranch { branch_id, .. } => {
                // A branch that could not be made is not left behind.
                project.branches.retain(|b| b.id != *branch_id);
                project.endpoints.retain(|e| e.branch_id != *branch_id);
                project.roles.retain(|r| r.branch_id != *branch_id);
                project.databases.retain(|d| d.branch_id != *branch_id);
            }
            Step::StartCompute { endpoint_id } => {
                if let Some(ep) = project.endpoint_mut(endpoint_id) {
                    if ep.current_state == "init" {
                        ep.current_state = "idle".into();
                    }
                    ep.pending_state = None;
                }
            }
            Step::SuspendCompute { endpoint_id, .. } => {
                if let Some(ep) = project.endpoint_mut(endpoint_id) {
                    ep.pending_state = None;
                }
            }
            Step::ApplyConfig { undo, .. } => match undo {
                Undo::Nothing => {}
                Undo::RemoveRole { branch_id, name } => project
                    .roles
                    .retain(|r| !(r.branch_id == *branch_id && r.name == *name)),
                Undo::RestoreRole(role) => {
                    project
                        .roles
                        .retain(|r| !(r.branch_id == role.branch_id && r.name == role.name));
                    project.roles.push(role.clone());
                }
                Undo::RemoveDatabase { branch_id, name } => project
                    .databases
                    .retain(|d| !(d.branch_id == *branch_id && d.name == *name)),
                Undo::RestoreDatabase(db) => {
                    project
                        .databases
                        .retain(|d| !(d.branch_id == db.branch_id && d.name == db.name));
                    project.databases.push(db.clone());
                }
            },
            Step::DeleteTimeline { .. } => {}
        }
    }

    /// Records operations (in `scheduling`) on a project; the caller holds the state.
    pub(crate) fn record(
        project: &mut ProjectState,
        ops: Vec<(Operation, Step)>,
    ) -> (Vec<Operation>, Vec<(String, Step)>) {
        let mut shown = Vec::new();
        let mut jobs = Vec::new();
        for (op, step) in ops {
            shown.push(op.clone());
            jobs.push((op.id.clone(), step));
            project.operations.push(op);
        }
        (shown, jobs)
    }

    /// Gets an endpoint's compute running for a connection (Neon's scale
    /// to zero: a suspended endpoint starts on connect, recorded as a
    /// `start_compute` operation) and returns its loopback port.
    pub(crate) async fn wake(self: &Arc<Self>, endpoint_id: &str) -> Result<u16, WakeError> {
        let project_id = {
            let state = self.state();
            state
                .endpoint_project(endpoint_id)
                .map(|p| p.project.id.clone())
                .ok_or_else(|| WakeError::NotFound(endpoint_id.to_string()))?
        };
        let lock = self.project_lock(&project_id);
        let _guard = lock.lock().await;
        let (current, disabled, compute, job) = {
            let mut state = self.state();
            let project = state
                .project_mut(&project_id)
                .ok_or_else(|| WakeError::NotFound(endpoint_id.to_string()))?;
            let endpoint = project
                .endpoint(endpoint_id)
                .cloned()
                .ok_or_else(|| WakeError::NotFound(endpoint_id.to_string()))?;
            let native = project
                .branch(&endpoint.branch_id)
                .map(|b| b.native_branch.clone())
                .ok_or_else(|| WakeError::NotFound(endpoint_id.to_string()))?;
            (
                endpoint.current_state.clone(),
                endpoint.disabled,
                DataPlane::compute(&project_id, &native),
                endpoint,
            )
        };
        if disabled {
            return Err(WakeError::Disabled(endpoint_id.to_string()));
        }
        if current == "active" {
            if let Some(port) = self.data.running_port(&compute).await {
                self.touch(endpoint_id);
                return Ok(port);
            }
        }
        let jobs = {
            let mut state = self.state();
            let project = state
                .project_mut(&project_id)
                .ok_or_else(|| WakeError::NotFound(endpoint_id.to_string()))?;
            if let Some(ep) = project.endpoint_mut(endpoint_id) {
                ep.pending_state = Some("active".into());
            }
            let op = Operation::new(
                &project_id,
                Some(&job.branch_id),
                Some(endpoint_id),
                "start_compute",
            );
            Self::record(
                project,
                vec![(
                    op,
                    Step::StartCompute {
                        endpoint_id: endpoint_id.to_string(),
                    },
                )],
            )
            .1
        };
        self.run_locked(&project_id, jobs)
            .await
            .map_err(WakeError::Failed)?;
        self.data
            .running_port(&compute)
            .await
            .ok_or_else(|| WakeError::Failed("the compute is not running".into()))
    }

    /// The idle timeout of an endpoint (`0`: the default; `-1`: never).
    fn idle_timeout(&self, suspend_timeout_seconds: i64) -> Option<Duration> {
        match suspend_timeout_seconds {
            s if s < 0 => None,
            0 => Some(Duration::from_secs(
                self.settings.default_suspend_timeout_seconds,
            )),
            s => Some(Duration::from_secs(s as u64)),
        }
    }

    /// Suspends active endpoints that had no connection for their
    /// `suspend_timeout_seconds`, as `suspend_compute` operations.
    pub(crate) async fn suspend_idle(self: &Arc<Self>) {
        let candidates: Vec<(String, Endpoint)> = {
            let state = self.state();
            let conns = self.lock_conns();
            state
                .projects
                .iter()
                .filter(|p| !p.locked())
                .flat_map(|p| p.endpoints.iter().map(move |e| (p.project.id.clone(), e)))
                .filter(|(_, e)| e.current_state == "active" && e.pending_state.is_none())
                .filter(|(_, e)| {
                    let Some(timeout) = self.idle_timeout(e.suspend_timeout_seconds) else {
                        return false;
                    };
                    match conns.get(&e.id) {
                        Some(stats) => stats.count == 0 && stats.last_active.elapsed() >= timeout,
                        None => false,
                    }
                })
                .map(|(p, e)| (p, e.clone()))
                .collect()
        };
        for (project_id, endpoint) in candidates {
            let lock = self.project_lock(&project_id);
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            let jobs = {
                let mut state = self.state();
                let Some(project) = state.project_mut(&project_id) else {
                    continue;
                };
                if project.locked() {
                    continue;
                }
                let busy = self
                    .lock_conns()
                    .get(&endpoint.id)
                    .is_some_and(|s| s.count > 0);
                let Some(ep) = project.endpoint_mut(&endpoint.id) else {
                    continue;
                };
                if busy || ep.current_state != "active" {
                    continue;
                }
                ep.pending_state = Some("idle".into());
                let op = Operation::new(
                    &project_id,
                    Some(&endpoint.branch_id),
                    Some(&endpoint.id),
                    "suspend_compute",
                );
                Self::record(
                    project,
                    vec![(
                        op,
                        Step::SuspendCompute {
                            endpoint_id: endpoint.id.clone(),
                            branch_id: endpoint.branch_id.clone(),
                        },
                    )],
                )
                .1
            };
            tracing::info!(endpoint = %endpoint.id, "suspending an idle endpoint");
            let _ = self.run_locked(&project_id, jobs).await;
        }
    }

    /// Stops every compute of a project and deletes its clusters, after its
    /// running operations are done.
    pub(crate) async fn delete_project_data(
        self: &Arc<Self>,
        project_id: &str,
    ) -> anyhow::Result<()> {
        let lock = self.project_lock(project_id);
        let _guard = lock.lock().await;
        self.data.delete_project(project_id).await
    }

    /// Stops every compute of every project (shutdown).
    pub(crate) async fn stop_all(&self) {
        let computes: Vec<String> = {
            let state = self.state();
            state
                .projects
                .iter()
                .flat_map(|p| {
                    p.branches
                        .iter()
                        .map(move |b| DataPlane::compute(&p.project.id, &b.native_branch))
                })
                .collect()
        };
        for compute in computes {
            if let Err(e) = self.data.stop(&compute).await {
                tracing::warn!(compute = %compute, error = %e, "could not stop a compute");
            }
        }
    }
}

/// The branch whose cluster an operation may have started.
fn step_branch(step: &Step) -> Option<String> {
    match step {
        Step::CreateTimeline { branch_id, .. }
        | Step::CreateBranch { branch_id, .. }
        | Step::ApplyConfig { branch_id, .. } => Some(branch_id.clone()),
        Step::StartCompute { .. } | Step::SuspendCompute { .. } | Step::DeleteTimeline { .. } => {
            None
        }
    }
}

/// A new branch in `init`, before its create operation runs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn new_branch(
    project_id: &str,
    id: String,
    name: String,
    parent_id: Option<String>,
    parent_lsn: Option<String>,
    parent_timestamp: Option<String>,
    default: bool,
    native_branch: String,
) -> Branch {
    let now = model::now();
    Branch {
        id,
        project_id: project_id.to_string(),
        parent_id,
        parent_lsn,
        parent_timestamp,
        name,
        current_state: "init".into(),
        pending_state: Some("ready".into()),
        state_changed_at: now.clone(),
        logical_size: 0,
        creation_source: "console".into(),
        primary: default,
        default,
        protected: false,
        cpu_used_sec: 0,
        compute_time_seconds: 0,
        active_time_seconds: 0,
        written_data_bytes: 0,
        data_transfer_bytes: 0,
        created_at: now.clone(),
        updated_at: now,
        init_source: "parent-data".into(),
        expires_at: None,
        native_branch,
    }
}
