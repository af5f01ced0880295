//! Hot standbys and failover on the native backend, through the real
//! gateway and real PostgreSQL: kill -9 of the primary under a writer
//! loses no acknowledged write, the old primary is fenced (gone, and its
//! data never served again), clients are served again, a new standby is
//! built; a planned switchover loses nothing and reports its write pause.

use ogel_e2e::{connect, eventually, Gateway};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes rows 1, 2, 3… one transaction each, through the gateway,
/// reconnecting after errors; records every acknowledged one.
struct Writer {
    acked: Arc<Mutex<Vec<i64>>>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, e, s) = (acked.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut next = 1i64;
            let mut client = None;
            while !s.load(Ordering::SeqCst) {
                if client.is_none() {
                    match connect(&url).await {
                        Ok(c) => client = Some(c),
                        Err(_) => {
                            e.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = client.as_ref() else { continue };
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
                let insert = c.execute("INSERT INTO acked (id) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(10), insert).await {
                    Ok(Ok(_)) => {
                        a.lock().unwrap().push(next);
                        next += 1;
                    }
                    // Unknown outcome: the row may or may not be there;
                    // it is not counted as acknowledged. A new id next time.
                    _ => {
                        e.fetch_add(1, Ordering::SeqCst);
                        next += 1;
                        client = None;
                    }
                }
            }
        });
        Writer {
            acked,
            errors,
            stop,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_for(&self, more: usize, within: Duration) {
        let target = self.acked() + more;
        assert!(
            eventually(within, || async { self.acked() >= target }).await,
            "the writer got {} of {target} acknowledgements (errors: {})",
            self.acked(),
            self.errors.load(Ordering::SeqCst)
        );
    }

    async fn finish(self) -> (Vec<i64>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.errors.load(Ordering::SeqCst))
    }
}
async fn standby(gw: &Gateway, db: &str) -> serde_json::Value {
    let (status, body) = gw
        .api("GET", &format!("/v1/databases/{db}/standby"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn streaming(gw: &Gateway, db: &str) -> bool {
    standby(gw, db).await["streaming"] == 1
}

/// Every acknowledged id is in the table.
async fn assert_none_lost(url: &str, acked: &[i64]) {
    let c = connect(url).await.unwrap();
    let rows = c.query("SELECT id FROM acked", &[]).await.unwrap();
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

fn primary_pid(gw: &Gateway, db: &str) -> u32 {
    let pid_file = gw
        .data_dir
        .join(format!("native/databases/{db}/pgdata/postmaster.pid"));
    std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a pid")
}

/// SIGKILL to `db`'s primary postmaster, as a crash; returns its pid.
fn kill_primary(gw: &Gateway, db: &str) -> u32 {
    let pid = primary_pid(gw, db);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("signal the primary");
    pid
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_primary_under_a_writer_loses_no_acknowledged_write() {
    let gw = Gateway::start().await;
    let url = gw.create_db("shop", Some(0)).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE acked (id int8 PRIMARY KEY)")
        .await
        .unwrap();
    let out = gw.cli_ok(&["db", "standby", "shop", "add"]);
    assert!(out.contains("1/1 streaming, synchronous"), "{out}");

    // A client between transactions: it must notice nothing.
    let idle = connect(&url).await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();

    let writer = Writer::start(url.clone());
    writer.wait_for(200, Duration::from_secs(60)).await;
    let killed_at = std::time::Instant::now();
    let old = kill_primary(&gw, "shop");
    writer.wait_for(200, Duration::from_secs(30)).await;
    let recovered_in = killed_at.elapsed();
    let (acked, errors) = writer.finish().await;
    assert_none_lost(&url, &acked).await;

    // The old primary is fenced: its process and its backends are gone,
    // and its data directory is no longer where a compute starts.
    assert!(!alive(old), "the old postmaster {old} still runs");
    let new = primary_pid(&gw, "shop");
    assert_ne!(new, old);
    let status = standby(&gw, "shop").await;
    assert_eq!(status["failovers"], 1, "{status}");
    // The idle client's next transaction runs on the new primary.
    let rows = idle
        .simple_query("SELECT count(*) FROM acked")
        .await
        .expect("a client between transactions is served after the failover");
    assert!(!rows.is_empty());
    // The old primary, killed mid-write, is rewound into the new standby
    // (pg_rewind, not a fresh copy), and streams.
    assert!(
        eventually(Duration::from_secs(60), || streaming(&gw, "shop")).await,
        "no new standby: {}",
        standby(&gw, "shop").await
    );
    assert!(
        gw.log().contains("standby rewound from the old primary"),
        "the new standby was not rewound: {}",
        gw.log_tail(30)
    );
    // And it holds everything: a switchover to it loses nothing.
    gw.cli_ok(&["db", "switchover", "shop"]);
    assert_none_lost(&url, &acked).await;
    eprintln!(
        "failover: {} acknowledged, {errors} client errors, writes again {:.2}s after the kill",
        acked.len(),
        recovered_in.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_loses_nothing_and_twice_brings_the_first_data_back() {
    let gw = Gateway::start().await;
    let url = gw.create_db("orders", Some(0)).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE acked (id int8 PRIMARY KEY)")
        .await
        .unwrap();
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/orders/standby",
            Some(serde_json::json!({"count": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["streaming"], 1, "{body}");
    let writer = Writer::start(url.clone());
    for round in 1..=2 {
        writer.wait_for(100, Duration::from_secs(60)).await;
        let before = primary_pid(&gw, "orders");
        let out = gw.cli_ok(&["db", "switchover", "orders"]);
        assert!(out.contains("writes paused"), "{out}");
        assert_ne!(primary_pid(&gw, "orders"), before, "round {round}");
        assert!(!alive(before));
        writer.wait_for(100, Duration::from_secs(30)).await;
        assert!(
            eventually(Duration::from_secs(60), || streaming(&gw, "orders")).await,
            "round {round}: no new standby: {}",
            standby(&gw, "orders").await
        );
    }
    let (acked, errors) = writer.finish().await;
    assert_none_lost(&url, &acked).await;
    // A clean switchover ends no client's session between transactions.
    assert_eq!(errors, 0, "the writer saw errors across two switchovers");
    assert_eq!(standby(&gw, "orders").await["failovers"], 2);
    // Removing the standby stops it and frees its volume.
    gw.cli_ok(&["db", "standby", "orders", "remove"]);
    let status = standby(&gw, "orders").await;
    assert_eq!(status["wanted"], 0, "{status}");
    c.batch_execute("INSERT INTO acked VALUES (-1)")
        .await
        .expect("writes go on without a standby");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switchover_without_a_standby_is_a_clear_error() {
    let gw = Gateway::start().await;
    gw.create_db("lonely", Some(0)).await;
    let out = gw.cli(&["db", "switchover", "lonely"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("no streaming standby"), "{why}");
    let out = gw.cli(&["db", "standby", "lonely", "twice"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown action"));
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/lonely/standby",
            Some(serde_json::json!({"count": 2})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_midway_through_a_failover_finishes_it_on_restart() {
    for step in ["takeover-fenced", "takeover-promoted", "takeover-moved"] {
        let mut doomed = Gateway::start_with(&[("OGEL_TEST_CRASH_AT", step)]).await;
        let dir = doomed.take_dir().expect("its data dir");
        let url = doomed.create_db("sturdy", Some(0)).await;
        let c = connect(&url).await.unwrap();
        c.batch_execute("CREATE TABLE acked (id int8 PRIMARY KEY)")
            .await
            .unwrap();
        doomed.cli_ok(&["db", "standby", "sturdy", "add"]);
        let mut acked = Vec::new();
        for id in 1..=50i64 {
            c.execute("INSERT INTO acked VALUES ($1)", &[&id])
                .await
                .unwrap();
            acked.push(id);
        }
        drop(c);
        let old = kill_primary(&doomed, "sturdy");
        // The watch takes over and the gateway dies at `step`.
        let gateway = doomed.pid();
        assert!(
            eventually(Duration::from_secs(20), || async { !alive(gateway) }).await,
            "{step}: the gateway should have died"
        );
        doomed.kill9();
        let gw = Gateway::start_in(&doomed.data_dir, &[]).await.unwrap();
        let here = ogel_e2e::url_at(&url, &gw.pg_addr);
        assert_none_lost(&here, &acked).await;
        let c = connect(&here).await.unwrap();
        c.execute("INSERT INTO acked VALUES (1000)", &[])
            .await
            .unwrap_or_else(|e| panic!("{step}: no write after the restart: {e}"));
        assert!(!alive(old), "{step}: the old primary runs again");
        // The standby is wanted still: a new one is built and streams.
        assert!(
            eventually(Duration::from_secs(60), || streaming(&gw, "sturdy")).await,
            "{step}: no new standby: {}",
            standby(&gw, "sturdy").await
        );
        drop(c);
        drop(gw);
        ogel_e2e::kill_postgres_under(dir.path());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ogel_chaos_runs_only_where_allowed_and_loses_no_acknowledged_write() {
    let gw = Gateway::start().await;
    gw.create_db("victim", Some(0)).await;
    let out = gw.cli(&["chaos", "run", "--db", "victim"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("not marked chaos_allowed"), "{why}");
    let out = gw.cli(&[
        "chaos",
        "run",
        "--db",
        "victim",
        "--scenario",
        "kill-gateway",
    ]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("kill-gateway needs --url"), "{why}");
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases/victim/chaos/fault",
            Some(serde_json::json!({"fault": "partition", "seconds": 5})),
        )
        .await;
    assert_eq!(status, 400, "a fault on a database not marked: {body}");
    gw.cli_ok(&["chaos", "allow", "victim"]);
    gw.cli_ok(&["db", "standby", "victim", "add"]);
    let out = gw.cli_ok(&[
        "chaos",
        "run",
        "--db",
        "victim",
        "--scenario",
        "all",
        "--json",
    ]);
    println!("{out}"); // the figures, with --nocapture
    let reports: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kill-primary",
            "kill-standby",
            "switchover",
            "latency",
            "partition-gateway",
            "corrupt-snapshot"
        ]
    );
    for r in &reports {
        assert_eq!(r["lost"], 0, "{r}");
        assert!(r["acknowledged"].as_u64().unwrap() >= 100, "{r}");
        assert!(r["recovered_ms"].is_u64(), "{r}");
    }
    // A clean switchover and a standby's death end no client's work.
    assert_eq!(reports[1]["client_errors"], 0, "{}", reports[1]);
    assert_eq!(reports[2]["client_errors"], 0, "{}", reports[2]);
    assert!(reports[2]["write_pause_ms"].is_u64(), "{}", reports[2]);
    // Latency slows writes (100 ms each way through the fault proxy) and
    // fails none; a partition is detected by the probes and the standby
    // takes over.
    let slow = &reports[3];
    assert_eq!(slow["client_errors"], 0, "{slow}");
    let (before, during) = (
        slow["write_ms_before"].as_u64().unwrap_or(u64::MAX),
        slow["write_ms_during"].as_u64().unwrap_or(0),
    );
    assert!(during >= 150 && during > before + 100, "{slow}");
    let cut = &reports[4];
    assert!(
        cut["detected_ms"].is_u64() && cut["recovered_ms"].is_u64(),
        "{cut}"
    );
    assert_eq!(standby(&gw, "victim").await["failovers"], 3);
    // The flipped byte was caught by the snapshot's checksums, nothing
    // was served from it, and the byte is back: the snapshot restores.
    let corrupt = &reports[5];
    assert_eq!(corrupt["corruption_detected"], true, "{corrupt}");
    assert_eq!(corrupt["corruption_served"], false, "{corrupt}");
    let (status, snapshots) = gw.api("GET", "/v1/databases/victim/snapshots", None).await;
    assert_eq!(status, 200, "{snapshots}");
    let id = snapshots[0]["id"]
        .as_str()
        .expect("the chaos snapshot")
        .to_string();
    gw.cli_ok(&["snapshot", "restore", "victim", &id, "--as", "intact"]);
    // disk-95 will not fill the machine's own filesystem.
    let out = gw.cli(&["chaos", "run", "--db", "victim", "--scenario", "disk-95"]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && why.contains("a data filesystem of its own"),
        "{why}"
    );
    // The data disk's use is a gauge (a warning is logged at 90%).
    let metrics = gw.metrics().await;
    let used: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ogel_data_disk_used_ratio "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no disk gauge in {metrics}"));
    assert!(used > 0.0 && used <= 1.0, "{used}");
    gw.cli_ok(&["chaos", "deny", "victim"]);
    assert!(!gw.cli(&["chaos", "run", "--db", "victim"]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_gateway_restart_the_adopted_standby_still_takes_over() {
    let mut first = Gateway::start().await;
    let dir = first.take_dir().expect("its data dir");
    let url = first.create_db("kept", Some(0)).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE acked (id int8 PRIMARY KEY)")
        .await
        .unwrap();
    first.cli_ok(&["db", "standby", "kept", "add"]);
    let mut acked = Vec::new();
    for id in 1..=20i64 {
        c.execute("INSERT INTO acked VALUES ($1)", &[&id])
            .await
            .unwrap();
        acked.push(id);
    }
    drop(c);
    // The gateway dies; primary and standby run on and are adopted.
    first.kill9();
    let gw = Gateway::start_in(&first.data_dir, &[]).await.unwrap();
    let here = ogel_e2e::url_at(&url, &gw.pg_addr);
    assert!(
        eventually(Duration::from_secs(20), || streaming(&gw, "kept")).await,
        "the adopted standby does not stream: {}",
        standby(&gw, "kept").await
    );
    let old = kill_primary(&gw, "kept");
    assert!(
        eventually(Duration::from_secs(20), || async {
            standby(&gw, "kept").await["failovers"] == 1
        })
        .await,
        "no takeover after the restart: {}",
        standby(&gw, "kept").await
    );
    assert!(!alive(old), "the old primary {old} still runs");
    assert_none_lost(&here, &acked).await;
    connect(&here)
        .await
        .unwrap()
        .execute("INSERT INTO acked VALUES (100)", &[])
        .await
        .expect("writes on the promoted standby");
    drop(gw);
    ogel_e2e::kill_postgres_under(dir.path());
}

/// SIGKILL to the checkpointer of `db`'s primary: Postgres treats a
/// child's crash as a crash of the whole cluster and reinitialises
/// (crash recovery, every connection ended) — a crash restart, with the
/// postmaster itself still running.
fn crash_primary(gw: &Gateway, db: &str) -> u32 {
    let postmaster = primary_pid(gw, db);
    ogel_e2e::crash_restart(postmaster);
    postmaster
}

async fn health_restarts(gw: &Gateway, db: &str) -> u64 {
    standby(gw, db).await["health"]["restarts"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_primary_is_switched_over_before_it_fails_and_one_crash_is_noise() {
    let gw = Gateway::start().await;
    let url = gw.create_db("flaky", Some(0)).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE acked (id int8 PRIMARY KEY)")
        .await
        .unwrap();
    gw.cli_ok(&["db", "standby", "flaky", "add"]);
    let writer = Writer::start(url.clone());
    writer.wait_for(50, Duration::from_secs(60)).await;
    // Let the watch see the healthy primary first.
    assert!(
        eventually(Duration::from_secs(20), || async {
            standby(&gw, "flaky").await["health"].is_object()
        })
        .await,
        "no health report: {}",
        standby(&gw, "flaky").await
    );

    // One crash: noted, not acted on.
    let postmaster = crash_primary(&gw, "flaky");
    assert!(
        eventually(Duration::from_secs(20), || async {
            health_restarts(&gw, "flaky").await == 1
        })
        .await,
        "the crash restart was not seen: {}\n{}",
        standby(&gw, "flaky").await,
        gw.log_tail(30)
    );
    writer.wait_for(50, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = standby(&gw, "flaky").await;
    assert_eq!(status["failovers"], 0, "one crash switched over: {status}");
    assert_eq!(primary_pid(&gw, "flaky"), postmaster);
    assert!(
        gw.cli_ok(&["db", "standby", "flaky"])
            .contains("1 crash restart(s)"),
        "the CLI shows the restart"
    );

    // Two more within the window: a trend. The standby takes over
    // cleanly before the primary fails outright.
    for seen in 2..=3 {
        crash_primary(&gw, "flaky");
        assert!(
            eventually(Duration::from_secs(20), || async {
                let s = standby(&gw, "flaky").await;
                s["failovers"] == 1 || s["health"]["restarts"].as_u64() == Some(seen)
            })
            .await,
            "crash {seen} was not seen: {}",
            standby(&gw, "flaky").await
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            standby(&gw, "flaky").await["failovers"] == 1
        })
        .await,
        "no switchover before failure: {}",
        standby(&gw, "flaky").await
    );
    assert!(!alive(postmaster), "the crash-looping primary still runs");
    let status = standby(&gw, "flaky").await;
    let why = status["health"]["last_preemptive_switchover"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("restarted 3 times"), "{status}");
    assert!(
        gw.metrics()
            .await
            .contains("ogel_preemptive_switchovers_total 1"),
        "the metric counts it"
    );
    writer.wait_for(50, Duration::from_secs(60)).await;
    let (acked, _) = writer.finish().await;
    assert_none_lost(&url, &acked).await;
    // The new primary starts with a clean record, and gets a standby.
    assert_eq!(health_restarts(&gw, "flaky").await, 0);
    assert!(
        eventually(Duration::from_secs(60), || streaming(&gw, "flaky")).await,
        "no new standby: {}",
        standby(&gw, "flaky").await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_disk_95_on_a_filesystem_of_its_own_keeps_writes_and_raises_the_alert() {
    let fs = ogel_e2e::LoopFs::new("ext4");
    let data_dir = fs.mnt.join("data");
    let gw = Gateway::start_in(&data_dir, &[])
        .await
        .expect("gateway starts");
    gw.create_db("full", Some(0)).await;
    gw.cli_ok(&["chaos", "allow", "full"]);
    let out = gw.cli_ok(&[
        "chaos",
        "run",
        "--db",
        "full",
        "--scenario",
        "disk-95",
        "--json",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["disk_alert"], true, "{report}");
    let used = report["disk_used_percent"].as_f64().unwrap_or(0.0);
    assert!((93.0..=99.5).contains(&used), "{report}");
    assert!(
        gw.log().contains("the data disk is"),
        "no disk warning in the log: {}",
        gw.log_tail(20)
    );
    // The balloon is gone.
    assert!(!data_dir.join("ogel-chaos-balloon").exists());
    let usage = nix::sys::statvfs::statvfs(&fs.mnt).unwrap();
    assert!(
        usage.blocks_available() * 2 > usage.blocks(),
        "the balloon was not freed"
    );
    drop(gw);
}
