//! Listeners, the accept loop, connection limits and shutdown.

use crate::config::Settings;

/// Runs the proxy until shutdown (being written).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let _ = settings;
    anyhow::bail!("not yet implemented")
}
