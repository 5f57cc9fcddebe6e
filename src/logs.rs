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

/// Whether log lines get ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
pub fn ansi(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the stderr subscriber with [`filter`] (colours as [`ansi`]
/// says). Does nothing if a subscriber is already installed.
pub fn init() {
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use super::ansi;
        assert!(ansi(true, None));
        assert!(ansi(true, Some("".into())), "empty NO_COLOR is unset");
        assert!(!ansi(true, Some("1".into())));
        assert!(!ansi(false, None));
        assert!(!ansi(false, Some("1".into())));
    }
}
