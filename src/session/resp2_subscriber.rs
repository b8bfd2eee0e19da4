//! RESP2 subscribers served through a RESP3 upstream connection (so that they can be
//! re-authenticated): pushes turned back into RESP2 arrays, PING replies in RESP2's subscribed
//! form, and the commands redis-server refuses a RESP2 subscriber refused with its own error.

use crate::resp::ReplyScanner;

/// What `COMMAND INFO <name>` says about a command: its full name and arity, and its
/// subcommands (name `container|sub`, arity).
pub(super) struct CommandInfo {
    pub(super) name: String,
    pub(super) arity: i64,
    pub(super) subcommands: Vec<(String, i64)>,
}

pub(super) fn parse_command_info(reply: &[u8]) -> Option<CommandInfo> {
    /// A cursor over RESP bytes that reads the few shapes COMMAND INFO uses and skips the
    /// rest whole (key specs hold maps and sets that do not matter here).
    struct Cur<'a>(&'a [u8]);
    impl<'a> Cur<'a> {
        fn line(&mut self) -> Option<&'a [u8]> {
            let nl = memchr::memchr(b'\n', self.0)?;
            let line = self.0.get(..nl.checked_sub(1)?)?;
            self.0 = &self.0[nl + 1..];
            Some(line)
        }
        fn count(&mut self, kind: u8) -> Option<i64> {
            let line = self.line()?;
            if line.first() != Some(&kind) {
                return None;
            }
            std::str::from_utf8(&line[1..]).ok()?.parse().ok()
        }
        fn bulk(&mut self) -> Option<String> {
            let len = self.count(b'$')? as usize;
            let data = self.0.get(..len)?;
            self.0 = self.0.get(len + 2..)?;
            Some(String::from_utf8_lossy(data).into_owned())
        }
        fn skip(&mut self) -> Option<()> {
            let len = ReplyScanner::default().scan(self.0, usize::MAX).ok()??;
            self.0 = &self.0[len..];
            Some(())
        }
        /// `[name, arity, ...]` as an array of `n` elements; the cursor stops after arity.
        fn name_arity(&mut self) -> Option<(String, i64, i64)> {
            let n = self.count(b'*')?;
            Some((self.bulk()?, self.count(b':')?, n))
        }
    }
    let mut c = Cur(reply);
    if c.count(b'*')? != 1 || c.0.starts_with(b"_") || c.0.starts_with(b"*-1") {
        return None;
    }
    let (name, arity, n) = c.name_arity()?;
    let mut subcommands = Vec::new();
    if n >= 10 {
        for _ in 2..9 {
            c.skip()?;
        }
        // An array, or (RESP3) a set when empty.
        let subs = if c.0.starts_with(b"~") {
            c.count(b'~')?
        } else {
            c.count(b'*')?
        };
        for _ in 0..subs {
            let (sub, sub_arity, sub_n) = c.name_arity()?;
            for _ in 2..sub_n {
                c.skip()?;
            }
            subcommands.push((sub, sub_arity));
        }
    }
    Some(CommandInfo {
        name,
        arity,
        subcommands,
    })
}

/// Builds, from a `COMMAND INFO` reply, the error redis-server 7 gives a RESP2 subscriber
/// for `args`: unknown command, unknown subcommand, wrong arity, or not allowed here — in
/// the order redis-server checks them.
pub(super) fn subscribed_refusal_from_info(info_reply: &[u8]) -> impl Fn(&[Vec<u8>]) -> Vec<u8> {
    let info = parse_command_info(info_reply);
    move |args: &[Vec<u8>]| {
        // redis-server formats arguments with printf's `%.Ns`: at most N bytes, and a C string
        // ends at its first NUL.
        let c_str = |b: &[u8], max: usize| -> Vec<u8> {
            let end = memchr::memchr(0, b).unwrap_or(b.len()).min(max);
            b[..end].to_vec()
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut msg: Vec<u8> = Vec::new();
        match &info {
            None => {
                let mut given: Vec<u8> = Vec::new();
                for a in args.iter().skip(1) {
                    if given.len() >= 128 {
                        break;
                    }
                    given.push(b'\'');
                    given.extend(c_str(a, 128 - given.len() + 1));
                    given.extend_from_slice(b"' ");
                }
                msg.extend_from_slice(b"unknown command '");
                msg.extend(c_str(&args[0], 128));
                msg.extend_from_slice(b"', with args beginning with: ");
                msg.extend(given);
            }
            Some(cmd) => {
                let mut full = cmd.name.clone();
                let mut arity = cmd.arity;
                let mut unknown_sub = None;
                if !cmd.subcommands.is_empty() && args.len() >= 2 {
                    let want = format!("{}|{}", cmd.name, text(&args[1]).to_ascii_lowercase());
                    match cmd.subcommands.iter().find(|(n, _)| *n == want) {
                        Some((n, a)) => {
                            full = n.clone();
                            arity = *a;
                        }
                        None => unknown_sub = Some(&args[1]),
                    }
                }
                let argc = args.len() as i64;
                if let Some(sub) = unknown_sub {
                    msg.extend_from_slice(b"unknown subcommand '");
                    msg.extend(c_str(sub, 128));
                    msg.extend_from_slice(
                        format!("'. Try {} HELP.", text(&args[0]).to_ascii_uppercase()).as_bytes(),
                    );
                } else if (arity > 0 && argc != arity) || argc < -arity {
                    msg.extend_from_slice(
                        format!("wrong number of arguments for '{full}' command").as_bytes(),
                    );
                } else {
                    msg.extend_from_slice(format!(
                        "Can't execute '{full}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                    ).as_bytes());
                }
            }
        }
        for b in msg.iter_mut() {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
        let mut out = b"-ERR ".to_vec();
        out.extend(msg);
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The push redis-server sends a RESP3 connection for invalidated keys (client tracking), and
/// its keys array, or the null of "everything" after a flush (in the protocol of the client
/// that tracks, which is not necessarily this one).
const INVALIDATE_PUSH: &[u8] = b">2\r\n$10\r\ninvalidate\r\n";
/// What redis-server sends a RESP2 connection subscribed to anything instead, with the same
/// keys array or null.
const INVALIDATE_MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n";
/// The push a RESP3 tracking client gets when its redirect target goes; a RESP2 one gets none.
const REDIRECT_BROKEN_PUSH: &[u8] = b">2\r\n$21\r\ntracking-redir-broken\r\n";

/// What a RESP2 client served through a RESP3 upstream gets for a push: `None` when
/// redis-server would send a RESP2 connection nothing. Invalidations reach a RESP2 client only
/// while it is subscribed (to anything), as `message`s on `__redis__:invalidate`
/// (`invalidations`: subscribed, and not its own tracking without REDIRECT).
pub(super) fn push_for_resp2(frame: &[u8], invalidations: bool) -> Option<Vec<u8>> {
    if let Some(keys) = frame.strip_prefix(INVALIDATE_PUSH) {
        return invalidations.then(|| [INVALIDATE_MESSAGE, keys].concat());
    }
    if frame.starts_with(REDIRECT_BROKEN_PUSH) {
        return None;
    }
    Some(push_to_resp2(frame))
}

/// A RESP3 push frame as the RESP2 array a subscriber expects: `>` becomes `*`, and the
/// RESP3 null (an UNSUBSCRIBE with no channel) becomes `$-1`.
pub(super) fn push_to_resp2(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.push(b'*');
    // The header line (`>N\r\n`), then each element: RESP3 nulls become RESP2 null bulks;
    // everything else (blob strings, numbers) is the same in RESP2 and is copied as it is.
    let Some(header_end) = memchr::memchr(b'\n', frame) else {
        return frame.to_vec();
    };
    out.extend_from_slice(&frame[1..=header_end]);
    let mut rest = &frame[header_end + 1..];
    while !rest.is_empty() {
        let len = match ReplyScanner::default().scan(rest, usize::MAX) {
            Ok(Some(len)) => len,
            _ => {
                out.extend_from_slice(rest);
                break;
            }
        };
        if &rest[..len] == b"_\r\n" {
            out.extend_from_slice(b"$-1\r\n");
        } else {
            out.extend_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    out
}

/// A RESP3 reply to PING as a RESP2 subscriber gets it: `["pong", message]`.
pub(super) fn pong_to_resp2(reply: &[u8]) -> Option<Vec<u8>> {
    let mut out = b"*2\r\n$4\r\npong\r\n".to_vec();
    if reply == b"+PONG\r\n" {
        out.extend_from_slice(b"$0\r\n\r\n");
    } else if reply.first() == Some(&b'$') {
        out.extend_from_slice(reply);
    } else {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_become_messages_on_the_tracking_channel() {
        let keys = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n";
        assert_eq!(
            push_for_resp2(keys, true).unwrap(),
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$2\r\nk1\r\n$2\r\nk2\r\n"
        );
        assert!(push_for_resp2(keys, false).is_none());
        // The null of a flush is the tracking client's, kept as it is.
        for null in [&b"_\r\n"[..], b"$-1\r\n"] {
            let push = [&b">2\r\n$10\r\ninvalidate\r\n"[..], null].concat();
            let want = [
                &b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"[..],
                null,
            ]
            .concat();
            assert_eq!(push_for_resp2(&push, true).unwrap(), want);
        }
        assert!(push_for_resp2(b">2\r\n$21\r\ntracking-redir-broken\r\n:7\r\n", true).is_none());
    }

    #[test]
    fn pushes_become_resp2_arrays_without_touching_payloads() {
        assert_eq!(
            push_to_resp2(b">3\r\n$12\r\npunsubscribe\r\n_\r\n:1\r\n"),
            b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:1\r\n"
        );
        // A payload that looks like a RESP3 null stays as it is.
        let msg = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$7\r\nx\r\n_\r\ny\r\n";
        let mut want = msg.to_vec();
        want[0] = b'*';
        assert_eq!(push_to_resp2(msg), want);
    }
}
