//! A bot's session metadata as the runner writes it: one writer per bot
//! (the event handler and the transport wrapper write concurrently), which
//! also announces status changes and whether the bot is connected now.

use super::net::AttemptSink;
use super::{RunnerEvent, Shared};
use crate::botid::BotId;
use crate::error::Result;
use crate::sessions::{SessionMeta, Sessions, Status};
use crate::vault::now;
use std::sync::{Arc, Mutex};

/// Serialises the metadata writes of one bot (event handler and transport
/// wrapper write concurrently) and announces status changes.
pub(crate) struct Meta {
    pub(super) shared: Arc<Shared>,
    pub(super) bot: BotId,
    pub(super) sessions: Mutex<Sessions>,
    /// Set on PairSuccess: the next `connected` is recorded with reason
    /// "paired" (statistics count pairings apart from logins without QR).
    pub(super) just_paired: std::sync::atomic::AtomicBool,
    /// Whether the bot is connected now (senders wait on it).
    pub(super) connected: tokio::sync::watch::Sender<bool>,
    /// The bot's client, once built: its reconnect counter drives the
    /// backoff the retry state shows. Weak: the client holds this `Meta`
    /// (its transport factory counts attempts here), so a strong handle
    /// would keep both, and the vault, alive after the bot stops.
    pub(super) client: std::sync::OnceLock<std::sync::Weak<whatsapp_rust::Client>>,
}

impl Meta {
    /// A writer for a bot that has no client (it failed to start, or a
    /// fleet host does not run it): status, errors and events as usual.
    pub(super) fn detached(shared: &Arc<Shared>, bot: &BotId) -> Meta {
        Meta {
            shared: shared.clone(),
            bot: bot.clone(),
            sessions: Mutex::new(Sessions::new(shared.vault.view(bot))),
            just_paired: Default::default(),
            connected: tokio::sync::watch::Sender::new(false),
            client: Default::default(),
        }
    }

    pub(super) fn update(
        &self,
        reason: Option<&str>,
        f: impl FnOnce(&mut SessionMeta),
    ) -> Result<SessionMeta> {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.load(now())?.status;
        let after = s.update(now(), reason, f)?;
        drop(s);
        if after.status != before {
            tracing::info!(
                bot = %self.bot,
                "{before} -> {} ({})",
                after.status,
                reason.unwrap_or("-")
            );
            self.shared.emit(RunnerEvent::Status {
                bot: self.bot.clone(),
                status: after.status,
                reason: reason.map(str::to_owned),
            });
        }
        Ok(after)
    }

    pub(super) fn status(&self, status: Status, reason: Option<&str>) {
        self.connected.send_replace(status == Status::Connected);
        let t = now();
        if let Err(e) = self.update(reason, |m| {
            m.status = status;
            m.last_activity = Some(t);
        }) {
            tracing::error!(bot = %self.bot, "could not record a status change: {e}");
        }
    }

    /// Real traffic (a message sent) counts as activity.
    pub(crate) fn activity(&self, t: i64) {
        if let Err(e) = self.update(None, |m| m.last_activity = Some(t)) {
            tracing::error!(bot = %self.bot, "could not record activity: {e}");
        }
    }

    pub(super) fn error(&self, text: String) {
        if let Err(e) = self.update(None, |m| m.last_connection_error = Some(text)) {
            tracing::error!(bot = %self.bot, "could not record a connection error: {e}");
        }
    }

    pub(super) fn current(&self) -> Status {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.load(now()).map(|m| m.status).unwrap_or_default()
    }
}

/// The delay whatsapp-rust 0.7 waits before its next attempt after a
/// failure while its reconnect counter is `errors` (WhatsApp Web's
/// Fibonacci backoff: 1 s, 1 s, 2 s, 3 s, 5 s… up to 900 s), without its
/// ±10 % jitter.
pub(crate) fn backoff(errors: u32) -> std::time::Duration {
    const MAX_MS: u64 = 900_000;
    let (mut a, mut b) = (1000u64, 1000u64);
    for _ in 0..errors.min(64) {
        let next = a.saturating_add(b).min(MAX_MS);
        a = b;
        b = next;
    }
    std::time::Duration::from_millis(a.min(MAX_MS))
}

impl Meta {
    /// Records the retry state after an attempt: a failure waits for the
    /// client's backoff (its counter is not yet raised for this failure:
    /// the client counts after the attempt returns), a success clears it
    /// (an attempt under way; `Connected` or a stop clears it for good).
    /// The recorded status stays (`connecting` until the first login):
    /// statistics and the timeline count both alike, and a bot that needs
    /// pairing shows its QR code as `connecting` once the server answers.
    fn retry_after(&self, failed: bool) {
        let bot = self.bot.to_string();
        if !failed {
            self.shared
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retry
                .remove(&bot);
            return;
        }
        let errors = self
            .client
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map(|c| c.stats().reconnect_errors)
            .unwrap_or(0);
        let due = std::time::SystemTime::now() + backoff(errors);
        let next_at = due
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0))
            .unwrap_or(0);
        self.shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retry
            .insert(
                bot,
                crate::status::Retry {
                    attempt: errors.saturating_add(1),
                    next_at,
                },
            );
    }
}

impl AttemptSink for Meta {
    fn attempt(&self, outcome: std::result::Result<(), String>) {
        let r = self.update(None, |m| {
            m.connection_attempts += 1;
            if let Err(e) = &outcome {
                m.last_connection_error = Some(e.clone());
            }
        });
        self.retry_after(outcome.is_err());
        match r {
            Ok(m) => self.shared.emit(RunnerEvent::Attempt {
                bot: self.bot.clone(),
                attempts: m.connection_attempts,
                error: outcome.err(),
            }),
            Err(e) => {
                tracing::error!(bot = %self.bot, "could not record a connection attempt: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// whatsapp-rust 0.7's sequence (`fibonacci_backoff`), without jitter.
    #[test]
    fn backoff_follows_the_clients_fibonacci_sequence() {
        let secs: Vec<u64> = (0..8).map(|n| super::backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 3, 5, 8, 13, 21]);
        assert_eq!(super::backoff(40).as_secs(), 900);
        assert_eq!(super::backoff(u32::MAX).as_secs(), 900);
    }
}
