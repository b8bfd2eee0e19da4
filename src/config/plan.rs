//! The configuration as the daemon runs it. [`Settings::plan`] validates the merged settings
//! and converts, once, every value that is text in a configuration file (the listen
//! addresses, the cache's `HOST[:PORT]`, the admin listener with `""` for off, the socket
//! mode, the cluster port range) into its type. The server and `doctor` take a [`Plan`];
//! nothing after it parses configuration text again.

use std::net::SocketAddr;
use std::ops::RangeInclusive;

use crate::addr::HostPort;

use super::{ConfigError, ListenAddr, RefreshPolicy, Settings};

/// The validated configuration, with every address and mode parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The admin listener (`admin_listen`); `None` when it is off (`""`).
    pub admin_listen: Option<SocketAddr>,
    /// File mode of `unix:` listener sockets (`socket_mode`).
    pub socket_mode: u32,
    /// The top-level settings: the process-wide keys (`threads`, `max_connections`,
    /// `reauth_concurrency`, ...), typed already.
    pub settings: Settings,
    /// Every upstream, in the order of the configuration (one when `[[upstreams]]` is empty).
    pub upstreams: Vec<UpstreamPlan>,
}

/// One upstream: its listeners, its cache and the token that authenticates to it.
#[derive(Debug, Clone)]
pub struct UpstreamPlan {
    /// Label in logs and metrics (`default` without `[[upstreams]]`).
    pub name: String,
    /// Its local listeners, in order.
    pub listen: Vec<ListenAddr>,
    /// The cache (port 6380 when not given).
    pub cache: HostPort,
    /// The name the cache's certificate is checked against, and SNI.
    pub tls_server_name: String,
    /// Cluster mode, with the local node ports; `None`: not a cluster.
    pub cluster: Option<ClusterPlan>,
    /// The token manager's refresh and retry policy.
    pub refresh: RefreshPolicy,
    /// What identifies its token: upstreams with the same key share one token manager.
    pub identity: String,
    /// This upstream's merged settings (its entry over the top-level keys): counts,
    /// durations, paths and modes, typed already.
    pub settings: Settings,
}

/// Cluster mode's local node listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// The local ports for node listeners; `None`: ephemeral ports (a first listener on
    /// port 0 and no `cluster_ports`).
    pub ports: Option<RangeInclusive<u16>>,
}

impl Settings {
    /// Validates (see [`Settings::validate`]) and converts into the [`Plan`] the daemon runs;
    /// each value is parsed once, as it is checked.
    pub fn plan(&self) -> Result<Plan, ConfigError> {
        let (upstreams, admin_listen, socket_mode) = self.checked()?;
        Ok(Plan {
            admin_listen,
            socket_mode,
            settings: self.clone(),
            upstreams,
        })
    }
}
