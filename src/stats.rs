//! `wavault stats`: per-bot connection statistics over a time window,
//! computed from each bot's session history ([`crate::sessions`]).
//!
//! [`compute`] is pure (history, window and current status in, numbers out);
//! [`collect`] reads the vault; [`table`] formats for people.
//!
//! # How the window cuts the history
//!
//! The window is `[since, now]` (unix seconds); its length `now - since` is
//! split exactly into connected, disconnected and unknown seconds.
//!
//! - History entries are taken in sequence order. If the clock stepped back
//!   so that an entry's `at` is earlier than its predecessor's, it is taken
//!   as happening at its predecessor's time (a zero-length interval), so
//!   intervals never overlap and the three totals always add up.
//! - The status at `since` is the `to` of the last entry at or before
//!   `since`. Before the first entry the status is unknown: that part of the
//!   window counts as `unknown_secs`, neither connected nor disconnected (the
//!   first entry's `from` says which status it was, not since when).
//! - An interval that starts before `since` counts only from `since`; the
//!   open interval of the last status runs to `now` (so a permanent failure
//!   at the end counts as disconnected up to `now`). Entries after `now` are
//!   ignored.
//! - Events (disconnects, pairings, logins, completed reconnections) belong
//!   to the window when `since < at <= now`. An entry exactly at `since`
//!   only sets the starting status: it belongs to the window that ends at
//!   `since`. Adjacent windows `(a, b]` and `(b, c]` therefore add up to
//!   `(a, c]`, seconds and counts alike.
//! - A reconnection is the time from a transition out of `connected` to the
//!   next transition into `connected`. It belongs to the window that holds
//!   its end, and then counts whole, even the part before `since` (a gap
//!   that started before the window but ends inside it counts in full; a
//!   gap still open at `now` does not count). Its start must be in the
//!   history: a `→ connected` whose preceding departure from `connected` is
//!   not recorded (first login, or history pruned) is not a reconnection.
//!   Every way out of `connected` counts, a clean shutdown and restart too:
//!   the number is the time away from `connected`, whatever the cause.
//! - `disconnects` are transitions out of `connected` (by the entry's
//!   `from`). `→ connected` transitions with reason `"paired"` are
//!   pairings (QR or pair code just used); every other `→ connected` is a
//!   login with stored credentials.

use crate::error::Result;
use crate::sessions::{HistoryEntry, Sessions, Status};
use crate::vault::Vault;
use crate::BotId;
use serde::{Deserialize, Serialize};

/// The reason the runner records on `→ connected` right after a pairing.
pub const PAIRED_REASON: &str = crate::sessions::reason::PAIRED;

/// Connection statistics of one bot over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotStats {
    pub bot: String,
    pub window_start: i64,
    pub window_end: i64,
    /// Seconds in `connected` within the window.
    pub connected_secs: i64,
    /// Seconds known and not connected within the window (any other status).
    pub disconnected_secs: i64,
    /// Seconds before the first known history entry (status unknown): neither.
    pub unknown_secs: i64,
    /// connected / (connected + disconnected) * 100, None when both are 0.
    pub availability_pct: Option<f64>,
    /// Transitions out of `connected` inside the window.
    pub disconnects: u64,
    /// Mean time from leaving `connected` to the next `connected`, over the
    /// reconnections that complete inside the window, each counted whole
    /// (also the part before the window). None when none completed.
    pub mean_reconnect_secs: Option<f64>,
    /// The longest of those reconnections.
    pub longest_reconnect_secs: Option<i64>,
    /// `→ connected` transitions in the window with reason "paired".
    pub pairings: u64,
    /// All other `→ connected` transitions in the window (logins with stored credentials, no QR).
    pub logins_without_qr: u64,
    /// The bot's status now (from its session metadata).
    pub current: Status,
    /// Inbound messages in the window (counted per hour: the window is
    /// rounded out to whole hours).
    #[serde(default)]
    pub messages_in: u64,
    /// Messages sent in the window (replies, reactions, `send`), per hour as above.
    #[serde(default)]
    pub messages_out: u64,
}

/// Pure: the statistics of one bot from its history (oldest first) over the
/// window `[since, now]`; see the module documentation for the exact rules.
/// A `since` after `now` is taken as `now` (an empty window).
pub fn compute(
    bot: &str,
    history: &[HistoryEntry],
    since: i64,
    now: i64,
    current: Status,
) -> BotStats {
    let since = since.min(now);
    let mut connected = 0i64;
    let mut disconnected = 0i64;
    let mut unknown = 0i64;
    let mut add = |state: Option<Status>, secs: i64| match state {
        None => unknown += secs,
        Some(Status::Connected) => connected += secs,
        Some(_) => disconnected += secs,
    };
    let mut state: Option<Status> = None;
    let mut cursor = since;
    let mut prev_at = i64::MIN;
    let mut left_connected_at: Option<i64> = None;
    let mut gaps: Vec<i64> = Vec::new();
    let (mut disconnects, mut pairings, mut logins) = (0u64, 0u64, 0u64);

    for e in history {
        // Clock stepped back: keep the order, never overlap.
        let at = e.at.max(prev_at);
        prev_at = at;
        if at > now {
            break; // effective times never decrease: the rest is later still
        }
        let inside = at > since;
        if inside {
            add(state, at - cursor);
            cursor = at;
        }
        let leaves = e.from == Status::Connected && e.to != Status::Connected;
        let enters = e.to == Status::Connected && e.from != Status::Connected;
        if leaves {
            if inside {
                disconnects += 1;
            }
            left_connected_at = Some(at);
        }
        if enters {
            if inside {
                if e.reason.as_deref() == Some(PAIRED_REASON) {
                    pairings += 1;
                } else {
                    logins += 1;
                }
                if let Some(left) = left_connected_at {
                    gaps.push(at - left);
                }
            }
            left_connected_at = None;
        }
        state = Some(e.to);
    }
    add(state, now - cursor);

    let known = connected + disconnected;
    BotStats {
        bot: bot.to_owned(),
        window_start: since,
        window_end: now,
        connected_secs: connected,
        disconnected_secs: disconnected,
        unknown_secs: unknown,
        availability_pct: (known > 0).then(|| connected as f64 * 100.0 / known as f64),
        disconnects,
        mean_reconnect_secs: (!gaps.is_empty())
            .then(|| gaps.iter().map(|&g| g as f64).sum::<f64>() / gaps.len() as f64),
        longest_reconnect_secs: gaps.iter().copied().max(),
        pairings,
        logins_without_qr: logins,
        current,
        messages_in: 0,
        messages_out: 0,
    }
}

/// Reads every bot (or the named ones, in the order given, each once) from
/// the vault and computes its statistics over `[since, now]`. A named bot
/// that is not in the vault is a [`crate::Error::NotFound`].
///
/// A `since` after `now` (clock skew, or a request built by hand) is an
/// empty window at `now`; times before 1970 are taken as 1970 (no history
/// is older, and the hourly message counters need a start they can round).
pub fn collect(vault: &Vault, bots: &[BotId], since: i64, now: i64) -> Result<Vec<BotStats>> {
    let now = now.max(0);
    let since = since.clamp(0, now);
    let ids: Vec<BotId> = if bots.is_empty() {
        vault.list_bots()?.into_iter().map(|c| c.id).collect()
    } else {
        let mut ids: Vec<BotId> = Vec::with_capacity(bots.len());
        for id in bots {
            vault.bot_config(id)?;
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    };
    ids.iter()
        .map(|id| {
            let s = Sessions::new(vault.view(id));
            let current = s.load(now)?.status;
            let mut st = compute(&id.to_string(), &s.history()?, since, now, current);
            let traffic = crate::messaging::queue::Queue::new(vault.view(id)).traffic()?;
            (st.messages_in, st.messages_out) = traffic.window(since, now);
            Ok(st)
        })
        .collect()
}

/// A duration for people: the two largest units, `3d4h`, `2h5m`, `12m`,
/// `45s`, `0s`.
pub fn fmt_secs(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let units = [(86_400u64, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')];
    let Some(i) = units.iter().position(|&(n, _)| s >= n) else {
        return "0s".into();
    };
    let (n, u) = units[i];
    let mut out = format!("{sign}{}{u}", s / n);
    if let Some(&(n2, u2)) = units.get(i + 1) {
        let rest = s % n / n2;
        if rest > 0 {
            out.push_str(&format!("{rest}{u2}"));
        }
    }
    out
}

/// The table `wavault stats` prints.
pub fn table(rows: &[BotStats]) -> String {
    use crate::table::{Align::*, Table};
    let mut t = Table::new(&[
        ("BOT", Left),
        ("STATUS", Left),
        ("AVAIL", Right),
        ("UP", Right),
        ("DOWN", Right),
        ("UNKNOWN", Right),
        ("DROPS", Right),
        ("MEAN RC", Right),
        ("MAX RC", Right),
        ("PAIRS", Right),
        ("LOGINS", Right),
        ("MSG IN", Right),
        ("MSG OUT", Right),
    ]);
    for r in rows {
        let avail = r
            .availability_pct
            .map_or_else(|| "-".to_string(), |p| format!("{p:.1}%"));
        let mean = r
            .mean_reconnect_secs
            .map_or_else(|| "-".to_string(), |m| fmt_secs(m.round() as i64));
        let max = r
            .longest_reconnect_secs
            .map_or_else(|| "-".to_string(), fmt_secs);
        t.row([
            r.bot.clone(),
            r.current.as_str().to_owned(),
            avail,
            fmt_secs(r.connected_secs),
            fmt_secs(r.disconnected_secs),
            fmt_secs(r.unknown_secs),
            r.disconnects.to_string(),
            mean,
            max,
            r.pairings.to_string(),
            r.logins_without_qr.to_string(),
            r.messages_in.to_string(),
            r.messages_out.to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// A history from `(at, from, to, reason)` tuples, numbered in order.
    fn h(entries: &[(i64, Status, Status, &str)]) -> Vec<HistoryEntry> {
        entries
            .iter()
            .enumerate()
            .map(|(i, &(at, from, to, reason))| HistoryEntry {
                seq: i as u64 + 1,
                at,
                from,
                to,
                reason: Some(reason.to_owned()),
            })
            .collect()
    }

    /// (connected, disconnected, unknown)
    fn secs(s: &BotStats) -> (i64, i64, i64) {
        (s.connected_secs, s.disconnected_secs, s.unknown_secs)
    }

    /// (disconnects, pairings, logins)
    fn counts(s: &BotStats) -> (u64, u64, u64) {
        (s.disconnects, s.pairings, s.logins_without_qr)
    }

    /// A bot started at 100, logged in at 110, dropped at 500, back at 530,
    /// dropped at 800, back at 890, shut down at 1000.
    fn day() -> Vec<HistoryEntry> {
        h(&[
            (100, Disconnected, Connecting, "start"),
            (110, Connecting, Connected, "logged in"),
            (500, Connected, Reconnecting, "connection lost"),
            (530, Reconnecting, Connected, "logged in"),
            (800, Connected, Reconnecting, "connection lost"),
            (890, Reconnecting, Connected, "logged in"),
            (1000, Connected, Disconnected, "shutdown"),
        ])
    }

    #[test]
    fn always_connected() {
        let hist = h(&[
            (0, Disconnected, Connecting, "start"),
            (5, Connecting, Connected, "logged in"),
        ]);
        let s = compute("b", &hist, 100, 1100, Connected);
        assert_eq!(secs(&s), (1000, 0, 0));
        assert_eq!(s.availability_pct, Some(100.0));
        assert_eq!(counts(&s), (0, 0, 0), "the login was before the window");
        assert_eq!(s.mean_reconnect_secs, None);
        assert_eq!(s.longest_reconnect_secs, None);
        assert_eq!((s.window_start, s.window_end), (100, 1100));
        assert_eq!(s.current, Connected);
        assert_eq!(s.bot, "b");
    }

    #[test]
    fn one_drop_and_reconnect() {
        let hist = h(&[
            (0, Disconnected, Connecting, "start"),
            (10, Connecting, Connected, "logged in"),
            (400, Connected, Reconnecting, "connection lost"),
            (460, Reconnecting, Connected, "logged in"),
        ]);
        let s = compute("b", &hist, 0, 1000, Connected);
        // connecting 0..10, connected 10..400, reconnecting 400..460, connected 460..1000
        assert_eq!(secs(&s), (390 + 540, 10 + 60, 0));
        assert_eq!(s.availability_pct, Some(93.0));
        assert_eq!(counts(&s), (1, 0, 2));
        assert_eq!(s.mean_reconnect_secs, Some(60.0));
        assert_eq!(s.longest_reconnect_secs, Some(60));
    }

    #[test]
    fn several_drops_mean_and_longest() {
        let s = compute("b", &day(), 0, 1200, Disconnected);
        // unknown 0..100, connecting 100..110, connected 110..500, 530..800,
        // 890..1000; reconnecting 500..530, 800..890; disconnected 1000..1200.
        assert_eq!(secs(&s), (390 + 270 + 110, 10 + 30 + 90 + 200, 100));
        assert_eq!(counts(&s), (3, 0, 3));
        // Reconnections: 30 and 90; the shutdown at 1000 is still open.
        assert_eq!(s.mean_reconnect_secs, Some(60.0));
        assert_eq!(s.longest_reconnect_secs, Some(90));
        let a = s.availability_pct.unwrap();
        assert!((a - 770.0 * 100.0 / 1100.0).abs() < 1e-9, "{a}");
    }

    #[test]
    fn window_cuts_a_connected_interval() {
        // Window 300..700: connected 300..500 (cut at since), reconnecting
        // 500..530, connected 530..700 (cut at now).
        let s = compute("b", &day(), 300, 700, Reconnecting);
        assert_eq!(secs(&s), (200 + 170, 30, 0));
        assert_eq!(counts(&s), (1, 0, 1));
        assert_eq!(s.mean_reconnect_secs, Some(30.0));
        // The entries before the window are not counted as events.
        let s = compute("b", &day(), 200, 300, Connected);
        assert_eq!(secs(&s), (100, 0, 0));
        assert_eq!(counts(&s), (0, 0, 0));
        assert_eq!(s.current, Connected);
    }

    #[test]
    fn window_cuts_a_reconnect_gap() {
        // Window 850..950: the gap 800..890 started before the window and
        // ends inside it: counted whole (90), its time split by the window.
        let s = compute("b", &day(), 850, 950, Connected);
        assert_eq!(secs(&s), (60, 40, 0));
        assert_eq!(
            counts(&s),
            (0, 0, 1),
            "the drop at 800 was before the window"
        );
        assert_eq!(s.mean_reconnect_secs, Some(90.0));
        assert_eq!(s.longest_reconnect_secs, Some(90));
        // Window 600..850: the gap starts inside and is still open at now.
        let s = compute("b", &day(), 600, 850, Reconnecting);
        assert_eq!(secs(&s), (200, 50, 0));
        assert_eq!(counts(&s), (1, 0, 0));
        assert_eq!(s.mean_reconnect_secs, None);
        assert_eq!(s.longest_reconnect_secs, None);
    }

    #[test]
    fn history_entirely_before_the_window() {
        let s = compute("b", &day(), 5000, 8600, Disconnected);
        assert_eq!(secs(&s), (0, 3600, 0), "status known from the last entry");
        assert_eq!(s.availability_pct, Some(0.0));
        assert_eq!(counts(&s), (0, 0, 0));
        assert_eq!(s.mean_reconnect_secs, None);
        let connected = h(&[(10, Connecting, Connected, "logged in")]);
        let s = compute("b", &connected, 5000, 8600, Connected);
        assert_eq!(secs(&s), (3600, 0, 0));
        assert_eq!(s.availability_pct, Some(100.0));
    }

    #[test]
    fn no_history_is_all_unknown() {
        let s = compute("b", &[], 1000, 4600, Disconnected);
        assert_eq!(secs(&s), (0, 0, 3600));
        assert_eq!(s.availability_pct, None);
        assert_eq!(counts(&s), (0, 0, 0));
        assert_eq!(
            (s.mean_reconnect_secs, s.longest_reconnect_secs),
            (None, None)
        );
        // History only after now: also unknown (and the events ignored).
        let later = h(&[(9000, Connecting, Connected, "paired")]);
        let s = compute("b", &later, 1000, 4600, Connected);
        assert_eq!(secs(&s), (0, 0, 3600));
        assert_eq!(counts(&s), (0, 0, 0));
    }

    #[test]
    fn history_starting_inside_the_window() {
        let hist = h(&[
            (400, Disconnected, Connecting, "start"),
            (430, Connecting, Connected, "paired"),
        ]);
        let s = compute("b", &hist, 0, 1000, Connected);
        assert_eq!(secs(&s), (570, 30, 400));
        let a = s.availability_pct.unwrap();
        assert!((a - 95.0).abs() < 1e-9, "{a}");
        assert_eq!(counts(&s), (0, 1, 0));
        assert_eq!(
            s.mean_reconnect_secs, None,
            "a first pairing is no reconnection"
        );
    }

    #[test]
    fn pairings_and_logins() {
        let hist = h(&[
            (0, Disconnected, Connecting, "start"),
            (20, Connecting, Connected, "paired"),
            (100, Connected, Disconnected, "shutdown"),
            (200, Disconnected, Connecting, "start"),
            (205, Connecting, Connected, "logged in"),
            (300, Connected, LoggedOut, "logged out by the server"),
            (400, LoggedOut, Connecting, "start"),
            (450, Connecting, Connected, "paired"),
            (500, Connected, Reconnecting, "connection lost"),
            (510, Reconnecting, Connected, "logged in"),
        ]);
        let s = compute("b", &hist, 0, 600, Connected);
        assert_eq!(counts(&s), (3, 2, 2));
        assert_eq!(
            secs(&s),
            (80 + 95 + 50 + 90, 20 + 100 + 5 + 100 + 50 + 10, 0)
        );
        // Reconnections: 100..205 (shutdown and restart: 105), 300..450
        // (logged out, paired again: 150), 500..510 (10).
        assert_eq!(s.longest_reconnect_secs, Some(150));
        assert_eq!(s.mean_reconnect_secs, Some(265.0 / 3.0));
    }

    #[test]
    fn permanent_failure_at_the_end_counts_as_disconnected_to_now() {
        let hist = h(&[
            (0, Disconnected, Connecting, "start"),
            (10, Connecting, Connected, "logged in"),
            (
                1000,
                Connected,
                Replaced,
                "another client took over this session",
            ),
        ]);
        let s = compute("b", &hist, 0, 4000, Replaced);
        assert_eq!(secs(&s), (990, 3010, 0));
        assert_eq!(counts(&s), (1, 0, 1));
        assert_eq!(s.mean_reconnect_secs, None, "never came back");
        assert_eq!(s.current, Replaced);
        let a = s.availability_pct.unwrap();
        assert!((a - 24.75).abs() < 1e-9, "{a}");
    }

    #[test]
    fn entries_exactly_at_since_set_the_start_only() {
        // The login at 110 is exactly at since: the window starts connected,
        // and the login belongs to the window that ends at 110.
        let s = compute("b", &day(), 110, 500, Reconnecting);
        assert_eq!(secs(&s), (390, 0, 0));
        assert_eq!(counts(&s), (1, 0, 0), "the drop at now (500) is inside");
        let before = compute("b", &day(), 0, 110, Connected);
        assert_eq!(counts(&before), (0, 0, 1));
        assert_eq!(secs(&before), (0, 10, 100));
        // A reconnection ending exactly at since is not in the window; one
        // ending exactly at now is.
        let s = compute("b", &day(), 530, 890, Connected);
        assert_eq!(s.longest_reconnect_secs, Some(90));
        assert_eq!(s.mean_reconnect_secs, Some(90.0));
        assert_eq!(counts(&s), (1, 0, 1));
        // The first entry exactly at since: nothing unknown.
        let s = compute("b", &day(), 100, 110, Connected);
        assert_eq!(secs(&s), (0, 10, 0));
    }

    #[test]
    fn clock_stepping_back_never_overlaps() {
        let hist = h(&[
            (100, Disconnected, Connecting, "start"),
            (200, Connecting, Connected, "logged in"),
            (150, Connected, Reconnecting, "connection lost"), // clock went back 50 s
            (260, Reconnecting, Connected, "logged in"),
        ]);
        let s = compute("b", &hist, 0, 300, Connected);
        // The drop is taken at 200: connected 200..200 and 260..300.
        assert_eq!(secs(&s), (40, 100 + 60, 100));
        assert_eq!(s.longest_reconnect_secs, Some(60));
    }

    #[test]
    fn since_after_now_is_an_empty_window() {
        let s = compute("b", &day(), 900, 800, Connected);
        assert_eq!((s.window_start, s.window_end), (800, 800));
        assert_eq!(secs(&s), (0, 0, 0));
        assert_eq!(s.availability_pct, None);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(fmt_secs(0), "0s");
        assert_eq!(fmt_secs(45), "45s");
        assert_eq!(fmt_secs(720), "12m");
        assert_eq!(fmt_secs(750), "12m30s");
        assert_eq!(fmt_secs(3 * 86_400 + 4 * 3600 + 59), "3d4h");
        assert_eq!(fmt_secs(7 * 86_400), "7d");
        assert_eq!(fmt_secs(3600 + 60), "1h1m");
        assert_eq!(fmt_secs(-90), "-1m30s");
    }

    #[test]
    fn table_has_a_row_per_bot() {
        let rows = [
            compute("ventas", &day(), 0, 1200, Disconnected),
            compute("nuevo", &[], 0, 60, Disconnected),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("BOT"), "{t}");
        assert!(lines[1].starts_with("ventas"), "{t}");
        assert!(lines[1].contains("70.0%"), "{t}");
        assert!(lines[1].contains("12m50s"), "connected 770 s: {t}");
        assert!(lines[1].contains("1m30s"), "longest reconnection: {t}");
        assert!(lines[2].starts_with("nuevo"), "{t}");
        assert!(lines[2].contains(" - "), "no availability: {t}");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const STATUSES: [Status; 9] = [
            Status::Disconnected,
            Status::Connecting,
            Status::Connected,
            Status::Reconnecting,
            Status::LoggedOut,
            Status::Replaced,
            Status::Error,
            Status::HeldElsewhere,
            Status::FleetUnreachable,
        ];

        /// A consistent history (each `from` is the previous `to`) from
        /// steps of (delay, status, paired), with some clock steps back.
        fn history(start: i64, steps: &[(i64, usize, bool)]) -> Vec<HistoryEntry> {
            let mut out = Vec::new();
            let (mut at, mut cur) = (start, Status::Disconnected);
            for (i, &(delay, s, paired)) in steps.iter().enumerate() {
                let to = STATUSES[s];
                at += delay;
                if to == cur {
                    continue;
                }
                out.push(HistoryEntry {
                    seq: i as u64 + 1,
                    at,
                    from: cur,
                    to,
                    reason: Some(if paired { "paired" } else { "logged in" }.into()),
                });
                cur = to;
            }
            out
        }

        fn steps() -> impl Strategy<Value = Vec<(i64, usize, bool)>> {
            proptest::collection::vec((-20i64..400, 0usize..7, any::<bool>()), 0..40)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn seconds_add_up_and_availability_is_a_percentage(
                start in -500i64..2000,
                steps in steps(),
                since in 0i64..3000,
                len in 0i64..6000,
            ) {
                let hist = history(start, &steps);
                let now = since + len;
                let s = compute("p", &hist, since, now, Status::Connected);
                prop_assert!(s.connected_secs >= 0 && s.disconnected_secs >= 0 && s.unknown_secs >= 0);
                prop_assert_eq!(s.connected_secs + s.disconnected_secs + s.unknown_secs, now - since);
                if let Some(a) = s.availability_pct {
                    prop_assert!((0.0..=100.0).contains(&a), "{}", a);
                }
                prop_assert_eq!(s.availability_pct.is_none(), s.connected_secs + s.disconnected_secs == 0);
                if let (Some(m), Some(l)) = (s.mean_reconnect_secs, s.longest_reconnect_secs) {
                    prop_assert!(m >= 0.0 && m <= l as f64 + 1e-9);
                } else {
                    prop_assert_eq!(s.mean_reconnect_secs.is_none(), s.longest_reconnect_secs.is_none());
                }
            }

            /// Windows (a, b] and (b, c] add up to (a, c].
            #[test]
            fn adjacent_windows_add_up(
                start in -500i64..2000,
                steps in steps(),
                a in 0i64..3000,
                ab in 0i64..3000,
                bc in 0i64..3000,
            ) {
                let hist = history(start, &steps);
                let (b, c) = (a + ab, a + ab + bc);
                let x = compute("p", &hist, a, b, Status::Connected);
                let y = compute("p", &hist, b, c, Status::Connected);
                let z = compute("p", &hist, a, c, Status::Connected);
                prop_assert_eq!(x.connected_secs + y.connected_secs, z.connected_secs);
                prop_assert_eq!(x.disconnected_secs + y.disconnected_secs, z.disconnected_secs);
                prop_assert_eq!(x.unknown_secs + y.unknown_secs, z.unknown_secs);
                prop_assert_eq!(x.disconnects + y.disconnects, z.disconnects);
                prop_assert_eq!(x.pairings + y.pairings, z.pairings);
                prop_assert_eq!(x.logins_without_qr + y.logins_without_qr, z.logins_without_qr);
                prop_assert_eq!(
                    x.longest_reconnect_secs.max(y.longest_reconnect_secs),
                    z.longest_reconnect_secs
                );
            }
        }
    }
}
