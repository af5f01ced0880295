//! The API's standby routes: `/v1/databases/{name}/standby` (see, add or
//! remove), `/v1/databases/{name}/switchover`, and the mark that lets
//! `ogel chaos run` disrupt a database, `/v1/databases/{name}/chaos`, and
//! the network faults it injects, `/v1/databases/{name}/chaos/fault`.

use super::branches::bad_body;
use super::{ApiErrorBody, ApiResult, ApiState};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use ogel_plugin_sdk::StandbyStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v1/databases/{name}/standby",
            get(get_standby).post(set_standby),
        )
        .route("/v1/databases/{name}/switchover", post(switchover))
        .route("/v1/databases/{name}/chaos", post(set_chaos))
        .route("/v1/databases/{name}/chaos/fault", post(inject_fault))
}

/// Request body of `POST /v1/databases/{name}/chaos`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetChaos {
    /// Whether `ogel chaos run` may inject faults into the database.
    pub allowed: bool,
}

/// Marks a database as one `ogel chaos run` may disrupt (kill its
/// primary or standby, switch it over, corrupt a snapshot), or not.
#[utoipa::path(post, path = "/v1/databases/{name}/chaos", params(("name" = String, Path)), request_body = SetChaos,
    responses((status = 200, body = super::Done), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn set_chaos(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<SetChaos>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<super::Done> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"allowed\": true}"))?;
    state.databases.set_chaos_allowed(&name, body.allowed)?;
    Ok(Json(super::Done {
        done: if body.allowed {
            format!("ogel chaos run may now disrupt database \"{name}\"")
        } else {
            format!("database \"{name}\" is off limits to ogel chaos run")
        },
    }))
}

/// Request body of `POST /v1/databases/{name}/chaos/fault`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectFault {
    /// `latency` or `partition`.
    pub fault: String,
    /// With `latency`: milliseconds added to each chunk, either way.
    #[serde(default)]
    pub latency_ms: u64,
    /// How long the fault lasts (1–600 s).
    pub seconds: u64,
}

/// Puts a network fault between the gateway and the database's primary
/// (new server connections take it; it ends by itself). The database must
/// be marked `chaos_allowed`.
#[utoipa::path(post, path = "/v1/databases/{name}/chaos/fault", params(("name" = String, Path)), request_body = InjectFault,
    responses((status = 200, body = super::Done), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody)))]
pub async fn inject_fault(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<InjectFault>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<super::Done> {
    use crate::pool::faults::Fault;
    let example = "{\"fault\": \"latency\", \"latency_ms\": 100, \"seconds\": 10}";
    let Json(body) = body.map_err(|e| bad_body(e, example))?;
    if body.fault == "kill-gateway" {
        let done = state.standbys.kill_gateway(&name)?;
        return Ok(Json(super::Done { done }));
    }
    let fault = match (body.fault.as_str(), body.latency_ms) {
        ("latency", 1..=60_000) => {
            Fault::Latency(std::time::Duration::from_millis(body.latency_ms))
        }
        ("partition", _) => Fault::Partition,
        _ => {
            return Err(crate::error::ControlError::Invalid(format!(
            "fault must be \"latency\" (with latency_ms 1–60000), \"partition\" or \"kill-gateway\"; e.g. {example}"
        ))
            .into())
        }
    };
    if !(1..=600).contains(&body.seconds) {
        return Err(
            crate::error::ControlError::Invalid("seconds must be 1–600".to_string()).into(),
        );
    }
    let duration = std::time::Duration::from_secs(body.seconds);
    state.standbys.inject_fault(&name, fault, duration).await?;
    Ok(Json(super::Done {
        done: format!(
            "{fault:?} between the gateway and \"{name}\" for {} s",
            body.seconds
        ),
    }))
}

/// Request body of `POST /v1/databases/{name}/standby`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStandby {
    /// Standbys wanted (0 removes them; the native backend keeps at most 1).
    pub count: u32,
    /// Commits wait until the standby has flushed them (default true).
    #[serde(default = "yes")]
    pub synchronous: bool,
}

fn yes() -> bool {
    true
}

/// A database's standbys.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct StandbyInfo {
    /// Standbys wanted.
    pub wanted: u32,
    /// Standbys streaming now.
    pub streaming: u32,
    /// Commits wait for a standby.
    pub synchronous: bool,
    /// WAL bytes the standby has not replayed.
    pub replay_lag_bytes: Option<u64>,
    /// Times a standby took over.
    pub failovers: u64,
    /// Why a wanted standby is not streaming.
    pub note: Option<String>,
    /// The standby's process id, where the backend has one.
    pub pid: Option<u32>,
    /// The health model's last word (while the failover watch watches
    /// the database).
    pub health: Option<HealthInfo>,
    /// In a cluster: the gateway whose disk holds the standby.
    #[serde(default)]
    pub standby_gateway: Option<String>,
    /// In a cluster: the standby has every acknowledged commit and takes
    /// over if the primary's gateway is gone.
    #[serde(default)]
    pub in_sync: Option<bool>,
}

/// What the health model says about a primary (`[failover]`).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct HealthInfo {
    /// Crash restarts of the primary within the window.
    pub restarts: u32,
    /// Seconds until the primary's disk is full at its trend, if filling.
    pub disk_full_in_secs: Option<u64>,
    /// Growth of the standby's replay lag, bytes per second.
    pub lag_growth_bytes_per_sec: Option<i64>,
    /// The primary's mean WAL fsync time lately, milliseconds.
    #[serde(default)]
    pub wal_fsync_ms: Option<u64>,
    /// Signs seen that do not call for a switchover.
    pub warnings: Vec<String>,
    /// Why the last switchover before failure happened.
    pub last_preemptive_switchover: Option<String>,
    /// When (Unix seconds).
    pub last_preemptive_switchover_at: Option<u64>,
}

impl From<crate::control::standby::HealthReport> for HealthInfo {
    fn from(r: crate::control::standby::HealthReport) -> Self {
        let (reason, at) = r.last_switchover.unzip();
        HealthInfo {
            restarts: r.verdict.restarts,
            disk_full_in_secs: r.verdict.disk_full_in_secs,
            lag_growth_bytes_per_sec: r.verdict.lag_growth_bytes_per_sec,
            wal_fsync_ms: r.verdict.wal_fsync_ms,
            warnings: r.verdict.warnings,
            last_preemptive_switchover: reason,
            last_preemptive_switchover_at: at,
        }
    }
}

impl From<Option<StandbyStatus>> for StandbyInfo {
    fn from(status: Option<StandbyStatus>) -> Self {
        let s = status.unwrap_or_default();
        StandbyInfo {
            wanted: s.wanted,
            streaming: s.streaming,
            synchronous: s.synchronous,
            replay_lag_bytes: s.replay_lag_bytes,
            failovers: s.failovers,
            note: s.note,
            pid: s.pid,
            health: None,
            standby_gateway: None,
            in_sync: None,
        }
    }
}

/// What a switchover did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SwitchoverResult {
    /// How long new transactions waited.
    pub write_pause_ms: u64,
    /// The new primary's generation.
    pub generation: u64,
}

/// A database's standbys.
#[utoipa::path(get, path = "/v1/databases/{name}/standby", params(("name" = String, Path)),
    responses((status = 200, body = StandbyInfo), (status = 404, body = ApiErrorBody)))]
pub async fn get_standby(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StandbyInfo> {
    let mut info: StandbyInfo = state.standbys.status(&name).await?.into();
    info.health = state.standbys.health(&name).map(Into::into);
    if let Some(placed) = state.databases.ready(&name)?.standby {
        info.standby_gateway = placed.node;
        info.in_sync = Some(placed.in_sync);
    }
    Ok(Json(info))
}

/// Adds or removes a database's hot standby; returns once it streams.
#[utoipa::path(post, path = "/v1/databases/{name}/standby", params(("name" = String, Path)), request_body = SetStandby,
    responses((status = 200, body = StandbyInfo), (status = 400, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 501, body = ApiErrorBody)))]
pub async fn set_standby(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<SetStandby>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StandbyInfo> {
    let Json(body) = body.map_err(|e| bad_body(e, "{\"count\": 1}"))?;
    let status = state
        .standbys
        .set(&name, body.count, body.synchronous)
        .await?;
    Ok(Json(status.into()))
}

/// Planned switchover: new transactions wait while the primary stops
/// cleanly and the standby, having replayed everything, is promoted.
#[utoipa::path(post, path = "/v1/databases/{name}/switchover", params(("name" = String, Path)),
    responses((status = 200, body = SwitchoverResult), (status = 404, body = ApiErrorBody), (status = 503, body = ApiErrorBody)))]
pub async fn switchover(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<SwitchoverResult> {
    let done = state.standbys.switchover(&name).await?;
    Ok(Json(SwitchoverResult {
        write_pause_ms: done.write_pause_ms,
        generation: done.generation,
    }))
}
