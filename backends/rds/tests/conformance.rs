//! The RDS plugin through the real gateway: `ogel plugins check
//! libogel_backend_rds.so --config <section>` (the conformance kit: a
//! throwaway gateway on the plugin, driven through its API and real
//! Postgres connections), with moto as RDS and a real PostgreSQL behind
//! `endpoint_overrides`.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// `ogel` and the plugin library, built next to this test's binary
/// (`cargo build -p ogel -p ogel-backend-rds`; scripts/test builds the workspace).
fn artifacts() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/conformance-xxxx → target/debug/
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let ogel = std::env::var_os("OGEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("ogel"));
    let so = dir.join("libogel_backend_rds.so");
    for f in [&ogel, &so] {
        assert!(
            f.exists(),
            "{} is missing: run `cargo build -p ogel -p ogel-backend-rds` (scripts/test builds the workspace)",
            f.display()
        );
    }
    (ogel, so)
}

#[test]
fn the_rds_plugin_passes_the_conformance_suite() {
    conformance(false, false);
}

/// With `engine = "aurora-postgresql"`: clusters, copy-on-write clones as
/// branches, cluster snapshots, stop/start cluster.
#[test]
fn the_rds_plugin_passes_the_conformance_suite_on_aurora() {
    conformance(false, true);
}

/// The same with TLS to the instances: the gateway's compute connections
/// (ABI 1.2 `ComputeEndpoint.tls`) and the plugin's master connections
/// verify the RDS host name against the configured CA.
#[test]
fn the_rds_plugin_passes_the_conformance_suite_over_tls() {
    conformance(true, false);
}

fn conformance(tls: bool, aurora: bool) {
    let _serial = SERIAL.blocking_lock();
    let (ogel, so) = artifacts();
    let started = Instant::now();
    let moto = Moto::start();
    let pg = Postgres::start_with(&master_password(), tls);
    let tls_keys = match &pg.ca_file {
        Some(ca) => format!("tls = true\nca_file = \"{}\"\n", ca.display()),
        None => "tls = false\n".to_string(),
    };
    let engine = if aurora {
        "engine = \"aurora-postgresql\"\n"
    } else {
        ""
    };
    let section = format!(
        r#"region = "us-east-1"
endpoint_url = "{}"
secret = "{SECRET}"
master_username = "{MASTER}"
{tls_keys}{engine}shared_data_server = true
poll_interval = "100ms"
create_timeout = "60s"
start_timeout = "20s"
stop_timeout = "10s"
snapshot_timeout = "60s"
delete_timeout = "20s"
endpoint_overrides = {{ "*.rds.amazonaws.com" = "127.0.0.1:{}" }}
"#,
        moto.url(),
        pg.port
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("rds.toml");
    std::fs::write(&toml, section).expect("config");
    let out = Command::new(&ogel)
        .args(["plugins", "check"])
        .arg(&so)
        .arg("--config")
        .arg(&toml)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("OGEL_API")
        .output()
        .expect("ogel runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{stdout}\n{stderr}\n(conformance took {:?})",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "conformance failed:\n{stdout}\n{stderr}\nmoto actions: {:?}\npostgres log:\n{}",
        moto.actions(),
        pg.log()
    );
    assert!(
        stdout.contains("plugin rds passes the conformance suite"),
        "{stdout}"
    );
    for step in [
        "ok    create a database",
        "ok    connect through the gateway, write and read back",
        "ok    suspend, then a connection wakes it",
        "ok    a branch is a writable copy",
        "ok    a snapshot is listed and restores as a branch",
        "ok    delete the database",
    ] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The conformance ran on moto: instances (Aurora: clusters) were made,
    // stopped, started, snapshotted, restored and deleted there.
    let actions = moto.actions();
    let expected: &[&str] = if aurora {
        &[
            "CreateDBCluster",
            "CreateDBInstance",
            "StopDBCluster",
            "StartDBCluster",
            "RestoreDBClusterToPointInTime",
            "CreateDBClusterSnapshot",
            "RestoreDBClusterFromSnapshot",
            "DeleteDBInstance",
            "DeleteDBCluster",
        ]
    } else {
        &[
            "CreateDBInstance",
            "StopDBInstance",
            "StartDBInstance",
            "CreateDBSnapshot",
            "RestoreDBInstanceFromDBSnapshot",
            "DeleteDBInstance",
        ]
    };
    for &action in expected {
        assert!(actions.iter().any(|a| a == action), "{action} never called");
    }
    // No secret in the gateway's output.
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    assert!(!stdout.contains(&master_password()) && !stderr.contains(&master_password()));
}
