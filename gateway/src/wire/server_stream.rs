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

/// Asks the compute for TLS (SSLRequest) and does a verified handshake for
/// `tls.server_name`.
pub async fn start_tls(mut tcp: TcpStream, tls: &ComputeTls) -> Result<ServerStream, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Built once per CA (`None`: the public web roots) by the kit.
    let config = ogel_plugin_kit::tls::shared_client_config(tls.ca_pem.as_deref())
        .map_err(|e| format!("the compute's {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
        .map_err(|_| format!("\"{}\" is not a valid TLS server name", tls.server_name))?;
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8u32.to_be_bytes());
    request[4..].copy_from_slice(&80_877_103u32.to_be_bytes());
    tcp.write_all(&request)
        .await
        .map_err(|e| format!("sending SSLRequest: {e}"))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| format!("reading the SSLRequest answer: {e}"))?;
    if answer[0] != b'S' {
        return Err("the compute does not accept TLS (it answered the SSLRequest with N)".into());
    }
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}: {e}", tls.server_name))?;
    Ok(ServerStream::Tls(Box::new(stream)))
}
