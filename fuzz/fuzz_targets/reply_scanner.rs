//! `ReplyScanner`: random bytes, fed whole and in random chunk splits, give the same frames and
//! the same error; it never panics, never loops, and frame lengths stay within the input.
#![no_main]

use entra_redis_proxy::resp::{ProtocolError, ReplyScanner};
use libfuzzer_sys::fuzz_target;

const MAX_BULK: usize = 64;

fn scan(data: &[u8], splits: &[u8]) -> (Vec<usize>, Option<ProtocolError>) {
    let mut scanner = ReplyScanner::default();
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    let mut chunks = splits.iter();
    while end < data.len() {
        end = match chunks.next() {
            Some(&c) => (end + 1 + c as usize % 16).min(data.len()),
            None => data.len(),
        };
        for _ in 0..=data.len() {
            match scanner.scan(&data[start..end], MAX_BULK) {
                Ok(Some(len)) => {
                    assert!(len > 0 && start + len <= end, "length out of range");
                    start += len;
                    out.push(len);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    let n = input.first().copied().unwrap_or(0) as usize % 32;
    let (splits, data) = input
        .get(1..)
        .unwrap_or(&[])
        .split_at(n.min(input.len().saturating_sub(1)));
    let whole = scan(data, &[]);
    assert_eq!(whole, scan(data, splits), "chunked scan differs from whole");
    assert_eq!(
        whole,
        scan(data, &vec![0u8; data.len()]),
        "byte-by-byte scan differs"
    );
});
