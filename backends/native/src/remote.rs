//! Standbys on another gateway's disk: a compute's part in a standby
//! arrangement that spans two gateways of a cluster (`Backend::replicate`,
//! ABI 1.6). The gateway decides the roles, holding the cluster's fence,
//! and repeats them; this module only does what a role asks, idempotently.
//!
//! - **Primary** (`databases/<compute>` is served here): no local standby
//!   is kept, and `synchronous_standby_names` is `'ogel_standby'` or empty
//!   as told (ALTER SYSTEM, so it holds across restarts; applied at the
//!   next start when told while suspended). The native code never turns it
//!   off by itself in this role: a commit waits for the remote standby
//!   while it is away, until the gateway says otherwise.
//! - **Standby** (the primary is another gateway's): a streaming replica
//!   in `standbys/<compute>-<n>` as a local standby, made by
//!   `pg_basebackup -C -S ogel_standby` through the upstream gateway, which
//!   relays replication connections to the compute (SCRAM as `ogel_admin`:
//!   the master key, and so every derived password, is the cluster's). The
//!   password is only in a passfile in the volume. A copy this node still
//!   holds as a primary (an old primary coming back) is fenced first, as a
//!   takeover fences, and a fresh copy made (pg_rewind would need a
//!   superuser SQL connection, which the gateways do not relay).
//! - **Detached**: a remote standby is stopped and deleted; a copy of the
//!   compute held here is fenced (its processes killed) and set aside in
//!   `trash/`, so it is never served again.
//!
//! `promote` on a remote standby promotes it and makes it this node's
//! compute as a local takeover does (the volume moved to
//! `databases/<compute>`, a symlink at its old path), with a time-based
//! generation, since the old primary's was counted on another node. The
//! old primary's fencing is the gateway's part there. The role is kept in
//! `standbys/<compute>.json` (`Wanted::remote`).

use crate::standby::promote_and_unsync;
use crate::standby::{kill_cluster, Remote, Wanted, STANDBY_NAME};
use crate::{io_error, NativeBackend};
use ogel_plugin_sdk::{
    BackendError, BackendErrorKind, ComputeName, ReplicaRole, StandbyStatus, Takeover, Upstream,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// WAL a slot may hold for a standby that is away (as the local one).
const SLOT_WAL_KEEP: &str = "4GB";
/// The passfile beside a standby's pgdata.
const PASSFILE: &str = "pgpass";
/// The upstream gateway's CA beside a standby's pgdata.
const UPSTREAM_CA: &str = "upstream-ca.pem";

impl NativeBackend {
    /// `Backend::replicate`.
    pub(crate) async fn replicate(
        &self,
        compute: &ComputeName,
        role: ReplicaRole,
    ) -> Result<(), BackendError> {
        let name = compute.to_string();
        if name.contains('@') && !matches!(role, ReplicaRole::Detached) {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "standbys are for a database's main branch; branches fail over by being made again",
            ));
        }
        match role {
            ReplicaRole::Primary { synchronous } => {
                self.replicate_primary(&name, synchronous).await
            }
            ReplicaRole::Standby { upstream } => self.replicate_standby(&name, upstream).await,
            ReplicaRole::Detached => self.replicate_detached(&name).await,
        }
    }

    /// Whether `name` is a remote standby here.
    pub(crate) fn is_remote_standby(&self, name: &str) -> bool {
        matches!(self.wanted(name).remote, Some(Remote::Standby { .. }))
    }

    /// Whether this node holds `name` as a compute it could serve: its
    /// volume, or a warm or cold copy.
    fn holds_copy(&self, name: &str) -> bool {
        self.db_dir(name).exists() || self.marker(name).is_some()
    }

    async fn replicate_primary(&self, name: &str, synchronous: bool) -> Result<(), BackendError> {
        if !self.holds_copy(name) {
            return Err(BackendError::not_found(format!(
                "database \"{name}\" is not on this gateway, so it cannot be the primary here; send the role to the gateway that serves it"
            )));
        }
        let _busy = self.standbys.busy.lock().await;
        let mut wanted = self.wanted(name);
        let role = Remote::Primary { synchronous };
        if wanted.remote.as_ref() != Some(&role) {
            if matches!(wanted.remote, Some(Remote::Primary { .. })) {
                // Only the synchronous flag changes.
            } else {
                // Keep no standby here: a local one, or a remote one of an
                // earlier arrangement. The slot stays: the remote standby's
                // build replaces it.
                self.drop_local_standby(name, &mut wanted).await?;
            }
            wanted.remote = Some(role);
            wanted.fenced = None;
            self.write_wanted(name, &wanted)?;
            tracing::info!(
                compute = name,
                synchronous,
                "primary of a standby on another gateway"
            );
        }
        match self.live_port(name) {
            Some(port) => self.ensure_synchronous(name, port, synchronous).await,
            // Suspended: applied when it starts (`apply_remote_role`).
            None => Ok(()),
        }
    }

    /// Stops and deletes a standby kept here (and a kept old primary),
    /// without touching the primary's settings or slot.
    async fn drop_local_standby(
        &self,
        name: &str,
        wanted: &mut Wanted,
    ) -> Result<(), BackendError> {
        self.stop_standby(name).await;
        if let Some(volume) = self.standby_volume(wanted) {
            self.delete_standby_volume(&volume)?;
            tracing::info!(compute = name, volume = %volume.display(), "standby kept here deleted");
        }
        if let Some(old_primary) = self.rewind_source(wanted) {
            self.delete_in_background(old_primary);
        }
        wanted.volume = None;
        wanted.rewind_from = None;
        wanted.count = 0;
        wanted.synchronous = false;
        wanted.remote = None;
        wanted.promoting = false;
        Ok(())
    }

    /// At a primary's start: the synchronous setting its remote role asks
    /// for (it may have changed while it was suspended).
    pub(crate) async fn apply_remote_role(&self, name: &str, port: u16) {
        let Some(Remote::Primary { synchronous }) = self.wanted(name).remote else {
            return;
        };
        match self.ensure_synchronous(name, port, synchronous).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(compute = name, error = %e, "could not apply the remote standby's synchronous setting; the next replicate does")
            }
        }
    }

    /// Sets `synchronous_standby_names` (and the slot's WAL bound) on the
    /// primary on `port` when they differ from what is wanted.
    async fn ensure_synchronous(
        &self,
        name: &str,
        port: u16,
        on: bool,
    ) -> Result<(), BackendError> {
        let client = self.superuser(port, "postgres").await?;
        let row = client
            .query_one(
                "SELECT current_setting('synchronous_standby_names'), current_setting('max_slot_wal_keep_size')",
                &[],
            )
            .await
            .map_err(|e| {
                BackendError::unavailable(format!(
                    "could not read the replication settings of \"{name}\""
                ))
                .with_source(e)
            })?;
        let names: String = row.get(0);
        let keep: String = row.get(1);
        let wanted_names = if on { STANDBY_NAME } else { "" };
        let mut statements = Vec::new();
        if names != wanted_names {
            statements.push(if on {
                format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            } else {
                "ALTER SYSTEM RESET synchronous_standby_names".to_string()
            });
        }
        if keep != SLOT_WAL_KEEP {
            statements.push(format!(
                "ALTER SYSTEM SET max_slot_wal_keep_size = '{SLOT_WAL_KEEP}'"
            ));
        }
        if statements.is_empty() {
            return Ok(());
        }
        crate::standby::alter_system(&client, name, &statements, "; the next replicate retries")
            .await?;
        tracing::info!(
            compute = name,
            synchronous = on,
            "synchronous replication set"
        );
        Ok(())
    }

    async fn replicate_standby(&self, name: &str, upstream: Upstream) -> Result<(), BackendError> {
        if upstream.host.is_empty() || upstream.port == 0 || upstream.database.is_empty() {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "a standby's upstream needs a host, a port and a database",
            ));
        }
        if upstream.owner.is_empty() {
            return Err(BackendError::new(
                BackendErrorKind::InvalidRequest,
                "a standby's upstream needs the database's owner role",
            ));
        }
        let _busy = self.standbys.busy.lock().await;
        let mut wanted = self.wanted(name);
        // An old primary coming back: fenced before anything else, never
        // served again.
        if self.holds_copy(name) {
            self.drop_local_standby(name, &mut wanted).await?;
            wanted.fenced = self.fence_copy(name).await?;
            self.write_wanted(name, &wanted)?;
        }
        let role = Remote::Standby {
            upstream: upstream.clone(),
        };
        match &wanted.remote {
            Some(r) if *r == role => {}
            Some(Remote::Standby { .. }) => {
                // Another address for the same primary: restarted with it.
                self.stop_standby(name).await;
                wanted.remote = Some(role);
                self.write_wanted(name, &wanted)?;
                tracing::info!(compute = name, host = %upstream.host, port = upstream.port, "the remote standby follows a new upstream");
            }
            _ => {
                // A local standby followed a primary that is not served
                // here any more.
                self.drop_local_standby(name, &mut wanted).await?;
                wanted.remote = Some(role);
                self.write_wanted(name, &wanted)?;
            }
        }
        let volume = match self.built_standby(&wanted) {
            Some(volume) => volume,
            None => {
                self.build_remote_standby(name, &upstream, &mut wanted)
                    .await?
            }
        };
        if self.standbys.live_port(name).is_some() {
            return Ok(());
        }
        if let Err(e) = self.start_remote_standby(name, &volume, &upstream).await {
            // A standby that cannot start is made afresh next time.
            self.stop_standby(name).await;
            self.delete_standby_volume(&volume)?;
            wanted.volume = None;
            self.write_wanted(name, &wanted)?;
            return Err(e);
        }
        Ok(())
    }

    /// Fences this node's copy of `name`: every process of its data
    /// directory killed, its volume (and a warm copy) moved to `trash/`,
    /// the compute forgotten. Returns the name under `trash/`.
    async fn fence_copy(&self, name: &str) -> Result<Option<String>, BackendError> {
        let running = self.lock_computes().remove(name);
        drop(running);
        let pgdata = self.pgdata(name);
        tokio::task::spawn_blocking(move || kill_cluster(&pgdata))
            .await
            .map_err(|e| BackendError::internal(format!("fencing \"{name}\": {e}")))?;
        self.archiver.forget(name);
        let trash = self.root.join("trash");
        std::fs::create_dir_all(&trash).map_err(|e| io_error("create", &trash, e))?;
        let fenced = format!("fenced-{name}-{}", ogel_plugin_kit::time::unix_millis());
        let dir = self.db_dir(name);
        let mut moved = None;
        if dir.exists() {
            let to = trash.join(&fenced);
            self.storage
                .rename_volume(&dir, &to)
                .map_err(|e| io_error("move away", &dir, e))?;
            moved = Some(fenced.clone());
        }
        if let Some(marker) = self.marker(name) {
            // A warm or cold copy: its marker and warm file set aside too.
            let aside = trash.join(format!("{fenced}-tier"));
            std::fs::create_dir_all(&aside).map_err(|e| io_error("create", &aside, e))?;
            let body = serde_json::to_vec(&marker)
                .map_err(|e| BackendError::internal(format!("encoding a tier marker: {e}")))?;
            std::fs::write(aside.join("tier.json"), body)
                .map_err(|e| io_error("write", &aside, e))?;
            let warm = self.warm_file(name);
            if warm.exists() {
                std::fs::rename(&warm, aside.join("warm.tar.zst"))
                    .map_err(|e| io_error("move away", &warm, e))?;
            }
            self.drop_tier_copies(name);
            moved.get_or_insert(format!("{fenced}-tier"));
        }
        tracing::info!(compute = name, trash = ?moved, "this gateway's copy is fenced: its processes are gone and it is out of reach");
        Ok(moved)
    }

    /// Writes the passfile and the upstream's CA beside `volume`'s pgdata,
    /// readable only by their owner (the compute user once handed over).
    fn write_upstream_files(&self, volume: &Path, upstream: &Upstream) -> Result<(), BackendError> {
        let passfile = volume.join(PASSFILE);
        let password = self
            .secret
            .superuser_password()
            .replace('\\', "\\\\")
            .replace(':', "\\:");
        crate::secrets::write_private(
            &passfile,
            format!("*:*:*:{}:{password}\n", crate::secrets::SUPERUSER).as_bytes(),
        )
        .map_err(|e| io_error("write", &passfile, e))?;
        let ca = volume.join(UPSTREAM_CA);
        match &upstream.tls_ca_pem {
            Some(pem) => crate::secrets::write_private(&ca, pem.as_bytes())
                .map_err(|e| io_error("write", &ca, e))?,
            None => {
                let _ = std::fs::remove_file(&ca);
            }
        }
        Ok(())
    }

    /// Hands the upstream files to the compute user (the standby's
    /// walreceiver reads them).
    fn hand_over_upstream_files(&self, volume: &Path) -> Result<(), BackendError> {
        for file in [PASSFILE, UPSTREAM_CA] {
            let path = volume.join(file);
            if path.exists() {
                self.user
                    .chown_tree(&path)
                    .map_err(|e| io_error("hand over", &path, e))?;
            }
        }
        Ok(())
    }

    /// A fresh copy of the upstream primary in a new standby volume.
    async fn build_remote_standby(
        &self,
        name: &str,
        upstream: &Upstream,
        wanted: &mut Wanted,
    ) -> Result<PathBuf, BackendError> {
        if let Some(old) = self.standby_volume(wanted) {
            self.stop_standby(name).await;
            self.delete_standby_volume(&old)?;
            wanted.volume = None;
        }
        let (volume_name, volume) = self.next_standby_volume(name, wanted)?;
        self.storage
            .create_volume(&volume)
            .map_err(|e| io_error("create", &volume, e))?;
        let started = std::time::Instant::now();
        let built = self.copy_upstream(upstream, &volume).await;
        if let Err(e) = built {
            let _ = self.storage.delete_volume(&volume);
            // The volume's number is used: recorded so it is not reused.
            self.write_wanted(name, wanted)?;
            return Err(e);
        }
        self.finish_remote_volume(name, &volume, volume_name, upstream, wanted)?;
        tracing::info!(compute = name, elapsed_ms = started.elapsed().as_millis() as u64, volume = %volume.display(), host = %upstream.host, port = upstream.port, "remote standby built");
        Ok(volume)
    }

    /// Drops a leftover slot on the upstream, then `pg_basebackup`s it
    /// into `volume/pgdata`, making the slot afresh.
    async fn copy_upstream(&self, upstream: &Upstream, volume: &Path) -> Result<(), BackendError> {
        self.write_upstream_files(volume, upstream)?;
        let mut drop_slot = tokio::process::Command::new(self.bins.bin_dir.join("pg_receivewal"));
        drop_slot
            .arg("--drop-slot")
            .arg(format!("--slot={STANDBY_NAME}"))
            .arg("-d")
            .arg(upstream_conninfo(upstream, volume, "ogel standby build"))
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null());
        let out = drop_slot
            .output()
            .await
            .map_err(|e| BackendError::unavailable(format!("could not run pg_receivewal: {e}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("does not exist") {
            return Err(BackendError::unavailable(format!(
                "could not reach the primary at {}:{} to drop its old standby slot: {}; check that its gateway runs and relays replication connections",
                upstream.host,
                upstream.port,
                stderr.trim()
            )));
        }
        let mut cmd = tokio::process::Command::new(self.bins.bin_dir.join("pg_basebackup"));
        cmd.arg("-d")
            .arg(upstream_conninfo(upstream, volume, "ogel standby build"))
            .arg("-D")
            .arg(volume.join("pgdata"))
            .args(["-X", "stream", "-c", "fast", "-C", "-S", STANDBY_NAME])
            .env_remove("PGPASSWORD");
        crate::backup::run_tool(cmd, "pg_basebackup")
            .await
            .map_err(|e| {
                BackendError::unavailable(format!(
                    "copying the primary from {}:{} failed ({}); the next replicate tries again",
                    upstream.host, upstream.port, e.message
                ))
            })
    }

    /// Makes the copied data directory in `volume` a standby that, once
    /// promoted, serves like a database made here: `owner` from the
    /// upstream; no `incarnation` (its WAL goes to an archive of its own
    /// on this node: a new life of the name here), no `read_only_role`
    /// marker (the role is set up again with this node's check at the
    /// first endpoint), no `parent` (main branches only).
    fn finish_remote_volume(
        &self,
        name: &str,
        volume: &Path,
        volume_name: String,
        upstream: &Upstream,
        wanted: &mut Wanted,
    ) -> Result<(), BackendError> {
        std::fs::write(volume.join("owner"), &upstream.owner)
            .map_err(|e| io_error("write", volume, e))?;
        let pgdata = volume.join("pgdata");
        let _ = std::fs::remove_file(pgdata.join("postmaster.pid"));
        std::fs::write(pgdata.join("standby.signal"), b"")
            .map_err(|e| io_error("write", &pgdata, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(volume, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| io_error("open up", volume, e))?;
        }
        self.user
            .chown_tree(&pgdata)
            .map_err(|e| io_error("hand over", volume, e))?;
        self.hand_over_upstream_files(volume)?;
        wanted.volume = Some(volume_name);
        self.write_wanted(name, wanted)
    }

    /// Starts (or adopts) the remote standby in `volume`, streaming from
    /// `upstream`.
    pub(crate) async fn start_remote_standby(
        &self,
        name: &str,
        volume: &Path,
        upstream: &Upstream,
    ) -> Result<(), BackendError> {
        if self.standbys.live_port(name).is_some() {
            return Ok(());
        }
        let pgdata = volume.join("pgdata");
        if let Some(left) = crate::compute::RunningCompute::adopt(&pgdata) {
            self.standbys.lock().insert(name.to_string(), left);
            return Ok(());
        }
        // The address or CA may have changed since the build.
        self.write_upstream_files(volume, upstream)?;
        self.hand_over_upstream_files(volume)?;
        crate::ensure_replication_hba(&pgdata)?;
        // Archiving starts at promotion (`archive_settings` then); a
        // standby does not archive, but its command is the compute's.
        let marks = self.archive_dir(name);
        std::fs::create_dir_all(&marks).map_err(|e| io_error("create", &marks, e))?;
        let mut settings = self.settings_with(crate::archive::archive_command(&marks));
        settings.push((
            "primary_conninfo".into(),
            upstream_conninfo(upstream, volume, STANDBY_NAME),
        ));
        settings.push(("primary_slot_name".into(), STANDBY_NAME.into()));
        settings.push(("hot_standby".into(), "on".into()));
        settings.push(("wal_retrieve_retry_interval".into(), "50ms".into()));
        let standby = self
            .launch(&pgdata, &volume.join("postgres.log"), &settings)
            .await
            .map_err(|e| {
                BackendError::unavailable(format!(
                    "the standby of \"{name}\" could not start: {e}; the next replicate makes it afresh"
                ))
            })?;
        tracing::info!(
            compute = name,
            pid = standby.pid,
            port = standby.port,
            host = %upstream.host,
            upstream_port = upstream.port,
            "remote standby running"
        );
        self.standbys.forget_replication(name);
        self.standbys.lock().insert(name.to_string(), standby);
        Ok(())
    }

    async fn replicate_detached(&self, name: &str) -> Result<(), BackendError> {
        let _busy = self.standbys.busy.lock().await;
        let mut wanted = self.wanted(name);
        let was = wanted.remote.clone();
        if matches!(was, Some(Remote::Standby { .. })) {
            self.drop_local_standby(name, &mut wanted).await?;
            tracing::info!(compute = name, "remote standby stopped and deleted");
        }
        if self.holds_copy(name) {
            // Another gateway serves it (the gateway sends Detached to a
            // node holding a copy only then): fenced, set aside.
            self.drop_local_standby(name, &mut wanted).await?;
            wanted.fenced = self.fence_copy(name).await?;
        }
        wanted.remote = None;
        let nothing_left = wanted.volume.is_none()
            && wanted.count == 0
            && wanted.failovers == 0
            && wanted.fenced.is_none()
            && wanted.rewind_from.is_none();
        if nothing_left {
            let _ = std::fs::remove_file(self.wanted_path(name));
            Ok(())
        } else {
            self.write_wanted(name, &wanted)
        }
    }

    /// `Backend::promote` on a remote standby: promoted, moved into
    /// `databases/<name>`, made this node's compute with a generation above
    /// any the old primary's node gave. Returns its port.
    pub(crate) async fn promote_remote(
        &self,
        name: &str,
        why: Takeover,
    ) -> Result<u16, BackendError> {
        let _busy = self.standbys.busy.lock().await;
        let mut wanted = self.wanted(name);
        let Some(Remote::Standby { upstream }) = wanted.remote.clone() else {
            return Err(BackendError::unavailable(format!(
                "\"{name}\" has no standby of another gateway's primary here"
            )));
        };
        let volume = self.built_standby(&wanted).ok_or_else(|| {
            BackendError::unavailable(format!(
                "the standby of \"{name}\" is still being built; it cannot take over yet"
            ))
        })?;
        let started = std::time::Instant::now();
        if self.standbys.live_port(name).is_none() {
            self.start_remote_standby(name, &volume, &upstream).await?;
        }
        let port = self.standbys.live_port(name).ok_or_else(|| {
            BackendError::unavailable(format!("the standby of \"{name}\" is not running"))
        })?;
        // From here a crash is finished by `open` (`recover_takeovers`).
        wanted.promoting = true;
        self.write_wanted(name, &wanted)?;
        crate::tiers::crash_point("remote-promoting");
        let client = self.superuser(port, "postgres").await?;
        promote_and_unsync(&client, name).await?;
        drop(client);
        tracing::info!(compute = name, "remote standby promoted");
        crate::tiers::crash_point("remote-promoted");
        let dir = self.move_promoted(name, &volume, "remote-moved")?;
        let standby = self.standbys.lock().remove(name);
        if let Some(standby) = standby {
            // Above the old primary's, which another node counted.
            let now = ogel_plugin_kit::time::unix_millis();
            let current = self.generation.load(Ordering::SeqCst);
            self.generation
                .fetch_max(now.max(current + 1), Ordering::SeqCst);
            self.lock_computes().insert(name.to_string(), standby);
        }
        let _ = std::fs::remove_file(dir.join("pgdata").join("standby.signal"));
        // Its WAL goes to the cold tier from now on, as an archive of its
        // own here.
        if let Err(e) = self.archive_settings(name) {
            tracing::warn!(compute = name, error = %e, "the promoted compute's WAL is not archived until it restarts");
        }
        wanted.volume = None;
        wanted.failovers += 1;
        wanted.fenced = None;
        wanted.promoted();
        self.write_wanted(name, &wanted)?;
        tracing::warn!(compute = name, why = ?why, elapsed_ms = started.elapsed().as_millis() as u64, "the standby of another gateway's primary took over; it is this gateway's compute now");
        Ok(port)
    }

    /// `Backend::standby_status` of a compute in a remote arrangement.
    pub(crate) async fn remote_standby_status(
        &self,
        name: &str,
        wanted: &Wanted,
        remote: &Remote,
    ) -> Result<Option<StandbyStatus>, BackendError> {
        let mut status = StandbyStatus {
            wanted: 1,
            failovers: wanted.failovers,
            ..StandbyStatus::default()
        };
        match remote {
            Remote::Primary { synchronous } => {
                status.synchronous = *synchronous;
                status.primary_disk = ogel_plugin_kit::disk::usage(&self.db_dir(name));
                match self.live_port(name) {
                    Some(port) => {
                        let (streaming, lag) =
                            self.replication_or_last(name, port, &mut status).await;
                        status.streaming = u32::from(streaming);
                        status.replay_lag_bytes = lag;
                        if !streaming && status.note.is_none() {
                            status.note = Some(
                                "the standby on another gateway is not streaming (being built, restarting or away)"
                                    .into(),
                            );
                        }
                    }
                    None => {
                        status.note = Some(
                            "the primary is suspended; its replication is read while it runs"
                                .into(),
                        )
                    }
                }
            }
            Remote::Standby { .. } => {
                let built = self.built_standby(wanted);
                status.standby_disk = built.as_ref().and_then(|v| ogel_plugin_kit::disk::usage(v));
                let Some(port) = self.standbys.live_port(name) else {
                    status.note = Some(if built.is_some() {
                        "the standby is not running; the next replicate starts it".into()
                    } else {
                        "no standby yet: it is being built".into()
                    });
                    return Ok(Some(status));
                };
                status.pid = self.standbys.lock().get(name).map(|c| c.pid);
                match self.wal_receiver(name, port).await {
                    Ok((streaming, lag)) => {
                        status.streaming = u32::from(streaming);
                        status.replay_lag_bytes = lag;
                        if !streaming {
                            status.note = Some(
                                "the standby runs but is not streaming from its primary".into(),
                            );
                        }
                    }
                    Err(e) => {
                        status.note = Some(format!("the standby could not be read just now ({e})"));
                    }
                }
            }
        }
        Ok(Some(status))
    }

    /// Whether the standby on `port` streams (`pg_stat_wal_receiver`),
    /// and WAL it received but has not replayed; reused for 1 s.
    async fn wal_receiver(
        &self,
        name: &str,
        port: u16,
    ) -> Result<(bool, Option<u64>), BackendError> {
        if let Some((at, streaming, lag)) = self.standbys.seen(name) {
            if at.elapsed() < Duration::from_secs(1) {
                return Ok((streaming, lag));
            }
        }
        let client = self.superuser(port, "postgres").await?;
        let row = client
            .query_opt(
                "SELECT status = 'streaming', pg_wal_lsn_diff(greatest(latest_end_lsn, flushed_lsn), pg_last_wal_replay_lsn())::int8 FROM pg_stat_wal_receiver",
                &[],
            )
            .await
            .map_err(|e| BackendError::internal("reading pg_stat_wal_receiver").with_source(e))?;
        let seen = match row {
            Some(row) => (
                row.get::<_, Option<bool>>(0).unwrap_or(false),
                row.get::<_, Option<i64>>(1).map(|b| b.max(0) as u64),
            ),
            None => (false, None),
        };
        self.standbys.remember(name, seen);
        Ok(seen)
    }
}

/// The conninfo of `upstream` for a replication connection, with the
/// passfile and CA beside `volume`'s pgdata.
/// The setting that names the database to the serving gateway
/// (`ogel::route`'s replication routing reads it from `options`).
const ROUTE_SETTING: &str = "ogel.route";

fn upstream_conninfo(upstream: &Upstream, volume: &Path, application: &str) -> String {
    let mut parts = vec![
        ("host", upstream.host.clone()),
        ("port", upstream.port.to_string()),
        ("dbname", upstream.database.clone()),
        ("user", crate::secrets::SUPERUSER.to_string()),
        ("application_name", application.to_string()),
        ("passfile", volume.join(PASSFILE).display().to_string()),
        // Replication tools send `database=replication` whatever dbname
        // says: the serving gateway routes on this instead (a placeholder
        // setting the compute accepts and ignores).
        (
            "options",
            format!("-c {ROUTE_SETTING}={}", upstream.database),
        ),
    ];
    if upstream.tls_ca_pem.is_some() {
        parts.push(("sslmode", "verify-ca".into()));
        parts.push((
            "sslrootcert",
            volume.join(UPSTREAM_CA).display().to_string(),
        ));
    } else {
        parts.push(("sslmode", "prefer".into()));
    }
    parts
        .into_iter()
        .map(|(k, v)| format!("{k}={}", conninfo_quote(&v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A conninfo value, single-quoted (`\` and `'` escaped).
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standby::clear_synchronous_offline;

    #[test]
    fn synchronous_names_are_cleared_offline() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.auto.conf");
        std::fs::write(
            &conf,
            "# Do not edit this file manually!\nsynchronous_standby_names = 'ogel_standby'\nmax_slot_wal_keep_size = '4GB'\n",
        )
        .unwrap();
        clear_synchronous_offline(dir.path());
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(!text.contains("synchronous_standby_names"), "{text}");
        assert!(text.contains("max_slot_wal_keep_size = '4GB'"), "{text}");
    }

    #[test]
    fn the_conninfo_names_the_passfile_and_verifies_a_given_ca() {
        let mut upstream = Upstream {
            host: "gw-a".into(),
            port: 6432,
            database: "app".into(),
            tls_ca_pem: Some("PEM".into()),
            owner: "app_owner".into(),
        };
        let volume = Path::new("/data/standbys/app-1");
        let info = upstream_conninfo(&upstream, volume, STANDBY_NAME);
        assert_eq!(
            info,
            "host='gw-a' port='6432' dbname='app' user='ogel_admin' application_name='ogel_standby' passfile='/data/standbys/app-1/pgpass' options='-c ogel.route=app' sslmode='verify-ca' sslrootcert='/data/standbys/app-1/upstream-ca.pem'"
        );
        upstream.tls_ca_pem = None;
        let info = upstream_conninfo(&upstream, volume, STANDBY_NAME);
        assert!(info.ends_with("sslmode='prefer'"), "{info}");
        assert!(!info.contains("password"), "{info}");
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_quote("a b"), "'a b'");
        assert_eq!(conninfo_quote("it's\\"), "'it\\'s\\\\'");
    }

    #[test]
    fn old_standby_files_load_without_a_remote_role() {
        let wanted: Wanted =
            serde_json::from_str(r#"{"count":1,"synchronous":true,"volume":"app-1","next":1}"#)
                .unwrap();
        assert!(wanted.remote.is_none() && !wanted.promoting);
        let remote = Remote::Primary { synchronous: true };
        let text = serde_json::to_string(&remote).unwrap();
        assert_eq!(serde_json::from_str::<Remote>(&text).unwrap(), remote);
    }
}
