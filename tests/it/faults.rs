//! Faults a real redis-server does not produce on its own: wrong or untrusted certificates,
//! an upstream that stalls or closes in the middle of a reply, a token file that disappears.
//! The daemon stays up, clients are told, and nothing the client was told succeeded is lost.
//! (A fake upstream is used only where a real server cannot produce the fault.)

use test_harness as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => {
            args.push(flag.to_string());
            args.push(value.to_string());
        }
    }
}

/// A TLS listener with the test certificate that runs `behave` on each connection.
async fn fake_upstream<F, Fut>(tls: &TlsMaterial, behave: F) -> std::net::SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let behave = behave.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    behave(tls).await;
                }
            });
        }
    });
    addr
}

/// Reads until `n` complete RESP arrays-of-bulks commands arrived (good enough for AUTH/GET).
async fn read_commands<S: tokio::io::AsyncRead + Unpin>(s: &mut S, n: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut count = 0;
        let mut scanner = entra_redis_proxy::resp::CommandScanner::default();
        let limits = entra_redis_proxy::resp::Limits::default();
        let mut off = 0;
        while let Ok(Some(c)) = scanner.scan(&buf[off..], &limits) {
            off += c.len;
            count += 1;
        }
        if count >= n {
            return Some(buf);
        }
        let got = s.read(&mut chunk).await.ok()?;
        if got == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// The proxy in front of a fake upstream at `addr`, with a long-lived token (kept in the
/// returned file).
async fn proxy_to(
    addr: std::net::SocketAddr,
    tls: &TlsMaterial,
    extra: &[&str],
) -> (TokenFile, Proxy) {
    let file = TokenFile::new(&Token::mint(Duration::from_secs(3600)));
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &addr.to_string(),
        "--tls-server-name",
        "localhost",
        "--ca-file",
        &tls.ca_file.display().to_string(),
        "--credential",
        "token-file",
        "--token-file",
        &file.path.display().to_string(),
        "--admin-listen",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let proxy = Proxy::start(&args, "info").await;
    (file, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_certificate_name_and_untrusted_ca_are_refused_clearly() {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;

    let mut args = proxy_args(&server, &rotator.file.path);
    set_flag(&mut args, "--tls-server-name", "not-the-cache.example");
    let proxy = Proxy::start(&args, "info").await;
    let mut c = proxy.client().await;
    let reply = c.cmd(&["PING"]).await;
    let text = reply.text().unwrap_or_default();
    assert!(reply.is_error(), "{reply:?}");
    assert!(
        text.contains("TLS handshake")
            && text.contains("not valid for name \"not-the-cache.example\""),
        "{text}"
    );

    // No --ca-file: the test CA is not among the system roots.
    let mut args = proxy_args(&server, &rotator.file.path);
    let i = args.iter().position(|a| a == "--ca-file").unwrap();
    args.drain(i..i + 2);
    let proxy = Proxy::start(&args, "info").await;
    let mut c = proxy.client().await;
    let reply = c.cmd(&["PING"]).await;
    let text = reply.text().unwrap_or_default();
    assert!(reply.is_error(), "{reply:?}");
    assert!(
        text.contains("TLS handshake") && text.contains("UnknownIssuer"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_auth_times_out_and_the_client_is_told() {
    let tls = TlsMaterial::generate();
    // Accepts TLS, reads AUTH, never answers.
    let addr = fake_upstream(&tls, |mut s| async move {
        let _ = read_commands(&mut s, 1).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let (_file, mut proxy) = proxy_to(addr, &tls, &["--auth-timeout", "500ms"]).await;
    let mut c = proxy.client().await;
    let t0 = Instant::now();
    let reply = c.cmd(&["PING"]).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    let text = reply.text().unwrap_or_default();
    assert!(
        text.contains("AUTH") && text.contains("timed out"),
        "{reply:?}"
    );
    assert!(proxy.is_running(), "the daemon stays up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_mid_reply_closes_that_client_only() {
    let tls = TlsMaterial::generate();
    // Answers AUTH, then sends half a reply to the first command and closes.
    let addr = fake_upstream(&tls, |mut s| async move {
        if read_commands(&mut s, 1).await.is_none() {
            return;
        }
        let _ = s.write_all(b"+OK\r\n").await;
        if read_commands(&mut s, 1).await.is_none() {
            return;
        }
        let _ = s.write_all(b"$10\r\nhalf").await;
        let _ = s.flush().await;
        let _ = s.shutdown().await;
    })
    .await;
    let (_file, mut proxy) = proxy_to(addr, &tls, &[]).await;
    let mut c = proxy.client().await;
    c.send(&["GET", "k"]).await;
    // The client never sees a partial frame as a reply: the connection closes.
    let frames = c.read_until_closed().await;
    assert!(frames.is_empty(), "{frames:?}");
    assert!(proxy.is_running(), "the daemon stays up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_token_file_keeps_the_current_token() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut c = proxy.client().await;
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Reply::ok());
    std::fs::remove_file(&rotator.file.path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Existing and new clients keep working on the token in hand.
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    let mut d = proxy.client().await;
    assert_eq!(d.cmd(&["GET", "k"]).await, Reply::bulk("v"));
    // When a file comes back, the proxy moves to it.
    rotator
        .rotate(2)
        .await
        .expect("rotation after the file came back");
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::bulk("v"));
}
