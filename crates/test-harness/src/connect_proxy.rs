//! A small HTTP proxy for the outbound-proxy tests: it records every request it receives
//! (request line, `CONNECT` target, `Proxy-Authorization`) and either tunnels `CONNECT`
//! (answering `200`, then copying bytes both ways) or refuses it with `403`. Anything that is
//! not `CONNECT` (a plain-HTTP proxy request) is recorded and answered `502`, so a request
//! that should not have gone through a proxy fails visibly.
//!
//! It runs on a thread with its own runtime, so a test may block on a child process while the
//! proxy serves that child.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every variable that names an outbound proxy or its exemptions (removed from child
/// processes before a test sets its own).
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

/// What the proxy does with a `CONNECT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Opens the tunnel.
    Tunnel,
    /// Answers `403 Forbidden`.
    Refuse,
}

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method (`CONNECT`, `GET`, ...).
    pub method: String,
    /// The request target: `host:port` for `CONNECT`, an absolute URL otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header, if sent.
    pub authorization: Option<String>,
}

/// The running proxy; stops when dropped.
pub struct ConnectProxy {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// Everything received so far.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Stops the accept loop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ConnectProxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub fn start(mode: Mode) -> ConnectProxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = std::sync::mpsc::channel();
        let log = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
                ready.send(listener.local_addr().unwrap()).unwrap();
                let accept = async {
                    loop {
                        let Ok((conn, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve(conn, mode, log.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        ConnectProxy {
            addr: addr.recv().expect("proxy started"),
            seen,
            stop: Some(stop),
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many `CONNECT`s to `target` (`host:port`) it received.
    pub fn connects_to(&self, target: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == "CONNECT" && s.target == target)
            .count()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves one client connection.
async fn serve(mut conn: TcpStream, mode: Mode, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut words = lines.next().unwrap_or_default().split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let authorization = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        authorization,
    });
    if method != "CONNECT" {
        let _ = conn
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    }
    if mode == Mode::Refuse {
        let _ = conn
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        let _ = conn
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    if conn
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
}
