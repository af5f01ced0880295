//! Hot, warm and cold tiers: a database moves down (by hand or by the
//! `[tiers]` policy), leaves local disk, and a connection brings it back
//! with every row; a gateway killed at any step of a move leaves the
//! database whole in at least one tier, and the next start finishes or
//! undoes the move. Real gateways and PostgreSQL 15; the cold tier is a
//! local directory.

use ogel_e2e::{connect, shared_tempdir, Gateway};
use std::path::Path;
use std::time::Duration;

fn env_for(cold: &Path) -> Vec<(&str, &str)> {
    vec![
        ("OGEL_COLD__DIR", cold.to_str().unwrap()),
        ("OGEL_COLD__ARCHIVE_TIMEOUT", "1s"),
    ]
}

async fn tier(gw: &Gateway, db: &str) -> String {
    let (status, body) = gw
        .api("GET", &format!("/v1/databases/{db}/tier"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["tier"].as_str().unwrap_or("-").to_string()
}

fn move_to(gw: &Gateway, db: &str, to: &str) -> std::process::Output {
    gw.cli(&["db", "tier", db, to])
}

fn move_ok(gw: &Gateway, db: &str, to: &str) {
    let out = move_to(gw, db, to);
    assert!(
        out.status.success(),
        "ogel db tier {db} {to}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn rows(url: &str) -> i64 {
    let c = connect(url).await.expect("connect");
    c.query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0)
}

fn volume(gw: &Gateway, db: &str) -> std::path::PathBuf {
    gw.data_dir.join("native/databases").join(db)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_goes_warm_then_cold_and_a_connection_brings_it_back() {
    let cold = shared_tempdir();
    let gw = Gateway::start_with(&env_for(cold.path())).await;
    let url = gw.create_db("shelf", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 20000) AS n")
        .await
        .unwrap();
    drop(c);
    assert_eq!(tier(&gw, "shelf").await, "hot");

    move_ok(&gw, "shelf", "warm");
    assert_eq!(tier(&gw, "shelf").await, "warm");
    assert!(!volume(&gw, "shelf").exists(), "the hot copy is gone");
    let warm = gw.data_dir.join("native/warm/shelf.tar.zst");
    assert!(warm.exists(), "a compressed local copy");
    // A client connects and waits while it comes back.
    assert_eq!(rows(&url).await, 20000);
    assert_eq!(tier(&gw, "shelf").await, "hot");
    assert!(!warm.exists());

    let c = connect(&url).await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (20001)")
        .await
        .unwrap();
    drop(c);
    move_ok(&gw, "shelf", "cold");
    assert_eq!(tier(&gw, "shelf").await, "cold");
    assert!(!volume(&gw, "shelf").exists(), "nothing local");
    let snapshots = gw.data_dir.join("native/snapshots/shelf");
    let local: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|e| e.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        local.is_empty(),
        "no local snapshot keeps a copy: {local:?}"
    );
    let status = String::from_utf8_lossy(&gw.cli(&["status"]).stdout).to_string();
    assert!(status.contains("shelf"), "{status}");
    assert_eq!(rows(&url).await, 20001);
    assert_eq!(tier(&gw, "shelf").await, "hot");
    // Still a database with branches and backups after the trip.
    let out = gw.cli(&["branch", "create", "shelf", "copy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown tier is a clear error.
    let bad = move_to(&gw, "shelf", "lukewarm");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("hot, warm or cold"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_moves_idle_databases_down_each_by_its_own_rule() {
    let cold = shared_tempdir();
    let mut env = env_for(cold.path());
    // Per database: "idle" goes warm after 2 s, "frozen" cold after 3 s;
    // the default database has no rule and stays hot.
    env.push(("OGEL_TIERS__DATABASES__IDLE__WARM_AFTER", "2s"));
    env.push(("OGEL_TIERS__DATABASES__FROZEN__COLD_AFTER", "3s"));
    let gw = Gateway::start_with(&env).await;
    let mut urls = Vec::new();
    for db in ["idle", "frozen"] {
        let url = gw.create_db(db, Some(1)).await;
        let c = connect(&url).await.unwrap();
        c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 500) AS n")
            .await
            .unwrap();
        urls.push(url);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut tiers = (String::new(), String::new());
    while std::time::Instant::now() < deadline {
        tiers = (tier(&gw, "idle").await, tier(&gw, "frozen").await);
        if tiers == ("warm".to_string(), "cold".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(tiers, ("warm".to_string(), "cold".to_string()));
    assert_eq!(tier(&gw, "app").await, "hot");
    // Each comes back on connect, with its rows.
    for (db, url) in ["idle", "frozen"].iter().zip(&urls) {
        assert_eq!(rows(url).await, 500, "{db}");
        assert_eq!(tier(&gw, db).await, "hot", "{db}");
    }
}

/// Every step of every move at which the gateway may die.
const STEPS: [(&str, &str, &str); 6] = [
    // (crash step, from, to)
    ("warm:packed", "hot", "warm"),
    ("warm:marked", "hot", "warm"),
    ("cold:backed-up", "hot", "cold"),
    ("cold:marked", "hot", "cold"),
    ("back:unpacked", "warm", "hot"),
    ("back:placed", "cold", "hot"),
];

/// `url` pointed at the gateway listening on `addr`.
use ogel_e2e::url_at as at;

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_at_any_step_of_a_tier_move_loses_nothing() {
    let cold = shared_tempdir();
    let env = env_for(cold.path());
    let mut gw = Gateway::start_with(&env).await;
    let dir = gw.take_dir().expect("temp dir");
    let data_dir = gw.data_dir.clone();
    let url = gw.create_db("sturdy", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 3000) AS n")
        .await
        .unwrap();
    drop(c);
    // Each round adds a row after checking the ones before it.
    for (expected, (step, from, to)) in (3000..).zip(STEPS) {
        // Bring it to `from`, on a gateway without the crash.
        if tier(&gw, "sturdy").await != from {
            move_ok(&gw, "sturdy", from);
        }
        gw.stop();
        let mut crashing = env.clone();
        crashing.push(("OGEL_TEST_CRASH_AT", step));
        let mut doomed = Gateway::start_in(&data_dir, &crashing).await.unwrap();
        if to == "hot" {
            // A connection brings it back, and the gateway dies midway.
            let died = connect(&at(&url, &doomed.pg_addr)).await.is_err();
            assert!(died, "{step}: the gateway should have died");
        } else {
            let out = move_to(&doomed, "sturdy", to);
            assert!(
                !out.status.success(),
                "{step}: the gateway should have died"
            );
        }
        doomed.kill9();
        // The next start finishes or undoes the move; nothing is lost.
        gw = Gateway::start_in(&data_dir, &env).await.unwrap();
        let now = tier(&gw, "sturdy").await;
        assert!(
            now == from || now == to,
            "{step}: tier {now}, expected {from} or {to}"
        );
        let here = at(&url, &gw.pg_addr);
        assert_eq!(rows(&here).await, expected, "{step}: rows after restart");
        let c = connect(&here).await.unwrap();
        c.batch_execute("INSERT INTO t VALUES (0)").await.unwrap();
        drop(c);
        // The new row reaches the cold tier before the next move to cold.
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    drop(gw);
    ogel_e2e::kill_postgres_under(&data_dir);
    drop(dir);
}
