//! A database's standby on another gateway's disk, and the takeover when
//! the primary's gateway dies: real etcd (3 members), two real gateways,
//! real Postgres. `ogel chaos run --scenario kill-gateway` kills the
//! serving gateway with SIGKILL under a writer; the standby's gateway takes
//! the database over, nothing acknowledged is lost, clients are served
//! through the survivor, and the old gateway, back, fences its old primary
//! and becomes the new standby.

use ogel_e2e::etcd::EtcdCluster;
use ogel_e2e::{connect, eventually, Gateway};
use serde_json::Value;
use std::time::Duration;

async fn start_in(etcd: &EtcdCluster, node: &str, dir: Option<&std::path::Path>) -> Gateway {
    let env = etcd.gateway_env(node, Duration::from_secs(2));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match dir {
        None => Gateway::start_with(&env).await,
        Some(dir) => Gateway::start_in(dir, &env)
            .await
            .expect("gateway restarts"),
    }
}

async fn standby(gw: &Gateway, db: &str) -> Value {
    let (status, body) = gw
        .api("GET", &format!("/v1/databases/{db}/standby"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the standby on `node` is streaming and in sync.
async fn in_sync_on(gw: &Gateway, db: &str, node: &str) {
    let started = std::time::Instant::now();
    loop {
        let last = standby(gw, db).await;
        if last["standby_gateway"] == node
            && last["in_sync"] == true
            && last["streaming"].as_u64().unwrap_or(0) > 0
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the standby on {node} is not in sync: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Reap(std::path::PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        ogel_e2e::kill_postgres_under(&self.0);
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_gateways_database_is_taken_over_by_its_standby_on_another_gateway() {
    let etcd = EtcdCluster::start(3).await;
    let mut a = start_in(&etcd, "a", None).await;
    let b = start_in(&etcd, "b", None).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let (_, v) = b.api("GET", "/v1/cluster", None).await;
            v["nodes"].as_array().is_some_and(|n| n.len() == 2)
        })
        .await,
        "b sees both gateways"
    );
    let url = a.create_db("shop", Some(0)).await;
    assert!(
        url.contains(&a.pg_addr) && url.contains(&b.pg_addr),
        "{url}"
    );

    // A standby is refused where it could lose writes; then placed on b.
    let (status, body) = a
        .api(
            "POST",
            "/v1/databases/shop/standby",
            Some(serde_json::json!({"count": 1, "synchronous": false})),
        )
        .await;
    assert_eq!(
        status, 422,
        "an asynchronous standby on another gateway: {body}"
    );
    let (status, body) = a
        .api(
            "POST",
            "/v1/databases/shop/standby",
            Some(serde_json::json!({"count": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    in_sync_on(&a, "shop", "b").await;
    // The standby is b's: its pid is a process of b's data directory.
    let client = connect(&url).await.expect("shop through a");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .expect("writes acknowledged with the standby on b");
    drop(client);
    let (status, body) = b.api("POST", "/v1/databases/shop/switchover", None).await;
    assert_eq!(
        status, 422,
        "a switchover across gateways is refused: {body}"
    );
    let old_primary = a.db("shop").await["compute"]["pid"]
        .as_i64()
        .expect("the primary runs") as i32;

    // kill-gateway: a kills itself under the writer (asked through b,
    // whose API forwards it); b takes the database over.
    let (status, _) = b
        .api(
            "POST",
            "/v1/databases/shop/chaos",
            Some(serde_json::json!({"allowed": true})),
        )
        .await;
    assert_eq!(status, 200);
    let refused = b.cli(&["chaos", "run", "--db", "shop", "--scenario", "kill-gateway"]);
    assert!(!refused.status.success(), "kill-gateway without --url ran");
    let dir = a.take_dir();
    let a_dir = a.data_dir.clone();
    // Whatever happens, no postgres of a's outlives the test.
    let _reap = Reap(a_dir.clone());
    let out = b.cli_ok(&[
        "chaos",
        "run",
        "--db",
        "shop",
        "--scenario",
        "kill-gateway",
        "--url",
        &url,
        "--duration",
        "60s",
        "--json",
    ]);
    let report: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    println!("kill-gateway: {report}");
    assert_eq!(report["lost"], 0, "acknowledged writes lost: {report}");
    assert!(
        report["recovered_ms"].as_u64().is_some(),
        "writes never came back: {report}"
    );
    assert!(
        report["acknowledged"].as_u64().unwrap_or(0) > 50,
        "{report}"
    );
    a.kill9();
    let record = b.db("shop").await;
    assert_eq!(record["node"], "b", "{record}");
    let through_b = connect(&url).await.expect("shop through b");
    let n: i64 = through_b
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t on b")
        .get(0);
    assert_eq!(n, 100);
    // The old primary is still running, orphaned (the machine did not
    // die, its gateway did): unreachable, since clients go to b.
    assert!(
        alive(old_primary),
        "the orphaned old primary should still run"
    );

    // a comes back: it fences its old primary and follows b.
    let a = start_in(&etcd, "a", Some(&a_dir)).await;
    in_sync_on(&b, "shop", "a").await;
    assert!(
        eventually(Duration::from_secs(10), || async { !alive(old_primary) }).await,
        "the old primary (pid {old_primary}) still runs after its gateway came back"
    );
    through_b
        .batch_execute("INSERT INTO t VALUES (101)")
        .await
        .expect("writes with the new standby on a");
    let on_a = connect(&url).await.expect("shop through a, carried to b");
    let n: i64 = on_a
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t")
        .get(0);
    assert_eq!(n, 101);
    drop(a);
    drop(_reap);
    drop(dir);
}
