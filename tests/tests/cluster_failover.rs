//! A database's standby on another gateway's disk, and the takeover when
//! the primary's gateway dies: real etcd (3 members), two real gateways,
//! real Postgres. `ogel chaos run --scenario kill-gateway` kills the
//! serving gateway with SIGKILL under a writer; the standby's gateway takes
//! the database over, nothing acknowledged is lost, clients are served
//! through the survivor, and the old gateway, back, fences its old primary
//! and becomes the new standby. A gateway paused past its lease (as a
//! partition from etcd would cut it off) takes no write after the
//! takeover: its commits wait for a standby that no longer follows it,
//! and it fences its copy when it wakes.

use ogel_e2e::etcd::EtcdCluster;
use ogel_e2e::{connect, eventually, Gateway};
use serde_json::Value;
use std::time::Duration;

async fn start_in(etcd: &EtcdCluster, node: &str, dir: Option<&std::path::Path>) -> Gateway {
    start_with(etcd, node, dir, &[]).await
}

/// A gateway named `node` (on `dir`, or a fresh one) with `extra`
/// environment; a restart waits until the name's old lease is gone.
async fn start_with(
    etcd: &EtcdCluster,
    node: &str,
    dir: Option<&std::path::Path>,
    extra: &[(&str, &str)],
) -> Gateway {
    let mut env = etcd.gateway_env(node, Duration::from_secs(2));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let Some(dir) = dir else {
        return Gateway::start_with(&env).await;
    };
    let started = std::time::Instant::now();
    loop {
        match Gateway::start_in(dir, &env).await {
            Ok(gw) => return gw,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("restart of {node} retried: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{node} does not restart: {e}"),
        }
    }
}

async fn standby(gw: &Gateway, db: &str) -> Value {
    let (status, body) = gw
        .api("GET", &format!("/v1/databases/{db}/standby"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Makes database `db` on `gw` with a standby, which goes on gateway
/// `node`, and waits until it is in sync; its URL.
async fn with_standby(gw: &Gateway, db: &str, node: &str) -> String {
    let url = gw.create_db(db, Some(0)).await;
    let (status, body) = gw
        .api(
            "POST",
            &format!("/v1/databases/{db}/standby"),
            Some(serde_json::json!({"count": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    in_sync_on(gw, db, node).await;
    url
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

/// The tests share 2 cores: one cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two gateways on one etcd, both seen by each other.
async fn pair(etcd: &EtcdCluster) -> (Gateway, Gateway) {
    let a = start_in(etcd, "a", None).await;
    let b = start_in(etcd, "b", None).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let (_, v) = b.api("GET", "/v1/cluster", None).await;
            v["nodes"].as_array().is_some_and(|n| n.len() == 2)
        })
        .await,
        "b sees both gateways"
    );
    (a, b)
}

fn signal(gw: &Gateway, sig: nix::sys::signal::Signal) {
    let pid = gw.pid() as i32;
    assert!(pid > 0, "the gateway runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal");
}

/// A primary that keeps crashing (a trend the health model reads) is
/// switched over to its standby on another gateway before it fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_primary_moves_to_its_standby_on_another_gateway() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(3).await;
    let (a, b) = pair(&etcd).await;
    let url = with_standby(&a, "flaky", "b").await;
    let client = connect(&url).await.expect("flaky on a");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 20)")
        .await
        .expect("acknowledged");
    drop(client);
    assert!(
        eventually(Duration::from_secs(20), || async {
            standby(&a, "flaky").await["health"].is_object()
        })
        .await,
        "the health model does not look at it: {}",
        standby(&a, "flaky").await
    );
    // One crash, two: noted, not acted on (noise until it is a trend).
    let crash = || async {
        let postmaster = a.db("flaky").await["compute"]["pid"]
            .as_u64()
            .expect("the primary runs") as u32;
        ogel_e2e::crash_restart(postmaster);
    };
    for seen in 1..=2u64 {
        crash().await;
        assert!(
            eventually(Duration::from_secs(30), || async {
                standby(&a, "flaky").await["health"]["restarts"].as_u64() == Some(seen)
            })
            .await,
            "crash {seen} was not seen: {}",
            standby(&a, "flaky").await
        );
        assert_eq!(
            a.db("flaky").await["node"],
            "a",
            "moved after {seen} crash(es)"
        );
    }
    // The third within the window: the database moves to b.
    crash().await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            let (_, body) = b.api("GET", "/v1/databases/flaky", None).await;
            body["node"] == "b"
        })
        .await,
        "no switchover before failure: {}",
        a.log_tail(30)
    );
    // (Counted once the new gateway serves: the catalog moves first.)
    eventually(Duration::from_secs(30), || async {
        a.metrics()
            .await
            .contains("ogel_preemptive_switchovers_total 1")
    })
    .await;
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("ogel_preemptive_switchovers_total 1"),
        "the metric counts it: {}\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("switchover") || l.contains("failover"))
            .collect::<Vec<_>>()
            .join("\n"),
        b.log_tail(400)
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let client = connect(&url).await.expect("flaky, now on b");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t on b")
        .get(0);
    assert_eq!(n, 20);
    in_sync_on(&b, "flaky", "a").await;
}

/// A primary whose filesystem fills (a loop-mounted one of its own) moves
/// to its standby on another gateway's disk before it is full.
#[tokio::test(flavor = "multi_thread")]
async fn a_filling_disk_moves_the_database_before_it_is_full() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(3).await;
    let fs = ogel_e2e::LoopFs::new("ext4");
    let a = start_with(&etcd, "a", Some(&fs.mnt.join("data")), &[]).await;
    let _reap = Reap(fs.mnt.clone());
    let b = start_in(&etcd, "b", None).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let (_, v) = a.api("GET", "/v1/cluster", None).await;
            v["nodes"].as_array().is_some_and(|n| n.len() == 2)
        })
        .await,
        "a sees both gateways"
    );
    let url = with_standby(&a, "full", "b").await;
    let client = connect(&url).await.expect("full on a");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 30)")
        .await
        .expect("acknowledged");
    drop(client);
    assert!(
        eventually(Duration::from_secs(20), || async {
            standby(&a, "full").await["health"].is_object()
        })
        .await,
        "the health model does not look at it"
    );
    // 80 MiB a second into a balloon file, until the database moves.
    let balloon = fs.mnt.join("balloon");
    let moved = || async {
        let (_, body) = b.api("GET", "/v1/databases/full", None).await;
        body["node"] == "b"
    };
    let mut size = 0u64;
    while !moved().await {
        let stat = nix::sys::statvfs::statvfs(&fs.mnt).expect("statvfs");
        let used = 1.0 - stat.blocks_available() as f64 / stat.blocks() as f64;
        assert!(
            used < 0.97,
            "the disk filled before the switchover: {}",
            standby(&a, "full").await
        );
        size += 40 << 20;
        ogel_e2e::sh(
            std::process::Command::new("fallocate")
                .args(["-l", &size.to_string()])
                .arg(&balloon),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = std::fs::remove_file(&balloon);
    let report = standby(&b, "full").await;
    println!(
        "moved before the disk filled ({} MiB ballooned): {report}",
        size >> 20
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            a.metrics()
                .await
                .contains("ogel_preemptive_switchovers_total 1")
        })
        .await,
        "not counted as a switchover before failure"
    );
    let client = connect(&ogel_e2e::url_at(&url, &b.pg_addr))
        .await
        .expect("full on b");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t on b")
        .get(0);
    assert_eq!(n, 30);
}

/// The standby's gateway killed at each step of a takeover (after the
/// catalog names it, while promoting, promoted, moved into place): started
/// again, it finishes the takeover and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_killed_at_each_step_is_finished_by_the_next_start() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(3).await;
    for (i, step) in [
        "takeover-claimed",
        "remote-promoting",
        "remote-promoted",
        "remote-moved",
    ]
    .into_iter()
    .enumerate()
    {
        let prefix = format!("/crash{i}");
        let env = [("OGEL_CLUSTER__PREFIX", prefix.as_str())];
        let mut a = start_with(&etcd, "a", None, &env).await;
        let crash = [
            ("OGEL_CLUSTER__PREFIX", prefix.as_str()),
            ("OGEL_TEST_CRASH_AT", step),
        ];
        let mut b = start_with(&etcd, "b", None, &crash).await;
        let _reap_a = Reap(a.data_dir.clone());
        let _reap_b = Reap(b.data_dir.clone());
        let url = with_standby(&a, "shop", "b").await;
        let client = connect(&url).await.expect("shop on a");
        client
            .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 50)")
            .await
            .expect("acknowledged");
        drop(client);
        a.kill9();
        // b takes over and dies at the step.
        let b_dir = b.data_dir.clone();
        let b_dir_keep = b.take_dir();
        assert!(
            eventually(Duration::from_secs(30), || async {
                !process_alive(b.pid())
            })
            .await,
            "{step}: b did not reach the crash point: {}",
            b.log_tail(30)
        );
        b.kill9();
        let b = start_with(&etcd, "b", Some(&b_dir), &env).await;
        // b listens on a new port now.
        let url = ogel_e2e::url_at(&url, &b.pg_addr);
        let served = eventually(Duration::from_secs(60), || async {
            match connect(&url).await {
                Ok(c) => c
                    .query_one("SELECT count(*) FROM t", &[])
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) == 50),
                Err(_) => false,
            }
        })
        .await;
        assert!(
            served,
            "{step}: shop not served by b after its restart: {}",
            b.log_tail(40)
        );
        let client = connect(&url).await.expect("shop on b");
        client
            .batch_execute("INSERT INTO t VALUES (51)")
            .await
            .unwrap_or_else(|e| panic!("{step}: b takes writes: {e}"));
        assert_eq!(b.db("shop").await["node"], "b");
        drop(client);
        drop(b);
        drop(b_dir_keep);
        drop(a);
    }
}

fn process_alive(pid: u32) -> bool {
    pid > 0 && alive(pid as i32)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_gateway_takes_no_write_after_its_standby_took_over() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(3).await;
    let (mut a, b) = pair(&etcd).await;
    let url = with_standby(&a, "shop", "b").await;
    // A client of a itself (only a's address): its session stays on a.
    let on_a = ogel_e2e::url_at(&url, &a.pg_addr);
    let client = connect(&on_a).await.expect("shop on a");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .expect("acknowledged");
    let a_dir = a.data_dir.clone();
    let _reap = Reap(a_dir.clone());

    // Paused past its lease: b takes the database over.
    signal(&a, nix::sys::signal::Signal::SIGSTOP);
    // (While a's lease lasts, b forwards this to a, which cannot answer:
    // b answers 503 once a's lease is gone.)
    let taken = eventually(Duration::from_secs(30), || async {
        let (status, body) = b.api("GET", "/v1/databases/shop", None).await;
        status == 200 && body["node"] == "b"
    })
    .await;
    if !taken {
        signal(&a, nix::sys::signal::Signal::SIGCONT);
        panic!("b did not take shop over: {}", b.log_tail(40));
    }
    // Through b (a paused gateway accepts TCP and never answers: a client
    // without connect_timeout would wait on it).
    let through_b = connect(&ogel_e2e::url_at(&url, &b.pg_addr))
        .await
        .expect("shop, now on b");
    through_b
        .batch_execute("INSERT INTO t VALUES (11)")
        .await
        .expect("b takes writes");

    // a wakes: the write its client sends now is never acknowledged.
    signal(&a, nix::sys::signal::Signal::SIGCONT);
    let late = tokio::time::timeout(
        Duration::from_secs(60),
        client.execute("INSERT INTO t VALUES (999)", &[]),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "the old primary acknowledged a write after the takeover"
    );
    let rows: Vec<i32> = through_b
        .query("SELECT v FROM t ORDER BY v", &[])
        .await
        .expect("t on b")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, (1..=11).collect::<Vec<i32>>());
    // a fenced its copy and follows b.
    in_sync_on(&b, "shop", "a").await;
    // A gateway stopped stops the standbys it holds too.
    a.stop();
    assert!(
        eventually(Duration::from_secs(10), || async {
            postgres_under(&a_dir) == 0
        })
        .await,
        "a's standby still runs after a stopped"
    );
}

/// Postgres processes whose command line names `dir`.
fn postgres_under(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                        return false;
                    };
                    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    cmdline.contains("postgres") && cmdline.contains(&needle)
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_gateways_database_is_taken_over_by_its_standby_on_another_gateway() {
    let _serial = SERIAL.lock().await;
    let etcd = EtcdCluster::start(3).await;
    let (a, mut b) = pair(&etcd).await;
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
    let client = connect(&url).await.expect("shop through a");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .expect("writes acknowledged with the standby on b");

    // Planned switchover, asked of b (its API forwards to a): the database
    // moves to b, a follows it.
    let (status, body) = b.api("POST", "/v1/databases/shop/switchover", None).await;
    assert_eq!(status, 200, "switchover across gateways: {body}");
    println!("switchover across gateways: {body}");
    assert!(body["write_pause_ms"].as_u64().is_some(), "{body}");
    assert_eq!(b.db("shop").await["node"], "b");
    // The session on a lost its server (a transaction in flight would get
    // an error); a new one is carried to b and sees everything.
    drop(client);
    let client = connect(&url).await.expect("shop after the switchover");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t on b")
        .get(0);
    assert_eq!(n, 100);
    client
        .batch_execute("INSERT INTO t VALUES (101)")
        .await
        .expect("b takes writes");
    drop(client);
    in_sync_on(&b, "shop", "a").await;

    // kill-gateway: b, serving now, kills itself under the writer (asked
    // through a, whose API forwards it); a takes the database over.
    let old_primary = b.db("shop").await["compute"]["pid"]
        .as_i64()
        .expect("the primary runs") as i32;
    let (status, _) = a
        .api(
            "POST",
            "/v1/databases/shop/chaos",
            Some(serde_json::json!({"allowed": true})),
        )
        .await;
    assert_eq!(status, 200);
    let refused = a.cli(&["chaos", "run", "--db", "shop", "--scenario", "kill-gateway"]);
    assert!(!refused.status.success(), "kill-gateway without --url ran");
    let dir = b.take_dir();
    let b_dir = b.data_dir.clone();
    // Whatever happens, no postgres of b's outlives the test.
    let _reap = Reap(b_dir.clone());
    let out = a.cli_ok(&[
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
    b.kill9();
    assert_eq!(a.db("shop").await["node"], "a");
    let through_a = connect(&url).await.expect("shop through a");
    let n: i64 = through_a
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t on a")
        .get(0);
    assert_eq!(n, 101);
    // The old primary is still running, orphaned (the machine did not
    // die, its gateway did): unreachable, since clients go to a.
    assert!(
        alive(old_primary),
        "the orphaned old primary should still run"
    );

    // b comes back: it fences its old primary and follows a.
    let b = start_in(&etcd, "b", Some(&b_dir)).await;
    in_sync_on(&a, "shop", "b").await;
    assert!(
        eventually(Duration::from_secs(10), || async { !alive(old_primary) }).await,
        "the old primary (pid {old_primary}) still runs after its gateway came back"
    );
    through_a
        .batch_execute("INSERT INTO t VALUES (102)")
        .await
        .expect("writes with the new standby on b");
    let on_b = connect(&ogel_e2e::url_at(&url, &b.pg_addr))
        .await
        .expect("shop through b, carried to a");
    let n: i64 = on_b
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("t")
        .get(0);
    assert_eq!(n, 102);
    drop(b);
    drop(_reap);
    drop(dir);
}
