//! The auth stage for a routed wire client: runs the check its
//! [`Credential`] calls for — SCRAM against the role store (`auth`), a
//! token (`control::access`), the console's API token — and counts a
//! failed login against the client's address (`limits`), a success as
//! clearing them. Unknown users and users of another database run the same
//! SCRAM exchange against a mock verifier and get the same `28P01`.

use super::limits::Limits;
use crate::auth::scram::ScramVerifier;
use crate::auth::{self, AuthError};
use crate::catalog::{Catalog, DatabaseRecord};
use crate::control::access::Access;
use crate::control::databases::Databases;
use crate::error::ClientError;
use crate::names::MAIN_BRANCH;
use crate::route::{Credential, Route};
use crate::wire::ClientStream;
use std::net::IpAddr;
use std::sync::Arc;

/// Who a logged-in database client is.
pub struct Identity {
    /// Its database.
    pub record: DatabaseRecord,
    /// The role it acts as (for a token, the role it grants, never the token).
    pub role: String,
    /// The branch.
    pub branch: String,
    /// Served by the backend's read-only role.
    pub read_only: bool,
}

/// What logging in needs.
pub struct Authenticator {
    catalog: Catalog,
    databases: Arc<Databases>,
    access: Arc<Access>,
    limits: Arc<Limits>,
    /// Key for mock SCRAM verifiers (unknown users).
    mock_secret: [u8; 32],
    /// The console's verifier (of the API token).
    console: Option<ScramVerifier>,
}

impl Authenticator {
    /// The auth stage over these services.
    pub fn new(
        catalog: Catalog,
        databases: Arc<Databases>,
        access: Arc<Access>,
        limits: Arc<Limits>,
        console: Option<ScramVerifier>,
    ) -> Self {
        Authenticator {
            catalog,
            databases,
            access,
            limits,
            mock_secret: rand::random(),
            console,
        }
    }

    /// Runs a login step, counting its failure (a wrong password or token)
    /// against the client's address, and its success as clearing them.
    async fn counted<T>(
        &self,
        ip: Option<IpAddr>,
        step: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let result = step.await;
        if let Some(ip) = ip {
            match &result {
                Ok(_) => self.limits.auth_succeeded(ip),
                Err(AuthError::Client(e)) if matches!(e.code, "28P01" | "28000") => {
                    self.limits.auth_failed(ip)
                }
                Err(_) => {}
            }
        }
        result
    }

    async fn scram(
        &self,
        stream: &mut ClientStream,
        user: &str,
        verifier: Option<ScramVerifier>,
    ) -> Result<(), AuthError> {
        let ip = stream.peer_addr().map(|a| a.ip());
        self.counted(
            ip,
            auth::authenticate(stream, user, verifier, &self.mock_secret),
        )
        .await
    }

    /// The admin console: only its user, with the gateway's admin token —
    /// never a database token, never a tenant's.
    pub async fn console(&self, stream: &mut ClientStream, user: &str) -> Result<(), AuthError> {
        let verifier = (user == crate::names::ADMIN_USER)
            .then(|| self.console.clone())
            .flatten();
        self.scram(stream, user, verifier).await
    }

    /// A database client: a token (in the user name, or the password of the
    /// reserved user), or a role with SCRAM.
    pub async fn database(
        &self,
        stream: &mut ClientStream,
        route: &Route,
        remote: bool,
    ) -> Result<Identity, AuthError> {
        let token = match route.credential {
            Credential::TokenInUser => route.user.clone(),
            Credential::TokenInPassword => {
                if !stream.is_tls() && remote {
                    return Err(ClientError::new(
                        "28000",
                        "a token in the password field needs TLS (or a loopback connection)",
                    )
                    .hint("connect with sslmode=require")
                    .into());
                }
                auth::cleartext_password(stream).await?
            }
            Credential::Password | Credential::Console => {
                return self.password(stream, route).await;
            }
            // Relayed to the compute before this (`accept::replication_target`).
            Credential::Replication => {
                return Err(ClientError::new(
                    "0A000",
                    "replication connections do not log in to the gateway",
                )
                .into())
            }
        };
        let ip = stream.peer_addr().map(|a| a.ip());
        let grant = self
            .counted(ip, async {
                self.access
                    .check_token(
                        &token,
                        (!route.database.is_empty()).then_some(route.database.as_str()),
                        route.branch.as_deref(),
                    )
                    .map_err(|e| AuthError::Client(e.into()))
            })
            .await?;
        tracing::debug!(token = %grant.id, database = %grant.record.name, branch = %grant.branch, read_only = grant.read_only, "token login");
        Ok(Identity {
            record: grant.record,
            role: grant.role,
            branch: grant.branch,
            read_only: grant.read_only,
        })
    }

    async fn password(
        &self,
        stream: &mut ClientStream,
        route: &Route,
    ) -> Result<Identity, AuthError> {
        let Ok(record) = self.databases.ready(&route.database) else {
            return Err(ClientError::unknown_database(&route.requested).into());
        };
        let verifier = self
            .catalog
            .role(&route.user)
            .map_err(|e| ClientError::catalog_unreadable(&e, "login"))?
            .filter(|role| role.databases.contains(&route.database))
            .and_then(|role| match ScramVerifier::parse(&role.verifier) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(role = %role.name, error = %e, "stored verifier is invalid");
                    None
                }
            });
        self.scram(stream, &route.user, verifier).await?;
        Ok(Identity {
            record,
            role: route.user.clone(),
            branch: route
                .branch
                .clone()
                .unwrap_or_else(|| MAIN_BRANCH.to_string()),
            read_only: false,
        })
    }
}
