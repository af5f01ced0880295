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

use ogel_e2e::{connect, eventually, ogel_bin, Gateway};
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Output, Stdio};
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

fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

// ---------------------------------------------------------------------------
// moto

/// moto's S3 in server mode on a free port; killed on drop.
struct Moto {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
    http: reqwest::Client,
}

impl Moto {
    async fn start() -> Moto {
        let check = Command::new("python3")
            .args(["-c", "import moto.server, flask, werkzeug"])
            .output();
        match check {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "moto's server mode is not installed: run scripts/test (it installs `moto[server]`), or `pip install 'moto[server]'`"
            ),
        }
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("moto log");
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().expect("log")))
            .stderr(Stdio::from(log.reopen().expect("log")))
            .spawn()
            .expect("python3 starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto exited ({status}) before listening on {port}: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto not listening on {port} after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Moto {
            child,
            port,
            log,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// CreateBucket (moto takes it unsigned).
    async fn create_bucket(&self, bucket: &str) {
        let resp = self
            .http
            .put(format!("{}/{bucket}", self.url()))
            .send()
            .await
            .expect("moto reachable");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "create bucket {bucket}: {status} {body}\n{}",
            self.log()
        );
    }

    /// Every key in the bucket under `prefix` (ListObjectsV2, all pages).
    async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2".to_string()), ("prefix", prefix.into())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let resp = self
                .http
                .get(format!("{}/{bucket}", self.url()))
                .query(&query)
                .send()
                .await
                .expect("moto reachable");
            assert!(resp.status().is_success(), "list {bucket}: {resp:?}");
            let xml = resp.text().await.expect("list body");
            keys.extend(xml_values(&xml, "Key"));
            if xml_values(&xml, "IsTruncated").first().map(String::as_str) == Some("true") {
                token = xml_values(&xml, "NextContinuationToken").into_iter().next();
                assert!(token.is_some(), "truncated without a token: {xml}");
            } else {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// One object's bytes, as stored.
    async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let resp = self
            .http
            .get(format!("{}/{bucket}/{key}", self.url()))
            .send()
            .await
            .expect("moto reachable");
        assert!(resp.status().is_success(), "get {key}: {resp:?}");
        resp.bytes().await.expect("object body").to_vec()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of every `<tag>…</tag>` in `xml` (keys here need no unescaping).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(rest[..end].to_string());
        rest = &rest[end + close.len()..];
    }
    out
}

// ---------------------------------------------------------------------------
// A fault-injecting HTTP proxy in front of moto. It serves one request per
// connection (it tells both sides `Connection: close`), so it only has to
// frame a request head plus Content-Length bytes of body; answers are
// passed on to the end.

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

/// Reads up to the end of an HTTP head; returns the head and whatever was
/// read past it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with its Connection header replaced by `Connection: close`, and
/// its Content-Length (a chunked request body is refused: the SDK sends
/// none here).
fn close_head(head: &[u8], request: bool) -> std::io::Result<(Vec<u8>, usize)> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let mut length = 0;
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        if request && lower.starts_with("transfer-encoding:") {
            return Err(std::io::Error::other("the proxy handles no chunked bodies"));
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(std::io::Error::other)?;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok((out.into_bytes(), length))
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

/// The gateway's log (`gateway.log` beside its data dir).
fn gateway_log(gw: &Gateway) -> String {
    let path = gw
        .data_dir
        .parent()
        .unwrap_or(&gw.data_dir)
        .join("gateway.log");
    std::fs::read_to_string(path).unwrap_or_default()
}

fn log_tail(gw: &Gateway) -> String {
    let log = gateway_log(gw);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
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
    cli_within(gw, args, CLI_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("ogel {args:?} ran past {CLI_TIMEOUT:?}\n{}", log_tail(gw)))
}

async fn cli_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = cli(gw, args).await;
    assert!(
        out.status.success(),
        "ogel {args:?}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log_tail(gw)
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
        !gateway_log(gw).contains("panicked"),
        "the gateway panicked:\n{}",
        log_tail(gw)
    );
    stderr
}

/// The URL a restore onto a gateway that did not have the database prints.
fn restored_url(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("postgresql://"))
        .unwrap_or_else(|| panic!("no URL in {stdout:?}"))
        .to_string()
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
        log_tail(gw)
    );
}

async fn count(url: &str, table: &str) -> i64 {
    let c = connect(url).await.expect("connect");
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// The machine is lost: gateway, computes and local disk.
fn lose(gw: &mut Gateway) {
    gw.kill9();
    ogel_e2e::kill_postgres_under(&gw.data_dir);
    std::fs::remove_dir_all(&gw.data_dir).expect("remove the data dir");
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
    drop(b);

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
            "mode {mode}: nothing pending: {}",
            archive(&a, "ledger").await
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
        log_tail(&a)
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
    assert!(listed.contains(&id), "{listed}");
    let url = restored_url(&cli_ok(&b, &["backup", "restore", "ledger"]).await);
    assert_eq!(count(&url, "entries").await, committed);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_store_is_a_clear_error_for_backups() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let moto = Moto::start().await;

    // A bucket that does not exist: refused at once, naming it.
    let gw = gateway_on(&moto.url(), "no-such-bucket", None).await;
    for args in [["backup", "list", "app"], ["backup", "create", "app"]] {
        let t = Instant::now();
        let why = cli_err(&gw, &args).await;
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert!(
            why.contains("\"no-such-bucket\"") && why.contains("does not exist"),
            "{args:?}: {why}"
        );
        assert!(why.contains(&moto.url()), "{args:?}: {why}");
    }
    // The archive says so too, and `ogel status` shows it.
    let c = connect(&gw.app_url).await.unwrap();
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 10) AS n")
        .await
        .unwrap();
    drop(c);
    let shown = eventually(Duration::from_secs(15), || async {
        let last = archive(&gw, "app").await;
        last["pending_files"].as_u64().is_some_and(|n| n > 0)
            && last["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no-such-bucket"))
    })
    .await;
    assert!(shown, "{}\n{}", archive(&gw, "app").await, log_tail(&gw));
    let status = cli_ok(&gw, &["status"]).await;
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("archive:") && l.contains("no-such-bucket")),
        "{status}"
    );
    drop(gw);

    // An endpoint nothing listens on: the store is retried (OBJECT_DEADLINE
    // is minutes), and the gateway's log names it within seconds.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gw = gateway_on(&closed, "cold", None).await;
    let create = tokio::process::Command::new(ogel_bin())
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
        gateway_log(&gw).lines().any(|l| {
            l.contains("could not list backups; retrying")
                && l.contains(&closed)
                && l.contains("\"cold\"")
        })
    })
    .await;
    assert!(named, "{}", log_tail(&gw));
    drop(create);
    drop(gw);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}
