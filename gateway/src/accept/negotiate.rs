//! The first packets of a wire connection, before the startup message:
//! SSLRequest (answered `S` and a TLS handshake when TLS is on, else `N`),
//! GSSENCRequest (`N`), a CancelRequest (forwarded, then the connection
//! ends), and the protocol version (3.0 only; `_pq_.` options refused with
//! NegotiateProtocolVersion, as PostgreSQL does).

use super::tls::Tls;
use crate::auth::AuthError;
use crate::cancel::CancelRegistry;
use crate::error::ClientError;
use crate::wire::messages::{self, send};
use crate::wire::startup::{self, FirstPacket, PROTOCOL_3_0};
use crate::wire::ClientStream;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

/// SSLRequest and GSSENCRequest may each precede the startup message once.
const NEGOTIATION_PACKETS_MAX: usize = 2;

/// Reads packets until the startup message and returns its parameters;
/// `Ok(None)` for a cancel request (answered, done).
pub async fn startup_params(
    stream: &mut ClientStream,
    tls: &Tls,
    cancels: &CancelRegistry,
    startup_packet_max_bytes: usize,
) -> Result<Option<Vec<(String, String)>>, AuthError> {
    let mut negotiations = 0;
    let (version, params) = loop {
        match startup::read_first_packet(stream, startup_packet_max_bytes).await? {
            FirstPacket::SslRequest if negotiations < NEGOTIATION_PACKETS_MAX => {
                negotiations += 1;
                match (
                    tls.acceptor(),
                    std::mem::replace(stream, ClientStream::Handshaking),
                ) {
                    (Some(acceptor), ClientStream::Plain(mut tcp)) => {
                        tcp.write_all(b"S").await.map_err(|_| AuthError::Closed)?;
                        let tls = acceptor.accept(tcp).await.map_err(|e| {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            AuthError::Closed
                        })?;
                        *stream = ClientStream::Tls(Box::new(tls));
                    }
                    (_, other) => {
                        *stream = other;
                        send(stream, b"N").await.map_err(|_| AuthError::Closed)?;
                    }
                }
            }
            FirstPacket::GssEncRequest if negotiations < NEGOTIATION_PACKETS_MAX => {
                negotiations += 1;
                send(stream, b"N").await.map_err(|_| AuthError::Closed)?;
            }
            FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                return Err(ClientError::protocol("too many encryption requests").into());
            }
            FirstPacket::CancelRequest { pid, secret } => {
                cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            FirstPacket::Startup { version, params } => break (version, params),
        }
    };
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if version != PROTOCOL_3_0 || !unrecognized.is_empty() {
        let mut out = BytesMut::new();
        // We speak 3.0 only. The field is the whole version number
        // (major << 16 | minor), as PostgreSQL sends it and libpq reads it.
        messages::negotiate_protocol_version(&mut out, PROTOCOL_3_0, &unrecognized);
        send(stream, &out).await.map_err(|_| AuthError::Closed)?;
    }
    Ok(Some(params))
}
