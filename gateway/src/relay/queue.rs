//! The response queue: what the server will answer to each request the
//! relay forwarded or injected, in order. Client messages push their
//! expected answers; server messages are matched against the head, so the
//! answers to injected requests are swallowed, the pooler's own answers
//! are placed where the client expects them, an ErrorResponse in an
//! extended-protocol batch skips to the next Sync as the server does, and
//! Syncs the server ignores inside COPY FROM STDIN are dropped.

use super::pump::Relay;
use super::sql::{self, SessionEffect};
use super::{End, Shared};
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::pool::server_conn::ServerConn;
use crate::wire::messages::{self, HEADER};
use bytes::Bytes;
use std::sync::Arc;

/// What the server will answer to a forwarded (or injected) request.
pub(super) enum Expect {
    /// ParseComplete; the server-side name, if the pooler named it.
    Parse(Option<Arc<str>>),
    Bind,
    Close,
    Describe,
    Execute,
    /// ReadyForQuery.
    Sync,
    /// A simple Query or FunctionCall: everything up to ReadyForQuery.
    Query,
    /// The ParseComplete of a Parse the pooler injected: swallowed.
    SkipParse(Arc<str>),
    /// A client's Parse of a name it has already prepared, sent as a second
    /// Parse of that statement so the server fails (and aborts the
    /// transaction) as it would have; its 42P05 is replaced by this
    /// ErrorResponse naming the client's statement.
    DuplicateParse(Bytes),
    /// The whole answer to a Query the pooler injected: swallowed.
    SkipQuery,
    /// Bytes the pooler answers itself, sent when their turn comes.
    Synth(Bytes),
    /// The pooler's answer to SQL `DEALLOCATE` of a statement it renamed
    /// (the client's name), given when its turn comes, by the transaction
    /// status then: the name goes, CommandComplete and ReadyForQuery; or,
    /// in a failed transaction, the server's 25P02 and the name stays.
    Deallocate(Box<[u8]>),
    /// The client ended a COPY FROM STDIN (CopyDone/CopyFail) before the
    /// server's CopyInResponse was seen; no answer of its own.
    CopyEnd,
}

impl<S, D: Shared> Relay<S, D> {
    /// One complete client message: forwarded to the server (renamed, or
    /// answered by the pooler) and what it will be answered with queued.
    pub(super) fn client_message<T>(
        &mut self,
        tag: u8,
        msg: &[u8],
        server: &mut ServerConn<T>,
    ) -> Result<(), ClientError> {
        let rewrite = self.mode == PoolMode::Transaction;
        let malformed = || ClientError::protocol(format!("malformed \"{}\" message", tag as char));
        if self.skipping && tag != b'S' && tag != b'X' {
            return Ok(()); // the server would ignore it too
        }
        if matches!(tag, b'P' | b'B' | b'D' | b'C' | b'E' | b'H') {
            self.in_batch = true;
        }
        match tag {
            b'Q' => {
                let (sql, _) = messages::cstr(msg, HEADER).ok_or_else(malformed)?;
                let effect = sql::session_effect(sql, self.dialect);
                match effect {
                    SessionEffect::Deallocate(Some(name))
                        if rewrite && self.deallocates_renamed(sql, &name) =>
                    {
                        self.queue.push_back(Expect::Deallocate(name.into()));
                        self.drain_synth(server);
                    }
                    effect => {
                        self.observe_effect(sql, effect, server);
                        server.outbox.extend_from_slice(msg);
                        self.push(Expect::Query);
                    }
                }
            }
            b'P' => self
                .forward_parse(msg, server, rewrite)
                .ok_or_else(malformed)?,
            b'B' => self
                .forward_bind(msg, server, rewrite)
                .ok_or_else(malformed)?,
            b'D' => self
                .forward_describe(msg, server, rewrite)
                .ok_or_else(malformed)?,
            b'C' => self
                .forward_close(msg, server, rewrite)
                .ok_or_else(malformed)?,
            b'E' => {
                server.outbox.extend_from_slice(msg);
                self.push(Expect::Execute);
            }
            b'S' => {
                self.skipping = false;
                self.in_batch = false;
                server.outbox.extend_from_slice(msg);
                if self.copy_in {
                    self.mark_uncertain();
                } else {
                    self.push(Expect::Sync);
                }
            }
            b'c' | b'f' => {
                server.outbox.extend_from_slice(msg);
                if self.copy_in {
                    self.copy_in = false;
                } else {
                    // Marks where a COPY that has not started yet ends; with
                    // nothing pending before it, no COPY can start: dropped.
                    self.push(Expect::CopyEnd);
                    self.drain_synth(server);
                }
            }
            b'F' => {
                server.outbox.extend_from_slice(msg);
                self.push(Expect::Query);
            }
            b'X' => self.closing = true,
            // Flush and CopyData: no answer (outside COPY the server ignores
            // CopyData).
            b'H' | b'd' => {
                if tag == b'd' && !self.copy_in && !self.queue.is_empty() {
                    self.data_before_copy_seen = true;
                }
                server.outbox.extend_from_slice(msg)
            }
            // Anything else would make the server fail the connection,
            // possibly after it went back to the pool: refused here, as
            // Postgres refuses it.
            _ => {
                return Err(ClientError::protocol(format!(
                    "invalid frontend message type {tag}"
                )))
            }
        }
        Ok(())
    }

    /// One complete server message: relayed to the client or swallowed,
    /// following the head of the queue. `Some` ends the attachment.
    pub(super) fn server_message<T>(
        &mut self,
        tag: u8,
        msg: &[u8],
        server: &mut ServerConn<T>,
    ) -> Option<End> {
        match tag {
            b'S' => {
                if let Some((name, value)) = messages::parameter_status_fields(msg) {
                    server.params.set(name, value);
                    if self.params.get(name) != Some(value) {
                        self.params.set(name, value);
                        self.update_dialect(name);
                        server.to_client.extend_from_slice(msg);
                        if name == "application_name" {
                            *self
                                .info
                                .entry
                                .application_name
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()) =
                                String::from_utf8_lossy(value).into();
                        }
                    }
                }
                return None;
            }
            b'N' => {
                if !matches!(self.queue.front(), Some(Expect::SkipQuery)) {
                    server.to_client.extend_from_slice(msg);
                }
                return None;
            }
            b'A' => {
                self.relay_notification(msg, server);
                return None;
            }
            _ => {}
        }
        let fatal = tag == b'E' && messages::error_is_fatal(msg);
        let Some(front) = self.queue.front() else {
            // Unasked for: a FATAL before the server goes away, mostly.
            server.to_client.extend_from_slice(msg);
            return fatal.then_some(End::ServerLost { notified: true });
        };
        match (front, tag) {
            (Expect::SkipQuery, b'Z') => {
                server.status = msg.get(HEADER).copied().unwrap_or(b'I');
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::SkipQuery, b'E') => {
                tracing::warn!(
                    database = %self.db.name(),
                    error = %crate::pool::server_conn::error_message(msg),
                    "restoring a client's settings on a server connection failed"
                );
            }
            (Expect::SkipQuery, _) => {}
            (Expect::SkipParse(name), b'1') => {
                self.db.mark_known(name);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Parse(name), b'1') => {
                if let Some(name) = name {
                    self.db.mark_known(name);
                }
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Bind, b'2') | (Expect::Close, b'3') => {
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Describe, b'T' | b'n') | (Expect::Execute, b'C' | b'I' | b's') => {
                if tag == b'C' && messages::command_tag(msg) == b"ROLLBACK" {
                    self.txn_failed = true;
                }
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.drain_synth(server);
            }
            (Expect::Sync | Expect::Query, b'Z') => {
                server.to_client.extend_from_slice(msg);
                self.queue.pop_front();
                self.ready(server, msg.get(HEADER).copied().unwrap_or(b'I'));
                self.drain_synth(server);
            }
            (Expect::Execute | Expect::Query, b'G') => {
                server.to_client.extend_from_slice(msg);
                self.copy_in_started();
            }
            (Expect::Query | Expect::Sync, b'E') => {
                self.copy_in = false;
                self.txn_failed = true;
                server.to_client.extend_from_slice(msg);
            }
            (Expect::Query, b'C') => {
                if messages::command_tag(msg) == b"ROLLBACK" {
                    self.txn_failed = true;
                }
                server.to_client.extend_from_slice(msg);
            }
            (Expect::DuplicateParse(error), b'E') => {
                if messages::error_field(msg, b'C') == Some(b"42P05") {
                    server.to_client.extend_from_slice(error);
                } else {
                    server.to_client.extend_from_slice(msg);
                }
                self.error_until_sync(server);
            }
            (
                Expect::Parse(_)
                | Expect::Bind
                | Expect::Close
                | Expect::Describe
                | Expect::Execute
                | Expect::SkipParse(_),
                b'E',
            ) => {
                server.to_client.extend_from_slice(msg);
                self.error_until_sync(server);
            }
            _ => server.to_client.extend_from_slice(msg),
        }
        fatal.then_some(End::ServerLost { notified: true })
    }

    /// An error in an extended-protocol batch: the server skips every
    /// request up to the next Sync, so their answers will never come.
    pub(super) fn error_until_sync<T>(&mut self, server: &mut ServerConn<T>) {
        self.txn_failed = true;
        self.copy_in = false;
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::Sync | Expect::Query | Expect::SkipQuery) {
                return;
            }
            match self.queue.pop_front() {
                // Never prepared after all.
                Some(Expect::Parse(Some(name))) | Some(Expect::SkipParse(name)) => {
                    server.prepared.remove(&name);
                }
                _ => {}
            }
        }
        self.skipping = true;
    }

    /// A NotificationResponse: one the client caused itself (sent through
    /// this server connection) shows the client's own BackendKeyData pid,
    /// one another gateway client caused shows that client's, as drivers
    /// that filter their own notifications by pid expect. Others (sessions
    /// outside the gateway) keep the server's pid.
    fn relay_notification<T>(&mut self, msg: &[u8], server: &mut ServerConn<T>) {
        let Some(pid) = msg.get(HEADER..HEADER + 4) else {
            server.to_client.extend_from_slice(msg);
            return;
        };
        let pid = u32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]);
        let shown = if pid == server.key.0 {
            self.pid
        } else {
            self.db.notifier(pid).unwrap_or(pid)
        };
        server.to_client.extend_from_slice(&msg[..HEADER]);
        server.to_client.extend_from_slice(&shown.to_be_bytes());
        server.to_client.extend_from_slice(&msg[HEADER + 4..]);
    }

    pub(super) fn push(&mut self, expect: Expect) {
        self.queue.push_back(expect);
    }

    /// Queues an answer of the pooler's own, sent as soon as everything
    /// before it has been answered.
    pub(super) fn push_synth<T>(&mut self, server: &mut ServerConn<T>, bytes: Bytes) {
        self.queue.push_back(Expect::Synth(bytes));
        self.drain_synth(server);
    }

    pub(super) fn drain_synth<T>(&mut self, server: &mut ServerConn<T>) {
        while let Some(Expect::Synth(_) | Expect::CopyEnd | Expect::Deallocate(_)) =
            self.queue.front()
        {
            match self.queue.pop_front() {
                Some(Expect::Synth(bytes)) => server.to_client.extend_from_slice(&bytes),
                Some(Expect::Deallocate(name)) => {
                    let status = server.status;
                    self.answer_deallocate(&name, status, &mut server.to_client);
                    self.ready(server, status);
                }
                _ => {}
            }
        }
    }

    /// The server started COPY FROM STDIN for the request at the head of
    /// the queue: the Syncs the client sent with it (before its CopyDone)
    /// are ignored by the server and will get no ReadyForQuery.
    pub(super) fn copy_in_started(&mut self) {
        let end = self
            .queue
            .iter()
            .position(|e| matches!(e, Expect::CopyEnd))
            .unwrap_or(self.queue.len());
        let mut i = 1;
        let mut end = end;
        let mut removed = false;
        while i < end {
            if matches!(self.queue[i], Expect::Sync) {
                self.queue.remove(i);
                end -= 1;
                removed = true;
            } else {
                i += 1;
            }
        }
        // A Sync that may have followed CopyData: whether the server
        // ignores it depends on whether the data failed first.
        if removed && std::mem::take(&mut self.data_before_copy_seen) {
            self.mark_uncertain();
        }
        if end < self.queue.len() {
            self.queue.remove(end); // the CopyEnd: the copy is already over
        } else {
            self.copy_in = true;
        }
    }
}
