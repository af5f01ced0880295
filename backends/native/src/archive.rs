//! Continuous WAL archiving into the cold tier.
//!
//! Postgres marks each finished WAL segment (and timeline history file)
//! with `pg_wal/archive_status/<name>.ready`. The archiver — tasks of the
//! gateway's own process, which can read every data directory — picks up
//! to `upload_concurrency` ready files per compute, seals them (zstd, our
//! SHA-256, optional encryption) and puts them in the store, retrying with
//! backoff; once the store has answered, it leaves a mark
//! `archive/<compute>/<name>`. The compute's `archive_command` only waits
//! for that mark, so a segment counts as archived (and Postgres may recycle
//! it) only once it is durable in the store; until then Postgres keeps it
//! and retries. The queue is Postgres's own `.ready` list: bounded by
//! `upload_concurrency` in flight, and Postgres keeps the WAL for as long
//! as the store is behind or unreachable. If the gateway is down, the
//! command times out and Postgres retries later: nothing is lost.
//!
//! Objects: `computes/<compute>/<incarnation>/wal/<name>`. The incarnation
//! (`databases/<compute>/incarnation`) is made the first time a compute
//! archives and again for any clone of it (a branch, a re-created
//! database), so two lives of one name never mix their WAL.

use crate::cold::{seal, with_retry, ObjectStore, SealKey, StoreError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often ready files are looked for.
const SCAN_EVERY: Duration = Duration::from_millis(50);
/// How long one upload is retried before the archiver gives up on it for
/// this round (Postgres still holds the segment; the next scan retries).
const UPLOAD_DEADLINE: Duration = Duration::from_secs(300);
/// Prefix of the note that a file's last upload attempt failed.
const FAILED: &str = ".failed-";

/// How long `archive_command` waits for a segment's mark before failing
/// (Postgres then retries the segment).
pub(crate) const COMMAND_WAIT_SECS: u32 = 60;

/// What is not yet durable for one compute.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveLag {
    /// Ready files not yet in the store.
    pub segments: u64,
    /// Age of the oldest of them, in seconds.
    pub seconds: u64,
    /// The last upload error, until an upload succeeds again.
    pub last_error: Option<String>,
}

struct Watched {
    pgdata: PathBuf,
    marks: PathBuf,
    prefix: String,
    in_flight: HashSet<String>,
    last_error: Option<String>,
}

/// The archiver of one native backend.
pub(crate) struct Archiver {
    store: Arc<dyn ObjectStore>,
    key: Option<Arc<SealKey>>,
    concurrency: usize,
    watched: Mutex<HashMap<String, Watched>>,
}

/// The key prefix of compute `name`'s incarnation `incarnation`.
pub(crate) fn compute_prefix(name: &str, incarnation: &str) -> String {
    format!("computes/{name}/{incarnation}")
}

/// The object holding WAL file `file` under `prefix`.
pub(crate) fn wal_key(prefix: &str, file: &str) -> String {
    format!("{prefix}/wal/{file}")
}

impl Archiver {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        key: Option<Arc<SealKey>>,
        concurrency: usize,
    ) -> Arc<Self> {
        Arc::new(Archiver {
            store,
            key,
            concurrency: concurrency.max(1),
            watched: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn seal_key_arc(&self) -> Option<Arc<SealKey>> {
        self.key.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the scanning loop (on the plugin's runtime).
    pub(crate) fn spawn(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCAN_EVERY).await;
                let Some(archiver) = weak.upgrade() else {
                    return;
                };
                archiver.scan();
            }
        });
    }

    /// Archives compute `name` (data dir `pgdata`, marks in `marks`) under
    /// `prefix` from now on.
    pub(crate) fn watch(&self, name: &str, pgdata: &Path, marks: &Path, prefix: String) {
        let mut watched = self.lock();
        let entry = watched.entry(name.to_string()).or_insert_with(|| Watched {
            pgdata: pgdata.to_path_buf(),
            marks: marks.to_path_buf(),
            prefix: prefix.clone(),
            in_flight: HashSet::new(),
            last_error: None,
        });
        entry.pgdata = pgdata.to_path_buf();
        entry.marks = marks.to_path_buf();
        entry.prefix = prefix;
    }

    /// Stops archiving compute `name` (deleted).
    pub(crate) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Ready files of `pgdata`, oldest first (WAL names sort by position).
    fn ready(pgdata: &Path) -> Vec<(String, SystemTime)> {
        let Ok(entries) = std::fs::read_dir(pgdata.join("pg_wal/archive_status")) else {
            return Vec::new();
        };
        let mut ready: Vec<(String, SystemTime)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
                let at = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((name, at))
            })
            .collect();
        ready.sort();
        ready
    }

    /// One round: start uploads of ready files that are neither in the
    /// store nor in flight, and drop marks Postgres no longer needs.
    fn scan(self: &Arc<Self>) {
        let mut starts = Vec::new();
        {
            let mut watched = self.lock();
            for (name, w) in watched.iter_mut() {
                let ready = Self::ready(&w.pgdata);
                let ready_names: HashSet<&str> = ready.iter().map(|(n, _)| n.as_str()).collect();
                // Marks whose ready file is gone have done their job.
                if let Ok(marks) = std::fs::read_dir(&w.marks) {
                    for mark in marks.flatten() {
                        let file = mark.file_name();
                        if let Some(file) = file.to_str() {
                            let of = file.strip_prefix(FAILED).unwrap_or(file);
                            if !ready_names.contains(of) && !of.starts_with('.') {
                                let _ = std::fs::remove_file(mark.path());
                            }
                        }
                    }
                }
                for (file, _) in &ready {
                    if w.in_flight.len() >= self.concurrency {
                        break;
                    }
                    if w.in_flight.contains(file) || w.marks.join(file).exists() {
                        continue;
                    }
                    w.in_flight.insert(file.clone());
                    starts.push((
                        name.clone(),
                        file.clone(),
                        w.pgdata.join("pg_wal").join(file),
                        w.marks.join(file),
                        wal_key(&w.prefix, file),
                    ));
                }
            }
        }
        for (compute, file, path, mark, key) in starts {
            let archiver = Arc::clone(self);
            tokio::spawn(async move {
                let failed = mark.with_file_name(format!("{FAILED}{file}"));
                let result = archiver.upload(&compute, &failed, &path, &key).await;
                let result = result.and_then(|()| {
                    std::fs::write(&mark, b"")
                        .map_err(|e| format!("could not mark {} as archived: {e}", mark.display()))
                });
                let mut watched = archiver.lock();
                if let Some(w) = watched.get_mut(&compute) {
                    w.in_flight.remove(&file);
                    match result {
                        Ok(()) => w.last_error = None,
                        Err(e) => {
                            tracing::warn!(compute = %compute, file = %file, error = %e, "WAL upload failed; Postgres keeps the segment and it is retried");
                            w.last_error = Some(e);
                        }
                    }
                }
            });
        }
    }

    /// Seals and stores one WAL file. Each failed attempt is noted at
    /// once — in the compute's `last_error`, and as `failed` beside the
    /// marks, which makes the archive command fail now instead of waiting
    /// (so a compute stops promptly while the store is down).
    async fn upload(
        &self,
        compute: &str,
        failed: &Path,
        path: &Path,
        key: &str,
    ) -> Result<(), String> {
        let path_owned = path.to_path_buf();
        let seal_key = self.key.clone();
        let body = tokio::task::spawn_blocking(move || {
            std::fs::read(&path_owned)
                .map(|content| seal(&content, seal_key.as_deref()))
                .map_err(|e| format!("could not read {}: {e}", path_owned.display()))
        })
        .await
        .map_err(|e| format!("sealing {}: {e}", path.display()))??;
        let body = bytes::Bytes::from(body);
        let result = with_retry(&format!("upload {key}"), UPLOAD_DEADLINE, || async {
            let attempt = self.store.put(key, body.clone()).await;
            if let Err(e) = &attempt {
                if let Some(w) = self.lock().get_mut(compute) {
                    w.last_error = Some(e.to_string());
                }
                let _ = std::fs::write(failed, b"");
            }
            attempt
        })
        .await
        .map_err(|e: StoreError| e.to_string());
        if result.is_ok() {
            let _ = std::fs::remove_file(failed);
        }
        result
    }

    /// What compute `name` has not yet made durable.
    pub(crate) fn lag(&self, name: &str) -> Option<ArchiveLag> {
        let watched = self.lock();
        let w = watched.get(name)?;
        let now = SystemTime::now();
        let pending: Vec<SystemTime> = Self::ready(&w.pgdata)
            .into_iter()
            .filter(|(file, _)| !w.marks.join(file).exists())
            .map(|(_, at)| at)
            .collect();
        Some(ArchiveLag {
            segments: pending.len() as u64,
            seconds: pending
                .iter()
                .min()
                .and_then(|at| now.duration_since(*at).ok())
                .map_or(0, |d| d.as_secs()),
            last_error: w.last_error.clone(),
        })
    }

    /// Waits until every ready file of compute `name` is in the store (or
    /// `timeout` passes: the error says how many are left and why).
    pub(crate) async fn drain(&self, name: &str, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.lag(name) {
                None => return Ok(()),
                Some(lag) if lag.segments == 0 => return Ok(()),
                Some(lag) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "{} WAL file(s) of {name} are not in the cold tier yet{}",
                        lag.segments,
                        lag.last_error
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    ))
                }
                Some(_) => tokio::time::sleep(SCAN_EVERY).await,
            }
        }
    }
}

/// What a fetch brought back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub files: u64,
    pub bytes: u64,
}

/// The segment part (log and segment numbers, 16 hex digits) of a WAL
/// segment's file name; `None` for history and other files.
pub(crate) fn segment_of(file: &str) -> Option<&str> {
    (file.len() == 24 && file.bytes().all(|b| b.is_ascii_hexdigit())).then(|| &file[8..])
}

/// The segment part of the file holding `lsn` (16 MiB segments).
pub(crate) fn segment_of_lsn(lsn: u64) -> String {
    let segno = lsn / (16 << 20);
    format!("{:08X}{:08X}", segno / 0x100, segno % 0x100)
}

impl Archiver {
    /// Fetches the WAL archived under `prefix` into `dest` (opened: checked
    /// and decompressed), every timeline's history file and every segment
    /// at or after `from` (a segment part, see [`segment_of_lsn`]); `done`
    /// is told each file. A missing or corrupt object is an error naming it.
    pub(crate) async fn fetch_wal(
        &self,
        prefix: &str,
        dest: &Path,
        from: Option<&str>,
        mut done: impl FnMut(Fetched),
    ) -> Result<Fetched, String> {
        std::fs::create_dir_all(dest)
            .map_err(|e| format!("could not create {}: {e}", dest.display()))?;
        let wal_prefix = format!("{prefix}/wal/");
        let objects = with_retry("list the WAL archive", UPLOAD_DEADLINE, || {
            self.store.list(&wal_prefix)
        })
        .await
        .map_err(|e| format!("could not list the WAL in {}: {e}", self.store.describe()))?;
        let mut fetched = Fetched::default();
        for object in objects {
            let Some(file) = object.key.strip_prefix(&wal_prefix) else {
                continue;
            };
            let wanted = match (segment_of(file), from) {
                (Some(segment), Some(from)) => segment >= from,
                _ => true,
            };
            if !wanted || file.contains('/') {
                continue;
            }
            let body = with_retry(&format!("fetch {}", object.key), UPLOAD_DEADLINE, || {
                self.store.get(&object.key)
            })
            .await
            .map_err(|e| e.to_string())?;
            let content = crate::cold::open(&object.key, &body, self.key.as_deref())?;
            let path = dest.join(file);
            std::fs::write(&path, &content)
                .map_err(|e| format!("could not write {}: {e}", path.display()))?;
            fetched.files += 1;
            fetched.bytes += content.len() as u64;
            done(fetched);
        }
        Ok(fetched)
    }
}

/// The `archive_command` of a compute whose marks are in `marks`: waits for
/// the archiver's mark of `%f` (never copies anything itself).
pub(crate) fn archive_command(marks: &Path) -> String {
    let ticks = COMMAND_WAIT_SECS * 20;
    format!(
        "i=0; while [ ! -e \"{0}/%f\" ]; do if [ -e \"{0}/{FAILED}%f\" ]; then echo \"ogel: the cold tier did not take %f yet (see the gateway log); retrying\" >&2; exit 1; fi; i=$((i+1)); if [ $i -gt {ticks} ]; then echo \"ogel: %f is not in the cold tier yet (is the gateway running? see its log)\" >&2; exit 1; fi; sleep 0.05; done",
        marks.display()
    )
}

/// Compute `name`'s incarnation id, kept in `dir/incarnation` as
/// `<name> <id>`; a new one when there is none or it was another
/// compute's (a clone). `fresh` is true when it was just made.
pub(crate) fn incarnation(dir: &Path, name: &str) -> std::io::Result<(String, bool)> {
    let path = dir.join("incarnation");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some((owner, id)) = text.trim().rsplit_once(' ') {
            if owner == name && !id.is_empty() {
                return Ok((id.to_string(), false));
            }
        }
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let tmp = dir.join("incarnation.tmp");
    std::fs::write(&tmp, format!("{name} {id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incarnation_is_kept_for_its_compute_and_renewed_for_a_clone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, fresh) = incarnation(dir.path(), "shop").unwrap();
        assert!(fresh);
        let (b, fresh) = incarnation(dir.path(), "shop").unwrap();
        assert_eq!((a.as_str(), fresh), (b.as_str(), false));
        // A clone of shop's volume named shop@dev gets its own.
        let (c, fresh) = incarnation(dir.path(), "shop@dev").unwrap();
        assert!(fresh);
        assert_ne!(a, c);
    }

    #[test]
    fn the_archive_command_only_waits_for_the_mark() {
        let marks = tempfile::tempdir().unwrap();
        let cmd = archive_command(marks.path()).replace("%f", "000000010000000000000001");
        std::fs::write(marks.path().join("000000010000000000000001"), b"").unwrap();
        let ok = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .status()
            .unwrap();
        assert!(ok.success());
        let missing = archive_command(marks.path())
            .replace("%f", "000000010000000000000002")
            .replace(&format!("-gt {}", COMMAND_WAIT_SECS * 20), "-gt 2");
        let out = std::process::Command::new("sh")
            .args(["-c", &missing])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not in the cold tier yet"));
        // A failed upload attempt makes it fail at once, not after waiting.
        std::fs::write(marks.path().join(".failed-000000010000000000000003"), b"").unwrap();
        let failing = archive_command(marks.path()).replace("%f", "000000010000000000000003");
        let started = std::time::Instant::now();
        let out = std::process::Command::new("sh")
            .args(["-c", &failing])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("did not take"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
