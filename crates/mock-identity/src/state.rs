//! What the connections share: the configuration and the mutable [`State`] (injected
//! failures, the lifetime override, what was issued and asked).

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::options::MockConfig;

/// How the next token requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// HTTP 500 with a short body.
    ServerError,
    /// HTTP 400 with an Entra error body (AADSTS7000215, invalid client secret).
    AadError,
    /// HTTP 200 with a body that is not valid JSON.
    Malformed,
    /// No answer at all, until the client gives up.
    Hang,
}

/// Mutable state shared by connections.
#[derive(Default)]
pub(super) struct State {
    /// Active failure and how many more requests it applies to (`None`: all).
    pub(super) failure: Option<(FailMode, Option<u64>)>,
    /// Lifetime override set through the control endpoint.
    pub(super) lifetime: Option<Duration>,
    /// Every token issued.
    pub(super) issued: Vec<Value>,
    /// Every token request seen.
    pub(super) requests: Vec<Value>,
    /// Client ids of the user-assigned managed identities "assigned" to this machine; when
    /// set, a managed-identity request for another client id gets IMDS's "Identity not found".
    pub(super) assigned_identities: Option<Vec<String>>,
}

/// The running mock's shared parts.
pub(super) struct Mock {
    /// The command line's configuration.
    pub(super) config: MockConfig,
    /// What the control endpoint and the token endpoints change.
    pub(super) state: Mutex<State>,
}

impl Mock {
    /// The state, even after a panic elsewhere poisoned the lock.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
