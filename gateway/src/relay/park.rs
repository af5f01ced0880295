//! Idle clients parked without a task of their own. A plain-TCP client
//! that has sent nothing for `pool.park_idle_after`, with nothing of a
//! transaction left, leaves the runtime: its socket is taken off tokio's
//! reactor (which keeps a 256-byte record per socket) and watched by one
//! epoll set shared by every parked client, its task ends (a task is ~640
//! bytes, 128-byte aligned), and what it keeps between transactions
//! ([`Dormant`]) waits in the lot. The first byte or hang-up puts it back
//! in a task of its own, over the same socket, with the same statements,
//! parameters, cancel key and seat; the client cannot tell.
//!
//! TLS clients stay in their task (their TLS state is most of what they
//! hold, and it cannot leave the stream), as do clients carried over a
//! WebSocket or between gateways.

use super::pump::{Dormant, Relay};
use super::session::{Exit, Session};
use crate::cancel::CancelKey;
use crate::pool::registry::ConnState;
use crate::pool::server_conn::ServerConn;
use crate::pool::{lock, DbPool};
use crate::wire::client_stream::ClientStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use ogel_policies::pool::ClientSeat;
use ogel_policies::ActiveClient;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// What a client holds while connected (its admissions), kept with it
/// while it is parked.
pub type Guards = Box<dyn Send>;

/// Where quiet clients wait; one per gateway.
pub struct Parking {
    /// `pool.park_idle_after` in milliseconds (0: never park).
    after_ms: AtomicU64,
    /// Made on the first parking (it needs the runtime); `None` if the
    /// epoll set could not be made (clients then stay in their tasks).
    lot: OnceLock<Option<Arc<Lot>>>,
}

struct Lot {
    registry: Registry,
    parked: Mutex<HashMap<usize, Box<Parked>>>,
    next: AtomicUsize,
}

/// A parked client: its socket (off tokio's reactor) and what it keeps.
struct Parked {
    stream: std::net::TcpStream,
    relay: Dormant<DbPool>,
    cancel: CancelKey,
    seat: ClientSeat<ServerConn>,
    active: ActiveClient,
    guards: Guards,
}

impl Parking {
    /// Parks clients quiet for `after` (zero: never).
    pub fn new(after: Duration) -> Self {
        Parking {
            after_ms: AtomicU64::new(millis(after)),
            lot: OnceLock::new(),
        }
    }

    /// How long a client stays quiet in its task before it is parked.
    fn after(&self) -> Option<Duration> {
        match self.after_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The lot, made on first use.
    fn lot(self: &Arc<Self>) -> Option<&Arc<Lot>> {
        self.lot
            .get_or_init(|| match Lot::start(self.clone()) {
                Ok(lot) => Some(lot),
                Err(e) => {
                    tracing::warn!(error = %e, "idle clients cannot be parked: no epoll set; they keep their tasks");
                    None
                }
            })
            .as_ref()
    }

    /// Parks a quiet client; gives it back (`Some`) if it cannot be parked.
    fn park(
        self: &Arc<Self>,
        session: Session<ClientStream>,
        guards: Guards,
    ) -> Option<(Session<ClientStream>, Guards)> {
        let Some(lot) = self.lot() else {
            return Some((session, guards));
        };
        if !matches!(session.relay.stream, ClientStream::Plain(_)) || !session.relay.is_quiet() {
            return Some((session, guards));
        }
        let Session {
            relay,
            cancel,
            _seat: seat,
            _active: active,
        } = session;
        let (stream, relay) = relay.into_dormant();
        let ClientStream::Plain(tcp) = stream else {
            unreachable!("checked above: a plain stream")
        };
        let stream = match tcp.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                // The socket is gone with the error; the client was idle,
                // so it loses nothing but its connection.
                tracing::warn!(error = %e, "an idle client's socket could not leave the reactor; it is closed");
                return None;
            }
        };
        let fd = stream.as_raw_fd();
        let key = lot.next.fetch_add(1, Ordering::Relaxed);
        relay.info().entry.state.set(ConnState::Parked);
        // In the lot before epoll can report it, so no wakeup finds nothing.
        lock(&lot.parked).insert(
            key,
            Box::new(Parked {
                stream,
                relay,
                cancel,
                seat,
                active,
                guards,
            }),
        );
        if let Err(e) = lot
            .registry
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)
        {
            tracing::warn!(error = %e, "an idle client could not be parked; it keeps its task");
            let parked = lock(&lot.parked).remove(&key);
            return parked.and_then(|p| (*p).revive());
        }
        None
    }

    /// Puts the client parked as `key` back in a task of its own.
    fn wake(self: &Arc<Self>, lot: &Lot, key: usize) {
        let Some(parked) = lock(&lot.parked).remove(&key) else {
            return;
        };
        let _ = lot
            .registry
            .deregister(&mut SourceFd(&parked.stream.as_raw_fd()));
        if let Some((session, guards)) = (*parked).revive() {
            tokio::spawn(serve(session, guards, self.clone()));
        }
    }
}

impl Parked {
    /// The session again, over a socket back on tokio's reactor; `None`
    /// (the connection closed) if the reactor refuses it.
    fn revive(self) -> Option<(Session<ClientStream>, Guards)> {
        let Parked {
            stream,
            relay,
            cancel,
            seat,
            active,
            guards,
        } = self;
        match tokio::net::TcpStream::from_std(stream) {
            Ok(tcp) => {
                relay.info().entry.state.set(ConnState::Idle);
                let session = Session {
                    relay: Relay::from_dormant(ClientStream::Plain(tcp), relay),
                    cancel,
                    _seat: seat,
                    _active: active,
                };
                Some((session, guards))
            }
            Err(e) => {
                tracing::warn!(error = %e, "a parked client could not be woken; its connection is closed");
                None
            }
        }
    }
}

impl Lot {
    /// Makes the epoll set and the task that wakes its clients.
    fn start(parking: Arc<Parking>) -> io::Result<Arc<Lot>> {
        let poll = Poll::new()?;
        let lot = Arc::new(Lot {
            registry: poll.registry().try_clone()?,
            parked: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        });
        // SAFETY: `Poll` owns the epoll fd, and nothing else closes or
        // replaces it while the `AsyncFd` holds the `Poll`.
        let watched =
            unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        tokio::spawn(watch(watched, lot.clone(), parking));
        Ok(lot)
    }
}

/// Wakes parked clients as their sockets become readable (a message, or
/// the client hanging up), for as long as the gateway runs.
async fn watch(mut poll: AsyncFd<Poll>, lot: Arc<Lot>, parking: Arc<Parking>) {
    let mut events = Events::with_capacity(256);
    loop {
        let mut ready = match poll.readable_mut().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(error = %e, "the parked clients' epoll set failed; parked clients are no longer woken");
                return;
            }
        };
        // Drain until epoll has nothing: only then is readiness cleared.
        let drained = ready.try_io(|poll| -> io::Result<()> {
            loop {
                match poll.get_mut().poll(&mut events, Some(Duration::ZERO)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                if events.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                for event in events.iter() {
                    parking.wake(&lot, event.token().0);
                }
            }
        });
        if let Ok(Err(e)) = drained {
            tracing::error!(error = %e, "reading the parked clients' epoll set failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Serves a client in the caller's task until it leaves, parking it
/// whenever it has been quiet for `after` (`None`: never).
pub(super) async fn serve(
    mut session: Session<ClientStream>,
    guards: Guards,
    parking: Arc<Parking>,
) {
    let after = match session.relay.stream {
        ClientStream::Plain(_) => parking.after(),
        _ => None,
    };
    if session.serve_until(after).await == Exit::Gone {
        return;
    }
    if let Some((mut session, _guards)) = parking.park(session, guards) {
        // Cannot park: keep the task, and stop trying.
        session.serve_until(None).await;
    }
}

/// `d` in whole milliseconds, as `after_ms` holds it.
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl crate::config::Reload for Parking {
    fn reload(&self, config: &crate::config::Config) -> Result<(), crate::config::ReloadError> {
        self.after_ms
            .store(millis(config.pool.park_idle_after), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// What an idle client costs is mostly these two (bench/pool.sh):
    /// allocator size classes step at 128 and 160 bytes here, so growing
    /// either past its class costs every parked client 32 bytes more.
    #[test]
    fn a_parked_client_fits_its_size_classes() {
        assert!(
            size_of::<super::Parked>() <= 128,
            "{}",
            size_of::<super::Parked>()
        );
        let info = size_of::<crate::pool::registry::ClientInfo>();
        // An Arc adds its two counts (16 bytes).
        assert!(info + 16 <= 160, "{info}");
    }
}
