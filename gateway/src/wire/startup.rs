//! Postgres wire-protocol pieces the gateway speaks as a *server*: reading
//! the untyped first packets (startup, SSLRequest, GSSENCRequest,
//! CancelRequest), reading typed messages with a size bound, and encoding
//! the backend messages the gateway itself sends (authentication requests,
//! errors, BackendKeyData, …). The client side of the protocol (gateway →
//! compute) uses `postgres-protocol`'s frontend encoders instead.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Protocol 3.0.
pub const PROTOCOL_3_0: u32 = 196_608;
/// The code of an SSLRequest.
pub const SSL_REQUEST: u32 = 80_877_103;
/// The code of a GSSENCRequest.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// The code of a CancelRequest.
pub const CANCEL_REQUEST: u32 = 80_877_102;

/// Why reading from the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed or closed.
    #[error("connection closed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not valid protocol (answered with 08P01, then close).
    #[error("{0}")]
    Malformed(String),
}

/// The first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running on the connection with this key.
    CancelRequest {
        /// Process id from BackendKeyData.
        pid: u32,
        /// Secret from BackendKeyData.
        secret: u32,
    },
    /// A StartupMessage.
    Startup {
        /// Requested protocol version (major << 16 | minor).
        version: u32,
        /// Parameters in the order sent.
        params: Vec<(String, String)>,
    },
}

/// Reads one untyped first packet, refusing anything longer than `max_len`.
pub async fn read_first_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: usize,
) -> Result<FirstPacket, ReadError> {
    let len = reader.read_u32().await? as usize;
    if !(8..=max_len).contains(&len) {
        return Err(ReadError::Malformed(format!(
            "invalid startup packet length {len} (allowed 8 to {max_len})"
        )));
    }
    let mut body = vec![0u8; len - 4];
    reader.read_exact(&mut body).await?;
    parse_first_packet(&body)
}

fn parse_first_packet(body: &[u8]) -> Result<FirstPacket, ReadError> {
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() == 8 => Ok(FirstPacket::CancelRequest {
            pid: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            secret: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        }),
        version if version >> 16 == 3 => Ok(FirstPacket::Startup {
            version,
            params: parse_startup_params(rest)?,
        }),
        other => Err(ReadError::Malformed(format!(
            "unsupported frontend protocol {}.{}: server supports 3.0",
            other >> 16,
            other & 0xffff
        ))),
    }
}

fn parse_startup_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ReadError> {
    let mut params = Vec::new();
    loop {
        let key = take_cstr(&mut rest)?;
        if key.is_empty() {
            break;
        }
        let value = take_cstr(&mut rest)?;
        params.push((key, value));
    }
    if !rest.is_empty() {
        return Err(ReadError::Malformed(
            "trailing bytes after startup parameters".into(),
        ));
    }
    Ok(params)
}

/// Splits a NUL-terminated UTF-8 string off the front of `buf`.
pub fn take_cstr(buf: &mut &[u8]) -> Result<String, ReadError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| ReadError::Malformed("missing string terminator".into()))?;
    let s = std::str::from_utf8(&buf[..end])
        .map_err(|_| ReadError::Malformed("invalid UTF-8 in a protocol string".into()))?
        .to_string();
    *buf = &buf[end + 1..];
    Ok(s)
}

/// Reads one typed message (tag, body), refusing bodies over `max_len`.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_len: usize,
) -> Result<(u8, Vec<u8>), ReadError> {
    let tag = reader.read_u8().await?;
    let len = reader.read_u32().await? as usize;
    if len < 4 || len - 4 > max_len {
        return Err(ReadError::Malformed(format!(
            "invalid length {len} for message type '{}'",
            tag.escape_ascii()
        )));
    }
    let mut body = vec![0u8; len - 4];
    reader.read_exact(&mut body).await?;
    Ok((tag, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    async fn first(bytes: &[u8]) -> Result<FirstPacket, ReadError> {
        let mut reader = bytes;
        read_first_packet(&mut reader, 10_000).await
    }

    fn packet(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[tokio::test]
    async fn reads_each_kind_of_first_packet() {
        assert_eq!(
            first(&packet(SSL_REQUEST, b"")).await.unwrap(),
            FirstPacket::SslRequest
        );
        assert_eq!(
            first(&packet(GSSENC_REQUEST, b"")).await.unwrap(),
            FirstPacket::GssEncRequest
        );
        let mut key = 7u32.to_be_bytes().to_vec();
        key.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            first(&packet(CANCEL_REQUEST, &key)).await.unwrap(),
            FirstPacket::CancelRequest { pid: 7, secret: 9 }
        );
        let startup = first(&packet(PROTOCOL_3_0, b"user\0bob\0database\0shop\0\0"))
            .await
            .unwrap();
        assert_eq!(
            startup,
            FirstPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "bob".into()),
                    ("database".into(), "shop".into())
                ]
            }
        );
    }

    #[tokio::test]
    async fn refuses_malformed_first_packets() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 4],                            // too short
            vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],    // huge length
            packet(1234, b""),                           // unknown code
            packet(PROTOCOL_3_0, b"user\0bob"),          // no terminator
            packet(PROTOCOL_3_0, b"user\0\xff\xfe\0\0"), // bad UTF-8
            packet(PROTOCOL_3_0, b"user\0bob\0\0extra"), // trailing bytes
            packet(SSL_REQUEST, b"xx"),                  // SSLRequest with a body
            packet(CANCEL_REQUEST, b"short"),            // short cancel key
        ];
        for case in cases {
            assert!(
                matches!(first(&case).await, Err(ReadError::Malformed(_))),
                "accepted {case:?}"
            );
        }
        // A truncated stream is an I/O error, not a hang or a panic.
        assert!(matches!(
            first(&[0, 0, 0, 40, 0, 3]).await,
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn error_response_carries_sqlstate_and_length() {
        let mut buf = BytesMut::new();
        crate::wire::messages::error_response(
            &mut buf,
            true,
            "3D000",
            "database \"x\" does not exist",
            None,
        );
        assert_eq!(buf[0], b'E');
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(len + 1, buf.len());
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("C3D000\0"));
        assert!(text.contains("SFATAL\0"));
    }
}
