//! The gateway's side of a compute connection: open it, pass the client's
//! session parameters, log in with credentials only the gateway holds
//! (SCRAM via `postgres-protocol`), and collect the start-up messages
//! (ParameterStatus, BackendKeyData, ReadyForQuery) to hand to the client.

use crate::protocol::{self, ReadError};
use bytes::{BufMut, BytesMut};
use ogel_plugin_sdk::{ComputeEndpoint, Credentials};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Largest message accepted from a compute during start-up.
const STARTUP_MESSAGE_MAX_BYTES: usize = 1 << 20;
/// Longest a compute may take to accept a connection and log us in.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in compute connection, ready for the client's first query.
pub struct ComputeLink {
    /// The socket.
    pub stream: TcpStream,
    /// Where it goes (for cancels).
    pub addr: SocketAddr,
    /// ParameterStatus/NoticeResponse messages and the final ReadyForQuery,
    /// exactly as the compute sent them, to forward to the client.
    pub greeting: BytesMut,
    /// The compute's BackendKeyData (pid, secret).
    pub key: (u32, u32),
}

/// Why a compute connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeConnectError {
    /// Nothing listens there (the compute died); worth a fresh wake.
    #[error("could not reach the compute at {addr}: {source}")]
    Unreachable {
        /// Where we tried.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The compute refused the session with an ErrorResponse (kept raw to forward).
    #[error("the compute refused the session")]
    Refused(BytesMut),
    /// The compute broke the protocol or the exchange failed.
    #[error("compute start-up failed: {0}")]
    Protocol(String),
    /// Too slow.
    #[error("the compute did not complete start-up within {CONNECT_TIMEOUT:?}")]
    Timeout,
}

/// Startup parameters that belong to the gateway, never forwarded.
fn forwardable(key: &str) -> bool {
    !matches!(key, "user" | "database" | "replication") && !key.starts_with("_pq_.")
}

/// Connects and logs in to `endpoint`, forwarding the client's session
/// parameters (application_name, options, client_encoding, DateStyle, …).
pub async fn connect(
    endpoint: &ComputeEndpoint,
    client_params: &[(String, String)],
) -> Result<ComputeLink, ComputeConnectError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(endpoint, client_params))
        .await
        .map_err(|_| ComputeConnectError::Timeout)?
}

async fn connect_inner(
    endpoint: &ComputeEndpoint,
    client_params: &[(String, String)],
) -> Result<ComputeLink, ComputeConnectError> {
    let target = format!("{}:{}", endpoint.host, endpoint.port);
    let unreachable = |source| ComputeConnectError::Unreachable {
        addr: target.clone(),
        source,
    };
    let mut stream = TcpStream::connect(&target).await.map_err(unreachable)?;
    let addr = stream.peer_addr().map_err(unreachable)?;
    let _ = stream.set_nodelay(true);
    let Credentials::Password { user, password } = &endpoint.credentials;

    let mut params: Vec<(&str, &str)> = vec![("user", user), ("database", &endpoint.database)];
    params.extend(
        client_params
            .iter()
            .filter(|(k, _)| forwardable(k))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out).map_err(protocol_err)?;
    send(&mut stream, &mut out).await?;

    let mut scram: Option<ScramSha256> = None;
    let mut greeting = BytesMut::new();
    let mut key = (0, 0);
    loop {
        let (tag, body) = protocol::read_message(&mut stream, STARTUP_MESSAGE_MAX_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::Io(e) => {
                    ComputeConnectError::Protocol(format!("connection lost during start-up: {e}"))
                }
                ReadError::Malformed(m) => ComputeConnectError::Protocol(m),
            })?;
        match tag {
            b'R' => {
                let kind = body
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let data = body.get(4..).unwrap_or_default();
                match kind {
                    Some(0) => {}
                    Some(3) => {
                        frontend::password_message(password.as_bytes(), &mut out)
                            .map_err(protocol_err)?;
                        send(&mut stream, &mut out).await?;
                    }
                    Some(10) => {
                        let client =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        frontend::sasl_initial_response(
                            "SCRAM-SHA-256",
                            client.message(),
                            &mut out,
                        )
                        .map_err(protocol_err)?;
                        send(&mut stream, &mut out).await?;
                        scram = Some(client);
                    }
                    Some(11) => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| protocol_err("unexpected SASLContinue"))?;
                        client.update(data).map_err(protocol_err)?;
                        frontend::sasl_response(client.message(), &mut out)
                            .map_err(protocol_err)?;
                        send(&mut stream, &mut out).await?;
                    }
                    Some(12) => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| protocol_err("unexpected SASLFinal"))?;
                        client.finish(data).map_err(protocol_err)?;
                    }
                    other => {
                        return Err(protocol_err(format!(
                            "unsupported authentication request {other:?}"
                        )));
                    }
                }
            }
            b'K' => {
                let word = |i: usize| {
                    body.get(i..i + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or_else(|| protocol_err("short BackendKeyData"))
                };
                key = (word(0)?, word(4)?);
            }
            b'E' => return Err(ComputeConnectError::Refused(reencode(tag, &body))),
            b'Z' => {
                greeting.extend_from_slice(&reencode(tag, &body));
                return Ok(ComputeLink {
                    stream,
                    addr,
                    greeting,
                    key,
                });
            }
            _ => greeting.extend_from_slice(&reencode(tag, &body)),
        }
    }
}

fn reencode(tag: u8, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    buf.put_u8(tag);
    buf.put_u32(body.len() as u32 + 4);
    buf.put_slice(body);
    buf
}

async fn send(stream: &mut TcpStream, out: &mut BytesMut) -> Result<(), ComputeConnectError> {
    stream
        .write_all(out)
        .await
        .map_err(|e| ComputeConnectError::Protocol(format!("write to compute: {e}")))?;
    out.clear();
    Ok(())
}

fn protocol_err(e: impl std::fmt::Display) -> ComputeConnectError {
    ComputeConnectError::Protocol(e.to_string())
}
