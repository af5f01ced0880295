//! The gateway's socket to a compute: plain TCP (a compute on loopback) or
//! TLS (a compute across a network, such as Neon's or RDS's, with the
//! server name sent as SNI and verified). The TLS client configuration is
//! the plugin kit's (`ogel_plugin_kit::tls`), shared with the backends.

use ogel_plugin_sdk::ComputeTls;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A connection to a compute.
pub enum ServerStream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    /// The TCP socket underneath (readiness, peeking).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why TLS to a compute did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartTlsError {
    /// The CA the backend gave is not usable.
    #[error("the compute's {0}")]
    Config(#[from] ogel_plugin_kit::tls::TlsConfigError),
    /// The backend's server name is not a DNS name or address.
    #[error("\"{0}\" is not a valid TLS server name")]
    ServerName(String),
    /// The SSLRequest could not be sent.
    #[error("sending SSLRequest: {0}")]
    Send(#[source] io::Error),
    /// No answer to it.
    #[error("reading the SSLRequest answer: {0}")]
    Answer(#[source] io::Error),
    /// The compute said `N`.
    #[error("the compute does not accept TLS (it answered the SSLRequest with N)")]
    Refused,
    /// The handshake failed (certificate, name, protocol).
    #[error("TLS handshake with {name}: {source}")]
    Handshake {
        /// The name verified.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Asks the compute for TLS (SSLRequest) and does a verified handshake for
/// `tls.server_name`.
pub async fn start_tls(
    mut tcp: TcpStream,
    tls: &ComputeTls,
) -> Result<ServerStream, StartTlsError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Built once per CA (`None`: the public web roots) by the kit.
    let config = ogel_plugin_kit::tls::shared_client_config(tls.ca_pem.as_deref())?;
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|_| StartTlsError::ServerName(tls.server_name.clone()))?;
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8u32.to_be_bytes());
    request[4..].copy_from_slice(&crate::wire::startup::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&request).await.map_err(StartTlsError::Send)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(StartTlsError::Answer)?;
    if answer[0] != b'S' {
        return Err(StartTlsError::Refused);
    }
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|source| StartTlsError::Handshake {
            name: tls.server_name.clone(),
            source,
        })?;
    Ok(ServerStream::Tls(Box::new(stream)))
}
