//! Raw reply bytes, for tests that compare what redis-server sends directly with what the
//! proxy sends, byte for byte. Frames are cut by a small scanner that accepts RESP2 and RESP3
//! at once (a RESP3 push may hold a RESP2 null, as redis-server's tracking sends it).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{encode_command, Proxy, RedisServer, Token};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection whose replies are read as raw frames.
pub struct RawConn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

const TIMEOUT: Duration = Duration::from_secs(20);

impl RawConn {
    /// A TLS connection straight to redis-server, not authenticated.
    pub async fn direct_unauthenticated(server: &RedisServer) -> RawConn {
        let tcp = TcpStream::connect(server.addr()).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let connector = tokio_rustls::TlsConnector::from(server.tls.client_config());
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        RawConn {
            io: Box::new(tls),
            buf: Vec::new(),
        }
    }

    /// A TLS connection straight to redis-server, authenticated with `token` as the proxy
    /// authenticates its own.
    pub async fn direct(server: &RedisServer, token: &Token) -> RawConn {
        let mut c = Self::direct_unauthenticated(server).await;
        let reply = c.cmd(&["AUTH", &token.oid, &token.jwt]).await;
        assert_eq!(reply, b"+OK\r\n", "direct AUTH");
        c
    }

    /// A plain connection to the proxy.
    pub async fn proxied(proxy: &Proxy) -> RawConn {
        let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        RawConn {
            io: Box::new(tcp),
            buf: Vec::new(),
        }
    }

    /// Writes one command.
    pub async fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&encode_command(args)).await;
    }

    /// Writes raw bytes and flushes them (over TLS only the flush is sure to send them; see
    /// `RespClient::send_raw`).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(TIMEOUT, write)
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Writes one command and reads one frame.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.send(args).await;
        self.frame().await
    }

    /// The next frame's bytes.
    pub async fn frame(&mut self) -> Vec<u8> {
        self.frame_within(TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no frame within {TIMEOUT:?}; buffered: {}", show(&self.buf)))
    }

    /// The next frame's bytes, if one arrives within `wait`.
    pub async fn frame_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = frame_end(&self.buf, 0) {
                return Some(self.buf.drain(..end).collect());
            }
            // Straight into the buffer: a chunk on the stack would sit in every caller's future.
            self.buf.reserve(64 * 1024);
            let n = match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(r) => r.expect("read"),
            };
            assert!(n > 0, "connection closed; buffered: {}", show(&self.buf));
        }
    }

    /// Whatever bytes are buffered or arrive within `wait` (for streams that are not RESP).
    pub async fn frame_or_bytes(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if self.buf.is_empty() {
            self.buf.reserve(64 * 1024);
            let n = tokio::time::timeout(wait, self.io.read_buf(&mut self.buf))
                .await
                .ok()?
                .expect("read");
            assert!(n > 0, "connection closed");
        }
        Some(std::mem::take(&mut self.buf))
    }

    /// Every byte until the other side closes (an error such as a reset counts as closed),
    /// or `None` if it has not closed within `wait`.
    pub async fn read_to_close(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return None,
                Ok(Ok(n)) if n > 0 => continue,
                Ok(_) => return Some(std::mem::take(&mut self.buf)),
            }
        }
    }

    /// Bytes read but not yet returned as a frame.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

/// Where the frame starting at `pos` ends, if it is complete.
pub fn frame_end(buf: &[u8], pos: usize) -> Option<usize> {
    let nl = pos + buf.get(pos..)?.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[pos + 1..nl]).ok()?;
    let after = nl + 2;
    match *buf.get(pos)? {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
        b'$' | b'=' | b'!' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'>' | b'~' | b'%' | b'|' => {
            let n: i64 = line.parse().ok()?;
            let n = if matches!(buf[pos], b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut at = after;
            for _ in 0..n.max(0) {
                at = frame_end(buf, at)?;
            }
            Some(at)
        }
        other => panic!("not RESP: type byte {other:#x} in {}", show(&buf[pos..])),
    }
}

/// Replaces the value of every HELLO `id` field by `:0` (the server's client id differs).
pub fn normalise(stream: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"$2\r\nid\r\n:";
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        if stream[i..].starts_with(KEY) {
            out.extend_from_slice(KEY);
            i += KEY.len();
            while i < stream.len() && stream[i].is_ascii_digit() {
                i += 1;
            }
            out.push(b'0');
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

/// A printable rendering of bytes.
pub fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(2000) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > 2000 {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}
