//! The template cluster: `initdb` runs once per data root; every database
//! is a clone of its volume (`template/`, holding `pgdata`), made by the
//! storage driver.
//!
//! The template is made in a scratch volume and renamed into place when
//! complete, so a crash during `initdb` never leaves a half-made template
//! that later clones would inherit.

use crate::os_user::ComputeUser;
use crate::pg_binaries::PgBinaries;
use crate::secrets::{write_private, MasterSecret, SUPERUSER};
use crate::storage::StorageDriver;
use std::io::Write;
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

/// Why the template could not be made; the message names the file and the
/// OS's reason (the io error is kept, not only its text).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file or volume step failed.
    #[error("could not {what}: {cause}")]
    Io {
        /// What it was doing, with the path.
        what: String,
        /// The OS's reason.
        cause: std::io::Error,
    },
    /// initdb ran and failed; its own words.
    #[error("initdb failed: {0}")]
    Initdb(String),
}

fn failed(what: String) -> impl FnOnce(std::io::Error) -> TemplateError {
    move |cause| TemplateError::Io { what, cause }
}

/// Makes the volume `<root>/template` holding `pgdata` if it does not exist
/// yet; returns the path of `pgdata`.
pub fn ensure_template(
    root: &Path,
    bins: &PgBinaries,
    user: &ComputeUser,
    secret: &MasterSecret,
    storage: &dyn StorageDriver,
) -> Result<PathBuf, TemplateError> {
    let template_dir = root.join("template");
    let pgdata = template_dir.join("pgdata");
    if pgdata.join("PG_VERSION").exists() {
        return Ok(pgdata);
    }
    let scratch = root.join("template.partial");
    if scratch.exists() {
        storage
            .delete_volume(&scratch)
            .map_err(failed(format!("remove {}", scratch.display())))?;
    }
    storage
        .create_volume(&scratch)
        .map_err(failed(format!("create {}", scratch.display())))?;
    // initdb runs as the compute user: the scratch dir and the password
    // file must be that user's.
    let pwfile = scratch.join("pwfile");
    write_private(&pwfile, secret.superuser_password().as_bytes())
        .map_err(failed(format!("write {}", pwfile.display())))?;
    user.chown_tree(&scratch).map_err(failed(format!(
        "hand {} to the compute user",
        scratch.display()
    )))?;
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
        .map_err(failed(format!("run {}", bins.initdb().display())))?;
    let _ = std::fs::remove_file(&pwfile);
    if !output.status.success() {
        return Err(TemplateError::Initdb(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    append(&scratch_pgdata.join("postgresql.conf"), COMPUTE_CONF)
        .and_then(|_| std::fs::write(scratch_pgdata.join("pg_hba.conf"), COMPUTE_HBA))
        .map_err(failed("configure the template".into()))?;
    user.chown_tree(&scratch)
        .map_err(failed("hand the template to the compute user".into()))?;
    if template_dir.exists() {
        storage
            .delete_volume(&template_dir)
            .map_err(failed(format!("remove {}", template_dir.display())))?;
    }
    storage
        .rename_volume(&scratch, &template_dir)
        .map_err(failed("move the template into place".into()))?;
    Ok(pgdata)
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())
}
