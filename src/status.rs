//! The dashboard rows of `wavault status` (and of the control socket).

use crate::error::Result;
use crate::sessions::{Sessions, Status};
use crate::vault::Vault;
use serde::{Deserialize, Serialize};

/// One bot as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    pub bot: String,
    pub enabled: bool,
    pub status: Status,
    /// The paired phone number (masked unless asked otherwise).
    pub phone: Option<String>,
    pub last_activity: Option<i64>,
    pub authenticated_at: Option<i64>,
    pub connection_attempts: u64,
    pub last_connection_error: Option<String>,
    /// `paired`, `unpaired` or `incomplete`.
    pub credentials: Option<crate::store::Credentials>,
    /// Paired, not connected, and no activity for longer than
    /// [`IDLE_WARNING`]: WhatsApp unlinks companion devices that stay away
    /// for about 30 days, so this is the time to bring it back.
    #[serde(default)]
    pub idle: bool,
    /// Messages, hook deliveries and the inbound queue.
    #[serde(default)]
    pub messages: MessageCounts,
    /// `status` is the last one recorded by a `wavault run` that is no
    /// longer running and did not mark its bots stopped (it crashed or was
    /// killed): the bot is not really connecting or connected now.
    #[serde(default)]
    pub stale: bool,
    /// While a running bot waits to retry after a failed connection
    /// attempt: the number of that attempt in the current failure streak
    /// (whatsapp-rust's own count, as its log says "attempt N"). `None`
    /// when connected, when an attempt is under way, or not running.
    #[serde(default)]
    pub retry_attempt: Option<u32>,
    /// When the next attempt is due (unix seconds; an estimate: the
    /// client's backoff has ±10 % jitter). Set with `retry_attempt`.
    #[serde(default)]
    pub next_retry_at: Option<i64>,
    /// In a fleet (`run --nats`): the id of the host whose `run` answered.
    #[serde(default)]
    pub host: Option<String>,
}

/// A running bot's retry state: see [`StatusRow::retry_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempt: u32,
    /// Unix seconds.
    pub next_at: i64,
}

/// Puts the runner's retry state into `rows` (bots not waiting to retry,
/// or in a state where no retry happens, get none).
pub fn with_retry(rows: &mut [StatusRow], retry: &std::collections::HashMap<String, Retry>) {
    for r in rows {
        let waiting = retry
            .get(&r.bot)
            .filter(|_| matches!(r.status, Status::Connecting | Status::Reconnecting));
        r.retry_attempt = waiting.map(|x| x.attempt);
        r.next_retry_at = waiting.map(|x| x.next_at);
    }
}

/// The status as the overview shows it at `now`: the stored status, or
/// `reconnecting (attempt N, next in S s)` for a bot waiting to retry.
pub fn status_text(row: &StatusRow, now: i64) -> String {
    match (row.retry_attempt, row.next_retry_at) {
        (Some(n), Some(at)) if matches!(row.status, Status::Connecting | Status::Reconnecting) => {
            format!(
                "reconnecting (attempt {n}, next in {} s)",
                (at - now).max(0)
            )
        }
        _ => row.status.as_str().to_owned(),
    }
}

/// A bot's traffic as `status` shows it (totals since the vault has known it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub inbound: u64,
    pub outbound: u64,
    /// Messages waiting in the inbound queue for the hook.
    pub queued: usize,
    /// Most failed hook attempts of any queued message (0: none failing).
    pub oldest_attempts: u32,
    pub hook_failures: u64,
    /// Inbound messages refused because the queue was full (WhatsApp keeps them).
    pub refused_full: u64,
    /// Queued messages that ever outlived the age limit.
    pub expired: u64,
    /// Queued messages held back now (age limit passed): `wavault queue retry|drop`.
    pub held: usize,
    /// The queued entries by event kind (`message`, `receipt`, `status`,
    /// `decrypt_failure`): only kinds with entries queued now.
    #[serde(default)]
    pub by_kind: std::collections::BTreeMap<String, KindCounts>,
}

/// Queued entries of one event kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    pub queued: usize,
    /// Those failing: a hook call (or action) failed, or held back.
    pub failing: usize,
}

/// Counts queued entries by kind (their summary's `event`).
pub fn count_by_kind(
    pending: &[crate::messaging::queue::Queued],
) -> std::collections::BTreeMap<String, KindCounts> {
    let mut out = std::collections::BTreeMap::<String, KindCounts>::new();
    for q in pending {
        let kind = crate::messaging::events::EventKind::of_summary(&q.summary);
        let c = out.entry(kind.as_str().to_owned()).or_default();
        c.queued += 1;
        if q.attempts > 0 || q.held {
            c.failing += 1;
        }
    }
    out
}

impl MessageCounts {
    /// The queue in short: `3 (receipt 2, failing 1)` (kinds other than
    /// messages, those failing, those held; just `3` when all are messages
    /// and none fails).
    pub fn queued_text(&self) -> String {
        let failing: usize = self.by_kind.values().map(|k| k.failing).sum();
        let mut parts: Vec<String> = self
            .by_kind
            .iter()
            .filter(|(k, _)| k.as_str() != "message")
            .map(|(k, c)| format!("{k} {}", c.queued))
            .collect();
        if failing > 0 {
            parts.push(format!("failing {failing}"));
        }
        if self.held > 0 {
            parts.push(format!("{} held", self.held));
        }
        if self.by_kind.is_empty() && (self.oldest_attempts > 0 || self.held > 0) {
            // A row without kinds (from an older `run`): failing, count unknown.
            return format!("{}!", self.queued);
        }
        if parts.is_empty() {
            self.queued.to_string()
        } else {
            format!("{} ({})", self.queued, parts.join(", "))
        }
    }
}

/// Reads a bot's message counts.
pub fn message_counts(view: &crate::vault::BotView) -> Result<MessageCounts> {
    let q = crate::messaging::queue::Queue::new(view.clone());
    let t = q.traffic()?;
    let queued = q.len()?;
    let (oldest_attempts, held, by_kind) = if queued > 0 {
        let p = q.pending()?;
        (
            p.iter().map(|m| m.attempts).max().unwrap_or(0),
            p.iter().filter(|m| m.held).count(),
            count_by_kind(&p),
        )
    } else {
        (0, 0, Default::default())
    };
    Ok(MessageCounts {
        inbound: t.inbound,
        outbound: t.outbound,
        queued,
        oldest_attempts,
        hook_failures: t.hook_failures,
        refused_full: t.refused_full,
        expired: t.expired,
        held,
        by_kind,
    })
}

/// Idle warning threshold: half of WhatsApp's roughly 30-day expiry of
/// companion devices that stay offline.
pub const IDLE_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// Whether a bot counts as idle at `now` (see [`StatusRow::idle`]).
pub fn is_idle(
    status: Status,
    last_activity: Option<i64>,
    credentials: Option<crate::store::Credentials>,
    now: i64,
    threshold: std::time::Duration,
) -> bool {
    credentials == Some(crate::store::Credentials::Paired)
        && status != Status::Connected
        && last_activity.is_some_and(|t| now - t > threshold.as_secs() as i64)
}

/// Reads every bot's row from the vault.
pub fn collect(vault: &Vault) -> Result<Vec<StatusRow>> {
    let now = crate::vault::now();
    vault
        .list_bots()?
        .into_iter()
        .map(|cfg| {
            let view = vault.view(&cfg.id);
            let m = Sessions::new(view.clone()).load(now)?;
            let credentials = crate::store::credentials_state(&view);
            let idle = is_idle(m.status, m.last_activity, credentials, now, IDLE_WARNING);
            Ok(StatusRow {
                bot: cfg.id.to_string(),
                enabled: cfg.enabled,
                status: m.status,
                phone: m.phone,
                last_activity: m.last_activity,
                authenticated_at: m.authenticated_at,
                connection_attempts: m.connection_attempts,
                last_connection_error: m.last_connection_error,
                credentials,
                idle,
                messages: message_counts(&view)?,
                stale: false,
                retry_attempt: None,
                next_retry_at: None,
                host: None,
            })
        })
        .collect()
}

/// Masks all but the last four digits: `52*******5678`.
pub fn mask_phone(p: &str) -> String {
    let n = p.chars().count();
    p.chars()
        .enumerate()
        .map(|(i, c)| if i < 2 || i + 4 >= n { c } else { '*' })
        .collect()
}

/// Rows read from the vault while no `wavault run` holds it: a bot left
/// connecting, connected or reconnecting was recorded by a `run` that
/// stopped without marking it (a clean stop marks it disconnected).
/// Returns whether any row is stale.
pub fn mark_stale(rows: &mut [StatusRow]) -> bool {
    let mut any = false;
    for r in rows {
        r.stale = matches!(
            r.status,
            Status::Connecting | Status::Connected | Status::Reconnecting
        );
        any |= r.stale;
    }
    any
}

/// Masks the phone of every row.
pub fn masked(rows: Vec<StatusRow>) -> Vec<StatusRow> {
    rows.into_iter()
        .map(|mut r| {
            r.phone = r.phone.as_deref().map(mask_phone);
            r
        })
        .collect()
}

/// Human time: `2026-11-29 04:31:07Z` from unix seconds.
pub fn fmt_time(t: Option<i64>) -> String {
    let Some(t) = t else { return "-".into() };
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The table `wavault status` prints.
pub fn table(rows: &[StatusRow]) -> String {
    use crate::table::{Align::*, Table};
    let mut t = Table::new(&[
        ("BOT", Left),
        ("STATUS", Left),
        ("PHONE", Left),
        ("LAST ACTIVITY", Left),
        ("AUTHENTICATED", Left),
        ("ATTEMPTS", Right),
        ("IN", Right),
        ("OUT", Right),
        ("QUEUED", Right),
        ("LAST ERROR", Left),
    ]);
    let now = crate::vault::now();
    for r in rows {
        let m = &r.messages;
        t.row([
            r.bot.clone(),
            format!(
                "{}{}{}{}",
                status_text(r, now),
                if r.stale { " (stale)" } else { "" },
                if r.enabled { "" } else { " (off)" },
                if r.idle { " IDLE" } else { "" }
            ),
            r.phone.as_deref().unwrap_or("-").to_owned(),
            fmt_time(r.last_activity),
            fmt_time(r.authenticated_at),
            r.connection_attempts.to_string(),
            m.inbound.to_string(),
            m.outbound.to_string(),
            m.queued_text(),
            r.last_connection_error.as_deref().unwrap_or("-").to_owned(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: Status, retry: Option<(u32, i64)>) -> StatusRow {
        StatusRow {
            bot: "b".into(),
            enabled: true,
            status,
            phone: None,
            last_activity: None,
            authenticated_at: None,
            connection_attempts: 7,
            last_connection_error: None,
            credentials: None,
            idle: false,
            messages: MessageCounts::default(),
            stale: false,
            retry_attempt: retry.map(|r| r.0),
            next_retry_at: retry.map(|r| r.1),
            host: None,
        }
    }

    #[test]
    fn queued_entries_count_by_kind_with_those_failing() {
        let q =
            |seq: u64, summary: &str, attempts: u32, held: bool| crate::messaging::queue::Queued {
                seq,
                chat: "c".into(),
                sender: "s".into(),
                id: seq.to_string(),
                received_at: 0,
                summary: summary.into(),
                attempts,
                last_error: None,
                accepted: None,
                held,
            };
        let pending = [
            q(1, r#"{"id":"m1","text":"hi"}"#, 0, false),
            q(2, r#"{"event":"message","id":"m2"}"#, 2, false),
            q(3, r#"{"event":"receipt","type":"sent"}"#, 0, false),
            q(4, r#"{"event":"receipt","type":"delivered"}"#, 0, true),
            q(5, r#"{"event":"decrypt_failure"}"#, 1, false),
            q(6, "not json", 0, false),
        ];
        let by_kind = count_by_kind(&pending);
        let k = |queued, failing| KindCounts { queued, failing };
        let want: std::collections::BTreeMap<String, KindCounts> = [
            ("decrypt_failure".to_owned(), k(1, 1)),
            ("message".to_owned(), k(3, 1)),
            ("receipt".to_owned(), k(2, 1)),
        ]
        .into();
        assert_eq!(by_kind, want);
        let m = MessageCounts {
            queued: 6,
            held: 1,
            by_kind,
            ..MessageCounts::default()
        };
        assert_eq!(
            m.queued_text(),
            "6 (decrypt_failure 1, receipt 2, failing 3, 1 held)"
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json["by_kind"]["receipt"],
            serde_json::json!({"queued": 2, "failing": 1})
        );
        let quiet = MessageCounts {
            queued: 2,
            by_kind: [("message".to_owned(), k(2, 0))].into(),
            ..MessageCounts::default()
        };
        assert_eq!(quiet.queued_text(), "2");
    }

    #[test]
    fn a_bot_waiting_to_retry_reads_reconnecting_with_attempt_and_countdown() {
        let now = 1_000;
        let text = |st, retry| status_text(&row(st, retry), now);
        assert_eq!(
            text(Status::Connecting, Some((7, now + 30))),
            "reconnecting (attempt 7, next in 30 s)"
        );
        assert_eq!(
            text(Status::Reconnecting, Some((2, now - 1))),
            "reconnecting (attempt 2, next in 0 s)",
            "overdue: an attempt is about to start"
        );
        assert_eq!(text(Status::Connecting, None), "connecting");
        assert_eq!(text(Status::Reconnecting, None), "reconnecting");
        assert_eq!(text(Status::LoggedOut, Some((3, now + 5))), "logged_out");
        // The runner's state goes only to bots that can be retrying.
        let retry = std::collections::HashMap::from([(
            "b".to_string(),
            Retry {
                attempt: 3,
                next_at: now + 2,
            },
        )]);
        let mut rows = vec![row(Status::Connecting, None), row(Status::Connected, None)];
        rows[1].bot = "c".into();
        with_retry(&mut rows, &retry);
        assert_eq!(
            (rows[0].retry_attempt, rows[0].next_retry_at),
            (Some(3), Some(now + 2))
        );
        assert_eq!(rows[1].retry_attempt, None);
        let mut rows = vec![row(Status::Connected, Some((3, now)))];
        with_retry(&mut rows, &retry);
        assert_eq!((rows[0].retry_attempt, rows[0].next_retry_at), (None, None));
    }

    #[test]
    fn masks_and_formats() {
        assert_eq!(mask_phone("5215512345678"), "52*******5678");
        assert_eq!(mask_phone("123"), "123");
        assert_eq!(fmt_time(Some(0)), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(Some(1_795_000_000)), "2026-11-18 11:06:40Z");
        assert_eq!(fmt_time(None), "-");
    }

    #[test]
    fn idle_means_paired_away_and_quiet_past_the_threshold() {
        let day = 86_400;
        let now = 100 * day;
        let t = IDLE_WARNING;
        let paired = Some(crate::store::Credentials::Paired);
        assert!(is_idle(
            Status::Disconnected,
            Some(now - 15 * day),
            paired,
            now,
            t
        ));
        assert!(is_idle(
            Status::Reconnecting,
            Some(now - 15 * day),
            paired,
            now,
            t
        ));
        assert!(!is_idle(
            Status::Disconnected,
            Some(now - 13 * day),
            paired,
            now,
            t
        ));
        assert!(
            !is_idle(Status::Connected, Some(now - 90 * day), paired, now, t),
            "connected is alive"
        );
        assert!(!is_idle(
            Status::Disconnected,
            Some(now - 90 * day),
            Some(crate::store::Credentials::Unpaired),
            now,
            t
        ));
        assert!(!is_idle(Status::Disconnected, None, paired, now, t));
    }
}
