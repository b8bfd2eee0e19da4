//! [`HostPort`]: a host and a port, the one parser and formatter of `HOST:PORT` in the crate.
//!
//! Two spellings exist and both are handled here:
//! - what people write (configuration, flags): IPv6 in brackets (`[::1]:6380`), the port
//!   optional when the caller has a default ([`HostPort::parse`]);
//! - what Redis writes in `MOVED`/`ASK` redirects and `CLUSTER NODES` (`::1:6380`, no
//!   brackets): split at the last colon, without allocating ([`split_redis_addr`]), because
//!   cluster replies are rewritten on the hot path and their bytes must not change.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Port of the cache when `upstream` names none: Azure Cache for Redis's TLS port.
pub const DEFAULT_UPSTREAM_PORT: u16 = 6380;

/// A host (a name or an IP address, IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The host as written, without IPv6 brackets.
    host: String,
    /// The port.
    port: u16,
}

/// Why a `HOST:PORT` text is not one. The `Display` texts are shown to users inside
/// configuration errors (`... is not HOST[:PORT] (the port is missing)`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// `[` without its `]`.
    #[error("missing `]` after an IPv6 address")]
    UnclosedBracket,
    /// Something in brackets that is not an IPv6 address.
    #[error("`{0}` is not an IPv6 address")]
    NotIpv6(String),
    /// Text after `]` that is not `:PORT`.
    #[error("unexpected `{0}` after `]`")]
    AfterBracket(String),
    /// An IPv6 address written without brackets.
    #[error("an IPv6 address must be written in brackets, e.g. [::1]:6380")]
    BareIpv6,
    /// Nothing before the colon.
    #[error("the host is empty")]
    EmptyHost,
    /// A space or tab in the host.
    #[error("the host contains whitespace")]
    Whitespace,
    /// The port is not a number from 0 to 65535.
    #[error("`{0}` is not a port number")]
    BadPort(String),
    /// No port, and the caller has no default.
    #[error("the port is missing")]
    MissingPort,
}

impl HostPort {
    /// A host (IPv6 without brackets) and a port.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// Parses `HOST[:PORT]` as people write it: IPv6 in brackets; without a port,
    /// `default_port`, or [`HostPortError::MissingPort`] when there is none.
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<Self, HostPortError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let close = rest.find(']').ok_or(HostPortError::UnclosedBracket)?;
            let host = &rest[..close];
            host.parse::<Ipv6Addr>()
                .map_err(|_| HostPortError::NotIpv6(host.to_owned()))?;
            let after = &rest[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(HostPortError::AfterBracket(after.to_owned())),
            };
            (host, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => return Err(HostPortError::BareIpv6),
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(HostPortError::EmptyHost);
        }
        if host.chars().any(char::is_whitespace) {
            return Err(HostPortError::Whitespace);
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| HostPortError::BadPort(p.to_owned()))?,
            None => default_port.ok_or(HostPortError::MissingPort)?,
        };
        Ok(HostPort::new(host, port))
    }

    /// The host, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` for any host and port, IPv6 in brackets, without building a [`HostPort`]
    /// (for log fields).
    pub fn display(host: &str, port: u16) -> impl fmt::Display + '_ {
        struct Shown<'a>(&'a str, u16);
        impl fmt::Display for Shown<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_host_port(f, self.0, self.1)
            }
        }
        Shown(host, port)
    }

    /// The addresses the host stands for (an IP address as it is; a name resolved by the
    /// system resolver, which blocks: call at start-up only).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve `{}`: {e}", self.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("`{}` resolves to no address", self.host));
        }
        Ok(addrs)
    }
}

impl fmt::Display for HostPort {
    /// `host:port`, IPv6 in brackets: the form [`HostPort::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_host_port(f, &self.host, self.port)
    }
}

/// Brackets around a host that has colons (IPv6), so that the port stays unambiguous.
fn write_host_port(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

/// Splits an address as Redis writes it (`host:port`, IPv6 without brackets) at the last
/// colon. `None` when the port is not a number or the host holds a space or control byte.
/// The host may be empty (`:0` is CLUSTER NODES's "no address").
pub fn split_redis_addr(addr: &[u8]) -> Option<(&str, u16)> {
    let colon = memchr::memrchr(b':', addr)?;
    let host = std::str::from_utf8(&addr[..colon]).ok()?;
    if host.bytes().any(|c| c == b' ' || c.is_ascii_control()) {
        return None;
    }
    Some((host, parse_port(&addr[colon + 1..])?))
}

/// A port written as 1 to 5 ASCII digits (no sign, no spaces), as Redis writes them.
pub fn parse_port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_ipv4_and_bracketed_ipv6() {
        let hp = HostPort::parse("cache.example:6380", None).unwrap();
        assert_eq!((hp.host(), hp.port()), ("cache.example", 6380));
        let hp = HostPort::parse("10.0.0.1:7000", Some(1)).unwrap();
        assert_eq!((hp.host(), hp.port()), ("10.0.0.1", 7000));
        let hp = HostPort::parse("[::1]:6380", None).unwrap();
        assert_eq!((hp.host(), hp.port()), ("::1", 6380));
        let hp = HostPort::parse("[fe80::1]", Some(DEFAULT_UPSTREAM_PORT)).unwrap();
        assert_eq!((hp.host(), hp.port()), ("fe80::1", 6380));
        assert_eq!(HostPort::parse("h:0", None).unwrap().port(), 0);
    }

    #[test]
    fn a_missing_port_takes_the_default_or_fails() {
        let hp = HostPort::parse("cache.example", Some(DEFAULT_UPSTREAM_PORT)).unwrap();
        assert_eq!(hp.port(), 6380);
        assert_eq!(
            HostPort::parse("cache.example", None),
            Err(HostPortError::MissingPort)
        );
        assert_eq!(
            HostPort::parse("[::1]", None),
            Err(HostPortError::MissingPort)
        );
    }

    #[test]
    fn refuses_what_is_not_host_port() {
        use HostPortError as E;
        for (text, want) in [
            ("", E::EmptyHost),
            (":6380", E::EmptyHost),
            ("h:", E::BadPort(String::new())),
            ("h:65536", E::BadPort("65536".into())),
            ("h:-1", E::BadPort("-1".into())),
            ("h:port", E::BadPort("port".into())),
            ("::1:6380", E::BareIpv6),
            ("::1", E::BareIpv6),
            ("[::1", E::UnclosedBracket),
            ("[nope]:1", E::NotIpv6("nope".into())),
            ("[::1]6380", E::AfterBracket("6380".into())),
            ("my host:1", E::Whitespace),
        ] {
            assert_eq!(HostPort::parse(text, Some(6380)), Err(want), "{text:?}");
        }
    }

    #[test]
    fn display_reads_back() {
        for (host, shown) in [
            ("cache.example", "cache.example:6380"),
            ("10.0.0.1", "10.0.0.1:6380"),
            ("::1", "[::1]:6380"),
        ] {
            let hp = HostPort::new(host, 6380);
            assert_eq!(hp.to_string(), shown);
            assert_eq!(HostPort::display(host, 6380).to_string(), shown);
            assert_eq!(HostPort::parse(shown, None).unwrap(), hp);
        }
    }

    #[test]
    fn redis_addresses_split_at_the_last_colon() {
        assert_eq!(
            split_redis_addr(b"127.0.0.1:7000"),
            Some(("127.0.0.1", 7000))
        );
        assert_eq!(split_redis_addr(b"::1:7000"), Some(("::1", 7000)));
        assert_eq!(split_redis_addr(b":0"), Some(("", 0)));
        assert_eq!(split_redis_addr(b"?:7000"), Some(("?", 7000)));
        for bad in [&b"host"[..], b"host:", b"host:1234567", b"a b:1", b"h:+1"] {
            assert_eq!(split_redis_addr(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resolves_ip_addresses_without_a_lookup() {
        let hp = HostPort::new("::1", 9);
        assert_eq!(hp.resolve().unwrap(), vec!["[::1]:9".parse().unwrap()]);
    }
}
