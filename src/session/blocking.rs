//! Blocking commands (BLPOP, XREAD BLOCK, WAIT...) whose wait could outlast the token: cut into
//! slices that end before it expires, re-issued invisibly for the time left.

use std::time::{Duration, Instant};

use super::command::ReplyMode;
use super::io::Segment;
use super::queue::Pending;
use super::{ClientStream, Session};
use crate::resp;

/// A blocking command cut into slices that each end before the token expires; an empty slice
/// before the client's own timeout is re-issued for the time left, invisibly.
#[derive(Debug)]
pub(super) struct Blocking {
    /// The client's command; `$` IDs of XREAD are replaced by the probed last IDs.
    pub(super) args: Vec<Vec<u8>>,
    /// Which argument is the timeout.
    pub(super) timeout_arg: usize,
    /// The timeout is in milliseconds (XREAD BLOCK, WAIT), else seconds.
    pub(super) millis: bool,
    /// The client's deadline; `None` waits forever.
    pub(super) deadline: Option<Instant>,
    /// WAIT's replica count: a reply below it is an empty slice.
    pub(super) wait_replicas: Option<i64>,
    /// XREAD `$` arguments to resolve first: (key argument, id argument).
    pub(super) probes: Vec<(usize, usize)>,
}

impl Blocking {
    /// True if a slice's reply says the wait ended without a result.
    pub(super) fn slice_ended_empty(&self, reply: &[u8]) -> bool {
        if let Some(want) = self.wait_replicas {
            let got = reply
                .strip_prefix(b":")
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.trim().parse::<i64>().ok());
            return got.is_some_and(|g| g < want);
        }
        matches!(reply, b"*-1\r\n" | b"$-1\r\n" | b"_\r\n")
    }
}

/// The ID in an `XREVRANGE key + - COUNT 1` reply, or `0-0` for an empty stream.
pub(super) fn last_stream_id(reply: &[u8]) -> Vec<u8> {
    if let Some(rest) = reply.strip_prefix(b"*1\r\n*2\r\n$") {
        if let Some(nl) = memchr::memchr(b'\n', rest) {
            let id = &rest[nl + 1..];
            if let Some(end) = memchr::memchr(b'\r', id) {
                return id[..end].to_vec();
            }
        }
    }
    b"0-0".to_vec()
}

impl<C: ClientStream> Session<C> {
    /// Decides whether a blocking command must be cut into slices: only where its wait could
    /// outlast the token, and where its reply can be recognised (no MULTI, replies on).
    pub(super) fn plan_blocking(&self, args: Vec<Vec<u8>>) -> Option<Box<Blocking>> {
        if self.state_changes_in_flight > 0
            || self.multi_sent
            || self.in_multi
            || self.skip_next_sent
            || self.reply_mode != ReplyMode::On
            || self.emulating_sent()
        {
            return None;
        }
        let name = args.first()?.to_ascii_uppercase();
        let last = args.len().checked_sub(1)?;
        let (timeout_arg, millis) = match name.as_slice() {
            b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BRPOPLPUSH" | b"BLMOVE" => {
                (last, false)
            }
            b"BLMPOP" | b"BZMPOP" => (1, false),
            b"WAIT" => (2, true),
            b"XREAD" | b"XREADGROUP" => {
                let streams = args
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
                let block = args[..streams]
                    .iter()
                    .position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
                (block + 1, true)
            }
            _ => return None,
        };
        let raw = std::str::from_utf8(args.get(timeout_arg)?).ok()?;
        let secs: f64 = if millis {
            raw.parse::<u64>().ok()? as f64 / 1000.0
        } else {
            raw.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)?
        };
        let slice = self.block_slice();
        if secs > 0.0 && secs <= slice.as_secs_f64() {
            return None;
        }
        let deadline = (secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(secs));
        let wait_replicas = if name == b"WAIT" {
            std::str::from_utf8(args.get(1)?).ok()?.parse::<i64>().ok()
        } else {
            None
        };
        let mut probes = Vec::new();
        if name == b"XREAD" {
            let streams = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            let n = (args.len() - streams - 1) / 2;
            for k in 0..n {
                let id_arg = streams + 1 + n + k;
                if args.get(id_arg).map(Vec::as_slice) == Some(b"$") {
                    probes.push((streams + 1 + k, id_arg));
                }
            }
        }
        Some(Box::new(Blocking {
            args,
            timeout_arg,
            millis,
            deadline,
            wait_replicas,
            probes,
        }))
    }

    /// How long one slice of a blocking wait may last: until shortly before the current
    /// token expires, so that a re-AUTH fits between two slices.
    pub(super) fn block_slice(&self) -> Duration {
        let Some(token) = self.token_rx.borrow().clone() else {
            return Duration::from_secs(1);
        };
        let now = std::time::SystemTime::now();
        let life = token
            .expires_at()
            .duration_since(token.obtained_at())
            .unwrap_or_default();
        let guard = (self.ctx.refresh_margin / 2).min(life / 4);
        let end = token.expires_at().checked_sub(guard).unwrap_or(now);
        end.duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }

    /// Queues a slice of a blocking command (and, the first time, the stream probes).
    pub(super) fn send_blocking(&mut self, mut block: Box<Blocking>, first: bool) {
        if first {
            for (key_arg, id_arg) in std::mem::take(&mut block.probes) {
                let probe = resp::encode_command(&[
                    &b"XREVRANGE"[..],
                    &block.args[key_arg],
                    b"+",
                    b"-",
                    b"COUNT",
                    b"1",
                ]);
                self.to_upstream.push(Segment::Owned(probe));
                self.queue.push_back(Pending::StreamProbe { arg: id_arg });
            }
        }
        let mut slice = self.block_slice();
        if let Some(d) = block.deadline {
            slice = slice.min(d.saturating_duration_since(Instant::now()));
        }
        let timeout = if block.millis {
            slice.as_millis().max(1).to_string()
        } else {
            format!("{:.3}", slice.as_secs_f64().max(0.001))
        };
        let mut args: Vec<&[u8]> = block.args.iter().map(Vec::as_slice).collect();
        args[block.timeout_arg] = timeout.as_bytes();
        self.to_upstream
            .push(Segment::Owned(resp::encode_command(&args)));
        self.blocked = true;
        self.queue.push_back(Pending::Blocking(block));
    }
}
