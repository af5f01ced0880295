//! Logging in over a raw socket with SCRAM-SHA-256 — cleanly (the
//! post-auth workers) or with the client-first and client-final messages
//! spoiled (the interactive pre-auth inputs).

use crate::conn::{Conn, End};
use crate::rng::Rng;
use bytes::BytesMut;
use ogel::wire::frontend::{self, auth_code, backend_key, error_field};
use postgres_protocol::authentication::sasl::ChannelBinding;
use postgres_protocol::authentication::sasl::ScramSha256;
use tokio::time::Instant;

/// How a login ended.
pub enum Auth {
    /// ReadyForQuery came; the cancel key, if one was sent.
    Ready(Option<(u32, u32)>),
    /// An ErrorResponse (its SQLSTATE): the gateway should close next.
    Refused(String),
    /// The gateway closed the connection (or it broke).
    Ended(End),
}

/// Spoils the SCRAM messages of a [`ScramCase`].
pub struct Spoiler<'a> {
    pub first: usize,
    pub last: usize,
    pub rng: &'a mut Rng,
}

impl Spoiler<'_> {
    /// (mechanism, client-first, declared length).
    pub fn first(&mut self, data: &mut Vec<u8>) -> (Vec<u8>, Option<i32>) {
        let mut mechanism = b"SCRAM-SHA-256".to_vec();
        let mut declared = None;
        let rng = &mut *self.rng;
        match self.first {
            0 => {}
            1 => {
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(data.len());
                    data[i] ^= rng.byte().max(1);
                }
            }
            2 => data.splice(..3, b"y,,".iter().copied()).for_each(drop),
            3 => data
                .splice(..3, b"p=tls-server-end-point,,".iter().copied())
                .for_each(drop),
            4 => data.extend_from_slice(rng.pick(&[b",x=1".as_slice(), b",m=1", b",", b",r=x"])),
            5 => data.splice(..3, b"n,a=fz,".iter().copied()).for_each(drop),
            6 => {
                mechanism = rng
                    .pick(&[b"SCRAM-SHA-1".as_slice(), b"", b"\xff"])
                    .to_vec()
            }
            7 => declared = Some(rng.pick(&[-1, data.len() as i32 + 1, data.len() as i32 - 1, 0])),
            _ => {
                // A nonce of 3000 characters (the message passes 4096 only
                // with the rest: still within SASL limits).
                data.extend(std::iter::repeat_n(b'Z', 3000));
            }
        }
        (mechanism, declared)
    }

    /// The client-final message for `server_first`.
    pub fn last(&mut self, scram: &mut ScramSha256, server_first: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(server_first);
        let nonce = text
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .unwrap_or("")
            .to_string();
        let rng = &mut *self.rng;
        let handmade = |rng: &mut Rng, cbind: &str, nonce: &str, proof_len: usize| {
            let proof = base64(&rng.bytes(proof_len));
            format!("c={cbind},r={nonce},p={proof}").into_bytes()
        };
        // The real message costs PBKDF2; only where it is used.
        let real = |scram: &mut ScramSha256| {
            scram
                .update(server_first)
                .ok()
                .map(|()| scram.message().to_vec())
        };
        match self.last {
            0 => real(scram).unwrap_or_else(|| handmade(rng, "biws", &nonce, 32)),
            1 => {
                let mut m = real(scram).unwrap_or_else(|| handmade(rng, "biws", &nonce, 32));
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(m.len());
                    m[i] ^= rng.byte().max(1);
                }
                m
            }
            2 => {
                let m = real(scram).unwrap_or_else(|| handmade(rng, "biws", &nonce, 32));
                let text = String::from_utf8_lossy(&m).into_owned();
                match text.rsplit_once(",p=") {
                    Some((head, proof)) => format!("{head},x=fz,p={proof}").into_bytes(),
                    None => m,
                }
            }
            3 => handmade(rng, "biws", &nonce, 32),
            4 => handmade(rng, "biws", &format!("{nonce}x"), 32),
            5 => handmade(rng, "eSws", &nonce, 32),
            6 => match rng.below(5) {
                0 => Vec::new(),
                1 => {
                    let n = rng.skewed(64);
                    rng.bytes(n)
                }
                2 => vec![b'c'; 5000],
                3 => b"c=biws,r=\0,p=AAAA".to_vec(),
                _ => b"c=biws,r=\xff,p=AAAA".to_vec(),
            },
            7 => {
                let mut m = real(scram).unwrap_or_else(|| handmade(rng, "biws", &nonce, 32));
                let keep = rng.below(m.len());
                m.truncate(keep);
                m
            }
            _ => {
                if rng.chance(1, 2) {
                    {
                        let proof_len = rng.pick(&[0, 31, 33, 64]);
                        handmade(rng, "biws", &nonce, proof_len)
                    }
                } else {
                    format!("c=biws,r={nonce},p=!!!!").into_bytes()
                }
            }
        }
    }
}

/// Logs in with SCRAM-SHA-256 over `conn`, the messages spoiled by
/// `spoiler` if given.
pub async fn authenticate(
    conn: &mut Conn,
    user: &[u8],
    database: &[u8],
    password: &str,
    extra: &[(Vec<u8>, Vec<u8>)],
    mut spoiler: Option<Spoiler<'_>>,
    deadline: Instant,
) -> Auth {
    let mut params: Vec<(&[u8], &[u8])> = vec![(b"user", user), (b"database", database)];
    params.extend(extra.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let mut startup = BytesMut::new();
    frontend::startup_message(&mut startup, &params);
    if let Err(e) = conn.send(&startup, deadline).await {
        return Auth::Ended(e);
    }
    // AuthenticationSASL.
    loop {
        match conn.read_message(deadline).await {
            Ok((b'R', body)) if auth_code(&body) == Some(10) => break,
            Ok((b'E', body)) => return Auth::Refused(refused_code(&body)),
            Ok(_) => {}
            Err(e) => return Auth::Ended(e),
        }
    }
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut first = scram.message().to_vec();
    let (mechanism, declared) = match spoiler.as_mut() {
        Some(s) => s.first(&mut first),
        None => (b"SCRAM-SHA-256".to_vec(), None),
    };
    let mut initial = BytesMut::new();
    match declared {
        Some(declared) => {
            frontend::sasl_initial_response_declaring(&mut initial, &mechanism, &first, declared)
        }
        None => frontend::sasl_initial_response(&mut initial, &mechanism, &first),
    }
    if let Err(e) = conn.send(&initial, deadline).await {
        return Auth::Ended(e);
    }
    // AuthenticationSASLContinue.
    let server_first = loop {
        match conn.read_message(deadline).await {
            Ok((b'R', body)) if auth_code(&body) == Some(11) => break body[4..].to_vec(),
            Ok((b'E', body)) => return Auth::Refused(refused_code(&body)),
            Ok(_) => {}
            Err(e) => return Auth::Ended(e),
        }
    };
    let last = match spoiler.as_mut() {
        Some(s) => s.last(&mut scram, &server_first),
        None => {
            if scram.update(&server_first).is_err() {
                return Auth::Refused("client: server-first-message rejected".into());
            }
            scram.message().to_vec()
        }
    };
    let mut response = BytesMut::new();
    frontend::sasl_response(&mut response, &last);
    if let Err(e) = conn.send(&response, deadline).await {
        return Auth::Ended(e);
    }
    let mut key = None;
    loop {
        match conn.read_message(deadline).await {
            Ok((b'K', body)) if backend_key(&body).is_some() => key = backend_key(&body),
            Ok((b'Z', _)) => return Auth::Ready(key),
            Ok((b'E', body)) => return Auth::Refused(refused_code(&body)),
            Ok(_) => {}
            Err(e) => return Auth::Ended(e),
        }
    }
}

/// The SQLSTATE of an ErrorResponse body ("" if it has none).
fn refused_code(body: &[u8]) -> String {
    error_field(body, b'C').unwrap_or_default().into_owned()
}

/// Standard base64 with padding (a proof that may be wrong on purpose).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
