//! Compute lifecycle shared by every backend: one wake per database however
//! many clients arrive at once, a count of connected clients, and the idle
//! suspend that scale to zero needs — without ever suspending a compute a
//! client has just been handed.
//!
//! Ordering argument (why a client never gets an endpoint that is about to
//! be stopped): a client first increments `active`, then reads the cached
//! endpoint. The suspender, holding the database's lock, first clears the
//! cache, then reads `active`. Both use the same mutex-protected cache, so
//! either the client saw the cache before it was cleared — and then its
//! increment is visible to the suspender, which backs off — or it sees no
//! cache and queues on the lock behind the suspend, then wakes the compute.
//!
//! Computes are keyed here by their text name (`db` or `db@branch`, as the
//! gateway's pools and stats know them); the backend is always called with
//! the typed [`ComputeName`].

use ogel_plugin_sdk::{Backend, BackendError, ComputeEndpoint, ComputeName};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// The lifecycle of every database's compute, over one backend.
pub struct Lifecycle {
    backend: Arc<dyn Backend>,
    wake_timeout: Duration,
    /// The bound on a wake that first brings data back from a warm or
    /// cold tier.
    restore_timeout: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// Per-database state.
struct Slot {
    /// Serialises wake, suspend and delete of this database. Owned guards:
    /// the backend call that holds it runs in its own task.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The endpoint of the running compute, when known to be running.
    endpoint: Mutex<Option<ComputeEndpoint>>,
    /// Clients connected now.
    active: AtomicUsize,
    /// When the last client left (or the compute started).
    idle_since: Mutex<Instant>,
    /// How many times a compute was started for a client.
    wakes: AtomicU64,
}

impl Slot {
    fn new() -> Self {
        Slot {
            lock: Arc::new(tokio::sync::Mutex::new(())),
            endpoint: Mutex::new(None),
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            wakes: AtomicU64::new(0),
        }
    }

    fn cached(&self) -> Option<ComputeEndpoint> {
        lock(&self.endpoint).clone()
    }

    fn set_cached(&self, endpoint: Option<ComputeEndpoint>) {
        *lock(&self.endpoint) = endpoint;
    }
}

/// Poisoning only means a panic elsewhere; the guarded values stay valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held while a client is connected to a database; dropping it marks the
/// client gone (and starts the idle clock when it was the last).
pub struct ActiveClient {
    slot: Arc<Slot>,
}

impl Drop for ActiveClient {
    fn drop(&mut self) {
        if self.slot.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            *lock(&self.slot.idle_since) = Instant::now();
        }
    }
}

/// A snapshot of one database's lifecycle counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleStats {
    /// Clients connected now.
    pub active_clients: usize,
    /// Computes started for clients since the gateway started.
    pub wakes: u64,
    /// Whether the compute is known to be running.
    pub running: bool,
    /// Seconds since the last client left (0 while clients are connected).
    pub idle_secs: u64,
}

impl Lifecycle {
    /// A lifecycle over `backend`; a wake that takes longer than
    /// `wake_timeout` fails with an `Unavailable` error.
    pub fn new(backend: Arc<dyn Backend>, wake_timeout: Duration) -> Self {
        Lifecycle {
            backend,
            wake_timeout,
            restore_timeout: wake_timeout,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Bounds a wake of a warm or cold compute (which is brought back to
    /// the hot tier first) by `restore_timeout` instead.
    pub fn with_restore_timeout(mut self, restore_timeout: Duration) -> Self {
        self.restore_timeout = restore_timeout.max(self.wake_timeout);
        self
    }

    /// The backend this lifecycle drives.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn slot(&self, db: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(db.to_string())
            .or_insert_with(|| Arc::new(Slot::new()))
            .clone()
    }

    /// Registers a client of `db` and returns a running compute's endpoint,
    /// waking it (once, for all concurrent callers) if needed.
    pub async fn connect(&self, db: &str) -> Result<(ComputeEndpoint, ActiveClient), BackendError> {
        let slot = self.slot(db);
        slot.active.fetch_add(1, Ordering::SeqCst);
        let client = ActiveClient { slot: slot.clone() };
        if let Some(endpoint) = slot.cached() {
            return Ok((endpoint, client));
        }
        let guard = slot.lock.clone().lock_owned().await;
        if let Some(endpoint) = slot.cached() {
            return Ok((endpoint, client));
        }
        let endpoint = self.wake_locked(db, &slot, guard).await?;
        slot.wakes.fetch_add(1, Ordering::SeqCst);
        Ok((endpoint, client))
    }

    async fn wake_locked(
        &self,
        db: &str,
        slot: &Arc<Slot>,
        guard: OwnedMutexGuard<()>,
    ) -> Result<ComputeEndpoint, BackendError> {
        let started = Instant::now();
        let (name, slot) = (ComputeName::parse(db), slot.clone());
        // A compute whose data is not on local disk is brought back first
        // (a long call of its own), within `restore_timeout`.
        let away = matches!(
            self.backend.tier(&name).await,
            Ok(Some(tier)) if tier != ogel_plugin_sdk::Tier::Hot
        );
        let limit = if away {
            self.restore_timeout
        } else {
            self.wake_timeout
        };
        let too_slow = format!(
            "the compute for \"{db}\" did not start within {limit:?}; it may still be starting: retry"
        );
        let endpoint = self
            .run_detached(
                guard,
                "start the compute",
                Some((limit, too_slow)),
                move |backend| async move {
                    if away {
                        backend.set_tier(&name, ogel_plugin_sdk::Tier::Hot).await?;
                    }
                    let endpoint = backend.ensure_running(&name).await?;
                    slot.set_cached(Some(endpoint.clone()));
                    *lock(&slot.idle_since) = Instant::now();
                    Ok(endpoint)
                },
            )
            .await?;
        tracing::info!(
            database = db,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compute ready"
        );
        Ok(endpoint)
    }

    /// Runs a backend call in a task of its own that holds the database's
    /// lock. A caller that gives up — a timeout, an API client that
    /// disconnects — never leaves the call half done (a postgres started
    /// but not recorded, or recorded as stopped but still running): the call
    /// finishes, and the next caller queues behind it. A panic in the
    /// backend fails this call only. `limit` bounds the wait, with the
    /// message of the `Unavailable` error given when it is crossed.
    async fn run_detached<T, F, Fut>(
        &self,
        guard: OwnedMutexGuard<()>,
        what: &str,
        limit: Option<(Duration, String)>,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: FnOnce(Arc<dyn Backend>) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>> + Send + 'static,
        T: Send + 'static,
    {
        let future = call(self.backend.clone());
        let task = tokio::spawn(async move {
            let _guard = guard;
            future.await
        });
        let joined = match limit {
            Some((limit, too_slow)) => tokio::time::timeout(limit, task)
                .await
                .map_err(|_| BackendError::unavailable(too_slow))?,
            None => task.await,
        };
        joined.map_err(|e| {
            tracing::error!(error = %e, "backend call panicked");
            BackendError::internal(format!(
                "the backend failed while trying to {what}; see the gateway log"
            ))
        })?
    }

    /// Records that `endpoint` could not be reached (the compute died):
    /// the next `connect` asks the backend again.
    pub fn forget(&self, db: &str, endpoint: &ComputeEndpoint) {
        let slot = self.slot(db);
        let mut cached = lock(&slot.endpoint);
        if cached.as_ref() == Some(endpoint) {
            *cached = None;
        }
    }

    /// Starts the compute (for the API's `wake`) and returns its endpoint.
    pub async fn wake(&self, db: &str) -> Result<ComputeEndpoint, BackendError> {
        let slot = self.slot(db);
        let guard = slot.lock.clone().lock_owned().await;
        if let Some(endpoint) = slot.cached() {
            return Ok(endpoint);
        }
        self.wake_locked(db, &slot, guard).await
    }

    /// Notes a compute that is already running (after a gateway restart
    /// adopted it) so that idle suspend covers it.
    pub async fn adopt(&self, db: &str) -> Result<(), BackendError> {
        self.wake(db).await.map(|_| ())
    }

    /// Suspends the compute now, whoever is connected (their sessions end).
    pub async fn suspend(&self, db: &str) -> Result<(), BackendError> {
        let slot = self.slot(db);
        let guard = slot.lock.clone().lock_owned().await;
        slot.set_cached(None);
        self.suspend_locked(db, guard).await
    }

    /// Stops the compute; the caller holds the lock and cleared the cache.
    async fn suspend_locked(
        &self,
        db: &str,
        guard: OwnedMutexGuard<()>,
    ) -> Result<(), BackendError> {
        let name = ComputeName::parse(db);
        self.run_detached(
            guard,
            "suspend the compute",
            None,
            move |backend| async move { backend.suspend(&name).await },
        )
        .await
    }

    /// Suspends the compute if no client has been connected for `idle`.
    /// Returns whether it suspended.
    pub async fn suspend_if_idle(&self, db: &str, idle: Duration) -> Result<bool, BackendError> {
        let slot = self.slot(db);
        if !self.is_idle(&slot, idle) || slot.cached().is_none() {
            return Ok(false);
        }
        let guard = slot.lock.clone().lock_owned().await;
        let Some(previous) = slot.cached() else {
            return Ok(false);
        };
        slot.set_cached(None);
        if !self.is_idle(&slot, idle) {
            slot.set_cached(Some(previous));
            return Ok(false);
        }
        tracing::info!(
            database = db,
            idle_secs = idle.as_secs(),
            "suspending idle compute"
        );
        self.suspend_locked(db, guard).await?;
        Ok(true)
    }

    fn is_idle(&self, slot: &Slot, idle: Duration) -> bool {
        slot.active.load(Ordering::SeqCst) == 0 && lock(&slot.idle_since).elapsed() >= idle
    }

    /// Deletes the database in the backend, serialised with wakes.
    pub async fn delete(&self, db: &str) -> Result<(), BackendError> {
        let slot = self.slot(db);
        let guard = slot.lock.clone().lock_owned().await;
        slot.set_cached(None);
        let name = db.to_string();
        self.run_detached(
            guard,
            "delete the database",
            None,
            move |backend| async move { backend.delete_database(&name).await },
        )
        .await?;
        lock(&self.slots).remove(db);
        Ok(())
    }

    /// Runs `call` on the backend holding `name`'s lock, with the cached
    /// endpoint cleared: no client is handed the compute meanwhile, and the
    /// next one asks the backend again (branch delete, reset, restore).
    pub async fn exclusive<T, F, Fut>(
        &self,
        name: &str,
        what: &str,
        call: F,
    ) -> Result<T, BackendError>
    where
        F: FnOnce(Arc<dyn Backend>) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>> + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.slot(name);
        let guard = slot.lock.clone().lock_owned().await;
        slot.set_cached(None);
        self.run_detached(guard, what, None, call).await
    }

    /// Makes a standby the compute's primary under the database's lock
    /// (no wake or suspend runs meanwhile) and caches the promoted
    /// endpoint. `seen` is the endpoint the caller found dead: when the
    /// cached one is already another (a client's wake took over first),
    /// that one is returned and nothing is promoted. A planned switchover
    /// passes `None`.
    pub async fn takeover(
        &self,
        db: &str,
        seen: Option<&ComputeEndpoint>,
        why: ogel_plugin_sdk::Takeover,
    ) -> Result<ComputeEndpoint, BackendError> {
        let slot = self.slot(db);
        let guard = slot.lock.clone().lock_owned().await;
        if let (Some(seen), Some(cached)) = (seen, slot.cached()) {
            if &cached != seen {
                return Ok(cached);
            }
        }
        slot.set_cached(None);
        let name = ComputeName::parse(db);
        let promoted = slot.clone();
        self.run_detached(
            guard,
            "promote the standby",
            None,
            move |backend| async move {
                let endpoint = backend.promote(&name, why).await?;
                promoted.set_cached(Some(endpoint.clone()));
                Ok(endpoint)
            },
        )
        .await
    }

    /// The computes known to be running, with their endpoints.
    pub fn running(&self) -> Vec<(String, ComputeEndpoint)> {
        lock(&self.slots)
            .iter()
            .filter_map(|(db, slot)| slot.cached().map(|e| (db.clone(), e)))
            .collect()
    }

    /// Counters for status displays.
    pub fn stats(&self, db: &str) -> LifecycleStats {
        let slot = self.slot(db);
        let active = slot.active.load(Ordering::SeqCst);
        LifecycleStats {
            active_clients: active,
            wakes: slot.wakes.load(Ordering::SeqCst),
            running: slot.cached().is_some(),
            idle_secs: if active == 0 {
                lock(&slot.idle_since).elapsed().as_secs()
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogel_plugin_sdk::{Capabilities, ComputeStatus, Credentials, DatabaseSpec};

    /// The compute names the double was called with, in order.
    type Calls = Mutex<Vec<ComputeName>>;

    /// A backend double that counts starts and stops; starting takes 20 ms
    /// (or `start_delay_ms`), and panics when `panic_on_start` is set.
    #[derive(Default)]
    struct Counting {
        starts: AtomicUsize,
        stops: AtomicUsize,
        running: std::sync::atomic::AtomicBool,
        start_delay_ms: AtomicU64,
        panic_on_start: std::sync::atomic::AtomicBool,
        calls: Calls,
    }

    #[async_trait::async_trait]
    impl Backend for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                suspend: true,
                ..Capabilities::default()
            }
        }
        async fn create_database(&self, _: &DatabaseSpec) -> Result<(), BackendError> {
            Ok(())
        }
        async fn delete_database(&self, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
        async fn ensure_running(&self, db: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
            lock(&self.calls).push(db.clone());
            if self.panic_on_start.load(Ordering::SeqCst) {
                panic!("backend bug");
            }
            if !self.running.load(Ordering::SeqCst) {
                self.starts.fetch_add(1, Ordering::SeqCst);
                let delay = self.start_delay_ms.load(Ordering::SeqCst).max(20);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                self.running.store(true, Ordering::SeqCst);
            }
            Ok(ComputeEndpoint {
                host: "127.0.0.1".into(),
                port: 1,
                database: db.database.clone(),
                generation: 1,
                credentials: Credentials::Password {
                    user: "u".into(),
                    password: "p".into(),
                },
                read_only: None,
                tls: None,
            })
        }
        async fn suspend(&self, db: &ComputeName) -> Result<(), BackendError> {
            lock(&self.calls).push(db.clone());
            if self.running.swap(false, Ordering::SeqCst) {
                self.stops.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        async fn compute_status(&self, _: &ComputeName) -> Result<ComputeStatus, BackendError> {
            Ok(ComputeStatus::default())
        }
    }

    #[tokio::test]
    async fn the_backend_is_called_with_typed_compute_names() {
        let (backend, lifecycle) = lifecycle();
        lifecycle.wake("shop@dev").await.unwrap();
        lifecycle.suspend("shop@dev").await.unwrap();
        lifecycle.wake("shop").await.unwrap();
        assert_eq!(
            *lock(&backend.calls),
            vec![
                ComputeName::new("shop", "dev"),
                ComputeName::new("shop", "dev"),
                ComputeName::main("shop"),
            ]
        );
    }

    fn lifecycle() -> (Arc<Counting>, Arc<Lifecycle>) {
        let backend = Arc::new(Counting::default());
        let lifecycle = Arc::new(Lifecycle::new(backend.clone(), Duration::from_secs(5)));
        (backend, lifecycle)
    }

    #[tokio::test]
    async fn a_wake_that_outlives_its_caller_still_completes_once() {
        let backend = Arc::new(Counting::default());
        backend.start_delay_ms.store(300, Ordering::SeqCst);
        let lifecycle = Lifecycle::new(backend.clone(), Duration::from_millis(50));
        let err = lifecycle
            .connect("slow")
            .await
            .err()
            .expect("caller gives up after 50 ms");
        assert!(
            err.message.contains("did not start within"),
            "{}",
            err.message
        );
        // A caller that is dropped mid-wake does not cancel it either.
        let dropped = tokio::time::timeout(Duration::from_millis(10), lifecycle.wake("slow")).await;
        assert!(dropped.is_err());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            backend.running.load(Ordering::SeqCst),
            "the start ran to completion"
        );
        assert!(lifecycle.stats("slow").running, "and was recorded");
        lifecycle
            .connect("slow")
            .await
            .expect("later clients get the started compute");
        assert_eq!(backend.starts.load(Ordering::SeqCst), 1, "started once");
    }

    #[tokio::test]
    async fn a_panicking_backend_fails_the_call_only() {
        let (backend, lifecycle) = lifecycle();
        backend.panic_on_start.store(true, Ordering::SeqCst);
        let err = lifecycle
            .connect("shop")
            .await
            .err()
            .expect("error, not a panic");
        assert_eq!(err.kind, ogel_plugin_sdk::BackendErrorKind::Internal);
        backend.panic_on_start.store(false, Ordering::SeqCst);
        lifecycle
            .connect("shop")
            .await
            .expect("the lock was released; the next call works");
    }

    #[tokio::test]
    async fn fifty_concurrent_clients_share_one_wake() {
        let (backend, lifecycle) = lifecycle();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let lifecycle = lifecycle.clone();
                tokio::spawn(async move { lifecycle.connect("shop").await.map(|(_, c)| c) })
            })
            .collect();
        let mut clients = Vec::new();
        for task in tasks {
            clients.push(task.await.unwrap().unwrap());
        }
        assert_eq!(backend.starts.load(Ordering::SeqCst), 1);
        assert_eq!(lifecycle.stats("shop").wakes, 1);
        assert_eq!(lifecycle.stats("shop").active_clients, 50);
        drop(clients);
        assert_eq!(lifecycle.stats("shop").active_clients, 0);
    }

    #[tokio::test]
    async fn idle_suspend_spares_connected_clients() {
        let (backend, lifecycle) = lifecycle();
        let (_, client) = lifecycle.connect("shop").await.unwrap();
        assert!(!lifecycle
            .suspend_if_idle("shop", Duration::ZERO)
            .await
            .unwrap());
        assert_eq!(backend.stops.load(Ordering::SeqCst), 0);
        drop(client);
        assert!(!lifecycle
            .suspend_if_idle("shop", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(lifecycle
            .suspend_if_idle("shop", Duration::ZERO)
            .await
            .unwrap());
        assert_eq!(backend.stops.load(Ordering::SeqCst), 1);
        assert!(!lifecycle.stats("shop").running);
        // The next client wakes it again.
        let _client = lifecycle.connect("shop").await.unwrap();
        assert_eq!(backend.starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn racing_connects_and_suspends_never_hand_out_a_stopped_compute() {
        let (backend, lifecycle) = lifecycle();
        for _ in 0..200 {
            let l1 = lifecycle.clone();
            let suspender =
                tokio::spawn(async move { l1.suspend_if_idle("shop", Duration::ZERO).await });
            let (_, client) = lifecycle.connect("shop").await.unwrap();
            suspender.await.unwrap().unwrap();
            // While a client holds the database, the compute must be running.
            assert!(backend.running.load(Ordering::SeqCst));
            drop(client);
        }
    }
}
