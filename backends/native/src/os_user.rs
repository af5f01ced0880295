//! The unprivileged OS user that PostgreSQL compute processes run as.
//!
//! PostgreSQL refuses to run as root. When the gateway runs as root (effective uid 0), this module
//! resolves — creating it with `useradd` if needed — an unprivileged user (default "ogel",
//! configurable via `native.os_user`), applies its uid/gid to spawned commands, hands data
//! directories over to it (`chown_tree`), and checks up front that it can reach a data directory
//! (`check_can_reach`). When the gateway is not root, everything runs as the current user and
//! these operations are no-ops.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{getegid, geteuid, User};

/// Default name of the compute user.
pub const DEFAULT_OS_USER: &str = "ogel";

/// The OS user compute processes run as.
#[derive(Clone, Debug)]
pub struct ComputeUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Whether spawned processes switch to `uid`/`gid` (true only when the gateway is root).
    pub switch: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OsUserError {
    #[error("invalid native.os_user {name:?}: use a plain user name such as \"ogel\" (letters, digits, '_', '-', '.'; not starting with '-')")]
    InvalidName { name: String },
    #[error("native.os_user '{name}' has uid 0, but PostgreSQL refuses to run as root; set native.os_user to an unprivileged user (default \"ogel\")")]
    IsRoot { name: String },
    #[error("looking up OS user '{name}' failed: {source}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("the gateway runs as root and PostgreSQL refuses to run as root, but the OS user '{name}' does not exist and could not be created ({detail}). Run as a non-root user, or create the user: `useradd --system {name}`, or set native.os_user (ogel.toml) / OGEL_NATIVE__OS_USER to an existing unprivileged user")]
    CreateFailed { name: String, detail: String },
    #[error("the compute user '{user}' cannot enter {} (mode {mode:04o}); use a path outside it, or `{fix}`", .dir.display())]
    Unreachable {
        user: String,
        dir: PathBuf,
        mode: u32,
        /// A command that would grant access, e.g. "chmod o+x /root".
        fix: String,
    },
    #[error("checking {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ComputeUser {
    /// If not root: the current user, `switch = false`. If root: looks up `name`, creating it
    /// with `useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin`
    /// when missing, and returns it with `switch = true`.
    ///
    /// Blocking (may spawn `useradd`); call from startup code or `spawn_blocking`.
    pub fn resolve(name: &str) -> Result<ComputeUser, OsUserError> {
        let euid = geteuid();
        if !euid.is_root() {
            let current = User::from_uid(euid).ok().flatten();
            return Ok(ComputeUser {
                name: current
                    .map(|u| u.name)
                    .unwrap_or_else(|| euid.as_raw().to_string()),
                uid: euid.as_raw(),
                gid: getegid().as_raw(),
                switch: false,
            });
        }

        validate_name(name)?;
        let user = match lookup(name)? {
            Some(user) => user,
            None => create(name)?,
        };
        if user.uid.is_root() {
            return Err(OsUserError::IsRoot {
                name: name.to_string(),
            });
        }
        Ok(ComputeUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            switch: true,
        })
    }

    /// Makes a std `Command` run as this user (when `switch`). When the parent is root, std also
    /// drops supplementary groups, so the child has exactly `uid` and `gid`.
    pub fn apply_std(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
    }

    /// Makes a tokio `Command` run as this user (when `switch`).
    pub fn apply_tokio(&self, cmd: &mut tokio::process::Command) {
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
    }

    /// Whether `path` (not followed if a symlink) belongs to this user and
    /// group. Always true when `switch` is false (nothing is handed over then).
    pub fn owns(&self, path: &Path) -> bool {
        if !self.switch {
            return true;
        }
        fs::symlink_metadata(path)
            .map(|m| m.uid() == self.uid && m.gid() == self.gid)
            .unwrap_or(false)
    }

    /// Recursively hands `path` over to this user (when `switch`; otherwise a no-op). Symlinks
    /// are re-owned themselves and never followed.
    pub fn chown_tree(&self, path: &Path) -> io::Result<()> {
        if !self.switch {
            return Ok(());
        }
        let mut pending = vec![path.to_path_buf()];
        while let Some(entry) = pending.pop() {
            let meta = fs::symlink_metadata(&entry).map_err(|e| with_path(e, "stat", &entry))?;
            if meta.uid() != self.uid || meta.gid() != self.gid {
                lchown(&entry, Some(self.uid), Some(self.gid))
                    .map_err(|e| with_path(e, "chown", &entry))?;
            }
            if meta.is_dir() {
                for child in fs::read_dir(&entry).map_err(|e| with_path(e, "read", &entry))? {
                    let child = child.map_err(|e| with_path(e, "read", &entry))?;
                    pending.push(child.path());
                }
            }
        }
        Ok(())
    }

    /// Checks that this user can traverse (search permission via the owner/group/other bits)
    /// every existing ancestor directory of `path`, including those of its resolved location
    /// when symlinks are involved. ACLs are not considered. Ok when `switch` is false.
    pub fn check_can_reach(&self, path: &Path) -> Result<(), OsUserError> {
        if !self.switch {
            return Ok(());
        }
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| OsUserError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .join(path)
        };
        self.check_ancestors(&absolute)?;
        // If symlinks are involved, the real location's ancestors must be traversable too.
        if let Some(existing) = absolute.ancestors().find(|a| a.exists()) {
            if let Ok(real) = fs::canonicalize(existing) {
                if real != existing {
                    self.check_ancestors(&real.join("x"))?;
                }
            }
        }
        Ok(())
    }

    /// Checks the proper ancestors of `path`, root first.
    fn check_ancestors(&self, path: &Path) -> Result<(), OsUserError> {
        let ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
        for dir in ancestors.into_iter().rev() {
            let meta = match fs::metadata(dir) {
                Ok(meta) => meta,
                // Not created yet: nothing to check below it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(source) => {
                    return Err(OsUserError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            };
            if !meta.is_dir() {
                continue;
            }
            let mode = meta.mode() & 0o7777;
            let (bit, who) = if meta.uid() == self.uid {
                (0o100, "u")
            } else if meta.gid() == self.gid {
                (0o010, "g")
            } else {
                (0o001, "o")
            };
            if mode & bit == 0 {
                return Err(OsUserError::Unreachable {
                    user: self.name.clone(),
                    dir: dir.to_path_buf(),
                    mode,
                    fix: format!("chmod {who}+x {}", dir.display()),
                });
            }
        }
        Ok(())
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Accepts names `useradd` would take and that cannot be mistaken for options.
fn validate_name(name: &str) -> Result<(), OsUserError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(OsUserError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn lookup(name: &str) -> Result<Option<User>, OsUserError> {
    User::from_name(name).map_err(|source| OsUserError::Lookup {
        name: name.to_string(),
        source,
    })
}

/// Creates `name` as a system user without a home directory or login shell.
fn create(name: &str) -> Result<User, OsUserError> {
    let failed = |detail: String| OsUserError::CreateFailed {
        name: name.to_string(),
        detail,
    };
    let output = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .stdin(std::process::Stdio::null())
        .output();
    let detail = match output {
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Some(format!(
                "useradd exited with {}: {}",
                out.status,
                stderr.trim()
            ))
        }
        Err(e) => Some(format!("running useradd failed: {e}")),
    };
    // Another process may have created the user concurrently; the lookup settles it.
    match (lookup(name)?, detail) {
        (Some(user), None) => {
            tracing::info!(
                user = name,
                uid = user.uid.as_raw(),
                "created OS user '{name}' to run PostgreSQL (it refuses to run as root)"
            );
            Ok(user)
        }
        (Some(user), Some(_)) => Ok(user),
        (None, Some(detail)) => Err(failed(detail)),
        (None, None) => Err(failed(
            "useradd succeeded but the user cannot be looked up".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn is_root() -> bool {
        geteuid().is_root()
    }

    /// A user that is neither root nor the owner of anything the tests create.
    fn nobody() -> ComputeUser {
        ComputeUser {
            name: "nobody-test".to_string(),
            uid: 65534,
            gid: 65534,
            switch: true,
        }
    }

    /// tempfile creates 0700 dirs; open it up so only the dirs under test can block.
    fn open_tempdir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        tmp
    }

    #[test]
    fn resolve_as_root_finds_or_creates_unprivileged_user() {
        let user = ComputeUser::resolve(DEFAULT_OS_USER).unwrap();
        if is_root() {
            assert!(user.switch);
            assert_eq!(user.name, DEFAULT_OS_USER);
            assert_ne!(user.uid, 0);
            let entry = User::from_name(DEFAULT_OS_USER).unwrap().unwrap();
            assert_eq!(entry.uid.as_raw(), user.uid);
            assert_eq!(entry.gid.as_raw(), user.gid);
            // Second resolve finds the existing user.
            let again = ComputeUser::resolve(DEFAULT_OS_USER).unwrap();
            assert_eq!(again.uid, user.uid);
        } else {
            assert!(!user.switch);
            assert_eq!(user.uid, geteuid().as_raw());
        }
    }

    #[test]
    fn resolve_rejects_bad_names_and_root() {
        if !is_root() {
            return;
        }
        for bad in ["", "-o", "a b", "x;rm"] {
            assert!(
                matches!(
                    ComputeUser::resolve(bad),
                    Err(OsUserError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            ComputeUser::resolve("root"),
            Err(OsUserError::IsRoot { .. })
        ));
    }

    #[test]
    fn apply_sets_uid_only_when_switching() {
        let user = ComputeUser::resolve(DEFAULT_OS_USER).unwrap();
        let mut cmd = Command::new("id");
        cmd.arg("-u");
        user.apply_std(&mut cmd);
        let out = cmd.output().unwrap();
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(uid, user.uid);
    }

    #[tokio::test]
    async fn apply_tokio_sets_uid() {
        let user = ComputeUser::resolve(DEFAULT_OS_USER).unwrap();
        let mut cmd = tokio::process::Command::new("id");
        cmd.arg("-g");
        user.apply_tokio(&mut cmd);
        let out = cmd.output().await.unwrap();
        let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(gid, user.gid);
    }

    #[test]
    fn chown_tree_reowns_everything_without_following_symlinks() {
        if !is_root() {
            return;
        }
        let user = ComputeUser::resolve(DEFAULT_OS_USER).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside.txt");
        fs::write(&outside, "not ours").unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/file"), "x").unwrap();
        fs::write(tree.join("top"), "y").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();

        user.chown_tree(&tree).unwrap();

        for p in ["", "a", "a/b", "a/b/file", "top", "a/link"] {
            let meta = fs::symlink_metadata(tree.join(p)).unwrap();
            assert_eq!(meta.uid(), user.uid, "{p}");
            assert_eq!(meta.gid(), user.gid, "{p}");
        }
        assert_eq!(fs::metadata(&outside).unwrap().uid(), 0, "symlink target");
    }

    #[test]
    fn chown_tree_is_noop_without_switch() {
        let tmp = tempfile::tempdir().unwrap();
        let before = fs::metadata(tmp.path()).unwrap().uid();
        let user = ComputeUser {
            switch: false,
            ..nobody()
        };
        user.chown_tree(tmp.path()).unwrap();
        assert_eq!(fs::metadata(tmp.path()).unwrap().uid(), before);
    }

    #[test]
    fn check_can_reach_names_the_blocking_dir() {
        let tmp = open_tempdir();
        let locked = tmp.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        let err = nobody().check_can_reach(&locked.join("data")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "the compute user 'nobody-test' cannot enter {} (mode 0700)",
                locked.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("`chmod o+x {}`", locked.display())),
            "{msg}"
        );
        assert!(msg.contains("use a path outside it"), "{msg}");
    }

    #[test]
    fn check_can_reach_passes_open_dirs_and_missing_tail() {
        let tmp = open_tempdir();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        nobody().check_can_reach(&open.join("data")).unwrap();
        // Ancestors that do not exist yet are not a problem.
        nobody()
            .check_can_reach(&open.join("not/yet/created/data"))
            .unwrap();
    }

    #[test]
    fn check_can_reach_uses_group_bits_for_the_users_group() {
        let tmp = open_tempdir();
        let dir = tmp.path().join("group-only");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let meta = fs::metadata(&dir).unwrap();
        let member = ComputeUser {
            gid: meta.gid(),
            ..nobody()
        };
        member.check_can_reach(&dir.join("data")).unwrap();
        let err = nobody().check_can_reach(&dir.join("data")).unwrap_err();
        assert!(err.to_string().contains("mode 0750"), "{err}");
    }

    #[test]
    fn check_can_reach_follows_symlinked_ancestors() {
        let tmp = open_tempdir();
        let locked = tmp.path().join("locked");
        fs::create_dir_all(locked.join("real")).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(locked.join("real"), &link).unwrap();
        let msg = nobody()
            .check_can_reach(&link.join("data"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&locked.display().to_string()), "{msg}");
    }

    #[test]
    fn check_can_reach_is_ok_without_switch() {
        let user = ComputeUser {
            switch: false,
            ..nobody()
        };
        user.check_can_reach(Path::new("/root/secret/data"))
            .unwrap();
    }
}
