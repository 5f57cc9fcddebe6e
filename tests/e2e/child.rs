//! A runner in a child process: this test binary started again on one of
//! its own tests (`move_tests::child_host`, `fleet_tests::fleet_child_host`)
//! with the environment that test reads. Its standard output lines are
//! watched (`READY`, `EVENT ...`, `STOPPED`); closing its standard input
//! stops its runner cleanly. Killed when dropped, so a failing test leaves
//! no process behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::peer::LOGIN_DEADLINE;

/// Deadline of the waits (reached only on failure).
const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Child {
    pub name: &'static str,
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    /// Its stdout lines so far, and whether it ended.
    out: watch::Receiver<(Vec<String>, bool)>,
}

impl Child {
    /// Starts test `test` of this binary with `env`, and waits for its `READY`.
    pub async fn spawn(name: &'static str, test: &str, env: &[(&str, String)]) -> Child {
        let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the child host");
        let stdout = child.stdout.take().unwrap();
        let (tx, out) = watch::channel((Vec::new(), false));
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tx.send_modify(|o| o.0.push(l));
            }
            tx.send_modify(|o| o.1 = true);
        });
        let stdin = child.stdin.take();
        let h = Child {
            name,
            child,
            stdin,
            out,
        };
        h.wait_line("READY", LOGIN_DEADLINE * 2).await;
        h
    }

    pub fn lines(&self) -> Vec<String> {
        self.out.borrow().0.clone()
    }

    /// Waits until the child printed a line `pred` accepts; returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut rx = self.out.clone();
        let seen = tokio::time::timeout(
            DEADLINE,
            rx.wait_for(|(l, end)| *end || l.iter().any(|x| pred(x))),
        )
        .await;
        let found = match seen {
            Ok(Ok(ref o)) => o.0.iter().find(|x| pred(x)).cloned(),
            _ => None,
        };
        found.unwrap_or_else(|| {
            panic!(
                "host {} did not print {what} within {DEADLINE:?}; it printed {:?}",
                self.name,
                self.lines()
            )
        })
    }

    /// Waits until the child printed `line` (exactly).
    pub async fn wait_line(&self, line: &str, deadline: Duration) {
        let mut rx = self.out.clone();
        let seen = tokio::time::timeout(
            deadline,
            rx.wait_for(|(l, end)| *end || l.iter().any(|x| x == line)),
        )
        .await;
        if !matches!(seen, Ok(Ok(ref o)) if o.0.iter().any(|x| x == line)) {
            panic!(
                "host {} did not print {line:?} within {deadline:?}; it printed {:?}",
                self.name,
                self.lines()
            );
        }
    }

    /// Whether it printed `line` (exactly) so far.
    pub fn printed(&self, line: &str) -> bool {
        self.out.borrow().0.iter().any(|x| x == line)
    }

    /// How many times it printed `line` so far.
    pub fn count(&self, line: &str) -> usize {
        self.out.borrow().0.iter().filter(|x| *x == line).count()
    }

    /// Waits until it printed `line` more than `n` times.
    pub async fn wait_count(&self, line: &str, n: usize) {
        let mut rx = self.out.clone();
        let _ = tokio::time::timeout(
            DEADLINE,
            rx.wait_for(|(l, end)| *end || l.iter().filter(|x| *x == line).count() > n),
        )
        .await;
        if self.count(line) <= n {
            panic!(
                "host {} did not print {line:?} a {}th time within {DEADLINE:?}; it printed {:?}",
                self.name,
                n + 1,
                self.lines()
            );
        }
    }

    /// Closes its stdin: the runner shuts down cleanly and the child exits 0.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("host {} did not stop", self.name))
            .unwrap();
        assert!(
            status.success(),
            "host {} exited with {status}; it printed {:?}",
            self.name,
            self.lines()
        );
        self.wait_line("STOPPED", DEADLINE).await;
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL the host");
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("host {} did not die", self.name))
            .unwrap();
    }
}

/// The child's half: prints `READY`, then the runner's start cases, QR
/// codes, status changes and alerts (`EVENT ...` lines, with their
/// reasons), until its stdin closes; then shuts the runner down cleanly and
/// prints `STOPPED`.
pub(crate) async fn serve(runner: wavault::runner::Runner) {
    use wavault::runner::RunnerEvent;
    let mut events = runner.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(RunnerEvent::Started { bot, case, .. }) => {
                    println!("EVENT started {bot} {case:?}")
                }
                Ok(RunnerEvent::Qr { bot, .. }) => println!("EVENT qr {bot}"),
                Ok(RunnerEvent::PairCode { bot, .. }) => println!("EVENT pair-code {bot}"),
                Ok(RunnerEvent::Status {
                    bot,
                    status,
                    reason,
                }) => {
                    println!("EVENT status {bot} {}", status.as_str());
                    println!(
                        "EVENT status-reason {bot} {}: {}",
                        status.as_str(),
                        reason.unwrap_or_default()
                    );
                }
                Ok(RunnerEvent::Alert(a)) => {
                    println!("EVENT alert {} {}", a.bot, a.kind.as_str());
                    println!(
                        "EVENT alert-reason {} {}: {}",
                        a.bot,
                        a.kind.as_str(),
                        a.reason
                    );
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
    // libtest has printed "test <name> ... " without a newline: start a fresh line.
    println!("\nREADY");
    tokio::task::spawn_blocking(|| {
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())
    })
    .await
    .unwrap()
    .ok();
    runner.shutdown().await.unwrap();
    println!("STOPPED");
}

/// The real `wavault` binary on `dir` with the vault passphrase `pass` and
/// the backup passphrase `backup` (through the control socket of a runner
/// that holds that vault); warnings only in its log, killed when dropped.
pub(crate) fn wavault(dir: &std::path::Path, pass: &[u8], backup: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wavault"));
    c.arg("--vault")
        .arg(dir)
        .env("WAVAULT_PASSPHRASE", std::str::from_utf8(pass).unwrap())
        .env("WAVAULT_BACKUP_PASSPHRASE", backup)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}
