//! `external`: an example OgelBase backend plugin, built out of tree, that
//! fronts a Postgres server someone else runs (a managed service, a server
//! in the next rack) instead of starting computes of its own.
//!
//! Every OgelBase database is a database on that server, owned by its own
//! login role; the gateway logs in as that role. The server is not ours to
//! start or stop, so this backend cannot suspend (scale to zero): the
//! gateway sees `Capabilities { suspend: false }` and never asks it to.
//!
//! # Configuration
//!
//! The gateway passes the plugin's configuration section as JSON:
//!
//! ```json
//! {"url": "postgresql://admin:pw@db.example.com:5432/postgres", "secret": "long random string"}
//! ```
//!
//! - `url` — how to log in as an administrator that may `CREATE DATABASE`
//!   and `CREATE ROLE` (a superuser, or a role with `CREATEDB CREATEROLE`,
//!   as on most managed services). Its host and port are also where the
//!   gateway connects for every database. Only the first host is used; the
//!   connection is made without TLS (this is an example).
//! - `secret` (required) — the key owner passwords are derived from:
//!   `hex(HMAC-SHA256(secret, "ogel-external\0" + database + "\0" + role))`
//!   (`ogel_plugin_kit::secrets`).
//!   Nothing else is stored anywhere: keep the secret stable, or every
//!   database's owner password changes (re-creating is then the only fix).
//! - `connect_timeout_ms` (optional, default 10 000) — for admin connections.
//!
//! # What each call does
//!
//! - `create_database(spec)`: `CREATE ROLE <owner> LOGIN PASSWORD <derived>`
//!   (sent as a SCRAM verifier, so the password never reaches the server's
//!   logs), `CREATE DATABASE <name> OWNER <owner>`, and `REVOKE ALL ON
//!   DATABASE <name> FROM PUBLIC` so other tenants' roles cannot connect.
//!   A role of that name left behind by an interrupted create is adopted if
//!   it owns no database and has no special privileges; otherwise the create
//!   fails with `AlreadyExists`.
//! - `delete_database(name)`: `DROP DATABASE IF EXISTS <name> WITH (FORCE)`
//!   (PostgreSQL 13+), then drops its owner role (never the admin itself or
//!   a superuser; a missing role, or one still owning objects elsewhere, is
//!   left alone).
//! - `ensure_running(compute)`: a [`ComputeName`]; only a database's `main`
//!   branch exists here (`NotFound` for any other). The server's host and
//!   port, the database, and
//!   the owner's credentials. The owner is read back from `pg_database`
//!   (the server stores it; this plugin stores nothing), which also checks
//!   that the database exists. The gateway names owners `<name>_owner`, but
//!   this backend does not rely on it. `generation` is always 1: the
//!   compute never changes.
//! - `compute_status(compute)`: `Running` (generation 1) if the database
//!   exists, `NotFound` otherwise.
//! - `suspend`: `Unsupported`.
//! - `health`: logs in as the admin and runs `SELECT 1`.
//! - `list_databases`, branches and snapshots: the SDK's `Unsupported`
//!   defaults (on a shared server, which databases are the gateway's is
//!   the gateway's business).
//!
//! Every call opens a short-lived admin connection; the gateway caches
//! endpoints, so `ensure_running` is not on every client connection's path.
//! A server that is down makes calls fail with `Unavailable`, and
//! instantiating the plugin never needs the server.
//!
//! # Building and installing
//!
//! ```sh
//! cargo build --release --manifest-path plugins/examples/external/Cargo.toml
//! cp plugins/examples/external/target/release/libogel_backend_external.so <plugins_dir>/
//! ```
//!
//! and give it its section in `ogel.toml` (the section is named after the
//! backend, `external`). The gateway loads every `*.so` in its plugins
//! directory at start; the plugin only needs the same target triple and
//! plugin ABI major as the gateway, not the same compiler.

use ogel_plugin_kit::secrets::DerivationKey;
pub use ogel_plugin_kit::sql::{quote_ident, quote_literal};
use ogel_plugin_sdk::{
    Backend, BackendError, BackendErrorKind, Capabilities, ComputeEndpoint, ComputeName,
    ComputeState, ComputeStatus, Credentials, DatabaseSpec,
};
use serde::Deserialize;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

ogel_plugin_sdk::export_backend!("external", ExternalBackend::from_config);

/// The plugin's configuration section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Admin connection URL (`postgresql://user:password@host:port/dbname`).
    pub url: String,
    /// Key the owner passwords derive from.
    pub secret: String,
    /// Timeout of admin connections, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// The external backend.
pub struct ExternalBackend {
    admin: tokio_postgres::Config,
    host: String,
    port: u16,
    secret: DerivationKey,
}

impl ExternalBackend {
    /// The plugin constructor; does not connect to the server.
    pub fn from_config(config: serde_json::Value) -> Result<Self, BackendError> {
        let config: ExternalConfig = serde_json::from_value(config)
            .map_err(|e| invalid(format!("invalid [external] configuration: {e}")))?;
        Self::new(config)
    }

    /// Builds the backend from a parsed configuration.
    pub fn new(config: ExternalConfig) -> Result<Self, BackendError> {
        if config.secret.is_empty() {
            return Err(invalid(
                "invalid [external] configuration: `secret` must not be empty",
            ));
        }
        // The parser's messages name the offending option, never the URL
        // (which holds the admin password).
        let mut admin: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| invalid(format!("invalid [external] url: {e}")))?;
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(dir)) => dir.to_string_lossy().into_owned(),
            None => return Err(invalid("invalid [external] url: it names no host")),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        if admin.get_connect_timeout().is_none() {
            admin.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
        }
        if admin.get_dbname().is_none() {
            admin.dbname("postgres");
        }
        Ok(ExternalBackend {
            admin,
            host,
            port,
            secret: DerivationKey::new(config.secret.as_bytes()),
        })
    }

    /// The password of `role`, owner of `database`.
    pub fn owner_password(&self, database: &str, role: &str) -> String {
        self.secret.derive("ogel-external", &[database, role])
    }

    /// A fresh admin connection; its driver task runs on the plugin's runtime.
    async fn connect(&self) -> Result<Client, BackendError> {
        let (client, connection) = self.admin.connect(NoTls).await.map_err(|e| {
            let kind = match e.code() {
                Some(code) if *code == SqlState::INVALID_PASSWORD => BackendErrorKind::Internal,
                _ => BackendErrorKind::Unavailable,
            };
            BackendError::new(
                kind,
                format!(
                    "could not log in to the Postgres server at {}:{} as its administrator{}",
                    self.host,
                    self.port,
                    db_message(&e)
                ),
            )
            .with_source(e)
        })?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The owner role of `name`, or `None` when there is no such database.
    async fn owner_of(&self, client: &Client, name: &str) -> Result<Option<String>, BackendError> {
        let row = client
            .query_opt(
                "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
                 WHERE d.datname = $1",
                &[&name],
            )
            .await
            .map_err(|e| sql_error("look up the database", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn existing_owner(&self, client: &Client, name: &str) -> Result<String, BackendError> {
        self.owner_of(client, name)
            .await?
            .ok_or_else(|| BackendError::not_found(format!("database \"{name}\" does not exist")))
    }

    /// Creates `owner` (or adopts a leftover of an interrupted create) with
    /// its derived password.
    async fn create_owner(&self, client: &Client, spec: &DatabaseSpec) -> Result<(), BackendError> {
        let verifier = postgres_protocol::password::scram_sha_256(
            self.owner_password(&spec.name, &spec.owner).as_bytes(),
        );
        let owner = quote_ident(&spec.owner);
        let password = quote_literal(&verifier);
        match client
            .batch_execute(&format!("CREATE ROLE {owner} LOGIN PASSWORD {password}"))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {
                let row = client
                    .query_one(
                        "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb \
                                OR r.rolreplication OR r.rolbypassrls \
                                OR r.rolname = current_user \
                                OR EXISTS (SELECT 1 FROM pg_database d WHERE d.datdba = r.oid) \
                         FROM pg_roles r WHERE r.rolname = $1",
                        &[&spec.owner],
                    )
                    .await
                    .map_err(|e| sql_error("inspect the existing owner role", e))?;
                if row.get::<_, bool>(0) {
                    return Err(BackendError::new(
                        BackendErrorKind::AlreadyExists,
                        format!(
                            "role \"{}\" already exists on the server and is in use; choose another owner",
                            spec.owner
                        ),
                    ));
                }
                // A leftover of a create that did not finish: take it over.
                client
                    .batch_execute(&format!("ALTER ROLE {owner} LOGIN PASSWORD {password}"))
                    .await
                    .map_err(|e| sql_error("take over the leftover owner role", e))
            }
            Err(e) => Err(sql_error("create the owner role", e)),
        }
    }

    async fn create_inner(&self, client: &Client, spec: &DatabaseSpec) -> Result<(), BackendError> {
        let name = quote_ident(&spec.name);
        let owner = quote_ident(&spec.owner);
        let is_superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| sql_error("inspect the admin role", e))?
            .get(0);
        if !is_superuser {
            // Only a member of the owner role may create a database it owns.
            client
                .batch_execute(&format!("GRANT {owner} TO CURRENT_USER"))
                .await
                .map_err(|e| sql_error("make the admin a member of the owner role", e))?;
        }
        // One statement at a time: CREATE DATABASE cannot run in a transaction block.
        client
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
            .await
            .map_err(|e| sql_error("create the database", e))?;
        client
            .batch_execute(&format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"))
            .await
            .map_err(|e| sql_error("restrict access to the database", e))
    }
}

#[async_trait::async_trait]
impl Backend for ExternalBackend {
    fn name(&self) -> &str {
        "external"
    }

    fn capabilities(&self) -> Capabilities {
        // No suspend (the server is not ours to stop), no branches, no snapshots.
        Capabilities::default()
    }

    fn describe(&self) -> String {
        format!("external: {}:{}", self.host, self.port)
    }

    async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError> {
        check_name("database", &spec.name)?;
        check_name("owner role", &spec.owner)?;
        let client = self.connect().await?;
        if self.owner_of(&client, &spec.name).await?.is_some() {
            return Err(BackendError::new(
                BackendErrorKind::AlreadyExists,
                format!("database \"{}\" already exists", spec.name),
            ));
        }
        self.create_owner(&client, spec).await?;
        let result = self.create_inner(&client, spec).await;
        if result.is_err() {
            // Leave nothing a retry would trip over.
            let _ = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&spec.name)
                ))
                .await;
            let _ = client
                .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&spec.owner)))
                .await;
        }
        result
    }

    async fn delete_database(&self, name: &str) -> Result<(), BackendError> {
        check_name("database", name)?;
        let client = self.connect().await?;
        let Some(owner) = self.owner_of(&client, name).await? else {
            return Ok(());
        };
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ))
            .await
            .map_err(|e| sql_error("drop the database", e))?;
        let protected: bool = client
            .query_opt(
                "SELECT rolsuper OR rolname = current_user FROM pg_roles WHERE rolname = $1",
                &[&owner],
            )
            .await
            .map_err(|e| sql_error("inspect the owner role", e))?
            .map(|r| r.get(0))
            .unwrap_or(true);
        if !protected {
            match client
                .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&owner)))
                .await
            {
                // Still owns objects elsewhere: left alone (a later create
                // of the same name refuses to adopt it while it is in use).
                Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {}
                Err(e) => return Err(sql_error("drop the owner role", e)),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    async fn ensure_running(&self, compute: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
        let name = main_of(compute)?;
        let client = self.connect().await?;
        let owner = self.existing_owner(&client, name).await?;
        let password = self.owner_password(name, &owner);
        Ok(ComputeEndpoint {
            host: self.host.clone(),
            port: self.port,
            database: name.to_string(),
            generation: 1,
            credentials: Credentials::Password {
                user: owner,
                password,
            },
            // This example keeps one role per database: no read-only tokens.
            read_only: None,
            tls: None,
        })
    }

    async fn health(&self) -> Result<(), BackendError> {
        let client = self.connect().await?;
        client
            .batch_execute("SELECT 1")
            .await
            .map_err(|e| sql_error("answer a query", e))
    }

    async fn suspend(&self, _compute: &ComputeName) -> Result<(), BackendError> {
        Err(BackendError::unsupported(
            "the external backend cannot suspend: the server is not ours to stop",
        ))
    }

    async fn compute_status(&self, compute: &ComputeName) -> Result<ComputeStatus, BackendError> {
        let name = main_of(compute)?;
        let client = self.connect().await?;
        self.existing_owner(&client, name).await?;
        Ok(ComputeStatus {
            state: ComputeState::Running,
            pid: None,
            port: Some(self.port),
            started_at_unix: None,
            generation: 1,
        })
    }
}

fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, message)
}

/// Names are `[a-z_][a-z0-9_]*`, at most 63 bytes (the SDK's rule).
fn check_name(what: &str, name: &str) -> Result<(), BackendError> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {what} name \"{name}\": use lower-case letters, digits and _, at most 63 bytes"
        )))
    }
}

/// The database of a `main` compute (this backend has no branches), checked.
fn main_of(compute: &ComputeName) -> Result<&str, BackendError> {
    check_name("database", &compute.database)?;
    if !compute.is_main() {
        return Err(BackendError::not_found(format!(
            "{compute}: the external backend has no branches"
        )));
    }
    Ok(&compute.database)
}

/// The server's own message, if the error came from the server.
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| format!(": {}", d.message()))
        .unwrap_or_default()
}

/// Maps a failed statement to a backend error.
fn sql_error(what: &str, e: tokio_postgres::Error) -> BackendError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::DUPLICATE_DATABASE => BackendErrorKind::AlreadyExists,
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::TOO_MANY_CONNECTIONS => {
            BackendErrorKind::OutOfResources
        }
        Some(_) => BackendErrorKind::Internal,
        // No SQLSTATE: the connection broke.
        None => BackendErrorKind::Unavailable,
    };
    BackendError::new(
        kind,
        format!("the Postgres server refused to {what}{}", db_message(&e)),
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: &str) -> Result<ExternalBackend, BackendError> {
        ExternalBackend::from_config(serde_json::json!({"url": url, "secret": "s"}))
    }

    #[test]
    fn parses_host_and_port_from_the_url() {
        let b = backend("postgresql://admin:pw@db.example.com:6543/postgres").unwrap();
        assert_eq!(b.describe(), "external: db.example.com:6543");
        let b = backend("postgresql://admin@10.0.0.1/postgres").unwrap();
        assert_eq!(b.describe(), "external: 10.0.0.1:5432");
    }

    #[test]
    fn refuses_bad_configuration_without_echoing_the_url() {
        let e = ExternalBackend::from_config(serde_json::json!({"url": "postgresql://a@h/db"}))
            .err()
            .unwrap();
        assert_eq!(e.kind, BackendErrorKind::InvalidRequest);
        assert!(e.message.contains("secret"), "{}", e.message);
        let e = backend("postgresql://admin:hunter2@h:notaport/db")
            .err()
            .unwrap();
        assert_eq!(e.kind, BackendErrorKind::InvalidRequest);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        let e = ExternalBackend::from_config(
            serde_json::json!({"url": "postgresql://a@h/db", "secret": ""}),
        )
        .err()
        .unwrap();
        assert_eq!(e.kind, BackendErrorKind::InvalidRequest);
    }

    #[test]
    fn passwords_are_deterministic_and_distinct() {
        let b = backend("postgresql://a@h/db").unwrap();
        let p = b.owner_password("shop", "shop_owner");
        assert_eq!(p.len(), 64);
        assert!(p.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(p, b.owner_password("shop", "shop_owner"));
        assert_ne!(p, b.owner_password("shop2", "shop_owner"));
        assert_ne!(p, b.owner_password("shop", "shop_owner2"));
        // Unambiguous: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(b.owner_password("ab", "c"), b.owner_password("a", "bc"));
    }

    #[test]
    fn names_are_checked_and_quoted() {
        assert!(check_name("database", "shop_1").is_ok());
        assert!(check_name("database", "_x").is_ok());
        assert!(check_name("database", "1shop").is_err());
        assert!(check_name("database", "Shop").is_err());
        assert!(check_name("database", "a\"b").is_err());
        assert!(check_name("database", "").is_err());
        assert!(check_name("database", &"a".repeat(64)).is_err());
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
