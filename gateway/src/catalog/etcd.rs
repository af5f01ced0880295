//! The shared catalog store: etcd, so several gateways see one catalog.
//!
//! [`EtcdStore`] owns three things:
//!
//! - **A thread of its own** (`ogel-etcd`) running a current-thread tokio
//!   runtime with the `etcd_client::Client`. The [`CatalogStore`] trait is
//!   synchronous and is called from async tasks and plain code alike, so a
//!   call is spawned onto that runtime and its answer awaited on a std
//!   channel: the caller's runtime is never `block_on`'d. A write blocks
//!   its caller for one etcd round trip, as redb's fsync does.
//! - **An in-memory mirror** of every record, loaded by one (paged) range
//!   read at connect and kept current by a watch on the prefix, started from
//!   the loaded revision + 1; when the watch breaks it is re-made from where
//!   it stopped, and when etcd has compacted past that point the mirror is
//!   loaded again. Reads are served from the mirror only, so a gateway keeps
//!   serving its clients while etcd is down. A successful write is applied
//!   to the mirror (at the transaction's revision) before it returns, so a
//!   caller reads its own writes; watch events older than what the mirror
//!   holds for a key are ignored.
//! - **Fences.** Every write is one etcd transaction (a put or delete per
//!   op, all or nothing) guarded by `create_revision(fence.key) ==
//!   fence.create_revision` for each fence in force: the store-wide one
//!   ([`EtcdStore::set_fence`], the node's registration key), the task-local
//!   one ([`with_fence`], the leader key) and a per-call one
//!   ([`EtcdStore::write_fenced`]). A failed compare is
//!   [`CatalogError::Fenced`] and writes nothing.
//!
//! Keys are `{prefix}/catalog/{table}/{key}` ([`Table::name`]); values are
//! the JSON bytes [`Catalog`](super::Catalog) hands over. While etcd is
//! unreachable (or has no quorum) a write fails within the store's timeout
//! with [`CatalogError::Store`] (`write to etcd`) whose source says so; it
//! never hangs. A write that timed out may still have been applied by etcd:
//! the watch then brings it into the mirror.

use super::{CatalogError, CatalogStore, Table, WriteOp};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{mpsc, Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// A guard on writes: the write applies only while `key` still exists with
/// this creation revision (a lease-bound key re-created by someone else, or
/// gone with its lease, no longer matches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The etcd key (full, with its prefix).
    pub key: String,
    /// Its `create_revision` when this gateway made it.
    pub create_revision: i64,
}

tokio::task_local! {
    static TASK_FENCE: Fence;
}

/// Runs `f` with `fence` on every catalog write it issues (on its own task;
/// tasks it spawns do not inherit it), in addition to the store-wide fence.
/// An inner `with_fence` replaces an outer one.
pub async fn with_fence<F: Future>(fence: Fence, f: F) -> F::Output {
    TASK_FENCE.scope(fence, f).await
}

/// Why etcd did not serve a request: the `source` of a
/// [`CatalogError::Store`] from this store.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No answer (or only transient failures: connection refused, no
    /// leader) within the store's timeout.
    #[error("etcd at {endpoints}: not reachable ({cause}); start etcd or fix [cluster] etcd")]
    Unreachable {
        /// The endpoints, as configured.
        endpoints: String,
        /// What was seen: the timeout and the last error.
        cause: String,
    },
    /// etcd answered with an error that retrying would not change (a
    /// transaction over `--max-txn-ops`, a full backend, no permission).
    #[error("etcd at {endpoints} refused the request")]
    Refused {
        /// The endpoints, as configured.
        endpoints: String,
        /// etcd's (or the client's) error.
        #[source]
        source: etcd_client::Error,
    },
    /// An endpoint is not a usable URL.
    #[error("etcd endpoints {endpoints} are not usable; fix [cluster] etcd")]
    BadEndpoint {
        /// The endpoints, as configured.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// No endpoint was given.
    #[error("no etcd endpoint configured; set [cluster] etcd")]
    NoEndpoints,
    /// The store's thread is gone (it could not start, or it stopped).
    #[error("the etcd store's thread has stopped")]
    Stopped,
}

/// What a cluster module needs to share this store's etcd connection.
#[derive(Clone)]
pub struct ClientHandle {
    /// A clone of the store's client (clones are cheap and share the
    /// connections). Usable from any runtime: its connections are driven by
    /// the store's thread, so it works as long as the store lives.
    pub client: Client,
    /// The store thread's runtime: spawn long-lived etcd tasks (lease
    /// keep-alives, campaigns) here; they stop when the store is dropped.
    pub runtime: tokio::runtime::Handle,
    /// The store's prefix (no trailing `/`); the catalog lives under
    /// `{prefix}/catalog/`, other keys of the cluster go beside it.
    pub prefix: String,
    /// The store's timeout for one etcd request.
    pub timeout: Duration,
}

/// A catalog in etcd, read from an in-memory mirror; see the module doc.
pub struct EtcdStore {
    shared: Arc<Shared>,
    client: Client,
    runtime: tokio::runtime::Handle,
    prefix: String,
    fence: RwLock<Option<Fence>>,
    /// Dropped with the store: ends the store's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What the store's thread and its callers share.
struct Shared {
    mirror: RwLock<Mirror>,
    /// `{prefix}/catalog/`.
    catalog_prefix: String,
    /// The endpoints, joined, for messages.
    endpoints: String,
    timeout: Duration,
}

/// One key's last known state; `value: None` is a deletion kept until the
/// watch has passed it (so an older event cannot bring the key back).
struct Entry {
    value: Option<Vec<u8>>,
    revision: i64,
}

#[derive(Default)]
struct Mirror {
    tables: [BTreeMap<String, Entry>; Table::ALL.len()],
    /// Every event up to this revision has been applied (load or watch):
    /// the watch restarts after it.
    watched: i64,
    /// The highest revision applied, own writes included.
    applied: i64,
    /// Deletions kept (see [`Entry`]).
    tombstones: usize,
}

/// The table's place in [`Mirror::tables`] (its place in [`Table::ALL`]).
fn slot(table: Table) -> usize {
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0)
}

impl Mirror {
    /// Applies one change unless the mirror already holds that key at the
    /// same or a later revision.
    fn apply(&mut self, table: Table, key: String, value: Option<Vec<u8>>, revision: i64) {
        let map = &mut self.tables[slot(table)];
        if let Some(e) = map.get(&key) {
            if e.revision >= revision {
                return;
            }
            if e.value.is_none() {
                self.tombstones -= 1;
            }
        }
        if value.is_none() {
            self.tombstones += 1;
        }
        map.insert(key, Entry { value, revision });
        self.applied = self.applied.max(revision);
    }

    /// The watch has delivered everything up to `revision`.
    fn watched_up_to(&mut self, revision: i64) {
        if revision <= self.watched {
            return;
        }
        self.watched = revision;
        self.applied = self.applied.max(revision);
        if self.tombstones > 0 {
            for map in &mut self.tables {
                map.retain(|_, e| e.value.is_some() || e.revision > revision);
            }
            self.tombstones = self
                .tables
                .iter()
                .map(|m| m.values().filter(|e| e.value.is_none()).count())
                .sum();
        }
    }

    /// Replaces the contents with a snapshot read at `revision`, keeping
    /// what the mirror learnt after it (own writes that raced the load).
    fn replace(&mut self, snapshot: Vec<(Table, String, Vec<u8>, i64)>, revision: i64) {
        let mut tables: [BTreeMap<String, Entry>; Table::ALL.len()] = Default::default();
        for (table, key, value, rev) in snapshot {
            tables[slot(table)].insert(
                key,
                Entry {
                    value: Some(value),
                    revision: rev,
                },
            );
        }
        for (old, new) in self.tables.iter_mut().zip(tables.iter_mut()) {
            for (key, entry) in std::mem::take(old) {
                if entry.revision > revision {
                    new.insert(key, entry);
                }
            }
        }
        self.tables = tables;
        self.tombstones = self
            .tables
            .iter()
            .map(|m| m.values().filter(|e| e.value.is_none()).count())
            .sum();
        self.watched = revision;
        self.applied = self.applied.max(revision);
    }
}

impl Shared {
    fn mirror(&self) -> std::sync::RwLockReadGuard<'_, Mirror> {
        self.mirror.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn mirror_mut(&self) -> std::sync::RwLockWriteGuard<'_, Mirror> {
        self.mirror.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, table: Table, key: &str) -> String {
        format!("{}{}/{key}", self.catalog_prefix, table.name())
    }

    /// `(table, key)` of a full etcd key under the catalog prefix.
    fn parse(&self, full: &[u8]) -> Option<(Table, String)> {
        let rest = std::str::from_utf8(full)
            .ok()?
            .strip_prefix(&self.catalog_prefix)?;
        let (name, key) = rest.split_once('/')?;
        let table = Table::ALL.into_iter().find(|t| t.name() == name)?;
        Some((table, key.to_string()))
    }

    fn unreachable(&self, action: &'static str, cause: String) -> CatalogError {
        CatalogError::Store {
            action,
            source: Box::new(EtcdError::Unreachable {
                endpoints: self.endpoints.clone(),
                cause,
            }),
        }
    }

    fn refused(&self, action: &'static str, source: etcd_client::Error) -> CatalogError {
        CatalogError::Store {
            action,
            source: Box::new(EtcdError::Refused {
                endpoints: self.endpoints.clone(),
                source,
            }),
        }
    }
}

/// The key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a failed request may succeed if sent again (connection refused,
/// no leader, a member going away, a paged read overtaken by a compaction);
/// other errors are the request's own.
fn transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Aborted
                | Code::Cancelled
                | Code::OutOfRange
        ),
        _ => false,
    }
}

/// An etcd error on one line: a gRPC status as code and message, anything
/// else with its causes.
fn describe(e: &etcd_client::Error) -> String {
    if let etcd_client::Error::GRpcStatus(s) = e {
        return format!("{:?}: {}", s.code(), s.message());
    }
    chain(e)
}

use crate::report::chain;

fn no_answer(timeout: Duration, last: Option<String>) -> String {
    match last {
        Some(last) => format!("no answer within {timeout:?}; last error: {last}"),
        None => format!("no answer within {timeout:?}"),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the store's timeout
/// has passed (the last transient error is kept for the message).
///
/// Each attempt gets a third of the timeout: a request caught in a leader
/// change waits for etcd's own request timeout (seconds) otherwise, while a
/// new leader is usually there in about one election timeout. Sending a
/// write again is safe: its puts and deletes set a state, and its fences
/// compare the same revisions.
async fn with_retries<T, Fut>(
    shared: &Shared,
    action: &'static str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, CatalogError>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + shared.timeout;
    let per_attempt = (shared.timeout / 3).max(Duration::from_millis(200));
    let mut delay = Duration::from_millis(25);
    let mut last = None;
    loop {
        let until = deadline.min(Instant::now() + per_attempt);
        match tokio::time::timeout_at(until, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if transient(&e) => last = Some(describe(&e)),
            Ok(Err(e)) => return Err(shared.refused(action, e)),
            Err(_) => {
                // An error seen before says more than a silence.
                last.get_or_insert_with(|| {
                    format!("an attempt had no answer within {per_attempt:?}")
                });
                // Straight to the next attempt.
                if Instant::now() < deadline {
                    continue;
                }
                break;
            }
        }
        if Instant::now() + delay >= deadline {
            break;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(400));
    }
    Err(shared.unreachable(action, no_answer(shared.timeout, last)))
}

/// One range read of the whole catalog, in pages at one revision; returns
/// the records and that revision.
#[allow(clippy::type_complexity)]
async fn read_all(
    client: &Client,
    shared: &Shared,
) -> Result<(Vec<(Table, String, Vec<u8>, i64)>, i64), etcd_client::Error> {
    const PAGE: i64 = 1000;
    let mut kv = client.kv_client();
    let end = prefix_end(&shared.catalog_prefix);
    let mut from = shared.catalog_prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut out = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut resp = kv.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = resp.more();
        let kvs: Vec<KeyValue> = resp.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        for kv in kvs {
            if let Some((table, key)) = shared.parse(kv.key()) {
                let rev = kv.mod_revision();
                let (_, value) = kv.into_key_value();
                out.push((table, key, value, rev));
            }
        }
        if !more {
            return Ok((out, revision));
        }
    }
}

/// Loads the mirror afresh (retrying within the timeout).
async fn load(client: &Client, shared: &Shared) -> Result<(), CatalogError> {
    let (snapshot, revision) = with_retries(shared, "read the catalog from etcd", || {
        read_all(client, shared)
    })
    .await?;
    shared.mirror_mut().replace(snapshot, revision);
    Ok(())
}

/// How a watch ended.
enum WatchEnd {
    /// etcd compacted past where it would start: load again.
    Compacted,
    /// The stream broke (member gone, no leader): re-make it.
    Broken(String),
}

/// Keeps the mirror current for as long as the store lives.
async fn watch_forever(client: Client, shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    let mut broken = false;
    loop {
        match watch_once(&client, &shared, &mut broken, &mut delay).await {
            WatchEnd::Compacted => {
                tracing::info!("etcd catalog watch: compacted past the mirror; reloading");
                let mut warned = false;
                loop {
                    match load(&client, &shared).await {
                        Ok(()) => break,
                        Err(e) => {
                            if !warned {
                                tracing::warn!(error = %chain(&e), "etcd catalog reload failed; retrying");
                                warned = true;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
            WatchEnd::Broken(why) => {
                if !broken {
                    tracing::warn!(reason = %why, "etcd catalog watch broke; serving from the mirror while it is re-made");
                    broken = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One watch stream, from the mirror's watched revision + 1 until it ends.
async fn watch_once(
    client: &Client,
    shared: &Shared,
    broken: &mut bool,
    delay: &mut Duration,
) -> WatchEnd {
    let start = shared.mirror().watched + 1;
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    let mut watcher = client.watch_client();
    let made = tokio::time::timeout(
        shared.timeout,
        watcher.watch(shared.catalog_prefix.clone(), Some(options)),
    )
    .await;
    let mut stream = match made {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return WatchEnd::Broken(describe(&e)),
        Err(_) => return WatchEnd::Broken(no_answer(shared.timeout, None)),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return WatchEnd::Broken("the watch stream ended".into()),
            Err(e) => return WatchEnd::Broken(describe(&e)),
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return WatchEnd::Compacted;
            }
            return WatchEnd::Broken(format!("canceled: {}", resp.cancel_reason()));
        }
        if resp.created() {
            *delay = Duration::from_millis(100);
            if *broken {
                tracing::info!(from_revision = start, "etcd catalog watch re-made");
                *broken = false;
            }
            continue;
        }
        let events = resp.events();
        let mut mirror = shared.mirror_mut();
        let mut last = 0;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            last = last.max(kv.mod_revision());
            let Some((table, key)) = shared.parse(kv.key()) else {
                continue;
            };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            mirror.apply(table, key, value, kv.mod_revision());
        }
        if events.is_empty() {
            // A progress notification: nothing at or below it is to come.
            last = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        mirror.watched_up_to(last);
    }
}

/// One write, as the store's thread runs it.
struct Write {
    ops: Vec<(Table, String, Option<Vec<u8>>)>,
    fences: Vec<Fence>,
    /// Keys that must hold exactly these values (`None`: absent).
    expect: Vec<(Table, String, Option<Vec<u8>>)>,
}

async fn write(client: Client, shared: Arc<Shared>, w: Write) -> Result<(), CatalogError> {
    const ACTION: &str = "write to etcd";
    let mut compares: Vec<Compare> = w
        .fences
        .iter()
        .map(|f| Compare::create_revision(f.key.as_str(), CompareOp::Equal, f.create_revision))
        .collect();
    compares.extend(w.expect.iter().map(|(table, key, value)| {
        let key = shared.key(*table, key);
        match value {
            Some(v) => Compare::value(key, CompareOp::Equal, v.clone()),
            None => Compare::version(key, CompareOp::Equal, 0),
        }
    }));
    let then: Vec<TxnOp> = w
        .ops
        .iter()
        .map(|(table, key, value)| {
            let key = shared.key(*table, key);
            match value {
                Some(v) => TxnOp::put(key, v.clone(), None),
                None => TxnOp::delete(key, None),
            }
        })
        .collect();
    // On a failed compare, read the fence keys to say which one failed.
    let otherwise: Vec<TxnOp> = w
        .fences
        .iter()
        .map(|f| TxnOp::get(f.key.as_str(), None))
        .collect();
    let fences_held = |resp: &TxnResponse| {
        resp.op_responses()
            .into_iter()
            .zip(w.fences.iter())
            .all(|(r, f)| match r {
                TxnOpResponse::Get(g) => {
                    g.kvs().first().map_or(0, KeyValue::create_revision) == f.create_revision
                }
                _ => false,
            })
    };
    let txn = Txn::new().when(compares).and_then(then).or_else(otherwise);
    let resp: TxnResponse = with_retries(&shared, ACTION, || {
        let mut kv = client.kv_client();
        let txn = txn.clone();
        async move { kv.txn(txn).await }
    })
    .await?;
    if !resp.succeeded() && fences_held(&resp) {
        if let Some((table, key, _)) = w.expect.first() {
            return Err(CatalogError::Changed {
                key: format!("{}/{key}", table.name()),
            });
        }
    }
    if !resp.succeeded() {
        let held: Vec<i64> = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map_or(0, KeyValue::create_revision),
                _ => 0,
            })
            .collect();
        let key = w
            .fences
            .iter()
            .zip(held.iter().chain(std::iter::repeat(&0)))
            .find(|(f, held)| f.create_revision != **held)
            .or_else(|| w.fences.first().map(|f| (f, &0)))
            .map(|(f, _)| f.key.clone())
            .unwrap_or_default();
        return Err(CatalogError::Fenced { key });
    }
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let mut mirror = shared.mirror_mut();
    for (table, key, value) in w.ops {
        mirror.apply(table, key, value, revision);
    }
    Ok(())
}

/// How long a caller waits past the store's own timeout before giving up on
/// its thread.
const GRACE: Duration = Duration::from_secs(2);

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port`), loads the
    /// catalog under `prefix` into the mirror and starts watching it. Fails
    /// within about `timeout` (also the bound of every later write) when
    /// etcd is unreachable, with an error naming the endpoints.
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, CatalogError> {
        const ACTION: &str = "connect to etcd";
        if endpoints.is_empty() {
            return Err(CatalogError::Store {
                action: ACTION,
                source: Box::new(EtcdError::NoEndpoints),
            });
        }
        let prefix = prefix.trim_end_matches('/').to_string();
        let shared = Arc::new(Shared {
            mirror: RwLock::new(Mirror::default()),
            catalog_prefix: format!("{prefix}/catalog/"),
            endpoints: endpoints.join(", "),
            timeout,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("ogel-etcd")
            .build()
            .map_err(|e| CatalogError::Store {
                action: "start the etcd store's runtime",
                source: Box::new(e),
            })?;
        let handle = runtime.handle().clone();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Client, CatalogError>>(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let endpoints = endpoints.to_vec();
        std::thread::Builder::new()
            .name("ogel-etcd".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let client = match start(&endpoints, &thread_shared).await {
                        Ok(client) => client,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let watch = tokio::spawn(watch_forever(client.clone(), thread_shared));
                    if ready_tx.send(Ok(client)).is_err() {
                        watch.abort();
                        return;
                    }
                    // Until the store is dropped; spawned writes run meanwhile.
                    let _ = stop_rx.await;
                    watch.abort();
                });
            })
            .map_err(|e| CatalogError::Store {
                action: "start the etcd store's thread",
                source: Box::new(e),
            })?;
        let client = match ready_rx.recv_timeout(timeout + GRACE) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(shared.unreachable(ACTION, no_answer(timeout, None)))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CatalogError::Store {
                    action: ACTION,
                    source: Box::new(EtcdError::Stopped),
                })
            }
        };
        Ok(EtcdStore {
            shared,
            client,
            runtime: handle,
            prefix,
            fence: RwLock::new(None),
            _stop: stop_tx,
        })
    }

    /// Sets (or clears) the fence every write of this store carries: the
    /// node's own registration key.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().unwrap_or_else(PoisonError::into_inner) = fence;
    }

    /// Applies `ops` in one transaction guarded by `fence` as well as the
    /// store-wide fence and the task's ([`with_fence`]).
    pub fn write_fenced(&self, ops: &[WriteOp<'_>], fence: &Fence) -> Result<(), CatalogError> {
        self.write_with(ops, Some(fence))
    }

    /// The mirror's last applied revision (the watch's, or a later own
    /// write's).
    pub fn revision(&self) -> i64 {
        self.shared.mirror().applied
    }

    /// This store's etcd connection, for a cluster module to share.
    pub fn client_handle(&self) -> ClientHandle {
        ClientHandle {
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            prefix: self.prefix.clone(),
            timeout: self.shared.timeout,
        }
    }

    fn write_with(&self, ops: &[WriteOp<'_>], extra: Option<&Fence>) -> Result<(), CatalogError> {
        self.write_checked(&[], ops, extra)
    }

    fn write_checked(
        &self,
        expect: &[WriteOp<'_>],
        ops: &[WriteOp<'_>],
        extra: Option<&Fence>,
    ) -> Result<(), CatalogError> {
        const ACTION: &str = "write to etcd";
        let mut fences = Vec::new();
        if let Some(f) = self
            .fence
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            fences.push(f);
        }
        if let Ok(f) = TASK_FENCE.try_with(Fence::clone) {
            fences.push(f);
        }
        fences.extend(extra.cloned());
        fences.dedup();
        // etcd refuses a key twice in one transaction: the last op wins, as
        // it would applied in order.
        let mut last: BTreeMap<(usize, &str), usize> = BTreeMap::new();
        for (i, (table, key, _)) in ops.iter().enumerate() {
            last.insert((slot(*table), *key), i);
        }
        let ops: Vec<(Table, String, Option<Vec<u8>>)> = ops
            .iter()
            .enumerate()
            .filter(|(i, (table, key, _))| last.get(&(slot(*table), *key)) == Some(i))
            .map(|(_, (table, key, value))| (*table, key.to_string(), value.clone()))
            .collect();
        let (tx, rx) = mpsc::sync_channel(1);
        let task = write(
            self.client.clone(),
            self.shared.clone(),
            Write {
                ops,
                fences,
                expect: expect
                    .iter()
                    .map(|(table, key, value)| (*table, key.to_string(), value.clone()))
                    .collect(),
            },
        );
        self.runtime.spawn(async move {
            let _ = tx.send(task.await);
        });
        match rx.recv_timeout(self.shared.timeout + GRACE) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self
                .shared
                .unreachable(ACTION, no_answer(self.shared.timeout, None))),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CatalogError::Store {
                action: ACTION,
                source: Box::new(EtcdError::Stopped),
            }),
        }
    }
}

/// Connects and loads the mirror, on the store's thread.
async fn start(endpoints: &[String], shared: &Shared) -> Result<Client, CatalogError> {
    const ACTION: &str = "connect to etcd";
    let options = ConnectOptions::new()
        .with_connect_timeout(shared.timeout)
        // etcd refuses pings more often than every 5 s by default.
        .with_keep_alive(Duration::from_secs(10), shared.timeout)
        .with_require_leader(true);
    let client =
        match tokio::time::timeout(shared.timeout, Client::connect(endpoints, Some(options))).await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) if transient(&e) => return Err(shared.unreachable(ACTION, describe(&e))),
            Ok(Err(source)) => {
                return Err(CatalogError::Store {
                    action: ACTION,
                    source: Box::new(EtcdError::BadEndpoint {
                        endpoints: shared.endpoints.clone(),
                        source,
                    }),
                })
            }
            Err(_) => return Err(shared.unreachable(ACTION, no_answer(shared.timeout, None))),
        };
    match load(&client, shared).await {
        Ok(()) => Ok(client),
        // Say "connect", not "read": nothing was read yet.
        Err(CatalogError::Store { source, .. }) => Err(CatalogError::Store {
            action: ACTION,
            source,
        }),
        Err(e) => Err(e),
    }
}

impl CatalogStore for EtcdStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        Ok(self.shared.mirror().tables[slot(table)]
            .get(key)
            .and_then(|e| e.value.clone()))
    }

    fn list(&self, table: Table) -> Result<Vec<Vec<u8>>, CatalogError> {
        Ok(self.shared.mirror().tables[slot(table)]
            .values()
            .filter_map(|e| e.value.clone())
            .collect())
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> Result<(), CatalogError> {
        self.write_with(ops, None)
    }

    fn write_if(&self, expect: &[WriteOp<'_>], ops: &[WriteOp<'_>]) -> Result<(), CatalogError> {
        self.write_checked(expect, ops, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("a/catalog/"), b"a/catalog0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn mirror_ignores_older_events_and_keeps_deletes_until_watched() {
        let mut m = Mirror::default();
        m.apply(Table::Databases, "a".into(), Some(b"1".to_vec()), 5);
        m.apply(Table::Databases, "a".into(), Some(b"0".to_vec()), 4);
        assert_eq!(m.tables[0]["a"].value.as_deref(), Some(&b"1"[..]));
        m.apply(Table::Databases, "a".into(), None, 7);
        // A late event from before the delete does not bring it back.
        m.apply(Table::Databases, "a".into(), Some(b"1".to_vec()), 6);
        assert!(m.tables[0]["a"].value.is_none());
        assert_eq!(m.tombstones, 1);
        m.watched_up_to(7);
        assert!(m.tables[0].is_empty());
        assert_eq!(m.tombstones, 0);
        assert_eq!(m.applied, 7);
    }

    #[test]
    fn replace_keeps_writes_newer_than_the_snapshot() {
        let mut m = Mirror::default();
        m.apply(Table::Roles, "old".into(), Some(b"x".to_vec()), 3);
        m.apply(Table::Roles, "raced".into(), Some(b"y".to_vec()), 12);
        m.replace(vec![(Table::Roles, "kept".into(), b"z".to_vec(), 9)], 10);
        let keys: Vec<_> = m.tables[1].keys().cloned().collect();
        assert_eq!(keys, vec!["kept", "raced"]);
        assert_eq!(m.watched, 10);
        assert_eq!(m.applied, 12);
    }
}
