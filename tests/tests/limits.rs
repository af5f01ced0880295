//! Admission limits, end to end: failed logins back an address off (even
//! the right password waits), and clients in all are bounded.

use ogel_e2e::{connect, sqlstate, with_password, Gateway};
use std::time::Duration;

#[tokio::test]
async fn failed_logins_back_off_and_connections_are_bounded() {
    let gw = Gateway::start_with(&[
        ("OGEL_LIMITS__AUTH_FAILURES_BEFORE_BACKOFF", "3"),
        ("OGEL_LIMITS__MAX_CONNECTIONS", "4"),
    ])
    .await;
    let wrong = with_password(&gw.app_url, "wrong");
    for _ in 0..3 {
        assert_eq!(sqlstate(&connect(&wrong).await.unwrap_err()), "28P01");
    }
    let err = connect(&gw.app_url).await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "28000",
        "the right password waits too: {err}"
    );
    assert!(format!("{err:?}").contains("retry in"), "{err:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = connect(&gw.app_url).await.expect("after the backoff");
    // Three more clients fill the gateway (4 in all); the fifth is refused.
    let _b = connect(&gw.app_url).await.unwrap();
    let _c = connect(&gw.app_url).await.unwrap();
    let _d = connect(&gw.app_url).await.unwrap();
    let err = connect(&gw.app_url).await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    connect(&gw.app_url).await.expect("room again");
}
