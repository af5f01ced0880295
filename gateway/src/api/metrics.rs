//! Prometheus metrics at `/metrics` (text exposition format 0.0.4),
//! rendered on each scrape from the pools' counters: clients, server
//! connections, waits (with a histogram), transactions, queries, bytes.

use crate::pool::registry::{count_clients, ConnState};
use crate::pool::Pools;
use ogel_policies::pool::{PoolCounters, WAIT_BUCKETS};
use ogel_policies::warm::Predictor;
use ogel_policies::warm::PrewakeStats;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads one counter of a pool.
type Field = fn(&PoolCounters) -> &AtomicU64;

/// Counters exported per database: (name, help, field).
const COUNTERS: [(&str, &str, Field); 9] = [
    ("ogel_transactions_total", "Transactions completed.", |c| {
        &c.transactions
    }),
    (
        "ogel_queries_total",
        "Query or Sync cycles completed.",
        |c| &c.queries,
    ),
    (
        "ogel_client_bytes_total",
        "Bytes received from clients.",
        |c| &c.bytes_in,
    ),
    (
        "ogel_server_bytes_total",
        "Bytes received from servers.",
        |c| &c.bytes_out,
    ),
    (
        "ogel_waits_total",
        "Server connection requests that had to queue.",
        |c| &c.waits,
    ),
    (
        "ogel_queue_timeouts_total",
        "Clients refused after the queue timeout.",
        |c| &c.queue_timeouts,
    ),
    (
        "ogel_server_connections_opened_total",
        "Server connections opened.",
        |c| &c.servers_opened,
    ),
    (
        "ogel_server_connections_closed_total",
        "Server connections closed.",
        |c| &c.servers_closed,
    ),
    (
        "ogel_pinned_clients_total",
        "Clients that kept a server connection for a session-only feature.",
        |c| &c.pinned_clients,
    ),
];

/// The exposition text being written.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
            return;
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// The exposition text; `archives`: each database's continuous WAL
/// archive, for backends that keep one.
pub fn render(
    pools: &Pools,
    predictor: &Predictor,
    archives: &[(String, ogel_plugin_sdk::ArchiveStatus)],
) -> String {
    let mut out = Exposition(String::with_capacity(4096));
    let pool_list: Vec<_> = pools
        .all()
        .into_iter()
        .map(|db| {
            let snapshot = db.pool.snapshot();
            (db, snapshot)
        })
        .collect();
    let clients = pools.clients.list();

    out.family(
        "ogel_clients",
        "gauge",
        "Clients connected, by database and state.",
    );
    for (db, _) in &pool_list {
        for state in [
            ConnState::Active,
            ConnState::Waiting,
            ConnState::Idle,
            ConnState::Parked,
        ] {
            let n = count_clients(&clients, &db.name, state);
            out.sample(
                "ogel_clients",
                &[("database", &db.name), ("state", state.as_str())],
                n,
            );
        }
    }
    out.family(
        "ogel_servers",
        "gauge",
        "Server connections, by database and state.",
    );
    for (db, snap) in &pool_list {
        for (state, n) in [
            ("active", snap.active),
            ("idle", snap.idle),
            ("opening", snap.opening),
        ] {
            out.sample(
                "ogel_servers",
                &[("database", &db.name), ("state", state)],
                n,
            );
        }
    }
    out.family(
        "ogel_pool_size",
        "gauge",
        "Configured server connections per database.",
    );
    for (db, snap) in &pool_list {
        out.sample(
            "ogel_pool_size",
            &[("database", &db.name)],
            snap.settings.size,
        );
    }
    out.family("ogel_pool_paused", "gauge", "1 while PAUSE is in force.");
    for (db, snap) in &pool_list {
        out.sample(
            "ogel_pool_paused",
            &[("database", &db.name)],
            u8::from(snap.paused),
        );
    }
    for (name, help, field) in COUNTERS {
        out.family(name, "counter", help);
        for (db, _) in &pool_list {
            let value = field(&db.pool.counters).load(Ordering::Relaxed);
            out.sample(name, &[("database", &db.name)], value);
        }
    }

    out.family(
        "ogel_wait_seconds",
        "histogram",
        "Time clients waited for a server connection.",
    );
    for (db, _) in &pool_list {
        let c = &db.pool.counters;
        let mut cumulative = 0;
        for (i, bucket) in c.wait_buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = WAIT_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |le| le.to_string());
            out.sample(
                "ogel_wait_seconds_bucket",
                &[("database", &db.name), ("le", &le)],
                cumulative,
            );
        }
        let sum = c.wait_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.sample("ogel_wait_seconds_sum", &[("database", &db.name)], sum);
        out.sample(
            "ogel_wait_seconds_count",
            &[("database", &db.name)],
            c.acquires.load(Ordering::Relaxed),
        );
    }
    let prewake = predictor.stats();
    type Stat = fn(&PrewakeStats) -> u64;
    let prewake_counters: [(&str, &str, Stat); 3] = [
        (
            "ogel_prewakes_total",
            "Computes woken ahead of their clients' usual arrival.",
            |s| s.prewakes,
        ),
        (
            "ogel_prewake_hits_total",
            "Pre-wakes a client arrived for in time.",
            |s| s.hits,
        ),
        (
            "ogel_prewake_misses_total",
            "Pre-wakes no client arrived for.",
            |s| s.misses,
        ),
    ];
    for (name, help, get) in prewake_counters {
        out.family(name, "counter", help);
        for (compute, stats) in &prewake {
            out.sample(name, &[("compute", compute)], get(stats));
        }
    }
    out.family(
        "ogel_clients_connected",
        "gauge",
        "Clients connected to any database.",
    );
    out.sample("ogel_clients_connected", &[], clients.len());
    out.family(
        "ogel_archive_pending_files",
        "gauge",
        "WAL files not yet durable in the cold tier, by database.",
    );
    for (database, archive) in archives {
        out.sample(
            "ogel_archive_pending_files",
            &[("database", database)],
            archive.pending_files,
        );
    }
    out.family(
        "ogel_archive_lag_seconds",
        "gauge",
        "Age of the oldest WAL file not yet durable in the cold tier, by database.",
    );
    for (database, archive) in archives {
        out.sample(
            "ogel_archive_lag_seconds",
            &[("database", database)],
            archive.lag_seconds,
        );
    }
    out.0
}

/// The cluster's gauges (only when several gateways run together): this
/// node's role, the generation, etcd reachability, fenced writes.
pub fn render_cluster(view: &crate::cluster::ClusterView) -> String {
    use crate::cluster::Role;
    let mut out = Exposition(String::with_capacity(512));
    if view.role == Role::Single {
        return out.0;
    }
    let families: [(&str, &str, &str, i64); 6] = [
        ("ogel_cluster_leader", "gauge", "1 while this gateway leads the cluster.", i64::from(view.role == Role::Leader)),
        ("ogel_cluster_isolated", "gauge", "1 while this gateway cannot renew its lease (no control-plane work; clients still served).", i64::from(view.role == Role::Isolated)),
        ("ogel_cluster_etcd_reachable", "gauge", "1 while etcd answers.", i64::from(view.etcd_reachable)),
        ("ogel_cluster_generation", "gauge", "The leader's generation (its key's etcd create revision).", view.generation.unwrap_or(0)),
        ("ogel_cluster_nodes", "gauge", "Live gateways this one sees.", view.nodes.len() as i64),
        ("ogel_cluster_fenced_writes_total", "counter", "Leader beats of this gateway refused by the leader fence (a deposed leader's late writes).", view.fenced_writes as i64),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        out.sample(name, &[("node", view.node.as_str())], value);
    }
    out.0
}

/// Failovers done by this gateway's watch, how long the last one took,
/// and the data disk's use.
pub fn render_health(standbys: &crate::control::standby::Standbys) -> String {
    use std::sync::atomic::Ordering;
    let mut out = Exposition(String::with_capacity(256));
    out.family(
        "ogel_failovers_total",
        "counter",
        "Dead primaries a standby took over from (this gateway's watch).",
    );
    out.sample(
        "ogel_failovers_total",
        &[],
        standbys.failovers.load(Ordering::Relaxed),
    );
    out.family(
        "ogel_cluster_takeovers_total",
        "counter",
        "Databases of a dead gateway this gateway's standby took over.",
    );
    out.sample(
        "ogel_cluster_takeovers_total",
        &[],
        standbys.placement.takeovers.load(Ordering::Relaxed),
    );
    out.family(
        "ogel_preemptive_switchovers_total",
        "counter",
        "Switchovers the health model called for before the primary failed.",
    );
    out.sample(
        "ogel_preemptive_switchovers_total",
        &[],
        standbys.preemptive_switchovers.load(Ordering::Relaxed),
    );
    out.family(
        "ogel_data_disk_used_ratio",
        "gauge",
        "Used share of the filesystem under the gateway's data directory (a warning is logged at 0.9).",
    );
    out.0.push_str(&format!(
        "ogel_data_disk_used_ratio {:.4}\n",
        crate::control::disk::used_ratio()
    ));
    out.family(
        "ogel_last_failover_milliseconds",
        "gauge",
        "Detection to promoted standby, the last failover.",
    );
    out.sample(
        "ogel_last_failover_milliseconds",
        &[],
        standbys.last_failover_ms.load(Ordering::Relaxed),
    );
    out.0
}
