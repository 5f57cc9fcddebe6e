//! What a bot's configuration may hold: the checks `bot add`, `bot set` and
//! `restore` apply, so a configuration that arrives in a backup file is held
//! to what an operator could have typed on this host.

use crate::messaging::hook::{self, keys};
use crate::vault::BotConfig;

/// Longest hook time limit accepted: one day.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 86_400_000;
/// Most hook calls of one bot in flight at once (as `--hook-concurrency`).
pub const MAX_HOOK_CONCURRENCY: u64 = 1024;
/// Largest inbound queue (as `--queue-max`, a u32).
pub const MAX_QUEUE: u64 = u32::MAX as u64;
/// Longest age of a queued message: ten years.
pub const MAX_QUEUE_AGE_SECS: u64 = 3650 * 86_400;
/// Longest webhook URL accepted.
pub const MAX_WEBHOOK_LEN: usize = 4096;

/// One field of a configuration that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field or setting (`webhook`, `on_message`, `hook_concurrency`, `phone`...).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn problem(field: &str, problem: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The numeric settings kept in `extra`, with their accepted ranges.
const LIMITS: [(&str, u64, u64); 4] = [
    (keys::TIMEOUT_MS, 1, MAX_HOOK_TIMEOUT_MS),
    (keys::CONCURRENCY, 1, MAX_HOOK_CONCURRENCY),
    (keys::QUEUE_MAX, 1, MAX_QUEUE),
    (keys::QUEUE_MAX_AGE_SECS, 1, MAX_QUEUE_AGE_SECS),
];

impl BotConfig {
    /// Checks every field an operator sets: the webhook URL (http or https,
    /// no control characters), the on-message command (not empty, no NUL),
    /// not both, the numeric hook and queue limits (whole numbers in range),
    /// and the pair-code phone number (7 to 15 digits, not starting with 0;
    /// `+`, spaces, `-`, `.` and parentheses allowed between them). The id
    /// was checked when it was parsed. Other `extra` keys are kept as they are.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if let Some(url) = &self.webhook {
            if let Err(e) = hook::check_webhook(url) {
                return Err(problem("webhook", e.to_string()));
            }
            if url.len() > MAX_WEBHOOK_LEN || url.chars().any(char::is_control) {
                return Err(problem(
                    "webhook",
                    format!(
                        "not a usable URL (control characters, or over {MAX_WEBHOOK_LEN} bytes)"
                    ),
                ));
            }
        }
        if let Some(cmd) = self.extra.get(keys::ON_MESSAGE) {
            if cmd.trim().is_empty() {
                return Err(problem(keys::ON_MESSAGE, "the command is empty"));
            }
            if cmd.contains('\0') {
                return Err(problem(keys::ON_MESSAGE, "the command holds a NUL byte"));
            }
            if self.webhook.is_some() {
                return Err(problem(
                    keys::ON_MESSAGE,
                    "set together with a webhook; a bot has one hook, a webhook or a command",
                ));
            }
        }
        for (key, min, max) in LIMITS {
            if let Some(v) = self.extra.get(key) {
                match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => {}
                    _ => {
                        return Err(problem(
                            key,
                            format!("{v:?} is not a whole number from {min} to {max}"),
                        ))
                    }
                }
            }
        }
        if let Some(r) = self.extra.get(keys::SEND_RATE) {
            crate::messaging::pacing::parse_rate(r).map_err(|e| problem(keys::SEND_RATE, e))?;
        }
        if let Some(v) = self.extra.get(keys::EVENTS) {
            if let Err(e) = crate::messaging::events::EventKinds::parse(v) {
                return Err(problem(keys::EVENTS, e.to_string()));
            }
        }
        if let Some(v) = self.extra.get(keys::SINK) {
            hook::Sink::parse(v).map_err(|e| problem(keys::SINK, e))?;
        }
        if let Some(p) = &self.phone {
            check_phone(p)?;
        }
        Ok(())
    }
}

fn check_phone(p: &str) -> Result<(), ConfigProblem> {
    let ok_chars = p
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'));
    let digits: String = p.chars().filter(char::is_ascii_digit).collect();
    if ok_chars && (7..=15).contains(&digits.len()) && !digits.starts_with('0') {
        Ok(())
    } else {
        Err(problem(
            "phone",
            "not a phone number in international format (7 to 15 digits with the country code, e.g. 4915112345678)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::botid::BotId;

    fn cfg() -> BotConfig {
        BotConfig::new(BotId::parse("b").unwrap())
    }

    #[test]
    fn accepts_what_an_operator_types() {
        let mut c = cfg();
        assert_eq!(c.check(), Ok(()));
        c.webhook = Some("https://example.com/hook?x=1".into());
        c.phone = Some("+52 (55) 1234-5678".into());
        for (k, v) in [
            (keys::TIMEOUT_MS, "10000"),
            (keys::CONCURRENCY, "1024"),
            (keys::QUEUE_MAX, "1"),
            (keys::QUEUE_MAX_AGE_SECS, "604800"),
            (keys::SEND_RATE, "20/min"),
            (keys::EVENTS, "message,receipt,status,decrypt_failure"),
            ("moved_at", "1700000000"),
        ] {
            c.extra.insert(k.into(), v.into());
        }
        assert_eq!(c.check(), Ok(()));
        c.webhook = None;
        c.extra
            .insert(keys::ON_MESSAGE.into(), "cat >> /tmp/in".into());
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn refuses_each_bad_field_by_name() {
        type Forge = fn(&mut BotConfig);
        let cases: Vec<(&str, Forge)> = vec![
            ("webhook", |c| c.webhook = Some("file:///etc/passwd".into())),
            ("webhook", |c| c.webhook = Some("http://a/\r\nX: y".into())),
            (keys::ON_MESSAGE, |c| {
                c.extra.insert(keys::ON_MESSAGE.into(), "  ".into());
            }),
            (keys::ON_MESSAGE, |c| {
                c.webhook = Some("https://a".into());
                c.extra.insert(keys::ON_MESSAGE.into(), "true".into());
            }),
            (keys::CONCURRENCY, |c| {
                c.extra.insert(keys::CONCURRENCY.into(), "1000000".into());
            }),
            (keys::CONCURRENCY, |c| {
                c.extra.insert(keys::CONCURRENCY.into(), "0".into());
            }),
            (keys::TIMEOUT_MS, |c| {
                c.extra
                    .insert(keys::TIMEOUT_MS.into(), "18446744073709551615".into());
            }),
            (keys::QUEUE_MAX, |c| {
                c.extra.insert(keys::QUEUE_MAX.into(), "-1".into());
            }),
            (keys::QUEUE_MAX_AGE_SECS, |c| {
                c.extra
                    .insert(keys::QUEUE_MAX_AGE_SECS.into(), "ten".into());
            }),
            (keys::SEND_RATE, |c| {
                c.extra.insert(keys::SEND_RATE.into(), "0/min".into());
            }),
            (keys::EVENTS, |c| {
                c.extra.insert(keys::EVENTS.into(), "message,typing".into());
            }),
            ("phone", |c| c.phone = Some("123".into())),
            ("phone", |c| c.phone = Some("15551234567@evil".into())),
            ("phone", |c| c.phone = Some("0123456789".into())),
        ];
        for (field, set) in cases {
            let mut c = cfg();
            set(&mut c);
            let e = c.check().expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }
}
