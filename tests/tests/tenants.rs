//! Tenants and isolation: tenant A's credentials never reach tenant B's
//! database, by any path — the HTTP API with A's admin token (B's database
//! is "not found", gateway-wide routes are forbidden), A's token URL with
//! B's database name, B's SNI name or a branch name, A's owner password on
//! B's database, and the admin console. A tenant's client limit holds.

use ogel_e2e::{connect, sqlstate, with_password, Gateway};

fn psql(conninfo: &str) -> Result<String, String> {
    ogel_e2e::psql(conninfo, "SELECT current_database()")
}

/// Calls the API with `token`.
async fn api(
    gw: &Gateway,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", gw.api))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn tenant(gw: &Gateway, name: &str, max_clients: &str) -> String {
    let out = gw.cli(&["tenants", "create", name, "--max-clients", max_clients]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_never_reaches_another() {
    let gw = Gateway::start().await;
    let a = tenant(&gw, "acme", "3");
    let b = tenant(&gw, "bravo", "10");

    // Each tenant creates its own database with its own token.
    let (status, made) = api(
        &gw,
        &a,
        "POST",
        "/v1/databases",
        Some(serde_json::json!({"name": "adb"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["database"]["tenant"], "acme");
    let a_url = made["url"].as_str().unwrap().to_string();
    let (status, made) = api(
        &gw,
        &b,
        "POST",
        "/v1/databases",
        Some(serde_json::json!({"name": "bdb"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let b_url = made["url"].as_str().unwrap().to_string();
    connect(&b_url)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE secret (s text); INSERT INTO secret VALUES ('b only')")
        .await
        .unwrap();

    // The HTTP API: A sees only its own; B's database is not found by
    // every route; gateway-wide routes are forbidden.
    let (status, list) = api(&gw, &a, "GET", "/v1/databases", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["adb"], "A lists only its databases");
    for (method, path, body) in [
        ("GET", "/v1/databases/bdb", None),
        ("DELETE", "/v1/databases/bdb", None),
        ("POST", "/v1/databases/bdb/suspend", None),
        ("POST", "/v1/databases/bdb/password", None),
        (
            "POST",
            "/v1/databases/bdb/branches",
            Some(serde_json::json!({"name": "x"})),
        ),
        ("GET", "/v1/databases/bdb/branches", None),
        (
            "POST",
            "/v1/databases/bdb/tokens",
            Some(serde_json::json!({})),
        ),
        ("GET", "/v1/databases/bdb/snapshots", None),
        ("GET", "/v1/databases/app", None),
    ] {
        let (status, body) = api(&gw, &a, method, path, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/tenants"),
        ("POST", "/v1/keys/rotate"),
        ("POST", "/v1/reload"),
        ("GET", "/v1/plugins"),
    ] {
        let (status, body) = api(&gw, &a, method, path, None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    let (status, _) = api(
        &gw,
        &a,
        "POST",
        "/v1/databases",
        Some(serde_json::json!({"name": "sneaky", "tenant": "bravo"})),
    )
    .await;
    assert_eq!(status, 403, "A cannot create for B");
    let (status, ops) = api(&gw, &a, "GET", "/v1/operations", None).await;
    assert_eq!(status, 200, "a tenant lists its own operations: {ops}");
    let (status, _) = api(&gw, "ogt_wrong", "GET", "/v1/databases", None).await;
    assert_eq!(status, 401);
    // B's token id cannot be revoked by A.
    let (status, b_token) = api(
        &gw,
        &b,
        "POST",
        "/v1/databases/bdb/tokens",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 201, "{b_token}");
    let b_token_id = b_token["record"]["id"].as_str().unwrap();
    let (status, _) = api(
        &gw,
        &a,
        "POST",
        &format!("/v1/tokens/{b_token_id}/revoke"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The wire: A's token URL aimed at B's database by name, by SNI, by
    // branch, or at the admin console.
    let (status, a_token) = api(
        &gw,
        &a,
        "POST",
        "/v1/databases/adb/tokens",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 201, "{a_token}");
    let a_token_url = a_token["url"].as_str().unwrap().to_string();
    assert_eq!(psql(&a_token_url).unwrap(), "adb");
    let err = psql(&a_token_url.replace("/adb?", "/bdb?")).unwrap_err();
    assert!(err.contains("it is for database \"adb\""), "{err}");
    let token = a_token["token"].as_str().unwrap();
    let port = gw.pg_addr.rsplit(':').next().unwrap();
    let sni =
        format!("host=bdb.localhost hostaddr=127.0.0.1 port={port} user={token} sslmode=require");
    let err = psql(&sni).unwrap_err();
    assert!(
        err.contains("it is for database \"adb\""),
        "SNI of B: {err}"
    );
    let err = psql(&format!("{sni} dbname=adb")).unwrap_err();
    assert!(
        err.contains("TLS server name selects database \"bdb\""),
        "{err}"
    );
    // B makes a branch; A's token cannot name it.
    let (status, _) = api(
        &gw,
        &b,
        "POST",
        "/v1/databases/bdb/branches",
        Some(serde_json::json!({"name": "dev"})),
    )
    .await;
    assert_eq!(status, 201);
    let err = psql(&a_token_url.replace("/adb?", "/bdb@dev?")).unwrap_err();
    assert!(err.contains("token refused"), "{err}");
    // The admin console takes neither tokens nor tenant tokens.
    let err = psql(&format!("postgresql://{token}:{token}@{}/ogel", gw.pg_addr)).unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    let err = psql(&format!("postgresql://ogel:{a}@{}/ogel", gw.pg_addr)).unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");

    // A's owner password on B's database (and B's owner with A's password).
    let a_password = ogel_e2e::password_of(&a_url);
    let a_as_b = with_password(&b_url, a_password);
    let e = connect(&a_as_b).await.expect_err("refused");
    assert_eq!(sqlstate(&e), "28P01");
    let a_owner_on_b = a_url.replace("/adb", "/bdb");
    let e = connect(&a_owner_on_b).await.expect_err("refused");
    assert_eq!(sqlstate(&e), "28P01");

    // The tenant's client limit (3 at once across its databases).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&a_url).await.unwrap());
    }
    let e = connect(&a_url)
        .await
        .expect_err("a fourth client is refused");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("tenant \"acme\""), "{message}");
    connect(&b_url).await.expect("another tenant is unaffected");
    held.pop();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    connect(&a_url).await.expect("a slot was freed");

    // A tenant that still owns databases stays.
    let out = gw.cli(&["tenants", "delete", "acme"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still owns adb"));
}
