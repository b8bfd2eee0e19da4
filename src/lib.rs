//! entra-redis-proxy: a sidecar that lets any Redis client talk to Azure Cache for Redis /
//! Azure Managed Redis with Microsoft Entra ID authentication.
//!
//! Layout (one concern per module):
//! - [`addr`]: [`addr::HostPort`], the one `HOST:PORT` parser and formatter.
//! - [`config`]: the typed configuration (defaults < file < environment < flags) and its validation.
//! - [`logging`]: tracing-subscriber set-up (text or JSON).
//! - [`resp`]: allocation-free RESP2/RESP3/inline frame scanners; pure, no I/O.
//! - [`token`]: access tokens, the [`token::TokenSource`] trait, the token file and Entra
//!   credentials, and the [`token::TokenManager`] that refreshes and publishes tokens.
//! - [`upstream`]: TLS connections to the cache, authenticated with the current token.
//! - [`warm`]: warm upstream connections kept ready (and re-authenticated) for new clients.
//! - [`pool`]: shared upstream connections (`pool_size`): pipelined TLS connections that
//!   carry the stateless commands of many sessions, replies routed back to each.
//! - [`session`]: one client connection and its upstream connection; re-AUTH at safe points;
//!   the shared mode, where a session uses [`pool`] until a command pins it.
//! - [`sockio`]: reading what a socket has without waiting or holding an idle buffer.
//! - [`listener`]: binding TCP and Unix listeners, the accept loop (a permit before each
//!   accept, a pause when accepting fails), one session spawned per client.
//! - [`server`]: the running proxy: listeners bound for each upstream, token managers, the
//!   connection limit, the admin endpoint, SIGTERM/SIGINT shutdown.
//! - [`startup`]: [`startup::StartupError`], why the proxy could not start, with its exit code.
//! - [`cluster`]: cluster mode: a local listener per cluster node, node addresses in replies
//!   rewritten to them ([`cluster::rewrite`], pure).
//! - [`metrics`] and [`admin`]: Prometheus metrics, health and readiness endpoints.
//! - [`doctor`]: the `doctor` subcommand: every step of the path checked once, with remedies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The build without `azure` is compiled by the test command (its unit tests) but not linted
// by clippy there (that would check most dependencies a second time): rustc's own warnings
// are errors in it instead, so code that only that build sees stays clean.
#![cfg_attr(not(feature = "azure"), deny(warnings))]

pub mod addr;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod resp;
pub mod server;
pub mod session;
pub mod sockio;
pub mod startup;
pub mod token;
pub mod upstream;
pub mod warm;
