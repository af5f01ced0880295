//! The relay's core: one client's protocol state and the loop that moves
//! bytes between the client and a leased server connection — header-only
//! framing, long DataRow/CopyData relayed in pieces, non-blocking reads and
//! writes on both sides so neither direction ever waits on the other.
//! Generic over both streams (any `AsyncRead + AsyncWrite`), so it runs
//! unchanged over TCP, TLS or an in-memory pipe in tests.

use super::io::{flush, poll_read_into, poll_write_all, read_some, Io};
use super::queue::Expect;
use super::sql::Dialect;
use super::state::Change;
use super::statements::Statement;
use super::{
    End, Shared, HIGH_WATER, MESSAGE_MAX, READ_CHUNK, SMALL_MESSAGE_MAX, STREAM_THRESHOLD,
};
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::params::Params;
use crate::pool::registry::{ClientInfo, Registered};
use crate::pool::server_conn::{Extra, ServerConn};
use crate::wire::messages::{header, HEADER};
use bytes::{Buf, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};

/// One client's side of the relay: its stream and everything the pooler
/// tracks for it across server connections.
pub(crate) struct Relay<S, D> {
    pub(super) stream: S,
    pub(super) db: Arc<D>,
    pub(super) mode: PoolMode,
    /// Unprocessed bytes from the client (small between transactions).
    pub(super) rbuf: BytesMut,
    /// The pid of the client's BackendKeyData (shown in the notifications
    /// it causes).
    pub(super) pid: u32,
    /// Named statements: client name → server statement (transaction mode).
    pub(super) statements: HashMap<Box<[u8]>, Arc<Statement>>,
    /// Reported parameters as the client sees them.
    pub(super) params: Params,
    /// How to read the client's SQL (its encoding and string rules).
    pub(super) dialect: Dialect,
    /// Unreported parameters the client set.
    pub(super) extra: Extra,
    pub(super) pending: Vec<Change>,
    pub(super) txn_failed: bool,
    pub(super) pinned: Option<&'static str>,
    pub(super) queue: VecDeque<Expect>,
    /// After an error in an extended-protocol batch, the server ignores
    /// everything up to Sync; so do we.
    pub(super) skipping: bool,
    /// An extended-protocol batch (Parse/Bind/Describe/Close/Execute/Flush)
    /// went to the server and its Sync has not: the server is inside the
    /// batch's implicit transaction even when every answer has arrived.
    pub(super) in_batch: bool,
    /// In COPY FROM STDIN: the server ignores Sync and Flush until the
    /// client's CopyDone or CopyFail.
    pub(super) copy_in: bool,
    /// CopyData went to the server before its CopyInResponse was seen.
    pub(super) data_before_copy_seen: bool,
    /// The server may answer a Sync the pooler could not place: one sent
    /// inside COPY data is ignored if the COPY is still running when the
    /// server reads it, and answered if the data failed first. The client
    /// keeps this connection, and it is closed, never reused, after it.
    pub(super) uncertain: bool,
    /// Bytes of a long client message still to relay.
    pub(super) client_stream_left: usize,
    /// Bytes of a long server message still to relay.
    pub(super) server_stream_left: usize,
    pub(super) closing: bool,
    pub(super) info: Registered<ClientInfo>,
}

/// What a quiet client keeps between transactions, without its stream:
/// the parts of [`Relay`] that outlive a transaction.
pub(crate) struct Dormant<D> {
    db: Arc<D>,
    mode: PoolMode,
    pid: u32,
    params: Params,
    dialect: Dialect,
    info: Registered<ClientInfo>,
    /// Statements and unreported settings, boxed and only if the client
    /// has any (most idle clients have neither).
    kept: Option<Box<Kept>>,
}

/// The rarer part of [`Dormant`].
struct Kept {
    statements: HashMap<Box<[u8]>, Arc<Statement>>,
    extra: Extra,
}

impl<D> Dormant<D> {
    /// The client's SHOW CLIENTS entry.
    pub(super) fn info(&self) -> &Registered<ClientInfo> {
        &self.info
    }
}

impl<S, D: Shared> Relay<S, D> {
    /// A client with nothing prepared or pending yet.
    pub(super) fn new(
        stream: S,
        db: Arc<D>,
        mode: PoolMode,
        pid: u32,
        params: Params,
        extra: Extra,
        info: Registered<ClientInfo>,
    ) -> Self {
        let dialect = Dialect::of_params(&params);
        Relay {
            stream,
            db,
            mode,
            rbuf: BytesMut::new(),
            pid,
            statements: HashMap::new(),
            params,
            dialect,
            extra,
            pending: Vec::new(),
            txn_failed: false,
            pinned: None,
            queue: VecDeque::new(),
            skipping: false,
            in_batch: false,
            copy_in: false,
            data_before_copy_seen: false,
            uncertain: false,
            client_stream_left: 0,
            server_stream_left: 0,
            closing: false,
            info,
        }
    }

    /// Whether nothing of a transaction is left: no bytes from the client,
    /// no answer expected, no change pending, not pinned. Only such a
    /// client may leave its stream's task ([`Relay::into_dormant`]).
    pub(super) fn is_quiet(&self) -> bool {
        self.rbuf.is_empty()
            && self.queue.is_empty()
            && self.pending.is_empty()
            && self.pinned.is_none()
            && !self.txn_failed
            && !self.skipping
            && !self.in_batch
            && !self.copy_in
            && !self.uncertain
            && !self.closing
            && self.client_stream_left == 0
            && self.server_stream_left == 0
    }

    /// Splits a quiet client into its stream and what it keeps between
    /// transactions (nothing else has a value worth keeping then).
    pub(super) fn into_dormant(self) -> (S, Dormant<D>) {
        debug_assert!(self.is_quiet());
        let Relay {
            stream,
            db,
            mode,
            pid,
            statements,
            params,
            dialect,
            extra,
            info,
            ..
        } = self;
        let kept = (!statements.is_empty() || !extra.is_empty())
            .then(|| Box::new(Kept { statements, extra }));
        let dormant = Dormant {
            db,
            mode,
            pid,
            params,
            dialect,
            info,
            kept,
        };
        (stream, dormant)
    }

    /// A client back from [`Relay::into_dormant`], over `stream`.
    pub(super) fn from_dormant(stream: S, dormant: Dormant<D>) -> Self {
        let Dormant {
            db,
            mode,
            pid,
            params,
            dialect,
            info,
            kept,
        } = dormant;
        let (statements, extra) = match kept {
            Some(kept) => (kept.statements, kept.extra),
            None => Default::default(),
        };
        let mut relay = Relay::new(stream, db, mode, pid, params, extra, info);
        relay.statements = statements;
        relay.dialect = dialect;
        relay
    }

    /// Whether the server connection is between transactions with nothing
    /// outstanding: no answer pending, idle, not skipping to a Sync after
    /// an error, no extended batch waiting for its Sync, not in COPY, no
    /// message half relayed. Only then may it
    /// serve another client.
    pub(super) fn at_rest<T>(&self, server: &ServerConn<T>) -> bool {
        self.queue.is_empty()
            && server.outbox.is_empty()
            && server.inbox.is_empty()
            && server.status == b'I'
            && !self.skipping
            && !self.in_batch
            && !self.copy_in
            && !self.uncertain
            && self.client_stream_left == 0
            && self.server_stream_left == 0
    }

    /// Relays the client's complete messages into the server's outbox.
    pub(super) fn relay_client_bytes<T>(
        &mut self,
        server: &mut ServerConn<T>,
    ) -> Result<(), ClientError> {
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

    /// Relays the server's complete messages to the client, following the
    /// queue. `Some` ends the attachment.
    pub(super) fn relay_server_bytes<T>(&mut self, server: &mut ServerConn<T>) -> Option<End> {
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
                tracing::warn!(database = %self.db.name(), "server sent a malformed message");
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
}

impl<S: AsyncRead + AsyncWrite + Unpin, D: Shared> Relay<S, D> {
    /// Gives back the buffers a transaction grew, so a client waiting
    /// between transactions holds none (measured with heaptrack: 40 bytes
    /// of read buffer and 160 of response queue per idle client).
    fn shed_buffers(&mut self) {
        if self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
    }

    /// Waits (holding no buffer) until a whole message is there. `false`:
    /// the client left.
    pub(super) async fn wait_for_message(&mut self) -> bool {
        loop {
            if let Some((_, len)) = header(&self.rbuf) {
                if self.rbuf.len() >= len || !(HEADER..=MESSAGE_MAX + 1).contains(&len) {
                    return true; // bad lengths are reported by the relay
                }
            }
            if self.rbuf.is_empty() {
                self.shed_buffers();
            }
            match read_some(&mut self.stream, &mut self.rbuf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    self.db
                        .counters()
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Relays one transaction (or, pinned / in session mode, the rest of
    /// the session) over `server`, until it can go back to the pool or
    /// either side is gone.
    pub(super) async fn relay<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        server: &mut ServerConn<T>,
    ) -> End {
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
                    self.db
                        .counters()
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if let Err(e) = self.relay_client_bytes(server) {
                        return End::ClientGone(Some(e));
                    }
                }
                Io::FromServer(n) => {
                    self.db
                        .counters()
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
}
