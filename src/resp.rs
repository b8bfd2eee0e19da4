//! RESP framing without copies or allocations on the hot path.
//!
//! Two resumable scanners find frame boundaries in a buffer that only grows at its end:
//! - [`CommandScanner`] for what clients send: RESP arrays of bulk strings, or inline commands
//!   (`PING\r\n`), as redis-server accepts them;
//! - [`ReplyScanner`] for what the cache sends: any RESP2 or RESP3 frame.
//!
//! Both are pure (no I/O) and bounded: every length is checked against [`Limits`], and an
//! oversized or malformed frame is a [`ProtocolError`] whose message follows redis-server's.
//! Frames the proxy must *understand* (Pub/Sub confirmations, HELLO replies) are decoded by the
//! `redis-protocol` crate, off the hot path.

use std::ops::Range;

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

/// One complete client command found by [`CommandScanner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedCommand {
    /// Length of the whole frame in bytes, from the start of the buffer.
    pub len: usize,
    /// Number of arguments, the command name included. 0 for an empty command (`*0`, an empty
    /// line), which redis-server ignores without a reply.
    pub nargs: usize,
    /// Where the command name lies in the frame (empty when `nargs == 0`, or inline).
    pub name: Range<usize>,
    /// True for an inline command; its arguments come from [`inline_args`].
    pub inline: bool,
}

/// Finds client commands. Resumable: when a command is incomplete it remembers how far it got,
/// so a large command arriving in many reads is scanned once, not once per read.
#[derive(Debug, Default)]
pub struct CommandScanner {
    /// Bytes of the current frame already validated.
    pos: usize,
    /// Arguments of the current multibulk frame still to scan (`None`: header not read yet).
    args_left: Option<usize>,
    /// Argument count of the current frame.
    nargs: usize,
    /// The command name's position.
    name: Range<usize>,
}

impl CommandScanner {
    /// Scans the command at the start of `buf`. `Ok(None)` means more bytes are needed; the
    /// caller must call again with the same frame start and more bytes appended.
    pub fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<ScannedCommand>, ProtocolError> {
        if buf.is_empty() {
            return Ok(None);
        }
        if buf[0] != b'*' {
            return self.scan_inline(buf, limits);
        }
        if self.args_left.is_none() {
            let Some((n, next)) = read_int_line(buf, 1, "invalid multibulk length")? else {
                return Ok(None);
            };
            if n > limits.max_args as i64 {
                return Err(ProtocolError::new("invalid multibulk length"));
            }
            let n = n.max(0) as usize;
            self.nargs = n;
            self.args_left = Some(n);
            self.pos = next;
        }
        while let Some(left) = self.args_left.filter(|l| *l > 0) {
            let start = self.pos;
            if start >= buf.len() {
                return Ok(None);
            }
            if buf[start] != b'$' {
                return Err(ProtocolError::new(format!(
                    "expected '$', got '{}'",
                    printable(buf[start])
                )));
            }
            let Some((len, data)) = read_int_line(buf, start + 1, "invalid bulk length")? else {
                return Ok(None);
            };
            if len < 0 || len as u64 > limits.max_bulk as u64 {
                return Err(ProtocolError::new("invalid bulk length"));
            }
            let end = data + len as usize + 2;
            if end > buf.len() {
                return Ok(None);
            }
            if left == self.nargs {
                self.name = data..data + len as usize;
            }
            self.pos = end;
            self.args_left = Some(left - 1);
        }
        let cmd = ScannedCommand {
            len: self.pos,
            nargs: self.nargs,
            name: std::mem::take(&mut self.name),
            inline: false,
        };
        *self = CommandScanner::default();
        Ok(Some(cmd))
    }

    fn scan_inline(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<ScannedCommand>, ProtocolError> {
        let from = self.pos;
        // The same bound whether the line arrives whole or in pieces: its bytes before the
        // `\n` (a `\r` included) may not exceed `max_inline + 1`.
        match memchr::memchr(b'\n', &buf[from..]) {
            None => {
                if buf.len() > limits.max_inline + 1 {
                    return Err(ProtocolError::new("too big inline request"));
                }
                self.pos = buf.len();
                Ok(None)
            }
            Some(i) => {
                let len = from + i + 1;
                if from + i > limits.max_inline + 1 {
                    return Err(ProtocolError::new("too big inline request"));
                }
                *self = CommandScanner::default();
                let args = inline_args(&buf[..len])?;
                Ok(Some(ScannedCommand {
                    len,
                    nargs: args.len(),
                    name: 0..0,
                    inline: true,
                }))
            }
        }
    }
}

/// Splits an inline command line into arguments the way redis-server does (`sdssplitargs`):
/// white space separates, `"..."` takes backslash escapes, `'...'` is literal.
pub fn inline_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let unbalanced = || ProtocolError::new("unbalanced quotes in request");
    let mut line = line;
    while let Some((&last, rest)) = line.split_last() {
        if last == b'\n' || last == b'\r' {
            line = rest;
        } else {
            break;
        }
    }
    let mut args = Vec::new();
    let mut i = 0;
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c);
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= line.len() {
                    return Err(unbalanced());
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    let hex = std::str::from_utf8(&line[i + 2..i + 4]).unwrap_or("0");
                    cur.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    i += 4;
                    continue;
                } else if c == b'\\' && i + 1 < line.len() {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                    continue;
                } else if c == b'"' {
                    // A closing quote must be followed by a space or the end.
                    if i + 1 < line.len() && !is_space(line[i + 1]) {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if in_sq {
                if i >= line.len() {
                    return Err(unbalanced());
                }
                let c = line[i];
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                } else if c == b'\'' {
                    if i + 1 < line.len() && !is_space(line[i + 1]) {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= line.len() {
                    break;
                }
                match line[i] {
                    c if is_space(c) => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(cur);
    }
}

/// Finds reply frames from the cache: any RESP2 or RESP3 value, including nested aggregates
/// and attributes. Resumable like [`CommandScanner`]; needs no stack, since an aggregate only
/// adds its children to the count of values still to read.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Bytes of the current frame already scanned.
    pos: usize,
    /// Values still to read before the frame is complete (0: at the start of a frame).
    pending: u64,
    /// How far a search for the end of an incomplete line got, so it is not searched again.
    line_searched: usize,
}

impl ReplyScanner {
    /// Scans the frame at the start of `buf`; `Ok(Some(len))` when complete.
    pub fn scan(&mut self, buf: &[u8], max_bulk: usize) -> Result<Option<usize>, ProtocolError> {
        if self.pending == 0 {
            self.pos = 0;
            self.pending = 1;
            self.line_searched = 0;
        }
        while self.pending > 0 {
            let start = self.pos;
            if start >= buf.len() {
                return Ok(None);
            }
            let kind = buf[start];
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    let from = (start + 1).max(self.line_searched);
                    match find_crlf(buf, from) {
                        None => {
                            if buf.len() - start > max_bulk {
                                return Err(ProtocolError::new("line too long"));
                            }
                            self.line_searched = buf.len().saturating_sub(1).max(start + 1);
                            return Ok(None);
                        }
                        Some(cr) => {
                            // Same bound as for an incomplete line, so splitting cannot matter.
                            if cr + 2 - start > max_bulk {
                                return Err(ProtocolError::new("line too long"));
                            }
                            self.pos = cr + 2;
                            self.pending -= 1;
                        }
                    }
                }
                b'$' | b'!' | b'=' => {
                    let Some((len, data)) = read_int_line(buf, start + 1, "invalid bulk length")?
                    else {
                        return Ok(None);
                    };
                    if len < 0 {
                        if len != -1 || kind != b'$' {
                            return Err(ProtocolError::new("invalid bulk length"));
                        }
                        self.pos = data;
                    } else {
                        if len as u64 > max_bulk as u64 {
                            return Err(ProtocolError::new("invalid bulk length"));
                        }
                        let end = data + len as usize + 2;
                        if end > buf.len() {
                            return Ok(None);
                        }
                        self.pos = end;
                    }
                    self.pending -= 1;
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let Some((n, next)) =
                        read_int_line(buf, start + 1, "invalid multibulk length")?
                    else {
                        return Ok(None);
                    };
                    if n < -1 || (n == -1 && kind != b'*') || n > u32::MAX as i64 {
                        return Err(ProtocolError::new("invalid multibulk length"));
                    }
                    let n = n.max(0) as u64;
                    let children = match kind {
                        b'%' => 2 * n,
                        // An attribute is followed by the value it annotates.
                        b'|' => 2 * n + 1,
                        _ => n,
                    };
                    self.pos = next;
                    self.pending = self.pending - 1 + children;
                }
                other => {
                    return Err(ProtocolError::new(format!(
                        "unexpected reply type byte '{}'",
                        printable(other)
                    )))
                }
            }
            self.line_searched = 0;
        }
        Ok(Some(self.pos))
    }
}

/// Reads `<integer>\r\n` starting at `from`; returns the value and the index after the CRLF.
/// `Ok(None)` if the line is not complete yet.
fn read_int_line(
    buf: &[u8],
    from: usize,
    what: &'static str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    // 20 digits and a sign are the most an i64 needs; anything longer is garbage.
    const MAX: usize = 22;
    let window = &buf[from.min(buf.len())..buf.len().min(from + MAX + 2)];
    let Some(cr) = memchr::memchr(b'\r', window) else {
        if window.len() >= MAX + 2 {
            return Err(ProtocolError::new(what));
        }
        return Ok(None);
    };
    if cr + 1 >= window.len() {
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(ProtocolError::new(what));
    }
    let n = parse_i64(&window[..cr]).ok_or_else(|| ProtocolError::new(what))?;
    Ok(Some((n, from + cr + 2)))
}

fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (neg, d) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if d.is_empty() || d.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in d {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as i64)?;
    }
    Some(if neg { -v } else { v })
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let cr = i + memchr::memchr(b'\r', &buf[i..])?;
        if cr + 1 < buf.len() && buf[cr + 1] == b'\n' {
            return Some(cr);
        }
        if cr + 1 >= buf.len() {
            return None;
        }
        i = cr + 1;
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all_commands(input: &[u8]) -> Result<Vec<ScannedCommand>, ProtocolError> {
        let limits = Limits::default();
        let mut s = CommandScanner::default();
        let mut out = Vec::new();
        let mut off = 0;
        while off < input.len() {
            match s.scan(&input[off..], &limits)? {
                Some(c) => {
                    off += c.len;
                    out.push(c);
                }
                None => break,
            }
        }
        Ok(out)
    }

    #[test]
    fn multibulk_commands() {
        let buf = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n";
        let cmds = scan_all_commands(buf).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(&buf[cmds[0].name.clone()], b"PING");
        assert_eq!(cmds[1].nargs, 3);
        assert_eq!(cmds[0].len + cmds[1].len, buf.len());
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
        let limits = Limits::default();
        let mut s = CommandScanner::default();
        for end in 1..buf.len() {
            assert_eq!(s.scan(&buf[..end], &limits).unwrap(), None, "at {end}");
        }
        let c = s.scan(buf, &limits).unwrap().unwrap();
        assert_eq!(c.len, buf.len());
        assert_eq!(&buf[c.name.clone()], b"SET");
    }

    #[test]
    fn inline_commands_and_empty_lines() {
        let cmds = scan_all_commands(b"PING\r\n\r\nset a 'b c'\n*0\r\n").unwrap();
        assert_eq!(cmds.len(), 4);
        assert!(cmds[0].inline && cmds[0].nargs == 1);
        assert_eq!(cmds[1].nargs, 0);
        assert_eq!(cmds[2].nargs, 3);
        assert_eq!(cmds[3].nargs, 0);
        assert_eq!(
            inline_args(b"set a \"x\\ny\" 'it\\'s'\r\n").unwrap(),
            vec![
                b"set".to_vec(),
                b"a".to_vec(),
                b"x\ny".to_vec(),
                b"it's".to_vec()
            ]
        );
        assert!(inline_args(b"get \"abc\r\n").is_err());
    }

    #[test]
    fn limits_and_garbage() {
        let limits = Limits {
            max_bulk: 10,
            max_args: 4,
            max_inline: 16,
        };
        let mut s = CommandScanner::default();
        assert!(s.scan(b"*5\r\n", &limits).is_err());
        let mut s = CommandScanner::default();
        assert!(s.scan(b"*1\r\n$11\r\n", &limits).is_err());
        let mut s = CommandScanner::default();
        assert!(s.scan(b"*1\r\n$-5\r\n", &limits).is_err());
        let mut s = CommandScanner::default();
        assert!(s.scan(b"*1\r\n:1\r\n", &limits).is_err());
        let mut s = CommandScanner::default();
        assert!(s.scan(b"*abc\r\n", &limits).is_err());
        let mut s = CommandScanner::default();
        assert!(s.scan(&[b'x'; 40], &limits).is_err());
        let mut s = CommandScanner::default();
        assert!(s.scan(b"*99999999999999999999999999\r\n", &limits).is_err());
    }

    fn scan_reply(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        ReplyScanner::default().scan(buf, 1 << 20)
    }

    #[test]
    fn replies_resp2_and_resp3() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":12\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"$3\r\na\r\n\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%1\r\n+k\r\n*2\r\n_\r\n#t\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n",
            b",1.5\r\n",
            b"(123\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"!3\r\nERR\r\n",
            b"~0\r\n",
        ];
        for c in cases {
            assert_eq!(
                scan_reply(c).unwrap(),
                Some(c.len()),
                "{:?}",
                String::from_utf8_lossy(c)
            );
            for end in 0..c.len() {
                assert_eq!(scan_reply(&c[..end]).unwrap(), None);
            }
        }
    }

    #[test]
    fn reply_scanner_resumes() {
        let frame = b"*3\r\n$5\r\nhello\r\n+simple string\r\n:42\r\n";
        let mut s = ReplyScanner::default();
        for end in 0..frame.len() {
            assert_eq!(s.scan(&frame[..end], 1 << 20).unwrap(), None);
        }
        assert_eq!(s.scan(frame, 1 << 20).unwrap(), Some(frame.len()));
        // Next frame starts fresh.
        assert_eq!(s.scan(b"+OK\r\n", 1 << 20).unwrap(), Some(5));
    }

    #[test]
    fn reply_garbage_is_an_error() {
        assert!(scan_reply(b"?x\r\n").is_err());
        assert!(scan_reply(b"$-2\r\n").is_err());
        assert!(scan_reply(b"$abc\r\n").is_err());
        assert!(scan_reply(b"%-1\r\n").is_err());
        assert!(ReplyScanner::default().scan(b"$100\r\n", 10).is_err());
    }

    #[test]
    fn encode_and_args_round_trip() {
        let enc = encode_command(&[&b"AUTH"[..], b"user", b"p\r\nw"]);
        assert_eq!(enc, b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$4\r\np\r\nw\r\n");
        assert_eq!(
            multibulk_args(&enc),
            vec![&b"AUTH"[..], &b"user"[..], &b"p\r\nw"[..]]
        );
    }
}
