//! The data path: real PostgreSQL clusters through the native backend
//! (`ogel-backend-native` as a library). A Neon project is one native
//! database named after the project id; its default branch is the native
//! `main`, every other branch is the native branch named after its branch
//! id. Roles and databases made through the API are made in the branch's
//! cluster by its superuser.

use ogel_backend_native::secrets::{MasterSecret, SUPERUSER};
use ogel_backend_native::{NativeBackend, NativeConfig};
use ogel_plugin_sdk::{Backend, BranchPoint, BranchSpec, ComputeName, ComputeState, DatabaseSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The role every native project cluster is created with; roles made
/// through the API are members of it, as on Neon.
pub(crate) const NEON_SUPERUSER: &str = "neon_superuser";

/// Databases that exist in every cluster and are not shown by the API.
fn hidden_database(name: &str, project_id: &str) -> bool {
    matches!(name, "postgres" | "template0" | "template1") || name == project_id
}

/// The clusters behind the emulator.
pub(crate) struct DataPlane {
    native: Arc<NativeBackend>,
    secret: MasterSecret,
}

/// Quotes an SQL identifier.
pub(crate) use ogel_plugin_kit::sql::quote_ident;

impl DataPlane {
    /// Opens (or initialises: `initdb` of the template) the native backend at `root`.
    pub(crate) async fn open(
        root: &Path,
        pg_bin: Option<PathBuf>,
        os_user: String,
    ) -> anyhow::Result<DataPlane> {
        std::fs::create_dir_all(root)?;
        let config = NativeConfig {
            pg_bin,
            os_user,
            prewarm: false,
            ..NativeConfig::default()
        };
        let at = root.to_path_buf();
        let native = tokio::task::spawn_blocking(move || NativeBackend::open(&at, config))
            .await?
            .map_err(|e| anyhow::anyhow!("native backend: {}", e.message))?;
        let root = root.canonicalize()?;
        let secret = MasterSecret::load_or_create(&root.join("secret"))?;
        Ok(DataPlane {
            native: Arc::new(native),
            secret,
        })
    }

    /// The PostgreSQL major version of the binaries in use.
    pub(crate) fn pg_major(&self) -> u32 {
        let version = &self.native.binaries().version;
        version
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or(15)
    }

    /// The native compute name of `branch` (a native branch name) of `project`.
    pub(crate) fn compute(project: &str, native_branch: &str) -> String {
        ComputeName::new(project, native_branch).to_string()
    }

    /// Makes the project's cluster (its default branch), running.
    pub(crate) async fn create_project(&self, project: &str) -> anyhow::Result<()> {
        self.native
            .create_database(&DatabaseSpec {
                name: project.to_string(),
                owner: NEON_SUPERUSER.to_string(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        self.exec(
            project,
            &[format!(
                "ALTER ROLE {} NOLOGIN CREATEDB CREATEROLE",
                quote_ident(NEON_SUPERUSER)
            )],
        )
        .await
    }

    /// Deletes a project's clusters (all branches).
    pub(crate) async fn delete_project(&self, project: &str) -> anyhow::Result<()> {
        self.native
            .delete_database(project)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))
    }

    /// Makes a branch cluster from its parent at a point of its history (left stopped).
    pub(crate) async fn create_branch(
        &self,
        project: &str,
        native_branch: &str,
        native_parent: &str,
        point: BranchPoint,
    ) -> anyhow::Result<()> {
        self.native
            .create_branch(&BranchSpec {
                database: project.to_string(),
                branch: native_branch.to_string(),
                parent: native_parent.to_string(),
                point,
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))
    }

    /// Deletes a branch cluster.
    pub(crate) async fn delete_branch(
        &self,
        project: &str,
        native_branch: &str,
    ) -> anyhow::Result<()> {
        self.native
            .delete_branch(project, native_branch)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))
    }

    /// Starts a compute (if needed) and returns its loopback port.
    pub(crate) async fn start(&self, compute: &str) -> anyhow::Result<u16> {
        let endpoint = self
            .native
            .ensure_running(&ComputeName::parse(compute))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(endpoint.port)
    }

    /// Stops a compute (fast shutdown); stopping a stopped one is fine.
    pub(crate) async fn stop(&self, compute: &str) -> anyhow::Result<()> {
        self.native
            .suspend(&ComputeName::parse(compute))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))
    }

    /// The port of a running compute.
    pub(crate) async fn running_port(&self, compute: &str) -> Option<u16> {
        match self
            .native
            .compute_status(&ComputeName::parse(compute))
            .await
        {
            Ok(status) if status.state == ComputeState::Running => status.port,
            _ => None,
        }
    }

    async fn superuser(&self, port: u16) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user(SUPERUSER)
            .password(self.secret.superuser_password())
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Runs statements one by one as the superuser of a compute, starting
    /// it if needed (the caller stops it again when no endpoint is active).
    pub(crate) async fn exec(&self, compute: &str, statements: &[String]) -> anyhow::Result<()> {
        let port = self.start(compute).await?;
        let client = self.superuser(port).await?;
        for sql in statements {
            client
                .batch_execute(sql)
                .await
                .map_err(|e| anyhow::anyhow!("{}", pg_error_text(&e)))?;
        }
        Ok(())
    }

    /// For a branch "at now" of a running compute, without stopping it: the
    /// WAL position now, made durable and followed by a record so that
    /// recovery can reach it (the branch is then made by WAL replay, as a
    /// point-in-time branch). `None` when the compute is not running (a
    /// stopped cluster is cloned as it is).
    pub(crate) async fn live_branch_point(&self, compute: &str) -> anyhow::Result<Option<String>> {
        let Some(port) = self.running_port(compute).await else {
            return Ok(None);
        };
        let client = self.superuser(port).await?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?;
        let lsn: String = row.try_get(0)?;
        client
            .batch_execute(
                "SELECT pg_logical_emit_message(false, 'neon-emulator', 'branch point'); \
                 SELECT pg_switch_wal()",
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}", pg_error_text(&e)))?;
        Ok(Some(lsn))
    }

    /// The login roles (members of `neon_superuser`) and the visible
    /// databases with their owners, as the cluster has them.
    pub(crate) async fn catalog(
        &self,
        project: &str,
        compute: &str,
    ) -> anyhow::Result<(Vec<String>, Vec<(String, String)>)> {
        let port = self.start(compute).await?;
        let client = self.superuser(port).await?;
        let roles = client
            .query(
                "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid \
                 JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = $1",
                &[&NEON_SUPERUSER],
            )
            .await?
            .iter()
            .filter_map(|row| row.try_get::<_, String>(0).ok())
            .collect();
        let databases = client
            .query(
                "SELECT d.datname, pg_get_userbyid(d.datdba) FROM pg_database d",
                &[],
            )
            .await?
            .iter()
            .filter_map(|row| {
                Some((
                    row.try_get::<_, String>(0).ok()?,
                    row.try_get::<_, String>(1).ok()?,
                ))
            })
            .filter(|(name, _)| !hidden_database(name, project))
            .collect();
        Ok((roles, databases))
    }

    /// The SCRAM verifier of a password, so plaintext never reaches SQL or logs.
    pub(crate) fn verifier(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }
}

/// Every `databases/*/pgdata` under a native root.
pub(crate) fn pgdata_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("databases")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path().join("pgdata"))
        .filter(|p| p.exists())
        .collect()
}

/// Stops every postmaster running under a native root, synchronously:
/// SIGINT (fast shutdown), then SIGQUIT and SIGKILL if it lingers.
pub(crate) fn stop_all_blocking(root: &Path) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pids: Vec<Pid> = pgdata_dirs(root)
        .iter()
        .filter_map(|dir| ogel_backend_native::compute::read_postmaster_pid(dir))
        .map(|p| Pid::from_raw(p.pid as i32))
        .filter(|pid| kill(*pid, Signal::SIGINT).is_ok())
        .collect();
    let alive = |pid: &Pid| kill(*pid, None).is_ok() && !is_zombie(*pid);
    for (signal, wait) in [
        (None, Duration::from_secs(10)),
        (Some(Signal::SIGQUIT), Duration::from_secs(5)),
        (Some(Signal::SIGKILL), Duration::from_secs(2)),
    ] {
        if let Some(signal) = signal {
            for pid in pids.iter().filter(|p| alive(p)) {
                let _ = kill(*pid, signal);
            }
        }
        let deadline = std::time::Instant::now() + wait;
        while pids.iter().any(alive) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !pids.iter().any(alive) {
            return;
        }
    }
}

/// A child that exited but was not reaped still answers `kill(pid, 0)`.
fn is_zombie(pid: nix::unistd::Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A Postgres error's own message (with its SQLSTATE) rather than "db error".
pub(crate) fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
