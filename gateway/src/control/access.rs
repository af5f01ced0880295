//! Who may do what: tenants and their scoped admin tokens, and the token
//! URLs the gateway issues (minting, listing, revoking, and the check at
//! login). A tenant owns databases; a tenant-scoped admin token sees only
//! them, and a database of another tenant is "not found" to it, never
//! "forbidden", so its existence does not leak.

use super::databases::Databases;
use super::urls::Urls;
use crate::auth::constant_time_eq;
use crate::auth::tokens::{KeyRing, TokenClaims, TokenError, ISSUER};
use crate::catalog::{Catalog, DatabaseRecord, TenantRecord, TokenRecord, DEFAULT_TENANT};
use crate::config::TokensConfig;
use crate::error::{ClientError, ControlError};
use crate::names::{self, unix_now, MAIN_BRANCH};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Why a presented token does not log a client in.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    /// Not signed by this gateway's keys, or malformed (like a wrong password).
    #[error("token authentication failed: {0}")]
    Unverified(#[source] TokenError),
    /// A real token that is not valid here or now (expired, revoked, for
    /// another database or branch).
    #[error("token refused: {0}")]
    NotValidHere(String),
    /// Its record could not be read.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl From<TokenRefused> for ClientError {
    fn from(e: TokenRefused) -> Self {
        match &e {
            TokenRefused::Unverified(_) => ClientError::new("28P01", e.to_string()),
            TokenRefused::NotValidHere(_) => ClientError::new("28000", e.to_string())
                .hint("mint a new one with `ogel db url <database> --token`"),
            TokenRefused::Catalog(c) => ClientError::catalog_unreadable(c, "token login"),
        }
    }
}

/// Whose request the API is serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The gateway's admin token: everything.
    Global,
    /// A tenant's admin token: that tenant's databases only.
    Tenant(String),
}

impl Scope {
    /// Whether this scope sees `db`.
    pub fn sees(&self, db: &DatabaseRecord) -> bool {
        match self {
            Scope::Global => true,
            Scope::Tenant(t) => *t == db.tenant,
        }
    }

    /// The tenant new databases go to.
    pub fn tenant(&self) -> &str {
        match self {
            Scope::Global => DEFAULT_TENANT,
            Scope::Tenant(t) => t,
        }
    }
}

/// What a verified token lets a client do.
#[derive(Clone, Debug)]
pub struct TokenGrant {
    /// The database it is for.
    pub record: DatabaseRecord,
    /// The token's id.
    pub id: String,
    /// Branch.
    pub branch: String,
    /// Read-only.
    pub read_only: bool,
    /// The role it acts as.
    pub role: String,
}

/// A token as minted: shown once.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// What the catalog keeps about it.
    pub record: TokenRecord,
    /// The token (a JWT).
    pub token: String,
    /// `postgresql://<token>@host:port/db?sslmode=require`.
    pub url: String,
}

/// SHA-256 of a token, hex: what the catalog and the cluster keep of it.
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect()
}

/// The access service: tenants, their admin tokens, and token URLs.
pub struct Access {
    catalog: Catalog,
    databases: Arc<Databases>,
    keys: Arc<KeyRing>,
    tokens: TokensConfig,
    /// `limits.clients_per_tenant`.
    clients_per_tenant: usize,
    urls: Urls,
}

impl Access {
    /// The service.
    pub fn new(
        catalog: Catalog,
        databases: Arc<Databases>,
        keys: Arc<KeyRing>,
        tokens: TokensConfig,
        clients_per_tenant: usize,
        urls: Urls,
    ) -> Self {
        Access {
            catalog,
            databases,
            keys,
            tokens,
            clients_per_tenant,
            urls,
        }
    }

    /// The signing keys (list, rotate, remove, JWKS).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The scope of an API bearer token: the admin token, or a tenant's.
    pub fn scope_of(&self, bearer: &str, admin_token: &str) -> Option<Scope> {
        if constant_time_eq(bearer.as_bytes(), admin_token.as_bytes()) {
            return Some(Scope::Global);
        }
        let hash = sha256_hex(bearer);
        // Hashes are compared, so timing tells nothing about the token.
        self.catalog
            .tenants()
            .ok()?
            .into_iter()
            .find(|t| t.token_sha256 == hash)
            .map(|t| Scope::Tenant(t.name))
    }

    /// A database this scope sees (others are "not found").
    pub fn database_in_scope(
        &self,
        name: &str,
        scope: &Scope,
    ) -> Result<DatabaseRecord, ControlError> {
        let record = self.databases.ready(name)?;
        if scope.sees(&record) {
            Ok(record)
        } else {
            Err(ControlError::no_database(name))
        }
    }

    /// Makes a tenant; returns it and its admin token (shown once).
    pub fn create_tenant(
        &self,
        name: &str,
        max_clients: Option<u32>,
    ) -> Result<(TenantRecord, String), ControlError> {
        names::validate_tenant(name, DEFAULT_TENANT)?;
        if self.catalog.tenant(name)?.is_some() {
            return Err(ControlError::AlreadyExists(format!(
                "tenant \"{name}\" already exists"
            )));
        }
        let token = format!("ogt_{}", random_hex(32));
        let record = TenantRecord {
            name: name.to_string(),
            token_sha256: sha256_hex(&token),
            max_clients,
            created_at_unix: unix_now(),
        };
        self.catalog.put_tenant(&record)?;
        Ok((record, token))
    }

    /// Removes a tenant that owns no database.
    pub fn delete_tenant(&self, name: &str) -> Result<(), ControlError> {
        if self.catalog.tenant(name)?.is_none() {
            return Err(ControlError::NotFound(format!(
                "tenant \"{name}\" does not exist; see `ogel tenants list`"
            )));
        }
        let owned: Vec<String> = self
            .catalog
            .databases()?
            .into_iter()
            .filter(|d| d.tenant == name)
            .map(|d| d.name)
            .collect();
        if !owned.is_empty() {
            return Err(ControlError::Invalid(format!(
                "tenant \"{name}\" still owns {}; delete them first",
                owned.join(", ")
            )));
        }
        Ok(self.catalog.remove_tenant(name)?)
    }

    /// The client limit of a tenant (0: none).
    pub fn tenant_client_limit(&self, tenant: &str) -> usize {
        let configured = self.clients_per_tenant;
        // The default tenant has no record: no catalog read on its logins.
        if tenant == DEFAULT_TENANT {
            return configured;
        }
        match self.catalog.tenant(tenant) {
            Ok(Some(TenantRecord {
                max_clients: Some(n),
                ..
            })) => n as usize,
            _ => configured,
        }
    }

    /// Mints a token URL for a database (and branch) this scope sees.
    pub fn mint_token(
        &self,
        database: &str,
        branch: Option<&str>,
        read_only: bool,
        ttl: Option<Duration>,
        scope: &Scope,
    ) -> Result<IssuedToken, ControlError> {
        let record = self.database_in_scope(database, scope)?;
        let branch = branch.unwrap_or(MAIN_BRANCH);
        if !self.catalog.branch_exists(database, branch)? {
            return Err(ControlError::no_branch(database, branch));
        }
        let ttl = ttl.unwrap_or(self.tokens.default_ttl);
        if ttl.is_zero() || ttl > self.tokens.max_ttl {
            return Err(ControlError::Invalid(format!(
                "a token lives between 1 s and {} (tokens.max_ttl)",
                humantime::format_duration(self.tokens.max_ttl)
            )));
        }
        let now = unix_now();
        let claims = TokenClaims {
            iss: ISSUER.into(),
            aud: self.tokens.audience.clone(),
            sub: record.owner.clone(),
            tenant: record.tenant.clone(),
            db: record.name.clone(),
            branch: branch.to_string(),
            ro: read_only,
            iat: now,
            exp: now + ttl.as_secs(),
            jti: format!("tok_{}", random_hex(8)),
        };
        let (token, kid) = self
            .keys
            .mint(&claims)
            .map_err(|e| ControlError::Internal {
                message: "could not sign the token; see the gateway's log".into(),
                source: e.into(),
            })?;
        let token_record = TokenRecord {
            id: claims.jti.clone(),
            tenant: claims.tenant.clone(),
            database: claims.db.clone(),
            branch: claims.branch.clone(),
            read_only,
            kid,
            issued_at_unix: now,
            expires_at_unix: claims.exp,
            revoked_at_unix: None,
        };
        self.catalog.put_token(&token_record)?;
        let url = self.urls.token(&token, &record.name);
        Ok(IssuedToken {
            record: token_record,
            token,
            url,
        })
    }

    /// The tokens of a database this scope sees.
    pub fn list_tokens(
        &self,
        database: &str,
        scope: &Scope,
    ) -> Result<Vec<TokenRecord>, ControlError> {
        self.database_in_scope(database, scope)?;
        let mut tokens = self.catalog.tokens(database)?;
        tokens.sort_by_key(|t| t.issued_at_unix);
        Ok(tokens)
    }

    /// Revokes a token by id: it stops working at the next login.
    pub fn revoke_token(&self, id: &str, scope: &Scope) -> Result<TokenRecord, ControlError> {
        let not_found = || {
            ControlError::NotFound(format!(
                "no token \"{id}\"; see `ogel tokens list <database>`"
            ))
        };
        let mut record = self.catalog.token(id)?.ok_or_else(not_found)?;
        if let Scope::Tenant(t) = scope {
            if *t != record.tenant {
                return Err(not_found());
            }
        }
        if record.revoked_at_unix.is_none() {
            record.revoked_at_unix = Some(unix_now());
            self.catalog.put_token(&record)?;
            tracing::info!(token = %id, database = %record.database, "token revoked");
        }
        Ok(record)
    }

    /// Checks a token a client presented (for `asked_database` and
    /// `asked_branch`, when the connection names them): signature, expiry,
    /// audience, that the gateway issued it and has not revoked it, and
    /// that it is for this tenant's database and this branch.
    pub fn check_token(
        &self,
        token: &str,
        asked_database: Option<&str>,
        asked_branch: Option<&str>,
    ) -> Result<TokenGrant, TokenRefused> {
        let refused = TokenRefused::NotValidHere;
        let claims = self
            .keys
            .verify(token, &self.tokens.audience)
            .map_err(|e| match e {
                TokenError::Invalid(_) | TokenError::UnknownKey(_) => TokenRefused::Unverified(e),
                TokenError::Expired => refused(e.to_string()),
            })?;
        if let Some(asked) = asked_database {
            if asked != claims.db {
                return Err(refused(format!(
                    "it is for database \"{}\", not \"{asked}\"",
                    claims.db
                )));
            }
        }
        if let Some(asked) = asked_branch {
            if asked != claims.branch {
                return Err(refused(format!(
                    "it is for branch \"{}\", not \"{asked}\"",
                    claims.branch
                )));
            }
        }
        let issued = self.catalog.token(&claims.jti)?;
        let Some(issued) = issued else {
            return Err(refused(
                "this gateway has no record of it (its database was deleted?)".into(),
            ));
        };
        if issued.revoked_at_unix.is_some() {
            return Err(refused(format!("token \"{}\" was revoked", claims.jti)));
        }
        let record = self
            .databases
            .ready(&claims.db)
            .ok()
            .filter(|r| r.tenant == claims.tenant && issued.database == r.name)
            .ok_or_else(|| {
                refused(format!(
                    "database \"{}\" is not this token's any more",
                    claims.db
                ))
            })?;
        Ok(TokenGrant {
            record,
            id: claims.jti,
            branch: claims.branch,
            read_only: claims.ro,
            role: claims.sub,
        })
    }
}
