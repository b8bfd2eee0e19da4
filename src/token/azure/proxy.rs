//! The outbound proxy for identity endpoints: enterprise networks reach Entra ID only through
//! an HTTP proxy (`CONNECT` tunnels), named by the conventional variables.
//!
//! Read once at start-up: `HTTPS_PROXY` (or `https_proxy`), else `ALL_PROXY` (or `all_proxy`),
//! and the exemptions in `NO_PROXY` (or `no_proxy`), with reqwest's (curl's) matching rules.
//! Only `https://` token endpoints use it (every Entra authority host is `https://`).
//! The managed identity endpoint (IMDS at 169.254.169.254, App Service / Container Apps /
//! Arc / Cloud Shell endpoints) is link-local or on the host, and is never proxied, whatever
//! the environment says; `HTTP_PROXY` is not used at all.
//!
//! The proxy URL may carry credentials (`http://user:password@proxy:3128`): they are a secret.
//! Only `scheme://host:port` is ever logged, shown by `Debug`, or put in an error.

use std::fmt;

use hyper_util::client::proxy::matcher::Matcher;

use crate::token::CredentialError;

/// The variables naming the proxy, in the order they are read.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// The variables listing the hosts that bypass the proxy, in the order they are read.
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The outbound HTTPS proxy, as the environment names it.
pub(super) struct OutboundProxy {
    /// The proxy URL as given, credentials included: a secret, never printed.
    url: reqwest::Url,
    /// The variable it came from (for messages: the operator knows where to look).
    from: &'static str,
    /// The `NO_PROXY` list as given, empty when unset.
    no_proxy: String,
    /// Decides which URLs go through the proxy, with the rules reqwest applies to the client.
    matcher: Matcher,
}

impl fmt::Debug for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundProxy")
            .field("proxy", &self.shown())
            .field("from", &self.from)
            .field("no_proxy", &self.no_proxy)
            .finish_non_exhaustive()
    }
}

impl OutboundProxy {
    /// The proxy the process environment names, if any.
    pub(super) fn from_env() -> Result<Option<Self>, CredentialError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The proxy named by the variables `get` returns (empty counts as unset).
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, CredentialError> {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|&n| {
                get(n)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .map(|v| (n, v))
            })
        };
        let Some((from, raw)) = first(&PROXY_VARS) else {
            return Ok(None);
        };
        let no_proxy = first(&NO_PROXY_VARS).map(|(_, v)| v).unwrap_or_default();
        // As curl and reqwest do, a bare `host:port` means an HTTP proxy.
        let with_scheme = if raw.contains("://") {
            raw
        } else {
            format!("http://{raw}")
        };
        let bad = |why: &str| CredentialError::Misconfigured(format!("{from}: {why}"));
        let url = reqwest::Url::parse(&with_scheme).map_err(|_| {
            // The parser's message may quote the input, credentials and all: say only what
            // is expected.
            bad("not a proxy URL; expected http://host:port (credentials, if any, as http://user:password@host:port)")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(&format!(
                "the proxy scheme `{}` is not supported; use an HTTP proxy (http://host:port or https://host:port)",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("the proxy URL names no host"));
        }
        let matcher = Matcher::builder()
            .https(url.as_str().to_owned())
            .no(no_proxy.clone())
            .build();
        Ok(Some(OutboundProxy {
            url,
            from,
            no_proxy,
            matcher,
        }))
    }

    /// `host:port` of the proxy, without credentials.
    pub(super) fn host_port(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// `scheme://host:port` of the proxy, without credentials.
    pub(super) fn shown(&self) -> String {
        format!("{}://{}", self.url.scheme(), self.host_port())
    }

    /// The variable the proxy came from.
    pub(super) fn from(&self) -> &'static str {
        self.from
    }

    /// The `NO_PROXY` list (empty: none).
    pub(super) fn no_proxy(&self) -> &str {
        &self.no_proxy
    }

    /// Whether a request to `url` goes through the proxy (an `https://` URL whose host
    /// `NO_PROXY` does not exempt).
    pub(super) fn applies_to(&self, url: &str) -> bool {
        url.parse::<hyper::Uri>()
            .is_ok_and(|uri| self.matcher.intercept(&uri).is_some())
    }

    /// The proxy for reqwest: HTTPS targets only, `NO_PROXY` honoured, credentials from the
    /// URL sent as `Proxy-Authorization: Basic`.
    pub(super) fn reqwest_proxy(&self) -> Result<reqwest::Proxy, CredentialError> {
        let proxy = reqwest::Proxy::https(self.url.as_str()).map_err(|_| {
            CredentialError::Misconfigured(format!(
                "{}: the proxy {} is not usable by the HTTP client",
                self.from,
                self.shown()
            ))
        })?;
        Ok(proxy.no_proxy(reqwest::NoProxy::from_string(&self.no_proxy)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn https_proxy_first_then_all_proxy_and_empty_is_unset() {
        assert!(OutboundProxy::from_lookup(lookup(&[])).unwrap().is_none());
        assert!(
            OutboundProxy::from_lookup(lookup(&[("HTTP_PROXY", "http://p:1")]))
                .unwrap()
                .is_none()
        );
        let p = OutboundProxy::from_lookup(lookup(&[
            ("HTTPS_PROXY", " "),
            ("https_proxy", "http://lower:3128"),
            ("ALL_PROXY", "http://all:1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.from(), p.host_port().as_str()),
            ("https_proxy", "lower:3128")
        );
        let p = OutboundProxy::from_lookup(lookup(&[("ALL_PROXY", "proxy.corp:8080")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.shown(), "http://proxy.corp:8080");
        assert_eq!(p.from(), "ALL_PROXY");
        let p = OutboundProxy::from_lookup(lookup(&[("HTTPS_PROXY", "http://proxy.corp")]))
            .unwrap()
            .unwrap();
        assert_eq!(p.host_port(), "proxy.corp:80");
    }

    #[test]
    fn credentials_never_shown_and_bad_values_name_the_variable_only() {
        let p = OutboundProxy::from_lookup(lookup(&[(
            "HTTPS_PROXY",
            "http://alice:pr0xy-pass@10.0.0.1:3128",
        )]))
        .unwrap()
        .unwrap();
        let shown = format!("{} {} {p:?}", p.shown(), p.host_port());
        assert!(shown.contains("10.0.0.1:3128"), "{shown}");
        assert!(
            !shown.contains("pr0xy-pass") && !shown.contains("alice"),
            "{shown}"
        );

        let err = OutboundProxy::from_lookup(lookup(&[(
            "HTTPS_PROXY",
            "socks5://bob:s0cks-pass@10.0.0.1:1080",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("HTTPS_PROXY") && err.contains("socks5"),
            "{err}"
        );
        assert!(!err.contains("s0cks-pass") && !err.contains("bob"), "{err}");

        let err = OutboundProxy::from_lookup(lookup(&[("ALL_PROXY", "http://carol:p@[bad")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ALL_PROXY") && !err.contains("carol"), "{err}");
    }

    #[test]
    fn no_proxy_exempts_hosts_and_only_https_is_proxied() {
        let p = OutboundProxy::from_lookup(lookup(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("no_proxy", "internal.example, 10.1.0.0/16"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.no_proxy(), "internal.example, 10.1.0.0/16");
        assert!(p.applies_to("https://login.microsoftonline.com/t/oauth2/v2.0/token"));
        assert!(p.applies_to("https://127.0.0.1:8443/t"));
        assert!(!p.applies_to("https://sts.internal.example/t"));
        assert!(!p.applies_to("https://10.1.2.3/t"));
        assert!(!p.applies_to("http://169.254.169.254/metadata/identity/oauth2/token"));
    }
}
