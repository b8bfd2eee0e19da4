//! Unit tests of the scanners, the inline splitter and the command encoder.

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

/// A small deterministic generator for chunk sizes (no dependency).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Feeds `data` to a reply scanner in chunks, the way a session streams a large frame: while a
/// frame is incomplete, its scanned bytes are passed on and dropped, and the scanner rebased.
/// Returns each frame as the bytes passed on for it, the error if any, and the most bytes the
/// buffer ever held.
fn stream_replies(
    data: &[u8],
    mut chunk: impl FnMut() -> usize,
    max_bulk: usize,
) -> (Vec<Vec<u8>>, Option<ProtocolError>, usize) {
    let mut s = ReplyScanner::default();
    let (mut buf, mut frame, mut frames) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fed, mut held) = (0, 0);
    while fed < data.len() {
        let n = chunk().clamp(1, data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        held = held.max(buf.len());
        loop {
            match s.scan(&buf, max_bulk) {
                Ok(Some(len)) => {
                    frame.extend(buf.drain(..len));
                    frames.push(std::mem::take(&mut frame));
                }
                Ok(None) => {
                    let done = s.scanned();
                    frame.extend(buf.drain(..done));
                    s.rebase(done);
                    break;
                }
                Err(e) => return (frames, Some(e), held),
            }
        }
    }
    (frames, None, held)
}

/// The same, with the frames the whole-buffer scanner finds.
fn whole_replies(data: &[u8], max_bulk: usize) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
    let mut s = ReplyScanner::default();
    let (mut off, mut frames) = (0, Vec::new());
    loop {
        match s.scan(&data[off..], max_bulk) {
            Ok(Some(len)) => {
                frames.push(data[off..off + len].to_vec());
                off += len;
            }
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn big_replies() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"+OK\r\n");
    for len in [0usize, 1, 100, 65535, 65536, 65537, 300_000] {
        v.extend_from_slice(format!("${len}\r\n").as_bytes());
        v.extend((0..len).map(|i| (i % 251) as u8));
        v.extend_from_slice(b"\r\n");
    }
    // An array (MGET), a RESP3 map (HGETALL) and a verbatim string, each with large values.
    v.extend_from_slice(b"*3\r\n$-1\r\n$200000\r\n");
    v.extend(std::iter::repeat_n(b'a', 200_000));
    v.extend_from_slice(b"\r\n:7\r\n%2\r\n$1\r\nf\r\n$70000\r\n");
    v.extend(std::iter::repeat_n(b'\r', 70_000));
    v.extend_from_slice(b"\r\n+g\r\n*1\r\n=70004\r\ntxt:");
    v.extend(std::iter::repeat_n(b'\n', 70_000));
    v.extend_from_slice(b"\r\n:1\r\n");
    v
}

#[test]
fn streamed_replies_match_whole_frames_with_bounded_buffer() {
    let data = big_replies();
    let (whole, err) = whole_replies(&data, 1 << 20);
    assert_eq!(err, None);
    assert_eq!(whole.len(), 11);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for max_chunk in [1, 7, 4096, 65536] {
        let (frames, err, held) = stream_replies(&data, || 1 + rng.below(max_chunk), 1 << 20);
        assert_eq!(err, None);
        assert_eq!(frames, whole, "chunks up to {max_chunk}");
        // Only headers and short lines wait for more bytes; payloads pass through.
        assert!(
            held <= max_chunk + 32,
            "held {held} with chunks up to {max_chunk}"
        );
    }
}

#[test]
fn streamed_reply_errors_match_whole_scan() {
    // A bad type byte after a large payload, and a bulk over the limit inside an array.
    let mut bad = b"*2\r\n$100000\r\n".to_vec();
    bad.extend(std::iter::repeat_n(b'x', 100_000));
    bad.extend_from_slice(b"\r\n?\r\n");
    let mut over = b"*2\r\n$10\r\n0123456789\r\n$2000000\r\n".to_vec();
    over.extend(std::iter::repeat_n(b'y', 10));
    for data in [bad, over] {
        let (whole, err) = whole_replies(&data, 1 << 20);
        assert!(err.is_some());
        let mut rng = XorShift(7);
        let (frames, serr, _) = stream_replies(&data, || 1 + rng.below(5000), 1 << 20);
        assert_eq!((frames, serr), (whole, err));
    }
}

/// Commands as passed on (bytes, argument count), the error if any, the most bytes held.
type StreamedCommands = (Vec<(Vec<u8>, usize)>, Option<ProtocolError>, usize);

/// Feeds client commands in chunks, streaming arguments after the name as the session does;
/// returns each command as the bytes passed on, with its argument count, and the most bytes
/// held.
fn stream_commands(data: &[u8], mut chunk: impl FnMut() -> usize) -> StreamedCommands {
    let limits = Limits::default();
    let mut s = CommandScanner::default();
    let (mut buf, mut cmd, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fed, mut held, mut nargs) = (0, 0, None);
    while fed < data.len() {
        let n = chunk().clamp(1, data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        held = held.max(buf.len());
        loop {
            match s.scan(&buf, &limits) {
                Ok(Some(c)) => {
                    cmd.extend(buf.drain(..c.len));
                    let n = nargs.take().unwrap_or(c.nargs);
                    assert_eq!(n, c.nargs, "the argument count changed while streaming");
                    out.push((std::mem::take(&mut cmd), n));
                }
                Ok(None) => {
                    if let Some((n, name)) = s.head().filter(|_| nargs.is_none()) {
                        assert!(name.end <= buf.len());
                        nargs = Some(n);
                    }
                    if nargs.is_some() {
                        let done = s.scanned();
                        cmd.extend(buf.drain(..done));
                        s.rebase(done);
                    }
                    break;
                }
                Err(e) => return (out, Some(e), held),
            }
        }
    }
    (out, None, held)
}

#[test]
fn streamed_commands_match_whole_commands_with_bounded_buffer() {
    let mut data = Vec::new();
    data.extend_from_slice(b"PING\r\n");
    for len in [0usize, 5, 65535, 65536, 65537, 400_000] {
        let value: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        data.extend(encode_command(&[&b"SET"[..], b"key", &value]));
        data.extend(encode_command(&[&b"MSET"[..], b"a", &value, b"b", &value]));
    }
    data.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    let whole = scan_all_commands(&data).unwrap();
    assert_eq!(whole.len(), 14);
    let mut rng = XorShift(42);
    for max_chunk in [1, 13, 16384, 100_000] {
        let (cmds, err, held) = stream_commands(&data, || 1 + rng.below(max_chunk));
        assert_eq!(err, None);
        let mut off = 0;
        assert_eq!(cmds.len(), whole.len());
        for ((bytes, nargs), w) in cmds.iter().zip(&whole) {
            assert_eq!(bytes.as_slice(), &data[off..off + w.len]);
            assert_eq!(*nargs, w.nargs);
            off += w.len;
        }
        assert!(
            held <= max_chunk + 32,
            "held {held} with chunks up to {max_chunk}"
        );
    }
}

#[test]
fn a_command_over_the_bulk_limit_is_refused_while_streaming() {
    let limits = Limits {
        max_bulk: 100_000,
        ..Limits::default()
    };
    let mut s = CommandScanner::default();
    let mut buf = b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$90000\r\n".to_vec();
    buf.extend(std::iter::repeat_n(b'v', 1000));
    assert_eq!(s.scan(&buf, &limits).unwrap(), None);
    let (nargs, name) = s.head().unwrap();
    assert_eq!((nargs, &buf[name]), (5, &b"MSET"[..]));
    let done = s.scanned();
    assert_eq!(done, buf.len());
    s.rebase(done);
    let mut rest = vec![b'v'; 89_000];
    rest.extend_from_slice(b"\r\n$1\r\nb\r\n$100001\r\n");
    assert_eq!(
        s.scan(&rest, &limits).unwrap_err(),
        ProtocolError("invalid bulk length".into())
    );
}

/// The `stream_scanner` fuzz target's check, on generated inputs: RESP-like fragments (so that
/// frames are often valid and large against the small limits) in random chunk splits.
#[test]
fn streamed_scans_match_whole_scans_on_generated_inputs() {
    use super::stream_check::{streamed, whole};
    let pieces: &[&[u8]] = &[
        b"*3\r\n",
        b"*2\r\n",
        b"%1\r\n",
        b"~2\r\n",
        b">3\r\n",
        b"$3\r\nSET\r\n",
        b"$1\r\nk\r\n",
        b"$40\r\n",
        b"$64\r\n",
        b"$65\r\n",
        b"$-1\r\n",
        b"+OK\r\n",
        b":12\r\n",
        b"-ERR x\r\n",
        b"=20\r\ntxt:",
        b"PING\r\n",
        b"\r\n",
        b"0123456789",
        b"x",
        b"*1\r\n$4\r\nPING\r\n",
    ];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..20_000 {
        let mut data = Vec::new();
        for _ in 0..rng.below(12) {
            data.extend_from_slice(pieces[rng.below(pieces.len())]);
        }
        let splits: Vec<u8> = (0..rng.below(8)).map(|_| rng.below(256) as u8).collect();
        assert_eq!(
            whole::<ReplyScanner>(&data),
            streamed::<ReplyScanner>(&data, &splits),
            "replies {:?} split {splits:?}",
            String::from_utf8_lossy(&data)
        );
        assert_eq!(
            whole::<CommandScanner>(&data),
            streamed::<CommandScanner>(&data, &splits),
            "commands {:?} split {splits:?}",
            String::from_utf8_lossy(&data)
        );
    }
}
