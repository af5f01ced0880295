//! Replays: `--only ID,...` runs chosen inputs again (post-auth ones in
//! order on one connection), `--send HEX,...` sends bytes of your own the
//! same way (`HEX@SECONDS`: as they are, no probe), and `--dump` prints
//! the inputs' bytes instead of sending them.

use crate::ctx::Ctx;
use crate::inputs::{post_input, pre_input, PreInput};
use crate::mutate::{plan, Plan};
use crate::post_auth::{may_pin, open_session, run_post, Outcome, Session};
use crate::pre_auth::{owed, run_pre};
use crate::report::{get, show};
use anyhow::{bail, Context as _, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What `--only` and `--send` replay.
pub enum Replay {
    Pre(u64),
    Post(String, Vec<u8>, Plan),
    /// Bytes sent as they are (no completion, no probe); then what comes
    /// within the seconds given is read, and the client leaves.
    Leave(String, Vec<u8>, Duration),
}

pub fn unhex(text: &str) -> Result<Vec<u8>> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if text.len() & 1 == 1 {
        bail!("odd number of hex digits in {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).with_context(|| format!("not hex: {text:?}"))
        })
        .collect()
}

/// The inputs of `--only` and `--send`.
pub fn replay_items(ctx: &Ctx, only: &[String], send: &[String]) -> Result<Vec<Replay>> {
    let mut items = Vec::new();
    for id in only {
        let parsed = id
            .split_once(':')
            .and_then(|(k, n)| Some((k, n.parse::<u64>().ok()?)));
        match parsed {
            Some(("pre", n)) => items.push(Replay::Pre(n)),
            Some(("post", n)) => {
                let (bytes, plan) = post_input(ctx.seed, n, ctx.skip_known);
                items.push(Replay::Post(id.clone(), bytes, plan));
            }
            _ => bail!("--only takes pre:N or post:N, not {id:?}"),
        }
    }
    for (i, text) in send.iter().enumerate() {
        match text.split_once('@') {
            Some((hex, secs)) => {
                let secs: f64 = secs
                    .parse()
                    .with_context(|| format!("--send HEX@SECONDS, not {text:?}"))?;
                items.push(Replay::Leave(
                    format!("send:{i}"),
                    unhex(hex)?,
                    Duration::from_secs_f64(secs),
                ));
            }
            None => {
                let mut bytes = unhex(text)?;
                let plan = plan(&mut bytes, false);
                items.push(Replay::Post(format!("send:{i}"), bytes, plan));
            }
        }
    }
    Ok(items)
}

/// `--only` / `--send`: the chosen inputs one at a time (post-auth ones in
/// order on one connection), or with `--dump` their bytes.
pub async fn replay(ctx: Arc<Ctx>, items: Vec<Replay>, dump: bool) -> Result<()> {
    let mut session: Option<Session> = None;
    let mut logins = 0;
    for item in items {
        match (item, dump) {
            (Replay::Post(id, bytes, plan), true) => {
                println!(
                    "{id} (plan {plan:?}, may pin: {}): {}",
                    may_pin(&bytes),
                    show(&bytes)
                );
            }
            (Replay::Pre(n), true) => match pre_input(ctx.seed, n, &[]) {
                PreInput::Raw { bytes, half_close } => println!(
                    "pre:{n} (half-close {half_close}, owed {:?}): {}",
                    owed(&bytes, half_close),
                    show(&bytes)
                ),
                PreInput::Scram(case) => println!(
                    "pre:{n}: interactive SCRAM as {:?}, client-first spoiler {}, client-final spoiler {}",
                    case.who, case.first, case.last
                ),
            },
            (Replay::Post(id, bytes, plan), false) => {
                if session.is_none() {
                    session = open_session(&ctx, 0, &mut logins).await;
                }
                let Some(s) = session.as_mut() else {
                    bail!("could not log in");
                };
                let before = get(&ctx.stats.hangs) + get(&ctx.stats.suspects);
                let outcome = run_post(&ctx, 0, s, id.clone(), bytes, plan).await;
                let verdict = match outcome {
                    Outcome::Answered => "answered",
                    Outcome::Closed => "closed by the gateway",
                    Outcome::Failed => "FAILED",
                };
                let trail = s.conn.trail();
                let flagged = get(&ctx.stats.hangs) + get(&ctx.stats.suspects) > before;
                println!(
                    "{id} (plan {plan:?}): {verdict}{} (received: {trail})",
                    if flagged { ", flagged" } else { "" }
                );
                if !matches!(outcome, Outcome::Answered) {
                    session = None;
                }
            }
            (Replay::Leave(id, bytes, _), true) => println!("{id} (no probe): {}", show(&bytes)),
            (Replay::Leave(id, bytes, wait), false) => {
                if session.is_none() {
                    session = open_session(&ctx, 0, &mut logins).await;
                }
                let Some(mut s) = session.take() else {
                    bail!("could not log in");
                };
                let deadline = Instant::now() + wait;
                let sent = s.conn.send(&bytes, deadline).await;
                let end = s.conn.until_closed(deadline).await;
                println!(
                    "{id} (no probe; {}; then {}): received: {}",
                    if sent.is_ok() { "sent" } else { "not all sent" },
                    if end.is_ok() {
                        "closed by the gateway".to_string()
                    } else {
                        format!("left after {wait:?}")
                    },
                    s.conn.trail()
                );
            }
            (Replay::Pre(n), false) => {
                let before = get(&ctx.stats.hangs) + get(&ctx.stats.suspects);
                run_pre(&ctx, n).await;
                let flagged = get(&ctx.stats.hangs) + get(&ctx.stats.suspects) > before;
                println!("pre:{n}: {}", if flagged { "flagged" } else { "as owed" });
            }
        }
    }
    Ok(())
}
