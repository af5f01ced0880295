//! The RDS backend with `engine = "aurora-postgresql"`, called directly:
//! moto's RDS (clusters, cluster snapshots, `RestoreDBClusterToPointInTime`
//! held to the published API by `tests/moto_faults.py`) as the control
//! plane, a real PostgreSQL behind `endpoint_overrides` as the data path
//! (on the shared data server a clone's data is a template copy: see the
//! crate docs).

mod common;

use common::*;
use ogel_backend_rds::config::RdsConfig;
use ogel_backend_rds::RdsBackend;
use ogel_plugin_sdk::{
    Backend, BackendErrorKind, BranchPoint, BranchSpec, Branching, ComputeName, ComputeState,
};
use std::time::Instant;

fn aurora_config(moto: &Moto, pg: &Postgres) -> serde_json::Value {
    let mut c = config(&moto.url(), pg.port);
    c["engine"] = "aurora-postgresql".into();
    c
}

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

async fn cluster(client: &aws_sdk_rds::Client, id: &str) -> Option<aws_sdk_rds::types::DbCluster> {
    client
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
        .ok()
        .and_then(|o| o.db_clusters().first().cloned())
}

async fn clusters_in_moto(client: &aws_sdk_rds::Client) -> Vec<String> {
    client
        .describe_db_clusters()
        .send()
        .await
        .expect("describe clusters")
        .db_clusters()
        .iter()
        .filter_map(|c| c.db_cluster_identifier().map(str::to_string))
        .collect()
}

fn branch(database: &str, name: &str, point: BranchPoint) -> BranchSpec {
    BranchSpec {
        database: database.into(),
        branch: name.into(),
        parent: "main".into(),
        point,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_clusters_clones_suspend_and_delete() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let started = Instant::now();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let config = aurora_config(&moto, &pg);
    let b = backend(config.clone());
    let client = rds(&config).await;
    let caps = b.capabilities();
    assert_eq!(caps.branching, Branching::CopyOnWrite);
    assert!(caps.snapshots && caps.suspend);
    // The shared data server cannot hold past data: no point in time.
    assert!(!caps.point_in_time);
    assert!(b.describe().contains("Aurora"), "{}", b.describe());

    // Create: a cluster and its writer instance in moto, role and database in Postgres.
    b.create_database(&spec("shop")).await.expect("create");
    let id = b.instance_id("shop", "main");
    let c = cluster(&client, &id).await.expect("the cluster exists");
    assert_eq!(c.engine(), Some("aurora-postgresql"));
    assert_eq!(c.status(), Some("available"));
    let members: Vec<_> = c
        .db_cluster_members()
        .iter()
        .map(|m| (m.db_instance_identifier(), m.is_cluster_writer()))
        .collect();
    assert_eq!(members, vec![(Some(id.as_str()), Some(true))]);
    let again = b.create_database(&spec("shop")).await.unwrap_err();
    assert_eq!(again.kind, BackendErrorKind::AlreadyExists, "{again}");
    assert_eq!(b.list_databases().await.expect("list"), vec!["shop"]);

    // The endpoint is the cluster's writer endpoint, mapped by endpoint_overrides.
    let ep = b
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .expect("ensure_running");
    assert_eq!(ep.database, "shop");
    let db = connect_endpoint(&pg, &ep).await;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("write");
    assert_eq!(count(&db).await, 100);
    drop(db);

    // Suspend = StopDBCluster; ensure_running = StartDBCluster.
    b.suspend(&ComputeName::parse("shop"))
        .await
        .expect("suspend");
    assert_eq!(
        cluster(&client, &id)
            .await
            .and_then(|c| c.status().map(str::to_string)),
        Some("stopped".into())
    );
    assert_eq!(
        b.compute_status(&ComputeName::parse("shop"))
            .await
            .expect("status")
            .state,
        ComputeState::Suspended
    );
    let ep2 = b
        .ensure_running(&ComputeName::parse("shop"))
        .await
        .expect("wake");
    assert_eq!(ep2, ep, "same cluster, same endpoint");
    assert_eq!(
        cluster(&client, &id)
            .await
            .and_then(|c| c.status().map(str::to_string)),
        Some("available".into())
    );
    let actions = moto.actions();
    for a in [
        "CreateDBCluster",
        "CreateDBInstance",
        "StopDBCluster",
        "StartDBCluster",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
    }

    // A branch: a copy-on-write clone of the parent's cluster.
    let before = Instant::now();
    b.create_branch(&branch("shop", "dev", BranchPoint::Now))
        .await
        .expect("branch");
    eprintln!("clone took {:?}", before.elapsed());
    let dev_id = b.instance_id("shop", "dev");
    let dev_cluster = cluster(&client, &dev_id).await.expect("the clone exists");
    let parent_cluster = cluster(&client, &id).await.expect("parent");
    assert!(
        dev_cluster.clone_group_id().is_some()
            && dev_cluster.clone_group_id() == parent_cluster.clone_group_id(),
        "the clone is in its source's clone group: {:?} vs {:?}",
        dev_cluster.clone_group_id(),
        parent_cluster.clone_group_id()
    );
    assert_eq!(dev_cluster.db_cluster_members().len(), 1, "one writer");
    let restores = std::fs::read_to_string(moto.faults.path().join("restores.log"))
        .expect("moto logged the restore");
    assert_eq!(
        restores.trim(),
        format!("{id} {dev_id} copy-on-write latest"),
        "a copy-on-write clone at the latest restorable time"
    );
    let dev = b
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .expect("branch endpoint");
    assert_ne!(dev.database, ep.database);
    let dev_db = connect_endpoint(&pg, &dev).await;
    assert_eq!(count(&dev_db).await, 100, "the clone starts as its parent");
    dev_db
        .batch_execute("DELETE FROM t WHERE id > 10")
        .await
        .expect("write on the branch");
    assert_eq!(count(&dev_db).await, 10);
    drop(dev_db);
    assert_eq!(
        count(&connect_endpoint(&pg, &ep).await).await,
        100,
        "the parent is untouched"
    );

    // Point in time is refused on the shared data server; LSNs always.
    let err = b
        .create_branch(&branch(
            "shop",
            "pit",
            BranchPoint::Timestamp {
                at: "2026-01-01T00:00:00Z".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unsupported, "{err}");
    let err = b
        .create_branch(&branch(
            "shop",
            "lsn",
            BranchPoint::Lsn { lsn: "0/0".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unsupported, "{err}");

    // Cluster snapshots: taken, listed, restored as a branch.
    let snap = b.create_snapshot("shop", "main").await.expect("snapshot");
    let listed = b.list_snapshots("shop").await.expect("list");
    assert_eq!(
        listed.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&snap.id]
    );
    b.restore_snapshot("shop", &snap.id, "old")
        .await
        .expect("restore");
    let old = b
        .ensure_running(&ComputeName::parse("shop@old"))
        .await
        .expect("restored");
    assert_eq!(count(&connect_endpoint(&pg, &old).await).await, 100);
    assert!(moto
        .actions()
        .iter()
        .any(|a| a == "RestoreDBClusterFromSnapshot"));

    // Delete a branch: its writer and cluster go; the parent stays.
    b.delete_branch("shop", "dev").await.expect("delete branch");
    assert!(cluster(&client, &dev_id).await.is_none());
    assert!(!instances_in_moto(&client).await.contains(&dev_id));
    let gone = b
        .ensure_running(&ComputeName::parse("shop@dev"))
        .await
        .unwrap_err();
    assert_eq!(gone.kind, BackendErrorKind::NotFound, "{gone}");

    // Delete: no cluster, instance or snapshot left; no database in Postgres.
    b.delete_database("shop").await.expect("delete");
    assert!(clusters_in_moto(&client).await.is_empty());
    assert!(instances_in_moto(&client).await.is_empty());
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
    b.delete_database("shop")
        .await
        .expect("deleting twice is fine");
    b.create_database(&spec("shop")).await.expect("re-create");
    b.delete_database("shop").await.expect("delete again");
    eprintln!("aurora lifecycle test: {:?}", started.elapsed());
}

/// A failed clone (the writer never becomes available) deletes the new
/// cluster; a stuck writer is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_clone_leaves_nothing() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let mut config = aurora_config(&moto, &pg);
    config["create_timeout"] = "1s".into();
    let b = backend(config.clone());
    let client = rds(&config).await;
    b.create_database(&spec("app")).await.expect("create");
    let dev_id = b.instance_id("app", "dev");
    // The clone's writer (same identifier as its cluster) stays "creating".
    moto.force_status(&dev_id, "creating");
    let err = b
        .create_branch(&branch("app", "dev", BranchPoint::Now))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains("Aurora cluster")
            && err.message.contains("\"creating\"")
            && err.message.contains("deleted"),
        "{}",
        err.message
    );
    assert!(
        cluster(&client, &dev_id).await.is_none(),
        "clone left behind"
    );
    assert!(!instances_in_moto(&client).await.contains(&dev_id));
    moto.clear_status(&dev_id);
    b.create_branch(&branch("app", "dev", BranchPoint::Now))
        .await
        .expect("a retry works");
    b.delete_database("app").await.expect("delete");
    assert!(clusters_in_moto(&client).await.is_empty());
}

/// Without a shared data server, a branch at a time is a point-in-time
/// restore (full copy: RDS refuses RestoreToTime with copy-on-write)
/// inside the parent's restorable window. Only the control plane is
/// checked here: every endpoint reaches the same test server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_branches_restore_the_cluster_to_a_time() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let mut config = aurora_config(&moto, &pg);
    config["shared_data_server"] = false.into();
    let b = backend(config.clone());
    assert!(b.capabilities().point_in_time);
    let client = rds(&config).await;
    b.create_database(&spec("pit")).await.expect("create");
    let id = b.instance_id("pit", "main");

    let err = b
        .create_branch(&branch(
            "pit",
            "past",
            BranchPoint::Timestamp {
                at: "2001-01-01T00:00:00Z".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::InvalidRequest, "{err}");
    assert!(err.message.contains("restorable window"), "{}", err.message);
    let err = b
        .create_branch(&branch(
            "pit",
            "past",
            BranchPoint::Timestamp {
                at: "yesterday".into(),
            },
        ))
        .await
        .unwrap_err();
    assert!(err.message.contains("RFC 3339"), "{}", err.message);

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let at = aws_smithy_types::DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
            - 1,
    )
    .fmt(aws_smithy_types::date_time::Format::DateTime)
    .expect("format");
    b.create_branch(&branch(
        "pit",
        "past",
        BranchPoint::Timestamp { at: at.clone() },
    ))
    .await
    .expect("point-in-time branch");
    let past_id = b.instance_id("pit", "past");
    let c = cluster(&client, &past_id).await.expect("restored cluster");
    assert!(c.clone_group_id().is_none(), "a full copy, not a clone");
    let restores =
        std::fs::read_to_string(moto.faults.path().join("restores.log")).expect("restores");
    let line = restores.trim();
    assert!(
        line.starts_with(&format!("{id} {past_id} full-copy ")),
        "{line}"
    );
    assert!(
        line.ends_with(at.trim_end_matches('Z')),
        "restored to {at}: {line}"
    );
    let ep = b
        .ensure_running(&ComputeName::parse("pit@past"))
        .await
        .expect("endpoint");
    assert_eq!(
        ep.database, "pit",
        "the database keeps its name in the copy"
    );
    b.delete_database("pit").await.expect("delete");
    assert!(clusters_in_moto(&client).await.is_empty());
    assert!(instances_in_moto(&client).await.is_empty());
}
