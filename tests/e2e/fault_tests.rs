//! Faults the server side can inflict: dropped sockets, an unreachable
//! server, forced logout, and a session taken over elsewhere.
//!
//! Why it exists: the wavault runner must tell transient failures (retry
//! with backoff) from permanent ones (stop, alert). These tests pin how the
//! real client reacts to each fault, so the runner can rely on it.

use std::sync::Arc;

use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::store::InMemoryBackend;

use crate::peer::{
    is_connected, is_logged_out, is_qr, is_stream_replaced, BotOptions, Pairing, Peer, RunningBot,
    LOGIN_DEADLINE,
};

async fn paired(peer: &Peer) -> (RunningBot, Pairing) {
    peer.start_paired_bot(Arc::new(InMemoryBackend::new()))
        .await
        .expect("bot pairs and connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_reconnects_and_logs_in_again() {
    let peer = Peer::new();
    let (bot, pairing) = paired(&peer).await;
    assert_eq!(peer.seen().logins(&pairing.phone).count(), 1);

    assert_eq!(peer.drop_connections(), 1, "one open connection to drop");
    bot.events
        .wait_for("Disconnected", LOGIN_DEADLINE, |e| {
            matches!(e, Event::Disconnected(_))
        })
        .await
        .expect("client notices the dropped socket");
    bot.events
        .wait_for_nth("second Connected", 2, LOGIN_DEADLINE, is_connected)
        .await
        .expect("client reconnects by itself");

    let log = peer.seen();
    let logins: Vec<_> = log.logins(&pairing.phone).collect();
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert!(!logins[0].open && logins[1].open && logins[1].accepted);

    // A server-side stream restart (515) is a reconnect without backoff.
    assert_eq!(peer.stream_error(&pairing.phone, 515), 1);
    bot.events
        .wait_for_nth("third Connected", 3, LOGIN_DEADLINE, is_connected)
        .await
        .expect("client reconnects after a stream restart");
    let log = peer.seen();
    assert_eq!(log.logins(&pairing.phone).count(), 3);
    assert_eq!(bot.events.count(is_qr), 1, "only the pairing QR code");
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_until_accepted() {
    let peer = Peer::new();
    let (bot, pairing) = paired(&peer).await;

    peer.refuse_connections(true);
    assert_eq!(peer.drop_connections(), 1);
    // Backoff is 1 s, 1 s, 2 s…: two refused attempts arrive within ~3 s.
    let refused = peer
        .wait_for("two refused attempts", LOGIN_DEADLINE, |log| {
            log.refusals >= 2
        })
        .await
        .expect("client keeps retrying while the server is down");
    assert_eq!(
        refused.logins(&pairing.phone).count(),
        1,
        "no login got through"
    );
    assert_eq!(bot.events.count(is_connected), 1);
    assert!(
        bot.client().is_some_and(|c| !c.is_logged_in()),
        "client is up but not logged in"
    );

    peer.refuse_connections(false);
    bot.events
        .wait_for_nth("Connected after outage", 2, LOGIN_DEADLINE, is_connected)
        .await
        .expect("client connects once the server accepts again");
    let log = peer.seen();
    assert_eq!(log.logins(&pairing.phone).count(), 2);
    assert!(log.refusals >= 2);
    assert_eq!(
        log.attempts,
        log.refusals + log.connections.len(),
        "every attempt was either refused or became a connection"
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_stream_error_reaches_client_and_sticks() {
    let peer = Peer::new();
    let backend: Arc<dyn whatsapp_rust::store::traits::Backend> = Arc::new(InMemoryBackend::new());
    let (bot, pairing) = peer
        .start_paired_bot(backend.clone())
        .await
        .expect("bot pairs and connects");

    assert_eq!(peer.log_out(&pairing.phone), 1);
    let event = bot
        .events
        .wait_for("LoggedOut", LOGIN_DEADLINE, is_logged_out)
        .await
        .expect("client is told it was logged out");
    let Event::LoggedOut(logged_out) = &*event else {
        unreachable!("is_logged_out matched")
    };
    assert!(!logged_out.on_connect, "logged out on a live connection");
    bot.stop().await;

    // The credentials are dead: a restart is refused at login.
    let bot = peer
        .start_bot(backend, BotOptions::default())
        .await
        .expect("bot builds");
    let event = bot
        .events
        .wait_for("LoggedOut at login", LOGIN_DEADLINE, is_logged_out)
        .await
        .expect("login with revoked credentials is refused");
    let Event::LoggedOut(logged_out) = &*event else {
        unreachable!("is_logged_out matched")
    };
    assert!(logged_out.on_connect, "refused during connect");
    assert_eq!(bot.events.count(is_connected), 0);
    assert_eq!(bot.events.count(is_qr), 0);
    let log = peer.seen();
    let last = log.logins(&pairing.phone).last().expect("a login attempt");
    assert!(last.refused && !last.accepted);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_stream_error_reaches_client() {
    let peer = Peer::new();
    let (bot, pairing) = paired(&peer).await;

    assert_eq!(peer.replace(&pairing.phone), 1);
    bot.events
        .wait_for("StreamReplaced", LOGIN_DEADLINE, is_stream_replaced)
        .await
        .expect("client is told another session took over");
    assert_eq!(
        bot.events.count(is_logged_out),
        0,
        "replaced is not logged out"
    );
    // The client closes its side and does not come back on its own.
    let log = peer
        .wait_for("socket closed", LOGIN_DEADLINE, |log| {
            log.open_connections() == 0
        })
        .await
        .expect("client closes the replaced connection");
    assert_eq!(log.logins(&pairing.phone).count(), 1);
    bot.stop().await;
}
