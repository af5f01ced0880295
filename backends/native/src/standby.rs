//! Hot standbys of a compute, and the takeover that makes one the primary.
//!
//! A standby is a streaming replica in a volume of its own,
//! `standbys/<compute>-<n>/pgdata`, made with `pg_basebackup` from the
//! running primary through a physical replication slot (`ogel_standby`,
//! so the primary keeps the WAL a restarting standby still needs, up to
//! `max_slot_wal_keep_size`). It starts right after its primary and stops
//! right after it (a primary's fast shutdown first sends its standbys all
//! its WAL). With `synchronous`, the primary runs with
//! `synchronous_standby_names = 'ogel_standby'` (ALTER SYSTEM, so it can
//! change without a restart): a commit is acknowledged once the standby
//! has flushed it, so it is on two disks.
//!
//! **Takeover** (`promote`): the old primary is fenced before anything is
//! promoted — on a failover its process group gets SIGKILL (a hung or
//! stopped postmaster included), on a switchover it stops cleanly and the
//! standby replays up to its shutdown checkpoint — and its volume is moved
//! to `trash/`, so nothing can start it again. Then `pg_promote`, then the
//! standby's volume is renamed to `databases/<compute>` (a symlink at its
//! old path keeps the running postmaster's absolute paths valid until its
//! next start), and the backend's generation goes up, so the gateway drops
//! every connection opened before. The promoted primary runs without
//! `synchronous_standby_names` until a new standby streams (as Patroni's
//! non-strict synchronous mode): waiting for a standby that does not exist
//! yet would stop every write.
//!
//! **The next standby** after a takeover is the old primary itself where
//! it can be: its fenced volume is kept in `trash/` (never started as a
//! primary again), moved into a standby volume and rewound with
//! `pg_rewind` (data checksums are on) to where the new primary's timeline
//! forked, so only what differs is copied; it then starts with
//! `standby.signal`, demoted. When that fails (the rewind errs, or the
//! gateway restarted and emptied `trash/`) a fresh `pg_basebackup` is made.
//!
//! The wanted count and the takeover count are in `standbys/<compute>.json`,
//! outside both volumes.

use crate::compute::{self, RunningCompute};
use crate::{io_error, NativeBackend};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use ogel_plugin_sdk::{BackendError, StandbyStatus, Takeover};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The standby's replication slot on the primary and its
/// `application_name` (what `synchronous_standby_names` names).
pub(crate) const STANDBY_NAME: &str = "ogel_standby";
/// WAL a slot may hold for a standby that is gone, before Postgres
/// invalidates the slot (the standby is then rebuilt).
const SLOT_WAL_KEEP: &str = "4GB";
/// How long a switchover waits for the standby to replay the primary's
/// last WAL.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A compute's recorded part in a remote standby arrangement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "role", rename_all = "snake_case")]
pub(crate) enum Remote {
    /// Served here; the standby is another gateway's.
    Primary { synchronous: bool },
    /// A standby of another gateway's primary, reached at `upstream`.
    Standby { upstream: ogel_plugin_sdk::Upstream },
}

/// What is wanted of a compute's standbys, kept in `standbys/<c>.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Wanted {
    pub(crate) count: u32,
    pub(crate) synchronous: bool,
    /// The standby's volume, under `standbys/`, once built.
    pub(crate) volume: Option<String>,
    /// Numbers volumes: a promoted standby's old path stays a symlink
    /// while its postmaster runs, so the next one needs a new name.
    pub(crate) next: u64,
    /// Times a standby took over.
    pub(crate) failovers: u64,
    /// The fenced old primary's volume, under `trash/`, kept until the
    /// next standby is built: it is rewound into that standby
    /// (`pg_rewind`) rather than copied afresh.
    pub(crate) rewind_from: Option<String>,
    /// This compute's part in a standby arrangement spanning two gateways
    /// (`remote`); absent in files written before it existed.
    pub(crate) remote: Option<Remote>,
    /// A remote standby's promotion has begun: `open` finishes it.
    pub(crate) promoting: bool,
    /// This node's copy was fenced (another gateway serves the compute):
    /// the volume's name under `trash/`.
    pub(crate) fenced: Option<String>,
}

impl Wanted {
    /// The standby took over: what made it one is over.
    pub(crate) fn promoted(&mut self) {
        self.remote = None;
        self.promoting = false;
    }
}

/// How long a reading of `pg_stat_replication` is reused.
const REPLICATION_CACHE: Duration = Duration::from_secs(1);

/// A reading of a primary's replication: when, streaming, replay lag.
type Replication = (std::time::Instant, bool, Option<u64>);

/// Running standby processes, by compute.
#[derive(Default)]
pub(crate) struct Standbys {
    running: Mutex<HashMap<String, RunningCompute>>,
    /// The last reading of each primary's replication.
    replication: Mutex<HashMap<String, Replication>>,
    /// One takeover or rebuild per backend at a time.
    pub(crate) busy: tokio::sync::Mutex<()>,
}

impl Standbys {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningCompute>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn seen(&self, name: &str) -> Option<Replication> {
        self.replication
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    pub(crate) fn remember(&self, name: &str, (streaming, lag): (bool, Option<u64>)) {
        self.replication
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                (std::time::Instant::now(), streaming, lag),
            );
    }

    pub(crate) fn forget_replication(&self, name: &str) {
        self.replication
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The port of `name`'s standby if it runs.
    pub(crate) fn live_port(&self, name: &str) -> Option<u16> {
        let mut running = self.lock();
        let alive = running.get_mut(name).map(|c| c.is_alive());
        match alive {
            Some(true) => running.get(name).map(|c| c.port),
            Some(false) => {
                running.remove(name);
                None
            }
            None => None,
        }
    }
}

impl NativeBackend {
    pub(crate) fn standby_root(&self) -> PathBuf {
        self.root.join("standbys")
    }

    pub(crate) fn wanted_path(&self, name: &str) -> PathBuf {
        self.standby_root().join(format!("{name}.json"))
    }

    /// Computes with a `standbys/<compute>.json`.
    fn computes_with_standbys(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.standby_root()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().to_string();
                file.strip_suffix(".json").map(str::to_string)
            })
            .collect()
    }

    pub(crate) fn wanted(&self, name: &str) -> Wanted {
        std::fs::read(self.wanted_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn write_wanted(&self, name: &str, wanted: &Wanted) -> Result<(), BackendError> {
        let path = self.wanted_path(name);
        std::fs::create_dir_all(self.standby_root())
            .map_err(|e| io_error("create", &self.standby_root(), e))?;
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec(wanted)
            .map_err(|e| BackendError::internal(format!("encoding standby state: {e}")))?;
        std::fs::write(&tmp, body).map_err(|e| io_error("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error("write", &path, e))
    }

    pub(crate) fn standby_volume(&self, wanted: &Wanted) -> Option<PathBuf> {
        wanted.volume.as_ref().map(|v| self.standby_root().join(v))
    }

    /// The standby's volume if it holds a standby: a directory (not the
    /// symlink a promoted one leaves) with a data directory.
    pub(crate) fn built_standby(&self, wanted: &Wanted) -> Option<PathBuf> {
        self.standby_volume(wanted)
            .filter(|v| v.symlink_metadata().is_ok_and(|m| m.is_dir()) && v.join("pgdata").is_dir())
    }

    /// The owner recorded in `name`'s standby volume, if it has one.
    pub(crate) fn standby_owner(&self, name: &str) -> Option<String> {
        let volume = self.built_standby(&self.wanted(name))?;
        std::fs::read_to_string(volume.join("owner"))
            .ok()
            .map(|o| o.trim().to_string())
    }

    /// Whether `name` has a standby process running now.
    pub(crate) fn has_running_standby(&self, name: &str) -> bool {
        self.standbys.live_port(name).is_some()
    }

    /// `Backend::set_standbys`: builds or removes `name`'s standby. Also
    /// the repair after a takeover: a wanted standby that is missing is
    /// built again.
    pub(crate) async fn set_standbys(
        &self,
        name: &str,
        count: u32,
        synchronous: bool,
    ) -> Result<(), BackendError> {
        self.owner_of(name)?;
        if self.wanted(name).remote.is_some() {
            // The standby is another gateway's (`replicate`): nothing local
            // to keep, and synchronous replication is the gateway's to
            // change.
            if count == 0 {
                return Ok(());
            }
            return Err(BackendError::new(
                ogel_plugin_sdk::BackendErrorKind::InvalidRequest,
                format!("\"{name}\" has its standby on another gateway; detach it (`replicate` Detached) before adding a local one"),
            ));
        }
        if count > 1 {
            return Err(BackendError::new(
                ogel_plugin_sdk::BackendErrorKind::InvalidRequest,
                "the native backend keeps at most one standby per compute",
            ));
        }
        if name.contains('@') && count > 0 {
            return Err(BackendError::new(
                ogel_plugin_sdk::BackendErrorKind::InvalidRequest,
                "standbys are for a database's main branch; branches fail over by being made again",
            ));
        }
        // The primary runs first, outside the lock: one found dead with
        // its standby running is taken over there, under this same lock.
        let started = if count > 0 {
            Some(self.start(name).await?)
        } else {
            None
        };
        let _busy = self.standbys.busy.lock().await;
        let mut wanted = self.wanted(name);
        wanted.count = count;
        wanted.synchronous = synchronous && count > 0;
        self.write_wanted(name, &wanted)?;
        let Some(started) = started else {
            return self.remove_standby(name).await;
        };
        let port = self.live_port(name).unwrap_or(started);
        if self.standbys.live_port(name).is_none() {
            // Commits must not wait for a standby that is not there while
            // it is restarted or rebuilt (Patroni's non-strict mode).
            self.set_synchronous(name, port, false).await?;
        }
        if self.built_standby(&wanted).is_none() {
            self.build_standby(name, port, &mut wanted).await?;
        }
        if let Err(e) = self.start_standby(name, port).await {
            // A standby that cannot start is made afresh next time.
            self.stop_standby(name).await;
            let mut wanted = self.wanted(name);
            if let Some(volume) = self.standby_volume(&wanted) {
                self.delete_standby_volume(&volume)?;
            }
            wanted.volume = None;
            self.write_wanted(name, &wanted)?;
            return Err(e);
        }
        self.set_synchronous(name, port, wanted.synchronous).await
    }

    /// Stops and deletes `name`'s standby and its slot.
    async fn remove_standby(&self, name: &str) -> Result<(), BackendError> {
        let mut wanted = self.wanted(name);
        if let Some(port) = self.live_port(name) {
            self.set_synchronous(name, port, false).await?;
            let client = self.superuser(port, "postgres").await?;
            let _ = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&STANDBY_NAME],
                )
                .await;
        }
        self.stop_standby(name).await;
        if let Some(volume) = self.standby_volume(&wanted) {
            self.delete_standby_volume(&volume)?;
        }
        if let Some(old_primary) = self.rewind_source(&wanted) {
            self.delete_in_background(old_primary);
        }
        wanted.rewind_from = None;
        wanted.volume = None;
        if wanted.count == 0 {
            let _ = std::fs::remove_file(self.wanted_path(name));
            Ok(())
        } else {
            self.write_wanted(name, &wanted)
        }
    }

    /// Forgets `name`'s standby entirely (the compute is deleted or
    /// replaced).
    pub(crate) async fn drop_standby(&self, name: &str) {
        let wanted = self.wanted(name);
        self.stop_standby(name).await;
        if let Some(volume) = self.standby_volume(&wanted) {
            if let Err(e) = self.delete_standby_volume(&volume) {
                tracing::warn!(compute = name, error = %e, "could not delete a standby volume");
            }
        }
        if let Some(old_primary) = self.rewind_source(&wanted) {
            self.delete_in_background(old_primary);
        }
        let _ = std::fs::remove_file(self.wanted_path(name));
    }

    pub(crate) fn delete_standby_volume(&self, volume: &Path) -> Result<(), BackendError> {
        // A promoted standby's old path is a symlink to the compute's
        // volume: only the link goes.
        if volume.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            return std::fs::remove_file(volume).map_err(|e| io_error("delete", volume, e));
        }
        if !volume.exists() {
            return Ok(());
        }
        self.storage
            .delete_volume(volume)
            .map_err(|e| io_error("delete", volume, e))
    }

    /// `pg_basebackup` of the running primary into a new volume, through
    /// the standby's slot (made afresh).
    async fn build_standby(
        &self,
        name: &str,
        primary_port: u16,
        wanted: &mut Wanted,
    ) -> Result<(), BackendError> {
        if let Some(old) = self.standby_volume(wanted) {
            self.stop_standby(name).await;
            self.delete_standby_volume(&old)?;
        }
        if let Some(old_primary) = self.rewind_source(wanted) {
            let rewound = self
                .rewind_standby(name, primary_port, wanted, &old_primary)
                .await;
            wanted.rewind_from = None;
            match rewound {
                Ok(()) => return self.write_wanted(name, wanted),
                Err(e) => {
                    tracing::warn!(compute = name, error = %e, "the old primary could not be rewound; cloning the new one instead");
                    if old_primary.exists() {
                        self.delete_in_background(old_primary);
                    }
                }
            }
        }
        let client = self.superuser(primary_port, "postgres").await?;
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&STANDBY_NAME],
            )
            .await
            .map_err(|e| BackendError::internal("could not drop the old standby slot").with_source(e))?;
        drop(client);
        let (volume_name, volume) = self.next_standby_volume(name, wanted)?;
        self.storage
            .create_volume(&volume)
            .map_err(|e| io_error("create", &volume, e))?;
        let started = std::time::Instant::now();
        let mut cmd = tokio::process::Command::new(self.bins.bin_dir.join("pg_basebackup"));
        cmd.args(["-h", "127.0.0.1", "-p", &primary_port.to_string()])
            .args(["-U", crate::secrets::SUPERUSER])
            .arg("-D")
            .arg(volume.join("pgdata"))
            .args(["-X", "stream", "-c", "fast", "-C", "-S", STANDBY_NAME])
            .env("PGPASSWORD", self.secret.superuser_password())
            .env("PGAPPNAME", "ogel standby build");
        if let Err(e) = crate::backup::run_tool(cmd, "pg_basebackup").await {
            let _ = self.storage.delete_volume(&volume);
            return Err(e);
        }
        self.finish_standby_volume(name, &volume, volume_name, wanted)?;
        tracing::info!(compute = name, elapsed_ms = started.elapsed().as_millis() as u64, volume = %volume.display(), "standby built");
        Ok(())
    }

    /// Makes a copied or rewound data directory in `volume` a standby:
    /// the files beside pgdata, `standby.signal`, the passfile, owners.
    fn finish_standby_volume(
        &self,
        name: &str,
        volume: &Path,
        volume_name: String,
        wanted: &mut Wanted,
    ) -> Result<(), BackendError> {
        // What sits beside pgdata in a compute's volume (owner, incarnation,
        // read-only role marker, parent) comes along: the standby becomes
        // this volume.
        let primary_dir = self.db_dir(name);
        for file in ["owner", "incarnation", "read_only_role", "parent"] {
            let from = primary_dir.join(file);
            if from.exists() {
                std::fs::copy(&from, volume.join(file)).map_err(|e| io_error("copy", &from, e))?;
            }
        }
        let pgdata = volume.join("pgdata");
        let _ = std::fs::remove_file(pgdata.join("postmaster.pid"));
        std::fs::write(pgdata.join("standby.signal"), b"")
            .map_err(|e| io_error("write", &pgdata, e))?;
        let passfile = volume.join("pgpass");
        std::fs::write(
            &passfile,
            format!(
                "127.0.0.1:*:*:{}:{}\n",
                crate::secrets::SUPERUSER,
                self.secret.superuser_password()
            ),
        )
        .map_err(|e| io_error("write", &passfile, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_error("protect", &passfile, e))?;
            std::fs::set_permissions(volume, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| io_error("open up", volume, e))?;
        }
        self.user
            .chown_tree(&pgdata)
            .and_then(|()| self.user.chown_tree(&passfile))
            .map_err(|e| io_error("hand over", volume, e))?;
        wanted.volume = Some(volume_name);
        self.write_wanted(name, wanted)
    }

    /// Starts `name`'s standby (if built and not running), streaming from
    /// the primary on `primary_port`.
    pub(crate) async fn start_standby(
        &self,
        name: &str,
        primary_port: u16,
    ) -> Result<(), BackendError> {
        if self.standbys.live_port(name).is_some() {
            return Ok(());
        }
        let wanted = self.wanted(name);
        let Some(volume) = self.built_standby(&wanted) else {
            return Ok(());
        };
        if let Some(Remote::Standby { upstream }) = &wanted.remote {
            return self.start_remote_standby(name, &volume, upstream).await;
        }
        let pgdata = volume.join("pgdata");
        if let Some(left) = RunningCompute::adopt(&pgdata) {
            self.standbys.lock().insert(name.to_string(), left);
            return Ok(());
        }
        let mut settings = self.compute_settings(name)?;
        settings.push((
            "primary_conninfo".into(),
            format!(
                "host=127.0.0.1 port={primary_port} user={} passfile={} application_name={STANDBY_NAME}",
                crate::secrets::SUPERUSER,
                volume.join("pgpass").display()
            ),
        ));
        settings.push(("primary_slot_name".into(), STANDBY_NAME.into()));
        settings.push(("hot_standby".into(), "on".into()));
        // After its primary dies, the startup process retries the stream
        // every this long, and a promotion waited for the retry: 5 s
        // (the default) in some takeovers, 5.1 s instead of 0.13 s.
        settings.push(("wal_retrieve_retry_interval".into(), "50ms".into()));
        let log_path = volume.join("postgres.log");
        let standby = self
            .launch(&pgdata, &log_path, &settings)
            .await
            .map_err(|e| {
                BackendError::unavailable(format!("the standby of \"{name}\" could not start: {e}"))
            })?;
        tracing::info!(
            compute = name,
            pid = standby.pid,
            port = standby.port,
            "standby running"
        );
        self.standbys.forget_replication(name);
        self.standbys.lock().insert(name.to_string(), standby);
        Ok(())
    }

    /// Stops `name`'s standby, if it runs.
    pub(crate) async fn stop_standby(&self, name: &str) {
        self.standbys.forget_replication(name);
        let standby = self.standbys.lock().remove(name);
        if let Some(standby) = standby {
            if let Err(e) = standby
                .stop(Duration::from_millis(self.config.stop_timeout_ms))
                .await
            {
                tracing::warn!(compute = name, error = %e, "stopping the standby");
            }
        }
    }

    /// Moves a promoted standby's `volume` into the compute's place; the
    /// running postmaster still names its old path (config file, data
    /// directory), so a symlink keeps it valid until its next start.
    /// `moved` is the crash point right after the move.
    pub(crate) fn move_promoted(
        &self,
        name: &str,
        volume: &Path,
        moved: &str,
    ) -> Result<PathBuf, BackendError> {
        let dir = self.db_dir(name);
        self.storage
            .rename_volume(volume, &dir)
            .map_err(|e| io_error("move into place", volume, e))?;
        crate::tiers::crash_point(moved);
        if let Err(e) = std::os::unix::fs::symlink(&dir, volume) {
            tracing::warn!(compute = name, error = %e, "no symlink at the promoted standby's old path; a reload before its next start reads no config");
        }
        Ok(dir)
    }

    /// Finishes takeovers a crash interrupted: a compute whose volume is
    /// gone (fenced) while its standby's is there gets the standby's
    /// volume, without `standby.signal`, so its next start ends recovery
    /// as a primary. The fenced volume is in `trash/` and never starts.
    pub(crate) fn recover_takeovers(&self) {
        for name in self.computes_with_standbys() {
            let name = name.as_str();
            let mut wanted = self.wanted(name);
            // A remote standby is only promoted when asked; one whose
            // promotion began is finished like a local takeover.
            if matches!(wanted.remote, Some(Remote::Standby { .. })) && !wanted.promoting {
                continue;
            }
            let Some(volume) = self.standby_volume(&wanted) else {
                continue;
            };
            let dir = self.db_dir(name);
            if dir.exists() {
                // Moved into place, not yet recorded: the symlink its
                // postmaster's paths need, then the record.
                if self.built_standby(&wanted).is_none() {
                    if volume.symlink_metadata().is_err() {
                        if let Err(e) = std::os::unix::fs::symlink(&dir, &volume) {
                            tracing::warn!(compute = name, error = %e, "no symlink at the promoted standby's old path");
                        }
                    }
                    wanted.volume = None;
                    wanted.failovers += 1;
                    wanted.promoted();
                    if let Err(e) = self.write_wanted(name, &wanted) {
                        tracing::warn!(compute = name, error = %e, "recording a finished takeover");
                    }
                }
                continue;
            }
            if self.built_standby(&wanted).is_none() {
                continue;
            }
            let pgdata = volume.join("pgdata");
            // A standby (or a just promoted one) still running there is
            // stopped: it restarts as the primary, recovering its WAL.
            kill_cluster(&pgdata);
            // Its lock file goes with it: a dead postmaster left unreaped
            // (a zombie whose parent, the crashed gateway, is gone) still
            // answers kill(pid, 0), and Postgres would refuse to start.
            if compute::read_postmaster_pid(&pgdata)
                .is_some_and(|f| !compute::is_postgres_process(f.pid))
            {
                let _ = std::fs::remove_file(pgdata.join("postmaster.pid"));
            }
            let _ = std::fs::remove_file(pgdata.join("standby.signal"));
            if wanted.promoting {
                // A remote standby's copy carries its old primary's
                // synchronous setting, which the promotion clears.
                clear_synchronous_offline(&pgdata);
            }
            match self.storage.rename_volume(&volume, &dir) {
                Ok(()) => {
                    wanted.volume = None;
                    wanted.failovers += 1;
                    wanted.promoted();
                    if let Err(e) = self.write_wanted(name, &wanted) {
                        tracing::warn!(compute = name, error = %e, "recording a finished takeover");
                    }
                    tracing::warn!(
                        compute = name,
                        "finished a takeover a crash interrupted: the standby is the primary"
                    );
                }
                Err(e) => {
                    tracing::error!(compute = name, error = %e, "could not finish an interrupted takeover")
                }
            }
        }
    }

    /// Removes the symlinks left at promoted standbys' old paths: called
    /// before `name`'s primary starts, when no postmaster uses them.
    pub(crate) fn forget_promoted_paths(&self, name: &str) {
        let Ok(entries) = std::fs::read_dir(self.standby_root()) else {
            return;
        };
        let prefix = format!("{name}-");
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().to_string();
            let ours = file
                .strip_prefix(&prefix)
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            if ours
                && entry
                    .path()
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_symlink())
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Adopts standbys an earlier gateway left running.
    pub(crate) fn adopt_standbys(&self) {
        for name in self.computes_with_standbys() {
            let name = name.as_str();
            let wanted = self.wanted(name);
            let Some(volume) = self.built_standby(&wanted) else {
                continue;
            };
            if let Some(standby) = RunningCompute::adopt(&volume.join("pgdata")) {
                tracing::info!(
                    compute = name,
                    pid = standby.pid,
                    "adopted a running standby"
                );
                self.standbys.lock().insert(name.to_string(), standby);
            }
        }
    }

    /// Sets (or clears) `synchronous_standby_names` on the primary.
    pub(crate) async fn set_synchronous(
        &self,
        name: &str,
        port: u16,
        on: bool,
    ) -> Result<(), BackendError> {
        let client = self.superuser(port, "postgres").await?;
        let statements: Vec<String> = if on {
            vec![
                format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"),
                format!("ALTER SYSTEM SET max_slot_wal_keep_size = '{SLOT_WAL_KEEP}'"),
            ]
        } else {
            vec!["ALTER SYSTEM RESET synchronous_standby_names".to_string()]
        };
        alter_system(&client, name, &statements, "").await
    }

    /// `Backend::standby_status`.
    pub(crate) async fn standby_status(
        &self,
        name: &str,
    ) -> Result<Option<StandbyStatus>, BackendError> {
        let wanted = self.wanted(name);
        if let Some(remote) = &wanted.remote {
            return self.remote_standby_status(name, &wanted, remote).await;
        }
        self.owner_of(name)?;
        if wanted.count == 0 && wanted.failovers == 0 {
            return Ok(None);
        }
        let mut status = StandbyStatus {
            wanted: wanted.count,
            synchronous: wanted.synchronous,
            failovers: wanted.failovers,
            ..StandbyStatus::default()
        };
        let standby_port = self.standbys.live_port(name);
        status.pid = standby_port.and(self.standbys.lock().get(name).map(|c| c.pid));
        let built = self.built_standby(&wanted);
        if wanted.count > 0 && built.is_none() {
            status.note = Some("no standby yet: it is being built".into());
        }
        status.primary_disk = ogel_plugin_kit::disk::usage(&self.db_dir(name));
        status.standby_disk = built.and_then(|v| ogel_plugin_kit::disk::usage(&v));
        match (self.live_port(name), standby_port) {
            (Some(port), Some(_)) => {
                let (streaming, lag) = self.replication_or_last(name, port, &mut status).await;
                status.streaming = u32::from(streaming);
                status.replay_lag_bytes = lag;
                if !streaming && status.note.is_none() {
                    status.note = Some("the standby runs but is not streaming yet".into());
                }
            }
            (Some(_), None) if wanted.count > 0 && status.note.is_none() => {
                status.note = Some("the standby is not running".into());
            }
            // The primary is down: the standby is what there is to take
            // over, with everything it received.
            (None, Some(_)) if wanted.count > 0 => {
                status.streaming = 1;
                status.note = Some("the primary is not running".into());
            }
            _ => {}
        }
        Ok(Some(status))
    }

    /// The primary's replication now (streaming, replay lag); a primary
    /// that does not take logins right now (crash recovery) has the last
    /// reading, and `status` says it is old.
    pub(crate) async fn replication_or_last(
        &self,
        name: &str,
        port: u16,
        status: &mut StandbyStatus,
    ) -> (bool, Option<u64>) {
        match self.replication(name, port).await {
            Ok(seen) => seen,
            Err(e) => {
                status.note = Some(format!(
                    "the primary's replication could not be read just now ({e}); last reading shown"
                ));
                self.standbys
                    .seen(name)
                    .map(|(_, streaming, lag)| (streaming, lag))
                    .unwrap_or((false, None))
            }
        }
    }

    /// Whether the standby streams from the primary on `port`, and its
    /// replay lag: read from `pg_stat_replication` at most once a second
    /// (the failover watch asks every check).
    pub(crate) async fn replication(
        &self,
        name: &str,
        port: u16,
    ) -> Result<(bool, Option<u64>), BackendError> {
        if let Some((at, streaming, lag)) = self.standbys.seen(name) {
            if at.elapsed() < REPLICATION_CACHE {
                return Ok((streaming, lag));
            }
        }
        let client = self.superuser(port, "postgres").await?;
        let row = client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                &[&STANDBY_NAME],
            )
            .await
            .map_err(|e| BackendError::internal("reading pg_stat_replication").with_source(e))?;
        let seen = match row {
            Some(row) => (true, row.get::<_, Option<i64>>(0).map(|b| b.max(0) as u64)),
            None => (false, None),
        };
        self.standbys.remember(name, seen);
        Ok(seen)
    }

    /// `Backend::promote`: fences the primary, promotes the standby and
    /// makes it `name`'s compute; returns its port.
    pub(crate) async fn takeover(&self, name: &str, why: Takeover) -> Result<u16, BackendError> {
        let _busy = self.standbys.busy.lock().await;
        let mut wanted = self.wanted(name);
        let volume = self.built_standby(&wanted).ok_or_else(|| {
            BackendError::unavailable(format!(
                "\"{name}\" has no standby to take over; add one with `ogel db standby {} add`",
                crate::branches::database_of(name)
            ))
        })?;
        let started = std::time::Instant::now();
        // 1. Fence: the old primary takes no write from here on.
        let (fence_lsn, fenced) = self.fence_primary(name, why, wanted.count > 0).await?;
        if let Some(fenced) = fenced {
            // Kept for the next standby (rewound), recorded before anything
            // else can fail.
            wanted.rewind_from = Some(fenced);
            self.write_wanted(name, &wanted)?;
        }
        crate::tiers::crash_point("takeover-fenced");
        // 2. The standby: running, caught up (switchover), promoted.
        let primary_port = 1; // nothing listens: it must not reconnect
        if self.standbys.live_port(name).is_none() {
            self.start_standby(name, primary_port).await?;
        }
        let port = self.standbys.live_port(name).ok_or_else(|| {
            BackendError::unavailable(format!("the standby of \"{name}\" is not running"))
        })?;
        let client = self.superuser(port, "postgres").await?;
        if let Some(lsn) = fence_lsn {
            wait_replayed(&client, &lsn, CATCH_UP_TIMEOUT).await?;
        }
        promote_and_unsync(&client, name).await?;
        drop(client);
        crate::tiers::crash_point("takeover-promoted");
        // 3. The standby's volume becomes the compute's.
        let dir = self.move_promoted(name, &volume, "takeover-moved")?;
        let standby = self.standbys.lock().remove(name);
        if let Some(standby) = standby {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.lock_computes().insert(name.to_string(), standby);
        }
        let _ = std::fs::remove_file(dir.join("pgdata").join("standby.signal"));
        wanted.volume = None;
        wanted.failovers += 1;
        self.write_wanted(name, &wanted)?;
        tracing::warn!(compute = name, why = ?why, elapsed_ms = started.elapsed().as_millis() as u64, "standby promoted; the old primary is fenced");
        Ok(port)
    }

    /// Stops `name`'s primary for good and moves its volume out of reach.
    /// On a switchover, returns the LSN the standby must replay first.
    async fn fence_primary(
        &self,
        name: &str,
        why: Takeover,
        keep: bool,
    ) -> Result<(Option<String>, Option<String>), BackendError> {
        let pgdata = self.pgdata(name);
        let running = self.lock_computes().remove(name);
        let mut catch_up = None;
        match (why, running) {
            (Takeover::Switchover, Some(primary)) => {
                primary
                    .stop(Duration::from_millis(self.config.stop_timeout_ms))
                    .await
                    .map_err(|e| BackendError::internal(format!("stopping \"{name}\": {e}")))?;
                catch_up = Some(self.checkpoint_lsn(&pgdata)?);
            }
            (_, primary) => {
                drop(primary);
                let dir = pgdata.clone();
                tokio::task::spawn_blocking(move || kill_cluster(&dir))
                    .await
                    .map_err(|e| BackendError::internal(format!("fencing \"{name}\": {e}")))?;
            }
        }
        let dir = self.db_dir(name);
        if dir.exists() {
            let trash = self.root.join("trash");
            std::fs::create_dir_all(&trash).map_err(|e| io_error("create", &trash, e))?;
            let fenced = trash.join(format!(
                "fenced-{name}-{}",
                ogel_plugin_kit::time::unix_millis()
            ));
            self.storage
                .rename_volume(&dir, &fenced)
                .map_err(|e| io_error("move away", &dir, e))?;
            if keep {
                let kept = fenced.file_name().map(|n| n.to_string_lossy().into_owned());
                return Ok((catch_up, kept));
            }
            self.delete_in_background(fenced);
        }
        Ok((catch_up, None))
    }

    pub(crate) fn delete_in_background(&self, volume: PathBuf) {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = storage.delete_volume(&volume) {
                tracing::warn!(path = %volume.display(), error = %e, "could not delete a fenced primary's volume");
            }
        });
    }

    /// The kept old primary's volume, if it is still there.
    pub(crate) fn rewind_source(&self, wanted: &Wanted) -> Option<PathBuf> {
        let volume = self.root.join("trash").join(wanted.rewind_from.as_ref()?);
        volume.join("pgdata").is_dir().then_some(volume)
    }

    /// Makes the fenced old primary `from` the new standby: moved into a
    /// standby volume and rewound with `pg_rewind` to where the new
    /// primary (on `primary_port`) diverged from it, so only the blocks
    /// that differ are copied. The standby's slot is made first, so the
    /// primary keeps the WAL from here on.
    async fn rewind_standby(
        &self,
        name: &str,
        primary_port: u16,
        wanted: &mut Wanted,
        from: &Path,
    ) -> Result<(), BackendError> {
        let client = self.superuser(primary_port, "postgres").await?;
        for sql in [
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            "SELECT pg_create_physical_replication_slot($1, true)",
        ] {
            client
                .execute(sql, &[&STANDBY_NAME])
                .await
                .map_err(|e| BackendError::internal("could not make the standby slot").with_source(e))?;
        }
        // A just-promoted primary's control file still names the old
        // timeline until its first checkpoint; pg_rewind reads it there.
        client.batch_execute("CHECKPOINT").await.map_err(|e| {
            BackendError::internal("could not checkpoint the new primary").with_source(e)
        })?;
        drop(client);
        let (volume_name, volume) = self.next_standby_volume(name, wanted)?;
        self.storage
            .rename_volume(from, &volume)
            .map_err(|e| io_error("move into place", from, e))?;
        let started = std::time::Instant::now();
        let pgdata = volume.join("pgdata");
        let mut cmd = tokio::process::Command::new(self.bins.bin_dir.join("pg_rewind"));
        cmd.arg("--target-pgdata")
            .arg(&pgdata)
            .arg("--source-server")
            .arg(format!(
                "host=127.0.0.1 port={primary_port} user={} dbname=postgres application_name='ogel standby rewind'",
                crate::secrets::SUPERUSER
            ))
            .env("PGPASSWORD", self.secret.superuser_password())
            .current_dir("/");
        // Postgres refuses root: the rewind (and the crash recovery it
        // runs first on a killed primary) runs as the compute user.
        self.user.apply_tokio(&mut cmd);
        if let Err(e) = crate::backup::run_tool(cmd, "pg_rewind").await {
            self.delete_in_background(volume);
            return Err(e);
        }
        self.finish_standby_volume(name, &volume, volume_name, wanted)?;
        tracing::info!(compute = name, elapsed_ms = started.elapsed().as_millis() as u64, volume = %volume.display(), "standby rewound from the old primary");
        Ok(())
    }

    /// A new standby volume's name and path (`standbys/<name>-<n>`).
    pub(crate) fn next_standby_volume(
        &self,
        name: &str,
        wanted: &mut Wanted,
    ) -> Result<(String, PathBuf), BackendError> {
        wanted.next += 1;
        let volume_name = format!("{name}-{}", wanted.next);
        let volume = self.standby_root().join(&volume_name);
        std::fs::create_dir_all(self.standby_root())
            .map_err(|e| io_error("create", &self.standby_root(), e))?;
        // A symlink a promoted standby left, or a volume a build
        // interrupted by a crash left before it was recorded: not in use.
        match volume.symlink_metadata() {
            Ok(m) if m.is_symlink() => {
                let _ = std::fs::remove_file(&volume);
            }
            Ok(_) => self
                .storage
                .delete_volume(&volume)
                .map_err(|e| io_error("delete a leftover", &volume, e))?,
            Err(_) => {}
        }
        Ok((volume_name, volume))
    }
}

/// Promotes the standby `client` is connected to (waiting up to 60 s),
/// then clears `synchronous_standby_names`: until a new standby streams, a
/// promoted primary must not wait for one.
pub(crate) async fn promote_and_unsync(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<(), BackendError> {
    let promoted: bool = client
        .query_one("SELECT pg_promote(true, 60)", &[])
        .await
        .map_err(|e| BackendError::unavailable("pg_promote failed").with_source(e))?
        .get(0);
    if !promoted {
        return Err(BackendError::unavailable(format!(
            "the standby of \"{name}\" did not finish its promotion within 60 s; retry the promote"
        )));
    }
    for sql in [
        "ALTER SYSTEM RESET synchronous_standby_names",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(sql).await.map_err(|e| {
            BackendError::internal("clearing synchronous_standby_names").with_source(e)
        })?;
    }
    Ok(())
}

/// SIGKILL to every process of the cluster in `pgdata` — the postmaster
/// and each child, found by their working directory (the data directory:
/// Postgres chdirs there). Children call `setsid`, so a process group
/// misses them, and after the postmaster dies they are orphans that may
/// still be mid-commit or mid-archive. Returns once none is left.
pub(crate) fn kill_cluster(pgdata: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::metadata(pgdata) else {
        return;
    };
    let id = (dir.dev(), dir.ino());
    for _ in 0..2000 {
        let mut left = 0;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                let cwd = std::fs::metadata(entry.path().join("cwd"));
                if !cwd.is_ok_and(|m| (m.dev(), m.ino()) == id) || is_zombie(pid) {
                    continue;
                }
                left += 1;
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if left == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    tracing::warn!(pgdata = %pgdata.display(), "processes of a fenced cluster are still there after 2 s");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Waits until the standby has replayed `lsn`.
async fn wait_replayed(
    client: &tokio_postgres::Client,
    lsn: &str,
    timeout: Duration,
) -> Result<(), BackendError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done: bool = client
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .map_err(|e| {
                BackendError::unavailable("reading the standby's replay position").with_source(e)
            })?
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
        if done {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BackendError::unavailable(format!(
                "the standby did not replay up to {lsn} within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Drops `synchronous_standby_names` from a stopped cluster's
/// `postgresql.auto.conf` (what `ALTER SYSTEM RESET` does while it runs).
pub(crate) fn clear_synchronous_offline(pgdata: &Path) {
    let path = pgdata.join("postgresql.auto.conf");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("synchronous_standby_names"))
        .collect();
    if kept.len() == text.lines().count() {
        return;
    }
    let body = format!("{}\n", kept.join("\n"));
    // Rewritten in place: the file keeps its owner (the compute user).
    if let Err(e) = std::fs::write(&path, body) {
        tracing::warn!(path = %path.display(), error = %e, "could not clear synchronous_standby_names; commits wait for a standby until it is cleared");
    }
}

/// Runs `statements` (ALTER SYSTEM, which cannot run in a transaction: one
/// Query each), then reloads the configuration.
pub(crate) async fn alter_system(
    client: &tokio_postgres::Client,
    name: &str,
    statements: &[String],
    then: &str,
) -> Result<(), BackendError> {
    for sql in statements
        .iter()
        .map(String::as_str)
        .chain(["SELECT pg_reload_conf()"])
    {
        client.batch_execute(sql).await.map_err(|e| {
            BackendError::internal(format!(
                "could not set synchronous replication on \"{name}\"{then}"
            ))
            .with_source(e)
        })?;
    }
    Ok(())
}
