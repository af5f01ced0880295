//! The admin console: a PgBouncer-style virtual database (`ogel`, alias
//! `pgbouncer`) that admins reach with psql as user `ogel` and the API
//! token as password. Simple-query protocol only:
//! `SHOW POOLS | CLIENTS | SERVERS | STATS | CONFIG | HELP`,
//! `PAUSE [db]`, `RESUME [db]`, `RELOAD`.

use crate::control::databases::Gateway;
use crate::error::ClientError;
use crate::pool::registry::{count_clients, ConnState};
use crate::pool::DbPool;
use crate::wire::client_stream::ClientStream;
use crate::wire::messages;
use crate::wire::messages::send;
use crate::wire::startup::{self, ReadError};
use bytes::{BufMut, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The console's user name.
pub const ADMIN_USER: &str = "ogel";
/// Largest console command.
const COMMAND_MAX_BYTES: usize = 64 * 1024;

/// Whether `name` is the console rather than a database.
pub fn is_admin_database(name: &str) -> bool {
    matches!(name, "ogel" | "pgbouncer")
}

/// Rows of text.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

/// Serves an authenticated admin until it disconnects.
pub async fn serve(mut stream: ClientStream, gateway: &Arc<Gateway>) {
    let mut out = BytesMut::new();
    crate::wire::messages::auth_ok(&mut out);
    for (name, value) in [
        ("server_version", "15.0 (ogel admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
    ] {
        messages::parameter_status(&mut out, name, value);
    }
    crate::wire::messages::backend_key_data(&mut out, 0, 0);
    messages::ready_for_query(&mut out, b'I');
    let mut failed_batch = false;
    loop {
        if send(&mut stream, &out).await.is_err() {
            return;
        }
        out.clear();
        let (tag, body) = match startup::read_message(&mut stream, COMMAND_MAX_BYTES).await {
            Ok(m) => m,
            Err(ReadError::Io(_)) => return,
            Err(ReadError::Malformed(m)) => {
                messages::error_response(&mut out, true, "08P01", &m, None);
                let _ = send(&mut stream, &out).await;
                return;
            }
        };
        match tag {
            b'X' => return,
            b'Q' => {
                let sql =
                    String::from_utf8_lossy(body.split(|b| *b == 0).next().unwrap_or_default())
                        .into_owned();
                match run(gateway, &sql).await {
                    Ok((table, tag)) => {
                        if let Some(table) = table {
                            encode(&mut out, &table);
                        }
                        messages::command_complete(&mut out, &tag);
                    }
                    Err(e) => messages::error_response(
                        &mut out,
                        false,
                        e.code,
                        &e.message,
                        e.hint.as_deref(),
                    ),
                }
                messages::ready_for_query(&mut out, b'I');
            }
            b'S' => {
                failed_batch = false;
                messages::ready_for_query(&mut out, b'I');
            }
            _ if failed_batch => {}
            _ => {
                failed_batch = true;
                messages::error_response(
                    &mut out,
                    false,
                    "0A000",
                    "the admin console speaks the simple query protocol only",
                    Some("use psql, or simple queries in your driver"),
                );
            }
        }
    }
}

/// Runs one console command: (rows, CommandComplete tag).
async fn run(gateway: &Arc<Gateway>, sql: &str) -> Result<(Option<Table>, String), ClientError> {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(|w| w.to_string())
        .collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    let arg = words.get(1).map(|w| w.trim_matches('"').to_string());
    let table = match upper.as_slice() {
        ["SHOW", what] => match *what {
            "POOLS" => pools(gateway),
            "CLIENTS" => clients(gateway),
            "SERVERS" => servers(gateway),
            "STATS" => stats(gateway),
            "CONFIG" => config(gateway),
            "HELP" => help(),
            other => return Err(unknown(&format!("SHOW {other}"))),
        },
        ["PAUSE"] | ["PAUSE", _] => {
            let timeout = gateway.pools.config().pause_timeout;
            let pools = targets(gateway, arg.as_deref())?;
            crate::pool::pause_all(&pools, timeout).await.map_err(|e| {
                ClientError::new("55000", format!("PAUSE: {e}"))
                    .hint("retry when long transactions have finished, or raise pool.pause_timeout")
            })?;
            return Ok((None, "PAUSE".into()));
        }
        ["RESUME"] | ["RESUME", _] => {
            for db in targets(gateway, arg.as_deref())? {
                db.pool.resume();
            }
            return Ok((None, "RESUME".into()));
        }
        ["RELOAD"] => {
            gateway
                .reload()
                .map_err(|e| ClientError::new("F0000", format!("RELOAD failed: {e}")))?;
            return Ok((None, "RELOAD".into()));
        }
        _ => return Err(unknown(sql.trim())),
    };
    Ok((Some(table), "SHOW".into()))
}

fn unknown(command: &str) -> ClientError {
    ClientError::new("42601", format!("unknown admin command \"{command}\""))
        .hint("SHOW HELP lists the commands")
}

/// The pools a PAUSE/RESUME names (all existing pools when none).
fn targets(gateway: &Arc<Gateway>, name: Option<&str>) -> Result<Vec<Arc<DbPool>>, ClientError> {
    match name {
        None => Ok(gateway.pools.all()),
        Some(name) => gateway
            .pools_of(name)
            .map_err(|_| ClientError::unknown_database(name)),
    }
}

fn unix(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

fn pools(gateway: &Arc<Gateway>) -> Table {
    let config = gateway.pools.config();
    let clients = gateway.pools.clients.list();
    let rows = gateway
        .pools
        .all()
        .into_iter()
        .map(|db| {
            let snap = db.pool.snapshot();
            let count = |state| count_clients(&clients, &db.name, state).to_string();
            vec![
                db.label(),
                config.mode(&db.name, "").as_str().to_string(),
                count(ConnState::Active),
                count(ConnState::Waiting),
                count(ConnState::Idle),
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

fn clients(gateway: &Arc<Gateway>) -> Table {
    let rows = gateway
        .pools
        .clients
        .list()
        .into_iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.user.clone(),
                c.database.clone(),
                c.state.get().as_str().to_string(),
                c.addr.map(|a| a.to_string()).unwrap_or_default(),
                unix(c.connected_at),
                c.application_name
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                c.mode.to_string(),
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

fn servers(gateway: &Arc<Gateway>) -> Table {
    let mut rows = Vec::new();
    for db in gateway.pools.all() {
        for s in db.servers.list() {
            rows.push(vec![
                s.id.to_string(),
                db.name.clone(),
                s.state.get().as_str().to_string(),
                s.addr.to_string(),
                s.pid.to_string(),
                unix(s.opened_at),
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

fn stats(gateway: &Arc<Gateway>) -> Table {
    let rows = gateway
        .pools
        .all()
        .into_iter()
        .map(|db| {
            let c = &db.pool.counters;
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let waits = get(&c.waits);
            let wait_us = get(&c.wait_micros);
            vec![
                db.name.clone(),
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

fn config(gateway: &Arc<Gateway>) -> Table {
    let config = gateway.pools.config();
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

fn help() -> Table {
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

fn encode(out: &mut BytesMut, table: &Table) {
    let mut body = BytesMut::new();
    body.put_u16(table.columns.len() as u16);
    for column in table.columns {
        body.put_slice(column.as_bytes());
        body.put_u8(0);
        body.put_u32(0); // table oid
        body.put_u16(0); // column number
        body.put_u32(25); // text
        body.put_i16(-1);
        body.put_i32(-1);
        body.put_u16(0); // text format
    }
    messages::put(out, b'T', &[&body]);
    for row in &table.rows {
        body.clear();
        body.put_u16(row.len() as u16);
        for value in row {
            body.put_u32(value.len() as u32);
            body.put_slice(value.as_bytes());
        }
        messages::put(out, b'D', &[&body]);
    }
}
