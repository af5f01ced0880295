//! Physical replication connections (`replication=true`) of a standby on
//! another gateway of the cluster, streaming from a compute of this one.
//! Computes listen on loopback only, so the standby reaches its primary
//! through the primary's gateway: this relays the connection, bytes both
//! ways, to the compute, which authenticates it itself (SCRAM, with a
//! password derived from the cluster's shared backend key). The gateway
//! adds no pooling and no authentication of its own: a replication
//! connection is one long COPY stream, and only a backend's own replication
//! role can log in. Refused on a single gateway, and from another host
//! without TLS. While the stream runs the compute counts a client, so it
//! is not suspended under its standby.

use crate::error::{ClientError, CANNOT_CONNECT_NOW};
use crate::pool::compute_login::open_stream;
use crate::wire::ClientStream;
use ogel_policies::Lifecycle;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// A standby's replication connection, routed.
pub struct Replication {
    /// The compute it streams from.
    pub compute: String,
    /// Its backend's lifecycle (wakes it, counts the stream as a client).
    pub lifecycle: Arc<Lifecycle>,
    /// The startup parameters to send the compute (without `database`).
    pub params: Vec<(String, String)>,
}

/// Relays `client` to the compute until either side closes.
pub async fn run(mut client: ClientStream, to: Replication) {
    let (endpoint, _active) = match to.lifecycle.connect(&to.compute).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::warn!(compute = %to.compute, error = %e, "replication: the compute could not wake");
            crate::wire::messages::send_fatal(&mut client, &ClientError::from(&e)).await;
            return;
        }
    };
    let mut server = match open_stream(&endpoint).await {
        Ok((server, _)) => server,
        Err(e) => {
            let e = ClientError::new(CANNOT_CONNECT_NOW, e.to_string());
            crate::wire::messages::send_fatal(&mut client, &e).await;
            return;
        }
    };
    let mut startup = bytes::BytesMut::new();
    let params: Vec<(&[u8], &[u8])> = to
        .params
        .iter()
        .filter(|(k, _)| k != "database")
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    crate::wire::frontend::startup_message(&mut startup, &params);
    if server.write_all(&startup).await.is_err() {
        let e = ClientError::new(CANNOT_CONNECT_NOW, "the compute closed the connection");
        crate::wire::messages::send_fatal(&mut client, &e).await;
        return;
    }
    tracing::info!(compute = %to.compute, "replication stream relayed to the compute");
    let copied = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    tracing::info!(compute = %to.compute, result = ?copied.map(|_| ()), "replication stream ended");
}
