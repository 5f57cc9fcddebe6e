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
}

impl Meta {
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

impl AttemptSink for Meta {
    fn attempt(&self, outcome: std::result::Result<(), String>) {
        let r = self.update(None, |m| {
            m.connection_attempts += 1;
            if let Err(e) = &outcome {
                m.last_connection_error = Some(e.clone());
            }
        });
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
