//! The RDS backend called directly (as the gateway would through the ABI):
//! moto's RDS in server mode as the control plane, a real PostgreSQL as the
//! data path behind `endpoint_overrides`.

mod common;

use common::*;
use ogel_backend_rds::config::RdsConfig;
use ogel_backend_rds::RdsBackend;
use ogel_plugin_sdk::{
    Backend, BackendErrorKind, BranchPoint, BranchSpec, ComputeName, ComputeState, Credentials,
};
use std::time::{Duration, Instant};

fn backend(config: serde_json::Value) -> RdsBackend {
    match RdsBackend::from_config(config) {
        Ok(b) => b,
        Err(e) => panic!("backend: {e}"),
    }
}

async fn rds(config: &serde_json::Value) -> aws_sdk_rds::Client {
    let c = RdsConfig::from_json(config.clone()).expect("config");
    ogel_backend_rds::aws::client(&c).await.expect("client")
}

async fn status_in_moto(client: &aws_sdk_rds::Client, id: &str) -> Option<String> {
    match client
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
    {
        Ok(out) => out
            .db_instances()
            .first()
            .and_then(|i| i.db_instance_status())
            .map(str::to_string),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_snapshots_and_branches() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let started = Instant::now();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let config = config(&moto.url(), pg.port);
    let b = backend(config.clone());
    let client = rds(&config).await;
    b.health().await.expect("health");

    // Create: an instance in moto, the role and database in Postgres.
    b.create_database(&spec("shop")).await.expect("create");
    let id = b.instance_id("shop", "main");
    assert_eq!(
        status_in_moto(&client, &id).await.as_deref(),
        Some("available")
    );
    let again = b.create_database(&spec("shop")).await.unwrap_err();
    assert_eq!(again.kind, BackendErrorKind::AlreadyExists, "{again}");
    assert_eq!(b.list_databases().await.expect("list"), vec!["shop"]);

    let ep = b
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .expect("ensure_running");
    assert_eq!(ep.database, "shop");
    assert!(ep.tls.is_none());
    let db = connect_endpoint(&pg, &ep).await;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("write");
    assert_eq!(count(&db).await, 100);
    // The owner cannot reach another database's data, nor is it a superuser.
    let owner_is_super: bool = db
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("rolsuper")
        .get(0);
    assert!(!owner_is_super);
    drop(db);

    // Suspend = StopDBInstance; ensure_running starts it again.
    let running = b
        .compute_status(&ComputeName::parse("shop"))
        .await
        .expect("status");
    assert_eq!(running.state, ComputeState::Running);
    b.suspend(&ComputeName::parse("shop"))
        .await
        .expect("suspend");
    assert_eq!(
        status_in_moto(&client, &id).await.as_deref(),
        Some("stopped")
    );
    assert_eq!(
        b.compute_status(&ComputeName::parse("shop"))
            .await
            .expect("status")
            .state,
        ComputeState::Suspended
    );
    b.suspend(&ComputeName::parse("shop"))
        .await
        .expect("suspending twice is fine");
    let ep2 = b
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .expect("wake");
    assert_eq!(
        status_in_moto(&client, &id).await.as_deref(),
        Some("available")
    );
    assert_eq!(ep2, ep, "same instance, same endpoint");
    let actions = moto.actions();
    assert!(actions.iter().any(|a| a == "StopDBInstance"), "{actions:?}");
    assert!(
        actions.iter().any(|a| a == "StartDBInstance"),
        "{actions:?}"
    );

    // Snapshots: taken, listed, restored as a branch holding their data.
    let snap = b.create_snapshot("shop", "main").await.expect("snapshot");
    assert_eq!(snap.branch, "main");
    let listed = b.list_snapshots("shop").await.expect("list snapshots");
    assert_eq!(
        listed.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&snap.id]
    );
    let db = connect_endpoint(&pg, &ep).await;
    db.batch_execute("DELETE FROM t WHERE id > 50")
        .await
        .expect("delete");
    drop(db);
    b.restore_snapshot("shop", &snap.id, "old")
        .await
        .expect("restore as a branch");
    let old = b
        .ensure_running(&ComputeName::parse("shop@old"))
        .await
        .expect("restored branch");
    assert_ne!(old.database, "shop");
    assert_eq!(count(&connect_endpoint(&pg, &old).await).await, 100);
    assert_eq!(count(&connect_endpoint(&pg, &ep).await).await, 50);

    // A branch: a snapshot of the parent restored into a new instance.
    b.create_branch(&BranchSpec {
        database: "shop".into(),
        branch: "dev".into(),
        parent: "main".into(),
        point: BranchPoint::Now,
    })
    .await
    .expect("branch");
    let dev_id = b.instance_id("shop", "dev");
    assert_eq!(
        status_in_moto(&client, &dev_id).await.as_deref(),
        Some("available")
    );
    let dev = b
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .expect("branch endpoint");
    let dev_db = connect_endpoint(&pg, &dev).await;
    assert_eq!(count(&dev_db).await, 50);
    dev_db
        .batch_execute("DELETE FROM t WHERE id > 10")
        .await
        .expect("write on the branch");
    assert_eq!(count(&dev_db).await, 10);
    assert_eq!(
        count(&connect_endpoint(&pg, &ep).await).await,
        50,
        "isolated"
    );
    drop(dev_db);
    // Branch bases are internal: not listed as the database's snapshots.
    assert_eq!(b.list_snapshots("shop").await.expect("list").len(), 1);
    let pit = b
        .create_branch(&BranchSpec {
            database: "shop".into(),
            branch: "pit".into(),
            parent: "main".into(),
            point: BranchPoint::Lsn { lsn: "0/0".into() },
        })
        .await
        .unwrap_err();
    assert_eq!(pit.kind, BackendErrorKind::Unsupported);

    // Restoring over an existing branch replaces it.
    b.restore_snapshot("shop", &snap.id, "dev")
        .await
        .expect("restore over dev");
    let dev2 = b
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .expect("replaced branch");
    assert_ne!(dev2.database, dev.database);
    assert_eq!(count(&connect_endpoint(&pg, &dev2).await).await, 100);

    b.delete_branch("shop", "dev").await.expect("delete branch");
    let gone = b
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .unwrap_err();
    assert_eq!(gone.kind, BackendErrorKind::NotFound, "{gone}");

    // Delete: every instance and snapshot gone from moto, the databases from Postgres.
    b.delete_database("shop").await.expect("delete");
    let left = instances_in_moto(&client).await;
    assert!(left.is_empty(), "left in moto: {left:?}");
    assert!(b.list_snapshots("shop").await.expect("list").is_empty());
    let admin = pg
        .connect(MASTER, &master_password(), "postgres")
        .await
        .expect("master");
    let dbs: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'",
            &[],
        )
        .await
        .expect("databases")
        .get(0);
    assert_eq!(dbs, 0, "databases left on the data server");
    let err = b
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::NotFound);
    b.delete_database("shop")
        .await
        .expect("deleting twice is fine");
    // The name can be used again.
    b.create_database(&spec("shop")).await.expect("re-create");
    b.delete_database("shop").await.expect("delete again");
    eprintln!("lifecycle test: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_in_modifying_is_a_clear_error_and_leaves_nothing() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let mut config = config(&moto.url(), pg.port);
    config["create_timeout"] = "1s".into();
    config["start_timeout"] = "1s".into();
    let b = backend(config.clone());
    let client = rds(&config).await;

    // A create whose instance never becomes available.
    let id = b.instance_id("stuck", "main");
    moto.force_status(&id, "modifying");
    let err = b.create_database(&spec("stuck")).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains("\"modifying\"") && err.message.contains("deleted"),
        "{}",
        err.message
    );
    assert_eq!(
        status_in_moto(&client, &id).await,
        None,
        "instance left behind"
    );
    moto.clear_status(&id);
    b.create_database(&spec("stuck"))
        .await
        .expect("a retry works");

    // A running database whose instance goes into a long modification.
    moto.force_status(&id, "modifying");
    let started = Instant::now();
    let err = b
        .ensure_running(&ComputeName::parse("stuck"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains("\"modifying\"") && err.message.contains("start_timeout"),
        "{}",
        err.message
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        b.compute_status(&ComputeName::parse("stuck"))
            .await
            .expect("status")
            .state,
        ComputeState::Starting
    );
    let err = b.suspend(&ComputeName::parse("stuck")).await.unwrap_err();
    assert!(err.message.contains("cannot be stopped"), "{}", err.message);
    moto.clear_status(&id);
    b.ensure_running(&ComputeName::parse("stuck"))
        .await
        .expect("available again");

    // A stopped instance that takes longer than start_timeout to start:
    // the caller is told it is starting, not held.
    b.suspend(&ComputeName::parse("stuck"))
        .await
        .expect("suspend");
    moto.force_status(&id, "starting");
    let err = b
        .ensure_running(&ComputeName::parse("stuck"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable);
    assert!(err.message.contains("is starting"), "{}", err.message);
    moto.clear_status(&id);
    b.ensure_running(&ComputeName::parse("stuck"))
        .await
        .expect("started");

    // A broken instance: no waiting at all.
    moto.force_status(&id, "storage-full");
    let err = b
        .ensure_running(&ComputeName::parse("stuck"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::OutOfResources, "{err}");
    moto.clear_status(&id);
    b.delete_database("stuck").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_failures_are_clear_and_leave_nothing() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let base = config(&moto.url(), pg.port);
    let client = rds(&base).await;

    // moto down: Unavailable, naming the API.
    let mut down = base.clone();
    down["endpoint_url"] = format!("http://127.0.0.1:{}", free_port()).into();
    down["max_attempts"] = 2.into();
    let err = backend(down)
        .create_database(&spec("down"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains("could not reach the RDS API"),
        "{}",
        err.message
    );

    // Bad region: refused when the plugin starts.
    let mut bad = base.clone();
    bad["region"] = "moon-base".into();
    let err = RdsBackend::from_config(bad).err().expect("refused");
    assert_eq!(err.kind, BackendErrorKind::InvalidRequest);
    assert!(err.message.contains("region"), "{}", err.message);

    // Throttling: retried with backoff, then a clear error.
    let b = backend(base.clone());
    moto.throttle(2);
    b.health()
        .await
        .expect("succeeds after two throttled attempts");
    assert_eq!(moto.throttles_left(), 0);
    moto.throttle(1000);
    let err = b.create_database(&spec("throttled")).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(err.message.contains("throttling"), "{}", err.message);
    moto.throttle(0);
    std::fs::remove_file(moto.faults.path().join("throttle")).ok();
    assert!(instances_in_moto(&client).await.is_empty());

    // A failure after the instance exists (the master cannot log in: the
    // secret changed) deletes the instance: nothing half-made.
    let mut other = base.clone();
    other["secret"] = "another-secret-0123456789".into();
    let err = backend(other)
        .create_database(&spec("half"))
        .await
        .unwrap_err();
    assert!(err.message.contains("master user"), "{}", err.message);
    assert!(err.message.contains("secret"), "{}", err.message);
    assert!(!err.message.contains(&master_password()));
    assert!(
        instances_in_moto(&client).await.is_empty(),
        "instance left behind"
    );

    // Bad credentials: moto checking keys as AWS does.
    let strict = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let mut creds = base.clone();
    creds["endpoint_url"] = strict.url().into();
    creds["max_attempts"] = 1.into();
    let err = backend(creds)
        .create_database(&spec("creds"))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("credentials") && err.message.contains("AWS_ACCESS_KEY_ID"),
        "{}",
        err.message
    );
    assert!(
        !err.message.contains("test"),
        "no key in the message: {}",
        err.message
    );
    assert!(
        !strict.actions().iter().any(|a| a == "CreateDBInstance")
            || !strict.log().contains("CreateDBInstance\" 200"),
        "an instance was created with bad credentials"
    );
    // Secrets are not in what the plugin says about itself.
    let b = backend(base.clone());
    assert!(!b.describe().contains(SECRET));
    assert!(!b.describe().contains(&master_password()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_instances_is_verified_against_the_configured_ca() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start_with(&master_password(), true);
    let ca_file = pg.ca_file.clone().expect("ca");
    let mut config = config(&moto.url(), pg.port);
    config["tls"] = true.into();
    config["ca_file"] = ca_file.display().to_string().into();
    let b = backend(config.clone());
    assert!(b.describe().contains("TLS verified"), "{}", b.describe());

    // The master's connection (create) runs over verified TLS.
    b.create_database(&spec("secure"))
        .await
        .expect("create over TLS");
    let ep = b
        .ensure_running(&ComputeName::parse("secure"))
        .await
        .expect("endpoint");
    let tls = ep.tls.clone().expect("the endpoint asks for TLS");
    let id = b.instance_id("secure", "main");
    assert_eq!(
        tls.server_name,
        format!("{id}.aaaaaaaaaa.us-east-1.rds.amazonaws.com")
    );
    let ca_pem = std::fs::read_to_string(&ca_file).expect("ca");
    assert_eq!(tls.ca_pem.as_deref(), Some(ca_pem.as_str()));
    assert_eq!((ep.host.as_str(), ep.port), ("127.0.0.1", pg.port));

    // What the gateway does with it: connect to host:port, verify server_name.
    let tls_config = ogel_backend_rds::sql::tls_config(&ca_pem).expect("roots");
    let Credentials::Password { user, password } = &ep.credentials;
    let mut c = tokio_postgres::Config::new();
    c.host(&tls.server_name)
        .hostaddr("127.0.0.1".parse().expect("ip"))
        .port(ep.port)
        .user(user)
        .password(password)
        .dbname(&ep.database)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, conn) = c
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config))
        .await
        .expect("verified TLS login");
    tokio::spawn(conn);
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl);

    // A CA that did not sign the server's certificate: refused, nothing left.
    let other = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .current_dir(other.path())
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let mut wrong = config.clone();
    wrong["ca_file"] = other.path().join("ca.pem").display().to_string().into();
    let err = backend(wrong)
        .create_database(&spec("mitm"))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("could not log in to RDS instance"),
        "{}",
        err.message
    );
    let client_rds = rds(&config).await;
    assert_eq!(
        status_in_moto(&client_rds, &b.instance_id("mitm", "main")).await,
        None
    );
    // A ca_file that is not PEM: refused at start.
    let mut garbage = config.clone();
    garbage["ca_file"] = other.path().join("k").display().to_string().into();
    assert!(RdsBackend::from_config(garbage).is_err());
    b.delete_database("secure").await.expect("delete");
}
