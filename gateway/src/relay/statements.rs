//! Prepared statements across server connections: a client's named Parse
//! is renamed `ogel_<sha256(text, types)>`, so the same statement has the
//! same name on every connection; each client maps its names to these and
//! each connection knows which it has. A Bind or Describe on a connection
//! lacking the statement gets its Parse injected first (answer swallowed),
//! a Parse of one the connection has is answered by the pooler, Close and
//! SQL `DEALLOCATE` drop only the client's name, and batches of Parse of
//! known statements and Close are answered without a server at all.

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
}

/// The server-side name of a statement: the same text and parameter types
/// get the same name on every connection, so any client's preparation
/// serves every other client with the same statement.
pub(super) fn server_statement_name(query: &str, types: &[u8]) -> Arc<str> {
    let mut hash = Sha256::new();
    hash.update(query.as_bytes());
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
            let (sql, _) = messages::cstr(&self.rbuf[..len], HEADER)?;
            let SessionEffect::Deallocate(Some(name)) = sql::session_effect(sql) else {
                return None;
            };
            if !sql.trim_end().trim_end_matches(';').contains(';')
                && self.statements.remove(&name).is_some()
            {
                self.rbuf.advance(len);
                let mut out = BytesMut::new();
                messages::command_complete(&mut out, "DEALLOCATE");
                messages::ready_for_query(&mut out, b'I');
                return Some(out);
            }
            return None;
        }
        enum Op {
            Prepare(String, Arc<Statement>),
            Close(String),
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
                    if name.is_empty() || sql::session_effect(query) != SessionEffect::None {
                        return None;
                    }
                    let server_name = server_statement_name(query, types);
                    if !self.db.is_known(&server_name) {
                        return None;
                    }
                    let mut parse = BytesMut::with_capacity(msg.len() + 40);
                    messages::parse_message(&mut parse, &server_name, query, types);
                    ops.push(Op::Prepare(
                        name.to_string(),
                        Arc::new(Statement {
                            server_name,
                            parse: parse.freeze(),
                        }),
                    ));
                    out.extend_from_slice(messages::PARSE_COMPLETE);
                }
                b'C' => match messages::target_fields(msg)? {
                    (b'S', name) if !name.is_empty() => {
                        ops.push(Op::Close(name.to_string()));
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
                    self.statements.insert(name, statement);
                }
                Op::Close(name) => {
                    self.statements.remove(&name);
                }
            }
        }
        self.rbuf.advance(at);
        Some(out)
    }

    pub(super) fn statement(&self, name: &str, rewrite: bool) -> Option<Arc<Statement>> {
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
        self.observe_sql(query, server);
        if name.is_empty() || !rewrite {
            server.outbox.extend_from_slice(msg);
            self.push(Expect::Parse(None));
        } else {
            let server_name = server_statement_name(query, types);
            let mut parse = BytesMut::with_capacity(msg.len() + 40);
            messages::parse_message(&mut parse, &server_name, query, types);
            let statement = Arc::new(Statement {
                server_name: server_name.clone(),
                parse: parse.freeze(),
            });
            self.statements.insert(name.to_string(), statement.clone());
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
        let a = server_statement_name("SELECT $1", &[0, 0]);
        assert_eq!(a, server_statement_name("SELECT $1", &[0, 0]));
        assert_ne!(a, server_statement_name("SELECT $1", &[0, 1, 0, 0, 0, 23]));
        assert_ne!(a, server_statement_name("SELECT $2", &[0, 0]));
        assert!(a.len() < 64, "within NAMEDATALEN");
    }
}
