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
    c.args(["bot", "list"]);
    // A copy just written may be "busy" for a moment: another test's child,
    // forked while the copy was open for writing, holds it until it execs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        match c.output() {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now()
            }
            r => break r.expect("spawn wavault"),
        }
    };
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
    vault_with_disabled_bot(&dir, "idle");
    let r = Running::start(&dir, &[]);
    r.wait_line("running; Ctrl-C or SIGTERM");
    // An error through the control socket has one prefix.
    let out = run(wavault(&dir).args(["bot", "remove", "nosuch", "--yes"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("not found").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).starts_with("wavault: error: not found: bot nosuch"),
        "{}",
        stderr(&out)
    );
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

/// A command on a pseudo-terminal (util-linux `script`, which makes it the
/// command's controlling terminal): the screen it prints, and a keyboard.
struct Pty {
    /// `None` once waited for.
    child: Option<Child>,
    keys: std::process::ChildStdin,
    screen: std::sync::Arc<(std::sync::Mutex<String>, std::sync::Condvar)>,
}

impl Pty {
    /// Runs `wavault ARGS` on a terminal, with HOME `home` and no
    /// passphrase source but the terminal.
    fn spawn(home: &Path, args: &[&str]) -> Pty {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        // `exec`: wavault alone on the terminal, as a user runs it. Without
        // it, dash (`sh -c`, script's shell when $SHELL is unset) stays
        // the parent, catches the same Ctrl-C and re-raises it after
        // wavault's clean exit: 130 instead of wavault's 0.
        let words = std::iter::once(env!("CARGO_BIN_EXE_wavault"))
            .chain(args.iter().copied())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("exec {words}");
        let mut c = Command::new("script");
        c.args(["-qfec", &line, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("HOME", home)
            .env("TERM", "dumb")
            .env("RUST_LOG", "info")
            .env_remove("WAVAULT_PASSPHRASE")
            .env_remove("WAVAULT_DIR")
            .env_remove("XDG_DATA_HOME")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .expect("util-linux `script` is needed for the terminal tests (.ci/run checks it)");
        let keys = child.stdin.take().unwrap();
        let screen = std::sync::Arc::new((
            std::sync::Mutex::new(String::new()),
            std::sync::Condvar::new(),
        ));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let screen = screen.clone();
            std::thread::spawn(move || {
                let mut out = out;
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen
                        .0
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                    screen.1.notify_all();
                }
            });
        }
        Pty {
            child: Some(child),
            keys,
            screen,
        }
    }

    /// Waits (30 s at most) until the screen shows `what` `n` times.
    fn wait_for_n(&self, what: &str, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut s = self.screen.0.lock().unwrap();
        while s.matches(what).count() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal never showed {what:?} ({n}x); it shows:\n{s}"
            );
            s = self.screen.1.wait_timeout(s, left).unwrap().0;
        }
    }

    fn wait_for(&self, what: &str) {
        self.wait_for_n(what, 1);
    }

    fn type_keys(&mut self, keys: &str) {
        use std::io::Write;
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Waits (60 s at most) for the command to exit: its exit code.
    fn exit_code(&mut self) -> i32 {
        let mut child = self.child.take().expect("waited for once");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                panic!(
                    "the command did not exit; the terminal shows:\n{}",
                    self.screen()
                )
            }
        }
    }

    fn screen(&self) -> String {
        self.screen.0.lock().unwrap().clone()
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The first run on a fresh HOME, on a terminal: `wavault run` creates the
/// vault at the default place, asking the passphrase twice;
/// `bot add` from a second process reaches it and the bot's pairing banner
/// shows in the first; Ctrl-C exits 0.
#[test]
fn first_run_on_a_terminal() {
    const SECRET: &str = "correct horse battery staple";
    let home = tempfile::tempdir().unwrap();
    let mut run = Pty::spawn(home.path(), &["run"]);
    run.wait_for("Vault passphrase: ");
    assert!(run.screen().contains("no vault at"), "{}", run.screen());
    run.type_keys(&format!("{SECRET}\n"));
    run.wait_for("Vault passphrase (again): ");
    run.type_keys(&format!("{SECRET}\n"));
    run.wait_for("running; Ctrl-C or SIGTERM");
    let vault = home.path().join(".local/share/wavault");
    assert!(
        vault.join("vault.keys").exists(),
        "no vault at the default place"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_wavault"))
        .args(["bot", "add", "first"])
        .env("HOME", home.path())
        .env_remove("WAVAULT_PASSPHRASE")
        .env_remove("WAVAULT_DIR")
        .env_remove("XDG_DATA_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("to the running wavault"),
        "{}",
        stdout(&out)
    );
    run.wait_for("[first] no stored credentials: scan the QR code below to pair");

    run.type_keys("\x03");
    assert_eq!(run.exit_code(), 0, "Ctrl-C: {}", run.screen());
    // (Echo is off while the prompt reads, but keys a test types can reach
    // the terminal before the prompt turns it off: not checked here.)
    let screen = run.screen();
    assert!(!screen.contains("panicked"), "{screen}");
}

/// A wrong passphrase typed at the terminal is asked again (three tries);
/// an empty one says so; one from a variable or a file names that source.
#[test]
fn wrong_and_empty_passphrases_say_where_they_came_from() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("v");
    vault_with_bot(&dir);
    let dir_s = dir.to_str().unwrap();
    let pass = std::str::from_utf8(PASS).unwrap();

    let mut t = Pty::spawn(home.path(), &["--vault", dir_s, "bot", "list"]);
    t.wait_for("Vault passphrase: ");
    t.type_keys("not it\n");
    t.wait_for("wrong passphrase; try again (1 of 3");
    t.wait_for_n("Vault passphrase: ", 2);
    t.type_keys(&format!("{pass}\n"));
    assert_eq!(t.exit_code(), 0, "{}", t.screen());
    assert!(t.screen().contains("bot-0"), "{}", t.screen());

    let mut t = Pty::spawn(home.path(), &["--vault", dir_s, "bot", "list"]);
    for n in 1..=3 {
        t.wait_for_n("Vault passphrase: ", n);
        t.type_keys("still not it\n");
    }
    assert_eq!(t.exit_code(), 3, "{}", t.screen());
    assert!(t.screen().contains("typed at the prompt"), "{}", t.screen());

    let mut t = Pty::spawn(home.path(), &["--vault", dir_s, "bot", "list"]);
    t.wait_for("Vault passphrase: ");
    t.type_keys("\n");
    assert_eq!(t.exit_code(), 2, "{}", t.screen());
    assert!(
        t.screen().contains("typed at the prompt is empty"),
        "{}",
        t.screen()
    );

    let out = run(wavault(&dir)
        .args(["bot", "list"])
        .env("WAVAULT_PASSPHRASE", "wrong"));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("from the environment variable WAVAULT_PASSPHRASE"),
        "{}",
        stderr(&out)
    );
    let file = home.path().join("pass");
    std::fs::write(&file, "wrong\n").unwrap();
    let out = run(wavault(&dir)
        .args(["bot", "list", "--passphrase-file"])
        .arg(&file));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("read from the file")
            && stderr(&out).contains(file.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

/// After `run` is killed (SIGKILL: no clean shutdown), `status` says the
/// runner is not running and marks the states it left as stale; without a
/// passphrase source it says why it now needs one.
#[test]
fn status_after_a_killed_run_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    let mut r = Running::start(&dir, &[]);
    r.wait_line("running; Ctrl-C or SIGTERM");
    // Live, through the socket: the bot is connecting (no WhatsApp here).
    let live = run(wavault(&dir).args(["status", "--json"]));
    assert_eq!(code(&live), 0, "{}", stderr(&live));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&live)).unwrap();
    assert_ne!(rows[0]["status"], "disconnected", "{rows}");
    assert_eq!(rows[0]["stale"], false, "{rows}");
    assert!(!stderr(&live).contains("not running"), "{}", stderr(&live));
    // No WhatsApp here: the table says the bot is retrying, with its
    // attempt, rather than `connecting`.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let table = stdout(&run(wavault(&dir).arg("status")));
        if table.contains("reconnecting (attempt ") && table.contains(" s)") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retrying row in `status`: {table}"
        );
        // Polled by running the command again; a short pause between tries.
        std::thread::sleep(Duration::from_millis(100));
    }
    r.child.kill().unwrap();
    r.child.wait().unwrap();

    let out = run(wavault(&dir).args(["status", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["stale"], true, "{rows}");
    assert!(
        stderr(&out).contains("`wavault run` is not running") && stderr(&out).contains("stale"),
        "{}",
        stderr(&out)
    );
    let out = run(wavault(&dir).arg("status"));
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with("bot-0"))
        .unwrap_or_else(|| panic!("no row of bot-0: {table}"));
    assert!(row.contains("(stale)"), "{table}");
    let out = run(wavault(&dir).arg("status").env_remove("WAVAULT_PASSPHRASE"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not running, so this command reads the vault itself"),
        "{}",
        stderr(&out)
    );
}

/// `export -o EXISTING` refuses before it asks for any passphrase (none is
/// available here: it would fail on that first).
#[test]
fn export_to_an_existing_file_refuses_before_the_passphrases() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_bot(&dir);
    let existing = tmp.path().join("backup.wvb");
    std::fs::write(&existing, b"keep me").unwrap();
    let out = run(wavault(&dir)
        .args(["export", "-o"])
        .arg(&existing)
        .env_remove("WAVAULT_PASSPHRASE")
        .env_remove("WAVAULT_BACKUP_PASSPHRASE"));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists") && !stderr(&out).contains("passphrase"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
}
