//! Standbys and failover as the gateway drives them, for every backend
//! that has them (`Capabilities.standby`): `ogel db standby NAME add|remove`,
//! the planned switchover (`ogel db switchover NAME`: pause, promote,
//! resume, the write pause measured), and the watch that fails a dead
//! primary over and switches an ailing one over before it fails
//! ([`Standbys::run_watch`], fed by the health model in [`super::health`]).
//!
//! **Fencing order** (why no write reaches an old primary): (1) revoke —
//! the database's lifecycle drops the old endpoint under its lock, so no
//! client is handed it and no wake runs meanwhile; (2) stop — the backend
//! fences the old primary before it promotes anything (native: SIGKILL to
//! its process group, its volume moved to `trash/`; a switchover stops it
//! cleanly and waits until the standby replayed its last WAL); (3)
//! promote — the standby's endpoint comes back with a higher generation,
//! and the database's pools close every connection of an older one (idle
//! ones at once, busy ones when they come back: they are to a dead
//! process). A client in a transaction on the old primary gets `08006`
//! and its transaction is rolled back; a client between transactions gets
//! its next one on the new primary without noticing.

use super::databases::Databases;
use super::health::{Health, HealthSettings, Reading, Verdict};
use crate::config::FailoverConfig;
use crate::error::ControlError;
use crate::pool::Pools;
use ogel_plugin_sdk::{ComputeEndpoint, ComputeName, ComputeState, StandbyStatus, Takeover};
use ogel_policies::Lifecycle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the watch asks a backend which databases have standbys.
const STATUS_REFRESH: Duration = Duration::from_secs(2);

/// The standbys service.
pub struct Standbys {
    databases: Arc<Databases>,
    pools: Arc<Pools>,
    /// Standbys on another gateway, in a cluster.
    pub placement: Arc<super::placement::Placement>,
    /// Failovers done by this gateway (`/metrics`).
    pub failovers: AtomicU64,
    /// Milliseconds the last failover took, detection to promoted.
    pub last_failover_ms: AtomicU64,
    /// Switchovers the health model called for (`/metrics`).
    pub preemptive_switchovers: AtomicU64,
    /// Rebuilds of a standby running now, by compute.
    rebuilding: Arc<Mutex<std::collections::HashSet<String>>>,
    /// The health model's last word on each watched database.
    health: Mutex<HashMap<String, HealthReport>>,
}

/// What the health model last said about a database (`ogel db standby`,
/// the API).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HealthReport {
    /// The last verdict.
    pub verdict: Verdict,
    /// Why the last preemptive switchover happened, and when (Unix seconds).
    pub last_switchover: Option<(String, u64)>,
}

/// What a switchover did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Switchover {
    /// How long new transactions waited (the pools were paused).
    pub write_pause_ms: u64,
    /// The promoted compute's generation.
    pub generation: u64,
}

impl Standbys {
    /// The service.
    pub fn new(
        databases: Arc<Databases>,
        pools: Arc<Pools>,
        placement: Arc<super::placement::Placement>,
    ) -> Self {
        Standbys {
            databases,
            pools,
            placement,
            failovers: AtomicU64::new(0),
            last_failover_ms: AtomicU64::new(0),
            preemptive_switchovers: AtomicU64::new(0),
            rebuilding: Arc::default(),
            health: Mutex::default(),
        }
    }

    fn lifecycle_of(&self, database: &str) -> Result<Arc<Lifecycle>, ControlError> {
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        if !lifecycle.backend().capabilities().standby {
            return Err(ControlError::Unsupported(format!(
                "backend {} has no standbys; its storage fails over on its own, or not at all",
                record.backend
            )));
        }
        Ok(lifecycle)
    }

    /// Keeps `count` standbys of `database` (0 removes them).
    pub async fn set(
        &self,
        database: &str,
        count: u32,
        synchronous: bool,
    ) -> Result<Option<StandbyStatus>, ControlError> {
        let lifecycle = self.lifecycle_of(database)?;
        let name = ComputeName::main(database);
        if self.placement.applies(&lifecycle) {
            // In a cluster the standby is on another gateway's disk.
            if count > 1 {
                return Err(ControlError::Unsupported(
                    "in a cluster a database has at most one standby, on another gateway".into(),
                ));
            }
            if count > 0 && !synchronous {
                return Err(ControlError::Unsupported(
                    "a standby on another gateway is synchronous: taking over from an asynchronous one could lose acknowledged writes".into(),
                ));
            }
            self.placement.set(database, count > 0).await?;
            if count > 0 {
                lifecycle.wake(database).await?;
            }
            return self.status(database).await;
        }
        lifecycle
            .backend()
            .set_standbys(&name, count, synchronous)
            .await?;
        // The standby is built from a running primary: the lifecycle
        // learns it runs, so idle suspend covers it.
        if count > 0 {
            lifecycle.wake(database).await?;
        }
        Ok(lifecycle.backend().standby_status(&name).await?)
    }

    /// `database`'s standbys (`None`: it has none).
    pub async fn status(&self, database: &str) -> Result<Option<StandbyStatus>, ControlError> {
        let record = self.databases.ready(database)?;
        let lifecycle = self.databases.lifecycle(&record)?;
        let status = lifecycle
            .backend()
            .standby_status(&ComputeName::main(database))
            .await?;
        let Some(placed) = self.placement.describe(&record) else {
            return Ok(status);
        };
        let mut status = status.unwrap_or_default();
        status.wanted = 1;
        status.synchronous = true;
        status.note = Some(match status.note.take() {
            Some(note) => format!("{placed}; {note}"),
            None => placed,
        });
        Ok(Some(status))
    }

    /// `ogel chaos run --scenario kill-gateway`: this gateway, which serves
    /// `database` (chaos_allowed, with an in-sync standby on another
    /// gateway), kills itself with SIGKILL a moment after answering, as a
    /// crash of its machine would end it; its computes keep running,
    /// orphaned, and are fenced when it comes back.
    pub fn kill_gateway(&self, database: &str) -> Result<String, ControlError> {
        let record = self.databases.ready(database)?;
        if !record.chaos_allowed {
            return Err(ControlError::Invalid(format!(
                "database \"{database}\" is not marked chaos_allowed; `ogel chaos allow {database}` first"
            )));
        }
        if !self.databases.is_local(&record) {
            return Err(ControlError::Invalid(format!(
                "gateway {} serves \"{database}\"; ask it (the API forwards)",
                record.node.unwrap_or_default()
            )));
        }
        if !record.standby.as_ref().is_some_and(|p| p.in_sync) {
            return Err(ControlError::Unavailable(format!(
                "killing this gateway would take \"{database}\" down: it needs a standby on another gateway that is in sync; see `ogel db standby {database}`"
            )));
        }
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tracing::error!("chaos: this gateway kills itself (kill-gateway)");
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        });
        Ok(format!(
            "gateway serving \"{database}\" is killed with SIGKILL in 200 ms"
        ))
    }

    /// Puts a network fault between this gateway and `database`'s primary
    /// for `duration` (`ogel chaos`; the database must be marked
    /// `chaos_allowed`). New server connections take the faulty path: the
    /// pools' idle ones close, and the watch's probe reconnects.
    pub async fn inject_fault(
        &self,
        database: &str,
        fault: crate::pool::faults::Fault,
        duration: Duration,
    ) -> Result<(), ControlError> {
        let record = self.databases.ready(database)?;
        if !record.chaos_allowed {
            return Err(ControlError::Invalid(format!(
                "database \"{database}\" is not marked chaos_allowed; `ogel chaos allow {database}` first"
            )));
        }
        let lifecycle = self.databases.lifecycle(&record)?;
        let endpoint = lifecycle.wake(database).await?;
        let target: std::net::SocketAddr = format!("{}:{}", endpoint.host, endpoint.port)
            .parse()
            .map_err(|_| {
            ControlError::Unsupported(format!(
                "network faults need a compute at an IP address; \"{database}\"'s is at {}",
                endpoint.host
            ))
        })?;
        crate::pool::faults::inject(target, fault, duration)
            .await
            .map_err(|e| {
                ControlError::Unavailable(format!("could not start the fault proxy: {e}"))
            })?;
        for pool in self.pools.find_all(database) {
            pool.close_idle();
        }
        Ok(())
    }

    /// The health model's last word on `database` (`None`: not watched).
    pub fn health(&self, database: &str) -> Option<HealthReport> {
        crate::pool::lock(&self.health).get(database).cloned()
    }

    /// Planned switchover: new transactions wait (PAUSE) while the primary
    /// stops cleanly, the standby replays all of it and is promoted; then
    /// they go on, on the new primary.
    pub async fn switchover(&self, database: &str) -> Result<Switchover, ControlError> {
        let lifecycle = self.lifecycle_of(database)?;
        if self.databases.ready(database)?.standby.is_some() {
            let (write_pause_ms, generation) =
                self.placement.switchover(database, &self.pools).await?;
            return Ok(Switchover {
                write_pause_ms,
                generation,
            });
        }
        let status = lifecycle
            .backend()
            .standby_status(&ComputeName::main(database))
            .await?;
        if status.as_ref().is_none_or(|s| s.streaming == 0) {
            return Err(ControlError::Unavailable(format!(
                "database \"{database}\" has no streaming standby to switch over to; see `ogel db standby {database}`"
            )));
        }
        let pools = self.pools.find_all(database);
        let paused_at = Instant::now();
        self.pools.pause(&pools).await.map_err(|e| {
            ControlError::Unavailable(format!(
                "could not pause \"{database}\" for the switchover: {e}; {}",
                crate::pool::PAUSE_HINT
            ))
        })?;
        let promoted = lifecycle
            .takeover(database, None, Takeover::Switchover)
            .await;
        if let Ok(endpoint) = &promoted {
            self.fence(database, endpoint);
        }
        for pool in &pools {
            pool.pool.resume();
        }
        let write_pause_ms = paused_at.elapsed().as_millis() as u64;
        let endpoint = promoted?;
        tracing::warn!(
            database,
            write_pause_ms,
            generation = endpoint.generation,
            "switchover: the standby is the primary"
        );
        self.rebuild(lifecycle, database.to_string(), status);
        Ok(Switchover {
            write_pause_ms,
            generation: endpoint.generation,
        })
    }

    /// Closes `database`'s pool connections older than `endpoint`.
    fn fence(&self, database: &str, endpoint: &ComputeEndpoint) {
        for pool in self.pools.find_all(database) {
            pool.fence(endpoint.generation);
        }
    }

    /// Builds a new standby after a takeover, or restarts one that died,
    /// in the background (the backend copies the new primary where it
    /// must); one at a time per database.
    fn rebuild(&self, lifecycle: Arc<Lifecycle>, database: String, before: Option<StandbyStatus>) {
        let Some(before) = before.filter(|s| s.wanted > 0) else {
            return;
        };
        if !crate::pool::lock(&self.rebuilding).insert(database.clone()) {
            return;
        }
        let rebuilding = self.rebuilding.clone();
        let name = ComputeName::main(&database);
        tokio::spawn(async move {
            let started = Instant::now();
            match lifecycle
                .backend()
                .set_standbys(&name, before.wanted, before.synchronous)
                .await
            {
                Ok(()) => tracing::info!(
                    database,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "a new standby streams"
                ),
                Err(e) => {
                    tracing::warn!(database, error = %e, "rebuilding the standby failed; the watch tries again")
                }
            }
            crate::pool::lock(&rebuilding).remove(&database);
        });
    }

    /// Fails over a dead primary that has a standby, every
    /// `config.check_interval`, until `stop` resolves. Only for databases
    /// this gateway acts for. A standby that is wanted but missing (after
    /// a takeover, or one that failed to build) is built again.
    pub async fn run_watch(
        self: Arc<Self>,
        config: FailoverConfig,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut watched: HashMap<String, Watched> = HashMap::new();
        let mut refreshed = Instant::now() - STATUS_REFRESH;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(config.check_interval) => {}
            }
            if refreshed.elapsed() >= STATUS_REFRESH {
                refreshed = Instant::now();
                self.refresh(&mut watched).await;
            }
            for (database, w) in watched.iter_mut() {
                let Some((_, endpoint)) = w
                    .lifecycle
                    .running()
                    .into_iter()
                    .find(|(db, _)| db == database)
                else {
                    continue; // suspended: nothing to watch
                };
                // A backend whose standby is a local process (it has a pid)
                // is looked at every check: a dead process is seen at once.
                // A remote one (RDS) only at the probe's pace: each look
                // is an API call.
                if w.status.pid.is_none() && w.last_probe.elapsed() < config.probe_interval {
                    continue;
                }
                let dead = match w
                    .lifecycle
                    .backend()
                    .compute_status(&ComputeName::main(database))
                    .await
                {
                    Ok(status) => status.state != ComputeState::Running,
                    Err(_) => false,
                };
                if let Ok(Some(status)) = w
                    .lifecycle
                    .backend()
                    .standby_status(&ComputeName::main(database))
                    .await
                {
                    w.status = status;
                }
                let mut preempt = None;
                let unhealthy = !dead && self.probe_due(w, &config) && {
                    w.last_probe = Instant::now();
                    let answer = w
                        .prober
                        .probe(&endpoint, config.probe_timeout)
                        .await
                        .map(ProbeAnswer::parse);
                    let healthy = answer.is_some();
                    let answer = answer.unwrap_or_default();
                    w.failed_probes = if healthy { 0 } else { w.failed_probes + 1 };
                    let reading = Reading {
                        ok: healthy,
                        incarnation: answer.incarnation,
                        wal_syncs: answer.wal_syncs,
                        primary_disk: w.status.primary_disk,
                        standby_disk: w.status.standby_disk,
                        replay_lag_bytes: w.status.replay_lag_bytes,
                        standby_elsewhere: w.remote,
                    };
                    let settings = health_settings(&config);
                    w.health.observe(Instant::now(), reading, &settings);
                    let verdict = w.health.verdict(&settings);
                    if verdict.warnings != w.warned {
                        for warning in verdict.warnings.iter().filter(|x| !w.warned.contains(x)) {
                            tracing::warn!(database = database.as_str(), "health: {warning}");
                        }
                        w.warned = verdict.warnings.clone();
                    }
                    preempt = verdict.switch_over.clone();
                    crate::pool::lock(&self.health)
                        .entry(database.clone())
                        .or_default()
                        .verdict = verdict;
                    config.probe_failures > 0 && w.failed_probes >= config.probe_failures
                };
                if let Some(reason) =
                    preempt.filter(|_| config.preempt && !unhealthy && w.status.streaming > 0)
                {
                    self.switch_over_before_failure(database, &reason).await;
                    w.health.reset();
                    w.warned.clear();
                    w.status.streaming = 0;
                    continue;
                }
                // A standby on another gateway takes over only when this
                // gateway is gone, and is rebuilt by its own gateway
                // (`placement`): here only the health model looks.
                if w.remote {
                    continue;
                }
                if !(dead || unhealthy) {
                    // A standby that died (or was never built) is brought
                    // back; meanwhile commits do not wait for it.
                    if w.status.wanted > 0 && w.status.streaming == 0 && w.status.pid.is_none() {
                        self.rebuild(
                            w.lifecycle.clone(),
                            database.clone(),
                            Some(w.status.clone()),
                        );
                    }
                    continue;
                }
                if w.status.streaming == 0 {
                    continue; // nothing to take over with
                }
                let why = if dead {
                    "the primary's process is gone"
                } else {
                    "the primary does not answer health queries"
                };
                let started = Instant::now();
                match w
                    .lifecycle
                    .takeover(database, Some(&endpoint), Takeover::Failover)
                    .await
                {
                    Ok(promoted) => {
                        self.fence(database, &promoted);
                        let ms = started.elapsed().as_millis() as u64;
                        self.failovers.fetch_add(1, Ordering::Relaxed);
                        self.last_failover_ms.store(ms, Ordering::Relaxed);
                        tracing::warn!(
                            database = database.as_str(),
                            reason = why,
                            elapsed_ms = ms,
                            generation = promoted.generation,
                            "failover: the standby is the primary"
                        );
                        w.failed_probes = 0;
                        w.health.reset();
                        if let Some(report) = crate::pool::lock(&self.health).get_mut(database) {
                            report.verdict = Verdict::default();
                        }
                        w.status.streaming = 0;
                        self.rebuild(
                            w.lifecycle.clone(),
                            database.clone(),
                            Some(w.status.clone()),
                        );
                    }
                    Err(e) => {
                        tracing::error!(database = database.as_str(), reason = why, error = %e, "failover failed; trying again at the next check")
                    }
                }
            }
        }
    }

    /// The switchover the health model called for, with its reason in
    /// the log, the health report and `/metrics`.
    async fn switch_over_before_failure(&self, database: &str, reason: &str) {
        tracing::warn!(
            database,
            reason,
            "switchover before failure: the health model calls for it"
        );
        match self.switchover(database).await {
            Ok(done) => {
                self.preemptive_switchovers.fetch_add(1, Ordering::Relaxed);
                // A new primary: a clean record.
                crate::pool::lock(&self.health).insert(
                    database.to_string(),
                    HealthReport {
                        verdict: Verdict::default(),
                        last_switchover: Some((
                            reason.to_string(),
                            ogel_plugin_kit::time::unix_now(),
                        )),
                    },
                );
                tracing::warn!(
                    database,
                    reason,
                    write_pause_ms = done.write_pause_ms,
                    generation = done.generation,
                    "switchover before failure: the standby is the primary"
                );
            }
            Err(e) => {
                tracing::error!(database, reason, error = %e, "switchover before failure failed; the watch goes on")
            }
        }
    }

    fn probe_due(&self, w: &Watched, config: &FailoverConfig) -> bool {
        config.probe_failures > 0 && w.last_probe.elapsed() >= config.probe_interval
    }

    /// Which local databases have standbys.
    async fn refresh(&self, watched: &mut HashMap<String, Watched>) {
        let mut seen = Vec::new();
        for (record, lifecycle) in self.databases.local_databases() {
            if !lifecycle.backend().capabilities().standby
                || self.databases.acts_for(&record).is_none()
            {
                continue;
            }
            let status = match lifecycle
                .backend()
                .standby_status(&ComputeName::main(&record.name))
                .await
            {
                Ok(Some(status)) if status.wanted > 0 => status,
                _ => continue,
            };
            seen.push(record.name.clone());
            let entry = watched
                .entry(record.name.clone())
                .or_insert_with(|| Watched {
                    lifecycle: lifecycle.clone(),
                    status: status.clone(),
                    failed_probes: 0,
                    last_probe: Instant::now(),
                    prober: Prober::default(),
                    health: Health::default(),
                    warned: Vec::new(),
                    remote: false,
                });
            // Standbys on another gateway: `placement` fails over and
            // rebuilds; the watch only feeds the health model.
            entry.remote = record.standby.is_some();
            entry.status = status;
            entry.lifecycle = lifecycle;
        }
        watched.retain(|db, _| seen.contains(db));
        crate::pool::lock(&self.health).retain(|db, _| seen.contains(db));
    }
}

/// A primary the watch checks.
struct Watched {
    lifecycle: Arc<Lifecycle>,
    status: StandbyStatus,
    failed_probes: u32,
    last_probe: Instant,
    prober: Prober,
    health: Health,
    /// Its standby is on another gateway.
    remote: bool,
    /// The warnings already logged (each is logged once while it holds).
    warned: Vec<String>,
}

fn health_settings(config: &FailoverConfig) -> HealthSettings {
    HealthSettings {
        window: config.health_window,
        max_restarts: config.max_restarts,
        horizon: config.disk_horizon,
    }
}

/// The health query: it answers, and says which incarnation of the
/// server answers. A crash restart (Postgres reinitialising after a child
/// crashed) discards the shared statistics, so their reset time changes;
/// `pg_stat_bgwriter` is readable by every role, where the processes'
/// own rows in `pg_stat_activity` are not.
///
/// With it, in the same row, the WAL fsyncs so far and their time
/// (`pg_stat_wal`, PostgreSQL 14–17, through JSON so that a server without
/// those columns — 18 moved them to `pg_stat_io` — answers without them).
const PROBE_SQL: &[u8] = b"SELECT coalesce((SELECT stats_reset::text FROM pg_stat_bgwriter), '') || '|' || coalesce((SELECT (to_jsonb(w)->>'wal_sync') || '|' || (to_jsonb(w)->>'wal_sync_time') FROM pg_stat_wal w), '')";

/// The incarnation alone, for servers that refuse [`PROBE_SQL`].
const INCARNATION_SQL: &[u8] = b"SELECT stats_reset::text FROM pg_stat_bgwriter";

/// What one probe read: the incarnation, and the WAL fsyncs.
#[derive(Debug, Default, PartialEq)]
struct ProbeAnswer {
    incarnation: Option<String>,
    wal_syncs: Option<(u64, f64)>,
}

impl ProbeAnswer {
    fn parse(value: Option<String>) -> ProbeAnswer {
        let Some(value) = value else {
            return ProbeAnswer::default();
        };
        let mut parts = value.split('|');
        let incarnation = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
        let syncs = parts.next().and_then(|n| n.parse::<u64>().ok());
        let ms = parts.next().and_then(|t| t.parse::<f64>().ok());
        ProbeAnswer {
            incarnation,
            // No timing (track_wal_io_timing off): no reading.
            wal_syncs: syncs.zip(ms).filter(|(n, ms)| *n == 0 || *ms > 0.0),
        }
    }
}

/// One kept connection to a primary for health queries (a login per
/// probe would cost a SCRAM exchange a second): opened again when it
/// breaks (a crash restart closes it) or the primary changes.
#[derive(Default)]
struct Prober {
    conn: Option<crate::pool::server_conn::ServerConn>,
    /// The server refused [`PROBE_SQL`]: [`INCARNATION_SQL`] only.
    basic: bool,
    generation: u64,
    /// The fault epoch the connection was opened in (`pool::faults`).
    epoch: u64,
}

impl Prober {
    /// `Some(incarnation)` when the primary answered within `timeout`.
    async fn probe(
        &mut self,
        endpoint: &ComputeEndpoint,
        timeout: Duration,
    ) -> Option<Option<String>> {
        let epoch = crate::pool::faults::epoch();
        if self.generation != endpoint.generation || self.epoch != epoch {
            self.conn = None;
            self.generation = endpoint.generation;
            self.epoch = epoch;
        }
        let answer = tokio::time::timeout(timeout, async {
            // A kept connection may have broken since (a crash restart):
            // one more try on a fresh one.
            for _ in 0..2 {
                let mut conn = match self.conn.take() {
                    Some(conn) => conn,
                    None => {
                        let link = crate::pool::compute_login::connect(endpoint, &[])
                            .await
                            .ok()?;
                        let registry = Arc::new(crate::pool::registry::Registry::default());
                        crate::pool::server_conn::ServerConn::new(
                            link,
                            endpoint.generation,
                            &registry,
                        )
                    }
                };
                let sql = if self.basic {
                    INCARNATION_SQL
                } else {
                    PROBE_SQL
                };
                match conn.query_value(sql).await {
                    Ok(value) => {
                        self.conn = Some(conn);
                        return Some(value);
                    }
                    // An SQL error (a server without pg_stat_wal, before
                    // 14): the incarnation alone from now on.
                    Err(e) if e.kind() == std::io::ErrorKind::Other && !self.basic => {
                        self.basic = true;
                        self.conn = Some(conn);
                    }
                    Err(_) => {}
                }
            }
            None
        })
        .await;
        match answer {
            Ok(answer) => answer,
            Err(_) => {
                self.conn = None; // it may be mid-answer
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProbeAnswer;

    #[test]
    fn probe_answers_parse_with_and_without_fsync_timing() {
        let both = ProbeAnswer::parse(Some("2026-12-08 01:00:00+00|120|35.5".into()));
        assert_eq!(both.incarnation.as_deref(), Some("2026-12-08 01:00:00+00"));
        assert_eq!(both.wal_syncs, Some((120, 35.5)));
        // PostgreSQL 18 (no such columns) and timing off: no fsync reading.
        let none = ProbeAnswer::parse(Some("2026-12-08 01:00:00+00|".into()));
        assert_eq!(none.wal_syncs, None);
        let untimed = ProbeAnswer::parse(Some("x|120|0".into()));
        assert_eq!(untimed.wal_syncs, None);
        assert_eq!(ProbeAnswer::parse(None), ProbeAnswer::default());
    }
}
