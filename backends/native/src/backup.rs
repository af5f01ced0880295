//! Backups in the cold tier, and restores from it alone.
//!
//! A backup is `pg_basebackup` of a running compute (tar format, no WAL:
//! the WAL it needs is in the archive, and the server waits until it is),
//! cut into 64 MiB parts, each sealed (`cold::seal`) and stored under
//! `computes/<compute>/<incarnation>/backups/<id>/`, with Postgres's own
//! `backup_manifest` beside them and our `manifest.json` written last: a
//! backup without `manifest.json` never finished and is never used.
//! On PostgreSQL 17+ a backup is incremental against the previous one of
//! the same incarnation (`summarize_wal = on`, `pg_basebackup
//! --incremental`), unless `full` is asked or no previous one exists; on
//! 15–16 every backup is full.
//!
//! A restore needs nothing local: it finds the backup (the newest before the
//! target, across every incarnation of the name), fetches its chain,
//! unpacks it, combines it (`pg_combinebackup`) when incremental, fetches
//! the WAL from the backup's start on, verifies (`pg_verifybackup`), then
//! replays to the target (or to the end of the archive) and promotes — in a
//! staging volume that only becomes the database when all of it worked.
//! During replay the compute listens on a private unix socket only, so the
//! gateway can set the roles' passwords to its own (a restore on another
//! machine has another master secret).

use crate::archive::{compute_prefix, segment_of_lsn, Fetched};
use crate::branches::{compute_name, parse_lsn};
use crate::cold::{open, seal, with_retry, ObjectStore, SealKey, StoreError};
use crate::compute::StartSpec;
use crate::{io_error, NativeBackend};
use ogel_plugin_kit::sql::quote_ident;
use ogel_plugin_sdk::{
    BackendError, BackendErrorKind, BackupInfo, BackupKind, Progress, RestoreSpec, RestoreTarget,
    Restored,
};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Size of one stored part of a backup's tar stream.
const PART_BYTES: usize = 64 << 20;
/// Parts sealed and stored, or fetched and opened, at once.
const PARALLEL: usize = 3;
/// How long one object's upload or fetch is retried.
const OBJECT_DEADLINE: Duration = Duration::from_secs(600);
/// How long listing what the store holds is retried (commands that list
/// fail fast, naming the store).
const LIST_DEADLINE: Duration = Duration::from_secs(20);
/// Longest a restore's WAL replay may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(3600);

/// `manifest.json` of a backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BackupManifest {
    pub id: String,
    pub database: String,
    pub branch: String,
    pub incarnation: String,
    pub kind: BackupKind,
    /// The backup this one is incremental to.
    pub parent: Option<String>,
    /// Ids from the full backup to this one.
    pub chain: Vec<String>,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
    pub start_lsn: String,
    pub end_lsn: String,
    pub timeline: u32,
    /// Bytes of the tar stream (before compression).
    pub size_bytes: u64,
    /// Bytes stored (sealed parts).
    pub stored_bytes: u64,
    pub parts: Vec<String>,
    pub pg_major: u32,
    pub owner: String,
}

impl BackupManifest {
    fn info(&self) -> BackupInfo {
        BackupInfo {
            id: self.id.clone(),
            database: self.database.clone(),
            branch: self.branch.clone(),
            kind: self.kind,
            parent: self.parent.clone(),
            chain: self.chain.clone(),
            created_at_unix: self.created_at_ms / 1000,
            finished_at_unix: self.finished_at_ms / 1000,
            start_lsn: self.start_lsn.clone(),
            end_lsn: self.end_lsn.clone(),
            size_bytes: self.size_bytes,
            stored_bytes: self.stored_bytes,
            pg_major: self.pg_major,
        }
    }
}

fn backup_prefix(compute_prefix: &str, id: &str) -> String {
    format!("{compute_prefix}/backups/{id}")
}

/// A sortable id: UTC time, then a random suffix.
fn new_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{:04x}", rand::random::<u16>())
}

fn unavailable(message: impl Into<String>) -> BackendError {
    BackendError::unavailable(message)
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, message)
}

/// Seals `content` and stores it under `key`; the stored size.
async fn put_sealed(
    store: Arc<dyn ObjectStore>,
    seal_key: Option<Arc<SealKey>>,
    key: String,
    content: Vec<u8>,
) -> Result<u64, BackendError> {
    let body = tokio::task::spawn_blocking(move || seal(&content, seal_key.as_deref()))
        .await
        .map_err(|e| BackendError::internal("sealing failed").with_source(e))?;
    let body = bytes::Bytes::from(body);
    let len = body.len() as u64;
    with_retry(&format!("upload {key}"), OBJECT_DEADLINE, || {
        store.put(&key, body.clone())
    })
    .await
    .map_err(|e| unavailable(format!("could not store {key}: {e}")))?;
    Ok(len)
}

/// Fetches the object `key` and opens it (checked, decompressed).
async fn get_opened(
    store: Arc<dyn ObjectStore>,
    seal_key: Option<Arc<SealKey>>,
    key: String,
) -> Result<Vec<u8>, BackendError> {
    let store_name = store.describe();
    get_opened_if_present(store, seal_key, key.clone())
        .await?
        .ok_or_else(|| unavailable(format!("could not fetch {key}: it is not in {store_name}")))
}

/// [`get_opened`], but `None` when the object is not (or no longer) in
/// the store.
async fn get_opened_if_present(
    store: Arc<dyn ObjectStore>,
    seal_key: Option<Arc<SealKey>>,
    key: String,
) -> Result<Option<Vec<u8>>, BackendError> {
    let body = match with_retry(&format!("fetch {key}"), OBJECT_DEADLINE, || store.get(&key)).await
    {
        Ok(body) => body,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(unavailable(format!("could not fetch {key}: {e}"))),
    };
    tokio::task::spawn_blocking(move || open(&key, &body, seal_key.as_deref()))
        .await
        .map_err(|e| BackendError::internal("opening failed").with_source(e))?
        .map(Some)
        .map_err(invalid)
}

/// Transfers running as tasks, at most [`PARALLEL`] at once, whose
/// results are taken in the order they were started. Dropped, it aborts
/// what still runs.
struct Window<T> {
    running: std::collections::VecDeque<tokio::task::JoinHandle<Result<T, BackendError>>>,
}

impl<T> Window<T> {
    fn new() -> Self {
        Window {
            running: std::collections::VecDeque::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.running.len() >= PARALLEL
    }

    fn push(&mut self, job: tokio::task::JoinHandle<Result<T, BackendError>>) {
        self.running.push_back(job);
    }

    /// The oldest job's result; `None` when none is left.
    async fn next(&mut self) -> Option<Result<T, BackendError>> {
        let job = self.running.pop_front()?;
        Some(match job.await {
            Ok(result) => result,
            Err(e) => Err(BackendError::internal("a transfer task failed").with_source(e)),
        })
    }
}

impl<T> Drop for Window<T> {
    fn drop(&mut self) {
        for job in &self.running {
            job.abort();
        }
    }
}

/// The start and end of a backup from Postgres's `backup_manifest`.
fn wal_range(manifest: &[u8]) -> Result<(u32, String, String), String> {
    let value: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| format!("backup_manifest is not JSON: {e}"))?;
    let ranges = value["WAL-Ranges"]
        .as_array()
        .ok_or("backup_manifest has no WAL-Ranges")?;
    let first = ranges.first().ok_or("backup_manifest has no WAL range")?;
    let last = ranges.last().unwrap_or(first);
    let timeline = last["Timeline"].as_u64().unwrap_or(1) as u32;
    let start = first["Start-LSN"].as_str().ok_or("no Start-LSN")?;
    let end = last["End-LSN"].as_str().ok_or("no End-LSN")?;
    Ok((timeline, start.to_string(), end.to_string()))
}

/// Runs a Postgres client tool; its stderr is the error.
pub(crate) async fn run_tool(
    mut cmd: tokio::process::Command,
    what: &str,
) -> Result<(), BackendError> {
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .await
        .map_err(|e| unavailable(format!("could not run {what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BackendError::internal(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NativeBackend {
    fn store(&self) -> &std::sync::Arc<dyn ObjectStore> {
        self.archiver.store()
    }

    fn note_progress(&self, key: &str, done: u64, total: u64) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.to_string(),
                Progress {
                    done_bytes: done,
                    total_bytes: total,
                },
            );
    }

    pub(crate) fn clear_progress(&self, key: &str) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    async fn put_sealed(&self, key: &str, content: Vec<u8>) -> Result<u64, BackendError> {
        put_sealed(
            self.store().clone(),
            self.archiver.seal_key_arc(),
            key.to_string(),
            content,
        )
        .await
    }

    async fn get_opened(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        get_opened(
            self.store().clone(),
            self.archiver.seal_key_arc(),
            key.to_string(),
        )
        .await
    }

    /// Every finished backup of compute `name`, all incarnations, oldest
    /// first.
    async fn manifests_of(&self, name: &str) -> Result<Vec<BackupManifest>, BackendError> {
        let prefix = format!("computes/{name}/");
        let objects = with_retry("list backups", LIST_DEADLINE, || self.store().list(&prefix))
            .await
            .map_err(|e| {
                unavailable(format!(
                    "could not list backups in {}: {e}",
                    self.store().describe()
                ))
            })?;
        let mut manifests = Vec::new();
        for object in objects {
            let Some(rest) = object.key.strip_prefix(&prefix) else {
                continue;
            };
            // <incarnation>/backups/<id>/manifest.json
            let parts: Vec<&str> = rest.split('/').collect();
            if parts.len() == 4 && parts[1] == "backups" && parts[3] == "manifest.json" {
                // Retention deletes a backup's manifest first: one gone
                // since the listing is a backup being expired, not an error.
                let Some(text) = get_opened_if_present(
                    self.store().clone(),
                    self.archiver.seal_key_arc(),
                    object.key.clone(),
                )
                .await?
                else {
                    continue;
                };
                let manifest: BackupManifest = serde_json::from_slice(&text).map_err(|e| {
                    invalid(format!("{} is not a backup manifest: {e}", object.key))
                })?;
                manifests.push(manifest);
            }
        }
        manifests.sort_by_key(|m| m.finished_at_ms);
        Ok(manifests)
    }

    /// `ogel backup create`: a backup of a branch into the cold tier.
    pub(crate) async fn backup_create(
        &self,
        database: &str,
        branch: &str,
        full: bool,
    ) -> Result<BackupInfo, BackendError> {
        let name = compute_name(database, branch);
        let owner = self.owner_of(&name)?;
        let port = self.start(&name).await?;
        let dir = self.db_dir(&name);
        let (incarnation, _) =
            crate::archive::incarnation(&dir, &name).map_err(|e| io_error("read", &dir, e))?;
        let prefix = compute_prefix(&name, &incarnation);
        let previous = self
            .manifests_of(&name)
            .await?
            .into_iter()
            .rfind(|m| m.incarnation == incarnation);
        let incremental_base = match previous {
            Some(p) if !full && self.bins.major >= 17 => Some(p),
            _ => None,
        };
        let id = new_id();
        let created_at_ms = ogel_plugin_kit::time::unix_millis();
        let staging = self.root.join("trash").join(format!("backup-{id}"));
        std::fs::create_dir_all(&staging).map_err(|e| io_error("create", &staging, e))?;
        let result = self
            .backup_into(
                &name,
                port,
                &staging,
                &prefix,
                &id,
                incremental_base.as_ref(),
            )
            .await;
        let _ = std::fs::remove_dir_all(&staging);
        self.clear_progress(&name);
        let (size_bytes, stored_bytes, parts, pg_manifest) = result?;
        let (timeline, start_lsn, end_lsn) = wal_range(&pg_manifest).map_err(invalid)?;
        let manifest = BackupManifest {
            id: id.clone(),
            database: database.to_string(),
            branch: branch.to_string(),
            incarnation,
            kind: if incremental_base.is_some() {
                BackupKind::Incremental
            } else {
                BackupKind::Full
            },
            parent: incremental_base.as_ref().map(|p| p.id.clone()),
            chain: match &incremental_base {
                Some(p) => {
                    let mut chain = p.chain.clone();
                    chain.push(id.clone());
                    chain
                }
                None => vec![id.clone()],
            },
            created_at_ms,
            finished_at_ms: ogel_plugin_kit::time::unix_millis(),
            start_lsn,
            end_lsn,
            timeline,
            size_bytes,
            stored_bytes,
            parts,
            pg_major: self.bins.major,
            owner,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackendError::internal("could not encode the manifest").with_source(e))?;
        // Written last: its presence makes the backup usable.
        self.put_sealed(
            &format!("{}/manifest.json", backup_prefix(&prefix, &id)),
            text,
        )
        .await?;
        tracing::info!(compute = %name, backup = %id, kind = ?manifest.kind, bytes = manifest.size_bytes, stored = manifest.stored_bytes, "backup stored in the cold tier");
        if let Err(e) = self.prune(&name).await {
            tracing::warn!(compute = %name, error = %e, "retention could not prune old backups; it tries again after the next backup");
        }
        Ok(manifest.info())
    }

    /// Runs pg_basebackup into `staging` and stores its parts; returns the
    /// tar size, the stored size, the part keys and Postgres's manifest.
    async fn backup_into(
        &self,
        name: &str,
        port: u16,
        staging: &Path,
        prefix: &str,
        id: &str,
        base: Option<&BackupManifest>,
    ) -> Result<(u64, u64, Vec<String>, Vec<u8>), BackendError> {
        let mut cmd = tokio::process::Command::new(self.bins.bin_dir.join("pg_basebackup"));
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", crate::secrets::SUPERUSER])
            .arg("-D")
            .arg(staging.join("out"))
            .args(["-F", "tar", "-X", "none", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", self.secret.superuser_password())
            .env("PGAPPNAME", "ogel backup");
        if let Some(base) = base {
            let previous = self
                .get_opened(&format!(
                    "{}/backup_manifest",
                    backup_prefix(prefix, &base.id)
                ))
                .await?;
            let path = staging.join("previous_manifest");
            std::fs::write(&path, previous).map_err(|e| io_error("write", &path, e))?;
            cmd.arg(format!("--incremental={}", path.display()));
        }
        self.note_progress(name, 0, 0);
        run_tool(cmd, "pg_basebackup").await?;
        let out = staging.join("out");
        let tar = out.join("base.tar");
        let pg_manifest_path = out.join("backup_manifest");
        let pg_manifest =
            std::fs::read(&pg_manifest_path).map_err(|e| io_error("read", &pg_manifest_path, e))?;
        let total = std::fs::metadata(&tar)
            .map_err(|e| io_error("read", &tar, e))?
            .len();
        let mut file = std::fs::File::open(&tar).map_err(|e| io_error("read", &tar, e))?;
        // Parts are read in order and sealed and stored PARALLEL at a time
        // (the window bounds the memory: PARALLEL parts).
        let (store, seal_key) = (self.store().clone(), self.archiver.seal_key_arc());
        let mut window = Window::new();
        let (mut parts, mut stored, mut done, mut eof) = (Vec::new(), 0, 0, false);
        loop {
            while !eof && !window.is_full() {
                let mut chunk = Vec::new();
                let len = (&mut file)
                    .take(PART_BYTES as u64)
                    .read_to_end(&mut chunk)
                    .map_err(|e| io_error("read", &tar, e))?;
                if len == 0 {
                    eof = true;
                    break;
                }
                let key = format!(
                    "{}/base.tar.{:05}",
                    backup_prefix(prefix, id),
                    parts.len() + window.running.len()
                );
                let (store, seal_key) = (store.clone(), seal_key.clone());
                window.push(tokio::spawn(async move {
                    let stored = put_sealed(store, seal_key, key.clone(), chunk).await?;
                    Ok((key, len as u64, stored))
                }));
            }
            let Some(part) = window.next().await else {
                break;
            };
            let (key, len, part_stored) = part?;
            done += len;
            stored += part_stored;
            parts.push(key);
            self.note_progress(name, done, total);
        }
        stored += self
            .put_sealed(
                &format!("{}/backup_manifest", backup_prefix(prefix, id)),
                pg_manifest.clone(),
            )
            .await?;
        Ok((total, stored, parts, pg_manifest))
    }

    /// Deletes the backups retention does not keep (`cold.retention`), and
    /// the WAL nothing kept needs: not what a kept backup replays, nor what
    /// a point-in-time branch of the compute may replay (from its oldest
    /// local snapshot on); an earlier incarnation's WAL goes once none of
    /// its backups is kept. A backup's `manifest.json` goes first, so a
    /// prune cut short leaves only unlisted leftovers, never a listed
    /// backup with parts missing.
    pub(crate) async fn prune(&self, name: &str) -> Result<(usize, usize), BackendError> {
        let retention = &self.config.cold.retention;
        let keep_for_ms = match retention.keep_for.as_deref() {
            Some(text) => Some(
                humantime::parse_duration(text)
                    .map_err(|e| invalid(format!("backup.keep_for \"{text}\": {e}")))?
                    .as_millis() as u64,
            ),
            None => None,
        };
        let manifests = self.manifests_of(name).await?;
        if manifests.is_empty() {
            return Ok((0, 0));
        }
        // Chains by their full backup, newest first.
        let mut chains: Vec<(String, u64)> = Vec::new();
        for m in &manifests {
            let head = m.chain.first().cloned().unwrap_or_else(|| m.id.clone());
            match chains.iter_mut().find(|(h, _)| *h == head) {
                Some((_, newest)) => *newest = (*newest).max(m.finished_at_ms),
                None => chains.push((head, m.finished_at_ms)),
            }
        }
        chains.sort_by_key(|c| std::cmp::Reverse(c.1));
        let now = ogel_plugin_kit::time::unix_millis();
        let kept: std::collections::HashSet<&str> = chains
            .iter()
            .enumerate()
            .filter(|(i, (_, newest))| {
                *i < retention.keep_full.max(1)
                    || keep_for_ms.is_some_and(|age| now.saturating_sub(*newest) <= age)
            })
            .map(|(_, (head, _))| head.as_str())
            .collect();
        let is_kept = |m: &BackupManifest| {
            kept.contains(m.chain.first().map(String::as_str).unwrap_or(m.id.as_str()))
        };
        let mut dropped_backups = 0;
        for m in manifests.iter().filter(|m| !is_kept(m)) {
            let prefix = backup_prefix(&prefix_of(m), &m.id);
            self.delete_object(&format!("{prefix}/manifest.json"))
                .await?;
            for part in &m.parts {
                self.delete_object(part).await?;
            }
            self.delete_object(&format!("{prefix}/backup_manifest"))
                .await?;
            dropped_backups += 1;
            tracing::info!(compute = %name, backup = %m.id, "backup expired by retention");
        }
        // WAL: per incarnation, everything before the oldest start it must
        // keep.
        let current = std::fs::read_to_string(self.db_dir(name).join("incarnation"))
            .ok()
            .and_then(|t| t.trim().rsplit_once(' ').map(|(_, id)| id.to_string()));
        let branch = ogel_plugin_sdk::ComputeName::parse(name).branch;
        let snapshot_floor = self
            .manifests(&crate::branches::database_of(name))
            .iter()
            .filter(|s| s.branch == branch)
            .filter_map(|s| parse_lsn(&s.lsn))
            .min();
        let root = format!("computes/{name}/");
        let objects = with_retry("list the WAL archive", OBJECT_DEADLINE, || {
            self.store().list(&root)
        })
        .await
        .map_err(|e| unavailable(format!("could not list {}: {e}", self.store().describe())))?;
        let mut dropped_wal = 0;
        for object in objects {
            let Some(rest) = object.key.strip_prefix(&root) else {
                continue;
            };
            let mut parts = rest.splitn(3, '/');
            let (Some(incarnation), Some("wal"), Some(file)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let starts = manifests
                .iter()
                .filter(|m| m.incarnation == incarnation && is_kept(m))
                .filter_map(|m| parse_lsn(&m.start_lsn));
            let is_current = current.as_deref() == Some(incarnation);
            let floor = match (starts.min(), is_current) {
                // Only what a kept backup or a local snapshot needs.
                (Some(start), true) => Some(snapshot_floor.map_or(start, |s| s.min(start))),
                (Some(start), false) => Some(start),
                // The live incarnation without a kept backup keeps all.
                (None, true) => None,
                // An earlier life nothing kept needs.
                (None, false) => Some(u64::MAX),
            };
            let Some(floor) = floor else {
                continue;
            };
            let expired = match crate::archive::segment_of(file) {
                Some(segment) => floor == u64::MAX || segment < segment_of_lsn(floor).as_str(),
                None => floor == u64::MAX,
            };
            if expired {
                self.delete_object(&object.key).await?;
                dropped_wal += 1;
            }
        }
        if dropped_wal > 0 {
            tracing::info!(compute = %name, files = dropped_wal, "WAL expired by retention");
        }
        Ok((dropped_backups, dropped_wal))
    }

    async fn delete_object(&self, key: &str) -> Result<(), BackendError> {
        with_retry(&format!("delete {key}"), OBJECT_DEADLINE, || {
            self.store().delete(key)
        })
        .await
        .map_err(|e| unavailable(format!("could not delete {key}: {e}")))
    }

    /// `ogel backup list`: every finished backup of a database's branches.
    pub(crate) async fn backup_list(
        &self,
        database: &str,
    ) -> Result<Vec<BackupInfo>, BackendError> {
        let objects = with_retry("list backups", LIST_DEADLINE, || {
            self.store().list("computes/")
        })
        .await
        .map_err(|e| unavailable(format!("could not list {}: {e}", self.store().describe())))?;
        let mut names: Vec<String> = objects
            .iter()
            .filter_map(|o| o.key.strip_prefix("computes/")?.split('/').next())
            .filter(|c| crate::branches::database_of(c) == database)
            .map(str::to_string)
            .collect();
        names.dedup();
        let mut all = Vec::new();
        for name in names {
            all.extend(self.manifests_of(&name).await?.iter().map(|m| m.info()));
        }
        all.sort_by_key(|b| b.finished_at_unix);
        Ok(all)
    }

    /// `ogel backup restore`: brings a branch back from the cold tier alone
    /// as compute `as_branch` (the branch itself by default), replacing a
    /// local one only once the restored one is whole.
    pub(crate) async fn backup_restore(
        &self,
        spec: &RestoreSpec,
    ) -> Result<Restored, BackendError> {
        let as_branch = spec
            .as_branch
            .clone()
            .unwrap_or_else(|| spec.branch.clone());
        let target_name = compute_name(&spec.database, &as_branch);
        let (volume, chosen) = self.restored_volume(spec, &target_name).await?;
        self.discard(&target_name).await?;
        self.storage
            .rename_volume(&volume, &self.db_dir(&target_name))
            .map_err(|e| io_error("move into place", &volume, e))?;
        self.base_snapshot_if_cheap(&spec.database, &as_branch)
            .await?;
        Ok(Restored {
            database: spec.database.clone(),
            branch: as_branch,
            backup: chosen.id.clone(),
            owner: chosen.owner.clone(),
        })
    }

    /// A base snapshot (for point-in-time branches) of data that just came
    /// back, where a clone is instant; the copy driver would copy every
    /// byte on the way in, so there point-in-time branches of it start
    /// from its next snapshot (`ogel snapshot create`).
    pub(crate) async fn base_snapshot_if_cheap(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<(), BackendError> {
        if self.storage.capabilities().instant_clone {
            self.snapshot(database, branch, true).await?;
        } else {
            tracing::info!(database, branch, "no base snapshot after the restore (the copy driver would copy it all); point-in-time branches start from its next snapshot");
        }
        Ok(())
    }

    /// Restores `spec` into a staging volume for compute `target_name`,
    /// complete (owner, parent) and stopped; nothing is moved into place.
    ///
    /// The owner's retention may expire the chosen chain while another
    /// gateway fetches it (it deletes a backup once a newer one covers
    /// it). A restore not pinned to a backup id then chooses again, up to
    /// twice, when a backup it had listed is gone after the failure.
    pub(crate) async fn restored_volume(
        &self,
        spec: &RestoreSpec,
        target_name: &str,
    ) -> Result<(PathBuf, BackupManifest), BackendError> {
        let source = compute_name(&spec.database, &spec.branch);
        let mut retries = 0;
        loop {
            let listed = self.manifests_of(&source).await?;
            let err = match self
                .restored_volume_from(spec, target_name, listed.clone())
                .await
            {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            if spec.backup.is_some() || retries == 2 {
                return Err(err);
            }
            let now: Vec<String> = match self.manifests_of(&source).await {
                Ok(now) => now.into_iter().map(|m| m.id).collect(),
                Err(_) => return Err(err),
            };
            let Some(expired) = listed.iter().find(|m| !now.contains(&m.id)) else {
                return Err(err);
            };
            retries += 1;
            tracing::warn!(
                compute = source.as_str(),
                backup = expired.id.as_str(),
                error = %err,
                "restore: retention expired a backup while it was being fetched; choosing again"
            );
        }
    }

    async fn restored_volume_from(
        &self,
        spec: &RestoreSpec,
        target_name: &str,
        manifests: Vec<BackupManifest>,
    ) -> Result<(PathBuf, BackupManifest), BackendError> {
        let source = compute_name(&spec.database, &spec.branch);
        let target_name = target_name.to_string();
        let as_branch = ogel_plugin_sdk::ComputeName::parse(&target_name).branch;
        let chosen = match (&spec.backup, &spec.target) {
            (Some(id), _) => manifests.iter().find(|m| &m.id == id).ok_or_else(|| {
                BackendError::not_found(format!(
                    "no backup \"{id}\" of {source} in {}; see `ogel backup list {}`",
                    self.store().describe(),
                    spec.database
                ))
            })?,
            (None, RestoreTarget::Latest) => {
                manifests.last().ok_or_else(|| no_backup(self, &source))?
            }
            (None, RestoreTarget::Lsn { lsn }) => {
                let target = parse_lsn(lsn).ok_or_else(|| {
                    invalid(format!("invalid LSN \"{lsn}\" (expected e.g. 0/16B3740)"))
                })?;
                manifests
                    .iter()
                    .rfind(|m| parse_lsn(&m.end_lsn).is_some_and(|end| end <= target))
                    .ok_or_else(|| before_first(self, &source, lsn))?
            }
            (None, RestoreTarget::Timestamp { at }) => {
                let target = time_ms(at)?;
                manifests
                    .iter()
                    .rfind(|m| m.finished_at_ms <= target)
                    .ok_or_else(|| before_first(self, &source, at))?
            }
        };
        if chosen.pg_major != self.bins.major {
            return Err(invalid(format!(
                "backup {} is of PostgreSQL {}, this gateway runs {}; set native.pg_bin to PostgreSQL {} binaries",
                chosen.id, chosen.pg_major, self.bins.major, chosen.pg_major
            )));
        }
        let chain: Vec<&BackupManifest> = chosen
            .chain
            .iter()
            .map(|id| {
                manifests.iter().find(|m| &m.id == id).ok_or_else(|| {
                    invalid(format!(
                        "backup {} needs backup {id}, which is not in {}",
                        chosen.id,
                        self.store().describe()
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let chain = cheapest_chain(chain);
        let base = chain.last().copied().unwrap_or(chosen);
        if base.id != chosen.id {
            tracing::info!(
                compute = target_name.as_str(),
                backup = chosen.id.as_str(),
                from = base.id.as_str(),
                "restore: from the full backup and its WAL (less to replay than to combine)"
            );
        }
        let staging_root = self.root.join("trash");
        std::fs::create_dir_all(&staging_root).map_err(|e| io_error("create", &staging_root, e))?;
        let volume = staging_root.join(format!(
            "restore-{target_name}-{}",
            ogel_plugin_kit::time::unix_millis()
        ));
        let result = self
            .restore_into(base, &chain, &spec.target, &volume, &target_name)
            .await;
        self.clear_progress(&target_name);
        if let Err(e) = result {
            let _ = self.storage.delete_volume(&volume);
            return Err(e);
        }
        if as_branch != "main" {
            std::fs::write(volume.join("parent"), &spec.branch)
                .map_err(|e| io_error("write", &volume, e))?;
        }
        // The read-only role is set up again, with this gateway's password.
        let _ = std::fs::remove_file(volume.join("read_only_role"));
        std::fs::write(volume.join("owner"), &chosen.owner)
            .map_err(|e| io_error("write", &volume, e))?;
        // Durable before anything names it: one write-back of the whole
        // filesystem, not an fsync per file (pg_combinebackup runs with -N).
        let sync_started = std::time::Instant::now();
        let synced = volume.clone();
        tokio::task::spawn_blocking(move || crate::storage::sync_filesystem(&synced))
            .await
            .map_err(|e| BackendError::internal(format!("sync: {e}")))?
            .map_err(|e| io_error("write back", &volume, e))?;
        tracing::info!(
            compute = target_name.as_str(),
            step = "written back",
            elapsed_ms = sync_started.elapsed().as_millis() as u64,
            "restore"
        );
        Ok((volume, chosen.clone()))
    }

    async fn restore_into(
        &self,
        chosen: &BackupManifest,
        chain: &[&BackupManifest],
        target: &RestoreTarget,
        volume: &Path,
        key: &str,
    ) -> Result<(), BackendError> {
        // The volume first: the backups unpack inside it, on the filesystem
        // the data directory ends on, so the combined one can link their
        // files and a single backup's directory simply becomes pgdata.
        self.storage
            .create_volume(volume)
            .map_err(|e| io_error("create", volume, e))?;
        let work = &volume.join("restore-parts");
        std::fs::create_dir_all(work).map_err(|e| io_error("create", work, e))?;
        let started = std::time::Instant::now();
        let step = |what: &str| {
            tracing::info!(
                compute = key,
                step = what,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "restore"
            );
        };
        // WAL from the backup's start (every timeline's history with it),
        // fetched while the backups unpack; the data written meanwhile is
        // written back as it comes (the restore ends with one sync, and
        // Postgres syncs the data directory before its recovery: both find
        // little left to do).
        let wal = volume.join("restore-wal");
        let start = parse_lsn(&chosen.start_lsn)
            .ok_or_else(|| invalid(format!("backup {} has no start LSN", chosen.id)))?;
        let compute_pre = prefix_of(chosen);
        let first_segment = segment_of_lsn(start);
        let data_fetched = std::sync::atomic::AtomicU64::new(0);
        let flusher = spawn_write_back(volume.to_path_buf());
        let unpacked = tokio::try_join!(self.unpack(chain, work, key, &data_fetched), async {
            self.archiver
                .fetch_wal(&compute_pre, &wal, Some(&first_segment), |f| {
                    let data = data_fetched.load(std::sync::atomic::Ordering::Relaxed);
                    self.note_progress(key, data + f.bytes, 0);
                })
                .await
                .map_err(invalid)
        });
        flusher.abort();
        let (dirs, wal_fetched): (Vec<PathBuf>, Fetched) = unpacked?;
        tracing::info!(
            compute = key,
            files = wal_fetched.files,
            bytes = wal_fetched.bytes,
            "restore: WAL fetched from the cold tier"
        );
        step("fetched and unpacked, WAL fetched");
        let pgdata = volume.join("pgdata");
        if dirs.len() == 1 {
            std::fs::rename(&dirs[0], &pgdata).map_err(|e| io_error("move", &dirs[0], e))?;
        } else {
            let mut cmd = tokio::process::Command::new(self.bins.bin_dir.join("pg_combinebackup"));
            cmd.args(&dirs)
                .args(combine_args(self.bins.major))
                .arg("-o")
                .arg(&pgdata);
            run_tool(cmd, "pg_combinebackup").await?;
        }
        // The parts are consumed (linked files live on in pgdata).
        std::fs::remove_dir_all(work).map_err(|e| io_error("remove", work, e))?;
        step("combined");
        let mut verify = tokio::process::Command::new(self.bins.bin_dir.join("pg_verifybackup"));
        // Files and sizes against the manifest; their bytes were checked
        // part by part (SHA-256) as they were fetched, and every page is
        // checked against its checksum once the data is recovered.
        verify
            .arg("--skip-checksums")
            .arg("-w")
            .arg(&wal)
            .arg(&pgdata);
        run_tool(verify, "pg_verifybackup").await.map_err(|e| {
            invalid(format!(
                "backup {} does not verify; it will not be used: {}",
                chosen.id, e.message
            ))
        })?;
        step("verified");
        self.replay(volume, &pgdata, &wal, target, key).await?;
        step("replayed, stopped, page checksums checked");
        Ok(())
    }

    /// Fetches each backup of `chain` (parts opened PARALLEL at a time) and
    /// unpacks it into `work/NNN`; those directories, in chain order.
    async fn unpack(
        &self,
        chain: &[&BackupManifest],
        work: &Path,
        key: &str,
        data_fetched: &std::sync::atomic::AtomicU64,
    ) -> Result<Vec<PathBuf>, BackendError> {
        let total: u64 = chain.iter().map(|m| m.stored_bytes).sum();
        let mut fetched = 0u64;
        let mut dirs = Vec::new();
        for (i, backup) in chain.iter().enumerate() {
            let dir = work.join(format!("{i:03}"));
            std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
            let prefix = backup_prefix(&prefix_of(backup), &backup.id);
            let mut tar = tokio::process::Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(&dir)
                .arg("-f")
                .arg("-")
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| unavailable(format!("could not run tar: {e}")))?;
            let mut stdin = tar
                .stdin
                .take()
                .ok_or_else(|| BackendError::internal("tar has no stdin"))?;
            // Fetched and opened PARALLEL at a time, unpacked in order.
            let (store, seal_key) = (self.store().clone(), self.archiver.seal_key_arc());
            let mut window = Window::new();
            let mut next_part = 0;
            loop {
                while next_part < backup.parts.len() && !window.is_full() {
                    let part = backup.parts[next_part].clone();
                    window.push(tokio::spawn(get_opened(
                        store.clone(),
                        seal_key.clone(),
                        part,
                    )));
                    next_part += 1;
                }
                let Some(content) = window.next().await else {
                    break;
                };
                let content = content?;
                fetched += content.len() as u64;
                data_fetched.store(fetched, std::sync::atomic::Ordering::Relaxed);
                use tokio::io::AsyncWriteExt;
                stdin.write_all(&content).await.map_err(|e| {
                    BackendError::internal(format!("unpacking backup {}: {e}", backup.id))
                })?;
                self.note_progress(key, fetched, total.max(fetched));
            }
            drop(stdin);
            let out = tar
                .wait_with_output()
                .await
                .map_err(|e| BackendError::internal(format!("tar: {e}")))?;
            if !out.status.success() {
                return Err(invalid(format!(
                    "backup {} does not unpack: {}",
                    backup.id,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let manifest = self
                .get_opened(&format!("{prefix}/backup_manifest"))
                .await?;
            let path = dir.join("backup_manifest");
            std::fs::write(&path, manifest).map_err(|e| io_error("write", &path, e))?;
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// Replays the staged WAL into `pgdata` up to `target`, promotes, and
    /// sets the roles' passwords to this gateway's; the compute is left
    /// stopped. It listens on a private unix socket only meanwhile.
    async fn replay(
        &self,
        volume: &Path,
        pgdata: &Path,
        wal: &Path,
        target: &RestoreTarget,
        key: &str,
    ) -> Result<(), BackendError> {
        let target_setting = match target {
            RestoreTarget::Latest => String::new(),
            RestoreTarget::Lsn { lsn } => format!("recovery_target_lsn = '{lsn}'\n"),
            RestoreTarget::Timestamp { at } => {
                format!("recovery_target_time = '{}'\n", postgres_time(at)?)
            }
        };
        let auto_conf = pgdata.join("postgresql.auto.conf");
        let original_conf = std::fs::read_to_string(&auto_conf).unwrap_or_default();
        let recovery = format!(
            "\n# Restore from the cold tier (OgelBase)\nrestore_command = 'cp \"{}/%f\" \"%p\"'\n{target_setting}recovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n",
            wal.display()
        );
        std::fs::write(&auto_conf, format!("{original_conf}{recovery}"))
            .map_err(|e| io_error("write", &auto_conf, e))?;
        std::fs::write(pgdata.join("recovery.signal"), "")
            .map_err(|e| io_error("write", pgdata, e))?;
        let hba = pgdata.join("pg_hba.conf");
        let original_hba = std::fs::read_to_string(&hba).map_err(|e| io_error("read", &hba, e))?;
        std::fs::write(&hba, format!("local all all trust\n{original_hba}"))
            .map_err(|e| io_error("write", &hba, e))?;
        let socket_dir = PathBuf::from(format!("/tmp/ogel-restore-{:08x}", rand::random::<u32>()));
        std::fs::create_dir(&socket_dir).map_err(|e| io_error("create", &socket_dir, e))?;
        let result = async {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("protect", &socket_dir, e))?;
            // Postgres refuses a data directory others can read.
            std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("protect", pgdata, e))?;
            self.user
                .chown_tree(volume)
                .and_then(|_| self.user.chown_tree(&socket_dir))
                .map_err(|e| io_error("hand to the compute user", volume, e))?;
            self.note_progress(key, 0, 0);
            let settings = vec![
                ("listen_addresses".to_string(), String::new()),
                (
                    "unix_socket_directories".to_string(),
                    socket_dir.display().to_string(),
                ),
                ("archive_mode".to_string(), "off".to_string()),
                // One syncfs, not an fsync per file, before recovery (the
                // data was written back while it was unpacked).
                (
                    "recovery_init_sync_method".to_string(),
                    "syncfs".to_string(),
                ),
            ];
            let log = volume.join("postgres.log");
            let spec = StartSpec {
                bins: &self.bins,
                user: &self.user,
                data_dir: pgdata,
                log_path: &log,
                timeout: REPLAY_TIMEOUT,
                settings: &settings,
            };
            let compute = crate::compute::start(&spec).await.map_err(|e| {
                invalid(format!(
                    "the restored data could not be brought to that point: {e}"
                ))
            })?;
            let replayed = std::time::Instant::now();
            let outcome = self.adopt_restored(&socket_dir, compute.port, key).await;
            tracing::info!(
                compute = key,
                step = "promoted",
                elapsed_ms = replayed.elapsed().as_millis() as u64,
                "restore: replay"
            );
            let stopped = compute
                .stop(Duration::from_millis(self.config.stop_timeout_ms))
                .await;
            tracing::info!(
                compute = key,
                step = "stopped",
                elapsed_ms = replayed.elapsed().as_millis() as u64,
                "restore: replay"
            );
            outcome?;
            stopped.map_err(|e| {
                BackendError::internal(format!("stopping the restored compute: {e}"))
            })?;
            // Every page against its checksum, before anything serves it
            // (the cluster is shut down cleanly, as pg_checksums needs).
            let mut check = tokio::process::Command::new(self.bins.bin_dir.join("pg_checksums"));
            check.arg("--check").arg("-D").arg(pgdata);
            self.user.apply_tokio(&mut check);
            run_tool(check, "pg_checksums").await.map_err(|e| {
                invalid(format!(
                    "the restored data fails its page checksums; it will not be used: {}",
                    e.message
                ))
            })
        }
        .await;
        let _ = std::fs::remove_dir_all(&socket_dir);
        let _ = std::fs::remove_dir_all(wal);
        mark_history_ready(pgdata);
        // The compute renames those marks to `.done`: they must be its own.
        self.user
            .chown_tree(&pgdata.join("pg_wal/archive_status"))
            .map_err(|e| io_error("hand to the compute user", pgdata, e))?;
        let _ = std::fs::remove_file(pgdata.join("recovery.signal"));
        std::fs::write(&auto_conf, &original_conf).map_err(|e| io_error("write", &auto_conf, e))?;
        std::fs::write(&hba, &original_hba).map_err(|e| io_error("write", &hba, e))?;
        result
    }

    /// Waits for the promoted compute and gives its roles this gateway's
    /// passwords.
    async fn adopt_restored(
        &self,
        socket_dir: &Path,
        port: u16,
        key: &str,
    ) -> Result<(), BackendError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(socket_dir)
            .port(port)
            .user(crate::secrets::SUPERUSER)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
            BackendError::unavailable("could not log in to the restored compute").with_source(e)
        })?;
        tokio::spawn(connection);
        let deadline = std::time::Instant::now() + REPLAY_TIMEOUT;
        loop {
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(|e| {
                    BackendError::unavailable("the restored compute went away").with_source(e)
                })?;
            if !row.get::<_, bool>(0) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(unavailable(format!(
                    "replaying WAL did not finish within {REPLAY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let database = crate::branches::database_of(key);
        let owner_rows = client
            .query(
                "SELECT datdba::regrole::text FROM pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(|e| BackendError::internal("reading the restored database").with_source(e))?;
        let mut roles = vec![(
            crate::secrets::SUPERUSER.to_string(),
            self.secret.superuser_password(),
        )];
        if let Some(row) = owner_rows.first() {
            let owner: String = row.get(0);
            let owner = owner.trim_matches('"').to_string();
            let password = self.secret.role_password(&database, &owner);
            roles.push((owner, password));
        }
        for (role, password) in roles {
            let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
            client
                .batch_execute(&format!(
                    "ALTER ROLE {} PASSWORD '{verifier}'",
                    quote_ident(&role)
                ))
                .await
                .map_err(|e| {
                    BackendError::internal(format!("setting {role}'s password")).with_source(e)
                })?;
        }
        Ok(())
    }
}

/// Writes back the filesystem holding `dir` every 250 ms until aborted, so
/// a restore's data reaches the disk while it is still being unpacked.
fn spawn_write_back(dir: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let target = dir.clone();
            let _ =
                tokio::task::spawn_blocking(move || crate::storage::sync_filesystem(&target)).await;
        }
    })
}

/// The backups a restore unpacks: the whole chain, or only its full
/// backup when the WAL from there to the last one's start is under a
/// quarter of the full's size. Combining rewrites every relation file an
/// incremental touched (a 1 GB table with 1% of its pages changed is
/// copied whole, block by block); replaying that little WAL is cheaper.
fn cheapest_chain(chain: Vec<&BackupManifest>) -> Vec<&BackupManifest> {
    let (Some(full), Some(last)) = (chain.first().copied(), chain.last().copied()) else {
        return chain;
    };
    let wal_bytes = match (parse_lsn(&full.start_lsn), parse_lsn(&last.start_lsn)) {
        (Some(from), Some(to)) if to >= from => to - from,
        _ => return chain,
    };
    if chain.len() > 1 && full.timeline == last.timeline && wal_bytes <= full.size_bytes / 4 {
        vec![full]
    } else {
        chain
    }
}

/// How `pg_combinebackup` writes the combined data directory: hard links
/// to the unpacked backups' files on PostgreSQL 18+ (they are consumed
/// after), in-kernel copies before (reflinks where the filesystem can);
/// never an fsync per file (the volume is synced once, before it is
/// used) and no checksums in its manifest (files and sizes are checked
/// against it; the bytes were checked part by part as they came in).
fn combine_args(major: u32) -> [&'static str; 3] {
    let method = if major >= 18 {
        "--link"
    } else {
        "--copy-file-range"
    };
    [method, "--no-sync", "--manifest-checksums=NONE"]
}

/// An RFC 3339 time in Unix milliseconds.
fn time_ms(at: &str) -> Result<u64, BackendError> {
    crate::branches::parse_time_ms(at).ok_or_else(|| {
        invalid(format!(
            "invalid time \"{at}\" (expected RFC 3339, e.g. 2026-11-25T13:00:00Z)"
        ))
    })
}

/// An RFC 3339 time in the form Postgres's `recovery_target_time` reads
/// without time zone abbreviations: `2026-11-25 13:00:00.123+00`.
fn postgres_time(at: &str) -> Result<String, BackendError> {
    let ms = time_ms(at)?;
    Ok(
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
            .to_string()
            .replace('T', " ")
            .replace('Z', "+00"),
    )
}

/// The timeline history files a promotion wrote while archiving was off
/// are marked ready, so the new life's archive has them too.
fn mark_history_ready(pgdata: &Path) {
    let wal = pgdata.join("pg_wal");
    let Ok(entries) = std::fs::read_dir(&wal) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".history") {
            continue;
        }
        let status = wal.join("archive_status");
        if !status.join(format!("{name}.done")).exists() {
            let _ = std::fs::write(status.join(format!("{name}.ready")), b"");
        }
    }
}

/// The key prefix a manifest's objects are under.
fn prefix_of(m: &BackupManifest) -> String {
    compute_prefix(&compute_name(&m.database, &m.branch), &m.incarnation)
}

fn no_backup(backend: &NativeBackend, source: &str) -> BackendError {
    BackendError::not_found(format!(
        "{source} has no backup in {}; make one with `ogel backup create`",
        backend.store().describe()
    ))
}

fn before_first(backend: &NativeBackend, source: &str, point: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::InvalidRequest,
        format!(
            "{source} has no backup finished before {point} in {}; see `ogel backup list`",
            backend.store().describe()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_range_is_read_from_postgres_manifest() {
        let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(
            wal_range(manifest).unwrap(),
            (1, "0/2000028".to_string(), "0/2000100".to_string())
        );
        assert!(wal_range(b"{}").is_err());
        assert!(wal_range(b"not json").is_err());
    }

    fn manifest(id: &str, start_lsn: &str, size_bytes: u64) -> BackupManifest {
        BackupManifest {
            id: id.into(),
            database: "shop".into(),
            branch: "main".into(),
            incarnation: "i".into(),
            kind: BackupKind::Full,
            parent: None,
            chain: vec![],
            created_at_ms: 0,
            finished_at_ms: 0,
            start_lsn: start_lsn.into(),
            end_lsn: start_lsn.into(),
            timeline: 1,
            size_bytes,
            stored_bytes: 0,
            parts: vec![],
            pg_major: 18,
            owner: "shop_owner".into(),
        }
    }

    #[test]
    fn a_restore_replays_little_wal_rather_than_combine() {
        let full = manifest("f", "0/10000000", 1 << 30);
        let little = manifest("i1", "0/12000000", 1 << 20);
        let much = manifest("i2", "0/60000000", 1 << 20);
        let ids = |c: Vec<&BackupManifest>| c.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        // 32 MiB of WAL against a 1 GiB full backup: the full one and WAL.
        assert_eq!(ids(cheapest_chain(vec![&full, &little])), ["f"]);
        // 1.25 GiB of WAL: the chain, combined.
        assert_eq!(
            ids(cheapest_chain(vec![&full, &little, &much])),
            ["f", "i1", "i2"]
        );
        assert_eq!(ids(cheapest_chain(vec![&full])), ["f"]);
        let mut other_timeline = little.clone();
        other_timeline.timeline = 2;
        assert_eq!(
            ids(cheapest_chain(vec![&full, &other_timeline])),
            ["f", "i1"]
        );
        assert_eq!(
            combine_args(17),
            [
                "--copy-file-range",
                "--no-sync",
                "--manifest-checksums=NONE"
            ]
        );
        assert_eq!(combine_args(18)[0], "--link");
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_id();
        std::thread::sleep(Duration::from_millis(1100));
        let b = new_id();
        assert!(a < b, "{a} {b}");
    }
}
