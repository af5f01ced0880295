//! The client (frontend) side of the codec: the messages a Postgres client
//! sends — the untyped first packets (StartupMessage, SSLRequest,
//! GSSENCRequest, CancelRequest), PasswordMessage and the SASL responses,
//! the simple and extended query messages, COPY messages, FunctionCall and
//! Terminate — plus the few readers a client needs for what comes back
//! (ErrorResponse fields, the authentication request code).
//!
//! The gateway itself does not send these (towards a compute it uses
//! `postgres-protocol`'s encoders); test clients and the fuzzer do. So the
//! strings here are bytes, not `&str`: a hostile client sends names that
//! are not UTF-8, and the `*_declaring` / `*_raw` variants write a length
//! or count field that lies, or a body the caller made. Everything goes
//! through the one framing, [`put`] (tag, 4-byte length, body), or
//! [`first_packet`] for the untyped packets; where `postgres-protocol`
//! encodes a message with no strings correctly, it is used as it is.

use super::messages::put;
use super::startup::{CANCEL_REQUEST, GSSENC_REQUEST, PROTOCOL_3_0, SSL_REQUEST};
use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend as pp;
use std::borrow::Cow;

/// Appends `s` and a terminating NUL (a protocol string; `s` should not
/// hold a NUL itself, but nothing stops a hostile caller).
pub fn cstring(out: &mut BytesMut, s: &[u8]) {
    out.reserve(s.len() + 1);
    out.put_slice(s);
    out.put_u8(0);
}

/// An untyped first packet: its 4-byte length (counting itself), the
/// 4-byte `code` (a protocol version or a request code), then `rest`.
pub fn first_packet(out: &mut BytesMut, code: u32, rest: &[u8]) {
    out.reserve(rest.len() + 8);
    out.put_u32((rest.len() + 8) as u32);
    out.put_u32(code);
    out.put_slice(rest);
}

/// Overwrites the length field of the untyped packet that starts at `at`
/// in `out` with `len` (a lie, for hostile input). Does nothing when `out`
/// holds fewer than 4 bytes there.
pub fn set_first_packet_length(out: &mut [u8], at: usize, len: u32) {
    if let Some(field) = out.get_mut(at..at + 4) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

/// Overwrites the length field of the typed message (tag, length, body)
/// that starts at `at` in `out` with `len`. Does nothing when `out` holds
/// fewer than 5 bytes there.
pub fn set_message_length(out: &mut [u8], at: usize, len: u32) {
    if let Some(field) = out.get_mut(at + 1..at + 5) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

/// A message header only: `tag` and a length field of `len`, no body (for
/// a length that is wrong, or a body the caller sends later).
pub fn header_only(out: &mut BytesMut, tag: u8, len: u32) {
    out.put_u8(tag);
    out.put_u32(len);
}

/// A StartupMessage (protocol 3.0) with `params` in order; the list ends
/// with the empty name.
pub fn startup_message(out: &mut BytesMut, params: &[(&[u8], &[u8])]) {
    let mut rest = BytesMut::new();
    for (name, value) in params {
        cstring(&mut rest, name);
        cstring(&mut rest, value);
    }
    rest.put_u8(0);
    first_packet(out, PROTOCOL_3_0, &rest);
}

/// An SSLRequest.
pub fn ssl_request(out: &mut BytesMut) {
    pp::ssl_request(out);
}

/// A GSSENCRequest.
pub fn gssenc_request(out: &mut BytesMut) {
    first_packet(out, GSSENC_REQUEST, &[]);
}

/// A CancelRequest for the connection whose BackendKeyData was (`pid`,
/// `secret`).
pub fn cancel_request(out: &mut BytesMut, pid: u32, secret: u32) {
    pp::cancel_request(pid as i32, secret as i32, out);
}

/// A CancelRequest whose key is `key` as given (8 bytes when well formed).
pub fn cancel_request_raw(out: &mut BytesMut, key: &[u8]) {
    first_packet(out, CANCEL_REQUEST, key);
}

/// An SSLRequest (`ssl`) or GSSENCRequest with `extra` bytes after the
/// code (a well-formed one has none).
pub fn encryption_request_raw(out: &mut BytesMut, ssl: bool, extra: &[u8]) {
    let code = if ssl { SSL_REQUEST } else { GSSENC_REQUEST };
    first_packet(out, code, extra);
}

/// A PasswordMessage (cleartext or MD5 answer).
pub fn password_message(out: &mut BytesMut, password: &[u8]) {
    put(out, b'p', &[password, b"\0"]);
}

/// A SASLInitialResponse: the chosen `mechanism` and the client-first
/// message `data`.
pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &[u8], data: &[u8]) {
    sasl_initial_response_declaring(out, mechanism, data, data.len() as i32);
}

/// A SASLInitialResponse whose data length field says `declared` whatever
/// the length of `data` (-1 is "no data" to the server).
pub fn sasl_initial_response_declaring(
    out: &mut BytesMut,
    mechanism: &[u8],
    data: &[u8],
    declared: i32,
) {
    put(
        out,
        b'p',
        &[mechanism, b"\0", &declared.to_be_bytes(), data],
    );
}

/// A SASLResponse carrying `data` (the client-final message).
pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    put(out, b'p', &[data]);
}

/// A simple Query.
pub fn query(out: &mut BytesMut, sql: &[u8]) {
    put(out, b'Q', &[sql, b"\0"]);
}

/// A Parse of statement `name` with `sql` and the parameter type OIDs.
pub fn parse(out: &mut BytesMut, name: &[u8], sql: &[u8], param_types: &[u32]) {
    parse_declaring(out, name, sql, param_types.len() as u16, param_types);
}

/// A Parse whose parameter count field says `declared` whatever the number
/// of `param_types` that follow.
pub fn parse_declaring(
    out: &mut BytesMut,
    name: &[u8],
    sql: &[u8],
    declared: u16,
    param_types: &[u32],
) {
    let mut types = BytesMut::with_capacity(2 + 4 * param_types.len());
    types.put_u16(declared);
    for oid in param_types {
        types.put_u32(*oid);
    }
    put(out, b'P', &[name, b"\0", sql, b"\0", &types]);
}

/// One parameter value of a Bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindParam<'a> {
    /// SQL NULL (length -1, no bytes).
    Null,
    /// A value: its length, then its bytes.
    Value(&'a [u8]),
    /// The bytes with a length field of the given value (a lie unless it
    /// is their length).
    Declaring(i32, &'a [u8]),
}

/// A Bind of `statement` to `portal`: parameter format codes, values, and
/// result format codes.
pub fn bind(
    out: &mut BytesMut,
    portal: &[u8],
    statement: &[u8],
    formats: &[i16],
    params: &[BindParam<'_>],
    result_formats: &[i16],
) {
    bind_declaring(
        out,
        portal,
        statement,
        formats,
        params.len() as i16,
        params,
        result_formats,
    );
}

/// A Bind whose parameter count field says `declared` whatever the number
/// of `params` that follow.
pub fn bind_declaring(
    out: &mut BytesMut,
    portal: &[u8],
    statement: &[u8],
    formats: &[i16],
    declared: i16,
    params: &[BindParam<'_>],
    result_formats: &[i16],
) {
    let mut rest = BytesMut::new();
    rest.put_i16(formats.len() as i16);
    for f in formats {
        rest.put_i16(*f);
    }
    rest.put_i16(declared);
    for p in params {
        match p {
            BindParam::Null => rest.put_i32(-1),
            BindParam::Value(v) => {
                rest.put_i32(v.len() as i32);
                rest.put_slice(v);
            }
            BindParam::Declaring(len, v) => {
                rest.put_i32(*len);
                rest.put_slice(v);
            }
        }
    }
    rest.put_i16(result_formats.len() as i16);
    for f in result_formats {
        rest.put_i16(*f);
    }
    bind_raw(out, portal, statement, &rest);
}

/// A Bind with portal and statement names, then `rest` as given (formats,
/// values, result formats — or anything else).
pub fn bind_raw(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    put(out, b'B', &[portal, b"\0", statement, b"\0", rest]);
}

/// A Describe of a statement (`kind` `S`) or portal (`P`) — any other
/// `kind` byte is sent as it is.
pub fn describe(out: &mut BytesMut, kind: u8, name: &[u8]) {
    put(out, b'D', &[&[kind], name, b"\0"]);
}

/// An Execute of `portal`, returning at most `max_rows` rows (0: all).
pub fn execute(out: &mut BytesMut, portal: &[u8], max_rows: i32) {
    put(out, b'E', &[portal, b"\0", &max_rows.to_be_bytes()]);
}

/// A Sync.
pub fn sync(out: &mut BytesMut) {
    pp::sync(out);
}

/// A Flush.
pub fn flush(out: &mut BytesMut) {
    pp::flush(out);
}

/// A Close of a statement (`kind` `S`) or portal (`P`) — any other `kind`
/// byte is sent as it is.
pub fn close(out: &mut BytesMut, kind: u8, name: &[u8]) {
    put(out, b'C', &[&[kind], name, b"\0"]);
}

/// A CopyData carrying `data`.
pub fn copy_data(out: &mut BytesMut, data: &[u8]) {
    put(out, b'd', &[data]);
}

/// A CopyDone.
pub fn copy_done(out: &mut BytesMut) {
    pp::copy_done(out);
}

/// A CopyFail with the error `message`.
pub fn copy_fail(out: &mut BytesMut, message: &[u8]) {
    put(out, b'f', &[message, b"\0"]);
}

/// A FunctionCall of function `oid` with `rest` as given (argument formats,
/// arguments, result format — or anything else).
pub fn function_call_raw(out: &mut BytesMut, oid: u32, rest: &[u8]) {
    put(out, b'F', &[&oid.to_be_bytes(), rest]);
}

/// A Terminate.
pub fn terminate(out: &mut BytesMut) {
    pp::terminate(out);
}

/// The field `code` (`S`, `V`, `C`, `M`, …) of an ErrorResponse or
/// NoticeResponse `body` (the message without its header), lossily UTF-8.
pub fn error_field(body: &[u8], code: u8) -> Option<Cow<'_, str>> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        if kind == code {
            return Some(String::from_utf8_lossy(&tail[..end]));
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The request code of an Authentication message `body` (0 ok, 3
/// cleartext, 10 SASL, 11 SASL continue, 12 SASL final, …).
pub fn auth_code(body: &[u8]) -> Option<u32> {
    let code = body.get(..4)?;
    Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
}

/// The (process id, secret) of a BackendKeyData `body`.
pub fn backend_key(body: &[u8]) -> Option<(u32, u32)> {
    if body.len() != 8 {
        return None;
    }
    Some((
        u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    ))
}

/// A typed message at the start of `buf`, as a client splits what the
/// server sends.
#[derive(Debug, PartialEq, Eq)]
pub enum Split<'a> {
    /// A whole message: its tag, its body, and its length with the header.
    Message(u8, &'a [u8], usize),
    /// Not all of it has arrived.
    Partial,
    /// A length field below 4: no message can follow.
    BadLength,
}

/// Splits the first message off `buf` (see [`Split`]).
pub fn split_message(buf: &[u8]) -> Split<'_> {
    let Some((tag, total)) = super::messages::header(buf) else {
        return Split::Partial;
    };
    if total < super::messages::HEADER {
        return Split::BadLength;
    }
    match buf.get(super::messages::HEADER..total) {
        Some(body) => Split::Message(tag, body, total),
        None => Split::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{bind_fields, header, parse_fields, target_fields};
    use crate::wire::startup::{read_first_packet, read_message, FirstPacket};

    fn pp_bytes(f: impl FnOnce(&mut BytesMut) -> std::io::Result<()>) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b).expect("postgres-protocol encodes it");
        b
    }

    fn ours(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    #[test]
    fn messages_match_postgres_protocol() {
        assert_eq!(
            ours(|b| query(b, b"SELECT 1")),
            pp_bytes(|b| pp::query("SELECT 1", b))
        );
        assert_eq!(
            ours(|b| parse(b, b"s1", b"SELECT $1", &[23])),
            pp_bytes(|b| pp::parse("s1", "SELECT $1", [23], b))
        );
        assert_eq!(
            ours(|b| describe(b, b'S', b"s1")),
            pp_bytes(|b| pp::describe(b'S', "s1", b))
        );
        assert_eq!(
            ours(|b| close(b, b'P', b"p")),
            pp_bytes(|b| pp::close(b'P', "p", b))
        );
        assert_eq!(
            ours(|b| execute(b, b"p", 7)),
            pp_bytes(|b| pp::execute("p", 7, b))
        );
        assert_eq!(
            ours(|b| copy_fail(b, b"no")),
            pp_bytes(|b| pp::copy_fail("no", b))
        );
        assert_eq!(
            ours(|b| copy_data(b, b"1\tx\n")),
            pp_bytes(|b| pp::CopyData::new(&b"1\tx\n"[..]).map(|d| d.write(b)))
        );
        assert_eq!(
            ours(|b| password_message(b, b"pw")),
            pp_bytes(|b| pp::password_message(b"pw", b))
        );
        assert_eq!(
            ours(|b| sasl_initial_response(b, b"SCRAM-SHA-256", b"n,,n=,r=abc")),
            pp_bytes(|b| pp::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", b))
        );
        assert_eq!(
            ours(|b| sasl_response(b, b"c=biws")),
            pp_bytes(|b| pp::sasl_response(b"c=biws", b))
        );
        assert_eq!(
            ours(|b| startup_message(b, &[(b"user", b"bob"), (b"database", b"shop")])),
            pp_bytes(|b| pp::startup_message([("user", "bob"), ("database", "shop")], b))
        );
        let values: [Option<&[u8]>; 2] = [Some(b"42"), None];
        assert_eq!(
            ours(|b| bind(
                b,
                b"p",
                b"s1",
                &[0, 1],
                &[BindParam::Value(b"42"), BindParam::Null],
                &[1]
            )),
            pp_bytes(|b| pp::bind(
                "p",
                "s1",
                [0, 1],
                values,
                |v, buf| match v {
                    Some(v) => {
                        buf.put_slice(v);
                        Ok(postgres_protocol::IsNull::No)
                    }
                    None => Ok::<_, Box<dyn std::error::Error + Sync + Send>>(
                        postgres_protocol::IsNull::Yes
                    ),
                },
                [1],
                b
            )
            .map_err(|_| std::io::Error::other("bind")))
        );
        assert_eq!(
            ours(gssenc_request).as_ref(),
            &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]
        );
    }

    #[test]
    fn round_trips_through_the_gateways_readers() {
        let msg = ours(|b| parse(b, b"s1", b"SELECT $1", &[23]));
        assert_eq!(
            parse_fields(&msg),
            Some((&b"s1"[..], &b"SELECT $1"[..], &[0u8, 1, 0, 0, 0, 23][..]))
        );
        let msg = ours(|b| bind_raw(b, b"portal", b"s2", &[0, 0, 0, 0, 0, 0]));
        let (portal, name, rest) = bind_fields(&msg).unwrap();
        assert_eq!(
            (portal, name, &msg[rest..]),
            (&b"portal"[..], &b"s2"[..], &[0u8; 6][..])
        );
        let msg = ours(|b| describe(b, b'P', b"c2"));
        assert_eq!(target_fields(&msg), Some((b'P', &b"c2"[..])));
        let msg = ours(|b| close(b, b'S', b""));
        assert_eq!(target_fields(&msg), Some((b'S', &b""[..])));
        for msg in [
            ours(sync),
            ours(flush),
            ours(terminate),
            ours(copy_done),
            ours(|b| query(b, b"")),
            ours(|b| function_call_raw(b, 100_000, b"xy")),
        ] {
            assert_eq!(header(&msg).map(|(_, len)| len), Some(msg.len()));
        }
    }

    #[tokio::test]
    async fn first_packets_round_trip() {
        async fn read(bytes: BytesMut) -> FirstPacket {
            let mut reader = &bytes[..];
            read_first_packet(&mut reader, 10_000).await.unwrap()
        }
        assert_eq!(read(ours(ssl_request)).await, FirstPacket::SslRequest);
        assert_eq!(read(ours(gssenc_request)).await, FirstPacket::GssEncRequest);
        assert_eq!(
            read(ours(|b| encryption_request_raw(b, true, b""))).await,
            FirstPacket::SslRequest
        );
        assert_eq!(
            read(ours(|b| cancel_request(b, 7, 0xffff_fff0))).await,
            FirstPacket::CancelRequest {
                pid: 7,
                secret: 0xffff_fff0
            }
        );
        let mut key = 7u32.to_be_bytes().to_vec();
        key.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            read(ours(|b| cancel_request_raw(b, &key))).await,
            FirstPacket::CancelRequest { pid: 7, secret: 9 }
        );
        assert_eq!(
            read(ours(|b| startup_message(b, &[(b"user", b"bob")]))).await,
            FirstPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![("user".into(), "bob".into())]
            }
        );
        let mut msg = ours(|b| sasl_response(b, b"c=biws"));
        let mut reader = &msg[..];
        assert_eq!(
            read_message(&mut reader, 100).await.unwrap(),
            (b'p', b"c=biws".to_vec())
        );
        set_message_length(&mut msg, 0, 3);
        let mut reader = &msg[..];
        assert!(read_message(&mut reader, 100).await.is_err());
    }

    #[test]
    fn lying_lengths_and_counts() {
        let msg = ours(|b| sasl_initial_response_declaring(b, b"M", b"ab", -1));
        assert_eq!(&msg[5..], b"M\0\xff\xff\xff\xffab");
        let msg = ours(|b| parse_declaring(b, b"", b"q", 3, &[]));
        assert_eq!(&msg[5..], b"\0q\0\0\x03");
        let msg = ours(|b| {
            bind_declaring(
                b,
                b"",
                b"",
                &[],
                100,
                &[BindParam::Declaring(1000, b"42")],
                &[],
            )
        });
        assert_eq!(&msg[5..], b"\0\0\0\0\0\x64\0\0\x03\xe842\0\0");
        let mut packet = ours(|b| startup_message(b, &[]));
        set_first_packet_length(&mut packet, 0, 7);
        assert_eq!(&packet[..4], &[0, 0, 0, 7]);
        set_first_packet_length(&mut packet, 8, 7); // out of range: no-op
        assert_eq!(ours(|b| header_only(b, b'Q', 3)).as_ref(), b"Q\0\0\0\x03");
    }

    #[test]
    fn splits_and_reads_server_messages() {
        let mut buf = BytesMut::new();
        crate::wire::messages::error_response(&mut buf, true, "28P01", "bad", None);
        let Split::Message(tag, body, len) = split_message(&buf) else {
            panic!("a whole message");
        };
        assert_eq!((tag, len), (b'E', buf.len()));
        assert_eq!(error_field(body, b'C').as_deref(), Some("28P01"));
        assert_eq!(error_field(body, b'V').as_deref(), Some("FATAL"));
        assert_eq!(error_field(body, b'H'), None);
        assert_eq!(split_message(&buf[..buf.len() - 1]), Split::Partial);
        assert_eq!(split_message(b"Z\0\0"), Split::Partial);
        assert_eq!(split_message(b"Z\0\0\0\x03"), Split::BadLength);
        let mut ok = BytesMut::new();
        crate::wire::messages::auth_sasl(&mut ok);
        let Split::Message(b'R', body, _) = split_message(&ok) else {
            panic!("an authentication request");
        };
        assert_eq!(auth_code(body), Some(10));
        let mut key = BytesMut::new();
        crate::wire::messages::backend_key_data(&mut key, 5, 6);
        assert_eq!(backend_key(&key[5..]), Some((5, 6)));
        assert_eq!(backend_key(b"short"), None);
    }
}
