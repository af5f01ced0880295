//! `fuzz-gateway`: hostile inputs against a running gateway over real
//! sockets, by the million, counting crashes and hangs. The CI-sized
//! version of this is `tests/tests/hostile.rs`.
//!
//! Two kinds of input, dealt out by --post-auth-share:
//!
//! * pre-auth, each on its own TCP connection: random bytes, length-
//!   prefixed garbage, SSLRequest / GSSENCRequest / CancelRequest variants
//!   (cancels sometimes carry a real key seen at a login), startup packets
//!   with random parameters and lying lengths, a startup followed by
//!   pipelined hostile SASL messages, and interactive SCRAM exchanges with
//!   a mutated client-first or client-final message. Half of the raw ones
//!   are followed by a half-close. The gateway must close the connection
//!   within its auth_timeout + 5 s, else it is a hang. Where it owes the
//!   client a FATAL error (no cancel request, no half-close, no TLS in
//!   play), a close without one is reported as a suspect (a panicking
//!   client task closes that way).
//! * post-auth, on connections logged in with SCRAM (one in five with
//!   hostile startup parameters), many inputs per connection until the
//!   gateway closes it: frame sequences (Query, Parse, Bind, Describe,
//!   Execute, Sync, Flush, Close, CopyData/Done/Fail, FunctionCall,
//!   Terminate, random tags, bad lengths) with byte flips, insertions,
//!   duplications and truncation. A last message that is cut short is
//!   completed with zero bytes when at most 64 KiB are missing; beyond that
//!   the input is followed by a half-close. Then:
//!   - if it holds a bad length or a Terminate, the gateway must close the
//!     connection within --reply-timeout;
//!   - if it was cut short beyond repair, after our half-close likewise;
//!   - otherwise the probe `Sync` + `Query("ROLLBACK; SELECT '<marker>'")`
//!     must be answered (the marker row, then ReadyForQuery) or the
//!     connection closed within --reply-timeout. A CopyInResponse is
//!     answered with CopyFail and a fresh probe (COPY FROM STDIN rightly
//!     waits for data); a query_canceled error (the cancels above) with a
//!     fresh probe. A close without a FATAL error is a suspect.
//!
//!   An input that may pin its server connection (LISTEN, PREPARE, temp
//!   tables, WITH HOLD cursors, SET ROLE, advisory locks) ends its
//!   connection after the probe, so pinned clients cannot starve the pool.
//!
//! Every --check-every inputs and at the end a bystander connection runs
//! `SELECT 1` (10 s; a failure counts as a hang) and the gateway's --pid
//! is checked: gone or a zombie is a crash, and the run stops.
//!
//! When the gateway listens on loopback, pre-auth inputs connect from a
//! fresh 127.x.y.z address each and post-auth workers from one address
//! each: the gateway's per-address limits (new connections per second,
//! failed-login backoff) would otherwise turn most inputs away before
//! they reach the code behind them.
//!
//! Each input is a pure function of --seed and its id (`pre:J`, `post:K`);
//! post-auth input K always goes to worker K mod --concurrency, whose
//! logins and their parameters follow from the seed too. What runs at the
//! same time, and the real cancel keys, depend on timing. `--only ID,...`
//! replays chosen inputs (post-auth ones in order on one connection);
//! with `--dump` it prints their bytes instead. `--send HEX,...` sends
//! bytes of your own the same way, `HEX@SECONDS` without the probe (for
//! repros with a second client). `--skip-known-hangs` defuses the triggers
//! of the hangs found so far, so that a run goes on to find others.
//!
//! `bench/fuzz.sh` starts a gateway and runs this; see there.
//!
//! Every message is encoded with the gateway's own codec, `ogel::wire`
//! (its client side, `ogel::wire::frontend`); what is deliberately broken
//! (lying lengths, flips, truncation) is made here, in `inputs` and `mutate`.
//!
//! Modules: `args` (the command line), `rng` (the seeded generator), `inputs`
//! (the inputs), `mutate` (byte mutations and the completion of cut
//! messages), `conn` (a client socket with a message reader), `login`
//! (SCRAM logins, spoiled or not), `ctx` (the run's shared state),
//! `pre_auth` / `post_auth` (sending inputs and judging the gateway),
//! `check` (bystander, liveness, answers reaching the wrong client),
//! `report` (counters, findings, the summary), `replay` (`--only`,
//! `--send`, `--dump`).

mod args;
mod check;
mod conn;
mod ctx;
mod inputs;
mod login;
mod mutate;
mod post_auth;
mod pre_auth;
mod replay;
mod report;
mod rng;

use anyhow::{bail, Context as _, Result};
use args::{parse_url, Args};
use check::{connect_client, monitor};
use clap::Parser;
use ctx::Ctx;
use post_auth::post_worker;
use pre_auth::pre_worker;
use replay::{replay, replay_items};
use report::{get, summary, Stats};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.post_auth_share) {
        bail!("--post-auth-share must be between 0 and 1");
    }
    if args.concurrency == 0 || args.pre_auth_concurrency == 0 {
        bail!("--concurrency and --pre-auth-concurrency must be at least 1");
    }
    let (user, password, database) = parse_url(&args.url)?;
    let target = tokio::net::lookup_host(&args.addr)
        .await
        .with_context(|| format!("resolving --addr {}", args.addr))?
        .next()
        .with_context(|| format!("--addr {} resolves to nothing", args.addr))?;
    let spread = matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback());
    let ctx = Arc::new(Ctx {
        addr: args.addr.clone(),
        target,
        spread,
        url: args.url.clone(),
        user,
        password,
        database,
        admin_password: args.admin_password.clone(),
        seed: args.seed,
        auth_timeout: args.auth_timeout,
        reply_timeout: args.reply_timeout,
        pid: args.pid,
        max_reports: args.max_reports,
        skip_known: args.skip_known_hangs,
        max_hangs: args.max_hangs,
        stats: Stats::default(),
        stop: AtomicBool::new(false),
        markers: AtomicU64::new(0),
        owners: Mutex::new((HashMap::new(), VecDeque::new())),
        keys: Mutex::new(Vec::new()),
        reported: Mutex::new(HashMap::new()),
        reasons: Mutex::new(HashMap::new()),
        started: Instant::now(),
    });
    if !args.only.is_empty() || !args.send.is_empty() {
        let items = replay_items(&ctx, &args.only, &args.send)?;
        replay(ctx.clone(), items, args.dump).await?;
        let s = &ctx.stats;
        if !args.dump {
            println!(
                "crashes {} hangs {} suspects {} crossed-answers {}",
                get(&s.crashes),
                get(&s.hangs),
                get(&s.suspects),
                get(&s.leaks)
            );
        }
        return Ok(());
    }

    // The table COPY FROM STDIN and INSERT write into.
    let setup = connect_client(&args.url)
        .await
        .context("connecting to --url for setup")?;
    setup
        .simple_query("CREATE TABLE IF NOT EXISTS fuzz_t (a text)")
        .await
        .context("creating table fuzz_t")?;
    drop(setup);

    let post_total = (args.inputs as f64 * args.post_auth_share).round() as u64;
    let pre_total = args.inputs - post_total;
    eprintln!(
        "fuzz-gateway: {} inputs ({pre_total} pre-auth, {post_total} post-auth) against {} as {}/{}, seed {}, concurrency {} post-auth + {} pre-auth",
        args.inputs, args.addr, ctx.user, ctx.database, args.seed, args.concurrency, args.pre_auth_concurrency
    );
    let done = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn(monitor(
        ctx.clone(),
        done.clone(),
        args.inputs,
        args.check_every,
        args.progress_every,
        args.stall_timeout,
    ));
    let mut workers = Vec::new();
    let post_workers = args.concurrency.min(post_total.max(1) as usize);
    for w in 0..post_workers {
        workers.push(tokio::spawn(post_worker(
            ctx.clone(),
            w,
            post_workers,
            post_total,
        )));
    }
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..args.pre_auth_concurrency {
        workers.push(tokio::spawn(pre_worker(
            ctx.clone(),
            next.clone(),
            pre_total,
        )));
    }
    for worker in workers {
        worker.await.context("a worker task failed")?;
    }
    done.store(true, Relaxed);
    monitor.await.context("the monitor task failed")?;

    let (crashes, hangs) = summary(&ctx);
    if crashes + hangs > 0 {
        std::process::exit(1);
    }
    Ok(())
}
