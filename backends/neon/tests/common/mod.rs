//! Test helpers: a Neon emulator on free ports under a temp dir, the
//! plugin's configuration pointing at it, fault injection, raw API reads,
//! and TLS (SNI) connections to a `ComputeEndpoint` as the gateway makes
//! them (server name and CA from `tls`, TCP to `host:port`).
#![allow(dead_code)]

use ogel_neon_emulator::RunningEmulator;
use ogel_plugin_sdk::{ComputeEndpoint, Credentials};
use serde_json::{json, Value};
use std::time::Duration;

pub const KEY: &str = "neon-plugin-test-key";

/// Tests in one binary share 2 cores with real postgres: one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An emulator and its temp dir (the emulator drops first: its computes stop).
pub struct Emu {
    pub emu: RunningEmulator,
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
    let (emu, dir) = ogel_neon_emulator::serve_in_temp_dir("neon-plugin-test-", KEY)
        .await
        .expect("emulator starts");
    Emu { emu, dir }
}

impl Emu {
    /// The plugin's configuration section for this emulator.
    pub fn config(&self) -> Value {
        json!({
            "api_key": KEY,
            "api_url": self.emu.api_url,
            "ca_file": self.emu.ca_path,
            "endpoint_overrides": { format!("*.{}", self.emu.domain): self.emu.proxy_addr.to_string() },
            "retry_budget_secs": 20,
            "operation_timeout_secs": 120,
        })
    }

    /// The same section as TOML lines (what follows `[backends.neon]`).
    pub fn config_toml(&self) -> String {
        format!(
            "api_key = \"{KEY}\"\napi_url = \"{}\"\nca_file = \"{}\"\nretry_budget_secs = 20\noperation_timeout_secs = 120\nendpoint_overrides = {{ \"*.{}\" = \"{}\" }}\n",
            self.emu.api_url,
            self.emu.ca_path.display(),
            self.emu.domain,
            self.emu.proxy_addr
        )
    }

    /// Sets faults (`POST /_emulator/faults`).
    pub async fn faults(&self, faults: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/faults", self.emu.emulator_url))
            .json(&faults)
            .send()
            .await
            .expect("faults request");
        assert!(
            response.status().is_success(),
            "faults: {}",
            response.status()
        );
    }

    /// Clears every fault.
    pub async fn clear_faults(&self) {
        reqwest::Client::new()
            .delete(format!("{}/faults", self.emu.emulator_url))
            .send()
            .await
            .expect("clear faults");
    }

    /// A raw Neon API call with the right key: (status, body).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.emu.api_url))
            .bearer_auth(KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("api body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Names of every project (through the API, faults cleared first).
    pub async fn project_names(&self) -> Vec<String> {
        self.clear_faults().await;
        let (status, body) = self
            .api(reqwest::Method::GET, "/projects?limit=400", None)
            .await;
        assert_eq!(status, 200, "{body}");
        let mut names: Vec<String> = body["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_string())
            .collect();
        names.sort();
        names
    }

    /// The id of the project named `name`.
    pub async fn project_id(&self, name: &str) -> String {
        let (_, body) = self
            .api(reqwest::Method::GET, "/projects?limit=400", None)
            .await;
        body["projects"]
            .as_array()
            .expect("projects")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["id"].as_str())
            .expect("project exists")
            .to_string()
    }
}

/// Connects to `ep` as the gateway does: TLS with SNI `tls.server_name`,
/// verified against `tls.ca_pem`, TCP to `host:port`.
pub async fn connect(
    ep: &ComputeEndpoint,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = ep
        .tls
        .as_ref()
        .expect("a Neon endpoint is reached over TLS");
    let pem = tls
        .ca_pem
        .as_deref()
        .expect("the emulator's CA is configured");
    let tls_config = ogel_plugin_kit::tls::client_config(Some(pem)).expect("the emulator's CA");
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
    let Credentials::Password { user, password } = &ep.credentials;
    let mut config = tokio_postgres::Config::new();
    config
        .host(&tls.server_name)
        .hostaddr(ep.host.parse().expect("the override is an IP address"))
        .port(ep.port)
        .user(user)
        .password(password)
        .dbname(&ep.database)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(60));
    let (client, connection) = config.connect(connector).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The ids in table `t`, sorted.
pub async fn ids(ep: &ComputeEndpoint) -> Vec<i32> {
    let client = connect(ep).await.expect("connects");
    client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect()
}
