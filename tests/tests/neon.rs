//! A database on the Neon backend, end to end: the real gateway loads the
//! Neon plugin, which drives the Neon emulator (Neon API v2, real Postgres
//! behind an SNI proxy). The app's URL has the same shape as on native; the
//! gateway reaches the compute over TLS with SNI; Neon's suspend is ours.
//! Failures of Neon's API reach the API caller and the client as clear
//! errors, and leave nothing in the catalog.

use ogel_e2e::{connect, Gateway};

const KEY: &str = "e2e-neon-key";

async fn faults(emu: &ogel_neon_emulator::RunningEmulator, body: serde_json::Value) {
    let client = reqwest::Client::new();
    let url = format!("{}/faults", emu.emulator_url);
    let resp = if body.is_null() {
        client.delete(&url).send().await
    } else {
        client.post(&url).json(&body).send().await
    };
    assert!(resp.expect("emulator reachable").status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neon_database_behind_the_gateway() {
    let (emu, _emu_dir) = ogel_neon_emulator::serve_in_temp_dir("e2e-neon-", KEY)
        .await
        .expect("emulator starts");
    let config = format!(
        "[backends.neon]\napi_key = \"{KEY}\"\napi_url = \"{}\"\nca_file = \"{}\"\nretry_budget_secs = 3\noperation_timeout_secs = 120\n[backends.neon.endpoint_overrides]\n\"*.{}\" = \"{}\"\n",
        emu.api_url,
        emu.ca_path.display(),
        emu.domain,
        emu.proxy_addr
    );
    let gw = Gateway::start_with_config(&config).await;

    // Same URL shape as native; data goes through TLS+SNI to Neon's proxy.
    let (status, made) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "nshop", "backend": "neon"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let url = made["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("postgresql://nshop_owner:") && url.ends_with("/nshop"),
        "{url}"
    );
    let client = connect(&url).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    drop(client);

    // Our suspend is Neon's; a connection wakes it again.
    gw.suspend("nshop").await;
    let n: i64 = connect(&url)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // A failed Neon operation: a clear error, and nothing half-made.
    faults(&emu, serde_json::json!({"fail_next_operation": true})).await;
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "nbad", "backend": "neon"})),
        )
        .await;
    assert!(status >= 400, "{status} {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    let (status, _) = gw.api("GET", "/v1/databases/nbad", None).await;
    assert_eq!(status, 404, "nothing left in the catalog");

    // Rate limited past the plugin's retry budget: said so.
    faults(
        &emu,
        serde_json::json!({"rate_limit_next": 100000, "retry_after_seconds": 1}),
    )
    .await;
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "nbad2", "backend": "neon"})),
        )
        .await;
    assert!(status >= 400, "{status} {body}");
    let message = body["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("rate limited"), "{message}");
    assert!(!message.contains(KEY), "the API key is never shown");
    let (status, _) = gw.api("GET", "/v1/databases/nbad2", None).await;
    assert_eq!(status, 404);
    faults(&emu, serde_json::Value::Null).await;

    // Neon unreachable while the database sleeps: the client gets a
    // clear error, not a hang; back up, it works again.
    gw.suspend("nshop").await;
    faults(&emu, serde_json::json!({"down": true})).await;
    let started = std::time::Instant::now();
    let e = connect(&url).await.expect_err("Neon is down");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "57P03", "{}", db.message());
    faults(&emu, serde_json::Value::Null).await;
    let n: i64 = connect(&url)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    let (status, _) = gw.api("DELETE", "/v1/databases/nshop", None).await;
    assert_eq!(status, 204);
}
