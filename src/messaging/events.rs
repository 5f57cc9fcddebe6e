//! Events beyond the inbound message, for hooks that ask for them
//! (`--events message,receipt,status,decrypt_failure`; `message` only by
//! default, which is the hook contract from before events existed).
//!
//! Every event is one JSON object with `event`, `bot`, `id` and `time`
//! (unix seconds), queued in the bot's durable queue like a message
//! (`messaging::queue`) and delivered by the same worker, in order per
//! chat, at least once. An event's queue entry names a pseudo sender
//! `event:KIND…` ([`is_event_sender`]): a hook's answer to an event carries
//! out no actions.
//!
//! - `receipt`: `sent` (the server took a message the bot sent),
//!   `delivered`, `read`, `played`, for the bot's own messages, queued in the
//!   recipient's chat. A later state implies the ones before it
//!   ([`ReceiptTracker`]); an implied one is still emitted, in order, with
//!   `"implied": true`.
//! - `status`: connection changes, debounced by [`Debouncer`].
//! - `decrypt_failure`: a message that could not be decrypted, and once its
//!   retry brought it after all, a second one with `"recovered": true`.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// One kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Message,
    Receipt,
    Status,
    DecryptFailure,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Message,
        EventKind::Receipt,
        EventKind::Status,
        EventKind::DecryptFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Receipt => "receipt",
            EventKind::Status => "status",
            EventKind::DecryptFailure => "decrypt_failure",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The kind of a queue entry: its summary's `event` field (`message`
    /// when it has none or an unknown one, as messages queued before events
    /// existed).
    pub fn of_summary(summary: &str) -> EventKind {
        #[derive(serde::Deserialize)]
        struct Head {
            event: Option<String>,
        }
        let name = serde_json::from_str::<Head>(summary)
            .ok()
            .and_then(|h| h.event);
        EventKind::ALL
            .into_iter()
            .find(|k| Some(k.as_str()) == name.as_deref())
            .unwrap_or(EventKind::Message)
    }
}

/// The kinds of event a bot's hook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKinds(u8);

impl Default for EventKinds {
    /// `message` only: the hook contract from before events existed.
    fn default() -> Self {
        EventKinds(EventKind::Message.bit())
    }
}

impl EventKinds {
    /// Whether `k` is one of them.
    pub fn has(self, k: EventKind) -> bool {
        self.0 & k.bit() != 0
    }

    /// A comma-separated list (`message,receipt`); unknown or no kinds are
    /// a usage error naming the accepted ones.
    pub fn parse(s: &str) -> Result<EventKinds> {
        let mut bits = 0u8;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let k = EventKind::ALL
                .into_iter()
                .find(|k| k.as_str() == word)
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "unknown event kind {word:?}; the kinds are {}",
                        Self::accepted()
                    ))
                })?;
            bits |= k.bit();
        }
        if bits == 0 {
            return Err(Error::Usage(format!(
                "no event kinds given; the kinds are {}",
                Self::accepted()
            )));
        }
        Ok(EventKinds(bits))
    }

    /// The accepted kinds, comma-separated.
    pub fn accepted() -> String {
        EventKind::ALL.map(EventKind::as_str).join(", ")
    }
}

impl std::fmt::Display for EventKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = EventKind::ALL
            .into_iter()
            .filter(|k| self.has(*k))
            .map(EventKind::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// The `--events` value parser (clap turns the error into exit 2).
pub fn parse_flag(s: &str) -> std::result::Result<EventKinds, String> {
    EventKinds::parse(s).map_err(|e| match e {
        Error::Usage(m) => m,
        e => e.to_string(),
    })
}

/// Prefix of the pseudo sender of an event's queue entry.
pub const EVENT_SENDER: &str = "event:";

/// Whether a queue entry is an event other than a message (its hook's
/// answer carries out no actions).
pub fn is_event_sender(sender: &str) -> bool {
    sender.starts_with(EVENT_SENDER)
}

/// States of a message the bot sent, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiptState {
    Sent,
    Delivered,
    Read,
    Played,
}

impl ReceiptState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptState::Sent => "sent",
            ReceiptState::Delivered => "delivered",
            ReceiptState::Read => "read",
            ReceiptState::Played => "played",
        }
    }
}

/// Which receipt states of the bot's recent messages were emitted, so that
/// each state is emitted once and in order: a `delivered` that overtakes
/// the server's ack (they travel on separate paths, and whatsapp-rust runs
/// event handlers concurrently) emits `sent` first, marked implied, and the
/// ack that comes later emits nothing. `read` implies `sent` and
/// `delivered`; `played` implies those two but not `read`. Remembers the
/// last [`ReceiptTracker::KEEP`] messages.
#[derive(Debug, Default)]
pub struct ReceiptTracker {
    seen: HashMap<String, Vec<ReceiptState>>,
    /// (sent, delivered) times (unix seconds) of the messages seen, as
    /// their ack and receipt said, until the latency was taken.
    times: HashMap<String, (Option<i64>, Option<i64>)>,
    order: VecDeque<String>,
}

impl ReceiptTracker {
    pub const KEEP: usize = 10_000;

    /// The states to emit for `state` of message `id`: (state, implied),
    /// oldest first; empty when `state` was emitted before.
    pub fn observe(&mut self, id: &str, state: ReceiptState) -> Vec<(ReceiptState, bool)> {
        if !self.seen.contains_key(id) {
            if self.order.len() >= Self::KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                    self.times.remove(&old);
                }
            }
            self.order.push_back(id.to_owned());
        }
        let done = self.seen.entry(id.to_owned()).or_default();
        if done.contains(&state) {
            return Vec::new();
        }
        let implied: &[ReceiptState] = match state {
            ReceiptState::Sent => &[],
            ReceiptState::Delivered => &[ReceiptState::Sent],
            ReceiptState::Read | ReceiptState::Played => {
                &[ReceiptState::Sent, ReceiptState::Delivered]
            }
        };
        let mut out = Vec::new();
        for s in implied {
            if !done.contains(s) {
                done.push(*s);
                out.push((*s, true));
            }
        }
        done.push(state);
        out.push((state, false));
        out
    }

    /// Notes when message `id` (observed before) was `sent` or `delivered`
    /// (`time`: the ack's or receipt's, unix seconds); once both are known,
    /// in either order, returns the sent -> delivered latency in seconds
    /// (once per message; never negative). Other states note nothing.
    pub fn latency(&mut self, id: &str, state: ReceiptState, time: i64) -> Option<i64> {
        if !self.seen.contains_key(id) {
            return None;
        }
        let t = self.times.entry(id.to_owned()).or_default();
        match state {
            ReceiptState::Sent if t.0.is_none() => t.0 = Some(time),
            ReceiptState::Delivered if t.1.is_none() => t.1 = Some(time),
            _ => return None,
        }
        let (Some(sent), Some(delivered)) = *t else {
            return None;
        };
        self.times.remove(id);
        Some((delivered - sent).max(0))
    }
}

/// Upper bounds (seconds) of the receipt latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];

/// Sent -> delivered latencies of a bot's messages (`/metrics`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyCounts {
    /// Observations per bucket of [`LATENCY_BUCKETS`] (not cumulative),
    /// then those above the last bound.
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum_secs: f64,
}

impl LatencyCounts {
    pub fn observe(&mut self, secs: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum_secs += secs;
    }

    /// (upper bound, cumulative count) per bucket, Prometheus style.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut n = 0;
        LATENCY_BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(b, c)| {
                n += c;
                (*b, n)
            })
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The JSON of a `receipt` event.
pub fn receipt_json(
    bot: &str,
    message_id: &str,
    state: ReceiptState,
    recipient: &str,
    time: i64,
    implied: bool,
) -> Value {
    let mut v = json!({
        "event": "receipt",
        "bot": bot,
        "id": message_id,
        "time": time,
        "type": state.as_str(),
        "recipient": recipient,
    });
    if implied {
        v["implied"] = Value::Bool(true);
    }
    v
}

/// A bot's connection as the status events and alerts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Logged in.
    Connected,
    /// Lost; whatsapp-rust reconnects.
    Disconnected,
    /// Stopped for good (logged out, replaced, banned, outdated client).
    Permanent(&'static str),
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Connected => "connected",
            Link::Disconnected => "disconnected",
            Link::Permanent(s) => s,
        }
    }
}

/// A settled connection state: what a `status` event and a connection
/// alert report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The state the connection settled in.
    pub state: Link,
    /// The state before the first change of the window (`None`: the bot's
    /// first connection of this run).
    pub previous: Option<Link>,
    /// Changes the window absorbed (every connect and every loss).
    pub transitions: u32,
    /// Connections lost in the window (a reconnect with no loss reported
    /// before it counts as one).
    pub losses: u32,
}

impl Settled {
    /// Whether this settlement is worth an alert: a connection that flapped
    /// ([`FLAP_ALERT_AT`] changes or more in one window), or one lost and
    /// not back when the window closed. A single loss that recovered within
    /// the window is a `status` event only; permanent failures alert by
    /// themselves (their own alert kinds).
    pub fn alerts(&self) -> bool {
        match self.state {
            Link::Permanent(_) => false,
            Link::Disconnected => true,
            Link::Connected => self.transitions >= FLAP_ALERT_AT,
        }
    }

    /// The alert's text, naming the count.
    pub fn reason(&self, window: Duration) -> String {
        match self.state {
            Link::Disconnected => format!(
                "the connection was lost and is not back after {}s ({} change(s) absorbed); \
                 whatsapp-rust keeps reconnecting",
                window.as_secs(),
                self.transitions
            ),
            _ => format!(
                "the connection flapped: {} change(s), {} loss(es), settled as {} after {}s \
                 without change",
                self.transitions,
                self.losses,
                self.state.as_str(),
                window.as_secs()
            ),
        }
    }
}

/// Changes in one window from which a settled connection alerts.
pub const FLAP_ALERT_AT: u32 = 3;

/// Longest a connection that keeps changing is debounced: it settles (and
/// reports) after this long even if it never stays still for a window.
pub fn max_hold(window: Duration) -> Duration {
    window.saturating_mul(30).max(Duration::from_secs(300))
}

/// Debounces a bot's connection changes: a change opens a window; every
/// further change restarts it; once the connection stayed unchanged for
/// the window (or [`max_hold`] after the first change), [`Debouncer::poll`]
/// returns one [`Settled`] with the final state and the number of changes
/// absorbed. A permanent failure settles at once. Pure: the caller passes
/// the time (tests use any `Instant` arithmetic, no sleeping).
#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    /// The last settled state.
    settled: Option<Link>,
    /// The last state observed.
    current: Option<Link>,
    open: Option<Window>,
}

#[derive(Debug)]
struct Window {
    first: Instant,
    last: Instant,
    state: Link,
    transitions: u32,
    losses: u32,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Debouncer {
            window,
            settled: None,
            current: None,
            open: None,
        }
    }

    /// A change of the connection at `now`. Returns a settlement at once
    /// for a permanent failure.
    pub fn observe(&mut self, state: Link, now: Instant) -> Option<Settled> {
        let w = self.open.get_or_insert(Window {
            first: now,
            last: now,
            state,
            transitions: 0,
            losses: 0,
        });
        w.last = now;
        w.state = state;
        w.transitions += 1;
        // A connection replaced by a new one with no loss in between (a
        // server-asked restart, stream error 515) lost one too.
        let replaced = state == Link::Connected && self.current == Some(Link::Connected);
        w.losses += u32::from(state == Link::Disconnected || replaced);
        self.current = Some(state);
        if matches!(state, Link::Permanent(_)) {
            return self.settle();
        }
        None
    }

    /// When the open window settles, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        let w = self.open.as_ref()?;
        Some((w.last + self.window).min(w.first + max_hold(self.window)))
    }

    /// The settlement once the window has passed at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Settled> {
        if self.deadline()? <= now {
            self.settle()
        } else {
            None
        }
    }

    /// Settles the open window now (the bot stops).
    pub fn flush(&mut self) -> Option<Settled> {
        self.settle()
    }

    fn settle(&mut self) -> Option<Settled> {
        let w = self.open.take()?;
        let previous = self.settled.replace(w.state);
        Some(Settled {
            state: w.state,
            previous,
            transitions: w.transitions,
            losses: w.losses,
        })
    }
}

/// The JSON of a `status` event.
pub fn status_json(bot: &str, id: &str, s: &Settled, time: i64) -> Value {
    json!({
        "event": "status",
        "bot": bot,
        "id": id,
        "time": time,
        "state": s.state.as_str(),
        "previous": s.previous.map(Link::as_str),
        "transitions": s.transitions,
        "losses": s.losses,
    })
}

/// The JSON of a `decrypt_failure` event: `recovered` is `false` when the
/// message could not be decrypted, `true` in the second event once
/// whatsapp-rust's retry brought it after all.
pub fn decrypt_failure_json(
    bot: &str,
    message_id: &str,
    chat: &str,
    sender: &str,
    time: i64,
    recovered: bool,
) -> Value {
    json!({
        "event": "decrypt_failure",
        "bot": bot,
        "id": message_id,
        "time": time,
        "chat": chat,
        "sender": sender,
        "recovered": recovered,
    })
}

/// Ids of messages that failed to decrypt, remembered (the last
/// [`FailedIds::KEEP`]) to tell when a retry recovered one.
#[derive(Debug, Default)]
pub struct FailedIds {
    ids: VecDeque<String>,
}

impl FailedIds {
    pub const KEEP: usize = 1000;

    pub fn insert(&mut self, id: &str) {
        if self.ids.iter().any(|i| i == id) {
            return;
        }
        if self.ids.len() >= Self::KEEP {
            self.ids.pop_front();
        }
        self.ids.push_back(id.to_owned());
    }

    /// Whether `id` had failed (forgotten once recovered).
    pub fn take(&mut self, id: &str) -> bool {
        match self.ids.iter().position(|i| i == id) {
            Some(p) => {
                self.ids.remove(p);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    #[test]
    fn receipt_latency_from_sent_to_delivered_in_either_order_once() {
        let mut r = ReceiptTracker::default();
        r.observe("a", ReceiptState::Sent);
        assert_eq!(r.latency("a", ReceiptState::Sent, 100), None);
        r.observe("a", ReceiptState::Delivered);
        assert_eq!(r.latency("a", ReceiptState::Delivered, 103), Some(3));
        assert_eq!(r.latency("a", ReceiptState::Delivered, 109), None);
        // The receipt overtook the ack: taken once the ack comes.
        r.observe("b", ReceiptState::Delivered);
        assert_eq!(r.latency("b", ReceiptState::Delivered, 50), None);
        assert_eq!(r.latency("b", ReceiptState::Read, 60), None);
        assert_eq!(r.latency("b", ReceiptState::Sent, 49), Some(1));
        // Clocks apart: never negative; unknown messages note nothing.
        r.observe("c", ReceiptState::Sent);
        r.latency("c", ReceiptState::Sent, 10);
        assert_eq!(r.latency("c", ReceiptState::Delivered, 8), Some(0));
        assert_eq!(r.latency("z", ReceiptState::Sent, 1), None);
        let mut h = LatencyCounts::default();
        for s in [0.0, 1.0, 3.0, 1e6] {
            h.observe(s);
        }
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_secs, 1e6 + 4.0);
        let c = h.cumulative();
        assert_eq!((c[0], c[1], c[2]), ((1.0, 2), (2.0, 2), (5.0, 3)));
        assert_eq!(c.last(), Some(&(86400.0, 3)));
    }

    #[test]
    fn kinds_parse_print_and_refuse_unknown_ones() {
        let k = EventKinds::parse("receipt, message,status").unwrap();
        assert!(k.has(EventKind::Message) && k.has(EventKind::Receipt));
        assert!(!k.has(EventKind::DecryptFailure));
        assert_eq!(k.to_string(), "message,receipt,status");
        assert_eq!(EventKinds::parse(&k.to_string()).unwrap(), k);
        assert_eq!(EventKinds::default().to_string(), "message");
        for bad in ["messages", "message,typing", "", " , "] {
            let e = EventKinds::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{bad}");
            assert!(
                e.to_string()
                    .contains("message, receipt, status, decrypt_failure"),
                "{e}"
            );
        }
    }

    /// `--events` on `bot set` and `run`: an unknown kind is exit 2 naming
    /// the accepted ones; a known list is taken (and stored canonical).
    #[test]
    fn the_events_flag_refuses_unknown_kinds_with_exit_2() {
        use clap::Parser;
        for args in [
            &["wavault", "bot", "set", "b", "--events", "message,typing"][..],
            &["wavault", "run", "--events", "receipts"][..],
        ] {
            let e = crate::cli::Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            let text = e.to_string();
            assert!(
                text.contains("message, receipt, status, decrypt_failure"),
                "{text}"
            );
        }
        let cli = crate::cli::Cli::try_parse_from([
            "wavault",
            "run",
            "--events",
            "status,message",
            "--status-debounce",
            "2s",
        ])
        .unwrap();
        let crate::cli::Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.hooks.events.unwrap().to_string(), "message,status");
        assert_eq!(run.status_debounce, Duration::from_secs(2));
        assert!(
            crate::cli::Cli::try_parse_from(["wavault", "run", "--status-debounce", "0s"]).is_err()
        );
    }

    #[test]
    fn twenty_eight_reconnects_settle_once_naming_the_count() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(W);
        assert_eq!(d.observe(Link::Connected, t0), None);
        let first = d.poll(t0 + W).expect("the first connection settles");
        assert_eq!((first.state, first.previous), (Link::Connected, None));
        assert_eq!(first.transitions, 1);
        assert!(!first.alerts());
        // 28 reconnects, one every 2 s: never still for a window.
        let mut t = t0 + W + Duration::from_secs(100);
        for _ in 0..28 {
            assert_eq!(d.observe(Link::Disconnected, t), None);
            t += Duration::from_secs(1);
            assert_eq!(d.observe(Link::Connected, t), None);
            assert_eq!(d.poll(t + W - Duration::from_millis(1)), None);
            t += Duration::from_secs(1);
        }
        assert_eq!(d.deadline(), Some(t - Duration::from_secs(1) + W));
        let s = d.poll(t - Duration::from_secs(1) + W).expect("settled");
        assert_eq!(s.state, Link::Connected);
        assert_eq!(s.previous, Some(Link::Connected));
        assert_eq!((s.transitions, s.losses), (56, 28));
        assert!(s.alerts());
        assert!(
            s.reason(W).contains("56 change(s), 28 loss(es)"),
            "{}",
            s.reason(W)
        );
        assert_eq!(d.poll(t + W * 10), None, "one settlement only");
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn one_blip_is_a_status_but_no_alert_and_a_lasting_loss_alerts() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(W);
        d.observe(Link::Connected, t0);
        d.poll(t0 + W).unwrap();
        d.observe(Link::Disconnected, t0 + W * 2);
        d.observe(Link::Connected, t0 + W * 2 + Duration::from_secs(1));
        let s = d.poll(t0 + W * 4).unwrap();
        assert_eq!((s.transitions, s.losses), (2, 1));
        assert!(!s.alerts());
        d.observe(Link::Disconnected, t0 + W * 5);
        let s = d.poll(t0 + W * 6).unwrap();
        assert_eq!(s.state, Link::Disconnected);
        assert!(s.alerts());
        assert!(s.reason(W).contains("not back after 10s"));
    }

    #[test]
    fn a_permanent_failure_settles_at_once_and_endless_flapping_within_max_hold() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(W);
        d.observe(Link::Connected, t0);
        d.observe(Link::Disconnected, t0 + Duration::from_secs(1));
        let s = d
            .observe(Link::Permanent("logged_out"), t0 + Duration::from_secs(2))
            .expect("at once");
        assert_eq!(s.state.as_str(), "logged_out");
        assert_eq!(s.transitions, 3);
        assert!(!s.alerts(), "its own alert kind alerts");

        let mut d = Debouncer::new(W);
        let mut t = t0;
        let mut settled = Vec::new();
        for i in 0..400u32 {
            let st = if i % 2 == 0 {
                Link::Disconnected
            } else {
                Link::Connected
            };
            d.observe(st, t);
            t += Duration::from_secs(1);
            settled.extend(d.poll(t));
        }
        assert_eq!(settled.len(), 1, "{settled:?}");
        assert_eq!(settled[0].transitions, 300);
    }

    #[test]
    fn reconnects_with_no_loss_between_count_as_losses() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(W);
        d.observe(Link::Connected, t0);
        d.poll(t0 + W).unwrap();
        for i in 1..=20 {
            d.observe(Link::Connected, t0 + W + Duration::from_secs(i));
        }
        let s = d.poll(t0 + W * 4).unwrap();
        assert_eq!((s.transitions, s.losses), (20, 20));
        assert!(s.alerts());
    }

    #[test]
    fn receipts_come_once_and_in_order() {
        let mut r = ReceiptTracker::default();
        use ReceiptState::*;
        assert_eq!(
            r.observe("a", Delivered),
            vec![(Sent, true), (Delivered, false)]
        );
        assert_eq!(r.observe("a", Sent), vec![]);
        assert_eq!(r.observe("a", Read), vec![(Read, false)]);
        assert_eq!(r.observe("a", Read), vec![]);
        assert_eq!(r.observe("b", Sent), vec![(Sent, false)]);
        assert_eq!(
            r.observe("b", Played),
            vec![(Delivered, true), (Played, false)]
        );
        for i in 0..ReceiptTracker::KEEP {
            r.observe(&i.to_string(), Sent);
        }
        assert_eq!(r.seen.len(), ReceiptTracker::KEEP);
        assert_eq!(r.observe("a", Sent), vec![(Sent, false)], "forgotten");
    }

    #[test]
    fn failed_ids_are_recovered_once() {
        let mut f = FailedIds::default();
        f.insert("x");
        assert!(!f.take("y"));
        assert!(f.take("x"));
        assert!(!f.take("x"));
    }
}
