//! Any client works: real drivers in other languages drive the gateway —
//! psycopg 3 (Python), node-postgres (JavaScript) and pgjdbc (Java, when a
//! JVM is on the machine) — through simple and extended queries, prepared
//! statements, a rolled-back transaction, COPY in and out, LISTEN/NOTIFY,
//! client encodings other than UTF-8 (LATIN9, EUC_JP, SJIS, BIG5, GBK) and
//! statement-cache churn. The client programs live in tests/clients/;
//! scripts/test installs the drivers, and a missing driver fails the test.

use ogel_e2e::Gateway;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// tests/clients/.
fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `program args…`, failing the test with its output unless it exits 0
/// and prints `ok_line` on a line of its own.
async fn run_client(program: &str, args: &[String], ok_line: &str) {
    // The script, not the URL: that holds the password.
    let what = format!(
        "{program} {}",
        args.first().map(String::as_str).unwrap_or("")
    );
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(clients_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): run scripts/test, which installs it")
        });
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 300 s"))
        .expect("client output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().any(|l| l.trim() == ok_line),
        "{what} failed ({}), expected a line {ok_line:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    // Visible with --nocapture: the steps each client took.
    println!("{stdout}");
}

/// Fails — never skips — unless `program args…` exits 0.
fn require(program: &str, args: &[&str], what: &str) {
    let ok = std::process::Command::new(program)
        .args(args)
        .current_dir(clients_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{what} is missing: run scripts/test, which installs it (`{program} {}` failed)",
        args.join(" ")
    );
}

#[tokio::test]
async fn psycopg3_python_driver() {
    require(
        "python3",
        &["-c", "import psycopg"],
        "the Python driver psycopg 3 (PyPI psycopg[binary])",
    );
    let gw = Gateway::start().await;
    let script = clients_dir().join("psycopg_client.py");
    run_client(
        "python3",
        &[script.display().to_string(), gw.app_url.clone()],
        "OK psycopg",
    )
    .await;
}

#[tokio::test]
async fn node_postgres_driver() {
    require("node", &["--version"], "Node.js (Debian package nodejs)");
    let node_dir = clients_dir().join("node");
    assert!(
        node_dir.join("node_modules/pg").is_dir()
            && node_dir.join("node_modules/pg-copy-streams").is_dir(),
        "node-postgres (npm pg, pg-copy-streams) is missing under {}: run scripts/test, \
         which installs it (npm ci --prefix tests/clients/node)",
        node_dir.display()
    );
    let gw = Gateway::start().await;
    let script = node_dir.join("pg_client.js");
    run_client(
        "node",
        &[script.display().to_string(), gw.app_url.clone()],
        "OK node-postgres",
    )
    .await;
}

/// psycopg 3 in LATIN9, EUC_JP, SJIS, BIG5 and GBK (every character the
/// server converts, identifiers, notices, errors, COPY, settings), startup
/// spellings, notification pids and statement churn, in `mode`, on a pool
/// of two so clients take turns on the same server connections.
async fn psycopg3_encodings(mode: &str) {
    require(
        "python3",
        &["-c", "import psycopg"],
        "the Python driver psycopg 3 (PyPI psycopg[binary])",
    );
    let gw = Gateway::start_with(&[("OGEL_POOL__MODE", mode), ("OGEL_POOL__SIZE", "2")]).await;
    let script = clients_dir().join("psycopg_encodings.py");
    run_client(
        "python3",
        &[script.display().to_string(), gw.app_url.clone()],
        "OK encodings",
    )
    .await;
}

#[tokio::test]
async fn psycopg3_in_other_encodings_transaction_mode() {
    psycopg3_encodings("transaction").await;
}

#[tokio::test]
async fn psycopg3_in_other_encodings_session_mode() {
    psycopg3_encodings("session").await;
}

#[tokio::test]
async fn node_postgres_in_other_encodings() {
    require("node", &["--version"], "Node.js (Debian package nodejs)");
    let node_dir = clients_dir().join("node");
    assert!(
        node_dir.join("node_modules/pg").is_dir(),
        "node-postgres is missing under {}: run scripts/test (npm ci --prefix tests/clients/node)",
        node_dir.display()
    );
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "2")]).await;
    run_client(
        "node",
        &[
            node_dir.join("pg_encodings.js").display().to_string(),
            gw.app_url.clone(),
        ],
        "OK node-postgres encodings",
    )
    .await;
}

/// pgjdbc (Debian libpostgresql-jdbc-java) when a JVM is on the machine:
/// server-side statements closed and prepared again from several threads,
/// results in LATIN9, EUC_JP and SJIS, notification pids. Skips, saying
/// so, without `java`; fails without the jar where there is one
/// (scripts/test installs it).
#[tokio::test]
async fn pgjdbc_driver() {
    let has_java = std::process::Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_java {
        eprintln!("pgjdbc_driver: skipped: no JVM (java) on this machine");
        return;
    }
    let jar = PathBuf::from("/usr/share/java/postgresql.jar");
    assert!(
        jar.is_file(),
        "pgjdbc is missing ({}): run scripts/test, which installs Debian's libpostgresql-jdbc-java",
        jar.display()
    );
    let gw = Gateway::start_with(&[("OGEL_POOL__SIZE", "2")]).await;
    run_client(
        "java",
        &[
            "-cp".into(),
            jar.display().to_string(),
            clients_dir()
                .join("jdbc/PgjdbcClient.java")
                .display()
                .to_string(),
            gw.app_url.clone(),
        ],
        "OK pgjdbc",
    )
    .await;
}
