//! Re-authentication: when a new token is wanted, what a safe point is, and the injected
//! `AUTH` whose reply the session swallows and checks.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::command::ReplyMode;
use super::io::Segment;
use super::queue::Pending;
use super::{ClientStream, Session, SessionEnd};
use crate::resp;
use crate::token::AccessToken;

use super::blocking::Interrupt;
use super::unblock::Unblocked;

impl<C: ClientStream> Session<C> {
    pub(super) fn inject_auth_after_reset(&mut self) {
        let Some(token) = self.token_rx.borrow().clone() else {
            return;
        };
        self.to_upstream
            .push(Segment::Owned(token.auth_command().to_vec()));
        self.auth_generation = token.generation();
        self.queue.push(Pending::Reauth {
            token,
            frames: 1,
            started: self.reauth_wanted.unwrap_or_else(Instant::now),
        });
        self.reauth_wanted = None;
    }

    pub(super) fn note_token_change(&mut self) {
        let newer = self
            .token_rx
            .borrow_and_update()
            .as_ref()
            .is_some_and(|t| t.generation() > self.auth_generation);
        if newer && self.reauth_wanted.is_none() {
            self.reauth_wanted = Some(Instant::now());
            self.pending_flag(true);
        }
    }

    pub(super) fn pending_flag(&mut self, on: bool) {
        if on != self.pending_counted {
            self.pending_counted = on;
            if on {
                self.ctx.metrics.reauth_pending.inc();
            } else {
                self.ctx.metrics.reauth_pending.dec();
            }
        }
    }

    /// True where an injected AUTH cannot disturb the client's stream.
    pub(super) fn at_safe_point(&self) -> bool {
        // A RESP2 subscriber cannot AUTH (RESP2 subscribers are served through RESP3).
        let resp2_subscriber = self.conn.proto == 2 && self.conn.subscribed();
        !self.upstream_lost
            // Never inside a client command streaming to the cache (`stream.rs`).
            && !self.cstreaming
            && self.queue.reauths_in_flight() == 0
            && self.queue.state_changes_in_flight() == 0
            && !self.sent.txn.in_multi()
            && !self.conn.in_multi
            && !resp2_subscriber
    }

    pub(super) async fn try_reauth(&mut self) -> Result<(), SessionEnd> {
        let Some(wanted_since) = self.reauth_wanted else {
            return Ok(());
        };
        if !self.at_safe_point() || self.reauth_permit.is_none() {
            return Ok(());
        }
        let Some(token) = self.token_rx.borrow().clone() else {
            return Ok(());
        };
        if token.generation() <= self.auth_generation {
            self.reauth_wanted = None;
            self.reauth_permit = None;
            return Ok(());
        }
        let frames = if self.conn.reply_mode != ReplyMode::On {
            // Under CLIENT REPLY OFF (or with a SKIP waiting for the client's next command)
            // the AUTH reply would be suppressed: turn replies on around it so its result can
            // be checked, then restore the mode (SKIP again applies to the client's next).
            let restore: &[u8] = if self.conn.reply_mode == ReplyMode::Off {
                b"OFF"
            } else {
                b"SKIP"
            };
            let mut cmd = resp::encode_command(&[&b"CLIENT"[..], b"REPLY", b"ON"]);
            cmd.extend_from_slice(token.auth_command());
            cmd.extend_from_slice(&resp::encode_command(&[&b"CLIENT"[..], b"REPLY", restore]));
            self.upstream
                .write_all(&cmd)
                .await
                .map_err(SessionEnd::UpstreamIo)?;
            zeroize::Zeroize::zeroize(&mut cmd);
            2
        } else {
            self.upstream
                .write_all(token.auth_command())
                .await
                .map_err(SessionEnd::UpstreamIo)?;
            1
        };
        self.upstream
            .flush()
            .await
            .map_err(SessionEnd::UpstreamIo)?;
        tracing::trace!(
            session = self.id,
            generation = token.generation(),
            "re-AUTH sent"
        );
        self.auth_generation = token.generation();
        self.reauth_wanted = None;
        // A blocked command holds the AUTH back until it returns: interrupt it.
        self.start_unblock(token.clone());
        self.queue.push(Pending::Reauth {
            token,
            frames,
            started: wanted_since,
        });
        Ok(())
    }

    /// Asks the unblocker to interrupt the wait in flight, if it could outlast the token, so
    /// that the AUTH queued behind it runs.
    fn start_unblock(&mut self, token: Arc<AccessToken>) {
        if !self.blocked || self.interrupt.is_some() || !self.ctx.unblocker.available() {
            return;
        }
        let Some(id) = self.upstream_id else {
            return;
        };
        let slice = self.block_slice();
        let Some(block) = self.queue.blocking_mut() else {
            return;
        };
        let outlasts = block.deadline.is_none_or(|d| d > Instant::now() + slice);
        if block.sliced || block.interrupt != Interrupt::None || !outlasts {
            return;
        }
        block.interrupt = Interrupt::Requested;
        let unblocker = self.ctx.unblocker.clone();
        self.interrupt = Some(Box::pin(
            async move { unblocker.unblock(id.get(), token).await },
        ));
    }

    /// The result of the proxy's CLIENT UNBLOCK: an empty reply already received was the
    /// proxy's (re-issue the command) or the client's (forward it); one still to come will be
    /// told apart the same way.
    pub(super) async fn on_unblocked(&mut self, result: Unblocked) -> Result<(), SessionEnd> {
        // Boxed: a rare path (as every path that writes outside the main loop).
        Box::pin(async move {
            let ours = result == Unblocked::Yes;
            if let Unblocked::Failed(why) = &result {
                tracing::debug!(session = self.id, error = %why, "could not interrupt a blocked command for its re-AUTH");
            }
            if let Some(held) = self.held_reply.take() {
                let (block, reply) = *held;
                if ours {
                    self.reissue = Some(block);
                } else {
                    self.blocked = false;
                    self.client
                        .write_all(&reply)
                        .await
                        .map_err(SessionEnd::ClientIo)?;
                    self.client.flush().await.map_err(SessionEnd::ClientIo)?;
                }
            } else if let Some(block) = self.queue.blocking_mut() {
                block.interrupt = if ours {
                    Interrupt::Confirmed
                } else {
                    Interrupt::None
                };
            }
            // Re-issue, re-AUTH and the commands held meanwhile, as after any reply.
            self.on_upstream_data().await
        })
        .await
    }

    pub(super) fn finish_reauth(
        &mut self,
        token: Arc<AccessToken>,
        started: Instant,
        ok: bool,
        reason: &str,
    ) {
        self.reauth_permit = None;
        self.ctx.metrics.reauth(ok, started.elapsed());
        if ok {
            tracing::debug!(
                session = self.id,
                generation = token.generation(),
                user = %token.username(),
                took_ms = started.elapsed().as_millis() as u64,
                "re-authenticated"
            );
            let newest = self
                .token_rx
                .borrow()
                .as_ref()
                .map(|t| t.generation())
                .unwrap_or(0);
            if newest <= token.generation() && self.reauth_wanted.is_none() {
                self.pending_flag(false);
            }
        } else {
            // The connection stays logged in as before; ask for a new token and try again
            // when it arrives.
            tracing::warn!(
                session = self.id,
                user = %token.username(),
                reply = %reason,
                "the cache refused the re-AUTH; requesting a new token"
            );
            // The next token (generation above this one) triggers another attempt.
            self.ctx.tokens.request_refresh();
        }
    }
}
