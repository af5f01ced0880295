//! The gateway's side of a compute connection: open it, pass the client's
//! session parameters, log in with credentials only the gateway holds
//! (SCRAM via `postgres-protocol`), and collect the start-up messages
//! (ParameterStatus, BackendKeyData, ReadyForQuery) to hand to the client.

use crate::wire::server_stream::{start_tls, ServerStream};
use crate::wire::startup::{self, ReadError};
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
    pub stream: ServerStream,
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
    /// The connection broke during start-up.
    #[error("compute start-up failed: {what}: {source}")]
    Lost {
        /// What was going on.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS to the compute did not start.
    #[error("compute start-up failed: {0}")]
    Tls(#[from] crate::wire::server_stream::StartTlsError),
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

/// A connection to the compute at `endpoint` (through a chaos fault's
/// proxy while one is on its address; TLS where the endpoint asks for it),
/// before any startup packet.
pub async fn open_stream(
    endpoint: &ComputeEndpoint,
) -> Result<(ServerStream, std::net::SocketAddr), ComputeConnectError> {
    let target = format!("{}:{}", endpoint.host, endpoint.port);
    let unreachable = |source| ComputeConnectError::Unreachable {
        addr: target.clone(),
        source,
    };
    // A chaos fault on this address routes through its proxy.
    let tcp = match target.parse::<std::net::SocketAddr>() {
        Ok(addr) => TcpStream::connect(super::faults::route(addr)).await,
        Err(_) => TcpStream::connect(&target).await,
    }
    .map_err(unreachable)?;
    let addr = tcp.peer_addr().map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let stream = match &endpoint.tls {
        None => ServerStream::Plain(tcp),
        Some(tls) => start_tls(tcp, tls).await?,
    };
    Ok((stream, addr))
}

async fn connect_inner(
    endpoint: &ComputeEndpoint,
    client_params: &[(String, String)],
) -> Result<ComputeLink, ComputeConnectError> {
    let (mut stream, addr) = open_stream(endpoint).await?;
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
        let (tag, body) = startup::read_message(&mut stream, STARTUP_MESSAGE_MAX_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::Io(source) => ComputeConnectError::Lost {
                    what: "connection lost during start-up",
                    source,
                },
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

async fn send(stream: &mut ServerStream, out: &mut BytesMut) -> Result<(), ComputeConnectError> {
    stream
        .write_all(out)
        .await
        .map_err(|source| ComputeConnectError::Lost {
            what: "write to compute",
            source,
        })?;
    stream
        .flush()
        .await
        .map_err(|source| ComputeConnectError::Lost {
            what: "write to compute",
            source,
        })?;
    out.clear();
    Ok(())
}

fn protocol_err(e: impl std::fmt::Display) -> ComputeConnectError {
    ComputeConnectError::Protocol(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogel_plugin_sdk::ComputeTls;
    use tokio::io::AsyncReadExt;

    /// A TLS "compute" for `name` on loopback: answers the SSLRequest with
    /// `answer`, then (after a handshake) logs anyone in.
    async fn fake_compute(answer: u8) -> (SocketAddr, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ep-test.example.neon".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ca_pem = cert.pem();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 8];
                    tcp.read_exact(&mut request).await.unwrap();
                    assert_eq!(&request[4..], &80_877_103u32.to_be_bytes());
                    tcp.write_all(&[answer]).await.unwrap();
                    if answer != b'S' {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut len = [0u8; 4];
                    tls.read_exact(&mut len).await.unwrap();
                    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize - 4];
                    tls.read_exact(&mut rest).await.unwrap();
                    let mut out = BytesMut::new();
                    for (tag, body) in [
                        (b'R', vec![0, 0, 0, 0]),
                        (b'K', vec![0, 0, 0, 7, 0, 0, 0, 9]),
                        (b'Z', vec![b'I']),
                    ] {
                        out.extend_from_slice(&reencode(tag, &body));
                    }
                    tls.write_all(&out).await.unwrap();
                    tls.flush().await.unwrap();
                });
            }
        });
        (addr, ca_pem)
    }

    fn endpoint(addr: SocketAddr, server_name: &str, ca_pem: &str) -> ComputeEndpoint {
        ComputeEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            database: "db".into(),
            generation: 1,
            credentials: Credentials::Password {
                user: "u".into(),
                password: "p".into(),
            },
            read_only: None,
            tls: Some(ComputeTls {
                server_name: server_name.into(),
                ca_pem: Some(ca_pem.into()),
            }),
        }
    }

    #[tokio::test]
    async fn tls_to_a_compute_verifies_its_name() {
        let (addr, ca) = fake_compute(b'S').await;
        let link = connect(&endpoint(addr, "ep-test.example.neon", &ca), &[])
            .await
            .unwrap();
        assert!(matches!(link.stream, ServerStream::Tls(_)));
        assert_eq!(link.key, (7, 9));
        let err = connect(&endpoint(addr, "ep-other.example.neon", &ca), &[])
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
    }

    #[tokio::test]
    async fn a_compute_refusing_tls_is_a_clear_error() {
        let (addr, ca) = fake_compute(b'N').await;
        let err = connect(&endpoint(addr, "ep-test.example.neon", &ca), &[])
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not accept TLS"), "{err}");
    }
}
