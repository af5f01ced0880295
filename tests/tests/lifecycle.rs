//! Scale to zero, wake on connect, and crash safety, against real computes.

use ogel_e2e::{connect, sqlstate, Gateway};
use std::time::Duration;

#[tokio::test]
async fn suspend_then_connect_wakes_with_data_intact() {
    let gw = Gateway::start().await;
    let url = gw.create_db("shop", Some(0)).await;
    let client = connect(&url).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 1000)",
        )
        .await
        .unwrap();
    drop(client);
    gw.suspend("shop").await;
    let before = gw.db("shop").await;
    assert!(before["compute"]["pid"].is_null(), "{before}");

    let client = connect(&url).await.expect("connect wakes the database");
    let count: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1000, "every committed row survives suspend and wake");
    let after = gw.db("shop").await;
    assert_eq!(after["compute"]["state"], "running");
    assert_eq!(after["compute"]["wakes"], 1);
    assert_eq!(after["compute"]["active_clients"], 1);
}

#[tokio::test]
async fn fifty_clients_on_a_suspended_database_share_one_wake() {
    let gw = Gateway::start().await;
    let url = gw.create_db("busy", Some(0)).await;
    gw.suspend("busy").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = connect(&url).await?;
                let row = client.query_one("SELECT $1::int", &[&i]).await?;
                Ok::<i32, tokio_postgres::Error>(row.get(0))
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(
            task.await.unwrap().expect("every client succeeds"),
            i as i32
        );
    }
    let db = gw.db("busy").await;
    assert_eq!(
        db["compute"]["wakes"], 1,
        "one wake for all 50 clients: {db}"
    );
}

#[tokio::test]
async fn idle_database_suspends_itself_and_wakes_on_connect() {
    let gw = Gateway::start().await;
    let url = gw.create_db("idle", Some(1)).await;
    let client = connect(&url).await.unwrap();
    client
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        .await
        .unwrap();
    // While a client is connected, it does not suspend.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gw.db("idle").await["compute"]["state"], "running");
    drop(client);
    let suspended = ogel_e2e::eventually(Duration::from_secs(15), || async {
        gw.db("idle").await["compute"]["state"] == "suspended"
    })
    .await;
    assert!(
        suspended,
        "no clients for suspend_after (1 s) must suspend the compute"
    );
    let client = connect(&url).await.unwrap();
    let v: String = client
        .query_one("SELECT v FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "still here");
}

#[tokio::test]
async fn a_compute_that_cannot_start_gives_57p03_with_the_reason() {
    let gw = Gateway::start().await;
    let url = gw.create_db("broken", Some(0)).await;
    gw.suspend("broken").await;
    let conf = gw
        .data_dir
        .join("native/databases/broken/pgdata/postgresql.auto.conf");
    std::fs::write(&conf, "shared_buffers = 'not a size'\n").unwrap();
    let err = connect(&url).await.unwrap_err();
    assert_eq!(sqlstate(&err), "57P03");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("could not start"), "{message}");
    assert!(
        message.contains("shared_buffers"),
        "the reason is in the message: {message}"
    );
    // Other databases are unaffected.
    connect(&gw.app_url).await.expect("app still served");
}

#[tokio::test]
async fn kill_9_and_restart_keeps_every_database_and_adopts_computes() {
    let mut gw = Gateway::start().await;
    let shop = gw.create_db("shop", Some(0)).await;
    let cold = gw.create_db("cold", Some(0)).await;
    for url in [&shop, &cold] {
        let c = connect(url).await.unwrap();
        c.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
            .await
            .unwrap();
    }
    gw.suspend("cold").await;
    let pid_before = gw.db("shop").await["compute"]["pid"].clone();
    assert!(pid_before.is_u64());
    let dir = gw.take_dir();
    let data_dir = gw.data_dir.clone();
    gw.kill9();
    drop(gw);

    let gw = Gateway::start_in(&data_dir, &[])
        .await
        .expect("restart on the same data dir");
    let (status, list) = gw.api("GET", "/v1/databases", None).await;
    assert_eq!(status, 200);
    let mut names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["app", "cold", "shop"]);
    let shop_view = gw.db("shop").await;
    assert_eq!(shop_view["compute"]["state"], "running");
    assert_eq!(
        shop_view["compute"]["pid"], pid_before,
        "the running compute was adopted, not restarted"
    );
    // Data intact through the new gateway (ports changed: rebuild URLs).
    for url in [&shop, &cold] {
        let (_, rest) = url.rsplit_once('@').unwrap();
        let db = rest.rsplit_once('/').unwrap().1;
        let url = format!("{}@{}/{db}", url.rsplit_once('@').unwrap().0, gw.pg_addr);
        let c = connect(&url).await.expect("connect after restart");
        let v: i32 = c.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
        assert_eq!(v, 42);
    }
    drop(gw);
    if let Some(dir) = &dir {
        ogel_e2e::kill_postgres_under(dir.path());
    }
}

#[tokio::test]
async fn clean_stop_suspends_every_compute() {
    let mut gw = Gateway::start().await;
    let pid = gw.db("app").await["compute"]["pid"]
        .as_u64()
        .expect("app running after start") as i32;
    gw.stop();
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(!alive, "postgres {pid} must be stopped with the gateway");
}

#[tokio::test]
async fn a_crashed_compute_is_restarted_on_the_next_connect() {
    let gw = Gateway::start().await;
    let url = gw.create_db("crashy", Some(0)).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let pid = gw.db("crashy").await["compute"]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(c);
    let restarted = ogel_e2e::eventually(Duration::from_secs(30), || async {
        match connect(&url).await {
            Ok(c) => c
                .query_one("SELECT v FROM t", &[])
                .await
                .map(|r| r.get::<_, i32>(0) == 7)
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        restarted,
        "a new connection restarts the compute, with the committed row"
    );
    let view = gw.db("crashy").await;
    assert_ne!(
        view["compute"]["pid"].as_u64().unwrap() as i32,
        pid,
        "{view}"
    );
}
