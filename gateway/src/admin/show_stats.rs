//! `SHOW STATS`: transactions, queries, bytes and waits per pool.

use super::{Console, Table};
use std::sync::atomic::Ordering;

pub(super) fn stats(console: &Console) -> Table {
    let rows = console
        .pools
        .all()
        .into_iter()
        .map(|db| {
            let c = &db.pool.counters;
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let waits = get(&c.waits);
            let wait_us = get(&c.wait_micros);
            vec![
                db.name.to_string(),
                get(&c.transactions).to_string(),
                get(&c.queries).to_string(),
                get(&c.bytes_in).to_string(),
                get(&c.bytes_out).to_string(),
                waits.to_string(),
                wait_us.to_string(),
                wait_us
                    .checked_div(get(&c.acquires))
                    .unwrap_or(0)
                    .to_string(),
                get(&c.queue_timeouts).to_string(),
                get(&c.servers_opened).to_string(),
                get(&c.servers_closed).to_string(),
                get(&c.pinned_clients).to_string(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_wait_count",
            "total_wait_time_us",
            "avg_wait_time_us",
            "queue_timeouts",
            "servers_opened",
            "servers_closed",
            "pinned_clients",
        ],
        rows,
    }
}
