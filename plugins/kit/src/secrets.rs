//! Derived secrets: passwords computed from one key with HMAC-SHA-256
//! instead of stored, so that they survive restarts, restores and lost
//! state files, and only the key needs keeping.
//!
//! A derivation is `hex(HMAC-SHA-256(key, domain ‖ "\0" part₁ ‖ "\0" part₂ …))`:
//! the domain separates one backend's (or one purpose's) passwords from
//! another's, and the NUL separators keep `("ab", "c")` and `("a", "bc")`
//! apart. The key is turned into HMAC's 64-byte block once, as RFC 2104
//! says (zero-padded, or hashed first when longer than a block), so
//! deriving has no error path at all — not even an "impossible" one.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256's block size: HMAC keys are padded (or hashed) to it.
const BLOCK: usize = 64;

/// A key passwords are derived from. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivationKey {
    /// The key as HMAC's key block (RFC 2104 §2).
    block: [u8; BLOCK],
}

impl fmt::Debug for DerivationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivationKey(<redacted>)")
    }
}

impl DerivationKey {
    /// A key of any length (a configured secret, a 32-byte random file, a
    /// password), exactly as HMAC takes it.
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        DerivationKey { block }
    }

    /// `hex(HMAC-SHA-256(key, domain ‖ "\0" part …))`: 64 lowercase hex
    /// characters (letters and digits only, so it fits any password rule
    /// and needs no quoting).
    pub fn derive(&self, domain: &str, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&self.block.into());
        mac.update(domain.as_bytes());
        for part in parts {
            mac.update(b"\0");
            mac.update(part.as_bytes());
        }
        hex(&mac.finalize().into_bytes())
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the backends computed before the kit: `new_from_slice` on the
    /// raw key, then the message.
    fn reference(key: &[u8], message: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(message);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn derivation_matches_plain_hmac_for_every_key_length() {
        for len in [0, 1, 5, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let k = DerivationKey::new(&key);
            assert_eq!(
                k.derive("role", &["shop", "shop_owner"]),
                reference(&key, b"role\0shop\0shop_owner"),
                "key of {len} bytes"
            );
            assert_eq!(k.derive("superuser", &[]), reference(&key, b"superuser"));
        }
    }

    #[test]
    fn derivation_is_stable_and_distinct_per_input() {
        let k = DerivationKey::new(b"secret");
        let a = k.derive("ogel-test", &["shop", "owner"]);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, k.derive("ogel-test", &["shop", "owner"]));
        assert_eq!(
            a,
            DerivationKey::new(b"secret").derive("ogel-test", &["shop", "owner"])
        );
        assert_ne!(a, k.derive("ogel-test", &["shop2", "owner"]));
        assert_ne!(a, k.derive("ogel-test", &["shop", "owner2"]));
        assert_ne!(a, k.derive("ogel-other", &["shop", "owner"]));
        assert_ne!(k.derive("d", &["ab", "c"]), k.derive("d", &["a", "bc"]));
        assert_ne!(
            a,
            DerivationKey::new(b"secret2").derive("ogel-test", &["shop", "owner"])
        );
        // A key longer than a block is not confused with its prefix.
        let long = vec![1u8; 100];
        assert_ne!(
            DerivationKey::new(&long).derive("d", &[]),
            DerivationKey::new(&long[..64]).derive("d", &[])
        );
    }

    #[test]
    fn debug_redacts_the_key() {
        assert_eq!(
            format!("{:?}", DerivationKey::new(b"hunter2")),
            "DerivationKey(<redacted>)"
        );
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }
}
