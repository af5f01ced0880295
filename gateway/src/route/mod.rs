//! Where a client is going: from its startup parameters, the TLS server
//! name and the `options` it sent, to a [`Route`] — database, branch, the
//! kind of login it asked for. Every front end (wire today; HTTP and
//! WebSocket next) resolves through here, after `accept` and before `auth`.
