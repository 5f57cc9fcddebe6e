//! Alerts for permanent failures: logged at error level and, when
//! `--alert-command` is given, delivered to that command as one JSON object
//! on its standard input (`{"bot","kind","reason","time"}`).

use serde::Serialize;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// One alert.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Alert {
    pub bot: String,
    /// `logged_out`, `replaced`, `banned`, `client_outdated`, `qr_exhausted`, `idle`,
    /// `start_failed`, and for messages `queue_full`, `queue_expired`, `hook_failing`.
    pub kind: String,
    pub reason: String,
    /// Unix seconds.
    pub time: i64,
}

/// How long an alert command may run.
pub const ALERT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` through `sh -c` with the alert as JSON on stdin.
/// Failures are logged, never propagated: an alert must not stop a bot.
pub async fn deliver(command: &str, alert: &Alert) {
    let json = match serde_json::to_vec(alert) {
        Ok(j) => j,
        Err(e) => return tracing::error!("alert encoding failed: {e}"),
    };
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return tracing::error!("alert command could not start: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&json).await;
        let _ = stdin.write_all(b"\n").await;
    }
    match tokio::time::timeout(ALERT_TIMEOUT, child.wait()).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::error!("alert command exited with {s}"),
        Ok(Err(e)) => tracing::error!("alert command failed: {e}"),
        Err(_) => tracing::error!("alert command timed out after {ALERT_TIMEOUT:?}"),
    }
}
