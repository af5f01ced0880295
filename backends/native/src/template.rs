//! The template cluster: `initdb` runs once per data root; every database
//! is a copy of it. Also the recursive copy used to clone it.
//!
//! The template is made in a scratch directory and renamed into place when
//! complete, so a crash during `initdb` never leaves a half-made template
//! that later clones would inherit.

use crate::os_user::ComputeUser;
use crate::pg_binaries::PgBinaries;
use crate::secrets::{write_private, MasterSecret, SUPERUSER};
use std::io::Write;
#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Settings every compute gets, appended to the template's postgresql.conf.
/// Loopback only, no unix socket (its path length is limited to 107 bytes
/// and data dirs can be deep), stderr logging (the gateway redirects it).
const COMPUTE_CONF: &str = "\
# Written by OgelBase: every database cluster is cloned from this template.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
logging_collector = off
log_line_prefix = '%m [%p] '
password_encryption = 'scram-sha-256'
";

/// Only the gateway, over loopback, with SCRAM.
const COMPUTE_HBA: &str = "\
# Written by OgelBase: only the gateway logs in, with SCRAM, over loopback.
host all all 127.0.0.1/32 scram-sha-256
";

/// Makes `<root>/template/pgdata` if it does not exist yet; returns its path.
pub fn ensure_template(
    root: &Path,
    bins: &PgBinaries,
    user: &ComputeUser,
    secret: &MasterSecret,
) -> Result<PathBuf, String> {
    let template_dir = root.join("template");
    let pgdata = template_dir.join("pgdata");
    if pgdata.join("PG_VERSION").exists() {
        return Ok(pgdata);
    }
    let scratch = root.join("template.partial");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .map_err(|e| format!("could not remove {}: {e}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("could not create {}: {e}", scratch.display()))?;
    // initdb runs as the compute user: the scratch dir and the password
    // file must be that user's.
    let pwfile = scratch.join("pwfile");
    write_private(&pwfile, secret.superuser_password().as_bytes())
        .map_err(|e| format!("could not write {}: {e}", pwfile.display()))?;
    user.chown_tree(&scratch).map_err(|e| {
        format!(
            "could not hand {} to the compute user: {e}",
            scratch.display()
        )
    })?;
    let scratch_pgdata = scratch.join("pgdata");
    let mut cmd = std::process::Command::new(bins.initdb());
    cmd.arg("-D")
        .arg(&scratch_pgdata)
        .args(["--data-checksums", "--no-locale", "--encoding=UTF8"])
        .args(["--auth=scram-sha-256", "-U", SUPERUSER])
        .arg(format!("--pwfile={}", pwfile.display()))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    user.apply_std(&mut cmd);
    tracing::info!(bin = %bins.bin_dir.display(), version = %bins.version, "initdb of the template cluster (once per data dir)");
    let output = cmd
        .output()
        .map_err(|e| format!("could not run {}: {e}", bins.initdb().display()))?;
    let _ = std::fs::remove_file(&pwfile);
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    append(&scratch_pgdata.join("postgresql.conf"), COMPUTE_CONF)
        .and_then(|_| std::fs::write(scratch_pgdata.join("pg_hba.conf"), COMPUTE_HBA))
        .map_err(|e| format!("could not configure the template: {e}"))?;
    user.chown_tree(&scratch)
        .map_err(|e| format!("could not hand the template to the compute user: {e}"))?;
    if template_dir.exists() {
        std::fs::remove_dir_all(&template_dir)
            .map_err(|e| format!("could not remove {}: {e}", template_dir.display()))?;
    }
    std::fs::rename(&scratch, &template_dir)
        .map_err(|e| format!("could not move the template into place: {e}"))?;
    Ok(pgdata)
}

/// Copies a cluster directory tree, keeping modes. Skips the files that
/// belong to a running postmaster (`postmaster.pid`, `postmaster.opts`).
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dst)?;
    std::fs::set_permissions(dst, std::fs::metadata(src)?.permissions())?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "postmaster.pid" || name == "postmaster.opts" {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("base/1/1259")).unwrap(), b"relation");
        assert!(!dst.join("postmaster.pid").exists());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dst), 0o700);
        assert_eq!(mode(&dst.join("base/1/1259")), 0o600);
    }
}
