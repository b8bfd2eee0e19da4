//! The rules [`Settings::validate`] enforces, and the conversions [`Settings::plan`] makes
//! from valid settings: one settings object per upstream, listener addresses, the cache's
//! host and port, the admin address, the socket mode, the cluster ports, the token
//! manager's policy. Only `plan` (and the rules) call the conversions.

use std::path::PathBuf;

use crate::addr::{HostPort, DEFAULT_UPSTREAM_PORT};

use super::{
    duration, ClusterPlan, ConfigError, CredentialKind, ListenAddr, RefreshPolicy, Settings,
    UpstreamPlan, DEFAULT_UPSTREAM_NAME, UPSTREAM_KEYS,
};

/// The most shared connections per protocol one upstream may open.
const MAX_POOL_SIZE: usize = 64;

/// The most warm connections one upstream may keep (a typo should not take the cache's limit).
const MAX_WARM_CONNECTIONS: usize = 1000;

impl Settings {
    /// Checks every rule; the first broken one is returned, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked().map(|_| ())
    }

    /// Checks every rule, converting each value as it is checked (so [`Settings::plan`]
    /// parses nothing twice): the upstreams, the admin address, the socket mode.
    pub(super) fn checked(
        &self,
    ) -> Result<(Vec<UpstreamPlan>, Option<std::net::SocketAddr>, u32), ConfigError> {
        let mut upstreams = Vec::new();
        for (index, (name, settings)) in self.resolved_upstreams()?.into_iter().enumerate() {
            let plan = settings.validate_one(name).map_err(|e| match e {
                // A value the entry set itself is reported as the entry's; one it inherited,
                // as the top-level key it came from.
                ConfigError::Invalid { key, problem } if self.entry_sets(index, &key) => {
                    ConfigError::Invalid {
                        key: format!("upstreams[{index}].{key}"),
                        problem,
                    }
                }
                e => e,
            })?;
            upstreams.push(plan);
        }
        // Top-level keys only: checked once, not per upstream.
        let socket_mode = self.socket_mode()?;
        let admin = self.admin_addr()?;
        Ok((upstreams, admin, socket_mode))
    }

    /// True if `[[upstreams]]` entry `index` sets `key` itself (rather than inheriting it).
    fn entry_sets(&self, index: usize, key: &str) -> bool {
        let Some(entry) = self.upstreams.get(index) else {
            return false;
        };
        if !UPSTREAM_KEYS.contains(&key) {
            return false;
        }
        serde_json::to_value(entry)
            .ok()
            .and_then(|v| v.get(key).map(|x| !x.is_null()))
            .unwrap_or(false)
    }

    /// One settings object per upstream, with its name: the top-level settings alone when
    /// `upstreams` is empty, else each entry over the top-level keys. Checks what is
    /// specific to `[[upstreams]]` (names, required keys); the rest is left to `validate`.
    pub(super) fn resolved_upstreams(&self) -> Result<Vec<(String, Settings)>, ConfigError> {
        if self.upstreams.is_empty() {
            let mut one = self.clone();
            one.upstreams.clear();
            return Ok(vec![(DEFAULT_UPSTREAM_NAME.to_owned(), one)]);
        }
        if !self.upstream.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "upstream".into(),
                problem: "is set at the top level and [[upstreams]] entries exist too; move it \
                          into an [[upstreams]] entry (or remove the entries)"
                    .into(),
            });
        }
        let mut out: Vec<(String, Settings)> = Vec::with_capacity(self.upstreams.len());
        for (i, u) in self.upstreams.iter().enumerate() {
            let invalid = |key: &str, problem: String| ConfigError::Invalid {
                key: format!("upstreams[{i}].{key}"),
                problem,
            };
            let name = u.name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "name",
                    format!(
                        "= {:?} must be a non-empty label of letters, digits, - and _ (it \
                         names the upstream in logs and metrics)",
                        u.name
                    ),
                ));
            }
            if out.iter().any(|(n, _)| n == name) {
                return Err(invalid(
                    "name",
                    format!("= {name:?} is used by two entries; names must be unique"),
                ));
            }
            let mut s = self.clone();
            s.upstreams.clear();
            if u.listen.as_ref().is_none_or(|l| l.is_empty()) {
                return Err(invalid(
                    "listen",
                    format!("is required for upstream {name:?} (its own local listener)"),
                ));
            }
            if u.upstream.is_none() {
                return Err(invalid(
                    "upstream",
                    format!("is required for upstream {name:?} (the cache, HOST[:PORT])"),
                ));
            }
            u.layer().apply_to(&mut s);
            out.push((name.to_owned(), s));
        }
        Ok(out)
    }

    /// The local port range for cluster nodes: `Some(start..=end)`, or `None` for ephemeral
    /// ports (no `cluster_ports` and a first listener on port 0). `listen`: the parsed
    /// `listen` entries.
    pub(super) fn cluster_port_range(
        &self,
        listen: &[ListenAddr],
    ) -> Result<Option<std::ops::RangeInclusive<u16>>, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "cluster_ports".into(),
            problem,
        };
        if let Some(spec) = &self.cluster_ports {
            let parsed = spec.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
            });
            return match parsed {
                Some((a, b)) if a > 0 && a <= b => Ok(Some(a..=b)),
                _ => Err(invalid(format!(
                    "= {spec:?} is not a port range START-END with 0 < START <= END (e.g. \"7001-7100\")"
                ))),
            };
        }
        let first = listen.first();
        match first {
            Some(ListenAddr::Tcp(addr)) if addr.port() == 0 => Ok(None),
            Some(ListenAddr::Tcp(addr)) => {
                let start = addr.port().checked_add(1).ok_or_else(|| {
                    invalid(
                        "is needed: the first listen port is 65535, so no default range follows it"
                            .into(),
                    )
                })?;
                Ok(Some(start..=start.saturating_add(99)))
            }
            _ => Err(ConfigError::Invalid {
                key: "listen".into(),
                problem: "must start with a TCP address (HOST:PORT) when cluster = true: cluster \
                          clients are told local node addresses, which are TCP ports"
                    .into(),
            }),
        }
    }

    /// `socket_mode` as a file mode: octal such as `"0660"` or `"660"`, at most `0777`.
    pub(super) fn socket_mode(&self) -> Result<u32, ConfigError> {
        let digits = self.socket_mode.trim();
        let digits = digits.strip_prefix("0o").unwrap_or(digits);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
            _ => Err(ConfigError::Invalid {
                key: "socket_mode".into(),
                problem: format!(
                    "= `{}` is not an octal file mode such as 0660 (at most 0777)",
                    self.socket_mode
                ),
            }),
        }
    }

    /// The checks of one upstream's settings.
    fn validate_one(self, name: String) -> Result<UpstreamPlan, ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            key: key.into(),
            problem,
        };
        let cache = self.upstream_host_port()?;
        let listen = self.listen_addrs()?;

        for (key, value) in [
            ("tls_server_name", self.tls_server_name.as_deref()),
            ("username", self.username.as_deref()),
            ("tenant_id", self.tenant_id.as_deref()),
            ("client_id", self.client_id.as_deref()),
            ("object_id", self.object_id.as_deref()),
            ("resource_id", self.resource_id.as_deref()),
            ("authority_host", self.authority_host.as_deref()),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return Err(invalid(
                    key,
                    "is empty (remove it to use the default)".into(),
                ));
            }
        }
        if let Some(key) = self.empty_path_key() {
            return Err(invalid(
                key,
                "is an empty path (remove it, or give a path)".into(),
            ));
        }
        if let Some(host) = &self.authority_host {
            if !host.starts_with("https://") {
                return Err(invalid(
                    "authority_host",
                    format!("= {host:?} must be an https:// URL"),
                ));
            }
        }
        if self.scope.trim().is_empty() {
            return Err(invalid(
                "scope",
                "is empty (it must be the token scope, e.g. https://redis.azure.com/.default)"
                    .into(),
            ));
        }
        if self.credential == CredentialKind::TokenFile && self.token_file.is_none() {
            return Err(invalid(
                "token_file",
                "is required when credential = \"token-file\"".into(),
            ));
        }
        if !(self.refresh_ratio > 0.0 && self.refresh_ratio <= 1.0) {
            return Err(invalid(
                "refresh_ratio",
                format!("= {} is out of range (0, 1]", self.refresh_ratio),
            ));
        }
        if !(self.refresh_jitter >= 0.0 && self.refresh_jitter < 1.0) {
            return Err(invalid(
                "refresh_jitter",
                format!("= {} is out of range [0, 1)", self.refresh_jitter),
            ));
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("tls_timeout", self.tls_timeout),
            ("auth_timeout", self.auth_timeout),
            ("token_file_poll", self.token_file_poll),
            ("retry_initial", self.retry_initial),
            ("retry_max", self.retry_max),
            ("token_timeout", self.token_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "= 0s must be greater than zero".into()));
            }
        }
        if self.retry_initial > self.retry_max {
            return Err(invalid(
                "retry_initial",
                format!(
                    "= {} is greater than retry_max = {}; lower it or raise retry_max",
                    duration::format(self.retry_initial),
                    duration::format(self.retry_max)
                ),
            ));
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("reauth_concurrency", self.reauth_concurrency),
            ("max_bulk_len", self.max_bulk_len),
            ("max_command_args", self.max_command_args),
            ("max_inline_len", self.max_inline_len),
        ] {
            if value == 0 {
                return Err(invalid(key, "= 0 must be greater than zero".into()));
            }
        }
        if self.warm_connections > MAX_WARM_CONNECTIONS {
            return Err(invalid(
                "warm_connections",
                format!(
                    "= {} is more than {MAX_WARM_CONNECTIONS}: every warm connection counts against the cache's connection limit; a few are enough",
                    self.warm_connections
                ),
            ));
        }
        if self.pool_size > MAX_POOL_SIZE {
            return Err(invalid(
                "pool_size",
                format!(
                    "= {} is more than {MAX_POOL_SIZE}: shared connections exist to use few of the cache's connections; a few are enough",
                    self.pool_size
                ),
            ));
        }
        if self.pool_size > 0 && self.cluster {
            return Err(invalid(
                "pool_size",
                format!(
                    "= {} cannot be used with cluster = true yet: in cluster mode every client has connections of its own (set pool_size = 0)",
                    self.pool_size
                ),
            ));
        }
        let cluster = match self.cluster {
            true => Some(ClusterPlan {
                ports: self.cluster_port_range(&listen)?,
            }),
            false => None,
        };
        if self.cluster_refresh.is_zero() {
            return Err(invalid(
                "cluster_refresh",
                "= 0s must be greater than zero".into(),
            ));
        }
        Ok(UpstreamPlan {
            listen,
            tls_server_name: self.tls_name(&cache),
            cache,
            cluster,
            refresh: self.refresh_policy(),
            identity: self.identity_key(),
            name,
            settings: self,
        })
    }

    /// The admin listener's address (a host name is resolved, its first address used), or
    /// `None` when `admin_listen` is `""` (the admin endpoint is off).
    pub(super) fn admin_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.admin_listen.is_empty() {
            return Ok(None);
        }
        let addrs = resolve_host_port(&self.admin_listen).map_err(|why| ConfigError::Invalid {
            key: "admin_listen".into(),
            problem: format!(
                "= {:?} is not HOST:PORT ({why}); use \"\" to disable the admin listener",
                self.admin_listen
            ),
        })?;
        Ok(addrs.into_iter().next())
    }

    /// The parsed `listen` entries, refusing a non-loopback TCP address unless
    /// `allow_non_loopback`. A host name is resolved and its first address used.
    pub(super) fn listen_addrs(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid {
                key: "listen".into(),
                problem: "is empty (the proxy needs at least one listener)".into(),
            });
        }
        let mut out = Vec::with_capacity(self.listen.len());
        for entry in &self.listen {
            if let Some(path) = entry.strip_prefix("unix:") {
                if path.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "listen".into(),
                        problem: format!("entry {entry:?} has no path (write unix:/path/to.sock)"),
                    });
                }
                out.push(ListenAddr::Unix(PathBuf::from(path)));
                continue;
            }
            let addrs = resolve_host_port(entry).map_err(|why| ConfigError::Invalid {
                key: "listen".into(),
                problem: format!("entry {entry:?} is not HOST:PORT or unix:/path ({why})"),
            })?;
            if !self.allow_non_loopback || self.client_password_file.is_none() {
                if let Some(addr) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                    return Err(ConfigError::NonLoopback {
                        entry: entry.clone(),
                        addr: *addr,
                    });
                }
            }
            out.push(ListenAddr::Tcp(addrs[0]));
        }
        Ok(out)
    }

    /// The cache's host (without IPv6 brackets) and port (6380 when not given).
    pub(super) fn upstream_host_port(&self) -> Result<HostPort, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "upstream".into(),
            problem,
        };
        let up = self.upstream.trim();
        if up.is_empty() {
            return Err(invalid(
                "is required (the cache, HOST[:PORT] such as mycache.redis.cache.windows.net)"
                    .into(),
            ));
        }
        if up.contains("://") || up.contains('/') {
            return Err(invalid(format!(
                "= {up:?} must be HOST[:PORT] without a scheme or path"
            )));
        }
        HostPort::parse(up, Some(DEFAULT_UPSTREAM_PORT))
            .map_err(|why| invalid(format!("= {up:?} is not HOST[:PORT] ({why})")))
    }

    /// The name the cache's certificate is checked against: `tls_server_name`, else the
    /// host of `cache` (the parsed `upstream`).
    pub(super) fn tls_name(&self, cache: &HostPort) -> String {
        match &self.tls_server_name {
            Some(name) => name.clone(),
            None => cache.host().to_owned(),
        }
    }

    /// The token manager's refresh and retry policy, from the `refresh_*`, `retry_*`,
    /// `token_timeout` and `username` keys.
    pub(super) fn refresh_policy(&self) -> RefreshPolicy {
        RefreshPolicy {
            ratio: self.refresh_ratio,
            margin: self.refresh_margin,
            jitter: self.refresh_jitter,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            timeout: self.token_timeout,
            username: self.username.clone(),
            ..RefreshPolicy::default()
        }
    }
}

/// Resolves `HOST:PORT` (port required; 0 means any free port) to its addresses.
fn resolve_host_port(s: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    HostPort::parse(s, None)
        .map_err(|e| e.to_string())?
        .resolve()
}
