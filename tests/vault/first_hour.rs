//! The operator's first hour (issue 16): flags that could destroy data or
//! mislead, and the messages that must send a new user the right way. Each
//! test checks the exit code and the message's key words.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use wavault::vault::BotConfig;

/// A vault with one bot `b` holding a few records, closed.
fn vault_with_bot(dir: &Path) {
    let v = new_vault(dir);
    fill(&v, 1, 5);
    v.flush().unwrap();
}

/// `wavault run` on `dir` (killed on drop), its stdout and stderr lines.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(dir: &Path, args: &[&str]) -> Running {
        let mut c = wavault(dir);
        c.arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
        }
        Running { child, lines }
    }

    /// The first line containing `what` (30 s deadline); the lines before it.
    fn wait_line(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!("`wavault run` never printed {what:?}; it printed: {seen:#?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bot set` with no option changes nothing and says so; its help shows
/// no defaults for the limits it keeps (`bot add`'s still does).
#[test]
fn bot_set_without_options_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    let out = run(wavault(&dir).args(["bot", "set", "bot-0", "--hook-timeout", "3s"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(wavault(&dir).args(["bot", "set", "bot-0"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to change") && stderr(&out).contains("bot show"),
        "{}",
        stderr(&out)
    );
    // A phone given alone keeps the hook time limit set before.
    let out = run(wavault(&dir).args(["bot", "set", "bot-0", "--phone", "4915112345678"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(wavault(&dir).args(["bot", "show", "bot-0", "--json"]));
    let show: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(show["hook_timeout_ms"], 3000, "{show}");
    let out = run(wavault(&dir).args(["bot", "set", "bot-0", "--phone", "123"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("international format"),
        "{}",
        stderr(&out)
    );

    let help = stdout(&run(wavault(&dir).args(["bot", "set", "--help"])));
    for flag in [
        "--hook-timeout",
        "--hook-concurrency",
        "--queue-max ",
        "--queue-max-age",
    ] {
        let line = help
            .lines()
            .find(|l| l.contains(flag))
            .unwrap_or_else(|| panic!("{flag} not in `bot set --help`: {help}"));
        assert!(
            !line.contains("[default:") && line.contains("not given: unchanged"),
            "`bot set --help` {flag}: {line}"
        );
    }
    let add = stdout(&run(wavault(&dir).args(["bot", "add", "--help"])));
    assert!(add.contains("[default: 10s]"), "{add}");
    // The age limit holds messages back; it does not drop them.
    let age = add.lines().find(|l| l.contains("--queue-max-age")).unwrap();
    assert!(
        age.contains("held back") && !age.contains("dropped"),
        "{age}"
    );
}

/// A bot with a phone says it pairs with a pair code, not a QR scan.
#[test]
fn a_bot_with_a_phone_announces_a_pair_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let v = new_vault(&dir);
    let mut cfg = BotConfig::new(bot("phoned"));
    cfg.phone = Some("4915112345678".into());
    v.add_bot(&cfg).unwrap();
    drop(v);
    let r = Running::start(&dir, &[]);
    let line = r.wait_line("[phoned]");
    assert!(line.contains("pair code") && !line.contains("QR"), "{line}");
}

/// `--listen localhost:PORT` listens on loopback; `[::1]:PORT` too (where
/// the machine has IPv6); anything else is exit 2 naming the forms.
#[test]
fn listen_takes_localhost_and_ipv6_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    drop(new_vault(&dir));
    let out = run(wavault(&dir).args(["run", "--listen", "local:8080"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("localhost:PORT"), "{}", stderr(&out));

    let mut addrs = vec![("localhost:0", "http://127.0.0.1:")];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        addrs.push(("[::1]:0", "http://[::1]:"));
    } else {
        eprintln!("no IPv6 loopback here: [::1] not tried");
    }
    for (listen, url) in addrs {
        let r = Running::start(&dir, &["--listen", listen]);
        let line = r.wait_line("dashboard, API and metrics on");
        let port: u16 = line
            .split(url)
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("--listen {listen}: {line}"));
        let host = url.trim_start_matches("http://").trim_end_matches(':');
        std::net::TcpStream::connect(format!("{host}:{port}"))
            .unwrap_or_else(|e| panic!("--listen {listen}: connecting to port {port}: {e}"));
        drop(r);
    }
}

/// A second `run` while the vault is in use refuses before it needs a
/// passphrase (none is available here: it would fail on that first).
#[test]
fn a_second_run_refuses_before_asking_for_the_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    let first = Running::start(&dir, &[]);
    first.wait_line("running; Ctrl-C or SIGTERM");
    let out = run(wavault(&dir).arg("run").env_remove("WAVAULT_PASSPHRASE"));
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("in use by another wavault process"),
        "{}",
        stderr(&out)
    );
}

/// "No vault" only when there is none: a file where the folder should be,
/// and a vault this user may not read, say so and name the path.
#[test]
fn no_vault_unreadable_vault_and_a_file_are_told_apart() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let none = run(wavault(&tmp.path().join("nothing")).args(["bot", "list"]));
    assert_eq!(code(&none), 6, "{}", stderr(&none));
    assert!(stderr(&none).contains("no vault at"), "{}", stderr(&none));

    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a vault").unwrap();
    let out = run(wavault(&file).args(["bot", "list"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a file, not a vault folder"),
        "{}",
        stderr(&out)
    );

    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = wavault(&dir);
    if rustix::process::getuid().is_root() {
        // Root reads anything: ask as `nobody`, who may enter the folder
        // but not read the key file (0600, root's). A copy of the binary
        // where `nobody` can run it.
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        let bin = tmp.path().join("wavault");
        std::fs::copy(env!("CARGO_BIN_EXE_wavault"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        c = Command::new(&bin);
        c.arg("--vault")
            .arg(&dir)
            .env("WAVAULT_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
            .uid(65534)
            .gid(65534);
    } else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = run(c.args(["bot", "list"]));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("cannot be read: permission denied")
            && e.contains(&dir.display().to_string())
            && !e.contains("no vault"),
        "{e}"
    );
}

/// Rotating to the same passphrase is refused (nothing to change); the
/// counts `rotate key` reports agree with `validate`.
#[test]
fn rotations_say_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    let pass = std::str::from_utf8(PASS).unwrap();
    let out = run(wavault(&dir)
        .args(["rotate", "passphrase"])
        .env("WAVAULT_NEW_PASSPHRASE", pass));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the new passphrase is the current one"),
        "{}",
        stderr(&out)
    );
    // With other Argon2 parameters it re-derives the slot, and says so.
    let out = run(wavault(&dir)
        .args(["rotate", "passphrase"])
        .args(CHEAP_KDF_ARGS)
        .env("WAVAULT_NEW_PASSPHRASE", pass));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("passphrase unchanged"),
        "{}",
        stdout(&out)
    );

    let records = |s: &str, after: &str| -> u64 {
        let i = s
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} not in {s}"));
        s[..i]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {after:?} in {s}"))
    };
    let rotated = stdout(&run(wavault(&dir).args(["rotate", "key"])));
    let validated = stdout(&run(wavault(&dir).arg("validate")));
    assert_eq!(
        records(&rotated, " record(s) and"),
        records(&validated, " record(s)"),
        "rotate key: {rotated}\nvalidate: {validated}"
    );
}

/// `bot remove` asks (here: no terminal, so it needs --yes), refuses an
/// unknown bot first, and takes an automatic backup that brings the bot back.
#[test]
fn bot_remove_confirms_and_backs_up_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    let out = run(wavault(&dir).args(["bot", "remove", "nosuch"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    let out = run(wavault(&dir).args(["bot", "remove", "bot-0"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--yes") && stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    let before = dumps(&wavault::Vault::open(&dir, PASS).unwrap());
    assert_eq!(before.len(), 1, "refused: the bot stays");
    let out = run(wavault(&dir).args(["bot", "remove", "bot-0", "--yes"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let backup = stdout(&out)
        .split("automatic backup first: ")
        .nth(1)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no automatic backup named: {}", stdout(&out)));
    assert!(dumps(&wavault::Vault::open(&dir, PASS).unwrap()).is_empty());
    let out = run(wavault(&dir).args(["restore", &backup]).env(
        "WAVAULT_BACKUP_PASSPHRASE",
        std::str::from_utf8(PASS).unwrap(),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        dumps(&wavault::Vault::open(&dir, PASS).unwrap()),
        before,
        "the automatic backup brings the removed bot back whole"
    );
}

/// `bot remove` through a running `run` also refuses without --yes.
#[test]
fn bot_remove_through_run_needs_yes_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let v = new_vault(&dir);
    let mut cfg = BotConfig::new(bot("idle"));
    cfg.enabled = false;
    v.add_bot(&cfg).unwrap();
    drop(v);
    let r = Running::start(&dir, &[]);
    r.wait_line("running; Ctrl-C or SIGTERM");
    let out = run(wavault(&dir).args(["bot", "remove", "idle"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run(wavault(&dir).args(["bot", "remove", "idle", "--yes"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("automatic backup first: ")
            && stdout(&out).contains(&dir.join("backups").display().to_string()),
        "{}",
        stdout(&out)
    );
    drop(r);
}
