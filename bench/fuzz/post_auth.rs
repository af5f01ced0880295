//! Post-auth inputs: workers that log in (one login in five with hostile
//! startup parameters) and send many inputs per connection, each followed
//! by the probe `Sync` + `Query("ROLLBACK; SELECT '<marker>'")`, and judge
//! what the gateway owes (see `mutate::Plan`): the probe answered, or the
//! connection closed with a FATAL error, within --reply-timeout.

use crate::check::MARKER_PREFIX;
use crate::conn::{Conn, End};
use crate::ctx::Ctx;
use crate::inputs::{hostile_params, post_input};
use crate::login::{authenticate, Auth};
use crate::mutate::Plan;
use crate::report::{contains, inc, show};
use crate::rng::{Rng, STREAM_LOGIN};
use bytes::BytesMut;
use ogel::wire::frontend::{self, error_field};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// After a hang, how long a second probe may take (diagnosis only).
pub const POKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive failed clean logins of one worker before the run stops.
pub const LOGIN_FAILURES_MAX: u32 = 150;

/// The probe after an input: a Sync, then a Query that ends any
/// transaction and selects `marker`.
fn probe(out: &mut BytesMut, marker: &str) {
    frontend::sync(out);
    frontend::query(out, format!("ROLLBACK; SELECT '{marker}'").as_bytes());
}

/// A logged-in post-auth connection.
pub struct Session {
    pub conn: Conn,
    /// Ids of the inputs sent on it (the last 32).
    pub history: VecDeque<String>,
    /// The extra startup parameters it logged in with.
    pub params: String,
}

/// The input ids of a connection, for a report.
pub fn history_text(history: &VecDeque<String>) -> String {
    format!("[{}]", Vec::from(history.clone()).join(","))
}

/// Startup parameters, for a report.
pub fn describe_params(params: &[(Vec<u8>, Vec<u8>)]) -> String {
    if params.is_empty() {
        return "none".into();
    }
    params
        .iter()
        .map(|(k, v)| format!("{}={}", k.escape_ascii(), v.escape_ascii()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Logs worker `w` in (its `logins`-th login and on); `None` when the run
/// stops.
pub async fn open_session(ctx: &Ctx, w: usize, logins: &mut u64) -> Option<Session> {
    let mut failures = 0;
    loop {
        if ctx.stopped() {
            return None;
        }
        if failures >= LOGIN_FAILURES_MAX {
            ctx.hang(|| format!("worker {w}: {failures} logins in a row failed; stopping the run"));
            ctx.stop.store(true, Relaxed);
            return None;
        }
        let mut rng = Rng::derive(ctx.seed, STREAM_LOGIN, (w as u64) << 32 | *logins);
        *logins += 1;
        // After a failure the next login is a clean one.
        let hostile = failures == 0 && rng.chance(1, 5);
        let params = if hostile {
            hostile_params(&mut rng)
        } else {
            Vec::new()
        };
        let deadline = Instant::now() + ctx.reply_timeout;
        let Some(mut conn) = ctx.connect(deadline, "login", post_source(w)).await else {
            failures += 1;
            continue;
        };
        let auth = authenticate(
            &mut conn,
            ctx.user.as_bytes(),
            ctx.database.as_bytes(),
            &ctx.password,
            &params,
            None,
            deadline,
        )
        .await;
        let desc = describe_params(&params);
        match auth {
            Auth::Ready(key) => {
                inc(&ctx.stats.logins);
                if hostile {
                    inc(&ctx.stats.hostile_logins);
                }
                if let Some(key) = key {
                    let mut keys = ctx.keys.lock().unwrap_or_else(|p| p.into_inner());
                    if keys.len() < 4096 {
                        keys.push(key);
                    } else {
                        let i = rng.below(keys.len());
                        keys[i] = key;
                    }
                }
                return Some(Session {
                    conn,
                    history: VecDeque::new(),
                    params: desc,
                });
            }
            Auth::Refused(code) if hostile => {
                inc(&ctx.stats.hostile_refused);
                inc(&ctx.stats.closed_by_gateway);
                let closed = conn.until_closed(deadline).await;
                if let Some(text) = &conn.fatal {
                    ctx.reason("login with hostile parameters", text);
                }
                if closed == Err(End::Timeout) {
                    ctx.hang(|| {
                        format!("worker {w}: login with startup parameters {desc} refused ({code}) but the connection stayed open")
                    });
                }
            }
            Auth::Refused(code) => {
                failures += 1;
                inc(&ctx.stats.login_errors);
                let trail = conn.trail();
                ctx.report("LOGIN-ERROR", || {
                    format!("worker {w}: a clean login was refused ({code}); received: {trail}")
                });
                sleep(Duration::from_millis(200)).await;
            }
            Auth::Ended(End::Timeout) => {
                failures += 1;
                let trail = conn.trail();
                ctx.hang(|| {
                    format!("worker {w}: login (startup parameters {desc}) got no answer within {:?}; received: {trail}", ctx.reply_timeout)
                });
            }
            Auth::Ended(end) => {
                if !hostile {
                    failures += 1;
                }
                inc(&ctx.stats.closed_by_gateway);
                if conn.fatal.is_none() {
                    inc(&ctx.stats.suspects);
                    let trail = conn.trail();
                    ctx.report("SUSPECT", || {
                        format!("worker {w}: login (startup parameters {desc}) ended without a FATAL error ({end:?}); received: {trail}")
                    });
                } else if !hostile {
                    inc(&ctx.stats.login_errors);
                }
            }
        }
    }
}

/// How a post-auth input went.
pub enum Outcome {
    /// The probe was answered; the connection is still open.
    Answered,
    /// The gateway closed the connection.
    Closed,
    /// A hang or garbled answer was recorded; the connection is dropped.
    Failed,
}

/// Sends post-auth input `id` (`bytes`, completed by [`plan`]) on
/// `session` and judges the gateway.
pub async fn run_post(
    ctx: &Ctx,
    w: usize,
    session: &mut Session,
    id: String,
    bytes: Vec<u8>,
    plan: Plan,
) -> Outcome {
    session.history.push_back(id.clone());
    if session.history.len() > 32 {
        session.history.pop_front();
    }
    let Session {
        conn,
        history,
        params,
    } = session;
    let deadline = Instant::now() + ctx.reply_timeout;
    let what = |session_params: &str, history: &str, detail: String| {
        format!(
            "{id} (worker {w}, plan {plan:?}): {detail}\n    login parameters: {session_params}\n    inputs on this connection: {history}\n    input: {}",
            show(&bytes)
        )
    };
    let mut marker = ctx.marker(&id);
    let mut leaked = false;
    let end = match plan {
        Plan::Close { .. } | Plan::HalfClose => {
            if conn.send(&bytes, deadline).await.is_ok() {
                if plan == Plan::HalfClose {
                    inc(&ctx.stats.half_closes);
                    conn.half_close().await;
                }
                conn.until_closed(deadline)
                    .await
                    .err()
                    .unwrap_or(End::Closed)
            } else {
                End::Timeout
            }
        }
        Plan::Probe => {
            inc(&ctx.stats.probes);
            let mut out = BytesMut::from(&bytes[..]);
            probe(&mut out, &marker);
            let mut seen = false;
            let mut copy_fails = 0;
            let mut reprobes = 0;
            let mut pending = conn.send(&out, deadline).await.err();
            while pending.is_none() {
                match conn.read_message(deadline).await {
                    Ok((b'D', body)) if contains(&body, marker.as_bytes()) => seen = true,
                    Ok((b'D', body))
                        if !leaked
                            && contains(&body, MARKER_PREFIX.as_bytes())
                            && ctx.marker_owner(&body).as_deref() != Some(id.as_str()) =>
                    {
                        // Another client's probe answer (not an earlier
                        // probe of this input's): a response went to the
                        // wrong client.
                        leaked = true;
                        inc(&ctx.stats.leaks);
                        let owner = ctx.marker_owner(&body).unwrap_or_default();
                        let trail = conn.trail();
                        ctx.report("CROSSED-ANSWER", || {
                            what(
                                params,
                                &history_text(history),
                                format!("received the probe answer of {owner} (whose answer went astray); received: {trail}"),
                            )
                        });
                    }
                    Ok((b'Z', _)) if seen => {
                        if may_pin(&bytes) {
                            inc(&ctx.stats.pinned_closes);
                            let mut bye = BytesMut::new();
                            frontend::terminate(&mut bye);
                            let _ = conn.send(&bye, deadline).await;
                            if conn.until_closed(deadline).await == Err(End::Timeout) {
                                ctx.hang(|| {
                                    what(
                                        params,
                                        &history_text(history),
                                        "a Terminate after the probe did not close the connection"
                                            .into(),
                                    )
                                });
                                return Outcome::Failed;
                            }
                            return Outcome::Closed;
                        }
                        return Outcome::Answered;
                    }
                    Ok((b'G', _)) if copy_fails < 20 => {
                        // COPY FROM STDIN waits for data: end it, probe again.
                        copy_fails += 1;
                        inc(&ctx.stats.copy_fails);
                        marker = ctx.marker(&id);
                        seen = false;
                        let mut again = BytesMut::new();
                        frontend::copy_fail(&mut again, b"fuzz-gateway");
                        probe(&mut again, &marker);
                        pending = conn.send(&again, deadline).await.err();
                    }
                    Ok((b'E', body))
                        if reprobes < 3 && error_field(&body, b'C').as_deref() == Some("57014") =>
                    {
                        // A cancel request (ours, hostile) may hit the probe.
                        reprobes += 1;
                        inc(&ctx.stats.reprobes);
                        marker = ctx.marker(&id);
                        seen = false;
                        let mut again = BytesMut::new();
                        probe(&mut again, &marker);
                        pending = conn.send(&again, deadline).await.err();
                    }
                    Ok(_) => {}
                    Err(e) => pending = Some(e),
                }
            }
            pending.unwrap_or(End::Closed)
        }
    };
    match end {
        End::Closed => {
            inc(&ctx.stats.closed_by_gateway);
            if let Some(text) = &conn.fatal {
                ctx.reason("post-auth", text);
                inc(&ctx.stats.post_fatal);
            } else {
                inc(&ctx.stats.post_silent);
                let silent_ok = matches!(plan, Plan::HalfClose | Plan::Close { silent_ok: true });
                if !silent_ok {
                    inc(&ctx.stats.suspects);
                    let trail = conn.trail();
                    ctx.report("SUSPECT", || {
                        what(
                            params,
                            &history_text(history),
                            format!("closed without a FATAL error; received: {trail}"),
                        )
                    });
                }
            }
            Outcome::Closed
        }
        End::Timeout => {
            let trail = conn.trail();
            // Diagnosis: does a second probe get through?
            let poke = if plan == Plan::Probe && !conn.closed {
                let poke_marker = ctx.marker(&format!("{id} (second probe)"));
                let mut again = BytesMut::new();
                frontend::sync(&mut again);
                frontend::query(&mut again, format!("SELECT '{poke_marker}'").as_bytes());
                let poke_deadline = Instant::now() + POKE_TIMEOUT;
                let answered = conn.send(&again, poke_deadline).await.is_ok()
                    && loop {
                        match conn.read_message(poke_deadline).await {
                            Ok((b'D', body)) if contains(&body, poke_marker.as_bytes()) => {
                                break true
                            }
                            Ok(_) => {}
                            Err(_) => break false,
                        }
                    };
                format!(
                    "; a second probe was {} within {POKE_TIMEOUT:?} (received then: {})",
                    if answered { "answered" } else { "not answered" },
                    conn.trail()
                )
            } else {
                String::new()
            };
            ctx.hang(|| {
                what(
                    params,
                    &history_text(history),
                    match plan {
                        Plan::Probe => format!(
                            "neither answered (probe marker {marker}) nor closed within {:?}; received: {trail}{poke}",
                            ctx.reply_timeout
                        ),
                        Plan::Close { .. } => format!(
                            "not closed within {:?} after a bad length or a Terminate; received: {trail}",
                            ctx.reply_timeout
                        ),
                        Plan::HalfClose => format!(
                            "not closed within {:?} after our half-close; received: {trail}",
                            ctx.reply_timeout
                        ),
                    },
                )
            });
            Outcome::Failed
        }
        End::Garbled => {
            inc(&ctx.stats.suspects);
            let trail = conn.trail();
            ctx.report("GARBLED", || {
                what(
                    params,
                    &history_text(history),
                    format!(
                        "the gateway sent a message with an impossible length; received: {trail}"
                    ),
                )
            });
            Outcome::Failed
        }
    }
}

/// Worker `w` of `workers`: post-auth inputs w, w + workers, … below
/// `total`.
pub async fn post_worker(ctx: Arc<Ctx>, w: usize, workers: usize, total: u64) {
    let mut logins = 0;
    let mut session: Option<Session> = None;
    let mut k = w as u64;
    while k < total && !ctx.stopped() {
        if session.is_none() {
            session = open_session(&ctx, w, &mut logins).await;
            if session.is_none() {
                break;
            }
        }
        let s = session.as_mut().expect("a session");
        let (bytes, plan) = post_input(ctx.seed, k, ctx.skip_known);
        let outcome = run_post(&ctx, w, s, format!("post:{k}"), bytes, plan).await;
        ctx.count_input(true);
        if !matches!(outcome, Outcome::Answered) {
            session = None;
        }
        k += workers as u64;
    }
    if let Some(mut s) = session {
        let mut bye = BytesMut::new();
        frontend::terminate(&mut bye);
        let _ = s
            .conn
            .send(&bye, Instant::now() + Duration::from_secs(1))
            .await;
    }
}

/// Words whose presence may pin a server connection to the client.
pub const PIN_WORDS: &[&[u8]] = &[
    b"listen",
    b"temp",
    b"prepare",
    b"hold",
    b"advisory",
    b"role",
    b"authorization",
    b"load",
    b"characteristics",
];

/// Whether `bytes` may pin its server connection (see [`PIN_WORDS`]).
pub fn may_pin(bytes: &[u8]) -> bool {
    let lower = bytes.to_ascii_lowercase();
    PIN_WORDS.iter().any(|w| contains(&lower, w))
}
/// The loopback address post-auth worker `w` logs in from.
pub fn post_source(w: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (w / 254 % 256) as u8, 1 + (w % 254) as u8)
}
