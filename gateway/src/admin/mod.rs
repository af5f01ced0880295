//! The admin console: a PgBouncer-style virtual database (`ogel`, alias
//! `pgbouncer`) that admins reach with psql as user `ogel` and the API
//! token as password. Simple-query protocol only:
//! `SHOW POOLS | CLIENTS | SERVERS | STATS | CONFIG | HELP`,
//! `PAUSE [db]`, `RESUME [db]`, `RELOAD`.

mod help;
mod pause;
mod show_clients;
mod show_config;
mod show_pools;
mod show_servers;
mod show_stats;

use crate::control::databases::Databases;
use crate::control::reload::Reloader;
use crate::error::ClientError;
use crate::pool::Pools;
use crate::wire::client_stream::ClientStream;
use crate::wire::messages::{self, send};
use crate::wire::startup::{self, ReadError};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// Largest console command.
const COMMAND_MAX_BYTES: usize = 64 * 1024;

/// What the console reads and acts on.
pub struct Console {
    pools: Arc<Pools>,
    databases: Arc<Databases>,
    reloader: Arc<Reloader>,
}

/// Rows of text.
struct Table {
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Console {
    /// The console over these services.
    pub fn new(pools: Arc<Pools>, databases: Arc<Databases>, reloader: Arc<Reloader>) -> Self {
        Console {
            pools,
            databases,
            reloader,
        }
    }

    /// Serves an authenticated admin until it disconnects.
    pub async fn serve(&self, stream: ClientStream) {
        serve(stream, self).await
    }
}

async fn serve(mut stream: ClientStream, console: &Console) {
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
        messages::parameter_status(&mut out, name, value.as_bytes());
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
                match run(console, &sql).await {
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
async fn run(console: &Console, sql: &str) -> Result<(Option<Table>, String), ClientError> {
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
            "POOLS" => show_pools::pools(console),
            "CLIENTS" => show_clients::clients(console),
            "SERVERS" => show_servers::servers(console),
            "STATS" => show_stats::stats(console),
            "CONFIG" => show_config::config(console),
            "HELP" => help::help(),
            other => return Err(unknown(&format!("SHOW {other}"))),
        },
        ["PAUSE"] | ["PAUSE", _] => {
            pause::pause(console, arg.as_deref()).await?;
            return Ok((None, "PAUSE".into()));
        }
        ["RESUME"] | ["RESUME", _] => {
            pause::resume(console, arg.as_deref())?;
            return Ok((None, "RESUME".into()));
        }
        ["RELOAD"] => {
            console
                .reloader
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
