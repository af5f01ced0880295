//! The copy driver: volumes are plain directories and a clone is a full
//! recursive copy (O(size)). Works on every filesystem; the fallback when
//! nothing cheaper is available. Also the tree walk the reflink driver reuses.

use super::{DriverCapabilities, StorageDriver};
use std::io;
use std::path::Path;

/// Plain directories, cloned by copying every byte.
pub struct CopyDriver;

impl StorageDriver for CopyDriver {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn capabilities(&self) -> DriverCapabilities {
        DriverCapabilities {
            instant_clone: false,
            atomic_snapshot: false,
        }
    }

    fn clone_volume(
        &self,
        src: &Path,
        dst: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> io::Result<()> {
        clone_tree(src, dst, progress, &mut |from, to| {
            std::fs::copy(from, to).map(|_| ())
        })
    }
}

fn skipped(name: &std::ffi::OsStr) -> bool {
    name == "postmaster.pid" || name == "postmaster.opts"
}

/// Bytes in the regular files of a tree (what a copy of it writes).
fn tree_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if skipped(&entry.file_name()) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Recreates the tree `src` at `dst` (which must not exist): directories
/// with their modes, symlinks as symlinks, and each regular file through
/// `file(from, to)`, which must create `to` (its mode is then set from
/// `from`). Reports progress in bytes of regular files.
pub(crate) fn clone_tree(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64, u64),
    file: &mut dyn FnMut(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let total = tree_bytes(src)?;
    let mut done = 0;
    progress(0, total);
    walk(
        src,
        dst,
        &mut |len| {
            done += len;
            progress(done.min(total), total);
        },
        file,
    )?;
    if done < total {
        // Files shrank under us; still tell the caller it is over.
        progress(total, total);
    }
    // Durable before the clone is reported made: a crash must not leave a
    // branch that exists but lost its files.
    sync_filesystem(dst)
}

/// Flushes the filesystem holding `path` (`syncfs`: one call, not one
/// `fsync` per file).
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path)?;
    // SAFETY: a valid open file descriptor for the duration of the call.
    if unsafe { nix::libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Like [`clone_tree`], into the existing (empty) directory `dst`: the tree
/// is made in a staging directory inside it, then moved up, and `dst` takes
/// the mode of `src`.
pub(crate) fn clone_tree_into(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64, u64),
    file: &mut dyn FnMut(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let staged = dst.join(".ogel-staging");
    clone_tree(src, &staged, progress, file)?;
    for entry in std::fs::read_dir(&staged)? {
        let entry = entry?;
        std::fs::rename(entry.path(), dst.join(entry.file_name()))?;
    }
    std::fs::set_permissions(dst, std::fs::metadata(&staged)?.permissions())?;
    std::fs::remove_dir(&staged)
}

fn walk(
    src: &Path,
    dst: &Path,
    advance: &mut dyn FnMut(u64),
    file: &mut dyn FnMut(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    std::fs::create_dir(dst)?;
    std::fs::set_permissions(dst, std::fs::metadata(src)?.permissions())?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if skipped(&name) {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&from, &to, advance, file)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            let meta = entry.metadata()?;
            file(&from, &to)?;
            std::fs::set_permissions(&to, meta.permissions())?;
            advance(meta.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copy_keeps_modes_and_skips_postmaster_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("base/1")).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(src.join("base/1/1259"), b"relation").unwrap();
        std::fs::set_permissions(
            src.join("base/1/1259"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(src.join("postmaster.pid"), b"1").unwrap();
        std::os::unix::fs::symlink("base/1", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        CopyDriver.clone_volume(&src, &dst, &mut |_, _| {}).unwrap();
        assert_eq!(std::fs::read(dst.join("base/1/1259")).unwrap(), b"relation");
        assert!(!dst.join("postmaster.pid").exists());
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            Path::new("base/1")
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dst), 0o700);
        assert_eq!(mode(&dst.join("base/1/1259")), 0o600);
    }

    #[test]
    fn progress_reaches_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        for (i, path) in ["x", "a/y", "a/b/z"].iter().enumerate() {
            std::fs::write(src.join(path), vec![7u8; 1000 * (i + 1)]).unwrap();
        }
        std::fs::write(src.join("postmaster.pid"), b"123").unwrap();
        let mut calls = Vec::new();
        CopyDriver
            .clone_volume(&src, &dir.path().join("dst"), &mut |d, t| {
                calls.push((d, t))
            })
            .unwrap();
        assert_eq!(calls.first(), Some(&(0, 6000)));
        assert_eq!(calls.last(), Some(&(6000, 6000)));
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
        assert_eq!(calls.len(), 4, "{calls:?}");
    }
}
