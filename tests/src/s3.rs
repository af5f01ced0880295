//! An S3-compatible server for tests: moto in server mode on a free port
//! (installed by scripts/test; a clear panic saying so when it is not),
//! with a plain aws-sdk-s3 client to make buckets and look behind the
//! store, and the HTTP head helpers the tests' fault-injecting proxies use.
//! Stopped when dropped, also when a test fails.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// moto accepts any key; the AWS chain must never look for a profile or
/// an instance role in tests.
pub fn aws_env() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_PROFILE");
    std::env::remove_var("AWS_SESSION_TOKEN");
    std::env::remove_var("AWS_REGION");
    std::env::remove_var("AWS_ENDPOINT_URL");
}

/// moto in server mode.
pub struct Moto {
    child: Child,
    /// Its port.
    pub port: u16,
    log: tempfile::NamedTempFile,
    /// A client to it.
    pub client: aws_sdk_s3::Client,
}

impl Moto {
    /// Starts moto on a free port and waits until it listens.
    pub async fn start() -> Moto {
        aws_env();
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
        let client = s3_client(port).await;
        Moto {
            child,
            port,
            log,
            client,
        }
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Makes bucket `bucket`.
    pub async fn create_bucket(&self, bucket: &str) {
        self.client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}\n{}", self.log()));
    }

    /// Every key in the bucket under `prefix`, as S3 sees them.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
        }
        keys.sort();
        keys
    }

    /// One object's bytes, as stored.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        output
            .body
            .collect()
            .await
            .expect("object body")
            .into_bytes()
            .to_vec()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain client to moto on `port`.
pub async fn s3_client(port: u16) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Reads up to the end of an HTTP head; returns the head and whatever was
/// read past it.
pub async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
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
pub fn close_head(head: &[u8], request: bool) -> std::io::Result<(Vec<u8>, usize)> {
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
