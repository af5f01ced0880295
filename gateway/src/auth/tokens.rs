//! Token URLs: signed JWTs that carry tenant, database, branch and rights,
//! so one `postgresql://<JWT>@host/db` URL is all an app needs.
//!
//! Owns the signing keys (Ed25519, in `<data-dir>/keys/<kid>.key` as
//! PKCS#8, mode 0600; the active key's id in `<data-dir>/keys/active`),
//! minting, verification (signature, `kid`, expiry, audience, issuer) and
//! the JWKS document. Rotation makes a new key the signer; older keys keep
//! verifying until removed. Revocation lives in the catalog (token ids).

use crate::error::file;
use crate::names::unix_now;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The `iss` of every token this gateway signs.
pub const ISSUER: &str = "ogelbase";

/// What a token grants. Short claim names keep URLs short.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenClaims {
    /// Issuer ([`ISSUER`]).
    pub iss: String,
    /// Audience: the gateway deployment (`tokens.audience`).
    pub aud: String,
    /// The role the client acts as (the database owner).
    pub sub: String,
    /// Tenant that owns the database.
    pub tenant: String,
    /// Database.
    pub db: String,
    /// Branch.
    pub branch: String,
    /// Read-only: the gateway logs in to the backend as a read-only role.
    #[serde(default)]
    pub ro: bool,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Token id (revocation).
    pub jti: String,
}

/// Why a token was refused. Messages are safe to show the client: they
/// never echo the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or a signature that does not verify.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// Signed by a key this gateway does not (or no longer) have.
    #[error("the token was signed by key \"{0}\", which this gateway does not have (removed after a rotation?)")]
    UnknownKey(String),
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
}

/// One signing key.
struct SigningKey {
    kid: String,
    created_at_unix: u64,
    encoding: EncodingKey,
    public: Vec<u8>,
}

/// A key as listed by the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct KeyInfo {
    /// Key id (the JWT `kid` header).
    pub kid: String,
    /// Unix time it was made.
    pub created_at_unix: u64,
    /// Whether it signs new tokens (older keys only verify).
    pub active: bool,
}

/// The signing keys of this gateway.
pub struct KeyRing {
    dir: PathBuf,
    /// Every key, oldest first; the active one's id.
    keys: RwLock<(Vec<SigningKey>, String)>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a user name looks like a JWT (`eyJ…` header, three parts); such
/// a user name is taken as a token, never as a role.
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ")
        && s.split('.').count() == 3
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why a key operation failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file it needs.
    #[error(transparent)]
    File(#[from] crate::error::FileError),
    /// A key file that is not a key.
    #[error("{} is not an Ed25519 PKCS#8 key ({reason})", path.display())]
    BadKey {
        /// Which.
        path: PathBuf,
        /// What ring said.
        reason: String,
    },
    /// No randomness to make a key with.
    #[error("could not generate an Ed25519 key: no randomness")]
    Random,
    /// The active key cannot be removed.
    #[error("key \"{0}\" signs new tokens; rotate (`ogel keys rotate`) before removing it")]
    Active(String),
    /// No such key.
    #[error("no key \"{0}\"; see `ogel keys list`")]
    Unknown(String),
    /// Nothing to sign with.
    #[error("no active signing key")]
    NoActive,
    /// jsonwebtoken refused to sign.
    #[error("signing the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

impl KeyRing {
    /// Loads the keys under `<data_dir>/keys`, making the first one if
    /// there is none.
    pub fn open(data_dir: &Path) -> Result<KeyRing, KeyError> {
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir).map_err(file("create", &dir))?;
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(file("read", &dir))? {
            let path = entry.map_err(file("read", &dir))?.path();
            let Some(kid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".key"))
            else {
                continue;
            };
            keys.push(load_key(&path, kid)?);
        }
        keys.sort_by(|a, b| (a.created_at_unix, &a.kid).cmp(&(b.created_at_unix, &b.kid)));
        let active = std::fs::read_to_string(dir.join("active"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|kid| keys.iter().any(|k| &k.kid == kid))
            .or_else(|| keys.last().map(|k| k.kid.clone()));
        let ring = KeyRing {
            dir,
            keys: RwLock::new((keys, active.clone().unwrap_or_default())),
        };
        if active.is_none() {
            ring.rotate()?;
        }
        Ok(ring)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Vec<SigningKey>, String)> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a new key and makes it the signer; returns its id.
    pub fn rotate(&self) -> Result<String, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let created = unix_now();
        let mut id = [0u8; 6];
        ring::rand::SecureRandom::fill(&rng, &mut id).map_err(|_| KeyError::Random)?;
        let kid = format!("k{created}-{}", b64url(&id));
        let path = self.dir.join(format!("{kid}.key"));
        ogel_plugin_sdk::files::write_private(&path, pkcs8.as_ref())
            .map_err(file("write", &path))?;
        let key = load_key(&path, &kid)?;
        let active = self.dir.join("active");
        ogel_plugin_sdk::files::write_private(&active, kid.as_bytes())
            .map_err(file("write", &active))?;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.0.push(key);
        keys.1 = kid.clone();
        tracing::info!(kid = %kid, "new token signing key");
        Ok(kid)
    }

    /// Removes a retired key: tokens it signed stop verifying.
    pub fn remove(&self, kid: &str) -> Result<(), KeyError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.1 == kid {
            return Err(KeyError::Active(kid.to_string()));
        }
        let before = keys.0.len();
        keys.0.retain(|k| k.kid != kid);
        if keys.0.len() == before {
            return Err(KeyError::Unknown(kid.to_string()));
        }
        let path = self.dir.join(format!("{kid}.key"));
        std::fs::remove_file(&path).map_err(file("remove", &path))?;
        tracing::info!(kid = %kid, "token signing key removed");
        Ok(())
    }

    /// Every key.
    pub fn list(&self) -> Vec<KeyInfo> {
        let keys = self.read();
        keys.0
            .iter()
            .map(|k| KeyInfo {
                kid: k.kid.clone(),
                created_at_unix: k.created_at_unix,
                active: k.kid == keys.1,
            })
            .collect()
    }

    /// The public keys as a JWKS document (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .read()
            .0
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": k.kid, "x": b64url(&k.public),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs `claims` with the active key; returns the token and its kid.
    pub fn mint(&self, claims: &TokenClaims) -> Result<(String, String), KeyError> {
        let keys = self.read();
        let key = keys
            .0
            .iter()
            .find(|k| k.kid == keys.1)
            .ok_or(KeyError::NoActive)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, claims, &key.encoding).map_err(KeyError::Sign)?;
        Ok((token, key.kid.clone()))
    }

    /// Verifies signature, key, expiry, issuer and audience.
    pub fn verify(&self, token: &str, audience: &str) -> Result<TokenClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted (EdDSA only)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid in its header".into()))?;
        let public = {
            let keys = self.read();
            keys.0
                .iter()
                .find(|k| k.kid == kid)
                .map(|k| k.public.clone())
                .ok_or_else(|| TokenError::UnknownKey(kid.clone()))?
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.leeway = 0;
        jsonwebtoken::decode::<TokenClaims>(token, &DecodingKey::from_ed_der(&public), &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

fn load_key(path: &Path, kid: &str) -> Result<SigningKey, KeyError> {
    let pkcs8 = std::fs::read(path).map_err(file("read", path))?;
    let pair =
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|e| KeyError::BadKey {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let created_at_unix = kid
        .strip_prefix('k')
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(SigningKey {
        kid: kid.to_string(),
        created_at_unix,
        encoding: EncodingKey::from_ed_der(&pkcs8),
        public: pair.public_key().as_ref().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> TokenClaims {
        TokenClaims {
            iss: ISSUER.into(),
            aud: "ogelbase".into(),
            sub: "shop_owner".into(),
            tenant: "acme".into(),
            db: "shop".into(),
            branch: "main".into(),
            ro: true,
            iat: unix_now(),
            exp,
            jti: "t1".into(),
        }
    }

    #[test]
    fn mints_verifies_rotates_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let (token, first) = ring.mint(&claims(unix_now() + 60)).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(ring.verify(&token, "ogelbase").unwrap().db, "shop");
        assert!(matches!(
            ring.verify(&token, "other"),
            Err(TokenError::Invalid(_))
        ));
        // A tampered payload fails.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(br#"{"iss":"ogelbase","aud":"ogelbase","sub":"x","tenant":"b","db":"b","branch":"main","ro":false,"iat":1,"exp":99999999999,"jti":"x"}"#);
        parts[1] = &forged;
        assert!(matches!(
            ring.verify(&parts.join("."), "ogelbase"),
            Err(TokenError::Invalid(_))
        ));
        // Expired.
        let (old, _) = ring.mint(&claims(unix_now() - 5)).unwrap();
        assert_eq!(ring.verify(&old, "ogelbase"), Err(TokenError::Expired));
        // Rotation: the old key still verifies; reopening keeps both.
        let second = ring.rotate().unwrap();
        assert_ne!(first, second);
        assert!(ring.verify(&token, "ogelbase").is_ok());
        let reopened = KeyRing::open(dir.path()).unwrap();
        assert!(reopened.verify(&token, "ogelbase").is_ok());
        assert_eq!(reopened.list().iter().filter(|k| k.active).count(), 1);
        assert!(reopened.remove(&second).is_err(), "the active key stays");
        reopened.remove(&first).unwrap();
        assert_eq!(
            reopened.verify(&token, "ogelbase"),
            Err(TokenError::UnknownKey(first))
        );
        assert_eq!(reopened.jwks()["keys"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn user_names_are_not_mistaken_for_tokens() {
        assert!(!looks_like_jwt("shop_owner"));
        assert!(!looks_like_jwt("eyJ.only-two"));
        assert!(looks_like_jwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"));
    }
}
