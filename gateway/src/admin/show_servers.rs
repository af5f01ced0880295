//! `SHOW SERVERS`: one row per server connection, with its compute generation.

use super::{Console, Table};
use crate::names::unix_secs;
use std::sync::atomic::Ordering;

pub(super) fn servers(console: &Console) -> Table {
    let mut rows = Vec::new();
    for db in console.pools.all() {
        for s in db.servers.list() {
            rows.push(vec![
                s.id.to_string(),
                db.name.to_string(),
                s.state.get().as_str().to_string(),
                s.addr.to_string(),
                s.pid.to_string(),
                unix_secs(s.opened_at).to_string(),
                s.client.load(Ordering::Relaxed).to_string(),
                s.generation.to_string(),
            ]);
        }
    }
    Table {
        columns: &[
            "id",
            "database",
            "state",
            "addr",
            "pid",
            "connect_time",
            "client_id",
            "generation",
        ],
        rows,
    }
}
