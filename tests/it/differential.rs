//! Differential testing (issue 7): seeded random command sequences run twice against the same
//! real TLS redis-server — once directly, once through the proxy while tokens rotate — must
//! produce byte-identical reply streams.
//!
//! Each sequence is a list of steps: batches of commands written at once (a pipeline, one
//! command, or a mix of RESP and inline commands), messages published from another connection
//! to a subscribed client, and (in the proxied run only) token rotations requested from a
//! concurrent task. The generator keeps a model of the connection (protocol, subscriptions,
//! MULTI, `CLIENT REPLY` mode) to know how many reply frames each batch yields; the direct run
//! checks that model against redis-server itself. Between runs every database is flushed, so
//! both runs use the same key names and see the same data.
//!
//! Only one thing is normalised: the `id` field of HELLO replies (the server's client id).
//! Commands whose replies depend on time, randomness or the connection (TTL, SRANDMEMBER,
//! CLIENT ID, INFO, XADD `*`...) are not generated, and neither are those whose effect through
//! the proxy differs by design (AUTH, RESET, QUIT, MONITOR; HELLO/SUBSCRIBE/CLIENT REPLY
//! inside MULTI), documented in `docs/session.md`.
//!
//! `DIFF_SEQUENCES` (default 200) and `DIFF_SEED` (default: random, printed) widen or replay a
//! run; `DIFF_FIRST` starts a replay at the failing sequence.

use test_harness as support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, seedable, stable across crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }
    /// True with probability `percent`%.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The generator and its model of the connection
// ---------------------------------------------------------------------------------------------

const CHANNELS: &[&str] = &["ch:a", "ch:b", "ch:c", "other"];
const PATTERNS: &[&str] = &["ch:*", "o*"];

/// What redis-server's state looks like to the generator.
#[derive(Default)]
struct Model {
    /// 2 or 3.
    proto: u8,
    channels: BTreeSet<String>,
    patterns: BTreeSet<String>,
    multi: bool,
    /// `CLIENT REPLY OFF` in force.
    off: bool,
    /// The command about to run has its reply skipped (`CLIENT REPLY SKIP` before it).
    skip: bool,
    /// Monotonic stream ID counter, so that explicit XADD IDs always grow.
    stream_ms: u64,
    /// CLIENT TRACKING was used: the proxy closes (not replaces) this connection on a loss,
    /// so no upstream kill is generated any more.
    unrestorable: bool,
    /// WATCH in force (the proxy closes a watching session on a loss).
    watching: bool,
    /// A command ran without a reply (CLIENT REPLY OFF/SKIP) and no reply came after it: on
    /// a loss the proxy cannot know it ran, and closes.
    unconfirmed: bool,
}

impl Model {
    fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }
    fn resp2_subscribed(&self) -> bool {
        self.proto == 2 && self.subscribed()
    }
    /// Pub/Sub messages a PUBLISH to `channel` delivers to this connection.
    fn deliveries(&self, channel: &str) -> usize {
        usize::from(self.channels.contains(channel))
            + self
                .patterns
                .iter()
                .filter(|p| channel.starts_with(p.trim_end_matches('*')))
                .count()
    }
    /// The reply state (`CLIENT REPLY`) allows replies to the next command.
    fn replies_on(&self) -> bool {
        !self.off && !self.skip
    }
}

/// One step of a sequence.
enum Step {
    /// Bytes written at once; `frames` reply frames expected.
    Batch {
        bytes: Vec<u8>,
        frames: usize,
        descr: Vec<String>,
    },
    /// Another connection publishes; the subscribed client receives `frames` frames.
    Publish {
        channel: String,
        message: Vec<u8>,
        frames: usize,
    },
    /// Proxied run only: ask the rotation task for a token rotation (does not wait).
    Rotate,
    /// Proxied run only: kill the proxy's upstream connection (`CLIENT KILL ID`) while the
    /// session is idle in a state the proxy restores; waits until the proxy has replaced it.
    Kill,
}

struct Sequence {
    steps: Vec<Step>,
}

/// A short printable rendering of bytes.
fn show(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

struct Gen {
    rng: Rng,
    m: Model,
}

impl Gen {
    fn value(&mut self) -> Vec<u8> {
        let r = self.rng.below(1000);
        let len = if r < 3 {
            self.rng.range(1 << 20, 3 << 20) as usize
        } else if r < 25 {
            self.rng.range(1000, 100_000) as usize
        } else {
            self.rng.range(0, 40) as usize
        };
        match self.rng.below(4) {
            // Arbitrary bytes, CR and LF included.
            0 => (0..len).map(|_| self.rng.next() as u8).collect(),
            // Bytes that look like RESP.
            1 => {
                let pieces: &[&[u8]] = &[b"\r\n", b"*1", b"$-1", b"+OK", b"-ERR", b":1", b">3"];
                let mut v = Vec::with_capacity(len);
                while v.len() < len {
                    let piece: &[u8] = pieces[self.rng.below(pieces.len() as u64) as usize];
                    v.extend_from_slice(piece);
                }
                v.truncate(len);
                v
            }
            2 => self.rng.range(0, 100_000).to_string().into_bytes(),
            _ => (0..len)
                .map(|_| b'a' + self.rng.below(26) as u8)
                .collect::<Vec<u8>>(),
        }
    }

    fn key(&mut self, prefix: &str) -> Vec<u8> {
        // Mostly a key of the intended type, sometimes any key (WRONGTYPE errors).
        let p = if self.rng.chance(8) {
            *self.rng.pick(&["s", "l", "h", "set", "z", "x"])
        } else {
            prefix
        };
        format!("{p}{}", self.rng.below(4)).into_bytes()
    }

    fn num(&mut self, lo: i64, hi: i64) -> Vec<u8> {
        (lo + self.rng.below((hi - lo + 1) as u64) as i64)
            .to_string()
            .into_bytes()
    }

    fn field(&mut self) -> Vec<u8> {
        format!("f{}", self.rng.below(6)).into_bytes()
    }

    fn member(&mut self) -> Vec<u8> {
        if self.rng.chance(30) {
            self.num(0, 20)
        } else {
            format!("m{}", self.rng.below(8)).into_bytes()
        }
    }

    fn stream_id(&mut self) -> Vec<u8> {
        self.m.stream_ms += self.rng.range(1, 3);
        format!("{}-{}", self.m.stream_ms, self.rng.below(3)).into_bytes()
    }

    /// A data command whose reply depends only on the data (one reply frame).
    fn data_command(&mut self) -> Vec<Vec<u8>> {
        let b = |s: &str| s.as_bytes().to_vec();
        let r = self.rng.below(100);
        match r {
            0..=4 => vec![b("SET"), self.key("s"), self.value()],
            5..=7 => vec![b("GET"), self.key("s")],
            8 => vec![b("APPEND"), self.key("s"), self.value()],
            9 => vec![b("INCR"), self.key("s")],
            10 => vec![b("INCRBY"), self.key("s"), self.num(-100, 100)],
            11 => vec![b("INCRBYFLOAT"), self.key("s"), b("1.5")],
            12 => vec![b("STRLEN"), self.key("s")],
            13 => vec![
                b("GETRANGE"),
                self.key("s"),
                self.num(-5, 5),
                self.num(-5, 50),
            ],
            14 => vec![b("SETRANGE"), self.key("s"), self.num(0, 50), self.value()],
            15 => vec![
                b("MSET"),
                self.key("s"),
                self.value(),
                self.key("s"),
                self.value(),
            ],
            16 => vec![b("MGET"), self.key("s"), self.key("s"), self.key("s")],
            17 => vec![b("GETDEL"), self.key("s")],
            18 => vec![b("SETNX"), self.key("s"), self.value()],
            19 => vec![b("DEL"), self.key("s"), self.key("l")],
            20 => vec![b("EXISTS"), self.key("s"), self.key("h")],
            21 => vec![b("TYPE"), self.key("z")],
            22 => vec![b("EXPIRE"), self.key("s"), self.num(1000, 5000)],
            23 => vec![b("PERSIST"), self.key("s")],
            24 => vec![b("RENAME"), self.key("s"), self.key("s")],
            25 => vec![b("COPY"), self.key("l"), self.key("l"), b("REPLACE")],
            26 => vec![b("OBJECT"), b("ENCODING"), self.key("l")],
            27 => vec![b("DBSIZE")],
            28..=31 => {
                let mut c = vec![b(if self.rng.chance(50) {
                    "LPUSH"
                } else {
                    "RPUSH"
                })];
                c.push(self.key("l"));
                for _ in 0..self.rng.range(1, 4) {
                    c.push(self.value());
                }
                c
            }
            32 => vec![b("LPOP"), self.key("l")],
            33 => vec![b("RPOP"), self.key("l"), self.num(1, 3)],
            34..=35 => vec![
                b("LRANGE"),
                self.key("l"),
                self.num(-3, 2),
                self.num(-3, 10),
            ],
            36 => vec![b("LLEN"), self.key("l")],
            37 => vec![b("LINDEX"), self.key("l"), self.num(-2, 3)],
            38 => vec![b("LSET"), self.key("l"), self.num(-2, 3), self.value()],
            39 => vec![b("LREM"), self.key("l"), self.num(-1, 1), self.value()],
            40 => vec![
                b("LMOVE"),
                self.key("l"),
                self.key("l"),
                b("LEFT"),
                b("RIGHT"),
            ],
            41 => vec![b("LPOS"), self.key("l"), self.num(0, 20)],
            42..=44 => {
                let mut c = vec![b("HSET"), self.key("h")];
                for _ in 0..self.rng.range(1, 3) {
                    c.push(self.field());
                    c.push(self.value());
                }
                c
            }
            45 => vec![b("HGET"), self.key("h"), self.field()],
            46 => vec![b("HGETALL"), self.key("h")],
            47 => vec![b("HDEL"), self.key("h"), self.field()],
            48 => vec![b("HINCRBY"), self.key("h"), self.field(), self.num(-5, 5)],
            49 => vec![b("HKEYS"), self.key("h")],
            50 => vec![b("HVALS"), self.key("h")],
            51 => vec![b("HLEN"), self.key("h")],
            52 => vec![b("HEXISTS"), self.key("h"), self.field()],
            53 => vec![b("HMGET"), self.key("h"), self.field(), self.field()],
            54..=56 => {
                let mut c = vec![b("SADD"), self.key("set")];
                for _ in 0..self.rng.range(1, 4) {
                    c.push(self.member());
                }
                c
            }
            57 => vec![b("SREM"), self.key("set"), self.member()],
            58 => vec![b("SCARD"), self.key("set")],
            59 => vec![b("SISMEMBER"), self.key("set"), self.member()],
            60 => vec![
                b("SMISMEMBER"),
                self.key("set"),
                self.member(),
                self.member(),
            ],
            61 => vec![b("SORT"), self.key("set"), b("ALPHA")],
            62 => vec![b("SMEMBERS"), self.key("set")],
            63 => vec![b("SINTERCARD"), b("2"), self.key("set"), self.key("set")],
            64..=66 => {
                let mut c = vec![b("ZADD"), self.key("z")];
                for _ in 0..self.rng.range(1, 3) {
                    c.push(
                        self.rng
                            .pick(&["1", "2.5", "-3", "0", "+inf", "1e3"])
                            .as_bytes()
                            .to_vec(),
                    );
                    c.push(self.member());
                }
                c
            }
            67 => vec![b("ZRANGE"), self.key("z"), b("0"), b("-1"), b("WITHSCORES")],
            68 => vec![b("ZSCORE"), self.key("z"), self.member()],
            69 => vec![b("ZINCRBY"), self.key("z"), b("1.25"), self.member()],
            70 => vec![b("ZRANK"), self.key("z"), self.member()],
            71 => vec![b("ZPOPMIN"), self.key("z")],
            72 => vec![b("ZRANGEBYSCORE"), self.key("z"), b("-inf"), b("(2")],
            73 => vec![b("ZCARD"), self.key("z")],
            74..=76 => {
                let mut c = vec![b("XADD"), self.key("x")];
                if self.rng.chance(20) {
                    c.push(b("MAXLEN"));
                    c.push(self.num(1, 5));
                }
                c.push(self.stream_id());
                c.push(self.field());
                c.push(self.value());
                c
            }
            77 => vec![b("XLEN"), self.key("x")],
            78 => vec![b("XRANGE"), self.key("x"), b("-"), b("+")],
            79 => vec![
                b("XREVRANGE"),
                self.key("x"),
                b("+"),
                b("-"),
                b("COUNT"),
                b("2"),
            ],
            80 => vec![
                b("XREAD"),
                b("COUNT"),
                b("3"),
                b("STREAMS"),
                self.key("x"),
                b("0-0"),
            ],
            81 => vec![
                b("XGROUP"),
                b("CREATE"),
                self.key("x"),
                b("g"),
                b("0"),
                b("MKSTREAM"),
            ],
            82 => vec![
                b("XREADGROUP"),
                b("GROUP"),
                b("g"),
                b("c1"),
                b("COUNT"),
                b("2"),
                b("STREAMS"),
                self.key("x"),
                b(">"),
            ],
            83 => vec![b("XPENDING"), self.key("x"), b("g")],
            84 => {
                let id = format!("{}-0", self.rng.range(0, self.m.stream_ms.max(1)));
                vec![b("XACK"), self.key("x"), b("g"), id.into_bytes()]
            }
            85 => vec![b("XTRIM"), self.key("x"), b("MAXLEN"), self.num(0, 4)],
            86 => vec![b("BLPOP"), self.key("l"), b("0.01")],
            87 => vec![
                b("XREAD"),
                b("BLOCK"),
                b("10"),
                b("STREAMS"),
                self.key("x"),
                b("$"),
            ],
            88 => vec![b("BZPOPMIN"), self.key("z"), b("0.01")],
            89 => vec![b("WAIT"), b("0"), b("0")],
            90 => vec![b("ECHO"), self.value()],
            91 => vec![b("PING")],
            92 => vec![b("PING"), self.value()],
            93 => vec![b("WATCH"), self.key("s")],
            94 => vec![b("UNWATCH")],
            95 => vec![b("NOSUCHCOMMAND"), self.value()],
            96 => vec![b("GET")],
            97 => vec![b("SELECT"), self.num(0, 3)],
            98 => vec![
                b("CLIENT"),
                b("SETNAME"),
                format!("n{}", self.rng.below(9)).into_bytes(),
            ],
            _ => vec![b("CLIENT"), b("GETNAME")],
        }
    }

    /// The next command and how many reply frames it yields; updates the model.
    fn command(&mut self) -> (Vec<Vec<u8>>, usize) {
        let b = |s: &str| s.as_bytes().to_vec();
        let replies = self.m.replies_on();
        let r = self.rng.below(100);
        let (cmd, frames): (Vec<Vec<u8>>, usize) = if self.m.resp2_subscribed() {
            // Only (P)(UN)SUBSCRIBE and PING are allowed; anything else is an error.
            match r {
                0..=19 => self.subscribe_cmd(),
                20..=39 => self.unsubscribe_cmd(),
                40..=69 => {
                    if self.rng.chance(50) {
                        (vec![b("PING")], 1)
                    } else {
                        (vec![b("PING"), self.value()], 1)
                    }
                }
                _ => {
                    let mut c = self.data_command();
                    if self.rng.chance(20) {
                        c = vec![b("HELLO"), b("3")];
                    }
                    (c, 1)
                }
            }
        } else if self.m.multi {
            match r {
                0..=9 => {
                    self.m.multi = false;
                    (vec![b("EXEC")], 1)
                }
                10..=13 => {
                    self.m.multi = false;
                    (vec![b("DISCARD")], 1)
                }
                14 => (vec![b("MULTI")], 1),
                _ => (self.data_command(), 1),
            }
        } else {
            match r {
                0..=3 if replies => {
                    self.m.multi = true;
                    (vec![b("MULTI")], 1)
                }
                4 => (vec![b("EXEC")], 1),
                5 => (vec![b("DISCARD")], 1),
                6..=7 => {
                    let v = *self.rng.pick(&["2", "3", "3", "4"]);
                    let mut c = vec![b("HELLO"), b(v)];
                    if self.rng.chance(30) {
                        c.push(b("SETNAME"));
                        c.push(b("hello-name"));
                    }
                    match v {
                        "2" => self.m.proto = 2,
                        "3" => self.m.proto = 3,
                        _ => {}
                    }
                    if v == "2" && self.m.subscribed() {
                        // Not generated: a RESP3 subscriber going back to RESP2.
                        self.m.proto = 3;
                        (vec![b("HELLO")], 1)
                    } else {
                        (c, 1)
                    }
                }
                8 => (vec![b("HELLO")], 1),
                // Connection flags the proxy restores on a new connection, and CLIENT UNBLOCK
                // of nobody; tracking (BCAST on a prefix no key has, so no invalidation ever
                // comes) makes the session one the proxy would close, not replace.
                20 => {
                    let on = *self.rng.pick(&["ON", "OFF"]);
                    (vec![b("CLIENT"), b("NO-EVICT"), b(on)], 1)
                }
                21 => {
                    let mut c = vec![b("CLIENT"), b("UNBLOCK"), b("999999")];
                    if self.rng.chance(50) {
                        let mode = if self.rng.chance(50) {
                            "TIMEOUT"
                        } else {
                            "ERROR"
                        };
                        c.push(b(mode));
                    }
                    (c, 1)
                }
                22 if self.rng.chance(30) => {
                    self.m.unrestorable = true;
                    if self.rng.chance(50) {
                        (vec![b("CLIENT"), b("TRACKING"), b("OFF")], 1)
                    } else {
                        let c = ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "zz:"];
                        (c.iter().map(|a| b(a)).collect(), 1)
                    }
                }
                9..=13 if replies => self.subscribe_cmd(),
                14..=16 if replies => self.unsubscribe_cmd(),
                17..=19 if replies => {
                    let ch = (*self.rng.pick(CHANNELS)).to_owned();
                    let frames = 1 + if self.m.proto == 3 {
                        self.m.deliveries(&ch)
                    } else {
                        0
                    };
                    (vec![b("PUBLISH"), ch.into_bytes(), self.value()], frames)
                }
                _ => (self.data_command(), 1),
            }
        };
        (cmd, frames)
    }

    fn subscribe_cmd(&mut self) -> (Vec<Vec<u8>>, usize) {
        let pattern = self.rng.chance(30);
        let (name, pool) = if pattern {
            ("PSUBSCRIBE", PATTERNS)
        } else {
            ("SUBSCRIBE", CHANNELS)
        };
        let mut cmd = vec![name.as_bytes().to_vec()];
        for _ in 0..self.rng.range(1, 3) {
            let c = (*self.rng.pick(pool)).to_owned();
            if pattern {
                self.m.patterns.insert(c.clone());
            } else {
                self.m.channels.insert(c.clone());
            }
            cmd.push(c.into_bytes());
        }
        let frames = cmd.len() - 1;
        (cmd, frames)
    }

    fn unsubscribe_cmd(&mut self) -> (Vec<Vec<u8>>, usize) {
        let pattern = self.rng.chance(30);
        let (name, pool) = if pattern {
            ("PUNSUBSCRIBE", PATTERNS)
        } else {
            ("UNSUBSCRIBE", CHANNELS)
        };
        let mut cmd = vec![name.as_bytes().to_vec()];
        let set = if pattern {
            &mut self.m.patterns
        } else {
            &mut self.m.channels
        };
        if self.rng.chance(40) {
            let frames = set.len().max(1);
            set.clear();
            return (cmd, frames);
        }
        for _ in 0..self.rng.range(1, 2) {
            let c = (*self.rng.pick(pool)).to_owned();
            set.remove(&c);
            cmd.push(c.into_bytes());
        }
        let frames = cmd.len() - 1;
        (cmd, frames)
    }

    /// Encodes a command, sometimes as an inline command when its arguments allow it.
    fn encode(&mut self, cmd: &[Vec<u8>]) -> Vec<u8> {
        let simple = cmd.iter().all(|a| {
            !a.is_empty()
                && a.len() < 200
                && a.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b":*.-+(>$".contains(c))
        });
        if simple && self.rng.chance(25) {
            let mut line = Vec::new();
            for (i, a) in cmd.iter().enumerate() {
                if i > 0 {
                    line.extend_from_slice(if self.rng.chance(10) { b"  " } else { b" " });
                }
                if self.rng.chance(10) {
                    line.push(b'"');
                    line.extend_from_slice(a);
                    line.push(b'"');
                } else {
                    line.extend_from_slice(a);
                }
            }
            line.extend_from_slice(if self.rng.chance(20) { b"\n" } else { b"\r\n" });
            return line;
        }
        encode_command(cmd)
    }

    /// One command (with the reply accounting of `CLIENT REPLY`) appended to a batch.
    fn push_command(&mut self, bytes: &mut Vec<u8>, frames: &mut usize, descr: &mut Vec<String>) {
        if self.rng.chance(3) {
            // An empty command: no reply, but redis-server's resetClient runs for it too, so
            // it consumes a pending `CLIENT REPLY SKIP`.
            let empty: &[u8] = if self.rng.chance(50) {
                b"*0\r\n"
            } else {
                b"\r\n"
            };
            bytes.extend_from_slice(empty);
            descr.push(format!("<empty command {}>", show(empty, 10)));
            self.m.skip = false;
            return;
        }
        let suppressed = !self.m.replies_on();
        let mut skip_next = false;
        let is_reply_mode = !self.m.multi
            && !self.m.subscribed()
            && self.rng.chance(if suppressed { 30 } else { 4 });
        let (cmd, n) = if is_reply_mode {
            let mode = *self.rng.pick(&["ON", "OFF", "SKIP"]);
            let n = match mode {
                // ON clears OFF and SKIP before it replies: always answered.
                "ON" => {
                    self.m.off = false;
                    1
                }
                "OFF" => {
                    self.m.off = true;
                    0
                }
                _ => {
                    skip_next = !self.m.off;
                    0
                }
            };
            let cmd = vec![
                b"CLIENT".to_vec(),
                b"REPLY".to_vec(),
                mode.as_bytes().to_vec(),
            ];
            (cmd, n)
        } else {
            let was_multi = self.m.multi;
            let (c, n) = self.command();
            let name = c[0].to_ascii_uppercase();
            match name.as_slice() {
                b"WATCH" if !was_multi => self.m.watching = true,
                b"UNWATCH" if !was_multi => self.m.watching = false,
                b"EXEC" | b"DISCARD" if was_multi => self.m.watching = false,
                // Queued connection state other than SELECT: the proxy does not follow it
                // through EXEC, and closes rather than replaces such a session.
                b"CLIENT" if was_multi && c.len() > 2 && c[1].eq_ignore_ascii_case(b"SETNAME") => {
                    self.m.unrestorable = true
                }
                _ => {}
            }
            (c, if suppressed { 0 } else { n })
        };
        *frames += n;
        if !is_reply_mode {
            self.m.unconfirmed = n == 0;
        } else if n > 0 {
            self.m.unconfirmed = false;
        }
        descr.push(
            cmd.iter()
                .map(|a| show(a, 40))
                .collect::<Vec<_>>()
                .join(" "),
        );
        let encoded = self.encode(&cmd);
        bytes.extend_from_slice(&encoded);
        // resetClient: a skip applies to one command only.
        self.m.skip = skip_next;
    }

    fn sequence(seed: u64) -> Sequence {
        let mut g = Gen {
            rng: Rng(seed),
            m: Model {
                proto: 2,
                ..Model::default()
            },
        };
        let mut steps = Vec::new();
        // A reply came since the session (or its last replacement) opened: its upstream
        // connection is up, so a kill hits an established session.
        let mut established = false;
        let nsteps = g.rng.range(3, 12);
        for _ in 0..nsteps {
            let r = g.rng.below(100);
            if r < 15 {
                steps.push(Step::Rotate);
                continue;
            }
            if r < 22
                && established
                && !g.m.multi
                && !g.m.watching
                && !g.m.subscribed()
                && !g.m.unrestorable
                && !g.m.unconfirmed
            {
                steps.push(Step::Kill);
                established = false;
                continue;
            }
            if r < 25 && g.m.subscribed() && g.m.replies_on() && !g.m.off {
                let channel = (*g.rng.pick(CHANNELS)).to_owned();
                let frames = g.m.deliveries(&channel);
                if frames > 0 {
                    let message = g.value();
                    steps.push(Step::Publish {
                        channel,
                        message,
                        frames,
                    });
                    continue;
                }
            }
            let n = match g.rng.below(100) {
                0..=59 => g.rng.range(1, 5),
                60..=91 => g.rng.range(6, 40),
                _ => 0,
            };
            let mut bytes = Vec::new();
            let mut frames = 0;
            let mut descr = Vec::new();
            if n == 0 {
                // A long pipeline of small commands: re-AUTH lands in the middle of it.
                let count = g.rng.range(200, 1500);
                for i in 0..count {
                    let cmd: Vec<Vec<u8>> = match i % 3 {
                        0 => vec![b"INCR".to_vec(), b"counter".to_vec()],
                        1 => vec![
                            b"RPUSH".to_vec(),
                            b"pipe".to_vec(),
                            i.to_string().into_bytes(),
                        ],
                        _ => vec![b"GET".to_vec(), b"counter".to_vec()],
                    };
                    let cmd = if g.m.resp2_subscribed() {
                        vec![b"PING".to_vec(), i.to_string().into_bytes()]
                    } else {
                        cmd
                    };
                    bytes.extend_from_slice(&encode_command(&cmd));
                    if g.m.replies_on() {
                        frames += 1;
                    }
                    g.m.unconfirmed = !g.m.replies_on();
                    g.m.skip = false;
                }
                descr.push(format!("<pipeline of {count} commands>"));
            } else {
                for _ in 0..n {
                    g.push_command(&mut bytes, &mut frames, &mut descr);
                }
            }
            established |= frames > 0;
            steps.push(Step::Batch {
                bytes,
                frames,
                descr,
            });
        }
        // End in a state where a final PING is answered and nothing is left half done.
        let mut bytes = Vec::new();
        let mut frames = 0;
        let mut descr = Vec::new();
        let mut close = |cmd: &[&str], n: usize, bytes: &mut Vec<u8>, frames: &mut usize| {
            bytes.extend_from_slice(&encode_command(cmd));
            *frames += n;
            descr.push(cmd.join(" "));
        };
        if !established && !g.m.multi {
            // After a kill the session opens its new connection with its next command, and a
            // rotation waits for that: send one.
            let n = usize::from(g.m.replies_on());
            g.m.skip = false;
            close(&["ECHO", "after-kill"], n, &mut bytes, &mut frames);
        }
        if g.m.multi {
            close(
                &["DISCARD"],
                usize::from(g.m.replies_on()),
                &mut bytes,
                &mut frames,
            );
        } else if g.m.skip {
            close(&["PING"], 0, &mut bytes, &mut frames);
        }
        if g.m.off && !g.m.resp2_subscribed() {
            close(&["CLIENT", "REPLY", "ON"], 1, &mut bytes, &mut frames);
        }
        if !bytes.is_empty() {
            steps.push(Step::Batch {
                bytes,
                frames,
                descr,
            });
        }
        Sequence { steps }
    }
}

// ---------------------------------------------------------------------------------------------
// Reply streams
// ---------------------------------------------------------------------------------------------

/// Length of the RESP2/RESP3 frame at `buf[pos..]`, `None` if incomplete. Independent of the
/// proxy's scanner on purpose.
fn frame_end(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let line_end = |from: usize| -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(cr) = line_end(pos + 1) else {
        return Ok(None);
    };
    let header = std::str::from_utf8(&buf[pos + 1..cr]).unwrap_or("?");
    let next = cr + 2;
    let num = || -> Result<i64, String> {
        header
            .parse::<i64>()
            .map_err(|_| format!("bad length {header:?} at {pos}"))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(next)),
        b'$' | b'!' | b'=' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some(next));
            }
            let end = next + n as usize + 2;
            Ok((end <= buf.len()).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = num()?;
            let children = match kind {
                b'%' => 2 * n.max(0),
                b'|' => 2 * n.max(0) + 1,
                _ => n.max(0),
            };
            let mut p = next;
            for _ in 0..children {
                match frame_end(buf, p)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(p))
        }
        other => Err(format!("unexpected type byte {other:#x} at {pos}")),
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection whose reply stream is collected raw.
struct RawConn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

const READ_TIMEOUT: Duration = Duration::from_secs(20);

impl RawConn {
    /// Writes `bytes` while reading `frames` frames; returns their raw bytes.
    async fn exchange(&mut self, bytes: &[u8], frames: usize) -> Result<Vec<u8>, String> {
        let RawConn { io, buf } = self;
        let (mut rd, mut wr) = tokio::io::split(io);
        let write = async {
            tokio::time::timeout(READ_TIMEOUT, async {
                wr.write_all(bytes).await?;
                wr.flush().await
            })
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| format!("write: {e}"))
        };
        let read = async {
            let mut consumed = 0;
            let mut got = 0;
            let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
            while got < frames {
                match frame_end(buf, consumed)? {
                    Some(end) => {
                        consumed = end;
                        got += 1;
                        continue;
                    }
                    None => {
                        let mut chunk = [0u8; 64 * 1024];
                        let n = tokio::time::timeout_at(deadline, rd.read(&mut chunk))
                            .await
                            .map_err(|_| {
                                format!(
                                    "timed out with {got} of {frames} frames; buffered: {}",
                                    show(&buf[consumed..], 300)
                                )
                            })?
                            .map_err(|e| format!("read: {e}"))?;
                        if n == 0 {
                            return Err(format!(
                                "connection closed after {got} of {frames} frames; buffered: {}",
                                show(&buf[consumed..], 300)
                            ));
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            Ok::<_, String>(buf.drain(..consumed).collect::<Vec<u8>>())
        };
        let (w, r) = tokio::join!(write, read);
        w?;
        r
    }
}

/// Replaces the value of every HELLO `id` field (`$2\r\nid\r\n:<n>\r\n`) by `:0`, and sorts
/// the names within each run of unsubscribe confirmations (see [`sort_unsubscribe_runs`]).
fn normalise(stream: &[u8]) -> Vec<u8> {
    sort_unsubscribe_runs(&normalise_ids(stream))
}

/// One unsubscribe confirmation: its length, its kind (the encoded `unsubscribe`,
/// `punsubscribe` or `sunsubscribe`), the name (`None`: `$-1`/`_`) and the count.
type Confirmation<'a> = (usize, &'a [u8], Option<&'a [u8]>, i64);

/// The unsubscribe confirmation (`*3`/`>3`) at the start of `buf`, if one is there.
fn unsubscribe_confirmation(buf: &[u8]) -> Option<Confirmation<'_>> {
    let head = buf.get(..4)?;
    if head != b"*3\r\n" && head != b">3\r\n" {
        return None;
    }
    let mut i = 4;
    let kind = [
        &b"$11\r\nunsubscribe\r\n"[..],
        b"$12\r\npunsubscribe\r\n",
        b"$12\r\nsunsubscribe\r\n",
    ]
    .into_iter()
    .find(|k| buf[i..].starts_with(k))?;
    i += kind.len();
    let name = if buf[i..].starts_with(b"$-1\r\n") || buf[i..].starts_with(b"_\r\n") {
        i += if buf[i] == b'_' { 3 } else { 5 };
        None
    } else {
        let rest = buf.get(i..)?.strip_prefix(b"$")?;
        let eol = rest.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
        let start = i + 1 + eol + 2;
        i = start + len + 2;
        Some(buf.get(start..start + len)?)
    };
    let rest = buf.get(i..)?.strip_prefix(b":")?;
    let eol = rest.iter().position(|&b| b == b'\r')?;
    let count: i64 = std::str::from_utf8(&rest[..eol]).ok()?.parse().ok()?;
    Some((i + 1 + eol + 2, kind, name, count))
}

/// UNSUBSCRIBE/PUNSUBSCRIBE without arguments confirm the subscriptions in the order of
/// redis-server's per-connection hash table, which depends on that connection's history: a
/// replaced upstream connection (the kill steps) lists them in another order. Within each run
/// of confirmations of one kind whose counts go down by one, the names are sorted (the counts
/// stay in place), so the comparison checks the set and the counts, not the order.
fn sort_unsubscribe_runs(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        let Some((len, kind, name, count)) = unsubscribe_confirmation(&stream[i..]) else {
            out.push(stream[i]);
            i += 1;
            continue;
        };
        let head = &stream[i..i + 4];
        let mut run = vec![(name.map(<[u8]>::to_vec), count)];
        i += len;
        while let Some((len, k, name, c)) = unsubscribe_confirmation(&stream[i..]) {
            if k != kind || &stream[i..i + 4] != head || c != run.last().unwrap().1 - 1 {
                break;
            }
            run.push((name.map(<[u8]>::to_vec), c));
            i += len;
        }
        let mut names: Vec<_> = run.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        for (name, (_, count)) in names.into_iter().zip(run) {
            out.extend_from_slice(head);
            out.extend_from_slice(kind);
            match name {
                Some(n) => {
                    out.extend_from_slice(format!("${}\r\n", n.len()).as_bytes());
                    out.extend_from_slice(&n);
                    out.extend_from_slice(b"\r\n");
                }
                None if head[0] == b'>' => out.extend_from_slice(b"_\r\n"),
                None => out.extend_from_slice(b"$-1\r\n"),
            }
            out.extend_from_slice(format!(":{count}\r\n").as_bytes());
        }
    }
    out
}

#[test]
fn unsubscribe_runs_are_sorted_by_name_with_counts_in_place() {
    let a = b"+OK\r\n*3\r\n$11\r\nunsubscribe\r\n$5\r\nother\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$4\r\nch:c\r\n:1\r\n";
    let b = b"+OK\r\n*3\r\n$11\r\nunsubscribe\r\n$4\r\nch:c\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$5\r\nother\r\n:1\r\n";
    assert_ne!(&a[..], &b[..]);
    assert_eq!(sort_unsubscribe_runs(a), sort_unsubscribe_runs(b));
    // A different count or name still differs.
    let c = b"+OK\r\n*3\r\n$11\r\nunsubscribe\r\n$4\r\nch:c\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$5\r\nother\r\n:0\r\n";
    assert_ne!(sort_unsubscribe_runs(a), sort_unsubscribe_runs(c));
    let d = b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n";
    assert_eq!(sort_unsubscribe_runs(d), d.to_vec());
}

fn normalise_ids(stream: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"$2\r\nid\r\n:";
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        if stream[i..].starts_with(KEY) {
            out.extend_from_slice(KEY);
            i += KEY.len();
            while i < stream.len() && stream[i].is_ascii_digit() {
                i += 1;
            }
            out.push(b'0');
        } else {
            out.push(stream[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------------------------

type Rotations = tokio::sync::mpsc::UnboundedSender<()>;

/// Kills the proxy's upstream connection for the proxied run.
struct Killer<'a> {
    /// A direct admin connection to the server.
    admin: Admin,
    /// The proxy's admin endpoint (metrics).
    metrics: std::net::SocketAddr,
    /// The proxy, for its logs when something goes wrong.
    proxy: &'a Proxy,
}

impl Killer<'_> {
    /// `upstream_losses_total` of the default upstream, by outcome.
    async fn losses(&self) -> (f64, f64) {
        let m = scrape_metrics(self.metrics).await;
        let v = |o: &str| {
            metric_value(
                &m,
                &format!("entra_redis_proxy_upstream_losses_total{{outcome=\"{o}\",upstream=\"default\"}}"),
            )
        };
        (v("replaced"), v("closed") + v("reissued"))
    }

    /// Kills every test connection on the server (the proxied client's upstream connection),
    /// then waits until the proxy has seen the loss and kept the session.
    async fn kill(&mut self) -> Result<(), String> {
        let (replaced, other) = self.losses().await;
        let clients = self.admin.client_list().await;
        if clients.is_empty() {
            // Already lost and not yet reopened (a kill right after a kill): nothing to do.
            return Ok(());
        }
        for c in &clients {
            self.admin
                .cmd(&["CLIENT", "KILL", "ID", &c.id.to_string()])
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (r, o) = self.losses().await;
            if o > other {
                return Err(format!(
                    "the proxy closed a session it should have restored:\n{}",
                    self.proxy.logs()
                ));
            }
            if r > replaced {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the proxy did not see its upstream connection killed".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Runs the steps of `seq` on `conn`; returns the (normalised) reply bytes of each step that
/// has replies.
async fn run_sequence(
    seq: &Sequence,
    conn: &mut RawConn,
    publisher: &mut Admin,
    rotations: Option<&Rotations>,
    mut killer: Option<&mut Killer<'_>>,
) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (i, step) in seq.steps.iter().enumerate() {
        match step {
            Step::Kill => {
                if let Some(k) = killer.as_deref_mut() {
                    k.kill().await.map_err(|e| format!("step {i}: {e}"))?;
                }
            }
            Step::Rotate => {
                if let Some(tx) = rotations {
                    tx.send(()).map_err(|_| "rotation task gone".to_string())?;
                }
            }
            Step::Batch { bytes, frames, .. } => {
                let raw = conn
                    .exchange(bytes, *frames)
                    .await
                    .map_err(|e| format!("step {i}: {e}"))?;
                out.push(normalise(&raw));
            }
            Step::Publish {
                channel,
                message,
                frames,
            } => {
                let n = publisher
                    .cmd(&[b"PUBLISH".as_slice(), channel.as_bytes(), message])
                    .await;
                if n != Reply::Int(*frames as i64) {
                    return Err(format!("step {i}: PUBLISH reached {n:?} subscribers"));
                }
                let raw = conn
                    .exchange(b"", *frames)
                    .await
                    .map_err(|e| format!("step {i} (publish): {e}"))?;
                out.push(raw);
            }
        }
    }
    Ok(out)
}

/// The connection still answers, and nothing unexpected is left in its stream.
async fn final_check(conn: &mut RawConn) -> Result<Vec<u8>, String> {
    let raw = conn
        .exchange(&encode_command(&["PING", "final"]), 1)
        .await
        .map_err(|e| format!("final PING: {e}"))?;
    if !conn.buf.is_empty() {
        return Err(format!(
            "bytes after the final reply: {}",
            show(&conn.buf, 300)
        ));
    }
    Ok(raw)
}

async fn direct_conn(server: &RedisServer, token: &Token) -> RawConn {
    let tcp = TcpStream::connect(server.addr()).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let connector = tokio_rustls::TlsConnector::from(server.tls.client_config());
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let mut conn = RawConn {
        io: Box::new(tls),
        buf: Vec::new(),
    };
    let reply = conn
        .exchange(&encode_command(&["AUTH", &token.oid, &token.jwt]), 1)
        .await
        .expect("AUTH");
    assert_eq!(reply, b"+OK\r\n", "direct AUTH");
    conn
}

async fn proxy_conn(proxy: &Proxy) -> RawConn {
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    RawConn {
        io: Box::new(tcp),
        buf: Vec::new(),
    }
}

/// Waits until no test connection (anything but the harness's admin ones) is left on the
/// server, then flushes every database.
async fn reset_server(admin: &mut Admin) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gone = false;
    while Instant::now() < deadline {
        if admin.client_list().await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(gone, "a test connection stayed open on the server");
    assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
}

fn describe(seq: &Sequence, upto: usize) -> String {
    let mut s = String::new();
    for (i, step) in seq.steps.iter().enumerate().take(upto.saturating_add(1)) {
        match step {
            Step::Rotate => s.push_str(&format!("  step {i}: <rotate>\n")),
            Step::Kill => s.push_str(&format!("  step {i}: <kill the upstream connection>\n")),
            Step::Publish {
                channel, frames, ..
            } => s.push_str(&format!(
                "  step {i}: <publish to {channel}: {frames} frames>\n"
            )),
            Step::Batch { descr, frames, .. } => {
                s.push_str(&format!("  step {i}: batch, {frames} frames:\n"));
                for d in descr {
                    s.push_str(&format!("      {d}\n"));
                }
            }
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_reply_streams_equal_direct_ones() {
    differential(None).await;
}

/// The same sequences through a proxy with shared connections (`--pool-size 2`), while
/// [`BACKGROUND_CLIENTS`] other clients keep the shared connections busy with stateless
/// commands whose replies they check (an ECHO of a payload of their own), so the tested
/// client's commands are interleaved with theirs. The generator's sequences mix commands
/// that share with commands that pin (MULTI, SUBSCRIBE, HELLO with options, CLIENT ...),
/// so a pin's move happens at every point of a sequence. Kill steps are skipped: killing the
/// shared connections closes the background clients (by design), which the kill step does
/// not expect; shared-connection losses have tests of their own (`shared.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_reply_streams_equal_direct_ones() {
    differential(Some(2)).await;
}

/// Clients of the shared mode's differential run that load the shared connections.
const BACKGROUND_CLIENTS: usize = 16;

/// Keeps `n` clients sending pipelines of ECHOs with payloads of their own until `stop`; each
/// checks that every reply is its own payload. Returns the round-trips done per client.
fn background_load(
    proxy: &Proxy,
    n: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Result<u64, String>>> {
    (0..n)
        .map(|i| {
            let addr = proxy.addr;
            let stop = stop.clone();
            tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                tcp.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut conn = RawConn {
                    io: Box::new(tcp),
                    buf: Vec::new(),
                };
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut bytes = Vec::new();
                    let mut want = Vec::new();
                    for k in 0..4 {
                        let payload = format!("bg{i}:{rounds}:{k}");
                        bytes.extend(encode_command(&["ECHO", &payload]));
                        want.extend(format!("${}\r\n{payload}\r\n", payload.len()).bytes());
                    }
                    let got = conn.exchange(&bytes, 4).await?;
                    if got != want {
                        return Err(format!(
                            "background client {i} got {} for {}",
                            show(&got, 200),
                            show(&want, 200)
                        ));
                    }
                    rounds += 1;
                }
                Ok(rounds)
            })
        })
        .collect()
}

/// Waits until the only test connections left on the server are the proxy's shared ones
/// (named [`SHARED_NAME`]...), then flushes every database.
async fn reset_server_shared(admin: &mut Admin) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<ClientInfo> = admin
            .client_list()
            .await
            .into_iter()
            .filter(|c| !c.name.starts_with(SHARED_NAME))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a test connection stayed open on the server: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(admin.cmd(&["FLUSHALL"]).await, Reply::ok());
}

/// [`reset_server`], or [`reset_server_shared`] with shared connections.
async fn reset_for(pool: Option<usize>, admin: &mut Admin) {
    match pool {
        Some(_) => reset_server_shared(admin).await,
        None => reset_server(admin).await,
    }
}

/// The name the proxy gives its shared connections on the cache.
const SHARED_NAME: &str = "entra-redis-proxy-shared-";

/// Runs the differential test, one-to-one (`pool` `None`) or with shared connections.
async fn differential(pool: Option<usize>) {
    let default_sequences = if pool.is_some() { 120 } else { 200 };
    let sequences: u64 = std::env::var("DIFF_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_sequences);
    let base_seed: u64 = std::env::var("DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!(
        "differential: {sequences} sequences, base seed {base_seed} \
         (replay: DIFF_SEED={base_seed} DIFF_SEQUENCES={sequences})"
    );

    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let mut args = proxy_args(&server, &rotator.file.path);
    let admin_at = args
        .iter()
        .position(|a| a == "--admin-listen")
        .expect("flag")
        + 1;
    args[admin_at] = "127.0.0.1:0".into();
    if let Some(n) = pool {
        args.extend(["--pool-size".to_owned(), n.to_string()]);
    }
    let proxy = Proxy::start(&args, "info,entra_redis_proxy::session=trace").await;
    // Shared mode: other clients keep the shared connections busy throughout, with their
    // commands interleaved with the tested client's.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = match pool {
        Some(_) => background_load(&proxy, BACKGROUND_CLIENTS, stop.clone()),
        None => Vec::new(),
    };

    let mut killer = Killer {
        admin: server.admin().await,
        metrics: admin_address(&proxy),
        proxy: &proxy,
    };
    let rotator = Arc::new(tokio::sync::Mutex::new(rotator));
    let mut admin = server.admin().await;
    let mut publisher = server.admin().await;

    let started = Instant::now();
    let (mut steps_compared, mut bytes_compared, mut rotations) = (0usize, 0usize, 0usize);
    // DIFF_FIRST replays from one sequence on (its number is in the failure message).
    let first: u64 = std::env::var("DIFF_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for n in first..sequences {
        let seed = base_seed.wrapping_add(n.wrapping_mul(0x9E37_79B9));
        let seq = Gen::sequence(seed);
        let fail = |what: String, step: usize| -> ! {
            panic!(
                "sequence {n} (seed {seed}; replay with DIFF_SEED={base_seed} DIFF_FIRST={n} \
                 DIFF_SEQUENCES={}) {what}\n{}",
                n + 1,
                describe(&seq, step)
            )
        };

        // Directly, authenticated as the current token's user.
        let token = rotator.lock().await.current.clone();
        let mut conn = direct_conn(&server, &token).await;
        let mut direct = match run_sequence(&seq, &mut conn, &mut publisher, None, None).await {
            Ok(d) => d,
            Err(e) => fail(
                format!("failed directly (a generator bug): {e}"),
                usize::MAX,
            ),
        };
        match final_check(&mut conn).await {
            Ok(f) => direct.push(f),
            Err(e) => fail(
                format!("failed directly (a generator bug): {e}"),
                usize::MAX,
            ),
        }
        drop(conn);
        reset_for(pool, &mut admin).await;

        // Through the proxy, with rotations requested at the generator's points from a
        // concurrent task (each waits until the proxy re-authed, then deletes the old user).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let task = {
            let (rotator, errors, done) = (rotator.clone(), errors.clone(), done.clone());
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    if let Err(e) = rotator.lock().await.rotate(1).await {
                        errors.lock().unwrap().push(e);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let mut conn = proxy_conn(&proxy).await;
        let proxied = run_sequence(
            &seq,
            &mut conn,
            &mut publisher,
            Some(&tx),
            if pool.is_some() {
                None
            } else {
                Some(&mut killer)
            },
        )
        .await;
        drop(tx);
        task.await.expect("rotation task");
        rotations += done.load(Ordering::SeqCst);
        let rotation_errors = errors.lock().unwrap().clone();
        if !rotation_errors.is_empty() {
            fail(format!("rotation failed: {rotation_errors:?}"), usize::MAX);
        }
        let mut proxied = match proxied {
            Ok(p) => p,
            Err(e) => fail(format!("failed through the proxy: {e}"), usize::MAX),
        };
        // After every rotation asked for has completed (old users deleted).
        match final_check(&mut conn).await {
            Ok(f) => proxied.push(f),
            Err(e) => fail(format!("after its rotations: {e}"), usize::MAX),
        }
        drop(conn);

        let reply_steps: Vec<usize> = seq
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Step::Rotate | Step::Kill))
            .map(|(i, _)| i)
            .chain([seq.steps.len()])
            .collect();
        assert_eq!(direct.len(), proxied.len());
        for (k, (d, p)) in direct.iter().zip(&proxied).enumerate() {
            if d != p {
                let at = d
                    .iter()
                    .zip(p.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(d.len().min(p.len()));
                let from = at.saturating_sub(40);
                fail(
                    format!(
                        "differs at byte {at} of step {} ({} vs {} bytes):\n  direct:  {}\n  proxied: {}",
                        reply_steps[k],
                        d.len(),
                        p.len(),
                        show(&d[from..], 400),
                        show(&p[from..], 400)
                    ),
                    reply_steps[k],
                );
            }
            steps_compared += 1;
            bytes_compared += d.len();
        }
        reset_for(pool, &mut admin).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut background_rounds = 0;
    for (i, b) in background.into_iter().enumerate() {
        match b.await.expect("background client") {
            Ok(r) => background_rounds += r,
            Err(e) => panic!("background client {i}: {e}\n{}", proxy.logs()),
        }
    }
    if pool.is_some() {
        let m = scrape_metrics(killer.metrics).await;
        eprintln!(
            "differential (shared): {background_rounds} background pipelines; pins: {}",
            m.lines()
                .filter(|l| l.starts_with("entra_redis_proxy_pins_total"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(background_rounds > 0, "the background clients did nothing");
        assert!(
            m.contains("entra_redis_proxy_pins_total"),
            "no session was pinned:\n{m}"
        );
    }
    eprintln!(
        "differential: {sequences} sequences, {steps_compared} reply streams ({bytes_compared} \
         bytes) identical, {rotations} token rotations, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        rotations > 0 || sequences - first < 10,
        "no rotation happened"
    );
}

// ---------------------------------------------------------------------------------------------
// Minimal reproductions of divergences the random sequences found
// ---------------------------------------------------------------------------------------------

/// Sends `bytes` directly and through the proxy (fresh connections, flushed server) and
/// requires identical reply streams of `frames` frames; returns the direct one.
async fn same_replies(bytes: &[u8], frames: usize) -> Vec<u8> {
    let server = RedisServer::start().await;
    let rotator = Rotator::new(&server).await;
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut admin = server.admin().await;

    let mut direct = direct_conn(&server, &rotator.current).await;
    let d = direct.exchange(bytes, frames).await.expect("direct run");
    let d_final = final_check(&mut direct).await.expect("direct final");
    drop(direct);
    reset_server(&mut admin).await;

    let mut proxied = proxy_conn(&proxy).await;
    let p = proxied.exchange(bytes, frames).await;
    let p_final = match &p {
        Ok(_) => final_check(&mut proxied).await,
        Err(e) => Err(e.clone()),
    };
    assert_eq!(
        (show(&normalise(&d), 2000), show(&d_final, 200)),
        (
            show(&normalise(&p.unwrap_or_else(|e| e.into_bytes())), 2000),
            show(&p_final.unwrap_or_else(|e| e.into_bytes()), 200)
        ),
        "direct (left) and proxied (right) replies to {} differ",
        show(bytes, 500)
    );
    d
}

/// A RESP2 subscriber's UNSUBSCRIBE/PUNSUBSCRIBE with nothing of that kind subscribed gets a
/// RESP2 null (`$-1`), never the RESP3 null `_` the proxy's upstream connection produces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscriber_unsubscribe_from_nothing_gets_a_resp2_null() {
    let bytes = [
        encode_command(&["SUBSCRIBE", "a"]),
        encode_command(&["PUNSUBSCRIBE"]),
        encode_command(&["UNSUBSCRIBE", "a"]),
        encode_command(&["UNSUBSCRIBE"]),
    ]
    .concat();
    let d = same_replies(&bytes, 4).await;
    assert!(d.ends_with(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"));
}

/// A RESP2 subscriber's refused commands get redis-server's own errors: unknown commands and
/// wrong arity are reported as such (they are checked before the subscribed context), and a
/// subcommand is named `container|sub`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscriber_refusals_match_redis_server() {
    let bytes = [
        encode_command(&["SUBSCRIBE", "a"]),
        encode_command(&["OBJECT", "ENCODING", "k"]),
        encode_command(&["NOSUCHCOMMAND", "x"]),
        encode_command(&["GET"]),
        encode_command(&["CLIENT", "GETNAME"]),
    ]
    .concat();
    same_replies(&bytes, 5).await;
}

/// `HELLO 3` sent under `CLIENT REPLY OFF` has no reply, yet it switches the protocol: a later
/// subscription's confirmations are RESP3 pushes, which the client must get untranslated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_under_client_reply_off_still_switches_the_protocol() {
    let bytes = [
        encode_command(&["CLIENT", "REPLY", "OFF"]),
        encode_command(&["HELLO", "3"]),
        encode_command(&["CLIENT", "REPLY", "ON"]),
        encode_command(&["SUBSCRIBE", "a"]),
        encode_command(&["UNSUBSCRIBE", "a"]),
    ]
    .concat();
    let d = same_replies(&bytes, 3).await;
    assert!(d.starts_with(b"+OK\r\n>3\r\n"));
}

/// redis-server's resetClient runs for an empty command (`*0`, an empty inline line) too, so
/// an empty command right after `CLIENT REPLY SKIP` consumes the skip: the next command is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_command_consumes_client_reply_skip() {
    let mut bytes = encode_command(&["CLIENT", "REPLY", "SKIP"]);
    bytes.extend_from_slice(b"*0\r\n");
    bytes.extend_from_slice(&encode_command(&["SET", "k", "v"]));
    bytes.extend_from_slice(&encode_command(&["CLIENT", "REPLY", "SKIP"]));
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&encode_command(&["GET", "k"]));
    let d = same_replies(&bytes, 2).await;
    assert_eq!(d, b"+OK\r\n$1\r\nv\r\n");
}

/// A command the proxy answers itself (an unsupported `HELLO 4`, a local `AUTH`) right after
/// `CLIENT REPLY SKIP` uses up the skip, as on redis-server: the next forwarded command is
/// answered (found by the differential test: its reply went missing and every later reply
/// went to the command before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locally_answered_command_consumes_client_reply_skip() {
    let bytes = [
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["HELLO", "4"]),
        encode_command(&["SET", "k", "v"]),
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["AUTH", "someone", "secret"]),
        encode_command(&["GET", "k"]),
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["AUTH"]),
        encode_command(&["PING", "x"]),
    ]
    .concat();
    let d = same_replies(&bytes, 3).await;
    assert_eq!(d, b"+OK\r\n$1\r\nv\r\n$1\r\nx\r\n");
}

/// SUBSCRIBE and UNSUBSCRIBE are confirmed whatever the reply mode, yet they use up a
/// `CLIENT REPLY SKIP` (the command after them is answered); a RESP2 client's SUBSCRIBE makes
/// the proxy switch its upstream to RESP3 first, and that HELLO's reply must not be the one
/// the server skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_after_client_reply_skip_uses_up_the_skip() {
    let bytes = [
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["UNSUBSCRIBE"]),
        encode_command(&["PING", "a"]),
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["SUBSCRIBE"]),
        encode_command(&["PING", "b"]),
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
        encode_command(&["SUBSCRIBE", "ch", "other"]),
        encode_command(&["PING", "c"]),
        encode_command(&["UNSUBSCRIBE"]),
        encode_command(&["PING", "d"]),
        // A SUBSCRIBE that fails on its arity subscribes nothing: the client is no subscriber.
        encode_command(&["SUBSCRIBE"]),
        encode_command(&["GET", "k"]),
    ]
    .concat();
    let d = same_replies(&bytes, 11).await;
    assert!(d.starts_with(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n$1\r\na\r\n$1\r\nb\r\n"));
    assert!(d.ends_with(
        b"$1\r\nd\r\n-ERR wrong number of arguments for 'subscribe' command\r\n$-1\r\n"
    ));
}

/// A client whose last command was `CLIENT REPLY SKIP` and that then waits is re-authenticated
/// like any idle client (under `CLIENT REPLY OFF` the SKIP does nothing at all); otherwise its
/// connection dies when the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_after_client_reply_skip_is_reauthenticated() {
    let server = RedisServer::start().await;
    let mut rotator = Rotator::new(&server).await;
    rotator.reauth_timeout = Duration::from_secs(5);
    let proxy = Proxy::start(&proxy_args(&server, &rotator.file.path), "info").await;
    let mut failures = Vec::new();
    let mut admin = server.admin().await;

    // Under CLIENT REPLY OFF: SKIP is a no-op in redis-server.
    let mut off = proxy_conn(&proxy).await;
    let bytes = [
        encode_command(&["CLIENT", "REPLY", "OFF"]),
        encode_command(&["CLIENT", "REPLY", "SKIP"]),
    ]
    .concat();
    off.exchange(&bytes, 0).await.expect("send");
    wait_last_command(&mut admin, "client|reply").await;
    let rotated = rotator.rotate(1).await;
    let after = off
        .exchange(&encode_command(&["CLIENT", "REPLY", "ON"]), 1)
        .await;
    if rotated.is_err() || after.as_deref() != Ok(b"+OK\r\n".as_slice()) {
        failures.push(format!(
            "CLIENT REPLY OFF + SKIP, then idle: rotation {rotated:?}, then CLIENT REPLY ON got {:?}",
            after.map(|a| show(&a, 100))
        ));
    }
    // Replies are on again and the client is idle: nothing may hold re-AUTH back now.
    if let Err(e) = rotator.rotate(1).await {
        failures.push(format!(
            "CLIENT REPLY OFF + SKIP, idle, CLIENT REPLY ON, idle: rotation {e}"
        ));
    }
    drop(off);

    // With replies on: SKIP, then idle.
    let mut skip = proxy_conn(&proxy).await;
    skip.exchange(&encode_command(&["CLIENT", "REPLY", "SKIP"]), 0)
        .await
        .expect("send");
    wait_last_command(&mut admin, "client|reply").await;
    let rotated = rotator.rotate(1).await;
    let after = skip
        .exchange(
            &[
                encode_command(&["PING", "skipped"]),
                encode_command(&["PING"]),
            ]
            .concat(),
            1,
        )
        .await;
    if rotated.is_err() || after.as_deref() != Ok(b"+PONG\r\n".as_slice()) {
        failures.push(format!(
            "CLIENT REPLY SKIP, then idle: rotation {rotated:?}, then PING PING got {:?}",
            after.map(|a| show(&a, 100))
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Waits until the server saw `cmd` as the last command of the (single) test connection.
async fn wait_last_command(admin: &mut Admin, cmd: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = admin.client_list().await;
        if clients.len() == 1 && clients[0].cmd == cmd {
            return;
        }
        assert!(Instant::now() < deadline, "last commands: {clients:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
