//! Test harness for end-to-end tests: starts the real `ogel` binary on free
//! ports with its data under a temp dir, talks to its API, and stops it —
//! and every compute it started — when the test ends, even on failure.

pub mod etcd;
pub mod s3;

use anyhow::{anyhow, bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `ogel` binary: `$OGEL_BIN`, else `target/<profile>/ogel` next to this test.
pub fn ogel_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("OGEL_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-xxxx → target/debug/ogel
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("ogel"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p ogel` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

/// A temp dir the compute OS user can traverse (tempfile makes 0700 dirs).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ogel-e2e-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    dir
}

/// A running gateway.
pub struct Gateway {
    child: Option<Child>,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Postgres wire address `host:port`.
    pub pg_addr: String,
    /// API base URL.
    pub api: String,
    /// Admin token.
    pub token: String,
    /// URL of the default database `app`, with password.
    pub app_url: String,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts a gateway with a fresh data dir.
    pub async fn start() -> Gateway {
        Self::start_with(&[]).await
    }

    /// Starts a gateway with a fresh data dir and extra environment.
    pub async fn start_with(env: &[(&str, &str)]) -> Gateway {
        let dir = shared_tempdir();
        let data_dir = dir.path().join("data");
        let mut gw = Self::start_in(&data_dir, env)
            .await
            .expect("gateway starts");
        gw._dir = Some(dir);
        gw
    }

    /// Starts a gateway whose configuration file holds `toml` (the file
    /// stays, so tests can change it and reload).
    pub async fn start_with_config(toml: &str) -> Gateway {
        let dir = shared_tempdir();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        std::fs::write(Self::config_path(&data_dir), toml).expect("write config");
        let mut gw = Self::start_in(&data_dir, &[])
            .await
            .expect("gateway starts");
        gw._dir = Some(dir);
        gw
    }

    /// The configuration file a gateway on `data_dir` reads.
    pub fn config_path(data_dir: &Path) -> PathBuf {
        data_dir.join("no-such-ogel.toml")
    }

    /// The gateway's log (`gateway.log` beside its data dir).
    pub fn log(&self) -> String {
        let path = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .join("gateway.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The last `n` lines of the gateway's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The Prometheus exposition at `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.api))
            .send()
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics body")
    }

    /// A client of the admin console (database `ogel`, user `ogel`, the
    /// API token as password).
    pub async fn admin(&self) -> tokio_postgres::Client {
        let url = format!("postgresql://ogel:{}@{}/ogel", self.token, self.pg_addr);
        connect(&url).await.expect("admin console")
    }

    /// Starts a gateway on `data_dir` (which may hold an earlier gateway's data).
    pub async fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Gateway> {
        let run_info = data_dir.join("gateway.json");
        let _ = std::fs::remove_file(&run_info);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.parent().unwrap_or(data_dir).join("gateway.log"))?;
        let mut cmd = Command::new(ogel_bin());
        cmd.arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
            .arg("--config")
            .arg(Self::config_path(data_dir))
            .env(
                "OGEL_LOG",
                "ogel=debug,ogel_policies=debug,ogel_backend_native=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning ogel")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let info: serde_json::Value = loop {
            if let Ok(bytes) = std::fs::read(&run_info) {
                if let Ok(v) = serde_json::from_slice(&bytes) {
                    break v;
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "ogel up exited with {status}; see {}",
                    data_dir
                        .parent()
                        .unwrap_or(data_dir)
                        .join("gateway.log")
                        .display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("ogel up did not become ready in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let field = |k: &str| {
            info[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("gateway.json lacks {k}"))
        };
        let pg_addr = field("listen")?;
        let api = format!("http://{}", field("api")?);
        let token = std::fs::read_to_string(data_dir.join("admin-token"))?
            .trim()
            .to_string();
        // No file: another gateway of a cluster made `app` (or none is made).
        let app_url = match std::fs::read_to_string(data_dir.join("default-database.password")) {
            Ok(password) => format!("postgresql://app_owner:{}@{pg_addr}/app", password.trim()),
            Err(_) => String::new(),
        };
        Ok(Gateway {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            pg_addr,
            api,
            token,
            app_url,
            http: reqwest::Client::new(),
            _dir: None,
        })
    }

    /// Takes over the temp dir so it outlives this gateway (for restarts).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    /// Calls the API; returns status and JSON body (Null when empty).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("API reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("API body");
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        (status, json)
    }

    /// Creates a database; returns its URL with password.
    pub async fn create_db(&self, name: &str, suspend_after_secs: Option<u64>) -> String {
        let (status, body) = self
            .api(
                "POST",
                "/v1/databases",
                Some(serde_json::json!({"name": name, "suspend_after_secs": suspend_after_secs})),
            )
            .await;
        assert_eq!(status, 201, "create {name}: {body}");
        body["url"].as_str().expect("url").to_string()
    }

    /// The database's API view.
    pub async fn db(&self, name: &str) -> serde_json::Value {
        let (status, body) = self
            .api("GET", &format!("/v1/databases/{name}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Suspends a database and checks it reports suspended.
    pub async fn suspend(&self, name: &str) {
        let (status, body) = self
            .api("POST", &format!("/v1/databases/{name}/suspend"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["compute"]["state"], "suspended", "{body}");
    }

    /// Runs the `ogel` CLI against this gateway.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(ogel_bin())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env_remove("OGEL_API")
            .env_remove("OGEL_TOKEN")
            .output()
            .expect("run ogel CLI")
    }

    /// Runs the `ogel` CLI, which must succeed; returns its stdout, trimmed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "ogel {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The gateway's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, leaving computes running (they are adopted by the next start).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the gateway stops its computes itself.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
        if self._dir.is_some() {
            kill_postgres_under(&self.data_dir);
        }
    }
}

/// SIGKILL to the checkpointer of the cluster whose postmaster is
/// `postmaster`: Postgres treats a child's crash as a crash of the whole
/// cluster and reinitialises (crash recovery, every connection ended) — a
/// crash restart, with the postmaster itself still running.
pub fn crash_restart(postmaster: u32) {
    let checkpointer = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            ppid == Some(postmaster)
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .contains("checkpointer")
        })
        .expect("the primary's checkpointer");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(checkpointer as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("signal the checkpointer");
}

/// Stops every postgres whose data dir is under `dir` (a test that killed
/// its gateway with SIGKILL leaves them behind).
pub fn kill_postgres_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("postgres") && cmdline.contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

/// Connects with tokio-postgres and drives the connection in a task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The SQLSTATE of a failed connect or query.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// A client error with the server's message and SQLSTATE when there is one
/// (`Display` of tokio-postgres says only "db error").
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The password in a `postgresql://user:password@…` URL.
pub fn password_of(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .and_then(|userinfo| userinfo.split(':').nth(1))
        .unwrap_or("")
}

/// Runs `psql conninfo -Atc sql` (stopping at the first error) with extra
/// environment; its trimmed output, or its error text.
pub fn psql_with(conninfo: &str, sql: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let out = Command::new("psql")
        .args([conninfo, "-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .envs(env.iter().copied())
        .output()
        .expect("psql installed");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `psql_with` without extra environment.
pub fn psql(conninfo: &str, sql: &str) -> Result<String, String> {
    psql_with(conninfo, sql, &[])
}

/// Replaces the password in a URL.
pub fn with_password(url: &str, password: &str) -> String {
    let (scheme_user, rest) = url.split_once("://").expect("url");
    let (userinfo, host) = rest.split_once('@').expect("userinfo");
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    format!("{scheme_user}://{user}:{password}@{host}")
}

/// Waits until `check` is true, up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `SELECT count(*) FROM table` on `url`.
pub async fn count(url: &str, table: &str) -> i64 {
    let c = connect(url).await.expect("connect");
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// The URL `ogel backup restore` prints for a database the gateway did not
/// have (the owner's new password in it).
pub fn restored_url(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("postgresql://"))
        .unwrap_or_else(|| panic!("no URL in {stdout:?}"))
        .to_string()
}

/// `url` pointed at another gateway's address `addr` (`host:port`), the
/// same user, password, database and options.
pub fn url_at(url: &str, addr: &str) -> String {
    let (head, rest) = url.split_once('@').expect("userinfo");
    let (_, path) = rest.split_once('/').expect("path");
    format!("{head}@{addr}/{path}")
}

/// Serializes loop-device setup (`losetup -f` races between threads).
static LOOP_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A filesystem image loop-mounted in a temp dir; unmounted and detached on drop.
pub struct LoopFs {
    /// Where it is mounted.
    pub mnt: PathBuf,
    dev: Option<String>,
    _dir: tempfile::TempDir,
}

/// Runs `cmd`; its stdout. Panics, with its stderr, when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LoopFs {
    /// A fresh 1 GiB `kind` filesystem (`btrfs`, `xfs` with reflink, or
    /// `ext4`); needs root and its `mkfs`. Panics when it cannot be made.
    pub fn new(kind: &str) -> LoopFs {
        let mkfs = format!("mkfs.{kind}");
        assert!(
            ["/usr/sbin", "/sbin", "/usr/bin"]
                .iter()
                .any(|d| Path::new(d).join(&mkfs).exists()),
            "{mkfs} is missing: apt-get install btrfs-progs xfsprogs e2fsprogs"
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "tests on loop-mounted filesystems need root"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh(Command::new("truncate").args(["-s", "1G"]).arg(&img));
        let mut mk = Command::new(&mkfs);
        match kind {
            "btrfs" => mk.arg("-q"),
            "xfs" => mk.args(["-q", "-m", "reflink=1"]),
            "ext4" => mk.args(["-q", "-F"]),
            other => panic!("no LoopFs for {other}"),
        };
        sh(mk.arg(&img));
        let mut fs = LoopFs {
            mnt,
            dev: None,
            _dir: dir,
        };
        {
            let _guard = LOOP_SETUP.lock().unwrap_or_else(|p| p.into_inner());
            sh(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&fs.mnt));
        }
        fs.dev = Some(
            sh(Command::new("findmnt")
                .args(["-n", "-o", "SOURCE"])
                .arg(&fs.mnt))
            .trim()
            .to_string(),
        );
        // The compute user must be able to traverse into it.
        std::fs::set_permissions(&fs.mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
        fs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(dev) = &self.dev {
            // Usually already detached by umount (autoclear); harmless then.
            let _ = Command::new("losetup")
                .arg("-d")
                .arg(dev)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
