//! Every command with and without a running `wavault run` (issue 13): the
//! same results, the same exit codes; backups through pipes; a runner
//! SIGKILLed in the middle of a key or passphrase rotation done through it.
//!
//! Why it exists: `run` is a service that never stops, so an operator's
//! backups, restores, rotations and bot changes happen while it holds the
//! vault. Each command is run twice on two identical copies of one vault,
//! once by this process's own `wavault` (offline) and once while a real
//! `wavault run` holds the copy (the command goes through its control
//! socket: the vault is locked, so a success can only come from there).
//! The bots are disabled, so `run` starts none and nothing reaches the
//! network; the runner tests with the in-process peer (tests/e2e/live_tests.rs)
//! cover running bots.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use wavault::vault::BotConfig;

const BACKUP_PASS: &str = "backup passphrase for the live tests";
const NEW_PASS: &str = "a brand new vault passphrase";

/// A vault of three disabled bots with records (`run` starts none of them).
fn disabled_vault(dir: &Path) {
    let v = new_vault(dir);
    fill(&v, 3, 20);
    for c in v.list_bots().unwrap() {
        let mut c: BotConfig = c;
        c.enabled = false;
        v.set_bot(&c).unwrap();
    }
    v.flush().unwrap();
}

/// `wavault` on `dir` with the backup passphrase in the environment.
fn cmd(dir: &Path, pass: &str) -> Command {
    let mut c = wavault(dir);
    c.env("WAVAULT_PASSPHRASE", pass)
        .env("WAVAULT_BACKUP_PASSPHRASE", BACKUP_PASS)
        .env("WAVAULT_NEW_PASSPHRASE", NEW_PASS)
        .stdin(Stdio::null());
    c
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} / {}", stdout(out), stderr(out)))
}

/// A `wavault run` (killed on drop) and the lines of its log that say it
/// is running or paused at a test point.
struct Running(std::process::Child, std::sync::mpsc::Receiver<String>);

impl Running {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
        let (child, lines) = spawn_run_with(dir, env);
        let r = Running(child, lines);
        let first = r.1.recv_timeout(Duration::from_secs(30));
        assert!(
            matches!(&first, Ok(l) if l.contains("running")),
            "`wavault run` reports it is running: {first:?}"
        );
        r
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "run did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `wavault run` on `dir` with extra environment variables; the
/// receiver gets its "running" and "paused at" log lines.
fn spawn_run_with(
    dir: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut c = wavault(dir);
    c.arg("run")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if l.contains("running; Ctrl-C or SIGTERM") || l.contains("wavault: paused at") {
                let _ = tx.send(l);
            }
        }
    });
    (child, rx)
}

/// One command of the battery: what it prints that must match (normalised).
struct Step {
    name: &'static str,
    code: i32,
    seen: Value,
}

/// The battery: every command that works offline, in an order that
/// exercises each (state changes included). Returns what each step gave.
fn battery(dir: &Path, scratch: &Path) -> Vec<Step> {
    let steps = std::cell::RefCell::new(Vec::new());
    let mut pass = std::str::from_utf8(PASS).unwrap().to_owned();
    let step = |name: &'static str, c: &mut Command, seen: &dyn Fn(&Output) -> Value| {
        let out = run(c);
        steps.borrow_mut().push(Step {
            name,
            code: code(&out),
            seen: seen(&out),
        });
        out
    };
    let nothing = |_: &Output| Value::Null;
    let whole = |o: &Output| json(o);
    let file = scratch.join("one.wvb");
    let p = pass.clone();
    step(
        "bot list",
        cmd(dir, &p).args(["bot", "list", "--json"]),
        &whole,
    );
    step(
        "bot show",
        cmd(dir, &p).args(["bot", "show", "bot-0", "--json"]),
        &whole,
    );
    step(
        "bot show unknown",
        cmd(dir, &p).args(["bot", "show", "nope"]),
        &nothing,
    );
    step(
        "validate",
        cmd(dir, &p).args(["validate", "--json"]),
        &whole,
    );
    step("status", cmd(dir, &p).args(["status", "--json"]), &|o| {
        let rows = json(o);
        Value::from(
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| format!("{} {}", r["bot"], r["status"]))
                .collect::<Vec<_>>(),
        )
    });
    step(
        "queue list",
        cmd(dir, &p).args(["queue", "list", "bot-0", "--json"]),
        &whole,
    );
    let inspect_bots = |f: &Path| {
        let out = run(cmd(Path::new("/nonexistent"), "")
            .args(["backup", "inspect", "--json"])
            .arg(f));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        json(&out)["bots"].clone()
    };
    step(
        "export",
        cmd(dir, &p)
            .args(["export", "--bot", "bot-1", "--json", "-o"])
            .arg(&file)
            .args(CHEAP_KDF_ARGS),
        &|o| {
            let j = json(o);
            Value::from(vec![j["bots"].clone(), j["records"].clone()])
        },
    );
    steps.borrow_mut().push(Step {
        name: "inspect the export",
        code: 0,
        seen: inspect_bots(&file),
    });
    let missing = scratch.join("never.wvb");
    step(
        "export unknown bot",
        cmd(dir, &p)
            .args(["export", "--bot", "nope", "-o"])
            .arg(&missing)
            .args(CHEAP_KDF_ARGS),
        &|_| Value::from(missing.exists()),
    );
    step(
        "export over a file",
        cmd(dir, &p)
            .args(["export", "-o"])
            .arg(&file)
            .args(CHEAP_KDF_ARGS),
        &nothing,
    );
    step(
        "restore an existing bot",
        cmd(dir, &p).arg("restore").arg(&file),
        &nothing,
    );
    step(
        "restore, wrong backup passphrase",
        cmd(dir, &p)
            .env("WAVAULT_BACKUP_PASSPHRASE", "wrong")
            .arg("restore")
            .arg(&file),
        &nothing,
    );
    let bytes = std::fs::read(&file).unwrap();
    let truncated = scratch.join("truncated.wvb");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    step(
        "restore a damaged backup",
        cmd(dir, &p).arg("restore").arg(&truncated),
        &nothing,
    );
    step(
        "restore --force",
        cmd(dir, &p)
            .args(["restore", "--force", "--bot", "bot-1", "--json"])
            .arg(&file),
        &|o| {
            let j = json(o);
            Value::from(vec![
                j["restored"].clone(),
                j["replaced"].clone(),
                j["records"].clone(),
                Value::from(j["auto_backup"].is_string()),
            ])
        },
    );
    step(
        "bot disable",
        cmd(dir, &p).args(["bot", "disable", "bot-2"]),
        &nothing,
    );
    for (name, what) in [
        ("bot enable unknown", "enable"),
        ("bot disable unknown", "disable"),
        ("bot remove unknown", "remove"),
    ] {
        step(name, cmd(dir, &p).args(["bot", what, "nope"]), &nothing);
    }
    step(
        "bot remove",
        cmd(dir, &p).args(["bot", "remove", "bot-2", "--yes"]),
        // The records removed (the automatic backup's path differs).
        &|o| {
            Value::from(
                stdout(o)
                    .split(" and ")
                    .nth(1)
                    .and_then(|s| s.split(';').next())
                    .map(str::to_owned),
            )
        },
    );
    step("rotate key", cmd(dir, &p).args(["rotate", "key"]), &|o| {
        Value::from(stdout(o).contains("re-sealed"))
    });
    step(
        "rotate passphrase, wrong current one",
        cmd(dir, "not the passphrase").args(["rotate", "passphrase"]),
        &nothing,
    );
    step(
        "rotate passphrase",
        cmd(dir, &p)
            .args(["rotate", "passphrase"])
            .args(CHEAP_KDF_ARGS),
        &nothing,
    );
    pass = NEW_PASS.to_owned();
    let p = pass.clone();
    // The automatic backup of the next replacement is sealed with the new passphrase.
    let out = step(
        "restore --force after the passphrase change",
        cmd(dir, &p)
            .args(["restore", "--force", "--bot", "bot-1", "--json"])
            .arg(&file),
        &nothing,
    );
    if code(&out) == 0 {
        let auto = PathBuf::from(json(&out)["auto_backup"].as_str().unwrap());
        let opened =
            wavault::backup::archive::read_file(&auto, NEW_PASS.as_bytes(), &mut |_, _| {});
        steps.borrow_mut().push(Step {
            name: "automatic backup sealed with the new passphrase",
            code: 0,
            seen: Value::from(opened.is_ok()),
        });
    }
    step("backup list", cmd(dir, &p).args(["backup", "list"]), &|o| {
        Value::from(stdout(o).lines().count())
    });
    step(
        "sweep --dry-run",
        cmd(dir, &p).args(["sweep", "--dry-run", "--json"]),
        &|o| json(o)["dry_run"].clone(),
    );
    // The whole vault through a pipe into `backup inspect -`.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(r#"set -e; "$W" --vault "$D" export -o - --kdf-memory-mib 1 --kdf-iterations 1 --kdf-parallelism 1 | "$W" backup inspect - --json"#)
        .env("W", env!("CARGO_BIN_EXE_wavault"))
        .env("D", dir)
        .env("WAVAULT_PASSPHRASE", &p)
        .env("WAVAULT_BACKUP_PASSPHRASE", BACKUP_PASS)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    steps.borrow_mut().push(Step {
        name: "export -o - | backup inspect -",
        code: code(&piped),
        seen: if code(&piped) == 0 {
            json(&piped)["bots"].clone()
        } else {
            Value::from(stderr(&piped))
        },
    });
    step(
        "validate again",
        cmd(dir, &p).args(["validate", "--json"]),
        &|o| {
            let j = json(o);
            Value::from(vec![j["bots"].clone(), j["problems"].clone()])
        },
    );
    step("token show", cmd(dir, &p).args(["token", "show"]), &|o| {
        Value::from(stdout(o).trim().len())
    });
    steps.into_inner()
}

/// The battery offline and through a running `run`: the same exit codes
/// (0, 1 bot exists, 3 wrong passphrase, 5 damaged backup, 6 unknown bot)
/// and the same results. Afterwards both copies open with the new
/// passphrase and validate.
#[test]
fn every_command_gives_the_same_results_with_and_without_run() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    disabled_vault(&origin);
    let (offline, live) = (tmp.path().join("offline"), tmp.path().join("live"));
    copy_tree(&origin, &offline);
    copy_tree(&origin, &live);
    let (s1, s2) = (tmp.path().join("s1"), tmp.path().join("s2"));
    std::fs::create_dir_all(&s1).unwrap();
    std::fs::create_dir_all(&s2).unwrap();

    let here = battery(&offline, &s1);
    let runner = Running::start(&live, &[]);
    let there = battery(&live, &s2);
    let status = runner.stop();
    assert_eq!(status.code(), Some(0), "run exits cleanly");

    let codes: Vec<(&str, i32)> = here.iter().map(|s| (s.name, s.code)).collect();
    assert_eq!(
        codes,
        [
            ("bot list", 0),
            ("bot show", 0),
            ("bot show unknown", 6),
            ("validate", 0),
            ("status", 0),
            ("queue list", 0),
            ("export", 0),
            ("inspect the export", 0),
            ("export unknown bot", 6),
            ("export over a file", 1),
            ("restore an existing bot", 1),
            ("restore, wrong backup passphrase", 3),
            ("restore a damaged backup", 5),
            ("restore --force", 0),
            ("bot disable", 0),
            ("bot enable unknown", 6),
            ("bot disable unknown", 6),
            ("bot remove unknown", 6),
            ("bot remove", 0),
            ("rotate key", 0),
            ("rotate passphrase, wrong current one", 3),
            ("rotate passphrase", 0),
            ("restore --force after the passphrase change", 0),
            ("automatic backup sealed with the new passphrase", 0),
            ("backup list", 0),
            ("sweep --dry-run", 0),
            ("export -o - | backup inspect -", 0),
            ("validate again", 0),
            ("token show", 0),
        ]
    );
    assert_eq!(here.len(), there.len());
    for (a, b) in here.iter().zip(&there) {
        assert_eq!(
            (a.name, a.code, &a.seen),
            (b.name, b.code, &b.seen),
            "offline and through `run` differ"
        );
    }
    assert_eq!(
        here.iter()
            .find(|s| s.name == "automatic backup sealed with the new passphrase")
            .map(|s| s.seen.clone()),
        Some(Value::from(true))
    );
    for d in [&offline, &live] {
        assert!(
            wavault::Vault::open(d, PASS).is_err(),
            "the old passphrase no longer opens {}",
            d.display()
        );
        let v = wavault::Vault::open(d, NEW_PASS.as_bytes()).expect("opens with the new one");
        assert!(v.validate().unwrap().is_sound());
        let ids: Vec<String> = v
            .list_bots()
            .unwrap()
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        assert_eq!(ids, ["bot-0", "bot-1"]);
    }
}

/// A backup through a pipe from one vault to another, `run` holding both:
/// `export --move -o - | restore -`. The sender disables the bot (the file
/// carries it as it was); the receiver restores it; nothing of the stream
/// leaks into the summary, which goes to standard error.
#[test]
fn move_through_a_pipe_with_run_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    disabled_vault(&a);
    new_vault(&b);
    let expected = {
        let v = wavault::Vault::open(&a, PASS).unwrap();
        v.dump_bot(&bot("bot-0")).unwrap()
    };
    let ra = Running::start(&a, &[]);
    let rb = Running::start(&b, &[]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"set -e; "$W" --vault "$A" export --bot bot-0 --move -o - --kdf-memory-mib 1 --kdf-iterations 1 --kdf-parallelism 1 | "$W" --vault "$B" restore - --json"#)
        .env("W", env!("CARGO_BIN_EXE_wavault"))
        .env("A", &a)
        .env("B", &b)
        .env("WAVAULT_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
        .env("WAVAULT_BACKUP_PASSPHRASE", BACKUP_PASS)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["restored"], serde_json::json!(["bot-0"]), "{r}");
    assert_eq!(r["live"], true, "{r}");
    assert!(
        stderr(&out).contains("moved: bot-0 stopped and disabled here")
            && stderr(&out).contains("`wavault bot enable bot-0`"),
        "{}",
        stderr(&out)
    );
    let list =
        run(cmd(&a, std::str::from_utf8(PASS).unwrap()).args(["bot", "show", "bot-0", "--json"]));
    let shown = json(&list);
    assert_eq!(shown["enabled"], false);
    assert!(shown["extra"]["moved_at"].is_string(), "{shown}");
    assert_eq!(ra.stop().code(), Some(0));
    assert_eq!(rb.stop().code(), Some(0));
    let v = wavault::Vault::open(&b, PASS).unwrap();
    let got = v.dump_bot(&bot("bot-0")).unwrap();
    assert_eq!(
        got.records, expected.records,
        "the records arrive as they were"
    );
    assert_eq!(got.config.enabled, expected.config.enabled);
    assert!(!got.config.extra.contains_key("moved_at"));
}

/// Passphrases with a pipe on standard input: with neither the file nor
/// the variable and no terminal, `restore -` fails at once (exit 2) naming
/// both, before reading anything; `export -o -` to a terminal-less pipe
/// does the same; standard input that is not a backup: exit 5.
#[test]
fn pipes_need_a_passphrase_source_and_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    disabled_vault(&dir);
    let detached = |args: &[&str]| {
        let mut c = Command::new("setsid");
        c.arg("--wait")
            .arg(env!("CARGO_BIN_EXE_wavault"))
            .arg("--vault")
            .arg(&dir)
            .args(args)
            .env("WAVAULT_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
            .env_remove("WAVAULT_BACKUP_PASSPHRASE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("setsid (util-linux)");
        // Standard input stays open and empty: a command that read it first
        // would hang instead of failing.
        let stdin = child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{args:?} waits instead of failing"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    for args in [
        &["restore", "-"][..],
        &["backup", "inspect", "-"][..],
        &["export", "-o", "-"][..],
    ] {
        let out = detached(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains("--backup-passphrase-file") && e.contains("WAVAULT_BACKUP_PASSPHRASE"),
            "{args:?}: {e}"
        );
    }
    let mut c = cmd(&dir, std::str::from_utf8(PASS).unwrap());
    c.args(["restore", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(b"this is not a wavault backup").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
}

/// A `run` SIGKILLed in the middle of a data-key rotation done through it
/// (paused after one record is re-sealed), and in the middle of a
/// passphrase change (after the current passphrase was checked, and after
/// the new key file was written): the vault opens with the old or the new
/// passphrase as the point says, validates, and an interrupted key
/// rotation is finished by the next one.
#[test]
fn sigkill_during_live_rotations_leaves_a_sound_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let old = std::str::from_utf8(PASS).unwrap();
    for (point, opens_with) in [
        ("rotate-key-resealed-one:1", old),
        ("rotate-passphrase-checked:1", old),
        ("rotate-passphrase-written:1", NEW_PASS),
    ] {
        let dir = tmp.path().join(point.replace(':', "-"));
        disabled_vault(&dir);
        let mut runner = Running::start(&dir, &[("WAVAULT_TEST_PAUSE_AT", point)]);
        let what: &[&str] = if point.starts_with("rotate-key") {
            &["rotate", "key"]
        } else {
            &[
                "rotate",
                "passphrase",
                CHEAP_KDF_ARGS[0],
                CHEAP_KDF_ARGS[1],
                CHEAP_KDF_ARGS[2],
                CHEAP_KDF_ARGS[3],
                CHEAP_KDF_ARGS[4],
                CHEAP_KDF_ARGS[5],
            ]
        };
        let mut client = cmd(&dir, old)
            .args(what)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The runner says when it paused at the point (its stderr reader
        // sends on the same channel as "running").
        let paused = wait_for_pause(&mut runner, point);
        runner.0.kill().unwrap();
        runner.0.wait().unwrap();
        let out = {
            let deadline = Instant::now() + Duration::from_secs(30);
            while client.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "the client waits after the runner died"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            client.wait_with_output().unwrap()
        };
        assert!(paused, "{point}: the runner paused there");
        assert_ne!(
            code(&out),
            0,
            "{point}: the client reports the runner's death"
        );
        let v = wavault::Vault::open(&dir, opens_with.as_bytes())
            .unwrap_or_else(|e| panic!("{point}: opens with {opens_with:?}: {e}"));
        let report = v.validate().unwrap();
        assert!(report.is_sound(), "{point}: {report:?}");
        drop(v);
        if point.starts_with("rotate-key") {
            let out = run(cmd(&dir, old).args(["rotate", "key"]));
            assert_eq!(code(&out), 0, "{}", stderr(&out));
            assert!(
                stdout(&out).contains("finished an interrupted rotation"),
                "{}",
                stdout(&out)
            );
        }
    }
}

/// Waits until the runner printed that it paused (up to 30 s).
fn wait_for_pause(r: &mut Running, point: &str) -> bool {
    matches!(r.1.recv_timeout(Duration::from_secs(30)), Ok(l) if l.contains(point))
}
