//! One client's life in the pooler. Between transactions the client holds
//! no server connection and no buffers worth the name; when a message
//! arrives it leases one from its database's pool, brings the connection's
//! session state in line with the client's (parameters it set, statements
//! it prepared), relays until the transaction ends (`ReadyForQuery` idle,
//! nothing outstanding), and gives the connection back. In session mode —
//! or once a client uses a session-only feature — it keeps the connection
//! until it disconnects, then `DISCARD ALL` resets it for the next client.
//!
//! The relay parses message headers only, and looks inside just the few
//! messages it must (Parse/Bind/Describe/Close of named statements,
//! ParameterStatus, ReadyForQuery, errors). It keeps a queue of the
//! responses each forwarded request will produce, so it can swallow the
//! answers to messages it injected and place the answers it makes itself
//! (ParseComplete for a statement already prepared on the connection,
//! CloseComplete) exactly where the client expects them, including after an
//! error, when the server skips everything up to the next Sync.

pub mod sql;

use crate::cancel::CancelKey;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::params::Params;
use crate::pool::registry::{ClientInfo, ConnState, Registered};
use crate::pool::server_conn::ServerConn;
use crate::pool::DbPool;
use crate::wire::client_stream::ClientStream;
use crate::wire::messages::{self, header, send, send_fatal, HEADER};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use ogel_policies::pool::{ClientSeat, Lease, PoolCounters};
use ogel_policies::ActiveClient;
use sha2::{Digest, Sha256};
use sql::SessionEffect;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Stop reading one side while this much waits to be written to the other.
const HIGH_WATER: usize = 256 * 1024;
/// One read from a socket.
const READ_CHUNK: usize = 16 * 1024;
/// A DataRow or CopyData longer than this is relayed in pieces.
const STREAM_THRESHOLD: usize = 64 * 1024;
/// Postgres's own limit on a message (`PQ_LARGE_MESSAGE_LIMIT`).
const MESSAGE_MAX: usize = (1 << 30) - 1;
/// Postgres's limit on the body of Close, Describe, Execute and CopyFail
/// (`PQ_SMALL_MESSAGE_LIMIT`).
const SMALL_MESSAGE_MAX: usize = 10_000;
/// Longest `DISCARD ALL` may take before the connection is closed instead.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Reported parameters the pooler keeps in line with each client's.
const SYNCED: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// A statement the client prepared, as the server knows it.
struct Statement {
    server_name: Arc<str>,
    /// The client's Parse, renamed, to replay on other connections.
    parse: Bytes,
}

/// What the server will answer to a forwarded (or injected) request.
enum Expect {
    /// ParseComplete; the server-side name, if the pooler named it.
    Parse(Option<Arc<str>>),
    Bind,
    Close,
    Describe,
    Execute,
    /// ReadyForQuery.
    Sync,
    /// A simple Query or FunctionCall: everything up to ReadyForQuery.
    Query,
    /// The ParseComplete of a Parse the pooler injected: swallowed.
    SkipParse(Arc<str>),
    /// The whole answer to a Query the pooler injected: swallowed.
    SkipQuery,
    /// Bytes the pooler answers itself, sent when their turn comes.
    Synth(Bytes),
    /// The client ended a COPY FROM STDIN (CopyDone/CopyFail) before the
    /// server's CopyInResponse was seen; no answer of its own.
    CopyEnd,
}

/// A session-state change seen in the client's SQL, applied when its
/// transaction commits.
enum Change {
    Set(String, String),
    Reset(String),
    ResetAll,
}

/// How an attachment to a server connection ended.
enum End {
    /// Transaction over: the connection goes back to the pool.
    Released,
    /// The client left (or broke the protocol: the error is sent).
    ClientGone(Option<ClientError>),
    /// The server connection broke; `notified` if the client already got
    /// the server's own FATAL error.
    ServerLost { notified: bool },
}

/// One connected client.
pub struct Session {
    stream: ClientStream,
    db: Arc<DbPool>,
    mode: PoolMode,
    /// Unprocessed bytes from the client (small between transactions).
    rbuf: BytesMut,
    /// Named statements: client name → server statement (transaction mode).
    statements: HashMap<String, Arc<Statement>>,
    /// Reported parameters as the client sees them.
    params: Params,
    /// Unreported parameters the client set: name → SQL value.
    extra: HashMap<String, String>,
    pending: Vec<Change>,
    txn_failed: bool,
    pinned: Option<&'static str>,
    queue: VecDeque<Expect>,
    /// After an error in an extended-protocol batch, the server ignores
    /// everything up to Sync; so do we.
    skipping: bool,
    /// In COPY FROM STDIN: the server ignores Sync and Flush until the
    /// client's CopyDone or CopyFail.
    copy_in: bool,
    /// CopyData went to the server before its CopyInResponse was seen.
    data_before_copy_seen: bool,
    /// The server may answer a Sync the pooler could not place: one sent
    /// inside COPY data is ignored if the COPY is still running when the
    /// server reads it, and answered if the data failed first. The client
    /// keeps this connection, and it is closed, never reused, after it.
    uncertain: bool,
    /// Bytes of a long client message still to relay.
    client_stream_left: usize,
    /// Bytes of a long server message still to relay.
    server_stream_left: usize,
    closing: bool,
    cancel: CancelKey,
    info: Registered<ClientInfo>,
    _seat: ClientSeat<ServerConn>,
    _active: ActiveClient,
}

/// What `frontend` hands over after authentication.
pub struct Login {
    /// The client's socket.
    pub stream: ClientStream,
    /// Gateway role.
    pub user: String,
    /// Startup parameters.
    pub params: Vec<(String, String)>,
    /// Pool mode for this client.
    pub mode: PoolMode,
    /// The client's cancel key.
    pub cancel: CancelKey,
    /// Keeps the compute awake while the client is connected.
    pub active: ActiveClient,
}

fn counters(db: &DbPool) -> &PoolCounters {
    &db.pool.counters
}

/// Finishes the login (parameters, BackendKeyData, ReadyForQuery) and
/// serves the client until it leaves.
pub async fn run(
    db: Arc<DbPool>,
    login: Login,
    registry: &Arc<crate::pool::registry::Registry<ClientInfo>>,
) {
    // Boxed: the login's state is freed before the long-lived part.
    if let Some(mut session) = Box::pin(greet(db, login, registry)).await {
        session.serve().await;
    }
}

/// Tells the client its parameters and key; `None` if it is gone or refused.
async fn greet(
    db: Arc<DbPool>,
    login: Login,
    registry: &Arc<crate::pool::registry::Registry<ClientInfo>>,
) -> Option<Session> {
    let Login {
        mut stream,
        user,
        params: startup,
        mode,
        cancel,
        active,
    } = login;
    let seat = match db.pool.enter() {
        Ok(seat) => seat,
        Err(e) => {
            let e = ClientError::new("53300", format!("database \"{}\": {e}", db.name))
                .hint("raise pool.max_clients, or close idle connections");
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    let (params, extra) = match client_settings(&db, &startup).await {
        Ok(settings) => settings,
        Err(e) => {
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    let addr = stream.peer_addr();
    let info = registry.register(|id| ClientInfo {
        id,
        user,
        database: db.name.clone(),
        addr,
        connected_at: std::time::SystemTime::now(),
        mode: mode.as_str(),
        state: Default::default(),
        server: Default::default(),
        application_name: std::sync::Mutex::new(
            params
                .get("application_name")
                .unwrap_or_default()
                .to_string(),
        ),
        pinned: std::sync::Mutex::new(""),
    });
    let mut out = BytesMut::with_capacity(512);
    crate::wire::messages::auth_ok(&mut out);
    for (name, value) in params.iter() {
        messages::parameter_status(&mut out, name, value);
    }
    crate::wire::messages::backend_key_data(&mut out, cancel.pid, cancel.secret);
    messages::ready_for_query(&mut out, b'I');
    if send(&mut stream, &out).await.is_err() {
        return None;
    }
    Some(Session {
        stream,
        db,
        mode,
        rbuf: BytesMut::new(),
        statements: HashMap::new(),
        params,
        extra,
        pending: Vec::new(),
        txn_failed: false,
        pinned: None,
        queue: VecDeque::new(),
        skipping: false,
        copy_in: false,
        data_before_copy_seen: false,
        uncertain: false,
        client_stream_left: 0,
        server_stream_left: 0,
        closing: false,
        cancel,
        info,
        _seat: seat,
        _active: active,
    })
}

/// The parameters a new client is told and the unreported ones it asked
/// for: the pool's server parameters (opening a first connection if there
/// is none yet, which wakes the compute), overlaid with the client's.
async fn client_settings(
    db: &DbPool,
    startup: &[(String, String)],
) -> Result<(Params, HashMap<String, String>), ClientError> {
    let server_params = match db.server_params() {
        Some(p) => p,
        None => {
            db.lease().await?.release();
            db.server_params().unwrap_or_default()
        }
    };
    let mut params = server_params;
    let mut extra = HashMap::new();
    for (key, value) in startup {
        match key.as_str() {
            "user" | "database" | "replication" => {}
            k if k.starts_with("_pq_.") => {}
            "options" => {
                for (name, value) in parse_options(value)? {
                    if let Some(canonical) = SYNCED.iter().find(|s| s.eq_ignore_ascii_case(&name)) {
                        params.set(canonical, &value);
                    } else {
                        extra.insert(name, quote_literal(&value));
                    }
                }
            }
            k => {
                if let Some(canonical) = SYNCED.iter().find(|s| s.eq_ignore_ascii_case(k)) {
                    params.set(canonical, value);
                } else if sql::is_reported(k) {
                    // Read-only reports (server_version, is_superuser, …).
                } else if k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                {
                    extra.insert(k.to_ascii_lowercase(), quote_literal(value));
                } else {
                    return Err(ClientError::new(
                        "42704",
                        format!("unrecognized configuration parameter \"{k}\""),
                    ));
                }
            }
        }
    }
    Ok((params, extra))
}

/// `-c name=value` / `--name=value` pairs of the `options` startup
/// parameter (backslash escapes a space).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ClientError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut pairs = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()
        } else {
            w.strip_prefix("--")
                .or_else(|| w.strip_prefix("-c"))
                .map(str::to_string)
        };
        let parsed = setting
            .as_deref()
            .and_then(|s| s.split_once('='))
            .filter(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            });
        match parsed {
            Some((k, v)) => pairs.push((k.replace('-', "_").to_ascii_lowercase(), v.to_string())),
            None => {
                return Err(ClientError::new(
                    "0A000",
                    format!("unsupported startup option \"{w}\" in \"options\""),
                )
                .hint("only -c name=value settings are supported through the gateway"))
            }
        }
    }
    Ok(pairs)
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The server-side name of a statement: the same text and parameter types
/// get the same name on every connection, so any client's preparation
/// serves every other client with the same statement.
fn server_statement_name(query: &str, types: &[u8]) -> Arc<str> {
    let mut hash = Sha256::new();
    hash.update(query.as_bytes());
    hash.update([0]);
    hash.update(types);
    let digest = hash.finalize();
    let mut name = String::with_capacity(38);
    name.push_str("ogel_");
    for b in &digest[..16] {
        let _ = write!(name, "{b:02x}");
    }
    name.into()
}

/// Writes as much of `buf` as the socket takes now, without waiting.
fn flush<S: AsyncWrite + Unpin>(stream: &mut S, buf: &mut BytesMut) -> io::Result<()> {
    let mut cx = Context::from_waker(Waker::noop());
    match poll_write_all(stream, &mut cx, buf) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// What one turn of the relay's I/O did.
enum Io {
    FromClient(usize),
    FromServer(usize),
    Wrote,
    ClientFailed,
    ServerFailed,
}

/// Reads what `stream` has into `buf`'s spare room (at least `room`):
/// `Ok(0)` at end of stream. Through `poll_read`, so a short read clears
/// tokio's readiness and the next wait costs no extra `recv`.
fn poll_read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<io::Result<usize>> {
    buf.reserve(room);
    let mut read = ReadBuf::uninit(buf.spare_capacity_mut());
    match Pin::new(stream).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            let n = read.filled().len();
            // SAFETY: `poll_read` initialised the first `n` spare bytes.
            unsafe { buf.advance_mut(n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Writes as much of `buf` as `stream` takes: `Ready(Ok(n))` with the bytes
/// written once `buf` is empty or the socket is full after some progress.
fn poll_write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut written = 0;
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                written += n;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if written == 0 => return Poll::Pending,
            Poll::Pending => break,
        }
    }
    // TLS keeps records until flushed (a no-op for TCP).
    if let Poll::Ready(Err(e)) = Pin::new(&mut *stream).poll_flush(cx) {
        return Poll::Ready(Err(e));
    }
    if buf.is_empty() {
        buf.clear();
    }
    Poll::Ready(Ok(written))
}

impl Session {
    async fn serve(&mut self) {
        loop {
            if !self.wait_for_message().await {
                return;
            }
            if self.rbuf.first() == Some(&b'X') {
                return; // Terminate between transactions
            }
            if let Some(answered) = self.answer_locally() {
                if send(&mut self.stream, &answered).await.is_err() {
                    return;
                }
                continue;
            }
            self.info.entry.state.set(ConnState::Waiting);
            let mut lease = match self.db.lease().await {
                Ok(lease) => lease,
                Err(e) => {
                    tracing::info!(database = %self.db.name, error = %e.message, "client got no server connection");
                    return Box::pin(send_fatal(&mut self.stream, &e)).await;
                }
            };
            let end = self.attach(&mut lease).await;
            match end {
                End::Released => {
                    let server = lease.conn();
                    let rest = server.to_client.split();
                    lease.release();
                    if send(&mut self.stream, &rest).await.is_err() {
                        return;
                    }
                    if self.rbuf.is_empty() && self.rbuf.capacity() > 4096 {
                        self.rbuf = BytesMut::new();
                    }
                }
                End::ClientGone(error) => {
                    Box::pin(self.finish(lease)).await;
                    if let Some(e) = error {
                        Box::pin(send_fatal(&mut self.stream, &e)).await;
                    }
                    return;
                }
                End::ServerLost { notified } => {
                    let server = lease.conn();
                    let rest = server.to_client.split();
                    drop(lease);
                    let _ = send(&mut self.stream, &rest).await;
                    if !notified {
                        let e = ClientError::new(
                            "08006",
                            format!(
                                "the connection to database \"{}\"'s compute was lost",
                                self.db.name
                            ),
                        )
                        .hint("reconnect; a transaction in progress was rolled back");
                        Box::pin(send_fatal(&mut self.stream, &e)).await;
                    }
                    return;
                }
            }
        }
    }

    /// Waits (holding no buffer) until a whole message is there. `false`:
    /// the client left.
    async fn wait_for_message(&mut self) -> bool {
        loop {
            if let Some((_, len)) = header(&self.rbuf) {
                if self.rbuf.len() >= len || !(HEADER..=MESSAGE_MAX + 1).contains(&len) {
                    return true; // bad lengths are reported by the relay
                }
            }
            // The chunk lives inside one poll only, so it is not part of
            // the task's state: an idle client keeps no buffer.
            let (stream, rbuf) = (&mut self.stream, &mut self.rbuf);
            let read = std::future::poll_fn(|cx| {
                let mut chunk = [0u8; 4096];
                let mut buf = ReadBuf::new(&mut chunk);
                match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => {
                        rbuf.extend_from_slice(buf.filled());
                        Poll::Ready(Ok(buf.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match read {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    counters(&self.db)
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Requests the pooler answers without a server connection (transaction
    /// mode, between transactions): `DEALLOCATE` of a statement only the
    /// pooler knows by that name, and batches up to a Sync made only of
    /// Parse of statements a server has accepted before, Close of
    /// statements, and Flush. (A driver that prepares with a blocking call
    /// while other connections of its own hold every server connection in
    /// open transactions — pgbench -M prepared does — would otherwise wait
    /// forever.) Such a statement is prepared on a server when first used.
    fn answer_locally(&mut self) -> Option<BytesMut> {
        if self.mode != PoolMode::Transaction {
            return None;
        }
        let (tag, len) = header(&self.rbuf)?;
        if tag == b'Q' && self.rbuf.len() >= len {
            let (sql, _) = messages::cstr(&self.rbuf[..len], HEADER)?;
            let SessionEffect::Deallocate(Some(name)) = sql::session_effect(sql) else {
                return None;
            };
            if !sql.trim_end().trim_end_matches(';').contains(';')
                && self.statements.remove(&name).is_some()
            {
                self.rbuf.advance(len);
                let mut out = BytesMut::new();
                messages::command_complete(&mut out, "DEALLOCATE");
                messages::ready_for_query(&mut out, b'I');
                return Some(out);
            }
            return None;
        }
        enum Op {
            Prepare(String, Arc<Statement>),
            Close(String),
        }
        let mut ops = Vec::new();
        let mut out = BytesMut::new();
        let mut at = 0;
        loop {
            let (tag, len) = header(&self.rbuf[at..])?;
            let msg = self.rbuf.get(at..at + len).filter(|_| len >= HEADER)?;
            match tag {
                b'P' => {
                    let (name, query, types) = messages::parse_fields(msg)?;
                    if name.is_empty() || sql::session_effect(query) != SessionEffect::None {
                        return None;
                    }
                    let server_name = server_statement_name(query, types);
                    if !self.db.is_known(&server_name) {
                        return None;
                    }
                    let mut parse = BytesMut::with_capacity(msg.len() + 40);
                    messages::parse_message(&mut parse, &server_name, query, types);
                    ops.push(Op::Prepare(
                        name.to_string(),
                        Arc::new(Statement {
                            server_name,
                            parse: parse.freeze(),
                        }),
                    ));
                    out.extend_from_slice(messages::PARSE_COMPLETE);
                }
                b'C' => match messages::target_fields(msg)? {
                    (b'S', name) if !name.is_empty() => {
                        ops.push(Op::Close(name.to_string()));
                        out.extend_from_slice(messages::CLOSE_COMPLETE);
                    }
                    _ => return None,
                },
                b'H' => {}
                b'S' => {
                    messages::ready_for_query(&mut out, b'I');
                    at += len;
                    break;
                }
                _ => return None,
            }
            at += len;
        }
        for op in ops {
            match op {
                Op::Prepare(name, statement) => {
                    self.statements.insert(name, statement);
                }
                Op::Close(name) => {
                    self.statements.remove(&name);
                }
            }
        }
        self.rbuf.advance(at);
        Some(out)
    }

    /// Relays one transaction (or, pinned / in session mode, the rest of
    /// the session) over `lease`.
    async fn attach(&mut self, lease: &mut Lease<ServerConn>) -> End {
        let server = lease.conn();
        self.cancel.slot.set(Some(server.cancel_target()));
        self.info.entry.state.set(ConnState::Active);
        self.info
            .entry
            .server
            .store(server.info.id, Ordering::Relaxed);
        server.info.entry.state.set(ConnState::Active);
        server
            .info
            .entry
            .client
            .store(self.info.id, Ordering::Relaxed);
        let end = self.relay(server).await;
        self.cancel.slot.set(None);
        self.info.entry.state.set(ConnState::Idle);
        self.info.entry.server.store(0, Ordering::Relaxed);
        server.info.entry.state.set(ConnState::Idle);
        server.info.entry.client.store(0, Ordering::Relaxed);
        end
    }

    async fn relay(&mut self, server: &mut ServerConn) -> End {
        self.sync_session(server);
        if let Err(e) = self.relay_client_bytes(server) {
            return End::ClientGone(Some(e));
        }
        loop {
            if flush(&mut server.stream, &mut server.outbox).is_err() {
                return End::ServerLost { notified: false };
            }
            if flush(&mut self.stream, &mut server.to_client).is_err() || self.closing {
                return End::ClientGone(None);
            }
            if self.at_rest(server) && self.mode == PoolMode::Transaction && self.pinned.is_none() {
                return End::Released;
            }
            let want_client = server.outbox.len() < HIGH_WATER && !self.closing;
            let want_server = server.to_client.len() < HIGH_WATER;
            let (stream, rbuf) = (&mut self.stream, &mut self.rbuf);
            let io = std::future::poll_fn(|cx| {
                let mut wrote = false;
                match poll_write_all(&mut server.stream, cx, &mut server.outbox) {
                    Poll::Ready(Err(_)) => return Poll::Ready(Io::ServerFailed),
                    Poll::Ready(Ok(n)) => wrote |= n > 0,
                    Poll::Pending => {}
                }
                match poll_write_all(stream, cx, &mut server.to_client) {
                    Poll::Ready(Err(_)) => return Poll::Ready(Io::ClientFailed),
                    Poll::Ready(Ok(n)) => wrote |= n > 0,
                    Poll::Pending => {}
                }
                if want_server {
                    match poll_read_into(&mut server.stream, cx, &mut server.inbox, READ_CHUNK) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            return Poll::Ready(Io::ServerFailed)
                        }
                        Poll::Ready(Ok(n)) => return Poll::Ready(Io::FromServer(n)),
                        Poll::Pending => {}
                    }
                }
                if want_client {
                    match poll_read_into(stream, cx, rbuf, READ_CHUNK) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            return Poll::Ready(Io::ClientFailed)
                        }
                        Poll::Ready(Ok(n)) => return Poll::Ready(Io::FromClient(n)),
                        Poll::Pending => {}
                    }
                }
                if wrote {
                    Poll::Ready(Io::Wrote)
                } else {
                    Poll::Pending
                }
            })
            .await;
            match io {
                Io::FromClient(n) => {
                    counters(&self.db)
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if let Err(e) = self.relay_client_bytes(server) {
                        return End::ClientGone(Some(e));
                    }
                }
                Io::FromServer(n) => {
                    counters(&self.db)
                        .bytes_out
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(end) = self.relay_server_bytes(server) {
                        return end;
                    }
                }
                Io::Wrote => {}
                Io::ClientFailed => self.closing = true,
                Io::ServerFailed => return End::ServerLost { notified: false },
            }
        }
    }

    /// Whether the server connection is between transactions with nothing
    /// outstanding: no answer pending, idle, not skipping to a Sync after
    /// an error, not in COPY, no message half relayed. Only then may it
    /// serve another client.
    fn at_rest(&self, server: &ServerConn) -> bool {
        self.queue.is_empty()
            && server.outbox.is_empty()
            && server.inbox.is_empty()
            && server.status == b'I'
            && !self.skipping
            && !self.copy_in
            && !self.uncertain
            && self.client_stream_left == 0
            && self.server_stream_left == 0
    }

    /// After the client left while attached: a clean connection goes back
    /// to the pool (reset first if it carried session state); anything
    /// mid-flight is closed.
    async fn finish(&mut self, mut lease: Lease<ServerConn>) {
        let clean = self.at_rest(lease.conn());
        if !clean {
            return; // dropping the lease closes the connection
        }
        // Whatever was meant for the departed client stays with it.
        lease.conn().to_client.clear();
        if self.mode == PoolMode::Session || self.pinned.is_some() {
            match tokio::time::timeout(RESET_TIMEOUT, lease.conn().discard_all()).await {
                Ok(Ok(())) => lease.release(),
                _ => drop(lease),
            }
        } else {
            lease.release();
        }
    }

    /// Brings the server connection's session state in line with the
    /// client's: one injected Query of SET/RESET, its answer swallowed.
    fn sync_session(&mut self, server: &mut ServerConn) {
        let mut sql = String::new();
        for name in SYNCED {
            if let Some(want) = self.params.get(name) {
                if server.params.get(name) != Some(want) {
                    let _ = write!(sql, "SET {name} TO {};", quote_literal(want));
                }
            }
        }
        for (name, value) in &self.extra {
            if server.extra.get(name) != Some(value) {
                let _ = write!(sql, "SET {name} TO {value};");
            }
        }
        for name in server.extra.keys() {
            if !self.extra.contains_key(name) {
                let _ = write!(sql, "RESET {name};");
            }
        }
        if !sql.is_empty() {
            messages::query(&mut server.outbox, &sql);
            self.queue.push_back(Expect::SkipQuery);
            server.extra = self.extra.clone();
        }
    }

    fn push(&mut self, expect: Expect) {
        self.queue.push_back(expect);
    }

    /// Queues an answer of the pooler's own, sent as soon as everything
    /// before it has been answered.
    fn push_synth(&mut self, server: &mut ServerConn, bytes: Bytes) {
        self.queue.push_back(Expect::Synth(bytes));
        self.drain_synth(server);
    }

    fn drain_synth(&mut self, server: &mut ServerConn) {
        while let Some(Expect::Synth(_) | Expect::CopyEnd) = self.queue.front() {
            if let Some(Expect::Synth(bytes)) = self.queue.pop_front() {
                server.to_client.extend_from_slice(&bytes);
            }
        }
    }

    /// The server started COPY FROM STDIN for the request at the head of
    /// the queue: the Syncs the client sent with it (before its CopyDone)
    /// are ignored by the server and will get no ReadyForQuery.
    fn copy_in_started(&mut self) {
        let end = self
            .queue
            .iter()
            .position(|e| matches!(e, Expect::CopyEnd))
            .unwrap_or(self.queue.len());
        let mut i = 1;
        let mut end = end;
        let mut removed = false;
        while i < end {
            if matches!(self.queue[i], Expect::Sync) {
                self.queue.remove(i);
                end -= 1;
                removed = true;
            } else {
                i += 1;
            }
        }
        // A Sync that may have followed CopyData: whether the server
        // ignores it depends on whether the data failed first.
        if removed && std::mem::take(&mut self.data_before_copy_seen) {
            self.mark_uncertain();
        }
        if end < self.queue.len() {
            self.queue.remove(end); // the CopyEnd: the copy is already over
        } else {
            self.copy_in = true;
        }
    }

    /// See [`Session::uncertain`].
    fn mark_uncertain(&mut self) {
        if !self.uncertain {
            tracing::debug!(database = %self.db.name, "a Sync inside COPY data: the server connection will be closed after this client");
            self.uncertain = true;
            self.pin("a Sync inside COPY data");
        }
    }

    fn pin(&mut self, feature: &'static str) {
        if self.mode == PoolMode::Transaction && self.pinned.is_none() {
            tracing::debug!(database = %self.db.name, feature, "client keeps its server connection (session-only feature)");
            self.pinned = Some(feature);
            *self
                .info
                .entry
                .pinned
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = feature;
            counters(&self.db)
                .pinned_clients
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes what `sql` does to session state.
    fn observe_sql(&mut self, sql: &str, server: &mut ServerConn) {
        match sql::session_effect(sql) {
            SessionEffect::Set { name, value } => {
                self.pending.push(Change::Set(name, value.to_string()))
            }
            SessionEffect::Reset(name) => self.pending.push(Change::Reset(name)),
            SessionEffect::ResetAll => self.pending.push(Change::ResetAll),
            SessionEffect::Deallocate(None) => {
                // Runs on the server too: every statement there is gone.
                self.statements.clear();
                server.prepared.clear();
            }
            SessionEffect::Deallocate(Some(name)) => {
                self.statements.remove(&name);
            }
            SessionEffect::SessionOnly(feature) => self.pin(feature),
            SessionEffect::None => {}
        }
    }

    /// Relays the client's complete messages into the server's outbox.
    fn relay_client_bytes(&mut self, server: &mut ServerConn) -> Result<(), ClientError> {
        loop {
            if self.client_stream_left > 0 {
                let n = self.client_stream_left.min(self.rbuf.len());
                if n == 0 {
                    return Ok(());
                }
                server.outbox.extend_from_slice(&self.rbuf[..n]);
                self.rbuf.advance(n);
                self.client_stream_left -= n;
                continue;
            }
            let Some((tag, len)) = header(&self.rbuf) else {
                return Ok(());
            };
            if !(HEADER - 1..=MESSAGE_MAX).contains(&(len - 1)) {
                return Err(ClientError::protocol(format!(
                    "invalid message length {}",
                    len - 1
                )));
            }
            // Postgres's limits by type: small messages (Close, Describe,
            // Execute, CopyFail) carry at most 10,000 bytes, so a header
            // claiming more is refused now, not after waiting for the body.
            if matches!(tag, b'C' | b'D' | b'E' | b'f') && len - HEADER > SMALL_MESSAGE_MAX {
                return Err(ClientError::protocol(format!(
                    "invalid length {} for message type '{}'",
                    len - 1,
                    tag as char
                )));
            }
            // Sync, Flush, CopyDone and Terminate have no body (Postgres
            // refuses one too); waiting for one would wait forever.
            if matches!(tag, b'S' | b'H' | b'c' | b'X') && len != HEADER {
                return Err(ClientError::protocol(format!(
                    "invalid length {} for message type '{}'",
                    len - 1,
                    tag as char
                )));
            }
            if self.rbuf.len() < len {
                if tag == b'd' && len > STREAM_THRESHOLD && !self.skipping {
                    let n = self.rbuf.len();
                    server.outbox.extend_from_slice(&self.rbuf);
                    self.rbuf.advance(n);
                    self.client_stream_left = len - n;
                    continue;
                }
                return Ok(());
            }
            let msg = self.rbuf.split_to(len);
            self.client_message(tag, &msg, server)?;
            if self.closing {
                return Ok(());
            }
        }
    }

    fn client_message(
        &mut self,
        tag: u8,
        msg: &[u8],
        server: &mut ServerConn,
    ) -> Result<(), ClientError> {
        let rewrite = self.mode == PoolMode::Transaction;
        let malformed = || ClientError::protocol(format!("malformed \"{}\" message", tag as char));
        if self.skipping && tag != b'S' && tag != b'X' {
            return Ok(()); // the server would ignore it too
        }
        match tag {
            b'Q' => {
                let (sql, _) = messages::cstr(msg, HEADER).ok_or_else(malformed)?;
                self.observe_sql(sql, server);
                server.outbox.extend_from_slice(msg);
                self.push(Expect::Query);
            }
            b'P' => {
                let (name, query, types) = messages::parse_fields(msg).ok_or_else(malformed)?;
                self.observe_sql(query, server);
                if name.is_empty() || !rewrite {
                    server.outbox.extend_from_slice(msg);
                    self.push(Expect::Parse(None));
                } else {
                    let server_name = server_statement_name(query, types);
                    let mut parse = BytesMut::with_capacity(msg.len() + 40);
                    messages::parse_message(&mut parse, &server_name, query, types);
                    let statement = Arc::new(Statement {
                        server_name: server_name.clone(),
                        parse: parse.freeze(),
                    });
                    self.statements.insert(name.to_string(), statement.clone());
                    if server.prepared.contains(&server_name) {
                        self.push_synth(server, Bytes::from_static(messages::PARSE_COMPLETE));
                    } else {
                        server.outbox.extend_from_slice(&statement.parse);
                        server.prepared.insert(server_name.clone());
                        self.push(Expect::Parse(Some(server_name)));
                    }
                }
            }
            b'B' => {
                let (portal, name, rest_at) = messages::bind_fields(msg).ok_or_else(malformed)?;
                match self.statement(name, rewrite) {
                    Some(statement) => {
                        self.ensure_prepared(server, &statement);
                        messages::rename_bind(
                            &mut server.outbox,
                            msg,
                            portal,
                            &statement.server_name,
                            rest_at,
                        );
                    }
                    None => server.outbox.extend_from_slice(msg),
                }
                self.push(Expect::Bind);
            }
            b'D' => {
                let (kind, name) = messages::target_fields(msg).ok_or_else(malformed)?;
                match self.statement(name, rewrite && kind == b'S') {
                    Some(statement) => {
                        self.ensure_prepared(server, &statement);
                        messages::describe_statement(&mut server.outbox, &statement.server_name);
                    }
                    None => server.outbox.extend_from_slice(msg),
                }
                self.push(Expect::Describe);
            }
            b'C' => {
                let (kind, name) = messages::target_fields(msg).ok_or_else(malformed)?;
                if rewrite && kind == b'S' && !name.is_empty() {
                    // Other clients may share the server-side statement:
                    // only the client's name goes.
                    self.statements.remove(name);
                    self.push_synth(server, Bytes::from_static(messages::CLOSE_COMPLETE));
                } else {
                    server.outbox.extend_from_slice(msg);
                    self.push(Expect::Close);
                }
            }
            b'E' => {
                server.outbox.extend_from_slice(msg);
                self.push(Expect::Execute);
            }
            b'S' => {
                self.skipping = false;
                server.outbox.extend_from_slice(msg);
                if self.copy_in {
                    self.mark_uncertain();
                } else {
                    self.push(Expect::Sync);
                }
            }
            b'c' | b'f' => {
                server.outbox.extend_from_slice(msg);
                if self.copy_in {
                    self.copy_in = false;
                } else {
                    // Marks where a COPY that has not started yet ends; with
                    // nothing pending before it, no COPY can start: dropped.
                    self.push(Expect::CopyEnd);
                    self.drain_synth(server);
                }
            }
            b'F' => {
                server.outbox.extend_from_slice(msg);
                self.push(Expect::Query);
            }
            b'X' => self.closing = true,
            // Flush and CopyData: no answer (outside COPY the server ignores
            // CopyData).
            b'H' | b'd' => {
                if tag == b'd' && !self.copy_in && !self.queue.is_empty() {
                    self.data_before_copy_seen = true;
                }
                server.outbox.extend_from_slice(msg)
            }
            // Anything else would make the server fail the connection,
            // possibly after it went back to the pool: refused here, as
            // Postgres refuses it.
            _ => {
                return Err(ClientError::protocol(format!(
                    "invalid frontend message type {tag}"
                )))
            }
        }
        Ok(())
    }

    fn statement(&self, name: &str, rewrite: bool) -> Option<Arc<Statement>> {
        if !rewrite || name.is_empty() {
            return None;
        }
        self.statements.get(name).cloned()
    }

    /// Prepares `statement` on this connection first if it is not there
    /// yet (the answer is swallowed).
    fn ensure_prepared(&mut self, server: &mut ServerConn, statement: &Statement) {
        if !server.prepared.contains(&statement.server_name) {
            server.outbox.extend_from_slice(&statement.parse);
            server.prepared.insert(statement.server_name.clone());
            self.push(Expect::SkipParse(statement.server_name.clone()));
        }
    }

    /// Relays the server's complete messages to the client, following the
    /// queue. `Some` ends the attachment.
    fn relay_server_bytes(&mut self, server: &mut ServerConn) -> Option<End> {
        loop {
            if self.server_stream_left > 0 {
                let n = self.server_stream_left.min(server.inbox.len());
                if n == 0 {
                    return None;
                }
                let chunk = server.inbox.split_to(n);
                server.to_client.extend_from_slice(&chunk);
                self.server_stream_left -= n;
                continue;
            }
            let (tag, len) = header(&server.inbox)?;
            if len < HEADER {
                tracing::warn!(database = %self.db.name, "server sent a malformed message");
                return Some(End::ServerLost { notified: false });
            }
            if server.inbox.len() < len {
                if matches!(tag, b'D' | b'd') && len > STREAM_THRESHOLD {
                    let chunk = server.inbox.split();
                    server.to_client.extend_from_slice(&chunk);
                    self.server_stream_left = len - chunk.len();
                    continue;
                }
                server.inbox.reserve(len - server.inbox.len());
                return None;
            }
            let msg = server.inbox.split_to(len);
            if let Some(end) = self.server_message(tag, &msg, server) {
                return Some(end);
            }
        }
    }

    fn server_message(&mut self, tag: u8, msg: &[u8], server: &mut ServerConn) -> Option<End> {
        match tag {
            b'S' => {
                if let Some((name, value)) = messages::parameter_status_fields(msg) {
                    server.params.set(name, value);
                    if self.params.get(name) != Some(value) {
                        self.params.set(name, value);
                        server.to_client.extend_from_slice(msg);
                        if name == "application_name" {
                            *self
                                .info
                                .entry
                                .application_name
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()) = value.to_string();
                        }
                    }
                }
                return None;
            }
            b'N' | b'A' => {
                if !matches!(self.queue.front(), Some(Expect::SkipQuery)) {
                    server.to_client.extend_from_slice(msg);
                }
                return None;
            }
            _ => {}
        }
        let fatal = tag == b'E' && messages::error_is_fatal(msg);
        let Some(front) = self.queue.front() else {
            // Unasked for: a FATAL before the server goes away, mostly.
            server.to_client.extend_from_slice(msg);
            return fatal.then_some(End::ServerLost { notified: true });
        };
        match (front, tag) {
            (Expect::SkipQuery, b'Z') => {
                server.status = msg.get(HEADER).copied().unwrap_or(b'I');
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::SkipQuery, b'E') => {
                tracing::warn!(
                    database = %self.db.name,
                    error = %crate::pool::server_conn::error_message(msg),
                    "restoring a client's settings on a server connection failed"
                );
            }
            (Expect::SkipQuery, _) => {}
            (Expect::SkipParse(name), b'1') => {
                self.db.mark_known(name);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Parse(name), b'1') => {
                if let Some(name) = name {
                    self.db.mark_known(name);
                }
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Bind, b'2') | (Expect::Close, b'3') => {
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Describe, b'T' | b'n') | (Expect::Execute, b'C' | b'I' | b's') => {
                if tag == b'C' && messages::command_tag(msg) == "ROLLBACK" {
                    self.txn_failed = true;
                }
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Sync | Expect::Query, b'Z') => {
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.ready(server, msg.get(HEADER).copied().unwrap_or(b'I'));
                self.drain_synth(server);
            }
            (Expect::Execute | Expect::Query, b'G') => {
                server.to_client.extend_from_slice(msg);
                self.copy_in_started();
            }
            (Expect::Query | Expect::Sync, b'E') => {
                self.copy_in = false;
                self.txn_failed = true;
                server.to_client.extend_from_slice(msg);
            }
            (Expect::Query, b'C') => {
                if messages::command_tag(msg) == "ROLLBACK" {
                    self.txn_failed = true;
                }
                server.to_client.extend_from_slice(msg);
            }
            (
                Expect::Parse(_)
                | Expect::Bind
                | Expect::Close
                | Expect::Describe
                | Expect::Execute
                | Expect::SkipParse(_),
                b'E',
            ) => {
                server.to_client.extend_from_slice(msg);
                self.error_until_sync(server);
            }
            _ => server.to_client.extend_from_slice(msg),
        }
        fatal.then_some(End::ServerLost { notified: true })
    }

    /// An error in an extended-protocol batch: the server skips every
    /// request up to the next Sync, so their answers will never come.
    fn error_until_sync(&mut self, server: &mut ServerConn) {
        self.txn_failed = true;
        self.copy_in = false;
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::Sync | Expect::Query | Expect::SkipQuery) {
                return;
            }
            match self.queue.pop_front() {
                // Never prepared after all.
                Some(Expect::Parse(Some(name))) | Some(Expect::SkipParse(name)) => {
                    server.prepared.remove(&name);
                }
                _ => {}
            }
        }
        self.skipping = true;
    }

    /// A ReadyForQuery reached the client.
    fn ready(&mut self, server: &mut ServerConn, status: u8) {
        server.status = status;
        let c = counters(&self.db);
        c.queries.fetch_add(1, Ordering::Relaxed);
        if status != b'I' {
            return;
        }
        c.transactions.fetch_add(1, Ordering::Relaxed);
        let changes = std::mem::take(&mut self.pending);
        if !self.txn_failed {
            for change in changes {
                match change {
                    Change::Set(name, value) => {
                        self.extra.insert(name.clone(), value.clone());
                        server.extra.insert(name, value);
                    }
                    Change::Reset(name) => {
                        self.extra.remove(&name);
                        server.extra.remove(&name);
                    }
                    Change::ResetAll => {
                        self.extra.clear();
                        server.extra.clear();
                    }
                }
            }
        }
        self.txn_failed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_as_settings() {
        assert_eq!(
            parse_options("-c search_path=app,public --statement-timeout=5s -cwork_mem=64MB")
                .unwrap(),
            vec![
                ("search_path".into(), "app,public".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "64MB".into()),
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=my\ app").unwrap(),
            vec![("application_name".into(), "my app".into())]
        );
        assert!(parse_options("-B 100").is_err());
        assert!(parse_options("-c =x").is_err());
    }

    #[test]
    fn statement_names_depend_on_text_and_types() {
        let a = server_statement_name("SELECT $1", &[0, 0]);
        assert_eq!(a, server_statement_name("SELECT $1", &[0, 0]));
        assert_ne!(a, server_statement_name("SELECT $1", &[0, 1, 0, 0, 0, 23]));
        assert_ne!(a, server_statement_name("SELECT $2", &[0, 0]));
        assert!(a.len() < 64, "within NAMEDATALEN");
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
