//! The gateway's socket to a compute: plain TCP (a compute on loopback) or
//! TLS (a compute across a network, such as Neon's or RDS's, with the
//! server name sent as SNI and verified). Owns the TLS client setup.

use ogel_plugin_sdk::ComputeTls;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
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

/// Client configurations by trusted CA (`None`: the public web roots),
/// built once each.
fn client_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIGS: OnceLock<Mutex<HashMap<Option<String>, Arc<rustls::ClientConfig>>>> =
        OnceLock::new();
    let configs = CONFIGS.get_or_init(Mutex::default);
    let key = ca_pem.map(str::to_string);
    if let Some(config) = configs.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(config.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| format!("the compute's CA is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the compute's CA was refused: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the compute's CA holds no certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let config = Arc::new(config);
    configs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, config.clone());
    Ok(config)
}

/// Asks the compute for TLS (SSLRequest) and does a verified handshake for
/// `tls.server_name`.
pub async fn start_tls(mut tcp: TcpStream, tls: &ComputeTls) -> Result<ServerStream, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = client_config(tls.ca_pem.as_deref())?;
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
