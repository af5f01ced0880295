//! The btrfs driver: every volume is a subvolume and a clone is a
//! writable snapshot (`btrfs subvolume snapshot`), instant and atomic.
//! A source that is a plain directory (a template made before this driver
//! existed) is cloned into a new subvolume with reflinks instead.

use super::copy::clone_tree_into;
use super::reflink::reflink_file;
use super::{run, DriverCapabilities, StorageDriver};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// Subvolumes and snapshots through the `btrfs` CLI (found on `PATH`).
pub struct BtrfsDriver;

/// Whether `path` is the root of a btrfs subvolume (its inode is always 256).
pub(crate) fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir() && m.ino() == 256)
        .unwrap_or(false)
}

impl StorageDriver for BtrfsDriver {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            instant_clone: true,
            atomic_snapshot: true,
        }
    }

    fn create_volume(&self, path: &Path) -> io::Result<()> {
        run(Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(path))
        .map(|_| ())
    }

    fn clone_volume(
        &self,
        src: &Path,
        dst: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> io::Result<()> {
        if !is_subvolume(src) {
            tracing::warn!(src = %src.display(), "not a btrfs subvolume; cloning it file by file with reflinks");
            self.create_volume(dst)?;
            let result =
                clone_tree_into(src, dst, progress, &mut |from, to| reflink_file(from, to));
            if result.is_err() {
                let _ = self.delete_volume(dst);
            }
            return result;
        }
        run(Command::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(src)
            .arg(dst))?;
        progress(0, 0);
        Ok(())
    }

    fn delete_volume(&self, path: &Path) -> io::Result<()> {
        if is_subvolume(path) {
            // Without root (and no `user_subvol_rm_allowed`) the ioctl is
            // refused; emptying it and rmdir works for its owner then.
            run(Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(path))
            .map(|_| ())
            .or_else(|e| std::fs::remove_dir_all(path).map_err(|_| e))
        } else {
            std::fs::remove_dir_all(path)
        }
    }
}
