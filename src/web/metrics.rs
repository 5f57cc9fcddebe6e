//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Per bot (label `bot`, the operator's id): `wavault_bot_up`,
//! `wavault_bot_status{status}` (1 for the current one), connection
//! attempts, time of the last connect, logins without QR and pairings
//! (from the history), messages in and out, the inbound queue's depth,
//! hook failures, refused and expired messages; for the process: the durable-write latency
//! histogram, vault size, timer job runs and last success, alerts raised,
//! logins and decrypt failures per bot, hook events by kind and outcome,
//! the receipt latency (sent -> delivered) histogram per bot.

use std::fmt::Write;

use crate::error::Result;
use crate::ops::Service;
use crate::sessions::{Sessions, Status};
use crate::status;

const STATUSES: [Status; 9] = [
    Status::Connecting,
    Status::Connected,
    Status::Disconnected,
    Status::Reconnecting,
    Status::LoggedOut,
    Status::Replaced,
    Status::Error,
    Status::HeldElsewhere,
    Status::FleetUnreachable,
];

/// The text being written, one metric family after another.
struct Exposition(String);

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: &str, text: &str) {
        let _ = writeln!(self.0, "# HELP {name} {text}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value` (no braces without labels).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = if labels.is_empty() {
            writeln!(self.0, "{name} {value}")
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            writeln!(self.0, "{name}{{{}}} {value}", l.join(","))
        };
    }
}

/// Label values escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the per-bot families show of one bot.
struct BotFacts<'a> {
    row: &'a status::StatusRow,
    last_connect: Option<i64>,
    logins_without_qr: u64,
    pairings: u64,
}

/// Renders every metric now.
pub(crate) fn render(shared: &dyn Service) -> Result<String> {
    let v = shared.vault();
    let rows = status::collect(v)?;
    let facts = bot_facts(v, &rows)?;
    let mut out = Exposition(String::new());
    connection_families(&mut out, &facts);
    message_families(&mut out, &facts);
    vault_families(&mut out, v);
    runner_families(&mut out, &shared.live_state());
    if let Some(h) = shared.host_id() {
        let name = "wavault_host_info";
        out.family(
            name,
            "gauge",
            "1, labelled with this host's id in the fleet (--host-id)",
        );
        out.sample(name, &[("host", &h)], 1);
    }
    Ok(out.0)
}

/// Each bot's row with what its history adds: the last connect, logins
/// without QR and pairings.
fn bot_facts<'a>(v: &crate::Vault, rows: &'a [status::StatusRow]) -> Result<Vec<BotFacts<'a>>> {
    let now = crate::vault::now();
    rows.iter()
        .map(|r| {
            let id = crate::BotId::parse(&r.bot)?;
            let history = Sessions::new(v.view(&id)).history()?;
            let last_connect = history
                .iter()
                .rev()
                .find(|h| h.to == Status::Connected)
                .map(|h| h.at);
            let all = crate::stats::compute(&r.bot, &history, i64::MIN / 4, now, r.status);
            Ok(BotFacts {
                row: r,
                last_connect,
                logins_without_qr: all.logins_without_qr,
                pairings: all.pairings,
            })
        })
        .collect()
}

/// Up, status, attempts, last connect, logins, idle: per bot.
fn connection_families(out: &mut Exposition, facts: &[BotFacts<'_>]) {
    let up = "wavault_bot_up";
    out.family(up, "gauge", "1 when the bot is connected");
    for f in facts {
        let connected = u8::from(f.row.status == Status::Connected);
        out.sample(up, &[("bot", &f.row.bot)], connected);
    }
    let status = "wavault_bot_status";
    out.family(status, "gauge", "1 for the bot's current status");
    for f in facts {
        for s in STATUSES {
            let labels = [("bot", f.row.bot.as_str()), ("status", s.as_str())];
            out.sample(status, &labels, u8::from(f.row.status == s));
        }
    }
    let attempts = "wavault_bot_connection_attempts_total";
    out.family(
        attempts,
        "counter",
        "connection attempts since the vault has known the bot",
    );
    for f in facts {
        out.sample(attempts, &[("bot", &f.row.bot)], f.row.connection_attempts);
    }
    let last = "wavault_bot_last_connect_timestamp_seconds";
    out.family(
        last,
        "gauge",
        "unix time of the last transition to connected",
    );
    for f in facts {
        if let Some(t) = f.last_connect {
            out.sample(last, &[("bot", &f.row.bot)], t);
        }
    }
    let logins = "wavault_bot_logins_total";
    out.family(
        logins,
        "counter",
        "connections by how they started: stored credentials (no QR) or a pairing",
    );
    for f in facts {
        let bot = f.row.bot.as_str();
        out.sample(
            logins,
            &[("bot", bot), ("kind", "without_qr")],
            f.logins_without_qr,
        );
        out.sample(logins, &[("bot", bot), ("kind", "pairing")], f.pairings);
    }
    let idle = "wavault_bot_idle";
    out.family(
        idle,
        "gauge",
        "1 when the bot is paired, away and quiet past the idle warning",
    );
    for f in facts {
        out.sample(idle, &[("bot", &f.row.bot)], u8::from(f.row.idle));
    }
}

/// Message counters and the queue, per bot.
fn message_families(out: &mut Exposition, facts: &[BotFacts<'_>]) {
    type Pick = fn(&status::MessageCounts) -> u64;
    let families: [(&str, &str, &str, Pick); 7] = [
        (
            "wavault_bot_messages_in_total",
            "counter",
            "Inbound messages received",
            |m| m.inbound,
        ),
        (
            "wavault_bot_messages_out_total",
            "counter",
            "Messages sent (replies, reactions, send)",
            |m| m.outbound,
        ),
        (
            "wavault_bot_queue_depth",
            "gauge",
            "Inbound messages waiting for the hook",
            |m| m.queued as u64,
        ),
        (
            "wavault_bot_hook_failures_total",
            "counter",
            "Failed hook calls (error, non-2xx, non-zero exit, time limit)",
            |m| m.hook_failures,
        ),
        (
            "wavault_bot_queue_refused_total",
            "counter",
            "Inbound messages refused because the queue was full (left on WhatsApp)",
            |m| m.refused_full,
        ),
        (
            "wavault_bot_queue_expired_total",
            "counter",
            "Queued messages that outlived the age limit (held back)",
            |m| m.expired,
        ),
        (
            "wavault_bot_queue_held",
            "gauge",
            "Queued messages held back now, waiting for `wavault queue retry|drop`",
            |m| m.held as u64,
        ),
    ];
    for (name, kind, text, pick) in families {
        out.family(name, kind, text);
        for f in facts {
            out.sample(name, &[("bot", &f.row.bot)], pick(&f.row.messages));
        }
    }
}

/// The durable-write latency histogram and the database's size.
fn vault_families(out: &mut Exposition, v: &crate::Vault) {
    let h = v.durable_latency();
    let name = "wavault_durable_write_seconds";
    out.family(
        name,
        "histogram",
        "time for a write to become durable (group commit)",
    );
    let bucket = "wavault_durable_write_seconds_bucket";
    for (le, count) in &h.buckets {
        out.sample(bucket, &[("le", &le.to_string())], count);
    }
    out.sample(bucket, &[("le", "+Inf")], h.count);
    out.sample("wavault_durable_write_seconds_sum", &[], h.sum_secs);
    out.sample("wavault_durable_write_seconds_count", &[], h.count);
    let size = "wavault_vault_size_bytes";
    out.family(size, "gauge", "bytes the vault database occupies on disk");
    out.sample(size, &[], v.size_on_disk());
}

/// Timer jobs and alerts: what only the running `run` knows.
fn runner_families(out: &mut Exposition, live: &crate::ops::service::Live) {
    let runs = "wavault_job_runs_total";
    out.family(runs, "counter", "timer job runs (sweep, rotate_key)");
    for name in ["sweep", "rotate_key"] {
        let j = live.jobs.get(name).copied().unwrap_or_default();
        out.sample(
            runs,
            &[("job", name), ("result", "ok")],
            j.runs - j.failures,
        );
        out.sample(runs, &[("job", name), ("result", "failed")], j.failures);
    }
    let last = "wavault_job_last_success_timestamp_seconds";
    out.family(last, "gauge", "unix time of the job's last success");
    for (name, j) in &live.jobs {
        if let Some(t) = j.last_success {
            out.sample(last, &[("job", name)], t);
        }
    }
    let alerts = "wavault_alerts_total";
    out.family(alerts, "counter", "alerts raised since start, by kind");
    let mut kinds: std::collections::BTreeSet<String> = crate::ops::service::AlertKind::ALL
        .into_iter()
        .map(|k| k.to_string())
        .collect();
    kinds.extend(live.alerts.keys().cloned());
    for kind in kinds {
        let n = live.alerts.get(&kind).copied().unwrap_or(0);
        out.sample(alerts, &[("kind", &kind)], n);
    }
    event_families(out, live);
}

/// Hook events and decrypt failures since start.
fn event_families(out: &mut Exposition, live: &crate::ops::service::Live) {
    let con = "wavault_connects_total";
    out.family(con, "counter", "logins completed since start, per bot");
    for (bot, n) in &live.connects {
        out.sample(con, &[("bot", bot)], n);
    }
    let dec = "wavault_decrypt_failures_total";
    out.family(
        dec,
        "counter",
        "messages that could not be decrypted, per bot",
    );
    for (bot, n) in &live.decrypt_failures {
        out.sample(dec, &[("bot", bot)], n);
    }
    let ev = "wavault_events_total";
    out.family(
        ev,
        "counter",
        "hook events by kind and outcome: queued or dropped (events other than messages), \
         delivered or failed (each hook call, messages too)",
    );
    for ((kind, outcome), n) in &live.events {
        out.sample(ev, &[("kind", kind), ("outcome", outcome)], n);
    }
    let lat = "wavault_receipt_latency_seconds";
    out.family(
        lat,
        "histogram",
        "time from sent (the server's ack) to delivered (the recipient's receipt) of the bot's messages, per bot",
    );
    let bucket = "wavault_receipt_latency_seconds_bucket";
    for (bot, h) in &live.receipt_latency {
        for (le, count) in h.cumulative() {
            out.sample(bucket, &[("bot", bot), ("le", &le.to_string())], count);
        }
        out.sample(bucket, &[("bot", bot), ("le", "+Inf")], h.count());
        let labels = [("bot", bot.as_str())];
        out.sample("wavault_receipt_latency_seconds_sum", &labels, h.sum_secs);
        out.sample("wavault_receipt_latency_seconds_count", &labels, h.count());
    }
}
