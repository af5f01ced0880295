//! `ogel backup create|list|restore`: backups in the backend's durable
//! store (the native backend's cold tier), with progress while they run.

use super::{opt, with_progress, ApiClient};
use crate::api::backups::{BackupEntry, RestoreResult};
use clap::Subcommand;
use reqwest::Method;

/// `ogel backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Make a backup now (incremental on PostgreSQL 17+ unless --full).
    Create {
        /// Database.
        database: String,
        /// Branch.
        #[arg(long, default_value = "main")]
        branch: String,
        /// A full backup even where it would be incremental.
        #[arg(long)]
        full: bool,
    },
    /// List a database's backups (also one this gateway does not have yet).
    List {
        /// Database.
        database: String,
        /// For a database this gateway does not have: whose store to look
        /// in (default: the default backend).
        #[arg(long)]
        backend: Option<String>,
    },
    /// Restore from the store alone: to the end of the archive, or to a
    /// time or LSN; into the branch itself (replaced once the restored copy
    /// is whole) or another (`--as`). A database this gateway does not
    /// have is restored onto it and gets a new password.
    Restore {
        /// Database.
        database: String,
        /// The branch whose backups are used.
        #[arg(long, default_value = "main")]
        branch: String,
        /// `latest` (default), an LSN (0/16B3740) or a time (RFC 3339).
        #[arg(long)]
        at: Option<String>,
        /// Restore as this branch.
        #[arg(long = "as")]
        as_branch: Option<String>,
        /// This backup instead of the newest one before --at.
        #[arg(long)]
        backup: Option<String>,
        /// For a database this gateway does not have: its backend.
        #[arg(long)]
        backend: Option<String>,
    },
}

pub(super) async fn backup(api: &ApiClient, command: &BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create {
            database,
            branch,
            full,
        } => {
            let path = format!("/v1/databases/{database}/backups");
            let body = serde_json::json!({ "branch": branch, "full": full });
            let compute = crate::names::compute_name(database, branch);
            let started = std::time::Instant::now();
            let b: BackupEntry =
                with_progress(api, &compute, api.call(Method::POST, &path, Some(body))).await?;
            eprintln!(
                "{} backup of {compute} in {:.1}s: {} of data, {} stored (WAL {} – {})",
                b.kind,
                started.elapsed().as_secs_f64(),
                human_bytes(b.size_bytes),
                human_bytes(b.stored_bytes),
                b.start_lsn,
                b.end_lsn
            );
            if b.kind == "full" && b.pg_major < 17 {
                eprintln!(
                    "note: PostgreSQL {} makes full backups only (incremental ones need 17+); WAL between them is archived continuously",
                    b.pg_major
                );
            }
            println!("{}", b.id);
        }
        BackupCommand::List { database, backend } => {
            let mut path = format!("/v1/databases/{database}/backups");
            if let Some(backend) = backend {
                path.push_str(&format!("?backend={backend}"));
            }
            let list: Vec<BackupEntry> = api.call(Method::GET, &path, None).await?;
            println!(
                "{:<24} {:<12} {:<12} {:<24} {:>10} {:>10} {:>12}  WAL",
                "BACKUP", "BRANCH", "KIND", "AFTER", "SIZE", "STORED", "FINISHED"
            );
            for b in list {
                println!(
                    "{:<24} {:<12} {:<12} {:<24} {:>10} {:>10} {:>12}  {}–{}",
                    b.id,
                    b.branch,
                    b.kind,
                    opt(b.parent),
                    human_bytes(b.size_bytes),
                    human_bytes(b.stored_bytes),
                    b.finished_at_unix,
                    b.start_lsn,
                    b.end_lsn
                );
            }
        }
        BackupCommand::Restore {
            database,
            branch,
            at,
            as_branch,
            backup,
            backend,
        } => {
            let path = format!("/v1/databases/{database}/backups/restore");
            let body = serde_json::json!({
                "branch": branch,
                "at": at,
                "as": as_branch,
                "backup": backup,
                "backend": backend,
            });
            let target = as_branch.as_deref().unwrap_or(branch);
            let compute = crate::names::compute_name(database, target);
            eprintln!(
                "restoring {compute} from {}'s backups{}…",
                crate::names::compute_name(database, branch),
                at.as_deref()
                    .map(|a| format!(" to {a}"))
                    .unwrap_or_default()
            );
            let started = std::time::Instant::now();
            let result: RestoreResult =
                with_progress(api, &compute, api.call(Method::POST, &path, Some(body))).await?;
            eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
            match result {
                RestoreResult::Branch(b) => {
                    println!("restored into branch \"{}\": {}", b.name, b.url)
                }
                RestoreResult::Database(c) => {
                    eprintln!(
                        "database \"{}\" is on this gateway now; its owner's password is shown once:",
                        c.database.name
                    );
                    println!("{}", c.url);
                }
            }
        }
    }
    Ok(())
}

/// 1536 → "1.5 KiB".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
