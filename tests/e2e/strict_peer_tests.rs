//! The peer is as strict as the server it stands for, and wavault reacts
//! to each of the server's refusals as documented.
//!
//! Why it exists: a login test only proves a restored or restarted bot kept
//! its keys if the server checks them. The peer remembers the Noise static
//! key each device registered at pairing (or was seeded with by
//! `tests/support/paired.rs`) and refuses another with
//! `<failure reason="401"/>`, as WhatsApp does (the device must pair again).
//! It answers requests it does not implement with an error, never with an
//! empty success, and it can ban a number (402), declare the client outdated
//! (405) or hand the session to another client (`replaced`): the runner must
//! stop retrying, set the permanent status and raise the right alert.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wavault::runner::{Runner, RunnerEvent};
use wavault::sessions::Status;
use wavault::Vault;
use whatsapp_rust::request::{InfoQuery, IqError};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::types::events::{ConnectFailureReason, Event};
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::Jid;

use crate::peer::{is_connected, is_logged_out, BotOptions, Peer, Refusal};
use crate::runner_tests::{bot, config, new_vault, next_event, synth_paired};

/// Deadline of every wait here: generous, since under a loaded CI (two test
/// threads on two cores) starting several clients at once has taken longer
/// than the peer's `LOGIN_DEADLINE`; reached only on failure.
const DEADLINE: Duration = Duration::from_secs(60);

/// Gives the device stored in `backend` a fresh Noise key pair (everything
/// else stays as paired).
async fn replace_noise_key(backend: &dyn Backend) {
    let mut device = backend
        .load()
        .await
        .expect("device loads")
        .expect("a device record");
    let old = device.noise_key.public_key;
    device.noise_key = KeyPair::generate(&mut rand::rng());
    assert_ne!(device.noise_key.public_key, old);
    backend.save(&device).await.expect("device saves");
}

/// A companion paired through the peer logs in again with its keys; once
/// its Noise key is replaced the peer refuses it with 401 and the client
/// reports `LoggedOut` (must pair again), never `Connected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_noise_key_was_replaced_after_pairing_is_refused() {
    let peer = Peer::new();
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let (bot, pairing) = peer
        .start_paired_bot(backend.clone())
        .await
        .expect("pairs and connects");
    bot.stop().await;
    peer.wait_for("the socket closed", DEADLINE, |log| {
        log.open_connections() == 0
    })
    .await
    .unwrap();

    // Control: unchanged, the same store logs in.
    let options = BotOptions {
        auto_pair: false,
        ..BotOptions::default()
    };
    let bot = peer
        .start_bot(backend.clone(), options.clone())
        .await
        .unwrap();
    bot.events
        .wait_for("Connected with the paired key", DEADLINE, is_connected)
        .await
        .expect("the unchanged store logs in");
    bot.stop().await;
    let before = peer
        .wait_for("the socket closed", DEADLINE, |log| {
            log.open_connections() == 0
        })
        .await
        .unwrap();
    assert!(before.refusals_of(&pairing.phone).next().is_none());

    replace_noise_key(&*backend).await;
    let bot = peer.start_bot(backend, options).await.unwrap();
    let out = bot
        .events
        .wait_for("LoggedOut after the key swap", DEADLINE, is_logged_out)
        .await
        .expect("the peer refuses the login");
    let Event::LoggedOut(out) = &*out else {
        unreachable!()
    };
    assert!(out.on_connect, "refused at login: {out:?}");
    assert_eq!(out.reason, ConnectFailureReason::LoggedOut);
    assert_eq!(bot.events.count(is_connected), 0, "no Connected");
    let seen = peer.seen();
    let refusals: Vec<Refusal> = seen.refusals_of(&pairing.phone).collect();
    assert_eq!(refusals, [Refusal::WrongNoiseKey], "{refusals:?}");
    let new_logins = &seen.connections[before.connections.len()..];
    assert!(new_logins.iter().all(|c| !c.accepted), "{new_logins:?}");
    bot.stop().await;
}

/// The same through the product: of two bots written as paired into one
/// vault, the one whose Noise key was replaced is refused (`logged_out`,
/// alert, no retry) while the other connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_a_vault_bot_with_a_replaced_noise_key_is_logged_out_the_other_connects() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["kept", "swapped"]);
    let kept = synth_paired(&vault, "kept", 4_915_100_002_101).await;
    let swapped = synth_paired(&vault, "swapped", 4_915_100_002_102).await;
    replace_noise_key(&*vault.bot_backend(&bot("swapped")).unwrap()).await;
    vault.flush().unwrap();

    let peer = Peer::new();
    let runner = Runner::start(vault.clone(), config(&peer)).unwrap();
    let mut rx = runner.subscribe();
    let alert = next_event(&mut rx, DEADLINE, "alert", |e| match e {
        RunnerEvent::Alert(a) => Some(a.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (alert.bot.as_str(), alert.kind.as_str()),
        ("swapped", "logged_out")
    );
    let rows = runner
        .wait_until(DEADLINE, |rows| {
            rows.iter()
                .any(|r| r.bot == "kept" && r.status == Status::Connected)
                && rows
                    .iter()
                    .any(|r| r.bot == "swapped" && r.status == Status::LoggedOut)
        })
        .await
        .expect("kept connects, swapped is logged out");
    assert_eq!(rows.len(), 2);
    let seen = peer.seen();
    assert!(seen.logins(&kept).any(|c| c.accepted));
    assert!(seen.logins(&swapped).all(|c| !c.accepted));
    assert_eq!(
        seen.refusals_of(&swapped).collect::<Vec<_>>(),
        [Refusal::WrongNoiseKey]
    );
    runner.shutdown().await.unwrap();
}

/// A request the peer does not implement gets the server's 501 error, not
/// an empty success; a login and its start-up sequence use none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_iq_gets_a_501_error() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["asker"]);
    synth_paired(&vault, "asker", 4_915_100_002_003).await;
    let peer = Peer::new();
    let backend: Arc<dyn Backend> = vault.bot_backend(&bot("asker")).unwrap();
    let options = BotOptions {
        push_name: "wavault-test".into(),
        auto_pair: false,
    };
    let running = peer.start_bot(backend, options).await.unwrap();
    running
        .events
        .wait_for("Connected", DEADLINE, is_connected)
        .await
        .expect("logs in");
    assert!(
        peer.seen().unsupported.is_empty(),
        "{:?}",
        peer.seen().unsupported
    );
    let client = running.client().expect("client");
    let server: Jid = "s.whatsapp.net".parse().unwrap();
    let answer = client
        .send_iq(InfoQuery::get("wavault:no-such-feature", server, None))
        .await;
    match answer {
        Err(IqError::ServerError { code, text, .. }) => {
            assert_eq!((code, text.as_str()), (501, "feature-not-implemented"))
        }
        other => panic!("expected a 501 error, got {other:?}"),
    }
    let seen = peer.seen();
    assert_eq!(seen.unsupported.len(), 1, "{:?}", seen.unsupported);
    assert!(seen.unsupported[0].contains("xmlns=wavault:no-such-feature"));
    running.stop().await;
}

/// `banned` (402), `client outdated` (405) and `replaced`, each on its own
/// bot of one runner: each stops for good with the documented status and
/// alert, and none reconnects, checked after a fourth bot reconnected three
/// times in a row (its backoff, 1 + 1 + 2 s, outlasts the first retry the
/// others would make).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_stops_for_good_on_ban_outdated_client_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["banned", "outdated", "replaced", "witness"];
    let vault: Vault = new_vault(dir.path(), &names);
    let mut phones = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let phone = synth_paired(&vault, name, 4_915_100_002_210 + i as u64).await;
        phones.insert(*name, phone);
    }
    let peer = Peer::new();
    let runner = Runner::start(vault.clone(), config(&peer)).unwrap();
    runner
        .wait_until(DEADLINE, |rows| {
            rows.len() == 4 && rows.iter().all(|r| r.status == Status::Connected)
        })
        .await
        .expect("all four connect");
    let mut rx = runner.subscribe();
    assert_eq!(peer.ban(&phones["banned"]), 1);
    assert_eq!(peer.client_outdated(&phones["outdated"]), 1);
    assert_eq!(peer.replace(&phones["replaced"]), 1);

    let (mut alerts, mut stopped) = (HashMap::new(), Vec::new());
    while alerts.len() < 3 || stopped.len() < 3 {
        next_event(&mut rx, DEADLINE, "alerts and stops", |e| {
            match e {
                RunnerEvent::Alert(a) => {
                    assert!(alerts.insert(a.bot.clone(), a.clone()).is_none(), "{a:?}");
                }
                RunnerEvent::Stopped { bot } => stopped.push(bot.to_string()),
                _ => {}
            }
            Some(())
        })
        .await;
    }
    stopped.sort();
    assert_eq!(stopped, ["banned", "outdated", "replaced"]);
    let kinds: HashMap<&str, &str> = alerts
        .iter()
        .map(|(b, a)| (b.as_str(), a.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        HashMap::from([
            ("banned", "banned"),
            ("outdated", "client_outdated"),
            ("replaced", "replaced"),
        ])
    );
    let status = |rows: &[wavault::status::StatusRow], b: &str| {
        rows.iter().find(|r| r.bot == b).unwrap().status
    };
    let rows = runner.status().unwrap();
    assert_eq!(status(&rows, "banned"), Status::Error);
    assert_eq!(status(&rows, "outdated"), Status::Error);
    assert_eq!(status(&rows, "replaced"), Status::Replaced);
    assert_eq!(status(&rows, "witness"), Status::Connected);
    let seen = peer.seen();
    assert!(seen
        .refusals_of(&phones["banned"])
        .all(|r| r == Refusal::Banned));
    assert!(seen.refusals_of(&phones["banned"]).count() >= 1);
    assert!(seen
        .refusals_of(&phones["outdated"])
        .all(|r| r == Refusal::ClientOutdated));
    assert!(seen.refusals_of(&phones["outdated"]).count() >= 1);

    // Time passes past the retry backoff: the witness reconnects 3 times.
    let logins = |seen: &crate::peer::PeerLog, name: &str| seen.logins(&phones[name]).count();
    let stopped_at = peer.seen();
    let witness = &phones["witness"];
    for round in 1..=3 {
        assert!(peer.drop_connections_of(witness) >= 1);
        peer.wait_for("the witness back", DEADLINE, |log| {
            log.logins(witness).filter(|c| c.accepted).count()
                == stopped_at.logins(witness).filter(|c| c.accepted).count() + round
        })
        .await
        .unwrap();
    }
    let now = peer.seen();
    for name in ["banned", "outdated", "replaced"] {
        assert_eq!(
            logins(&now, name),
            logins(&stopped_at, name),
            "{name} reconnected"
        );
    }
    assert_eq!(
        now.attempts,
        stopped_at.attempts + 3,
        "only the witness connected again"
    );
    let rows = runner.status().unwrap();
    assert_eq!(status(&rows, "banned"), Status::Error);
    assert_eq!(status(&rows, "replaced"), Status::Replaced);
    runner.shutdown().await.unwrap();
}
