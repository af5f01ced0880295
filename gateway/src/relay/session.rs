//! The per-client loop: wait for a message holding nothing, answer it
//! locally if the pooler can, otherwise lease a server connection, attach
//! (cancel slot, SHOW CLIENTS/SERVERS links), relay, and give the
//! connection back — or, when the client leaves mid-flight, reset or close
//! it.

use super::pump::Relay;
use super::{End, RESET_TIMEOUT};
use crate::cancel::CancelKey;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::registry::ConnState;
use crate::pool::server_conn::ServerConn;
use crate::pool::DbPool;
use crate::wire::messages::{send, send_fatal};
use ogel_policies::pool::{ClientSeat, Lease};
use ogel_policies::ActiveClient;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why [`Session::serve_until`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// The client left, or was refused.
    Gone,
    /// Quiet for the time asked: nothing buffered, pending or pinned.
    Quiet,
}

/// One connected client.
pub struct Session<S> {
    pub(super) relay: Relay<S, DbPool>,
    pub(super) cancel: CancelKey,
    pub(super) _seat: ClientSeat<ServerConn>,
    pub(super) _active: ActiveClient,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Serves the client until it leaves, holding `guards` until then.
    /// Everything that waits while the client is not idle (a lease, a
    /// transaction's relay, a reset) is boxed, so the future's idle state
    /// is little more than the session.
    ///
    /// Not an `async fn`: its argument would be stored twice in the future
    /// (measured: 848 bytes instead of 472 per idle client).
    #[allow(clippy::manual_async_fn)] // see above: the async fn is larger
    pub(super) fn serve<G: Send>(
        mut self,
        guards: G,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            self.serve_until(None).await;
            drop(guards);
        }
    }

    /// Serves the client until it leaves ([`Exit::Gone`]) or, given
    /// `quiet_after`, until it has sent nothing for that long with nothing
    /// of a transaction left ([`Exit::Quiet`]).
    pub(super) async fn serve_until(&mut self, quiet_after: Option<Duration>) -> Exit {
        loop {
            let got = match quiet_after {
                Some(after) if self.relay.is_quiet() => {
                    match tokio::time::timeout(after, self.relay.wait_for_message()).await {
                        Ok(got) => got,
                        Err(_) if self.relay.is_quiet() => return Exit::Quiet,
                        // Part of a message came: wait for the rest.
                        Err(_) => self.relay.wait_for_message().await,
                    }
                }
                _ => self.relay.wait_for_message().await,
            };
            if !got {
                return Exit::Gone;
            }
            if self.relay.rbuf.first() == Some(&b'X') {
                return Exit::Gone; // Terminate between transactions
            }
            // Boxed: an idle client's task keeps none of a transaction's
            // state (the lease, the relay's, the answers being sent).
            if !Box::pin(self.transaction()).await {
                return Exit::Gone;
            }
        }
    }

    /// Serves what the client sent: answered locally, or over a leased
    /// server connection until the transaction ends. `false`: the client
    /// is gone or was refused.
    async fn transaction(&mut self) -> bool {
        if let Some(answered) = self.relay.answer_locally() {
            return send(&mut self.relay.stream, &answered).await.is_ok();
        }
        self.relay.info.entry.state.set(ConnState::Waiting);
        let mut lease = match self.relay.db.lease().await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::info!(database = %self.relay.db.name, error = %e.message, "client got no server connection");
                send_fatal(&mut self.relay.stream, &e).await;
                return false;
            }
        };
        match self.attach(&mut lease).await {
            End::Released => {
                let server = lease.conn();
                let rest = server.to_client.split();
                lease.release();
                if send(&mut self.relay.stream, &rest).await.is_err() {
                    return false;
                }
                true
            }
            End::ClientGone(error) => {
                self.finish(lease).await;
                if let Some(e) = error {
                    send_fatal(&mut self.relay.stream, &e).await;
                }
                false
            }
            End::ServerLost { notified } => {
                let server = lease.conn();
                let rest = server.to_client.split();
                drop(lease);
                let _ = send(&mut self.relay.stream, &rest).await;
                if !notified {
                    let e = ClientError::new(
                        "08006",
                        format!(
                            "the connection to database \"{}\"'s compute was lost",
                            self.relay.db.name
                        ),
                    )
                    .hint("reconnect; a transaction in progress was rolled back");
                    send_fatal(&mut self.relay.stream, &e).await;
                }
                false
            }
        }
    }

    /// Relays one transaction (or, pinned / in session mode, the rest of
    /// the session) over `lease`.
    async fn attach(&mut self, lease: &mut Lease<ServerConn>) -> End {
        let server = lease.conn();
        let info = &self.relay.info;
        self.cancel.slot.set(Some(server.cancel_target()));
        info.entry.state.set(ConnState::Active);
        info.entry.server.store(server.info.id, Ordering::Relaxed);
        server.info.entry.state.set(ConnState::Active);
        server.info.entry.client.store(info.id, Ordering::Relaxed);
        let end = self.relay.relay(server).await;
        let info = &self.relay.info;
        self.cancel.slot.set(None);
        info.entry.state.set(ConnState::Idle);
        info.entry.server.store(0, Ordering::Relaxed);
        server.info.entry.state.set(ConnState::Idle);
        server.info.entry.client.store(0, Ordering::Relaxed);
        end
    }

    /// After the client left while attached: a clean connection goes back
    /// to the pool (reset first if it carried session state); anything
    /// mid-flight is closed.
    async fn finish(&mut self, mut lease: Lease<ServerConn>) {
        let clean = self.relay.at_rest(lease.conn());
        if !clean {
            return; // dropping the lease closes the connection
        }
        // Whatever was meant for the departed client stays with it.
        lease.conn().to_client.clear();
        if self.relay.mode == PoolMode::Session || self.relay.pinned.is_some() {
            match tokio::time::timeout(RESET_TIMEOUT, lease.conn().discard_all()).await {
                Ok(Ok(())) => lease.release(),
                _ => drop(lease),
            }
        } else {
            lease.release();
        }
    }
}
