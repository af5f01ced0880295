//! `SHOW CONFIG`: the `[pool]` configuration in force.

use super::{Console, Table};

pub(super) fn config(console: &Console) -> Table {
    let config = console.pools.config();
    let value = serde_json::to_value(&config).unwrap_or_default();
    let rows = value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    vec![k.clone(), text]
                })
                .collect()
        })
        .unwrap_or_default();
    Table {
        columns: &["key", "value"],
        rows,
    }
}
