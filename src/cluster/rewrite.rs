//! Rewrites the node addresses a Redis Cluster tells a client into the addresses of the proxy's
//! local listeners, so that a cluster-aware client works unchanged and never receives the
//! address of a cache node.
//!
//! Two kinds of replies carry node addresses:
//! - redirects: `-MOVED <slot> <host>:<port>` and `-ASK <slot> <host>:<port>` errors, at the top
//!   of a reply or nested in an aggregate (and, in RESP3, as blob errors `!<len>`); see
//!   [`may_redirect`] (the hot-path pre-check) and [`rewrite_redirects`];
//! - the replies to the topology commands CLUSTER SLOTS, SHARDS, NODES and REPLICAS (SLAVES);
//!   see [`topology_command`] and [`rewrite_topology`].
//!
//! Everything here is pure (no I/O) and total: any input, however malformed, gives a value or an
//! error, never a panic, and the work is linear in the size of the reply.
//!
//! Formats, as redis-server 7.0.15 sends them (checked on a real cluster, plaintext and TLS-only):
//! - Over a TLS connection every port a node reports (MOVED/ASK, SLOTS, NODES, REPLICAS) is its
//!   TLS port; over a plaintext connection it is the plaintext port. CLUSTER SHARDS reports both,
//!   as `port` (absent on a TLS-only node, `port 0`) and `tls-port`, whatever the connection.
//! - The preferred endpoint (`cluster-preferred-endpoint-type`) decides what MOVED/ASK, the first
//!   element of a SLOTS node and the SHARDS `endpoint` hold: the IP (default), the announced host
//!   name (`?` for a node without one), or nothing (`unknown-endpoint`: `-MOVED 1 :6379`, a null
//!   SLOTS endpoint, an empty SHARDS endpoint), which tells the client "the host you are
//!   connected to".
//! - SLOTS node metadata (4th element) is a flat array in RESP2 and a map in RESP3, with `ip`
//!   and/or `hostname` when they are not already the endpoint.
//! - NODES is a bulk string in RESP2 and a verbatim string (`=<len>\r\ntxt:`) in RESP3; REPLICAS
//!   is an array of bulk strings in both protocols.
//! - redis-server sends MOVED/ASK only as simple errors and never inside an EXEC reply (a slot
//!   that moves between MULTI and EXEC makes EXEC itself answer `-MOVED`); blob and nested
//!   redirects are handled anyway, for other servers and for safety.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::addr::{parse_port, split_redis_addr};
use crate::resp::value::{
    encode, parse, peel, peel_mut, push_blob, string_bytes, DecodeError, Reader, Value,
};
pub use crate::session::Topology;

/// The local listener that stands for a cluster node.
pub trait NodeMap {
    /// `endpoint` exactly as the cluster reported it (an IP or a host name) and its port.
    /// Returns the local address for it, or `None` when no local port can be given.
    ///
    /// Where a reply names a node in several ways (CLUSTER SLOTS metadata, SHARDS, NODES host
    /// names), each name is tried in turn until one gives an address. An endpoint the cluster
    /// left empty (`cluster-preferred-endpoint-type unknown-endpoint`) with no other name is
    /// asked as `""` with its port.
    fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr>;
}

impl<F> NodeMap for F
where
    F: Fn(&str, u16) -> Option<SocketAddr>,
{
    fn local_for(&self, endpoint: &str, port: u16) -> Option<SocketAddr> {
        self(endpoint, port)
    }
}

/// Why a reply could not be rewritten. The session answers its client with an error instead of
/// forwarding the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// The reply names a node that has no local listener. The message deliberately leaves the
    /// node's address out, so it can be sent to a client as is; the fields are for logs.
    #[error("no local listener for a cluster node")]
    NoLocalPort {
        /// The node's name as the cluster reported it (the first one tried).
        endpoint: String,
        /// The node's port as the cluster reported it.
        port: u16,
    },
    /// The reply is not a well-formed RESP frame of the expected shape.
    #[error("malformed cluster reply: {0}")]
    Malformed(&'static str),
}

type Result<T> = std::result::Result<T, RewriteError>;

impl From<DecodeError> for RewriteError {
    fn from(e: DecodeError) -> Self {
        RewriteError::Malformed(e.0)
    }
}

fn malformed<T>(what: &'static str) -> Result<T> {
    Err(RewriteError::Malformed(what))
}

static MOVED_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"MOVED "));
static ASK_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"ASK "));

fn is_redirect_text(text: &[u8]) -> bool {
    text.starts_with(b"MOVED ") || text.starts_with(b"ASK ")
}

/// Cheap pre-check for every reply frame of a cluster session: `false` means the frame certainly
/// holds no MOVED/ASK redirect, so [`rewrite_redirects`] need not run. A simple error costs a
/// prefix comparison, a blob error a search for its header's end, an aggregate a substring
/// search (which may say `true` for a bulk string that merely contains the text); any other
/// frame is `false` at once.
pub fn may_redirect(frame: &[u8]) -> bool {
    match frame.first() {
        Some(b'-') => is_redirect_text(&frame[1..]),
        Some(b'!') => match memchr::memchr(b'\n', frame) {
            Some(nl) => is_redirect_text(&frame[nl + 1..]),
            // Not a complete frame: let the rewrite decide.
            None => true,
        },
        Some(b'*' | b'~' | b'%' | b'|' | b'>') => {
            MOVED_FINDER.find(frame).is_some() || ASK_FINDER.find(frame).is_some()
        }
        _ => false,
    }
}

/// Rewrites every MOVED/ASK error at any depth of `frame`, one complete RESP2/RESP3 frame:
/// `-MOVED 3999 10.0.0.5:15001` becomes `-MOVED 3999 127.0.0.1:7002`, a blob error
/// `!<len>\r\nMOVED ...` gets its length recomputed, and errors nested in arrays, maps, sets,
/// attributes and pushes (an EXEC reply) are rewritten in place. Bulk and simple strings that
/// merely contain the text are never touched. `Ok(None)` when nothing needed rewriting.
///
/// A redirect to `?` (a node whose preferred endpoint is unknown) holds no address and is kept;
/// one to an empty host (`-MOVED 1 :6379`, "the host you are connected to") is rewritten to a
/// full local address. An IPv6 local address is written without brackets, as redis-server
/// writes its own (clients split at the last colon).
pub fn rewrite_redirects(frame: &[u8], map: &dyn NodeMap) -> Result<Option<Vec<u8>>> {
    let mut r = Reader::new(frame);
    let mut pending: u64 = 1;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    while pending > 0 {
        pending -= 1;
        let start = r.pos;
        let kind = r.byte()?;
        match kind {
            b'-' => {
                let text = r.line()?;
                if let Some(new) = rewrite_redirect_text(text, map)? {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(frame.len() + 32));
                    o.extend_from_slice(&frame[copied..start]);
                    o.push(b'-');
                    o.extend_from_slice(&new);
                    o.extend_from_slice(b"\r\n");
                    copied = r.pos;
                }
            }
            b'+' | b':' | b'_' | b',' | b'#' | b'(' => {
                r.line()?;
            }
            b'$' | b'!' | b'=' => {
                let n = r.int()?;
                if n == -1 && kind == b'$' {
                    continue;
                }
                let data = r.blob(n)?;
                if kind == b'!' {
                    if let Some(new) = rewrite_redirect_text(data, map)? {
                        let o = out.get_or_insert_with(|| Vec::with_capacity(frame.len() + 32));
                        o.extend_from_slice(&frame[copied..start]);
                        push_blob(o, b'!', &new);
                        copied = r.pos;
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = r.int()?;
                if n == -1 && kind == b'*' {
                    continue;
                }
                let n = u64::try_from(n).or_else(|_| malformed("negative aggregate length"))?;
                let children = match kind {
                    b'%' => n.checked_mul(2),
                    // An attribute is followed by the value it annotates.
                    b'|' => n.checked_mul(2).and_then(|c| c.checked_add(1)),
                    _ => Some(n),
                };
                // Every value takes at least 3 bytes: more children than that cannot fit.
                let room = (r.remaining() / 3) as u64;
                match children.and_then(|c| pending.checked_add(c)) {
                    Some(p) if p <= room => pending = p,
                    _ => return malformed("truncated frame"),
                }
            }
            _ => return malformed("unknown RESP type byte"),
        }
    }
    if r.pos != frame.len() {
        return malformed("bytes after the frame");
    }
    Ok(out.map(|mut o| {
        o.extend_from_slice(&frame[copied..]);
        o
    }))
}

/// Rewrites the text of one error if it is a redirect (`MOVED <slot> <host>:<port>` or
/// `ASK ...`); `None` when it is another error, or a redirect with no address (`?`).
fn rewrite_redirect_text(text: &[u8], map: &dyn NodeMap) -> Result<Option<Vec<u8>>> {
    let prefix_len = if text.starts_with(b"MOVED ") {
        6
    } else if text.starts_with(b"ASK ") {
        4
    } else {
        return Ok(None);
    };
    let rest = &text[prefix_len..];
    let Some(sp) = memchr::memchr(b' ', rest) else {
        return malformed("redirect without an address");
    };
    let (slot, addr) = (&rest[..sp], &rest[sp + 1..]);
    if slot.is_empty() || !slot.iter().all(u8::is_ascii_digit) {
        return malformed("redirect with a bad slot");
    }
    let (host, port) =
        split_redis_addr(addr).ok_or(RewriteError::Malformed("redirect with a bad address"))?;
    if host == "?" {
        return Ok(None);
    }
    let local = resolve(map, &[host], &[port])?;
    let mut out = Vec::with_capacity(text.len() + 8);
    out.extend_from_slice(&text[..prefix_len]);
    out.extend_from_slice(slot);
    out.push(b' ');
    push_addr(&mut out, local);
    Ok(Some(out))
}

/// Asks `map` for each name with each port, in order; the first answer wins. `names` must not
/// be empty.
fn resolve(map: &dyn NodeMap, names: &[&str], ports: &[u16]) -> Result<SocketAddr> {
    for name in names {
        for &port in ports {
            if let Some(addr) = map.local_for(name, port) {
                return Ok(addr);
            }
        }
    }
    Err(RewriteError::NoLocalPort {
        endpoint: names.first().copied().unwrap_or_default().to_string(),
        port: ports.first().copied().unwrap_or_default(),
    })
}

/// A name that designates a host: not empty, not `?` (redis-server's "unknown").
fn is_name(s: &str) -> bool {
    !s.is_empty() && s != "?"
}

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    out.extend_from_slice(addr.ip().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(addr.port().to_string().as_bytes());
}

/// Rewrites the reply to a topology command, RESP2 or RESP3; the output is a frame of the same
/// protocol with every length recomputed. An error reply is returned unchanged.
///
/// What each node becomes (its local address is `map.local_for(...)`):
/// - **SLOTS**: endpoint → local IP, port → local port; metadata `ip` → local IP and `hostname`
///   dropped. A host name cannot be made to resolve to the local listener, and a client that
///   prefers it (or uses it for TLS verification) would either leave the proxy or fail; an IP
///   in a field named `hostname` would mislead. An endpoint `?` (unknown) is kept as `?`, with
///   the port and `ip` rewritten when another name of the node resolves. A null endpoint
///   (`unknown-endpoint`) becomes the explicit local IP: the client's current host need not be
///   the listener of that node.
/// - **SHARDS**: `port` → local port; `tls-port` removed, as the local listener is plaintext and
///   a client seeing it may try TLS (a TLS-only node has only `tls-port`, which then becomes
///   `port`); `ip` and `endpoint` → local IP (an endpoint `?` is kept); `hostname` dropped. The
///   node is looked up by its TLS port first (the proxy reaches the cache over TLS, where every
///   other reply reports TLS ports), then its plaintext port.
/// - **NODES** and **REPLICAS**: the address field `ip:port@cport[,hostname]` becomes
///   `localip:localport@0`: the cluster bus port means nothing to a client and nothing
///   listens for it locally (0 is what redis-server itself shows for an unknown bus port); the
///   host name is dropped as above. A node without an address (`:0@0`) is kept; a node in
///   `handshake` or `noaddr` state whose address has no local listener becomes `:0@0` instead
///   of an error, since no client can use it anyway.
pub fn rewrite_topology(which: Topology, frame: &[u8], map: &dyn NodeMap) -> Result<Vec<u8>> {
    let mut r = Reader::new(frame);
    let mut value = parse(&mut r, 0)?;
    if r.pos != frame.len() {
        return malformed("bytes after the frame");
    }
    if matches!(peel(&value), Value::Line(b'-', _) | Value::Blob(b'!', _)) {
        return Ok(frame.to_vec());
    }
    let v = peel_mut(&mut value);
    match which {
        Topology::Slots => rewrite_slots(v, map)?,
        Topology::Shards => rewrite_shards(v, map)?,
        Topology::Nodes => match v {
            Value::Blob(kind @ (b'$' | b'='), data) => {
                *data = Cow::Owned(rewrite_nodes_blob(*kind, data, map)?);
            }
            _ => return malformed("CLUSTER NODES: not a string"),
        },
        Topology::Replicas => {
            let Value::List(_, items) = v else {
                return malformed("CLUSTER REPLICAS: not an array");
            };
            for item in items {
                match peel_mut(item) {
                    Value::Blob(kind @ (b'$' | b'='), data) => {
                        *data = Cow::Owned(rewrite_nodes_blob(*kind, data, map)?);
                    }
                    _ => return malformed("CLUSTER REPLICAS: not a string"),
                }
            }
        }
    }
    let mut out = Vec::with_capacity(frame.len() + 64);
    encode(&value, &mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// CLUSTER SLOTS

fn rewrite_slots(v: &mut Value<'_>, map: &dyn NodeMap) -> Result<()> {
    let Value::List(_, ranges) = v else {
        return malformed("CLUSTER SLOTS: not an array");
    };
    for range in ranges {
        let Value::List(_, items) = peel_mut(range) else {
            return malformed("CLUSTER SLOTS: range not an array");
        };
        if items.len() < 2 {
            return malformed("CLUSTER SLOTS: range too short");
        }
        for node in items.iter_mut().skip(2) {
            rewrite_slots_node(node, map)?;
        }
    }
    Ok(())
}

/// The first element of a SLOTS node.
enum Endpoint<'a> {
    Name(&'a str),
    /// `?`: the node's preferred endpoint is unknown.
    Unknown,
    /// Null or empty: "the host you are connected to".
    SameHost,
}

fn rewrite_slots_node(node: &mut Value<'_>, map: &dyn NodeMap) -> Result<()> {
    let Value::List(_, fields) = peel_mut(node) else {
        return malformed("CLUSTER SLOTS: node not an array");
    };
    if fields.len() < 2 {
        return malformed("CLUSTER SLOTS: node too short");
    }
    let port = value_port(&fields[1])?;
    let endpoint = match peel(&fields[0]) {
        Value::Null(_) | Value::Line(b'_', _) => Endpoint::SameHost,
        v => match value_str(v)? {
            "" => Endpoint::SameHost,
            "?" => Endpoint::Unknown,
            s => Endpoint::Name(s),
        },
    };
    let meta = match fields.get(3) {
        Some(m) => Some(pairs(m)?),
        None => None,
    };
    let mut names: Vec<&str> = Vec::with_capacity(3);
    if let Endpoint::Name(s) = endpoint {
        names.push(s);
    }
    for (k, v) in meta.iter().flatten() {
        let key = value_bytes(k)?;
        if key == b"ip" || key == b"hostname" {
            let s = value_str(v)?;
            if is_name(s) {
                names.push(s);
            }
        }
    }
    let local = match (names.is_empty(), &endpoint) {
        (false, _) => resolve(map, &names, &[port])?,
        (true, Endpoint::SameHost) => resolve(map, &[""], &[port])?,
        (true, _) => return Ok(()), // `?` and nothing else: no address to hide.
    };
    let unknown = matches!(endpoint, Endpoint::Unknown);
    drop(names);
    if !unknown {
        fields[0] = ip_value(local);
    }
    fields[1] = int_value(local.port());
    if let Some(m) = fields.get_mut(3) {
        let (kind, old) = take_pairs(m)?;
        let mut new = Vec::with_capacity(old.len());
        for (k, v) in old {
            match value_bytes(&k)? {
                b"ip" => new.push((k, ip_value(local))),
                b"hostname" => {}
                _ => new.push((k, v)),
            }
        }
        put_pairs(m, kind, new);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CLUSTER SHARDS

fn rewrite_shards(v: &mut Value<'_>, map: &dyn NodeMap) -> Result<()> {
    let Value::List(_, shards) = v else {
        return malformed("CLUSTER SHARDS: not an array");
    };
    for shard in shards {
        let (kind, mut fields) = take_pairs(shard)?;
        for (k, v) in fields.iter_mut() {
            if value_bytes(k)? == b"nodes" {
                let Value::List(_, nodes) = peel_mut(v) else {
                    return malformed("CLUSTER SHARDS: nodes not an array");
                };
                for node in nodes {
                    rewrite_shards_node(node, map)?;
                }
            }
        }
        put_pairs(shard, kind, fields);
    }
    Ok(())
}

fn rewrite_shards_node(node: &mut Value<'_>, map: &dyn NodeMap) -> Result<()> {
    let (kind, fields) = take_pairs(node)?;
    let (mut port, mut tls_port, mut ip, mut endpoint, mut hostname) = (None, None, "", "", "");
    for (k, v) in &fields {
        match value_bytes(k)? {
            b"port" => port = Some(value_port(v)?),
            b"tls-port" => tls_port = Some(value_port(v)?),
            b"ip" => ip = value_str(v)?,
            b"endpoint" => endpoint = value_str(v)?,
            b"hostname" => hostname = value_str(v)?,
            _ => {}
        }
    }
    let ports: Vec<u16> = [tls_port, port]
        .into_iter()
        .flatten()
        .filter(|p| *p != 0)
        .collect();
    let names: Vec<&str> = [endpoint, ip, hostname]
        .into_iter()
        .filter(|s| is_name(s))
        .collect();
    let local = if ports.is_empty() {
        None // No port: no address to hide.
    } else if !names.is_empty() {
        Some(resolve(map, &names, &ports)?)
    } else if endpoint.is_empty() {
        Some(resolve(map, &[""], &ports)?)
    } else {
        None
    };
    drop(names);
    let Some(local) = local else {
        // No usable address: keep the node, but show no name for it either.
        let hidden = fields
            .into_iter()
            .filter(|(k, _)| !matches!(value_bytes(k), Ok(b"hostname")))
            .map(|(k, v)| match (value_bytes(&k), value_str(&v)) {
                (Ok(b"ip" | b"endpoint"), Ok(s)) if is_name(s) => {
                    (k, Value::Blob(b'$', Cow::Borrowed(b"")))
                }
                _ => (k, v),
            })
            .collect();
        put_pairs(node, kind, hidden);
        return Ok(());
    };
    let keep_endpoint = endpoint == "?";
    let mut new = Vec::with_capacity(fields.len());
    let mut port_written = false;
    for (k, v) in fields {
        match value_bytes(&k)? {
            b"port" | b"tls-port" => {
                if !port_written {
                    port_written = true;
                    new.push((
                        Value::Blob(b'$', Cow::Borrowed(b"port")),
                        int_value(local.port()),
                    ));
                }
            }
            b"ip" => new.push((k, ip_value(local))),
            b"endpoint" if !keep_endpoint => new.push((k, ip_value(local))),
            b"hostname" => {}
            _ => new.push((k, v)),
        }
    }
    put_pairs(node, kind, new);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CLUSTER NODES / REPLICAS

/// Rewrites the string holding node lines: a bulk string, or a verbatim string (`txt:...`).
fn rewrite_nodes_blob(kind: u8, data: &[u8], map: &dyn NodeMap) -> Result<Vec<u8>> {
    let (prefix, text) = if kind == b'=' {
        if data.len() < 4 || data[3] != b':' {
            return malformed("verbatim string without a format");
        }
        data.split_at(4)
    } else {
        (&data[..0], data)
    };
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(prefix);
    for (i, line) in text.split(|&c| c == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        rewrite_node_line(line, &mut out, map)?;
    }
    Ok(out)
}

/// Rewrites one line `<id> <ip:port@cport[,hostname]> <flags> ...` into `out`.
fn rewrite_node_line(line: &[u8], out: &mut Vec<u8>, map: &dyn NodeMap) -> Result<()> {
    if line.is_empty() {
        return Ok(());
    }
    let mut fields = line.splitn(4, |&c| c == b' ');
    let (Some(id), Some(addr), Some(flags)) = (fields.next(), fields.next(), fields.next()) else {
        return malformed("CLUSTER NODES: short line");
    };
    let rest = &line[id.len() + 1 + addr.len()..];
    let (addr_part, hostname) = match memchr::memchr(b',', addr) {
        Some(c) => (&addr[..c], &addr[c + 1..]),
        None => (addr, &addr[..0]),
    };
    let (ip_port, has_cport) = match memchr::memchr(b'@', addr_part) {
        Some(at) => {
            if parse_port(&addr_part[at + 1..]).is_none() {
                return malformed("CLUSTER NODES: bad bus port");
            }
            (&addr_part[..at], true)
        }
        None => (addr_part, false),
    };
    let (ip, port) =
        split_redis_addr(ip_port).ok_or(RewriteError::Malformed("CLUSTER NODES: bad address"))?;
    let hostname = std::str::from_utf8(hostname).or(malformed("CLUSTER NODES: bad host name"))?;
    out.extend_from_slice(id);
    out.push(b' ');
    if ip.is_empty() || port == 0 {
        // No address (`:0@0`): nothing to map, and no name to show.
        out.extend_from_slice(b":0");
        if has_cport {
            out.extend_from_slice(b"@0");
        }
    } else {
        let names: Vec<&str> = [ip, hostname].into_iter().filter(|s| is_name(s)).collect();
        let unusable = flags
            .split(|&c| c == b',')
            .any(|f| f == b"handshake" || f == b"noaddr");
        match resolve(map, &names, &[port]) {
            Ok(local) => push_addr(out, local),
            Err(_) if unusable => out.extend_from_slice(b":0"),
            Err(e) => return Err(e),
        }
        if has_cport {
            out.extend_from_slice(b"@0");
        }
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// The bytes of a string value (bulk, simple or verbatim, the latter without its format).
fn value_bytes<'v>(v: &'v Value<'_>) -> Result<&'v [u8]> {
    string_bytes(v).ok_or(RewriteError::Malformed("expected a string"))
}

fn value_str<'v>(v: &'v Value<'_>) -> Result<&'v str> {
    std::str::from_utf8(value_bytes(v)?).or(malformed("string not UTF-8"))
}

fn value_port(v: &Value<'_>) -> Result<u16> {
    match peel(v) {
        Value::Line(b':', d) => parse_port(d).ok_or(RewriteError::Malformed("bad port")),
        _ => malformed("port not an integer"),
    }
}

fn ip_value(addr: SocketAddr) -> Value<'static> {
    Value::Blob(b'$', Cow::Owned(addr.ip().to_string().into_bytes()))
}

fn int_value(n: u16) -> Value<'static> {
    Value::Line(b':', Cow::Owned(n.to_string().into_bytes()))
}

/// The kind of a map-like value: a RESP3 map, or a RESP2 flat key/value array.
#[derive(Clone, Copy)]
enum PairsKind {
    Map,
    Flat(u8),
}

/// The key/value pairs of a RESP3 map or a RESP2 flat array (borrowed).
fn pairs<'v, 'a>(v: &'v Value<'a>) -> Result<Vec<(&'v Value<'a>, &'v Value<'a>)>> {
    match peel(v) {
        Value::Map(p) => Ok(p.iter().map(|(k, v)| (k, v)).collect()),
        Value::List(_, items) if items.len() % 2 == 0 => {
            Ok(items.chunks_exact(2).map(|c| (&c[0], &c[1])).collect())
        }
        _ => malformed("expected a map"),
    }
}

/// Moves the pairs out of a map-like value (under any attributes), leaving a placeholder that
/// [`put_pairs`] replaces.
fn take_pairs<'a>(v: &mut Value<'a>) -> Result<(PairsKind, Vec<(Value<'a>, Value<'a>)>)> {
    let v = peel_mut(v);
    match std::mem::replace(v, Value::Null(b'*')) {
        Value::Map(p) => Ok((PairsKind::Map, p)),
        Value::List(kind, items) if items.len() % 2 == 0 => {
            let mut p = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                p.push((k, v));
            }
            Ok((PairsKind::Flat(kind), p))
        }
        other => {
            *v = other;
            malformed("expected a map")
        }
    }
}

/// Puts pairs back into the place [`take_pairs`] emptied (under the same attributes).
fn put_pairs<'a>(v: &mut Value<'a>, kind: PairsKind, pairs: Vec<(Value<'a>, Value<'a>)>) {
    *peel_mut(v) = match kind {
        PairsKind::Map => Value::Map(pairs),
        PairsKind::Flat(k) => Value::List(k, pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
    };
}

#[cfg(test)]
mod tests;
