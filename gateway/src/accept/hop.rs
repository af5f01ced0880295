//! A client of a database another gateway of the cluster serves (its disk
//! holds the database, its computes run it) is carried there: this gateway
//! opens a connection to that gateway's Postgres listener (TLS verified
//! with the CA it publishes, unless it is on loopback), sends the client's
//! startup packet (its database name resolved to `database@branch`), and
//! relays bytes both ways. The client authenticates with the serving
//! gateway itself (one shared catalog), so no secret crosses here.
//!
//! Cancels: the client is given a key of this gateway's whose slot points
//! at the serving gateway's listener and the key it issued, so a
//! CancelRequest that reaches this gateway (libpq sends it to the host it
//! connected to) is forwarded there. Notifications that carry the serving
//! gateway's pid for this client are rewritten to the pid this client was
//! given, so drivers still recognise their own.

use crate::cancel::CancelRegistry;
use crate::cluster::NodeInfo;
use crate::error::{ClientError, CANNOT_CONNECT_NOW};
use crate::wire::server_stream::{start_tls, ServerStream};
use crate::wire::ClientStream;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where a client goes, and what it sent.
pub struct Hop {
    /// The serving gateway.
    pub node: NodeInfo,
    /// Startup parameters to send there (user, database, the rest).
    pub params: Vec<(String, String)>,
}

/// How long connecting to the serving gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// BackendKeyData.
const KEY_DATA: u8 = b'K';
/// NotificationResponse.
const NOTIFICATION: u8 = b'A';

async fn connect(node: &NodeInfo) -> Result<(ServerStream, SocketAddr), ClientError> {
    let unavailable = |why: String| {
        ClientError::new(
            CANNOT_CONNECT_NOW,
            format!(
                "gateway {}, which serves this database, is not reachable at {}: {why}",
                node.name, node.postgres
            ),
        )
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(&node.postgres),
    )
    .await
    .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
    .map_err(|e| unavailable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let addr = tcp.peer_addr().map_err(|e| unavailable(e.to_string()))?;
    if addr.ip().is_loopback() {
        return Ok((ServerStream::Plain(tcp), addr));
    }
    let host = node
        .postgres
        .rsplit_once(':')
        .map_or(node.postgres.as_str(), |(h, _)| h)
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let tls = ogel_plugin_sdk::ComputeTls {
        server_name: host,
        ca_pem: node.ca_pem.clone(),
    };
    let stream = start_tls(tcp, &tls)
        .await
        .map_err(|e| unavailable(crate::error::chain(&e)))?;
    Ok((stream, addr))
}

/// Carries the client to the serving gateway until either side closes.
pub async fn run(mut client: ClientStream, hop: Hop, cancels: &Arc<CancelRegistry>) {
    let (mut server, addr) = match connect(&hop.node).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::warn!(node = %hop.node.name, error = %e.message, "could not reach the serving gateway");
            crate::wire::messages::send_fatal(&mut client, &e).await;
            return;
        }
    };
    let mut startup = BytesMut::new();
    let params: Vec<(&[u8], &[u8])> = hop
        .params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    crate::wire::frontend::startup_message(&mut startup, &params);
    if server.write_all(&startup).await.is_err() {
        let e = ClientError::new(
            CANNOT_CONNECT_NOW,
            format!("gateway {} closed the connection", hop.node.name),
        );
        crate::wire::messages::send_fatal(&mut client, &e).await;
        return;
    }
    let key = cancels.register();
    tracing::debug!(node = %hop.node.name, "client carried to the serving gateway");
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
    let downstream = async {
        let mut buffer = BytesMut::with_capacity(8192);
        let mut theirs: Option<u32> = None;
        loop {
            // Whole messages out, rewritten where they name a key or pid.
            while buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if len < 4 || buffer.len() < 1 + len {
                    break;
                }
                let mut message = buffer.split_to(1 + len);
                match message[0] {
                    KEY_DATA if len >= 12 => {
                        let pid =
                            u32::from_be_bytes([message[5], message[6], message[7], message[8]]);
                        let secret =
                            u32::from_be_bytes([message[9], message[10], message[11], message[12]]);
                        theirs = Some(pid);
                        key.slot.set(Some((addr, pid, secret)));
                        message[5..9].copy_from_slice(&key.pid.to_be_bytes());
                        message[9..13].copy_from_slice(&key.secret.to_be_bytes());
                    }
                    NOTIFICATION if len >= 8 => {
                        let pid =
                            u32::from_be_bytes([message[5], message[6], message[7], message[8]]);
                        if Some(pid) == theirs {
                            message[5..9].copy_from_slice(&key.pid.to_be_bytes());
                        }
                    }
                    _ => {}
                }
                client_write.write_all(&message).await?;
            }
            if buffer.len() >= 5 {
                // A large message: pass what there is without holding it.
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if len > 64 * 1024 && buffer[0] != KEY_DATA && buffer[0] != NOTIFICATION {
                    let mut rest = 1 + len - buffer.len();
                    client_write.write_all(&buffer).await?;
                    buffer.clear();
                    while rest > 0 {
                        let mut chunk = vec![0u8; rest.min(64 * 1024)];
                        let n = server_read.read(&mut chunk).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        client_write.write_all(&chunk[..n]).await?;
                        rest -= n;
                    }
                    continue;
                }
            }
            client_write.flush().await?;
            if server_read.read_buf(&mut buffer).await? == 0 {
                // Anything left is a cut message: pass it as it is.
                if buffer.has_remaining() {
                    client_write.write_all(&buffer).await?;
                }
                return Ok(());
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    drop(key);
}
