//! Bots that talk, end to end: a contact (the peer, with its own Signal
//! identity) writes to a bot run by the runner, the operator's hook answers,
//! the contact reads the reply; and none of it is lost across hook outages,
//! restarts and SIGKILL.
//!
//! Why it exists: these are the promises of the messaging layer (durable
//! inbound queue, per-chat order, time limits, Signal sessions that survive
//! restarts in the vault), checked against the real whatsapp-rust client.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wavault::error::exit;
use wavault::messaging::hook::{keys, Target};
use wavault::messaging::outbox::Outgoing;
use wavault::runner::net::Net;
use wavault::runner::{RunConfig, Runner};
use wavault::sessions::Status;
use wavault::status::StatusRow;
use wavault::vault::BotConfig;
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::peer::{Peer, TcpTransportFactory, LOGIN_DEADLINE, PINNED_VERSION};
use crate::runner_tests::{bot, config, new_vault, spawn_child, synth_paired, PASS};

/// Deadline for one message to make its way through bot, hook and back.
const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn row<'a>(rows: &'a [StatusRow], id: &str) -> &'a StatusRow {
    rows.iter().find(|r| r.bot == id).expect("row for bot")
}

/// The runner's test config: fast retries.
pub(crate) fn cfg(peer: &Peer) -> RunConfig {
    let mut c = config(peer);
    c.hook_backoff = Duration::from_millis(100);
    c.hook_backoff_max = Duration::from_millis(800);
    c
}

/// The network of a runner in a child process: the parent's peer over
/// loopback TCP (and a stub's HTTP client: logins need no HTTP).
pub(crate) fn tcp_net(addr: std::net::SocketAddr) -> Net {
    let stub = Peer::new();
    Net {
        transport: Arc::new(TcpTransportFactory { addr }),
        http: Arc::new(stub.http_client()),
        version: Some(PINNED_VERSION),
    }
}

pub(crate) async fn wait_connected(runner: &Runner, id: &str) {
    runner
        .wait_until(LOGIN_DEADLINE, |rows| {
            row(rows, id).status == Status::Connected
        })
        .await
        .unwrap_or_else(|e| panic!("{id} connects: {e}"));
}

/// Waits until the bot logged in as `phone` has uploaded its pre-keys (a
/// contact needs them to start a Signal session).
pub(crate) async fn wait_prekeys(peer: &Peer, phone: &str) {
    let phone = phone.to_owned();
    peer.wait_for("the bot's pre-key upload", LOGIN_DEADLINE, |log| {
        log.has_prekey_bundle(&phone)
    })
    .await
    .expect("pre-keys uploaded");
}

/// One paired bot in a new vault, run against a new peer.
pub(crate) struct OneBot {
    /// Holds the vault folder: bind it for as long as the runner runs.
    pub dir: tempfile::TempDir,
    pub vault: Vault,
    pub phone: String,
    pub peer: Peer,
    pub runner: Runner,
    /// The runner's config (to start it again).
    pub cfg: RunConfig,
}

/// Starts `b` (paired as `phone`) with the default hook `hook`, if any;
/// returns once it is connected and its pre-keys are with the server.
pub(crate) async fn one_bot(b: BotConfig, phone: u64, hook: Option<&HookServer>) -> OneBot {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &[]);
    let id = b.id.to_string();
    vault.add_bot(&b).unwrap();
    let phone = synth_paired(&vault, &id, phone).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = hook.map(|h| Target::Webhook(h.url.clone()));
    let runner = Runner::start(vault.clone(), c.clone()).unwrap();
    wait_connected(&runner, &id).await;
    wait_prekeys(&peer, &phone).await;
    OneBot {
        dir,
        vault,
        phone,
        peer,
        runner,
        cfg: c,
    }
}

/// The contact kept the one Signal session it began, and nothing failed.
async fn assert_one_session_and_clean(contact: &crate::peer::Contact, peer: &Peer) {
    assert_eq!(
        contact.sessions_started().await,
        1,
        "the contact never had to start a new Signal session"
    );
    assert_clean_signal(peer);
}

pub(crate) fn assert_clean_signal(peer: &Peer) {
    let seen = peer.seen();
    assert!(
        seen.decrypt_errors.is_empty(),
        "the contact failed to decrypt: {:?}",
        seen.decrypt_errors
    );
    let retries: Vec<_> = seen.retry_receipts().collect();
    assert!(retries.is_empty(), "retry receipts were sent: {retries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_writes_the_hook_replies_and_the_contact_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["support", "fresh"]);
    let phone = synth_paired(&vault, "support", 4_915_100_001_001).await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "support").await;
    wait_prekeys(&peer, &phone).await;

    let alice = peer.contact("4917600000001");
    let id = alice.send_text(&phone, "hello bot").await.unwrap();
    let seen = hook
        .wait("the first message", DEADLINE, |s| !s.accepted.is_empty())
        .await;
    let m = &seen.accepted[0];
    assert_eq!(m["text"], "hello bot");
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["bot"], "support");
    assert_eq!(m["is_group"], false);
    assert!(
        m["sender"].as_str().unwrap().starts_with("4917600000001@"),
        "{m}"
    );
    alice
        .wait_received("the echo", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: hello bot"))
        })
        .await
        .unwrap();

    // A list of actions: react, mark read, reply, in that order.
    hook.set_mode(Mode::Answer(json!({"actions": [
        {"type": "react", "emoji": "👍"},
        {"type": "read"},
        {"type": "reply", "text": "done"},
    ]})));
    let id2 = alice.send_text(&phone, "second").await.unwrap();
    let got = alice
        .wait_received("reaction and reply", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some("done"))
        })
        .await
        .unwrap();
    let reaction = got
        .iter()
        .position(|m| m.reaction.as_ref() == Some(&(id2.clone(), "👍".to_string())))
        .expect("the reaction names the message and the emoji");
    let reply = got
        .iter()
        .position(|m| m.text.as_deref() == Some("done"))
        .unwrap();
    assert!(reaction < reply, "actions run in the order given");
    let id2c = id2.clone();
    peer.wait_for("a read receipt", DEADLINE, |log| {
        log.receipts
            .iter()
            .any(|r| r.kind.as_deref() == Some("read") && r.ids.contains(&id2c))
    })
    .await
    .expect("read receipt for the second message");

    // Proactive sends: from the runner, and over the web API.
    let sent = runner
        .send(&bot("support"), alice.phone(), "proactive")
        .await
        .unwrap();
    alice
        .wait_received("the proactive message", DEADLINE, |r| {
            r.iter()
                .any(|m| m.id == sent && m.text.as_deref() == Some("proactive"))
        })
        .await
        .unwrap();
    let e = runner
        .send(&bot("support"), "not a number", "x")
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE, "{e}");
    let e = runner
        .send(&bot("nobody"), alice.phone(), "x")
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), exit::NOT_FOUND, "{e}");
    let e = runner
        .send(&bot("fresh"), alice.phone(), "x")
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), exit::UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("not connected"), "{e}");

    let (base, token) =
        crate::runner_tests::web_with_token(&runner, &vault, wavault::web::START_GRACE).await;
    let (code, body) = post_json(
        format!("{base}/api/bots/support/messages"),
        &token,
        json!({"to": alice.phone(), "text": "via api"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let api_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .wait_received("the API message", DEADLINE, |r| {
            r.iter()
                .any(|m| m.id == api_id && m.text.as_deref() == Some("via api"))
        })
        .await
        .unwrap();
    for (path, body, want) in [
        ("support", json!({"to": "12", "text": "x"}), 400),
        ("fresh", json!({"to": alice.phone(), "text": "x"}), 503),
        ("nobody", json!({"to": alice.phone(), "text": "x"}), 404),
        ("support", json!({"text": "no recipient"}), 400),
    ] {
        let (code, text) =
            post_json(format!("{base}/api/bots/{path}/messages"), &token, body).await;
        assert_eq!(code, want, "{path}: {text}");
    }
    let (code, _) = post_json(
        format!("{base}/api/bots/support/messages"),
        "wrong-token",
        json!({"to": alice.phone(), "text": "x"}),
    )
    .await;
    assert_eq!(code, 401);

    // Counts: 2 in; out = 2 replies + 1 reaction + 2 sends.
    runner
        .wait_until(DEADLINE, |rows| {
            let m = &row(rows, "support").messages;
            m.inbound == 2 && m.outbound == 5 && m.queued == 0
        })
        .await
        .expect("status counts messages");
    let now = wavault::vault::now();
    let st = wavault::stats::collect(&vault, &[bot("support")], now - 3600, now).unwrap();
    assert_eq!((st[0].messages_in, st[0].messages_out), (2, 5));
    let (code, metrics) = get_text(format!("{base}/metrics"), &token).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("wavault_bot_messages_in_total{bot=\"support\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("wavault_bot_messages_out_total{bot=\"support\"} 5"));
    assert!(metrics.contains("wavault_bot_queue_depth{bot=\"support\"} 0"));
    let last = row(&runner.status().unwrap(), "support")
        .last_activity
        .unwrap();
    assert!(now - last < 60, "last_activity follows traffic");
    assert_clean_signal(&peer);
    runner.shutdown().await.unwrap();
}

pub(crate) async fn post_json(url: String, token: &str, body: serde_json::Value) -> (u16, String) {
    post_json_with(url, token, None, body).await
}

/// [`post_json`] with an `Idempotency-Key` header when `key` is given.
pub(crate) async fn post_json_with(
    url: String,
    token: &str,
    key: Option<&str>,
    body: serde_json::Value,
) -> (u16, String) {
    let (token, key) = (token.to_owned(), key.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(40)))
            .build()
            .into();
        let mut req = agent
            .post(&url)
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some(k) = &key {
            req = req.header("idempotency-key", k);
        }
        let mut resp = req.send(body.to_string()).expect("request");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

async fn get_text(url: String, token: &str) -> (u16, String) {
    let token = token.to_owned();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .get(&url)
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

/// Sends `texts` from `contact` and waits until the hook has accepted them.
async fn exchange(peer: &Peer, hook: &HookServer, contact: &str, bot_phone: &str, texts: &[&str]) {
    let c = peer.contact(contact);
    for t in texts {
        c.send_text(bot_phone, t).await.unwrap();
        let want = format!("echo: {t}");
        c.wait_received("the echo", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some(want.as_str()))
        })
        .await
        .unwrap();
    }
    let got = hook.texts_from(contact);
    assert!(got.ends_with(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_session_continues_across_a_restart_with_messages_sent_while_down() {
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let OneBot {
        dir: _dir, // dropping it would delete the vault
        vault,
        phone,
        peer,
        runner,
        cfg: c,
        ..
    } = one_bot(BotConfig::new(bot("cont")), 4_915_100_001_002, Some(&hook)).await;
    let contact = "4917600000002";
    exchange(&peer, &hook, contact, &phone, &["one", "two", "three"]).await;
    runner.shutdown().await.unwrap();

    // While the bot is away the contact writes on; the server holds it.
    let alice = peer.contact(contact);
    alice.send_text(&phone, "while down 1").await.unwrap();
    alice.send_text(&phone, "while down 2").await.unwrap();

    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "cont").await;
    hook.wait("the messages sent while down", DEADLINE, |s| {
        s.accepted.len() == 5
    })
    .await;
    exchange(&peer, &hook, contact, &phone, &["four", "five"]).await;
    assert_eq!(
        hook.texts_from(contact),
        [
            "one",
            "two",
            "three",
            "while down 1",
            "while down 2",
            "four",
            "five"
        ]
    );
    alice
        .wait_received("the echoes of the queued messages", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: while down 2"))
        })
        .await
        .unwrap();
    assert_one_session_and_clean(&alice, &peer).await;
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_down_then_up_delivers_everything_in_order_per_chat() {
    let hook = HookServer::start(Mode::Down).await;
    let OneBot {
        dir: _dir, // dropping it would delete the vault
        phone,
        peer,
        runner,
        ..
    } = one_bot(
        BotConfig::new(bot("outage")),
        4_915_100_001_003,
        Some(&hook),
    )
    .await;
    let mut events = runner.subscribe();
    let (alice, bob) = (peer.contact("4917600000003"), peer.contact("4917600000004"));
    for i in 1..=3 {
        alice.send_text(&phone, &format!("a{i}")).await.unwrap();
        bob.send_text(&phone, &format!("b{i}")).await.unwrap();
    }
    // All six are queued (and acknowledged to the server), the hook refuses.
    runner
        .wait_until(DEADLINE, |rows| {
            let m = &row(rows, "outage").messages;
            m.queued == 6 && m.hook_failures >= 2
        })
        .await
        .expect("six queued while the hook is down");
    assert!(hook.seen().accepted.is_empty());
    // Failures in a row raise one `hook_failing` alert.
    crate::runner_tests::next_event(&mut events, DEADLINE, "hook_failing alert", |e| match e {
        wavault::runner::RunnerEvent::Alert(a) if a.kind == "hook_failing" => Some(()),
        _ => None,
    })
    .await;
    hook.set_mode(Mode::Reply(String::new()));
    hook.wait("all six after the outage", DEADLINE, |s| {
        s.accepted.len() == 6
    })
    .await;
    assert_eq!(hook.texts_from(alice.phone()), ["a1", "a2", "a3"]);
    assert_eq!(hook.texts_from(bob.phone()), ["b1", "b2", "b3"]);
    let drained = runner
        .wait_until(DEADLINE, |rows| row(rows, "outage").messages.queued == 0)
        .await;
    if let Err(e) = drained {
        panic!(
            "queue not drained: {e}; left: {:?}; hook saw {:?}",
            runner.queued(&bot("outage")),
            hook.seen()
        );
    }
    assert_clean_signal(&peer);
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_hook_hits_its_time_limit_and_other_bots_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &[]);
    let hang = HookServer::start(Mode::Hang).await;
    let good = HookServer::start(Mode::Reply("echo: ".into())).await;
    let mut slow = BotConfig::new(bot("slow"));
    slow.webhook = Some(hang.url.clone());
    slow.extra.insert(keys::TIMEOUT_MS.into(), "300".into());
    vault.add_bot(&slow).unwrap();
    let mut fast = BotConfig::new(bot("fast"));
    fast.webhook = Some(good.url.clone());
    vault.add_bot(&fast).unwrap();
    let slow_phone = synth_paired(&vault, "slow", 4_915_100_001_004).await;
    let fast_phone = synth_paired(&vault, "fast", 4_915_100_001_005).await;
    let peer = Peer::new();
    let runner = Runner::start(vault.clone(), cfg(&peer)).unwrap();
    wait_connected(&runner, "slow").await;
    wait_connected(&runner, "fast").await;
    wait_prekeys(&peer, &slow_phone).await;
    wait_prekeys(&peer, &fast_phone).await;
    let alice = peer.contact("4917600000005");
    alice
        .send_text(&slow_phone, "to the slow bot")
        .await
        .unwrap();
    hang.wait("the hanging call", DEADLINE, |s| s.calls >= 1)
        .await;
    // While the slow bot's hook hangs, the other bot answers.
    alice
        .send_text(&fast_phone, "to the fast bot")
        .await
        .unwrap();
    alice
        .wait_received("the fast bot's reply", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: to the fast bot"))
        })
        .await
        .unwrap();
    // The slow call is cut at its limit and retried; the entry says why.
    runner
        .wait_until(DEADLINE, |rows| {
            row(rows, "slow").messages.hook_failures >= 2
        })
        .await
        .expect("the hanging hook times out, more than once");
    let q = runner.queued(&bot("slow")).unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0].last_error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        q[0].last_error
    );
    // The slow bot itself stays connected and can still send.
    let rows = runner.status().unwrap();
    assert_eq!(row(&rows, "slow").status, Status::Connected);
    let id = runner
        .send(&bot("slow"), alice.phone(), "still here")
        .await
        .unwrap();
    alice
        .wait_received("the slow bot's own send", DEADLINE, |r| {
            r.iter().any(|m| m.id == id)
        })
        .await
        .unwrap();
    assert_clean_signal(&peer);
    runner.shutdown().await.unwrap();
}

/// Child half of the SIGKILL test: runs the bot `kill` against the parent's
/// peer over loopback TCP, prints CONNECTED, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_runner_over_tcp() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_TCP_CHILD_DIR") else {
        return; // only meaningful when started by the parent test
    };
    let addr: std::net::SocketAddr = std::env::var("WAVAULT_E2E_TCP_PEER")
        .unwrap()
        .parse()
        .unwrap();
    let hook = std::env::var("WAVAULT_E2E_TCP_HOOK").unwrap();
    let vault = Vault::open(std::path::Path::new(&dir), PASS).expect("child opens vault");
    let mut c = cfg(&Peer::new());
    c.net = tcp_net(addr);
    c.hooks.target = Some(Target::Webhook(hook));
    let runner = Runner::start(vault, c).unwrap();
    wait_connected(&runner, "kill").await;
    // libtest has printed "test <name> ... " without a newline: start a fresh line.
    println!("\nCONNECTED");
    std::future::pending::<()>().await;
}

/// The strongest check of the vault: the bot's process is SIGKILLed while
/// messages wait in its queue (the hook is down); the server and the contact
/// live on. After a restart on the same vault the queued messages reach the
/// hook in order, their replies reach the contact, and the contact keeps
/// writing on the Signal session it began before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_queued_messages_then_restart_keeps_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["kill"]);
    let phone = synth_paired(&vault, "kill", 4_915_100_001_006).await;
    drop(vault);
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let addr_s = addr.to_string();
    let (child, _) = spawn_child(
        "messaging_tests::child_runner_over_tcp",
        &[
            ("WAVAULT_E2E_TCP_CHILD_DIR", dir.path().as_os_str()),
            ("WAVAULT_E2E_TCP_PEER", std::ffi::OsStr::new(&addr_s)),
            ("WAVAULT_E2E_TCP_HOOK", std::ffi::OsStr::new(&hook.url)),
        ],
        "CONNECTED",
        LOGIN_DEADLINE * 2,
    )
    .await;
    let kill_child = |mut child: std::process::Child| {
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    };
    wait_prekeys(&peer, &phone).await;
    let contact = "4917600000006";
    exchange(&peer, &hook, contact, &phone, &["before 1", "before 2"]).await;

    // Hook down: three messages are queued in the child's vault and
    // acknowledged to the server, which will not deliver them again.
    hook.set_mode(Mode::Down);
    let alice = peer.contact(contact);
    let mut ids = Vec::new();
    for t in ["queued 1", "queued 2", "queued 3"] {
        ids.push(alice.send_text(&phone, t).await.unwrap());
    }
    let acked = peer
        .wait_for("acks of the queued messages", DEADLINE, |log| {
            ids.iter().all(|id| log.acked(&phone, id))
        })
        .await;
    if let Err(e) = acked {
        kill_child(child);
        panic!("{e}");
    }
    kill_child(child);

    let vault = Vault::open(dir.path(), PASS).expect("vault reopens after SIGKILL");
    hook.set_mode(Mode::Reply("echo: ".into()));
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "kill").await;
    hook.wait("the queued messages after the restart", DEADLINE, |s| {
        s.accepted.len() == 5
    })
    .await;
    alice
        .wait_received("the echo of the last queued message", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: queued 3"))
        })
        .await
        .unwrap();
    exchange(&peer, &hook, contact, &phone, &["after 1", "after 2"]).await;
    assert_eq!(
        hook.texts_from(contact),
        ["before 1", "before 2", "queued 1", "queued 2", "queued 3", "after 1", "after 2"]
    );
    assert_one_session_and_clean(&alice, &peer).await;
    runner.shutdown().await.unwrap();
}

/// A full queue refuses: the message stays unacknowledged on the server
/// (and in whatsapp-rust's pending-inbound rows in the vault), an alert is
/// raised, and the message arrives once there is room and the connection
/// comes back: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_refuses_alerts_and_loses_nothing() {
    let hook = HookServer::start(Mode::Down).await;
    let mut small = BotConfig::new(bot("small"));
    small.webhook = Some(hook.url.clone());
    small.extra.insert(keys::QUEUE_MAX.into(), "2".into());
    let OneBot {
        dir: _dir, // dropping it would delete the vault
        phone,
        peer,
        runner,
        ..
    } = one_bot(small, 4_915_100_001_007, None).await;
    let mut events = runner.subscribe();
    let alice = peer.contact("4917600000007");
    let mut ids = Vec::new();
    for t in ["f1", "f2", "f3", "f4"] {
        ids.push(alice.send_text(&phone, t).await.unwrap());
    }
    runner
        .wait_until(DEADLINE, |rows| {
            let m = &row(rows, "small").messages;
            m.queued == 2 && m.refused_full >= 2
        })
        .await
        .expect("two queued, the rest refused");
    crate::runner_tests::next_event(&mut events, DEADLINE, "queue_full alert", |e| match e {
        wavault::runner::RunnerEvent::Alert(a) if a.kind == "queue_full" => Some(()),
        _ => None,
    })
    .await;
    let (p, queued_ids) = (phone.clone(), ids[..2].to_vec());
    let log = peer
        .wait_for("acks of the two queued", DEADLINE, |log| {
            queued_ids.iter().all(|id| log.acked(&p, id))
        })
        .await
        .expect("queued messages are acknowledged");
    assert!(
        !log.acked(&phone, &ids[2]) && !log.acked(&phone, &ids[3]),
        "refused messages stay unacknowledged on the server"
    );
    // Room again, and a new connection: the server delivers the rest.
    hook.set_mode(Mode::Reply(String::new()));
    hook.wait("the two queued", DEADLINE, |s| s.accepted.len() >= 2)
        .await;
    runner
        .wait_until(DEADLINE, |rows| row(rows, "small").messages.queued == 0)
        .await
        .expect("queue drained");
    assert!(peer.drop_connections_of(&phone) >= 1);
    hook.wait("all four", DEADLINE * 2, |s| s.accepted.len() == 4)
        .await;
    assert_eq!(hook.texts_from(alice.phone()), ["f1", "f2", "f3", "f4"]);
    let phone2 = phone.clone();
    let ids2 = ids.clone();
    peer.wait_for("every message acknowledged", DEADLINE, |log| {
        ids2.iter().all(|id| log.acked(&phone2, id))
    })
    .await
    .expect("acknowledged once queued");
    assert_clean_signal(&peer);
    runner.shutdown().await.unwrap();
}

/// `--on-message CMD`: the command gets the JSON on stdin, its output is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_hook_replies_through_its_output() {
    let scratch = tempfile::tempdir().unwrap();
    let seen = scratch.path().join("seen.jsonl");
    let mut b = BotConfig::new(bot("cmd"));
    b.extra.insert(
        keys::ON_MESSAGE.into(),
        format!(
            r#"read -r line; printf '%s\n' "$line" >> '{}'; printf '{{"reply":"command saw it, %s"}}' "$WAVAULT_BOT""#,
            seen.display()
        ),
    );
    let OneBot {
        dir: _dir, // dropping it would delete the vault
        phone,
        peer,
        runner,
        ..
    } = one_bot(b, 4_915_100_001_008, None).await;
    let alice = peer.contact("4917600000008");
    alice.send_text(&phone, "run it").await.unwrap();
    alice
        .wait_received("the command's reply", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("command saw it, cmd"))
        })
        .await
        .unwrap();
    let line = std::fs::read_to_string(&seen).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["text"], "run it");
    assert_eq!(v["bot"], "cmd");
    runner.shutdown().await.unwrap();
}

/// `wavault send` with no runner: the bot connects alone, sends, disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_once_connects_sends_and_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["once", "unpaired"]);
    let phone = synth_paired(&vault, "once", 4_915_100_001_009).await;
    let peer = Peer::new();
    let alice = peer.contact("4917600000009");
    let id = wavault::runner::send_once(
        vault.clone(),
        cfg(&peer),
        &bot("once"),
        &Outgoing::text(alice.phone(), "sent without run"),
        LOGIN_DEADLINE,
    )
    .await
    .unwrap();
    alice
        .wait_received("the message", DEADLINE, |r| {
            r.iter()
                .any(|m| m.id == id && m.text.as_deref() == Some("sent without run"))
        })
        .await
        .unwrap();
    peer.wait_for("the connection closed after the send", DEADLINE, |log| {
        log.open_connections() == 0
    })
    .await
    .expect("disconnected after the send");
    let s = wavault::status::collect(&vault).unwrap();
    let once = row(&s, "once");
    assert_eq!(once.status, Status::Disconnected);
    assert_eq!(once.messages.outbound, 1);
    assert!(peer.seen().logins(&phone).count() == 1);
    let e = wavault::runner::send_once(
        vault.clone(),
        cfg(&peer),
        &bot("unpaired"),
        &Outgoing::text(alice.phone(), "x"),
        LOGIN_DEADLINE,
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), exit::UNAVAILABLE);
    assert!(e.to_string().contains("not paired"), "{e}");
}
