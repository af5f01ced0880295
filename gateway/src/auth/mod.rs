//! Client authentication at the gateway: SCRAM-SHA-256 against the
//! gateway's own role store. Unknown users and users without access to
//! the database run the same exchange against a mock verifier and fail
//! with the same error as a wrong password, so nothing can be learned
//! about which roles exist.

pub mod scram;
pub mod tokens;

use crate::error::ClientError;
use crate::wire::startup::{self, ReadError};
use bytes::BytesMut;
use scram::{ScramError, ScramExchange, ScramVerifier};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Whether two secrets are equal, in time that does not depend on where
/// they differ (lengths are not secret). Shared by SCRAM proofs, cancel
/// keys and API tokens.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// Largest SASL message accepted from a client (real ones are ~100 bytes).
const SASL_MESSAGE_MAX_BYTES: usize = 4096;

/// Why authentication ended without success.
#[derive(Debug)]
pub enum AuthError {
    /// Tell the client this, then close.
    Client(ClientError),
    /// The connection went away.
    Closed,
}

impl From<ReadError> for AuthError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(_) => AuthError::Closed,
            ReadError::Malformed(m) => AuthError::Client(ClientError::protocol(m)),
        }
    }
}

/// Runs a SCRAM-SHA-256 exchange with the client. `verifier` is `None`
/// when the user must not get in (unknown, or no access): the exchange
/// still runs, against a mock verifier, and fails like a wrong password.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    user: &str,
    verifier: Option<ScramVerifier>,
    mock_secret: &[u8],
) -> Result<(), AuthError> {
    let verifier = verifier.unwrap_or_else(|| ScramVerifier::mock(user, mock_secret));
    let mut exchange = ScramExchange::new(verifier);
    let mut out = BytesMut::new();
    crate::wire::messages::auth_sasl(&mut out);
    write(stream, &mut out).await?;

    let initial = expect_password_message(stream).await?;
    let mut rest = initial.as_slice();
    let mechanism = startup::take_cstr(&mut rest)?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(AuthError::Client(
            ClientError::new(
                "28000",
                format!("SASL mechanism {mechanism} is not supported"),
            )
            .hint("this gateway offers SCRAM-SHA-256 only"),
        ));
    }
    if rest.len() < 4 {
        return Err(ClientError::protocol("SASLInitialResponse is truncated").into());
    }
    let declared = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if declared < 0 || declared as usize != data.len() {
        return Err(
            ClientError::protocol("SASLInitialResponse length does not match its data").into(),
        );
    }
    let server_first = exchange
        .client_first(data)
        .map_err(|e| scram_error(e, user))?;
    crate::wire::messages::auth_sasl_data(&mut out, 11, &server_first);
    write(stream, &mut out).await?;

    let response = expect_password_message(stream).await?;
    let server_final = exchange
        .client_final(&response)
        .map_err(|e| scram_error(e, user))?;
    crate::wire::messages::auth_sasl_data(&mut out, 12, &server_final);
    write(stream, &mut out).await?;
    Ok(())
}

/// Asks for a cleartext password (only over TLS or loopback; the caller
/// checks) and returns it: how a token arrives in the password field.
pub async fn cleartext_password<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<String, AuthError> {
    let mut out = BytesMut::new();
    crate::wire::messages::auth_cleartext(&mut out);
    write(stream, &mut out).await?;
    let body = expect_password_message(stream).await?;
    let mut rest = body.as_slice();
    let password = startup::take_cstr(&mut rest)?;
    if !rest.is_empty() {
        return Err(ClientError::protocol("PasswordMessage has bytes after the password").into());
    }
    Ok(password)
}

impl From<ClientError> for AuthError {
    fn from(e: ClientError) -> Self {
        AuthError::Client(e)
    }
}

fn scram_error(e: ScramError, user: &str) -> AuthError {
    AuthError::Client(match e {
        ScramError::WrongPassword | ScramError::InvalidVerifier => ClientError::bad_password(user),
        ScramError::ChannelBindingUnsupported => ClientError::new("08P01", e.to_string())
            .hint("connect with channel_binding=disable (or prefer) until TLS is enabled"),
        ScramError::Malformed(_) => ClientError::protocol(e.to_string()),
    })
}

async fn expect_password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, AuthError> {
    let (tag, body) = startup::read_message(stream, SASL_MESSAGE_MAX_BYTES).await?;
    if tag != b'p' {
        return Err(ClientError::protocol(format!(
            "expected a SASL response, got message type '{}'",
            tag.escape_ascii()
        ))
        .into());
    }
    Ok(body)
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut BytesMut) -> Result<(), AuthError> {
    stream.write_all(out).await.map_err(|_| AuthError::Closed)?;
    stream.flush().await.map_err(|_| AuthError::Closed)?;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::{backend, frontend};

    /// Plays the client side of the exchange over an in-process pipe.
    async fn run(password: &str, verifier: Option<ScramVerifier>) -> Result<(), AuthError> {
        let (mut server, mut client) = tokio::io::duplex(8192);
        let server_task = tokio::spawn(async move {
            authenticate(&mut server, "shop_owner", verifier, b"secret").await
        });
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut buf = BytesMut::new();
        read_auth(&mut client, &mut buf).await; // AuthenticationSASL
        let mut out = BytesMut::new();
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
        client.write_all(&out).await.unwrap();
        if let backend::Message::AuthenticationSaslContinue(body) =
            read_auth(&mut client, &mut buf).await
        {
            scram.update(body.data()).unwrap();
            let mut out = BytesMut::new();
            frontend::sasl_response(scram.message(), &mut out).unwrap();
            client.write_all(&out).await.unwrap();
        }
        let result = server_task.await.unwrap();
        if result.is_ok() {
            if let backend::Message::AuthenticationSaslFinal(body) =
                read_auth(&mut client, &mut buf).await
            {
                scram.finish(body.data()).unwrap();
            } else {
                panic!("no SASL final message");
            }
        }
        result
    }

    async fn read_auth(
        client: &mut tokio::io::DuplexStream,
        buf: &mut BytesMut,
    ) -> backend::Message {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = backend::Message::parse(buf).unwrap() {
                return m;
            }
            let mut chunk = [0u8; 1024];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn verifier(password: &str) -> Option<ScramVerifier> {
        Some(ScramVerifier::parse(&ScramVerifier::hash_password(password)).unwrap())
    }

    #[tokio::test]
    async fn right_password_authenticates() {
        run("s3cret", verifier("s3cret")).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_fail_alike() {
        let wrong = run("nope", verifier("s3cret")).await.unwrap_err();
        let unknown = run("s3cret", None).await.unwrap_err();
        for err in [wrong, unknown] {
            match err {
                AuthError::Client(e) => {
                    assert_eq!(e.code, "28P01");
                    assert_eq!(
                        e.message,
                        "password authentication failed for user \"shop_owner\""
                    );
                }
                AuthError::Closed => panic!("expected 28P01"),
            }
        }
    }

    #[tokio::test]
    async fn garbage_instead_of_sasl_is_a_protocol_error() {
        let (mut server, mut client) = tokio::io::duplex(8192);
        let task = tokio::spawn(async move { authenticate(&mut server, "u", None, b"s").await });
        client.write_all(b"Q\0\0\0\x08junk").await.unwrap();
        match task.await.unwrap() {
            Err(AuthError::Client(e)) => assert_eq!(e.code, "08P01"),
            other => panic!("expected 08P01, got {other:?}"),
        }
    }
}
