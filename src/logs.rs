//! Log set-up shared by the binary and the tests that run the runner the
//! way the binary does.
//!
//! Default filter (when `RUST_LOG` is unset): wavault's own lines from
//! `info`, every other crate (whatsapp-rust, wacore, ...) from `warn`, sled
//! from `error`. whatsapp-rust logs contacts' Signal addresses (phone
//! numbers) at info during normal message receipt: they stay out of the
//! journal unless the operator asks for them with `RUST_LOG`.
//! Its warnings can still name a user, so with the default filter every
//! line has its JIDs replaced by their kind ([`redact_jids`]).
//! wavault's own lines at info, warn and error may name a bot by its id (an
//! operator-chosen label), never a contact's number, a JID or message text.

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "warn,wavault=info,sled=error";

/// `RUST_LOG` if set and valid, else [`DEFAULT_FILTER`].
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Whether the default filter applies (`RUST_LOG` unset or invalid): then
/// every line is passed through [`redact_jids`], because other crates'
/// warnings can name a user (whatsapp-rust's usync: "User …@s.whatsapp.net
/// has companion devices but no signedKeyIndexBytes"). An operator who sets
/// `RUST_LOG` asked for the details and gets them as they are.
fn default_filter_applies() -> bool {
    EnvFilter::try_from_default_env().is_err()
}

/// WhatsApp's JID servers: a user part before one of these is a phone
/// number, a LID or a group id.
const JID_SERVERS: &[&str] = &[
    "s.whatsapp.net",
    "hosted.lid",
    "hosted",
    "lid",
    "g.us",
    "c.us",
    "broadcast",
    "newsletter",
    "bot",
];

/// `line` with every JID (`4915112345678@s.whatsapp.net`, `…:12@lid`,
/// `1203…@g.us`) replaced by what kind of address it was (`<phone JID>`,
/// `<LID>`, `<group JID>`, `<JID>`).
pub fn redact_jids(line: &str) -> std::borrow::Cow<'_, str> {
    let is_user = |c: char| c.is_ascii_digit() || matches!(c, ':' | '.' | '-' | '_');
    let mut out = String::new();
    let mut done = 0; // bytes of `line` already in `out`
    for (at, _) in line.match_indices('@') {
        let after = &line[at + 1..];
        let ends = |rest: &str| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        let Some(server) = JID_SERVERS
            .iter()
            .find(|s| after.strip_prefix(**s).is_some_and(ends))
        else {
            continue;
        };
        if at < done {
            continue;
        }
        let start = line[done..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_user(c))
            .last()
            .map(|(i, _)| done + i);
        let Some(start) = start else { continue };
        if !line[start..at].bytes().any(|b| b.is_ascii_digit()) {
            continue;
        }
        out.push_str(&line[done..start]);
        out.push_str(match *server {
            "s.whatsapp.net" | "c.us" => "<phone JID>",
            "lid" | "hosted.lid" => "<LID>",
            "g.us" => "<group JID>",
            _ => "<JID>",
        });
        done = at + 1 + server.len();
    }
    if done == 0 {
        return std::borrow::Cow::Borrowed(line);
    }
    out.push_str(&line[done..]);
    std::borrow::Cow::Owned(out)
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
    let redact = default_filter_applies();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(move || OneLine(std::io::stderr(), redact))
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
/// With `true`, JIDs are redacted too ([`redact_jids`]).
struct OneLine<W>(W, bool);

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
            Ok(s) => {
                let joined = if s.trim_end_matches('\n').contains('\n') {
                    std::borrow::Cow::Owned(one_line(s))
                } else {
                    std::borrow::Cow::Borrowed(s)
                };
                if self.1 {
                    self.0.write_all(redact_jids(&joined).as_bytes())?
                } else {
                    self.0.write_all(joined.as_bytes())?
                }
            }
            Err(_) => self.0.write_all(buf)?,
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
        let mut w = super::OneLine(Vec::new(), true);
        w.write_all(b"a WARN x(first\n\nCaused by:\n    second)\n")
            .unwrap();
        w.write_all(b"next event\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "a WARN x(first; caused by: second)\nnext event\n"
        );
    }

    /// Every JID is replaced by its kind; other `@`s, numbers and text
    /// stay; a line with none is untouched.
    #[test]
    fn jids_are_redacted() {
        use super::redact_jids;
        let cases = [
            (
                "WARN bot{bot=logs}: User 4915100001017@s.whatsapp.net has companion devices",
                "WARN bot{bot=logs}: User <phone JID> has companion devices",
            ),
            (
                "from 4915100001017:12@s.whatsapp.net and 123456789012345@lid.",
                "from <phone JID> and <LID>.",
            ),
            (
                r#"{"message":"group 120363048183000001@g.us (x@g.us)"}"#,
                r#"{"message":"group <group JID> (x@g.us)"}"#,
            ),
            (
                "retrying in 5s after 3 attempts",
                "retrying in 5s after 3 attempts",
            ),
            (
                "mail ops@example.com; 12@lidl.de",
                "mail ops@example.com; 12@lidl.de",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact_jids(line), want, "{line}");
        }
        use std::io::Write;
        let mut w = super::OneLine(Vec::new(), true);
        w.write_all(b"a 4915112345678@s.whatsapp.net\n").unwrap();
        let mut raw = super::OneLine(Vec::new(), false);
        raw.write_all(b"a 4915112345678@s.whatsapp.net\n").unwrap();
        assert_eq!(w.0, b"a <phone JID>\n");
        assert_eq!(
            raw.0, b"a 4915112345678@s.whatsapp.net\n",
            "RUST_LOG set: as it is"
        );
    }
}
