//! Prometheus metrics at `/metrics` (text exposition format 0.0.4),
//! rendered on each scrape from the pools' counters: clients, server
//! connections, waits (with a histogram), transactions, queries, bytes.

use crate::pooler::registry::ConnState;
use crate::service::Gateway;
use ogel_policies::pool::{PoolCounters, WAIT_BUCKETS};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The exposition text.
pub fn render(gateway: &Gateway) -> String {
    let mut out = String::with_capacity(4096);
    let pools = gateway.pools.all();
    let clients = gateway.pools.clients.list();
    let _ = writeln!(
        out,
        "# HELP ogel_clients Clients connected, by database and state."
    );
    let _ = writeln!(out, "# TYPE ogel_clients gauge");
    for db in &pools {
        for state in [ConnState::Active, ConnState::Waiting, ConnState::Idle] {
            let n = clients
                .iter()
                .filter(|c| c.database == db.name && c.state.get() == state)
                .count();
            let _ = writeln!(
                out,
                "ogel_clients{{database=\"{}\",state=\"{}\"}} {n}",
                db.name,
                state.as_str()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ogel_servers Server connections, by database and state."
    );
    let _ = writeln!(out, "# TYPE ogel_servers gauge");
    for db in &pools {
        let snap = db.pool.snapshot();
        for (state, n) in [
            ("active", snap.active),
            ("idle", snap.idle),
            ("opening", snap.opening),
        ] {
            let _ = writeln!(
                out,
                "ogel_servers{{database=\"{}\",state=\"{state}\"}} {n}",
                db.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ogel_pool_size Configured server connections per database."
    );
    let _ = writeln!(out, "# TYPE ogel_pool_size gauge");
    for db in &pools {
        let _ = writeln!(
            out,
            "ogel_pool_size{{database=\"{}\"}} {}",
            db.name,
            db.pool.snapshot().settings.size
        );
    }
    let _ = writeln!(out, "# HELP ogel_pool_paused 1 while PAUSE is in force.");
    let _ = writeln!(out, "# TYPE ogel_pool_paused gauge");
    for db in &pools {
        let _ = writeln!(
            out,
            "ogel_pool_paused{{database=\"{}\"}} {}",
            db.name,
            u8::from(db.pool.snapshot().paused)
        );
    }

    type Read = fn(&PoolCounters) -> u64;
    let counters: [(&str, &str, Read); 9] = [
        ("ogel_transactions_total", "Transactions completed.", |c| {
            c.transactions.load(Ordering::Relaxed)
        }),
        (
            "ogel_queries_total",
            "Query or Sync cycles completed.",
            |c| c.queries.load(Ordering::Relaxed),
        ),
        (
            "ogel_client_bytes_total",
            "Bytes received from clients.",
            |c| c.bytes_in.load(Ordering::Relaxed),
        ),
        (
            "ogel_server_bytes_total",
            "Bytes received from servers.",
            |c| c.bytes_out.load(Ordering::Relaxed),
        ),
        (
            "ogel_waits_total",
            "Server connection requests that had to queue.",
            |c| c.waits.load(Ordering::Relaxed),
        ),
        (
            "ogel_queue_timeouts_total",
            "Clients refused after the queue timeout.",
            |c| c.queue_timeouts.load(Ordering::Relaxed),
        ),
        (
            "ogel_server_connections_opened_total",
            "Server connections opened.",
            |c| c.servers_opened.load(Ordering::Relaxed),
        ),
        (
            "ogel_server_connections_closed_total",
            "Server connections closed.",
            |c| c.servers_closed.load(Ordering::Relaxed),
        ),
        (
            "ogel_pinned_clients_total",
            "Clients that kept a server connection for a session-only feature.",
            |c| c.pinned_clients.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for db in &pools {
            let _ = writeln!(
                out,
                "{name}{{database=\"{}\"}} {}",
                db.name,
                get(&db.pool.counters)
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP ogel_wait_seconds Time clients waited for a server connection."
    );
    let _ = writeln!(out, "# TYPE ogel_wait_seconds histogram");
    for db in &pools {
        let c = &db.pool.counters;
        let mut cumulative = 0;
        for (i, le) in WAIT_BUCKETS.iter().enumerate() {
            cumulative += c.wait_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "ogel_wait_seconds_bucket{{database=\"{}\",le=\"{le}\"}} {cumulative}",
                db.name
            );
        }
        cumulative += c.wait_buckets[WAIT_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ogel_wait_seconds_bucket{{database=\"{}\",le=\"+Inf\"}} {cumulative}",
            db.name
        );
        let sum = c.wait_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "ogel_wait_seconds_sum{{database=\"{}\"}} {sum}",
            db.name
        );
        let _ = writeln!(
            out,
            "ogel_wait_seconds_count{{database=\"{}\"}} {}",
            db.name,
            c.acquires.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP ogel_clients_connected Clients connected to any database."
    );
    let _ = writeln!(out, "# TYPE ogel_clients_connected gauge");
    let _ = writeln!(out, "ogel_clients_connected {}", clients.len());
    out
}
