//! A fleet of hosts on a real `nats-server -js` (issue 15): runners in child
//! processes, each with its own vault, over the parent's peer (TCP), with
//! `fleet` on and no hook, so every event goes to JetStream.
//!
//! Why it exists: the fleet's promises only hold against the real server and
//! real process deaths. Events reach the stream once per `Nats-Msg-Id`, in
//! order per chat, also when a host is killed with events queued; sends on
//! `<prefix>.send.<bot>` reach the contact from whichever host runs the bot;
//! and a bot never runs on two hosts at once, whatever happens: a second
//! host holding the same bot waits (`held_elsewhere`) until the first stops
//! cleanly or dies (the TTL), a host cut off from NATS stops its bots before
//! anyone else may take them, and with NATS unreachable at start no bot
//! starts at all. The peer records every accepted login (`overlap.rs`):
//! never two connections of one bot at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wavault::fleet::FleetConfig;
use wavault::passphrase::Passphrase;
use wavault::runner::Runner;
use wavault::vault::crypto::KdfParams;
use wavault::Vault;

use crate::messaging_tests::{cfg, wait_prekeys};
use crate::nats_server::{Bus, Event, NatsServer};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{new_vault, synth_paired, PASS};

/// Deadline of every wait (reached only on failure).
const DEADLINE: Duration = Duration::from_secs(60);
/// Host B's vault passphrase (host A's is `PASS`).
const PASS_B: &[u8] = b"the second host's vault passphrase";
const BACKUP_PASS: &str = "backup passphrase for the fleet";

/// The fleet configuration of a test host: owner TTL 3 s (heartbeat 1 s,
/// a host that could not renew for 2 s stops the bot), sends retried every
/// 500 ms, NATS retried at most every second.
fn fleet(url: &str, host: &str, prefix: &str) -> FleetConfig {
    let mut f = FleetConfig::new(url, host);
    f.prefix = prefix.into();
    f.owner_ttl = Duration::from_secs(3);
    f.send_retry = Duration::from_millis(500);
    f.connect_backoff_max = Duration::from_secs(1);
    f
}

/// Child half: a runner over the parent's peer (TCP) on the vault
/// `WAVAULT_E2E_FLEET_DIR`, in the fleet `WAVAULT_E2E_FLEET_NATS` as host
/// `WAVAULT_E2E_FLEET_HOST`, with no hook (its events go to NATS). Prints
/// READY, then its bots' start cases, QR codes, status changes and alerts
/// (`EVENT ...` lines); stops cleanly when its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_child_host() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_FLEET_DIR") else {
        return; // only meaningful when started by a parent test
    };
    if std::env::var_os("WAVAULT_E2E_TRACE").is_some() {
        wavault::logs::init(); // RUST_LOG picks what the child logs (stderr)
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let pass = var("WAVAULT_E2E_FLEET_PASS");
    let addr: std::net::SocketAddr = var("WAVAULT_E2E_FLEET_PEER").parse().unwrap();
    let vault = Vault::open(Path::new(&dir), pass.as_bytes()).expect("child opens its vault");
    let mut c = cfg(&Peer::new());
    c.net = crate::messaging_tests::tcp_net(addr);
    c.hooks.target = None;
    c.fleet = Some(fleet(
        &var("WAVAULT_E2E_FLEET_NATS"),
        &var("WAVAULT_E2E_FLEET_HOST"),
        &var("WAVAULT_E2E_FLEET_PREFIX"),
    ));
    c.backup_passphrase = Some(Arc::new(Passphrase::new(pass.into_bytes())));
    crate::child::serve(Runner::start(vault, c).unwrap()).await;
}

/// How to start (and start again) one host.
#[derive(Clone)]
struct HostSpec {
    name: &'static str,
    dir: PathBuf,
    pass: &'static [u8],
    peer: std::net::SocketAddr,
    nats: String,
    prefix: &'static str,
}

/// A child running [`fleet_child_host`].
type Host = crate::child::Child;

impl HostSpec {
    async fn start(&self) -> Host {
        let env = [
            ("WAVAULT_E2E_FLEET_DIR", self.dir.display().to_string()),
            (
                "WAVAULT_E2E_FLEET_PASS",
                std::str::from_utf8(self.pass).unwrap().to_owned(),
            ),
            ("WAVAULT_E2E_FLEET_PEER", self.peer.to_string()),
            ("WAVAULT_E2E_FLEET_NATS", self.nats.clone()),
            ("WAVAULT_E2E_FLEET_HOST", self.name.to_owned()),
            ("WAVAULT_E2E_FLEET_PREFIX", self.prefix.to_owned()),
        ];
        Host::spawn(self.name, "fleet_tests::fleet_child_host", &env).await
    }

    fn fleet(&self) -> FleetConfig {
        fleet(&self.nats, self.name, self.prefix)
    }
}

/// The real `wavault` binary on `dir` (through its runner's control
/// socket when a runner holds the vault).
fn wavault(dir: &Path, pass: &[u8]) -> tokio::process::Command {
    crate::child::wavault(dir, pass, BACKUP_PASS)
}

/// Runs `wavault --vault dir ARGS`, expects exit 0; its stdout.
async fn cli(dir: &Path, pass: &[u8], args: &[&str]) -> Vec<u8> {
    let out = tokio::time::timeout(DEADLINE, wavault(dir, pass).args(args).output())
        .await
        .expect("the CLI answers")
        .expect("spawn wavault");
    assert!(
        out.status.success(),
        "wavault {args:?}: {}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `wavault fleet status --json` (no vault): the owners bucket's rows.
async fn fleet_status(url: &str, prefix: &str) -> serde_json::Value {
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wavault"))
            .args([
                "fleet",
                "status",
                "--json",
                "--nats",
                url,
                "--nats-prefix",
                prefix,
            ])
            .env_remove("WAVAULT_PASSPHRASE")
            .env_remove("WAVAULT_NATS_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the CLI answers")
    .expect("spawn wavault");
    assert!(
        out.status.success(),
        "wavault fleet status: {}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Copies `bot` from vault `from` into vault `to` with `wavault export` and
/// `wavault restore` (live when runners hold the vaults).
async fn copy_bot(bot: &str, from: &Path, from_pass: &[u8], to: &Path, to_pass: &[u8]) {
    let file = from.parent().unwrap().join(format!("{bot}.backup"));
    let file = file.to_str().unwrap();
    cli(
        from,
        from_pass,
        &[
            "export",
            "--bot",
            bot,
            "-o",
            file,
            "--kdf-memory-mib",
            "1",
            "--kdf-iterations",
            "1",
            "--kdf-parallelism",
            "1",
        ],
    )
    .await;
    cli(to, to_pass, &["restore", file, "--json"]).await;
}

/// The owners bucket: bot → host.
async fn owners(f: &FleetConfig) -> HashMap<String, String> {
    wavault::fleet::owners(f)
        .await
        .expect("wavault::fleet::owners")
        .into_iter()
        .map(|o| (o.bot, o.host))
        .collect()
}

/// Waits until the owners bucket satisfies `pred`.
async fn wait_owners(
    f: &FleetConfig,
    what: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let o = owners(f).await;
        if pred(&o) {
            return o;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {DEADLINE:?} waiting for {what}; owners: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The message events of `bot` whose sender is `contact`.
fn messages_from<'a>(ev: &'a [Event], prefix: &str, bot: &str, contact: &str) -> Vec<&'a Event> {
    let subject = format!("{prefix}.events.{bot}.message");
    ev.iter()
        .filter(|e| e.subject == subject)
        .filter(|e| {
            e.body["sender"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{contact}@")))
        })
        .collect()
}

/// Every event has a `Nats-Msg-Id` (its event id), and no id is in the
/// stream twice (the server drops duplicates within its window; every
/// test here stays within it).
fn assert_ids_unique(ev: &[Event]) {
    let mut seen = HashSet::new();
    for e in ev {
        let Some(id) = e.msg_id.as_deref() else {
            assert!(
                !e.subject.contains(".events."),
                "event without Nats-Msg-Id: {e:?}"
            );
            continue;
        };
        if e.subject.contains(".events.") {
            assert!(id.starts_with("evt_"), "Nats-Msg-Id is the event id: {e:?}");
        }
        assert!(
            seen.insert(id.to_owned()),
            "Nats-Msg-Id {id} twice: {ev:#?}"
        );
    }
}

/// `texts` of the events, in stream order, and each message id once.
fn texts_once(ev: &[&Event]) -> Vec<String> {
    let mut ids = HashSet::new();
    for e in ev {
        let id = e.body["id"].as_str().expect("message id").to_owned();
        assert!(
            ids.insert(id.clone()),
            "message {id} published twice: {ev:#?}"
        );
    }
    ev.iter()
        .map(|e| e.body["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Two hosts, each with its own vault and bot; two contacts write to both
/// bots. The stream holds every message once, in order per chat; a send
/// published on `<prefix>.send.<bot>` reaches the contact from the host
/// running that bot, with its result on `<prefix>.sent.<bot>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_publish_each_message_once_in_order_and_send_for_their_own_bots() {
    const PREFIX: &str = "f1fleet";
    const N: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let phone_a = synth_paired(&new_vault(&dir_a, &["f1-a"]), "f1-a", 4_919_100_001_001).await;
    let vb = Vault::create(&dir_b, PASS_B, KdfParams::INSECURE_FOR_TESTS).unwrap();
    vb.add_bot(&wavault::vault::BotConfig::new("f1-b".parse().unwrap()))
        .unwrap();
    let phone_b = synth_paired(&vb, "f1-b", 4_919_100_001_002).await;
    drop(vb);

    let nats = NatsServer::start().await;
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let spec = |name, dir: &PathBuf, pass| HostSpec {
        name,
        dir: dir.clone(),
        pass,
        peer: addr,
        nats: nats.url(),
        prefix: PREFIX,
    };
    let (spec_a, spec_b) = (spec("hostA", &dir_a, PASS), spec("hostB", &dir_b, PASS_B));
    let (host_a, host_b) = tokio::join!(spec_a.start(), spec_b.start());
    host_a
        .wait_line("EVENT status f1-a connected", LOGIN_DEADLINE)
        .await;
    host_b
        .wait_line("EVENT status f1-b connected", LOGIN_DEADLINE)
        .await;
    wait_prekeys(&peer, &phone_a).await;
    wait_prekeys(&peer, &phone_b).await;
    let o = owners(&spec_a.fleet()).await;
    assert_eq!(o.get("f1-a").map(String::as_str), Some("hostA"), "{o:?}");
    assert_eq!(o.get("f1-b").map(String::as_str), Some("hostB"), "{o:?}");

    let c1 = peer.contact("4919100002001");
    let c2 = peer.contact("4919100002002");
    for i in 1..=N {
        for (c, bot_phone) in [
            (&c1, &phone_a),
            (&c2, &phone_a),
            (&c1, &phone_b),
            (&c2, &phone_b),
        ] {
            c.send_text(bot_phone, &format!("m{i:02}")).await.unwrap();
        }
    }
    let want: Vec<String> = (1..=N).map(|i| format!("m{i:02}")).collect();
    let bus = Bus::connect(&nats.url(), PREFIX).await;
    let pairs = [
        ("f1-a", c1.phone()),
        ("f1-a", c2.phone()),
        ("f1-b", c1.phone()),
        ("f1-b", c2.phone()),
    ];
    let ev = bus
        .wait_events("every message of both bots", DEADLINE, |ev| {
            pairs
                .iter()
                .all(|(b, c)| messages_from(ev, PREFIX, b, c).len() >= N)
        })
        .await;
    assert_ids_unique(&ev);
    for (b, c) in pairs {
        let m = messages_from(&ev, PREFIX, b, c);
        assert_eq!(texts_once(&m), want, "{b} from {c}, in order, once each");
        assert!(m.iter().all(|e| e.body["bot"] == b), "{m:#?}");
    }

    // Sends: each through the host that runs the bot.
    bus.send(
        "f1-a",
        &json!({"to": c1.phone(), "text": "hello from a", "idempotency_key": "k-a"}),
    )
    .await;
    bus.send(
        "f1-b",
        &json!({"to": c2.phone(), "text": "hello from b", "idempotency_key": "k-b"}),
    )
    .await;
    bus.send("f1-b", &json!({"to": "not a number", "text": "never"}))
        .await;
    for (c, bot_phone, text) in [
        (&c1, &phone_a, "hello from a"),
        (&c2, &phone_b, "hello from b"),
    ] {
        let got = c
            .wait_received(text, DEADLINE, |r| {
                r.iter().any(|m| m.text.as_deref() == Some(text))
            })
            .await
            .unwrap();
        let m = got
            .iter()
            .find(|m| m.text.as_deref() == Some(text))
            .unwrap();
        assert_eq!(&m.from_phone, bot_phone, "sent by its bot");
    }
    let ev = bus
        .wait_events("the send results", DEADLINE, |ev| {
            let a = ev
                .iter()
                .filter(|e| e.subject == "f1fleet.sent.f1-a")
                .count();
            let b = ev
                .iter()
                .filter(|e| e.subject == "f1fleet.sent.f1-b")
                .count();
            a >= 1 && b >= 2
        })
        .await;
    assert_ids_unique(&ev);
    let sent = |bot: &str| -> Vec<serde_json::Value> {
        ev.iter()
            .filter(|e| e.subject == format!("{PREFIX}.sent.{bot}"))
            .map(|e| e.body.clone())
            .collect()
    };
    let (sa, sb) = (sent("f1-a"), sent("f1-b"));
    assert_eq!(sa.len(), 1, "{sa:?}");
    assert_eq!(sa[0]["ok"], true, "{sa:?}");
    assert_eq!(sa[0]["bot"], "f1-a", "{sa:?}");
    assert_eq!(sa[0]["idempotency_key"], "k-a", "{sa:?}");
    assert!(
        sa[0]["id"].as_str().is_some_and(|s| !s.is_empty()),
        "{sa:?}"
    );
    let c1_got: Vec<String> = c1.received().iter().map(|m| m.id.clone()).collect();
    assert!(
        c1_got.contains(&sa[0]["id"].as_str().unwrap().to_owned()),
        "the result names the message sent: {sa:?} {c1_got:?}"
    );
    assert_eq!(sb.len(), 2, "{sb:?}");
    let ok: Vec<_> = sb.iter().filter(|s| s["ok"] == true).collect();
    let bad: Vec<_> = sb.iter().filter(|s| s["ok"] == false).collect();
    assert_eq!(
        (ok.len(), bad.len()),
        (1, 1),
        "one sent, one refused: {sb:?}"
    );
    assert_eq!(ok[0]["idempotency_key"], "k-b", "{sb:?}");
    assert!(
        bad[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{sb:?}"
    );
    assert!(
        !c2.received()
            .iter()
            .any(|m| m.text.as_deref() == Some("never")),
        "the refused send never went out"
    );

    let log = peer.seen();
    for p in [&phone_a, &phone_b] {
        assert_eq!(log.max_concurrent_logins(p), 1, "{:?}", log.login_spans);
    }
    tokio::join!(host_a.stop(), host_b.stop());
    // A clean stop releases the keys.
    wait_owners(&spec_a.fleet(), "the keys released", |o| o.is_empty()).await;
}

/// A host killed with events it could not publish yet (the stream refuses
/// new messages; the contact's messages are acknowledged to WhatsApp and
/// queued on the host) publishes them after its restart: every message
/// once, by message id and by `Nats-Msg-Id`, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_publishes_its_queued_events_after_restart_once_each() {
    const PREFIX: &str = "f2fleet";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let phone = synth_paired(&new_vault(&dir, &["f2-a"]), "f2-a", 4_919_100_001_011).await;
    let nats = NatsServer::start().await;
    let peer = Peer::new();
    let spec = HostSpec {
        name: "hostA",
        dir,
        pass: PASS,
        peer: peer.listen_tcp().await,
        nats: nats.url(),
        prefix: PREFIX,
    };
    let host = spec.start().await;
    host.wait_line("EVENT status f2-a connected", LOGIN_DEADLINE)
        .await;
    wait_prekeys(&peer, &phone).await;
    let bus = Bus::connect(&nats.url(), PREFIX).await;
    let contact = peer.contact("4919100002011");
    let text = |i: usize| format!("q{i:02}");
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(contact.send_text(&phone, &text(i)).await.unwrap());
    }
    bus.wait_events("the first messages", DEADLINE, |ev| {
        messages_from(ev, PREFIX, "f2-a", contact.phone()).len() >= 4
    })
    .await;

    // From now on the stream refuses: the next messages stay queued on the
    // host, acknowledged to WhatsApp (which will not deliver them again).
    bus.refuse_events(true).await;
    for i in 5..=10 {
        ids.push(contact.send_text(&phone, &text(i)).await.unwrap());
    }
    peer.wait_for("the host to acknowledge every message", DEADLINE, |log| {
        ids.iter().all(|id| log.acked(&phone, id))
    })
    .await
    .unwrap();
    let before = bus.try_events().await.unwrap();
    assert_eq!(
        messages_from(&before, PREFIX, "f2-a", contact.phone()).len(),
        4,
        "the later messages could not be published: {before:#?}"
    );
    host.kill().await;
    bus.refuse_events(false).await;

    let host = spec.start().await;
    let ev = bus
        .wait_events("every message after the restart", DEADLINE, |ev| {
            messages_from(ev, PREFIX, "f2-a", contact.phone()).len() >= 10
        })
        .await;
    assert_ids_unique(&ev);
    let m = messages_from(&ev, PREFIX, "f2-a", contact.phone());
    let want: Vec<String> = (1..=10).map(text).collect();
    assert_eq!(texts_once(&m), want, "none lost, none twice, in order");
    let got_ids: Vec<&str> = m.iter().map(|e| e.body["id"].as_str().unwrap()).collect();
    assert_eq!(got_ids, ids.iter().map(String::as_str).collect::<Vec<_>>());
    // Those acknowledged before the kill came from the host's queue, not
    // again from WhatsApp.
    let log = peer.seen();
    for id in &ids[4..] {
        assert_eq!(log.deliveries(&phone, id), 1, "{id} pushed once");
    }
    assert_eq!(
        log.max_concurrent_logins(&phone),
        1,
        "{:?}",
        log.login_spans
    );
    host.stop().await;
}

/// The same bot restored into a second host while the first runs it: the
/// second does not start it (`held_elsewhere`, an alert) until the first
/// stops cleanly, then takes it and logs in with no QR. Never two logins
/// of the bot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_held_by_one_host_starts_on_the_other_only_after_a_clean_stop() {
    const PREFIX: &str = "f3fleet";
    const BOT: &str = "f3-x";
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let phone = synth_paired(&new_vault(&dir_a, &[BOT]), BOT, 4_919_100_001_021).await;
    drop(Vault::create(&dir_b, PASS_B, KdfParams::INSECURE_FOR_TESTS).unwrap());
    let nats = NatsServer::start().await;
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let spec = |name, dir: &PathBuf, pass| HostSpec {
        name,
        dir: dir.clone(),
        pass,
        peer: addr,
        nats: nats.url(),
        prefix: PREFIX,
    };
    let (spec_a, spec_b) = (spec("hostA", &dir_a, PASS), spec("hostB", &dir_b, PASS_B));
    let (host_a, host_b) = tokio::join!(spec_a.start(), spec_b.start());
    host_a
        .wait_line(&format!("EVENT status {BOT} connected"), LOGIN_DEADLINE)
        .await;

    copy_bot(BOT, &dir_a, PASS, &dir_b, PASS_B).await;
    host_b
        .wait_line(&format!("EVENT status {BOT} held_elsewhere"), DEADLINE)
        .await;
    host_b
        .wait_line(&format!("EVENT alert {BOT} held_elsewhere"), DEADLINE)
        .await;
    let o = owners(&spec_a.fleet()).await;
    assert_eq!(o.get(BOT).map(String::as_str), Some("hostA"), "{o:?}");
    let rows = fleet_status(&nats.url(), PREFIX).await;
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["bot"], &rows[0]["host"]),
        (&json!(BOT), &json!("hostA")),
        "{rows:?}"
    );
    assert!(rows[0]["since"].as_i64().is_some_and(|t| t > 0), "{rows:?}");
    assert!(
        rows[0]["revision"].as_u64().is_some_and(|r| r > 0),
        "{rows:?}"
    );
    let log = peer.seen();
    assert_eq!(
        log.max_concurrent_logins(&phone),
        1,
        "never two logins of the bot at once: {:?}",
        log.login_spans
    );
    assert_eq!(
        log.logins(&phone).filter(|c| c.accepted).count(),
        1,
        "host B did not log in"
    );
    assert!(!host_b.printed(&format!("EVENT status {BOT} connected")));

    host_a.stop().await;
    host_b
        .wait_line(&format!("EVENT started {BOT} Reusing"), DEADLINE)
        .await;
    host_b
        .wait_line(&format!("EVENT status {BOT} connected"), DEADLINE)
        .await;
    wait_owners(&spec_b.fleet(), "host B to own the bot", |o| {
        o.get(BOT).map(String::as_str) == Some("hostB")
    })
    .await;
    let log = peer.seen();
    assert_eq!(log.logins(&phone).filter(|c| c.accepted).count(), 2);
    assert_eq!(
        log.max_concurrent_logins(&phone),
        1,
        "{:?}",
        log.login_spans
    );
    assert_eq!(log.registrations().count(), 0, "no QR");
    assert_eq!(log.refusals_of(&phone).count(), 0, "no refused login");
    assert!(
        !host_b.lines().iter().any(|l| l.starts_with("EVENT qr")),
        "{:?}",
        host_b.lines()
    );
    host_b.stop().await;
}

/// The owner of a bot is SIGKILLed: the other host takes the bot once the
/// key's TTL freed it. Then NATS stops for longer than the margin: the
/// running host stops the bot (no connection of it stays open), the other
/// cannot take it; once NATS is back one host runs it. Across the whole
/// test, never two logins of the bot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_frees_its_bot_after_the_ttl_and_a_nats_outage_stops_it() {
    const PREFIX: &str = "f4fleet";
    const BOT: &str = "f4-x";
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let phone = synth_paired(&new_vault(&dir_a, &[BOT]), BOT, 4_919_100_001_031).await;
    drop(Vault::create(&dir_b, PASS_B, KdfParams::INSECURE_FOR_TESTS).unwrap());
    // The same bot in both vaults before either host runs.
    copy_bot(BOT, &dir_a, PASS, &dir_b, PASS_B).await;
    let mut nats = NatsServer::start().await;
    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let spec = |name, dir: &PathBuf, pass| HostSpec {
        name,
        dir: dir.clone(),
        pass,
        peer: addr,
        nats: nats.url(),
        prefix: PREFIX,
    };
    let (spec_a, spec_b) = (spec("hostA", &dir_a, PASS), spec("hostB", &dir_b, PASS_B));
    let host_a = spec_a.start().await;
    let connected = format!("EVENT status {BOT} connected");
    host_a.wait_line(&connected, LOGIN_DEADLINE).await;
    let host_b = spec_b.start().await;
    host_b
        .wait_line(&format!("EVENT status {BOT} held_elsewhere"), DEADLINE)
        .await;

    host_a.kill().await;
    // A send published while the bot's owner is dead waits for the bot on
    // the host that runs it next.
    let bus = Bus::connect(&nats.url(), PREFIX).await;
    let contact = peer.contact("4919100002031");
    bus.send(
        BOT,
        &json!({"to": contact.phone(), "text": "after the kill", "idempotency_key": "k-kill"}),
    )
    .await;
    host_b
        .wait_line(&format!("EVENT started {BOT} Reusing"), DEADLINE)
        .await;
    host_b.wait_line(&connected, DEADLINE).await;
    let got = contact
        .wait_received("the send from host B", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("after the kill"))
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "sent once: {got:?}");
    assert_eq!(got[0].from_phone, phone);
    let ev = bus
        .wait_events("the send's result", DEADLINE, |ev| {
            ev.iter()
                .any(|e| e.subject == format!("{PREFIX}.sent.{BOT}"))
        })
        .await;
    let results: Vec<_> = ev
        .iter()
        .filter(|e| e.subject == format!("{PREFIX}.sent.{BOT}"))
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0].body["ok"], true, "{results:?}");
    assert_eq!(results[0].body["idempotency_key"], "k-kill", "{results:?}");
    let log = peer.seen();
    assert_eq!(
        log.max_concurrent_logins(&phone),
        1,
        "{:?}",
        log.login_spans
    );

    // Host A comes back: host B holds the bot.
    let host_a = spec_a.start().await;
    host_a
        .wait_line(&format!("EVENT status {BOT} held_elsewhere"), DEADLINE)
        .await;

    // NATS goes away for longer than the margin: host B cannot renew and
    // stops the bot; nobody runs it.
    let logins_before = peer.seen().logins(&phone).filter(|c| c.accepted).count();
    let connected_before = [host_a.count(&connected), host_b.count(&connected)];
    nats.stop().await;
    peer.wait_for("no connection of the bot", DEADLINE, |log| {
        log.open_logins(&phone) == 0
    })
    .await
    .unwrap();
    host_b
        .wait_line(&format!("EVENT alert {BOT} ownership_lost"), DEADLINE)
        .await;
    let log = peer.seen();
    assert_eq!(
        log.logins(&phone).filter(|c| c.accepted).count(),
        logins_before,
        "no host logged the bot in while NATS was down"
    );

    // NATS is back: one host takes the bot again.
    nats.restart().await;
    peer.wait_for("the bot to log in again", DEADLINE, |log| {
        log.logins(&phone).filter(|c| c.accepted).count() > logins_before
            && log.open_logins(&phone) == 1
    })
    .await
    .unwrap();
    let o = wait_owners(&spec_a.fleet(), "an owner again", |o| o.contains_key(BOT)).await;
    let i = usize::from(o[BOT] == "hostB");
    let (runs, waits) = [(&host_a, &host_b), (&host_b, &host_a)][i];
    runs.wait_count(&connected, connected_before[i]).await;
    assert_eq!(
        waits.count(&connected),
        connected_before[1 - i],
        "host {} did not run the bot: {:?}",
        waits.name,
        waits.lines()
    );

    let log = peer.seen();
    assert_eq!(
        log.max_concurrent_logins(&phone),
        1,
        "never two logins of the bot at once: {:?}",
        log.login_spans
    );
    assert_eq!(log.registrations().count(), 0, "no QR");
    assert_eq!(log.refusals_of(&phone).count(), 0, "no refused login");
    tokio::join!(host_a.stop(), host_b.stop());
}

/// NATS unreachable at start: no bot starts (who owns it cannot be known),
/// the status and an alert say why; once NATS answers, the bots start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_unreachable_at_start_no_bot_starts_until_it_answers() {
    const PREFIX: &str = "f5fleet";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    let v = new_vault(&dir, &["f5-a", "f5-b"]);
    let phone_a = synth_paired(&v, "f5-a", 4_919_100_001_041).await;
    let phone_b = synth_paired(&v, "f5-b", 4_919_100_001_042).await;
    drop(v);
    let mut nats = NatsServer::reserve().await;
    let peer = Peer::new();
    let spec = HostSpec {
        name: "hostA",
        dir: dir.clone(),
        pass: PASS,
        peer: peer.listen_tcp().await,
        nats: nats.url(),
        prefix: PREFIX,
    };
    let host = spec.start().await;
    for b in ["f5-a", "f5-b"] {
        host.wait_line(&format!("EVENT status {b} fleet_unreachable"), DEADLINE)
            .await;
    }
    let reason = host
        .wait_for("a status reason", |l| {
            l.starts_with("EVENT status-reason f5-a fleet_unreachable: ")
        })
        .await;
    assert!(
        reason.len() > "EVENT status-reason f5-a fleet_unreachable: ".len(),
        "the status says why: {reason}"
    );
    let alert = host
        .wait_for("a fleet_unreachable alert", |l| {
            l.starts_with("EVENT alert-reason ") && l.contains(" fleet_unreachable: ")
        })
        .await;
    assert!(
        alert.to_lowercase().contains("nats"),
        "the alert says why: {alert}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&cli(&dir, PASS, &["status", "--json"]).await).unwrap();
    for b in ["f5-a", "f5-b"] {
        let row = status
            .as_array()
            .and_then(|r| r.iter().find(|r| r["bot"] == b))
            .unwrap_or_else(|| panic!("no row for {b} in {status}"));
        assert_eq!(row["status"], "fleet_unreachable", "{status}");
        assert_eq!(row["host"], "hostA", "the host id in status: {status}");
        assert!(
            row["last_connection_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("nats")),
            "the status says why: {status}"
        );
    }
    let log = peer.seen();
    assert_eq!(
        log.logins_total(),
        0,
        "no bot logged in: {:?}",
        log.connections
    );

    nats.restart().await;
    for b in ["f5-a", "f5-b"] {
        host.wait_line(&format!("EVENT status {b} connected"), DEADLINE)
            .await;
    }
    let log = peer.seen();
    for p in [&phone_a, &phone_b] {
        assert_eq!(log.logins(p).filter(|c| c.accepted).count(), 1, "{p}");
    }
    let o = owners(&spec.fleet()).await;
    assert_eq!(o.get("f5-a").map(String::as_str), Some("hostA"), "{o:?}");
    assert_eq!(o.get("f5-b").map(String::as_str), Some("hostA"), "{o:?}");
    host.stop().await;
}
