//! TLS on the Postgres listener with psql (libpq): the generated local CA
//! and certificate work with sslmode=require and verify-full, the SNI name
//! `<db>--<branch>.localhost` selects a branch, and a name that disagrees
//! with the database asked for is refused.

use ogel_e2e::{connect, password_of, psql, Gateway};

#[tokio::test]
async fn tls_verify_full_and_sni_routing() {
    let gw = Gateway::start().await;
    let ca = gw.data_dir.join("tls/ca.pem");
    assert!(ca.exists(), "a local CA is made on first start");
    let password = password_of(&gw.app_url).to_string();
    let port = gw.pg_addr.rsplit(':').next().unwrap().to_string();
    let base = format!(
        "port={port} user=app_owner password={password} sslrootcert={}",
        ca.display()
    );

    assert_eq!(
        psql(
            &format!("{}?sslmode=require", gw.app_url),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .unwrap(),
        "f",
        "TLS ends at the gateway; the compute link is loopback"
    );
    assert_eq!(
        psql(
            &format!("host=localhost dbname=app sslmode=verify-full {base}"),
            "SELECT 1"
        )
        .unwrap(),
        "1"
    );
    assert_eq!(
        psql(
            &format!("host=127.0.0.1 dbname=app sslmode=verify-full {base}"),
            "SELECT 1"
        )
        .unwrap(),
        "1"
    );

    let client = connect(&gw.app_url).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let out = gw.cli(&["branch", "create", "app", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    connect(&format!("{}@dev", gw.app_url))
        .await
        .unwrap()
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    let sni = format!("host=app--dev.localhost hostaddr=127.0.0.1 sslmode=verify-full {base}");
    assert_eq!(
        psql(&format!("{sni} dbname=app"), "SELECT count(*) FROM t").unwrap(),
        "2",
        "SNI selects the branch"
    );
    let err = psql(&format!("{sni} dbname=other"), "SELECT 1").unwrap_err();
    assert!(
        err.contains("TLS server name selects database \"app\""),
        "{err}"
    );
    let err = psql(&format!("{sni} dbname=app@main"), "SELECT 1").unwrap_err();
    assert!(err.contains("selects branch \"dev\""), "{err}");
    // A wrong CA is refused by the client, as it should be.
    let other_ca = gw.data_dir.join("tls/server.pem");
    let err = psql(&format!("host=localhost port={port} user=app_owner password={password} dbname=app sslmode=verify-full sslrootcert={}", other_ca.display()), "SELECT 1").unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}
