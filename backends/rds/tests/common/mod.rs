//! Test fixtures: moto's RDS in server mode (with the fault switches of
//! `tests/moto_faults.py`) as the control plane, and a real PostgreSQL 15
//! run as the unprivileged user `ogel` as the data path that every RDS
//! endpoint is mapped to. Both are killed when dropped, also on failure.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "rds-test-secret-0123456789";
pub const MASTER: &str = "ogel_master";

/// Tests in one binary share 2 cores: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The AWS environment every test uses (moto accepts any key).
pub fn aws_env() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
    // Never probe an instance metadata service from a test.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    std::env::remove_var("AWS_SESSION_TOKEN");
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(Instant::now() < deadline, "{what} not listening after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// moto in server mode on a free port.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub faults: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// With extra environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`,
    /// which makes moto check credentials like AWS).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let check = Command::new("python3")
            .args(["-c", "import moto.server, flask, werkzeug"])
            .output();
        match check {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "moto's server mode is not installed: run scripts/test, or `pip install 'moto[server]'`"
            ),
        }
        let faults = tempfile::Builder::new()
            .prefix("rds-moto-")
            .tempdir()
            .expect("faults dir");
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto_faults.py");
        let log = std::fs::File::create(faults.path().join("moto.log")).expect("moto log");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg(port.to_string())
            .arg(faults.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("python3 starts");
        wait_port(port, &mut child, "moto");
        Moto {
            child,
            port,
            faults,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes moto report instance `id` in `status` (until cleared).
    pub fn force_status(&self, id: &str, status: &str) {
        std::fs::write(self.faults.path().join("status").join(id), status).expect("fault file");
    }

    pub fn clear_status(&self, id: &str) {
        let _ = std::fs::remove_file(self.faults.path().join("status").join(id));
    }

    /// Answers the next `n` API requests with `Throttling`.
    pub fn throttle(&self, n: u32) {
        std::fs::write(self.faults.path().join("throttle"), n.to_string()).expect("fault file");
    }

    /// Answers the next `n` requests of API action `action` with `Throttling`.
    pub fn throttle_action(&self, action: &str, n: u32) {
        std::fs::write(
            self.faults.path().join(format!("throttle-{action}")),
            n.to_string(),
        )
        .expect("fault file");
    }

    /// Makes moto's emulated transitions (Multi-AZ change, reboot,
    /// cluster failover) last `n` DescribeDB* requests (default 3).
    pub fn set_cycle(&self, n: u32) {
        std::fs::write(self.faults.path().join("cycle"), n.to_string()).expect("fault file");
    }

    /// How many requests of `action` moto received.
    pub fn calls(&self, action: &str) -> usize {
        self.actions().iter().filter(|a| *a == action).count()
    }

    pub fn throttles_left(&self) -> u32 {
        std::fs::read_to_string(self.faults.path().join("throttle"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The API actions moto received, in order.
    pub fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(self.faults.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.faults.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_ogel(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=ogel", "--regid=ogel", "--init-groups"])
        .arg(program);
    c
}

/// A real PostgreSQL server (the "instances'" data path), run as `ogel`,
/// with password (SCRAM) authentication for the master user.
pub struct Postgres {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// With TLS: the CA that signed the server's certificate for
    /// `*.aaaaaaaaaa.us-east-1.rds.amazonaws.com` (moto's endpoint names).
    pub ca_file: Option<PathBuf>,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for moto's RDS host names, in `dir`.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test RDS CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&ca, dir);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=rds",
    ]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:*.aaaaaaaaaa.us-east-1.rds.amazonaws.com\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
        dir,
    );
}

impl Postgres {
    pub fn start(master_password: &str) -> Postgres {
        Postgres::start_with(master_password, false)
    }

    /// With `tls`, the server also speaks TLS (`ssl = on`) with a
    /// certificate for moto's RDS host names.
    pub fn start_with(master_password: &str, tls: bool) -> Postgres {
        let bin = PathBuf::from(PG_BIN);
        assert!(
            bin.join("postgres").exists(),
            "PostgreSQL 15 is not installed at {PG_BIN}: run scripts/test (apt-get install postgresql-15)"
        );
        // The compute user must reach the data dir: /tmp, mode 0755.
        let dir = tempfile::Builder::new()
            .prefix("rds-pg-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let user = nix::unistd::User::from_name("ogel")
            .expect("users readable")
            .expect("user ogel exists (the native backend creates it; see scripts/test)");
        let home = dir.path().join("pg");
        std::fs::create_dir(&home).expect("pg dir");
        nix::unistd::chown(&home, Some(user.uid), Some(user.gid)).expect("chown");
        let pwfile = home.join("pwfile");
        std::fs::write(&pwfile, master_password).expect("pwfile");
        nix::unistd::chown(&pwfile, Some(user.uid), Some(user.gid)).expect("chown");
        let data = home.join("data");
        let out = as_ogel(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=scram-sha-256",
                "--username",
                MASTER,
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&pwfile);
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log");
        let mut ssl = Vec::new();
        let mut ca_file = None;
        if tls {
            make_certs(&home);
            for f in ["server.key", "server.crt"] {
                nix::unistd::chown(&home.join(f), Some(user.uid), Some(user.gid)).expect("chown");
            }
            std::fs::set_permissions(
                home.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod");
            ssl = vec![
                "-c".to_string(),
                "ssl=on".to_string(),
                "-c".to_string(),
                format!("ssl_cert_file={}", home.join("server.crt").display()),
                "-c".to_string(),
                format!("ssl_key_file={}", home.join("server.key").display()),
            ];
            ca_file = Some(home.join("ca.pem"));
        }
        let mut child = as_ogel(&bin.join("postgres"))
            .args(&ssl)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("postgres starts");
        wait_port(port, &mut child, "postgres");
        Postgres {
            child,
            port,
            dir,
            ca_file,
        }
    }

    /// A connection as `user` to `dbname`.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut config = tokio_postgres::Config::new();
            config
                .host("127.0.0.1")
                .port(self.port)
                .user(user)
                .password(password)
                .dbname(dbname);
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    return Ok(client);
                }
                // Still starting up (57P03) or not yet listening.
                Err(e)
                    if Instant::now() < deadline
                        && (e.code().is_none()
                            || e.code()
                                == Some(&tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW)) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the data is thrown away anyway.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The master password the plugin derives from [`SECRET`].
pub fn master_password() -> String {
    ogel_backend_rds::secrets::Secret::new(SECRET)
        .master_password(MASTER)
        .expose()
        .to_string()
}

/// The plugin's configuration for `moto` and `pg` (fast polls, short bounds).
pub fn config(moto_url: &str, pg_port: u16) -> serde_json::Value {
    serde_json::json!({
        "region": "us-east-1",
        "endpoint_url": moto_url,
        "secret": SECRET,
        "master_username": MASTER,
        "tls": false,
        "endpoint_overrides": {"*.rds.amazonaws.com": format!("127.0.0.1:{pg_port}")},
        "shared_data_server": true,
        "poll_interval": "100ms",
        "create_timeout": "30s",
        "start_timeout": "10s",
        "stop_timeout": "5s",
        "snapshot_timeout": "30s",
        "delete_timeout": "10s",
        "max_attempts": 4,
    })
}

/// The identifiers of every DB instance moto knows.
pub async fn instances_in_moto(client: &aws_sdk_rds::Client) -> Vec<String> {
    client
        .describe_db_instances()
        .send()
        .await
        .expect("describe")
        .db_instances()
        .iter()
        .filter_map(|i| i.db_instance_identifier().map(str::to_string))
        .collect()
}

/// A database spec with the usual owner name.
pub fn spec(name: &str) -> ogel_plugin_sdk::DatabaseSpec {
    ogel_plugin_sdk::DatabaseSpec {
        name: name.into(),
        owner: format!("{name}_owner"),
    }
}

/// Logs in to what an endpoint names (the test server, through the override).
pub async fn connect_endpoint(
    pg: &Postgres,
    ep: &ogel_plugin_sdk::ComputeEndpoint,
) -> tokio_postgres::Client {
    assert_eq!((ep.host.as_str(), ep.port), ("127.0.0.1", pg.port));
    let ogel_plugin_sdk::Credentials::Password { user, password } = &ep.credentials;
    pg.connect(user, password, &ep.database)
        .await
        .expect("log in with the endpoint's credentials")
}

/// Rows in table `t`.
pub async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0)
}
