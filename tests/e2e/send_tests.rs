//! Sends that survive the caller's retries (issue 18): idempotency keys
//! through the runner and the API (also across a runner restart), quoting
//! a message (`reply_to`) and the typing indicator, against the peer.
//!
//! Why it exists: a caller that retries a send (timeout, crash, network)
//! must not make the contact receive the message twice.

use std::time::Duration;

use serde_json::json;
use wavault::messaging::outbox::Outgoing;
use wavault::runner::Runner;

use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
use crate::peer::{attr, Contact, Peer};
use crate::runner_tests::{bot, new_vault, synth_paired};

const DEADLINE: Duration = Duration::from_secs(30);
/// This module's phone numbers (49173000000xx only).
const BOT_PHONE: u64 = 4_917_300_000_001;
const CONTACT: &str = "4917300000002";

/// How many messages with `text` the contact received, once a marker sent
/// after them arrived (messages of one bot reach a contact in order, so a
/// duplicate sent before the marker would be there by then).
async fn count_after_marker(runner: &Runner, contact: &Contact, text: &str, marker: &str) -> usize {
    let id = runner
        .send(&bot("sender"), contact.phone(), marker)
        .await
        .unwrap();
    let got = contact
        .wait_received("the marker", DEADLINE, |r| r.iter().any(|m| m.id == id))
        .await
        .unwrap();
    got.iter()
        .filter(|m| m.text.as_deref() == Some(text))
        .count()
}

fn keyed(text: &str, key: &str) -> Outgoing {
    Outgoing {
        idempotency_key: Some(key.into()),
        ..Outgoing::text(CONTACT, text)
    }
}

/// POST /api/bots/sender/messages with an optional Idempotency-Key.
async fn post(
    base: &str,
    token: &str,
    key: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = format!("{base}/api/bots/sender/messages");
    let (status, text) = crate::messaging_tests::post_json_with(url, token, key, body).await;
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sends_once_also_over_the_api_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["sender"]);
    let phone = synth_paired(&vault, "sender", BOT_PHONE).await;
    let peer = Peer::new();
    let c = cfg(&peer);
    let runner = Runner::start(vault.clone(), c.clone()).unwrap();
    wait_connected(&runner, "sender").await;
    wait_prekeys(&peer, &phone).await;
    let alice = peer.contact(CONTACT);

    // The same key twice: one message, the same id.
    let first = runner
        .send_message(&bot("sender"), &keyed("once", "order-42"))
        .await
        .unwrap();
    let again = runner
        .send_message(&bot("sender"), &keyed("once", "order-42"))
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "a repeated key answers the first message's id"
    );
    assert_eq!(
        count_after_marker(&runner, &alice, "once", "marker 1").await,
        1
    );
    // The same key for another message is refused (usage), nothing sent.
    let e = runner
        .send_message(&bot("sender"), &keyed("different", "order-42"))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), wavault::error::exit::USAGE, "{e}");

    // Over the API: the header twice gives the same id, one message.
    let (base, token) =
        crate::runner_tests::web_with_token(&runner, &vault, wavault::web::START_GRACE).await;
    let body = json!({"to": CONTACT, "text": "via api once"});
    let (code, a) = post(&base, &token, Some("api-7"), body.clone()).await;
    assert_eq!(code, 200, "{a}");
    let (code, b) = post(&base, &token, Some("api-7"), body.clone()).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(a["id"], b["id"], "{a} {b}");
    assert_eq!(
        count_after_marker(&runner, &alice, "via api once", "marker 2").await,
        1
    );
    let (code, bad) = post(&base, &token, Some(&"k".repeat(256)), body).await;
    assert_eq!(code, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("printable ASCII"),
        "{bad}"
    );

    // Across a restart: the key is in the vault.
    runner.shutdown().await.unwrap();
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "sender").await;
    let after = runner
        .send_message(&bot("sender"), &keyed("once", "order-42"))
        .await
        .unwrap();
    assert_eq!(after, first, "the key survived the restart");
    assert_eq!(
        count_after_marker(&runner, &alice, "once", "marker 3").await,
        1
    );
    runner.shutdown().await.unwrap();
}

/// `reply_to` quotes: the contact's message carries the quoted id and its
/// sender; `typing` shows composing, then paused, before the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_quotes_and_typing_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &["sender"]);
    let phone = synth_paired(&vault, "sender", BOT_PHONE + 2).await;
    let peer = Peer::new();
    let runner = Runner::start(vault.clone(), cfg(&peer)).unwrap();
    wait_connected(&runner, "sender").await;
    wait_prekeys(&peer, &phone).await;
    let contact = "4917300000004";
    let bob = peer.contact(contact);
    let asked = bob.send_text(&phone, "a question").await.unwrap();
    let msg = Outgoing {
        reply_to: Some(asked.clone()),
        typing: true,
        ..Outgoing::text(contact, "the answer")
    };
    let id = runner.send_message(&bot("sender"), &msg).await.unwrap();
    let got = bob
        .wait_received("the answer", DEADLINE, |r| r.iter().any(|m| m.id == id))
        .await
        .unwrap();
    let m = got.iter().find(|m| m.id == id).unwrap();
    assert_eq!(m.text.as_deref(), Some("the answer"));
    let ctx = m
        .message
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .expect("a quote");
    assert_eq!(ctx.stanza_id.as_deref(), Some(asked.as_str()));
    assert_eq!(ctx.participant.as_deref(), Some(bob.jid().as_str()));

    let log = peer.seen();
    let states: Vec<String> = log
        .received_tagged("chatstate")
        .filter(|s| attr(&s.node, "to").is_some_and(|t| t.starts_with(contact)))
        .filter_map(|s| s.node.children()?.first().map(|c| c.tag.to_string()))
        .collect();
    assert_eq!(states, ["composing", "paused"], "typing shown, then ended");
    runner.shutdown().await.unwrap();
}

/// A bot at `--send-rate`: hook replies keep the pace (3 replies at 60/min
/// leave at least 2 s apart end to end), and a full pacing queue refuses a
/// send (exit 7) and the API answers 429 with `retry_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_replies_keep_the_pace_and_a_full_pacing_queue_answers_429() {
    use wavault::messaging::hook::{keys, Target};
    let hook =
        crate::hook_server::HookServer::start(crate::hook_server::Mode::Reply("echo: ".into()))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &[]);
    let mut b = wavault::vault::BotConfig::new(bot("sender"));
    b.extra.insert(keys::SEND_RATE.into(), "60/min".into());
    vault.add_bot(&b).unwrap();
    let phone = synth_paired(&vault, "sender", BOT_PHONE + 4).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, "sender").await;
    wait_prekeys(&peer, &phone).await;

    let carol = peer.contact("4917300000006");
    let start = std::time::Instant::now();
    for t in ["p1", "p2", "p3"] {
        carol.send_text(&phone, t).await.unwrap();
    }
    carol
        .wait_received("the three echoes", DEADLINE, |r| {
            r.iter()
                .filter(|m| m.text.as_deref().is_some_and(|t| t.starts_with("echo: p")))
                .count()
                == 3
        })
        .await
        .unwrap();
    // A lower bound only: load can only make it slower.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "3 replies at 60/min: {:?}",
        start.elapsed()
    );

    // 1/min: one send goes at once, the next waits its minute (within the
    // bound), a third is refused.
    let mut b = vault.bot_config(&bot("sender")).unwrap();
    b.extra.insert(keys::SEND_RATE.into(), "1/min".into());
    wavault::ops::execute(
        &*runner.service(),
        wavault::ops::Request::BotSet { config: b },
        Vec::new(),
    )
    .unwrap();
    // The replies' slots may still be ahead: this one waits for its own.
    let me = bot("sender");
    runner
        .send(&me, carol.phone(), "paced 1")
        .await
        .expect("the first send goes");
    let two = runner.send(&me, carol.phone(), "paced 2");
    let three = runner.send(&me, carol.phone(), "paced 3");
    let refused = tokio::select! {
        r = two => r,
        r = three => r,
    };
    let e = refused.expect_err("one of them is refused at once, the other waits a minute");
    assert_eq!(e.exit_code(), wavault::error::exit::UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("pacing queue is full"), "{e}");
    let (base, token) =
        crate::runner_tests::web_with_token(&runner, &vault, wavault::web::START_GRACE).await;
    let (code, body) = post(
        &base,
        &token,
        None,
        json!({"to": carol.phone(), "text": "x"}),
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["code"], "too_many_requests", "{body}");
    let after = body["retry_after"].as_u64().unwrap();
    assert!((1..=120).contains(&after), "{body}");
    // As the OpenAPI document says.
    let doc: serde_json::Value = serde_json::from_str(&wavault::web::openapi()).unwrap();
    let op = &doc["paths"]["/api/bots/{id}/messages"]["post"];
    assert!(op["responses"]["429"].is_object(), "429 documented");
    let mut errs = Vec::new();
    let schema = json!({"$ref": "#/components/schemas/PacingFull"});
    crate::openapi_tests::check(&doc, &schema, &body, "429", &mut errs);
    assert!(errs.is_empty(), "{errs:?}: {body}");
    runner.shutdown().await.unwrap();
}
