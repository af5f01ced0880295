//! Login completion: the client takes a seat in its database's pool and is
//! told its parameters (the pool's server values overlaid with its own
//! startup parameters), the gateway's own BackendKeyData and ReadyForQuery,
//! all without holding a server connection.

use super::pump::Relay;
use super::session::Session;
use super::state::{client_settings, Refusal};
use super::Login;
use crate::error::ClientError;
use crate::pool::registry::{ClientInfo, Registry};
use crate::pool::DbPool;
use crate::wire::messages::{self, send, send_fatal};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Tells the client its parameters and key; `None` if it is gone or refused.
pub(super) async fn greet<S: AsyncRead + AsyncWrite + Unpin + Send>(
    db: Arc<DbPool>,
    login: Login<S>,
    addr: Option<SocketAddr>,
    registry: &Arc<Registry<ClientInfo>>,
) -> Option<Session<S>> {
    let Login {
        mut stream,
        user,
        params: startup,
        mode,
        cancel,
        active,
    } = login;
    let seat = match db.pool.enter() {
        Ok(seat) => seat,
        Err(e) => {
            let e = ClientError::new("53300", format!("database \"{}\": {e}", db.name))
                .hint("raise pool.max_clients, or close idle connections");
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    let (params, extra) = match client_settings(&db, &startup).await {
        Ok(settings) => settings,
        Err(Refusal::Gateway(e)) => {
            send_fatal(&mut stream, &e).await;
            return None;
        }
        Err(Refusal::Server(error)) => {
            let _ = send(&mut stream, &error).await;
            let _ = stream.shutdown().await;
            return None;
        }
    };
    let info = registry.register(|id| ClientInfo {
        id,
        user: user.into_boxed_str(),
        database: db.name.clone(),
        addr,
        connected_unix: crate::names::unix_now(),
        mode,
        state: Default::default(),
        server: Default::default(),
        application_name: std::sync::Mutex::new(
            String::from_utf8_lossy(params.get("application_name").unwrap_or_default()).into(),
        ),
        pinned: std::sync::Mutex::new(""),
    });
    let mut out = BytesMut::with_capacity(512);
    messages::auth_ok(&mut out);
    for (name, value) in params.iter() {
        messages::parameter_status(&mut out, name, value);
    }
    messages::backend_key_data(&mut out, cancel.pid, cancel.secret);
    messages::ready_for_query(&mut out, b'I');
    if send(&mut stream, &out).await.is_err() {
        return None;
    }
    Some(Session {
        relay: Relay::new(stream, db, mode, cancel.pid, params, extra, info),
        cancel,
        _seat: seat,
        _active: active,
    })
}
