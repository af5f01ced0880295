//! Non-blocking read and write helpers the relay's loop is built from:
//! read what a stream has into a buffer's spare room, write as much as a
//! stream takes now, without ever waiting on one side for the other.

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one turn of the relay's I/O did.
pub(super) enum Io {
    FromClient(usize),
    FromServer(usize),
    Wrote,
    ClientFailed,
    ServerFailed,
}

/// Writes as much of `buf` as the socket takes now, without waiting.
pub(super) fn flush<S: AsyncWrite + Unpin>(stream: &mut S, buf: &mut BytesMut) -> io::Result<()> {
    let mut cx = Context::from_waker(Waker::noop());
    match poll_write_all(stream, &mut cx, buf) {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Waits for bytes from an idle client and appends them to `rbuf`: `Ok(0)`
/// at end of stream. The chunk lives inside one poll only, so it is not
/// part of the task's state: an idle client keeps no buffer.
pub(super) async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        // Uninitialised: zeroing 4 KiB on every wait cost a quarter of the
        // gateway's instructions per transaction (callgrind, pgbench -S).
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                rbuf.extend_from_slice(buf.filled());
                Poll::Ready(Ok(buf.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Reads what `stream` has into `buf`'s spare room (at least `room`):
/// `Ok(0)` at end of stream. Through `poll_read`, so a short read clears
/// tokio's readiness and the next wait costs no extra `recv`.
pub(super) fn poll_read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<io::Result<usize>> {
    buf.reserve(room);
    let mut read = ReadBuf::uninit(buf.spare_capacity_mut());
    match Pin::new(stream).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            let n = read.filled().len();
            // SAFETY: `poll_read` initialised the first `n` spare bytes.
            unsafe { buf.advance_mut(n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Writes as much of `buf` as `stream` takes: `Ready(Ok(n))` with the bytes
/// written once `buf` is empty or the socket is full after some progress.
pub(super) fn poll_write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut written = 0;
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                written += n;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if written == 0 => return Poll::Pending,
            Poll::Pending => break,
        }
    }
    // TLS keeps records until flushed (a no-op for TCP).
    if let Poll::Ready(Err(e)) = Pin::new(&mut *stream).poll_flush(cx) {
        return Poll::Ready(Err(e));
    }
    if buf.is_empty() {
        buf.clear();
    }
    Poll::Ready(Ok(written))
}
