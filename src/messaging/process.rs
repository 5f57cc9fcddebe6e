//! Running an operator's command: the `--on-message` hook and the
//! `--alert-command` both go through [`run`].
//!
//! Why one runner: both children must get the same treatment, and each rule
//! below closes a hole that one of them had.
//!
//! - `sh -c CMD`, the input (one JSON object) on stdin, never in argv.
//! - A clean environment ([`child_env`]): `wavault run` may hold
//!   `WAVAULT_PASSPHRASE`, `WAVAULT_BACKUP_PASSPHRASE`,
//!   `CREDENTIALS_DIRECTORY` and whatever else its service manager set; a
//!   child sees only `PATH`, `HOME`, `LANG`, `LC_*` and `TZ` from it, plus
//!   the variables the caller documents (`WAVAULT_BOT` for hooks).
//! - Its own process group: past the time limit, on an error, or when the
//!   caller's future is dropped (the runner stopping a bot), the whole group
//!   gets `SIGKILL`, so background jobs of a hanging command
//!   (`sleep 300 & wait`) do not outlive it. A command that exits on its own
//!   is reaped; anything it left running in the background is its business.
//! - Output capped: at most `capture` bytes are kept; the rest is read and
//!   discarded (a chatty command cannot block on a full pipe), and
//!   [`Finished::truncated`] says so.

use std::ffi::{OsStr, OsString};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Variables of wavault's own environment a child may see. Anything else
/// (passphrases, credential folders, tokens of the service manager) stays out.
pub const ALLOWED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

fn allowed(name: &OsStr) -> bool {
    match name.to_str() {
        Some(n) => ALLOWED_ENV.contains(&n) || n.starts_with("LC_"),
        None => false,
    }
}

/// The environment of a child: the allowed variables of `parent` (wavault's
/// own environment, `std::env::vars_os()` in production), then `extra`.
pub fn child_env<I>(parent: I, extra: &[(&str, &str)]) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut env: Vec<(OsString, OsString)> =
        parent.into_iter().filter(|(k, _)| allowed(k)).collect();
    for (k, v) in extra {
        env.retain(|(n, _)| n.as_os_str() != OsStr::new(k));
        env.push((k.into(), v.into()));
    }
    env
}

/// What to run and how.
pub struct Spec<'a> {
    /// Shown in errors: `hook command`, `alert command`.
    pub what: &'static str,
    /// Given to `sh -c`.
    pub command: &'a str,
    /// Written to the command's stdin, followed by a newline.
    pub input: &'a [u8],
    /// The whole environment of the child (see [`child_env`]).
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Duration,
    /// `Some(n)`: keep at most `n` bytes of standard output; `None`: the
    /// output goes to `/dev/null`.
    pub capture: Option<u64>,
}

/// A command that ran to its end (any exit status).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Standard output, at most `capture` bytes.
    pub stdout: Vec<u8>,
    /// The command wrote more than `capture` bytes.
    pub truncated: bool,
}

/// Sends `SIGKILL` to the child's process group when dropped, unless
/// disarmed: the child was reaped (its group id may no longer be ours).
struct GroupKill(Option<rustix::process::Pid>);

impl GroupKill {
    fn new(pid: Option<u32>) -> Self {
        // Never 0 or 1: kill(0) and kill(-1) would hit wavault itself or
        // every process of the user.
        let pid = pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
            .and_then(rustix::process::Pid::from_raw);
        GroupKill(pid)
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH (the group is already gone) is fine.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Aborts the stdin writer when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `spec`; `Err` names what went wrong (could not start, reading its
/// output failed, time limit). A non-zero exit is `Ok` with its status.
pub async fn run(spec: Spec<'_>) -> Result<Finished, super::DeliveryError> {
    use super::DeliveryError as E;
    let what = spec.what;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(spec.command)
        .env_clear()
        .envs(spec.env)
        .stdin(Stdio::piped())
        .stdout(if spec.capture.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| E::Process(format!("{what} could not start: {e}")))?;
    // Declared after `child`: dropped first, while `sh` is not yet reaped
    // (so its pid, the group id, cannot have been reused).
    let mut group = GroupKill::new(child.id());
    let _writer = child.stdin.take().map(|mut stdin| {
        let mut input = spec.input.to_vec();
        input.push(b'\n');
        // Its own task: a command that never reads its input must not hold
        // up reading its output. Write errors (it exited, it closed stdin)
        // are the command's own business.
        AbortOnDrop(tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        }))
    });
    let mut stdout = child.stdout.take();
    let work = async {
        let mut out = Vec::new();
        let mut truncated = false;
        if let (Some(o), Some(cap)) = (stdout.as_mut(), spec.capture) {
            let mut kept = o.take(cap);
            kept.read_to_end(&mut out)
                .await
                .map_err(|e| E::Process(format!("reading the {what}'s output: {e}")))?;
            let rest = tokio::io::copy(kept.get_mut(), &mut tokio::io::sink())
                .await
                .map_err(|e| E::Process(format!("reading the {what}'s output: {e}")))?;
            truncated = rest > 0;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| E::Process(format!("{what}: {e}")))?;
        Ok::<_, E>(Finished {
            status,
            stdout: out,
            truncated,
        })
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok(Ok(f)) => {
            group.disarm();
            Ok(f)
        }
        // `group` kills the whole group on the way out.
        Ok(Err(e)) => Err(e),
        Err(_) => Err(E::TimedOut {
            what,
            after: spec.timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::test_runtime as rt;

    fn parent() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/var/lib/wavault"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("TZ", "UTC"),
            ("WAVAULT_PASSPHRASE", "hunter2"),
            ("WAVAULT_BACKUP_PASSPHRASE", "b"),
            ("WAVAULT_NEW_PASSPHRASE", "n"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/wavault.service"),
            ("WAVAULT_BOT", "spoofed"),
            ("RUST_LOG", "trace"),
            ("LCX", "not a locale"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    #[test]
    fn child_env_keeps_only_the_allow_list_and_the_extras() {
        let env = child_env(parent(), &[("WAVAULT_BOT", "sales")]);
        let mut names: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "HOME=/var/lib/wavault",
                "LANG=C.UTF-8",
                "LC_ALL=C",
                "PATH=/usr/bin:/bin",
                "TZ=UTC",
                "WAVAULT_BOT=sales",
            ]
        );
        assert!(child_env(Vec::new(), &[]).is_empty());
    }

    #[test]
    fn output_is_capped_and_the_rest_drained() {
        let f = rt()
            .block_on(run(Spec {
                what: "test command",
                command: "head -c 200000 /dev/zero; echo done >&2",
                input: b"",
                env: child_env(parent(), &[]),
                timeout: Duration::from_secs(10),
                capture: Some(10),
            }))
            .unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.len(), 10);
        assert!(f.truncated);
    }

    #[test]
    fn a_command_that_ignores_a_large_input_is_not_held_up() {
        let input = vec![b'x'; 1 << 20];
        let f = rt()
            .block_on(run(Spec {
                what: "test command",
                command: "echo ok",
                input: &input,
                env: child_env(parent(), &[]),
                timeout: Duration::from_secs(10),
                capture: Some(100),
            }))
            .unwrap();
        assert_eq!(f.stdout, b"ok\n");
    }
}
