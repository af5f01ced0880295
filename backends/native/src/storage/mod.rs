//! Storage drivers: how the native backend makes, clones and deletes the
//! directories ("volumes") that hold clusters. A database is a clone of the
//! template volume; on btrfs and ZFS that clone is a snapshot, on
//! filesystems with reflinks (XFS `reflink=1`, btrfs without its CLI) every
//! file shares the template's extents, elsewhere it is a plain copy.
//!
//! [`detect`] picks the driver for a root directory from its filesystem
//! (`statfs`) or honours the one configured in `native.storage`.

mod btrfs;
mod copy;
mod reflink;
mod zfs;

pub use btrfs::BtrfsDriver;
pub(crate) use copy::sync_filesystem;
pub use copy::CopyDriver;
pub use reflink::{probe_reflink, ReflinkDriver};
pub use zfs::ZfsDriver;

use nix::sys::statfs::{statfs, FsType};
use std::io;
use std::path::Path;
use std::process::Command;

/// What a driver can do cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverCapabilities {
    /// Clones take time independent of the volume's size.
    pub instant_clone: bool,
    /// A clone is a consistent point-in-time image of the whole volume
    /// (a filesystem snapshot), and keeps ownership as it is.
    pub atomic_snapshot: bool,
}

/// Makes, clones and deletes volumes: directories the backend keeps clusters in.
pub trait StorageDriver: Send + Sync {
    /// `btrfs`, `zfs`, `reflink` or `copy`.
    fn name(&self) -> &'static str;
    /// What this driver does cheaply.
    fn capabilities(&self) -> DriverCapabilities;
    /// Makes an empty volume at `path` (whose parent exists). The default:
    /// a plain directory.
    fn create_volume(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    /// Makes `dst` (which must not exist) a volume holding a copy of the
    /// volume `src`. `progress(done_bytes, total_bytes)` is called as the
    /// work advances, and at least once at the end with `done == total`.
    fn clone_volume(
        &self,
        src: &Path,
        dst: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> io::Result<()>;
    /// Deletes the volume at `path` and everything in it. The default: a
    /// plain directory.
    fn delete_volume(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    /// Moves the volume `from` to `to` (same filesystem).
    fn rename_volume(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
}

/// `statfs` magic of ZFS (not in libc).
pub const ZFS_SUPER_MAGIC: i64 = 0x2fc1_2fc1;

/// Whether a `statfs` magic is ZFS's (the magic's integer type varies by target).
#[allow(clippy::unnecessary_cast)]
fn is_zfs(t: FsType) -> bool {
    t.0 as i64 == ZFS_SUPER_MAGIC
}

/// The filesystem type of `path` (its `statfs` magic).
pub fn fs_type(path: &Path) -> io::Result<FsType> {
    statfs(path)
        .map(|s| s.filesystem_type())
        .map_err(io::Error::from)
}

/// A readable name for a `statfs` magic.
pub fn fs_name(t: FsType) -> String {
    use nix::sys::statfs::*;
    let known = [
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (XFS_SUPER_MAGIC, "xfs"),
        (EXT4_SUPER_MAGIC, "ext4"),
        (TMPFS_MAGIC, "tmpfs"),
        (OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (NFS_SUPER_MAGIC, "nfs"),
    ];
    if is_zfs(t) {
        return "zfs".to_string();
    }
    known
        .iter()
        .find(|(m, _)| *m == t)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("filesystem type {:#x}", t.0))
}

/// Whether a program is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Picks the storage driver for `root`. `configured` is `native.storage`:
/// `btrfs`, `zfs`, `reflink`, `copy`, or `auto`/unset (detected from the
/// filesystem). A configured driver that cannot work there is an error
/// naming the filesystem found.
pub fn detect(root: &Path, configured: Option<&str>) -> Result<Box<dyn StorageDriver>, String> {
    let t = fs_type(root).map_err(|e| format!("could not statfs {}: {e}", root.display()))?;
    let fs = fs_name(t);
    let is_btrfs = t == nix::sys::statfs::BTRFS_SUPER_MAGIC;
    let on_zfs = is_zfs(t);
    let refuse = |driver: &str, why: &str| {
        format!(
            "native.storage = \"{driver}\" cannot work on {} ({fs}): {why}",
            root.display()
        )
    };
    match configured.unwrap_or("auto") {
        "btrfs" => {
            if !is_btrfs {
                return Err(refuse("btrfs", "it is not a btrfs filesystem"));
            }
            if !on_path("btrfs") {
                return Err(refuse(
                    "btrfs",
                    "the `btrfs` command is not on PATH (apt-get install btrfs-progs)",
                ));
            }
            Ok(Box::new(BtrfsDriver))
        }
        "zfs" => {
            if !on_zfs {
                return Err(refuse("zfs", "it is not a ZFS dataset"));
            }
            Ok(Box::new(ZfsDriver::new()))
        }
        "reflink" => match probe_reflink(root) {
            Ok(()) => Ok(Box::new(ReflinkDriver)),
            Err(e) => Err(refuse("reflink", &format!("FICLONE failed: {e}"))),
        },
        "copy" => Ok(Box::new(CopyDriver)),
        "auto" => {
            if is_btrfs && on_path("btrfs") {
                Ok(Box::new(BtrfsDriver))
            } else if on_zfs {
                Ok(Box::new(ZfsDriver::new()))
            } else if probe_reflink(root).is_ok() {
                Ok(Box::new(ReflinkDriver))
            } else {
                Ok(Box::new(CopyDriver))
            }
        }
        other => Err(format!(
            "native.storage = \"{other}\" is not a storage driver; use \"auto\", \"btrfs\", \"zfs\", \"reflink\" or \"copy\""
        )),
    }
}

/// Runs a storage command; a failure names the command and carries its stderr.
pub(crate) fn run(cmd: &mut Command) -> io::Result<String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("could not run `{shown}`: {e}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_or_impossible_drivers_are_refused_with_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect(dir.path(), Some("lvm")).err().unwrap();
        assert!(err.contains("\"lvm\""), "{err}");
        let fs = fs_name(fs_type(dir.path()).unwrap());
        if fs != "zfs" {
            let err = detect(dir.path(), Some("zfs")).err().unwrap();
            assert!(err.contains(&fs), "{err}");
        }
        if fs != "btrfs" {
            let err = detect(dir.path(), Some("btrfs")).err().unwrap();
            assert!(err.contains(&fs), "{err}");
        }
        assert_eq!(detect(dir.path(), Some("copy")).unwrap().name(), "copy");
    }
}
