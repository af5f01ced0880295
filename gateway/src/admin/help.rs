//! `SHOW HELP`: the console's commands.

use super::Table;

pub(super) fn help() -> Table {
    let rows = [
        ("SHOW POOLS", "clients and server connections per database"),
        ("SHOW CLIENTS", "one row per connected client"),
        ("SHOW SERVERS", "one row per server connection"),
        (
            "SHOW STATS",
            "transactions, queries, bytes and waits per database",
        ),
        ("SHOW CONFIG", "the [pool] configuration in force"),
        ("PAUSE [db]", "finish running transactions, hold new ones"),
        ("RESUME [db]", "let held clients proceed"),
        ("RELOAD", "re-read [pool] from the configuration"),
    ]
    .into_iter()
    .map(|(c, d)| vec![c.to_string(), d.to_string()])
    .collect();
    Table {
        columns: &["command", "description"],
        rows,
    }
}
