//! The cold tier's S3 store against a real S3-compatible server: moto in
//! server mode, started on a free port per test and killed when the test
//! ends (also when it fails), and, for the fault tests, a small HTTP proxy
//! in front of it that answers 503 or cuts requests mid-body on demand.
//!
//! moto comes from `scripts/test` (`ogel_e2e::s3`); without it these
//! tests fail (they do not skip).

use bytes::Bytes;
use ogel_backend_native::cold::store::{with_retry, S3Store};
use ogel_backend_native::cold::{self, ColdConfig, ObjectStore, S3Config, StoreError};
use ogel_e2e::s3::{aws_env, close_head, free_port, read_head, Moto};
use sha2::Digest;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tests share 2 cores: one moto at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// No test may hang the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

fn s3_config(endpoint: String, bucket: &str, prefix: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint: Some(endpoint),
        region: None,
        force_path_style: None,
    }
}

/// Every key the bucket holds, as S3 sees them (no prefix stripped).
async fn raw_keys(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.expect("list");
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
    }
    keys.sort();
    keys
}

async fn timed<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test did not finish in time");
}

// ---------------------------------------------------------------------------
// A fault-injecting HTTP proxy in front of moto. It serves one request per
// connection (it tells both sides `Connection: close`), which keeps the
// parsing to a request head plus Content-Length bytes of body.

#[derive(Default)]
struct Faults {
    /// Answer the next N requests with 503 SlowDown.
    fail: AtomicU32,
    /// Cut the next N requests: pass on the head and half the body, then
    /// close both connections.
    cut: AtomicU32,
    /// Pass on only half of the next N responses' bodies, then close.
    short_response: AtomicU32,
    /// Flip the last byte of the next N responses' bodies.
    corrupt_response: AtomicU32,
    requests: AtomicU32,
    failed: AtomicU32,
    cuts: AtomicU32,
    /// Every request head seen, as text.
    heads: std::sync::Mutex<Vec<String>>,
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
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
    if let Ok(mut heads) = faults.heads.lock() {
        heads.push(String::from_utf8_lossy(&head).into_owned());
    }
    let is_head = head.starts_with(b"HEAD ");

    if take_one(&faults.fail) {
        // Read the whole request, then refuse it like a busy S3.
        let left = length.saturating_sub(rest.len()) as u64;
        tokio::io::copy(&mut (&mut client).take(left), &mut tokio::io::sink()).await?;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if is_head { "" } else { body }
        );
        client.write_all(response.as_bytes()).await?;
        client.shutdown().await?;
        faults.failed.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }

    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    server.write_all(&head).await?;
    if take_one(&faults.cut) {
        // Half the body, then both connections dropped mid-request.
        let half = length / 2;
        rest.truncate(half);
        server.write_all(&rest).await?;
        let left = (half - rest.len()) as u64;
        tokio::io::copy(&mut (&mut client).take(left), &mut server).await?;
        server.flush().await?;
        faults.cuts.fetch_add(1, Ordering::SeqCst);
        // Dropping with unread data resets the client's connection.
        drop(server);
        drop(client);
        return Ok(());
    }
    rest.truncate(length);
    server.write_all(&rest).await?;
    let left = length.saturating_sub(rest.len()) as u64;
    tokio::io::copy(&mut (&mut client).take(left), &mut server).await?;

    let (response_head, response_rest) = read_head(&mut server).await?;
    let (response_head, _) = close_head(&response_head, false)?;
    client.write_all(&response_head).await?;
    let short = take_one(&faults.short_response);
    let corrupt = take_one(&faults.corrupt_response);
    if short || corrupt {
        let mut body = response_rest;
        server.read_to_end(&mut body).await?;
        if short {
            body.truncate(body.len() / 2);
        } else if let Some(last) = body.last_mut() {
            *last ^= 0x01;
        }
        client.write_all(&body).await?;
        // Closing at once: a short body ends early, not late.
        drop(client);
        return Ok(());
    }
    client.write_all(&response_rest).await?;
    tokio::io::copy(&mut server, &mut client).await?;
    client.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn put_get_list_delete_with_pagination_and_prefix() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    timed(async {
        moto.create_bucket("cold").await;
        let raw = moto.client.clone();
        // A key that is not under the store's prefix: never listed.
        raw.put_object()
            .bucket("cold")
            .key("elsewhere/x")
            .body(Bytes::from_static(b"not ours").into())
            .send()
            .await
            .expect("put outside the prefix");

        // Slashes around the prefix are trimmed: no double slash.
        let store = Arc::new(
            S3Store::connect(&s3_config(moto.url(), "cold", "/tenant-a/"))
                .await
                .expect("connect"),
        );
        assert_eq!(
            store.describe(),
            format!("s3://cold/tenant-a at {}", moto.url())
        );

        // 1100 tiny objects, 32 at a time: more than one page of 1000.
        let keys: Vec<String> = (0..1100)
            .map(|i| format!("shop/main/1a2b/wal/{i:024X}"))
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        let mut puts = tokio::task::JoinSet::new();
        for (i, key) in keys.iter().enumerate() {
            let (store, key, limit) = (store.clone(), key.clone(), limit.clone());
            puts.spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let body = Bytes::from(format!("segment {i}").into_bytes());
                with_retry("put", Duration::from_secs(30), || {
                    store.put(&key, body.clone())
                })
                .await
            });
        }
        while let Some(done) = puts.join_next().await {
            done.expect("put task").expect("put");
        }
        store
            .put("shop/main/1a2b/base/0001", Bytes::from_static(b"base"))
            .await
            .expect("put base");
        store
            .put("shopping/list", Bytes::from_static(b"milk"))
            .await
            .expect("put shopping");

        let wal = store.list("shop/main/1a2b/wal/").await.expect("list wal");
        let listed: Vec<&str> = wal.iter().map(|m| m.key.as_str()).collect();
        let mut expected: Vec<&str> = keys.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(listed.len(), 1100);
        assert_eq!(listed, expected, "all pages, sorted, prefix stripped");
        let first = wal.iter().find(|m| m.key == keys[7]).expect("key 7 listed");
        assert_eq!(first.size, "segment 7".len() as u64);

        let all = store.list("").await.expect("list all");
        assert_eq!(all.len(), 1102);
        assert!(all.windows(2).all(|w| w[0].key < w[1].key), "sorted");
        assert!(all.iter().all(|m| !m.key.starts_with("tenant-a")));
        assert!(!all.iter().any(|m| m.key.contains("elsewhere")));
        let shop: Vec<String> = store
            .list("shop/main/1a2b/b")
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(shop, ["shop/main/1a2b/base/0001"]);
        assert_eq!(store.list("shop").await.expect("list").len(), 1102);
        assert_eq!(store.list("shop/").await.expect("list").len(), 1101);
        assert!(store.list("nothing/").await.expect("list").is_empty());

        // What the bucket holds: the prefix prepended with one slash.
        let raw_all = raw_keys(&raw, "cold").await;
        assert_eq!(raw_all.len(), 1103);
        assert!(raw_all.contains(&"tenant-a/shopping/list".to_string()));
        assert!(raw_all.contains(&format!("tenant-a/{}", keys[0])));

        // get, overwrite, a sealed object with a key.
        assert_eq!(
            store.get(&keys[3]).await.expect("get"),
            Bytes::from_static(b"segment 3")
        );
        let key = cold::SealKey::from_hex(&"ab".repeat(32)).expect("key");
        let content: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let sealed = cold::seal(&content, Some(&key));
        store
            .put(&keys[3], Bytes::from(sealed))
            .await
            .expect("overwrite");
        let got = store.get(&keys[3]).await.expect("get sealed");
        assert_eq!(
            cold::open(&keys[3], &got, Some(&key)).expect("open"),
            content
        );

        // delete; deleting again, or what never was, is fine.
        store.delete(&keys[3]).await.expect("delete");
        store.delete(&keys[3]).await.expect("delete again");
        store.delete("never/was").await.expect("delete missing");
        match store.get(&keys[3]).await {
            Err(StoreError::NotFound { key, store: s }) => {
                assert_eq!(key, keys[3]);
                assert!(s.starts_with("s3://cold/tenant-a at "), "{s}");
            }
            other => panic!("get after delete: {other:?}"),
        }
        let e = store.get("shop/never").await.expect_err("never stored");
        assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
        assert!(!e.is_transient());
        assert_eq!(store.list("shop/").await.expect("list").len(), 1100);

        // Keys the local directory refuses are refused here too.
        for bad in ["", "/abs", "a/../b", "a//b", ".tmp-x"] {
            let e = store
                .put(bad, Bytes::from_static(b"x"))
                .await
                .expect_err(bad);
            assert!(matches!(e, StoreError::Refused { .. }), "{bad:?}: {e:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn no_prefix_and_open_store() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    timed(async {
        moto.create_bucket("plain").await;
        let raw = moto.client.clone();
        let config = ColdConfig {
            s3: Some(s3_config(moto.url(), "plain", "")),
            ..ColdConfig::default()
        };
        let unused = tempfile::tempdir().expect("tempdir");
        let store = cold::store::open_store(&config, unused.path())
            .await
            .expect("open_store");
        assert_eq!(store.describe(), format!("s3://plain at {}", moto.url()));
        store
            .put("a/b", Bytes::from_static(b"ab"))
            .await
            .expect("put");
        assert_eq!(raw_keys(&raw, "plain").await, ["a/b"]);
        let listed = store.list("a/").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "a/b");
        assert_eq!(listed[0].size, 2);
        // Nothing went to the local directory.
        assert_eq!(std::fs::read_dir(unused.path()).expect("dir").count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_missing_bucket_is_refused() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    timed(async {
        let start = Instant::now();
        let e = S3Store::connect(&s3_config(moto.url(), "no-such-bucket", "p"))
            .await
            .err()
            .expect("connect to a missing bucket fails");
        let message = e.to_string();
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
        assert!(!e.is_transient());
        assert!(message.contains("\"no-such-bucket\""), "{message}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains(&moto.url()), "{message}");
        assert!(message.contains("cold.s3.bucket"), "{message}");
        // Not retried as if it could get better.
        let missing = s3_config(moto.url(), "no-such-bucket", "");
        let e = with_retry("connect", Duration::from_secs(30), || {
            S3Store::connect(&missing)
        })
        .await
        .err()
        .expect("still missing");
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(10));

        // A bucket deleted under a connected store: list and put say so.
        moto.create_bucket("gone").await;
        let raw = moto.client.clone();
        let store = S3Store::connect(&s3_config(moto.url(), "gone", ""))
            .await
            .expect("connect");
        raw.delete_bucket()
            .bucket("gone")
            .send()
            .await
            .expect("delete bucket");
        let e = store.list("").await.expect_err("list a deleted bucket");
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
        assert!(e.to_string().contains("\"gone\""), "{e}");
        let e = store
            .put("k", Bytes::from_static(b"v"))
            .await
            .expect_err("put to a deleted bucket");
        assert!(matches!(e, StoreError::Refused { .. }), "{e:?}");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_until_the_deadline() {
    let _serial = SERIAL.lock().await;
    aws_env();
    timed(async {
        // A port nothing listens on.
        let closed = format!("http://127.0.0.1:{}", free_port());
        let config = s3_config(closed.clone(), "cold", "");
        let e = S3Store::connect(&config)
            .await
            .err()
            .expect("nothing listens there");
        assert!(e.is_transient(), "{e:?}");
        let message = e.to_string();
        assert!(message.contains(&closed), "{message}");
        assert!(message.contains("\"cold\""), "{message}");

        let start = Instant::now();
        let mut attempts = 0;
        let e = with_retry("connect", Duration::from_secs(3), || {
            attempts += 1;
            S3Store::connect(&config)
        })
        .await
        .err()
        .expect("gives up");
        let took = start.elapsed();
        assert!(e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("gave up trying to connect"), "{e}");
        assert!(took >= Duration::from_secs(3), "{took:?}");
        assert!(took < Duration::from_secs(15), "{took:?}");
        assert!(attempts >= 3, "{attempts}");
    })
    .await;
}

#[tokio::test]
async fn puts_go_through_503s() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    timed(async {
        moto.create_bucket("cold").await;
        let proxy = Proxy::start(moto.port).await;
        let store = S3Store::connect(&s3_config(proxy.url(), "cold", "x"))
            .await
            .expect("connect through the proxy");

        // Five 503s in a row: the SDK's own retry takes at most one of
        // them per call, `with_retry` the rest.
        proxy.faults.fail.store(5, Ordering::SeqCst);
        let body = Bytes::from(vec![42u8; 100_000]);
        let start = Instant::now();
        with_retry("put through 503s", Duration::from_secs(60), || {
            store.put("db/wal/1", body.clone())
        })
        .await
        .expect("put succeeds after the 503s");
        assert_eq!(proxy.faults.failed.load(Ordering::SeqCst), 5);
        assert!(start.elapsed() < Duration::from_secs(30));
        assert_eq!(store.get("db/wal/1").await.expect("get"), body);

        // A 503 alone is Unavailable, not NotFound or Refused.
        proxy.faults.fail.store(2, Ordering::SeqCst);
        let e = store.get("db/wal/1").await.expect_err("503 twice");
        assert!(e.is_transient(), "{e:?}");
        assert!(e.to_string().contains("503"), "{e}");
        proxy.faults.fail.store(0, Ordering::SeqCst);

        // Gets and lists are retried the same way.
        proxy.faults.fail.store(3, Ordering::SeqCst);
        let got = with_retry("get through 503s", Duration::from_secs(60), || {
            store.get("db/wal/1")
        })
        .await
        .expect("get");
        assert_eq!(got, body);
        proxy.faults.fail.store(3, Ordering::SeqCst);
        let listed = with_retry("list through 503s", Duration::from_secs(60), || {
            store.list("db/")
        })
        .await
        .expect("list");
        assert_eq!(listed.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_put_cut_mid_body_is_never_stored_short() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    timed(async {
        moto.create_bucket("cold").await;
        let proxy = Proxy::start(moto.port).await;
        let through_proxy = S3Store::connect(&s3_config(proxy.url(), "cold", ""))
            .await
            .expect("connect through the proxy");
        let direct = S3Store::connect(&s3_config(moto.url(), "cold", ""))
            .await
            .expect("connect");

        let old = Bytes::from(vec![1u8; 300_000]);
        let new = Bytes::from(vec![2u8; 300_000]);

        // A new object: cut on every attempt (the SDK's retry too).
        proxy.faults.cut.store(10, Ordering::SeqCst);
        let e = through_proxy
            .put("fresh", new.clone())
            .await
            .expect_err("a cut put fails");
        assert!(e.is_transient(), "{e:?}");
        assert!(proxy.faults.cuts.load(Ordering::SeqCst) >= 1);
        match direct.get("fresh").await {
            Err(StoreError::NotFound { .. }) => {}
            Ok(got) => assert_eq!(got, new, "stored short"),
            Err(e) => panic!("{e:?}"),
        }

        // Overwriting: the old object stays whole, or the new one is there whole.
        proxy.faults.cut.store(0, Ordering::SeqCst);
        through_proxy
            .put("segment", old.clone())
            .await
            .expect("put old");
        proxy.faults.cut.store(10, Ordering::SeqCst);
        let e = through_proxy
            .put("segment", new.clone())
            .await
            .expect_err("a cut put fails");
        assert!(e.is_transient(), "{e:?}");
        let got = direct.get("segment").await.expect("still there");
        assert!(
            got == old || got == new,
            "stored short: {} bytes",
            got.len()
        );
        let listed = direct.list("").await.expect("list");
        assert!(listed.iter().all(|m| m.size == 300_000), "{listed:?}");

        // Once the network heals, `with_retry` gets the put through.
        let cuts_before = proxy.faults.cuts.load(Ordering::SeqCst);
        proxy.faults.cut.store(1, Ordering::SeqCst);
        with_retry("put after a cut", Duration::from_secs(60), || {
            through_proxy.put("segment", new.clone())
        })
        .await
        .expect("put");
        assert_eq!(proxy.faults.cuts.load(Ordering::SeqCst), cuts_before + 1);
        assert_eq!(direct.get("segment").await.expect("get"), new);
    })
    .await;
}

#[tokio::test]
async fn gets_never_return_a_short_or_changed_body() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    timed(async {
        moto.create_bucket("cold").await;
        let proxy = Proxy::start(moto.port).await;
        let store = S3Store::connect(&s3_config(proxy.url(), "cold", ""))
            .await
            .expect("connect through the proxy");
        let body = Bytes::from(
            (0..200_000u32)
                .map(|i| (i % 253) as u8)
                .collect::<Vec<u8>>(),
        );
        store.put("db/wal/1", body.clone()).await.expect("put");

        // The put carried our SHA-256 for the server to check.
        let sha256 = aws_smithy_types::base64::encode(sha2::Sha256::digest(&body));
        let heads = proxy.faults.heads.lock().expect("heads").clone();
        let put = heads
            .iter()
            .find(|h| h.starts_with("PUT /cold/db/wal/1"))
            .expect("the put went through the proxy");
        assert!(
            put.to_ascii_lowercase().contains(&format!(
                "x-amz-checksum-sha256: {}",
                sha256.to_ascii_lowercase()
            )),
            "{put}"
        );

        // Half the body, then the connection closed: Unavailable, on every
        // attempt the SDK makes.
        proxy.faults.short_response.store(2, Ordering::SeqCst);
        let e = store.get("db/wal/1").await.expect_err("a short body");
        assert!(e.is_transient(), "{e:?}");
        proxy.faults.short_response.store(0, Ordering::SeqCst);

        // A flipped byte: the server's checksum of the object catches it.
        proxy.faults.corrupt_response.store(2, Ordering::SeqCst);
        let e = store.get("db/wal/1").await.expect_err("a changed body");
        assert!(e.is_transient(), "{e:?}");
        proxy.faults.corrupt_response.store(0, Ordering::SeqCst);

        // And `with_retry` gets the whole object once the network heals.
        proxy.faults.short_response.store(1, Ordering::SeqCst);
        let got = with_retry("get", Duration::from_secs(60), || store.get("db/wal/1"))
            .await
            .expect("get");
        assert_eq!(got, body);
    })
    .await;
}
