//! The Redis steps over the verified connection: AUTH with the token, PING, and a read-only
//! permission probe; and the one-command helpers the cluster step shares.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::Map;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::context::Run;
use super::report::Verdict;
use crate::resp::{self, ReplyScanner};
use crate::token::AccessToken;

/// The key the permission probe reads; it need not exist.
const PROBE_KEY: &str = "entra-redis-proxy:doctor:probe";

/// AUTH with the token; true on `+OK`.
pub(super) async fn check_auth<S: AsyncRead + AsyncWrite + Unpin>(
    run: &mut Run,
    stream: &mut S,
    token: &AccessToken,
    timeout: Duration,
) -> bool {
    let started = Instant::now();
    let user = token.username().to_owned();
    let reply = match tokio::time::timeout(timeout, async {
        stream
            .write_all(token.auth_command())
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        read_reply(stream).await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("no AUTH reply within {timeout:?}")),
    };
    match reply {
        Ok(r) if r == b"+OK\r\n" => {
            run.push(
                "auth",
                Verdict::Ok,
                started,
                format!("AUTH as {user} accepted"),
                None,
                Map::new(),
            );
            true
        }
        Ok(r) => {
            let text = reply_text(&r);
            let remedy = if text.starts_with("WRONGPASS") {
                Some(format!(
                    "the cache does not know this identity: assign an access policy (e.g. Data Owner or Data Contributor) to the identity with object id {user} under the cache's Data Access Configuration, and check that Microsoft Entra Authentication is enabled on the cache"
                ))
            } else {
                None
            };
            run.push(
                "auth",
                Verdict::Fail,
                started,
                format!("AUTH as {user} refused: {text}"),
                remedy,
                Map::new(),
            );
            false
        }
        Err(e) => {
            run.push("auth", Verdict::Fail, started, e, None, Map::new());
            false
        }
    }
}

/// PING; `+PONG` passes.
pub(super) async fn check_ping<S: AsyncRead + AsyncWrite + Unpin>(
    run: &mut Run,
    stream: &mut S,
    timeout: Duration,
) {
    let started = Instant::now();
    match command(stream, &["PING"], timeout).await {
        Ok(r) if r == b"+PONG\r\n" => {
            run.push("ping", Verdict::Ok, started, "PONG", None, Map::new())
        }
        Ok(r) => run.push(
            "ping",
            Verdict::Fail,
            started,
            format!("unexpected reply {}", reply_text(&r)),
            None,
            Map::new(),
        ),
        Err(e) => run.push("ping", Verdict::Fail, started, e, None, Map::new()),
    }
}

/// The permission probe: `GET` of [`PROBE_KEY`], which need not exist; a refusal means the
/// identity's access policy does not allow reads.
pub(super) async fn check_read<S: AsyncRead + AsyncWrite + Unpin>(
    run: &mut Run,
    stream: &mut S,
    token: &AccessToken,
    timeout: Duration,
) {
    let started = Instant::now();
    match command(stream, &["GET", PROBE_KEY], timeout).await {
        // In a cluster the key may live on another node: Redis checks the ACL before it
        // redirects, so MOVED / ASK means the read is permitted.
        Ok(r) if r.starts_with(b"-MOVED ") || r.starts_with(b"-ASK ") => run.push(
            "read",
            Verdict::Ok,
            started,
            format!(
                "GET {PROBE_KEY} allowed (answered {}: the key lives on another node)",
                reply_text(&r)
            ),
            None,
            Map::new(),
        ),
        Ok(r) if resp::is_error_reply(&r) => {
            let text = reply_text(&r);
            let remedy = text.starts_with("NOPERM").then(|| {
                format!(
                    "authenticated as {user}, but its access policy does not permit GET (a read): \
                     assign the identity a policy that has the commands the application uses \
                     (Data Access Configuration, e.g. Data Reader / Data Contributor, or a custom \
                     policy with +get)",
                    user = token.username()
                )
            });
            run.push(
                "read",
                Verdict::Fail,
                started,
                format!("GET refused: {text}"),
                remedy,
                Map::new(),
            );
        }
        Ok(_) => run.push(
            "read",
            Verdict::Ok,
            started,
            format!("GET {PROBE_KEY} (a key that need not exist) allowed"),
            None,
            Map::new(),
        ),
        Err(e) => run.push("read", Verdict::Fail, started, e, None, Map::new()),
    }
}

/// Sends one command and reads its reply, bounded by `timeout`.
pub(super) async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    args: &[&str],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, async {
        stream
            .write_all(&resp::encode_command(args))
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        read_reply(stream).await
    })
    .await
    .map_err(|_| format!("no reply to {} within {timeout:?}", args[0]))?
}

/// Reads one whole reply (at most 64 MiB).
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, String> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = ReplyScanner::default();
    loop {
        if let Some(len) = scanner
            .scan(&buf, 64 * 1024 * 1024)
            .map_err(|e| e.to_string())?
        {
            return Ok(buf[..len].to_vec());
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the cache closed the connection".into());
        }
    }
}

/// A reply as one line of text: an error's message, or the reply with its CRLF trimmed.
pub(super) fn reply_text(reply: &[u8]) -> String {
    resp::error_text(reply)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(reply).trim().to_owned())
}
