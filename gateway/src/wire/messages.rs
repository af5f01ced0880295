//! Typed protocol messages after the startup packet: framing (tag +
//! length), the few the relay looks inside (Parse/Bind/Describe/Close of
//! named statements, ParameterStatus, ReadyForQuery, errors), and every
//! message the gateway makes itself — authentication requests,
//! BackendKeyData, ErrorResponse (one encoder, ERROR or FATAL). Everything
//! else is relayed as bytes, never decoded.
//!
//! Strings inside client and server messages are bytes in the client's
//! encoding (LATIN9, SJIS, …), so the readers here return `&[u8]`, never
//! `&str`: nothing on the relay path requires UTF-8.

use crate::error::ClientError;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Length of a message header: tag byte + 4-byte length.
pub const HEADER: usize = 5;

/// The header of the message at the start of `buf`: (tag, total length
/// including the tag), or `None` if fewer than 5 bytes are there.
pub fn header(buf: &[u8]) -> Option<(u8, usize)> {
    if buf.len() < HEADER {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    Some((buf[0], len + 1))
}

/// A NUL-terminated string at `at` in `body`: (its bytes, index after the
/// NUL).
pub fn cstr(body: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = body.get(at..)?;
    let end = memchr::memchr(0, rest)?;
    Some((&rest[..end], at + end + 1))
}

/// Parse: (statement name, query, the bytes after the query: parameter
/// types). `msg` is the whole message.
pub fn parse_fields(msg: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (name, at) = cstr(msg, HEADER)?;
    let (query, at) = cstr(msg, at)?;
    Some((name, query, &msg[at..]))
}

/// Bind: (portal, statement name, index where the rest starts).
pub fn bind_fields(msg: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let (portal, at) = cstr(msg, HEADER)?;
    let (statement, at) = cstr(msg, at)?;
    Some((portal, statement, at))
}

/// Describe or Close: (kind `S`/`P`, name).
pub fn target_fields(msg: &[u8]) -> Option<(u8, &[u8])> {
    let kind = *msg.get(HEADER)?;
    let (name, _) = cstr(msg, HEADER + 1)?;
    Some((kind, name))
}

/// Appends a message with `tag` whose body is the concatenation of `parts`.
pub fn put(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(len + HEADER);
    out.put_u8(tag);
    out.put_u32((len + 4) as u32);
    for part in parts {
        out.put_slice(part);
    }
}

/// A Parse message for `name` with `query` and the original parameter types.
pub fn parse_message(out: &mut BytesMut, name: &str, query: &[u8], types: &[u8]) {
    put(out, b'P', &[name.as_bytes(), b"\0", query, b"\0", types]);
}

/// `msg` (Bind) with its statement name replaced.
pub fn rename_bind(out: &mut BytesMut, msg: &[u8], portal: &[u8], name: &str, rest_at: usize) {
    put(
        out,
        b'B',
        &[portal, b"\0", name.as_bytes(), b"\0", &msg[rest_at..]],
    );
}

/// A Describe of statement `name`.
pub fn describe_statement(out: &mut BytesMut, name: &str) {
    put(out, b'D', &[b"S", name.as_bytes(), b"\0"]);
}

/// A simple Query (`sql` in the connection's client encoding).
pub fn query(out: &mut BytesMut, sql: &[u8]) {
    put(out, b'Q', &[sql, b"\0"]);
}

/// ParseComplete.
pub const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];
/// CloseComplete.
pub const CLOSE_COMPLETE: &[u8] = &[b'3', 0, 0, 0, 4];

/// ParameterStatus body: (name, value). Names are ASCII; the value is in
/// the client encoding.
pub fn parameter_status_fields(msg: &[u8]) -> Option<(&str, &[u8])> {
    let (name, at) = cstr(msg, HEADER)?;
    let (value, _) = cstr(msg, at)?;
    Some((std::str::from_utf8(name).ok()?, value))
}

/// A ParameterStatus message.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &[u8]) {
    put(out, b'S', &[name.as_bytes(), b"\0", value, b"\0"]);
}

/// ReadyForQuery with transaction status `status` (`I`, `T`, `E`).
pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put(out, b'Z', &[&[status]]);
}

/// CommandComplete with `tag`.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put(out, b'C', &[tag.as_bytes(), b"\0"]);
}

/// An ErrorResponse (severity ERROR, or FATAL when `fatal`).
pub fn error_response(
    out: &mut BytesMut,
    fatal: bool,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    error_response_bytes(out, fatal, code, message.as_bytes(), hint)
}

/// [`error_response`] with a message in the client's encoding.
pub fn error_response_bytes(
    out: &mut BytesMut,
    fatal: bool,
    code: &str,
    message: &[u8],
    hint: Option<&str>,
) {
    let severity: &[u8] = if fatal { b"FATAL" } else { b"ERROR" };
    let mut body = BytesMut::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code.as_bytes()),
        (b'M', message),
    ] {
        body.put_u8(field);
        body.put_slice(value);
        body.put_u8(0);
    }
    if let Some(hint) = hint {
        body.put_u8(b'H');
        body.put_slice(hint.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    put(out, b'E', &[&body]);
}

/// Whether an ErrorResponse is FATAL or PANIC (the server is going away).
pub fn error_is_fatal(msg: &[u8]) -> bool {
    let mut at = HEADER;
    while let Some(&field) = msg.get(at) {
        if field == 0 {
            break;
        }
        let Some((value, next)) = cstr(msg, at + 1) else {
            break;
        };
        if field == b'V' || field == b'S' {
            return matches!(value, b"FATAL" | b"PANIC");
        }
        at = next;
    }
    false
}

/// CommandComplete's tag.
pub fn command_tag(msg: &[u8]) -> &[u8] {
    cstr(msg, HEADER).map(|(t, _)| t).unwrap_or(b"")
}

/// Field `code` (`C`, `M`, …) of an ErrorResponse or NoticeResponse `msg`
/// (the whole message), as sent.
pub fn error_field(msg: &[u8], code: u8) -> Option<&[u8]> {
    let mut at = HEADER;
    while let Some(&field) = msg.get(at) {
        if field == 0 {
            break;
        }
        let (value, next) = cstr(msg, at + 1)?;
        if field == code {
            return Some(value);
        }
        at = next;
    }
    None
}

/// An ErrorResponse `msg` with its severity made FATAL: a server's refusal
/// of a client's startup setting, passed on as Postgres would at login.
pub fn as_fatal(msg: &[u8]) -> BytesMut {
    let mut body = BytesMut::with_capacity(msg.len());
    let mut at = HEADER;
    while let Some(&field) = msg.get(at) {
        let Some((value, next)) = cstr(msg, at + 1).filter(|_| field != 0) else {
            break;
        };
        body.put_u8(field);
        body.put_slice(if matches!(field, b'S' | b'V') {
            b"FATAL"
        } else {
            value
        });
        body.put_u8(0);
        at = next;
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + HEADER);
    put(&mut out, b'E', &[&body]);
    out
}

/// Writes a message whose body `body` writes, filling in the length.
fn message_with(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    message_with(buf, b'R', |b| b.put_u32(3));
}

/// AuthenticationSASL offering SCRAM-SHA-256 only.
pub fn auth_sasl(buf: &mut BytesMut) {
    message_with(buf, b'R', |b| {
        b.put_u32(10);
        put_cstr(b, "SCRAM-SHA-256");
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue (11) or AuthenticationSASLFinal (12).
pub fn auth_sasl_data(buf: &mut BytesMut, kind: u32, data: &[u8]) {
    message_with(buf, b'R', |b| {
        b.put_u32(kind);
        b.put_slice(data);
    });
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    message_with(buf, b'R', |b| b.put_u32(0));
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: u32, secret: u32) {
    message_with(buf, b'K', |b| {
        b.put_u32(pid);
        b.put_u32(secret);
    });
}

/// NegotiateProtocolVersion: the newest version we speak (whole number,
/// e.g. [`PROTOCOL_3_0`]) and the `_pq_.` options we ignore.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_version: u32, unrecognized: &[&str]) {
    message_with(buf, b'v', |b| {
        b.put_u32(newest_version);
        b.put_u32(unrecognized.len() as u32);
        for option in unrecognized {
            put_cstr(b, option);
        }
    });
}

/// Writes `bytes` to a client and flushes (TLS buffers records).
pub async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Sends a FATAL ErrorResponse for `e` and closes the connection: the one
/// way every stage ends a client it refuses.
pub async fn send_fatal<S: AsyncWrite + Unpin>(stream: &mut S, e: &ClientError) {
    let mut out = BytesMut::new();
    error_response(&mut out, true, e.code, &e.message, e.hint.as_deref());
    let _ = send(stream, &out).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_is_renamed_keeping_its_parameters() {
        let mut msg = BytesMut::new();
        put(
            &mut msg,
            b'B',
            &[b"portal\0", b"s1\0", &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]],
        );
        let (portal, name, rest) = bind_fields(&msg).unwrap();
        assert_eq!((portal, name), (&b"portal"[..], &b"s1"[..]));
        let mut out = BytesMut::new();
        rename_bind(&mut out, &msg, portal, "ogel_abc", rest);
        let (p2, n2, rest2) = bind_fields(&out).unwrap();
        assert_eq!((p2, n2), (&b"portal"[..], &b"ogel_abc"[..]));
        assert_eq!(&out[rest2..], &msg[rest..]);
        assert_eq!(header(&out).unwrap().1, out.len());
    }

    #[test]
    fn fatal_errors_are_recognised() {
        let mut out = BytesMut::new();
        error_response(&mut out, true, "57P01", "terminating", None);
        assert!(error_is_fatal(&out));
        out.clear();
        error_response(&mut out, false, "42601", "syntax", Some("hint"));
        assert!(!error_is_fatal(&out));
        assert_eq!(error_field(&out, b'C'), Some(&b"42601"[..]));
        assert_eq!(error_field(&out, b'H'), Some(&b"hint"[..]));
        let fatal = as_fatal(&out);
        assert!(error_is_fatal(&fatal));
        assert_eq!(error_field(&fatal, b'M'), Some(&b"syntax"[..]));
        assert_eq!(header(&fatal).unwrap().1, fatal.len());
    }

    #[test]
    fn strings_are_bytes_in_any_encoding() {
        // LATIN9 '€' is 0xA4, not UTF-8.
        let mut out = BytesMut::new();
        query(&mut out, b"select 'x' as \"\xa4\"");
        assert_eq!(
            cstr(&out, HEADER).map(|(s, _)| s),
            Some(&b"select 'x' as \"\xa4\""[..])
        );
    }

    #[test]
    fn parse_fields_and_status() {
        let mut out = BytesMut::new();
        parse_message(&mut out, "s", b"SELECT $1", &[0, 1, 0, 0, 0, 23]);
        assert_eq!(
            parse_fields(&out),
            Some((&b"s"[..], &b"SELECT $1"[..], &[0u8, 1, 0, 0, 0, 23][..]))
        );
        out.clear();
        parameter_status(&mut out, "TimeZone", b"UTC");
        assert_eq!(
            parameter_status_fields(&out),
            Some(("TimeZone", &b"UTC"[..]))
        );
        assert_eq!(header(b"Z\0\0"), None);
    }
}
