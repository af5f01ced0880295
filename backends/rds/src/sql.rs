//! The data side: the master's connections to an instance (through
//! `endpoint_overrides`, with verified TLS when configured) and the SQL the
//! plugin runs there: the owner role and database of a new OgelBase
//! database, and — on a shared data server only — the copies that stand in
//! for RDS's snapshot data.

use crate::names::{quote_ident, quote_literal};
use crate::secrets::Password;
use ogel_plugin_sdk::{BackendError, BackendErrorKind};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// How to reach one instance as its master user.
pub struct Target<'a> {
    /// The instance's RDS host name (verified by TLS).
    pub rds_host: &'a str,
    /// Where to connect (after `endpoint_overrides`).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Master user.
    pub user: &'a str,
    /// Master password.
    pub password: &'a Password,
    /// Database to log in to.
    pub dbname: &'a str,
    /// PEM roots for TLS; `None`: plaintext.
    pub tls_roots: Option<&'a str>,
    /// Connect timeout.
    pub timeout: Duration,
}

/// Opens a master connection; its driver runs on the plugin's runtime.
pub async fn connect(t: &Target<'_>) -> Result<Client, BackendError> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(t.user)
        .password(t.password.expose())
        .dbname(t.dbname)
        .port(t.port)
        .connect_timeout(t.timeout)
        .application_name("ogel-backend-rds");
    let fail = |e: tokio_postgres::Error| {
        let kind = match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD => BackendErrorKind::Internal,
            Some(_) => BackendErrorKind::Internal,
            None => BackendErrorKind::Unavailable,
        };
        let hint = if e.code() == Some(&SqlState::INVALID_PASSWORD) {
            "; the master password derives from `secret`: was it changed since the instance was made?"
        } else {
            ""
        };
        BackendError::new(
            kind,
            format!(
                "could not log in to RDS instance {} (at {}:{}) as its master user{}{hint}",
                t.rds_host,
                t.host,
                t.port,
                db_message(&e)
            ),
        )
        .with_source(e)
    };
    match t.tls_roots {
        None => {
            config.host(t.host);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            tokio::spawn(connection);
            Ok(client)
        }
        Some(pem) => {
            // Verify the RDS host name; connect wherever the override says.
            config
                .host(t.rds_host)
                .ssl_mode(tokio_postgres::config::SslMode::Require);
            let addr = tokio::net::lookup_host((t.host, t.port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    BackendError::unavailable(format!(
                        "could not resolve {} (the address of RDS instance {})",
                        t.host, t.rds_host
                    ))
                })?;
            config.hostaddr(addr.ip());
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(pem)?);
            let (client, connection) = config.connect(tls).await.map_err(fail)?;
            tokio::spawn(connection);
            Ok(client)
        }
    }
}

/// A rustls client configuration trusting exactly `pem`'s certificates.
pub fn tls_config(pem: &str) -> Result<rustls::ClientConfig, BackendError> {
    use ogel_plugin_kit::tls::{client_config, TlsConfigError};
    client_config(Some(pem)).map_err(|e| match e {
        TlsConfigError::Setup(_) => BackendError::internal(e.to_string()),
        _ => BackendError::new(BackendErrorKind::InvalidRequest, format!("`ca_file`: {e}")),
    })
}

/// The server's own message, if the error came from the server.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!(": {}", d.message()))
        .unwrap_or_else(|| {
            if e.code().is_none() {
                format!(": {e}")
            } else {
                String::new()
            }
        })
}

/// Maps a failed statement to a backend error.
pub fn sql_error(what: &str, e: tokio_postgres::Error) -> BackendError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::DUPLICATE_DATABASE => BackendErrorKind::AlreadyExists,
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::TOO_MANY_CONNECTIONS => {
            BackendErrorKind::OutOfResources
        }
        Some(_) => BackendErrorKind::Internal,
        None => BackendErrorKind::Unavailable,
    };
    BackendError::new(
        kind,
        format!(
            "the instance's Postgres refused to {what}{}",
            db_message(&e)
        ),
    )
    .with_source(e)
}

/// Creates (or takes over a leftover, unused) `owner` with `password`.
pub async fn create_owner(
    client: &Client,
    owner: &str,
    password: &Password,
) -> Result<(), BackendError> {
    // Sent as a SCRAM verifier: the password never reaches the server's logs.
    let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    let role = quote_ident(owner);
    let literal = quote_literal(&verifier);
    match client
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD {literal}"))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
            let in_use: bool = client
                .query_one(
                    "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb \
                            OR r.rolreplication OR r.rolbypassrls \
                            OR r.rolname = current_user \
                            OR EXISTS (SELECT 1 FROM pg_database d WHERE d.datdba = r.oid) \
                     FROM pg_roles r WHERE r.rolname = $1",
                    &[&owner],
                )
                .await
                .map_err(|e| sql_error("inspect the existing owner role", e))?
                .get(0);
            if in_use {
                return Err(BackendError::new(
                    BackendErrorKind::AlreadyExists,
                    format!("role \"{owner}\" already exists on the instance and is in use; choose another owner"),
                ));
            }
            client
                .batch_execute(&format!("ALTER ROLE {role} LOGIN PASSWORD {literal}"))
                .await
                .map_err(|e| sql_error("take over the leftover owner role", e))
        }
        Err(e) => Err(sql_error("create the owner role", e)),
    }
}

/// Makes the master a member of `owner` unless it is a superuser (RDS's
/// master is `rds_superuser`, not a superuser: it must be a member of a
/// role to create a database owned by it).
async fn join_owner(client: &Client, owner: &str) -> Result<(), BackendError> {
    let is_superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| sql_error("inspect the master role", e))?
        .get(0);
    if !is_superuser {
        client
            .batch_execute(&format!("GRANT {} TO CURRENT_USER", quote_ident(owner)))
            .await
            .map_err(|e| sql_error("make the master a member of the owner role", e))?;
    }
    Ok(())
}

/// Creates `dbname` owned by `owner`, closed to PUBLIC; copied from
/// `template` when given.
pub async fn create_database(
    client: &Client,
    dbname: &str,
    owner: &str,
    template: Option<&str>,
) -> Result<(), BackendError> {
    join_owner(client, owner).await?;
    let name = quote_ident(dbname);
    let template = template
        .map(|t| format!(" TEMPLATE {}", quote_ident(t)))
        .unwrap_or_default();
    client
        .batch_execute(&format!(
            "CREATE DATABASE {name} OWNER {}{template}",
            quote_ident(owner)
        ))
        .await
        .map_err(|e| sql_error("create the database", e))?;
    client
        .batch_execute(&format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"))
        .await
        .map_err(|e| sql_error("restrict access to the database", e))
}

/// Copies `source` into a new `target` (owner `owner`). A template must
/// have no other sessions: those of the source (the gateway's pooled
/// connections) are ended first, and the copy retried a few times.
pub async fn copy_database(
    client: &Client,
    source: &str,
    target: &str,
    owner: &str,
) -> Result<(), BackendError> {
    let mut last = None;
    for _ in 0..20 {
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&source],
            )
            .await
            .map_err(|e| sql_error("end the sessions of the source database", e))?;
        match create_database(client, target, owner, Some(source)).await {
            Ok(()) => return Ok(()),
            Err(e) if e.message.contains("is being accessed by other users") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| BackendError::internal("could not copy the database")))
}

/// Drops `dbname` if it exists, ending its sessions (PostgreSQL 13+).
pub async fn drop_database(client: &Client, dbname: &str) -> Result<(), BackendError> {
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(dbname)
        ))
        .await
        .map_err(|e| sql_error("drop the database", e))
}

/// Drops `role` unless it is the master or a superuser, or still owns objects.
pub async fn drop_role(client: &Client, role: &str) -> Result<(), BackendError> {
    let protected: bool = client
        .query_opt(
            "SELECT rolsuper OR rolname = current_user FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .map_err(|e| sql_error("inspect the owner role", e))?
        .map(|r| r.get(0))
        .unwrap_or(true);
    if protected {
        return Ok(());
    }
    match client
        .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
        .await
    {
        Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => Ok(()),
        Err(e) => Err(sql_error("drop the owner role", e)),
        Ok(()) => Ok(()),
    }
}

/// Whether `dbname` exists.
pub async fn database_exists(client: &Client, dbname: &str) -> Result<bool, BackendError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await
        .map_err(|e| sql_error("look up the database", e))?
        .is_some())
}
