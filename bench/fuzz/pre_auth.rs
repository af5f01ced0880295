//! Pre-auth inputs, each on its own connection: what the gateway owes a
//! raw one (`owed`: a FATAL error, silence, or either), sending it (with a
//! half-close, maybe) and judging the close; the interactive SCRAM cases;
//! and the loopback address each input connects from.

use crate::conn::End;
use crate::ctx::Ctx;
use crate::inputs::{pre_input, PreInput, Who, STARTUP_MAX};
use crate::login::{authenticate, Auth, Spoiler};
use crate::report::{inc, show};
use crate::rng::mix;
use bytes::BytesMut;
use ogel::wire::frontend;
use ogel::wire::startup::{CANCEL_REQUEST, GSSENC_REQUEST, SSL_REQUEST};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the gateway owes a raw pre-auth input before it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owed {
    /// A FATAL error.
    Fatal,
    /// Nothing (a cancel request).
    Silent,
    /// Either (we half-closed while it waited, or TLS may be in play).
    Either,
}

/// Follows the gateway's first-packet loop over `bytes`.
pub fn owed(bytes: &[u8], half_close: bool) -> Owed {
    let waiting = if half_close {
        Owed::Either
    } else {
        Owed::Fatal
    };
    let mut at = 0;
    let mut negotiations = 0;
    loop {
        let rest = &bytes[at..];
        if rest.len() < 4 {
            return waiting;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if !(8..=STARTUP_MAX).contains(&len) {
            return Owed::Fatal;
        }
        let len = len as usize;
        if rest.len() < len {
            return waiting;
        }
        let code = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body = &rest[8..len];
        match code {
            // The answer may be 'S' and a TLS handshake over what follows.
            SSL_REQUEST if body.is_empty() && negotiations < 2 => return Owed::Either,
            GSSENC_REQUEST if body.is_empty() && negotiations < 2 => {
                negotiations += 1;
                at += len;
            }
            CANCEL_REQUEST if body.len() == 8 => return Owed::Silent,
            version if version >> 16 == 3 => return waiting,
            _ => return Owed::Fatal,
        }
    }
}

/// Sends pre-auth input `j` on a new connection and judges the gateway.
pub async fn run_pre(ctx: &Ctx, j: u64) {
    let keys = ctx.keys.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let input = pre_input(ctx.seed, j, &keys);
    drop(keys);
    let started = Instant::now();
    let deadline = started + ctx.auth_timeout + Duration::from_secs(5);
    let Some(mut conn) = ctx
        .connect(
            started + ctx.reply_timeout,
            "pre-auth connect",
            pre_source(ctx.seed, j),
        )
        .await
    else {
        return;
    };
    match input {
        PreInput::Raw { bytes, half_close } => {
            let owed = owed(&bytes, half_close);
            let mut end = conn.send(&bytes, deadline).await.err();
            if end.is_none() {
                if half_close {
                    inc(&ctx.stats.half_closes);
                    conn.half_close().await;
                }
                end = conn.until_closed_raw(deadline).await.err();
            }
            match end {
                None => {
                    inc(&ctx.stats.closed_by_gateway);
                    if conn.buf.first() == Some(&b'S') {
                        inc(&ctx.stats.pre_tls);
                    }
                    if let Some(text) = &conn.fatal {
                        ctx.reason("pre-auth", text);
                        inc(&ctx.stats.pre_fatal);
                    } else {
                        inc(&ctx.stats.pre_silent);
                        if owed == Owed::Fatal {
                            inc(&ctx.stats.suspects);
                            let answer = conn.buf.escape_ascii().to_string();
                            ctx.report("SUSPECT", || {
                                format!(
                                    "pre:{j} (half-close {half_close}): closed without the FATAL error it owes; received {answer:?}\n    input: {}",
                                    show(&bytes)
                                )
                            });
                        }
                    }
                }
                Some(_) => {
                    let answer = conn.buf.escape_ascii().to_string();
                    ctx.hang(|| {
                        format!(
                            "pre:{j} (half-close {half_close}): still open {:?} after connecting (auth_timeout {:?} + 5 s); received {answer:?}\n    input: {}",
                            started.elapsed(),
                            ctx.auth_timeout,
                            show(&bytes)
                        )
                    });
                }
            }
        }
        PreInput::Scram(mut case) => {
            let (user, database, password): (&[u8], &[u8], String) = match case.who {
                Who::Owner => (
                    ctx.user.as_bytes(),
                    ctx.database.as_bytes(),
                    ctx.password.clone(),
                ),
                Who::Admin => (
                    b"ogel",
                    b"ogel",
                    ctx.admin_password.clone().unwrap_or_else(|| "wrong".into()),
                ),
                Who::Nobody => (b"fz_nobody", ctx.database.as_bytes(), "x".into()),
            };
            let (first, last) = (case.first, case.last);
            let spoiler = Spoiler {
                first,
                last,
                rng: &mut case.rng,
            };
            let auth = authenticate(
                &mut conn,
                user,
                database,
                &password,
                &[],
                Some(spoiler),
                deadline,
            )
            .await;
            let label = format!("pre:{j} (SCRAM as {:?}, client-first spoiler {first}, client-final spoiler {last})", case.who);
            let end = match auth {
                Auth::Ready(_) => {
                    inc(&ctx.stats.scram_ok);
                    let mut bye = BytesMut::new();
                    frontend::terminate(&mut bye);
                    let _ = conn.send(&bye, deadline).await;
                    match conn.until_closed(deadline).await {
                        Ok(()) => return,
                        Err(e) => e,
                    }
                }
                Auth::Refused(_) => {
                    inc(&ctx.stats.scram_refused);
                    match conn.until_closed(deadline).await {
                        Ok(()) => End::Closed,
                        Err(e) => e,
                    }
                }
                Auth::Ended(e) => e,
            };
            let trail = conn.trail();
            match end {
                End::Closed => {
                    inc(&ctx.stats.closed_by_gateway);
                    if let Some(text) = &conn.fatal {
                        ctx.reason("pre-auth SCRAM", text);
                        inc(&ctx.stats.pre_fatal);
                    } else {
                        inc(&ctx.stats.pre_silent);
                        inc(&ctx.stats.suspects);
                        ctx.report("SUSPECT", || {
                            format!("{label}: closed without a FATAL error; received: {trail}")
                        });
                    }
                }
                End::Timeout => ctx.hang(|| {
                    format!(
                        "{label}: still open {:?} after connecting; received: {trail}",
                        started.elapsed()
                    )
                }),
                End::Garbled => {
                    inc(&ctx.stats.suspects);
                    ctx.report("GARBLED", || {
                        format!("{label}: impossible message length; received: {trail}")
                    });
                }
            }
        }
    }
}

/// Takes pre-auth inputs from `next` until `total`.
pub async fn pre_worker(ctx: Arc<Ctx>, next: Arc<AtomicU64>, total: u64) {
    loop {
        let j = next.fetch_add(1, Relaxed);
        if j >= total || ctx.stopped() {
            return;
        }
        run_pre(&ctx, j).await;
        ctx.count_input(false);
    }
}
/// The loopback address pre-auth input `j` connects from: one of
/// 127.2.0.1 to 127.255.255.254, so that the gateway's per-address limits
/// (new connections per second, failed-login backoff) let the inputs
/// through to the code behind them.
pub fn pre_source(seed: u64, j: u64) -> Ipv4Addr {
    let r = mix(mix(seed ^ 0x5EED) ^ j);
    Ipv4Addr::new(
        127,
        2 + (r % 254) as u8,
        (r >> 8) as u8,
        1 + ((r >> 16) % 254) as u8,
    )
}
