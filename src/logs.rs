//! Log set-up shared by the binary and the tests that run the runner the
//! way the binary does.
//!
//! Default filter (when `RUST_LOG` is unset): wavault's own lines from
//! `info`, every other crate (whatsapp-rust, wacore, ...) from `warn`, sled
//! from `error`. whatsapp-rust logs contacts' Signal addresses (phone
//! numbers) at info during normal message receipt: they stay out of the
//! journal unless the operator asks for them with `RUST_LOG`.
//! wavault's own lines at info, warn and error may name a bot by its id (an
//! operator-chosen label), never a contact's number, a JID or message text.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "warn,wavault=info,sled=error";

/// `RUST_LOG` if set and valid, else [`DEFAULT_FILTER`].
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Installs the stderr subscriber with [`filter`] (ANSI colours only on a
/// terminal). Does nothing if a subscriber is already installed.
pub fn init() {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
