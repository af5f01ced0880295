//! A logged-in server connection as the pool holds it: the socket, its
//! buffers (kept with the connection, so idle clients hold none), the
//! compute's BackendKeyData for cancels, and what the pooler knows of its
//! session state — reported parameters, parameters it set, statements
//! prepared on it, and the last transaction status.

use super::params::Params;
use super::registry::{AtomicState, ConnState, Registered, Registry};
use crate::pool::compute_login::ComputeLink;
use crate::wire::messages;
use crate::wire::server_stream::ServerStream;
use bytes::BytesMut;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

/// Unreported parameters a client set or a server connection has: name →
/// the value's SQL text, in the client encoding.
pub type Extra = HashMap<String, Box<[u8]>>;

/// A server connection (SHOW SERVERS).
pub struct ServerInfo {
    /// Registry id.
    pub id: u64,
    /// The compute's address.
    pub addr: SocketAddr,
    /// The Postgres backend pid.
    pub pid: u32,
    /// When it was opened.
    pub opened_at: SystemTime,
    /// In the pool or in use.
    pub state: AtomicState,
    /// The client using it (0: none).
    pub client: AtomicU64,
    /// The compute's generation when it was opened.
    pub generation: u64,
}

/// A logged-in server connection. Generic over its socket so the relay
/// can be driven over an in-memory stream in tests; the pool's is always a
/// [`ServerStream`].
pub struct ServerConn<S = ServerStream> {
    /// The socket.
    pub stream: S,
    /// The compute's BackendKeyData.
    pub key: (u32, u32),
    /// Bytes read from the server, not yet relayed.
    pub inbox: BytesMut,
    /// Bytes for the server, not yet written.
    pub outbox: BytesMut,
    /// Bytes for the client using the connection, not yet written.
    pub to_client: BytesMut,
    /// Parameters the server reported (ParameterStatus), current values.
    pub params: Params,
    /// Unreported parameters set on this connection.
    pub extra: Extra,
    /// Server-side names of statements prepared on this connection.
    pub prepared: HashSet<Arc<str>>,
    /// Transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    pub status: u8,
    /// SHOW SERVERS entry.
    pub info: Registered<ServerInfo>,
    /// The chaos fault epoch it was opened in (`pool::faults`): a
    /// connection from before a fault started is not reused.
    pub fault_epoch: u64,
}

impl ServerConn {
    /// Wraps a fresh compute login.
    pub fn new(link: ComputeLink, generation: u64, registry: &Arc<Registry<ServerInfo>>) -> Self {
        let mut params = Params::default();
        let mut at = 0;
        while let Some((tag, len)) = messages::header(&link.greeting[at..]) {
            let Some(msg) = link.greeting.get(at..at + len) else {
                break;
            };
            if tag == b'S' {
                if let Some((name, value)) = messages::parameter_status_fields(msg) {
                    params.set(name, value);
                }
            }
            at += len;
        }
        let info = registry.register(|id| ServerInfo {
            id,
            addr: link.addr,
            pid: link.key.0,
            opened_at: SystemTime::now(),
            state: AtomicState::default(),
            client: AtomicU64::new(0),
            generation,
        });
        info.entry.state.set(ConnState::Active);
        ServerConn {
            stream: link.stream,
            key: link.key,
            inbox: BytesMut::with_capacity(16 * 1024),
            outbox: BytesMut::with_capacity(8 * 1024),
            to_client: BytesMut::with_capacity(16 * 1024),
            params,
            extra: HashMap::new(),
            prepared: HashSet::new(),
            status: b'I',
            info,
            fault_epoch: super::faults::epoch(),
        }
    }

    /// Whether an idle connection can serve a client: the server has not
    /// closed it or sent anything unasked (a FATAL after
    /// `pg_terminate_backend`, a shutdown). One non-blocking peek.
    pub fn usable(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        if !self.inbox.is_empty() || !self.outbox.is_empty() {
            return false;
        }
        // Nothing arrived since the last read (tokio saw no event): no
        // syscall needed. Otherwise look.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if self.stream.tcp().poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut byte = [0u8; 1];
        let fd = self.stream.tcp().as_fd().as_raw_fd();
        match recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Err(nix::errno::Errno::EAGAIN) => self.inbox.is_empty() && self.outbox.is_empty(),
            _ => false,
        }
    }

    /// `DISCARD ALL`: resets a connection a session-mode (or pinned)
    /// client used, so the next client starts clean.
    pub async fn discard_all(&mut self) -> std::io::Result<()> {
        let failed = self.run(b"DISCARD ALL").await?;
        self.extra.clear();
        self.prepared.clear();
        match failed {
            None if self.status == b'I' => Ok(()),
            None => Err(std::io::Error::other("not idle after DISCARD ALL")),
            Some(e) => Err(std::io::Error::other(error_message(&e))),
        }
    }

    /// Runs one simple Query of the pooler's own to its ReadyForQuery,
    /// noting the parameters the server reports. `Some`: the server's
    /// first ErrorResponse.
    pub async fn run(&mut self, sql: &[u8]) -> std::io::Result<Option<BytesMut>> {
        self.run_reading(sql, &mut None).await
    }

    /// Runs one simple Query of the pooler's own and returns the first
    /// column of its first row as text (`Ok(None)`: no row or NULL); an
    /// ErrorResponse is an error carrying its message.
    pub async fn query_value(&mut self, sql: &[u8]) -> std::io::Result<Option<String>> {
        let mut row = None;
        if let Some(e) = self.run_reading(sql, &mut row).await? {
            return Err(std::io::Error::other(error_message(&e)));
        }
        Ok(row.and_then(|r| first_column(&r)))
    }

    /// [`Self::run`], keeping the first DataRow in `first_row`.
    async fn run_reading(
        &mut self,
        sql: &[u8],
        first_row: &mut Option<BytesMut>,
    ) -> std::io::Result<Option<BytesMut>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        messages::query(&mut self.outbox, sql);
        self.stream.write_all(&self.outbox).await?;
        self.stream.flush().await?;
        self.outbox.clear();
        let mut failed = None;
        loop {
            while let Some((tag, len)) = messages::header(&self.inbox) {
                if len < messages::HEADER || self.inbox.len() < len {
                    break;
                }
                let msg = self.inbox.split_to(len);
                match tag {
                    b'S' => {
                        if let Some((name, value)) = messages::parameter_status_fields(&msg) {
                            self.params.set(name, value);
                        }
                    }
                    b'E' => {
                        failed.get_or_insert(msg);
                    }
                    b'D' if first_row.is_none() => *first_row = Some(msg),
                    b'Z' => {
                        self.status = msg.get(messages::HEADER).copied().unwrap_or(b'I');
                        return Ok(failed);
                    }
                    _ => {}
                }
            }
            self.inbox.reserve(4096);
            if self.stream.read_buf(&mut self.inbox).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The compute's address and key, for cancels.
    pub fn cancel_target(&self) -> (SocketAddr, u32, u32) {
        (self.info.entry.addr, self.key.0, self.key.1)
    }
}

/// The first column of a raw DataRow, as text (`None`: NULL or malformed).
fn first_column(row: &[u8]) -> Option<String> {
    let body = row.get(messages::HEADER..)?;
    let columns = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if columns < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?; // -1: NULL
    let value = body.get(6..6 + len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

/// The message of a raw ErrorResponse, for logs and client errors.
pub fn error_message(raw: &[u8]) -> String {
    messages::error_field(raw, b'M')
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "no message".into())
}
