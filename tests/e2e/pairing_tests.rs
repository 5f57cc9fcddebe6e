//! QR pairing and login with stored credentials.
//!
//! Why it exists: wavault's promise is "pair once, then log in by itself
//! after every restart". These tests pin both halves against the real
//! client: a fresh store registers and pairs through a QR code, and a new
//! client over the same store logs in with the paired number and never
//! shows a QR code again.

use std::sync::Arc;

use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::store::InMemoryBackend;

use crate::peer::{
    child, is_connected, is_qr, BotOptions, ClientKind, HandshakeKind, Peer, LOGIN_DEADLINE,
    PAIRING_LOGIN_DEADLINE,
};

fn fresh_backend() -> Arc<dyn Backend> {
    Arc::new(InMemoryBackend::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_bot_pairs_by_qr_and_logs_in() {
    let peer = Peer::new();
    let options = BotOptions {
        auto_pair: false,
        ..BotOptions::default()
    };
    let bot = peer
        .start_bot(fresh_backend(), options.clone())
        .await
        .expect("bot builds");

    let qr = bot
        .events
        .wait_for("first QR code", LOGIN_DEADLINE, is_qr)
        .await
        .expect("a fresh store registers and shows a QR code");
    let Event::PairingQrCode(qr) = &*qr else {
        unreachable!("is_qr matched")
    };
    let registration = peer.seen();
    let first = registration.connections.first().expect("one connection");
    assert_eq!(first.client, ClientKind::Registration);
    assert_eq!(first.handshake, HandshakeKind::Xx);
    assert_eq!(first.push_name.as_deref(), Some(options.push_name.as_str()));

    let pairing = peer.phone_scan(&qr.code).await.expect("phone scan pairs");

    let success = bot
        .events
        .wait_for("PairSuccess", LOGIN_DEADLINE, |e| {
            matches!(e, Event::PairSuccess(_))
        })
        .await
        .expect("client accepts the signed identity");
    let Event::PairSuccess(success) = &*success else {
        unreachable!("matched PairSuccess")
    };
    assert_eq!(success.id.user, pairing.phone);
    assert_eq!(success.id.device, pairing.device);

    bot.events
        .wait_for("Connected", PAIRING_LOGIN_DEADLINE, is_connected)
        .await
        .expect("client logs in after the 515 restart");

    let log = peer.seen();
    let logins: Vec<_> = log.logins(&pairing.phone).collect();
    assert_eq!(logins.len(), 1, "exactly one login so far: {logins:?}");
    assert_eq!(
        logins[0].client,
        ClientKind::Login {
            phone: pairing.phone.clone(),
            device: pairing.device
        }
    );
    // The cert chain is only cached once registered, so the first login is XX.
    assert_eq!(logins[0].handshake, HandshakeKind::Xx);
    assert!(logins[0].accepted);
    assert!(logins[0].id > first.id, "login came after the registration");
    assert_eq!(log.registrations().count(), 1);
    assert!(
        log.received_tagged("iq")
            .any(|s| s.conn == first.id && child(&s.node, "pair-device-sign").is_some()),
        "the companion countersigned on the registering connection"
    );
    assert!(
        log.received_iqs("w:sync:app:state").next().is_some(),
        "post-pairing login runs the critical app-state sync"
    );
    assert!(
        log.received_iqs("encrypt").next().is_some(),
        "client uploads its pre-keys"
    );
    assert!(log.http_requests.is_empty(), "{:?}", log.http_requests);
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_over_same_backend_logs_in_without_qr() {
    let peer = Peer::new();
    let backend = fresh_backend();
    let (bot, pairing) = peer
        .start_paired_bot(backend.clone())
        .await
        .expect("first run pairs and connects");
    let store = bot.backend.clone();
    assert!(Arc::ptr_eq(&store, &backend));
    bot.stop().await;
    // The server notices the closed socket on its own task: wait for it.
    let before = peer
        .wait_for("the socket closed by shutdown", LOGIN_DEADLINE, |log| {
            log.open_connections() == 0
        })
        .await
        .expect("shutdown closed the socket");

    let bot = peer
        .start_bot(store, BotOptions::default())
        .await
        .expect("second bot builds over the same store");
    bot.events
        .wait_for("Connected after restart", LOGIN_DEADLINE, is_connected)
        .await
        .expect("stored credentials log in");

    assert_eq!(bot.events.count(is_qr), 0, "no QR code after a restart");
    assert_eq!(
        bot.events
            .count(|e| matches!(e, Event::PairSuccess(_) | Event::PairError(_))),
        0
    );
    let log = peer.seen();
    let new_conns = &log.connections[before.connections.len()..];
    assert!(!new_conns.is_empty());
    for conn in new_conns {
        assert_eq!(
            conn.client,
            ClientKind::Login {
                phone: pairing.phone.clone(),
                device: pairing.device
            },
            "the restarted client only ever logs in"
        );
        // The first run cached the peer's cert chain: 0-RTT resume.
        assert_eq!(conn.handshake, HandshakeKind::Ik);
    }
    assert_eq!(log.registrations().count(), 1, "only the original pairing");
    assert_eq!(log.pairings.len(), 1);
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    bot.stop().await;

    // A server whose static key changed since the chain was cached cannot
    // open the IK hello; it answers XXfallback and the login still works.
    let rotated = Peer::new();
    // Same account database, new server key: the device is known.
    rotated.register_device(&pairing.phone, pairing.device, pairing.noise_key);
    let bot = rotated
        .start_bot(backend, BotOptions::default())
        .await
        .expect("bot builds");
    bot.events
        .wait_for("Connected via XXfallback", LOGIN_DEADLINE, is_connected)
        .await
        .expect("stored credentials survive a server key change");
    let log = rotated.seen();
    let first = log.connections.first().expect("a connection");
    assert_eq!(first.handshake, HandshakeKind::XxFallback);
    assert_eq!(
        first.client,
        ClientKind::Login {
            phone: pairing.phone.clone(),
            device: pairing.device
        }
    );
    assert_eq!(bot.events.count(is_qr), 0);
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_with_wrong_adv_secret_is_rejected() {
    let peer = Peer::new();
    let options = BotOptions {
        auto_pair: false,
        ..BotOptions::default()
    };
    let bot = peer
        .start_bot(fresh_backend(), options)
        .await
        .expect("bot builds");
    let qr = bot
        .events
        .wait_for("first QR code", LOGIN_DEADLINE, is_qr)
        .await
        .expect("QR code");
    let Event::PairingQrCode(qr) = &*qr else {
        unreachable!("is_qr matched")
    };
    // Field 4 is the ADV secret; a phone that read it wrong signs with
    // another key, which the companion must refuse (hmac-mismatch).
    let mut fields: Vec<String> = qr.code.split(',').map(str::to_string).collect();
    fields[3] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string();
    let err = peer
        .phone_scan(&fields.join(","))
        .await
        .expect_err("companion refuses a forged identity");
    assert!(err.to_string().contains("401"), "{err:#}");

    bot.events
        .wait_for("PairError", LOGIN_DEADLINE, |e| {
            matches!(e, Event::PairError(_))
        })
        .await
        .expect("client reports the failed pairing");
    let log = peer.seen();
    assert!(log.pairings.is_empty());
    assert_eq!(log.logins_total(), 0, "no login without a pairing");
    bot.stop().await;
}
