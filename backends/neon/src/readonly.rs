//! The read-only role `ogel_readonly` of a Neon compute: its password
//! (derived, never stored: `hex(HMAC-SHA256(owner password,
//! "ogel-neon-readonly\0" + database))`, so it survives restarts and
//! follows a reset of the owner's password) and making it over SQL as the
//! owner (`CREATE ROLE … LOGIN`, `ALTER ROLE … PASSWORD <SCRAM verifier>`,
//! `GRANT pg_read_all_data`: [`ogel_plugin_kit::readonly`]), through the
//! same TLS + SNI path the gateway uses ([`ogel_plugin_kit::tls`]). Roles
//! made over SQL are not Neon API roles: API roles are members of
//! `neon_superuser`, which can write.

use ogel_plugin_kit::secrets::DerivationKey;
use ogel_plugin_sdk::ComputeEndpoint;
use ogel_plugin_sdk::Credentials;
use std::time::Duration;

/// The role's name.
pub use ogel_plugin_kit::readonly::ROLE;

/// The read-only role's password for `database`, given the owner's.
pub fn password(owner_password: &str, database: &str) -> String {
    DerivationKey::new(owner_password.as_bytes()).derive("ogel-neon-readonly", &[database])
}

/// Why the read-only role could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyRoleError {
    /// The tunnel's host name did not resolve.
    #[error("resolving {host}")]
    Resolve {
        /// The host.
        host: String,
        /// Why (none: no address).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The endpoint's CA is not usable.
    #[error("ca_file")]
    Tls(#[from] ogel_plugin_kit::tls::TlsConfigError),
    /// The owner could not log in.
    #[error("connecting as {user}")]
    Connect {
        /// The owner role.
        user: String,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The SQL failed.
    #[error("making the role: {}", .0.as_db_error().map(|db| format!("{}: {}", db.code().code(), db.message())).unwrap_or_else(|| .0.to_string()))]
    Sql(#[source] tokio_postgres::Error),
}

/// Makes (or updates) the read-only role in `ep`'s compute, logged in as
/// the owner `ep.credentials`; its password is `password`.
pub async fn ensure(ep: &ComputeEndpoint, password: &str) -> Result<(), ReadOnlyRoleError> {
    let Credentials::Password {
        user,
        password: owner_password,
    } = &ep.credentials;
    let mut config = tokio_postgres::Config::new();
    match &ep.tls {
        Some(tls) => {
            config.host(&tls.server_name);
            match ep.host.parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    config.hostaddr(ip);
                }
                Err(_) if ep.host != tls.server_name => {
                    // A tunnel given by name: resolve it, keep the server name for TLS.
                    let resolve = |source| ReadOnlyRoleError::Resolve {
                        host: ep.host.clone(),
                        source,
                    };
                    let addr = tokio::net::lookup_host((ep.host.as_str(), ep.port))
                        .await
                        .map_err(|e| resolve(Some(e)))?
                        .next()
                        .ok_or_else(|| resolve(None))?;
                    config.hostaddr(addr.ip());
                }
                Err(_) => {}
            }
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        None => {
            config.host(&ep.host);
        }
    }
    config
        .port(ep.port)
        .user(user)
        .password(owner_password)
        .dbname(&ep.database)
        .application_name("ogel-backend-neon")
        .connect_timeout(Duration::from_secs(30));
    let tls =
        ogel_plugin_kit::tls::client_config(ep.tls.as_ref().and_then(|t| t.ca_pem.as_deref()))?;
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let (client, connection) =
        config
            .connect(connector)
            .await
            .map_err(|source| ReadOnlyRoleError::Connect {
                user: user.clone(),
                source,
            })?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let sql = ogel_plugin_kit::readonly::setup_sql(password);
    let result = client
        .batch_execute(&sql)
        .await
        .map_err(ReadOnlyRoleError::Sql);
    drop(client);
    let _ = driver.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_derived_per_database_and_owner_password() {
        let a = password("owner-pw", "shop");
        assert_eq!(a.len(), 64);
        assert_eq!(a, password("owner-pw", "shop"));
        assert_ne!(a, password("owner-pw", "shop2"));
        assert_ne!(a, password("other-pw", "shop"));
        // The derivation the backend used before the kit: the same
        // passwords, so roles made by older gateways keep working.
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"owner-pw").unwrap();
        mac.update(b"ogel-neon-readonly\0shop");
        let old: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a, old);
    }
}
