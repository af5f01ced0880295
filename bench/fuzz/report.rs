//! Counting and telling: the run's counters, findings (crashes, hangs,
//! suspects, crossed answers: the first few of a kind printed in full),
//! the gateway's FATAL reasons folded and counted, how an input is shown,
//! and the closing summary whose last line `bench/fuzz.sh` parses.

use crate::ctx::Ctx;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes of an input shown in a report (the rest: `--only ID --dump`).
pub const SHOW_MAX: usize = 1024;

#[derive(Default)]
pub struct Stats {
    pub inputs: AtomicU64,
    pub pre: AtomicU64,
    pub post: AtomicU64,
    pub crashes: AtomicU64,
    pub hangs: AtomicU64,
    pub closed_by_gateway: AtomicU64,
    pub pre_fatal: AtomicU64,
    pub pre_silent: AtomicU64,
    pub pre_tls: AtomicU64,
    pub post_fatal: AtomicU64,
    pub post_silent: AtomicU64,
    pub suspects: AtomicU64,
    /// Probe answers of one client that reached another.
    pub leaks: AtomicU64,
    pub half_closes: AtomicU64,
    pub probes: AtomicU64,
    pub copy_fails: AtomicU64,
    pub reprobes: AtomicU64,
    pub pinned_closes: AtomicU64,
    pub logins: AtomicU64,
    pub hostile_logins: AtomicU64,
    pub hostile_refused: AtomicU64,
    pub login_errors: AtomicU64,
    pub scram_ok: AtomicU64,
    pub scram_refused: AtomicU64,
    pub connect_retries: AtomicU64,
    pub checks: AtomicU64,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An input for a report: length, hex and escaped text (shortened).
pub fn show(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOW_MAX)];
    let more = if bytes.len() > SHOW_MAX {
        format!(" (first {SHOW_MAX} of {} bytes)", bytes.len())
    } else {
        String::new()
    };
    format!(
        "{} bytes{more}\n      hex: {}\n      text: {}",
        bytes.len(),
        hex(shown),
        shown.escape_ascii()
    )
}

impl Ctx {
    /// A finding: counted by the caller, printed (the first few of a kind).
    pub fn report(&self, kind: &'static str, text: impl FnOnce() -> String) {
        let n = {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            let n = reported.entry(kind).or_default();
            *n += 1;
            *n
        };
        if n <= self.max_reports {
            eprintln!(
                "fuzz-gateway: {kind} #{n} at {:.1}s: {}",
                self.started.elapsed().as_secs_f64(),
                text()
            );
        } else if n == self.max_reports + 1 {
            eprintln!("fuzz-gateway: further {kind} findings are counted, not printed");
        }
    }

    pub fn hang(&self, text: impl FnOnce() -> String) {
        let n = self.stats.hangs.fetch_add(1, Relaxed) + 1;
        self.report("HANG", text);
        if n == self.max_hangs && !self.stop.swap(true, Relaxed) {
            eprintln!("fuzz-gateway: {n} hangs: stopping the run");
        }
    }

    pub fn crash(&self, text: impl FnOnce() -> String) {
        if !self.stop.swap(true, Relaxed) {
            inc(&self.stats.crashes);
            self.report("CRASH", text);
        }
    }

    /// Counts a FATAL error the gateway closed a connection with (numbers
    /// and quoted names folded, so that alike errors count together).
    pub fn reason(&self, phase: &str, text: &str) {
        let mut folded = String::new();
        let mut quoted = false;
        for c in text.chars().take(120) {
            match c {
                '"' => {
                    quoted = !quoted;
                    if quoted {
                        folded.push_str("\"…\"");
                    }
                }
                _ if quoted => {}
                c if c.is_ascii_digit() => {
                    if !folded.ends_with('#') {
                        folded.push('#');
                    }
                }
                c => folded.push(c),
            }
        }
        let key = format!("{phase}: {folded}");
        *self
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }
}

/// Inputs per second so far.
pub fn rate(ctx: &Ctx) -> f64 {
    get(&ctx.stats.inputs) as f64 / ctx.started.elapsed().as_secs_f64().max(1e-9)
}

/// Prints the closing summary (its last line: `inputs N pre-auth P
/// post-auth Q crashes C hangs H closed-by-gateway K elapsed S`) and
/// returns (crashes, hangs).
pub fn summary(ctx: &Ctx) -> (u64, u64) {
    let s = &ctx.stats;
    let elapsed = ctx.started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz-gateway: pre-auth: closed with FATAL {} silently {} (TLS answered {}), half-closed {}, SCRAM exchanges refused {} succeeded {}",
        get(&s.pre_fatal),
        get(&s.pre_silent),
        get(&s.pre_tls),
        get(&s.half_closes),
        get(&s.scram_refused),
        get(&s.scram_ok),
    );
    eprintln!(
        "fuzz-gateway: post-auth: logins {} (hostile parameters {}, refused {}), clean logins refused {}, probes {}, CopyFail sent {}, re-probes {}, closed after pinning {}, closed by the gateway with FATAL {} silently {}",
        get(&s.logins),
        get(&s.hostile_logins),
        get(&s.hostile_refused),
        get(&s.login_errors),
        get(&s.probes),
        get(&s.copy_fails),
        get(&s.reprobes),
        get(&s.pinned_closes),
        get(&s.post_fatal),
        get(&s.post_silent),
    );
    eprintln!(
        "fuzz-gateway: suspects {} (closes without the FATAL error owed, garbled answers), answers that reached the wrong client {}, checks {}, connect retries {}, rate {:.0} inputs/s",
        get(&s.suspects),
        get(&s.leaks),
        get(&s.checks),
        get(&s.connect_retries),
        rate(ctx),
    );
    let mut reasons: Vec<(String, u64)> = ctx
        .reasons
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    eprintln!("fuzz-gateway: the gateway's FATAL errors, most frequent first:");
    for (reason, n) in reasons.iter().take(25) {
        eprintln!("  {n:>9}  {reason}");
    }
    let (crashes, hangs) = (get(&s.crashes), get(&s.hangs));
    println!(
        "inputs {} pre-auth {} post-auth {} crashes {crashes} hangs {hangs} closed-by-gateway {} elapsed {elapsed:.1}",
        get(&s.inputs),
        get(&s.pre),
        get(&s.post),
        get(&s.closed_by_gateway),
    );
    (crashes, hangs)
}
