//! The Neon backend called directly (no gateway) against the Neon
//! emulator: real Postgres behind the emulator's SNI proxy, reached over
//! TLS with the endpoint the backend returns. Covers the data path,
//! branches (now, LSN), suspend/wake, delete, a restart of the plugin, and
//! the error cases: bad key, API down or unreachable, 429 bursts and
//! storms, 5xx, failed operations (nothing half-made left) and 423.

mod common;

use common::{connect, ids, start, SERIAL};
use ogel_backend_neon::NeonBackend;
use ogel_plugin_sdk::{
    Backend, BackendErrorKind, BranchPoint, BranchSpec, ComputeEndpoint, ComputeName, ComputeState,
    DatabaseSpec,
};
use serde_json::json;
use std::time::{Duration, Instant};

fn spec(name: &str) -> DatabaseSpec {
    DatabaseSpec {
        name: name.into(),
        owner: format!("{name}_owner"),
    }
}

fn branch(db: &str, name: &str, point: BranchPoint) -> BranchSpec {
    BranchSpec {
        database: db.into(),
        branch: name.into(),
        parent: "main".into(),
        point,
    }
}

/// The endpoint with its read-only credentials.
fn read_only(ep: &ComputeEndpoint) -> ComputeEndpoint {
    ComputeEndpoint {
        credentials: ep.read_only.clone().expect("a read-only role"),
        ..ep.clone()
    }
}

fn backend(config: serde_json::Value) -> NeonBackend {
    NeonBackend::from_config(config).expect("the configuration is accepted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_branches_suspend_and_delete_with_real_data() {
    let _serial = SERIAL.lock().await;
    let emu = start().await;
    let neon = backend(emu.config());
    assert_eq!(
        neon.capabilities().branching,
        ogel_plugin_sdk::Branching::CopyOnWrite
    );

    neon.create_database(&spec("shop")).await.expect("create");
    assert_eq!(emu.project_names().await, vec!["ogel-shop".to_string()]);
    let again = neon.create_database(&spec("shop")).await.unwrap_err();
    assert_eq!(again.kind, BackendErrorKind::AlreadyExists, "{again}");
    assert_eq!(
        neon.list_databases().await.unwrap(),
        vec!["shop".to_string()]
    );

    // The endpoint: TLS with SNI to the endpoint's host, through the override.
    let ep = neon
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .expect("ensure_running");
    let tls = ep.tls.clone().expect("tls");
    assert!(
        tls.server_name.ends_with(&format!(".{}", emu.emu.domain)),
        "{tls:?}"
    );
    assert_eq!(ep.port, emu.emu.proxy_addr.port());
    assert_eq!(ep.database, "shop");
    assert!(
        matches!(&ep.credentials, ogel_plugin_sdk::Credentials::Password { user, .. } if user == "shop_owner")
    );
    let client = connect(&ep).await.expect("connects over TLS");
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .expect("write");
    assert_eq!(ids(&ep).await, vec![1]);
    assert_eq!(
        neon.compute_status(&ComputeName::parse("shop"))
            .await
            .unwrap()
            .state,
        ComputeState::Running
    );

    // The read-only role reads everything and cannot write.
    let ro = read_only(&ep);
    assert_eq!(ids(&ro).await, vec![1]);
    let e = connect(&ro)
        .await
        .unwrap()
        // READ WRITE: the privileges refuse it, not a session setting.
        .batch_execute("BEGIN READ WRITE; INSERT INTO t VALUES (99)")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");

    // A branch at now: later writes on either side stay on their side.
    neon.create_branch(&branch("shop", "dev", BranchPoint::Now))
        .await
        .expect("branch at now");
    let dup = neon
        .create_branch(&branch("shop", "dev", BranchPoint::Now))
        .await
        .unwrap_err();
    assert_eq!(dup.kind, BackendErrorKind::AlreadyExists, "{dup}");
    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let dev = neon
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .expect("dev endpoint");
    assert_ne!(dev.tls, ep.tls, "a branch has its own endpoint");
    assert_eq!(ids(&dev).await, vec![1]);
    connect(&dev)
        .await
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (10)")
        .await
        .unwrap();
    assert_eq!(ids(&dev).await, vec![1, 10]);
    assert_eq!(ids(&ep).await, vec![1, 2]);
    assert_eq!(ids(&read_only(&dev)).await, vec![1, 10]);

    // A branch at an LSN: the write after it is absent.
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    neon.create_branch(&branch("shop", "past", BranchPoint::Lsn { lsn }))
        .await
        .expect("branch at an LSN");
    let past = neon
        .ensure_running(&ComputeName::parse("shop@past"))
        .await
        .unwrap();
    assert_eq!(ids(&past).await, vec![1, 2]);
    let snap = neon
        .create_branch(&branch(
            "shop",
            "s",
            BranchPoint::Snapshot { id: "x".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(snap.kind, BackendErrorKind::Unsupported);

    // Reset: the branch becomes its parent as of now.
    neon.reset_branch("shop", "past").await.expect("reset");
    let past = neon
        .ensure_running(&ComputeName::parse("shop@past"))
        .await
        .unwrap();
    assert_eq!(ids(&past).await, vec![1, 2, 3]);

    // Suspend; a connection wakes it (Neon's way); ensure_running too.
    drop(client);
    neon.suspend(&ComputeName::parse("shop"))
        .await
        .expect("suspend");
    assert_eq!(
        neon.compute_status(&ComputeName::parse("shop"))
            .await
            .unwrap()
            .state,
        ComputeState::Suspended
    );
    neon.suspend(&ComputeName::parse("shop"))
        .await
        .expect("suspending a suspended compute");
    assert_eq!(ids(&ep).await, vec![1, 2, 3], "a connection wakes it");
    assert_eq!(
        neon.compute_status(&ComputeName::parse("shop"))
            .await
            .unwrap()
            .state,
        ComputeState::Running
    );
    neon.suspend(&ComputeName::parse("shop")).await.unwrap();
    let woken = neon
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .expect("wake");
    assert_eq!(
        neon.compute_status(&ComputeName::parse("shop"))
            .await
            .unwrap()
            .state,
        ComputeState::Running
    );
    assert_eq!(
        woken.generation, ep.generation,
        "same endpoint, same generation"
    );
    assert_eq!(ids(&woken).await, vec![1, 2, 3]);

    // A restarted plugin (empty caches) finds everything through the API.
    let restarted = backend(emu.config());
    let again = restarted
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .expect("after restart");
    assert_eq!(again.tls, dev.tls);
    assert_eq!(ids(&again).await, vec![1, 10]);
    assert_eq!(
        restarted.list_databases().await.unwrap(),
        vec!["shop".to_string()]
    );

    // Branch delete, then database delete: no project left.
    neon.delete_branch("shop", "dev")
        .await
        .expect("delete branch");
    neon.delete_branch("shop", "dev")
        .await
        .expect("deleting a missing branch");
    let gone = neon
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .unwrap_err();
    assert_eq!(gone.kind, BackendErrorKind::NotFound, "{gone}");
    neon.delete_database("shop").await.expect("delete");
    assert!(emu.project_names().await.is_empty());
    let gone = neon
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .unwrap_err();
    assert_eq!(gone.kind, BackendErrorKind::NotFound, "{gone}");
    let gone = restarted
        .compute_status(&ComputeName::parse("shop"))
        .await
        .unwrap_err();
    assert_eq!(gone.kind, BackendErrorKind::NotFound, "{gone}");
    neon.delete_database("shop")
        .await
        .expect("deleting a missing database");
    assert!(neon.list_databases().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_api_key_is_a_clear_error_and_creates_nothing() {
    let _serial = SERIAL.lock().await;
    let emu = start().await;
    let mut config = emu.config();
    config["api_key"] = json!("not-the-key-7f3a9");
    let neon = backend(config);
    let started = Instant::now();
    let e = neon.create_database(&spec("app")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a 401 is not retried"
    );
    assert!(
        e.message.contains("401")
            && e.message.contains("api_key")
            && e.message.contains("NEON_API_KEY"),
        "{e}"
    );
    assert!(
        !e.message.contains("not-the-key-7f3a9"),
        "the key leaked: {e}"
    );
    assert!(!format!("{e:?}").contains("not-the-key-7f3a9"));
    let h = neon.health().await.unwrap_err();
    assert!(h.message.contains("api_key"), "{h}");
    assert!(emu.project_names().await.is_empty());
    let missing = NeonBackend::from_config(json!({"api_url": emu.emu.api_url}));
    if std::env::var("NEON_API_KEY").is_err() {
        let e = missing.err().expect("no key: refused");
        assert!(e.message.contains("api_key"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_is_down_or_unreachable_is_unavailable() {
    let _serial = SERIAL.lock().await;
    let emu = start().await;
    let mut config = emu.config();
    config["retry_budget_secs"] = json!(2);
    let neon = backend(config.clone());

    emu.faults(json!({"down": true})).await;
    let started = Instant::now();
    let e = neon.create_database(&spec("app")).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("503"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(
        neon.health().await.unwrap_err().kind,
        BackendErrorKind::Unavailable
    );
    emu.faults(json!({"down": false})).await;
    assert!(emu.project_names().await.is_empty());

    // Nothing listens there: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    config["api_url"] = json!(format!("http://127.0.0.1:{port}/api/v2"));
    let nowhere = backend(config);
    let started = Instant::now();
    let e = nowhere.create_database(&spec("app")).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("cannot be reached"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Back up: a create works and leaves exactly one project.
    neon.create_database(&spec("app"))
        .await
        .expect("create once the API is back");
    assert_eq!(emu.project_names().await, vec!["ogel-app".to_string()]);
    neon.delete_database("app").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_within_a_bound() {
    let _serial = SERIAL.lock().await;
    let emu = start().await;
    let neon = backend(emu.config());

    // A burst: retried (honouring Retry-After), then success.
    emu.faults(json!({"rate_limit_next": 3, "retry_after_seconds": 1}))
        .await;
    let started = Instant::now();
    neon.create_database(&spec("app"))
        .await
        .expect("create through a 429 burst");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "Retry-After was honoured: {:?}",
        started.elapsed()
    );
    // 5xx bursts too.
    emu.faults(json!({"server_error_next": 2})).await;
    neon.ensure_running(&ComputeName::parse("app"))
        .await
        .expect("through 500s");
    emu.faults(json!({"server_error_next": 2})).await;
    neon.suspend(&ComputeName::parse("app"))
        .await
        .expect("suspend through 500s");

    // A storm past the bound: a clear error, no retrying for ever.
    let mut config = emu.config();
    config["retry_budget_secs"] = json!(3);
    let bounded = backend(config);
    emu.faults(json!({"rate_limit_next": 100000, "retry_after_seconds": 1}))
        .await;
    let started = Instant::now();
    let e = bounded.create_database(&spec("other")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind, BackendErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("rate limited"), "{e}");
    let e = bounded
        .ensure_running(&ComputeName::parse("app"))
        .await
        .unwrap_err();
    assert!(e.message.contains("rate limited"), "{e}");
    emu.clear_faults().await;
    assert_eq!(emu.project_names().await, vec!["ogel-app".to_string()]);
    bounded.delete_database("app").await.unwrap();
    assert!(emu.project_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_operation_is_an_error_and_leaves_nothing_half_made() {
    let _serial = SERIAL.lock().await;
    let emu = start().await;
    let neon = backend(emu.config());

    emu.faults(json!({"fail_next_operation": true})).await;
    let e = neon.create_database(&spec("app")).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Internal, "{e}");
    assert!(
        e.message.contains("injected by the emulator") && e.message.contains("was deleted"),
        "{e}"
    );
    assert!(
        emu.project_names().await.is_empty(),
        "the half-made project is gone"
    );
    neon.create_database(&spec("app"))
        .await
        .expect("a retry works");

    // A branch whose creation fails is not left behind either.
    emu.faults(json!({"fail_next_operation": true})).await;
    let e = neon
        .create_branch(&branch("app", "dev", BranchPoint::Now))
        .await
        .unwrap_err();
    assert!(e.message.contains("injected by the emulator"), "{e}");
    let id = emu.project_id("ogel-app").await;
    let (_, body) = emu
        .api(
            reqwest::Method::GET,
            &format!("/projects/{id}/branches"),
            None,
        )
        .await;
    let names: Vec<&str> = body["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["main"], "{body}");
    neon.create_branch(&branch("app", "dev", BranchPoint::Now))
        .await
        .expect("a retry works");

    // A failed wake is an error, not a hang.
    neon.suspend(&ComputeName::parse("app")).await.unwrap();
    emu.faults(json!({"fail_next_operation": true})).await;
    let e = neon
        .ensure_running(&ComputeName::parse("app"))
        .await
        .unwrap_err();
    assert!(e.message.contains("start"), "{e}");
    emu.clear_faults().await;
    neon.ensure_running(&ComputeName::parse("app"))
        .await
        .expect("the next wake works");
    neon.delete_database("app").await.unwrap();
    assert!(emu.project_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_locked_by_running_operations_is_waited_out() {
    let _serial = SERIAL.lock().await;
    let emu = start().await;
    let neon = backend(emu.config());
    neon.create_database(&spec("app")).await.unwrap();
    let ep = neon
        .ensure_running(&ComputeName::parse("app"))
        .await
        .unwrap();
    let id = emu.project_id("ogel-app").await;

    // Slow operations; a suspend made behind the backend's back holds the lock.
    emu.faults(json!({"operation_delay_ms": 2000})).await;
    let (_, body) = emu
        .api(
            reqwest::Method::GET,
            &format!("/projects/{id}/endpoints"),
            None,
        )
        .await;
    let endpoint_id = body["endpoints"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = emu
        .api(
            reqwest::Method::POST,
            &format!("/projects/{id}/endpoints/{endpoint_id}/suspend"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = emu
        .api(
            reqwest::Method::POST,
            &format!("/projects/{id}/endpoints/{endpoint_id}/start"),
            None,
        )
        .await;
    assert_eq!(status, 423, "the project is locked now");
    let started = Instant::now();
    neon.create_branch(&branch("app", "dev", BranchPoint::Now))
        .await
        .expect("the branch is made once the lock is gone");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    emu.clear_faults().await;
    let woken = neon
        .ensure_running(&ComputeName::parse("app"))
        .await
        .unwrap();
    assert_eq!(woken.tls, ep.tls);
    connect(&woken).await.expect("connects after the wait");
    neon.delete_database("app").await.unwrap();
    assert!(emu.project_names().await.is_empty());
}
