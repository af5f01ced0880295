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
//!
//! The files, one concept each:
//! - [`greet`]: login completion (parameters, BackendKeyData, ReadyForQuery);
//! - [`session`]: the per-client loop (lease, attach, relay, release);
//! - [`park`]: quiet clients parked without a task, woken by one epoll set;
//! - [`pump`]: the core that moves bytes between the client and a leased
//!   server connection, over any `AsyncRead + AsyncWrite` pair;
//! - [`queue`]: the response queue — what each forwarded or injected
//!   request will be answered with, error → skip to Sync, COPY;
//! - [`statements`]: prepared-statement renaming, injected Parse,
//!   Close/DEALLOCATE and the answers the pooler gives itself;
//! - [`state`]: session parameters, changes applied at commit, pinning;
//! - [`io`]: non-blocking read/write helpers;
//! - [`sql`]: the SQL keyword scanner.

mod greet;
mod io;
mod park;
mod pump;
mod queue;
mod session;
pub mod sql;
mod state;
mod statements;
#[cfg(test)]
mod tests;

use crate::cancel::CancelKey;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::registry::{ClientInfo, Registry};
use crate::pool::DbPool;
use crate::wire::client_stream::ClientStream;
use ogel_policies::pool::PoolCounters;
use ogel_policies::ActiveClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub use park::{Guards, Parking};
pub use session::Session;

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

/// How an attachment to a server connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Transaction over: the connection goes back to the pool.
    Released,
    /// The client left (or broke the protocol: the error is sent).
    ClientGone(Option<ClientError>),
    /// The server connection broke; `notified` if the client already got
    /// the server's own FATAL error.
    ServerLost { notified: bool },
}

/// What `frontend` hands over after authentication.
pub struct Login<S = ClientStream> {
    /// The client's socket.
    pub stream: S,
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

/// What the relay's core reads from and reports to the pool it serves,
/// besides server connections: [`DbPool`] in the gateway, a stub in tests.
/// Static dispatch only (the relay is generic over it).
pub(crate) trait Shared: Send + Sync + 'static {
    /// The database, for logs.
    fn name(&self) -> &str;
    /// The counters the relay adds to.
    fn counters(&self) -> &PoolCounters;
    /// Whether a server accepted the statement `server_name` before.
    fn is_known(&self, server_name: &str) -> bool;
    /// Notes that a server accepted the statement `server_name`.
    fn mark_known(&self, server_name: &Arc<str>);
    /// Notes that client `client_pid` may notify through `server_pid`.
    fn note_notifier(&self, server_pid: u32, client_pid: u32);
    /// The client last noted as notifying through `server_pid`.
    fn notifier(&self, server_pid: u32) -> Option<u32>;
}

impl Shared for DbPool {
    fn name(&self) -> &str {
        &self.name
    }
    fn counters(&self) -> &PoolCounters {
        &self.pool.counters
    }
    fn is_known(&self, server_name: &str) -> bool {
        DbPool::is_known(self, server_name)
    }
    fn mark_known(&self, server_name: &Arc<str>) {
        DbPool::mark_known(self, server_name)
    }
    fn note_notifier(&self, server_pid: u32, client_pid: u32) {
        DbPool::note_notifier(self, server_pid, client_pid)
    }
    fn notifier(&self, server_pid: u32) -> Option<u32> {
        DbPool::notifier(self, server_pid)
    }
}

/// Finishes the login (parameters, BackendKeyData, ReadyForQuery) and
/// serves the client in a task of its own until it leaves, `guards` (the
/// admissions it holds) with it. Returns once the client is logged in.
///
/// The session's task holds only the [`Session`] and its loop's idle state
/// (measured in `bench/pool.sh`): the login's larger state, and every
/// future around the caller's, stay in the caller's task, which ends.
///
/// A plain-TCP client quiet for `pool.park_idle_after` is parked: its task
/// ends and it waits in `parking` until it sends again ([`park`]).
pub async fn run(
    db: Arc<DbPool>,
    login: Login,
    registry: &Arc<Registry<ClientInfo>>,
    guards: Guards,
    parking: &Arc<Parking>,
) {
    let addr = login.stream.peer_addr();
    if let Some(session) = Box::pin(greet::greet(db, login, addr, registry)).await {
        tokio::spawn(park::serve(session, guards, parking.clone()));
    }
}

/// [`run`] for a client over any stream (`addr`: its address, if it has
/// one), such as a WebSocket's, served in the caller's task.
pub async fn serve_client<S>(
    db: Arc<DbPool>,
    login: Login<S>,
    addr: Option<SocketAddr>,
    registry: &Arc<Registry<ClientInfo>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Boxed: the login's state is freed before the long-lived part.
    if let Some(session) = Box::pin(greet::greet(db, login, addr, registry)).await {
        session.serve(()).await;
    }
}
