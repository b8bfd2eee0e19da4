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
