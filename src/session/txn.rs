//! Replies the proxy gives itself inside MULTI (a client's AUTH), placed in the EXEC reply
//! where redis-server would have put them.
//!
//! redis-server answers a command queued inside MULTI with `+QUEUED` and puts its result in
//! EXEC's array, at the command's place. A client's AUTH never reaches the cache, so the
//! session answers `+QUEUED` itself, remembers the AUTH's result and how many commands the
//! cache had queued before it, and inserts the result into the cache's EXEC array. An error
//! the proxy gives when a command is queued (an `AUTH` without arguments, a command the proxy
//! does not support inside MULTI) makes the transaction fail as a queue-time error does on
//! redis-server: the session sends DISCARD instead of EXEC and answers `-EXECABORT`.

use std::borrow::Cow;

use crate::resp::ReplyScanner;

/// redis-server's reply to EXEC after an error while queueing.
pub(super) const EXECABORT: &[u8] =
    b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// What the proxy answered itself inside one transaction.
#[derive(Debug, Default)]
pub(super) struct LocalReplies {
    /// Each local result with the number of commands the cache had queued before it.
    pub(super) replies: Vec<(usize, Cow<'static, [u8]>)>,
    /// A local error at queue time: EXEC must fail with [`EXECABORT`].
    pub(super) aborted: bool,
}

impl LocalReplies {
    /// The EXEC reply the client gets for the cache's `reply`: the local results inserted
    /// into the array at their places; `None` to pass the reply unchanged (an error such as
    /// `-EXECABORT`, or the nil of a transaction a WATCH aborted).
    pub(super) fn exec_reply(&self, reply: &[u8]) -> Option<Vec<u8>> {
        let header_end = memchr::memchr(b'\n', reply)?;
        if reply.first() != Some(&b'*') || header_end < 2 {
            return None;
        }
        let n: usize = std::str::from_utf8(&reply[1..header_end - 1])
            .ok()?
            .parse()
            .ok()?;
        let mut out = Vec::with_capacity(reply.len() + 64);
        out.push(b'*');
        out.extend_from_slice((n + self.replies.len()).to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut rest = &reply[header_end + 1..];
        let mut locals = self.replies.iter().peekable();
        for i in 0..=n {
            while let Some((_, r)) = locals.next_if(|(at, _)| *at <= i || i == n) {
                out.extend_from_slice(r);
            }
            if i == n {
                break;
            }
            // The reply was scanned whole before it got here: each element is complete.
            let len = ReplyScanner::default().scan(rest, usize::MAX).ok()??;
            out.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        }
        out.extend_from_slice(rest);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locals(replies: &[(usize, &'static [u8])]) -> LocalReplies {
        LocalReplies {
            replies: replies
                .iter()
                .map(|(at, r)| (*at, Cow::Borrowed(*r)))
                .collect(),
            aborted: false,
        }
    }

    #[test]
    fn local_results_go_to_their_places_in_the_exec_array() {
        let l = locals(&[
            (0, b"+OK\r\n"),
            (1, b"-ERR syntax error\r\n"),
            (2, b"+OK\r\n"),
        ]);
        assert_eq!(
            l.exec_reply(b"*2\r\n$1\r\nv\r\n*2\r\n:1\r\n_\r\n").unwrap(),
            b"*5\r\n+OK\r\n$1\r\nv\r\n-ERR syntax error\r\n*2\r\n:1\r\n_\r\n+OK\r\n"
        );
        // Only local commands in the transaction.
        assert_eq!(
            l.exec_reply(b"*0\r\n").unwrap(),
            b"*3\r\n+OK\r\n-ERR syntax error\r\n+OK\r\n"
        );
    }

    #[test]
    fn errors_and_nil_pass_unchanged() {
        let l = locals(&[(0, b"+OK\r\n")]);
        assert!(l.exec_reply(EXECABORT).is_none());
        assert!(l.exec_reply(b"*-1\r\n").is_none());
        assert!(l.exec_reply(b"_\r\n").is_none());
    }
}
