//! Token URLs end to end: `ogel db url app --token` prints a URL that works
//! unmodified in psql (libpq), psycopg, node-postgres and tokio-postgres
//! with TLS; the token also works as the password of user `token`;
//! read-only tokens are served by a role that cannot write; tokens are
//! bound to their database and branch; revocation, expiry, tampering, key
//! rotation and removal behave; the JWKS verifies the signatures; and no
//! token or password reaches the gateway's log.

use base64::Engine;
use ogel_e2e::{password_of, psql, psql_with as psql_env, sqlstate, Gateway};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `ogel db url …` with the given flags: the URL on stdout.
fn mint(gw: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["db", "url"];
    all.extend_from_slice(args);
    let out = gw.cli(&all);
    assert!(
        out.status.success(),
        "ogel {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn token_of(url: &str) -> String {
    url.trim_start_matches("postgresql://")
        .split('@')
        .next()
        .unwrap()
        .to_string()
}

fn cli_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.cli(args);
    assert!(
        out.status.success(),
        "ogel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/node")
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): run scripts/test"));
    assert!(
        out.status.success(),
        "{program} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// tokio-postgres over rustls, trusting the gateway's CA.
async fn tokio_connect(
    url: &str,
    ca: &Path,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("CA file");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("CA cert")).expect("CA added");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, connection) = tokio_postgres::connect(url, tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The gateway's JWKS document.
async fn fetch_jwks(gw: &Gateway) -> serde_json::Value {
    reqwest::get(format!("{}/.well-known/jwks.json", gw.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Checks an Ed25519 JWT's signature against the gateway's JWKS.
fn verifies_with_jwks(token: &str, jwks: &serde_json::Value) -> bool {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let Some(key) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    let public = b64.decode(key["x"].as_str().unwrap()).unwrap();
    let signature = b64.decode(parts[2]).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .is_ok()
}

// Multi-threaded: the blocking psql/CLI calls must not starve the
// tokio-postgres connection tasks (a dropped client's Terminate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_urls_work_in_every_driver_and_are_bound_to_their_grant() {
    let gw = Gateway::start_with(&[("OGEL_LOG", "debug")]).await;
    let ca = gw.data_dir.join("tls/ca.pem");
    let ca_s = ca.display().to_string();

    // Minted by the CLI: the token is the user name, TLS is asked for.
    let url = mint(&gw, &["app", "--token"]);
    assert!(url.starts_with("postgresql://eyJ"), "{url}");
    assert!(url.ends_with("/app?sslmode=require"), "{url}");
    let token = token_of(&url);
    assert!(token.len() > 300, "a long user name: {} bytes", token.len());

    // psql / libpq.
    psql(&url, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)").unwrap();
    assert_eq!(psql(&url, "SELECT current_user").unwrap(), "app_owner");
    assert_eq!(
        psql(
            &format!("{url}&sslmode=verify-full&sslrootcert={ca_s}"),
            "SELECT 1"
        )
        .unwrap(),
        "1"
    );
    // psycopg 3.
    let py = run(
        "python3",
        &[
            "-c",
            "import psycopg, sys\nwith psycopg.connect(sys.argv[1]) as c:\n    c.execute('INSERT INTO t VALUES (2)')\n    print(c.execute('SELECT count(*) FROM t').fetchone()[0])",
            &url,
        ],
        Path::new("."),
    );
    assert_eq!(py, "2");
    // node-postgres, verifying the gateway's certificate with its CA.
    let js = run(
        "node",
        &[
            "-e",
            "const { Client } = require('pg'); (async () => { const c = new Client({ connectionString: process.argv[1] }); await c.connect(); await c.query('INSERT INTO t VALUES (3)'); const r = await c.query('SELECT count(*)::int AS n FROM t'); console.log(r.rows[0].n); await c.end(); })().catch(e => { console.error(e); process.exit(1); });",
            &format!("{url}&sslrootcert={ca_s}"),
        ],
        &node_dir(),
    );
    assert_eq!(js, "3");
    // tokio-postgres over rustls.
    let client = tokio_connect(&url, &ca).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    // The token as the password of user `token` (cleartext, over TLS).
    let host = gw.pg_addr.clone();
    let pw_url = format!("postgresql://token@{host}/app?sslmode=require");
    assert_eq!(
        psql_env(&pw_url, "SELECT count(*) FROM t", &[("PGPASSWORD", &token)]).unwrap(),
        "3"
    );
    let err = psql_env(&pw_url, "SELECT 1", &[("PGPASSWORD", "eyJnope.nope.nope")]).unwrap_err();
    assert!(err.contains("token authentication failed"), "{err}");

    // Read-only: reads work, writes fail whatever the session sets.
    let ro = mint(&gw, &["app", "--token", "--read-only", "--ttl", "1h"]);
    assert_eq!(psql(&ro, "SELECT count(*) FROM t").unwrap(), "3");
    let client = tokio_connect(&ro, &ca).await.unwrap();
    let e = client
        .batch_execute("INSERT INTO t VALUES (9)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "25006", "{e}");
    client
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    let e = client
        .batch_execute("INSERT INTO t VALUES (9)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "the role itself cannot write: {e}");
    let e = client
        .batch_execute("BEGIN READ WRITE; CREATE TABLE u (n int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    drop(client);
    assert_eq!(
        psql(&url, "SELECT count(*) FROM t").unwrap(),
        "3",
        "nothing written"
    );

    // Bound to its database and branch.
    let other = url.replace("/app?", "/postgres?");
    let err = psql(&other, "SELECT 1").unwrap_err();
    assert!(err.contains("it is for database \"app\""), "{err}");
    let out = gw.cli(&["branch", "create", "app", "dev"]);
    if !out.status.success() {
        let admin = gw.admin().await;
        for q in ["SHOW POOLS", "SHOW SERVERS", "SHOW CLIENTS"] {
            for m in admin.simple_query(q).await.unwrap() {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    eprintln!(
                        "DEBUG {q}: {:?}",
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("").to_string())
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
        panic!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let err = psql(&url.replace("/app?", "/app@dev?"), "SELECT 1").unwrap_err();
    assert!(err.contains("it is for branch \"main\""), "{err}");
    let dev = mint(&gw, &["app", "--token", "--branch", "dev"]);
    psql(&dev, "INSERT INTO t VALUES (4)").unwrap();
    assert_eq!(
        psql(&dev, "SELECT count(*) FROM t").unwrap(),
        "4",
        "the dev branch"
    );
    assert_eq!(
        psql(&url, "SELECT count(*) FROM t").unwrap(),
        "3",
        "main untouched"
    );

    // Tampering: a changed signature is refused.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let err = psql(&url.replace(&token, &forged), "SELECT 1").unwrap_err();
    assert!(err.contains("token authentication failed"), "{err}");

    // Expiry.
    let short = mint(&gw, &["app", "--token", "--ttl", "1s"]);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let err = psql(&short, "SELECT 1").unwrap_err();
    assert!(err.contains("expired"), "{err}");

    // Revocation by id.
    let listed = cli_ok(&gw, &["tokens", "list", "app"]);
    assert!(!listed.contains("eyJ"), "the list never shows tokens");
    let (status, tokens) = gw.api("GET", "/v1/databases/app/tokens", None).await;
    assert_eq!(status, 200);
    let ro_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["read_only"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(listed.contains(&ro_id), "{listed}");
    cli_ok(&gw, &["tokens", "revoke", &ro_id]);
    let err = psql(&ro, "SELECT 1").unwrap_err();
    assert!(err.contains("was revoked"), "{err}");
    assert_eq!(
        psql(&url, "SELECT 1").unwrap(),
        "1",
        "other tokens unaffected"
    );

    // JWKS and rotation: old tokens verify until their key is removed.
    let jwks = fetch_jwks(&gw).await;
    assert!(verifies_with_jwks(&token, &jwks));
    assert!(!verifies_with_jwks(&forged, &jwks));
    let keys_before = cli_ok(&gw, &["keys", "list"]);
    let old_kid = keys_before.split_whitespace().next().unwrap().to_string();
    cli_ok(&gw, &["keys", "rotate"]);
    let fresh = mint(&gw, &["app", "--token"]);
    let jwks = fetch_jwks(&gw).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(verifies_with_jwks(&token_of(&fresh), &jwks));
    assert_eq!(
        psql(&url, "SELECT 1").unwrap(),
        "1",
        "the old key still verifies"
    );
    assert_eq!(psql(&fresh, "SELECT 1").unwrap(), "1");
    cli_ok(&gw, &["keys", "remove", &old_kid]);
    let err = psql(&url, "SELECT 1").unwrap_err();
    assert!(err.contains("does not have"), "{err}");
    assert_eq!(psql(&fresh, "SELECT 1").unwrap(), "1");

    // Secrets: never in the log (the tracing lines; `ogel up`'s own banner
    // prints the default database's URL on purpose); private files 0600.
    let output =
        std::fs::read_to_string(gw.data_dir.parent().unwrap().join("gateway.log")).unwrap();
    let log: String = output
        .lines()
        .filter(|l| l.starts_with("20") && l.contains('Z'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(log.contains("token login"), "debug logging was on");
    assert!(!log.contains("eyJ"), "a token reached the log");
    let password = password_of(&gw.app_url);
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(password)).collect();
    assert!(leaks.is_empty(), "a password reached the log: {leaks:?}");
    use std::os::unix::fs::PermissionsExt;
    let mut private = vec![gw.data_dir.join("admin-token")];
    for entry in std::fs::read_dir(gw.data_dir.join("keys")).unwrap() {
        private.push(entry.unwrap().path());
    }
    for path in private {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}
