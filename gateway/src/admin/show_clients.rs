//! `SHOW CLIENTS`: one row per connected client, with what pins it.

use super::{Console, Table};
use std::sync::atomic::Ordering;

pub(super) fn clients(console: &Console) -> Table {
    let rows = console
        .pools
        .clients
        .list()
        .into_iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.user.to_string(),
                c.database.to_string(),
                c.state.get().as_str().to_string(),
                c.addr.map(|a| a.to_string()).unwrap_or_default(),
                c.connected_unix.to_string(),
                c.application_name
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .to_string(),
                c.mode.as_str().to_string(),
                c.server.load(Ordering::Relaxed).to_string(),
                c.pinned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .to_string(),
            ]
        })
        .collect();
    Table {
        columns: &[
            "id",
            "user",
            "database",
            "state",
            "addr",
            "connect_time",
            "application_name",
            "pool_mode",
            "server_id",
            "pinned_by",
        ],
        rows,
    }
}
