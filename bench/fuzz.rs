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

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

/// A message cut short is completed with zero bytes up to this many.
const PAD_MAX: usize = 64 * 1024;
/// The largest message length field the gateway accepts after login.
const MESSAGE_MAX: u32 = 1 << 30;
/// The gateway's default `startup_packet_max_bytes`.
const STARTUP_MAX: u32 = 10_000;
const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// How long a bystander `SELECT 1` may take.
const BYSTANDER_TIMEOUT: Duration = Duration::from_secs(10);
/// After a hang, how long a second probe may take (diagnosis only).
const POKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive failed clean logins of one worker before the run stops.
const LOGIN_FAILURES_MAX: u32 = 150;
/// The probe's marker text: this, then a number.
const MARKER_PREFIX: &str = "fz-probe-";
/// Markers whose owner is remembered.
const MARKERS_KEPT: usize = 100_000;
/// Bytes of an input shown in a report (the rest: `--only ID --dump`).
const SHOW_MAX: usize = 1024;

/// Throws hostile protocol input at a gateway; counts crashes and hangs.
#[derive(Debug, Parser)]
#[command(name = "fuzz-gateway", about)]
struct Args {
    /// The gateway's Postgres listener, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// A database through the gateway, with password (post-auth logins, the
    /// bystander): postgresql://user:password@host:port/database.
    #[arg(long)]
    url: String,
    /// Inputs to send, pre-auth and post-auth together.
    #[arg(long, default_value_t = 1_000_000)]
    inputs: u64,
    /// Post-auth connections at a time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Pre-auth connections at a time (most close at once; some wait out
    /// the gateway's auth_timeout).
    #[arg(long, default_value_t = 256)]
    pre_auth_concurrency: usize,
    /// Seed of every input.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of the inputs sent after login.
    #[arg(long, default_value_t = 0.5)]
    post_auth_share: f64,
    /// The gateway's auth_timeout: a pre-auth connection still open 5 s
    /// after it is a hang.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    auth_timeout: Duration,
    /// How long a post-auth input may go unanswered (and not closed).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    reply_timeout: Duration,
    /// The gateway's process id: checked with the bystander; gone = crash.
    #[arg(long)]
    pid: Option<i32>,
    /// Inputs between bystander and process checks.
    #[arg(long, default_value_t = 10_000)]
    check_every: u64,
    /// Inputs between progress lines.
    #[arg(long, default_value_t = 50_000)]
    progress_every: u64,
    /// Stop the run when no input completes for this long (the gateway is
    /// wedged); counted as a hang.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    stall_timeout: Duration,
    /// Stop the run after this many hangs (0: never).
    #[arg(long, default_value_t = 100)]
    max_hangs: u64,
    /// The admin console's password (the API token): pool figures in the
    /// progress lines, and SCRAM against the real admin verifier.
    #[arg(long, env = "OGEL_TOKEN", hide_env_values = true)]
    admin_password: Option<String>,
    /// Findings of each kind printed in full.
    #[arg(long, default_value_t = 20)]
    max_reports: usize,
    /// Only these inputs (e.g. post:17,post:49,pre:3), one at a time.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// With --only: print the inputs' bytes, send nothing.
    #[arg(long)]
    dump: bool,
    /// Only these post-auth inputs, given as hex (e.g. 4800000005005800000004),
    /// in order on one connection, judged as above. HEX@SECONDS sends the
    /// bytes as they are (no probe), reads for that long and leaves.
    #[arg(long, value_delimiter = ',')]
    send: Vec<String>,
    /// Change the triggers of the gateway hangs this tool has found into
    /// harmless neighbours, so that a run goes on to find others: (1) a
    /// post-auth message length of exactly 2^30 (the session spins: it
    /// leases and releases a server connection forever and never reads its
    /// client again); (2) a Flush with a body (the server fails it and
    /// ignores everything up to the next Sync, but the connection goes back
    /// to the pool, where the next client's simple Query goes unanswered).
    #[arg(long)]
    skip_known_hangs: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
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

// ------------------------------------------------------------------ rng

/// SplitMix64: small, fast, and the same everywhere for a seed.
#[derive(Clone)]
struct Rng(u64);

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent streams of one seed.
const STREAM_PRE: u64 = 1;
const STREAM_POST: u64 = 2;
const STREAM_LOGIN: u64 = 3;

impl Rng {
    fn derive(seed: u64, stream: u64, index: u64) -> Rng {
        Rng(mix(mix(mix(seed) ^ stream) ^ index))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
    /// Small numbers more often: 0..n, skewed towards 0.
    fn skewed(&mut self, n: usize) -> usize {
        let cap = self.below(n) + 1;
        self.below(cap)
    }
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// Printable ASCII, some of it SQL-significant.
    fn text(&mut self, n: usize) -> Vec<u8> {
        const CHARS: &[u8] = b"abcxyzABC019 _-.,;:'\"\\$%()=*/\t";
        (0..n).map(|_| CHARS[self.below(CHARS.len())]).collect()
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

// ------------------------------------------------------------- encoding

fn cstr(s: &[u8]) -> Vec<u8> {
    let mut v = s.to_vec();
    v.push(0);
    v
}

fn put(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    put(&mut out, tag, body);
    out
}

/// An untyped first packet: length, code, rest.
fn packet(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = ((rest.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(rest);
    out
}

fn startup_packet(params: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut rest = Vec::new();
    for (k, v) in params {
        rest.extend(cstr(k));
        rest.extend(cstr(v));
    }
    rest.push(0);
    packet(PROTOCOL_3_0, &rest)
}

fn sasl_initial(mechanism: &[u8], data: &[u8], declared: Option<i32>) -> Vec<u8> {
    let mut body = cstr(mechanism);
    body.extend_from_slice(&declared.unwrap_or(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    message(b'p', &body)
}

fn base64(data: &[u8]) -> String {
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An input for a report: length, hex and escaped text (shortened).
fn show(bytes: &[u8]) -> String {
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

/// A field of an ErrorResponse/NoticeResponse body.
fn error_field(body: &[u8], code: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        if kind == code {
            return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The message of a FATAL error in raw pre-auth answers.
fn raw_fatal(buf: &[u8]) -> Option<String> {
    let at = buf.windows(7).position(|w| w == b"SFATAL\0")?;
    let rest = &buf[at..];
    let m = rest.windows(2).position(|w| w == b"\0M")? + 2;
    let end = rest[m..]
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(rest.len() - m);
    Some(String::from_utf8_lossy(&rest[m..m + end]).into_owned())
}

fn is_fatal(body: &[u8]) -> bool {
    let severity = error_field(body, b'V').or_else(|| error_field(body, b'S'));
    matches!(severity.as_deref(), Some("FATAL" | "PANIC"))
}

fn auth_code(body: &[u8]) -> Option<u32> {
    body.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

// ------------------------------------------------------ post-auth inputs

const SQL: &[&str] = &[
    "SELECT 1",
    "SELECT $1::int",
    "SELECT $1::text, $2::int",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s",
    "RELEASE SAVEPOINT s",
    "SET search_path TO nowhere",
    "SET application_name TO 'fz'",
    "SET LOCAL work_mem TO '1MB'",
    "SET TIME ZONE 'UTC'",
    "SET client_encoding TO 'LATIN1'",
    "SET client_encoding TO 'UTF8'",
    "SET fz.x = 'a''b'",
    "RESET ALL",
    "RESET search_path",
    "DISCARD ALL",
    "SHOW search_path",
    "SELEC oops",
    "SELECT 1/0",
    "SELECT pg_sleep(0.001)",
    "SELECT 1; SELECT 2",
    "SELECT 1; SELEC 2; SELECT 3",
    "VALUES (1), (2), (3)",
    "SELECT generate_series(1, 50)",
    "COPY (SELECT 1) TO STDOUT",
    "COPY (SELECT generate_series(1, 3)) TO STDOUT",
    "COPY fuzz_t FROM STDIN",
    "COPY fuzz_t FROM STDIN WITH (FORMAT binary)",
    "INSERT INTO fuzz_t VALUES ('x')",
    "DECLARE c2 CURSOR FOR SELECT generate_series(1, 5)",
    "FETCH 2 FROM c2",
    "CLOSE c2",
    "DEALLOCATE s1",
    "DEALLOCATE ALL",
    "DEALLOCATE p",
    "DO $$BEGIN RAISE NOTICE 'n'; END$$",
    "NOTIFY hostile, 'x'",
    "SELECT current_setting('application_name')",
    "/* c */ SELECT 1",
    "SELECT 'unterminated",
    "",
    ";",
    // Session-only features: the pooler pins the server connection (and
    // the fuzzer ends such a connection after its probe).
    "LISTEN hostile",
    "CREATE TEMP TABLE t (a int)",
    "CREATE TEMP TABLE t2 (a int) ON COMMIT DROP",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "SELECT pg_try_advisory_lock(42)",
    "SET ROLE NONE",
    "SET SESSION AUTHORIZATION DEFAULT",
];

/// Rare and heavier: large rows (relayed in pieces past 64 KiB).
const RARE_SQL: &[&str] = &[
    "SELECT repeat('x', 100000)",
    "SELECT generate_series(1, 5000)",
    "COPY (SELECT repeat('y', 70000)) TO STDOUT",
];

/// Words whose presence may pin a server connection to the client.
const PIN_WORDS: &[&[u8]] = &[
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

const NAMES: &[&[u8]] = &[b"", b"", b"s1", b"s2", b"p", b"c2"];

fn name(rng: &mut Rng) -> &'static [u8] {
    if rng.chance(1, 40) {
        b"\xff\xfe" // not UTF-8: the gateway refuses the message
    } else {
        rng.pick(NAMES)
    }
}
const KNOWN_TAGS: &[u8] = b"QPBDESHCcdfFX";

fn sql(rng: &mut Rng) -> Vec<u8> {
    match rng.below(400) {
        0 => rng.pick(RARE_SQL).as_bytes().to_vec(),
        1..=12 => {
            let n = rng.skewed(80);
            rng.text(n)
        }
        13..=20 => {
            // A known statement with a byte changed.
            let mut s = rng.pick(SQL).as_bytes().to_vec();
            if !s.is_empty() {
                let i = rng.below(s.len());
                s[i] = rng.byte().max(1);
            }
            s
        }
        _ => rng.pick(SQL).as_bytes().to_vec(),
    }
}

fn bind_body(rng: &mut Rng) -> Vec<u8> {
    let mut b = cstr(rng.pick(&[b"".as_slice(), b"p1", b"c2"]));
    b.extend(cstr(name(rng)));
    if rng.chance(1, 4) {
        // Arbitrary (mostly invalid) rest, as tests/tests/hostile.rs does.
        let n = rng.below(12);
        b.extend(rng.bytes(n));
        return b;
    }
    let formats = rng.below(3);
    b.extend_from_slice(&(formats as i16).to_be_bytes());
    for _ in 0..formats {
        let f: i16 = rng.pick(&[0, 1, 1, 7, -1]);
        b.extend_from_slice(&f.to_be_bytes());
    }
    let params = if rng.chance(1, 20) {
        rng.pick(&[3usize, 100, 40_000])
    } else {
        rng.below(3)
    };
    b.extend_from_slice(&(params as i16).to_be_bytes());
    for _ in 0..params.min(3) {
        match rng.below(6) {
            0 => b.extend_from_slice(&(-1i32).to_be_bytes()),
            1 => {
                // A lying length.
                b.extend_from_slice(&rng.pick(&[1000i32, -2, 5]).to_be_bytes());
                b.extend_from_slice(b"42");
            }
            _ => {
                let v: Vec<u8> = match rng.below(4) {
                    0 => b"42".to_vec(),
                    1 => b"abc".to_vec(),
                    2 => vec![0, 0, 0, 1],
                    _ => {
                        let n = rng.below(9);
                        rng.bytes(n)
                    }
                };
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend(v);
            }
        }
    }
    let results = rng.below(3);
    b.extend_from_slice(&(results as i16).to_be_bytes());
    for _ in 0..results {
        b.extend_from_slice(&rng.pick(&[0i16, 1, 2]).to_be_bytes());
    }
    b
}

/// One protocol message (or deliberately broken bytes).
fn frame(rng: &mut Rng, out: &mut Vec<u8>) {
    const WEIGHTS: &[u32] = &[
        140, // Query
        100, // Parse
        100, // Bind
        60,  // Describe
        80,  // Execute
        100, // Sync
        30,  // Flush
        40,  // Close
        50,  // CopyData
        30,  // CopyDone
        20,  // CopyFail
        8,   // FunctionCall
        8,   // Terminate
        15,  // random tag
        10,  // bad length
        1,   // large CopyData
        1,   // large Query
    ];
    match rng.weighted(WEIGHTS) {
        0 => put(out, b'Q', &cstr(&sql(rng))),
        1 => {
            let mut b = cstr(name(rng));
            b.extend(cstr(&sql(rng)));
            if rng.chance(1, 20) {
                b.extend_from_slice(&rng.pick(&[1u16, 3, 65535]).to_be_bytes());
            } else {
                let n = rng.below(3);
                b.extend_from_slice(&(n as u16).to_be_bytes());
                for _ in 0..n {
                    b.extend_from_slice(
                        &rng.pick(&[0u32, 23, 25, 16, 17, 1_000_000]).to_be_bytes(),
                    );
                }
            }
            put(out, b'P', &b)
        }
        2 => put(out, b'B', &bind_body(rng)),
        3 => {
            let kind = if rng.chance(1, 10) {
                rng.byte()
            } else {
                rng.pick(b"SP")
            };
            let mut b = vec![kind];
            b.extend(cstr(name(rng)));
            put(out, b'D', &b)
        }
        4 => {
            let mut b = cstr(rng.pick(&[b"".as_slice(), b"p1", b"c2"]));
            b.extend_from_slice(&rng.pick(&[0i32, 0, 1, 2, -1, 0x7fff_ffff]).to_be_bytes());
            put(out, b'E', &b)
        }
        5 => put(out, b'S', &[]),
        6 => put(out, b'H', &[]),
        7 => {
            let kind = if rng.chance(1, 10) {
                rng.byte()
            } else {
                rng.pick(b"SP")
            };
            let mut b = vec![kind];
            b.extend(cstr(name(rng)));
            put(out, b'C', &b)
        }
        8 => {
            let data: Vec<u8> = match rng.below(6) {
                0 => b"a\n".to_vec(),
                1 => b"1\tx\n".to_vec(),
                2 => b"\\.\n".to_vec(),
                3 => b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec(),
                4 => b"\xff\xfe\n".to_vec(),
                _ => {
                    let n = rng.skewed(64);
                    rng.bytes(n)
                }
            };
            put(out, b'd', &data)
        }
        9 => put(out, b'c', &[]),
        10 => {
            if rng.chance(1, 5) {
                put(out, b'f', b"no terminator")
            } else {
                put(out, b'f', &cstr(b"fz"))
            }
        }
        11 => {
            // FunctionCall: an object id no built-in function has, then noise.
            let mut b = (100_000 + rng.below(1_000_000) as u32)
                .to_be_bytes()
                .to_vec();
            let n = rng.below(24);
            b.extend(rng.bytes(n));
            put(out, b'F', &b)
        }
        12 => {
            if rng.chance(1, 4) {
                put(out, b'X', b"bye")
            } else {
                put(out, b'X', &[])
            }
        }
        13 => {
            let tag = rng.byte();
            let n = rng.skewed(32);
            let body = rng.bytes(n);
            put(out, tag, &body)
        }
        14 => {
            let tag = if rng.chance(1, 2) {
                rng.pick(KNOWN_TAGS)
            } else {
                rng.byte()
            };
            let len = match rng.below(6) {
                0 => rng.below(4) as u32,
                1 => rng.u32(),
                2 => 4 + rng.below(200) as u32,
                3 => rng.pick(&[MESSAGE_MAX, MESSAGE_MAX + 1, u32::MAX, MESSAGE_MAX - 1]),
                4 => 4 + rng.below(100_000) as u32,
                _ => 5 + rng.below(8) as u32,
            };
            out.push(tag);
            out.extend_from_slice(&len.to_be_bytes());
        }
        15 => {
            let mut data = vec![b'a'; 70_000];
            for i in (79..data.len()).step_by(80) {
                data[i] = b'\n';
            }
            put(out, b'd', &data)
        }
        _ => {
            let mut q = b"SELECT '".to_vec();
            q.resize(70_008, b'x');
            q.push(b'\'');
            put(out, b'Q', &cstr(&q))
        }
    }
}

/// Byte flips (with, half the time, a truncation), insertions and
/// duplications.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    if rng.chance(1, 5) {
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(bytes.len());
            bytes[i] ^= rng.byte().max(1);
        }
        if rng.chance(1, 2) {
            let keep = rng.below(bytes.len()) + 1;
            bytes.truncate(keep);
        }
    }
    if rng.chance(1, 30) {
        let at = rng.below(bytes.len() + 1);
        let n = 1 + rng.below(8);
        let noise = rng.bytes(n);
        bytes.splice(at..at, noise);
    }
    if rng.chance(1, 30) {
        let from = rng.below(bytes.len());
        let to = (from + 1 + rng.below(64)).min(bytes.len());
        let piece = bytes[from..to].to_vec();
        let at = rng.below(bytes.len() + 1);
        bytes.splice(at..at, piece);
    }
}

/// What the gateway owes a post-auth input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Every message is complete: the probe must be answered (or the
    /// connection closed).
    Probe,
    /// A bad length or a Terminate: the connection must be closed (a FATAL
    /// error first, unless `silent_ok`).
    Close { silent_ok: bool },
    /// A message too long to complete: we half-close; the gateway must
    /// close.
    HalfClose,
}

/// Walks the messages of `bytes` as the gateway frames them, completing a
/// message cut short (at most [`PAD_MAX`] zero bytes), and says what the
/// gateway owes it. With `skip_known`, the triggers of the known hangs
/// (see `--skip-known-hangs`) are changed into harmless neighbours.
fn plan(bytes: &mut Vec<u8>, skip_known: bool) -> Plan {
    let mut at = 0;
    while at < bytes.len() {
        let have = bytes.len() - at;
        if have < 5 {
            // Complete the header, with a length of 4 where the missing
            // bytes allow it.
            let template = [0u8, 0, 0, 0, 4];
            bytes.extend_from_slice(&template[have..]);
        }
        let mut tag = bytes[at];
        let mut field =
            u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        if skip_known && field == MESSAGE_MAX {
            // Known hang 1: one more is a plain bad length.
            field += 1;
            bytes[at + 1..at + 5].copy_from_slice(&field.to_be_bytes());
        }
        if skip_known && tag == b'H' && field > 4 {
            // Known hang 2: CopyData outside COPY, which the server ignores.
            tag = b'd';
            bytes[at] = tag;
        }
        if !(4..=MESSAGE_MAX).contains(&field) {
            // A Terminate first in line may end the session before its
            // length is looked at.
            return Plan::Close {
                silent_ok: tag == b'X',
            };
        }
        let end = at + 1 + field as usize;
        if end > bytes.len() {
            if end - bytes.len() > PAD_MAX {
                return Plan::HalfClose;
            }
            bytes.resize(end, 0);
        }
        if tag == b'X' {
            return Plan::Close { silent_ok: true };
        }
        at = end;
    }
    Plan::Probe
}

/// Post-auth input `k`: its bytes (completed) and what it is owed.
fn post_input(seed: u64, k: u64, skip_known: bool) -> (Vec<u8>, Plan) {
    let mut rng = Rng::derive(seed, STREAM_POST, k);
    let frames = 1 + rng.skewed(10);
    let mut bytes = Vec::new();
    for _ in 0..frames {
        frame(&mut rng, &mut bytes);
    }
    mutate(&mut rng, &mut bytes);
    let plan = plan(&mut bytes, skip_known);
    (bytes, plan)
}

fn may_pin(bytes: &[u8]) -> bool {
    let lower = bytes.to_ascii_lowercase();
    PIN_WORDS.iter().any(|w| contains(&lower, w))
}

// ------------------------------------------------------- pre-auth inputs

/// What the gateway owes a raw pre-auth input before it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owed {
    /// A FATAL error.
    Fatal,
    /// Nothing (a cancel request).
    Silent,
    /// Either (we half-closed while it waited, or TLS may be in play).
    Either,
}

/// Follows the gateway's first-packet loop over `bytes`.
fn owed(bytes: &[u8], half_close: bool) -> Owed {
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

/// A pre-auth input.
enum PreInput {
    /// Bytes written at once, maybe followed by a half-close.
    Raw { bytes: Vec<u8>, half_close: bool },
    /// An interactive SCRAM exchange with mutations.
    Scram(ScramCase),
}

/// Who an interactive SCRAM exchange logs in as.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// The --url role and database, right password.
    Owner,
    /// The admin console (right password if --admin-password is given).
    Admin,
    /// A role that does not exist (mock verifier).
    Nobody,
}

struct ScramCase {
    who: Who,
    /// How the client-first message is spoiled (0: not at all).
    first: usize,
    /// How the client-final message is spoiled (0: not at all).
    last: usize,
    rng: Rng,
}

fn random_value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => b"\xff\xfe".to_vec(),
        1 => vec![b'a'; 5000],
        2 => b"a'b\\c\"d".to_vec(),
        3 => Vec::new(),
        _ => {
            let n = rng.skewed(24);
            rng.text(n)
        }
    }
}

/// A startup packet, often malformed.
fn random_startup(rng: &mut Rng) -> Vec<u8> {
    let version = match rng.below(10) {
        0 => 3 << 16 | rng.below(4) as u32,
        1 => 2 << 16,
        2 => rng.u32(),
        3 => 4 << 16,
        _ => PROTOCOL_3_0,
    };
    let mut rest = Vec::new();
    for _ in 0..rng.below(6) {
        let key: Vec<u8> = match rng.below(14) {
            0..=2 => b"user".to_vec(),
            3..=4 => b"database".to_vec(),
            5 => b"options".to_vec(),
            6 => b"application_name".to_vec(),
            7 => b"client_encoding".to_vec(),
            8 => b"replication".to_vec(),
            9 => b"_pq_.fz".to_vec(),
            10 => b"search_path".to_vec(),
            11 => Vec::new(),
            _ => random_value(rng),
        };
        let value: Vec<u8> = match key.as_slice() {
            b"user" => match rng.below(6) {
                0 => b"app_owner".to_vec(),
                1 => b"ogel".to_vec(),
                2 => b"nobody".to_vec(),
                3 => Vec::new(),
                _ => random_value(rng),
            },
            b"database" => rng
                .pick(&[
                    b"app".as_slice(),
                    b"ogel",
                    b"pgbouncer",
                    b"nosuch",
                    b"app@main",
                    b"app@nope",
                    b"",
                    b"@",
                    b"\xff",
                ])
                .to_vec(),
            b"options" => rng
                .pick(&[
                    b"-c search_path=x".as_slice(),
                    b"branch=main",
                    b"branch=dev",
                    b"branch=main branch=dev",
                    b"-B 100",
                    b"--work-mem=64MB",
                    b"-c",
                    b"\\",
                ])
                .to_vec(),
            b"replication" => rng
                .pick(&[b"true".as_slice(), b"database", b"off", b"0"])
                .to_vec(),
            _ => random_value(rng),
        };
        rest.extend(cstr(&key));
        rest.extend(cstr(&value));
    }
    match rng.below(10) {
        0 => {}                                 // no final terminator
        1 => rest.extend_from_slice(b"\0tail"), // trailing bytes
        _ => rest.push(0),
    }
    let mut out = packet(version, &rest);
    if rng.chance(1, 8) {
        // A lying length.
        let real = out.len() as i64;
        let len = match rng.below(5) {
            0 => real - 1 - rng.below(4) as i64,
            1 => real + 1 + rng.below(64) as i64,
            2 => STARTUP_MAX as i64,
            3 => STARTUP_MAX as i64 + 1,
            _ => 7,
        };
        out[..4].copy_from_slice(&(len.max(0) as u32).to_be_bytes());
    }
    out
}

/// SASL messages a client that cannot wait for the server's nonce sends.
fn pipelined_sasl(rng: &mut Rng) -> Vec<u8> {
    const FIRSTS: &[&[u8]] = &[
        b"n,,n=,r=abc",
        b"y,,n=,r=abc",
        b"p=tls-server-end-point,,n=,r=abc",
        b"n,a=x,n=,r=abc",
        b"n,,m=ext,n=,r=abc",
        b"n,,n=,r=",
        b"n,,n=,r=ab\x7f",
        b"n,,n=,r=abc,x=1",
        b"n,,n=,r=abc,q",
        b"n,,n=user,r=abc,r=def",
        b"n,,",
        b"n",
        b"",
        b"n,,n=,r=\xff",
        b"n,,n=\0,r=abc",
    ];
    const FINALS: &[&[u8]] = &[
        b"c=biws,r=abcXYZ,p=AAAA",
        b"c=biws,r=abc,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        b"c=eSws,r=abc,p=",
        b"c=biws,p=AAAA",
        b"r=abc,c=biws",
        b"c=biws,r=abc,x=1,p=AAAA",
        b",,,,",
        b"",
    ];
    let mut out = Vec::new();
    match rng.below(8) {
        0 => {
            let n = rng.skewed(64);
            out.extend(message(b'p', &rng.bytes(n)));
        }
        1 => {
            let mechanism = rng.pick(&[
                b"PLAIN".as_slice(),
                b"SCRAM-SHA-256-PLUS",
                b"",
                b"scram-sha-256",
            ]);
            out.extend(sasl_initial(mechanism, b"n,,n=,r=abc", None));
        }
        2 => {
            let data = rng.pick(FIRSTS);
            let declared = rng.pick(&[-1, data.len() as i32 + 1, 0, i32::MAX, -100]);
            out.extend(sasl_initial(b"SCRAM-SHA-256", data, Some(declared)));
        }
        3 => {
            out.extend(sasl_initial(b"SCRAM-SHA-256", rng.pick(FIRSTS), None));
            if rng.chance(2, 3) {
                out.extend(message(b'p', rng.pick(FINALS)));
            }
        }
        4 => out.extend(message(b'p', &vec![b'n'; 4097 + rng.below(3000)])),
        5 => out.extend(message(b'Q', &cstr(b"SELECT 1"))),
        6 => {
            out.push(b'p');
            out.extend_from_slice(&(rng.below(4) as u32).to_be_bytes());
        }
        _ => {} // nothing: the gateway waits for the SASL response
    }
    out
}

/// Pre-auth input `j`; `keys` are cancel keys seen at logins.
fn pre_input(seed: u64, j: u64, keys: &[(u32, u32)]) -> PreInput {
    let mut rng = Rng::derive(seed, STREAM_PRE, j);
    let mut bytes = Vec::new();
    match rng.weighted(&[10, 10, 8, 5, 15, 10, 5]) {
        0 => {
            let n = rng.below(65);
            bytes = rng.bytes(n);
        }
        1 => {
            let len = match rng.below(6) {
                0 => rng.u32(),
                1 => rng.below(16) as u32,
                2 => 8 + rng.below(STARTUP_MAX as usize - 7) as u32,
                3 => STARTUP_MAX,
                4 => STARTUP_MAX + 1,
                _ => 0x8000_0000,
            };
            bytes.extend_from_slice(&len.to_be_bytes());
            let n = rng.below(65);
            bytes.extend(rng.bytes(n));
        }
        2 => {
            for _ in 0..1 + rng.below(4) {
                let code = rng.pick(&[SSL_REQUEST, GSSENC_REQUEST]);
                if rng.chance(1, 6) {
                    bytes.extend(packet(code, &[rng.byte()]));
                } else {
                    bytes.extend(packet(code, &[]));
                }
            }
            match rng.below(4) {
                0 => bytes.extend(random_startup(&mut rng)),
                1 => {
                    let n = rng.below(32);
                    bytes.extend(rng.bytes(n));
                }
                2 => bytes.extend(startup_packet(&[
                    (b"user", b"app_owner"),
                    (b"database", b"app"),
                ])),
                _ => {}
            }
        }
        3 => {
            let (pid, secret) = if !keys.is_empty() && rng.chance(1, 3) {
                keys[rng.below(keys.len())]
            } else {
                (rng.u32(), rng.u32())
            };
            let mut key = pid.to_be_bytes().to_vec();
            key.extend_from_slice(&secret.to_be_bytes());
            match rng.below(6) {
                0 => key.truncate(4),
                1 => key.extend_from_slice(b"more"),
                _ => {}
            }
            bytes = packet(CANCEL_REQUEST, &key);
        }
        4 => {
            bytes = random_startup(&mut rng);
            if rng.chance(1, 3) {
                let n = rng.below(32);
                bytes.extend(rng.bytes(n));
            }
        }
        5 => {
            let (user, database): (&[u8], &[u8]) = match rng.below(10) {
                0..=5 => (b"app_owner", b"app"),
                6..=7 => (b"ogel", b"ogel"),
                8 => (b"nobody", b"app"),
                _ => (b"app_owner", b"nosuch"),
            };
            bytes = startup_packet(&[(b"user", user), (b"database", database)]);
            bytes.extend(pipelined_sasl(&mut rng));
        }
        _ => {
            let who = match rng.below(10) {
                0..=5 => Who::Owner,
                6..=7 => Who::Admin,
                _ => Who::Nobody,
            };
            let first = if rng.chance(3, 10) {
                1 + rng.below(8)
            } else {
                0
            };
            let last = if rng.chance(1, 10) {
                0
            } else {
                1 + rng.below(8)
            };
            return PreInput::Scram(ScramCase {
                who,
                first,
                last,
                rng,
            });
        }
    }
    let half_close = rng.chance(1, 2);
    PreInput::Raw { bytes, half_close }
}

// --------------------------------------------------------------- socket

/// How waiting on the gateway ended, other than with what we waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// It closed the connection (end of stream or reset).
    Closed,
    /// The deadline passed.
    Timeout,
    /// It sent a message with an impossible length.
    Garbled,
}

/// A client connection with a read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// The gateway closed it (or reset it).
    closed: bool,
    /// An ErrorResponse with severity FATAL came: its message.
    fatal: Option<String>,
    /// The last messages received (tag, and SQLSTATE for errors).
    trail: VecDeque<String>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            closed: false,
            fatal: None,
            trail: VecDeque::new(),
        }
    }

    /// Writes `bytes` whole, reading what comes meanwhile (so that neither
    /// side can block the other). A failed write is not an error: what
    /// the gateway said and its close are read next.
    async fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), End> {
        let Conn {
            stream,
            buf,
            closed,
            ..
        } = self;
        let (mut reader, mut writer) = stream.split();
        let write = writer.write_all(bytes);
        tokio::pin!(write);
        loop {
            buf.reserve(16 * 1024);
            tokio::select! {
                _ = &mut write => return Ok(()),
                read = reader.read_buf(buf), if !*closed => {
                    if !matches!(read, Ok(n) if n > 0) {
                        *closed = true;
                    }
                }
                _ = sleep_until(deadline) => return Err(End::Timeout),
            }
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        if self.closed {
            return Err(End::Closed);
        }
        self.buf.reserve(16 * 1024);
        match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(End::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.closed = true;
                Ok(())
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// The next whole message in the buffer, if there is one.
    fn take(&mut self) -> Result<Option<(u8, Vec<u8>)>, End> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
        if len < 4 {
            self.trail_push(format!("garbled header {}", hex(&avail[..5])));
            return Err(End::Garbled);
        }
        if avail.len() < len + 1 {
            return Ok(None);
        }
        let tag = avail[0];
        let body = avail[5..len + 1].to_vec();
        self.pos += len + 1;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if tag == b'E' {
            if is_fatal(&body) {
                self.fatal = error_field(&body, b'M');
            }
            let code = error_field(&body, b'C').unwrap_or_default();
            let text = error_field(&body, b'M').unwrap_or_default();
            self.trail_push(format!("E {code} {text}"));
        } else {
            self.trail_push((tag as char).escape_default().to_string());
        }
        Ok(Some((tag, body)))
    }

    fn trail_push(&mut self, entry: String) {
        if self.trail.len() == 12 {
            self.trail.pop_front();
        }
        self.trail.push_back(entry);
    }

    fn trail(&self) -> String {
        if self.trail.is_empty() {
            return "nothing".into();
        }
        self.trail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    async fn read_message(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), End> {
        loop {
            if let Some(m) = self.take()? {
                return Ok(m);
            }
            self.fill(deadline).await?;
        }
    }

    /// Reads messages until the gateway closes: `Ok` once it has.
    async fn until_closed(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            match self.read_message(deadline).await {
                Ok(_) => {}
                Err(End::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads raw bytes until the gateway closes (pre-auth answers mix
    /// single-byte 'N'/'S' with messages); notes a FATAL error in them.
    async fn until_closed_raw(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            match self.fill(deadline).await {
                Ok(()) => {}
                Err(End::Closed) => {
                    self.fatal = raw_fatal(&self.buf);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn half_close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

// ---------------------------------------------------------------- login

/// How a login ended.
enum Auth {
    /// ReadyForQuery came; the cancel key, if one was sent.
    Ready(Option<(u32, u32)>),
    /// An ErrorResponse (its SQLSTATE): the gateway should close next.
    Refused(String),
    /// The gateway closed the connection (or it broke).
    Ended(End),
}

/// Spoils the SCRAM messages of a [`ScramCase`].
struct Spoiler<'a> {
    first: usize,
    last: usize,
    rng: &'a mut Rng,
}

impl Spoiler<'_> {
    /// (mechanism, client-first, declared length).
    fn first(&mut self, data: &mut Vec<u8>) -> (Vec<u8>, Option<i32>) {
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
    fn last(&mut self, scram: &mut ScramSha256, server_first: &[u8]) -> Vec<u8> {
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
async fn authenticate(
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
    if let Err(e) = conn.send(&startup_packet(&params), deadline).await {
        return Auth::Ended(e);
    }
    // AuthenticationSASL.
    loop {
        match conn.read_message(deadline).await {
            Ok((b'R', body)) if auth_code(&body) == Some(10) => break,
            Ok((b'E', body)) => return Auth::Refused(error_field(&body, b'C').unwrap_or_default()),
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
    if let Err(e) = conn
        .send(&sasl_initial(&mechanism, &first, declared), deadline)
        .await
    {
        return Auth::Ended(e);
    }
    // AuthenticationSASLContinue.
    let server_first = loop {
        match conn.read_message(deadline).await {
            Ok((b'R', body)) if auth_code(&body) == Some(11) => break body[4..].to_vec(),
            Ok((b'E', body)) => return Auth::Refused(error_field(&body, b'C').unwrap_or_default()),
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
    if let Err(e) = conn.send(&message(b'p', &last), deadline).await {
        return Auth::Ended(e);
    }
    let mut key = None;
    loop {
        match conn.read_message(deadline).await {
            Ok((b'K', body)) if body.len() == 8 => {
                key = Some((
                    u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                ));
            }
            Ok((b'Z', _)) => return Auth::Ready(key),
            Ok((b'E', body)) => return Auth::Refused(error_field(&body, b'C').unwrap_or_default()),
            Ok(_) => {}
            Err(e) => return Auth::Ended(e),
        }
    }
}

/// Startup parameters a hostile (but well-formed) client may send.
fn hostile_params(rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut params = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let (key, value): (&[u8], Vec<u8>) = match rng.below(14) {
            0 => (
                b"application_name",
                rng.pick(&[
                    b"fz".as_slice(),
                    b"",
                    b"a'b\\c",
                    "\u{fc}n\u{ef}".as_bytes(),
                    &[b'n'; 70],
                ])
                .to_vec(),
            ),
            1 => (
                b"client_encoding",
                rng.pick(&[
                    b"UTF8".as_slice(),
                    b"LATIN1",
                    b"SQL_ASCII",
                    b"WIN1252",
                    b"BOGUS",
                    b"utf-8",
                ])
                .to_vec(),
            ),
            2 => (
                b"DateStyle",
                rng.pick(&[b"ISO, MDY".as_slice(), b"German", b"bogus"])
                    .to_vec(),
            ),
            3 => (
                b"TimeZone",
                rng.pick(&[b"UTC".as_slice(), b"Europe/Berlin", b"Mars/Olympus"])
                    .to_vec(),
            ),
            4 => (
                b"IntervalStyle",
                rng.pick(&[b"postgres".as_slice(), b"iso_8601", b"bogus"])
                    .to_vec(),
            ),
            5 => (
                b"search_path",
                rng.pick(&[b"public".as_slice(), b"\"odd name\", public", b"x'y"])
                    .to_vec(),
            ),
            6 => (b"fz.custom", {
                let n = rng.skewed(20);
                rng.text(n)
            }),
            7 => (b"bogus_param", b"1".to_vec()),
            8 => (
                b"work_mem",
                rng.pick(&[b"64kB".as_slice(), b"bogus"]).to_vec(),
            ),
            9 => (
                b"options",
                rng.pick(&[
                    b"-c search_path=a,b".as_slice(),
                    b"-c fz.x=1 --fz.y=2",
                    b"-c application_name=a\\ b",
                    b"-B 100",
                    b"-c =x",
                    b"branch=main",
                    b"-c work_mem=64MB",
                    b"-c lock_timeout=bogus",
                    b"-c fz.q='\\''",
                ])
                .to_vec(),
            ),
            10 => (b"_pq_.fz", b"on".to_vec()),
            11 => (b"bad name", b"x".to_vec()),
            12 => (b"server_version", b"1".to_vec()),
            _ => (
                b"standard_conforming_strings",
                rng.pick(&[b"off".as_slice(), b"on", b"bogus"]).to_vec(),
            ),
        };
        params.push((key.to_vec(), value));
    }
    params
}

// ------------------------------------------------------------- the run

#[derive(Default)]
struct Stats {
    inputs: AtomicU64,
    pre: AtomicU64,
    post: AtomicU64,
    crashes: AtomicU64,
    hangs: AtomicU64,
    closed_by_gateway: AtomicU64,
    pre_fatal: AtomicU64,
    pre_silent: AtomicU64,
    pre_tls: AtomicU64,
    post_fatal: AtomicU64,
    post_silent: AtomicU64,
    suspects: AtomicU64,
    /// Probe answers of one client that reached another.
    leaks: AtomicU64,
    half_closes: AtomicU64,
    probes: AtomicU64,
    copy_fails: AtomicU64,
    reprobes: AtomicU64,
    pinned_closes: AtomicU64,
    logins: AtomicU64,
    hostile_logins: AtomicU64,
    hostile_refused: AtomicU64,
    login_errors: AtomicU64,
    scram_ok: AtomicU64,
    scram_refused: AtomicU64,
    connect_retries: AtomicU64,
    checks: AtomicU64,
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}

struct Ctx {
    addr: String,
    /// `addr` resolved.
    target: SocketAddr,
    /// Connect from many loopback addresses (the target is on loopback).
    spread: bool,
    url: String,
    user: String,
    password: String,
    database: String,
    admin_password: Option<String>,
    seed: u64,
    auth_timeout: Duration,
    reply_timeout: Duration,
    pid: Option<i32>,
    max_reports: usize,
    stats: Stats,
    stop: AtomicBool,
    markers: AtomicU64,
    /// Whose probe each recent marker is (to name the input whose answer
    /// went to another client).
    owners: Mutex<(HashMap<u64, String>, VecDeque<u64>)>,
    /// Cancel keys seen at logins (for hostile cancel requests).
    keys: Mutex<Vec<(u32, u32)>>,
    /// `--skip-known-hangs`.
    skip_known: bool,
    /// `--max-hangs`.
    max_hangs: u64,
    /// Findings printed so far, by kind.
    reported: Mutex<HashMap<&'static str, usize>>,
    /// Why the gateway closed connections (its FATAL errors), counted.
    reasons: Mutex<HashMap<String, u64>>,
    started: Instant,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// A finding: counted by the caller, printed (the first few of a kind).
    fn report(&self, kind: &'static str, text: impl FnOnce() -> String) {
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

    fn hang(&self, text: impl FnOnce() -> String) {
        let n = self.stats.hangs.fetch_add(1, Relaxed) + 1;
        self.report("HANG", text);
        if n == self.max_hangs && !self.stop.swap(true, Relaxed) {
            eprintln!("fuzz-gateway: {n} hangs: stopping the run");
        }
    }

    fn crash(&self, text: impl FnOnce() -> String) {
        if !self.stop.swap(true, Relaxed) {
            inc(&self.stats.crashes);
            self.report("CRASH", text);
        }
    }

    /// Counts a FATAL error the gateway closed a connection with (numbers
    /// and quoted names folded, so that alike errors count together).
    fn reason(&self, phase: &str, text: &str) {
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

    /// A new probe marker, owned by input `id`.
    fn marker(&self, id: &str) -> String {
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
    fn marker_owner(&self, row: &[u8]) -> Option<String> {
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

    fn gateway_gone(&self) -> bool {
        self.pid.is_some_and(|pid| !process_alive(pid))
    }

    fn count_input(&self, post: bool) {
        inc(if post {
            &self.stats.post
        } else {
            &self.stats.pre
        });
        inc(&self.stats.inputs);
    }

    /// Connects, retrying while the kernel runs short of ports or the
    /// listener refuses (until `deadline`). `None`: a crash or a hang was
    /// recorded.
    async fn connect(&self, deadline: Instant, what: &str, source: Ipv4Addr) -> Option<Conn> {
        let source = self.spread.then_some(IpAddr::V4(source));
        let mut last = String::new();
        loop {
            match timeout_at(deadline, dial(self.target, source)).await {
                Ok(Ok(stream)) => return Some(Conn::new(stream)),
                Ok(Err(e)) => {
                    if e.kind() == ErrorKind::ConnectionRefused
                        && (self.gateway_gone() || self.pid.is_none())
                    {
                        self.crash(|| {
                            format!(
                                "{what}: connection refused and the gateway process is gone ({e})"
                            )
                        });
                        return None;
                    }
                    inc(&self.stats.connect_retries);
                    last = e.to_string();
                    if Instant::now() + Duration::from_millis(50) >= deadline {
                        break;
                    }
                    sleep(Duration::from_millis(50)).await;
                }
                Err(_) => break,
            }
        }
        if self.gateway_gone() {
            self.crash(|| format!("{what}: cannot connect and the gateway process is gone"));
        } else if !self.stopped() {
            self.hang(|| {
                format!("{what}: could not connect within the deadline (last error: {last:?})")
            });
        }
        None
    }
}

/// Connects to `target` from `source` (any port), if given.
async fn dial(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(target).await;
    };
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// The loopback address pre-auth input `j` connects from: one of
/// 127.2.0.1 to 127.255.255.254, so that the gateway's per-address limits
/// (new connections per second, failed-login backoff) let the inputs
/// through to the code behind them.
fn pre_source(seed: u64, j: u64) -> Ipv4Addr {
    let r = mix(mix(seed ^ 0x5EED) ^ j);
    Ipv4Addr::new(
        127,
        2 + (r % 254) as u8,
        (r >> 8) as u8,
        1 + ((r >> 16) % 254) as u8,
    )
}

/// The loopback address post-auth worker `w` logs in from.
fn post_source(w: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (w / 254 % 256) as u8, 1 + (w % 254) as u8)
}

/// Alive and not a zombie.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A logged-in post-auth connection.
struct Session {
    conn: Conn,
    /// Ids of the inputs sent on it (the last 32).
    history: VecDeque<String>,
    /// The extra startup parameters it logged in with.
    params: String,
}

fn history_text(history: &VecDeque<String>) -> String {
    format!("[{}]", Vec::from(history.clone()).join(","))
}

fn describe_params(params: &[(Vec<u8>, Vec<u8>)]) -> String {
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
async fn open_session(ctx: &Ctx, w: usize, logins: &mut u64) -> Option<Session> {
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
enum Outcome {
    /// The probe was answered; the connection is still open.
    Answered,
    /// The gateway closed the connection.
    Closed,
    /// A hang or garbled answer was recorded; the connection is dropped.
    Failed,
}

/// Sends post-auth input `id` (`bytes`, completed by [`plan`]) on
/// `session` and judges the gateway.
async fn run_post(
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
            let mut out = bytes.clone();
            put(&mut out, b'S', &[]);
            put(
                &mut out,
                b'Q',
                &cstr(format!("ROLLBACK; SELECT '{marker}'").as_bytes()),
            );
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
                            let mut bye = Vec::new();
                            put(&mut bye, b'X', &[]);
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
                        let mut again = Vec::new();
                        put(&mut again, b'f', &cstr(b"fuzz-gateway"));
                        put(&mut again, b'S', &[]);
                        put(
                            &mut again,
                            b'Q',
                            &cstr(format!("ROLLBACK; SELECT '{marker}'").as_bytes()),
                        );
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
                        let mut again = Vec::new();
                        put(&mut again, b'S', &[]);
                        put(
                            &mut again,
                            b'Q',
                            &cstr(format!("ROLLBACK; SELECT '{marker}'").as_bytes()),
                        );
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
                let mut again = Vec::new();
                put(&mut again, b'S', &[]);
                put(
                    &mut again,
                    b'Q',
                    &cstr(format!("SELECT '{poke_marker}'").as_bytes()),
                );
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

async fn post_worker(ctx: Arc<Ctx>, w: usize, workers: usize, total: u64) {
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
        let mut bye = Vec::new();
        put(&mut bye, b'X', &[]);
        let _ = s
            .conn
            .send(&bye, Instant::now() + Duration::from_secs(1))
            .await;
    }
}

/// Sends pre-auth input `j` on a new connection and judges the gateway.
async fn run_pre(ctx: &Ctx, j: u64) {
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
                    let mut bye = Vec::new();
                    put(&mut bye, b'X', &[]);
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

async fn pre_worker(ctx: Arc<Ctx>, next: Arc<AtomicU64>, total: u64) {
    loop {
        let j = next.fetch_add(1, Relaxed);
        if j >= total || ctx.stopped() {
            return;
        }
        run_pre(&ctx, j).await;
        ctx.count_input(false);
    }
}

// -------------------------------------------------------------- checks

async fn connect_client(url: &str) -> Result<tokio_postgres::Client> {
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
async fn check(ctx: &Ctx, bystander: &mut Option<tokio_postgres::Client>, when: &str) {
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
async fn pool_figures(ctx: &Ctx, admin: &mut Option<tokio_postgres::Client>) -> String {
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

fn rate(ctx: &Ctx) -> f64 {
    get(&ctx.stats.inputs) as f64 / ctx.started.elapsed().as_secs_f64().max(1e-9)
}

async fn monitor(
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

// ---------------------------------------------------------------- main

fn percent_decode(s: &str) -> String {
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

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// (user, password, database) of a postgresql:// URL.
fn parse_url(url: &str) -> Result<(String, String, String)> {
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

/// What `--only` and `--send` replay.
enum Replay {
    Pre(u64),
    Post(String, Vec<u8>, Plan),
    /// Bytes sent as they are (no completion, no probe); then what comes
    /// within the seconds given is read, and the client leaves.
    Leave(String, Vec<u8>, Duration),
}

fn unhex(text: &str) -> Result<Vec<u8>> {
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
fn replay_items(ctx: &Ctx, only: &[String], send: &[String]) -> Result<Vec<Replay>> {
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
async fn replay(ctx: Arc<Ctx>, items: Vec<Replay>, dump: bool) -> Result<()> {
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
        rate(&ctx),
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
    if crashes + hangs > 0 {
        std::process::exit(1);
    }
    Ok(())
}
