//! Prepared statements across server connections: a client's named Parse
//! is renamed `ogel_<sha256(text, types)>`, so the same statement has the
//! same name on every connection; each client maps its names to these and
//! each connection knows which it has. A Bind or Describe on a connection
//! lacking the statement gets its Parse injected first (answer swallowed),
//! a Parse of one the connection has is answered by the pooler, Close and
//! SQL `DEALLOCATE` drop only the client's name (and are answered by the
//! pooler as the server would), a Parse of a name the client has already
//! prepared fails as on the server (42P05, transaction aborted), and
//! batches of Parse of known statements and Close are answered without a
//! server at all. Names and texts are bytes in the client's encoding.

use super::pump::Relay;
use super::queue::Expect;
use super::sql::{self, SessionEffect};
use super::Shared;
use crate::config::PoolMode;
use crate::pool::server_conn::ServerConn;
use crate::wire::messages::{self, header, HEADER};
use bytes::{Buf, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::Arc;

/// A statement the client prepared, as the server knows it.
pub(super) struct Statement {
    pub(super) server_name: Arc<str>,
    /// The client's Parse, renamed, to replay on other connections.
    pub(super) parse: Bytes,
    /// Its text may send a notification (see [`sql::notifies`]).
    pub(super) notifies: bool,
}

impl Statement {
    /// `query` with parameter `types`, under its server-side name.
    fn new(query: &[u8], types: &[u8]) -> Arc<Statement> {
        let server_name = server_statement_name(query, types);
        let mut parse = BytesMut::with_capacity(query.len() + types.len() + 48);
        messages::parse_message(&mut parse, &server_name, query, types);
        Arc::new(Statement {
            server_name,
            parse: parse.freeze(),
            notifies: sql::notifies(query),
        })
    }
}

/// The server-side name of a statement: the same text and parameter types
/// get the same name on every connection, so any client's preparation
/// serves every other client with the same statement.
pub(super) fn server_statement_name(query: &[u8], types: &[u8]) -> Arc<str> {
    let mut hash = Sha256::new();
    hash.update(query);
    hash.update([0]);
    hash.update(types);
    let digest = hash.finalize();
    let mut name = String::with_capacity(38);
    name.push_str("ogel_");
    for b in &digest[..16] {
        let _ = write!(name, "{b:02x}");
    }
    name.into()
}

impl<S, D: Shared> Relay<S, D> {
    /// Requests the pooler answers without a server connection (transaction
    /// mode, between transactions): `DEALLOCATE` of a statement only the
    /// pooler knows by that name, and batches up to a Sync made only of
    /// Parse of statements a server has accepted before, Close of
    /// statements, and Flush. (A driver that prepares with a blocking call
    /// while other connections of its own hold every server connection in
    /// open transactions — pgbench -M prepared does — would otherwise wait
    /// forever.) Such a statement is prepared on a server when first used.
    pub(super) fn answer_locally(&mut self) -> Option<BytesMut> {
        if self.mode != PoolMode::Transaction {
            return None;
        }
        let (tag, len) = header(&self.rbuf)?;
        if tag == b'Q' && self.rbuf.len() >= len {
            if self.statements.is_empty() {
                return None;
            }
            let (sql, _) = messages::cstr(&self.rbuf[..len], HEADER)?;
            let SessionEffect::Deallocate(Some(name)) = sql::session_effect(sql, self.dialect)
            else {
                return None;
            };
            if !self.deallocates_renamed(sql, &name) {
                return None;
            }
            self.rbuf.advance(len);
            let mut out = BytesMut::new();
            self.answer_deallocate(&name, b'I', &mut out);
            return Some(out);
        }
        enum Op<'m> {
            Prepare(&'m [u8], Arc<Statement>),
            Close(&'m [u8]),
        }
        let mut ops = Vec::new();
        let mut out = BytesMut::new();
        let mut at = 0;
        loop {
            let (tag, len) = header(&self.rbuf[at..])?;
            let msg = self.rbuf.get(at..at + len).filter(|_| len >= HEADER)?;
            match tag {
                b'P' => {
                    let (name, query, types) = messages::parse_fields(msg)?;
                    if name.is_empty()
                        || sql::session_effect(query, self.dialect) != SessionEffect::None
                    {
                        return None;
                    }
                    // A name in use (or used earlier in the batch) is the
                    // server path's to answer, in order.
                    let reused = self.statements.contains_key(name)
                        || ops.iter().any(|op| match op {
                            Op::Prepare(n, _) | Op::Close(n) => *n == name,
                        });
                    if reused {
                        return None;
                    }
                    let statement = Statement::new(query, types);
                    if !self.db.is_known(&statement.server_name) {
                        return None;
                    }
                    ops.push(Op::Prepare(name, statement));
                    out.extend_from_slice(messages::PARSE_COMPLETE);
                }
                b'C' => match messages::target_fields(msg)? {
                    (b'S', name) if !name.is_empty() => {
                        ops.push(Op::Close(name));
                        out.extend_from_slice(messages::CLOSE_COMPLETE);
                    }
                    _ => return None,
                },
                b'H' => {}
                b'S' => {
                    messages::ready_for_query(&mut out, b'I');
                    at += len;
                    break;
                }
                _ => return None,
            }
            at += len;
        }
        for op in ops {
            match op {
                Op::Prepare(name, statement) => {
                    self.statements.insert(name.into(), statement);
                }
                Op::Close(name) => {
                    self.statements.remove(name);
                }
            }
        }
        self.rbuf.advance(at);
        Some(out)
    }

    /// Whether `sql`, read as `DEALLOCATE [PREPARE] name`, is alone in its
    /// Query and names a statement the pooler renamed: then only the
    /// client's name goes (the server-side statement may serve others) and
    /// the pooler answers ([`Relay::answer_deallocate`]).
    pub(super) fn deallocates_renamed(&self, sql: &[u8], name: &[u8]) -> bool {
        self.statements.contains_key(name) && sql::is_single_statement(sql, self.dialect)
    }

    /// The answer to such a `DEALLOCATE` in transaction status `status`:
    /// the name goes, CommandComplete and ReadyForQuery; in a failed
    /// transaction the server's 25P02, and the name stays.
    pub(super) fn answer_deallocate(&mut self, name: &[u8], status: u8, out: &mut BytesMut) {
        if status == b'E' {
            messages::error_response(
                out,
                false,
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
                None,
            );
        } else {
            self.statements.remove(name);
            messages::command_complete(out, "DEALLOCATE");
        }
        messages::ready_for_query(out, status);
    }

    pub(super) fn statement(&self, name: &[u8], rewrite: bool) -> Option<Arc<Statement>> {
        if !rewrite || name.is_empty() {
            return None;
        }
        self.statements.get(name).cloned()
    }

    /// Prepares `statement` on this connection first if it is not there
    /// yet (the answer is swallowed).
    pub(super) fn ensure_prepared<T>(&mut self, server: &mut ServerConn<T>, statement: &Statement) {
        if !server.prepared.contains(&statement.server_name) {
            server.outbox.extend_from_slice(&statement.parse);
            server.prepared.insert(statement.server_name.clone());
            self.push(Expect::SkipParse(statement.server_name.clone()));
        }
    }

    /// A Parse: a named one (transaction mode) is renamed, and answered by
    /// the pooler if the connection has the statement already. `None`:
    /// malformed.
    pub(super) fn forward_parse<T>(
        &mut self,
        msg: &[u8],
        server: &mut ServerConn<T>,
        rewrite: bool,
    ) -> Option<()> {
        let (name, query, types) = messages::parse_fields(msg)?;
        if name.is_empty() || !rewrite {
            self.observe_sql(query, server);
            server.outbox.extend_from_slice(msg);
            self.push(Expect::Parse(None));
        } else if let Some(existing) = self.statements.get(name).cloned() {
            // The server would refuse a second statement of that name.
            self.ensure_prepared(server, &existing);
            server.outbox.extend_from_slice(&existing.parse);
            let mut error = BytesMut::new();
            let mut message = b"prepared statement \"".to_vec();
            message.extend_from_slice(name);
            message.extend_from_slice(b"\" already exists");
            messages::error_response_bytes(&mut error, false, "42P05", &message, None);
            self.push(Expect::DuplicateParse(error.freeze()));
        } else {
            self.observe_sql(query, server);
            let statement = Statement::new(query, types);
            let server_name = statement.server_name.clone();
            self.statements.insert(name.into(), statement.clone());
            if server.prepared.contains(&server_name) {
                self.push_synth(server, Bytes::from_static(messages::PARSE_COMPLETE));
            } else {
                server.outbox.extend_from_slice(&statement.parse);
                server.prepared.insert(server_name.clone());
                self.push(Expect::Parse(Some(server_name)));
            }
        }
        Some(())
    }

    /// A Bind: of a named statement, renamed (its Parse injected first if
    /// the connection lacks it). `None`: malformed.
    pub(super) fn forward_bind<T>(
        &mut self,
        msg: &[u8],
        server: &mut ServerConn<T>,
        rewrite: bool,
    ) -> Option<()> {
        let (portal, name, rest_at) = messages::bind_fields(msg)?;
        match self.statement(name, rewrite) {
            Some(statement) => {
                if statement.notifies {
                    self.db.note_notifier(server.key.0, self.pid);
                }
                self.ensure_prepared(server, &statement);
                messages::rename_bind(
                    &mut server.outbox,
                    msg,
                    portal,
                    &statement.server_name,
                    rest_at,
                );
            }
            None => server.outbox.extend_from_slice(msg),
        }
        self.push(Expect::Bind);
        Some(())
    }

    /// A Describe: of a named statement, renamed (its Parse injected first
    /// if the connection lacks it). `None`: malformed.
    pub(super) fn forward_describe<T>(
        &mut self,
        msg: &[u8],
        server: &mut ServerConn<T>,
        rewrite: bool,
    ) -> Option<()> {
        let (kind, name) = messages::target_fields(msg)?;
        match self.statement(name, rewrite && kind == b'S') {
            Some(statement) => {
                self.ensure_prepared(server, &statement);
                messages::describe_statement(&mut server.outbox, &statement.server_name);
            }
            None => server.outbox.extend_from_slice(msg),
        }
        self.push(Expect::Describe);
        Some(())
    }

    /// A Close: of a named statement (transaction mode), only the client's
    /// name goes and the pooler answers. `None`: malformed.
    pub(super) fn forward_close<T>(
        &mut self,
        msg: &[u8],
        server: &mut ServerConn<T>,
        rewrite: bool,
    ) -> Option<()> {
        let (kind, name) = messages::target_fields(msg)?;
        if rewrite && kind == b'S' && !name.is_empty() {
            // Other clients may share the server-side statement:
            // only the client's name goes.
            self.statements.remove(name);
            self.push_synth(server, Bytes::from_static(messages::CLOSE_COMPLETE));
        } else {
            server.outbox.extend_from_slice(msg);
            self.push(Expect::Close);
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_names_depend_on_text_and_types() {
        let a = server_statement_name(b"SELECT $1", &[0, 0]);
        assert_eq!(a, server_statement_name(b"SELECT $1", &[0, 0]));
        assert_ne!(a, server_statement_name(b"SELECT $1", &[0, 1, 0, 0, 0, 23]));
        assert_ne!(a, server_statement_name(b"SELECT $2", &[0, 0]));
        assert!(a.len() < 64, "within NAMEDATALEN");
    }
}
