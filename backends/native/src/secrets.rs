//! The native backend's master secret and the passwords derived from it.
//!
//! Computes only accept SCRAM logins. Rather than store one password per
//! role, the backend keeps one random 32-byte key (`<root>/secret`, mode
//! 0600, readable only by the gateway's user) and derives every compute
//! password from it with HMAC-SHA-256 ([`ogel_plugin_kit::secrets`]).
//! Clients never see these passwords.

use ogel_plugin_kit::secrets::DerivationKey;
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The superuser created at `initdb` in the template; every cloned cluster has it.
pub const SUPERUSER: &str = "ogel_admin";
/// The role read-only clients log in as (in every compute).
pub use ogel_plugin_kit::readonly::ROLE as READ_ONLY_ROLE;

pub use ogel_plugin_sdk::files::write_private;

/// The key compute passwords are derived from.
#[derive(Clone)]
pub struct MasterSecret(DerivationKey);

impl MasterSecret {
    /// Loads the key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is not a 32-byte key; restore it from a backup (computes' passwords derive from it)",
                            path.display()
                        ),
                    )
                })?;
                Ok(MasterSecret(DerivationKey::new(&key)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(MasterSecret(DerivationKey::new(&key)))
            }
            Err(e) => Err(e),
        }
    }

    /// The password of `role` in the compute of `database`.
    pub fn role_password(&self, database: &str, role: &str) -> String {
        self.0.derive("role", &[database, role])
    }

    /// The password of the template's superuser (shared by every clone).
    pub fn superuser_password(&self) -> String {
        self.0.derive("superuser", &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_and_passwords_differ_per_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let a = MasterSecret::load_or_create(&path).unwrap();
        let b = MasterSecret::load_or_create(&path).unwrap();
        assert_eq!(
            a.role_password("shop", "shop_owner"),
            b.role_password("shop", "shop_owner")
        );
        assert_ne!(
            a.role_password("shop", "shop_owner"),
            a.role_password("app", "shop_owner")
        );
        assert_ne!(
            a.superuser_password(),
            a.role_password("shop", "shop_owner")
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn truncated_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"short").unwrap();
        let err = MasterSecret::load_or_create(&path).err().unwrap();
        assert!(err.to_string().contains("not a 32-byte key"));
    }
}
