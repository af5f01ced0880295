//! The cold tier's object format. Every object is sealed before it is put
//! and opened (checked) after it is got, so a store that loses, cuts or
//! flips bits never hands back wrong content:
//!
//! ```text
//! magic   b"OGL1"                        4 bytes
//! flags   bit0 zstd, bit1 encrypted,     1 byte
//!         bit2 the SHA-256 is of the body
//! sha256  of the body before encryption  32 bytes
//!         (bit2; the zstd bytes, with zstd's own content checksum in its
//!         frame), else of the original content (objects written before)
//! length  of the original content, BE    8 bytes
//! body    zstd (level 3) of the content; encrypted: a 12-byte random
//!         nonce, then AES-256-GCM of the zstd bytes (ciphertext + tag),
//!         with the 45 header bytes as associated data
//! ```
//!
//! The header is authenticated when encrypted (a flipped flag or length
//! fails decryption) and checked in every case. Any changed byte of the
//! body fails its SHA-256 before it is decompressed; zstd's frame checksum
//! (XXH64 of the content) and the length then check the decompression.
//! Hashing the compressed body instead of the content hashes ~20x fewer
//! bytes for database files and WAL, which made SHA-256 half of a
//! restore's CPU. Objects of the earlier format (bit2 clear) are checked
//! against their content's SHA-256 as before.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::io::Read;

const MAGIC: &[u8; 4] = b"OGL1";
const FLAG_ZSTD: u8 = 0b01;
const FLAG_ENCRYPTED: u8 = 0b10;
const FLAG_BODY_DIGEST: u8 = 0b100;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_ENCRYPTED | FLAG_BODY_DIGEST;
/// magic + flags + SHA-256 + length.
const HEADER_LEN: usize = 4 + 1 + 32 + 8;
const TAG_LEN: usize = 16;
const ZSTD_LEVEL: i32 = 3;

/// A 32-byte AES-256-GCM key.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// From `cold.encryption_key`: 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, String> {
        const MESSAGE: &str = "cold.encryption_key must be 64 hex digits (32 bytes)";
        let hex = hex.trim();
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex, &mut key).map_err(|e| format!("{MESSAGE}: {e}"))?;
        Ok(SealKey(key))
    }

    /// The AEAD key (ring's type is not `Clone`; making one is cheap).
    fn aead(&self) -> LessSafeKey {
        match UnboundKey::new(&AES_256_GCM, &self.0) {
            Ok(key) => LessSafeKey::new(key),
            // ring refuses only a key of the wrong length, which a
            // `[u8; 32]` cannot be.
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        }
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("SealKey(..)")
    }
}

/// The object format (see the module doc): magic b"OGL1", a flags byte,
/// the SHA-256 of the body before encryption (32 bytes), the original
/// length (u64 BE), then the body: zstd (level 3, with its content
/// checksum) of the content, and, with a key, AES-256-GCM of that (12-byte
/// random nonce first, then ciphertext+tag; the header bytes are the
/// associated data).
pub fn seal(content: &[u8], key: Option<&SealKey>) -> Vec<u8> {
    // zstd fails only on allocation or a bad level; then the body is
    // stored as it is (bit0 clear), which `open` reads just as well.
    let (mut flags, body) = match compress(content) {
        Ok(compressed) => (FLAG_ZSTD | FLAG_BODY_DIGEST, compressed),
        Err(_) => (FLAG_BODY_DIGEST, content.to_vec()),
    };
    if key.is_some() {
        flags |= FLAG_ENCRYPTED;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(flags);
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&(content.len() as u64).to_be_bytes());
    match key {
        None => out.extend_from_slice(&body),
        Some(key) => {
            let nonce = random_nonce();
            let mut sealed = body;
            // Fails only for inputs over AES-GCM's 64 GiB limit, far above
            // any object this tier writes.
            if key
                .aead()
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&out[..HEADER_LEN]),
                    &mut sealed,
                )
                .is_err()
            {
                unreachable!("AES-256-GCM refused to seal {} bytes", sealed.len());
            }
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
        }
    }
    out
}

/// zstd level 3 with the frame's content checksum (XXH64), so a decoder
/// fault cannot go unnoticed even though the SHA-256 covers the zstd bytes.
fn compress(content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    compressor.include_checksum(true)?;
    compressor.compress(content)
}

/// A fresh random nonce: a 96-bit random nonce per object keeps the
/// chance of a repeat negligible for far more objects than a tier holds.
fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    if SystemRandom::new().fill(&mut nonce).is_err() {
        // The OS random source failing is not something to go on without:
        // a predictable nonce would break AES-GCM.
        panic!("the system random number generator failed");
    }
    nonce
}

/// Reverses `seal` and checks everything: magic, flags, decryption (a key
/// is needed if encrypted: clear error; a wrong key is a clear error),
/// decompression, length and SHA-256. `name` is used in error messages.
pub fn open(name: &str, sealed: &[u8], key: Option<&SealKey>) -> Result<Vec<u8>, String> {
    let corrupt = |why: &str| format!("object {name} is corrupt: {why}");
    if sealed.len() < HEADER_LEN {
        if sealed.len() >= MAGIC.len() && &sealed[..MAGIC.len()] != MAGIC {
            return Err(corrupt(
                "it does not start with OGL1 (not an OgelBase cold object)",
            ));
        }
        return Err(corrupt(&format!(
            "it is {} bytes, shorter than its {HEADER_LEN}-byte header (truncated)",
            sealed.len()
        )));
    }
    let (header, body) = sealed.split_at(HEADER_LEN);
    if &header[..4] != MAGIC {
        return Err(corrupt(
            "it does not start with OGL1 (not an OgelBase cold object)",
        ));
    }
    let flags = header[4];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(corrupt(&format!(
            "unknown flags {flags:#04x} (written by a newer OgelBase, or damaged)"
        )));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&header[5..37]);
    let mut length = [0u8; 8];
    length.copy_from_slice(&header[37..45]);
    let length = u64::from_be_bytes(length);

    let decrypted;
    let body = if flags & FLAG_ENCRYPTED != 0 {
        let Some(key) = key else {
            return Err(format!(
                "object {name} is encrypted and no cold.encryption_key is configured: set the key it was written with"
            ));
        };
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(corrupt("its encrypted body is too short (truncated)"));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut buffer = ciphertext.to_vec();
        let plain = key
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(header),
                &mut buffer,
            )
            .map_err(|_| {
                format!(
                    "object {name} could not be decrypted: cold.encryption_key is not the key it was written with, or the object is corrupt"
                )
            })?;
        let plain_len = plain.len();
        buffer.truncate(plain_len);
        decrypted = buffer;
        &decrypted[..]
    } else {
        body
    };

    let digest_of_body = flags & FLAG_BODY_DIGEST != 0;
    if digest_of_body && Sha256::digest(body)[..] != digest[..] {
        return Err(corrupt("its content does not match its SHA-256"));
    }
    let content = if flags & FLAG_ZSTD != 0 {
        decompress(body, length).map_err(|why| corrupt(&why))?
    } else {
        body.to_vec()
    };
    if content.len() as u64 != length {
        return Err(corrupt(&format!(
            "its content is {} bytes, its header says {length} (truncated?)",
            content.len()
        )));
    }
    if !digest_of_body && Sha256::digest(&content)[..] != digest[..] {
        return Err(corrupt("its content does not match its SHA-256"));
    }
    Ok(content)
}

/// Largest output allocated up front, from the header's length: a backup
/// part (64 MiB) is decompressed without growing and copying its buffer,
/// and a header lying about a huge length costs at most this much.
const PREALLOCATE_MAX: u64 = 80 << 20;

/// Decompresses a zstd body that the header says holds `length` bytes.
/// The output is allocated up front up to [`PREALLOCATE_MAX`], grows past
/// it only as data comes, and stops one byte past `length`.
fn decompress(body: &[u8], length: u64) -> Result<Vec<u8>, String> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(body)
        .map_err(|e| format!("its body could not be decompressed: {e}"))?
        .single_frame();
    let mut out = Vec::with_capacity(
        usize::try_from(length.saturating_add(1).min(PREALLOCATE_MAX)).unwrap_or(0),
    );
    (&mut decoder)
        .take(length.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("its body could not be decompressed: {e}"))?;
    if out.len() as u64 > length {
        return Err(format!(
            "its body decompresses to more than the {length} bytes its header says"
        ));
    }
    // Bytes after the zstd frame are not part of anything `seal` writes.
    let rest = decoder.finish();
    if !rest.is_empty() {
        return Err(format!("{} stray bytes follow its zstd frame", rest.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const NAME: &str = "shop/main/1a2b/wal/000000010000000000000003";

    fn contents() -> Vec<Vec<u8>> {
        let mut wal_like = Vec::new();
        for i in 0u32..20_000 {
            wal_like.extend_from_slice(&(i % 97).to_le_bytes());
            wal_like.extend_from_slice(b"record");
        }
        vec![
            Vec::new(),
            b"x".to_vec(),
            b"hello, cold tier".to_vec(),
            vec![0u8; 1 << 16],
            wal_like,
        ]
    }

    #[test]
    fn round_trip_with_and_without_a_key() {
        let key = SealKey::from_hex(KEY).unwrap();
        for content in contents() {
            let plain = seal(&content, None);
            assert_eq!(&plain[..4], b"OGL1");
            assert_eq!(plain[4], FLAG_ZSTD | FLAG_BODY_DIGEST);
            assert_eq!(open(NAME, &plain, None).unwrap(), content);
            // A key configured later still opens unencrypted objects.
            assert_eq!(open(NAME, &plain, Some(&key)).unwrap(), content);

            let encrypted = seal(&content, Some(&key));
            assert_eq!(encrypted[4], FLAG_ZSTD | FLAG_ENCRYPTED | FLAG_BODY_DIGEST);
            assert_eq!(open(NAME, &encrypted, Some(&key)).unwrap(), content);
            // Fresh nonce each time.
            assert_ne!(seal(&content, Some(&key)), encrypted);
        }
    }

    #[test]
    fn compresses() {
        let content = vec![7u8; 1 << 20];
        assert!(seal(&content, None).len() < 1024);
    }

    /// With a key, AES-GCM authenticates every byte: any flip fails. Without
    /// one, a flip fails the magic, flags, length or SHA-256 check, or
    /// breaks decompression — except in the few bits zstd's decoder ignores
    /// (reserved bits of its headers), which leave the content exactly as
    /// it was: a flip never yields other content.
    #[test]
    fn a_flipped_bit_anywhere_is_detected() {
        let key = SealKey::from_hex(KEY).unwrap();
        // Varied enough for zstd to write Huffman and FSE tables.
        let mut content = Vec::new();
        for i in 0u32..1500 {
            content.extend_from_slice(format!("{} {}, ", i * 7919 % 1013, i % 13).as_bytes());
        }
        for key in [None, Some(&key)] {
            let sealed = seal(&content, key);
            let mut harmless = Vec::new();
            for i in 0..sealed.len() {
                for bit in 0..8 {
                    let mut bad = sealed.clone();
                    bad[i] ^= 1 << bit;
                    match open(NAME, &bad, key) {
                        Err(e) => assert!(e.contains(NAME), "{e}"),
                        Ok(opened) => {
                            assert_eq!(opened, content, "bit {bit} of byte {i}: other content");
                            harmless.push((i, bit));
                        }
                    }
                }
            }
            // The SHA-256 covers the body: every flip is noticed.
            assert!(
                harmless.is_empty(),
                "unnoticed flips (key: {}): {harmless:?}",
                key.is_some()
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_small_objects_is_detected() {
        let key = SealKey::from_hex(KEY).unwrap();
        for content in contents() {
            for key in [None, Some(&key)] {
                let sealed = seal(&content, key);
                for i in 0..sealed.len().min(400) {
                    let mut bad = sealed.clone();
                    bad[i] ^= 0xff;
                    match open(NAME, &bad, key) {
                        Err(_) => {}
                        Ok(_) => panic!("byte {i} flipped, not noticed (key: {})", key.is_some()),
                    }
                }
            }
        }
    }

    #[test]
    fn content_mismatch_names_the_object() {
        let mut sealed = seal(b"some content", None);
        sealed[10] ^= 1; // inside the stored SHA-256
        let e = open(NAME, &sealed, None).unwrap_err();
        assert_eq!(
            e,
            format!("object {NAME} is corrupt: its content does not match its SHA-256")
        );
    }

    #[test]
    fn wrong_key_is_a_clear_error() {
        let key = SealKey::from_hex(KEY).unwrap();
        let other = SealKey::from_hex(OTHER).unwrap();
        let sealed = seal(b"secret", Some(&key));
        let e = open(NAME, &sealed, Some(&other)).unwrap_err();
        assert!(e.contains(NAME), "{e}");
        assert!(e.contains("not the key it was written with"), "{e}");
    }

    #[test]
    fn missing_key_is_a_clear_error() {
        let key = SealKey::from_hex(KEY).unwrap();
        let sealed = seal(b"secret", Some(&key));
        let e = open(NAME, &sealed, None).unwrap_err();
        assert!(e.contains("is encrypted"), "{e}");
        assert!(e.contains("cold.encryption_key"), "{e}");
    }

    #[test]
    fn truncated_input_is_a_clear_error() {
        let key = SealKey::from_hex(KEY).unwrap();
        let content = contents().pop().unwrap();
        for key in [None, Some(&key)] {
            let sealed = seal(&content, key);
            for len in (0..sealed.len()).step_by(37).chain([sealed.len() - 1]) {
                let e = open(NAME, &sealed[..len], key).unwrap_err();
                assert!(e.contains(NAME), "{e}");
            }
        }
        let e = open(NAME, b"OGL1\x01", None).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = open(NAME, b"", None).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn bad_magic_is_a_clear_error() {
        let mut sealed = seal(b"content", None);
        sealed[0] = b'X';
        let e = open(NAME, &sealed, None).unwrap_err();
        assert!(e.contains("does not start with OGL1"), "{e}");
        let e = open(NAME, b"PK\x03\x04 not ours", None).unwrap_err();
        assert!(e.contains("does not start with OGL1"), "{e}");
    }

    #[test]
    fn unknown_flags_are_refused() {
        let mut sealed = seal(b"content", None);
        sealed[4] |= 0x80;
        let e = open(NAME, &sealed, None).unwrap_err();
        assert!(e.contains("unknown flags"), "{e}");
    }

    /// A header that lies about the length allocates nothing big and fails.
    #[test]
    fn a_lying_length_is_refused() {
        let content = vec![1u8; 10_000];
        for claimed in [0u64, 9_999, 10_001, u64::MAX] {
            let mut sealed = seal(&content, None);
            sealed[37..45].copy_from_slice(&claimed.to_be_bytes());
            let e = open(NAME, &sealed, None).unwrap_err();
            assert!(e.contains("is corrupt"), "{claimed}: {e}");
        }
        // A "zip bomb": small content claimed small, but decompressing to more.
        let big = vec![0u8; 4 << 20];
        let mut sealed = seal(&big, None);
        sealed[37..45].copy_from_slice(&1000u64.to_be_bytes());
        let e = open(NAME, &sealed, None).unwrap_err();
        assert!(e.contains("more than the 1000 bytes"), "{e}");
    }

    #[test]
    fn uncompressed_bodies_open() {
        // What `seal` writes if zstd ever fails: bit0 clear, the raw body.
        let content = b"raw body".to_vec();
        let mut sealed = Vec::new();
        sealed.extend_from_slice(MAGIC);
        sealed.push(0);
        sealed.extend_from_slice(&Sha256::digest(&content));
        sealed.extend_from_slice(&(content.len() as u64).to_be_bytes());
        sealed.extend_from_slice(&content);
        assert_eq!(open(NAME, &sealed, None).unwrap(), content);
    }

    /// Objects written before the SHA-256 covered the body still open, and
    /// are still checked against their content.
    #[test]
    fn objects_of_the_earlier_format_open() {
        let content = b"written by an earlier OgelBase ".repeat(100);
        let earlier = |digest: [u8; 32]| {
            let mut sealed = Vec::new();
            sealed.extend_from_slice(MAGIC);
            sealed.push(FLAG_ZSTD);
            sealed.extend_from_slice(&digest);
            sealed.extend_from_slice(&(content.len() as u64).to_be_bytes());
            sealed.extend_from_slice(&zstd::bulk::compress(&content, ZSTD_LEVEL).unwrap());
            sealed
        };
        let right: [u8; 32] = Sha256::digest(&content).into();
        assert_eq!(open(NAME, &earlier(right), None).unwrap(), content);
        let e = open(NAME, &earlier([0; 32]), None).unwrap_err();
        assert!(e.contains("does not match its SHA-256"), "{e}");
        // New objects: no flip anywhere goes unnoticed, key or not.
        let sealed = seal(&content, None);
        assert_eq!(sealed[4] & FLAG_BODY_DIGEST, FLAG_BODY_DIGEST);
    }

    #[test]
    fn key_from_hex() {
        assert!(SealKey::from_hex(KEY).is_ok());
        assert!(SealKey::from_hex(&KEY.to_uppercase()).is_ok());
        for bad in [
            "",
            "00",
            &KEY[..62],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
        ] {
            let e = SealKey::from_hex(bad).unwrap_err();
            assert!(
                e.starts_with("cold.encryption_key must be 64 hex digits (32 bytes)"),
                "{e}"
            );
        }
        // The key is never printed.
        let key = SealKey::from_hex(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "SealKey(..)");
    }
}
