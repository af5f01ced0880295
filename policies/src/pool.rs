//! Server-connection pools, one per database, shared by every backend: a
//! bounded set of connections, a fair FIFO queue with a wait timeout, idle
//! and lifetime limits, a client limit, `PAUSE`/`RESUME`, live resizing,
//! and the counters behind `SHOW POOLS` and `/metrics`.
//!
//! The pool knows nothing of the wire protocol: it holds values of any type
//! `S` (the gateway's logged-in server connections). Opening a connection is
//! the caller's job: [`Pool::acquire`] hands back either an idle connection
//! or a [`Checkout::Open`] slot that reserves room for one, so a slow or
//! failing connect never holds the pool's lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// Sizes and limits of one pool. Changing them ([`Pool::configure`]) takes
/// effect at once without dropping connections: a smaller pool shrinks as
/// connections come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most server connections open at once.
    pub size: usize,
    /// Idle connections kept open even when unused (while the compute runs).
    pub min_idle: usize,
    /// Most clients connected to the database at once.
    pub max_clients: usize,
    /// An idle server connection unused this long is closed.
    pub idle_timeout: Duration,
    /// A server connection older than this is closed when it comes back.
    pub lifetime: Duration,
    /// Longest a client waits for a server connection.
    pub queue_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            size: 20,
            min_idle: 0,
            max_clients: 10_000,
            idle_timeout: Duration::from_secs(600),
            lifetime: Duration::from_secs(3600),
            queue_timeout: Duration::from_secs(30),
        }
    }
}

/// A server connection with its ages.
pub struct Pooled<S> {
    /// The connection.
    pub conn: S,
    /// When it was opened.
    pub opened: Instant,
    /// When it was last handed back.
    pub last_used: Instant,
}

/// What [`Pool::acquire`] grants.
pub enum Checkout<S: Send + 'static> {
    /// An idle connection.
    Idle(Lease<S>),
    /// Room for a new connection: open it and [`OpenSlot::fill`] the slot.
    Open(OpenSlot<S>),
}

/// Why a client got no server connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// Every connection stayed busy for the whole queue timeout.
    #[error("no server connection became free within {waited:?} (pool size {size}, {waiting} clients waiting)")]
    QueueTimeout {
        /// How long the client waited.
        waited: Duration,
        /// Pool size at the time.
        size: usize,
        /// Clients still waiting.
        waiting: usize,
    },
    /// The database was paused for the whole queue timeout.
    #[error("the database is paused (PAUSE) and was not resumed within {0:?}")]
    Paused(Duration),
}

/// Why a client may not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many clients for this database (max_clients = {0})")]
pub struct TooManyClients(pub usize);

/// Why `PAUSE` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{busy} server connections were still in use after {waited:?}; the database was resumed")]
pub struct PauseTimeout {
    /// Connections still busy.
    pub busy: usize,
    /// How long PAUSE waited.
    pub waited: Duration,
}

/// Wait-time histogram bucket bounds, in seconds (Prometheus `le`).
pub const WAIT_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// Counters of one pool; the relay adds transactions, queries and bytes.
#[derive(Default)]
pub struct PoolCounters {
    /// Server connections handed to clients.
    pub acquires: AtomicU64,
    /// Of those, how many had to queue.
    pub waits: AtomicU64,
    /// Total time waited (queued or not), microseconds.
    pub wait_micros: AtomicU64,
    /// Wait histogram (cumulative counts are computed when rendered).
    pub wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    /// Clients that gave up after the queue timeout.
    pub queue_timeouts: AtomicU64,
    /// Server connections opened / closed.
    pub servers_opened: AtomicU64,
    /// Server connections closed.
    pub servers_closed: AtomicU64,
    /// Transactions completed through the pool.
    pub transactions: AtomicU64,
    /// Queries (Query or Sync cycles) completed.
    pub queries: AtomicU64,
    /// Bytes from clients to servers.
    pub bytes_in: AtomicU64,
    /// Bytes from servers to clients.
    pub bytes_out: AtomicU64,
    /// Clients that used a session-only feature and kept their server.
    pub pinned_clients: AtomicU64,
}

impl PoolCounters {
    fn observe_wait(&self, waited: Duration, queued: bool) {
        self.acquires.fetch_add(1, Ordering::Relaxed);
        if queued {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        self.wait_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        let secs = waited.as_secs_f64();
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// A point-in-time view of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Settings in force.
    pub settings: PoolSettings,
    /// Clients connected.
    pub clients: usize,
    /// Clients waiting for a server connection.
    pub waiting: usize,
    /// Server connections in use by clients.
    pub active: usize,
    /// Idle server connections.
    pub idle: usize,
    /// Connections being opened.
    pub opening: usize,
    /// Whether PAUSE is in force.
    pub paused: bool,
    /// Longest current wait.
    pub max_wait: Duration,
}

enum Grant<S> {
    Server(Pooled<S>),
    Open,
}

struct Waiter<S> {
    since: Instant,
    tx: oneshot::Sender<Grant<S>>,
}

struct State<S> {
    settings: PoolSettings,
    idle: Vec<Pooled<S>>,
    /// Idle + in use + being opened.
    open: usize,
    /// In use by clients (including slots being opened).
    busy: usize,
    waiters: VecDeque<Waiter<S>>,
    paused: bool,
    clients: usize,
}

/// One database's server connections.
pub struct Pool<S> {
    state: Mutex<State<S>>,
    /// Wakes PAUSE when a connection comes back.
    returned: Notify,
    /// Counters for SHOW STATS and /metrics.
    pub counters: PoolCounters,
}

/// Poisoning only means a panic elsewhere; the state stays consistent
/// because every critical section is panic-free bookkeeping.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: Send + 'static> Pool<S> {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        Arc::new(Pool {
            state: Mutex::new(State {
                settings,
                idle: Vec::new(),
                open: 0,
                busy: 0,
                waiters: VecDeque::new(),
                paused: false,
                clients: 0,
            }),
            returned: Notify::new(),
            counters: PoolCounters::default(),
        })
    }

    /// Applies new settings; a larger pool serves waiting clients at once.
    pub fn configure(self: &Arc<Self>, settings: PoolSettings) {
        let mut state = lock(&self.state);
        state.settings = settings;
        let excess = state.open.saturating_sub(state.settings.size);
        let drop_idle = excess.min(state.idle.len());
        let closed: Vec<_> = state.idle.drain(..drop_idle).collect();
        state.open -= closed.len();
        self.grant_waiters(&mut state);
        drop(state);
        self.note_closed(closed.len());
    }

    /// Settings in force.
    pub fn settings(&self) -> PoolSettings {
        lock(&self.state).settings.clone()
    }

    /// Registers a client; refused beyond `max_clients`.
    pub fn enter(self: &Arc<Self>) -> Result<ClientSeat<S>, TooManyClients> {
        let mut state = lock(&self.state);
        if state.clients >= state.settings.max_clients {
            return Err(TooManyClients(state.settings.max_clients));
        }
        state.clients += 1;
        Ok(ClientSeat { pool: self.clone() })
    }

    /// A server connection for one transaction (or session): an idle one,
    /// room to open one, or — when all are busy or the pool is paused — the
    /// first to come back, waiting at most the queue timeout in FIFO order.
    /// `usable` checks an idle connection before it is handed out (a
    /// connection the server closed while idle is dropped, not served).
    pub async fn acquire(
        self: &Arc<Self>,
        usable: impl Fn(&S) -> bool,
    ) -> Result<Checkout<S>, AcquireError> {
        let started = Instant::now();
        let (rx, timeout) = {
            let mut state = lock(&self.state);
            if !state.paused && state.waiters.is_empty() {
                if let Some(checkout) = self.take(&mut state, &usable) {
                    drop(state);
                    self.counters.observe_wait(started.elapsed(), false);
                    return Ok(checkout);
                }
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(Waiter { since: started, tx });
            (rx, state.settings.queue_timeout)
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(grant)) => {
                self.counters.observe_wait(started.elapsed(), true);
                Ok(match grant {
                    Grant::Server(pooled) => {
                        if usable(&pooled.conn) {
                            Checkout::Idle(Lease::new(self.clone(), pooled))
                        } else {
                            // Dead while idle: open a fresh one in its place.
                            drop(pooled);
                            self.note_closed(1);
                            Checkout::Open(OpenSlot {
                                pool: Some(self.clone()),
                            })
                        }
                    }
                    Grant::Open => Checkout::Open(OpenSlot {
                        pool: Some(self.clone()),
                    }),
                })
            }
            // The sender is only dropped with the pool itself.
            Ok(Err(_)) | Err(_) => {
                self.counters.queue_timeouts.fetch_add(1, Ordering::Relaxed);
                let state = lock(&self.state);
                // Our waiter is dropped lazily: grants to a closed receiver
                // come back and go to the next waiter.
                let waiting = state.waiters.iter().filter(|w| !w.tx.is_closed()).count();
                if state.paused {
                    Err(AcquireError::Paused(timeout))
                } else {
                    Err(AcquireError::QueueTimeout {
                        waited: started.elapsed(),
                        size: state.settings.size,
                        waiting: waiting.saturating_sub(1),
                    })
                }
            }
        }
    }

    /// Takes an idle connection or room for a new one, if any.
    fn take(
        self: &Arc<Self>,
        state: &mut State<S>,
        usable: &impl Fn(&S) -> bool,
    ) -> Option<Checkout<S>> {
        let now = Instant::now();
        let lifetime = state.settings.lifetime;
        while let Some(pooled) = state.idle.pop() {
            if now.duration_since(pooled.opened) < lifetime && usable(&pooled.conn) {
                state.busy += 1;
                return Some(Checkout::Idle(Lease::new(self.clone(), pooled)));
            }
            state.open -= 1;
            self.counters.servers_closed.fetch_add(1, Ordering::Relaxed);
        }
        if state.open < state.settings.size {
            state.open += 1;
            state.busy += 1;
            return Some(Checkout::Open(OpenSlot {
                pool: Some(self.clone()),
            }));
        }
        None
    }

    /// Hands idle connections and free room to waiting clients, in order.
    fn grant_waiters(&self, state: &mut State<S>) {
        if state.paused {
            return;
        }
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.tx.is_closed() {
                continue;
            }
            let grant = if let Some(pooled) = state.idle.pop() {
                Grant::Server(pooled)
            } else if state.open < state.settings.size {
                state.open += 1;
                Grant::Open
            } else {
                state.waiters.push_front(waiter);
                return;
            };
            state.busy += 1;
            if let Err(grant) = waiter.tx.send(grant) {
                // Gave up in the meantime: undo and try the next one.
                state.busy -= 1;
                match grant {
                    Grant::Server(pooled) => state.idle.push(pooled),
                    Grant::Open => state.open -= 1,
                }
            }
        }
    }

    fn give_back(&self, pooled: Option<Pooled<S>>) {
        let mut state = lock(&self.state);
        state.busy -= 1;
        let mut closed = 0;
        match pooled {
            Some(mut pooled)
                if state.open <= state.settings.size
                    && pooled.opened.elapsed() < state.settings.lifetime =>
            {
                pooled.last_used = Instant::now();
                state.idle.push(pooled);
            }
            Some(_) | None => {
                state.open -= 1;
                closed = 1;
            }
        }
        self.grant_waiters(&mut state);
        drop(state);
        self.note_closed(closed);
        self.returned.notify_waiters();
    }

    fn note_closed(&self, n: usize) {
        if n > 0 {
            self.counters
                .servers_closed
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Closes idle connections past the idle timeout (keeping `min_idle`)
    /// and past their lifetime; returns how many more connections the pool
    /// wants opened to reach `min_idle`.
    pub fn maintain(&self) -> usize {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let (idle_timeout, lifetime, min_idle) = (
            state.settings.idle_timeout,
            state.settings.lifetime,
            state.settings.min_idle,
        );
        let before = state.idle.len();
        // Oldest-used first: the idle stack's bottom.
        let mut kept = Vec::with_capacity(before);
        let mut surplus = before.saturating_sub(min_idle);
        for pooled in state.idle.drain(..) {
            let expired = now.duration_since(pooled.opened) >= lifetime;
            let stale = surplus > 0 && now.duration_since(pooled.last_used) >= idle_timeout;
            if expired || stale {
                surplus = surplus.saturating_sub(1);
            } else {
                kept.push(pooled);
            }
        }
        let closed = before - kept.len();
        state.idle = kept;
        state.open -= closed;
        let want = min_idle
            .saturating_sub(state.idle.len())
            .min(state.settings.size.saturating_sub(state.open));
        drop(state);
        self.note_closed(closed);
        want
    }

    /// Reserves room to open one connection outside any client (min_idle).
    pub fn reserve(self: &Arc<Self>) -> Option<OpenSlot<S>> {
        let mut state = lock(&self.state);
        if state.paused || state.open >= state.settings.size {
            return None;
        }
        state.open += 1;
        state.busy += 1;
        Some(OpenSlot {
            pool: Some(self.clone()),
        })
    }

    /// Closes every idle connection (the compute was suspended or moved).
    pub fn close_idle(&self) {
        let mut state = lock(&self.state);
        let closed = std::mem::take(&mut state.idle);
        state.open -= closed.len();
        self.grant_waiters(&mut state);
        drop(state);
        self.note_closed(closed.len());
    }

    /// PAUSE: new transactions wait; returns once every server connection
    /// is back. After `timeout` with connections still busy, the pause is
    /// undone and an error says how many were busy.
    pub async fn pause(&self, timeout: Duration) -> Result<(), PauseTimeout> {
        lock(&self.state).paused = true;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let busy = lock(&self.state).busy;
            if busy == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let busy = lock(&self.state).busy;
                if busy == 0 {
                    return Ok(());
                }
                self.resume();
                return Err(PauseTimeout {
                    busy,
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// RESUME: waiting clients proceed.
    pub fn resume(&self) {
        let mut state = lock(&self.state);
        state.paused = false;
        self.grant_waiters(&mut state);
    }

    /// Counts for SHOW POOLS and /metrics.
    pub fn snapshot(&self) -> PoolSnapshot {
        let state = lock(&self.state);
        let live: Vec<&Waiter<S>> = state.waiters.iter().filter(|w| !w.tx.is_closed()).collect();
        PoolSnapshot {
            settings: state.settings.clone(),
            clients: state.clients,
            waiting: live.len(),
            active: state.busy,
            idle: state.idle.len(),
            opening: state.open - state.busy - state.idle.len(),
            paused: state.paused,
            max_wait: live
                .iter()
                .map(|w| w.since.elapsed())
                .max()
                .unwrap_or_default(),
        }
    }

    /// Visits every idle connection (SHOW SERVERS).
    pub fn for_each_idle(&self, mut f: impl FnMut(&Pooled<S>)) {
        for pooled in &lock(&self.state).idle {
            f(pooled);
        }
    }
}

/// A connected client's place in the pool; dropping it frees the place.
pub struct ClientSeat<S: Send + 'static> {
    pool: Arc<Pool<S>>,
}

impl<S: Send + 'static> Drop for ClientSeat<S> {
    fn drop(&mut self) {
        lock(&self.pool.state).clients -= 1;
    }
}

/// Room reserved for a new connection. Fill it with the connection once
/// opened; dropping it unfilled (the connect failed) frees the room and
/// lets the next waiting client try.
pub struct OpenSlot<S: Send + 'static> {
    pool: Option<Arc<Pool<S>>>,
}

impl<S: Send + 'static> OpenSlot<S> {
    /// The newly opened connection, now in use by the caller.
    pub fn fill(mut self, conn: S) -> Lease<S> {
        let pool = self.pool.take().expect("an OpenSlot is filled once");
        pool.counters.servers_opened.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        Lease::new(
            pool,
            Pooled {
                conn,
                opened: now,
                last_used: now,
            },
        )
    }
}

impl<S: Send + 'static> Drop for OpenSlot<S> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut state = lock(&pool.state);
            state.busy -= 1;
            state.open -= 1;
            pool.grant_waiters(&mut state);
            drop(state);
            pool.returned.notify_waiters();
        }
    }
}

/// A server connection in use. [`Lease::release`] gives it back for reuse;
/// dropping the lease closes the connection (its state is unknown).
pub struct Lease<S: Send + 'static> {
    pool: Arc<Pool<S>>,
    pooled: Option<Pooled<S>>,
}

impl<S: Send + 'static> Lease<S> {
    fn new(pool: Arc<Pool<S>>, pooled: Pooled<S>) -> Self {
        Lease {
            pool,
            pooled: Some(pooled),
        }
    }

    /// The connection.
    pub fn conn(&mut self) -> &mut S {
        // Only `release`/`drop` take it, and both consume the lease.
        &mut self
            .pooled
            .as_mut()
            .expect("a lease holds its connection")
            .conn
    }

    /// When the connection was opened.
    pub fn opened(&self) -> Option<Instant> {
        self.pooled.as_ref().map(|p| p.opened)
    }

    /// Gives the connection back, clean, for the next client.
    pub fn release(mut self) {
        let pooled = self.pooled.take();
        self.pool.give_back(pooled);
    }
}

impl<S: Send + 'static> Drop for Lease<S> {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take() {
            drop(pooled);
            self.pool.give_back(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(size: usize) -> PoolSettings {
        PoolSettings {
            size,
            queue_timeout: Duration::from_millis(200),
            ..PoolSettings::default()
        }
    }

    async fn lease(pool: &Arc<Pool<u32>>, id: u32) -> Lease<u32> {
        match pool.acquire(|_| true).await.expect("acquire") {
            Checkout::Idle(lease) => lease,
            Checkout::Open(slot) => slot.fill(id),
        }
    }

    #[tokio::test]
    async fn reuses_idle_connections_and_never_exceeds_the_size() {
        let pool = Pool::new(settings(2));
        let mut a = lease(&pool, 1).await;
        let b = lease(&pool, 2).await;
        assert_eq!(*a.conn(), 1);
        let snap = pool.snapshot();
        assert_eq!((snap.active, snap.idle), (2, 0));
        // Full: a third client waits until one comes back.
        let p = pool.clone();
        let third = tokio::spawn(async move { lease(&p, 3).await.conn().to_owned() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.snapshot().waiting, 1);
        b.release();
        assert_eq!(
            third.await.unwrap(),
            2,
            "the released connection is handed over"
        );
        a.release();
        assert_eq!(pool.counters.servers_opened.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_waiter_times_out_with_a_clear_error() {
        let pool = Pool::new(settings(1));
        let _held = lease(&pool, 1).await;
        let err = match pool.acquire(|_| true).await {
            Err(e) => e,
            Ok(_) => panic!("the pool is full"),
        };
        assert!(
            matches!(err, AcquireError::QueueTimeout { size: 1, .. }),
            "{err}"
        );
        assert_eq!(pool.counters.queue_timeouts.load(Ordering::Relaxed), 1);
        // The timed-out waiter does not swallow the next grant.
        drop(_held);
        let _next = lease(&pool, 2).await;
    }

    #[tokio::test]
    async fn dropping_a_lease_or_slot_frees_room() {
        let pool = Pool::new(settings(1));
        let held = lease(&pool, 1).await;
        drop(held); // closed, not reused
        assert_eq!(pool.snapshot().idle, 0);
        let slot = match pool.acquire(|_| true).await.unwrap() {
            Checkout::Open(slot) => slot,
            Checkout::Idle(_) => panic!("nothing idle"),
        };
        drop(slot); // the connect failed
        let snap = pool.snapshot();
        assert_eq!((snap.active, snap.idle, snap.opening), (0, 0, 0));
        let _again = lease(&pool, 2).await;
    }

    #[tokio::test]
    async fn unusable_idle_connections_are_replaced() {
        let pool = Pool::new(settings(1));
        lease(&pool, 13).await.release();
        let checkout = pool.acquire(|conn| *conn != 13).await.unwrap();
        assert!(matches!(checkout, Checkout::Open(_)));
    }

    #[tokio::test]
    async fn pause_waits_for_busy_connections_and_holds_new_ones() {
        let pool = Pool::new(settings(2));
        let busy = lease(&pool, 1).await;
        let p = pool.clone();
        let pause = tokio::spawn(async move { p.pause(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !pause.is_finished(),
            "PAUSE waits for the running transaction"
        );
        let p = pool.clone();
        let held = tokio::spawn(async move { lease(&p, 2).await.conn().to_owned() });
        busy.release();
        pause.await.unwrap().expect("paused");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !held.is_finished(),
            "new transactions are held while paused"
        );
        pool.resume();
        assert_eq!(held.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn pause_times_out_and_resumes() {
        let pool = Pool::new(settings(1));
        let _busy = lease(&pool, 1).await;
        let err = pool.pause(Duration::from_millis(30)).await.unwrap_err();
        assert_eq!(err.busy, 1);
        assert!(!pool.snapshot().paused);
    }

    #[tokio::test]
    async fn resizing_applies_at_once() {
        let pool = Pool::new(settings(1));
        let _a = lease(&pool, 1).await;
        let p = pool.clone();
        let waiter = tokio::spawn(async move { lease(&p, 2).await.conn().to_owned() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        pool.configure(settings(2));
        assert_eq!(waiter.await.unwrap(), 2);
        // Shrinking closes surplus connections as they come back.
        pool.configure(settings(1));
        drop(_a);
        assert!(pool.snapshot().idle <= 1);
    }

    #[tokio::test]
    async fn client_limit() {
        let pool: Arc<Pool<u32>> = Pool::new(PoolSettings {
            max_clients: 1,
            ..settings(1)
        });
        let seat = pool.enter().unwrap();
        assert_eq!(pool.enter().err(), Some(TooManyClients(1)));
        drop(seat);
        assert!(pool.enter().is_ok());
    }

    #[tokio::test]
    async fn maintain_closes_stale_idle_connections() {
        let pool = Pool::new(PoolSettings {
            idle_timeout: Duration::ZERO,
            min_idle: 1,
            ..settings(3)
        });
        let a = lease(&pool, 1).await;
        let b = lease(&pool, 2).await;
        a.release();
        b.release();
        assert_eq!(pool.maintain(), 0);
        assert_eq!(pool.snapshot().idle, 1, "min_idle kept");
    }
}
