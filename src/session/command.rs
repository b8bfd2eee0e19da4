//! The command table: which client commands the session must understand, and how each
//! changes the connection's state. Everything not listed here is [`Kind::Plain`]: forwarded
//! as it is, its reply counted as one frame.

use super::stateless::is_stateless;
pub use super::topology::{topology_command, Topology};
use crate::resp;

/// The commands the session must understand; everything else is [`Kind::Plain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Plain,
    Multi,
    Exec,
    Discard,
    Subscribe(SubKind),
    Unsubscribe(SubKind),
    /// HELLO with the protocol version it asks for, if any.
    Hello(Option<u8>),
    Reset,
    ClientReply(ReplyMode),
    Monitor,
    /// PING from a RESP2 subscriber served through RESP3: its reply is translated.
    PingSubscribed,
    /// A command that may block (BLPOP, XREAD BLOCK, WAIT...): forwarded as an ordinary
    /// command unless its wait must be cut into slices (see [`Blocking`]).
    MaybeBlocking,
    /// SELECT with its database, remembered to restore it on a new connection.
    Select(Option<u32>),
    /// WATCH: the session cannot move to a new connection until EXEC/DISCARD/UNWATCH.
    Watch,
    /// UNWATCH.
    Unwatch,
    /// CLIENT SETNAME, remembered to restore it on a new connection.
    SetName,
    /// QUIT: the cache closes the connection after its reply, and so does the session.
    Quit,
    /// An empty command (`*0`, an empty inline line): no reply.
    Empty,
    /// CLUSTER SLOTS / SHARDS / NODES / REPLICAS: in cluster mode, node addresses in the
    /// reply are rewritten to local listeners.
    Topology(Topology),
    /// `CLIENT NO-EVICT` / `CLIENT NO-TOUCH` with ON or OFF: remembered and restored.
    ClientFlag(ClientFlag, bool),
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`: remembered and restored.
    SetInfo,
    /// READONLY (true) or READWRITE (cluster replicas): remembered and restored.
    ReadOnly(bool),
    /// `CLIENT KILL ...`: may close this very connection, which must then close the client
    /// rather than be replaced.
    ClientKill,
    /// A command that creates connection state the proxy does not restore (CLIENT TRACKING,
    /// CLIENT CACHING, or any command outside the allow-list in `stateless.rs`): the session
    /// can no longer move to a new upstream connection.
    Unrestorable,
    /// CLIENT TRACKING ON/OFF: whether invalidation pushes a RESP2 subscriber's RESP3
    /// upstream receives are the client's to see.
    Tracking(Tracking),
    /// SYNC or PSYNC (outside MULTI): unless refused, the connection becomes a replication
    /// stream, which the session pipes raw for the rest of its life.
    Sync,
}

/// A per-connection client flag that the proxy restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientFlag {
    /// `CLIENT NO-EVICT`.
    NoEvict,
    /// `CLIENT NO-TOUCH`.
    NoTouch,
}

impl Kind {
    /// True if the command changes how later replies must be counted.
    pub(super) fn changes_state(self) -> bool {
        !matches!(
            self,
            Kind::Plain
                | Kind::Empty
                | Kind::PingSubscribed
                | Kind::MaybeBlocking
                | Kind::Select(_)
                | Kind::Watch
                | Kind::Unwatch
                | Kind::SetName
                | Kind::Quit
                | Kind::Topology(_)
                | Kind::ClientFlag(..)
                | Kind::SetInfo
                | Kind::ReadOnly(_)
                | Kind::ClientKill
                | Kind::Unrestorable
                | Kind::Tracking(_)
        )
    }
}

impl Kind {
    /// True if the command changes the connection's state (beyond the reply counting that
    /// [`Kind::changes_state`] is about): what a replacement connection would have to restore.
    pub(super) fn changes_connection(self) -> bool {
        matches!(
            self,
            Kind::Select(_)
                | Kind::Hello(_)
                | Kind::SetName
                | Kind::SetInfo
                | Kind::ClientFlag(..)
                | Kind::ReadOnly(_)
                | Kind::ClientReply(_)
                | Kind::Unrestorable
                | Kind::Tracking(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubKind {
    Channel,
    Pattern,
    Shard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyMode {
    On,
    Off,
    Skip,
}

/// What `CLIENT TRACKING` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tracking {
    Off,
    /// On, without REDIRECT: redis-server sends a RESP2 client no invalidation at all.
    On,
    /// On, invalidations redirected to another connection.
    OnRedirect,
}

pub(super) enum Classified {
    Auth,
    Kind(Kind),
}

/// The names `quick_kind` answers the slow way (they are modelled in `full_kind`), by length.
fn special_names(len: usize) -> &'static [&'static [u8]] {
    match len {
        4 => &[b"AUTH", b"EXEC", b"WAIT", b"QUIT", b"SYNC"],
        5 => &[
            b"MULTI", b"HELLO", b"RESET", b"BLPOP", b"BRPOP", b"XREAD", b"WATCH", b"PSYNC",
        ],
        6 => &[b"CLIENT", b"BLMOVE", b"BLMPOP", b"BZMPOP", b"SELECT"],
        7 => &[b"DISCARD", b"MONITOR", b"UNWATCH", b"CLUSTER"],
        8 => &[b"BZPOPMIN", b"BZPOPMAX"],
        9 => &[b"SUBSCRIBE"],
        10 => &[b"PSUBSCRIBE", b"SSUBSCRIBE", b"BRPOPLPUSH", b"XREADGROUP"],
        11 => &[b"UNSUBSCRIBE"],
        12 => &[b"PUNSUBSCRIBE", b"SUNSUBSCRIBE"],
        _ => &[],
    }
}

/// Fast path: `Some(Kind::Plain)` for a command name that needs no further look: one that
/// the session need not understand and that leaves no connection state (see
/// `stateless.rs`). Runs for every command, so the common names are found as one packed
/// integer in a small hash set: callgrind counted about 365 instructions per command for the
/// byte-wise binary search below, about 170 for a binary search over the packed names, and
/// about 70 for the hash set, packing included. The byte-wise path still answers the rest
/// (long names, module commands, the modelled ones).
#[inline]
pub(super) fn quick_kind(name: &[u8]) -> Option<Kind> {
    if let Some(packed) = pack_upper(name) {
        if plain_names().contains(packed) {
            return Some(Kind::Plain);
        }
    }
    quick_kind_slow(name)
}

fn quick_kind_slow(name: &[u8]) -> Option<Kind> {
    let special = special_names(name.len());
    if special.iter().any(|s| s.eq_ignore_ascii_case(name)) || !is_stateless(name) {
        None
    } else {
        Some(Kind::Plain)
    }
}

/// A name of 1 to 15 bytes as one integer: its length, then its bytes upper-cased, big-endian
/// (the length first, so that no two names, NUL bytes included, pack alike; never 0). `None`
/// for other lengths.
#[inline]
fn pack_upper(name: &[u8]) -> Option<u128> {
    if name.is_empty() || name.len() > 15 {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[0] = name.len() as u8;
    bytes[1..=name.len()].copy_from_slice(name);
    // (The length, 1 to 15, is no lower-case letter: upper-casing leaves it.)
    Some(upper_bytes(u128::from_be_bytes(bytes)))
}

/// `to_ascii_uppercase` of each of the 16 bytes at once (a per-byte loop is about 40
/// instructions a command): a byte's high bit is set where its low seven bits are at least
/// `a` and at most `z` and the byte itself is ASCII; that bit, moved to 0x20, is cleared.
#[inline]
fn upper_bytes(x: u128) -> u128 {
    const ONES: u128 = u128::from_ne_bytes([1; 16]);
    const HIGH: u128 = ONES * 0x80;
    let low7 = x & !HIGH;
    // No carry leaves a byte: 0x7f + 0x1f and 0x7f + 0x05 stay below 0x100.
    let from_a = low7 + ONES * (0x80 - b'a' as u128);
    let past_z = low7 + ONES * (0x80 - b'z' as u128 - 1);
    let lower = from_a & !past_z & !x & HIGH;
    x ^ (lower >> 2)
}

/// A set of packed names: open addressing with linear probing in a table at most a quarter
/// full, so a look-up is one hash and, nearly always, one comparison. 0 marks a free slot
/// (no packed name is 0).
struct PackedSet {
    slots: Vec<u128>,
    mask: usize,
}

impl PackedSet {
    fn new(names: impl Iterator<Item = u128>) -> PackedSet {
        let names: Vec<u128> = names.collect();
        let len = (names.len() * 4).next_power_of_two().max(16);
        let mut set = PackedSet {
            slots: vec![0; len],
            mask: len - 1,
        };
        for n in names {
            let mut i = Self::slot(n) & set.mask;
            while set.slots[i] != 0 && set.slots[i] != n {
                i = (i + 1) & set.mask;
            }
            set.slots[i] = n;
        }
        set
    }

    /// Mixes both halves, then a multiplicative hash takes its high bits.
    #[inline]
    fn slot(n: u128) -> usize {
        let x = (n as u64) ^ ((n >> 64) as u64).rotate_left(29);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
    }

    #[inline]
    fn contains(&self, n: u128) -> bool {
        let mut i = Self::slot(n) & self.mask;
        loop {
            match self.slots[i] {
                s if s == n => return true,
                0 => return false,
                _ => i = (i + 1) & self.mask,
            }
        }
    }
}

/// The packed names that `quick_kind_slow` answers `Kind::Plain` for, built once from the
/// allow-list.
fn plain_names() -> &'static PackedSet {
    static NAMES: std::sync::LazyLock<PackedSet> = std::sync::LazyLock::new(|| {
        PackedSet::new(
            super::stateless::names()
                .filter(|n| quick_kind_slow(n.as_bytes()) == Some(Kind::Plain))
                .filter_map(|n| pack_upper(n.as_bytes())),
        )
    });
    &NAMES
}

pub(super) fn full_kind(name: &[u8], args: &[&[u8]]) -> Classified {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    let k = if is("AUTH") {
        return Classified::Auth;
    } else if is("MULTI") {
        Kind::Multi
    } else if is("EXEC") {
        Kind::Exec
    } else if is("DISCARD") {
        Kind::Discard
    } else if is("RESET") {
        Kind::Reset
    } else if is("MONITOR") {
        Kind::Monitor
    } else if is("HELLO") {
        let v = args
            .get(1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|v| *v == 2 || *v == 3);
        Kind::Hello(v)
    } else if is("SUBSCRIBE") {
        Kind::Subscribe(SubKind::Channel)
    } else if is("PSUBSCRIBE") {
        Kind::Subscribe(SubKind::Pattern)
    } else if is("SSUBSCRIBE") {
        Kind::Subscribe(SubKind::Shard)
    } else if is("UNSUBSCRIBE") {
        Kind::Unsubscribe(SubKind::Channel)
    } else if is("PUNSUBSCRIBE") {
        Kind::Unsubscribe(SubKind::Pattern)
    } else if is("SUNSUBSCRIBE") {
        Kind::Unsubscribe(SubKind::Shard)
    } else if BLOCKING.iter().any(|b| is(b)) {
        Kind::MaybeBlocking
    } else if is("SELECT") {
        Kind::Select(
            args.get(1)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok()),
        )
    } else if is("QUIT") {
        Kind::Quit
    } else if is("WATCH") {
        Kind::Watch
    } else if is("UNWATCH") {
        Kind::Unwatch
    } else if is("CLIENT") {
        client_kind(args)
    } else if is("READONLY") {
        Kind::ReadOnly(true)
    } else if is("READWRITE") {
        Kind::ReadOnly(false)
    } else if is("CLUSTER") {
        topology_command(args).map_or(Kind::Plain, Kind::Topology)
    } else if is("SYNC") || is("PSYNC") {
        Kind::Sync
    } else if is_stateless(name) {
        Kind::Plain
    } else {
        Kind::Unrestorable
    };
    Classified::Kind(k)
}

/// `CLIENT <subcommand> ...`: what each subcommand does to the connection.
fn client_kind(args: &[&[u8]]) -> Kind {
    let Some(sub) = args.get(1) else {
        // redis-server answers with an arity error.
        return Kind::Plain;
    };
    let sub_is = |s: &str| sub.eq_ignore_ascii_case(s.as_bytes());
    let on_off = |a: Option<&&[u8]>| match a {
        Some(v) if v.eq_ignore_ascii_case(b"ON") => Some(true),
        Some(v) if v.eq_ignore_ascii_case(b"OFF") => Some(false),
        _ => None,
    };
    if sub_is("SETNAME") && args.len() == 3 {
        Kind::SetName
    } else if sub_is("REPLY") && args.len() == 3 {
        if args[2].eq_ignore_ascii_case(b"ON") {
            Kind::ClientReply(ReplyMode::On)
        } else if args[2].eq_ignore_ascii_case(b"OFF") {
            Kind::ClientReply(ReplyMode::Off)
        } else if args[2].eq_ignore_ascii_case(b"SKIP") {
            Kind::ClientReply(ReplyMode::Skip)
        } else {
            Kind::Plain
        }
    } else if (sub_is("NO-EVICT") || sub_is("NO-TOUCH")) && args.len() == 3 {
        let flag = if sub_is("NO-EVICT") {
            ClientFlag::NoEvict
        } else {
            ClientFlag::NoTouch
        };
        // A bad value is refused by the server and changes nothing.
        on_off(args.get(2)).map_or(Kind::Plain, |on| Kind::ClientFlag(flag, on))
    } else if sub_is("TRACKING") && args.len() >= 3 {
        // State the proxy does not restore: the session is closed on an upstream loss.
        if args[2].eq_ignore_ascii_case(b"OFF") {
            Kind::Tracking(Tracking::Off)
        } else if !args[2].eq_ignore_ascii_case(b"ON") {
            Kind::Plain
        } else if args[3..]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(b"REDIRECT"))
        {
            Kind::Tracking(Tracking::OnRedirect)
        } else {
            Kind::Tracking(Tracking::On)
        }
    } else if sub_is("SETINFO") {
        Kind::SetInfo
    } else if sub_is("KILL") {
        Kind::ClientKill
    } else if [
        "ID",
        "INFO",
        "LIST",
        "GETNAME",
        "TRACKINGINFO",
        "GETREDIR",
        "PAUSE",
        "UNPAUSE",
        "UNBLOCK",
        "HELP",
    ]
    .iter()
    .any(|s| sub_is(s))
    {
        Kind::Plain
    } else {
        // CACHING, and anything newer than this table.
        Kind::Unrestorable
    }
}

/// Commands that can block the connection.
pub(super) const BLOCKING: &[&str] = &[
    "BLPOP",
    "BRPOP",
    "BLMOVE",
    "BLMPOP",
    "BZMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BRPOPLPUSH",
    "XREAD",
    "XREADGROUP",
    "WAIT",
];

pub(super) fn in_multi_unsupported(k: Kind) -> bool {
    matches!(
        k,
        Kind::Hello(_)
            | Kind::Subscribe(_)
            | Kind::Unsubscribe(_)
            | Kind::ClientReply(_)
            | Kind::Monitor
    )
}

/// What redis-server makes of `HELLO [protover [AUTH user pass] [SETNAME name]]`, checked the
/// way redis-server 7.0 checks it: the version first, then the options from left to right,
/// each `AUTH` taking effect as it is read, and the first option it cannot read ending the
/// command with a syntax error.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HelloOptions<'a> {
    /// The password of each `AUTH` option read before any syntax error, in order.
    pub(super) passwords: Vec<&'a [u8]>,
    /// The index of the option redis-server stops at with a syntax error.
    pub(super) bad_option: Option<usize>,
    /// The command as the cache must get it: without its `AUTH` options, and without anything
    /// after the bad option (which redis-server never reads); `None` if that is the command
    /// as it came.
    pub(super) forward: Option<(usize, Vec<u8>)>,
}

/// Reads a HELLO command (`args[0]` is `HELLO`); `Err` is the reply redis-server gives a bad
/// protocol version, before it reads any option.
pub(super) fn parse_hello<'a>(args: &[&'a [u8]]) -> Result<HelloOptions<'a>, &'static [u8]> {
    if let Some(v) = args.get(1) {
        match parse_redis_int(v) {
            None => return Err(b"-ERR Protocol version is not an integer or out of range\r\n"),
            Some(2 | 3) => {}
            Some(_) => return Err(b"-NOPROTO unsupported protocol version\r\n"),
        }
    }
    let mut passwords = Vec::new();
    let mut bad_option = None;
    let mut keep: Vec<&[u8]> = args.iter().take(2).copied().collect();
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if args[j].eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            passwords.push(args[j + 2]);
            j += 3;
        } else if args[j].eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            keep.extend_from_slice(&args[j..j + 2]);
            j += 2;
        } else {
            keep.push(args[j]);
            bad_option = Some(j);
            break;
        }
    }
    let forward = (keep.len() != args.len()).then(|| (keep.len(), resp::encode_command(&keep)));
    Ok(HelloOptions {
        passwords,
        bad_option,
        forward,
    })
}

/// redis-server's reply to a HELLO option it cannot read (`addReplyErrorFormat`: the option
/// as a C string, CR and LF turned into spaces).
pub(super) fn hello_syntax_error(option: &[u8]) -> Vec<u8> {
    let end = memchr::memchr(0, option).unwrap_or(option.len());
    let mut out = b"-ERR Syntax error in HELLO option '".to_vec();
    out.extend(option[..end].iter().map(|&b| match b {
        b'\r' | b'\n' => b' ',
        b => b,
    }));
    out.extend_from_slice(b"'\r\n");
    out
}

/// An integer as redis-server's `string2ll` reads it: no sign but `-`, no leading zero, no
/// spaces, within `i64`.
fn parse_redis_int(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    let canonical = match digits {
        [b'0'] => v.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// redis-server's reply to an `AUTH` with a wrong number of arguments (`nargs` counts the
/// name), and whether it is given when the command is queued (an arity error: the transaction
/// is then aborted at EXEC) rather than when it runs (`AUTH a b c`: a syntax error).
pub(super) fn auth_arity_error(nargs: usize) -> Option<(&'static [u8], bool)> {
    match nargs {
        0 | 1 => Some((
            b"-ERR wrong number of arguments for 'auth' command\r\n",
            true,
        )),
        2 | 3 => None,
        _ => Some((b"-ERR syntax error\r\n", false)),
    }
}

/// The arguments of a complete command frame, owned (rare paths only).
pub(super) fn frame_args(frame: &[u8], inline: bool) -> Vec<Vec<u8>> {
    if inline {
        resp::inline_args(frame).unwrap_or_default()
    } else {
        resp::multibulk_args(frame)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }
}

pub(super) fn owned_args(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packed_set_finds_what_it_holds_and_nothing_else() {
        let held: Vec<u128> = (1..=300u128).map(|i| (5 << 120) | (i * 7919)).collect();
        let set = PackedSet::new(held.iter().copied());
        assert!(held.iter().all(|&n| set.contains(n)));
        assert!((301..=3000u128).all(|i| !set.contains((5 << 120) | (i * 7919))));
        assert!(!set.contains(pack_upper(b"GET").unwrap()));
        // The allow-list's own table: no name far from its slot.
        let names = plain_names();
        let longest = names
            .slots
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .map(|(i, &n)| i.wrapping_sub(PackedSet::slot(n) & names.mask) & names.mask)
            .max()
            .unwrap();
        assert!(longest <= 4, "a name is {longest} slots past its own");
    }

    #[test]
    fn names_pack_with_their_length_first_and_upper_cased() {
        assert_eq!(pack_upper(b""), None);
        assert_eq!(pack_upper(&[b'A'; 16]), None);
        assert_eq!(pack_upper(b"get"), Some(3 << 120 | (0x47_45_54 << 96)));
        assert_eq!(pack_upper(b"GET"), pack_upper(b"gEt"));
        assert_ne!(pack_upper(b"GET"), pack_upper(b"GET\0"));
        // Every byte value upper-cases as `to_ascii_uppercase` does, in every position.
        for b in 0..=255u8 {
            for at in 0..16 {
                let mut bytes = [b'q'; 16];
                bytes[at] = b;
                let mut want = bytes;
                want.make_ascii_uppercase();
                assert_eq!(
                    upper_bytes(u128::from_be_bytes(bytes)),
                    u128::from_be_bytes(want),
                    "byte {b:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn the_packed_fast_path_answers_as_the_byte_wise_one() {
        let mut names: Vec<String> = super::super::stateless::names().map(String::from).collect();
        for len in 0..=20 {
            names.extend(
                special_names(len)
                    .iter()
                    .map(|n| String::from_utf8_lossy(n).into()),
            );
        }
        names.extend(
            [
                "JSON.GET",
                "FT.SEARCH",
                "CLIENTS",
                "GETX",
                "G",
                "",
                "GEORADIUSBYMEMBER_RO",
            ]
            .map(String::from),
        );
        for n in &names {
            for form in [
                n.clone(),
                n.to_lowercase(),
                format!("\0{n}"),
                format!("{n}\0"),
            ] {
                assert_eq!(
                    quick_kind(form.as_bytes()),
                    quick_kind_slow(form.as_bytes()),
                    "{form:?}"
                );
            }
        }
        // The table holds only names the slow path lets through, and most of the allow-list.
        let held = plain_names().slots.iter().filter(|&&n| n != 0).count();
        assert!(held > 150, "{held}");
        assert_eq!(pack_upper(b"get"), pack_upper(b"GET"));
        assert_ne!(pack_upper(b"\0GET"), pack_upper(b"GET"));
    }

    #[test]
    fn quick_kind_lets_ordinary_commands_through() {
        for c in ["GET", "SET", "LPUSH", "LPOP", "PING", "GETRANGE", "HSET"] {
            assert_eq!(quick_kind(c.as_bytes()), Some(Kind::Plain), "{c}");
        }
        for c in [
            "auth",
            "Multi",
            "EXEC",
            "hello",
            "client",
            "subscribe",
            "SUNSUBSCRIBE",
            // Unknown: it may create connection state, so it is looked at.
            "CLIENTS",
        ] {
            assert_eq!(quick_kind(c.as_bytes()), None, "{c}");
        }
    }

    fn hello(args: &[&str]) -> Result<HelloOptions<'static>, &'static [u8]> {
        let args: Vec<&'static [u8]> = args
            .iter()
            .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        parse_hello(&args)
    }

    #[test]
    fn hello_auth_is_stripped() {
        let h = hello(&["HELLO", "3", "auth", "u", "p", "SETNAME", "x"]).unwrap();
        assert_eq!(h.passwords, vec![&b"p"[..]]);
        assert_eq!(h.bad_option, None);
        let (n, bytes) = h.forward.unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            bytes,
            resp::encode_command(&[&b"HELLO"[..], b"3", b"SETNAME", b"x"])
        );
        let h = hello(&["HELLO", "3"]).unwrap();
        assert!(h.forward.is_none() && h.passwords.is_empty());
    }

    #[test]
    fn hello_options_are_read_as_redis_server_reads_them() {
        // SETNAME's value may be "AUTH": then `u` is the bad option, and nothing authenticates.
        let h = hello(&["HELLO", "3", "SETNAME", "AUTH", "u", "p"]).unwrap();
        assert!(h.passwords.is_empty());
        assert_eq!(h.bad_option, Some(4));
        // AUTH takes effect before a later syntax error; what follows it is never read, so it
        // is not forwarded (a password there would otherwise reach the cache).
        let h = hello(&["HELLO", "2", "AUTH", "u", "p", "FOO", "AUTH", "v", "q"]).unwrap();
        assert_eq!(h.passwords, vec![&b"p"[..]]);
        assert_eq!(h.bad_option, Some(5));
        assert_eq!(
            h.forward.unwrap().1,
            resp::encode_command(&[&b"HELLO"[..], b"2", b"FOO"])
        );
        // AUTH without its password is the bad option; what follows it is not read.
        let h = hello(&["HELLO", "3", "AUTH", "u"]).unwrap();
        assert_eq!(h.bad_option, Some(2));
        assert_eq!(
            h.forward.unwrap().1,
            resp::encode_command(&[&b"HELLO"[..], b"3", b"AUTH"])
        );
        // The version is checked first.
        assert_eq!(
            hello(&["HELLO", "4", "AUTH", "u", "p"]).unwrap_err(),
            b"-NOPROTO unsupported protocol version\r\n"
        );
        for v in ["x", "03", "-0", "+3", " 3", ""] {
            assert_eq!(
                hello(&["HELLO", v]).unwrap_err(),
                b"-ERR Protocol version is not an integer or out of range\r\n",
                "{v:?}"
            );
        }
        assert_eq!(
            hello_syntax_error(b"a\r\nb\0c"),
            b"-ERR Syntax error in HELLO option 'a  b'\r\n"
        );
    }

    #[test]
    fn topology_commands() {
        let t = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            topology_command(&args)
        };
        assert_eq!(t(&["CLUSTER", "SLOTS"]), Some(Topology::Slots));
        assert_eq!(t(&["cluster", "shards"]), Some(Topology::Shards));
        assert_eq!(t(&["Cluster", "Nodes"]), Some(Topology::Nodes));
        assert_eq!(t(&["CLUSTER", "REPLICAS", "abc"]), Some(Topology::Replicas));
        assert_eq!(t(&["cluster", "slaves", "abc"]), Some(Topology::Replicas));
        assert_eq!(t(&["CLUSTER", "SLOTS", "x"]), None);
        assert_eq!(t(&["CLUSTER", "REPLICAS"]), None);
        assert_eq!(t(&["CLUSTER", "INFO"]), None);
        assert_eq!(t(&["CLUSTER"]), None);
        assert_eq!(t(&["GET", "SLOTS"]), None);
        assert_eq!(t(&[]), None);
    }
}
