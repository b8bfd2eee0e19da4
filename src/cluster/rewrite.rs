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

/// A command whose reply describes the cluster's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `CLUSTER SLOTS`.
    Slots,
    /// `CLUSTER SHARDS`.
    Shards,
    /// `CLUSTER NODES`.
    Nodes,
    /// `CLUSTER REPLICAS <id>` and its old name `CLUSTER SLAVES <id>`.
    Replicas,
}

/// Recognises a topology command from its arguments (command name first), case-insensitively.
/// A wrong number of arguments is not a topology command: redis-server answers it with an error.
pub fn topology_command(args: &[&[u8]]) -> Option<Topology> {
    let [cmd, sub, rest @ ..] = args else {
        return None;
    };
    if !cmd.eq_ignore_ascii_case(b"CLUSTER") {
        return None;
    }
    let (which, extra) = if sub.eq_ignore_ascii_case(b"SLOTS") {
        (Topology::Slots, 0)
    } else if sub.eq_ignore_ascii_case(b"SHARDS") {
        (Topology::Shards, 0)
    } else if sub.eq_ignore_ascii_case(b"NODES") {
        (Topology::Nodes, 0)
    } else if sub.eq_ignore_ascii_case(b"REPLICAS") || sub.eq_ignore_ascii_case(b"SLAVES") {
        (Topology::Replicas, 1)
    } else {
        return None;
    };
    (rest.len() == extra).then_some(which)
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
        split_host_port(addr).ok_or(RewriteError::Malformed("redirect with a bad address"))?;
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

/// Splits `host:port` at the last colon (an IPv6 address has colons of its own).
fn split_host_port(addr: &[u8]) -> Option<(&str, u16)> {
    let colon = memchr::memrchr(b':', addr)?;
    let host = std::str::from_utf8(&addr[..colon]).ok()?;
    if host.bytes().any(|c| c == b' ' || c.is_ascii_control()) {
        return None;
    }
    Some((host, parse_port(&addr[colon + 1..])?))
}

fn parse_port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
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

fn push_blob(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
    out.push(kind);
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
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
        split_host_port(ip_port).ok_or(RewriteError::Malformed("CLUSTER NODES: bad address"))?;
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

// ---------------------------------------------------------------------------------------------
// A small RESP2/RESP3 tree, for the topology replies (small, and rare).

/// Deeper than any topology reply (SLOTS: array → range → node → metadata).
const MAX_DEPTH: usize = 32;

#[derive(Debug)]
enum Value<'a> {
    /// `+ - : _ , # (`: the line without its type byte and CRLF.
    Line(u8, Cow<'a, [u8]>),
    /// `$ ! =` with a length.
    Blob(u8, Cow<'a, [u8]>),
    /// `$-1` or `*-1` (RESP2 nulls), by type byte.
    Null(u8),
    /// `* ~ >`.
    List(u8, Vec<Value<'a>>),
    /// `%`.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// `|`: attributes, then the value they annotate.
    Attr(Vec<(Value<'a>, Value<'a>)>, Box<Value<'a>>),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(RewriteError::Malformed("truncated frame"))?;
        self.pos += 1;
        Ok(b)
    }

    /// The bytes up to the next CRLF, which is consumed.
    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let Some(cr) = memchr::memchr(b'\r', rest) else {
            return malformed("truncated frame");
        };
        match rest.get(cr + 1) {
            Some(b'\n') => {}
            Some(_) => return malformed("CR without LF"),
            None => return malformed("truncated frame"),
        }
        self.pos += cr + 2;
        Ok(&rest[..cr])
    }

    fn int(&mut self) -> Result<i64> {
        let line = self.line()?;
        let digits = line.strip_prefix(b"-").unwrap_or(line);
        if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
            return malformed("bad length");
        }
        // At most 18 digits: fits an i64.
        let v = digits
            .iter()
            .fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'));
        Ok(if digits.len() < line.len() { -v } else { v })
    }

    /// `n` bytes of blob data and the CRLF after them.
    fn blob(&mut self, n: i64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).or(malformed("bad blob length"))?;
        let end = self
            .pos
            .checked_add(n)
            .ok_or(RewriteError::Malformed("bad blob length"))?;
        if end.checked_add(2).is_none_or(|e| e > self.buf.len()) {
            return malformed("truncated frame");
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return malformed("blob not followed by CRLF");
        }
        let data = &self.buf[self.pos..end];
        self.pos = end + 2;
        Ok(data)
    }

    /// An aggregate's element count, bounded by the bytes left (each value takes at least 3).
    fn count(&mut self, per_entry: usize) -> Result<Option<usize>> {
        let n = self.int()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).or(malformed("negative aggregate length"))?;
        if n.saturating_mul(per_entry) > self.remaining() / 3 {
            return malformed("truncated frame");
        }
        Ok(Some(n))
    }
}

fn parse<'a>(r: &mut Reader<'a>, depth: usize) -> Result<Value<'a>> {
    if depth > MAX_DEPTH {
        return malformed("nested too deep");
    }
    let kind = r.byte()?;
    Ok(match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            Value::Line(kind, Cow::Borrowed(r.line()?))
        }
        b'$' | b'!' | b'=' => {
            let n = r.int()?;
            if n == -1 && kind == b'$' {
                Value::Null(kind)
            } else {
                Value::Blob(kind, Cow::Borrowed(r.blob(n)?))
            }
        }
        b'*' | b'~' | b'>' => match r.count(1)? {
            None if kind == b'*' => Value::Null(kind),
            None => return malformed("negative aggregate length"),
            Some(n) => {
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(parse(r, depth + 1)?);
                }
                Value::List(kind, items)
            }
        },
        b'%' | b'|' => {
            let n = r
                .count(2)?
                .ok_or(RewriteError::Malformed("negative map length"))?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let k = parse(r, depth + 1)?;
                let v = parse(r, depth + 1)?;
                pairs.push((k, v));
            }
            if kind == b'%' {
                Value::Map(pairs)
            } else {
                Value::Attr(pairs, Box::new(parse(r, depth + 1)?))
            }
        }
        _ => return malformed("unknown RESP type byte"),
    })
}

fn encode(v: &Value<'_>, out: &mut Vec<u8>) {
    fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
        out.push(kind);
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match v {
        Value::Line(kind, data) => {
            out.push(*kind);
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Value::Blob(kind, data) => push_blob(out, *kind, data),
        Value::Null(kind) => {
            out.push(*kind);
            out.extend_from_slice(b"-1\r\n");
        }
        Value::List(kind, items) => {
            header(out, *kind, items.len());
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(pairs) => {
            header(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Attr(pairs, inner) => {
            header(out, b'|', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
            encode(inner, out);
        }
    }
}

/// The value under any attributes.
fn peel<'v, 'a>(mut v: &'v Value<'a>) -> &'v Value<'a> {
    while let Value::Attr(_, inner) = v {
        v = inner;
    }
    v
}

fn peel_mut<'v, 'a>(mut v: &'v mut Value<'a>) -> &'v mut Value<'a> {
    while let Value::Attr(_, inner) = v {
        v = inner;
    }
    v
}

/// The bytes of a string value (bulk, simple or verbatim, the latter without its format).
fn value_bytes<'v>(v: &'v Value<'_>) -> Result<&'v [u8]> {
    match peel(v) {
        Value::Blob(b'$', d) | Value::Line(b'+', d) => Ok(d),
        Value::Blob(b'=', d) if d.len() >= 4 => Ok(&d[4..]),
        _ => malformed("expected a string"),
    }
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
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    // Real replies of redis-server 7.0.15, captured byte for byte from two clusters on loopback
    // (3 primaries + 3 replicas each, every node on its own 127.0.1.x address):
    // - PLAIN_*: plaintext nodes 127.0.1.10-15, ports 26380-26385, announced host names
    //   node0-5.example.internal;
    // - TLS_*: TLS-only nodes (`port 0`, `tls-cluster yes`) 127.0.1.16-21, TLS ports 26386-26391,
    //   asked over TLS;
    // - TLSDUAL_* / PLAINDUAL_*: the same nodes once given plaintext ports 27386-27391 too,
    //   asked over TLS / over plaintext;
    // - HOST_*: `cluster-preferred-endpoint-type hostname`, node3 without a host name (`?`);
    // - UNKNOWN_*: `cluster-preferred-endpoint-type unknown-endpoint`;
    // - *_RESP3: the same connection after HELLO 3.
    const PLAIN_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.10\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n$10\r\n127.0.1.13\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.11\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n$10\r\n127.0.1.14\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.12\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n$10\r\n127.0.1.15\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
    const PLAIN_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.13\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const PLAIN_NODES_RESP2: &[u8] = b"$895\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.1.12:26382@36382,node2.example.internal master - 0 1795625228000 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.1.10:26380@36380,node0.example.internal myself,master - 0 1795625229000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.1.15:26385@36385,node5.example.internal slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625228678 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.1.14:26384@36384,node4.example.internal slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625227000 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.1.11:26381@36381,node1.example.internal master - 0 1795625229681 2 connected 5461-10922\n\r\n";
    const PLAIN_REPLICAS_RESP2: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
    const PLAIN_SLAVES_RESP2: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
    const PLAIN_MOVED: &[u8] = b"-MOVED 12182 127.0.1.12:26382\r\n";
    const PLAIN_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.10\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n$10\r\n127.0.1.13\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.11\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n$10\r\n127.0.1.14\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.12\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n$10\r\n127.0.1.15\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
    const PLAIN_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.13\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const PLAIN_NODES_RESP3: &[u8] = b"=899\r\ntxt:f5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.1.12:26382@36382,node2.example.internal master - 0 1795625228000 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.1.10:26380@36380,node0.example.internal myself,master - 0 1795625229000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.1.15:26385@36385,node5.example.internal slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625228678 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.1.14:26384@36384,node4.example.internal slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625227000 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.1.11:26381@36381,node1.example.internal master - 0 1795625229681 2 connected 5461-10922\n\r\n";
    const PLAIN_REPLICAS_RESP3: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
    const PLAIN_SLAVES_RESP3: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
    const TLS_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n*0\r\n*4\r\n$10\r\n127.0.1.19\r\n:26389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n*0\r\n*4\r\n$10\r\n127.0.1.20\r\n:26390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n*0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:26388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n*0\r\n*4\r\n$10\r\n127.0.1.21\r\n:26391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n*0\r\n";
    const TLS_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const TLS_NODES_RESP2: &[u8] = b"$757\r\n806765d3364746224a4d35b9341174e2056c599d 127.0.1.20:26390@36390 slave 24c6fa51fbdd736db827bbd65a641afb0cf8f95d 0 1795625229000 5 connected\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e 127.0.1.21:26391@36391 slave 0dfed88e098dc58cf4bd606de8b00e911553f072 0 1795625229617 4 connected\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d 127.0.1.17:26387@36387 master - 0 1795625231637 5 connected 5461-10922\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\n0dfed88e098dc58cf4bd606de8b00e911553f072 127.0.1.18:26388@36388 master - 0 1795625230000 4 connected 10923-16383\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03 127.0.1.16:26386@36386 myself,master - 0 1795625227000 0 connected 0-5460\n\r\n";
    const TLS_REPLICAS_RESP2: &[u8] = b"*1\r\n$138\r\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\r\n";
    const TLS_MOVED: &[u8] = b"-MOVED 12182 127.0.1.18:26388\r\n";
    const TLS_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n%0\r\n*4\r\n$10\r\n127.0.1.19\r\n:26389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n%0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n%0\r\n*4\r\n$10\r\n127.0.1.20\r\n:26390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n%0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:26388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n%0\r\n*4\r\n$10\r\n127.0.1.21\r\n:26391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n%0\r\n";
    const TLS_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const TLS_NODES_RESP3: &[u8] = b"=761\r\ntxt:806765d3364746224a4d35b9341174e2056c599d 127.0.1.20:26390@36390 slave 24c6fa51fbdd736db827bbd65a641afb0cf8f95d 0 1795625229000 5 connected\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e 127.0.1.21:26391@36391 slave 0dfed88e098dc58cf4bd606de8b00e911553f072 0 1795625229617 4 connected\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d 127.0.1.17:26387@36387 master - 0 1795625231637 5 connected 5461-10922\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\n0dfed88e098dc58cf4bd606de8b00e911553f072 127.0.1.18:26388@36388 master - 0 1795625230000 4 connected 10923-16383\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03 127.0.1.16:26386@36386 myself,master - 0 1795625227000 0 connected 0-5460\n\r\n";
    const TLS_REPLICAS_RESP3: &[u8] = b"*1\r\n$138\r\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\r\n";
    const TLSDUAL_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$4\r\nport\r\n:27390\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$4\r\nport\r\n:27388\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$4\r\nport\r\n:27391\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$4\r\nport\r\n:27389\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const TLSDUAL_MOVED: &[u8] = b"-MOVED 12182 127.0.1.18:26388\r\n";
    const TLSDUAL_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$4\r\nport\r\n:27390\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$4\r\nport\r\n:27388\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$4\r\nport\r\n:27391\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$4\r\nport\r\n:27389\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const PLAINDUAL_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n*0\r\n*4\r\n$10\r\n127.0.1.19\r\n:27389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n*0\r\n*4\r\n$10\r\n127.0.1.20\r\n:27390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n*0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:27388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n*0\r\n*4\r\n$10\r\n127.0.1.21\r\n:27391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n*0\r\n";
    const PLAINDUAL_MOVED: &[u8] = b"-MOVED 12182 127.0.1.18:27388\r\n";
    const PLAINDUAL_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n%0\r\n*4\r\n$10\r\n127.0.1.19\r\n:27389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n%0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n%0\r\n*4\r\n$10\r\n127.0.1.20\r\n:27390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n%0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:27388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n%0\r\n*4\r\n$10\r\n127.0.1.21\r\n:27391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n%0\r\n";
    const HOST_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$22\r\nnode0.example.internal\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n*4\r\n$1\r\n?\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$22\r\nnode1.example.internal\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n*4\r\n$22\r\nnode4.example.internal\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$22\r\nnode2.example.internal\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n*4\r\n$22\r\nnode5.example.internal\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n";
    const HOST_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$22\r\nnode2.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$22\r\nnode5.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$22\r\nnode0.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$22\r\nnode1.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$22\r\nnode4.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const HOST_MOVED: &[u8] = b"-MOVED 12182 node2.example.internal:26382\r\n";
    const HOST_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$22\r\nnode0.example.internal\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n*4\r\n$1\r\n?\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$22\r\nnode1.example.internal\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n*4\r\n$22\r\nnode4.example.internal\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$22\r\nnode2.example.internal\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n*4\r\n$22\r\nnode5.example.internal\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n";
    const HOST_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$22\r\nnode2.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$22\r\nnode5.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$22\r\nnode0.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$22\r\nnode1.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$22\r\nnode4.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const UNKNOWN_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$-1\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n$-1\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$-1\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n$-1\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$-1\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n$-1\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
    const UNKNOWN_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const UNKNOWN_MOVED: &[u8] = b"-MOVED 12182 :26382\r\n";
    const UNKNOWN_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n_\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n_\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n_\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n_\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n_\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n_\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
    const UNKNOWN_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const ASK: &[u8] = b"-ASK 12182 127.0.1.10:26380\r\n";
    const EXEC_MOVED: &[u8] = b"-MOVED 12182 127.0.1.10:26380\r\n";
    const PLAIN_NODES_HANDSHAKE_RESP2: &[u8] = b"$967\r\n78d4e487c73413561ebf56567193be71d073aae0 127.0.1.30:26399@36399 handshake - 0 0 0 disconnected\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383 slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625286132 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.1.12:26382@36382,node2.example.internal master - 0 1795625285122 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.1.10:26380@36380,node0.example.internal myself,master - 0 1795625283000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.1.15:26385@36385,node5.example.internal slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625283000 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.1.14:26384@36384,node4.example.internal slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625283108 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.1.11:26381@36381,node1.example.internal master - 0 1795625284000 2 connected 5461-10922\n\r\n";

    /// Every real node name, with its real ports, maps to 127.0.0.1:7xxx (xxx: the last three
    /// digits of the port). The handshake node of PLAIN_NODES_HANDSHAKE (port 26399) is unknown.
    fn local(endpoint: &str, port: u16) -> Option<SocketAddr> {
        let known_name = endpoint.is_empty()
            || endpoint.starts_with("127.0.1.")
            || endpoint.ends_with(".example.internal");
        let known_port = (26380..=26391).contains(&port) || (27386..=27391).contains(&port);
        (known_name && known_port)
            .then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + port % 1000)))
    }

    fn nothing(_: &str, _: u16) -> Option<SocketAddr> {
        None
    }

    fn blob_err(s: &str) -> Vec<u8> {
        format!("!{}\r\n{s}\r\n", s.len()).into_bytes()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
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

    #[test]
    fn moved_and_ask_simple_errors() {
        let cases: &[(&[u8], &[u8])] = &[
            (PLAIN_MOVED, b"-MOVED 12182 127.0.0.1:7382\r\n"),
            (TLS_MOVED, b"-MOVED 12182 127.0.0.1:7388\r\n"),
            (TLSDUAL_MOVED, b"-MOVED 12182 127.0.0.1:7388\r\n"),
            (PLAINDUAL_MOVED, b"-MOVED 12182 127.0.0.1:7388\r\n"),
            (HOST_MOVED, b"-MOVED 12182 127.0.0.1:7382\r\n"),
            // unknown-endpoint: "the host you are connected to" becomes an explicit address.
            (UNKNOWN_MOVED, b"-MOVED 12182 127.0.0.1:7382\r\n"),
            (ASK, b"-ASK 12182 127.0.0.1:7380\r\n"),
            (EXEC_MOVED, b"-MOVED 12182 127.0.0.1:7380\r\n"),
        ];
        for (input, want) in cases {
            assert!(may_redirect(input), "{}", text(input));
            let got = rewrite_redirects(input, &local).unwrap().unwrap();
            assert_eq!(text(&got), text(want));
        }
    }

    #[test]
    fn ipv6_local_address_is_written_like_redis() {
        let v6 = |_: &str, _: u16| Some("[::1]:7002".parse().unwrap());
        let got = rewrite_redirects(PLAIN_MOVED, &v6).unwrap().unwrap();
        assert_eq!(got, b"-MOVED 12182 ::1:7002\r\n");
        // And an IPv6 node address is split at its last colon.
        let seen = std::cell::RefCell::new(Vec::new());
        let rec = |e: &str, p: u16| {
            seen.borrow_mut().push((e.to_string(), p));
            local("", 26380)
        };
        rewrite_redirects(b"-ASK 1 fd00::5:15001\r\n", &rec).unwrap();
        assert_eq!(seen.borrow()[0], ("fd00::5".to_string(), 15001));
    }

    #[test]
    fn blob_error_gets_its_length_recomputed() {
        let input = blob_err("MOVED 12182 127.0.1.12:26382");
        assert_eq!(text(&input), "!28\r\nMOVED 12182 127.0.1.12:26382\r\n");
        assert!(may_redirect(&input));
        let got = rewrite_redirects(&input, &local).unwrap().unwrap();
        assert_eq!(got, blob_err("MOVED 12182 127.0.0.1:7382"));
        assert_eq!(text(&got), "!26\r\nMOVED 12182 127.0.0.1:7382\r\n");
        assert!(!may_redirect(b"!3\r\nERR\r\n"));
        assert_eq!(rewrite_redirects(b"!3\r\nERR\r\n", &local).unwrap(), None);
    }

    #[test]
    fn nested_redirects_in_exec_maps_attributes_and_pushes() {
        // An EXEC reply: a MOVED and an ASK among other replies, and a bulk string that merely
        // contains the text, which must stay as it is.
        let input = [
            &b"*5\r\n+OK\r\n-MOVED 12182 127.0.1.12:26382\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n*2\r\n:1\r\n"[..],
            &blob_err("ASK 7 127.0.1.10:26380 "),
            b"+MOVED 1 1.2.3.4:5\r\n",
        ]
        .concat();
        // The blob error above has a trailing space: its address does not parse.
        assert!(matches!(
            rewrite_redirects(&input, &local),
            Err(RewriteError::Malformed(_))
        ));
        let input = [
            &b"*5\r\n+OK\r\n-MOVED 12182 127.0.1.12:26382\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n*2\r\n:1\r\n"[..],
            &blob_err("ASK 7 127.0.1.10:26380"),
            b"+MOVED 1 1.2.3.4:5\r\n",
        ]
        .concat();
        let got = rewrite_redirects(&input, &local).unwrap().unwrap();
        let want = [
            &b"*5\r\n+OK\r\n-MOVED 12182 127.0.0.1:7382\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n*2\r\n:1\r\n"[..],
            &blob_err("ASK 7 127.0.0.1:7380"),
            b"+MOVED 1 1.2.3.4:5\r\n",
        ]
        .concat();
        assert_eq!(text(&got), text(&want));
        let input: &[u8] = b"|1\r\n+k\r\n-ASK 1 127.0.1.11:26381\r\n%1\r\n-MOVED 2 127.0.1.11:26381\r\n~1\r\n-ASK 3 127.0.1.11:26381\r\n";
        let wrapped = [b">2\r\n".as_slice(), input, b"_\r\n"].concat();
        let got = rewrite_redirects(&wrapped, &local).unwrap().unwrap();
        assert_eq!(
            text(&got),
            ">2\r\n|1\r\n+k\r\n-ASK 1 127.0.0.1:7381\r\n%1\r\n-MOVED 2 127.0.0.1:7381\r\n~1\r\n-ASK 3 127.0.0.1:7381\r\n_\r\n"
        );
    }

    #[test]
    fn text_that_only_looks_like_a_redirect_is_left_alone() {
        for input in [
            &b"$17\r\nMOVED 1 1.2.3.4:5\r\n"[..],
            b"+MOVED 1 1.2.3.4:5\r\n",
            b"*1\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n",
            b"=21\r\ntxt:MOVED 1 1.2.3.4:5\r\n",
            b"-ERR unknown command 'MOVED'\r\n",
            b"-MOVEDX 1 1.2.3.4:5\r\n",
            b"-ASK 1 ?:26383\r\n",
            b"*-1\r\n",
            b"$-1\r\n",
            b"*0\r\n",
        ] {
            assert_eq!(
                rewrite_redirects(input, &local).unwrap(),
                None,
                "{}",
                text(input)
            );
        }
        assert!(!may_redirect(b"$17\r\nMOVED 1 1.2.3.4:5\r\n"));
        assert!(!may_redirect(b"+MOVED 1 1.2.3.4:5\r\n"));
        assert!(!may_redirect(b"-ERR x\r\n"));
        assert!(!may_redirect(b"*2\r\n$1\r\na\r\n:1\r\n"));
        assert!(!may_redirect(b""));
        // A false positive is allowed: the rewrite then finds nothing.
        assert!(may_redirect(b"*1\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n"));
    }

    #[test]
    fn redirect_to_an_unknown_node_is_an_error() {
        let e = rewrite_redirects(PLAIN_MOVED, &nothing).unwrap_err();
        assert_eq!(
            e,
            RewriteError::NoLocalPort {
                endpoint: "127.0.1.12".into(),
                port: 26382
            }
        );
        // The message a client may see names no address.
        assert!(!e.to_string().contains("127.0.1"), "{e}");
        let nested = [&b"*2\r\n+OK\r\n"[..], &blob_err("MOVED 1 10.9.8.7:15001")].concat();
        assert!(rewrite_redirects(&nested, &nothing).is_err());
        assert!(rewrite_redirects(b"*1\r\n-ASK 1 10.0.0.1:6379\r\n", &nothing).is_err());
    }

    const TOPOLOGY_FIXTURES: &[(Topology, &str, &[u8])] = &[
        (Topology::Slots, "PLAIN_SLOTS_RESP2", PLAIN_SLOTS_RESP2),
        (Topology::Slots, "PLAIN_SLOTS_RESP3", PLAIN_SLOTS_RESP3),
        (Topology::Slots, "TLS_SLOTS_RESP2", TLS_SLOTS_RESP2),
        (Topology::Slots, "TLS_SLOTS_RESP3", TLS_SLOTS_RESP3),
        (
            Topology::Slots,
            "PLAINDUAL_SLOTS_RESP2",
            PLAINDUAL_SLOTS_RESP2,
        ),
        (
            Topology::Slots,
            "PLAINDUAL_SLOTS_RESP3",
            PLAINDUAL_SLOTS_RESP3,
        ),
        (Topology::Slots, "HOST_SLOTS_RESP2", HOST_SLOTS_RESP2),
        (Topology::Slots, "HOST_SLOTS_RESP3", HOST_SLOTS_RESP3),
        (Topology::Slots, "UNKNOWN_SLOTS_RESP2", UNKNOWN_SLOTS_RESP2),
        (Topology::Slots, "UNKNOWN_SLOTS_RESP3", UNKNOWN_SLOTS_RESP3),
        (Topology::Shards, "PLAIN_SHARDS_RESP2", PLAIN_SHARDS_RESP2),
        (Topology::Shards, "PLAIN_SHARDS_RESP3", PLAIN_SHARDS_RESP3),
        (Topology::Shards, "TLS_SHARDS_RESP2", TLS_SHARDS_RESP2),
        (Topology::Shards, "TLS_SHARDS_RESP3", TLS_SHARDS_RESP3),
        (
            Topology::Shards,
            "TLSDUAL_SHARDS_RESP2",
            TLSDUAL_SHARDS_RESP2,
        ),
        (
            Topology::Shards,
            "TLSDUAL_SHARDS_RESP3",
            TLSDUAL_SHARDS_RESP3,
        ),
        (Topology::Shards, "HOST_SHARDS_RESP2", HOST_SHARDS_RESP2),
        (Topology::Shards, "HOST_SHARDS_RESP3", HOST_SHARDS_RESP3),
        (
            Topology::Shards,
            "UNKNOWN_SHARDS_RESP2",
            UNKNOWN_SHARDS_RESP2,
        ),
        (
            Topology::Shards,
            "UNKNOWN_SHARDS_RESP3",
            UNKNOWN_SHARDS_RESP3,
        ),
        (Topology::Nodes, "PLAIN_NODES_RESP2", PLAIN_NODES_RESP2),
        (Topology::Nodes, "PLAIN_NODES_RESP3", PLAIN_NODES_RESP3),
        (Topology::Nodes, "TLS_NODES_RESP2", TLS_NODES_RESP2),
        (Topology::Nodes, "TLS_NODES_RESP3", TLS_NODES_RESP3),
        (
            Topology::Nodes,
            "PLAIN_NODES_HANDSHAKE_RESP2",
            PLAIN_NODES_HANDSHAKE_RESP2,
        ),
        (
            Topology::Replicas,
            "PLAIN_REPLICAS_RESP2",
            PLAIN_REPLICAS_RESP2,
        ),
        (
            Topology::Replicas,
            "PLAIN_REPLICAS_RESP3",
            PLAIN_REPLICAS_RESP3,
        ),
        (Topology::Replicas, "PLAIN_SLAVES_RESP2", PLAIN_SLAVES_RESP2),
        (Topology::Replicas, "PLAIN_SLAVES_RESP3", PLAIN_SLAVES_RESP3),
        (Topology::Replicas, "TLS_REPLICAS_RESP2", TLS_REPLICAS_RESP2),
        (Topology::Replicas, "TLS_REPLICAS_RESP3", TLS_REPLICAS_RESP3),
    ];

    /// A decoded reply, the same for RESP2 and RESP3, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum T {
        Str(String),
        Int(i64),
        Null,
        List(Vec<T>),
        Pairs(Vec<(T, T)>),
        Other(String),
    }

    fn decode(frame: &[u8], resp3: bool) -> T {
        if resp3 {
            use redis_protocol::resp3::types::OwnedFrame as F;
            fn conv(f: F) -> T {
                match f {
                    F::BlobString { data, .. }
                    | F::SimpleString { data, .. }
                    | F::VerbatimString { data, .. } => T::Str(String::from_utf8(data).unwrap()),
                    F::Number { data, .. } => T::Int(data),
                    F::Null => T::Null,
                    F::Array { data, .. } => T::List(data.into_iter().map(conv).collect()),
                    F::Map { data, .. } => {
                        let mut p: Vec<(T, T)> =
                            data.into_iter().map(|(k, v)| (conv(k), conv(v))).collect();
                        p.sort();
                        T::Pairs(p)
                    }
                    other => T::Other(format!("{other:?}")),
                }
            }
            let (f, n) = redis_protocol::resp3::decode::complete::decode(frame)
                .unwrap()
                .unwrap();
            assert_eq!(n, frame.len(), "one whole frame");
            conv(f)
        } else {
            use redis_protocol::resp2::types::OwnedFrame as F;
            fn conv(f: F) -> T {
                match f {
                    F::BulkString(d) | F::SimpleString(d) => T::Str(String::from_utf8(d).unwrap()),
                    F::Integer(i) => T::Int(i),
                    F::Null => T::Null,
                    F::Array(a) => T::List(a.into_iter().map(conv).collect()),
                    F::Error(e) => T::Other(e),
                }
            }
            let (f, n) = redis_protocol::resp2::decode::decode(frame)
                .unwrap()
                .unwrap();
            assert_eq!(n, frame.len(), "one whole frame");
            conv(f)
        }
    }

    fn is_original_port(n: i64) -> bool {
        (26380..=26399).contains(&n) || (27386..=27391).contains(&n) || (36380..=36399).contains(&n)
    }

    /// No node address, host name or port of the real clusters is left anywhere.
    fn assert_no_original_address(t: &T, name: &str) {
        match t {
            T::Str(s) => {
                assert!(!s.contains("127.0.1."), "{name}: address left in {s:?}");
                assert!(
                    !s.contains("example.internal"),
                    "{name}: host name in {s:?}"
                );
                for p in (26380..=26399).chain(27386..=27391).chain(36380..=36399) {
                    assert!(!s.contains(&format!(":{p}")), "{name}: port {p} in {s:?}");
                }
            }
            T::Int(n) => assert!(!is_original_port(*n), "{name}: port {n} left"),
            T::List(items) => items
                .iter()
                .for_each(|i| assert_no_original_address(i, name)),
            T::Pairs(p) => p.iter().for_each(|(k, v)| {
                assert_no_original_address(k, name);
                assert_no_original_address(v, name);
            }),
            T::Null | T::Other(_) => {}
        }
    }

    const PAIR_KEYS: &[&str] = &[
        "id",
        "port",
        "tls-port",
        "ip",
        "endpoint",
        "hostname",
        "role",
        "replication-offset",
        "health",
        "slots",
        "nodes",
    ];

    /// Replaces every address, host name and port by a placeholder, and drops what the rewrite
    /// is meant to drop (host names, `tls-port`), so that an original and its rewrite compare
    /// equal when nothing but addresses changed.
    fn normalize(t: &T) -> T {
        let addr = |s: &str| {
            s.is_empty()
                || s.parse::<std::net::IpAddr>().is_ok()
                || s.ends_with(".example.internal")
        };
        match t {
            T::Str(s) if addr(s) => T::Str("ADDR".into()),
            T::Str(s) => T::Str(
                s.split('\n')
                    .map(|line| {
                        let mut f: Vec<&str> = line.split(' ').collect();
                        if f.len() >= 8 && f[1].contains(':') {
                            f[1] = "ADDR";
                        }
                        f.join(" ")
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            T::Null => T::Str("ADDR".into()),
            T::Int(n) if is_original_port(*n) || (7000..8000).contains(n) => T::Str("PORT".into()),
            T::List(items)
                if !items.is_empty()
                    && items.len() % 2 == 0
                    && items
                        .iter()
                        .step_by(2)
                        .all(|k| matches!(k, T::Str(s) if PAIR_KEYS.contains(&s.as_str()))) =>
            {
                normalize(&T::Pairs(
                    items
                        .chunks(2)
                        .map(|c| (c[0].clone(), c[1].clone()))
                        .collect(),
                ))
            }
            // An empty RESP2 metadata array, or one whose only pair was dropped.
            T::List(items) if items.is_empty() => T::Pairs(Vec::new()),
            T::List(items) => T::List(items.iter().map(normalize).collect()),
            T::Pairs(p) => {
                let has_port = p.iter().any(|(k, _)| *k == T::Str("port".into()));
                let mut out: Vec<(T, T)> = p
                    .iter()
                    .filter_map(|(k, v)| match k {
                        T::Str(s) if s == "hostname" => None,
                        T::Str(s) if s == "tls-port" && has_port => None,
                        T::Str(s) if s == "tls-port" => Some((T::Str("port".into()), normalize(v))),
                        _ => Some((k.clone(), normalize(v))),
                    })
                    .collect();
                out.sort();
                T::Pairs(out)
            }
            other => other.clone(),
        }
    }

    #[test]
    fn real_topology_replies_keep_their_structure_and_lose_every_address() {
        for &(which, name, frame) in TOPOLOGY_FIXTURES {
            let resp3 = name.ends_with("RESP3");
            let out =
                rewrite_topology(which, frame, &local).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let before = decode(frame, resp3);
            let after = decode(&out, resp3);
            assert_eq!(frame[0], out[0], "{name}: same frame type");
            assert_no_original_address(&after, name);
            assert_eq!(normalize(&before), normalize(&after), "{name}");
            // Nothing to rewrite twice: the output is stable.
            let again = rewrite_topology(which, &out, &|_: &str, p: u16| {
                Some(SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            })
            .unwrap();
            assert_eq!(text(&again), text(&out), "{name}: not idempotent");
            let raw = text(&out);
            assert!(!raw.contains("tls-port"), "{name}");
            assert!(!raw.contains("hostname"), "{name}");
        }
    }

    #[test]
    fn slots_exact_output() {
        let out = rewrite_topology(Topology::Slots, PLAIN_SLOTS_RESP3, &local).unwrap();
        let first_range = "*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%0\r\n*4\r\n";
        assert!(text(&out).starts_with(first_range), "{}", text(&out));
        // Host names preferred, node3 without one: `?` stays, its ip metadata is rewritten.
        let out = rewrite_topology(Topology::Slots, HOST_SLOTS_RESP2, &local).unwrap();
        assert!(text(&out).starts_with("*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n*4\r\n$1\r\n?\r\n:7383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{}", text(&out));
        // unknown-endpoint: the null endpoint becomes the local IP, in both protocols.
        let out = rewrite_topology(Topology::Slots, UNKNOWN_SLOTS_RESP3, &local).unwrap();
        assert!(text(&out).starts_with("*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%1\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{}", text(&out));
    }

    #[test]
    fn shards_exact_output() {
        // TLS-only node: `tls-port` becomes `port`, looked up by the TLS port.
        let out = rewrite_topology(Topology::Shards, TLS_SHARDS_RESP3, &local).unwrap();
        assert!(text(&out).starts_with("*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$4\r\nport\r\n:7387\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"), "{}", text(&out));
        // Both ports: one `port`, the TLS port's listener; RESP2 flat array shrinks by 2.
        let out = rewrite_topology(Topology::Shards, TLSDUAL_SHARDS_RESP2, &local).unwrap();
        assert!(text(&out).contains("*14\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$4\r\nport\r\n:7390\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{}", text(&out));
        // Plaintext node with host name: *16 -> *14 (hostname dropped).
        let out = rewrite_topology(Topology::Shards, PLAIN_SHARDS_RESP2, &local).unwrap();
        assert!(text(&out).contains("*14\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:7382\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n"), "{}", text(&out));
        // Host names preferred, node3 without one: endpoint `?` stays, the rest is local.
        let out = rewrite_topology(Topology::Shards, HOST_SHARDS_RESP3, &local).unwrap();
        assert!(text(&out).contains("%7\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:7383\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n"), "{}", text(&out));
    }

    #[test]
    fn nodes_exact_output() {
        let out = rewrite_topology(Topology::Nodes, PLAIN_NODES_RESP3, &local).unwrap();
        let body = "txt:f5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.0.1:7383@0 slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.0.1:7382@0 master - 0 1795625228000 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.0.1:7380@0 myself,master - 0 1795625229000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.0.1:7385@0 slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625228678 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.0.1:7384@0 slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625227000 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.0.1:7381@0 master - 0 1795625229681 2 connected 5461-10922\n";
        assert_eq!(text(&out), format!("={}\r\n{body}\r\n", body.len()));
        // A node in handshake with no local listener is shown without an address.
        let out = rewrite_topology(Topology::Nodes, PLAIN_NODES_HANDSHAKE_RESP2, &local).unwrap();
        assert!(text(&out).contains("\n78d4e487c73413561ebf56567193be71d073aae0 :0@0 handshake - 0 0 0 disconnected\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.0.1:7383@0 slave ") || text(&out).contains("\r\n78d4e487c73413561ebf56567193be71d073aae0 :0@0 handshake - 0 0 0 disconnected\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.0.1:7383@0 slave "), "{}", text(&out));
        // Nodes without an address stay as they are, but lose any host name.
        let noaddr = b"$60\r\n0123456789abcdef0123456789abcdef01234567 :0@0 master,noaddr\n\r\n";
        let out = rewrite_topology(Topology::Nodes, noaddr, &nothing).unwrap();
        assert_eq!(text(&out), text(noaddr));
        let line = "0123456789abcdef0123456789abcdef01234567 10.1.1.1:0@0,h.x master,noaddr\n";
        let named = format!("${}\r\n{line}\r\n", line.len());
        let out = rewrite_topology(Topology::Nodes, named.as_bytes(), &nothing).unwrap();
        assert_eq!(text(&out), text(noaddr));
        let out = rewrite_topology(Topology::Replicas, TLS_REPLICAS_RESP3, &local).unwrap();
        let line = "28346d739184cd000679d9ef652bf5eabda1a21f 127.0.0.1:7389@0 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected";
        assert_eq!(text(&out), format!("*1\r\n${}\r\n{line}\r\n", line.len()));
    }

    #[test]
    fn error_replies_pass_through() {
        let err = b"-ERR This instance has cluster support disabled\r\n";
        for which in [
            Topology::Slots,
            Topology::Shards,
            Topology::Nodes,
            Topology::Replicas,
        ] {
            assert_eq!(rewrite_topology(which, err, &nothing).unwrap(), err);
        }
        let unknown = b"-ERR Unknown node abc\r\n";
        assert_eq!(
            rewrite_topology(Topology::Replicas, unknown, &nothing).unwrap(),
            unknown
        );
    }

    #[test]
    fn every_topology_reply_without_local_port_is_an_error() {
        for &(which, name, frame) in TOPOLOGY_FIXTURES {
            match rewrite_topology(which, frame, &nothing) {
                Err(RewriteError::NoLocalPort { endpoint, port }) => {
                    assert!(!endpoint.is_empty() || port != 0, "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_or_garbled_frames_are_errors_not_panics() {
        let mut all: Vec<(Option<Topology>, &[u8])> = TOPOLOGY_FIXTURES
            .iter()
            .map(|&(w, _, f)| (Some(w), f))
            .collect();
        for f in [PLAIN_MOVED, HOST_MOVED, UNKNOWN_MOVED, ASK] {
            all.push((None, f));
        }
        for (which, frame) in all {
            for end in 0..frame.len() {
                let cut = &frame[..end];
                if let Some(w) = which {
                    assert!(rewrite_topology(w, cut, &local).is_err(), "{}", text(cut));
                }
                assert!(rewrite_redirects(cut, &local).is_err(), "{}", text(cut));
                may_redirect(cut);
            }
            // Trailing bytes: not one frame.
            let longer = [frame, b"+OK\r\n"].concat();
            assert!(rewrite_redirects(&longer, &local).is_err());
            // Every single-byte corruption: any answer but a panic.
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..frame.len() {
                let mut bad = frame.to_vec();
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bad[i] = [b'\r', b'\n', b'*', b'-', b':', b'9', b'@', b' ', seed as u8][i % 9];
                for w in [
                    Topology::Slots,
                    Topology::Shards,
                    Topology::Nodes,
                    Topology::Replicas,
                ] {
                    let _ = rewrite_topology(w, &bad, &local);
                }
                let _ = rewrite_redirects(&bad, &local);
                may_redirect(&bad);
            }
        }
        for bad in [
            &b"*99999999999999999999\r\n"[..],
            b"*9223372036854775807\r\n",
            b"%4611686018427387904\r\n",
            b"|4611686018427387904\r\n",
            b"$9223372036854775807\r\nx\r\n",
            b"$-2\r\n",
            b"~-1\r\n",
            b"?\r\n",
        ] {
            assert!(rewrite_redirects(bad, &local).is_err(), "{}", text(bad));
            assert!(
                rewrite_topology(Topology::Slots, bad, &local).is_err(),
                "{}",
                text(bad)
            );
        }
        // Redirects that do not parse: an error, never forwarded as they are.
        for bad in [
            &b"-MOVED 1\r\n"[..],
            b"-MOVED x 1.2.3.4:5\r\n",
            b"-MOVED 1 1.2.3.4\r\n",
            b"-MOVED 1 1.2.3.4:99999\r\n",
            b"-ASK 1 1.2.3.4:\r\n",
            b"!7\r\nMOVED 1\r\n",
            b"-MOVED 1 1.2.3.4:5\rX",
            b"*1\r\n-ASK 1 1.2.3.4:5 6\r\n",
        ] {
            assert!(rewrite_redirects(bad, &local).is_err(), "{}", text(bad));
        }
        assert_eq!(rewrite_redirects(b"-MOVED\r\n", &local).unwrap(), None);
        for (which, bad) in [
            (Topology::Slots, &b"$3\r\nabc\r\n"[..]),
            (Topology::Slots, b"*1\r\n*1\r\n:1\r\n"),
            (
                Topology::Slots,
                b"*1\r\n*3\r\n:1\r\n:2\r\n*1\r\n$1\r\na\r\n",
            ),
            (
                Topology::Slots,
                b"*1\r\n*3\r\n:1\r\n:2\r\n*2\r\n$1\r\na\r\n:70000\r\n",
            ),
            (Topology::Shards, b"*1\r\n*3\r\n$5\r\nslots\r\n*0\r\n$5\r\n"),
            (Topology::Shards, b"*1\r\n*1\r\n$5\r\nnodes\r\n"),
            (Topology::Nodes, b"*0\r\n"),
            (Topology::Nodes, b"$5\r\na b c\r\n"),
            (Topology::Nodes, b"$7\r\na b c d\r\n"),
            (Topology::Nodes, b"=5\r\ntxtab\r\n"),
            (Topology::Nodes, b"$18\r\nid 1.2.3.4:5@x m -\r\n"),
            (Topology::Replicas, b"*1\r\n:1\r\n"),
        ] {
            assert!(
                matches!(
                    rewrite_topology(which, bad, &local),
                    Err(RewriteError::Malformed(_))
                ),
                "{which:?} {}",
                text(bad)
            );
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut deep = b"*1\r\n".repeat(200_000);
        deep.extend_from_slice(b"-MOVED 1 127.0.1.10:26380\r\n");
        // The redirect scan needs no recursion.
        let out = rewrite_redirects(&deep, &local).unwrap().unwrap();
        assert!(out.ends_with(b"-MOVED 1 127.0.0.1:7380\r\n"));
        assert!(matches!(
            rewrite_topology(Topology::Slots, &deep, &local),
            Err(RewriteError::Malformed(_))
        ));
    }

    #[test]
    fn big_replies_are_linear() {
        // 16,384 single-slot ranges, each with a primary and a replica.
        let mut slots = b"*16384\r\n".to_vec();
        for s in 0..16384u32 {
            let node = |port: u32| {
                format!("*4\r\n$10\r\n127.0.1.{}\r\n:{port}\r\n$40\r\n{:040x}\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode{}.example.internal\r\n", 10 + port % 6, port, port % 6)
            };
            slots.extend_from_slice(format!("*4\r\n:{s}\r\n:{s}\r\n").as_bytes());
            slots.extend_from_slice(node(26380 + s % 3).as_bytes());
            slots.extend_from_slice(node(26383 + s % 3).as_bytes());
        }
        // 2,000 nodes in CLUSTER NODES.
        let mut nodes = String::new();
        for i in 0..2000u32 {
            nodes.push_str(&format!(
                "{i:040x} 127.0.1.{}:{}@{},node{}.example.internal master - 0 0 1 connected {i}\n",
                10 + i % 6,
                26380 + i % 12,
                36380 + i % 12,
                i % 6
            ));
        }
        let nodes = format!("${}\r\n{nodes}\r\n", nodes.len()).into_bytes();
        let start = std::time::Instant::now();
        let out = rewrite_topology(Topology::Slots, &slots, &local).unwrap();
        assert_no_original_address(&decode(&out, true), "big slots");
        let out = rewrite_topology(Topology::Nodes, &nodes, &local).unwrap();
        assert_no_original_address(&decode(&out, false), "big nodes");
        let mut exec = b"*20000\r\n".to_vec();
        for _ in 0..20000 {
            exec.extend_from_slice(b"-MOVED 1 127.0.1.10:26380\r\n");
        }
        assert!(may_redirect(&exec));
        rewrite_redirects(&exec, &local).unwrap().unwrap();
        // Debug build, shared machine: generous, but far below quadratic time.
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}
