//! Test helpers: an emulator on free ports under a temp dir, a small Neon
//! API client, operation polling and TLS (SNI) connections through the
//! proxy, verified against the emulator's CA.
#![allow(dead_code)]

use ogel_neon_emulator::RunningEmulator;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const KEY: &str = "test-api-key";

/// Tests in one binary share 2 cores with real postgres: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An emulator and its temp dir (the emulator drops first: its computes stop).
pub struct Emu {
    pub emu: RunningEmulator,
    pub api: Api,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Emu {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let (emu, dir) = ogel_neon_emulator::serve_in_temp_dir("neon-emu-test-", KEY)
        .await
        .expect("emulator starts");
    let api = Api::new(&emu.api_url, KEY);
    Emu { emu, api, dir }
}

/// A minimal Neon API client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        Api {
            base: base.to_string(),
            key: key.to_string(),
            client: reqwest::Client::new(),
        }
    }

    pub fn with_key(&self, key: &str) -> Api {
        Api::new(&self.base, key)
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let url = format!("{}{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, &url);
        if !self.key.is_empty() {
            request = request.bearer_auth(&self.key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PATCH", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call("DELETE", path, None).await
    }

    /// Polls the project's operations until none is scheduled or running;
    /// returns them (newest first).
    pub async fn wait_ops(&self, project_id: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (status, body) = self
                .get(&format!("/projects/{project_id}/operations"))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let ops = body["operations"].as_array().cloned().unwrap_or_default();
            if ops
                .iter()
                .all(|o| !matches!(o["status"].as_str(), Some("scheduling" | "running")))
            {
                return ops;
            }
            assert!(
                Instant::now() < deadline,
                "operations did not finish: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits and asserts every operation finished.
    pub async fn wait_ok(&self, project_id: &str) -> Vec<Value> {
        let ops = self.wait_ops(project_id).await;
        for op in &ops {
            assert_eq!(op["status"], "finished", "operation: {op}");
        }
        ops
    }

    /// Waits and asserts the newest `n` operations finished (older ones may have failed).
    pub async fn wait_newest_ok(&self, project_id: &str, n: usize) -> Vec<Value> {
        let ops = self.wait_ops(project_id).await;
        for op in ops.iter().take(n) {
            assert_eq!(op["status"], "finished", "operation: {op}");
        }
        ops
    }

    /// Creates a project and waits for it; returns the creation response.
    pub async fn create_project(&self, name: &str) -> Value {
        let (status, body) = self
            .post("/projects", json!({"project": {"name": name}}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["project"]["id"]
            .as_str()
            .expect("project id")
            .to_string();
        self.wait_ok(&id).await;
        body
    }
}

/// A TLS connection with SNI through the proxy, verified against the CA
/// (`sslmode=verify-full` semantics): host `host`, address 127.0.0.1.
pub async fn connect(
    emu: &RunningEmulator,
    host: &str,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls_config =
        ogel_plugin_kit::tls::client_config(Some(&emu.ca_pem)).expect("the emulator's CA");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .hostaddr(emu.proxy_addr.ip())
        .port(emu.proxy_addr.port())
        .user(user)
        .password(password)
        .dbname(dbname)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(60));
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with the credentials of a project-creation response's first URI.
pub async fn connect_params(emu: &RunningEmulator, params: &Value) -> tokio_postgres::Client {
    connect(
        emu,
        params["host"].as_str().expect("host"),
        params["role"].as_str().expect("role"),
        params["password"].as_str().expect("password"),
        params["database"].as_str().expect("database"),
    )
    .await
    .expect("connects through the proxy")
}

/// Polls until `f` is true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs psql with a conninfo string; returns (success, stdout, stderr).
pub fn psql(conninfo: &str, sql: &str, env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new("psql");
    cmd.arg("-X")
        .arg("-At")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(sql)
        .arg(conninfo)
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env("PGCONNECT_TIMEOUT", "30");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}
