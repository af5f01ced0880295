//! Standbys and failover of the RDS backend (ABI 1.5 `set_standbys`,
//! `standby_status`, `promote`), called directly: moto's RDS as the
//! control plane, held by `tests/moto_faults.py` to RDS's published
//! Multi-AZ and failover behaviour (ModifyDBInstance `MultiAZ` takes a
//! `modifying` cycle, RebootDBInstance `ForceFailover` is refused on a
//! Single-AZ instance and swaps the AZs, FailoverDBCluster checks its
//! target and cycles through `failing-over`), and a real PostgreSQL
//! behind `endpoint_overrides` as the data path.

mod common;

use common::*;
use ogel_backend_rds::config::RdsConfig;
use ogel_backend_rds::RdsBackend;
use ogel_plugin_sdk::{Backend, BackendErrorKind, ComputeName, ComputeState, Takeover};

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

async fn instance(client: &aws_sdk_rds::Client, id: &str) -> aws_sdk_rds::types::DbInstance {
    client
        .describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .expect("describe")
        .db_instances()
        .first()
        .cloned()
        .expect("the instance exists")
}

/// (identifier, is writer) of a cluster's members, sorted.
async fn members(client: &aws_sdk_rds::Client, id: &str) -> Vec<(String, bool)> {
    let out = client
        .describe_db_clusters()
        .db_cluster_identifier(id)
        .send()
        .await
        .expect("describe cluster");
    let mut m: Vec<(String, bool)> = out
        .db_clusters()
        .first()
        .expect("the cluster exists")
        .db_cluster_members()
        .iter()
        .map(|m| {
            (
                m.db_instance_identifier().unwrap_or_default().to_string(),
                m.is_cluster_writer() == Some(true),
            )
        })
        .collect();
    m.sort();
    m
}

/// Writes 100 rows through the endpoint of `database`.
async fn fill(b: &RdsBackend, pg: &Postgres, database: &str) -> u64 {
    let ep = b
        .ensure_running(&ComputeName::parse(database))
        .await
        .expect("ensure_running");
    let db = connect_endpoint(pg, &ep).await;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .expect("write");
    ep.generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_az_standby_promote_and_generations() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let config = config(&moto.url(), pg.port);
    let b = backend(config.clone());
    let client = rds(&config).await;
    let shop = ComputeName::parse("shop");
    assert!(b.capabilities().standby);

    b.create_database(&spec("shop")).await.expect("create");
    let id = b.instance_id("shop", "main");
    let gen0 = fill(&b, &pg, "shop").await;
    assert_eq!(b.standby_status(&shop).await.expect("status"), None);

    // No standby: promote is a clear error, and RDS is not asked (it
    // would refuse: ForceFailover on a Single-AZ instance).
    let err = b.promote(&shop, Takeover::Failover).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains("no standby")
            && err.message.contains("not Multi-AZ")
            && err.message.contains("ogel db standby shop add"),
        "{}",
        err.message
    );
    assert_eq!(moto.calls("RebootDBInstance"), 0);
    assert_eq!(moto.calls("AddTagsToResource"), 0, "generation not raised");
    let refused = client
        .reboot_db_instance()
        .db_instance_identifier(&id)
        .force_failover(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        ogel_backend_rds::aws::code(&refused),
        Some("InvalidParameterCombination"),
        "moto is held to RDS's rule"
    );

    // One standby only, and only synchronous.
    let err = b.set_standbys(&shop, 2, true).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::InvalidRequest, "{err}");
    assert!(
        err.message.contains("exactly one standby") && err.message.contains("aurora-postgresql"),
        "{}",
        err.message
    );
    let err = b.set_standbys(&shop, 1, false).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::InvalidRequest, "{err}");
    assert!(err.message.contains("synchronous"), "{}", err.message);
    assert_eq!(moto.calls("ModifyDBInstance"), 0);

    // Add: ModifyDBInstance MultiAZ, waited through RDS's `modifying`.
    let describes = moto.calls("DescribeDBInstances");
    b.set_standbys(&shop, 1, true).await.expect("add a standby");
    assert_eq!(moto.calls("ModifyDBInstance"), 1);
    assert!(
        moto.calls("DescribeDBInstances") >= describes + 3,
        "waited through the modification: {:?}",
        moto.actions()
    );
    let i = instance(&client, &id).await;
    assert_eq!(i.multi_az(), Some(true));
    assert_eq!(i.db_instance_status(), Some("available"));
    assert_eq!(i.availability_zone(), Some("us-east-1a"));
    assert_eq!(i.secondary_availability_zone(), Some("us-east-1b"));
    assert!(i.pending_modified_values().is_none());
    let s = b
        .standby_status(&shop)
        .await
        .expect("status")
        .expect("a standby");
    assert_eq!(
        (s.wanted, s.streaming, s.synchronous, s.failovers),
        (1, 1, true, 0)
    );
    assert_eq!(s.note, None);
    assert_eq!(s.pid, None);
    // Asked again (as the gateway's watch does): nothing sent to RDS
    // (which would refuse it: "No modifications were requested").
    b.set_standbys(&shop, 1, true).await.expect("again");
    assert_eq!(moto.calls("ModifyDBInstance"), 1);
    assert_eq!(
        b.ensure_running(&shop).await.expect("ep").generation,
        gen0,
        "a standby does not change the generation"
    );

    // Switchover: RebootDBInstance ForceFailover, the AZs swap, a higher
    // generation, and the endpoint serves the same data.
    let ep1 = b
        .promote(&shop, Takeover::Switchover)
        .await
        .expect("promote");
    assert!(ep1.generation > gen0, "{} > {gen0}", ep1.generation);
    assert_eq!(moto.calls("RebootDBInstance"), 2, "{:?}", moto.actions());
    let i = instance(&client, &id).await;
    assert_eq!(i.db_instance_status(), Some("available"));
    assert_eq!(
        (i.availability_zone(), i.secondary_availability_zone()),
        (Some("us-east-1b"), Some("us-east-1a")),
        "the standby's AZ is the primary's now"
    );
    assert!(i
        .tag_list()
        .iter()
        .any(|t| t.key() == Some("ogel:generation")
            && t.value() == Some(ep1.generation.to_string().as_str())));
    let db = connect_endpoint(&pg, &ep1).await;
    assert_eq!(count(&db).await, 100);
    db.batch_execute("INSERT INTO t VALUES (101)")
        .await
        .expect("write after the failover");
    drop(db);
    // The generation stays, also across a gateway restart.
    assert_eq!(
        b.ensure_running(&shop).await.expect("ep").generation,
        ep1.generation
    );
    let status = b.compute_status(&shop).await.expect("status");
    assert_eq!(status.generation, ep1.generation);
    assert_eq!(status.state, ComputeState::Running);
    let restarted = backend(config.clone());
    assert_eq!(
        restarted
            .ensure_running(&shop)
            .await
            .expect("ep")
            .generation,
        ep1.generation
    );

    // Failover, with RDS throttling the reboot twice: retried with
    // backoff, and the generation goes up again.
    moto.throttle_action("RebootDBInstance", 2);
    let ep2 = restarted
        .promote(&shop, Takeover::Failover)
        .await
        .expect("promote through throttling");
    assert!(ep2.generation > ep1.generation);
    assert_eq!(
        moto.calls("RebootDBInstance"),
        2 + 3,
        "two throttled attempts, then the reboot: {:?}",
        moto.actions()
    );
    assert_eq!(
        instance(&client, &id).await.availability_zone(),
        Some("us-east-1a")
    );
    assert_eq!(count(&connect_endpoint(&pg, &ep2).await).await, 101);
    let s = b
        .standby_status(&shop)
        .await
        .expect("status")
        .expect("some");
    assert_eq!((s.wanted, s.streaming, s.failovers), (1, 1, 2));

    // A primary that is not available (say, failing over on its own) is
    // not failed over again; the generation is not raised.
    let tags = moto.calls("AddTagsToResource");
    moto.force_status(&id, "rebooting");
    let err = b.promote(&shop, Takeover::Failover).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(err.message.contains("\"rebooting\""), "{}", err.message);
    assert_eq!(moto.calls("AddTagsToResource"), tags);
    let s = b
        .standby_status(&shop)
        .await
        .expect("status")
        .expect("some");
    assert_eq!(s.streaming, 0, "not streaming while rebooting");
    assert!(s.note.is_some_and(|n| n.contains("rebooting")));
    moto.clear_status(&id);

    // Remove: MultiAZ=false; the failovers stay counted; no standby to promote.
    b.set_standbys(&shop, 0, true).await.expect("remove");
    assert_eq!(instance(&client, &id).await.multi_az(), Some(false));
    let s = b
        .standby_status(&shop)
        .await
        .expect("status")
        .expect("some");
    assert_eq!((s.wanted, s.streaming, s.failovers), (0, 0, 2));
    let err = b.promote(&shop, Takeover::Switchover).await.unwrap_err();
    assert!(err.message.contains("no standby"), "{}", err.message);

    // A snapshot restored over the database: a new instance, whose
    // generation is still above the last one handed out.
    let snap = b.create_snapshot("shop", "main").await.expect("snapshot");
    b.restore_snapshot("shop", &snap.id, "main")
        .await
        .expect("restore over main");
    let ep3 = b.ensure_running(&shop).await.expect("restored");
    assert!(ep3.generation > ep2.generation);
    assert_eq!(count(&connect_endpoint(&pg, &ep3).await).await, 101);

    b.delete_database("shop").await.expect("delete");
    assert!(instances_in_moto(&client).await.is_empty());
}

/// A Multi-AZ conversion (made here behind the plugin's back) keeps the
/// instance serving, shows as a standby being built, and `set_standbys`
/// waits for it instead of asking again; a stopped instance is started
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_being_built_and_a_stopped_primary() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let config = config(&moto.url(), pg.port);
    let b = backend(config.clone());
    let client = rds(&config).await;
    let app = ComputeName::parse("app");
    b.create_database(&spec("app")).await.expect("create");
    let id = b.instance_id("app", "main");
    fill(&b, &pg, "app").await;

    moto.set_cycle(12);
    client
        .modify_db_instance()
        .db_instance_identifier(&id)
        .multi_az(true)
        .apply_immediately(true)
        .send()
        .await
        .expect("modify");
    let i = instance(&client, &id).await;
    assert_eq!(i.db_instance_status(), Some("modifying"));
    assert_eq!(
        i.pending_modified_values().and_then(|p| p.multi_az()),
        Some(true)
    );
    let s = b.standby_status(&app).await.expect("status").expect("some");
    assert_eq!((s.wanted, s.streaming), (1, 0));
    assert!(
        s.note.as_deref().is_some_and(|n| n.contains("being built")),
        "{s:?}"
    );
    // Serving meanwhile: RDS converts without an outage.
    assert_eq!(
        b.compute_status(&app).await.expect("status").state,
        ComputeState::Running
    );
    let ep = b
        .ensure_running(&app)
        .await
        .expect("serving while modifying");
    assert_eq!(count(&connect_endpoint(&pg, &ep).await).await, 100);
    b.set_standbys(&app, 1, true).await.expect("wait for it");
    assert_eq!(moto.calls("ModifyDBInstance"), 1, "not asked twice");
    let i = instance(&client, &id).await;
    assert_eq!(
        (i.multi_az(), i.db_instance_status()),
        (Some(true), Some("available"))
    );

    // A suspended database: set_standbys starts it, then changes it.
    b.set_standbys(&app, 0, true).await.expect("remove");
    b.suspend(&app).await.expect("suspend");
    assert_eq!(
        instance(&client, &id).await.db_instance_status(),
        Some("stopped")
    );
    b.set_standbys(&app, 1, true)
        .await
        .expect("add to a stopped one");
    let i = instance(&client, &id).await;
    assert_eq!(
        (i.multi_az(), i.db_instance_status()),
        (Some(true), Some("available"))
    );
    assert!(moto.calls("StartDBInstance") >= 1);
    b.delete_database("app").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aurora_replicas_and_cluster_failover() {
    let _serial = SERIAL.lock().await;
    aws_env();
    let moto = Moto::start();
    let pg = Postgres::start(&master_password());
    let mut config = config(&moto.url(), pg.port);
    config["engine"] = "aurora-postgresql".into();
    let b = backend(config.clone());
    let client = rds(&config).await;
    let app = ComputeName::parse("app");
    assert!(b.capabilities().standby);
    b.create_database(&spec("app")).await.expect("create");
    let id = b.instance_id("app", "main");
    let gen0 = fill(&b, &pg, "app").await;
    assert_eq!(b.standby_status(&app).await.expect("status"), None);

    // No replica: a clear error, RDS not asked.
    let err = b.promote(&app, Takeover::Failover).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    assert!(
        err.message.contains("no standby") && err.message.contains("no Aurora Replica"),
        "{}",
        err.message
    );
    assert_eq!(moto.calls("FailoverDBCluster"), 0);
    let err = b.set_standbys(&app, 1, false).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::InvalidRequest, "{err}");
    assert!(err.message.contains("Aurora"), "{}", err.message);
    let err = b.set_standbys(&app, 16, true).await.unwrap_err();
    assert!(err.message.contains("at most 15"), "{}", err.message);

    // A standby = an Aurora Replica in the cluster.
    b.set_standbys(&app, 1, true).await.expect("add a replica");
    let reader = format!("{id}-reader1");
    assert_eq!(
        members(&client, &id).await,
        vec![(id.clone(), true), (reader.clone(), false)]
    );
    let s = b.standby_status(&app).await.expect("status").expect("some");
    assert_eq!(
        (s.wanted, s.streaming, s.synchronous, s.failovers),
        (1, 1, true, 0)
    );
    b.set_standbys(&app, 1, true)
        .await
        .expect("again: nothing to do");
    assert_eq!(moto.calls("CreateDBInstance"), 2, "writer + one replica");

    // Switchover: FailoverDBCluster to the replica, waited through
    // `failing-over`; the writer endpoint serves the same data.
    let ep1 = b
        .promote(&app, Takeover::Switchover)
        .await
        .expect("promote");
    assert!(ep1.generation > gen0);
    assert_eq!(moto.calls("FailoverDBCluster"), 1);
    let log = std::fs::read_to_string(moto.faults.path().join("failovers.log")).expect("log");
    assert_eq!(log.trim(), format!("{id} {id} {reader}"));
    assert_eq!(
        members(&client, &id).await,
        vec![(id.clone(), false), (reader.clone(), true)]
    );
    assert_eq!(count(&connect_endpoint(&pg, &ep1).await).await, 100);
    // The old writer is the replica now.
    let s = b.standby_status(&app).await.expect("status").expect("some");
    assert_eq!((s.wanted, s.streaming, s.failovers), (1, 1, 1));
    let restarted = backend(config.clone());
    assert_eq!(
        restarted.ensure_running(&app).await.expect("ep").generation,
        ep1.generation
    );

    // Failover back, through throttling of the failover call.
    moto.throttle_action("FailoverDBCluster", 1);
    let ep2 = restarted
        .promote(&app, Takeover::Failover)
        .await
        .expect("promote through throttling");
    assert!(ep2.generation > ep1.generation);
    assert_eq!(moto.calls("FailoverDBCluster"), 1 + 2);
    assert_eq!(
        members(&client, &id).await,
        vec![(id.clone(), true), (reader.clone(), false)]
    );
    assert_eq!(count(&connect_endpoint(&pg, &ep2).await).await, 100);

    // Two replicas, then none.
    b.set_standbys(&app, 2, true).await.expect("two replicas");
    assert_eq!(
        members(&client, &id).await,
        vec![
            (id.clone(), true),
            (reader.clone(), false),
            (format!("{id}-reader2"), false)
        ]
    );
    let s = b.standby_status(&app).await.expect("status").expect("some");
    assert_eq!((s.wanted, s.streaming), (2, 2));
    b.set_standbys(&app, 0, true).await.expect("no replicas");
    assert_eq!(members(&client, &id).await, vec![(id.clone(), true)]);
    let err = b.promote(&app, Takeover::Switchover).await.unwrap_err();
    assert!(err.message.contains("no Aurora Replica"), "{}", err.message);

    b.delete_database("app").await.expect("delete");
    assert!(instances_in_moto(&client).await.is_empty());
}
