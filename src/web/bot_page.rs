//! The dashboard's page for one bot (`/bots/{id}`, a row of the overview
//! links to it), rendered on the server: its status over the last 7 days
//! as a timeline bar (from the session history, cut like `wavault stats`
//! cuts it), the `stats` figures over the same window, recent errors,
//! messages per hour as a small inline SVG chart, and the QR code large
//! while the bot waits for a scan. No inline script or style (the CSP
//! allows neither): `/assets/bot.js` reloads the page when the bot's status
//! or QR code changes.

use crate::sessions::{HistoryEntry, Status};
use crate::stats::BotStats;
use crate::status::{fmt_time, StatusRow};

/// The window of the timeline and the figures.
pub const WINDOW_SECS: i64 = 7 * 86_400;
/// Hours in the message chart.
pub const CHART_HOURS: i64 = 48;
/// Errors listed at most.
pub const MAX_ERRORS: usize = 10;

/// One stretch of the timeline: `[from, to)` in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `connected`, `reconnecting`, `down`, `logged_out` or `unknown`
    /// (before the first history entry).
    pub state: &'static str,
    pub from: i64,
    pub to: i64,
}

/// The timeline's word for a status: connecting counts as reconnecting,
/// every stop but a logout (shut down, replaced, banned, ...) as down.
pub fn category(s: Status) -> &'static str {
    match s {
        Status::Connected => "connected",
        Status::Connecting | Status::Reconnecting => "reconnecting",
        Status::LoggedOut => "logged_out",
        Status::Disconnected
        | Status::Replaced
        | Status::Error
        | Status::HeldElsewhere
        | Status::FleetUnreachable => "down",
    }
}

/// Pure: the states of `history` (oldest first) over `[since, now]`, with
/// the rules of [`crate::stats::compute`] (an entry earlier than its
/// predecessor counts at its predecessor's time; unknown before the first
/// entry; entries after `now` ignored). Adjacent stretches in the same
/// state are merged; empty ones are left out.
pub fn timeline(history: &[HistoryEntry], since: i64, now: i64) -> Vec<Segment> {
    let since = since.min(now);
    let mut out: Vec<Segment> = Vec::new();
    let mut push = |state: &'static str, from: i64, to: i64| {
        if to <= from {
            return;
        }
        match out.last_mut() {
            Some(last) if last.state == state && last.to == from => last.to = to,
            _ => out.push(Segment { state, from, to }),
        }
    };
    let mut state = "unknown";
    let mut cursor = since;
    let mut prev_at = i64::MIN;
    for e in history {
        let at = e.at.max(prev_at);
        prev_at = at;
        if at > now {
            break;
        }
        if at > since {
            push(state, cursor, at);
            cursor = at;
        }
        state = category(e.to);
    }
    push(state, cursor, now);
    out
}

/// The recent failures in `history`: transitions into reconnecting,
/// logged out, replaced or error, newest first, at most [`MAX_ERRORS`].
pub fn recent_errors(history: &[HistoryEntry]) -> Vec<&HistoryEntry> {
    history
        .iter()
        .rev()
        .filter(|e| {
            matches!(
                e.to,
                Status::Reconnecting | Status::LoggedOut | Status::Replaced | Status::Error
            )
        })
        .take(MAX_ERRORS)
        .collect()
}

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// What the page shows, gathered by the handler.
#[derive(Debug)]
pub struct BotPage<'a> {
    pub row: &'a StatusRow,
    pub stats: &'a BotStats,
    pub history: &'a [HistoryEntry],
    /// Hour start → (inbound, outbound), as the traffic counters keep them.
    pub hours: &'a std::collections::BTreeMap<i64, (u64, u64)>,
    /// The QR code's SVG while the bot waits for a scan, and its version.
    pub qr: Option<(String, String)>,
    pub now: i64,
}

fn timeline_svg(segs: &[Segment], since: i64, now: i64) -> String {
    let span = (now - since).max(1) as f64;
    let mut s = String::from(
        "<svg id=\"timeline\" class=\"timeline\" viewBox=\"0 0 1000 30\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"status over the last 7 days\">",
    );
    for g in segs {
        let x = (g.from - since) as f64 * 1000.0 / span;
        let w = (g.to - g.from) as f64 * 1000.0 / span;
        s.push_str(&format!(
            "<rect class=\"seg {st}\" data-state=\"{st}\" data-from=\"{f}\" data-to=\"{t}\" x=\"{x:.3}\" y=\"0\" width=\"{w:.3}\" height=\"30\"><title>{st}: {ff} to {tt}</title></rect>",
            st = g.state,
            f = g.from,
            t = g.to,
            ff = fmt_time(Some(g.from)),
            tt = fmt_time(Some(g.to)),
        ));
    }
    s.push_str("</svg>");
    s
}

fn chart_svg(hours: &std::collections::BTreeMap<i64, (u64, u64)>, now: i64) -> (String, u64, u64) {
    let last = now - now.rem_euclid(3600);
    let first = last - (CHART_HOURS - 1) * 3600;
    let slots: Vec<(i64, u64, u64)> = (0..CHART_HOURS)
        .map(|i| {
            let h = first + i * 3600;
            let (a, b) = hours.get(&h).copied().unwrap_or((0, 0));
            (h, a, b)
        })
        .collect();
    let max = slots.iter().map(|s| s.1.max(s.2)).max().unwrap_or(0).max(1);
    let (tin, tout) = slots
        .iter()
        .fold((0, 0), |acc, s| (acc.0 + s.1, acc.1 + s.2));
    let width = CHART_HOURS * 10;
    let mut s = format!(
        "<svg id=\"chart\" class=\"chart\" viewBox=\"0 0 {width} 100\" role=\"img\" aria-label=\"messages per hour, last {CHART_HOURS} hours\">"
    );
    for (i, (h, a, b)) in slots.iter().enumerate() {
        let x = i as i64 * 10;
        for (dx, n, class) in [(1, *a, "in"), (5, *b, "out")] {
            let hgt = n as f64 * 96.0 / max as f64;
            s.push_str(&format!(
                "<rect class=\"bar {class}\" x=\"{}\" y=\"{:.2}\" width=\"4\" height=\"{hgt:.2}\"><title>{} {class}: {n}</title></rect>",
                x + dx,
                100.0 - hgt,
                fmt_time(Some(*h)),
            ));
        }
    }
    s.push_str("</svg>");
    (s, tin, tout)
}

fn secs(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), crate::stats::fmt_secs)
}

/// The whole page.
pub fn render(p: &BotPage<'_>) -> String {
    let id = esc(&p.row.bot);
    let since = p.now - WINDOW_SECS;
    let segs = timeline(p.history, since, p.now);
    let st = p.stats;
    let status = p.row.status.as_str();
    let mut h = String::new();
    h.push_str(&format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>wavault: {id}</title>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\"></head>\n\
         <body id=\"bot-page\" data-bot=\"{id}\" data-status=\"{status}\" data-qr=\"{qr}\">\n\
         <p><a href=\"/\">&larr; all bots</a></p>\n\
         <h1>{id} <span id=\"status\" class=\"status {status}\">{text}{off}</span></h1>\n",
        text = esc(&crate::status::status_text(p.row, p.now)),
        qr = p.qr.as_ref().map(|q| esc(&q.1)).unwrap_or_default(),
        off = if p.row.enabled { "" } else { " (off)" },
    ));
    if let Some((svg, _)) = &p.qr {
        h.push_str(&format!(
            "<section id=\"qr\" class=\"qr-large\"><h2>Scan to pair</h2>\
             <p>WhatsApp on the phone: Linked devices, Link a device. The code changes every few seconds; this page follows.</p>{svg}</section>\n"
        ));
    }
    h.push_str("<h2>Last 7 days</h2>\n");
    h.push_str(&timeline_svg(&segs, since, p.now));
    h.push_str(&format!(
        "<p class=\"axis\"><span>{}</span><span>now</span></p>\n\
         <p class=\"legend\"><span class=\"key connected\"></span>connected \
         <span class=\"key reconnecting\"></span>reconnecting \
         <span class=\"key down\"></span>down \
         <span class=\"key logged_out\"></span>logged out \
         <span class=\"key unknown\"></span>no history</p>\n",
        fmt_time(Some(since))
    ));
    let avail = st
        .availability_pct
        .map_or_else(|| "-".into(), |a| format!("{a:.1} %"));
    h.push_str(&format!(
        "<table id=\"figures\" class=\"figures\"><tbody>\
         <tr><th>Available</th><td id=\"availability\">{avail}</td></tr>\
         <tr><th>Connected / not connected</th><td>{} / {}</td></tr>\
         <tr><th>Disconnects</th><td id=\"disconnects\">{}</td></tr>\
         <tr><th>Reconnect time, mean / longest</th><td id=\"reconnect\">{} / {}</td></tr>\
         <tr><th>Pairings / logins without QR</th><td>{} / {}</td></tr>\
         <tr><th>Messages in / out</th><td>{} / {}</td></tr>\
         <tr><th>Connection attempts</th><td>{}</td></tr>\
         <tr><th>Last connection error</th><td>{}</td></tr>\
         <tr><th>Queued for the hook</th><td id=\"queued\">{}</td></tr>\
         </tbody></table>\n",
        crate::stats::fmt_secs(st.connected_secs),
        crate::stats::fmt_secs(st.disconnected_secs),
        st.disconnects,
        st.mean_reconnect_secs
            .map_or_else(|| "-".into(), |m| crate::stats::fmt_secs(m.round() as i64)),
        secs(st.longest_reconnect_secs),
        st.pairings,
        st.logins_without_qr,
        st.messages_in,
        st.messages_out,
        p.row.connection_attempts,
        esc(p.row.last_connection_error.as_deref().unwrap_or("-")),
        esc(&p.row.messages.queued_text()),
    ));
    h.push_str("<h2>Recent errors</h2>\n");
    let errors = recent_errors(p.history);
    if errors.is_empty() {
        h.push_str("<p id=\"errors\">none recorded</p>\n");
    } else {
        h.push_str("<table id=\"errors\"><thead><tr><th>When</th><th>Became</th><th>Why</th></tr></thead><tbody>");
        for e in errors {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                fmt_time(Some(e.at)),
                e.to.as_str(),
                esc(e.reason.as_deref().unwrap_or("-"))
            ));
        }
        h.push_str("</tbody></table>\n");
    }
    let (chart, tin, tout) = chart_svg(p.hours, p.now);
    h.push_str(&format!(
        "<h2>Messages per hour</h2>\n{chart}\n<p class=\"legend\"><span class=\"key in\"></span>in ({tin}) \
         <span class=\"key out\"></span>out ({tout}) over the last {CHART_HOURS} hours</p>\n"
    ));
    h.push_str("<script src=\"/assets/bot.js\"></script></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, at: i64, from: Status, to: Status) -> HistoryEntry {
        HistoryEntry {
            seq,
            at,
            from,
            to,
            reason: None,
        }
    }

    #[test]
    fn timeline_cuts_merges_and_orders() {
        use Status::*;
        let h = [
            e(1, 100, Disconnected, Connecting),
            e(2, 110, Connecting, Connected),
            e(3, 200, Connected, Reconnecting),
            e(4, 210, Reconnecting, Connecting),
            e(5, 220, Connecting, Connected),
            // Clock stepped back: counts at 220.
            e(6, 215, Connected, LoggedOut),
            e(7, 300, LoggedOut, Disconnected),
            e(8, 900, Disconnected, Connected), // after now: ignored
        ];
        let got: Vec<(&str, i64, i64)> = timeline(&h, 50, 400)
            .iter()
            .map(|s| (s.state, s.from, s.to))
            .collect();
        assert_eq!(
            got,
            [
                ("unknown", 50, 100),
                ("reconnecting", 100, 110),
                ("connected", 110, 200),
                // reconnecting then connecting: one stretch
                ("reconnecting", 200, 220),
                ("logged_out", 220, 300),
                ("down", 300, 400),
            ]
        );
        // A window starting inside: the state at its start, no unknown.
        let got: Vec<&str> = timeline(&h, 150, 250).iter().map(|s| s.state).collect();
        assert_eq!(got, ["connected", "reconnecting", "logged_out"]);
        assert!(
            timeline(&[], 0, 10)
                == [Segment {
                    state: "unknown",
                    from: 0,
                    to: 10
                }]
        );
    }

    #[test]
    fn recent_errors_newest_first() {
        use Status::*;
        let h = [
            e(1, 1, Connecting, Connected),
            e(2, 2, Connected, Reconnecting),
            e(3, 3, Reconnecting, Connected),
            e(4, 4, Connected, LoggedOut),
        ];
        let got: Vec<u64> = recent_errors(&h).iter().map(|e| e.seq).collect();
        assert_eq!(got, [4, 2]);
    }

    #[test]
    fn the_badge_of_a_bot_waiting_to_retry_says_reconnecting_with_its_attempt() {
        let now = 1_000_000;
        let row: StatusRow = serde_json::from_value(serde_json::json!({
            "bot": "b", "enabled": true, "status": "connecting", "phone": null,
            "last_activity": null, "authenticated_at": null, "connection_attempts": 4,
            "last_connection_error": null, "credentials": null,
            "retry_attempt": 4, "next_retry_at": now + 5
        }))
        .unwrap();
        let stats = crate::stats::compute("b", &[], now - WINDOW_SECS, now, row.status);
        let page = render(&BotPage {
            row: &row,
            stats: &stats,
            history: &[],
            hours: &Default::default(),
            qr: None,
            now,
        });
        assert!(
            page.contains(
                "<span id=\"status\" class=\"status connecting\">reconnecting (attempt 4, next in 5 s)</span>"
            ),
            "{page}"
        );
        assert!(page.contains("data-status=\"connecting\""), "{page}");
    }

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
