//! The scanners as a session streams a large frame: random bytes fed in random chunk splits,
//! and while a frame is incomplete its scanned bytes are passed on and dropped (`scanned`,
//! `rebase`). The frames passed on, their lengths and the error must be exactly those of the
//! whole-buffer scan; the buffer held stays within one chunk plus a header.
#![no_main]

use entra_redis_proxy::resp::{CommandScanner, Limits, ProtocolError, ReplyScanner};
use libfuzzer_sys::fuzz_target;

#[path = "../../src/resp/stream_check.rs"]
mod stream_check;
use stream_check::{streamed, whole};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let n = (mode as usize >> 1) % 32;
    let (splits, data) = rest.split_at(n.min(rest.len()));
    if mode & 1 == 0 {
        assert_eq!(
            whole::<ReplyScanner>(data),
            streamed::<ReplyScanner>(data, splits),
            "streamed reply scan differs from whole"
        );
    } else {
        assert_eq!(
            whole::<CommandScanner>(data),
            streamed::<CommandScanner>(data, splits),
            "streamed command scan differs from whole"
        );
    }
});
