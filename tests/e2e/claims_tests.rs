//! README claims about the runner that had no test of their own: the
//! queue's age limit and its `queue_expired` alert, `queue retry|drop` and
//! `send` through the control socket as the CLI calls them, and
//! `--hook-concurrency`.
//!
//! Why it exists: each of these is a promise an operator relies on (held
//! messages wait for their decision, a delivered message never comes back,
//! a slow hook gets at most N chats at once); each test fails when the
//! promise is broken.

use std::path::Path;
use std::time::Duration;

use wavault::messaging::hook::{keys, Target};
use wavault::messaging::queue::Queue;
use wavault::runner::status::StatusRow;
use wavault::runner::{RunConfig, Runner};
use wavault::sessions::Status;
use wavault::vault::BotConfig;

use crate::hook_server::{HookServer, Mode};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{bot, config, new_vault, synth_paired, PASS};

const DEADLINE: Duration = Duration::from_secs(30);

fn row<'a>(rows: &'a [StatusRow], id: &str) -> &'a StatusRow {
    rows.iter().find(|r| r.bot == id).expect("row for bot")
}

fn cfg(peer: &Peer) -> RunConfig {
    let mut c = config(peer);
    c.hook_backoff = Duration::from_millis(100);
    c.hook_backoff_max = Duration::from_millis(800);
    c
}

async fn wait_connected(runner: &Runner, id: &str) {
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            row(rows, id).status == Status::Connected
        })
        .await
        .unwrap_or_else(|e| panic!("{id} connects: {e}"));
}

async fn wait_prekeys(peer: &Peer, phone: &str) {
    let phone = phone.to_owned();
    peer.wait_for("the bot's pre-key upload", LOGIN_DEADLINE, |log| {
        log.has_prekey_bundle(&phone)
    })
    .await
    .expect("pre-keys uploaded");
}

/// Runs the real `wavault` CLI on `dir` (it finds the runner's control
/// socket there: the vault is held, so any answer came through it).
async fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wavault"));
    c.arg("--vault").arg(dir).args(args);
    c.env("WAVAULT_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || c.output().expect("spawn wavault"))
        .await
        .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (deadline, polling a file the alert command appends to) for an
/// alert of `kind`; returns the file's contents.
async fn wait_alert(file: &Path, kind: &str) -> String {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(&format!("\"kind\":\"{kind}\"")) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no {kind} alert within {DEADLINE:?}; alerts: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The age limit inside the runner: a message older than `--queue-max-age`
/// is held back (not handed to the hook even once it is up), counted and
/// alerted (`queue_expired`); `wavault queue retry` through the socket puts
/// it back and it is delivered once; later `retry`/`drop` bring nothing
/// back. Also `wavault send` through the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_age_limit_holds_alerts_and_retry_releases_through_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let alerts = scratch.path().join("alerts.jsonl");
    let vault = new_vault(dir.path(), &["aging"]);
    let phone = synth_paired(&vault, "aging", 4_915_100_002_001).await;
    let hook = HookServer::start(Mode::Down).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    c.alert_command = Some(format!(
        "cat >> '{}'; echo >> '{}'",
        alerts.display(),
        alerts.display()
    ));
    let runner = Runner::start(vault.clone(), c.clone()).unwrap();
    wait_connected(&runner, "aging").await;
    wait_prekeys(&peer, &phone).await;
    let alice = peer.contact("4917600002001");
    alice.send_text(&phone, "old news").await.unwrap();
    runner
        .wait_until(DEADLINE, |rows| {
            let m = &row(rows, "aging").messages;
            m.queued == 1 && m.hook_failures >= 1
        })
        .await
        .expect("queued while the hook is down");
    runner.shutdown().await.unwrap();

    // An hour passes (the entry is made an hour older: no waiting), and
    // the runner starts again with a one-minute age limit.
    let q = Queue::new(vault.view(&bot("aging")));
    let mut entry = q.pending().unwrap().remove(0);
    entry.received_at -= 3600;
    q.update(&entry).await.unwrap();
    c.hooks.queue_max_age = Duration::from_secs(60);
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "aging").await;
    let text = wait_alert(&alerts, "queue_expired").await;
    assert!(text.contains("\"bot\":\"aging\""), "{text}");
    runner
        .wait_until(DEADLINE, |rows| {
            let m = &row(rows, "aging").messages;
            m.held == 1 && m.expired == 1
        })
        .await
        .expect("held and counted as expired");

    // The hook is back: a new message of the same chat is delivered, the
    // held one is not.
    hook.set_mode(Mode::Reply("echo: ".into()));
    alice.send_text(&phone, "fresh").await.unwrap();
    hook.wait("the fresh message", DEADLINE, |s| !s.accepted.is_empty())
        .await;
    assert_eq!(hook.texts_from(alice.phone()), ["fresh"], "held back");
    let listed = ok(&cli(dir.path(), &["queue", "list", "aging", "--json"]).await);
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["state"], "held");

    // `queue retry` through the socket: delivered, its reply sent.
    let out = ok(&cli(dir.path(), &["queue", "retry", "aging"]).await);
    assert!(out.starts_with("1 held message(s)"), "{out}");
    alice
        .wait_received("the echo of the released message", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: old news"))
        })
        .await
        .unwrap();
    runner
        .wait_until(DEADLINE, |rows| row(rows, "aging").messages.queued == 0)
        .await
        .expect("queue drained");
    // A delivered message never comes back (the race fixed in fb94b7a):
    // neither retry nor drop finds anything, the hook gets the next
    // message and never the released one again.
    let out = ok(&cli(dir.path(), &["queue", "retry", "aging"]).await);
    assert!(out.starts_with("0 held"), "{out}");
    let out = ok(&cli(dir.path(), &["queue", "drop", "aging"]).await);
    assert!(out.starts_with("dropped 0"), "{out}");
    alice.send_text(&phone, "after").await.unwrap();
    hook.wait("the message after", DEADLINE, |s| s.accepted.len() == 3)
        .await;
    assert_eq!(
        hook.texts_from(alice.phone()),
        ["fresh", "old news", "after"]
    );

    // `send` through the socket, as a user calls it.
    let id = ok(&cli(
        dir.path(),
        &["send", "aging", alice.phone(), "via the socket"],
    )
    .await);
    let id = id.trim().to_owned();
    assert!(!id.is_empty());
    alice
        .wait_received("the CLI's send", DEADLINE, |r| {
            r.iter()
                .any(|m| m.id == id && m.text.as_deref() == Some("via the socket"))
        })
        .await
        .unwrap();
    let bad = cli(dir.path(), &["send", "aging", "12", "x"]).await;
    assert_eq!(bad.status.code(), Some(2), "invalid recipient");
    runner.shutdown().await.unwrap();
}

/// `--hook-concurrency 2`: with a hook that never answers and messages in
/// three chats, two calls are in flight at once, never three; the third
/// chat gets its turn when the first two time out (3 s) and are put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_concurrency_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &[]);
    let hang = HookServer::start(Mode::Hang).await;
    let mut b = BotConfig::new(bot("narrow"));
    b.webhook = Some(hang.url.clone());
    b.extra.insert(keys::CONCURRENCY.into(), "2".into());
    b.extra.insert(keys::TIMEOUT_MS.into(), "3000".into());
    vault.add_bot(&b).unwrap();
    let phone = synth_paired(&vault, "narrow", 4_915_100_002_002).await;
    let peer = Peer::new();
    let runner = Runner::start(vault.clone(), cfg(&peer)).unwrap();
    wait_connected(&runner, "narrow").await;
    wait_prekeys(&peer, &phone).await;
    let mut chats = Vec::new();
    for n in 1..=3 {
        let contact = peer.contact(&format!("491760000300{n}"));
        contact
            .send_text(&phone, &format!("chat {n}"))
            .await
            .unwrap();
        chats.push(contact.phone().to_owned());
    }
    // Every chat called, and a second round begun (calls cut at their
    // time limit and retried): the third chat was waiting for a slot.
    let seen = hang
        .wait("every chat called, then more", DEADLINE, |s| {
            s.calls >= 4
                && chats
                    .iter()
                    .all(|c| s.chats.iter().any(|x| x.starts_with(&format!("{c}@"))))
        })
        .await;
    assert_eq!(
        seen.max_in_flight, 2,
        "at most two chats at once (and two did run at once): {seen:?}"
    );
    runner.shutdown().await.unwrap();
}
