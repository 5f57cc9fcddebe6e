//! What a running `run` offers beyond the operations: the state only it
//! knows (QR codes waiting, when each bot started, job and alert counters)
//! and its stop signal. The web surface is built on this, so it reads
//! through the same operations as the command line and never reaches into
//! the runner.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

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
