//! Durability against a real S3-compatible server: the cold tier is a
//! bucket in moto (server mode, one per test, killed when the test ends,
//! also when it fails), reached by real gateways directly or through a small
//! fault-injecting HTTP proxy (503s, dropped connections, slow answers,
//! access denied). A database comes back from the bucket alone on an empty
//! gateway, encrypted at rest; the archive rides out a flaky store without
//! losing a commit; a store that cannot be used is a clear error.
//!
//! moto comes from `scripts/test`; without it these tests fail (they do not
//! skip).

use ogel_e2e::s3::{close_head, read_head, Moto};
use ogel_e2e::{connect, count, eventually, ogel_bin, restored_url, Gateway};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tests share 2 cores: one moto (and its gateways) at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// No CLI call may hang a test.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// `cold.encryption_key` of the tests (64 hex digits; starts with a letter
/// so that the environment never reads it as a number).
const KEY: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";

// moto: `ogel_e2e::s3::Moto`.

// ---------------------------------------------------------------------------
// A fault-injecting HTTP proxy in front of moto. It serves one request per
// connection (it tells both sides `Connection: close`), so it only has to
// frame a request head plus Content-Length bytes of body; answers are
// passed on to the end.

/// Pass everything on.
const PASS: u8 = 0;
/// Answer every request 503 SlowDown, like a busy S3.
const SLOW_DOWN: u8 = 1;
/// Close every connection without an answer.
const DROP: u8 = 2;
/// Answer every request 403 AccessDenied (revoked credentials).
const DENY: u8 = 3;

#[derive(Default)]
struct Faults {
    mode: AtomicU8,
    /// Hold each answer this long before passing it on.
    delay_ms: AtomicU64,
    requests: AtomicU32,
    /// Requests answered by the proxy itself or dropped.
    faulted: AtomicU32,
}

struct Proxy {
    port: u16,
    faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let faults = shared.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, &faults).await;
                });
            }
        });
        Proxy { port, faults, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: u8) {
        self.faults.mode.store(mode, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: u16, faults: &Faults) -> std::io::Result<()> {
    let (head, mut rest) = read_head(&mut client).await?;
    let (head, length) = close_head(&head, true)?;
    faults.requests.fetch_add(1, Ordering::SeqCst);
    let is_head = head.starts_with(b"HEAD ");
    let answer = |status: &str, code: &str, message: &str| {
        let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>");
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if is_head { "" } else { &body }
        )
    };
    let canned = match faults.mode.load(Ordering::SeqCst) {
        DROP => {
            faults.faulted.fetch_add(1, Ordering::SeqCst);
            // Closed mid-request, unanswered.
            drop(client);
            return Ok(());
        }
        SLOW_DOWN => Some(answer(
            "503 Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        )),
        DENY => Some(answer("403 Forbidden", "AccessDenied", "Access Denied")),
        _ => None,
    };
    if let Some(response) = canned {
        // Read the whole request, then refuse it.
        let left = length.saturating_sub(rest.len()) as u64;
        tokio::io::copy(&mut (&mut client).take(left), &mut tokio::io::sink()).await?;
        client.write_all(response.as_bytes()).await?;
        client.shutdown().await?;
        faults.faulted.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }

    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    server.write_all(&head).await?;
    rest.truncate(length);
    server.write_all(&rest).await?;
    let left = length.saturating_sub(rest.len()) as u64;
    tokio::io::copy(&mut (&mut client).take(left), &mut server).await?;

    let (response_head, response_rest) = read_head(&mut server).await?;
    let (response_head, _) = close_head(&response_head, false)?;
    let delay = faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    client.write_all(&response_head).await?;
    client.write_all(&response_rest).await?;
    tokio::io::copy(&mut server, &mut client).await?;
    client.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Gateways on the bucket

/// A gateway whose cold tier is `bucket` at `endpoint` (WAL switched every
/// second, so every commit is in the cold tier within about a second).
async fn gateway_on(endpoint: &str, bucket: &str, key: Option<&str>) -> Gateway {
    let mut env = vec![
        ("OGEL_COLD__S3__BUCKET", bucket),
        ("OGEL_COLD__S3__ENDPOINT", endpoint),
        ("OGEL_COLD__S3__REGION", "us-east-1"),
        ("OGEL_COLD__ARCHIVE_TIMEOUT", "1s"),
        // moto takes any key; never look for a profile or instance role.
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    if let Some(key) = key {
        env.push(("OGEL_COLD__ENCRYPTION_KEY", key));
    }
    Gateway::start_with(&env).await
}

/// Runs the `ogel` CLI against `gw`, killed if it runs past `timeout`
/// (`None` then).
async fn cli_within(gw: &Gateway, args: &[&str], timeout: Duration) -> Option<Output> {
    let child = tokio::process::Command::new(ogel_bin())
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .args(args)
        .env_remove("OGEL_API")
        .env_remove("OGEL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run ogel CLI");
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .ok()
        .map(|out| out.expect("ogel CLI output"))
}

async fn cli(gw: &Gateway, args: &[&str]) -> Output {
    cli_within(gw, args, CLI_TIMEOUT).await.unwrap_or_else(|| {
        panic!(
            "ogel {args:?} ran past {CLI_TIMEOUT:?}\n{}",
            gw.log_tail(40)
        )
    })
}

async fn cli_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = cli(gw, args).await;
    assert!(
        out.status.success(),
        "ogel {args:?}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.log_tail(40)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A failed CLI call's stderr (asserting it failed cleanly, not by panic).
async fn cli_err(gw: &Gateway, args: &[&str]) -> String {
    let out = cli(gw, args).await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "ogel {args:?} should fail: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "ogel {args:?}: {stderr}");
    assert!(
        !gw.log().contains("panicked"),
        "the gateway panicked:\n{}",
        gw.log_tail(40)
    );
    stderr
}

async fn archive(gw: &Gateway, db: &str) -> serde_json::Value {
    let (status, body) = gw
        .api("GET", &format!("/v1/databases/{db}/archive"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the database's WAL archive has nothing pending, so everything
/// committed before the call is durable.
async fn wait_archived(gw: &Gateway, db: &str, within: Duration) {
    // archive_timeout (1 s) closes the segment holding the last commit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ok = eventually(within, || async {
        archive(gw, db).await["pending_files"] == 0
    })
    .await;
    assert!(
        ok,
        "the archive did not catch up in {within:?}: {}\n{}",
        archive(gw, db).await,
        gw.log_tail(40)
    );
}

/// The machine is lost: gateway, computes and local disk.
fn lose(gw: &mut Gateway) {
    gw.kill9();
    ogel_e2e::kill_postgres_under(&gw.data_dir);
    std::fs::remove_dir_all(&gw.data_dir).expect("remove the data dir");
}

/// Ends a gateway without its graceful stop, which today waits for
/// Postgres's archiver until the harness's 30 s SIGKILL in two cases: a
/// restored compute cannot finish archiving its timeline history file (see
/// `a_restored_database_archives_its_history_and_stops_cleanly`), and a
/// compute whose store is unusable waits out stop_timeout (60 s).
fn abandon(mut gw: Gateway) {
    gw.kill9();
    ogel_e2e::kill_postgres_under(&gw.data_dir);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn s3_backups_restore_on_an_empty_gateway_with_encryption() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let moto = Moto::start().await;
    let bucket = "durable";
    moto.create_bucket(bucket).await;
    let mut a = gateway_on(&moto.url(), bucket, Some(KEY)).await;
    let url = a.create_db("shop", None).await;
    // Text that must never be readable in the bucket.
    let before = format!("plaintext-before-{:016x}", rand_u64());
    let after = format!("plaintext-after-{:016x}", rand_u64());
    let c = connect(&url).await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE notes AS SELECT g AS id, 'note ' || g AS body FROM generate_series(1, 1000) g;
         INSERT INTO notes VALUES (0, '{before}')"
    ))
    .await
    .unwrap();
    // (Its immediate checkpoint also wakes the checkpointer, so from now on
    // archive_timeout closes a segment every second.)
    let id = cli_ok(&a, &["backup", "create", "shop"]).await;
    // Committed after the backup: only in the archived WAL.
    c.batch_execute(&format!(
        "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1001, 2000) g;
         INSERT INTO notes VALUES (-1, '{after}')"
    ))
    .await
    .unwrap();
    drop(c);
    wait_archived(&a, "shop", Duration::from_secs(30)).await;
    let store = archive(&a, "shop").await["store"].clone();
    assert!(
        store.as_str().is_some_and(|s| s.contains(bucket)),
        "{store}"
    );

    // What the bucket holds: the WAL and the backup, all sealed and
    // encrypted, none of it readable.
    let keys = moto.keys(bucket, "computes/shop/").await;
    let wal: Vec<&String> = keys.iter().filter(|k| k.contains("/wal/")).collect();
    assert!(!wal.is_empty(), "no WAL of shop in the bucket: {keys:?}");
    for part in ["manifest.json", "backup_manifest", "base.tar.00000"] {
        assert!(
            keys.iter()
                .any(|k| k.ends_with(&format!("/backups/{id}/{part}"))),
            "no {part} of backup {id} in the bucket: {keys:?}"
        );
    }
    for key in moto.keys(bucket, "computes/").await {
        let object = moto.get(bucket, &key).await;
        assert!(
            object.len() > 5 && &object[..4] == b"OGL1",
            "{key} is not a sealed object"
        );
        assert_ne!(object[4] & 0b10, 0, "{key} is not encrypted at rest");
        for marker in [&before, &after] {
            assert!(
                !contains(&object, marker.as_bytes()),
                "{key} holds the plaintext {marker}"
            );
        }
    }

    lose(&mut a);

    // An empty gateway with the bucket and the key.
    let b = gateway_on(&moto.url(), bucket, Some(KEY)).await;
    let (status, body) = b.api("GET", "/v1/databases/shop", None).await;
    assert_eq!(status, 404, "{body}");
    let listed = cli_ok(&b, &["backup", "list", "shop"]).await;
    assert!(listed.contains(&id), "{listed}");
    let url = restored_url(&cli_ok(&b, &["backup", "restore", "shop"]).await);
    assert_eq!(count(&url, "notes").await, 2002);
    let c = connect(&url).await.unwrap();
    for (id, marker) in [(0, &before), (-1, &after)] {
        let body: String = c
            .query_one("SELECT body FROM notes WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(&body, marker);
    }
    drop(c);
    abandon(b);

    // The bucket without the key: refused, saying why.
    let c = gateway_on(&moto.url(), bucket, None).await;
    let why = cli_err(&c, &["backup", "restore", "shop"]).await;
    assert!(
        why.contains("encrypted") && why.contains("cold.encryption_key"),
        "{why}"
    );
    let (status, _) = c.api("GET", "/v1/databases/shop", None).await;
    assert_eq!(status, 404, "a failed restore leaves no database behind");
    assert!(!c.data_dir.join("native/databases/shop").exists());
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_archive_survives_a_flaky_store() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let moto = Moto::start().await;
    let bucket = "flaky";
    moto.create_bucket(bucket).await;
    let proxy = Proxy::start(moto.port).await;
    let mut a = gateway_on(&proxy.url(), bucket, None).await;
    let url = a.create_db("ledger", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE entries AS SELECT generate_series(1, 100) AS n")
        .await
        .unwrap();
    // A first backup. Its immediate checkpoint also wakes the compute's
    // checkpointer, which after a start sleeps checkpoint_timeout (5 min)
    // before archive_timeout means anything (see
    // `archive_timeout_holds_right_after_a_compute_starts`).
    let first = cli_ok(&a, &["backup", "create", "ledger"]).await;
    wait_archived(&a, "ledger", Duration::from_secs(30)).await;
    let mut committed = 100;
    let mut insert = |rows: i64| {
        let sql = format!(
            "INSERT INTO entries SELECT generate_series({}, {})",
            committed + 1,
            committed + rows
        );
        committed += rows;
        sql
    };

    // The store answers 503 to everything, then drops every connection:
    // commits go on (Postgres keeps the WAL) and the archive falls behind.
    for mode in [SLOW_DOWN, DROP] {
        proxy.set(mode);
        let faulted = proxy.faults.faulted.load(Ordering::SeqCst);
        for _ in 0..3 {
            let t = Instant::now();
            c.batch_execute(&insert(200)).await.unwrap();
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        let behind = eventually(Duration::from_secs(15), || async {
            archive(&a, "ledger").await["pending_files"]
                .as_u64()
                .is_some_and(|n| n > 0)
        })
        .await;
        assert!(
            behind,
            "mode {mode}: nothing pending: {} ({} of {} requests faulted)\n{}",
            archive(&a, "ledger").await,
            proxy.faults.faulted.load(Ordering::SeqCst),
            proxy.faults.requests.load(Ordering::SeqCst),
            a.log_tail(40)
        );
        assert!(proxy.faults.faulted.load(Ordering::SeqCst) > faulted);
    }
    let lag = archive(&a, "ledger").await;
    assert!(lag["lag_seconds"].as_u64().unwrap_or(0) >= 1, "{lag}");

    // The store refuses (revoked credentials): the error shows in the
    // archive status and in `ogel status` at once.
    proxy.set(DENY);
    c.batch_execute(&insert(200)).await.unwrap();
    let shown = eventually(Duration::from_secs(15), || async {
        archive(&a, "ledger").await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("access denied") && e.contains(bucket))
    })
    .await;
    assert!(
        shown,
        "no last_error: {}\n{}",
        archive(&a, "ledger").await,
        a.log_tail(40)
    );
    let status = cli_ok(&a, &["status"]).await;
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("archive:") && l.contains("access denied")),
        "{status}"
    );

    // The store heals: everything committed reaches it, the error clears.
    proxy.set(PASS);
    wait_archived(&a, "ledger", Duration::from_secs(40)).await;
    assert_eq!(
        archive(&a, "ledger").await["last_error"],
        serde_json::Value::Null
    );
    let status = cli_ok(&a, &["status"]).await;
    assert!(!status.contains("archive:"), "{status}");

    // Slow answers: archiving (and a backup) still complete.
    proxy.delay(Duration::from_millis(300));
    let requests = proxy.faults.requests.load(Ordering::SeqCst);
    c.batch_execute(&insert(500)).await.unwrap();
    let id = cli_ok(&a, &["backup", "create", "ledger"]).await;
    c.batch_execute(&insert(500)).await.unwrap();
    wait_archived(&a, "ledger", Duration::from_secs(40)).await;
    assert!(proxy.faults.requests.load(Ordering::SeqCst) > requests + 3);
    proxy.delay(Duration::ZERO);
    drop(c);

    // Every committed row comes back on an empty gateway, straight from
    // the bucket.
    lose(&mut a);
    let b = gateway_on(&moto.url(), bucket, None).await;
    let listed = cli_ok(&b, &["backup", "list", "ledger"]).await;
    assert!(listed.contains(&first) && listed.contains(&id), "{listed}");
    let url = restored_url(&cli_ok(&b, &["backup", "restore", "ledger"]).await);
    assert_eq!(count(&url, "entries").await, committed);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    abandon(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_is_a_clear_error_for_backups() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let moto = Moto::start().await;
    let bucket = "vanishing";
    moto.create_bucket(bucket).await;
    let proxy = Proxy::start(moto.port).await;
    let endpoint = proxy.url();
    // The store works while the gateway starts and makes its databases:
    // with a store that cannot be used, each compute stop (the one in a
    // create too) waits out stop_timeout (60 s) on Postgres's archiver.
    let gw = gateway_on(&endpoint, bucket, None).await;
    // (Its immediate checkpoint wakes the checkpointer: from now on
    // archive_timeout closes a segment every second.)
    cli_ok(&gw, &["backup", "create", "app"]).await;
    wait_archived(&gw, "app", Duration::from_secs(30)).await;

    // The bucket is deleted under the gateway: refused at once, naming it.
    for key in moto.keys(bucket, "").await {
        moto.client
            .delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
    }
    moto.client
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("delete the bucket");
    for args in [["backup", "list", "app"], ["backup", "create", "app"]] {
        let t = Instant::now();
        let why = cli_err(&gw, &args).await;
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert!(
            why.contains(&format!("bucket \"{bucket}\" does not exist at {endpoint}")),
            "{args:?}: {why}"
        );
    }
    // The archive says so too, and `ogel status` shows it.
    let c = connect(&gw.app_url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 10) AS n")
        .await
        .unwrap();
    let shown = eventually(Duration::from_secs(15), || async {
        let lag = archive(&gw, "app").await;
        lag["pending_files"].as_u64().is_some_and(|n| n > 0)
            && lag["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("bucket \"{bucket}\" does not exist")))
    })
    .await;
    assert!(shown, "{}\n{}", archive(&gw, "app").await, gw.log_tail(40));
    let status = cli_ok(&gw, &["status"]).await;
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("archive:") && l.contains(bucket)),
        "{status}"
    );
    // Commits go on meanwhile: Postgres keeps the WAL.
    c.batch_execute("INSERT INTO t SELECT generate_series(11, 20)")
        .await
        .unwrap();
    drop(c);

    // Now nothing listens at the endpoint. Every store call is retried
    // until OBJECT_DEADLINE (10 min in backup.rs), so `ogel backup create`
    // does not fail fast; the gateway's log names the store within
    // seconds.
    drop(proxy);
    let mut create = tokio::process::Command::new(ogel_bin())
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .args(["backup", "create", "app"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run ogel CLI");
    let named = eventually(Duration::from_secs(20), || async {
        gw.log().lines().any(|l| {
            l.contains("could not list backups; retrying")
                && l.contains(&format!("could not reach {endpoint}"))
                && l.contains("Connection refused")
        })
    })
    .await;
    assert!(named, "{}", gw.log_tail(40));
    let _ = create.start_kill();
    let _ = create.wait().await;
    // Its computes cannot archive their last segment, so a graceful stop
    // would wait out stop_timeout.
    abandon(gw);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Bugs found while writing the tests above, fixed; these guard the fixes.

#[tokio::test(flavor = "multi_thread")]
async fn archive_timeout_holds_right_after_a_compute_starts() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    let bucket = "prompt";
    moto.create_bucket(bucket).await;
    let gw = gateway_on(&moto.url(), bucket, None).await;
    let url = gw.create_db("prompt", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
        .await
        .unwrap();
    let file: String = c
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    // archive_timeout is 1 s: the segment holding the commit is closed
    // within a second and archived a moment later.
    let archived = eventually(Duration::from_secs(15), || async {
        c.query_one(
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            &[],
        )
        .await
        .is_ok_and(|r| r.get::<_, String>(0) >= file)
    })
    .await;
    let last: String = c
        .query_one("SELECT row_to_json(a)::text FROM pg_stat_archiver a", &[])
        .await
        .unwrap()
        .get(0);
    assert!(archived, "{file} not archived within 15 s: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_answering_503_shows_in_the_archive_status_within_seconds() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    let bucket = "busy";
    moto.create_bucket(bucket).await;
    let proxy = Proxy::start(moto.port).await;
    let gw = gateway_on(&proxy.url(), bucket, None).await;
    let url = gw.create_db("busy", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
        .await
        .unwrap();
    // (Wakes the checkpointer: archive_timeout works from here on.)
    cli_ok(&gw, &["backup", "create", "busy"]).await;
    wait_archived(&gw, "busy", Duration::from_secs(30)).await;
    proxy.set(SLOW_DOWN);
    c.batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    let shown = eventually(Duration::from_secs(20), || async {
        let lag = archive(&gw, "busy").await;
        lag["pending_files"].as_u64().is_some_and(|n| n > 0)
            && lag["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("503"))
    })
    .await;
    assert!(
        shown,
        "{} ({} requests answered 503)",
        archive(&gw, "busy").await,
        proxy.faults.faulted.load(Ordering::SeqCst)
    );
    let status = cli_ok(&gw, &["status"]).await;
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("archive:") && l.contains("503")),
        "{status}"
    );
    proxy.set(PASS);
    wait_archived(&gw, "busy", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_database_archives_its_history_and_stops_cleanly() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    let bucket = "history";
    moto.create_bucket(bucket).await;
    let mut a = gateway_on(&moto.url(), bucket, None).await;
    let url = a.create_db("books", None).await;
    let c = connect(&url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
        .await
        .unwrap();
    drop(c);
    cli_ok(&a, &["backup", "create", "books"]).await;
    lose(&mut a);
    let mut b = gateway_on(&moto.url(), bucket, None).await;
    let url = restored_url(&cli_ok(&b, &["backup", "restore", "books"]).await);
    assert_eq!(count(&url, "t").await, 100);
    // The promotion's history file reaches the bucket and Postgres marks
    // it done.
    let status = b
        .data_dir
        .join("native/databases/books/pgdata/pg_wal/archive_status");
    let done = eventually(Duration::from_secs(10), || async {
        std::fs::read_dir(&status).is_ok_and(|d| {
            d.flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".history.ready"))
        })
    })
    .await;
    let log = std::fs::read_to_string(b.data_dir.join("native/databases/books/postgres.log"))
        .unwrap_or_default();
    let denied = log
        .lines()
        .filter(|l| l.contains("Permission denied"))
        .count();
    assert!(
        done && denied == 0,
        "the history file is still not archived ({denied} permission errors in the compute log): {:?}",
        log.lines().rev().take(3).collect::<Vec<_>>()
    );
    let t = Instant::now();
    b.stop();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the gateway took {:?} to stop",
        t.elapsed()
    );
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}
