//! `CommandScanner`: random bytes, fed whole and in random chunk splits, give the same commands
//! and the same error; it never panics, never loops, and every length stays within the input
//! and the limits.
#![no_main]

use entra_redis_proxy::resp::{CommandScanner, Limits, ProtocolError, ScannedCommand};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_bulk: 64,
    max_args: 8,
    max_inline: 48,
};

/// Scans `data` as a session does: the buffer grows by the chunk sizes in `splits` (the rest
/// at once), and each complete command is consumed from its front.
fn scan(data: &[u8], splits: &[u8]) -> (Vec<ScannedCommand>, Option<ProtocolError>) {
    let mut scanner = CommandScanner::default();
    let mut out = Vec::new();
    let mut start = 0; // first byte of the current frame
    let mut end = 0; // bytes received so far
    let mut chunks = splits.iter();
    while end < data.len() {
        end = match chunks.next() {
            Some(&c) => (end + 1 + c as usize % 16).min(data.len()),
            None => data.len(),
        };
        // Bounded: every call either returns a command (which consumes at least one byte), or
        // asks for more, or fails.
        for _ in 0..=data.len() {
            match scanner.scan(&data[start..end], &LIMITS) {
                Ok(Some(cmd)) => {
                    assert!(cmd.len > 0 && start + cmd.len <= end, "length out of range");
                    assert!(cmd.nargs <= LIMITS.max_args.max(cmd.len), "too many args");
                    assert!(cmd.name.end <= cmd.len, "name outside the frame");
                    if !cmd.inline {
                        assert!(cmd.nargs <= LIMITS.max_args);
                    }
                    start += cmd.len;
                    out.push(cmd);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose the chunk sizes; the rest is what the client sends.
    let n = input.first().copied().unwrap_or(0) as usize % 32;
    let (splits, data) = input
        .get(1..)
        .unwrap_or(&[])
        .split_at(n.min(input.len().saturating_sub(1)));
    let whole = scan(data, &[]);
    let split = scan(data, splits);
    let byte_by_byte = scan(data, &vec![0u8; data.len()]);
    assert_eq!(whole, split, "chunked scan differs from whole");
    assert_eq!(whole, byte_by_byte, "byte-by-byte scan differs from whole");
});
