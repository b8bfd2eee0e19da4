//! [`CommandScanner`]: finds where each client command ends.

use std::ops::Range;

use super::{inline_args, printable, read_int_line, Limits, ProtocolError};

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
    /// Bytes of an argument's payload (its CRLF included) still to come after `pos`, which is
    /// then the end of the bytes seen so far: a large value is passed over, not held whole.
    skip: usize,
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
        if self.args_left.is_none() && buf[0] != b'*' {
            return self.scan_inline(buf, limits);
        }
        if self.skip > 0 {
            // Inside an argument's payload whose header was read: count, do not look.
            let avail = buf.len() - self.pos;
            if avail < self.skip {
                self.skip -= avail;
                self.pos = buf.len();
                return Ok(None);
            }
            self.pos += self.skip;
            self.skip = 0;
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
                if left == self.nargs {
                    // The name is read whole (classification needs it).
                    return Ok(None);
                }
                // The payload so far is scanned; the rest is only counted.
                self.skip = end - buf.len();
                self.pos = buf.len();
                self.args_left = Some(left - 1);
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

    /// After `scan` returned `Ok(None)`: how many bytes at the start of the buffer belong to
    /// the incomplete command and are scanned (may be forwarded, then [`Self::rebase`]).
    pub fn scanned(&self) -> usize {
        if self.args_left.is_some() {
            self.pos
        } else {
            0
        }
    }

    /// The incomplete multibulk command's argument count and name position, once its name has
    /// been read whole (and before any [`Self::rebase`]).
    pub fn head(&self) -> Option<(usize, Range<usize>)> {
        match self.args_left {
            Some(left) if left < self.nargs && !self.name.is_empty() => {
                Some((self.nargs, self.name.clone()))
            }
            _ => None,
        }
    }

    /// The caller dropped the first `n` bytes of the incomplete command (`n <= scanned()`).
    /// The name's position is forgotten: the command was classified from its head.
    pub fn rebase(&mut self, n: usize) {
        debug_assert!(n <= self.scanned(), "rebase past the scanned bytes");
        self.pos -= n;
        self.name = 0..0;
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
