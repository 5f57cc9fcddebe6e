//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).
//!
//! Per bot (label `bot`, the operator's id): `wavault_bot_up`,
//! `wavault_bot_status{status}` (1 for the current one), connection
//! attempts, time of the last connect, logins without QR and pairings
//! (from the history), messages in and out, the inbound queue's depth,
//! hook failures, refused and expired messages; for the process: the durable-write latency
//! histogram, vault size, timer job runs and last success, alerts raised.

use std::fmt::Write;

use crate::error::Result;
use crate::runner::Shared;
use crate::sessions::{Sessions, Status};
use crate::status;

const STATUSES: [Status; 7] = [
    Status::Connecting,
    Status::Connected,
    Status::Disconnected,
    Status::Reconnecting,
    Status::LoggedOut,
    Status::Replaced,
    Status::Error,
];

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every metric now.
pub(crate) fn render(shared: &Shared) -> Result<String> {
    let v = &shared.vault;
    let now = crate::vault::now();
    let rows = status::collect(v)?;
    let mut per_bot = Vec::with_capacity(rows.len());
    for r in &rows {
        let id = crate::BotId::parse(&r.bot)?;
        let history = Sessions::new(v.view(&id)).history()?;
        let last_connect = history
            .iter()
            .rev()
            .find(|h| h.to == Status::Connected)
            .map(|h| h.at);
        let all = crate::stats::compute(&r.bot, &history, i64::MIN / 4, now, r.status);
        per_bot.push((r, last_connect, all.logins_without_qr, all.pairings));
    }
    let mut out = String::new();
    help(
        &mut out,
        "wavault_bot_up",
        "gauge",
        "1 when the bot is connected",
    );
    for (r, ..) in &per_bot {
        let _ = writeln!(
            out,
            "wavault_bot_up{{bot=\"{}\"}} {}",
            esc(&r.bot),
            u8::from(r.status == Status::Connected)
        );
    }
    help(
        &mut out,
        "wavault_bot_status",
        "gauge",
        "1 for the bot's current status",
    );
    for (r, ..) in &per_bot {
        for s in STATUSES {
            let _ = writeln!(
                out,
                "wavault_bot_status{{bot=\"{}\",status=\"{}\"}} {}",
                esc(&r.bot),
                s.as_str(),
                u8::from(r.status == s)
            );
        }
    }
    help(
        &mut out,
        "wavault_bot_connection_attempts_total",
        "counter",
        "connection attempts since the vault has known the bot",
    );
    for (r, ..) in &per_bot {
        let _ = writeln!(
            out,
            "wavault_bot_connection_attempts_total{{bot=\"{}\"}} {}",
            esc(&r.bot),
            r.connection_attempts
        );
    }
    help(
        &mut out,
        "wavault_bot_last_connect_timestamp_seconds",
        "gauge",
        "unix time of the last transition to connected",
    );
    for (r, last, ..) in &per_bot {
        if let Some(t) = last {
            let _ = writeln!(
                out,
                "wavault_bot_last_connect_timestamp_seconds{{bot=\"{}\"}} {t}",
                esc(&r.bot)
            );
        }
    }
    help(
        &mut out,
        "wavault_bot_logins_total",
        "counter",
        "connections by how they started: stored credentials (no QR) or a pairing",
    );
    for (r, _, logins, pairings) in &per_bot {
        let _ = writeln!(
            out,
            "wavault_bot_logins_total{{bot=\"{}\",kind=\"without_qr\"}} {logins}",
            esc(&r.bot)
        );
        let _ = writeln!(
            out,
            "wavault_bot_logins_total{{bot=\"{}\",kind=\"pairing\"}} {pairings}",
            esc(&r.bot)
        );
    }
    help(
        &mut out,
        "wavault_bot_idle",
        "gauge",
        "1 when the bot is paired, away and quiet past the idle warning",
    );
    for (r, ..) in &per_bot {
        let _ = writeln!(
            out,
            "wavault_bot_idle{{bot=\"{}\"}} {}",
            esc(&r.bot),
            u8::from(r.idle)
        );
    }

    type Pick = fn(&status::MessageCounts) -> u64;
    let message_metrics: [(&str, &str, &str, Pick); 7] = [
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
    for (name, kind, text, pick) in message_metrics {
        help(&mut out, name, kind, text);
        for (r, ..) in &per_bot {
            let _ = writeln!(
                out,
                "{name}{{bot=\"{}\"}} {}",
                esc(&r.bot),
                pick(&r.messages)
            );
        }
    }

    let h = v.durable_latency();
    help(
        &mut out,
        "wavault_durable_write_seconds",
        "histogram",
        "time for a write to become durable (group commit)",
    );
    for (le, count) in &h.buckets {
        let _ = writeln!(
            out,
            "wavault_durable_write_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "wavault_durable_write_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "wavault_durable_write_seconds_sum {}", h.sum_secs);
    let _ = writeln!(out, "wavault_durable_write_seconds_count {}", h.count);
    help(
        &mut out,
        "wavault_vault_size_bytes",
        "gauge",
        "bytes the vault database occupies on disk",
    );
    let _ = writeln!(out, "wavault_vault_size_bytes {}", v.size_on_disk());

    let live = shared.live.lock().unwrap_or_else(|e| e.into_inner());
    help(
        &mut out,
        "wavault_job_runs_total",
        "counter",
        "timer job runs (sweep, rotate_key)",
    );
    for name in ["sweep", "rotate_key"] {
        let j = live.jobs.get(name).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "wavault_job_runs_total{{job=\"{name}\",result=\"ok\"}} {}",
            j.runs - j.failures
        );
        let _ = writeln!(
            out,
            "wavault_job_runs_total{{job=\"{name}\",result=\"failed\"}} {}",
            j.failures
        );
    }
    help(
        &mut out,
        "wavault_job_last_success_timestamp_seconds",
        "gauge",
        "unix time of the job's last success",
    );
    for (name, j) in &live.jobs {
        if let Some(t) = j.last_success {
            let _ = writeln!(
                out,
                "wavault_job_last_success_timestamp_seconds{{job=\"{name}\"}} {t}"
            );
        }
    }
    help(
        &mut out,
        "wavault_alerts_total",
        "counter",
        "alerts raised since start, by kind",
    );
    let mut kinds: std::collections::BTreeSet<String> = [
        "logged_out",
        "replaced",
        "banned",
        "client_outdated",
        "qr_exhausted",
        "start_failed",
        "idle",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    kinds.extend(live.alerts.keys().cloned());
    for kind in kinds {
        let n = live.alerts.get(&kind).copied().unwrap_or(0);
        let _ = writeln!(out, "wavault_alerts_total{{kind=\"{}\"}} {n}", esc(&kind));
    }
    Ok(out)
}
