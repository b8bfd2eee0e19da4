//! The check behind the `stream_scanner` fuzz target, shared with the unit tests (which
//! compile it against the crate, and run it on generated inputs): a scanner fed in chunks,
//! passing each incomplete frame's scanned bytes on and rebasing (as a session streams a large
//! frame), finds exactly the frames and the error of the whole-buffer scan.

use super::{CommandScanner, Limits, ProtocolError, ReplyScanner};

/// Small limits, so that the fuzzer reaches them.
pub const LIMITS: Limits = Limits {
    max_bulk: 64,
    max_args: 8,
    max_inline: 48,
};

/// Frames (bytes; for commands also the argument count) and the error, if any.
pub type Scanned = (Vec<(Vec<u8>, usize)>, Option<ProtocolError>);

/// One step of a scanner over the buffer: a complete frame, or how many bytes of the
/// incomplete one may be passed on.
pub enum Step {
    Frame(usize, usize),
    More(usize),
}

pub trait Scan {
    fn step(&mut self, buf: &[u8], streaming: bool) -> Result<Step, ProtocolError>;
    fn rebase(&mut self, n: usize);
}

impl Scan for ReplyScanner {
    fn step(&mut self, buf: &[u8], _streaming: bool) -> Result<Step, ProtocolError> {
        Ok(match self.scan(buf, LIMITS.max_bulk)? {
            Some(len) => Step::Frame(len, 0),
            None => Step::More(self.scanned()),
        })
    }
    fn rebase(&mut self, n: usize) {
        ReplyScanner::rebase(self, n)
    }
}

impl Scan for CommandScanner {
    fn step(&mut self, buf: &[u8], streaming: bool) -> Result<Step, ProtocolError> {
        Ok(match self.scan(buf, &LIMITS)? {
            Some(c) => Step::Frame(c.len, c.nargs),
            // As the session: a command streams only once its name has been read.
            None if streaming || self.head().is_some() => Step::More(self.scanned()),
            None => Step::More(0),
        })
    }
    fn rebase(&mut self, n: usize) {
        CommandScanner::rebase(self, n)
    }
}

pub fn whole<S: Scan + Default>(data: &[u8]) -> Scanned {
    let mut s = S::default();
    let (mut off, mut out) = (0, Vec::new());
    loop {
        match s.step(&data[off..], false) {
            Ok(Step::Frame(len, n)) => {
                assert!(len > 0 && off + len <= data.len());
                out.push((data[off..off + len].to_vec(), n));
                off += len;
            }
            Ok(Step::More(_)) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

pub fn streamed<S: Scan + Default>(data: &[u8], splits: &[u8]) -> Scanned {
    let mut s = S::default();
    let (mut buf, mut frame, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut fed = 0;
    let mut chunks = splits.iter().cycle();
    while fed < data.len() {
        let n = match chunks.next() {
            Some(&c) => 1 + c as usize % 32,
            None => data.len(),
        }
        .min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        loop {
            match s.step(&buf, !frame.is_empty()) {
                Ok(Step::Frame(len, nargs)) => {
                    assert!(len > 0 || !frame.is_empty());
                    frame.extend(buf.drain(..len));
                    out.push((std::mem::take(&mut frame), nargs));
                }
                Ok(Step::More(done)) => {
                    assert!(done <= buf.len());
                    frame.extend(buf.drain(..done));
                    s.rebase(done);
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}
