//! Moving a bot between two live hosts while a contact keeps writing:
//! `wavault export --move -o - | wavault restore -` between two runners in
//! two child processes (the peer's TCP bridge), each holding its own vault,
//! both answering the CLI through their control sockets.
//!
//! Why it exists: this is the promise of live operations (issue 13). A move
//! loses no message: those the old host acknowledged but had not handed to
//! its hook travel in the backup and are delivered by the new host; those
//! sent while the bot is between hosts wait, unacknowledged, at WhatsApp for
//! the new host. Order per chat holds, no QR and no new registration are
//! needed, the contact keeps its one Signal session, and the bot ends up
//! disabled on the old host and connected on the new one.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use wavault::messaging::hook::Target;
use wavault::passphrase::Passphrase;
use wavault::runner::Runner;
use wavault::vault::crypto::KdfParams;
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{cfg, wait_prekeys};
use crate::peer::{attr, Peer, PeerLog, LOGIN_DEADLINE};
use crate::runner_tests::{new_vault, synth_paired, PASS};

/// Deadline of every wait (reached only on failure).
const DEADLINE: Duration = Duration::from_secs(60);
const BOT: &str = "ventas-mx";
/// Host B's vault passphrase (host A's is `PASS`).
const PASS_B: &[u8] = b"the new host's vault passphrase";
const BACKUP_PASS: &str = "backup passphrase for the move";
/// The contact writes this many messages, one every 20 ms.
const MESSAGES: usize = 200;
/// From this message on host A's hook refuses: messages queue on host A
/// (acknowledged to WhatsApp, not delivered) and must travel in the backup.
const HOOK_A_DOWN_AT: usize = 61;
/// The contact waits here for the move to begin (it has begun long before,
/// unless the machine is very slow)...
const MOVE_BY: usize = 151;
/// ... and here for the bot to have left host A, so that messages are left
/// to send while the bot is between hosts.
const LEFT_BY: usize = 191;

fn text(i: usize) -> String {
    format!("m{i:03}")
}

/// Child half: a runner over the parent's peer (TCP) on the vault
/// `WAVAULT_E2E_MOVE_DIR`, its control socket on and its default hook the
/// parent's. Prints READY, then its bots' start cases, QR codes and status
/// changes (`EVENT ...` lines); stops cleanly when its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_host() {
    let Some(dir) = std::env::var_os("WAVAULT_E2E_MOVE_DIR") else {
        return; // only meaningful when started by the parent test
    };
    if std::env::var_os("WAVAULT_E2E_TRACE").is_some() {
        wavault::logs::init(); // RUST_LOG picks what the child logs (stderr)
    }
    let pass = std::env::var("WAVAULT_E2E_MOVE_PASS").unwrap();
    let addr: std::net::SocketAddr = std::env::var("WAVAULT_E2E_MOVE_PEER")
        .unwrap()
        .parse()
        .unwrap();
    let hook = std::env::var("WAVAULT_E2E_MOVE_HOOK").unwrap();
    let vault = Vault::open(Path::new(&dir), pass.as_bytes()).expect("child opens its vault");
    let mut c = cfg(&Peer::new());
    c.net = crate::messaging_tests::tcp_net(addr);
    c.hooks.target = Some(Target::Webhook(hook));
    c.backup_passphrase = Some(Arc::new(Passphrase::new(pass.into_bytes())));
    assert!(c.control_socket, "the CLI reaches this runner through it");
    crate::child::serve(Runner::start(vault, c).unwrap()).await;
}

/// A child running [`child_host`].
type Host = crate::child::Child;

/// Starts [`child_host`] on `dir`, its default hook `hook`.
async fn start_host(
    name: &'static str,
    dir: &Path,
    pass: &[u8],
    peer: std::net::SocketAddr,
    hook: &HookServer,
) -> Host {
    let env = [
        ("WAVAULT_E2E_MOVE_DIR", dir.display().to_string()),
        (
            "WAVAULT_E2E_MOVE_PASS",
            std::str::from_utf8(pass).unwrap().to_owned(),
        ),
        ("WAVAULT_E2E_MOVE_PEER", peer.to_string()),
        ("WAVAULT_E2E_MOVE_HOOK", hook.url.clone()),
    ];
    Host::spawn(name, "move_tests::child_host", &env).await
}

/// The real `wavault` binary on `dir`; a runner holds that vault, so the
/// command is done by it, through its control socket.
fn wavault(dir: &Path, pass: &[u8]) -> tokio::process::Command {
    crate::child::wavault(dir, pass, BACKUP_PASS)
}

/// Runs `wavault --vault dir ARGS --json`, expects exit 0, parses stdout.
async fn cli_json(dir: &Path, pass: &[u8], args: &[&str]) -> serde_json::Value {
    let out = tokio::time::timeout(
        DEADLINE,
        wavault(dir, pass).args(args).arg("--json").output(),
    )
    .await
    .expect("the CLI answers")
    .expect("spawn wavault");
    assert!(
        out.status.success(),
        "wavault {args:?}: {}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The row of `bot` in a JSON array keyed by `key`.
fn row_of<'a>(rows: &'a serde_json::Value, key: &str, bot: &str) -> &'a serde_json::Value {
    rows.as_array()
        .and_then(|r| r.iter().find(|r| r[key] == bot))
        .unwrap_or_else(|| panic!("no row for {bot} in {rows}"))
}

/// Ids of the messages a connection in `conns` acknowledged (a non-retry
/// receipt naming it, or an `<ack class="message">`).
fn acked_on(log: &PeerLog, conns: &HashSet<u64>) -> HashSet<String> {
    let mut ids = HashSet::new();
    for r in &log.receipts {
        if conns.contains(&r.conn) && r.kind.as_deref() != Some("retry") {
            ids.extend(r.ids.iter().cloned());
        }
    }
    for s in &log.received {
        if conns.contains(&s.conn)
            && s.node.tag == "ack"
            && attr(&s.node, "class").as_deref() == Some("message")
        {
            ids.extend(attr(&s.node, "id"));
        }
    }
    ids
}

/// Every push of contact message `id` to a bot: (connection, from the
/// offline queue at login).
fn pushes(log: &PeerLog, id: &str) -> Vec<(u64, bool)> {
    log.sent
        .iter()
        .filter(|s| s.node.tag == "message" && attr(&s.node, "id").as_deref() == Some(id))
        .map(|s| (s.conn, attr(&s.node, "offline").is_some()))
        .collect()
}

/// Where each message went: pushes (connection, offline), acks, hooks.
fn diagnose(
    log: &PeerLog,
    phone: &str,
    a_conns: &HashSet<u64>,
    sent: &[String],
    hook_a: &HookServer,
    hook_b: &HookServer,
    contact: &str,
) -> String {
    let conns: Vec<String> = log
        .logins(phone)
        .map(|c| format!("#{} accepted={} open={}", c.id, c.accepted, c.open))
        .collect();
    let all: HashSet<u64> = log.logins(phone).map(|c| c.id).collect();
    let others: HashSet<u64> = all.difference(a_conns).copied().collect();
    let (acked_a, acked_b) = (acked_on(log, a_conns), acked_on(log, &others));
    let (ha, hb) = (hook_a.texts_from(contact), hook_b.texts_from(contact));
    let mut out = format!("logins of {phone}: {conns:?}; host A's: {a_conns:?}\n");
    for c in &all {
        let got: Vec<String> = log
            .received
            .iter()
            .filter(|s| s.conn == *c)
            .map(|s| {
                let sub = s
                    .node
                    .children()
                    .and_then(|k| k.first())
                    .map(|k| k.tag.to_string());
                format!("{} {:?} {:?}", s.node.tag, attr(&s.node, "xmlns"), sub)
            })
            .take(40)
            .collect();
        out += &format!("received on #{c}: {got:?}\n");
    }
    for (i, id) in sent.iter().enumerate() {
        let t = text(i + 1);
        out += &format!(
            "{t} {id}: pushed {:?} acked A={} B={} hook A={} B={}\n",
            pushes(log, id),
            acked_a.contains(id),
            acked_b.contains(id),
            ha.contains(&t),
            hb.contains(&t)
        );
    }
    out
}

/// First occurrences, in order.
fn firsts(texts: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    texts
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_move_through_a_pipe_loses_no_message_and_needs_no_qr() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = new_vault(&dir_a, &[BOT]);
    let phone = synth_paired(&a, BOT, 4_915_100_003_001).await;
    drop(a);
    drop(Vault::create(&dir_b, PASS_B, KdfParams::INSECURE_FOR_TESTS).unwrap());

    let peer = Peer::new();
    let addr = peer.listen_tcp().await;
    let hook_a = HookServer::start(Mode::Reply("echo: ".into())).await;
    let hook_b = HookServer::start(Mode::Reply(String::new())).await;
    let (host_a, host_b) = tokio::join!(
        start_host("A", &dir_a, PASS, addr, &hook_a),
        start_host("B", &dir_b, PASS_B, addr, &hook_b),
    );
    host_a
        .wait_line(&format!("EVENT status {BOT} connected"), LOGIN_DEADLINE)
        .await;
    wait_prekeys(&peer, &phone).await;

    // The contact begins its Signal session with host A, both ways.
    let contact = peer.contact("4917600004001");
    contact.send_text(&phone, "hello").await.unwrap();
    contact
        .wait_received("host A's echo", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some("echo: hello"))
        })
        .await
        .unwrap();
    hook_a.set_mode(Mode::Reply(String::new()));

    // The contact writes MESSAGES messages, one every 20 ms, through the
    // whole move. From message HOOK_A_DOWN_AT on, host A's hook refuses.
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    // Logins of the bot's phone when the move began.
    let (moving_tx, moving_rx) = watch::channel(None::<usize>);
    // The first message sent after the bot left host A.
    let (left_tx, left_rx) = watch::channel(None::<usize>);
    let sender = tokio::spawn({
        let (contact, phone, hook_a, ids) =
            (contact.clone(), phone.clone(), hook_a.clone(), ids.clone());
        let (mut moving_rx, mut left_rx) = (moving_rx.clone(), left_rx);
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 1..=MESSAGES {
                match i {
                    HOOK_A_DOWN_AT => hook_a.set_mode(Mode::Down),
                    MOVE_BY => {
                        tokio::time::timeout(DEADLINE, moving_rx.wait_for(Option::is_some))
                            .await
                            .expect("the move begins")
                            .unwrap();
                    }
                    LEFT_BY => {
                        tokio::time::timeout(DEADLINE, left_rx.wait_for(Option::is_some))
                            .await
                            .expect("the bot leaves host A")
                            .unwrap();
                    }
                    _ => {}
                }
                tick.tick().await;
                let id = contact.send_text(&phone, &text(i)).await.expect("send");
                ids.lock().unwrap().push(id);
            }
        }
    });
    // Once the move has begun: when the bot has left host A (its connection
    // closed; or host B logged in, which comes later still), the message
    // after the one that may be in flight is sent between hosts.
    let watcher = tokio::spawn({
        let (peer, phone, ids, mut moving_rx) =
            (peer.clone(), phone.clone(), ids.clone(), moving_rx);
        async move {
            let n = tokio::time::timeout(DEADLINE, moving_rx.wait_for(Option::is_some))
                .await
                .expect("the move begins")
                .unwrap()
                .unwrap();
            peer.wait_for("the bot to leave host A", DEADLINE, |log| {
                log.logins(&phone).all(|c| !c.open) || log.logins(&phone).count() > n
            })
            .await
            .expect("the bot leaves host A");
            let between = ids.lock().unwrap().len() + 2;
            left_tx.send_replace(Some(between));
            between
        }
    });

    // Host A has acknowledged at least one message its hook refused: it is
    // queued there, and WhatsApp will not deliver it again.
    peer.wait_for("host A to queue a message", DEADLINE, |log| {
        let ids = ids.lock().unwrap();
        ids.iter()
            .skip(HOOK_A_DOWN_AT - 1)
            .any(|id| log.acked(&phone, id))
    })
    .await
    .expect("a message queued on host A");
    let before = peer.seen();
    let a_conns: HashSet<u64> = before.logins(&phone).map(|c| c.id).collect();
    moving_tx.send_replace(Some(a_conns.len()));

    // The move: a real pipe between the two commands, each talking to its
    // host's runner.
    let mut export = wavault(&dir_a, PASS)
        .args(["export", "--bot", BOT, "--move", "-o", "-"])
        .args(["--kdf-memory-mib", "1", "--kdf-iterations", "1"])
        .args(["--kdf-parallelism", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn export");
    let pipe: Stdio = export.stdout.take().unwrap().try_into().unwrap();
    let restore = wavault(&dir_b, PASS_B)
        .args(["restore", "-", "--json"])
        .stdin(pipe)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    let (exported, restored) = tokio::time::timeout(DEADLINE, async {
        tokio::join!(export.wait_with_output(), restore.wait_with_output())
    })
    .await
    .expect("the move finishes");
    let (exported, restored) = (exported.unwrap(), restored.unwrap());
    let export_err = String::from_utf8_lossy(&exported.stderr);
    assert!(exported.status.success(), "export: {export_err}");
    assert!(
        restored.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(
        export_err.contains(&format!("moved: {BOT} stopped and disabled here")),
        "{export_err}"
    );
    let r: serde_json::Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert_eq!(r["live"], true, "host B's runner did the restore: {r}");
    assert_eq!(r["started"], serde_json::json!([BOT]), "{r}");

    tokio::time::timeout(DEADLINE, sender)
        .await
        .expect("the contact finishes writing")
        .expect("the contact's task");
    let between = watcher.await.expect("the watcher's task");
    assert!(between <= MESSAGES);
    let sent = ids.lock().unwrap().clone();
    assert_eq!(sent.len(), MESSAGES);

    // Every message reaches a hook: A's before the move, B's after.
    let mut want = vec!["hello".to_string()];
    want.extend((1..=MESSAGES).map(text));
    let got_a = hook_a.texts_from(contact.phone());
    let all = |b: &HookServer| -> Vec<String> {
        got_a
            .iter()
            .cloned()
            .chain(b.texts_from(contact.phone()))
            .collect()
    };
    let wanted: HashSet<String> = want.iter().cloned().collect();
    let c_phone = contact.phone().to_owned();
    // In a task: on timeout its panic is caught here and the test says
    // where each message went.
    let every = tokio::spawn({
        let (hook_b, got_a) = (hook_b.clone(), got_a.clone());
        async move {
            hook_b
                .wait("every message, across both hosts", DEADLINE, |s| {
                    let b = s.accepted.iter().filter_map(|v| {
                        let from_contact = v["sender"]
                            .as_str()
                            .is_some_and(|x| x.starts_with(&format!("{c_phone}@")));
                        from_contact.then(|| v["text"].as_str().unwrap_or_default().to_owned())
                    });
                    let have: HashSet<String> = got_a.iter().cloned().chain(b).collect();
                    wanted.is_subset(&have)
                })
                .await;
        }
    })
    .await;
    if every.is_err() {
        panic!(
            "not every message reached a hook within {DEADLINE:?}:\n{}",
            diagnose(
                &peer.seen(),
                &phone,
                &a_conns,
                &sent,
                &hook_a,
                &hook_b,
                contact.phone()
            ) + &format!(
                "\nhost A: {:?}\nhost B: {:?}",
                host_a.lines(),
                host_b.lines()
            )
        );
    }

    // Host B answers on the same Signal session.
    hook_b.set_mode(Mode::Reply("echo: ".into()));
    contact.send_text(&phone, "after the move").await.unwrap();
    contact
        .wait_received("host B's echo", DEADLINE, |r| {
            r.iter()
                .any(|m| m.text.as_deref() == Some("echo: after the move"))
        })
        .await
        .unwrap();
    want.push("after the move".into());
    assert_eq!(
        firsts(all(&hook_b)),
        want,
        "each message reaches a hook at least once, first occurrences in send order"
    );

    let log = peer.seen();
    // Queued on host A (acknowledged there, refused by its hook), carried
    // in the backup: host B delivered them, WhatsApp never pushed them again.
    let a_acked = acked_on(&log, &a_conns);
    let got_b: HashSet<String> = hook_b.texts_from(contact.phone()).into_iter().collect();
    let carried: Vec<(String, &String)> = (1..=MESSAGES)
        .map(text)
        .zip(&sent)
        .filter(|(t, id)| a_acked.contains(*id) && !got_a.contains(t))
        .collect();
    assert!(
        !carried.is_empty(),
        "no message was queued on host A at the move"
    );
    for (t, id) in &carried {
        assert!(got_b.contains(t), "{t}, queued on host A, reached host B");
        let p = pushes(&log, id);
        assert!(
            p.iter().all(|(c, _)| a_conns.contains(c)),
            "{t} came in the backup, not again from WhatsApp: pushed on {p:?}, host A's connections {a_conns:?}"
        );
    }
    // Sent between hosts: WhatsApp held it (unacknowledged) and gave it to
    // host B from its offline queue at login.
    let p = pushes(&log, &sent[between - 1]);
    assert!(
        matches!(p.first(), Some((c, true)) if !a_conns.contains(c)),
        "{} (sent once the bot had left host A) was first pushed to host B from the offline queue: {p:?}, host A's connections {a_conns:?}",
        text(between)
    );

    println!(
        "moved with {} message(s) queued on host A ({}..{}); {} sent between hosts; hooks saw A {} B {}",
        carried.len(),
        carried[0].0,
        carried[carried.len() - 1].0,
        text(between),
        got_a.len(),
        hook_b.texts_from(contact.phone()).len()
    );

    // No QR, no new registration, no refused login: host B reused the
    // restored credentials.
    assert_eq!(log.registrations().count(), 0, "no registration");
    assert!(log.pairings.is_empty(), "no pairing");
    assert_eq!(log.refusals_of(&phone).count(), 0, "no refused login");
    assert!(
        log.logins(&phone).filter(|c| c.accepted).count() > a_conns.len(),
        "host B logged in with the paired phone"
    );
    for h in [&host_a, &host_b] {
        let qr: Vec<_> = h
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("EVENT qr") || l.starts_with("EVENT pair-code"))
            .collect();
        assert!(qr.is_empty(), "host {} showed {qr:?}", h.name);
    }
    host_b
        .wait_line(&format!("EVENT started {BOT} Reusing"), DEADLINE)
        .await;

    // One Signal session, nothing failed to decrypt, no retry.
    assert_eq!(contact.sessions_started().await, 1, "one Signal session");
    assert!(log.decrypt_errors.is_empty(), "{:?}", log.decrypt_errors);
    let retries: Vec<_> = log.retry_receipts().collect();
    assert!(retries.is_empty(), "retry receipts: {retries:?}");

    // What each host says, through its runner.
    let bots_a = cli_json(&dir_a, PASS, &["bot", "list"]).await;
    assert_eq!(row_of(&bots_a, "id", BOT)["enabled"], false, "{bots_a}");
    let status_a = cli_json(&dir_a, PASS, &["status"]).await;
    assert_eq!(
        row_of(&status_a, "bot", BOT)["status"],
        "disconnected",
        "{status_a}"
    );
    let status_b = cli_json(&dir_b, PASS_B, &["status"]).await;
    let row_b = row_of(&status_b, "bot", BOT);
    assert_eq!(row_b["status"], "connected", "{status_b}");
    assert_eq!(row_b["enabled"], true, "{status_b}");
    assert_eq!(row_b["messages"]["queued"], 0, "{status_b}");

    tokio::join!(host_a.stop(), host_b.stop());
}
