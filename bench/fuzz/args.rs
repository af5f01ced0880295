//! The command line (`fuzz-gateway --help`) and the `--url` it is given.

use anyhow::{Context as _, Result};
use clap::Parser;
pub use ogel_plugin_kit::url::percent_encode;
use std::time::Duration;

/// Throws hostile protocol input at a gateway; counts crashes and hangs.
#[derive(Debug, Parser)]
#[command(name = "fuzz-gateway", about)]
pub struct Args {
    /// The gateway's Postgres listener, HOST:PORT.
    #[arg(long)]
    pub addr: String,
    /// A database through the gateway, with password (post-auth logins, the
    /// bystander): postgresql://user:password@host:port/database.
    #[arg(long)]
    pub url: String,
    /// Inputs to send, pre-auth and post-auth together.
    #[arg(long, default_value_t = 1_000_000)]
    pub inputs: u64,
    /// Post-auth connections at a time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Pre-auth connections at a time (most close at once; some wait out
    /// the gateway's auth_timeout).
    #[arg(long, default_value_t = 256)]
    pub pre_auth_concurrency: usize,
    /// Seed of every input.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of the inputs sent after login.
    #[arg(long, default_value_t = 0.5)]
    pub post_auth_share: f64,
    /// The gateway's auth_timeout: a pre-auth connection still open 5 s
    /// after it is a hang.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub auth_timeout: Duration,
    /// How long a post-auth input may go unanswered (and not closed).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub reply_timeout: Duration,
    /// The gateway's process id: checked with the bystander; gone = crash.
    #[arg(long)]
    pub pid: Option<i32>,
    /// Inputs between bystander and process checks.
    #[arg(long, default_value_t = 10_000)]
    pub check_every: u64,
    /// Inputs between progress lines.
    #[arg(long, default_value_t = 50_000)]
    pub progress_every: u64,
    /// Stop the run when no input completes for this long (the gateway is
    /// wedged); counted as a hang.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Stop the run after this many hangs (0: never).
    #[arg(long, default_value_t = 100)]
    pub max_hangs: u64,
    /// The admin console's password (the API token): pool figures in the
    /// progress lines, and SCRAM against the real admin verifier.
    #[arg(long, env = "OGEL_TOKEN", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Findings of each kind printed in full.
    #[arg(long, default_value_t = 20)]
    pub max_reports: usize,
    /// Only these inputs (e.g. post:17,post:49,pre:3), one at a time.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// With --only: print the inputs' bytes, send nothing.
    #[arg(long)]
    pub dump: bool,
    /// Only these post-auth inputs, given as hex (e.g. 4800000005005800000004),
    /// in order on one connection, judged as above. HEX@SECONDS sends the
    /// bytes as they are (no probe), reads for that long and leaves.
    #[arg(long, value_delimiter = ',')]
    pub send: Vec<String>,
    /// Change the triggers of the gateway hangs this tool has found into
    /// harmless neighbours, so that a run goes on to find others: (1) a
    /// post-auth message length of exactly 2^30 (the session spins: it
    /// leases and releases a server connection forever and never reads its
    /// client again); (2) a Flush with a body (the server fails it and
    /// ignores everything up to the next Sync, but the connection goes back
    /// to the pool, where the next client's simple Query goes unanswered).
    #[arg(long)]
    pub skip_known_hangs: bool,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("invalid duration {text:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let digit = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (user, password, database) of a postgresql:// URL.
pub fn parse_url(url: &str) -> Result<(String, String, String)> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .context("--url must start with postgresql://")?;
    let (userinfo, hostpart) = rest
        .rsplit_once('@')
        .context("--url must hold user:password@")?;
    let (user, password) = userinfo
        .split_once(':')
        .context("--url must hold a password")?;
    let database = hostpart
        .split_once('/')
        .map(|(_, d)| d.split('?').next().unwrap_or(""))
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    Ok((
        percent_decode(user),
        percent_decode(password),
        percent_decode(database),
    ))
}
