//! The control socket as users call it: the real `wavault run` holds the
//! vault (its bots disabled: nothing dials WhatsApp) and the real CLI
//! commands are answered through `<vault>/control.sock`. The vault is
//! locked by `run`, so any answer at all came through the socket.
//!
//! Why it exists: README promises `bot list`, `queue retry|drop`, `sweep`
//! and `token show|rotate` work while `run` holds the vault, and that the
//! socket refuses other users.

use crate::common::*;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wavault::messaging::queue::{NewMessage, Queue};
use wavault::sessions::{Sessions, Status};
use wavault::vault::BotConfig;

const DEADLINE: Duration = Duration::from_secs(30);

/// A `wavault run` child whose stderr lines are kept; killed on drop.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(dir: &std::path::Path) -> Running {
        let mut child = wavault(dir)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(l);
            }
        });
        let r = Running { child, log };
        r.wait_log("run reports it is running", |l| {
            l.contains("running; Ctrl-C or SIGTERM")
        });
        r
    }

    /// Waits (deadline 30 s, polling the captured log) for a line.
    fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if self.log.lock().unwrap().iter().any(|l| pred(l)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn msg(chat: &str, id: &str) -> NewMessage {
    NewMessage {
        chat: chat.into(),
        sender: chat.into(),
        id: id.into(),
        summary: "{}".into(),
    }
}

/// The queue's rows through `queue list --json`: (id, state).
fn queue_rows(dir: &std::path::Path, bot: &str) -> Vec<(String, String)> {
    let out = run(wavault(dir).args(["queue", "list", bot, "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A vault of disabled bots: `drops` and `retries` with a held message
/// (`H1`, `H2`) and a waiting one (`W1`, `W2`) each; `ventas` with a
/// history entry 40 days old (swept at 30 d) and newer ones.
fn seeded_vault(dir: &std::path::Path) {
    let v = new_vault(dir);
    for id in ["drops", "retries", "ventas"] {
        let mut cfg = BotConfig::new(bot(id));
        cfg.enabled = false;
        v.add_bot(&cfg).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t0 = wavault::vault::now();
    for (b, n) in [("drops", 1), ("retries", 2)] {
        let q = Queue::new(v.view(&bot(b)));
        rt.block_on(async {
            let c = "4915100000001@s.whatsapp.net";
            q.enqueue(&[msg(c, &format!("H{n}"))], 100, t0 - 3600)
                .await
                .unwrap()
                .unwrap();
            // Held: older than one minute at t0.
            assert_eq!(
                q.expire(Duration::from_secs(60), t0).await.unwrap().len(),
                1
            );
            q.enqueue(&[msg(c, &format!("W{n}"))], 100, t0)
                .await
                .unwrap()
                .unwrap();
        });
    }
    let s = Sessions::new(v.view(&bot("ventas")));
    for (ago, st) in [
        (40 * 86_400, Status::Connecting),
        (39 * 86_400, Status::Connected),
        (3600, Status::Reconnecting),
    ] {
        s.set_status(t0 - ago, st, Some("test")).unwrap();
    }
    v.flush().unwrap();
}

#[test]
fn bot_list_queue_sweep_and_token_through_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    seeded_vault(dir);
    let running = Running::start(dir);

    // bot list
    let out = run(wavault(dir).args(["bot", "list", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["drops", "retries", "ventas"]);

    // queue drop: only the held message goes.
    let w = |id: &str, st: &str| (id.to_owned(), st.to_owned());
    assert_eq!(
        queue_rows(dir, "drops"),
        [w("H1", "held"), w("W1", "waiting")]
    );
    let out = run(wavault(dir).args(["queue", "drop", "drops", "--yes"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(queue_rows(dir, "drops"), [w("W1", "waiting")]);
    // queue retry: the held message is waiting again, nothing lost.
    let out = run(wavault(dir).args(["queue", "retry", "retries"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        queue_rows(dir, "retries"),
        [w("H2", "waiting"), w("W2", "waiting")]
    );
    // Nothing held any more: drop removes nothing.
    let out = run(wavault(dir).args(["queue", "drop", "retries", "--yes"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(queue_rows(dir, "retries").len(), 2);
    let out = run(wavault(dir).args(["queue", "retry", "nobody"]));
    assert_eq!(code(&out), 6, "unknown bot: {}", stderr(&out));

    // sweep: a dry run reports the 40-day-old entry and keeps it; the sweep removes it.
    let sweep = |extra: &[&str]| {
        let out = run(wavault(dir)
            .args(["sweep", "--older-than", "30d", "--json", "--yes"])
            .args(extra));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let entries: u64 = v["bots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["bot"] == "ventas")
            .map(|b| b["history_entries"].as_u64().unwrap())
            .sum();
        (v["dry_run"].as_bool().unwrap(), entries)
    };
    assert_eq!(sweep(&["--dry-run"]), (true, 1));
    assert_eq!(
        sweep(&["--dry-run"]),
        (true, 1),
        "a dry run changes nothing"
    );
    assert_eq!(sweep(&[]), (false, 1));
    assert_eq!(sweep(&[]), (false, 0), "removed by the first sweep");

    // token show / rotate
    let token = |op: &str| {
        let out = run(wavault(dir).args(["token", op]));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let t = stdout(&out).trim().to_owned();
        assert!(t.len() >= 32, "a token: {t:?}");
        t
    };
    let first = token("show");
    assert_eq!(token("show"), first, "show is stable");
    let rotated = token("rotate");
    assert_ne!(rotated, first);
    assert_eq!(
        token("show"),
        rotated,
        "the rotated token is the one in use"
    );

    drop(running);
    // The runner is gone: what it did is in the vault.
    assert_eq!(
        token("show"),
        rotated,
        "offline, the vault holds the rotated token"
    );
    let v = wavault::Vault::open(dir, PASS).unwrap();
    let q = Queue::new(v.view(&bot("drops"))).pending().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, "W1");
}

/// A connection from another user is refused by the server itself (peer
/// credentials), even when the file system would let it through.
#[test]
fn another_user_is_refused() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!(
            "SKIPPED another_user_is_refused: needs root to run a client as `nobody` \
             (the socket's uid check is not exercised)"
        );
        return;
    }
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    vault_with_disabled_bot(&dir, "idle");
    let running = Running::start(&dir);
    // Open the way for `nobody` in the file system: the folder
    // traversable, the socket writable by all, a binary it can execute.
    // Only the server's own check is left.
    let as_nobody = |bin: &std::path::Path| {
        let mut c = std::process::Command::new(bin);
        c.env_clear().uid(NOBODY).gid(NOBODY);
        c
    };
    let original = std::path::PathBuf::from(env!("CARGO_BIN_EXE_wavault"));
    // The test binary itself when `nobody` can run it; else a copy (a copy
    // is written, and a file open for writing cannot be executed by a
    // child forked meanwhile: ETXTBSY, so avoid it when we can).
    let bin = if as_nobody(&original)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        original
    } else {
        let bin = tmp.path().join("wavault");
        std::fs::copy(&original, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    };
    for (p, mode) in [
        (tmp.path().to_path_buf(), 0o755),
        (dir.clone(), 0o711),
        (dir.join("control.sock"), 0o666),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 0);
    let out = as_nobody(&bin)
        .arg("--vault")
        .arg(&dir)
        .args(["bot", "list", "--json"])
        .env("WAVAULT_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "refused: {}", stdout(&out));
    assert!(
        !stdout(&out).contains("idle"),
        "no answer: {}",
        stdout(&out)
    );
    running.wait_log("the refusal logged", |l| {
        l.contains("refused a connection from another user")
    });
    // The owner is still served.
    let out = run(wavault(&dir).args(["bot", "list", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("idle"));
}

/// `webhook secret show|rotate` with and without a running `run`: a
/// `whsec_` secret stable across calls and restarts, replaced by `rotate`
/// (the grace reported), a bot's own secret after `rotate --bot`; an
/// unknown bot is exit 6 either way; the secret is in no file in clear and
/// not in `bot show`.
#[test]
fn webhook_secret_show_and_rotate_with_and_without_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vault_with_disabled_bot(dir, "ventas");
    let secret = |args: &[&str]| -> serde_json::Value {
        let out = run(wavault(dir)
            .args(["webhook", "secret"])
            .args(args)
            .arg("--json"));
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let unknown = |args: &[&str]| {
        let out = run(wavault(dir).args(["webhook", "secret"]).args(args));
        assert_eq!(code(&out), 6, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
    };

    // Without `run`: made on first use, then the same.
    let first = secret(&["show"]);
    let s1 = first["secret"].as_str().unwrap().to_owned();
    assert!(s1.starts_with("whsec_") && s1.len() == 50, "{first}");
    assert_eq!(first["scope"], "default");
    assert_eq!(secret(&["show"])["secret"], s1.as_str());
    // A bot without its own webhook signs with the default.
    let b = secret(&["show", "--bot", "ventas"]);
    assert_eq!(
        (&b["scope"], &b["secret"]),
        (&"default".into(), &s1.clone().into())
    );
    unknown(&["show", "--bot", "nobody"]);

    // Through the running `run` (it holds the vault: answered by the socket).
    let running = Running::start(dir);
    assert_eq!(
        secret(&["show"])["secret"],
        s1.as_str(),
        "stable across a restart"
    );
    let r = secret(&["rotate", "--grace", "1h"]);
    let s2 = r["secret"].as_str().unwrap().to_owned();
    assert_ne!(s2, s1);
    assert!(r["previous_until"].as_i64().is_some(), "{r}");
    assert_eq!(secret(&["show"])["secret"], s2.as_str());
    // A bot on the default webhook has no secret of its own to rotate.
    let out = run(wavault(dir).args(["webhook", "secret", "rotate", "--bot", "ventas"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--webhook"), "{}", stderr(&out));
    // With its own webhook, it gets its own secret.
    let out = run(wavault(dir).args(["bot", "set", "ventas", "--webhook", "http://127.0.0.1:9/h"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mine = secret(&["show", "--bot", "ventas"]);
    assert_eq!(mine["scope"], "bot");
    assert_ne!(mine["secret"], s2.as_str());
    let own = secret(&["rotate", "--bot", "ventas", "--grace", "0s"]);
    assert_eq!(own["scope"], "bot");
    assert!(own["previous_until"].is_null(), "{own}");
    let s3 = own["secret"].as_str().unwrap().to_owned();
    assert_ne!(s3, s2);
    assert_ne!(own["secret"], mine["secret"]);
    assert_eq!(secret(&["show", "--bot", "ventas"])["secret"], s3.as_str());
    unknown(&["rotate", "--bot", "nobody"]);
    let out = run(wavault(dir).args(["webhook", "secret", "rotate", "--grace", "24"]));
    assert_eq!(code(&out), 2, "a grace without a unit: {}", stderr(&out));
    let out = run(wavault(dir).args(["bot", "show", "ventas", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stdout(&out).contains("whsec_"), "{}", stdout(&out));
    drop(running);

    // Without `run` again: what it rotated is sealed in the vault.
    assert_eq!(secret(&["show"])["secret"], s2.as_str());
    assert_eq!(secret(&["show", "--bot", "ventas"])["secret"], s3.as_str());
    let s4 = secret(&["rotate"])["secret"].as_str().unwrap().to_owned();
    assert_ne!(s4, s2);
    assert_eq!(secret(&["show"])["secret"], s4.as_str());
    // No file holds a secret in clear.
    for f in files(dir) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for s in [&s1, &s2, &s3, &s4] {
            let key = &s.as_bytes()[6..26];
            assert!(
                !bytes.windows(key.len()).any(|w| w == key),
                "{}",
                f.display()
            );
        }
    }
}
