//! The checks around the inputs: a bystander connection's `SELECT 1`
//! and the gateway process's liveness every --check-every inputs (the
//! `monitor` task, which also prints progress and notices a stall), and
//! the probe markers that tell when one client's answer reached another.

use crate::args::percent_encode;
use crate::ctx::Ctx;
use crate::report::{get, inc, rate};
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

/// How long a bystander `SELECT 1` may take.
pub const BYSTANDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The probe's marker text: this, then a number.
pub const MARKER_PREFIX: &str = "fz-probe-";
/// Markers whose owner is remembered.
pub const MARKERS_KEPT: usize = 100_000;

pub async fn connect_client(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = timeout(
        BYSTANDER_TIMEOUT,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| anyhow!("connect timed out after {BYSTANDER_TIMEOUT:?}"))??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The bystander's `SELECT 1` and the process check.
pub async fn check(ctx: &Ctx, bystander: &mut Option<tokio_postgres::Client>, when: &str) {
    inc(&ctx.stats.checks);
    if ctx.gateway_gone() {
        ctx.crash(|| {
            format!(
                "{when}: the gateway process (pid {}) is gone",
                ctx.pid.unwrap_or(0)
            )
        });
        return;
    }
    let result: Result<()> = async {
        if bystander.as_ref().is_none_or(|c| c.is_closed()) {
            *bystander = Some(connect_client(&ctx.url).await?);
        }
        let client = bystander.as_ref().expect("a bystander");
        timeout(BYSTANDER_TIMEOUT, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| anyhow!("SELECT 1 timed out after {BYSTANDER_TIMEOUT:?}"))??;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        *bystander = None;
        if ctx.gateway_gone() {
            ctx.crash(|| format!("{when}: the gateway process is gone ({e:#})"));
        } else {
            ctx.hang(|| format!("{when}: the bystander's SELECT 1 failed: {e:#}"));
        }
    }
}

/// `SHOW POOLS` of the admin console, for the progress line.
pub async fn pool_figures(ctx: &Ctx, admin: &mut Option<tokio_postgres::Client>) -> String {
    let Some(password) = &ctx.admin_password else {
        return String::new();
    };
    let result: Result<String> = async {
        if admin.as_ref().is_none_or(|c| c.is_closed()) {
            let url = format!(
                "postgresql://ogel:{}@{}/ogel",
                percent_encode(password),
                ctx.addr
            );
            *admin = Some(connect_client(&url).await?);
        }
        let client = admin.as_ref().expect("an admin client");
        let rows = timeout(BYSTANDER_TIMEOUT, client.simple_query("SHOW POOLS"))
            .await
            .map_err(|_| anyhow!("SHOW POOLS timed out"))??;
        for m in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                if r.get(0) == Some(ctx.database.as_str()) {
                    let f = |c: &str| r.try_get(c).ok().flatten().unwrap_or("?").to_string();
                    return Ok(format!(
                        " pool[cl_active {} cl_waiting {} sv_active {} sv_idle {}]",
                        f("cl_active"),
                        f("cl_waiting"),
                        f("sv_active"),
                        f("sv_idle")
                    ));
                }
            }
        }
        Ok(String::new())
    }
    .await;
    result.unwrap_or_else(|e| {
        *admin = None;
        format!(" pool[{e:#}]")
    })
}
pub async fn monitor(
    ctx: Arc<Ctx>,
    done: Arc<AtomicBool>,
    total: u64,
    check_every: u64,
    progress_every: u64,
    stall_timeout: Duration,
) {
    let mut bystander = None;
    let mut admin = None;
    let mut next_check = check_every;
    let mut next_progress = progress_every;
    let mut last_line = Instant::now();
    let (mut last_n, mut last_change) = (0, Instant::now());
    while !done.load(Relaxed) {
        let n = get(&ctx.stats.inputs);
        if n != last_n {
            (last_n, last_change) = (n, Instant::now());
        } else if last_change.elapsed() >= stall_timeout && !ctx.stopped() {
            ctx.hang(|| {
                format!("no input completed for {stall_timeout:?} (at {n} inputs): the gateway looks wedged; stopping the run")
            });
            ctx.stop.store(true, Relaxed);
        }
        if check_every > 0 && n >= next_check {
            check(&ctx, &mut bystander, &format!("check after {n} inputs")).await;
            while next_check <= n {
                next_check += check_every;
            }
        }
        // A line per --progress-every inputs, and at least one a minute
        // (a crawl shows).
        if progress_every > 0
            && (n >= next_progress || last_line.elapsed() >= Duration::from_secs(60))
        {
            last_line = Instant::now();
            let s = &ctx.stats;
            let pool = pool_figures(&ctx, &mut admin).await;
            eprintln!(
                "fuzz-gateway: {n}/{total} inputs (pre-auth {} post-auth {}) crashes {} hangs {} suspects {} closed-by-gateway {} logins {} elapsed {:.0}s rate {:.0}/s{pool}",
                get(&s.pre),
                get(&s.post),
                get(&s.crashes),
                get(&s.hangs),
                get(&s.suspects),
                get(&s.closed_by_gateway),
                get(&s.logins),
                ctx.started.elapsed().as_secs_f64(),
                rate(&ctx),
            );
            while next_progress <= n {
                next_progress += progress_every;
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
    if !ctx.stopped() {
        check(&ctx, &mut bystander, "final check").await;
    }
}

/// Alive and not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Ctx {
    /// A new probe marker, owned by input `id`.
    pub fn marker(&self, id: &str) -> String {
        let n = self.markers.fetch_add(1, Relaxed);
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *owners;
        map.insert(n, id.to_string());
        order.push_back(n);
        if order.len() > MARKERS_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        format!("{MARKER_PREFIX}{n}")
    }

    /// The input whose probe marker is in `row` (a DataRow body), if any.
    pub fn marker_owner(&self, row: &[u8]) -> Option<String> {
        let at = row
            .windows(MARKER_PREFIX.len())
            .position(|w| w == MARKER_PREFIX.as_bytes())?;
        let digits: String = row[at + MARKER_PREFIX.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|b| *b as char)
            .collect();
        let n: u64 = digits.parse().ok()?;
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            owners
                .0
                .get(&n)
                .cloned()
                .unwrap_or_else(|| format!("an input of marker {n}")),
        )
    }
}
