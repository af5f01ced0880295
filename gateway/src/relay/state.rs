//! Session state carried across server connections: the reported
//! parameters the client sees and the unreported ones it set (from its
//! startup packet, `options=-c …`, `SET`/`RESET`), changes kept only if
//! their transaction commits, bringing a connection in line with one
//! injected query before each transaction, and pinning a client that used a
//! session-only feature to its connection.

use super::pump::Relay;
use super::queue::Expect;
use super::sql::{self, Dialect, SessionEffect};
use super::Shared;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::params::Params;
use crate::pool::server_conn::{Extra, ServerConn};
use crate::pool::DbPool;
use crate::wire::messages;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Reported parameters the pooler keeps in line with each client's.
pub(super) const SYNCED: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
];

/// A session-state change seen in the client's SQL, applied when its
/// transaction commits.
pub(super) enum Change {
    /// `SET name TO value` (the value's SQL text, client encoding).
    Set(String, Box<[u8]>),
    Reset(String),
    ResetAll,
}

/// The parameters a new client is told and the unreported ones it asked
/// for: the pool's server parameters (opening a first connection if there
/// is none yet, which wakes the compute), overlaid with the client's, each
/// in the server's own spelling (`utf8` → `UTF8`), learnt from a server
/// connection the first time a value is seen. A value the server refuses
/// refuses the login with the server's error, as Postgres does.
pub(super) async fn client_settings(
    db: &DbPool,
    startup: &[(String, String)],
) -> Result<(Params, Extra), Refusal> {
    let server_params = match db.server_params() {
        Some(p) => p,
        None => {
            db.lease().await?.release();
            db.server_params().unwrap_or_default()
        }
    };
    let mut params = server_params;
    let mut extra = Extra::new();
    let mut asked: Vec<(&'static str, String)> = Vec::new();
    for (key, value) in startup {
        match key.as_str() {
            "user" | "database" | "replication" => {}
            k if k.starts_with("_pq_.") => {}
            "options" => {
                for (name, value) in parse_options(value)? {
                    if let Some(canonical) = SYNCED.iter().find(|s| s.eq_ignore_ascii_case(&name)) {
                        asked.push((canonical, value));
                    } else {
                        extra.insert(name, quote_literal(value.as_bytes()));
                    }
                }
            }
            k => {
                if let Some(canonical) = SYNCED.iter().find(|s| s.eq_ignore_ascii_case(k)) {
                    asked.push((canonical, value.clone()));
                } else if sql::is_reported(k) {
                    // Read-only reports (server_version, is_superuser, …).
                } else if k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                {
                    extra.insert(k.to_ascii_lowercase(), quote_literal(value.as_bytes()));
                } else {
                    return Err(ClientError::new(
                        "42704",
                        format!("unrecognized configuration parameter \"{k}\""),
                    )
                    .into());
                }
            }
        }
    }
    for (name, value) in spell(db, asked).await? {
        params.set(name, &value);
    }
    Ok((params, extra))
}

/// The server's spelling of each setting a client asked for at startup:
/// from the pool's memory, or by setting them on a server connection and
/// reading what it reports (the connection goes back to the pool; the next
/// client's transaction brings it in line again). `application_name` is
/// each client's own and stays as given.
async fn spell(
    db: &DbPool,
    asked: Vec<(&'static str, String)>,
) -> Result<Vec<(&'static str, Arc<[u8]>)>, Refusal> {
    let mut spelt = Vec::with_capacity(asked.len());
    let mut unknown = Vec::new();
    for (name, value) in asked {
        if name == "application_name" {
            spelt.push((name, value.as_bytes().into()));
        } else {
            match db.spelling(name, &value) {
                Some(server_value) => spelt.push((name, server_value)),
                None => unknown.push((name, value)),
            }
        }
    }
    if unknown.is_empty() {
        return Ok(spelt);
    }
    let mut lease = db.lease().await?;
    let conn = lease.conn();
    // From the server's default, as at a login: `DateStyle=ISO` keeps the
    // default's field order ("ISO, MDY"), not another client's.
    let mut sql = Vec::new();
    for (name, value) in &unknown {
        reset_sql(&mut sql, name);
        set_sql(&mut sql, name, &quote_literal(value.as_bytes()));
    }
    match conn.run(&sql).await {
        Ok(None) => {}
        Ok(Some(error)) => {
            lease.release();
            return Err(Refusal::Server(messages::as_fatal(&error)));
        }
        Err(e) => {
            drop(lease);
            return Err(ClientError::new(
                "08006",
                format!(
                    "the connection to database \"{}\"'s compute was lost: {e}",
                    db.name
                ),
            )
            .into());
        }
    }
    for (name, value) in unknown {
        let server_value: Arc<[u8]> = conn.params.get(name).unwrap_or(value.as_bytes()).into();
        db.learn_spelling(name, &value, server_value.clone());
        spelt.push((name, server_value));
    }
    lease.release();
    Ok(spelt)
}

/// Why a login's settings were refused.
pub(crate) enum Refusal {
    /// The gateway's own error.
    Gateway(ClientError),
    /// The server's ErrorResponse to one of the settings, made FATAL.
    Server(bytes::BytesMut),
}

impl From<ClientError> for Refusal {
    fn from(e: ClientError) -> Self {
        Refusal::Gateway(e)
    }
}

/// Appends `SET name TO value;`.
fn set_sql(sql: &mut Vec<u8>, name: &str, value: &[u8]) {
    sql.extend_from_slice(b"SET ");
    sql.extend_from_slice(name.as_bytes());
    sql.extend_from_slice(b" TO ");
    sql.extend_from_slice(value);
    sql.push(b';');
}

/// Appends `RESET name;`.
fn reset_sql(sql: &mut Vec<u8>, name: &str) {
    sql.extend_from_slice(b"RESET ");
    sql.extend_from_slice(name.as_bytes());
    sql.push(b';');
}

/// `-c name=value` / `--name=value` pairs of the `options` startup
/// parameter (backslash escapes a space).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ClientError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut pairs = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()
        } else {
            w.strip_prefix("--")
                .or_else(|| w.strip_prefix("-c"))
                .map(str::to_string)
        };
        let parsed = setting
            .as_deref()
            .and_then(|s| s.split_once('='))
            .filter(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            });
        match parsed {
            Some((k, v)) => pairs.push((k.replace('-', "_").to_ascii_lowercase(), v.to_string())),
            None => {
                return Err(ClientError::new(
                    "0A000",
                    format!("unsupported startup option \"{w}\" in \"options\""),
                )
                .hint("only -c name=value settings are supported through the gateway"))
            }
        }
    }
    Ok(pairs)
}

/// `value` as an SQL string literal (`'` doubled; bytes as they are).
pub(crate) fn quote_literal(value: &[u8]) -> Box<[u8]> {
    let mut quoted = Vec::with_capacity(value.len() + 2);
    quoted.push(b'\'');
    for &b in value {
        quoted.push(b);
        if b == b'\'' {
            quoted.push(b'\'');
        }
    }
    quoted.push(b'\'');
    quoted.into()
}

impl<S, D: Shared> Relay<S, D> {
    /// Brings the server connection's session state in line with the
    /// client's: injected Queries of SET/RESET, their answers swallowed.
    /// A different `client_encoding` goes first, in a Query of its own:
    /// the server reads each Query in the encoding in force when it
    /// arrives, and the other values are in the client's.
    pub(super) fn sync_session<T>(&mut self, server: &mut ServerConn<T>) {
        let mut sql = Vec::new();
        let synced = if self.params.same_list(&server.params) {
            &[][..]
        } else {
            &SYNCED[..]
        };
        for &name in synced {
            if let Some(want) = self.params.get(name) {
                if server.params.get(name) != Some(want) {
                    set_sql(&mut sql, name, &quote_literal(want));
                    if name == "client_encoding" {
                        messages::query(&mut server.outbox, &sql);
                        self.queue.push_back(Expect::SkipQuery);
                        sql.clear();
                    }
                }
            }
        }
        for (name, value) in &self.extra {
            if server.extra.get(name) != Some(value) {
                set_sql(&mut sql, name, value);
            }
        }
        for name in server.extra.keys() {
            if !self.extra.contains_key(name) {
                reset_sql(&mut sql, name);
            }
        }
        if !sql.is_empty() {
            messages::query(&mut server.outbox, &sql);
            self.queue.push_back(Expect::SkipQuery);
            server.extra = self.extra.clone();
        }
    }

    /// Re-reads how to scan the client's SQL after `name` changed.
    pub(super) fn update_dialect(&mut self, name: &str) {
        if name == "client_encoding" || name == "standard_conforming_strings" {
            self.dialect = Dialect::of_params(&self.params);
        }
    }

    /// See [`Relay::uncertain`].
    pub(super) fn mark_uncertain(&mut self) {
        if !self.uncertain {
            tracing::debug!(database = %self.db.name(), "a Sync inside COPY data: the server connection will be closed after this client");
            self.uncertain = true;
            self.pin("a Sync inside COPY data");
        }
    }

    pub(super) fn pin(&mut self, feature: &'static str) {
        if self.mode == PoolMode::Transaction && self.pinned.is_none() {
            tracing::debug!(database = %self.db.name(), feature, "client keeps its server connection (session-only feature)");
            self.pinned = Some(feature);
            *self
                .info
                .entry
                .pinned
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = feature;
            self.db
                .counters()
                .pinned_clients
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes what `sql` does to session state, and that the client may
    /// notify through this server connection.
    pub(super) fn observe_sql<T>(&mut self, sql: &[u8], server: &mut ServerConn<T>) {
        let effect = sql::session_effect(sql, self.dialect);
        self.observe_effect(sql, effect, server);
    }

    /// [`Relay::observe_sql`] with `sql`'s effect already read.
    pub(super) fn observe_effect<T>(
        &mut self,
        sql: &[u8],
        effect: SessionEffect<'_>,
        server: &mut ServerConn<T>,
    ) {
        if sql::notifies(sql) {
            self.db.note_notifier(server.key.0, self.pid);
        }
        match effect {
            SessionEffect::Set { name, value } => {
                self.pending.push(Change::Set(name, value.into()))
            }
            SessionEffect::Reset(name) => self.pending.push(Change::Reset(name)),
            SessionEffect::ResetAll => self.pending.push(Change::ResetAll),
            SessionEffect::Deallocate(None) => {
                // Runs on the server too: every statement there is gone.
                self.statements.clear();
                server.prepared.clear();
            }
            SessionEffect::Deallocate(Some(name)) => {
                self.statements.remove(&name[..]);
            }
            SessionEffect::SessionOnly(feature) => self.pin(feature),
            SessionEffect::None => {}
        }
    }

    /// A ReadyForQuery reached the client.
    pub(super) fn ready<T>(&mut self, server: &mut ServerConn<T>, status: u8) {
        server.status = status;
        let c = self.db.counters();
        c.queries.fetch_add(1, Ordering::Relaxed);
        if status != b'I' {
            return;
        }
        c.transactions.fetch_add(1, Ordering::Relaxed);
        let changes = std::mem::take(&mut self.pending);
        if !self.txn_failed {
            for change in changes {
                match change {
                    Change::Set(name, value) => {
                        self.extra.insert(name.clone(), value.clone());
                        server.extra.insert(name, value);
                    }
                    Change::Reset(name) => {
                        self.extra.remove(&name);
                        server.extra.remove(&name);
                    }
                    Change::ResetAll => {
                        self.extra.clear();
                        server.extra.clear();
                    }
                }
            }
        }
        self.txn_failed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_as_settings() {
        assert_eq!(
            parse_options("-c search_path=app,public --statement-timeout=5s -cwork_mem=64MB")
                .unwrap(),
            vec![
                ("search_path".into(), "app,public".into()),
                ("statement_timeout".into(), "5s".into()),
                ("work_mem".into(), "64MB".into()),
            ]
        );
        assert_eq!(
            parse_options(r"-c application_name=my\ app").unwrap(),
            vec![("application_name".into(), "my app".into())]
        );
        assert!(parse_options("-B 100").is_err());
        assert!(parse_options("-c =x").is_err());
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(&*quote_literal(b"it's"), b"'it''s'");
        assert_eq!(
            &*quote_literal(b"\xa4"),
            b"'\xa4'",
            "LATIN9 bytes as they are"
        );
    }
}
