//! The pooler with real clients and real computes: transaction pooling with
//! fewer server connections than clients, prepared statements and session
//! parameters carried across server connections, session-only features,
//! the queue timeout, cancels, PAUSE/RESUME, killed server connections,
//! session mode, the admin console, /metrics and reload.

use ogel_e2e::{connect, eventually, sqlstate, Gateway};
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

/// The first column of each row of an admin-console or simple query.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or_default().to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    rows(client, &format!("SHOW {setting}")).await[0][0].clone()
}

async fn pid(client: &impl tokio_postgres::GenericClient) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// SHOW POOLS row of `db` as (column → value).
async fn pool_row(gw: &Gateway, db: &str) -> std::collections::HashMap<String, String> {
    let admin = gw.admin().await;
    let messages = admin.simple_query("SHOW POOLS").await.unwrap();
    for m in messages {
        if let SimpleQueryMessage::Row(row) = m {
            if row.get(0) == Some(db) {
                return row
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            c.name().to_string(),
                            row.get(i).unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
            }
        }
    }
    panic!("no pool for {db}");
}

#[tokio::test]
async fn pgbench_prepared_with_64_clients_over_4_server_connections() {
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "4")]).await;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", &gw.app_url])
        .output()
        .expect("pgbench installed");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = Command::new("pgbench")
        .args([
            "-M",
            "prepared",
            "-c",
            "64",
            "-j",
            "2",
            "-t",
            "20",
            "-n",
            &gw.app_url,
        ])
        .output()
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "pgbench failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("number of transactions actually processed: 1280/1280"),
        "{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}"
    );
    let pool = pool_row(&gw, "app").await;
    assert_eq!(pool["pool_size"], "4");
    let opened: usize =
        pool["sv_active"].parse::<usize>().unwrap() + pool["sv_idle"].parse::<usize>().unwrap();
    assert!(opened <= 4, "never more than the pool size: {pool:?}");
    let stats = rows(&gw.admin().await, "SHOW STATS").await;
    let xacts: u64 = stats.iter().find(|r| r[0] == "app").unwrap()[1]
        .parse()
        .unwrap();
    assert!(xacts >= 1280, "SHOW STATS counts the transactions: {xacts}");
}

#[tokio::test]
async fn prepared_statements_run_on_whichever_server_connection_is_free() {
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "2")]).await;
    let a = connect(&gw.app_url).await.unwrap();
    let mut b = connect(&gw.app_url).await.unwrap();
    let mut c = connect(&gw.app_url).await.unwrap();
    // Open both server connections.
    let tb = b.transaction().await.unwrap();
    let tc = c.transaction().await.unwrap();
    let (pb, pc) = (pid(&tb).await, pid(&tc).await);
    assert_ne!(pb, pc);
    tb.commit().await.unwrap();
    tc.commit().await.unwrap();

    let statement = a
        .prepare("SELECT pg_backend_pid(), $1::int + 1")
        .await
        .unwrap();
    let mut seen = HashSet::new();
    for i in 0..10 {
        // Every other round, b holds the connection a used last, so a's
        // statement must run on the other one.
        let hold = if i % 2 == 0 {
            Some(b.transaction().await.unwrap())
        } else {
            None
        };
        if let Some(t) = &hold {
            t.execute("SELECT 1", &[]).await.unwrap();
        }
        let row = a.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(1), i + 1);
        seen.insert(row.get::<_, i32>(0));
        if let Some(t) = hold {
            t.rollback().await.unwrap();
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "the statement ran on both server connections: {seen:?}"
    );

    // A failed prepare is an error at prepare time, and the client goes on.
    let err = a.prepare("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42601");
    // Closing (dropping) a statement and preparing it again works.
    drop(statement);
    let again = a.prepare("SELECT $1::int * 2").await.unwrap();
    assert_eq!(
        a.query_one(&again, &[&21]).await.unwrap().get::<_, i32>(0),
        42
    );
    // Statements inside an explicit transaction.
    let mut a = a;
    let t = a.transaction().await.unwrap();
    let s = t.prepare("SELECT $1::text").await.unwrap();
    assert_eq!(
        t.query_one(&s, &[&"in txn"])
            .await
            .unwrap()
            .get::<_, String>(0),
        "in txn"
    );
    t.commit().await.unwrap();
}

#[tokio::test]
async fn session_parameters_follow_the_client() {
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "1")]).await;
    let a = connect(&gw.app_url).await.unwrap();
    a.batch_execute("CREATE SCHEMA IF NOT EXISTS other; CREATE SCHEMA IF NOT EXISTS third")
        .await
        .unwrap();
    let options_url = format!(
        "{}?options=-c%20work_mem%3D7MB&application_name=with-options",
        gw.app_url
    );
    let b = connect(&options_url).await.unwrap();
    a.batch_execute("SET search_path TO other").await.unwrap();
    a.batch_execute("SET application_name = 'client-a'")
        .await
        .unwrap();
    a.batch_execute("SET statement_timeout = '1234ms'")
        .await
        .unwrap();
    a.batch_execute("SET TIME ZONE 'Asia/Tokyo'").await.unwrap();
    // One server connection: b runs on the very connection a just changed.
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    assert_eq!(show(&b, "application_name").await, "with-options");
    assert_eq!(show(&b, "statement_timeout").await, "0");
    assert_eq!(show(&b, "work_mem").await, "7MB");
    assert_ne!(show(&b, "TimeZone").await, "Asia/Tokyo");
    assert_eq!(show(&a, "search_path").await, "other");
    assert_eq!(show(&a, "application_name").await, "client-a");
    assert_eq!(show(&a, "statement_timeout").await, "1234ms");
    assert_eq!(show(&a, "work_mem").await, "4MB");
    assert_eq!(show(&a, "TimeZone").await, "Asia/Tokyo");
    // A SET rolled back is not carried; RESET is.
    a.batch_execute("BEGIN; SET search_path TO third; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(show(&b, "work_mem").await, "7MB");
    assert_eq!(show(&a, "search_path").await, "other");
    a.batch_execute("RESET statement_timeout").await.unwrap();
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    assert_eq!(show(&a, "statement_timeout").await, "0");
}

#[tokio::test]
async fn session_only_features_keep_the_server_connection_and_are_reset_after() {
    let gw =
        Gateway::start_with(&[("OGEL_POOL__SIZE", "1"), ("OGEL_POOL__QUEUE_TIMEOUT", "2s")]).await;
    let a = connect(&gw.app_url).await.unwrap();
    a.batch_execute("CREATE TEMP TABLE scratch (n int)")
        .await
        .unwrap();
    a.batch_execute("INSERT INTO scratch VALUES (1), (2)")
        .await
        .unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the temp table lives across transactions");
    let clients = rows(&gw.admin().await, "SHOW CLIENTS").await;
    assert!(
        clients.iter().any(|r| r[9] == "temporary tables"),
        "SHOW CLIENTS says why the client is pinned: {clients:?}"
    );
    // The only server connection is pinned: another client waits, then
    // gets a clear error.
    let b = connect(&gw.app_url).await;
    let err = match b {
        Ok(b) => b.simple_query("SELECT 1").await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "53300", "{err}");
    drop(a);
    // The connection was reset (DISCARD ALL) before the next client: the
    // temp table is gone although the backend is the same.
    let mut cleared = false;
    for _ in 0..50 {
        let c = connect(&gw.app_url).await.unwrap();
        match c.simple_query("SELECT count(*) FROM scratch").await {
            Err(e) if sqlstate(&e) == "42P01" => {
                cleared = true;
                break;
            }
            Err(e) if sqlstate(&e) == "53300" => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("the temp table must not survive: {other:?}"),
        }
    }
    assert!(cleared);
}

#[tokio::test]
async fn waiting_too_long_for_a_server_connection_is_53300() {
    let gw = Gateway::start_with(&[
        ("OGEL_POOL__SIZE", "1"),
        ("OGEL_POOL__QUEUE_TIMEOUT", "500ms"),
    ])
    .await;
    let mut a = connect(&gw.app_url).await.unwrap();
    let t = a.transaction().await.unwrap();
    t.execute("SELECT 1", &[]).await.unwrap();
    let b = connect(&gw.app_url).await.unwrap();
    let started = std::time::Instant::now();
    let err = b.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err}");
    let text = format!("{err:?}");
    assert!(text.contains("pool size 1"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    t.commit().await.unwrap();
    let c = connect(&gw.app_url).await.unwrap();
    c.simple_query("SELECT 1").await.expect("free again");
}

/// SHOW CLIENTS states of the clients of `application_name`.
async fn client_states(gw: &Gateway, application_name: &str) -> Vec<String> {
    let admin = gw.admin().await;
    rows(&admin, "SHOW CLIENTS")
        .await
        .into_iter()
        .filter(|row| row[6] == application_name)
        .map(|row| row[3].clone())
        .collect()
}

/// Waits until the clients of `application_name` are in `states`.
async fn wait_for_states(gw: &Gateway, application_name: &str, states: &[&str]) {
    let reached = eventually(Duration::from_secs(10), || async {
        client_states(gw, application_name).await == states
    })
    .await;
    assert!(
        reached,
        "clients of {application_name}: {:?}, expected {states:?}",
        client_states(gw, application_name).await
    );
}

#[tokio::test]
async fn a_parked_client_keeps_its_statements_settings_and_cancel_key() {
    let gw = Gateway::start_with(&[
        ("OGEL_POOL__SIZE", "1"),
        ("OGEL_POOL__PARK_IDLE_AFTER", "200ms"),
    ])
    .await;
    let url = format!("{}?application_name=parker", gw.app_url);
    let client = connect(&url).await.unwrap();
    let statement = client.prepare("SELECT $1::int + 1").await.unwrap();
    client
        .batch_execute("SET search_path TO pg_catalog, public")
        .await
        .unwrap();
    wait_for_states(&gw, "parker", &["parked"]).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("state=\"parked\"} 1"),
        "the parked client is counted:\n{metrics}"
    );

    // Woken by its next message: same statement, same settings.
    let row = client.query_one(&statement, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(show(&client, "search_path").await, "pg_catalog, public");
    assert_eq!(client_states(&gw, "parker").await, ["idle"]);

    // Parked again, its cancel key still reaches the query it runs next.
    wait_for_states(&gw, "parker", &["parked"]).await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (client, result)
    });
    wait_for_states(&gw, "parker", &["active"]).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (client, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled promptly")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");

    // A parked client that hangs up is gone, its seat with it.
    wait_for_states(&gw, "parker", &["parked"]).await;
    drop(statement);
    drop(client);
    wait_for_states(&gw, "parker", &[]).await;
    // And a client of the same pool is served on the one connection.
    let other = connect(&gw.app_url).await.unwrap();
    other.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_cancel_reaches_the_server_connection_running_the_query() {
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "3")]).await;
    let mut busy = connect(&gw.app_url).await.unwrap();
    let t = busy.transaction().await.unwrap();
    t.execute("CREATE TEMP TABLE IF NOT EXISTS x (a int)", &[])
        .await
        .ok();
    let sleeper = connect(&gw.app_url).await.unwrap();
    let token = sleeper.cancel_token();
    let task = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("cancelled promptly")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    // The other client's transaction was not touched.
    t.execute("SELECT 1", &[])
        .await
        .expect("bystander unaffected");
    t.commit().await.unwrap();
}

#[tokio::test]
async fn pause_waits_for_transactions_holds_new_ones_and_resume_releases_them() {
    let gw = Gateway::start().await;
    let mut a = connect(&gw.app_url).await.unwrap();
    a.batch_execute("CREATE TABLE p (n int)").await.unwrap();
    let t = a.transaction().await.unwrap();
    t.execute("INSERT INTO p VALUES (1)", &[]).await.unwrap();

    let api = gw.api.clone();
    let token = gw.token.clone();
    let pause = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{api}/v1/databases/app/pause"))
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE waits for the running transaction"
    );
    t.commit().await.unwrap();
    assert_eq!(pause.await.unwrap().unwrap(), 200);
    assert_eq!(pool_row(&gw, "app").await["paused"], "true");

    let b = connect(&gw.app_url).await.unwrap();
    let held = tokio::spawn(async move {
        b.query_one("SELECT count(*) FROM p", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !held.is_finished(),
        "new transactions are held while paused"
    );
    let out = gw.cli(&["db", "resume", "app"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count.expect("no error for the held client"), 1);
}

#[tokio::test]
async fn a_killed_server_connection_is_replaced_and_only_a_client_mid_transaction_sees_it() {
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "2")]).await;
    let mut killer = connect(&gw.app_url).await.unwrap();
    let victim = connect(&gw.app_url).await.unwrap();

    // Between transactions: the idle connection dies, nobody notices.
    let kt = killer.transaction().await.unwrap();
    let killer_pid = pid(&kt).await;
    let victim_pid = pid(&victim).await;
    assert_ne!(killer_pid, victim_pid);
    kt.execute("SELECT pg_terminate_backend($1)", &[&victim_pid])
        .await
        .unwrap();
    kt.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_pid = pid(&victim).await;
    assert_ne!(
        new_pid, victim_pid,
        "a fresh server connection replaced the killed one"
    );

    // Mid-transaction: the client gets the server's own error.
    let mut victim = victim;
    let vt = victim.transaction().await.unwrap();
    let in_txn = pid(&vt).await;
    let killer2 = connect(&gw.app_url).await.unwrap();
    killer2
        .execute("SELECT pg_terminate_backend($1)", &[&in_txn])
        .await
        .unwrap();
    let err = vt.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err:?}");
    drop(vt);
    let fresh = connect(&gw.app_url).await.unwrap();
    fresh
        .simple_query("SELECT 1")
        .await
        .expect("the pool recovered");
}

#[tokio::test]
async fn session_mode_gives_each_client_its_own_connection_and_resets_it() {
    let gw = Gateway::start_with(&[
        ("OGEL_POOL__MODE", "session"),
        ("OGEL_POOL__SIZE", "1"),
        ("OGEL_POOL__QUEUE_TIMEOUT", "1s"),
    ])
    .await;
    let a = connect(&gw.app_url).await.unwrap();
    a.batch_execute("SET work_mem = '9MB'; PREPARE q AS SELECT 1")
        .await
        .unwrap();
    let b = connect(&gw.app_url).await.unwrap();
    let err = b.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "53300",
        "the one connection belongs to a: {err}"
    );
    let a_pid = pid(&a).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = connect(&gw.app_url).await.unwrap();
    assert_eq!(pid(&c).await, a_pid, "the same server connection, reused");
    assert_eq!(show(&c, "work_mem").await, "4MB", "reset before reuse");
    let err = c.simple_query("EXECUTE q").await.unwrap_err();
    assert_eq!(sqlstate(&err), "26000", "prepared statements discarded");
    assert_eq!(pool_row(&gw, "app").await["pool_mode"], "session");
}

#[tokio::test]
async fn admin_console_and_metrics() {
    let gw = Gateway::start().await;
    let app = connect(&gw.app_url).await.unwrap();
    app.batch_execute("SELECT 1; SELECT 2").await.unwrap();
    let admin = gw.admin().await;
    let pools = rows(&admin, "SHOW POOLS").await;
    assert!(
        pools.iter().any(|r| r[0] == "app" && r[1] == "transaction"),
        "{pools:?}"
    );
    let clients = rows(&admin, "SHOW CLIENTS").await;
    assert!(
        clients.iter().any(|r| r[1] == "app_owner" && r[2] == "app"),
        "{clients:?}"
    );
    let servers = rows(&admin, "show servers;").await;
    assert!(!servers.is_empty());
    assert!(rows(&admin, "SHOW HELP").await.len() >= 7);
    let err = admin.simple_query("SHOW NONSENSE").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42601");
    let err = admin.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "0A000", "extended protocol refused clearly");
    admin
        .simple_query("SHOW STATS")
        .await
        .expect("still usable");

    let wrong = format!("postgresql://ogel:wrong@{}/ogel", gw.pg_addr);
    let err = connect(&wrong).await.unwrap_err();
    assert_eq!(sqlstate(&err), "28P01");
    // A database role is not an admin.
    let as_app = gw.app_url.replace("/app", "/ogel");
    assert_eq!(sqlstate(&connect(&as_app).await.unwrap_err()), "28P01");

    let metrics = gw.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ogel_transactions_total{database=\"app\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1, "{line}");
    assert!(metrics.contains("ogel_wait_seconds_bucket{database=\"app\",le=\"+Inf\"}"));
    assert!(metrics.contains("ogel_clients{database=\"app\",state=\"idle\"}"));
}

#[tokio::test]
async fn reload_resizes_pools_without_dropping_clients() {
    let mut gw = Gateway::start_with_config("[pool]\nsize = 2\n").await;
    let client = connect(&gw.app_url).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(pool_row(&gw, "app").await["pool_size"], "2");

    std::fs::write(Gateway::config_path(&gw.data_dir), "[pool]\nsize = 5\n").unwrap();
    let out = gw.cli(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pool_row(&gw, "app").await["pool_size"], "5");
    client
        .simple_query("SELECT 1")
        .await
        .expect("the client kept its connection");

    std::fs::write(Gateway::config_path(&gw.data_dir), "[pool]\nsize = 7\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gw.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let mut size = String::new();
    for _ in 0..50 {
        size = pool_row(&gw, "app").await["pool_size"].clone();
        if size == "7" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(size, "7", "SIGHUP reloads too");

    std::fs::write(
        Gateway::config_path(&gw.data_dir),
        "[pool]\nsize = \"many\"\n",
    )
    .unwrap();
    let out = gw.cli(&["reload"]);
    assert!(!out.status.success(), "a bad file is refused");
    assert_eq!(
        pool_row(&gw, "app").await["pool_size"],
        "7",
        "the old configuration stays"
    );
    client.simple_query("SELECT 1").await.unwrap();
    gw.stop();
}

/// A raw protocol connection (token login: no password exchange).
struct Raw {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn login(addr: &str, token: &str, database: &str) -> Raw {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut params = Vec::new();
        for (k, v) in [("user", token), ("database", database)] {
            params.extend_from_slice(k.as_bytes());
            params.push(0);
            params.extend_from_slice(v.as_bytes());
            params.push(0);
        }
        params.push(0);
        let mut packet = ((params.len() + 8) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&196_608u32.to_be_bytes());
        packet.extend_from_slice(&params);
        stream.write_all(&packet).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        raw.until(b'Z', Duration::from_secs(10)).await;
        raw
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn query(sql: &str) -> Vec<u8> {
        Raw::message(b'Q', format!("{sql}\0").as_bytes())
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Messages (tag, body) until one with `tag`, or until `timeout`.
    async fn until(&mut self, tag: u8, timeout: Duration) -> Vec<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            while self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() < 1 + len {
                    break;
                }
                let t = self.buf[0];
                let body = self.buf[5..1 + len].to_vec();
                self.buf.drain(..1 + len);
                out.push((t, body));
                if t == tag {
                    return out;
                }
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return out,
            }
        }
    }
}

fn contains(messages: &[(u8, Vec<u8>)], text: &str) -> bool {
    messages
        .iter()
        .any(|(_, body)| body.windows(text.len()).any(|w| w == text.as_bytes()))
}

// Found by bench/fuzz.sh: a Sync sent inside COPY data is ignored by the
// server if the COPY is still running, and answered if the data failed
// first. Miscounted, the pooler thought the connection was free while an
// answer was still coming, and the next client got it.
#[tokio::test]
async fn a_sync_inside_copy_data_never_sends_an_answer_to_another_client() {
    let gw = Gateway::start_with_config("[pool]\nsize = 1\n").await;
    connect(&gw.app_url)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE copy_t (a int, b text)")
        .await
        .unwrap();
    let out = gw.cli(&["db", "url", "app", "--token"]);
    assert!(out.status.success());
    let url = String::from_utf8_lossy(&out.stdout);
    let token = url
        .trim()
        .trim_start_matches("postgresql://")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    for pipelined in [false, true] {
        let mut a = Raw::login(&gw.pg_addr, &token, "app").await;
        let copy = Raw::query("COPY copy_t FROM STDIN");
        let mut rest = Raw::message(b'd', b"not-a-number\tx\n");
        rest.extend(Raw::message(b'S', b""));
        rest.extend(Raw::query("SELECT pg_sleep(1)::text, 'answer-of-a'"));
        if pipelined {
            // Everything before the server's CopyInResponse is seen.
            a.send(&[copy, rest].concat()).await;
        } else {
            a.send(&copy).await;
            let got = a.until(b'G', Duration::from_secs(10)).await;
            assert_eq!(got.last().map(|m| m.0), Some(b'G'), "{pipelined}");
            a.send(&rest).await;
        }
        // B asks while A's slow answer is still coming.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut b = Raw::login(&gw.pg_addr, &token, "app").await;
        b.send(&Raw::query("SELECT 'answer-of-b'")).await;
        let a_got = a.until(b'D', Duration::from_secs(10)).await;
        assert!(
            contains(&a_got, "answer-of-a"),
            "pipelined {pipelined}: A lost its answer: {a_got:?}"
        );
        drop(a);
        let b_got = b.until(b'Z', Duration::from_secs(10)).await;
        assert!(
            !contains(&b_got, "answer-of-a"),
            "pipelined {pipelined}: B got A's answer"
        );
        assert!(
            contains(&b_got, "answer-of-b"),
            "pipelined {pipelined}: {b_got:?}"
        );
    }
}
