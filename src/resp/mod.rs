//! RESP framing: one module for every way the proxy reads the protocol.
//!
//! - The hot path, without copies or allocations: two resumable scanners find frame
//!   boundaries in a buffer that only grows at its end: [`CommandScanner`] for what clients
//!   send (RESP arrays of bulk strings, or inline commands such as `PING\r\n`, as
//!   redis-server accepts them), [`ReplyScanner`] for what the cache sends (any RESP2 or RESP3
//!   frame). Both are pure (no I/O) and bounded: every length is checked against [`Limits`],
//!   and an oversized or malformed frame is a [`ProtocolError`] whose message follows
//!   redis-server's.
//! - The cold path: the few whole values the proxy must *understand* (cluster topology
//!   replies, `COMMAND INFO`, Pub/Sub confirmations, stream probes) are read by one decoder,
//!   [`value`], into a tree that re-encodes byte for byte (attributes, verbatim strings, big
//!   numbers and RESP2 nulls kept as they came). See `docs/session.md` for why it is ours and
//!   not the redis-protocol crate's.
//! - [`inline_args`] splits inline commands; [`encode_command`] builds the commands the proxy
//!   sends itself.

mod command;
mod inline;
mod reply;
pub mod value;

#[cfg(test)]
mod stream_check;
#[cfg(test)]
mod tests;

pub use command::{CommandScanner, ScannedCommand};
pub use inline::inline_args;
pub use reply::ReplyScanner;

/// Bounds on what a peer may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string (redis-server's `proto-max-bulk-len`, 512 MiB).
    pub max_bulk: usize,
    /// Most arguments in one command (redis-server allows 1,048,576 before AUTH).
    pub max_args: usize,
    /// Longest inline command line (redis-server's 64 KiB).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline: 64 * 1024,
        }
    }
}

/// A peer sent bytes that are not valid RESP, or exceed a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

/// Reads `<integer>\r\n` starting at `from`; returns the value and the index after the CRLF.
/// `Ok(None)` if the line is not complete yet. One pass, no search: this runs twice per
/// command on the hot path. A non-digit, more than 19 digits or a missing `\n` is an error as
/// soon as it is seen, so the result does not depend on how the bytes were split.
fn read_int_line(
    buf: &[u8],
    from: usize,
    what: &'static str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let mut i = from;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let digits_start = i;
    let mut v: i64 = 0;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(&c @ b'0'..=b'9') => {
                if i - digits_start == 19 {
                    return Err(ProtocolError::new(what));
                }
                v = v
                    .checked_mul(10)
                    .and_then(|v| v.checked_add((c - b'0') as i64))
                    .ok_or_else(|| ProtocolError::new(what))?;
                i += 1;
            }
            Some(b'\r') if i > digits_start => break,
            Some(_) => return Err(ProtocolError::new(what)),
        }
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((if neg { -v } else { v }, i + 2))),
        Some(_) => Err(ProtocolError::new(what)),
    }
}

fn printable(b: u8) -> String {
    if b.is_ascii_graphic() {
        (b as char).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(size);
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The arguments of a complete multibulk command frame (for the rare commands the proxy must
/// look into: HELLO, CLIENT, SUBSCRIBE...). The frame must have been accepted by
/// [`CommandScanner`].
pub fn multibulk_args(frame: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let Ok(Some((n, mut pos))) = read_int_line(frame, 1, "") else {
        return out;
    };
    for _ in 0..n.max(0) {
        let Ok(Some((len, data))) = read_int_line(frame, pos + 1, "") else {
            break;
        };
        let end = data + len.max(0) as usize;
        if end > frame.len() {
            break;
        }
        out.push(&frame[data..end]);
        pos = end + 2;
    }
    out
}

/// True if a reply frame is an error (`-ERR ...`, or a RESP3 blob error).
pub fn is_error_reply(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-') | Some(b'!'))
}

/// The text of a simple error reply, without the leading `-` and the CRLF.
pub fn error_text(frame: &[u8]) -> Option<&str> {
    if frame.first() != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(frame.get(1..frame.len().saturating_sub(2))?).ok()
}
