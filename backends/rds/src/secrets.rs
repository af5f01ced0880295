//! Derived passwords: the master password of every instance and each
//! database owner's password come from the configured `secret` with
//! HMAC-SHA-256 ([`ogel_plugin_kit::secrets`], domain `ogel-rds`), so nothing is stored and a restored instance (which keeps
//! its source's roles and master password) still matches. A password is
//! only ever handed to RDS (CreateDBInstance), to Postgres (as a SCRAM
//! verifier) and to the gateway (`ComputeEndpoint.credentials`), never
//! logged: the wrapper type's `Debug` and `Display` show `<redacted>`.

use ogel_plugin_kit::secrets::DerivationKey;
use std::fmt;

/// A password that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The configured key.
#[derive(Clone)]
pub struct Secret(DerivationKey);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// Wraps the configured secret.
    pub fn new(secret: &str) -> Secret {
        Secret(DerivationKey::new(secret.as_bytes()))
    }

    fn derive(&self, parts: &[&str]) -> Password {
        Password(self.0.derive("ogel-rds", parts))
    }

    /// The master password of every instance this gateway makes: 64 hex
    /// characters (RDS allows 8–128 printable characters but `/ " @` and space).
    pub fn master_password(&self, master_username: &str) -> Password {
        self.derive(&["master", master_username])
    }

    /// The password of `role`, owner of `database` (the same in every branch).
    pub fn owner_password(&self, database: &str, role: &str) -> Password {
        self.derive(&["owner", database, role])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_distinct_and_redacted() {
        let s = Secret::new("k");
        let p = s.owner_password("shop", "shop_owner");
        assert_eq!(p.expose().len(), 64);
        assert_eq!(p, s.owner_password("shop", "shop_owner"));
        assert_ne!(p, s.owner_password("shop2", "shop_owner"));
        assert_ne!(s.owner_password("ab", "c"), s.owner_password("a", "bc"));
        assert_ne!(
            s.master_password("m"),
            Secret::new("k2").master_password("m")
        );
        assert_eq!(format!("{p:?} {p}"), "<redacted> <redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
    }
}
