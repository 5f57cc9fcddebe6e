//! Signed webhooks as a receiver checks them: every POST of a bot's
//! messages verifies with the `standardwebhooks` crate, a retry carries the
//! same `webhook-id`, and after a rotation the old secret keeps verifying
//! for the grace (the grace's end with injected time: `messaging::signing`).

use std::time::Duration;

use axum::http::HeaderMap;
use wavault::messaging::signing::{self, Scope};
use wavault::vault::BotConfig;

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{one_bot, OneBot};
use crate::runner_tests::bot;

const DEADLINE: Duration = Duration::from_secs(30);

fn verifies(secret: &str, (headers, body): &(HeaderMap, axum::body::Bytes)) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(body, headers)
        .is_ok()
}

fn id((headers, _): &(HeaderMap, axum::body::Bytes)) -> String {
    headers[signing::HEADER_ID].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_verifies_a_retry_keeps_its_id_and_a_rotation_has_a_grace() {
    let hook = HookServer::start(Mode::Down).await;
    let OneBot {
        dir: _dir, // dropping it would delete the vault
        vault,
        phone,
        peer,
        runner,
        ..
    } = one_bot(
        BotConfig::new(bot("signed")),
        4_917_100_000_001,
        Some(&hook),
    )
    .await;
    let alice = peer.contact("4917100000011");

    // Refused twice (503), then accepted: three attempts of one message.
    alice.send_text(&phone, "one").await.unwrap();
    hook.wait("two refused attempts", DEADLINE, |s| s.calls >= 2)
        .await;
    hook.set_mode(Mode::Reply(String::new()));
    let seen = hook
        .wait("the message accepted", DEADLINE, |s| s.accepted.len() == 1)
        .await;
    // The bot uses the `run` default webhook: it signs with the default secret.
    let (scope, first) = signing::current(&vault, Some(&bot("signed"))).unwrap();
    assert_eq!(scope, Scope::Default);
    assert!(seen.raw.len() >= 3, "{}", seen.raw.len());
    for r in &seen.raw {
        assert!(verifies(&first.current, r), "attempt {} verifies", id(r));
        assert_eq!(id(r), id(&seen.raw[0]), "every attempt has the same id");
    }
    assert!(id(&seen.raw[0]).starts_with("evt_"));

    // Rotated with a grace: a receiver with either secret verifies.
    let (_, second) = signing::rotate(&vault, None, 86_400, wavault::vault::now()).unwrap();
    alice.send_text(&phone, "two").await.unwrap();
    let seen = hook
        .wait("the second message", DEADLINE, |s| s.accepted.len() == 2)
        .await;
    let r = seen.raw.last().unwrap();
    assert_ne!(id(r), id(&seen.raw[0]), "another message, another id");
    assert!(
        verifies(&first.current, r),
        "the old secret, during the grace"
    );
    assert!(verifies(&second.current, r), "the new secret");

    // Rotated without a grace: only the newest verifies.
    let (_, third) = signing::rotate(&vault, None, 0, wavault::vault::now()).unwrap();
    alice.send_text(&phone, "three").await.unwrap();
    let seen = hook
        .wait("the third message", DEADLINE, |s| s.accepted.len() == 3)
        .await;
    let r = seen.raw.last().unwrap();
    assert!(verifies(&third.current, r));
    assert!(
        !verifies(&second.current, r),
        "no grace: the old one is gone"
    );
    assert_eq!(hook.texts_from(alice.phone()), ["one", "two", "three"]);
    runner.shutdown().await.unwrap();
}
