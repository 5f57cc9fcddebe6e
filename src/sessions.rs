//! Session metadata per bot (the `bot_sessions` table of the original design)
//! and its append-only history of status transitions.
//!
//! Both are sealed records of the bot's view: the metadata under
//! [`Kind::SESSION_META`] (one record), each transition under
//! [`Kind::SESSION_HISTORY`] named by its sequence number. A transition
//! writes both in one atomic batch, so the history never disagrees with the
//! current status. Time is passed in, never read here, so tests inject it.

use crate::codec;
use crate::error::{Error, Result};
use crate::vault::{BatchOp, BotView, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const META_NAME: &[u8] = b"meta";

/// The reasons the runner writes into the history that others read back
/// (statistics count pairings apart from logins): written in one place.
pub mod reason {
    /// `→ connected` right after a QR or pair-code pairing.
    pub const PAIRED: &str = "paired";
    /// `→ connected` with stored credentials (no QR).
    pub const LOGGED_IN: &str = "logged in";
}

/// Where a bot's session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Never started, or stopped cleanly.
    #[default]
    Disconnected,
    /// Starting a connection (first attempt).
    Connecting,
    /// Logged in and connected.
    Connected,
    /// Lost the connection; retrying with backoff.
    Reconnecting,
    /// The session was invalidated (must pair again). Permanent.
    LoggedOut,
    /// Another client took the session. Permanent.
    Replaced,
    /// A permanent failure other than the above (ban, outdated client, QR codes exhausted).
    Error,
    /// Fleet (`run --nats`): another host holds the bot's owner key; this
    /// host does not run it and takes it once the key is free.
    HeldElsewhere,
    /// Fleet: NATS cannot be reached (or refused), so ownership cannot be
    /// known; the bot does not run here until it can.
    FleetUnreachable,
}

impl Status {
    /// The word shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Disconnected => "disconnected",
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Reconnecting => "reconnecting",
            Status::LoggedOut => "logged_out",
            Status::Replaced => "replaced",
            Status::Error => "error",
            Status::HeldElsewhere => "held_elsewhere",
            Status::FleetUnreachable => "fleet_unreachable",
        }
    }

    /// True for states the runner does not retry from.
    pub fn is_permanent(self) -> bool {
        matches!(self, Status::LoggedOut | Status::Replaced | Status::Error)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata record of one bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionMeta {
    /// The paired phone number (user part of the JID), once known.
    pub phone: Option<String>,
    pub status: Status,
    /// Unix seconds of the last thing the session did.
    pub last_activity: Option<i64>,
    /// Unix seconds when the bot was paired (set once the credentials are durable).
    pub authenticated_at: Option<i64>,
    /// Connection attempts since the vault has known this bot.
    pub connection_attempts: u64,
    /// Text of the last connection error.
    pub last_connection_error: Option<String>,
    /// Free-form key/value metadata.
    pub metadata: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Sequence number of the last history entry (0: none yet).
    pub history_seq: u64,
}

/// One status transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    pub from: Status,
    pub to: Status,
    /// Why (e.g. "shutdown", "logged out by server", "pairing").
    pub reason: Option<String>,
}

/// Reads and writes one bot's metadata and history.
#[derive(Debug, Clone)]
pub struct Sessions {
    view: BotView,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    codec::decode(bytes).map_err(|e| Error::damaged(format!("{what} is malformed: {e}")))
}

impl Sessions {
    /// Metadata access for the bot behind `view`.
    pub fn new(view: BotView) -> Self {
        Sessions { view }
    }

    /// The current metadata (a fresh record stamped `now` if none exists yet).
    pub fn load(&self, now: i64) -> Result<SessionMeta> {
        match self.view.get(Kind::SESSION_META, META_NAME)? {
            Some(b) => decode(&b, "session metadata"),
            None => Ok(SessionMeta {
                created_at: now,
                updated_at: now,
                ..SessionMeta::default()
            }),
        }
    }

    /// Applies `f` to the metadata and stores it; when the status changes, a
    /// history entry is appended in the same atomic batch.
    pub fn update(
        &self,
        now: i64,
        reason: Option<&str>,
        f: impl FnOnce(&mut SessionMeta),
    ) -> Result<SessionMeta> {
        let mut meta = self.load(now)?;
        let before = meta.status;
        f(&mut meta);
        meta.updated_at = now;
        let mut ops = Vec::with_capacity(2);
        if meta.status != before {
            meta.history_seq += 1;
            let entry = HistoryEntry {
                seq: meta.history_seq,
                at: now,
                from: before,
                to: meta.status,
                reason: reason.map(str::to_owned),
            };
            ops.push(BatchOp::Put {
                kind: Kind::SESSION_HISTORY,
                name: meta.history_seq.to_be_bytes().to_vec(),
                data: codec::encode(&entry),
            });
        }
        ops.push(BatchOp::Put {
            kind: Kind::SESSION_META,
            name: META_NAME.to_vec(),
            data: codec::encode(&meta),
        });
        self.view.apply(&ops)?;
        Ok(meta)
    }

    /// Sets the status (recording the transition with its reason).
    pub fn set_status(
        &self,
        now: i64,
        status: Status,
        reason: Option<&str>,
    ) -> Result<SessionMeta> {
        self.update(now, reason, |m| {
            m.status = status;
            m.last_activity = Some(now);
        })
    }

    /// Counts one connection attempt and its outcome.
    pub fn record_attempt(&self, now: i64, error: Option<&str>) -> Result<SessionMeta> {
        self.update(now, None, |m| {
            m.connection_attempts += 1;
            if let Some(e) = error {
                m.last_connection_error = Some(e.to_owned());
            }
        })
    }

    /// The whole history, oldest first.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let mut out = self
            .view
            .scan(Kind::SESSION_HISTORY)?
            .into_iter()
            .map(|(_, d)| decode::<HistoryEntry>(&d, "session history entry"))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    /// The entries [`Sessions::prune_history`] would delete.
    pub fn prunable_history(&self, cutoff: i64) -> Result<Vec<HistoryEntry>> {
        let history = self.history()?;
        let keep = history
            .iter()
            .filter(|e| e.at < cutoff)
            .map(|e| e.seq)
            .max();
        Ok(history
            .into_iter()
            .filter(|e| e.at < cutoff && Some(e.seq) != keep)
            .collect())
    }

    /// Deletes history entries older than `cutoff` (unix seconds), except
    /// the newest of them: it says what the status was at the cutoff, so a
    /// bot connected for longer than the retention still has a known
    /// status (statistics). Returns how many were deleted.
    pub fn prune_history(&self, cutoff: i64) -> Result<usize> {
        let old: Vec<BatchOp> = self
            .prunable_history(cutoff)?
            .into_iter()
            .map(|e| BatchOp::Delete {
                kind: Kind::SESSION_HISTORY,
                name: e.seq.to_be_bytes().to_vec(),
            })
            .collect();
        self.view.apply(&old)?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::crypto::KdfParams;
    use crate::vault::{BotConfig, Vault};
    use crate::BotId;

    fn setup() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::create(dir.path(), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let id = BotId::parse("s").unwrap();
        v.add_bot(&BotConfig::new(id.clone())).unwrap();
        (dir, Sessions::new(v.view(&id)))
    }

    #[test]
    fn transitions_append_history_atomically_with_meta() {
        let (_d, s) = setup();
        s.set_status(100, Status::Connecting, None).unwrap();
        s.record_attempt(101, Some("refused")).unwrap();
        s.set_status(102, Status::Connected, Some("login")).unwrap();
        s.set_status(103, Status::Connected, None).unwrap(); // no transition
        let m = s.load(0).unwrap();
        assert_eq!(
            (m.status, m.connection_attempts, m.history_seq),
            (Status::Connected, 1, 2)
        );
        assert_eq!(m.last_connection_error.as_deref(), Some("refused"));
        assert_eq!((m.created_at, m.updated_at), (100, 103));
        let h = s.history().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            (h[1].from, h[1].to, h[1].at),
            (Status::Connecting, Status::Connected, 102)
        );
        // The newest entry before the cutoff stays: it gives the status then.
        assert_eq!(s.prune_history(101).unwrap(), 0);
        assert_eq!(s.prune_history(103).unwrap(), 1);
        let h = s.history().unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].at, 102);
    }
}
