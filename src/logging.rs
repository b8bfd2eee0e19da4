//! Logging set-up: `tracing` events to stderr, as text or one JSON object per line, filtered
//! by `RUST_LOG` (default `info`).

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Only the first call has an effect; later calls (or a
/// subscriber installed elsewhere, as in tests) are left alone rather than panicking.
pub fn init(format: LogFormat) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = match EnvFilter::try_from_default_env() {
            Ok(filter) => filter,
            Err(e) => {
                // An unset RUST_LOG is normal; a malformed one deserves a word, not silence.
                if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
                    eprintln!("entra-redis-proxy: ignoring RUST_LOG ({e}); logging at info");
                }
                EnvFilter::new("info")
            }
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour codes only for a person at a terminal, never into files or journald.
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(true);
        // try_init: a subscriber already installed (tests, embedding) is not an error here.
        let _ = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .try_init(),
        };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_init_is_harmless() {
        init(LogFormat::Json);
        init(LogFormat::Text);
        tracing::info!(check = 1, "logging initialised");
    }
}
