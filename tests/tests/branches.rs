//! Branches and snapshots on the native backend, end to end: isolation,
//! the two ways to reach a branch, point-in-time branches, reset, delete,
//! snapshots with checksummed manifests (and a corrupted one refused), and
//! TTLs that hold across a restart.

use ogel_e2e::{connect, eventually, sqlstate, Gateway};
use std::time::Duration;

async fn count(url: &str, table: &str) -> i64 {
    let client = connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn exec(url: &str, sql: &str) {
    let client = connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
#[tokio::test]
async fn branches_are_isolated_and_reached_by_name_or_option() {
    let gw = Gateway::start().await;
    let main = gw.app_url.clone();
    exec(
        &main,
        "CREATE TABLE items (n int); INSERT INTO items VALUES (1), (2)",
    )
    .await;
    let printed = gw.cli_ok(&["branch", "create", "app", "dev"]);
    assert!(printed.trim().ends_with("/app@dev"), "{printed}");
    gw.cli_ok(&["branch", "create", "app", "other"]);

    let dev = format!("{main}@dev");
    let other = format!("{main}?options=branch%3Dother");
    assert_eq!(
        count(&dev, "items").await,
        2,
        "a branch starts as its parent"
    );
    exec(&dev, "INSERT INTO items VALUES (3)").await;
    exec(&main, "INSERT INTO items VALUES (10), (11)").await;
    exec(&other, "DELETE FROM items").await;
    assert_eq!(count(&dev, "items").await, 3);
    assert_eq!(
        count(&main, "items").await,
        4,
        "writes on a branch never reach its parent"
    );
    assert_eq!(count(&other, "items").await, 0, "nor its siblings");

    // psql with the URL form.
    let out = std::process::Command::new("psql")
        .args([&dev, "-Atc", "SELECT count(*) FROM items"])
        .output()
        .expect("psql installed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let err = connect(&format!("{main}@nope")).await.unwrap_err();
    assert_eq!(sqlstate(&err), "3D000");
    let err = connect(&format!("{main}@dev?options=branch%3Dother"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "08P01", "name and option must agree");

    let (status, list) = gw.api("GET", "/v1/databases/app/branches", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "dev", "other"]);
    let listed = gw.cli_ok(&["branch", "list", "app"]);
    assert!(
        listed.contains("dev") && listed.contains("other"),
        "{listed}"
    );

    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/app/branches",
            Some(serde_json::json!({"name": "dev"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/app/branches",
            Some(serde_json::json!({"name": "x", "parent": "nope"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/app/branches",
            Some(serde_json::json!({"name": "Bad Name"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // A branch of a branch.
    gw.cli_ok(&["branch", "create", "app", "dev2", "--from", "dev"]);
    assert_eq!(count(&format!("{main}@dev2"), "items").await, 3);
}

#[tokio::test]
async fn point_in_time_branches_hold_exactly_what_was_committed_before() {
    let gw = Gateway::start().await;
    let main = gw.app_url.clone();
    let client = connect(&main).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE events (n int); INSERT INTO events SELECT generate_series(1, 100)",
        )
        .await
        .unwrap();
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let at: String = client
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .batch_execute("INSERT INTO events SELECT generate_series(101, 250)")
        .await
        .unwrap();

    gw.cli_ok(&["branch", "create", "app", "by-lsn", "--at", &lsn]);
    assert_eq!(
        count(&format!("{main}@by-lsn"), "events").await,
        100,
        "at {lsn}"
    );
    gw.cli_ok(&["branch", "create", "app", "by-time", "--at", &at]);
    assert_eq!(
        count(&format!("{main}@by-time"), "events").await,
        100,
        "at {at}"
    );
    assert_eq!(count(&main, "events").await, 250);
    // The branch is writable (promoted).
    exec(&format!("{main}@by-lsn"), "INSERT INTO events VALUES (0)").await;

    // A point the WAL never reached: a clear error, nothing left behind.
    let out = gw.cli(&["branch", "create", "app", "future", "--at", "FF/FFFFFFF0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not be brought to that point"),
        "{stderr}"
    );
    let (_, list) = gw.api("GET", "/v1/databases/app/branches", None).await;
    assert!(!list.to_string().contains("future"), "{list}");
    assert!(!gw.data_dir.join("native/databases/app@future").exists());
    // Before the database existed: no snapshot to start from.
    let out = gw.cli(&[
        "branch",
        "create",
        "app",
        "ancient",
        "--at",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no snapshot from before"));
}

#[tokio::test]
async fn reset_and_delete() {
    let gw = Gateway::start().await;
    let main = gw.app_url.clone();
    exec(&main, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)").await;
    gw.cli_ok(&["branch", "create", "app", "dev"]);
    let dev = format!("{main}@dev");
    exec(&dev, "INSERT INTO t VALUES (2), (3)").await;
    exec(&main, "INSERT INTO t VALUES (4)").await;
    let held = connect(&dev).await.unwrap();
    gw.cli_ok(&["branch", "reset", "app", "dev"]);
    assert_eq!(
        count(&dev, "t").await,
        2,
        "reset to the parent as it is now"
    );
    drop(held);

    gw.cli_ok(&["branch", "delete", "app", "dev"]);
    assert_eq!(sqlstate(&connect(&dev).await.unwrap_err()), "3D000");
    assert!(!gw.data_dir.join("native/databases/app@dev").exists());
    let (_, snapshots) = gw.api("GET", "/v1/databases/app/snapshots", None).await;
    assert!(
        snapshots
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["branch"] != "dev"),
        "a deleted branch's base snapshots go with it: {snapshots}"
    );
    let (status, _) = gw
        .api("DELETE", "/v1/databases/app/branches/dev", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .api("DELETE", "/v1/databases/app/branches/main", None)
        .await;
    assert_eq!(status, 400);

    // Deleting a database deletes its branches.
    let shop = gw.create_db("shop", None).await;
    exec(&shop, "SELECT 1").await;
    gw.cli_ok(&["branch", "create", "shop", "preview"]);
    gw.cli_ok(&["db", "delete", "shop"]);
    assert!(!gw.data_dir.join("native/databases/shop@preview").exists());
    assert!(!gw.data_dir.join("native/snapshots/shop").exists());
}

#[tokio::test]
async fn snapshots_restore_and_a_corrupted_one_is_refused() {
    let gw = Gateway::start().await;
    let main = gw.app_url.clone();
    exec(
        &main,
        "CREATE TABLE s (n int); INSERT INTO s VALUES (1), (2)",
    )
    .await;
    let id = gw.cli_ok(&["snapshot", "create", "app"]).trim().to_string();
    exec(&main, "INSERT INTO s VALUES (3)").await;
    let listed = gw.cli_ok(&["snapshot", "list", "app"]);
    assert!(listed.contains(&id), "{listed}");

    // As a new branch, and in place.
    gw.cli_ok(&["snapshot", "restore", "app", &id, "--as", "restored"]);
    assert_eq!(count(&format!("{main}@restored"), "s").await, 2);
    gw.cli_ok(&["branch", "create", "app", "from-snap", "--snapshot", &id]);
    assert_eq!(count(&format!("{main}@from-snap"), "s").await, 2);
    gw.cli_ok(&["snapshot", "restore", "app", &id]);
    assert_eq!(count(&main, "s").await, 2, "main is back to the snapshot");
    exec(&main, "INSERT INTO s VALUES (4), (5), (6)").await;

    // One changed byte in the snapshot: refused, and main stays as it is.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(gw.data_dir.join(format!("native/snapshots/app/{id}.json"))).unwrap(),
    )
    .unwrap();
    let victim = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["path"].as_str().unwrap().starts_with("base/") && f["size"].as_u64().unwrap() > 0
        })
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let path = gw
        .data_dir
        .join(format!("native/snapshots/app/{id}/pgdata/{victim}"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out = gw.cli(&["snapshot", "restore", "app", &id]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corrupted") && stderr.contains(&victim),
        "{stderr}"
    );
    assert_eq!(
        count(&main, "s").await,
        5,
        "the branch stays on its last good state"
    );
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/app/branches",
            Some(serde_json::json!({"name": "bad", "snapshot": id})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = gw
        .api("POST", "/v1/databases/app/snapshots/nope/restore", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn branches_with_a_ttl_are_deleted_also_across_a_restart() {
    let mut gw = Gateway::start().await;
    exec(&gw.app_url, "SELECT 1").await;
    gw.cli_ok(&["branch", "create", "app", "short", "--ttl", "1s"]);
    gw.cli_ok(&["branch", "create", "app", "kept"]);
    let dir = gw.data_dir.clone();
    let gone = |name: &'static str| {
        let dir = dir.clone();
        move || {
            let dir = dir.clone();
            async move { !dir.join(format!("native/databases/app@{name}")).exists() }
        }
    };
    assert!(
        eventually(Duration::from_secs(30), gone("short")).await,
        "expired branch deleted"
    );
    // Made last and the gateway stopped at once: it expires while the
    // gateway is down, and must go after the restart.
    gw.cli_ok(&["branch", "create", "app", "later", "--ttl", "8s"]);
    let data_dir = gw.data_dir.clone();
    let _dir = gw.take_dir();
    gw.stop();
    assert!(dir.join("native/databases/app@later").exists());
    tokio::time::sleep(Duration::from_secs(9)).await;
    let gw = Gateway::start_in(&data_dir, &[]).await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), gone("later")).await,
        "expired while stopped: deleted at start"
    );
    let listed = || async {
        let (_, list) = gw.api("GET", "/v1/databases/app/branches", None).await;
        let names: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect();
        names == ["main", "kept"]
    };
    assert!(
        eventually(Duration::from_secs(10), listed).await,
        "the catalog forgets them too"
    );
}

#[tokio::test]
async fn a_long_branch_copy_reports_its_progress() {
    let gw = Gateway::start().await;
    exec(
        &gw.app_url,
        "CREATE TABLE big AS SELECT g, repeat('x', 900) AS pad FROM generate_series(1, 150000) g",
    )
    .await;
    let api = gw.api.clone();
    let token = gw.token.clone();
    let create = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{api}/v1/databases/app/branches"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "copy"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let mut seen = Vec::new();
    while !create.is_finished() {
        let (status, ops) = gw.api("GET", "/v1/operations", None).await;
        assert_eq!(status, 200);
        for op in ops.as_array().unwrap() {
            if op["compute"] == "app@copy" && op["total_bytes"].as_u64().unwrap_or(0) > 0 {
                seen.push((
                    op["done_bytes"].as_u64().unwrap(),
                    op["total_bytes"].as_u64().unwrap(),
                ));
                assert_eq!(op["kind"], "create branch");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(create.await.unwrap().unwrap(), 201);
    assert!(
        !seen.is_empty(),
        "the copy's progress was reported while it ran"
    );
    assert!(
        seen.iter()
            .all(|(done, total)| done <= total && *total > 100_000_000),
        "{seen:?}"
    );
    let (_, ops) = gw.api("GET", "/v1/operations", None).await;
    assert_eq!(ops, serde_json::json!([]), "nothing listed once done");
}
