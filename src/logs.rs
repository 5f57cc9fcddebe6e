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

/// How `run` writes its log lines to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line (journald, Loki): `timestamp`, `level`,
    /// `target`, `message` and the event's fields at the top level, and
    /// `span` (`{"name":"bot","bot":ID}`) on every line about a bot.
    Json,
}

/// Installs the stderr subscriber with [`filter`] as text (colours as
/// [`ansi`] says). Does nothing if a subscriber is already installed.
pub fn init() {
    init_with(LogFormat::Text)
}

/// [`init`] in the given format.
pub fn init_with(format: LogFormat) {
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(|| OneLine(std::io::stderr()))
        .with_target(false);
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = match format {
        LogFormat::Text => b
            .with_ansi(ansi(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .finish()
            .with(RetryEcho)
            .try_init(),
        LogFormat::Json => b
            .json()
            .flatten_event(true)
            .with_target(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(RetryEcho)
            .try_init(),
    };
}

/// Drops whatsapp-rust's echoes of a failed connection attempt, which it
/// retries: the handshake's own error events (no message, ERROR) and the
/// ERROR "Failed to connect: ... Will retry...". The attempt's failure
/// stays as one WARN line with the whole cause (`error=...`, logged by the
/// connect step itself), so each retried failure is one WARN line.
struct RetryEcho;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryEcho {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !is_retry_echo(event)
    }
}

fn is_retry_echo(event: &tracing::Event<'_>) -> bool {
    /// The message, and the target a `log` record had (whatsapp-rust logs
    /// through the `log` crate too: such events carry it as `log.target`).
    #[derive(Default)]
    struct Fields {
        message: Option<String>,
        log_target: Option<String>,
    }
    impl tracing::field::Visit for Fields {
        fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
            match f.name() {
                "log.target" => self.log_target = Some(v.to_owned()),
                "message" => self.message = Some(v.to_owned()),
                _ => {}
            }
        }
        fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
            if f.name() == "message" {
                self.message = Some(format!("{v:?}"));
            }
        }
    }
    let mut m = Fields::default();
    event.record(&mut m);
    let target = m.log_target.as_deref().unwrap_or(event.metadata().target());
    match m.message {
        None => target == "whatsapp_rust::handshake",
        Some(m) => {
            target.starts_with("whatsapp_rust")
                && m.starts_with("Failed to connect:")
                && m.ends_with("Will retry...")
        }
    }
}

/// The span every line about a bot is logged in (its own tasks and the
/// tasks its whatsapp-rust client spawns): text lines start with
/// `bot{bot=ID}:`, JSON lines carry `"span":{"bot":ID,...}`. At level ERROR
/// so that it is enabled under any filter that lets a line through (a
/// span's level only decides whether it is recorded).
pub fn bot_span(bot: &crate::BotId) -> tracing::Span {
    tracing::error_span!("bot", bot = %bot)
}

/// One log event, one line: the formatter writes each event with one
/// `write_all`; line breaks inside it (multi-line error values, such as
/// anyhow's `Caused by:` lists that whatsapp-rust logs) become `; `.
struct OneLine<W>(W);

/// `text` without its inner line breaks: lines trimmed, empty ones
/// dropped, joined by `; `; the final newline kept.
pub fn one_line(text: &str) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if !body.contains('\n') {
        return text.to_owned();
    }
    let mut out = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace("Caused by:; ", "caused by: ");
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(s) if s.trim_end_matches('\n').contains('\n') => {
                self.0.write_all(one_line(s).as_bytes())?
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    /// whatsapp-rust's "Failed to connect: ... Will retry..." is dropped
    /// both as a tracing event and as a `log` record bridged into tracing
    /// (target `log`, the real one in `log.target`); other lines stay.
    #[test]
    fn retry_echoes_are_dropped_also_when_they_come_through_log() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tracing_subscriber::layer::SubscriberExt;
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
            fn on_event(
                &self,
                _: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(super::RetryEcho)
            .with(Count(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                target: "whatsapp_rust::client::lifecycle",
                "Failed to connect: failed to resolve app version. Will retry..."
            );
            tracing::event!(
                target: "log",
                tracing::Level::ERROR,
                log.target = "whatsapp_rust::client::lifecycle",
                "Failed to connect: failed to resolve app version. Will retry..."
            );
            assert_eq!(seen.load(Ordering::SeqCst), 0, "an echo got through");
            tracing::event!(
                target: "log",
                tracing::Level::ERROR,
                log.target = "whatsapp_rust::client",
                "something else"
            );
            tracing::warn!(target: "wavault::runner", "Failed to connect: ours. Will retry...");
        });
        assert_eq!(seen.load(Ordering::SeqCst), 2, "other lines were dropped");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use super::ansi;
        assert!(ansi(true, None));
        assert!(ansi(true, Some("".into())), "empty NO_COLOR is unset");
        assert!(!ansi(true, Some("1".into())));
        assert!(!ansi(false, None));
        assert!(!ansi(false, Some("1".into())));
    }

    #[test]
    fn multi_line_events_become_one_line() {
        use super::one_line;
        let anyhow = "2026-12-01T19:31:30Z  WARN error=Version(Failed to fetch latest WhatsApp version\n\nCaused by:\n    HTTP request failed: refused)\n";
        assert_eq!(
            one_line(anyhow),
            "2026-12-01T19:31:30Z  WARN error=Version(Failed to fetch latest WhatsApp version; caused by: HTTP request failed: refused)\n"
        );
        assert_eq!(one_line("plain line\n"), "plain line\n");
    }

    #[test]
    fn the_writer_joins_an_event_into_one_line() {
        use std::io::Write;
        let mut w = super::OneLine(Vec::new());
        w.write_all(b"a WARN x(first\n\nCaused by:\n    second)\n")
            .unwrap();
        w.write_all(b"next event\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "a WARN x(first; caused by: second)\nnext event\n"
        );
    }
}
