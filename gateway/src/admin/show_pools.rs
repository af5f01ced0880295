//! `SHOW POOLS`: clients and server connections per pool, PgBouncer's columns.

use super::{Console, Table};
use crate::pool::registry::{count_clients, ConnState};

pub(super) fn pools(console: &Console) -> Table {
    let config = console.pools.config();
    let clients = console.pools.clients.list();
    let rows = console
        .pools
        .all()
        .into_iter()
        .map(|db| {
            let snap = db.pool.snapshot();
            let count_of = |state| count_clients(&clients, &db.name, state);
            let count = |state| count_of(state).to_string();
            vec![
                db.label(),
                config.mode(&db.name, "").as_str().to_string(),
                count(ConnState::Active),
                count(ConnState::Waiting),
                // Parked clients are idle clients without a task.
                (count_of(ConnState::Idle) + count_of(ConnState::Parked)).to_string(),
                snap.active.to_string(),
                snap.idle.to_string(),
                snap.opening.to_string(),
                snap.settings.size.to_string(),
                snap.settings.max_clients.to_string(),
                snap.paused.to_string(),
                snap.max_wait.as_millis().to_string(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "database",
            "pool_mode",
            "cl_active",
            "cl_waiting",
            "cl_idle",
            "sv_active",
            "sv_idle",
            "sv_opening",
            "pool_size",
            "max_clients",
            "paused",
            "maxwait_ms",
        ],
        rows,
    }
}
