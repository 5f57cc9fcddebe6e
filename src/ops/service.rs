//! What a running `run` offers beyond the operations: the state only it
//! knows (QR codes waiting, when each bot started, job and alert counters)
//! and its stop signal. The web surface is built on this, so it reads
//! through the same operations as the command line and never reaches into
//! the runner.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use super::Host;

/// Runner state that is not in the vault.
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// The QR code each unpaired bot shows now.
    pub qr: HashMap<String, String>,
    /// When each bot's supervisor started its client.
    pub started: HashMap<String, Instant>,
    /// Runs and last success (unix seconds) per timer job.
    pub jobs: BTreeMap<&'static str, JobCounter>,
    /// Alerts raised, per kind.
    pub alerts: BTreeMap<String, u64>,
    /// Bots waiting to retry after a failed connection attempt.
    pub retry: HashMap<String, crate::status::Retry>,
    /// Logins completed (whatsapp-rust's `Connected`) since start, per bot.
    pub connects: BTreeMap<String, u64>,
    /// Messages that could not be decrypted, per bot.
    pub decrypt_failures: BTreeMap<String, u64>,
    /// Hook events (`messaging::events`) by (kind, outcome): `queued`, or
    /// `dropped` (no hook, or the queue full); and per hook call, of every
    /// kind (messages too), `delivered` or `failed`.
    pub events: BTreeMap<(&'static str, &'static str), u64>,
    /// Sent -> delivered latency of the bots' messages, per bot.
    pub receipt_latency: BTreeMap<String, crate::messaging::events::LatencyCounts>,
}

/// Runs of one timer job.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobCounter {
    pub runs: u64,
    pub failures: u64,
    pub last_success: Option<i64>,
}

/// A running `run`, as its surfaces see it.
pub trait Service: Host {
    /// A copy of the live state.
    fn live_state(&self) -> Live;
    /// The QR code `bot` shows now, if any.
    fn qr(&self, bot: &str) -> Option<String>;
    /// Becomes true when the runner stops.
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool>;
}

/// What an alert is about (`kind` in its JSON, snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The server logged the bot out: pair again.
    LoggedOut,
    /// Another client took over the session.
    Replaced,
    /// Temporarily banned.
    Banned,
    /// WhatsApp rejects this client version.
    ClientOutdated,
    /// No QR code was scanned in time.
    QrExhausted,
    /// A paired bot away and quiet for long (WhatsApp unlinks it at ~30 days).
    Idle,
    /// The bot's client could not be started.
    StartFailed,
    /// Its inbound queue is full: new messages stay unacknowledged.
    QueueFull,
    /// Queued messages passed the age limit and are held.
    QueueExpired,
    /// The hook keeps failing.
    HookFailing,
    /// The connection flapped, or was lost and not back, over the
    /// `--status-debounce` window (one alert per settled window).
    Connection,
    /// The hook asked for an action the operator's policy refuses (a
    /// `send_file` path outside `--media-dir`, a URL off
    /// `--media-url-allow`): that action is skipped, the rest carried out.
    ActionRefused,
    /// Fleet: another host holds the bot's owner key; the bot does not run here.
    HeldElsewhere,
    /// Fleet: NATS cannot be reached, so no bot starts here.
    FleetUnreachable,
    /// Fleet: the bot's owner key was lost (not renewed in time, or taken):
    /// the bot was stopped here.
    OwnershipLost,
}

impl AlertKind {
    /// Every kind (metrics list each, raised or not).
    pub const ALL: [AlertKind; 15] = [
        AlertKind::LoggedOut,
        AlertKind::Replaced,
        AlertKind::Banned,
        AlertKind::ClientOutdated,
        AlertKind::QrExhausted,
        AlertKind::StartFailed,
        AlertKind::Idle,
        AlertKind::QueueFull,
        AlertKind::QueueExpired,
        AlertKind::HookFailing,
        AlertKind::Connection,
        AlertKind::ActionRefused,
        AlertKind::HeldElsewhere,
        AlertKind::FleetUnreachable,
        AlertKind::OwnershipLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LoggedOut => "logged_out",
            AlertKind::Replaced => "replaced",
            AlertKind::Banned => "banned",
            AlertKind::ClientOutdated => "client_outdated",
            AlertKind::QrExhausted => "qr_exhausted",
            AlertKind::Idle => "idle",
            AlertKind::StartFailed => "start_failed",
            AlertKind::QueueFull => "queue_full",
            AlertKind::QueueExpired => "queue_expired",
            AlertKind::HookFailing => "hook_failing",
            AlertKind::Connection => "connection",
            AlertKind::ActionRefused => "action_refused",
            AlertKind::HeldElsewhere => "held_elsewhere",
            AlertKind::FleetUnreachable => "fleet_unreachable",
            AlertKind::OwnershipLost => "ownership_lost",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for AlertKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
