//! Query cancellation. Clients get the gateway's own BackendKeyData; the
//! registry maps it to the client's [`CancelSlot`], which the pooler points
//! at whichever server connection is running the client's query right now
//! (and clears when the connection goes back to the pool), so a
//! CancelRequest reaches the right Postgres backend without clients ever
//! learning compute addresses.

use crate::auth::constant_time_eq;
use rand::Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

struct Entry {
    secret: u32,
    slot: Arc<CancelSlot>,
}

/// Where a client's query runs now: the server connection's address and
/// its BackendKeyData, or nothing between transactions.
#[derive(Default)]
pub struct CancelSlot(Mutex<Option<(SocketAddr, u32, u32)>>);

impl CancelSlot {
    /// Points the slot at a server connection (`None`: not attached).
    pub fn set(&self, target: Option<(SocketAddr, u32, u32)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }
    fn get(&self) -> Option<(SocketAddr, u32, u32)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// All cancel keys handed out to connected clients.
#[derive(Default)]
pub struct CancelRegistry {
    next_pid: AtomicU32,
    targets: Mutex<HashMap<u32, Entry>>,
}

/// A registered key; dropping it unregisters the key.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// The pid the client was given.
    pub pid: u32,
    /// The secret the client was given.
    pub secret: u32,
    /// Where the client's query runs now.
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands out a new key for a client; its slot starts empty.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let secret = rand::thread_rng().gen();
        let mut targets = self.lock();
        let pid = loop {
            // Skip 0 and any key still in use after wrap-around.
            let pid = self
                .next_pid
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if pid != 0 && !targets.contains_key(&pid) {
                break pid;
            }
        };
        let slot = Arc::new(CancelSlot::default());
        targets.insert(
            pid,
            Entry {
                secret,
                slot: slot.clone(),
            },
        );
        CancelKey {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Forwards a cancel for the client key `(pid, secret)`. Unknown keys,
    /// wrong secrets and clients with nothing running are ignored, as
    /// Postgres does (no reply either way).
    pub async fn cancel(&self, pid: u32, secret: u32) {
        let target = {
            let targets = self.lock();
            match targets.get(&pid) {
                Some(t) if constant_time_eq(&t.secret.to_be_bytes(), &secret.to_be_bytes()) => {
                    t.slot.get()
                }
                _ => {
                    tracing::debug!(pid, "cancel request with an unknown key ignored");
                    return;
                }
            }
        };
        let Some(target) = target else {
            tracing::debug!(
                pid,
                "cancel request for a client with no query running ignored"
            );
            return;
        };
        let (addr, compute_pid, compute_secret) = target;
        let mut packet = Vec::with_capacity(16);
        packet.extend_from_slice(&16u32.to_be_bytes());
        packet.extend_from_slice(&80_877_102u32.to_be_bytes());
        packet.extend_from_slice(&compute_pid.to_be_bytes());
        packet.extend_from_slice(&compute_secret.to_be_bytes());
        let send = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(&packet).await?;
            stream.shutdown().await
        };
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => tracing::debug!(pid, %addr, "cancel forwarded"),
            Ok(Err(e)) => tracing::warn!(pid, %addr, error = %e, "could not forward a cancel"),
            Err(_) => tracing::warn!(pid, %addr, "forwarding a cancel timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_reaches_the_compute_only_with_the_right_secret() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        registry.cancel(key.pid, key.secret).await; // not attached: nothing sent
        key.slot.set(Some((addr, 4242, 99)));
        registry.cancel(key.pid, key.secret.wrapping_add(1)).await; // wrong secret: nothing sent
        registry.cancel(key.pid, key.secret).await;
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 16];
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf[8..12], &4242u32.to_be_bytes());
        assert_eq!(&buf[12..16], &99u32.to_be_bytes());
        // Only one connection was made: the others sent nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), listener.accept())
                .await
                .is_err()
        );
        let pid = key.pid;
        drop(key);
        assert!(registry.lock().get(&pid).is_none());
    }
}
