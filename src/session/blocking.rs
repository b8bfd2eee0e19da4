//! Blocking commands (BLPOP, XREAD BLOCK, WAIT...) whose wait could outlast the token: cut into
//! slices that end before it expires, re-issued invisibly for the time left. Pure: the session
//! decides when (`client.rs`), this module what is sent and what a reply means.

use std::time::{Duration, Instant, SystemTime};

use crate::config::RefreshPolicy;
use crate::resp;
use crate::token::AccessToken;

/// A blocking command cut into slices that each end before the token expires; an empty slice
/// before the client's own timeout is re-issued for the time left, invisibly.
#[derive(Debug)]
pub(super) struct Blocking {
    /// The client's command; `$` IDs of XREAD are replaced by the probed last IDs.
    pub(super) args: Vec<Vec<u8>>,
    /// Which argument is the timeout.
    timeout_arg: usize,
    /// The timeout is in milliseconds (XREAD BLOCK, WAIT), else seconds.
    millis: bool,
    /// The client's deadline; `None` waits forever.
    pub(super) deadline: Option<Instant>,
    /// WAIT's replica count: a reply below it is an empty slice.
    wait_replicas: Option<i64>,
    /// XREAD `$` arguments to resolve first: (key argument, id argument).
    probes: Vec<(usize, usize)>,
    /// The wait could outlast the token: it is cut into slices. Otherwise the command is sent
    /// as the client sent it, and re-issued only after an upstream loss.
    pub(super) sliced: bool,
    /// It may be re-issued on a new connection after an upstream loss (not WAIT, whose
    /// answer depends on the writes of the connection it runs on).
    pub(super) reissuable: bool,
    /// When the slice in flight ends (sliced waits only).
    slice_end: Option<Instant>,
    /// Whether the proxy is interrupting this wait with `CLIENT UNBLOCK` to re-authenticate.
    pub(super) interrupt: Interrupt,
}

/// The proxy's own interruption of a wait sent unchanged (see `unblock.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    /// None asked for: an empty reply is the client's (its timeout, or a foreign unblock).
    None,
    /// `CLIENT UNBLOCK` sent, its result not known yet.
    Requested,
    /// `CLIENT UNBLOCK` unblocked this connection: its empty reply is the proxy's.
    Confirmed,
}

impl Blocking {
    /// Reads a blocking command's timeout; `None` for a command that does not block, or a
    /// malformed timeout (the server will answer it with an error). With `slicing` (the
    /// cache refuses `CLIENT UNBLOCK`), a wait that could outlast `slice` is cut into slices;
    /// otherwise the command is sent as it came.
    pub(super) fn plan(
        args: Vec<Vec<u8>>,
        slice: Duration,
        now: Instant,
        slicing: bool,
    ) -> Option<Box<Blocking>> {
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
        let sliced = slicing && (secs == 0.0 || secs > slice.as_secs_f64());
        let deadline = (secs > 0.0).then(|| now + Duration::from_secs_f64(secs));
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
            sliced,
            reissuable: name != b"WAIT",
            slice_end: None,
            interrupt: Interrupt::None,
        }))
    }

    /// The command to send first: the client's own when the wait is not sliced, else the
    /// first slice.
    pub(super) fn first_command(&mut self, slice: Duration, now: Instant) -> Vec<u8> {
        if self.sliced {
            self.slice_command(slice, now)
        } else {
            resp::encode_command(&self.args)
        }
    }

    /// The `XREVRANGE key + - COUNT 1` probes to send before the first slice, each with the
    /// argument whose `$` its reply replaces (taken once).
    pub(super) fn take_probes(&mut self) -> Vec<(Vec<u8>, usize)> {
        std::mem::take(&mut self.probes)
            .into_iter()
            .map(|(key_arg, id_arg)| {
                let probe = resp::encode_command(&[
                    &b"XREVRANGE"[..],
                    &self.args[key_arg],
                    b"+",
                    b"-",
                    b"COUNT",
                    b"1",
                ]);
                (probe, id_arg)
            })
            .collect()
    }

    /// The command sent again after an interruption or an upstream loss: a sliced wait's
    /// next slice, or the client's command with its timeout set to the time it has left (0,
    /// forever, stays 0).
    pub(super) fn again_command(&mut self, slice: Duration, now: Instant) -> Vec<u8> {
        self.interrupt = Interrupt::None;
        if self.sliced {
            return self.slice_command(slice, now);
        }
        match self.deadline {
            None => resp::encode_command(&self.args),
            Some(d) => {
                let left = d.saturating_duration_since(now);
                let timeout = if self.millis {
                    left.as_millis().max(1).to_string()
                } else {
                    format!("{:.3}", left.as_secs_f64().max(0.001))
                };
                let mut args: Vec<&[u8]> = self.args.iter().map(Vec::as_slice).collect();
                args[self.timeout_arg] = timeout.as_bytes();
                resp::encode_command(&args)
            }
        }
    }

    /// The command for one slice: the client's command with its timeout cut to `slice` (or to
    /// the client's own time left, if shorter).
    pub(super) fn slice_command(&mut self, slice: Duration, now: Instant) -> Vec<u8> {
        let mut slice = slice;
        if let Some(d) = self.deadline {
            slice = slice.min(d.saturating_duration_since(now));
        }
        self.slice_end = Some(now + slice);
        let timeout = if self.millis {
            slice.as_millis().max(1).to_string()
        } else {
            format!("{:.3}", slice.as_secs_f64().max(0.001))
        };
        let mut args: Vec<&[u8]> = self.args.iter().map(Vec::as_slice).collect();
        args[self.timeout_arg] = timeout.as_bytes();
        resp::encode_command(&args)
    }

    /// True if `reply` ends a slice of the proxy's own making, to be re-issued for the time
    /// left: the wait is sliced, the reply is the empty one, it came when the slice ended
    /// (an empty reply well before that is a foreign `CLIENT UNBLOCK`, which the client must
    /// see), and the client's own timeout has not passed.
    pub(super) fn slice_ended(&self, reply: &[u8], now: Instant) -> bool {
        /// How early a slice's empty reply may come (timer granularity of redis-server).
        const EARLY: Duration = Duration::from_millis(200);
        self.sliced
            && self.slice_ended_empty(reply)
            && self.slice_end.is_some_and(|end| now + EARLY >= end)
            && self
                .deadline
                .is_none_or(|d| d > now + Duration::from_millis(1))
    }

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

/// How long one slice of a bounded wait may last (the fallback when `CLIENT UNBLOCK` is
/// refused): until just after the token's planned refresh (its latest planned time plus the
/// time one acquisition may take), so that the connection re-authenticates with the new token
/// right after it arrives, well before the old one expires. Once that moment has passed (a
/// refresh that keeps failing), until shortly before the token expires (`min(margin/2,
/// lifetime/4)` before). At least one second.
pub(super) fn slice_length(
    token: &AccessToken,
    policy: &RefreshPolicy,
    now: SystemTime,
) -> Duration {
    let (obtained, expires) = (token.obtained_at(), token.expires_at());
    let life = expires.duration_since(obtained).unwrap_or_default();
    let guard = (policy.margin / 2).min(life / 4);
    let last_moment = expires.checked_sub(guard).unwrap_or(now);
    // No jitter (0.0): the latest time the manager plans the refresh for.
    let after_refresh = policy.refresh_at(obtained, expires, obtained, 0.0) + policy.timeout;
    let end = if after_refresh > now {
        after_refresh.min(last_moment)
    } else {
        last_moment
    };
    end.duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn long_waits_are_sliced_short_ones_forwarded() {
        let now = Instant::now();
        let slice = Duration::from_secs(60);
        let mut short = Blocking::plan(args("BLPOP k 5"), slice, now, true).unwrap();
        assert!(!short.sliced && short.reissuable);
        assert_eq!(
            short.first_command(slice, now),
            resp::encode_command(&["BLPOP", "k", "5"]),
            "sent as the client sent it"
        );
        assert!(Blocking::plan(args("GET k"), slice, now, true).is_none());
        assert!(Blocking::plan(args("BLPOP k nope"), slice, now, true).is_none());
        let mut b = Blocking::plan(args("BLPOP k 0"), slice, now, true).unwrap();
        assert!(b.deadline.is_none());
        assert_eq!(
            b.slice_command(slice, now),
            resp::encode_command(&["BLPOP", "k", "60.000"])
        );
        let mut b =
            Blocking::plan(args("XREAD BLOCK 120000 STREAMS s 0"), slice, now, true).unwrap();
        assert_eq!(
            b.slice_command(slice, now),
            resp::encode_command(&["XREAD", "BLOCK", "60000", "STREAMS", "s", "0"])
        );
        // The client's own time left wins once it is shorter than a slice.
        let later = now + Duration::from_secs(100);
        assert_eq!(
            b.slice_command(slice, later),
            resp::encode_command(&["XREAD", "BLOCK", "20000", "STREAMS", "s", "0"])
        );
    }

    #[test]
    fn xread_dollar_is_probed_and_empty_slices_are_recognised() {
        let now = Instant::now();
        let mut b = Blocking::plan(
            args("XREAD BLOCK 0 STREAMS a b $ 0"),
            Duration::from_secs(1),
            now,
            true,
        )
        .unwrap();
        let probes = b.take_probes();
        assert_eq!(probes.len(), 1);
        assert_eq!(
            probes[0],
            (
                resp::encode_command(&["XREVRANGE", "a", "+", "-", "COUNT", "1"]),
                6
            )
        );
        assert!(b.take_probes().is_empty(), "probed once");
        assert!(b.slice_ended_empty(b"*-1\r\n") && b.slice_ended_empty(b"_\r\n"));
        assert!(!b.slice_ended_empty(b"*1\r\n*2\r\n$1\r\na\r\n*0\r\n"));
        let w = Blocking::plan(args("WAIT 2 0"), Duration::from_secs(1), now, true).unwrap();
        assert!(!w.reissuable);
        assert!(w.slice_ended_empty(b":1\r\n") && !w.slice_ended_empty(b":2\r\n"));
        // A slice's empty reply re-issues only when the slice is over: earlier, it is a
        // foreign CLIENT UNBLOCK.
        let mut b = Blocking::plan(args("BLPOP k 0"), Duration::from_secs(10), now, true).unwrap();
        b.first_command(Duration::from_secs(10), now);
        assert!(!b.slice_ended(b"*-1\r\n", now + Duration::from_secs(1)));
        assert!(b.slice_ended(b"*-1\r\n", now + Duration::from_secs(10)));
        assert!(!b.slice_ended(
            b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n",
            now + Duration::from_secs(10)
        ));
        assert_eq!(
            last_stream_id(b"*1\r\n*2\r\n$3\r\n1-1\r\n*0\r\n"),
            b"1-1".to_vec()
        );
        assert_eq!(last_stream_id(b"*0\r\n"), b"0-0".to_vec());
    }

    #[test]
    fn without_slicing_the_command_goes_as_it_came_and_again_with_the_time_left() {
        let now = Instant::now();
        let slice = Duration::from_secs(10);
        let mut b = Blocking::plan(args("BLPOP k 0"), slice, now, false).unwrap();
        assert!(!b.sliced);
        assert_eq!(
            b.first_command(slice, now),
            resp::encode_command(&["BLPOP", "k", "0"])
        );
        assert_eq!(
            b.again_command(slice, now + Duration::from_secs(100)),
            resp::encode_command(&["BLPOP", "k", "0"]),
            "forever stays forever"
        );
        let mut b = Blocking::plan(args("BLPOP k 30"), slice, now, false).unwrap();
        assert_eq!(
            b.first_command(slice, now),
            resp::encode_command(&["BLPOP", "k", "30"])
        );
        assert_eq!(
            b.again_command(slice, now + Duration::from_secs(20)),
            resp::encode_command(&["BLPOP", "k", "10.000"])
        );
        // An empty reply of an unsliced wait is the client's.
        assert!(!b.slice_ended(b"*-1\r\n", now + Duration::from_secs(30)));
    }

    #[test]
    fn bounded_slices_end_just_after_the_planned_refresh() {
        let policy = RefreshPolicy::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = AccessToken::new(
            crate::token::Secret::new("t".into()),
            "oid".into(),
            t0 + Duration::from_secs(3600),
            t0,
            1,
        );
        // Refresh planned at 70% (2,520 s), plus one acquisition's time (30 s).
        assert_eq!(slice_length(&token, &policy, t0), Duration::from_secs(2550));
        // After that moment (a refresh that keeps failing): up to 90 s before expiry.
        let late = t0 + Duration::from_secs(3000);
        assert_eq!(
            slice_length(&token, &policy, late),
            Duration::from_secs(510)
        );
        // Never less than a second.
        let expired = t0 + Duration::from_secs(4000);
        assert_eq!(
            slice_length(&token, &policy, expired),
            Duration::from_secs(1)
        );
    }
}
