//! A standby on another gateway's disk (`Backend::replicate`, ABI 1.6):
//! two native backends with separate roots and one master key, as two
//! gateways of a cluster. No gateway here: the standby connects straight
//! to the primary's compute. Checks streaming on both sides, reads on the
//! hot standby, strict synchronous commits while the standby is away, the
//! promotion (every committed row there, its credentials working, a higher
//! generation) and the fencing of the old primary's copy.

use ogel_backend_native::{compute, secrets::MasterSecret, NativeBackend, NativeConfig};
use ogel_plugin_sdk::{
    Backend, BackendErrorKind, ComputeEndpoint, ComputeName, Credentials, DatabaseSpec,
    ReplicaRole, StandbyStatus, Takeover, Upstream,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: [u8; 32] = *b"remote-standby-test-master-key!!";

/// Kills every process whose working directory is under `dir` when
/// dropped, so a failed test leaves no postgres running.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if std::fs::read_link(entry.path().join("cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.0))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

async fn open(root: PathBuf) -> NativeBackend {
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("secret"), KEY).unwrap();
    tokio::task::spawn_blocking(move || {
        let config = NativeConfig {
            pg_bin: Some("/usr/lib/postgresql/15/bin".into()),
            ..NativeConfig::default()
        };
        NativeBackend::open(&root, config).unwrap()
    })
    .await
    .unwrap()
}

async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {host}:{port} as {user}: {e}"));
    tokio::spawn(conn);
    client
}

async fn client_of(endpoint: &ComputeEndpoint) -> tokio_postgres::Client {
    let Credentials::Password { user, password } = &endpoint.credentials;
    connect(
        &endpoint.host,
        endpoint.port,
        user,
        password,
        &endpoint.database,
    )
    .await
}

/// Waits until `check` holds, at most `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(backend: &NativeBackend, app: &ComputeName) -> StandbyStatus {
    backend
        .standby_status(app)
        .await
        .unwrap()
        .expect("a standby status")
}

/// The port of the standby kept in `root`, from its `postmaster.pid`.
fn standby_port(root: &Path) -> u16 {
    let wanted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("standbys/app.json")).unwrap()).unwrap();
    let volume = wanted["volume"].as_str().expect("a standby volume");
    compute::read_postmaster_pid(&root.join("standbys").join(volume).join("pgdata"))
        .expect("the standby runs")
        .port
}

async fn numbers(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .query("SELECT n FROM t ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_on_another_gateways_disk_streams_waits_and_takes_over() {
    let dir = ogel_e2e::shared_tempdir();
    let _reaper = Reaper(dir.path().to_path_buf());
    let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = open(root_a.clone()).await;
    let b = open(root_b.clone()).await;
    assert!(a.capabilities().remote_standby);
    let app = ComputeName::parse("app");
    let spec = DatabaseSpec {
        name: "app".into(),
        owner: "app_owner".into(),
    };
    a.create_database(&spec).await.unwrap();
    let primary = a.ensure_running(&app).await.unwrap();
    let writer = client_of(&primary).await;
    writer
        .batch_execute("CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // A keeps the primary, synchronous; B a standby of it.
    a.replicate(&app, ReplicaRole::Primary { synchronous: true })
        .await
        .unwrap();
    let upstream = Upstream {
        host: "127.0.0.1".into(),
        port: primary.port,
        database: "postgres".into(),
        tls_ca_pem: None,
        owner: "app_owner".into(),
    };
    let standby = ReplicaRole::Standby {
        upstream: upstream.clone(),
    };
    let started = Instant::now();
    b.replicate(&app, standby.clone()).await.unwrap();
    eprintln!(
        "remote standby built in {} ms",
        started.elapsed().as_millis()
    );
    // Idempotent: built and running, nothing happens.
    b.replicate(&app, standby.clone()).await.unwrap();
    a.replicate(&app, ReplicaRole::Primary { synchronous: true })
        .await
        .unwrap();
    eventually(
        "both sides see the standby streaming",
        Duration::from_secs(20),
        || async { status(&a, &app).await.streaming == 1 && status(&b, &app).await.streaming == 1 },
    )
    .await;
    let on_a = status(&a, &app).await;
    assert!(
        on_a.synchronous && on_a.wanted == 1 && on_a.primary_disk.is_some(),
        "{on_a:?}"
    );
    let on_b = status(&b, &app).await;
    assert!(
        on_b.pid.is_some() && on_b.standby_disk.is_some(),
        "{on_b:?}"
    );
    // The passfile holds the password; nothing else in the volume does.
    let wanted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root_b.join("standbys/app.json")).unwrap()).unwrap();
    assert_eq!(wanted["remote"]["role"], "standby", "{wanted}");

    // B's gateway restarts: the running standby is adopted, not promoted.
    let pid = on_b.pid;
    drop(b);
    let b = open(root_b.clone()).await;
    assert!(
        !root_b.join("databases/app").exists(),
        "a remote standby is not promoted at open"
    );
    let on_b = status(&b, &app).await;
    assert_eq!((on_b.pid, on_b.streaming), (pid, 1), "{on_b:?}");
    b.replicate(&app, standby.clone()).await.unwrap();
    assert_eq!(status(&b, &app).await.pid, pid, "adopted, not restarted");

    // A commit on A is on B's hot standby.
    writer
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let owner_password = MasterSecret::load_or_create(&root_b.join("secret"))
        .unwrap()
        .role_password("app", "app_owner");
    let reader = connect(
        "127.0.0.1",
        standby_port(&root_b),
        "app_owner",
        &owner_password,
        "app",
    )
    .await;
    eventually("row 2 on the standby", Duration::from_secs(10), || async {
        numbers(&reader).await == vec![1, 2]
    })
    .await;
    drop(reader);

    // Strict: with B's standby gone, a commit on A waits (the backend does
    // not turn synchronous off by itself).
    b.replicate(&app, ReplicaRole::Detached).await.unwrap();
    assert!(
        !root_b.join("standbys/app-1").exists(),
        "the detached standby's volume is deleted"
    );
    assert!(
        b.standby_status(&app).await.is_err() || b.standby_status(&app).await.unwrap().is_none()
    );
    a.replicate(&app, ReplicaRole::Primary { synchronous: true })
        .await
        .unwrap();
    let waiting_writer = client_of(&primary).await;
    let pending = tokio::spawn(async move {
        waiting_writer
            .batch_execute("INSERT INTO t VALUES (3)")
            .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pending.is_finished(),
        "a synchronous commit returned without its standby"
    );
    let on_a = status(&a, &app).await;
    assert!(on_a.synchronous && on_a.streaming == 0, "{on_a:?}");

    // B follows again (a fresh copy): the waiting commit is released.
    b.replicate(&app, standby.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the waiting commit returns once the standby streams again")
        .unwrap()
        .unwrap();
    eventually("streaming again", Duration::from_secs(20), || async {
        status(&a, &app).await.streaming == 1 && status(&b, &app).await.streaming == 1
    })
    .await;
    writer
        .batch_execute("INSERT INTO t VALUES (4)")
        .await
        .unwrap();

    // B takes over: every committed row, the same credentials, a higher
    // generation.
    let promoted = b.promote(&app, Takeover::Failover).await.unwrap();
    assert!(
        promoted.generation > primary.generation,
        "{} > {}",
        promoted.generation,
        primary.generation
    );
    assert_eq!(promoted.credentials, primary.credentials);
    let new_writer = client_of(&promoted).await;
    assert_eq!(numbers(&new_writer).await, vec![1, 2, 3, 4]);
    // Writable, and not waiting for a standby that does not exist.
    tokio::time::timeout(
        Duration::from_secs(5),
        new_writer.batch_execute("INSERT INTO t VALUES (5)"),
    )
    .await
    .expect("the promoted primary does not wait for a standby")
    .unwrap();
    let read_only = promoted.read_only.clone().expect("a read-only role");
    let Credentials::Password { user, password } = &read_only;
    let ro = connect("127.0.0.1", promoted.port, user, password, "app").await;
    assert_eq!(numbers(&ro).await.len(), 5);
    assert!(root_b.join("databases/app/owner").exists());
    let on_b = status(&b, &app).await;
    assert_eq!(on_b.failovers, 1, "{on_b:?}");

    // The old primary's copy, told Detached, is fenced.
    let old_pid = a
        .compute_status(&app)
        .await
        .unwrap()
        .pid
        .expect("A still runs");
    a.replicate(&app, ReplicaRole::Detached).await.unwrap();
    // Killed; its exit may take a moment to show in /proc.
    let gone = || {
        !Path::new(&format!("/proc/{old_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
                .map(|s| s.contains(") Z") || s.contains(") X"))
                .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gone() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone(), "the old primary's postmaster is gone");
    let err = a.ensure_running(&app).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::NotFound, "{}", err.message);
    assert!(err.message.contains("fenced"), "{}", err.message);
    assert!(!root_a.join("databases/app").exists());
    // Idempotent.
    a.replicate(&app, ReplicaRole::Detached).await.unwrap();

    // An ordinary database of B now: suspend, wake, status.
    drop((new_writer, ro));
    b.suspend(&app).await.unwrap();
    let woken = b.ensure_running(&app).await.unwrap();
    assert_eq!(numbers(&client_of(&woken).await).await, vec![1, 2, 3, 4, 5]);
    assert!(b.compute_status(&app).await.unwrap().pid.is_some());
    assert!(woken.generation >= promoted.generation);
    b.delete_database("app").await.unwrap();
}
