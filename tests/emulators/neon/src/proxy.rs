//! The SNI proxy, as Neon's: a client sends SSLRequest (or starts TLS
//! directly, PostgreSQL 17's `sslnegotiation=direct`), the proxy answers
//! `S` and does TLS with a certificate for `*.<domain>`; the endpoint id is
//! the first label of the SNI host name (a `-pooler` suffix is accepted),
//! or `endpoint=<id>` in the startup packet's `options` when the client
//! sent no SNI. A suspended endpoint is started on connect (a
//! `start_compute` operation); then the startup packet (without the
//! `endpoint=` option) is sent to the endpoint's local postgres in
//! plaintext and bytes are relayed both ways. Plaintext clients, unknown
//! endpoints and missing endpoint ids get a Postgres ErrorResponse.

use crate::core::{Core, WakeError};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_V3: i32 = 196608;
const MAX_STARTUP: usize = 10_000;

/// Accepts proxy connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, core: Arc<Core>, tls: tokio_rustls::TlsAcceptor) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if core.faults.down() {
            // "API down" covers the proxy too: the connection is refused.
            drop(stream);
            continue;
        }
        let core = core.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, core, tls).await {
                tracing::debug!(%peer, error = %e, "proxy connection ended");
            }
        });
    }
}

/// A startup-phase message from the client.
enum First {
    Ssl,
    Gss,
    Cancel,
    Startup(Vec<(String, String)>),
}

async fn read_first<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<First> {
    let len = stream.read_i32().await?;
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        anyhow::bail!("invalid startup packet length {len}");
    }
    let code = stream.read_i32().await?;
    let mut body = vec![0u8; len as usize - 8];
    stream.read_exact(&mut body).await?;
    match code {
        SSL_REQUEST => Ok(First::Ssl),
        GSSENC_REQUEST => Ok(First::Gss),
        CANCEL_REQUEST => Ok(First::Cancel),
        PROTOCOL_V3 => Ok(First::Startup(parse_params(&body)?)),
        other => anyhow::bail!("unsupported protocol {other}"),
    }
}

fn parse_params(body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut parts = body.split(|b| *b == 0);
    loop {
        let key = parts
            .next()
            .ok_or_else(|| anyhow::anyhow!("startup packet not terminated"))?;
        if key.is_empty() {
            break;
        }
        let value = parts
            .next()
            .ok_or_else(|| anyhow::anyhow!("startup parameter without a value"))?;
        params.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(params)
}

fn startup_message(params: &[(String, String)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i32(PROTOCOL_V3);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut msg = BytesMut::with_capacity(body.len() + 4);
    msg.put_i32(body.len() as i32 + 4);
    msg.put_slice(&body);
    msg.to_vec()
}

/// A FATAL ErrorResponse.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = BytesMut::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.put_u8(tag);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut msg = BytesMut::new();
    msg.put_u8(b'E');
    msg.put_i32(body.len() as i32 + 4);
    msg.put_slice(&body);
    msg.to_vec()
}

async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: &str,
    message: &str,
) -> anyhow::Result<()> {
    stream.write_all(&error_response(code, message)).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// The endpoint id from the SNI host name, when it is `<id>.<domain>`.
pub(crate) fn endpoint_from_sni(sni: &str, domain: &str) -> Option<String> {
    let sni = sni.trim_end_matches('.').to_ascii_lowercase();
    let label = sni.strip_suffix(&format!(".{}", domain.to_ascii_lowercase()))?;
    if label.is_empty() || label.contains('.') {
        return None;
    }
    Some(label.strip_suffix("-pooler").unwrap_or(label).to_string())
}

/// Takes `endpoint=<id>` (or the older `project=<id>`) out of `options`;
/// returns the id and what is left of the options.
pub(crate) fn endpoint_from_options(options: &str) -> (Option<String>, String) {
    let mut endpoint = None;
    let mut rest = Vec::new();
    for token in options.split_whitespace() {
        let token_value = token.strip_prefix("--").unwrap_or(token);
        match token_value
            .split_once('=')
            .filter(|(k, _)| *k == "endpoint" || *k == "project")
        {
            Some((_, id)) if endpoint.is_none() => endpoint = Some(id.to_string()),
            Some(_) => {}
            None => rest.push(token),
        }
    }
    (endpoint, rest.join(" "))
}

async fn handle(
    mut stream: TcpStream,
    core: Arc<Core>,
    tls: tokio_rustls::TlsAcceptor,
) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    // Direct TLS (a ClientHello first) or the SSLRequest dance.
    let mut peek = [0u8; 1];
    let n = stream.peek(&mut peek).await?;
    if n == 0 {
        return Ok(());
    }
    if peek[0] != 0x16 {
        loop {
            match read_first(&mut stream).await? {
                First::Ssl => {
                    stream.write_all(b"S").await?;
                    break;
                }
                First::Gss => stream.write_all(b"N").await?,
                First::Cancel => return Ok(()),
                First::Startup(_) => {
                    return refuse(
                        &mut stream,
                        "08P01",
                        "connection is insecure (try using `sslmode=require`)",
                    )
                    .await
                }
            }
        }
    }
    let mut tls_stream = tls.accept(stream).await?;
    let sni = tls_stream.get_ref().1.server_name().map(str::to_string);
    let params = match read_first(&mut tls_stream).await? {
        First::Startup(params) => params,
        First::Cancel => return Ok(()),
        First::Ssl | First::Gss => {
            return refuse(
                &mut tls_stream,
                "08P01",
                "unexpected encryption request inside TLS",
            )
            .await
        }
    };
    let mut params: Vec<(String, String)> = params;
    let mut endpoint = sni
        .as_deref()
        .and_then(|s| endpoint_from_sni(s, &core.settings.domain));
    if let Some(index) = params.iter().position(|(k, _)| k == "options") {
        let (from_options, rest) = endpoint_from_options(&params[index].1);
        if endpoint.is_none() {
            endpoint = from_options;
        }
        if rest.is_empty() {
            params.remove(index);
        } else {
            params[index].1 = rest;
        }
    }
    let Some(endpoint) = endpoint else {
        return refuse(
            &mut tls_stream,
            "08004",
            &format!(
                "Endpoint ID is not specified. Either use a client with SNI support (host name <endpoint-id>.{}) or pass the endpoint id in the options: '?options=endpoint%3D<endpoint-id>'",
                core.settings.domain
            ),
        )
        .await;
    };
    if core.state().endpoint_project(&endpoint).is_none() {
        return refuse(
            &mut tls_stream,
            "XX000",
            &format!("The requested endpoint could not be found, or you don't have access to it: {endpoint}"),
        )
        .await;
    }
    // Counted from here: an endpoint being connected to is not idle.
    let _conn = core.connection(&endpoint);
    let port = match core.wake(&endpoint).await {
        Ok(port) => port,
        Err(WakeError::NotFound(_)) => {
            return refuse(
                &mut tls_stream,
                "XX000",
                &format!("The requested endpoint could not be found, or you don't have access to it: {endpoint}"),
            )
            .await
        }
        Err(e @ WakeError::Disabled(_)) => {
            return refuse(&mut tls_stream, "57P03", &e.to_string()).await
        }
        Err(e) => return refuse(&mut tls_stream, "57P03", &e.to_string()).await,
    };
    let mut upstream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                &mut tls_stream,
                "57P03",
                &format!("could not reach the compute: {e}"),
            )
            .await
        }
    };
    let _ = upstream.set_nodelay(true);
    upstream.write_all(&startup_message(&params)).await?;
    tokio::io::copy_bidirectional(&mut tls_stream, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_from_sni_and_options() {
        assert_eq!(
            endpoint_from_sni("ep-a-b-1.localtest.neon", "localtest.neon").as_deref(),
            Some("ep-a-b-1")
        );
        assert_eq!(
            endpoint_from_sni("ep-a-b-1-pooler.localtest.neon", "localtest.neon").as_deref(),
            Some("ep-a-b-1")
        );
        assert_eq!(endpoint_from_sni("localhost", "localtest.neon"), None);
        assert_eq!(
            endpoint_from_sni("x.y.localtest.neon", "localtest.neon"),
            None
        );
        let (ep, rest) = endpoint_from_options("-c search_path=x endpoint=ep-1 -c a=b");
        assert_eq!(ep.as_deref(), Some("ep-1"));
        assert_eq!(rest, "-c search_path=x -c a=b");
        let (ep, rest) = endpoint_from_options("--endpoint=ep-2");
        assert_eq!(ep.as_deref(), Some("ep-2"));
        assert_eq!(rest, "");
    }

    #[test]
    fn startup_round_trip() {
        let params = vec![
            ("user".to_string(), "u".to_string()),
            ("database".to_string(), "d".to_string()),
        ];
        let msg = startup_message(&params);
        assert_eq!(
            i32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize,
            msg.len()
        );
        assert_eq!(parse_params(&msg[8..]).unwrap(), params);
    }
}
