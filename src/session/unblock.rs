//! Interrupting a blocked command so that its connection can re-authenticate.
//!
//! A blocking command is sent to the cache exactly as the client sent it. When a new token
//! must be sent while it waits, the session asks an [`Unblocker`] (one side connection per
//! upstream, authenticated as the same identity) to send `CLIENT UNBLOCK <id>`; the command
//! returns its timeout reply, which the session swallows, re-authenticates, and sends the
//! command again for the time it has left. `CLIENT UNBLOCK` is an `@admin` command that a
//! cache's access policy may refuse: the first refusal switches the upstream to bounded waits
//! (see `blocking.rs`). See `docs/session.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::resp::{self, ReplyScanner};
use crate::token::AccessToken;
use crate::upstream::{UpstreamConnector, UpstreamStream};

/// How long one unblock may take (connect, TLS, AUTH and the command).
const UNBLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The side connection is closed after this long unused: unblocks come in bursts (at each
/// token refresh), and an idle connection would hold the old token until it expires.
const IDLE_CLOSE: Duration = Duration::from_secs(2);

/// What a `CLIENT UNBLOCK` request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unblocked {
    /// The connection was blocked and is now unblocked (`:1`).
    Yes,
    /// The connection was not blocked (`:0`): the command had already returned.
    NotBlocked,
    /// The cache refused `CLIENT UNBLOCK` (its reply): bounded waits from now on.
    Refused(String),
    /// The side connection failed; this attempt did nothing.
    Failed(String),
}

/// One side connection per upstream that sends `CLIENT UNBLOCK` for the sessions.
pub struct Unblocker {
    /// Opens the side connection (the same cache or cluster node as the sessions').
    connector: Arc<UpstreamConnector>,
    /// The side connection and the generation of the token it is authenticated with.
    conn: Arc<tokio::sync::Mutex<Option<(u64, UpstreamStream)>>>,
    /// Counts uses, so that the idle closer knows whether the connection was used meanwhile.
    uses: Arc<std::sync::atomic::AtomicU64>,
    /// The cache refused `CLIENT UNBLOCK`: sessions use bounded waits instead.
    refused: AtomicBool,
}

impl Unblocker {
    /// An unblocker that opens its side connection with `connector` when first needed.
    pub fn new(connector: Arc<UpstreamConnector>) -> Self {
        Unblocker {
            connector,
            conn: Arc::new(tokio::sync::Mutex::new(None)),
            uses: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            refused: AtomicBool::new(false),
        }
    }

    /// True until the cache has refused `CLIENT UNBLOCK`.
    pub fn available(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }

    /// Unblocks the upstream connection `id`, over a side connection authenticated with
    /// `token` (reopened when the token is newer than the one it has).
    pub async fn unblock(&self, id: u64, token: Arc<AccessToken>) -> Unblocked {
        let mut conn = self.conn.lock().await;
        self.uses.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::new();
        // A side connection may have been closed since its last use (token expiry): one retry
        // on a fresh one.
        for _ in 0..2 {
            if conn
                .as_ref()
                .is_none_or(|(generation, _)| *generation < token.generation())
            {
                match tokio::time::timeout(UNBLOCK_TIMEOUT, self.connector.connect(&token)).await {
                    Ok(Ok(stream)) => {
                        if conn.is_none() {
                            self.close_when_idle();
                        }
                        *conn = Some((token.generation(), stream));
                    }
                    Ok(Err(e)) => return Unblocked::Failed(e.to_string()),
                    Err(_) => return Unblocked::Failed("connecting timed out".into()),
                }
            }
            let Some((_, stream)) = conn.as_mut() else {
                break;
            };
            match tokio::time::timeout(UNBLOCK_TIMEOUT, request(stream, id)).await {
                Ok(Ok(reply)) => {
                    let outcome = outcome(&reply);
                    if let Unblocked::Refused(why) = &outcome {
                        if !self.refused.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                upstream = %self.connector.host(),
                                reply = %why,
                                "the cache refuses CLIENT UNBLOCK for this identity: blocking commands now wait in bounded slices (see docs/session.md)"
                            );
                        }
                    }
                    return outcome;
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "timed out".into(),
            }
            *conn = None;
        }
        Unblocked::Failed(last_error)
    }
}

impl Unblocker {
    /// Closes the side connection once it has gone unused for [`IDLE_CLOSE`].
    fn close_when_idle(&self) {
        let conn = Arc::downgrade(&self.conn);
        let uses = self.uses.clone();
        tokio::spawn(async move {
            let mut seen = uses.load(Ordering::Relaxed);
            loop {
                tokio::time::sleep(IDLE_CLOSE).await;
                let Some(conn) = conn.upgrade() else {
                    return;
                };
                let mut guard = conn.lock().await;
                let now = uses.load(Ordering::Relaxed);
                if now == seen {
                    // Dropped, not shut down politely: nothing waits on it.
                    *guard = None;
                    return;
                }
                seen = now;
            }
        });
    }
}

/// Sends `CLIENT UNBLOCK <id>` and reads its one reply.
async fn request(stream: &mut UpstreamStream, id: u64) -> std::io::Result<Vec<u8>> {
    let id = id.to_string();
    stream
        .write_all(&resp::encode_command(&[
            &b"CLIENT"[..],
            b"UNBLOCK",
            id.as_bytes(),
        ]))
        .await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(128);
    let mut scanner = ReplyScanner::default();
    loop {
        let found = scanner
            .scan(&buf, 64 * 1024)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if let Some(len) = found {
            return Ok(buf[..len].to_vec());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// What a `CLIENT UNBLOCK` reply means.
fn outcome(reply: &[u8]) -> Unblocked {
    match reply {
        b":1\r\n" => Unblocked::Yes,
        b":0\r\n" => Unblocked::NotBlocked,
        _ => Unblocked::Refused(
            resp::error_text(reply)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(reply).trim().to_owned()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_redis_server_sends_them() {
        assert_eq!(outcome(b":1\r\n"), Unblocked::Yes);
        assert_eq!(outcome(b":0\r\n"), Unblocked::NotBlocked);
        assert_eq!(
            outcome(
                b"-NOPERM this user has no permissions to run the 'client|unblock' command\r\n"
            ),
            Unblocked::Refused(
                "NOPERM this user has no permissions to run the 'client|unblock' command".into()
            )
        );
    }
}
