//! A client socket: writes that keep reading (so neither side blocks the
//! other), a message reader over `ogel::wire::frontend::split_message`
//! that keeps a trail of what came, and FATAL errors noted as they pass.

use crate::report::hex;
use ogel::wire::frontend::{error_field, split_message, Split};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep_until, timeout_at, Instant};

/// How waiting on the gateway ended, other than with what we waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It closed the connection (end of stream or reset).
    Closed,
    /// The deadline passed.
    Timeout,
    /// It sent a message with an impossible length.
    Garbled,
}

/// A client connection with a read buffer.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub pos: usize,
    /// The gateway closed it (or reset it).
    pub closed: bool,
    /// An ErrorResponse with severity FATAL came: its message.
    pub fatal: Option<String>,
    /// The last messages received (tag, and SQLSTATE for errors).
    pub trail: VecDeque<String>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            closed: false,
            fatal: None,
            trail: VecDeque::new(),
        }
    }

    /// Writes `bytes` whole, reading what comes meanwhile (so that neither
    /// side can block the other). A failed write is not an error: what
    /// the gateway said and its close are read next.
    pub async fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), End> {
        let Conn {
            stream,
            buf,
            closed,
            ..
        } = self;
        let (mut reader, mut writer) = stream.split();
        let write = writer.write_all(bytes);
        tokio::pin!(write);
        loop {
            buf.reserve(16 * 1024);
            tokio::select! {
                _ = &mut write => return Ok(()),
                read = reader.read_buf(buf), if !*closed => {
                    if !matches!(read, Ok(n) if n > 0) {
                        *closed = true;
                    }
                }
                _ = sleep_until(deadline) => return Err(End::Timeout),
            }
        }
    }

    pub async fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        if self.closed {
            return Err(End::Closed);
        }
        self.buf.reserve(16 * 1024);
        match timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(End::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.closed = true;
                Ok(())
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// The next whole message in the buffer, if there is one.
    pub fn take(&mut self) -> Result<Option<(u8, Vec<u8>)>, End> {
        let (tag, body, len) = match split_message(&self.buf[self.pos..]) {
            Split::Partial => return Ok(None),
            Split::BadLength => {
                let garbled = format!("garbled header {}", hex(&self.buf[self.pos..self.pos + 5]));
                self.trail_push(garbled);
                return Err(End::Garbled);
            }
            Split::Message(tag, body, len) => (tag, body.to_vec(), len),
        };
        self.pos += len;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if tag == b'E' {
            if is_fatal(&body) {
                self.fatal = error_field(&body, b'M').map(|m| m.into_owned());
            }
            let code = error_field(&body, b'C').unwrap_or_default();
            let text = error_field(&body, b'M').unwrap_or_default();
            self.trail_push(format!("E {code} {text}"));
        } else {
            self.trail_push((tag as char).escape_default().to_string());
        }
        Ok(Some((tag, body)))
    }

    pub fn trail_push(&mut self, entry: String) {
        if self.trail.len() == 12 {
            self.trail.pop_front();
        }
        self.trail.push_back(entry);
    }

    pub fn trail(&self) -> String {
        if self.trail.is_empty() {
            return "nothing".into();
        }
        self.trail.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    pub async fn read_message(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), End> {
        loop {
            if let Some(m) = self.take()? {
                return Ok(m);
            }
            self.fill(deadline).await?;
        }
    }

    /// Reads messages until the gateway closes: `Ok` once it has.
    pub async fn until_closed(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            match self.read_message(deadline).await {
                Ok(_) => {}
                Err(End::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads raw bytes until the gateway closes (pre-auth answers mix
    /// single-byte 'N'/'S' with messages); notes a FATAL error in them.
    pub async fn until_closed_raw(&mut self, deadline: Instant) -> Result<(), End> {
        loop {
            match self.fill(deadline).await {
                Ok(()) => {}
                Err(End::Closed) => {
                    self.fatal = raw_fatal(&self.buf);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn half_close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// Connects to `target` from `source` (any port), if given.
pub async fn dial(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(target).await;
    };
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// The message of a FATAL error in raw pre-auth answers.
pub fn raw_fatal(buf: &[u8]) -> Option<String> {
    let at = buf.windows(7).position(|w| w == b"SFATAL\0")?;
    let rest = &buf[at..];
    let m = rest.windows(2).position(|w| w == b"\0M")? + 2;
    let end = rest[m..]
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(rest.len() - m);
    Some(String::from_utf8_lossy(&rest[m..m + end]).into_owned())
}

/// Whether an ErrorResponse `body` is FATAL or PANIC.
pub fn is_fatal(body: &[u8]) -> bool {
    let severity = error_field(body, b'V').or_else(|| error_field(body, b'S'));
    matches!(severity.as_deref(), Some("FATAL" | "PANIC"))
}
