//! Warm compute: `min_warm` keeps computes running; the pre-wake predictor
//! learns when clients arrive and wakes the compute ahead of them (a short
//! period stands in for a day); autoprewarm keeps pages warm across a
//! suspend.

use ogel_e2e::{connect, eventually, Gateway};
use std::time::{Duration, Instant};

#[tokio::test]
async fn min_warm_keeps_a_compute_running() {
    let gw = Gateway::start().await;
    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "hot", "suspend_after_secs": 1, "min_warm": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["database"]["min_warm"], 1);
    let url = body["url"].as_str().unwrap().to_string();
    connect(&url)
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        gw.db("hot").await["compute"]["state"],
        "running",
        "not suspended when idle"
    );
    gw.suspend("hot").await;
    let running = || async { gw.db("hot").await["compute"]["state"] == "running" };
    assert!(
        eventually(Duration::from_secs(10), running).await,
        "woken again"
    );
}

#[tokio::test]
async fn a_compute_is_woken_ahead_of_its_clients_usual_arrival() {
    let gw =
        Gateway::start_with(&[("OGEL_PREWAKE__PERIOD", "8s"), ("OGEL_PREWAKE__LEAD", "3s")]).await;
    let url = gw.create_db("daily", Some(3)).await;
    let t0 = Instant::now();
    let visit = || async {
        let client = connect(&url).await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
    };
    visit().await; // period 0
    tokio::time::sleep_until((t0 + Duration::from_secs(8)).into()).await;
    visit().await; // period 1: a habit
                   // Suspended after 3 s idle, then woken ~3 s before the next visit.
    tokio::time::sleep_until((t0 + Duration::from_millis(15_500)).into()).await;
    let db = gw.db("daily").await;
    assert_eq!(db["compute"]["state"], "running", "pre-woken: {db}");
    assert_eq!(db["compute"]["active_clients"], 0);
    tokio::time::sleep_until((t0 + Duration::from_secs(16)).into()).await;
    visit().await;
    let hit = || async {
        gw.metrics()
            .await
            .contains("ogel_prewake_hits_total{compute=\"daily\"} 1")
    };
    assert!(
        eventually(Duration::from_secs(5), hit).await,
        "the pre-wake is scored a hit"
    );
}
