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
use wavault::runner::Runner;
use wavault::sessions::Status;
use wavault::vault::BotConfig;
use whatsapp_rust::wacore::net::{Transport, TransportEvent, TransportFactory};

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{cfg, row, wait_connected, wait_prekeys};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{bot, new_vault, synth_paired, PASS};

const DEADLINE: Duration = Duration::from_secs(30);

use crate::live_tests::{cli, ok};

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
    alice
        .wait_received("the echo of the fresh message", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some("echo: fresh"))
        })
        .await
        .unwrap();
    runner
        .wait_until(DEADLINE, |rows| row(rows, "aging").messages.queued == 1)
        .await
        .expect("only the held message left");
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
    let out = ok(&cli(dir.path(), &["queue", "drop", "aging", "--yes"]).await);
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

/// Child half of the signal tests: `run`'s own main loop
/// (`wavault::cli::until_signalled`) over the parent's peer by loopback TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_run_until_signalled() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_SIG_DIR") else {
        return; // only meaningful when started by a parent test
    };
    let addr: std::net::SocketAddr = std::env::var("WAVAULT_E2E_SIG_PEER")
        .unwrap()
        .parse()
        .unwrap();
    let grace: u64 = std::env::var("WAVAULT_E2E_SIG_GRACE")
        .unwrap()
        .parse()
        .unwrap();
    let vault = wavault::Vault::open(Path::new(&dir), PASS).expect("child opens vault");
    let stub = Peer::new(); // only its HTTP stub: logins need no HTTP
    let mut c = cfg(&stub);
    let tcp = crate::peer::TcpTransportFactory { addr };
    let stuck = std::env::var_os("WAVAULT_E2E_SIG_STUCK").is_some();
    c.net = wavault::runner::net::Net {
        transport: if stuck {
            std::sync::Arc::new(StuckDisconnect(tcp))
        } else {
            std::sync::Arc::new(tcp)
        },
        http: std::sync::Arc::new(stub.http_client()),
        version: Some(crate::peer::PINNED_VERSION),
    };
    c.shutdown_grace = Duration::from_secs(grace);
    if std::env::var_os("WAVAULT_E2E_SIG_DEFAULT_LOG").is_some() {
        assert!(std::env::var_os("RUST_LOG").is_none(), "RUST_LOG is unset");
        wavault::logs::init();
    }
    if let Ok(hook) = std::env::var("WAVAULT_E2E_SIG_HOOK") {
        c.hooks.target = Some(Target::Webhook(hook));
    }
    let plan = wavault::cli::RunPlan {
        runner: c,
        listen: None,
    };
    wavault::cli::until_signalled(vault, plan).await.unwrap();
}

/// Connections whose `disconnect` never finishes (a network that swallows
/// the close): the bot's clean shutdown then takes the whole grace.
struct StuckDisconnect(crate::peer::TcpTransportFactory);

struct StuckTransport(std::sync::Arc<dyn Transport>);

#[whatsapp_rust::async_trait]
impl Transport for StuckTransport {
    async fn send(&self, data: whatsapp_rust::bytes::Bytes) -> whatsapp_rust::anyhow::Result<()> {
        self.0.send(data).await
    }

    async fn disconnect(&self) {
        std::future::pending::<()>().await
    }
}

#[whatsapp_rust::async_trait]
impl TransportFactory for StuckDisconnect {
    async fn create_transport(
        &self,
    ) -> whatsapp_rust::anyhow::Result<(
        std::sync::Arc<dyn Transport>,
        whatsapp_rust::async_channel::Receiver<TransportEvent>,
    )> {
        let (t, rx) = self.0.create_transport().await?;
        Ok((std::sync::Arc::new(StuckTransport(t)), rx))
    }
}

/// A child test process running [`child_run_until_signalled`]; its output
/// lines are kept. Killed on drop.
struct SigChild {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for SigChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SigChild {
    fn spawn(dir: &Path, peer: std::net::SocketAddr, grace_secs: u64, stuck: bool) -> SigChild {
        Self::spawn_with(dir, peer, grace_secs, stuck, &[])
    }

    fn spawn_with(
        dir: &Path,
        peer: std::net::SocketAddr,
        grace_secs: u64,
        stuck: bool,
        envs: &[(&str, &str)],
    ) -> SigChild {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.envs(envs.iter().copied());
        if envs
            .iter()
            .any(|(k, _)| *k == "WAVAULT_E2E_SIG_DEFAULT_LOG")
        {
            cmd.env_remove("RUST_LOG");
        } else {
            cmd.env("RUST_LOG", "warn");
        }
        if stuck {
            cmd.env("WAVAULT_E2E_SIG_STUCK", "1");
        }
        let mut child = cmd
            .args([
                "--exact",
                "claims_tests::child_run_until_signalled",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("WAVAULT_E2E_SIG_DIR", dir)
            .env("WAVAULT_E2E_SIG_PEER", peer.to_string())
            .env("WAVAULT_E2E_SIG_GRACE", grace_secs.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn child");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for r in [out, err] {
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        SigChild { child, lines }
    }

    fn term(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    async fn wait_line(&self, what: &str) {
        let until = tokio::time::Instant::now() + DEADLINE;
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(what)) {
            assert!(
                tokio::time::Instant::now() < until,
                "no line {what:?} within {DEADLINE:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status, within the deadline.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "the child did not exit within {DEADLINE:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// SIGTERM with bots connected: exit 0 and every bot recorded disconnected
/// with reason `shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_bots_connected_exits_0_and_records_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["one", "two"]);
    let phones = [
        synth_paired(&vault, "one", 4_915_100_002_011).await,
        synth_paired(&vault, "two", 4_915_100_002_012).await,
    ];
    drop(vault);
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let mut child = SigChild::spawn(dir.path(), addr, 8, false);
    let p = phones.clone();
    peer.wait_for("both bots logged in", LOGIN_DEADLINE * 2, |log| {
        p.iter().all(|ph| log.logins(ph).count() >= 1)
    })
    .await
    .expect("both log in");
    // Logged in is not yet connected in the vault: wait for the peer's
    // answer to the client's first IQs (pre-keys uploaded).
    for ph in &phones {
        let ph = ph.clone();
        peer.wait_for("pre-keys", LOGIN_DEADLINE, |log| log.has_prekey_bundle(&ph))
            .await
            .expect("pre-keys");
    }
    child.term();
    let status = child.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{:?}", child.lines.lock().unwrap());
    let vault = wavault::Vault::open(dir.path(), PASS).unwrap();
    for id in ["one", "two"] {
        let s = wavault::sessions::Sessions::new(vault.view(&bot(id)));
        assert_eq!(s.load(0).unwrap().status, Status::Disconnected, "{id}");
        let h = s.history().unwrap();
        let last = h.last().unwrap();
        assert_eq!(
            (last.from, last.to, last.reason.as_deref()),
            (Status::Connected, Status::Disconnected, Some("shutdown")),
            "{id}: {h:?}"
        );
    }
}

/// A second SIGTERM while the shutdown is slow (the bot's disconnect never
/// finishes and the grace is long) exits at once with code 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["stuck"]);
    let phone = synth_paired(&vault, "stuck", 4_915_100_002_013).await;
    drop(vault);
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    // A grace far beyond the deadline: only the second signal can end it in time.
    let mut child = SigChild::spawn(dir.path(), addr, 600, true);
    let p = phone.clone();
    peer.wait_for("the login", LOGIN_DEADLINE * 2, |log| {
        log.logins(&p).count() >= 1
    })
    .await
    .expect("the bot logs in");
    child.term();
    child.wait_line("stopping: disconnecting every bot").await;
    child.term();
    let status = child.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(130),
        "{:?}",
        child.lines.lock().unwrap()
    );
    child.wait_line("second signal: exiting at once").await;
}

/// Crashes the child runner at `point` while it delivers `text`; returns
/// the vault folder, the peer (still up), the bot's phone, the contact, the
/// message id and the hook (which answered once).
async fn crash_during_delivery(
    point: &str,
    phone: u64,
    contact: &str,
    text: &str,
) -> (
    tempfile::TempDir,
    Peer,
    String,
    crate::peer::Contact,
    String,
    HookServer,
) {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["crash"]);
    let phone = synth_paired(&vault, "crash", phone).await;
    drop(vault);
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let mut child = SigChild::spawn_with(
        dir.path(),
        addr,
        8,
        false,
        &[
            ("WAVAULT_E2E_SIG_HOOK", &hook.url),
            ("WAVAULT_TEST_CRASH_AT", point),
        ],
    );
    let p = phone.clone();
    let up = peer
        .wait_for("the child bot's pre-key upload", DEADLINE * 2, |log| {
            log.has_prekey_bundle(&p)
        })
        .await;
    if let Err(e) = up {
        panic!("{e}; child: {:?}", child.lines.lock().unwrap());
    }
    let alice = peer.contact(contact);
    let id = alice.send_text(&phone, text).await.unwrap();
    hook.wait("the first call", DEADLINE, |s| s.accepted.len() == 1)
        .await;
    let status = child.wait_exit().await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(6),
        "the child aborted at {point}: {status:?} {:?}",
        child.lines.lock().unwrap()
    );
    (dir, peer, phone, alice, id, hook)
}

/// A crash between the hook's answer and the queue update: after the
/// restart the hook gets the same message again (at least once delivery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_hook_answer_calls_the_hook_again() {
    let (dir, peer, _phone, alice, id, hook) = crash_during_delivery(
        "after_hook_answer",
        4_915_100_002_021,
        "4917600002021",
        "crash before the update",
    )
    .await;
    let vault = wavault::Vault::open(dir.path(), PASS).unwrap();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault, c).unwrap();
    let seen = hook
        .wait("the message again", DEADLINE, |s| s.accepted.len() == 2)
        .await;
    assert_eq!(seen.accepted[0]["id"], id.as_str());
    assert_eq!(seen.accepted[1]["id"], id.as_str(), "the same message");
    alice
        .wait_received("the echo", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: crash before the update"))
        })
        .await
        .unwrap();
    runner.shutdown().await.unwrap();
}

/// A crash once the hook's actions are stored: after the restart the reply
/// reaches the contact once and the hook is not called again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_actions_accepted_resumes_without_the_hook() {
    let (dir, peer, phone, alice, _id, hook) = crash_during_delivery(
        "after_actions_accepted",
        4_915_100_002_022,
        "4917600002022",
        "crash after accepting",
    )
    .await;
    let vault = wavault::Vault::open(dir.path(), PASS).unwrap();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault, c).unwrap();
    wait_connected(&runner, "crash").await;
    alice
        .wait_received("the stored reply", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: crash after accepting"))
        })
        .await
        .unwrap();
    runner
        .wait_until(DEADLINE, |rows| row(rows, "crash").messages.queued == 0)
        .await
        .expect("queue drained");
    // One more message through the same path, then count.
    alice.send_text(&phone, "next").await.unwrap();
    let got = alice
        .wait_received("the next echo", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some("echo: next"))
        })
        .await
        .unwrap();
    let echoes = got
        .iter()
        .filter(|m| m.text.as_deref() == Some("echo: crash after accepting"))
        .count();
    assert_eq!(echoes, 1, "the reply reached the contact once");
    let s = hook.seen();
    assert_eq!(
        hook.texts_from(alice.phone()),
        ["crash after accepting", "next"],
        "the hook was not called again for the accepted message: {s:?}"
    );
    runner.shutdown().await.unwrap();
}

/// Every regular file under `root`.
fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// No identifier of a real session on disk or in the log: a paired bot
/// (device phone and LID), a contact who wrote and got replies, a `send`
/// through the socket, the web token, an export. The vault folder, the
/// backup file and the child's whole log (default filter) are searched for
/// each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifier_of_a_session_on_disk_or_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["secretive"]);
    let phone = synth_paired(&vault, "secretive", 4_915_100_002_031).await;
    let lid_user = (4_915_100_002_031u64 + 100_000_000_000_000).to_string();
    drop(vault);
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let mut child = SigChild::spawn_with(
        dir.path(),
        addr,
        8,
        false,
        &[
            ("WAVAULT_E2E_SIG_HOOK", &hook.url),
            ("WAVAULT_E2E_SIG_DEFAULT_LOG", "1"),
        ],
    );
    let p = phone.clone();
    let up = peer
        .wait_for("the child bot's pre-key upload", DEADLINE * 2, |log| {
            log.has_prekey_bundle(&p)
        })
        .await;
    if let Err(e) = up {
        panic!("{e}; child: {:?}", child.lines.lock().unwrap());
    }
    let alice = peer.contact("4917600002031");
    let in_id = alice
        .send_text(&phone, "zebra quartz inbound text")
        .await
        .unwrap();
    alice
        .wait_received("the echo", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: zebra quartz inbound text"))
        })
        .await
        .unwrap();
    let sent = ok(&cli(
        dir.path(),
        &["send", "secretive", alice.phone(), "walrus proactive text"],
    )
    .await);
    let sent = sent.trim().to_owned();
    let got = alice
        .wait_received("the send", DEADLINE, |r| r.iter().any(|m| m.id == sent))
        .await
        .unwrap();
    let token = ok(&cli(dir.path(), &["token", "show"]).await)
        .trim()
        .to_owned();
    assert!(token.len() >= 32, "{token}");
    child.term();
    let status = child.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{:?}", child.lines.lock().unwrap());
    let backup = out_dir.path().join("all.wvb");
    let mut export = std::process::Command::new(env!("CARGO_BIN_EXE_wavault"));
    export
        .arg("--vault")
        .arg(dir.path())
        .args(["export", "-o"])
        .arg(&backup)
        .args(crate::live_tests::CHEAP)
        .env("WAVAULT_PASSPHRASE", std::str::from_utf8(PASS).unwrap())
        .env("WAVAULT_BACKUP_PASSPHRASE", "backup pass for the grep test")
        .env("RUST_LOG", "warn");
    let out = tokio::task::spawn_blocking(move || export.output().unwrap())
        .await
        .unwrap();
    ok(&out);

    let mut needles: Vec<String> = vec![
        phone.clone(),
        format!("{phone}@s.whatsapp.net"),
        lid_user.clone(),
        format!("{lid_user}@lid"),
        alice.phone().to_owned(),
        format!("{}@s.whatsapp.net", alice.phone()),
        in_id.clone(),
        sent.clone(),
        "zebra quartz".into(),
        "walrus proactive".into(),
        token.clone(),
    ];
    needles.extend(got.iter().map(|m| m.id.clone()));
    let log = child.lines.lock().unwrap().join("\n");
    // Positive controls: the log has wavault's lines, the files are there.
    assert!(log.contains("running; Ctrl-C or SIGTERM"), "{log}");
    let mut hay: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|f| (f.display().to_string(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(
        hay.len() >= 3,
        "vault files: {:?}",
        hay.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    hay.push(("the backup file".into(), std::fs::read(&backup).unwrap()));
    hay.push(("the log".into(), log.clone().into_bytes()));
    for (name, bytes) in &hay {
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} found in {name}"
            );
        }
    }
}
