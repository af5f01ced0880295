//! Branches, snapshots and point-in-time branches of the native backend.
//!
//! A branch is a cluster of its own, a volume named `<db>@<branch>` next to
//! the database's (`databases/<db>` is the `main` branch), cloned from its
//! parent: every compute-level call (`ensure_running`, `suspend`, …) takes
//! such a compute name. A clone of a running compute is made in one atomic
//! step where the driver can (btrfs, ZFS: crash-consistent, like a power
//! cut); otherwise the compute is stopped (fast shutdown: a clean
//! checkpoint), cloned and started again.
//!
//! Snapshots are volumes under `snapshots/<db>/<id>`, each with a manifest
//! `snapshots/<db>/<id>.json`: the branch, the time, the WAL position, and
//! every file with its size and SHA-256. A snapshot whose files do not
//! match its manifest is refused, never served.
//!
//! Every compute archives its WAL into `archive/<compute name>/`. A branch
//! at an LSN or a time starts from the parent's newest snapshot before that
//! point (each branch gets one when it is made) and replays WAL from the
//! archive, then from the parent's `pg_wal`, up to the target, then promotes.

use crate::{io_error, NativeBackend};
use ogel_plugin_sdk::{
    BackendError, BackendErrorKind, BranchPoint, BranchSpec, ComputeName, SnapshotInfo,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Longest a point-in-time branch may take to replay WAL and promote.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The compute name (and volume name) of `branch` of `database` (`main`
/// is the database's own): [`ComputeName`]'s text form.
pub fn compute_name(database: &str, branch: &str) -> String {
    ComputeName::new(database, branch).to_string()
}

/// The database a compute's volume name belongs to.
pub fn database_of(name: &str) -> String {
    ComputeName::parse(name).database
}

/// A snapshot's manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Snapshot id.
    pub id: String,
    /// Database.
    pub database: String,
    /// Branch it was taken of.
    pub branch: String,
    /// When, in Unix milliseconds.
    pub created_at_ms: u64,
    /// The WAL position the snapshot holds everything up to.
    pub lsn: String,
    /// The owner role.
    pub owner: String,
    /// Every file of the cluster.
    pub files: Vec<FileEntry>,
    /// Whether `files` holds the checksums yet. Automatic base snapshots are
    /// sealed in the background right after they are taken (a snapshot is
    /// never written to), so making a branch does not wait for hashing.
    #[serde(default = "sealed_by_default")]
    pub sealed: bool,
    /// A base snapshot the backend took itself (deleted with its branch);
    /// snapshots users take are kept until the database goes.
    #[serde(default)]
    pub automatic: bool,
}

fn sealed_by_default() -> bool {
    true
}

/// One file of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to `pgdata`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

fn unix_ms() -> u64 {
    ogel_plugin_kit::time::unix_millis()
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, message)
}

/// Parses `X/Y` into a number for comparisons.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub(crate) fn parse_time_ms(at: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(at.trim().trim_end_matches('Z').trim_end_matches("+00:00"))
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

/// Lists every file under `root` (relative paths, sorted), with sizes and
/// SHA-256 digests.
pub fn hash_tree(root: &Path) -> std::io::Result<Vec<FileEntry>> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if rel == "postmaster.pid" || rel == "postmaster.opts" {
                    continue;
                }
                let mut file = std::fs::File::open(&path)?;
                let mut hash = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut size = 0;
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    hash.update(&buf[..n]);
                }
                let digest = hash.finalize();
                files.push(FileEntry {
                    path: rel,
                    size,
                    sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// How a snapshot differs from its manifest.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// The snapshot could not be read.
    #[error("could not read it: {0}")]
    Unreadable(#[source] std::io::Error),
    /// A file of the manifest is gone.
    #[error("file {0} is missing")]
    Missing(String),
    /// A file's bytes changed.
    #[error("file {0} does not match its checksum")]
    Changed(String),
    /// A file the manifest does not list.
    #[error("file {0} is not in the manifest")]
    Extra(String),
}

/// Checks a snapshot's files against its manifest; the first difference
/// found, if any.
pub fn verify(manifest: &Manifest, pgdata: &Path) -> Result<(), Corruption> {
    let actual = hash_tree(pgdata).map_err(Corruption::Unreadable)?;
    for want in &manifest.files {
        match actual.binary_search_by(|f| f.path.cmp(&want.path)) {
            Err(_) => return Err(Corruption::Missing(want.path.clone())),
            Ok(i) if actual[i] != *want => return Err(Corruption::Changed(want.path.clone())),
            Ok(_) => {}
        }
    }
    if let Some(extra) = actual.iter().find(|f| {
        manifest
            .files
            .binary_search_by(|w| w.path.cmp(&f.path))
            .is_err()
    }) {
        return Err(Corruption::Extra(extra.path.clone()));
    }
    Ok(())
}

impl NativeBackend {
    fn snapshots_dir(&self, database: &str) -> PathBuf {
        self.root.join("snapshots").join(database)
    }

    /// Where a compute archives its WAL.
    pub(crate) fn archive_dir(&self, name: &str) -> PathBuf {
        self.root.join("archive").join(name)
    }

    fn exists(&self, name: &str) -> bool {
        self.db_dir(name).join("owner").exists() || self.marker(name).is_some()
    }

    fn manifest(&self, database: &str, id: &str) -> Result<Manifest, BackendError> {
        if id.is_empty() || id.contains('/') || id.contains("..") {
            return Err(invalid(format!("invalid snapshot id \"{id}\"")));
        }
        let path = self.snapshots_dir(database).join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path).map_err(|_| {
            BackendError::not_found(format!(
                "database \"{database}\" has no snapshot \"{id}\"; see `ogel snapshot list {database}`"
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            BackendError::internal(format!(
                "the manifest of snapshot \"{id}\" is unreadable: {e}"
            ))
        })
    }

    pub(crate) fn manifests(&self, database: &str) -> Vec<Manifest> {
        let Ok(entries) = std::fs::read_dir(self.snapshots_dir(database)) else {
            return Vec::new();
        };
        let mut list: Vec<Manifest> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json")?.to_string();
                self.manifest(database, &id).ok()
            })
            .collect();
        list.sort_by_key(|m| m.created_at_ms);
        list
    }

    /// The WAL position a running compute has written up to.
    async fn current_lsn(&self, name: &str, port: u16) -> Result<String, BackendError> {
        let client = self.superuser(port, "postgres").await?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| {
                BackendError::internal(format!("reading the WAL position of {name}")).with_source(e)
            })?;
        Ok(row.get(0))
    }

    /// The last checkpoint of a stopped cluster (everything before it is in it).
    pub(crate) fn checkpoint_lsn(&self, pgdata: &Path) -> Result<String, BackendError> {
        let out = std::process::Command::new(self.bins.bin_dir.join("pg_controldata"))
            .arg(pgdata)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| BackendError::internal("could not run pg_controldata").with_source(e))?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| {
                BackendError::internal(format!(
                    "pg_controldata could not read {}",
                    pgdata.display()
                ))
            })
    }

    /// A superuser connection to a running compute.
    pub(crate) async fn superuser(
        &self,
        port: u16,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, BackendError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user(crate::secrets::SUPERUSER)
            .password(self.secret.superuser_password())
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
            BackendError::unavailable("could not log in to the compute").with_source(e)
        })?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Clones compute `src`'s volume into `dst` as a consistent image and
    /// returns the WAL position it holds everything up to. Running and the
    /// driver atomic: cloned live. Running otherwise: stopped, cloned,
    /// started again. Stopped: cloned.
    pub(crate) async fn consistent_clone(
        &self,
        src: &str,
        dst: &Path,
        key: &str,
    ) -> Result<String, BackendError> {
        let running = self.live_port(src);
        let atomic = self.storage.capabilities().atomic_snapshot;
        if let (Some(port), false) = (running, atomic) {
            // Not atomic: cloned while Postgres is in backup mode, so the
            // parent keeps serving.
            match self.online_clone(src, port, dst, key).await {
                Ok(lsn) => {
                    self.user
                        .chown_tree(dst)
                        .map_err(|e| io_error("hand to the compute user", dst, e))?;
                    return Ok(lsn);
                }
                Err(e) => {
                    tracing::warn!(compute = src, error = %e, cause = ?e.source, "an online clone failed; cloning it stopped instead");
                    let _ = self.storage.delete_volume(dst);
                    self.stop(src).await?;
                }
            }
        }
        self.clone_volume(&self.db_dir(src), dst, key).await?;
        let _ = std::fs::remove_file(dst.join("pgdata").join("postmaster.pid"));
        let lsn = match running {
            Some(port) if atomic => self.current_lsn(src, port).await?,
            Some(_) => {
                let lsn = self.checkpoint_lsn(&dst.join("pgdata"))?;
                self.start(src).await?;
                lsn
            }
            None => self.checkpoint_lsn(&dst.join("pgdata"))?,
        };
        let owned = self.user.owns(dst) && self.user.owns(&dst.join("pgdata"));
        if !(atomic && owned) {
            self.user
                .chown_tree(dst)
                .map_err(|e| io_error("hand to the compute user", dst, e))?;
        }
        Ok(lsn)
    }

    /// Clones running compute `src` between `pg_backup_start` and
    /// `pg_backup_stop`: the files may change while they are cloned, and
    /// the clone gets the backup label and, again, the WAL written since
    /// the backup started, so its first start recovers to a consistent
    /// point at or after the returned LSN (the backup's end). Fails when
    /// that WAL is no longer in `pg_wal` (the caller then clones it
    /// stopped).
    async fn online_clone(
        &self,
        src: &str,
        port: u16,
        dst: &Path,
        key: &str,
    ) -> Result<String, BackendError> {
        let failed = |what: &'static str| {
            move |e: tokio_postgres::Error| BackendError::internal(what).with_source(e)
        };
        let client = self.superuser(port, "postgres").await?;
        let start: String = client
            .query_one("SELECT pg_backup_start('ogel clone', true)::text", &[])
            .await
            .map_err(failed("pg_backup_start failed"))?
            .get(0);
        let cloned = self.clone_volume(&self.db_dir(src), dst, key).await;
        let stop = client
            .query_one(
                "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)",
                &[],
            )
            .await
            .map_err(failed("pg_backup_stop failed"));
        cloned?;
        let stop = stop?;
        let (lsn, label, spcmap): (String, String, String) =
            (stop.get(0), stop.get(1), stop.get(2));
        let first = parse_lsn(&start)
            .map(crate::archive::segment_of_lsn)
            .ok_or_else(|| BackendError::internal(format!("pg_backup_start gave {start}")))?;
        let (from, to) = (self.pgdata(src).join("pg_wal"), dst.join("pgdata/pg_wal"));
        let mut found_first = false;
        for entry in std::fs::read_dir(&from)
            .map_err(|e| io_error("read", &from, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(segment) = crate::archive::segment_of(&name) else {
                continue;
            };
            if segment >= first.as_str() {
                found_first |= segment == first.as_str();
                std::fs::copy(entry.path(), to.join(&name))
                    .map_err(|e| io_error("copy", &entry.path(), e))?;
            }
        }
        if !found_first {
            return Err(BackendError::unavailable(format!(
                "the WAL segment holding the clone's start ({start}) left pg_wal meanwhile"
            )));
        }
        let pgdata = dst.join("pgdata");
        std::fs::write(pgdata.join("backup_label"), label)
            .map_err(|e| io_error("write", &pgdata, e))?;
        if !spcmap.is_empty() {
            std::fs::write(pgdata.join("tablespace_map"), spcmap)
                .map_err(|e| io_error("write", &pgdata, e))?;
        }
        let _ = std::fs::remove_file(pgdata.join("postmaster.pid"));
        Ok(lsn)
    }

    async fn clone_volume(&self, src: &Path, dst: &Path, label: &str) -> Result<(), BackendError> {
        let storage = self.storage.clone();
        let (from, to, label) = (src.to_path_buf(), dst.to_path_buf(), label.to_string());
        let map = self.progress.clone();
        let key = label.clone();
        let result = tokio::task::spawn_blocking(move || {
            storage.clone_volume(&from, &to, &mut crate::clone_progress(&label, map))
        })
        .await;
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        result
            .map_err(|e| BackendError::internal("the clone task failed").with_source(e))?
            .map_err(|e| io_error("clone into", dst, e))
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), BackendError> {
        let dir = self.snapshots_dir(&manifest.database);
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|e| BackendError::internal("could not write a manifest").with_source(e))?;
        let partial = dir.join(format!("{}.json.partial", manifest.id));
        let path = dir.join(format!("{}.json", manifest.id));
        std::fs::write(&partial, text)
            .and_then(|_| std::fs::rename(&partial, &path))
            .map_err(|e| io_error("write", &path, e))
    }

    /// Hashes a snapshot's files into its manifest, if not done yet.
    async fn seal(&self, mut manifest: Manifest) -> Result<Manifest, BackendError> {
        if manifest.sealed {
            return Ok(manifest);
        }
        let pgdata = self
            .snapshots_dir(&manifest.database)
            .join(&manifest.id)
            .join("pgdata");
        let path = pgdata.clone();
        manifest.files = tokio::task::spawn_blocking(move || hash_tree(&path))
            .await
            .map_err(|e| BackendError::internal("the checksum task failed").with_source(e))?
            .map_err(|e| io_error("checksum", &pgdata, e))?;
        manifest.sealed = true;
        self.write_manifest(&manifest)?;
        Ok(manifest)
    }

    /// Takes a snapshot of compute `name` (database `database`, branch
    /// `branch`) with its manifest, hashed now (or, `background`, right
    /// after returning).
    pub(crate) async fn snapshot(
        &self,
        database: &str,
        branch: &str,
        background: bool,
    ) -> Result<Manifest, BackendError> {
        let name = compute_name(database, branch);
        if !self.exists(&name) {
            return Err(BackendError::not_found(format!(
                "database \"{database}\" has no branch \"{branch}\""
            )));
        }
        self.ensure_hot(&name).await?;
        let dir = self.snapshots_dir(database);
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let created_at_ms = unix_ms();
        let id = format!("{branch}-{created_at_ms}");
        let volume = dir.join(&id);
        let lsn = match self.consistent_clone(&name, &volume, &name).await {
            Ok(lsn) => lsn,
            Err(e) => {
                let _ = self.storage.delete_volume(&volume);
                return Err(e);
            }
        };
        let manifest = Manifest {
            id,
            database: database.to_string(),
            branch: branch.to_string(),
            created_at_ms,
            lsn,
            owner: self.owner_of(&name)?,
            files: Vec::new(),
            sealed: false,
            automatic: background,
        };
        self.write_manifest(&manifest)?;
        if !background {
            return self.seal(manifest).await;
        }
        let pgdata = volume.join("pgdata");
        let mut sealed = manifest.clone();
        let dir = self.snapshots_dir(database);
        tokio::task::spawn_blocking(move || match hash_tree(&pgdata) {
            Ok(files) => {
                sealed.files = files;
                sealed.sealed = true;
                let partial = dir.join(format!("{}.json.partial", sealed.id));
                let path = dir.join(format!("{}.json", sealed.id));
                let written = serde_json::to_vec_pretty(&sealed)
                    .map_err(std::io::Error::other)
                    .and_then(|text| std::fs::write(&partial, text))
                    .and_then(|_| std::fs::rename(&partial, &path));
                if let Err(e) = written {
                    tracing::warn!(snapshot = %sealed.id, error = %e, "could not seal a snapshot; it is sealed when first used");
                }
            }
            Err(e) => {
                tracing::warn!(snapshot = %sealed.id, error = %e, "could not hash a snapshot; it is sealed when first used")
            }
        });
        Ok(manifest)
    }

    /// Makes branch volume `target` from a verified snapshot.
    async fn clone_snapshot(
        &self,
        manifest: &Manifest,
        target: &Path,
        key: &str,
    ) -> Result<(), BackendError> {
        let manifest = &self.seal(manifest.clone()).await?;
        let volume = self.snapshots_dir(&manifest.database).join(&manifest.id);
        let pgdata = volume.join("pgdata");
        let checked = manifest.clone();
        tokio::task::spawn_blocking(move || verify(&checked, &pgdata))
            .await
            .map_err(|e| BackendError::internal("the verify task failed").with_source(e))?
            .map_err(|why| {
                BackendError::new(
                    BackendErrorKind::InvalidRequest,
                    format!(
                        "snapshot \"{}\" is corrupted ({why}); it will not be used",
                        manifest.id
                    ),
                )
            })?;
        self.clone_volume(&volume, target, key).await?;
        if !(self.storage.capabilities().atomic_snapshot && self.user.owns(target)) {
            self.user
                .chown_tree(target)
                .map_err(|e| io_error("hand to the compute user", target, e))?;
        }
        Ok(())
    }

    /// Writes the files that make a volume a finished branch.
    fn finish_branch(&self, dir: &Path, owner: &str, parent: &str) -> Result<(), BackendError> {
        let _ = std::fs::remove_file(dir.join("postgres.log"));
        // A new life: its WAL goes to an archive of its own (`archive`).
        let _ = std::fs::remove_file(dir.join("incarnation"));
        std::fs::write(dir.join("parent"), parent).map_err(|e| io_error("write", dir, e))?;
        // Written last: its presence marks a finished branch.
        std::fs::write(dir.join("owner"), owner).map_err(|e| io_error("write", dir, e))
    }

    /// Creates a branch; on error nothing is left.
    pub(crate) async fn branch(&self, spec: &BranchSpec) -> Result<(), BackendError> {
        if spec.branch == "main" || spec.branch.is_empty() || spec.branch.contains(['@', '/']) {
            return Err(invalid(format!("invalid branch name \"{}\"", spec.branch)));
        }
        let parent = compute_name(&spec.database, &spec.parent);
        let name = compute_name(&spec.database, &spec.branch);
        if !self.exists(&parent) {
            return Err(BackendError::not_found(format!(
                "database \"{}\" has no branch \"{}\"",
                spec.database, spec.parent
            )));
        }
        if self.exists(&name) {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!(
                    "branch \"{}\" of \"{}\" already exists",
                    spec.branch, spec.database
                ),
            ));
        }
        self.discard(&name).await?; // a create that did not finish
                                    // A branch is cloned from the parent's volume: a warm or cold
                                    // parent comes back first.
        self.ensure_hot(&parent).await?;
        let result = self.branch_inner(spec, &parent, &name).await;
        if result.is_err() {
            let _ = self.discard(&name).await;
        }
        result
    }

    async fn branch_inner(
        &self,
        spec: &BranchSpec,
        parent: &str,
        name: &str,
    ) -> Result<(), BackendError> {
        let dir = self.db_dir(name);
        let owner = self.owner_of(parent)?;
        match &spec.point {
            BranchPoint::Now => {
                self.consistent_clone(parent, &dir, name).await?;
            }
            BranchPoint::Snapshot { id } => {
                let manifest = self.manifest(&spec.database, id)?;
                self.clone_snapshot(&manifest, &dir, name).await?;
            }
            BranchPoint::Lsn { lsn } => {
                let target = parse_lsn(lsn).ok_or_else(|| {
                    invalid(format!("invalid LSN \"{lsn}\" (expected e.g. 0/16B3740)"))
                })?;
                let base = self
                    .manifests(&spec.database)
                    .into_iter()
                    .rfind(|m| {
                        m.branch == spec.parent && parse_lsn(&m.lsn).is_some_and(|l| l <= target)
                    })
                    .ok_or_else(|| no_base(spec, lsn))?;
                self.clone_snapshot(&base, &dir, name).await?;
                self.recover(
                    parent,
                    name,
                    parse_lsn(&base.lsn),
                    &format!("recovery_target_lsn = '{lsn}'"),
                )
                .await?;
            }
            BranchPoint::Timestamp { at } => {
                let target = parse_time_ms(at).ok_or_else(|| {
                    invalid(format!(
                        "invalid time \"{at}\" (expected RFC 3339, e.g. 2026-11-25T13:00:00Z)"
                    ))
                })?;
                let base = self
                    .manifests(&spec.database)
                    .into_iter()
                    .rfind(|m| m.branch == spec.parent && m.created_at_ms <= target)
                    .ok_or_else(|| no_base(spec, at))?;
                self.clone_snapshot(&base, &dir, name).await?;
                // Postgres's own form: `2026-11-25 13:00:00.123+00`.
                let at =
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(target))
                        .to_string()
                        .replace('T', " ")
                        .replace('Z', "+00");
                self.recover(
                    parent,
                    name,
                    parse_lsn(&base.lsn),
                    &format!("recovery_target_time = '{at}'"),
                )
                .await?;
            }
        }
        self.finish_branch(&dir, &owner, &spec.parent)?;
        // The branch's own base snapshot, for point-in-time branches of it.
        self.snapshot(&spec.database, &spec.branch, true).await?;
        Ok(())
    }

    /// Replays the parent's WAL into the fresh clone `name` up to `target`,
    /// then promotes it; the compute is left stopped.
    async fn recover(
        &self,
        parent: &str,
        name: &str,
        from: Option<u64>,
        target: &str,
    ) -> Result<(), BackendError> {
        let pgdata = self.pgdata(name);
        // The parent's WAL from the cold tier (what is not there yet is
        // still in its pg_wal), from the base snapshot's segment on.
        let archive = self.db_dir(name).join("restore-wal");
        let parent_dir = self.db_dir(parent);
        let (incarnation, _) = crate::archive::incarnation(&parent_dir, parent)
            .map_err(|e| io_error("read", &parent_dir, e))?;
        let _ = self.archiver.drain(parent, Duration::from_secs(10)).await;
        self.archiver
            .fetch_wal(
                &crate::archive::compute_prefix(parent, &incarnation),
                &archive,
                from.map(crate::archive::segment_of_lsn).as_deref(),
                |_| {},
            )
            .await
            .map_err(|e| {
                BackendError::unavailable(format!("could not fetch {parent}'s WAL: {e}"))
            })?;
        let parent_wal = self.pgdata(parent).join("pg_wal");
        let settings = format!(
            "\n# Point-in-time branch (OgelBase)\nrestore_command = 'cp \"{}/%f\" \"%p\" 2>/dev/null || cp \"{}/%f\" \"%p\"'\n{target}\nrecovery_target_action = 'promote'\n",
            archive.display(),
            parent_wal.display()
        );
        let auto_conf = pgdata.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&auto_conf).unwrap_or_default();
        conf.push_str(&settings);
        std::fs::write(&auto_conf, &conf).map_err(|e| io_error("write", &auto_conf, e))?;
        std::fs::write(pgdata.join("recovery.signal"), "")
            .map_err(|e| io_error("write", &pgdata, e))?;
        self.user
            .chown_tree(&self.db_dir(name))
            .map_err(|e| io_error("hand to the compute user", &pgdata, e))?;
        let log_tail = || {
            let log =
                std::fs::read_to_string(self.db_dir(name).join("postgres.log")).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("FATAL") || l.contains("recovery"))
                .rev()
                .take(2)
                .collect();
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        let unreachable = |e: BackendError| {
            BackendError::new(
                BackendErrorKind::InvalidRequest,
                format!(
                    "the branch could not be brought to that point: {}",
                    log_tail()
                ),
            )
            .with_source(e)
        };
        let port = self.start(name).await.map_err(unreachable)?;
        let client = self
            .superuser(port, "postgres")
            .await
            .map_err(unreachable)?;
        let deadline = std::time::Instant::now() + RECOVERY_TIMEOUT;
        loop {
            match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
                Ok(row) if !row.get::<_, bool>(0) => break,
                Ok(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Ok(_) => {
                    return Err(BackendError::unavailable(format!(
                        "replaying WAL for {name} did not finish within {RECOVERY_TIMEOUT:?}"
                    )))
                }
                Err(e) => {
                    return Err(unreachable(
                        BackendError::unavailable("the compute went away during recovery")
                            .with_source(e),
                    ))
                }
            }
        }
        drop(client);
        // The recovery settings only apply in recovery; drop them anyway.
        let cleaned = conf.replace(&settings, "");
        std::fs::write(&auto_conf, cleaned).map_err(|e| io_error("write", &auto_conf, e))?;
        self.stop(name).await?;
        let _ = std::fs::remove_dir_all(&archive);
        Ok(())
    }

    /// Deletes branch `branch` of `database` and its WAL archive.
    pub(crate) async fn drop_branch(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<(), BackendError> {
        if branch == "main" {
            return Err(invalid(
                "the main branch is deleted with its database (`ogel db delete`)",
            ));
        }
        let name = compute_name(database, branch);
        self.discard(&name).await?;
        let _ = std::fs::remove_dir_all(self.archive_dir(&name));
        for manifest in self.manifests(database) {
            if manifest.automatic && manifest.branch == branch {
                self.drop_snapshot(&manifest);
            }
        }
        Ok(())
    }

    pub(crate) fn drop_snapshot(&self, manifest: &Manifest) {
        let dir = self.snapshots_dir(&manifest.database);
        let volume = dir.join(&manifest.id);
        if let Err(e) = self.storage.delete_volume(&volume) {
            tracing::warn!(snapshot = %manifest.id, error = %e, "could not delete a snapshot");
        }
        let _ = std::fs::remove_file(dir.join(format!("{}.json", manifest.id)));
    }

    /// Resets a branch to its parent's current state.
    pub(crate) async fn reset(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        let name = compute_name(database, branch);
        let parent = std::fs::read_to_string(self.db_dir(&name).join("parent"))
            .map(|p| p.trim().to_string())
            .map_err(|_| {
                BackendError::not_found(format!(
                    "database \"{database}\" has no branch \"{branch}\" with a parent"
                ))
            })?;
        self.drop_branch(database, branch).await?;
        self.branch(&BranchSpec {
            database: database.to_string(),
            branch: branch.to_string(),
            parent,
            point: BranchPoint::Now,
        })
        .await
    }

    /// Replaces (or creates) branch `as_branch` with a snapshot's contents;
    /// a corrupted snapshot is refused and the branch stays as it was.
    pub(crate) async fn restore(
        &self,
        database: &str,
        id: &str,
        as_branch: &str,
    ) -> Result<(), BackendError> {
        let manifest = self.manifest(database, id)?;
        let name = compute_name(database, as_branch);
        let staging = self
            .root
            .join("trash")
            .join(format!("restore-{name}-{}", unix_ms()));
        std::fs::create_dir_all(self.root.join("trash"))
            .map_err(|e| io_error("create", &staging, e))?;
        if let Err(e) = self.clone_snapshot(&manifest, &staging, &name).await {
            let _ = self.storage.delete_volume(&staging);
            return Err(e);
        }
        let parent = std::fs::read_to_string(self.db_dir(&name).join("parent"))
            .map(|p| p.trim().to_string())
            .unwrap_or_else(|_| manifest.branch.clone());
        self.finish_branch(&staging, &manifest.owner, &parent)?;
        if as_branch == "main" {
            // Keep `parent` out of main.
            let _ = std::fs::remove_file(staging.join("parent"));
        }
        self.discard(&name).await?;
        self.storage
            .rename_volume(&staging, &self.db_dir(&name))
            .map_err(|e| io_error("move into place", &staging, e))
    }

    /// The snapshots of a database.
    pub(crate) fn snapshot_list(&self, database: &str) -> Vec<SnapshotInfo> {
        self.manifests(database)
            .into_iter()
            .map(|m| SnapshotInfo {
                id: m.id,
                database: m.database,
                branch: m.branch,
                created_at_unix: m.created_at_ms / 1000,
                size_bytes: m.sealed.then(|| m.files.iter().map(|f| f.size).sum()),
            })
            .collect()
    }

    /// Deletes a database's snapshots and the WAL archives of its computes.
    pub(crate) fn drop_history(&self, database: &str) {
        let dir = self.snapshots_dir(database);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path
                    .extension()
                    .is_some_and(|e| e == "json" || e == "partial")
                {
                    let _ = std::fs::remove_file(&path);
                } else if let Err(e) = self.storage.delete_volume(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a snapshot");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Ok(entries) = std::fs::read_dir(self.root.join("archive")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if database_of(&name) == database {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

fn no_base(spec: &BranchSpec, point: &str) -> BackendError {
    invalid(format!(
        "branch \"{}\" of \"{}\" has no snapshot from before {point}: point-in-time branches reach back to the branch's creation",
        spec.parent, spec.database
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lsns() {
        assert_eq!(compute_name("shop", "main"), "shop");
        assert_eq!(compute_name("shop", "dev"), "shop@dev");
        assert_eq!(database_of("shop@dev"), "shop");
        assert_eq!(database_of("shop"), "shop");
        assert_eq!(parse_lsn("0/16B3740"), Some(0x16B3740));
        assert!(parse_lsn("1/0").unwrap() > parse_lsn("0/FFFFFFFF").unwrap());
        assert_eq!(parse_lsn("nonsense"), None);
        assert!(parse_time_ms("2026-11-25T13:00:00Z").is_some());
        assert!(parse_time_ms("2026-11-25 13:00:00.123").is_some());
        assert!(parse_time_ms("yesterday").is_none());
    }

    #[test]
    fn a_changed_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("base/1"), b"hello").unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), b"15\n").unwrap();
        let manifest = Manifest {
            id: "x".into(),
            database: "d".into(),
            branch: "main".into(),
            created_at_ms: 0,
            lsn: "0/0".into(),
            owner: "o".into(),
            files: hash_tree(dir.path()).unwrap(),
            sealed: true,
            automatic: false,
        };
        assert_eq!(manifest.files.len(), 2);
        verify(&manifest, dir.path()).unwrap();
        std::fs::write(dir.path().join("base/1"), b"hellp").unwrap();
        assert!(verify(&manifest, dir.path())
            .unwrap_err()
            .to_string()
            .contains("base/1"));
        std::fs::write(dir.path().join("base/1"), b"hello").unwrap();
        std::fs::write(dir.path().join("extra"), b"").unwrap();
        assert!(verify(&manifest, dir.path())
            .unwrap_err()
            .to_string()
            .contains("extra"));
    }
}
