//! `inline_args`: never panics; arguments are never longer than the line; a line that splits
//! into arguments and is re-joined from quoted, escaped arguments splits the same way again.
#![no_main]

use entra_redis_proxy::resp::inline_args;
use libfuzzer_sys::fuzz_target;

/// Quotes an argument so that `inline_args` must give it back unchanged.
fn quote(arg: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &c in arg {
        match c {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

fuzz_target!(|line: &[u8]| {
    let Ok(args) = inline_args(line) else { return };
    let total: usize = args.iter().map(Vec::len).sum();
    assert!(total <= line.len(), "arguments longer than the line");
    let mut rebuilt = Vec::new();
    for a in &args {
        rebuilt.extend_from_slice(&quote(a));
        rebuilt.push(b' ');
    }
    rebuilt.extend_from_slice(b"\r\n");
    assert_eq!(
        inline_args(&rebuilt).as_ref(),
        Ok(&args),
        "quoted round trip"
    );
});
