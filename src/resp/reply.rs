//! [`ReplyScanner`]: finds where each frame from the cache ends.

use super::{printable, read_int_line, ProtocolError};

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
    /// Bytes of a bulk payload (its CRLF included) still to come after `pos`, which is then
    /// the end of the bytes seen so far: a large value is passed over, not held whole.
    skip: u64,
}

impl ReplyScanner {
    /// Scans the frame at the start of `buf`; `Ok(Some(len))` when complete. `Ok(None)`: more
    /// bytes are needed; call again with the same frame start (or, after [`Self::rebase`], the
    /// start moved on) and more bytes appended.
    pub fn scan(&mut self, buf: &[u8], max_bulk: usize) -> Result<Option<usize>, ProtocolError> {
        if self.pending == 0 && self.skip == 0 {
            self.pos = 0;
            self.pending = 1;
            self.line_searched = 0;
        }
        if self.skip > 0 {
            // Inside a bulk payload whose header was read: count its bytes, look at none.
            let avail = (buf.len() - self.pos) as u64;
            if avail < self.skip {
                self.skip -= avail;
                self.pos = buf.len();
                return Ok(None);
            }
            self.pos += self.skip as usize;
            self.skip = 0;
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
                            // The payload so far is scanned; the rest is only counted.
                            self.skip = (end - buf.len()) as u64;
                            self.pos = buf.len();
                            self.pending -= 1;
                            self.line_searched = 0;
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

impl ReplyScanner {
    /// After `scan` returned `Ok(None)`: how many bytes at the start of the buffer belong to
    /// the incomplete frame and are scanned. They may be forwarded and dropped (then call
    /// [`Self::rebase`]); what follows them is the rest of the same frame.
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// True while a frame is incomplete (between an `Ok(None)` and the `Ok(Some(_))`).
    pub fn in_frame(&self) -> bool {
        self.pending > 0 || self.skip > 0
    }

    /// The caller dropped the first `n` bytes of the incomplete frame (`n <= scanned()`): the
    /// next `scan` gets a buffer that starts `n` bytes later in the frame.
    pub fn rebase(&mut self, n: usize) {
        debug_assert!(n <= self.pos, "rebase past the scanned bytes");
        self.pos -= n;
        self.line_searched = self.line_searched.saturating_sub(n);
    }
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
