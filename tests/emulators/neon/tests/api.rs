//! The Neon API surface without much data: auth, error shapes, status
//! codes, validation and injected API faults.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

fn assert_neon_error(body: &serde_json::Value) {
    assert!(body["code"].is_string(), "Neon error shape: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "Neon error shape: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_validation_and_api_faults() {
    let _serial = SERIAL.lock().await;
    let e = start().await;
    let api = &e.api;

    // 401 without a key and with a wrong key, in Neon's error shape.
    let (status, body) = api.with_key("").get("/projects").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_neon_error(&body);
    let (status, body) = api.with_key("wrong").get("/projects").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_neon_error(&body);
    let (status, body) = api.get("/projects").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["projects"], json!([]));

    // 404s for unknown ids and routes.
    let (status, body) = api.get("/projects/no-such-project-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_neon_error(&body);
    let (status, body) = api.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_neon_error(&body);

    // 400 for bad bodies.
    let (status, body) = api.call("POST", "/projects", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_neon_error(&body);
    let (status, body) = api.post("/projects", json!({"project": {"name": 5}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_neon_error(&body);
    let (status, body) = api
        .post("/projects", json!({"project": {"pg_version": 9}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Injected 429s (with Retry-After), then 500s, then down (503), then back.
    let faults = reqwest::Client::new();
    let set = |body: serde_json::Value| {
        let faults = faults.clone();
        let url = format!("{}/faults", e.emu.emulator_url);
        async move {
            let r = faults
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("faults set");
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    set(json!({"rate_limit_next": 2, "retry_after_seconds": 3})).await;
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .get(format!("{}/projects", api.base))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_neon_error(&body);
    }
    assert_eq!(api.get("/projects").await.0, StatusCode::OK);
    set(json!({"server_error_next": 1})).await;
    assert_eq!(
        api.get("/projects").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(api.get("/projects").await.0, StatusCode::OK);
    set(json!({"down": true})).await;
    let (status, body) = api.get("/projects").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_neon_error(&body);
    // The fault endpoints themselves stay up.
    let current: serde_json::Value = faults
        .get(format!("{}/faults", e.emu.emulator_url))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(current["down"], true);
    let cleared = faults
        .delete(format!("{}/faults", e.emu.emulator_url))
        .send()
        .await
        .expect("sent");
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(api.get("/projects").await.0, StatusCode::OK);
    // Unknown fault fields are refused.
    let r = faults
        .post(format!("{}/faults", e.emu.emulator_url))
        .json(&json!({"rate_limit_nxt": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    e.emu.shutdown().await;
}
