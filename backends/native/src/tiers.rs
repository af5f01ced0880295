//! Hot, warm and cold: where a compute's data is.
//!
//! - **hot**: its volume `databases/<compute>/` (running or suspended);
//! - **warm**: suspended, kept as one zstd-compressed tar of the volume in
//!   `warm_dir/<compute>.tar.zst` (a cheaper disk), the volume gone;
//! - **cold**: only its newest backup and WAL in the cold tier; nothing
//!   local but a marker.
//!
//! A compute that is not hot has a marker `tiers/<compute>.json` (its tier,
//! owner, parent, and for cold the backup it lives on). Every move writes
//! the new copy whole first, then the marker, then deletes the old copy;
//! coming back writes the volume whole, puts it in place with one rename,
//! then deletes the marker. So after a kill -9 at any step the data is
//! whole in at least one tier, and opening the backend finishes the move:
//! a marker with a volume beside it means the volume was never started
//! since (a compute only starts once its marker is gone), so the volume is
//! the one deleted; a warm copy without a marker is a move that never
//! happened, and is deleted.

use crate::{io_error, NativeBackend};
use ogel_plugin_sdk::{BackendError, ComputeName, RestoreSpec, RestoreTarget, Tier};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `tiers/<compute>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TierMarker {
    pub tier: Tier,
    pub owner: String,
    #[serde(default)]
    pub parent: Option<String>,
    /// Cold: the backup it lives on.
    #[serde(default)]
    pub backup: Option<String>,
}

/// Where a crash test may kill the process (`OGEL_TEST_CRASH_AT=<step>`:
/// the gateway aborts there, as a kill -9 would stop it). Unset, it costs
/// one environment lookup per step of a tier move or takeover.
pub(crate) fn crash_point(step: &str) {
    if std::env::var("OGEL_TEST_CRASH_AT").is_ok_and(|at| at == step) {
        tracing::error!(step, "OGEL_TEST_CRASH_AT: aborting here");
        std::process::abort();
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl NativeBackend {
    fn tiers_dir(&self) -> PathBuf {
        self.root.join("tiers")
    }

    fn marker_path(&self, name: &str) -> PathBuf {
        self.tiers_dir().join(format!("{name}.json"))
    }

    /// Where warm copies go (`native.warm_dir`, default `<root>/warm`).
    fn warm_dir(&self) -> PathBuf {
        self.config
            .warm_dir
            .clone()
            .unwrap_or_else(|| self.root.join("warm"))
    }

    pub(crate) fn warm_file(&self, name: &str) -> PathBuf {
        self.warm_dir().join(format!("{name}.tar.zst"))
    }

    /// The marker of a compute that is not hot.
    pub(crate) fn marker(&self, name: &str) -> Option<TierMarker> {
        let text = std::fs::read(self.marker_path(name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Which tier compute `name` is in (`None`: no such compute).
    pub(crate) fn tier_of(&self, name: &str) -> Option<Tier> {
        match self.marker(name) {
            Some(marker) => Some(marker.tier),
            None if self.db_dir(name).join("owner").exists() => Some(Tier::Hot),
            None => None,
        }
    }

    fn write_marker(&self, name: &str, marker: &TierMarker) -> Result<(), BackendError> {
        let dir = self.tiers_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let bytes = serde_json::to_vec_pretty(marker)
            .map_err(|e| BackendError::internal("encoding a tier marker").with_source(e))?;
        let path = self.marker_path(name);
        write_atomically(&path, &bytes).map_err(|e| io_error("write", &path, e))
    }

    fn remove_marker(&self, name: &str) -> Result<(), BackendError> {
        let path = self.marker_path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("remove", &path, e)),
        }
        // Durable before the compute may start (see the module doc).
        std::fs::File::open(self.tiers_dir())
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("sync", &self.tiers_dir(), e))
    }

    /// After a crash: finishes or undoes the tier moves it interrupted.
    pub(crate) fn recover_tiers(&self) {
        if let Ok(entries) = std::fs::read_dir(self.tiers_dir()) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                if let Some(name) = file.strip_suffix(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                    tracing::info!(compute = name, "dropped a half-written tier marker");
                    continue;
                }
                let Some(name) = file.strip_suffix(".json") else {
                    continue;
                };
                let volume = self.db_dir(name);
                if volume.exists() {
                    tracing::warn!(compute = name, "finishing a tier move a crash interrupted: the local volume goes, the moved copy stays");
                    self.trash_volume(&volume);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.warm_dir()) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                let name = file
                    .strip_suffix(".tar.zst")
                    .or_else(|| file.strip_suffix(".tar.zst.partial"));
                let Some(name) = name else { continue };
                let kept = file.ends_with(".tar.zst")
                    && self.marker(name).is_some_and(|m| m.tier == Tier::Warm);
                if !kept {
                    tracing::info!(compute = name, "dropped a warm copy no marker names");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    fn trash_volume(&self, volume: &Path) {
        let trash = self.root.join("trash");
        let _ = std::fs::create_dir_all(&trash);
        let to = trash.join(format!(
            "tier-{}-{:08x}",
            volume
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            rand::random::<u32>()
        ));
        match std::fs::rename(volume, &to) {
            Ok(()) => {
                if let Err(e) = self.storage.delete_volume(&to) {
                    tracing::warn!(path = %to.display(), error = %e, "could not delete a volume; it is retried at the next start");
                }
            }
            Err(e) => {
                tracing::warn!(path = %volume.display(), error = %e, "could not move a volume to the trash")
            }
        }
    }

    /// `set_tier`: moves compute `name`'s data to `tier`.
    pub(crate) async fn move_tier(&self, name: &str, tier: Tier) -> Result<(), BackendError> {
        let Some(current) = self.tier_of(name) else {
            return Err(BackendError::not_found(format!(
                "database \"{name}\" does not exist"
            )));
        };
        if current == tier {
            return Ok(());
        }
        if current != Tier::Hot {
            self.rehydrate(name).await?;
        }
        match tier {
            Tier::Hot => Ok(()),
            Tier::Warm => self.hot_to_warm(name).await,
            Tier::Cold => self.hot_to_cold(name).await,
        }
    }

    /// Brings a warm or cold compute back hot (before it starts).
    pub(crate) async fn ensure_hot(&self, name: &str) -> Result<(), BackendError> {
        if self.marker(name).is_some() {
            // Boxed: bringing it back takes a base snapshot, which makes
            // sure it is hot (by then it is).
            Box::pin(self.rehydrate(name)).await?;
        }
        Ok(())
    }

    /// Point-in-time bases are local data: they go with the volume.
    fn drop_automatic_snapshots(&self, name: &str) {
        let compute = ComputeName::parse(name);
        for manifest in self.manifests(&compute.database) {
            if manifest.automatic && manifest.branch == compute.branch {
                self.drop_snapshot(&manifest);
            }
        }
    }

    fn marker_for(&self, name: &str, tier: Tier, backup: Option<String>) -> TierMarker {
        let dir = self.db_dir(name);
        TierMarker {
            tier,
            owner: std::fs::read_to_string(dir.join("owner"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            parent: std::fs::read_to_string(dir.join("parent"))
                .ok()
                .map(|s| s.trim().to_string()),
            backup,
        }
    }

    async fn hot_to_warm(&self, name: &str) -> Result<(), BackendError> {
        self.stop(name).await?;
        let volume = self.db_dir(name);
        let warm_dir = self.warm_dir();
        std::fs::create_dir_all(&warm_dir).map_err(|e| io_error("create", &warm_dir, e))?;
        let file = self.warm_file(name);
        let partial = warm_dir.join(format!("{name}.tar.zst.partial"));
        let total = dir_size(&volume);
        let progress = self.progress.clone();
        let key = name.to_string();
        let (from, to) = (volume.clone(), partial.clone());
        let packed = tokio::task::spawn_blocking(move || pack(&from, &to, total, &key, progress))
            .await
            .map_err(|e| BackendError::internal("the packing task failed").with_source(e))?;
        self.clear_progress(name);
        if let Err(e) = packed {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &file).map_err(|e| io_error("move into place", &file, e))?;
        crash_point("warm:packed");
        self.write_marker(name, &self.marker_for(name, Tier::Warm, None))?;
        crash_point("warm:marked");
        self.drop_automatic_snapshots(name);
        self.trash_volume(&volume);
        tracing::info!(compute = name, bytes = total, "moved to the warm tier");
        Ok(())
    }

    async fn hot_to_cold(&self, name: &str) -> Result<(), BackendError> {
        let compute = ComputeName::parse(name);
        // A backup of it as it is now (no client can reach it meanwhile:
        // the gateway holds it exclusively), with every WAL file it wrote
        // since, is all it needs.
        let backup = self
            .backup_create(&compute.database, &compute.branch, false)
            .await?;
        self.stop(name).await?;
        self.archiver
            .drain(name, std::time::Duration::from_secs(600))
            .await
            .map_err(BackendError::unavailable)?;
        crash_point("cold:backed-up");
        self.write_marker(name, &self.marker_for(name, Tier::Cold, Some(backup.id)))?;
        crash_point("cold:marked");
        self.drop_automatic_snapshots(name);
        self.trash_volume(&self.db_dir(name));
        let _ = std::fs::remove_file(self.warm_file(name));
        tracing::info!(compute = name, "moved to the cold tier");
        Ok(())
    }

    async fn rehydrate(&self, name: &str) -> Result<(), BackendError> {
        let Some(marker) = self.marker(name) else {
            return Ok(());
        };
        let compute = ComputeName::parse(name);
        let volume = match marker.tier {
            Tier::Hot => return self.remove_marker(name),
            Tier::Warm => {
                let file = self.warm_file(name);
                let trash = self.root.join("trash");
                std::fs::create_dir_all(&trash).map_err(|e| io_error("create", &trash, e))?;
                let volume = trash.join(format!("warm-{name}-{:08x}", rand::random::<u32>()));
                self.storage
                    .create_volume(&volume)
                    .map_err(|e| io_error("create", &volume, e))?;
                let total = std::fs::metadata(&file)
                    .map_err(|e| io_error("read", &file, e))?
                    .len();
                let (from, to, key, progress) = (
                    file.clone(),
                    volume.clone(),
                    name.to_string(),
                    self.progress.clone(),
                );
                let unpacked =
                    tokio::task::spawn_blocking(move || unpack(&from, &to, total, &key, progress))
                        .await
                        .map_err(|e| {
                            BackendError::internal("the unpacking task failed").with_source(e)
                        })?;
                self.clear_progress(name);
                if let Err(e) = unpacked {
                    let _ = self.storage.delete_volume(&volume);
                    return Err(e);
                }
                volume
            }
            Tier::Cold => {
                let spec = RestoreSpec {
                    database: compute.database.clone(),
                    branch: compute.branch.clone(),
                    target: RestoreTarget::Latest,
                    backup: marker.backup.clone(),
                    as_branch: None,
                };
                let (volume, _) = self.restored_volume(&spec, name).await?;
                if let Some(parent) = &marker.parent {
                    std::fs::write(volume.join("parent"), parent)
                        .map_err(|e| io_error("write", &volume, e))?;
                }
                volume
            }
        };
        crash_point("back:unpacked");
        self.storage
            .rename_volume(&volume, &self.db_dir(name))
            .map_err(|e| io_error("move into place", &volume, e))?;
        crash_point("back:placed");
        self.remove_marker(name)?;
        let _ = std::fs::remove_file(self.warm_file(name));
        self.base_snapshot_if_cheap(&compute.database, &compute.branch)
            .await?;
        tracing::info!(compute = name, from = %marker.tier, "back in the hot tier");
        Ok(())
    }

    /// Markers of every compute that is not hot: (name, marker).
    pub(crate) fn tiered(&self) -> Vec<(String, TierMarker)> {
        let Ok(entries) = std::fs::read_dir(self.tiers_dir()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().to_string();
                let name = file.strip_suffix(".json")?.to_string();
                let marker = self.marker(&name)?;
                Some((name, marker))
            })
            .collect()
    }

    /// Deletes the warm copy and marker of a compute being deleted.
    pub(crate) fn drop_tier_copies(&self, name: &str) {
        let _ = std::fs::remove_file(self.warm_file(name));
        let _ = self.remove_marker(name);
    }
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Writes a zstd-compressed tar of `dir` to `to`, fsynced.
fn pack(
    dir: &Path,
    to: &Path,
    total: u64,
    key: &str,
    progress: crate::ProgressMap,
) -> Result<(), BackendError> {
    let mut tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BackendError::unavailable(format!("could not run tar: {e}")))?;
    let stdout = tar
        .stdout
        .take()
        .ok_or_else(|| BackendError::internal("tar has no stdout"))?;
    let file = std::fs::File::create(to).map_err(|e| io_error("create", to, e))?;
    let mut encoder =
        zstd::stream::Encoder::new(file, 3).map_err(|e| io_error("compress into", to, e))?;
    let mut reader = Counting::new(stdout, total, key, progress);
    std::io::copy(&mut reader, &mut encoder).map_err(|e| io_error("write", to, e))?;
    let file = encoder.finish().map_err(|e| io_error("write", to, e))?;
    file.sync_all().map_err(|e| io_error("sync", to, e))?;
    let out = tar
        .wait_with_output()
        .map_err(|e| BackendError::internal(format!("tar: {e}")))?;
    if !out.status.success() {
        return Err(BackendError::internal(format!(
            "packing {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Unpacks a warm copy into the volume `to`.
fn unpack(
    from: &Path,
    to: &Path,
    total: u64,
    key: &str,
    progress: crate::ProgressMap,
) -> Result<(), BackendError> {
    let file = std::fs::File::open(from).map_err(|e| io_error("read", from, e))?;
    let mut tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(to)
        .args(["-xpf", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BackendError::unavailable(format!("could not run tar: {e}")))?;
    let mut stdin = tar
        .stdin
        .take()
        .ok_or_else(|| BackendError::internal("tar has no stdin"))?;
    let reader = Counting::new(file, total, key, progress);
    let decoded = zstd::stream::copy_decode(reader, &mut stdin);
    drop(stdin);
    let out = tar
        .wait_with_output()
        .map_err(|e| BackendError::internal(format!("tar: {e}")))?;
    decoded.map_err(|e| {
        BackendError::internal(format!("the warm copy {} is damaged: {e}", from.display()))
    })?;
    if !out.status.success() {
        return Err(BackendError::internal(format!(
            "the warm copy {} does not unpack: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A reader that reports how much went through it.
struct Counting<R> {
    inner: R,
    done: u64,
    total: u64,
    key: String,
    progress: crate::ProgressMap,
}

impl<R> Counting<R> {
    fn new(inner: R, total: u64, key: &str, progress: crate::ProgressMap) -> Self {
        Counting {
            inner,
            done: 0,
            total,
            key: key.to_string(),
            progress,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let before = self.done >> 20;
        self.done += n as u64;
        if self.done >> 20 != before {
            self.progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    self.key.clone(),
                    ogel_plugin_sdk::Progress {
                        done_bytes: self.done,
                        total_bytes: self.total.max(self.done),
                    },
                );
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_survives_a_round_trip() {
        let marker = TierMarker {
            tier: Tier::Cold,
            owner: "shop_owner".into(),
            parent: None,
            backup: Some("20261204T000000Z-0001".into()),
        };
        let text = serde_json::to_string(&marker).unwrap();
        let back: TierMarker = serde_json::from_str(&text).unwrap();
        assert_eq!(back.tier, Tier::Cold);
        assert_eq!(back.backup, marker.backup);
    }

    #[test]
    fn pack_and_unpack_keep_every_file() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("pgdata/base")).unwrap();
        std::fs::write(src.path().join("owner"), "shop_owner").unwrap();
        std::fs::write(src.path().join("pgdata/base/1"), vec![7u8; 100_000]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("x.tar.zst");
        let progress = crate::ProgressMap::default();
        pack(src.path(), &file, 100_010, "shop", progress.clone()).unwrap();
        assert!(
            std::fs::metadata(&file).unwrap().len() < 10_000,
            "compressed"
        );
        let dst = tempfile::tempdir().unwrap();
        unpack(&file, dst.path(), 0, "shop", progress).unwrap();
        assert_eq!(
            std::fs::read(dst.path().join("pgdata/base/1")).unwrap(),
            vec![7u8; 100_000]
        );
        // A damaged copy is an error, never a partial volume served.
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&file, bytes).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let progress = crate::ProgressMap::default();
        assert!(unpack(&file, dst.path(), 0, "shop", progress).is_err());
    }
}
