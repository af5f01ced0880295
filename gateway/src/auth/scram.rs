//! Server side of SCRAM-SHA-256 authentication (RFC 5802 / RFC 7677) as PostgreSQL speaks it.
//!
//! This module owns:
//!
//! * the stored verifier format, `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`
//!   ([`ScramVerifier::hash_password`], [`ScramVerifier::parse`]);
//! * deterministic mock verifiers for users that do not exist, so that an unknown user runs
//!   the same exchange and fails the same way as a wrong password ([`ScramVerifier::mock`]);
//! * the server half of the message exchange ([`ScramExchange`]): parsing the
//!   client-first-message carried in `SASLInitialResponse`, producing the server-first-message
//!   for `AuthenticationSASLContinue`, checking the client-final-message carried in
//!   `SASLResponse`, and producing the server-final-message for `AuthenticationSASLFinal`.
//!
//! It does not own the wire framing, user lookup, or turning a [`ScramError`] into an
//! `ErrorResponse`; callers do that, using the SQLSTATEs documented on each error variant.
//!
//! Only the `SCRAM-SHA-256` mechanism is offered: there is no channel binding
//! (`SCRAM-SHA-256-PLUS`). Clients may send the gs2 header `n,,` (no channel binding) or `y,,`
//! (client supports it, but believes the server does not); `p=...` is rejected with
//! [`ScramError::ChannelBindingUnsupported`], and an authorization identity (`a=`) is rejected as
//! malformed. Like PostgreSQL, the username in the client-first-message (`n=`, usually empty) is
//! ignored: the user is the one named in the startup packet.
//!
//! Nothing in this module panics on client input: every malformed byte sequence is reported
//! as [`ScramError::Malformed`] (or [`ScramError::ChannelBindingUnsupported`]).

use super::constant_time_eq;
use std::fmt;
use std::mem;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Length in bytes of SHA-256 output, and so of StoredKey, ServerKey and ClientProof.
const KEY_LEN: usize = 32;
/// SHA-256 block size: the HMAC key length after normalisation (RFC 2104).
const HMAC_BLOCK_LEN: usize = 64;
/// Number of random bytes in the server's part of the nonce (as PostgreSQL uses).
const SERVER_NONCE_LEN: usize = 18;
/// Upper bound on a client SCRAM message. Real messages are around 100 bytes.
const MAX_MESSAGE_LEN: usize = 4096;
/// Iteration count of mock verifiers; matches what `hash_password` produces.
const MOCK_ITERATIONS: u32 = 4096;
/// Salt length of mock verifiers; matches what `hash_password` produces.
const MOCK_SALT_LEN: usize = 16;
/// Prefix of the stored verifier text.
const VERIFIER_PREFIX: &str = "SCRAM-SHA-256$";
/// Base64 of the gs2 header `n,,`, expected in `c=` of the client-final-message.
const CBIND_NO_CHANNEL_BINDING: &str = "biws";
/// Base64 of the gs2 header `y,,`, expected in `c=` of the client-final-message.
const CBIND_CLIENT_SUPPORTS: &str = "eSws";
/// Attribute names defined by RFC 5802; they may not reappear as extensions.
const RESERVED_ATTRIBUTES: &[u8] = b"acimnprsv";

/// A SCRAM-SHA-256 verifier as Postgres stores it: `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
///
/// `Debug` output shows the iteration count and salt but redacts StoredKey and ServerKey.
#[derive(Clone)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count sent to the client (`i=`).
    iterations: u32,
    /// Salt sent to the client (`s=`).
    salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    stored_key: [u8; KEY_LEN],
    /// `HMAC(SaltedPassword, "Server Key")`.
    server_key: [u8; KEY_LEN],
    /// Set for mock verifiers: the exchange runs to the end but can never succeed.
    doomed: bool,
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Builds the verifier text for a password (use postgres_protocol::password::scram_sha_256).
    ///
    /// The password is SASLprep-normalised where possible, with a random 16-byte salt and
    /// 4096 iterations, exactly as `libpq`'s `PQencryptPasswordConn` does.
    #[must_use]
    pub fn hash_password(password: &str) -> String {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
    }

    /// Parses the stored text form. Error on anything malformed.
    ///
    /// Requires the `SCRAM-SHA-256$` prefix, a decimal iteration count of at least 1, a
    /// non-empty base64 salt, and base64 StoredKey and ServerKey of exactly 32 bytes each.
    ///
    /// # Errors
    ///
    /// Every failure is [`ScramError::InvalidVerifier`].
    pub fn parse(text: &str) -> Result<Self, ScramError> {
        let invalid = || ScramError::InvalidVerifier;
        let rest = text.strip_prefix(VERIFIER_PREFIX).ok_or_else(invalid)?;
        let (params, keys) = rest.split_once('$').ok_or_else(invalid)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(invalid)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(invalid)?;

        let iterations = parse_decimal_u32(iterations)
            .filter(|&n| n > 0)
            .ok_or_else(invalid)?;
        let salt = STANDARD.decode(salt).map_err(|_| invalid())?;
        if salt.is_empty() {
            return Err(invalid());
        }
        let stored_key = decode_key(stored_key).ok_or_else(invalid)?;
        let server_key = decode_key(server_key).ok_or_else(invalid)?;

        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
            doomed: false,
        })
    }

    /// A deterministic fake verifier for a user that does not exist, derived with HMAC-SHA256 from `secret` and `user`,
    /// so an unknown user goes through the same exchange and fails the same way (no user enumeration).
    ///
    /// The same `(user, secret)` always yields the same salt, so repeated probes see a stable
    /// server-first-message, just as for a real user. `secret` should be a server-wide random
    /// value that is stable across restarts. Authentication against a mock verifier always
    /// ends in [`ScramError::WrongPassword`], whatever the client sends.
    #[must_use]
    pub fn mock(user: &str, secret: &[u8]) -> Self {
        let derive = |label: &[u8]| {
            hmac_sha256(
                secret,
                &[b"ogel-scram-mock\0", label, b"\0", user.as_bytes()],
            )
        };
        let mut salt = derive(b"salt").to_vec();
        salt.truncate(MOCK_SALT_LEN);
        Self {
            iterations: MOCK_ITERATIONS,
            salt,
            stored_key: derive(b"stored-key"),
            server_key: derive(b"server-key"),
            doomed: true,
        }
    }
}

/// Why a SCRAM exchange or verifier was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The client's bytes do not follow the SCRAM grammar (maps to SQLSTATE 08P01).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client requires channel binding, which this server does not offer.
    #[error("channel binding is not supported")]
    ChannelBindingUnsupported,
    /// The proof does not match (maps to 28P01).
    #[error("password authentication failed")]
    WrongPassword,
    /// The stored verifier text is malformed.
    #[error("invalid stored SCRAM verifier")]
    InvalidVerifier,
}

/// Where an exchange is.
enum State {
    /// Waiting for the client-first-message.
    Initial,
    /// The server-first-message has been produced; waiting for the client-final-message.
    ServerFirstSent {
        /// The `c=` value the client-final-message must carry.
        expected_cbind: &'static str,
        /// Client nonce followed by server nonce.
        combined_nonce: String,
        /// client-first-message-bare, for the AuthMessage.
        client_first_bare: String,
        /// server-first-message, for the AuthMessage.
        server_first: String,
    },
    /// The exchange succeeded, failed, or was driven out of order; no further input is accepted.
    Finished,
}

/// One server-side exchange.
///
/// Drive it with [`client_first`](Self::client_first) and then
/// [`client_final`](Self::client_final). Any error, or a call out of order, ends the exchange:
/// every later call returns [`ScramError::Malformed`].
pub struct ScramExchange {
    verifier: ScramVerifier,
    state: State,
}

impl ScramExchange {
    /// Starts an exchange that authenticates against `verifier` (a real one, or
    /// [`ScramVerifier::mock`] for an unknown user).
    #[must_use]
    pub fn new(verifier: ScramVerifier) -> Self {
        Self {
            verifier,
            state: State::Initial,
        }
    }

    /// Takes the client-first-message (the bytes of SASLInitialResponse's data) and returns server-first-message bytes.
    /// Generates an 18-byte random server nonce (base64) appended to the client nonce.
    ///
    /// # Errors
    ///
    /// [`ScramError::ChannelBindingUnsupported`] for a `p=` gs2 header,
    /// [`ScramError::Malformed`] for anything else that is not
    /// `("n" / "y") ",," "n=" username ",r=" nonce *("," extension)`.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            mem::replace(&mut self.state, State::Finished),
            State::Initial
        ) {
            return Err(ScramError::Malformed("unexpected client-first-message"));
        }
        let msg = message_str(msg)?;
        let (expected_cbind, client_first_bare) = parse_gs2_header(msg)?;
        let client_nonce = parse_client_first_bare(client_first_bare)?;

        let mut server_nonce = [0u8; SERVER_NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut server_nonce);
        let combined_nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let server_first = format!(
            "r={combined_nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );

        let reply = server_first.clone().into_bytes();
        self.state = State::ServerFirstSent {
            expected_cbind,
            combined_nonce,
            client_first_bare: client_first_bare.to_owned(),
            server_first,
        };
        Ok(reply)
    }

    /// Takes client-final-message; checks channel-binding attribute c= matches the gs2 header ("biws" for "n,,", "eSws" for "y,,"),
    /// the nonce equals the combined nonce, verifies the proof in constant time, and returns server-final-message `v=<ServerSignature b64>`.
    ///
    /// # Errors
    ///
    /// [`ScramError::Malformed`] if the message is not
    /// `"c=" cbind ",r=" nonce *("," extension) ",p=" proof`, the channel binding or nonce do not
    /// match, or the proof is not 32 bytes of base64; [`ScramError::WrongPassword`] if the proof
    /// is wrong (always, for a mock verifier).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::ServerFirstSent {
            expected_cbind,
            combined_nonce,
            client_first_bare,
            server_first,
        } = mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::Malformed("unexpected client-final-message"));
        };
        let msg = message_str(msg)?;

        // The proof is always the last attribute; everything before it is signed.
        let (without_proof, proof) = msg
            .rsplit_once(',')
            .ok_or(ScramError::Malformed("client-final-message is incomplete"))?;
        let proof = proof.strip_prefix("p=").ok_or(ScramError::Malformed(
            "client proof must be the last attribute",
        ))?;

        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("expected channel-binding attribute"))?;
        if cbind != expected_cbind {
            return Err(ScramError::Malformed(
                "channel-binding data does not match the gs2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("expected nonce attribute"))?;
        if nonce != combined_nonce {
            return Err(ScramError::Malformed("unexpected nonce"));
        }
        attrs.try_for_each(check_extension)?;
        let proof = decode_key(proof).ok_or(ScramError::Malformed("invalid client proof"))?;

        // AuthMessage = client-first-message-bare "," server-first-message ","
        //               client-final-message-without-proof
        let auth_message: [&[u8]; 5] = [
            client_first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];

        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); check H(ClientKey) == StoredKey.
        let client_signature = hmac_sha256(&self.verifier.stored_key, &auth_message);
        let mut client_key = [0u8; KEY_LEN];
        for ((key, p), s) in client_key.iter_mut().zip(proof).zip(client_signature) {
            *key = p ^ s;
        }
        let computed: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let proof_ok = constant_time_eq(&computed, &self.verifier.stored_key);
        // Non-short-circuiting: a mock verifier does the same work and then fails.
        if !proof_ok | self.verifier.doomed {
            return Err(ScramError::WrongPassword);
        }

        let server_signature = hmac_sha256(&self.verifier.server_key, &auth_message);
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// Checks the size and encoding of a client message and returns it as text.
fn message_str(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.is_empty() {
        return Err(ScramError::Malformed("empty message"));
    }
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message is too long"));
    }
    let text = std::str::from_utf8(msg)
        .map_err(|_| ScramError::Malformed("message is not valid UTF-8"))?;
    if text.contains('\0') {
        return Err(ScramError::Malformed("message contains a NUL byte"));
    }
    Ok(text)
}

/// Splits the gs2 header off a client-first-message, returning the `c=` value the
/// client-final-message must carry and the client-first-message-bare.
fn parse_gs2_header(msg: &str) -> Result<(&'static str, &str), ScramError> {
    if msg.starts_with("p=") {
        return Err(ScramError::ChannelBindingUnsupported);
    }
    let (expected_cbind, rest) = if let Some(rest) = msg.strip_prefix("n,") {
        (CBIND_NO_CHANNEL_BINDING, rest)
    } else if let Some(rest) = msg.strip_prefix("y,") {
        (CBIND_CLIENT_SUPPORTS, rest)
    } else {
        return Err(ScramError::Malformed("invalid channel-binding flag"));
    };
    if rest.starts_with("a=") {
        return Err(ScramError::Malformed(
            "authorization identity is not supported",
        ));
    }
    let bare = rest
        .strip_prefix(',')
        .ok_or(ScramError::Malformed("invalid gs2 header"))?;
    Ok((expected_cbind, bare))
}

/// Parses client-first-message-bare and returns the client nonce. The username is ignored.
fn parse_client_first_bare(bare: &str) -> Result<&str, ScramError> {
    let mut attrs = bare.split(',');
    let user = attrs.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(ScramError::Malformed(
            "mandatory extensions are not supported",
        ));
    }
    if !user.starts_with("n=") {
        return Err(ScramError::Malformed("expected username attribute"));
    }
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(ScramError::Malformed("expected nonce attribute"))?;
    // printable = %x21-2B / %x2D-7E (any visible ASCII except ',')
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(ScramError::Malformed("invalid client nonce"));
    }
    attrs.try_for_each(check_extension)?;
    Ok(nonce)
}

/// Accepts an optional extension attribute (`ALPHA "=" 1*value-char`), which is ignored.
/// Attribute names that RFC 5802 defines are not extensions and are rejected.
fn check_extension(attr: &str) -> Result<(), ScramError> {
    match attr.as_bytes() {
        [name, b'=', _, ..]
            if name.is_ascii_alphabetic() && !RESERVED_ATTRIBUTES.contains(name) =>
        {
            Ok(())
        }
        _ => Err(ScramError::Malformed("unexpected attribute")),
    }
}

/// Parses a non-empty string of ASCII digits as a `u32` (no sign, no whitespace).
fn parse_decimal_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decodes standard, padded base64 that must hold exactly one 32-byte key.
fn decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let bytes = STANDARD.decode(text).ok()?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok()
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
///
/// The key is normalised to one block as RFC 2104 specifies (hashed if longer than a block,
/// then zero-padded), which lets the infallible fixed-size constructor be used for any key.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut block = [0u8; HMAC_BLOCK_LEN];
    if key.len() > HMAC_BLOCK_LEN {
        for (b, k) in block.iter_mut().zip(Sha256::digest(key)) {
            *b = k;
        }
    } else {
        for (b, k) in block.iter_mut().zip(key) {
            *b = *k;
        }
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    const SECRET: &[u8] = b"test mock secret";

    /// Runs a full exchange with the postgres-protocol client; returns the server's verdict
    /// and, on success, whether the client accepted the server-final-message.
    fn run_exchange(
        verifier: ScramVerifier,
        password: &str,
        channel_binding: ChannelBinding,
    ) -> Result<bool, ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
        let mut server = ScramExchange::new(verifier);
        let server_first = server.client_first(client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first");
        let server_final = server.client_final(client.message())?;
        Ok(client.finish(&server_final).is_ok())
    }

    fn verifier_for(password: &str) -> ScramVerifier {
        ScramVerifier::parse(&ScramVerifier::hash_password(password)).expect("valid verifier")
    }

    /// Starts an exchange with a hand-written client-first-message and returns the combined nonce.
    fn started(verifier: ScramVerifier, client_first: &str) -> (ScramExchange, String) {
        let mut server = ScramExchange::new(verifier);
        let server_first = server
            .client_first(client_first.as_bytes())
            .expect("server-first");
        let server_first = String::from_utf8(server_first).expect("utf8");
        let nonce = server_first
            .split(',')
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .expect("nonce")
            .to_owned();
        (server, nonce)
    }

    /// An exchange in the state `probe` reached after the given client-first and
    /// server-first messages, so one valid client-final-message can be replayed against
    /// many fresh exchanges.
    fn awaiting_final(
        verifier: &ScramVerifier,
        client_first: &[u8],
        server_first: &[u8],
        combined_nonce: &str,
    ) -> ScramExchange {
        let mut server = ScramExchange::new(verifier.clone());
        server.state = State::ServerFirstSent {
            expected_cbind: CBIND_NO_CHANNEL_BINDING,
            combined_nonce: combined_nonce.to_owned(),
            client_first_bare: std::str::from_utf8(client_first)
                .unwrap()
                .strip_prefix("n,,")
                .unwrap()
                .to_owned(),
            server_first: String::from_utf8(server_first.to_vec()).unwrap(),
        };
        server
    }

    #[test]
    fn full_exchange_succeeds_and_client_accepts_server_final() {
        let verifier = verifier_for("correct horse battery staple");
        let accepted = run_exchange(
            verifier.clone(),
            "correct horse battery staple",
            ChannelBinding::unsupported(),
        )
        .expect("server accepts");
        assert!(accepted, "client rejected the server signature");

        // "y,," gs2 header (client supports channel binding, server does not offer it).
        let accepted = run_exchange(
            verifier,
            "correct horse battery staple",
            ChannelBinding::unrequested(),
        )
        .expect("server accepts y,,");
        assert!(accepted);
    }

    #[test]
    fn non_ascii_password_round_trips() {
        let password = "pässwörd \u{2168}"; // SASLprep maps the Roman numeral IX
        let accepted = run_exchange(
            verifier_for(password),
            password,
            ChannelBinding::unsupported(),
        )
        .expect("server accepts");
        assert!(accepted);
    }

    #[test]
    fn server_first_message_shape() {
        let verifier = verifier_for("pw");
        let mut server = ScramExchange::new(verifier.clone());
        let reply = server.client_first(b"n,,n=,r=clientnonce").expect("ok");
        let reply = String::from_utf8(reply).expect("utf8");
        let parts: Vec<&str> = reply.split(',').collect();
        assert_eq!(parts.len(), 3);
        let nonce = parts[0].strip_prefix("r=clientnonce").expect("prefix");
        assert_eq!(STANDARD.decode(nonce).expect("b64").len(), SERVER_NONCE_LEN);
        assert_eq!(parts[1], format!("s={}", STANDARD.encode(&verifier.salt)));
        assert_eq!(parts[2], "i=4096");

        // Nonces differ between exchanges.
        let mut other = ScramExchange::new(verifier);
        let reply2 = other.client_first(b"n,,n=,r=clientnonce").expect("ok");
        assert_ne!(reply.as_bytes(), reply2.as_slice());
    }

    #[test]
    fn wrong_password_fails() {
        let result = run_exchange(
            verifier_for("right"),
            "wrong",
            ChannelBinding::unsupported(),
        );
        assert!(
            matches!(result, Err(ScramError::WrongPassword)),
            "{result:?}"
        );
    }

    #[test]
    fn mock_verifier_always_fails() {
        for password in ["", "hunter2", "alice", "test mock secret"] {
            let result = run_exchange(
                ScramVerifier::mock("alice", SECRET),
                password,
                ChannelBinding::unsupported(),
            );
            assert!(
                matches!(result, Err(ScramError::WrongPassword)),
                "{result:?}"
            );
        }
    }

    #[test]
    fn doomed_verifier_fails_even_with_the_right_password() {
        // A mock's keys have no known password, so prove the flag itself is what rejects:
        // a real verifier marked doomed refuses its own correct password.
        let mut verifier = verifier_for("pw");
        verifier.doomed = true;
        let result = run_exchange(verifier, "pw", ChannelBinding::unsupported());
        assert!(
            matches!(result, Err(ScramError::WrongPassword)),
            "{result:?}"
        );
        assert!(ScramVerifier::mock("bob", SECRET).doomed);
    }

    #[test]
    fn mock_verifier_is_deterministic_and_looks_real() {
        let a1 = ScramVerifier::mock("alice", SECRET);
        let a2 = ScramVerifier::mock("alice", SECRET);
        let b = ScramVerifier::mock("bob", SECRET);
        let a_other_secret = ScramVerifier::mock("alice", b"another secret");
        assert_eq!(a1.salt, a2.salt);
        assert_eq!(a1.stored_key, a2.stored_key);
        assert_eq!(a1.server_key, a2.server_key);
        assert_ne!(a1.salt, b.salt);
        assert_ne!(a1.salt, a_other_secret.salt);
        assert_ne!(a1.stored_key, a1.server_key);

        // Same shape as a real verifier produced by hash_password.
        let real = verifier_for("pw");
        assert_eq!(a1.salt.len(), real.salt.len());
        assert_eq!(a1.iterations, real.iterations);

        // Long secrets (more than one HMAC block) work too.
        let long = ScramVerifier::mock("alice", &[7u8; 200]);
        assert_ne!(long.salt, a1.salt);
    }

    #[test]
    fn hmac_helper_matches_reference_for_all_key_lengths() {
        for len in [0usize, 1, 31, 32, 63, 64, 65, 128, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            reference.update(b"hello, world");
            let expected: [u8; KEY_LEN] = reference.finalize().into_bytes().into();
            assert_eq!(
                hmac_sha256(&key, &[b"hello, ", b"world"]),
                expected,
                "len {len}"
            );
        }
    }

    #[test]
    fn constant_time_eq_works() {
        let a = [5u8; KEY_LEN];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn malformed_client_first_messages_are_rejected() {
        let huge = vec![b'x'; 1 << 20];
        let huge_valid_prefix = {
            let mut m = b"n,,n=,r=".to_vec();
            m.resize(m.len() + MAX_MESSAGE_LEN, b'a');
            m
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", b"".to_vec()),
            ("no gs2 header", b"n=,r=abc".to_vec()),
            ("bad cbind flag", b"x,,n=,r=abc".to_vec()),
            ("flag only", b"n".to_vec()),
            ("header only", b"n,,".to_vec()),
            ("missing second comma", b"n,n=,r=abc".to_vec()),
            ("authzid", b"n,a=admin,n=,r=abc".to_vec()),
            ("missing n=", b"n,,r=abc".to_vec()),
            ("missing r=", b"n,,n=".to_vec()),
            ("missing r= with comma", b"n,,n=,".to_vec()),
            ("r= not second", b"n,,n=,x=1,r=abc".to_vec()),
            ("empty nonce", b"n,,n=,r=".to_vec()),
            ("nonce with space", b"n,,n=,r=ab c".to_vec()),
            ("nonce with control", b"n,,n=,r=ab\x07c".to_vec()),
            ("non-ascii nonce", "n,,n=,r=äbc".as_bytes().to_vec()),
            ("mandatory extension", b"n,,m=ext,n=,r=abc".to_vec()),
            ("empty extension", b"n,,n=,r=abc,".to_vec()),
            ("extension without value", b"n,,n=,r=abc,x=".to_vec()),
            ("reserved attr as extension", b"n,,n=,r=abc,p=xyz".to_vec()),
            ("duplicate nonce", b"n,,n=,r=abc,r=def".to_vec()),
            ("NUL byte", b"n,,n=\0,r=abc".to_vec()),
            ("non-UTF8", b"n,,n=\xff\xfe,r=abc".to_vec()),
            ("non-UTF8 nonce", b"n,,n=,r=\xc3\x28".to_vec()),
            ("huge garbage", huge),
            ("huge valid-looking", huge_valid_prefix),
            ("lowercase-only garbage", b"hello".to_vec()),
            ("p without =", b"p,,n=,r=abc".to_vec()),
        ];
        for (name, msg) in cases {
            let mut server = ScramExchange::new(verifier_for("pw"));
            let result = server.client_first(&msg);
            assert!(
                matches!(result, Err(ScramError::Malformed(_))),
                "{name}: {result:?}"
            );
            // The exchange is over after an error.
            assert!(matches!(
                server.client_final(b"c=biws,r=abc,p=AAAA"),
                Err(ScramError::Malformed(_))
            ));
        }

        for msg in [
            &b"p=tls-server-end-point,,n=,r=abc"[..],
            b"p=tls-unique,,n=,r=abc",
            b"p=",
        ] {
            let mut server = ScramExchange::new(verifier_for("pw"));
            assert!(matches!(
                server.client_first(msg),
                Err(ScramError::ChannelBindingUnsupported)
            ));
        }
    }

    #[test]
    fn client_first_accepts_username_and_extensions() {
        for msg in [
            "n,,n=alice,r=abc",
            "y,,n=,r=abc",
            "n,,n=*,r=abc,x=ext,Y=other",
            "n,,n=al=2Cice,r=!\"#$%&'()*+-./~",
        ] {
            let mut server = ScramExchange::new(verifier_for("pw"));
            assert!(server.client_first(msg.as_bytes()).is_ok(), "{msg}");
        }
    }

    #[test]
    fn malformed_client_final_messages_are_rejected() {
        let verifier = verifier_for("pw");
        // Build a genuinely valid final message with the real client, then mutate it.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let client_first = client.message().to_vec();
        let mut probe = ScramExchange::new(verifier.clone());
        let server_first = probe.client_first(&client_first).expect("ok");
        client.update(&server_first).expect("client update");
        let good = String::from_utf8(client.message().to_vec()).expect("utf8");
        let (good_without_proof, good_proof) = good.rsplit_once(",p=").expect("proof");
        let nonce = good_without_proof.strip_prefix("c=biws,r=").expect("nonce");

        let short_proof = STANDARD.encode([0u8; 31]);
        let long_proof = STANDARD.encode([0u8; 33]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", b"".to_vec()),
            ("garbage", b"garbage".to_vec()),
            ("only proof", format!("p={good_proof}").into_bytes()),
            (
                "missing c=",
                format!("r={nonce},p={good_proof}").into_bytes(),
            ),
            ("missing r=", format!("c=biws,p={good_proof}").into_bytes()),
            ("missing p=", good_without_proof.as_bytes().to_vec()),
            (
                "empty proof",
                format!("{good_without_proof},p=").into_bytes(),
            ),
            (
                "bad base64 proof",
                format!("{good_without_proof},p=!!!notbase64!!!").into_bytes(),
            ),
            (
                "unpadded proof",
                format!(
                    "{good_without_proof},p={}",
                    good_proof.trim_end_matches('=')
                )
                .into_bytes(),
            ),
            (
                "short proof",
                format!("{good_without_proof},p={short_proof}").into_bytes(),
            ),
            (
                "long proof",
                format!("{good_without_proof},p={long_proof}").into_bytes(),
            ),
            (
                "wrong nonce",
                format!("c=biws,r={nonce}X,p={good_proof}").into_bytes(),
            ),
            (
                "client nonce only",
                format!("c=biws,r={},p={good_proof}", &nonce[..nonce.len() - 24]).into_bytes(),
            ),
            (
                "wrong cbind (y for n)",
                format!("c=eSws,r={nonce},p={good_proof}").into_bytes(),
            ),
            (
                "cbind with p= data",
                format!("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={nonce},p={good_proof}").into_bytes(),
            ),
            (
                "cbind empty",
                format!("c=,r={nonce},p={good_proof}").into_bytes(),
            ),
            (
                "attributes reordered",
                format!("r={nonce},c=biws,p={good_proof}").into_bytes(),
            ),
            (
                "proof not last",
                format!("c=biws,r={nonce},p={good_proof},x=1").into_bytes(),
            ),
            (
                "two proofs",
                format!("c=biws,r={nonce},p={good_proof},p={good_proof}").into_bytes(),
            ),
            (
                "reserved attr as extension",
                format!("c=biws,r={nonce},s=abc,p={good_proof}").into_bytes(),
            ),
            (
                "bad extension",
                format!("c=biws,r={nonce},1=abc,p={good_proof}").into_bytes(),
            ),
            ("trailing comma", format!("{good},").into_bytes()),
            ("NUL", format!("{good}\0").into_bytes()),
            ("non-UTF8", {
                let mut m = good.as_bytes().to_vec();
                m.extend_from_slice(b"\xff");
                m
            }),
            ("huge garbage", vec![b','; 1 << 20]),
        ];
        for (name, msg) in cases {
            let mut server = awaiting_final(&verifier, &client_first, &server_first, nonce);
            let result = server.client_final(&msg);
            assert!(
                matches!(result, Err(ScramError::Malformed(_))),
                "{name}: {result:?}"
            );
            // Exchange is over.
            assert!(matches!(
                server.client_final(good.as_bytes()),
                Err(ScramError::Malformed(_))
            ));
        }

        // Sanity: the unmutated message succeeds against the same state.
        let mut server = awaiting_final(&verifier, &client_first, &server_first, nonce);
        let server_final = server.client_final(good.as_bytes()).expect("valid");
        assert!(client.finish(&server_final).is_ok());
    }

    #[test]
    fn extensions_in_client_final_are_signed_and_accepted() {
        // Compute a proof by hand for a final message carrying an extension.
        let password = "pw";
        let verifier = verifier_for(password);
        let (mut server, nonce) = started(verifier.clone(), "y,,n=,r=abc");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let salted = {
            // Hi(password, salt, i) per RFC 5802.
            let mut u = hmac_sha256(password.as_bytes(), &[&verifier.salt, &1u32.to_be_bytes()]);
            let mut hi = u;
            for _ in 1..verifier.iterations {
                u = hmac_sha256(password.as_bytes(), &[&u]);
                for (h, x) in hi.iter_mut().zip(u) {
                    *h ^= x;
                }
            }
            hi
        };
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        assert_eq!(stored_key, verifier.stored_key);
        let without_proof = format!("c=eSws,r={nonce},x=some-extension");
        let auth = format!("n=,r=abc,{server_first},{without_proof}");
        let signature = hmac_sha256(&stored_key, &[auth.as_bytes()]);
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        let msg = format!("{without_proof},p={}", STANDARD.encode(proof));
        let reply = server.client_final(msg.as_bytes()).expect("accepted");
        let server_key = hmac_sha256(&salted, &[b"Server Key"]);
        let expected = hmac_sha256(&server_key, &[auth.as_bytes()]);
        assert_eq!(
            reply,
            format!("v={}", STANDARD.encode(expected)).into_bytes()
        );
    }

    #[test]
    fn out_of_order_calls_are_malformed() {
        let verifier = verifier_for("pw");

        // client_final before client_first.
        let mut server = ScramExchange::new(verifier.clone());
        assert!(matches!(
            server.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            server.client_first(b"n,,n=,r=abc"),
            Err(ScramError::Malformed(_))
        ));

        // client_first twice.
        let mut server = ScramExchange::new(verifier.clone());
        server.client_first(b"n,,n=,r=abc").expect("ok");
        assert!(matches!(
            server.client_first(b"n,,n=,r=abc"),
            Err(ScramError::Malformed(_))
        ));

        // Anything after a successful exchange.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let mut server = ScramExchange::new(verifier.clone());
        let first = server.client_first(client.message()).expect("ok");
        client.update(&first).expect("update");
        let final_msg = client.message().to_vec();
        server.client_final(&final_msg).expect("ok");
        assert!(matches!(
            server.client_final(&final_msg),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            server.client_first(b"n,,n=,r=abc"),
            Err(ScramError::Malformed(_))
        ));

        // A retry after a wrong password is also refused.
        let mut client = ScramSha256::new(b"nope", ChannelBinding::unsupported());
        let mut server = ScramExchange::new(verifier);
        let first = server.client_first(client.message()).expect("ok");
        client.update(&first).expect("update");
        let final_msg = client.message().to_vec();
        assert!(matches!(
            server.client_final(&final_msg),
            Err(ScramError::WrongPassword)
        ));
        assert!(matches!(
            server.client_final(&final_msg),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        use rand::Rng;
        let verifier = verifier_for("pw");
        let mut rng = rand::thread_rng();

        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let client_first = client.message().to_vec();
        let mut probe = ScramExchange::new(verifier.clone());
        let server_first = probe.client_first(&client_first).expect("ok");
        client.update(&server_first).expect("update");
        let client_final = client.message().to_vec();

        let alphabet = b"npyrcam=,\0\xff=biwsAZ09+/";
        for _ in 0..2000 {
            let len = rng.gen_range(0..64);
            let msg: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let mut server = ScramExchange::new(verifier.clone());
            let _ = server.client_first(&msg);
            let _ = server.client_final(&msg);

            let mut server = ScramExchange::new(verifier.clone());
            let _ = server.client_first(&client_first);
            let _ = server.client_final(&msg);
        }

        // Every truncation and every single-byte corruption of valid messages.
        for base in [&client_first, &client_final] {
            for cut in 0..=base.len() {
                let mut server = ScramExchange::new(verifier.clone());
                let _ = server.client_first(&base[..cut]);
                let _ = server.client_final(&base[..cut]);
            }
            for i in 0..base.len() {
                for b in [0u8, b',', b'=', 0xff, b'p'] {
                    let mut msg = base.clone();
                    msg[i] = b;
                    let mut server = ScramExchange::new(verifier.clone());
                    let _ = server.client_first(&msg);
                    let _ = server.client_final(&msg);
                }
            }
        }
    }

    #[test]
    fn parse_round_trips_hash_password_output() {
        for password in ["pw", "", "pässwörd", "with spaces and $:, symbols"] {
            let text = ScramVerifier::hash_password(password);
            let v = ScramVerifier::parse(&text).expect("parses");
            assert!(!v.doomed);
            let rebuilt = format!(
                "SCRAM-SHA-256${}:{}${}:{}",
                v.iterations,
                STANDARD.encode(&v.salt),
                STANDARD.encode(v.stored_key),
                STANDARD.encode(v.server_key)
            );
            assert_eq!(rebuilt, text);
            let accepted =
                run_exchange(v, password, ChannelBinding::unsupported()).expect("accepted");
            assert!(accepted);
        }

        // A verifier with a different iteration count and salt length.
        let key = STANDARD.encode([1u8; KEY_LEN]);
        let v = ScramVerifier::parse(&format!("SCRAM-SHA-256$1:AA==${key}:{key}")).expect("ok");
        assert_eq!(v.iterations, 1);
        assert_eq!(v.salt, vec![0]);
    }

    #[test]
    fn debug_output_redacts_keys() {
        let v = verifier_for("pw");
        let debug = format!("{v:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.contains(&STANDARD.encode(v.stored_key)));
        assert!(!debug.contains(&STANDARD.encode(v.server_key)));
    }

    #[test]
    fn parse_rejects_malformed_verifiers() {
        let key = STANDARD.encode([1u8; KEY_LEN]);
        let short = STANDARD.encode([1u8; KEY_LEN - 1]);
        let long = STANDARD.encode([1u8; KEY_LEN + 1]);
        let salt = STANDARD.encode([2u8; 16]);
        let good = format!("SCRAM-SHA-256$4096:{salt}${key}:{key}");
        assert!(ScramVerifier::parse(&good).is_ok());

        let cases = [
            String::new(),
            "SCRAM-SHA-256$".to_owned(),
            "md5d41d8cd98f00b204e9800998ecf8427e".to_owned(),
            "pw".to_owned(),
            format!("scram-sha-256$4096:{salt}${key}:{key}"),
            format!("SCRAM-SHA-1$4096:{salt}${key}:{key}"),
            format!(" SCRAM-SHA-256$4096:{salt}${key}:{key}"),
            format!("{good} "),
            format!("{good}\n"),
            format!("{good}$extra"),
            format!("{good}:extra"),
            format!("SCRAM-SHA-256$4096:{salt}${key}"),
            format!("SCRAM-SHA-256$4096:{salt}"),
            format!("SCRAM-SHA-256$4096${key}:{key}"),
            format!("SCRAM-SHA-256$0:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$-1:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$+4096:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$ 4096:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$4096x:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$99999999999:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$:{salt}${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:!!!!${key}:{key}"),
            format!(
                "SCRAM-SHA-256$4096:{}${key}:{key}",
                salt.trim_end_matches('=')
            ),
            format!("SCRAM-SHA-256$4096:{salt}${short}:{key}"),
            format!("SCRAM-SHA-256$4096:{salt}${key}:{long}"),
            format!("SCRAM-SHA-256$4096:{salt}$:{key}"),
            format!("SCRAM-SHA-256$4096:{salt}${key}:"),
            format!("SCRAM-SHA-256$4096:{salt}${key}:{key}:{key}"),
            format!("SCRAM-SHA-256$4096:{salt}:{salt}${key}:{key}"),
        ];
        for text in cases {
            assert!(
                matches!(
                    ScramVerifier::parse(&text),
                    Err(ScramError::InvalidVerifier)
                ),
                "accepted {text:?}"
            );
        }
    }
}
