//! Network faults between the gateway and a compute, injected by
//! `ogel chaos run --scenario latency|partition-gateway` on a database
//! marked `chaos_allowed`: while one is active, every new connection the
//! gateway opens to that compute's address goes through a loopback proxy
//! that delays each chunk (`latency`) or forwards nothing at all
//! (`partition`). Connections opened before keep their direct path, so
//! injecting also closes the pools' idle connections and bumps
//! [`epoch`] (the failover watch's kept probe connection reopens). When
//! the fault ends the epoch moves again, so connections through the proxy
//! are not reused: a partition's hung ones are cut, a slow one finishes
//! the transaction it carries.
//!
//! Process-wide by nature (a fault is on an address, whoever connects),
//! and never active unless asked for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fault on the path to a compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Each chunk, either way, waits this long.
    Latency(Duration),
    /// Nothing is forwarded: connections hang.
    Partition,
}

struct Active {
    proxy: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

static ACTIVE: Mutex<Option<HashMap<SocketAddr, Active>>> = Mutex::new(None);
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Changes whenever a fault starts: kept connections opened before it
/// should be opened again to see it.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Where to connect for `target`: the fault proxy while one is active.
pub fn route(target: SocketAddr) -> SocketAddr {
    crate::pool::lock(&ACTIVE)
        .as_ref()
        .and_then(|m| m.get(&target))
        .map(|a| a.proxy)
        .unwrap_or(target)
}

/// Puts `fault` on the path to `target` for `duration` (then it ends by
/// itself).
pub async fn inject(target: SocketAddr, fault: Fault, duration: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        let serve = async {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                match fault {
                    // Hung connections are cut when the partition ends.
                    Fault::Partition => {
                        links.spawn(carry(client, target, fault));
                    }
                    // Slow ones finish what they carry; the pools stop
                    // reusing them (the epoch moves on at the end).
                    Fault::Latency(_) => {
                        tokio::spawn(carry(client, target, fault));
                    }
                }
            }
        };
        let _ = tokio::time::timeout(duration, serve).await;
        links.abort_all();
    });
    let previous = crate::pool::lock(&ACTIVE)
        .get_or_insert_with(HashMap::new)
        .insert(target, Active { proxy, task });
    if let Some(previous) = previous {
        previous.task.abort();
    }
    EPOCH.fetch_add(1, Ordering::AcqRel);
    tracing::warn!(%target, ?fault, ?duration, "chaos: a network fault is on the path to a compute");
    // Ends by itself: the route is removed once the proxy's time is up.
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        let mut active = crate::pool::lock(&ACTIVE);
        if let Some(map) = active.as_mut() {
            if map.get(&target).is_some_and(|a| a.proxy == proxy) {
                if let Some(a) = map.remove(&target) {
                    a.task.abort();
                }
                EPOCH.fetch_add(1, Ordering::AcqRel);
                tracing::info!(%target, "chaos: the network fault is over");
            }
        }
    });
    Ok(())
}

/// One connection through the proxy.
async fn carry(client: TcpStream, target: SocketAddr, fault: Fault) {
    let delay = match fault {
        Fault::Partition => {
            // Hold it, forward nothing, until the fault ends (abort).
            let _held = client;
            std::future::pending::<()>().await;
            return;
        }
        Fault::Latency(d) => d,
    };
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
}

/// Copies `from` to `to`, each chunk `delay` late.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn latency_delays_and_a_partition_hangs() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = echo.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let round_trip = |addr: SocketAddr| async move {
            let started = std::time::Instant::now();
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut b = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
                .await
                .ok()?
                .ok()?;
            Some(started.elapsed())
        };
        // Through a proxy as `inject` makes one (the registry and epoch
        // are process-wide: other tests' pools must not see them move).
        let proxy = |fault: Fault| async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(carry(client, target, fault));
                }
            });
            addr
        };
        let fast = round_trip(target).await.expect("answered");
        let slow = round_trip(proxy(Fault::Latency(Duration::from_millis(150))).await)
            .await
            .expect("answered");
        assert!(
            slow >= Duration::from_millis(300) && slow > fast,
            "{slow:?}"
        );
        assert_eq!(
            round_trip(proxy(Fault::Partition).await).await,
            None,
            "a partition answers nothing"
        );
        assert_eq!(route(target), target, "nothing routed unless injected");
    }
}
