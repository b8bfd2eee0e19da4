//! SYNC and PSYNC: a client that asks for the replication stream (`redis-cli --rdb`,
//! `--replica`, replication tools) turns its connection into something that is not RESP
//! request/reply any more. The reply is `+FULLRESYNC ...` or `$<len>` (or `$EOF:<mark>`), then
//! an RDB payload without a trailing CRLF, then the raw replication stream; the server may also
//! send bare newlines while it prepares the payload.
//!
//! So the session forwards SYNC/PSYNC, holds the client's later bytes, routes the replies to
//! earlier commands as usual, and when the reply to SYNC begins: an error (`-...`) is an
//! ordinary reply, and the session goes on; anything else makes the session a raw two-way pipe
//! for the rest of its life. Nothing is scanned or injected any more, so the connection cannot
//! be re-authenticated: it ends when its token expires (Azure closes it).

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::command::{Kind, ReplyMode};
use super::queue::Pending;
use super::{ClientStream, Session, SessionEnd};

/// Where the session stands with a replication stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replication {
    /// No SYNC/PSYNC in flight.
    None,
    /// SYNC/PSYNC forwarded; its reply has not begun.
    Requested,
    /// The cache streams: the session is a raw pipe.
    Streaming,
}

impl<C: ClientStream> Session<C> {
    /// Called before each frame is routed: true if the bytes from `pos` on are the start of
    /// the replication stream (the session then stops routing).
    pub(super) fn replication_starts_at(&mut self, pos: usize) -> bool {
        if self.replication != Replication::Requested {
            return false;
        }
        let Some(Pending::Command {
            kind: Kind::Sync, ..
        }) = self.queue.head()
        else {
            return false;
        };
        match self.ubuf.get(pos) {
            None => false,
            // Refused (NOPERM, not allowed here...): an ordinary reply, unless CLIENT REPLY
            // hides errors (the payload itself is written whatever the reply mode).
            Some(b'-') if self.conn.reply_mode == ReplyMode::On => false,
            Some(_) => {
                self.replication = Replication::Streaming;
                true
            }
        }
    }

    /// The rest of the session's life once the cache streams: what is buffered on each side
    /// goes across, then bytes are copied both ways until either side closes or the proxy
    /// shuts down.
    pub(super) async fn pipe(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionEnd> {
        tracing::info!(
            session = self.id,
            "the client asked for the replication stream (SYNC/PSYNC): the connection is piped \
             raw from now on and ends when its token expires"
        );
        // No re-AUTH can happen any more.
        self.reauth_wanted = None;
        self.reauth_permit = None;
        self.pending_flag(false);
        self.client
            .write_all(&self.ubuf)
            .await
            .map_err(SessionEnd::ClientIo)?;
        self.client.flush().await.map_err(SessionEnd::ClientIo)?;
        self.upstream
            .write_all(&self.cbuf)
            .await
            .map_err(SessionEnd::UpstreamIo)?;
        self.upstream
            .flush()
            .await
            .map_err(SessionEnd::UpstreamIo)?;
        self.ubuf = Default::default();
        self.cbuf = Default::default();
        self.queue.clear();
        let shutting_down = async {
            while shutdown.changed().await.is_ok() {
                if *shutdown.borrow() {
                    break;
                }
            }
        };
        let result = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut self.client, &mut self.upstream) => match r {
                Ok((to_cache, to_client)) => {
                    self.ctx.metrics.bytes_client_to_upstream.inc_by(to_cache);
                    self.ctx.metrics.bytes_upstream_to_client.inc_by(to_client);
                    tracing::debug!(session = self.id, to_cache, to_client, "replication stream ended");
                    Ok(())
                }
                Err(e) => Err(SessionEnd::Replication(e)),
            },
            () = shutting_down => Ok(()),
        };
        let _ = self.client.shutdown().await;
        let _ = self.upstream.shutdown().await;
        result
    }
}
