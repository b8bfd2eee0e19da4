//! The command line: `--config`, `--print-config`, and one optional flag per configuration
//! key (the [`Layer`], flattened).

use std::path::PathBuf;

use clap::Parser;

use super::Layer;

/// The command line. Every flag is optional and overrides the file and the environment only
/// when given; defaults live in [`Settings::default`](super::Settings::default).
#[derive(Debug, Default, Parser)]
#[command(
    name = "entra-redis-proxy",
    version,
    about = "Lets any Redis client use Azure Cache for Redis with Microsoft Entra ID tokens",
    long_about = "Lets any Redis client use Azure Cache for Redis / Azure Managed Redis with \
                  Microsoft Entra ID: point the client at the local listener; the proxy opens a \
                  TLS connection per client, AUTHs with an Entra token and re-AUTHs before it \
                  expires.\n\nSettings come from defaults < the --config file (TOML) < \
                  ENTRA_REDIS_PROXY_<KEY> environment variables < these flags. Durations are \
                  written 250ms, 5s, 3m or 1h.",
    after_help = "Every flag has a config-file key (the flag name with _ for -) and an environment \
                  variable ENTRA_REDIS_PROXY_<KEY>, e.g. --refresh-margin, refresh_margin, \
                  ENTRA_REDIS_PROXY_REFRESH_MARGIN.\n\n`entra-redis-proxy doctor [--json] [FLAGS]` checks the \
                  whole path once with the same configuration (token, claims, DNS, TCP, TLS, AUTH, \
                  PING, a read, every cluster node) and exits 0, 1 or 64."
)]
pub struct Cli {
    /// TOML config file; its keys are the flag names with `_` for `-`.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Every configuration key as an optional flag (declared in `keys`).
    #[command(flatten)]
    pub layer: Layer,
}
