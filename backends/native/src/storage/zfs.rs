//! The ZFS driver: every volume is a dataset with an explicit mountpoint,
//! and a clone is `zfs snapshot <src>@clone-<ts>` + `zfs clone` (instant,
//! atomic). Paths map to datasets through `zfs list -H -o name,mountpoint`;
//! a new volume's dataset is named after its path below the dataset that
//! holds it (`pool/ogel` + `databases/app` → `pool/ogel/databases:app`).
//! A clone records its origin snapshot in `.ogel-origin`; deleting the
//! clone destroys that snapshot too. The CLI is `zfs` on `PATH` unless
//! another is given.

use super::copy::{clone_tree_into, CopyDriver};
use super::{run, DriverCapabilities, StorageDriver};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The file in a cloned volume naming the snapshot it was cloned from.
const ORIGIN_FILE: &str = ".ogel-origin";

/// Datasets through the `zfs` CLI.
pub struct ZfsDriver {
    cli: PathBuf,
}

impl Default for ZfsDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl ZfsDriver {
    /// Uses `zfs` found on `PATH`.
    pub fn new() -> Self {
        ZfsDriver {
            cli: PathBuf::from("zfs"),
        }
    }

    /// Uses the given `zfs` program.
    pub fn with_cli(cli: impl Into<PathBuf>) -> Self {
        ZfsDriver { cli: cli.into() }
    }

    fn zfs(&self) -> Command {
        Command::new(&self.cli)
    }

    /// `(name, mountpoint)` of every dataset.
    fn datasets(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let out = run(self.zfs().args(["list", "-H", "-o", "name,mountpoint"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, m)| m.starts_with('/'))
            .map(|(n, m)| (n.to_string(), PathBuf::from(m)))
            .collect())
    }

    /// The dataset mounted exactly at `path`.
    fn dataset_at(&self, path: &Path) -> io::Result<Option<String>> {
        Ok(self
            .datasets()?
            .into_iter()
            .find(|(_, m)| m == path)
            .map(|(n, _)| n))
    }

    /// The dataset name a new volume at `path` gets.
    fn new_dataset_name(&self, path: &Path) -> io::Result<String> {
        let (parent, mount) = self
            .datasets()?
            .into_iter()
            .filter(|(_, m)| path.starts_with(m) && path != m)
            .max_by_key(|(_, m)| m.components().count())
            .ok_or_else(|| {
                io::Error::other(format!("{} is not inside a ZFS dataset", path.display()))
            })?;
        let rel: Vec<String> = path
            .strip_prefix(&mount)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Ok(format!("{parent}/{}", rel.join(":")))
    }
}

impl StorageDriver for ZfsDriver {
    fn name(&self) -> &'static str {
        "zfs"
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            instant_clone: true,
            atomic_snapshot: true,
        }
    }

    fn create_volume(&self, path: &Path) -> io::Result<()> {
        let name = self.new_dataset_name(path)?;
        run(self
            .zfs()
            .arg("create")
            .arg("-o")
            .arg(format!("mountpoint={}", path.display()))
            .arg(&name))
        .map(|_| ())
    }

    fn clone_volume(
        &self,
        src: &Path,
        dst: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> io::Result<()> {
        let Some(src_ds) = self.dataset_at(src)? else {
            tracing::warn!(src = %src.display(), "not a ZFS dataset; cloning it by copying");
            self.create_volume(dst)?;
            let result = clone_tree_into(src, dst, progress, &mut |from, to| {
                std::fs::copy(from, to).map(|_| ())
            });
            if result.is_err() {
                let _ = self.delete_volume(dst);
            }
            return result;
        };
        let dst_ds = self.new_dataset_name(dst)?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot = format!("{src_ds}@clone-{stamp}");
        run(self.zfs().arg("snapshot").arg(&snapshot))?;
        run(self
            .zfs()
            .arg("clone")
            .arg("-o")
            .arg(format!("mountpoint={}", dst.display()))
            .arg(&snapshot)
            .arg(&dst_ds))?;
        if let Err(e) = std::fs::write(dst.join(ORIGIN_FILE), &snapshot) {
            let _ = self.delete_volume(dst);
            return Err(e);
        }
        progress(0, 0);
        Ok(())
    }

    fn delete_volume(&self, path: &Path) -> io::Result<()> {
        match self.dataset_at(path)? {
            Some(name) => {
                let origin = std::fs::read_to_string(path.join(ORIGIN_FILE)).ok();
                run(self.zfs().args(["destroy", "-r"]).arg(&name))?;
                match origin.as_deref().map(str::trim) {
                    Some(snap) if snap.contains('@') => {
                        run(self.zfs().arg("destroy").arg(snap)).map(|_| ())
                    }
                    _ => Ok(()),
                }
            }
            None => CopyDriver.delete_volume(path),
        }
    }

    fn rename_volume(&self, from: &Path, to: &Path) -> io::Result<()> {
        let Some(name) = self.dataset_at(from)? else {
            return std::fs::rename(from, to);
        };
        let new_name = self.new_dataset_name(to)?;
        run(self.zfs().arg("rename").arg(&name).arg(&new_name))?;
        run(self
            .zfs()
            .arg("set")
            .arg(format!("mountpoint={}", to.display()))
            .arg(&new_name))
        .map(|_| ())
    }
}
