//! The Postgres wire protocol through the gateway with real clients:
//! tokio-postgres, psql, pgbench, and raw hostile bytes.

use futures_util::{SinkExt, StreamExt};
use ogel_e2e::{connect, sqlstate, with_password, Gateway};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn simple_and_extended_queries_and_rollback() {
    let gw = Gateway::start().await;
    let client = connect(&gw.app_url)
        .await
        .expect("connect through the gateway");
    let rows = client
        .simple_query("SELECT 1; SELECT current_user")
        .await
        .unwrap();
    assert!(rows.len() >= 2);
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO items VALUES ($1, $2)")
        .await
        .unwrap();
    for i in 0..10 {
        client
            .execute(&insert, &[&i, &format!("item {i}")])
            .await
            .unwrap();
    }
    let row = client
        .query_one("SELECT name FROM items WHERE id = $1", &[&7i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "item 7");

    client
        .batch_execute("BEGIN; INSERT INTO items VALUES (100, 'doomed');")
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 10, "the rolled-back row must not exist");
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "app_owner");
    // A statement error is the compute's, and the session goes on.
    let err = client
        .simple_query("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
    assert_eq!(
        client
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn copy_in_and_out() {
    let gw = Gateway::start().await;
    let client = connect(&gw.app_url).await.unwrap();
    client
        .batch_execute("CREATE TABLE c (a int, b text)")
        .await
        .unwrap();
    let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
    let mut sink = Box::pin(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\tline {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone())).await.unwrap();
    let copied = sink.as_mut().finish().await.unwrap();
    assert_eq!(copied, 5000);
    let stream = client
        .copy_out("COPY (SELECT * FROM c ORDER BY a) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<_> = stream.collect().await;
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(out).unwrap(), data);
}

#[tokio::test]
async fn a_100_mb_result_arrives_whole() {
    let gw = Gateway::start().await;
    let client = connect(&gw.app_url).await.unwrap();
    let stream = client
        .copy_out("COPY (SELECT repeat('x', 1000) FROM generate_series(1, 102400)) TO STDOUT")
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.unwrap().len();
    }
    assert_eq!(
        bytes,
        102_400 * 1001,
        "every row (1000 bytes + newline) arrives"
    );
    // And as an ordinary query result.
    let rows = client
        .query(
            "SELECT repeat('y', 1000) FROM generate_series(1, 102400)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 102_400);
}

#[tokio::test]
async fn listen_notify_crosses_the_gateway() {
    let gw = Gateway::start().await;
    let (listener, mut connection) = tokio_postgres::connect(&gw.app_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN events").await.unwrap();
    let notifier = connect(&gw.app_url).await.unwrap();
    notifier
        .batch_execute("NOTIFY events, 'hello'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notification in time");
    assert_eq!(got, Some(("events".to_string(), "hello".to_string())));
}

#[tokio::test]
async fn cancel_really_cancels_pg_sleep() {
    let gw = Gateway::start().await;
    let client = connect(&gw.app_url).await.unwrap();
    let token = client.cancel_token();
    let started = Instant::now();
    let mut sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    // Cancel until the query ends: a cancel that arrives before the query
    // starts is (as in Postgres) a no-op, so one attempt could race.
    let result = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel sent through the gateway");
        if let Ok(done) = tokio::time::timeout(Duration::from_secs(2), &mut sleeper).await {
            break done.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cancel never took effect"
        );
    };
    let err = result.expect_err("the sleep must be cancelled");
    assert_eq!(sqlstate(&err), "57014", "query_canceled");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn wrong_password_unknown_database_and_unknown_user() {
    let gw = Gateway::start().await;
    let err = connect(&with_password(&gw.app_url, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28P01");
    let unknown_db = gw.app_url.replace("/app", "/nosuchdb");
    let err = connect(&unknown_db).await.unwrap_err();
    assert_eq!(sqlstate(&err), "3D000");
    let unknown_user = gw.app_url.replace("app_owner", "mallory");
    let err = connect(&unknown_user).await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "28P01",
        "unknown users fail exactly like wrong passwords"
    );
    // The owner of one database cannot log in to another.
    let shop = gw.create_db("shop", None).await;
    let password = shop
        .split(':')
        .nth(2)
        .and_then(|s| s.split('@').next())
        .unwrap();
    let cross = format!("postgresql://shop_owner:{password}@{}/app", gw.pg_addr);
    assert_eq!(sqlstate(&connect(&cross).await.unwrap_err()), "28P01");
    connect(&shop).await.expect("shop's owner reaches shop");
}

/// Reads what the gateway answers to `bytes` until it closes (bounded).
async fn answer_to(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn garbage_bytes_get_08p01_and_others_are_unaffected() {
    let gw = Gateway::start().await;
    let bystander = connect(&gw.app_url).await.unwrap();
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 64],
        vec![0x00, 0x00, 0x00, 0x08, 0x12, 0x34, 0x56, 0x78],
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        // A valid startup, then garbage where the SASL response belongs.
        {
            let mut v = Vec::new();
            let body = b"\0\x03\0\0user\0app_owner\0database\0app\0\0";
            v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            v.extend_from_slice(body);
            v.extend_from_slice(b"p\0\0\0\x10not-a-sasl-msg");
            v
        },
    ];
    for case in &cases {
        let answer = answer_to(&gw.pg_addr, case).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("C08P01"),
            "expected 08P01 for {case:?}, got {text:?}"
        );
    }
    // Pseudo-random garbage of many lengths: never a crash, never a hang.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 3, 7, 8, 9, 100, 5000, 20000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        answer_to(&gw.pg_addr, &bytes).await;
    }
    // The bystander's session and new sessions still work.
    assert_eq!(
        bystander
            .query_one("SELECT 41 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    let fresh = connect(&gw.app_url)
        .await
        .expect("new clients still served");
    fresh.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn psql_and_pgbench_work_through_the_gateway() {
    let gw = Gateway::start().await;
    let out = std::process::Command::new("psql")
        .arg(&gw.app_url)
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 'psql ' || current_database()",
        ])
        .output()
        .expect("psql installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "psql app");
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-s", "1", "-q"])
        .arg(&gw.app_url)
        .output()
        .expect("pgbench installed");
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = std::process::Command::new("pgbench")
        .args(["-c", "4", "-j", "2", "-T", "3", "-M", "extended"])
        .arg(&gw.app_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
}
