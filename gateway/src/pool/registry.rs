//! Who is connected: a registry of live clients and server connections,
//! each entry removed when its owner drops the [`Registered`] guard. Read by
//! `SHOW CLIENTS` / `SHOW SERVERS`; written at connect and disconnect only,
//! never per transaction (states are atomics inside the entries).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Live entries by id.
pub struct Registry<T> {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, Arc<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            next: AtomicU64::new(1),
            entries: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<T> Registry<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<T>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an entry; it stays until the guard is dropped.
    pub fn register(self: &Arc<Self>, make: impl FnOnce(u64) -> T) -> Registered<T> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(make(id));
        self.lock().insert(id, entry.clone());
        Registered {
            registry: self.clone(),
            id,
            entry,
        }
    }

    /// Every live entry, oldest first.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.lock().values().cloned().collect()
    }
}

/// Keeps an entry registered.
pub struct Registered<T> {
    registry: Arc<Registry<T>>,
    /// The entry's id.
    pub id: u64,
    /// The entry.
    pub entry: Arc<T>,
}

impl<T> Drop for Registered<T> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A connection's state, as SHOW CLIENTS / SHOW SERVERS print it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Connected, no server connection (client) / in the pool (server).
    Idle = 0,
    /// Waiting for a server connection.
    Waiting = 1,
    /// Linked to a server connection (client) / in use (server).
    Active = 2,
    /// Idle and parked: no task of its own until it sends (client).
    Parked = 3,
}

impl ConnState {
    /// As shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Waiting => "waiting",
            ConnState::Active => "active",
            ConnState::Parked => "parked",
        }
    }
}

/// An atomic [`ConnState`].
#[derive(Default)]
pub struct AtomicState(AtomicU8);

impl AtomicState {
    /// Sets the state.
    pub fn set(&self, state: ConnState) {
        self.0.store(state as u8, Ordering::Relaxed);
    }
    /// Reads the state.
    pub fn get(&self) -> ConnState {
        match self.0.load(Ordering::Relaxed) {
            1 => ConnState::Waiting,
            2 => ConnState::Active,
            3 => ConnState::Parked,
            _ => ConnState::Idle,
        }
    }
}

/// A connected client.
pub struct ClientInfo {
    /// Registry id.
    pub id: u64,
    /// Gateway role.
    pub user: Box<str>,
    /// Database.
    pub database: Arc<str>,
    /// Peer address.
    pub addr: Option<SocketAddr>,
    /// When it connected, in seconds since the Unix epoch (8 bytes, not
    /// a `SystemTime`'s 16: this entry is most of an idle client).
    pub connected_unix: u64,
    /// Its pool mode.
    pub mode: crate::config::PoolMode,
    /// Now.
    pub state: AtomicState,
    /// The id of the server connection it is linked to (0: none).
    pub server: AtomicU64,
    /// application_name as the client set it.
    pub application_name: Mutex<Box<str>>,
    /// Why the client keeps its server connection (empty: it does not).
    pub pinned: Mutex<&'static str>,
}

/// How many of `clients` are connected to `database` in `state`.
pub fn count_clients(clients: &[Arc<ClientInfo>], database: &str, state: ConnState) -> usize {
    clients
        .iter()
        .filter(|c| &*c.database == database && c.state.get() == state)
        .count()
}
