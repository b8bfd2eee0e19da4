//! Blocking commands (BLPOP, XREAD BLOCK, WAIT...) whose wait could outlast the token: cut into
//! slices that end before it expires, re-issued invisibly for the time left. Pure: the session
//! decides when (`client.rs`), this module what is sent and what a reply means.

use std::time::{Duration, Instant, SystemTime};

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
}

impl Blocking {
    /// Reads a blocking command's timeout; `None` for a command that does not block, a
    /// malformed timeout (the server will answer it with an error), or a wait that ends
    /// within `slice` anyway (forwarded untouched).
    pub(super) fn plan(args: Vec<Vec<u8>>, slice: Duration, now: Instant) -> Option<Box<Blocking>> {
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
        if secs > 0.0 && secs <= slice.as_secs_f64() {
            return None;
        }
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
        }))
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

    /// The command for one slice: the client's command with its timeout cut to `slice` (or to
    /// the client's own time left, if shorter).
    pub(super) fn slice_command(&self, slice: Duration, now: Instant) -> Vec<u8> {
        let mut slice = slice;
        if let Some(d) = self.deadline {
            slice = slice.min(d.saturating_duration_since(now));
        }
        let timeout = if self.millis {
            slice.as_millis().max(1).to_string()
        } else {
            format!("{:.3}", slice.as_secs_f64().max(0.001))
        };
        let mut args: Vec<&[u8]> = self.args.iter().map(Vec::as_slice).collect();
        args[self.timeout_arg] = timeout.as_bytes();
        resp::encode_command(&args)
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

/// How long one slice of a blocking wait may last: until shortly before `token` expires
/// (`min(margin/2, lifetime/4)` before), so that a re-AUTH fits between two slices; at least
/// one second.
pub(super) fn slice_length(
    token: &AccessToken,
    refresh_margin: Duration,
    now: SystemTime,
) -> Duration {
    let life = token
        .expires_at()
        .duration_since(token.obtained_at())
        .unwrap_or_default();
    let guard = (refresh_margin / 2).min(life / 4);
    let end = token.expires_at().checked_sub(guard).unwrap_or(now);
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
        assert!(Blocking::plan(args("BLPOP k 5"), slice, now).is_none());
        assert!(Blocking::plan(args("GET k"), slice, now).is_none());
        assert!(Blocking::plan(args("BLPOP k nope"), slice, now).is_none());
        let b = Blocking::plan(args("BLPOP k 0"), slice, now).unwrap();
        assert!(b.deadline.is_none());
        assert_eq!(
            b.slice_command(slice, now),
            resp::encode_command(&["BLPOP", "k", "60.000"])
        );
        let b = Blocking::plan(args("XREAD BLOCK 120000 STREAMS s 0"), slice, now).unwrap();
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
        let w = Blocking::plan(args("WAIT 2 0"), Duration::from_secs(1), now).unwrap();
        assert!(w.slice_ended_empty(b":1\r\n") && !w.slice_ended_empty(b":2\r\n"));
        assert_eq!(
            last_stream_id(b"*1\r\n*2\r\n$3\r\n1-1\r\n*0\r\n"),
            b"1-1".to_vec()
        );
        assert_eq!(last_stream_id(b"*0\r\n"), b"0-0".to_vec());
    }
}
