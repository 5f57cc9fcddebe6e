//! Alerts for permanent failures: logged at error level and, when
//! `--alert-command` is given, delivered to that command as one JSON object
//! on its standard input (`{"bot","kind","reason","time"}`), run like a hook
//! command (`messaging::process`: clean environment, own process group,
//! killed as a group past [`ALERT_TIMEOUT`]).

use super::RunnerEvent;
use crate::botid::BotId;
use crate::messaging::process;
use crate::vault::now;
use serde::Serialize;
use std::ffi::OsString;
use std::time::Duration;

pub use crate::ops::service::AlertKind;

/// One alert.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Alert {
    pub bot: String,
    pub kind: AlertKind,
    pub reason: String,
    /// Unix seconds.
    pub time: i64,
}

/// Raises an alert: logged at error level, announced to subscribers, and
/// handed to `--alert-command` when there is one.
pub(crate) async fn raise(shared: &super::Shared, bot: &BotId, kind: AlertKind, reason: String) {
    let a = Alert {
        bot: bot.to_string(),
        kind,
        reason,
        time: now(),
    };
    tracing::error!(bot = %a.bot, kind = %a.kind, "bot alert: {}", a.reason);
    shared.emit(RunnerEvent::Alert(a.clone()));
    if let Some(cmd) = &shared.cfg.alert_command {
        deliver(cmd, &a).await;
    }
}

/// How long an alert command may run.
pub const ALERT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` through `sh -c` with the alert as JSON on stdin, in a
/// clean environment (see `messaging::process`). Failures are logged, never
/// propagated: an alert must not stop a bot.
pub async fn deliver(command: &str, alert: &Alert) {
    deliver_in(
        command,
        alert,
        std::env::vars_os().collect::<Vec<_>>(),
        ALERT_TIMEOUT,
    )
    .await
}

/// [`deliver`] with wavault's environment given as `parent`.
pub(crate) async fn deliver_in<I>(command: &str, alert: &Alert, parent: I, timeout: Duration)
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let json = match serde_json::to_vec(alert) {
        Ok(j) => j,
        Err(e) => return tracing::error!("alert encoding failed: {e}"),
    };
    let r = process::run(process::Spec {
        what: "alert command",
        command,
        input: &json,
        env: process::child_env(parent, &[]),
        timeout,
        capture: None,
    })
    .await;
    match r {
        Ok(f) if f.status.success() => {}
        Ok(f) => tracing::error!("alert command exited with {}", f.status),
        Err(e) => tracing::error!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alert command sees the allowed variables of wavault's
    /// environment only: no passphrase, no credentials folder.
    #[test]
    fn alert_command_gets_a_clean_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("env");
        let parent: Vec<(OsString, OsString)> = [
            ("PATH", "/usr/bin:/bin"),
            ("WAVAULT_PASSPHRASE", "hunter2"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let a = Alert {
            bot: "sales".into(),
            kind: AlertKind::Idle,
            reason: "r".into(),
            time: 1,
        };
        let cmd = format!("cat > /dev/null; env > '{}'", out.display());
        crate::messaging::test_runtime().block_on(deliver_in(
            &cmd,
            &a,
            parent,
            Duration::from_secs(10),
        ));
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.lines().any(|l| l == "PATH=/usr/bin:/bin"), "{env}");
        for secret in ["WAVAULT_PASSPHRASE", "CREDENTIALS_DIRECTORY", "hunter2"] {
            assert!(!env.contains(secret), "{secret} leaked: {env}");
        }
    }
}
