//! Several gateways as one, against a real 3-member etcd cluster and real
//! gateways: one catalog, one leader, a leader killed or paused and
//! replaced (its late writes refused), a name taken twice, etcd members
//! lost (failsafe: clients keep being served, no control-plane writes).

use ogel_e2e::etcd::EtcdCluster;
use ogel_e2e::{connect, eventually, shared_tempdir, sqlstate, Gateway};
use serde_json::Value;
use std::time::Duration;

fn cluster_env(etcd: &EtcdCluster, node: &str) -> Vec<(String, String)> {
    etcd.gateway_env(node, Duration::from_secs(2))
}

async fn start(etcd: &EtcdCluster, node: &str) -> Gateway {
    let env = cluster_env(etcd, node);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_with(&env).await
}

async fn view(gw: &Gateway) -> Value {
    let (status, body) = gw.api("GET", "/v1/cluster", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until `check` holds for the gateway's view; the last view.
async fn until(gw: &Gateway, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = view(gw).await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not seen within 15 s; last view {last}");
}

/// An API call with another bearer token than the gateway's own.
async fn call(gw: &Gateway, method: &str, path: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method.parse().expect("method"), format!("{}{path}", gw.api))
        .bearer_auth(token)
        .send()
        .await
        .expect("API reachable");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Whether a POST of database `name` succeeds within `timeout` (retried).
async fn creates(gw: &Gateway, name: &str, timeout: Duration) -> bool {
    eventually(timeout, || async {
        gw.api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({ "name": name })),
        )
        .await
        .0 == 201
    })
    .await
}

fn signal(gw: &Gateway, sig: nix::sys::signal::Signal) {
    let pid = gw.pid() as i32;
    assert!(pid > 0, "the gateway runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_catalog_one_leader_failover_and_fenced_late_writes() {
    let etcd = EtcdCluster::start(3).await;
    let mut a = start(&etcd, "a").await;
    let first = until(&a, "a leads", |v| v["role"] == "leader").await;
    let gen_a = first["generation"].as_i64().expect("generation");
    let b = start(&etcd, "b").await;
    let c = start(&etcd, "c").await;
    for gw in [&a, &b, &c] {
        until(gw, "three nodes, leader a", |v| {
            v["leader"] == "a" && v["nodes"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;
    }
    assert_eq!(view(&b).await["role"], "follower");

    // A second gateway with a taken name is refused, naming it.
    let dir = shared_tempdir();
    let env = cluster_env(&etcd, "b");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = Gateway::start_in(&dir.path().join("data"), &env).await;
    assert!(refused.is_err(), "a second gateway named b started");
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    assert!(log.contains("another gateway named b"), "{log}");

    // One catalog: a database made through b is everyone's, served by b;
    // a client of a is carried to b, and its cancel, sent to a, reaches
    // its query on b.
    let url = b.create_db("shop", Some(0)).await;
    // The API of any gateway: a's takes b's admin token, and a call about
    // b's database made to a is b's to answer.
    let (status, body) = call(&a, "GET", "/v1/status", &b.token).await;
    assert_eq!(status, 200, "a refused b's admin token: {body}");
    let (status, body) = a.api("POST", "/v1/databases/shop/suspend", None).await;
    assert_eq!(status, 200, "{body}");
    let (_, on_b) = b.api("GET", "/v1/databases/shop", None).await;
    assert_eq!(on_b["compute"]["state"], "suspended", "{on_b}");
    let (status, body) = a.api("POST", "/v1/databases/shop/wake", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["compute"]["state"], "running", "{body}");
    let (status, _) = call(&a, "GET", "/v1/status", "not-a-token").await;
    assert_eq!(status, 401);

    let client = connect(&url).await.expect("shop through b");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let (_, list) = a.api("GET", "/v1/databases", None).await;
    let shop = list
        .as_array()
        .and_then(|l| l.iter().find(|d| d["name"] == "shop").cloned())
        .unwrap_or_else(|| panic!("shop not listed on a: {list}"));
    assert_eq!(shop["node"], "b");
    // Its URL names every gateway, b's first.
    assert!(
        url.contains(&format!("@{},", b.pg_addr)) && url.contains(&a.pg_addr),
        "{url}"
    );
    let password = ogel_e2e::password_of(&url).to_string();
    let on =
        |gw: &Gateway, db: &str| format!("postgresql://{db}_owner:{password}@{}/{db}", gw.pg_addr);
    let through_a = on(&a, "shop");
    let hopped = connect(&through_a).await.expect("shop through a");
    let n: i32 = hopped
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let cancel = hopped.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = hopped.batch_execute("SELECT pg_sleep(60)").await;
        (hopped, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    cancel
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent to a");
    let (_hopped, r) = sleeper.await.unwrap();
    let e = r.expect_err("the query was cancelled");
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // A preview branch of b's database, made through a's API, expires
    // while the leader is being replaced: deleted once, by b.
    let (status, body) = a
        .api(
            "POST",
            "/v1/databases/shop/branches",
            Some(serde_json::json!({"name": "preview", "ttl_secs": 4})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // kill -9 the leader: another leads with a newer generation, and b's
    // client never notices.
    a.kill9();
    ogel_e2e::kill_postgres_under(&a.data_dir);
    let after = until(&b, "a new leader", |v| {
        (v["leader"] == "b" || v["leader"] == "c") && v["generation"].as_i64() > Some(gen_a)
    })
    .await;
    let gen_2 = after["generation"].as_i64().expect("generation");
    let leader_2 = after["leader"].as_str().expect("leader").to_string();
    until(&c, "c agrees", |v| v["leader"] == leader_2.as_str()).await;
    until(&b, "a is gone from the nodes", |v| {
        v["nodes"].as_array().is_some_and(|n| n.len() == 2)
    })
    .await;
    until(&b, "the new leader beats", |v| {
        v["leader_beat"]["generation"].as_i64() == Some(gen_2)
    })
    .await;
    let n: i32 = client
        .query_one("SELECT v FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let gone = ogel_e2e::eventually(Duration::from_secs(20), || async {
        let (_, list) = b.api("GET", "/v1/databases/shop/branches", None).await;
        !list.to_string().contains("preview")
    })
    .await;
    assert!(gone, "the expired branch is still there");
    let deletes = |gw: &Gateway| {
        let log = gw
            .data_dir
            .parent()
            .map(|d| std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default())
            .unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("expired: deleted") && l.contains("preview"))
            .count()
    };
    assert_eq!((deletes(&b), deletes(&c)), (1, 0), "deleted once, by b");
    // libpq too: a URL naming the dead gateway first reaches the next one.
    let libpq = ogel_e2e::psql(
        &format!(
            "postgresql://shop_owner:{password}@{},{}/shop",
            a.pg_addr, b.pg_addr
        ),
        "SELECT count(*) FROM t",
    )
    .expect("psql with two hosts");
    assert_eq!(libpq.trim(), "1");
    // A URL naming the dead gateway first reaches the next one.
    let multi = format!(
        "postgresql://shop_owner:{password}@{},{}/shop",
        a.pg_addr, c.pg_addr
    );
    let n: i64 = connect(&multi)
        .await
        .expect("the next gateway of the URL")
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // a's own database: a clear 57P03 naming a, not a hang.
    let app_through_b = a.app_url.replace(&a.pg_addr, &b.pg_addr);
    let e = connect(&app_through_b).await.expect_err("a is down");
    assert_eq!(sqlstate(&e), "57P03", "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("gateway a, which is down"), "{message}");

    // kill -STOP the leader past its lease: the other takes over; after
    // kill -CONT the paused one has stopped leading, and no beat of its
    // generation lands after the new one's.
    let (paused, other, other_name) = if leader_2 == "b" {
        (&b, &c, "c")
    } else {
        (&c, &b, "b")
    };
    signal(paused, nix::sys::signal::Signal::SIGSTOP);
    let third = until(other, "the other leads", |v| {
        v["role"] == "leader" && v["generation"].as_i64() > Some(gen_2)
    })
    .await;
    let gen_3 = third["generation"].as_i64().expect("generation");
    until(other, "its beat", |v| {
        v["leader_beat"]["generation"].as_i64() == Some(gen_3)
    })
    .await;
    signal(paused, nix::sys::signal::Signal::SIGCONT);
    for _ in 0..60 {
        let v = view(other).await;
        assert_eq!(
            v["leader_beat"]["generation"].as_i64(),
            Some(gen_3),
            "a deposed leader's beat landed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejoined = until(paused, "the paused one follows", |v| {
        v["role"] == "follower" && v["generation"].as_i64() == Some(gen_3)
    })
    .await;
    assert_eq!(rejoined["leader"], other_name);
    drop(client);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_members_lost_clients_still_served_writes_refused_then_resumed() {
    // etcd unreachable at start: a clear error, no gateway.
    let dir = shared_tempdir();
    let refused = Gateway::start_in(
        &dir.path().join("data"),
        &[
            ("OGEL_CLUSTER__ETCD", "[\"http://127.0.0.1:9\"]"),
            ("OGEL_CLUSTER__NODE_NAME", "lonely"),
        ],
    )
    .await;
    assert!(refused.is_err(), "a gateway started without etcd");
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    assert!(log.contains("not reachable"), "{log}");

    let mut etcd = EtcdCluster::start(3).await;
    let gw = start(&etcd, "solo").await;
    until(&gw, "solo leads", |v| v["role"] == "leader").await;
    let url = gw.create_db("ledger", Some(0)).await;
    let client = connect(&url).await.expect("ledger");
    client
        .batch_execute("CREATE TABLE entries (v int)")
        .await
        .unwrap();

    // One member of three lost: everything goes on.
    etcd.kill(0);
    assert!(
        creates(&gw, "second", Duration::from_secs(15)).await,
        "creating a database with 2 of 3 etcd members failed"
    );

    // Two lost: no quorum. Clients of running computes are served (also
    // new ones); control-plane writes fail with a clear error, no hang.
    etcd.kill(1);
    client
        .batch_execute("INSERT INTO entries VALUES (1)")
        .await
        .expect("an open client is served without etcd");
    let fresh = connect(&url)
        .await
        .expect("a new client is served without etcd");
    fresh
        .batch_execute("INSERT INTO entries VALUES (2)")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "third"})),
        )
        .await;
    assert!(status >= 500, "{status} {body}");
    assert!(
        body.to_string().contains("etcd"),
        "the error names etcd: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refused write took {:?}",
        started.elapsed()
    );
    until(&gw, "isolated", |v| {
        v["role"] == "isolated" && v["etcd_reachable"] == false
    })
    .await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("ogel_cluster_isolated{node=\"solo\"} 1")
            && metrics.contains("ogel_cluster_etcd_reachable{node=\"solo\"} 0"),
        "{metrics}"
    );

    // Back: it leads again and writes work.
    etcd.restart(0).await;
    etcd.restart(1).await;
    until(&gw, "leads again", |v| v["role"] == "leader").await;
    assert!(
        creates(&gw, "third", Duration::from_secs(30)).await,
        "writes did not resume once etcd was back"
    );
    let n: i64 = fresh
        .query_one("SELECT count(*) FROM entries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

/// `ogel cluster import`: a single gateway's catalog moves into etcd once,
/// and the gateway, started again in the cluster, serves what it had.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_gateway_is_imported_into_the_cluster() {
    let etcd = EtcdCluster::start(3).await;
    let mut solo = Gateway::start().await;
    let url = solo.create_db("ledger", Some(0)).await;
    let c = connect(&url).await.expect("ledger");
    c.batch_execute("CREATE TABLE entries AS SELECT 7 AS v")
        .await
        .unwrap();
    drop(c);
    // The data dir outlives the first gateway: the second runs on it.
    let _dir = solo.take_dir();
    solo.stop();
    let endpoints = etcd.endpoints().join(",");
    let import = |node: &str| {
        std::process::Command::new(ogel_e2e::ogel_bin())
            .args(["--data-dir"])
            .arg(&solo.data_dir)
            .args([
                "cluster",
                "import",
                "--etcd",
                &endpoints,
                "--node-name",
                node,
            ])
            .output()
            .expect("ogel cluster import")
    };
    let out = import("solo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only once: a second import into the same prefix is refused.
    let again = import("solo");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a catalog"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let env = cluster_env(&etcd, "solo");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let joined = Gateway::start_in(&solo.data_dir, &env)
        .await
        .expect("the imported gateway joins");
    let (_, record) = joined.api("GET", "/v1/databases/ledger", None).await;
    assert_eq!(record["node"], "solo", "{record}");
    let password = ogel_e2e::password_of(&url).to_string();
    let n: i32 = connect(&format!(
        "postgresql://ledger_owner:{password}@{}/ledger",
        joined.pg_addr
    ))
    .await
    .expect("the imported database is served")
    .query_one("SELECT v FROM entries", &[])
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, 7);
}
