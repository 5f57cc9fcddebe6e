//! Hook events beyond the message (issue 18): `receipt` events in order for
//! what the bot sent, one debounced `status` event and one alert for a
//! flapping connection, both identities (LID and phone) in `message`, and
//! a bot with default settings that gets messages only.
//!
//! Why it exists: the events go through the same durable queue as messages,
//! from whatsapp-rust events that arrive on concurrent tasks; these tests
//! hold the order, the debounce and the fields against the real client.

use std::time::Duration;

use serde_json::Value;
use wavault::messaging::hook::{keys, Target};
use wavault::runner::{RunConfig, Runner, RunnerEvent};
use wavault::vault::BotConfig;
use wavault::Vault;

use crate::hook_server::{HookServer, Mode};
use crate::messaging_tests::{cfg, wait_connected, wait_prekeys};
use crate::peer::{Peer, LOGIN_DEADLINE};
use crate::runner_tests::{bot, new_vault, synth_paired};

/// Deadline for a message or event to make its way through bot and hook.
const DEADLINE: Duration = Duration::from_secs(30);

/// A runner with one paired bot `id` (phone `phone`) whose own `events`
/// setting is `events` (none: the default), with the hook `hook`.
async fn start(
    id: &str,
    phone: u64,
    events: Option<&str>,
    hook: &HookServer,
    tune: impl FnOnce(&mut RunConfig),
) -> (tempfile::TempDir, Vault, Peer, Runner, String) {
    let dir = tempfile::tempdir().unwrap();
    let vault = new_vault(dir.path(), &[]);
    let mut b = BotConfig::new(bot(id));
    if let Some(e) = events {
        b.extra.insert(keys::EVENTS.into(), e.into());
    }
    vault.add_bot(&b).unwrap();
    let phone = synth_paired(&vault, id, phone).await;
    let peer = Peer::new();
    let mut c = cfg(&peer);
    c.hooks.target = Some(Target::Webhook(hook.url.clone()));
    tune(&mut c);
    let runner = Runner::start(vault.clone(), c).unwrap();
    wait_connected(&runner, id).await;
    wait_prekeys(&peer, &phone).await;
    (dir, vault, peer, runner, phone)
}

fn of_kind<'a>(seen: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    seen.iter().filter(move |v| v["event"] == kind)
}

/// The receipt types the hook got for message `id`, once it got `n`.
async fn receipt_types(hook: &HookServer, id: &str, n: usize) -> Vec<String> {
    let seen = hook
        .wait(&format!("{n} receipts for {id}"), DEADLINE, |s| {
            of_kind(&s.accepted, "receipt")
                .filter(|r| r["id"] == id)
                .count()
                >= n
        })
        .await;
    of_kind(&seen.accepted, "receipt")
        .filter(|r| r["id"] == id)
        .map(|r| r["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_come_in_order_for_a_send_a_hook_reply_and_the_api() {
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let (_dir, _vault, peer, runner, phone) = start(
        "receipts",
        4_917_200_000_001,
        Some("message,receipt"),
        &hook,
        |_| {},
    )
    .await;
    let contact = peer.contact("4917200000051");
    contact.read_what_arrives(true);

    let sent = runner
        .send(&bot("receipts"), contact.phone(), "proactive")
        .await
        .unwrap();
    assert_eq!(
        receipt_types(&hook, &sent, 3).await,
        ["sent", "delivered", "read"]
    );

    contact.send_text(&phone, "hi").await.unwrap();
    let got = contact
        .wait_received("the hook's reply", DEADLINE, |r| {
            r.iter().any(|m| m.text.as_deref() == Some("echo: hi"))
        })
        .await
        .unwrap();
    let reply = got
        .iter()
        .find(|m| m.text.as_deref() == Some("echo: hi"))
        .unwrap()
        .id
        .clone();
    assert_eq!(
        receipt_types(&hook, &reply, 3).await,
        ["sent", "delivered", "read"]
    );

    // A message sent through the HTTP API.
    let (base, token) = crate::runner_tests::web_with_token(&runner, &_vault, Duration::ZERO).await;
    let (code, body) = crate::messaging_tests::post_json(
        format!("{base}/api/bots/receipts/messages"),
        &token,
        serde_json::json!({"to": contact.phone(), "text": "via api"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    let api = api["id"].as_str().unwrap();
    assert_eq!(
        receipt_types(&hook, api, 3).await,
        ["sent", "delivered", "read"]
    );

    let seen = hook.seen();
    for r in of_kind(&seen.accepted, "receipt") {
        assert_eq!(r["bot"], "receipts", "{r}");
        assert_eq!(r["recipient"], contact.jid().as_str(), "{r}");
        assert!(r["time"].as_i64().is_some_and(|t| t > 0), "{r}");
    }
    let m = of_kind(&seen.accepted, "message")
        .next()
        .expect("the message");
    assert_eq!(m["text"], "hi");
    // The hook answers every event with a reply: only the message's is
    // carried out (the contact got exactly the send, one echo and the
    // API's message).
    assert_eq!(contact.received().len(), 3, "{:?}", contact.received());
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_connection_gives_one_status_event_and_one_alert() {
    let hook = HookServer::start(Mode::Reply(String::new())).await;
    let window = Duration::from_secs(6);
    let (_dir, _vault, peer, runner, phone) = start(
        "flappy",
        4_917_200_000_002,
        Some("message,status"),
        &hook,
        |c| c.status_debounce = window,
    )
    .await;
    let mut rx = runner.subscribe();
    let alerts = tokio::sync::watch::Sender::new(Vec::new());
    let tx = alerts.clone();
    tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            if let RunnerEvent::Alert(a) = e {
                tx.send_modify(|v| v.push(a));
            }
        }
    });
    let statuses = |s: &crate::hook_server::Seen| of_kind(&s.accepted, "status").count();
    // The first connection settles by itself first.
    let seen = hook
        .wait("the first status", DEADLINE, |s| statuses(s) == 1)
        .await;
    let first = of_kind(&seen.accepted, "status").next().unwrap().clone();
    assert_eq!(first["state"], "connected", "{first}");
    assert_eq!(first["previous"], Value::Null, "{first}");
    assert_eq!(first["transitions"], 1, "{first}");

    // 20 server-side closes (stream error 515: whatsapp-rust reconnects at
    // once), each once the bot's new connection is up.
    let svc = runner.service();
    let connects = move || {
        svc.live_state()
            .connects
            .get("flappy")
            .copied()
            .unwrap_or(0)
    };
    for i in 0..20 {
        let before = connects();
        assert_eq!(peer.stream_error(&phone, 515), 1, "close {i}");
        let c = connects.clone();
        runner
            .wait_until(LOGIN_DEADLINE, move |_| c() > before)
            .await
            .unwrap_or_else(|e| panic!("reconnect {i}: {e}"));
    }
    let seen = hook
        .wait("the settled status", DEADLINE, |s| statuses(s) == 2)
        .await;
    let settled = of_kind(&seen.accepted, "status").nth(1).unwrap().clone();
    assert_eq!(settled["state"], "connected", "{settled}");
    assert_eq!(settled["previous"], "connected", "{settled}");
    assert_eq!(settled["transitions"], 20, "{settled}");
    assert_eq!(settled["losses"], 20, "{settled}");
    let mut arx = alerts.subscribe();
    let got = tokio::time::timeout(DEADLINE, arx.wait_for(|a| !a.is_empty()))
        .await
        .expect("the connection alert")
        .unwrap()
        .clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind.as_str(), "connection", "{got:?}");
    assert!(got[0].reason.contains("20 change(s)"), "{}", got[0].reason);
    assert_eq!(statuses(&hook.seen()), 2, "{:?}", hook.seen().accepted);
    runner.shutdown().await.unwrap();
}

/// The fields the hook got for a message before events existed.
const TODAYS_FIELDS: [&str; 13] = [
    "bot",
    "id",
    "chat",
    "sender",
    "is_group",
    "from_me",
    "push_name",
    "time",
    "type",
    "media_type",
    "text",
    "caption",
    "event",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_names_both_identities_and_default_settings_get_messages_only() {
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let (_dir, _vault, peer, runner, phone) =
        start("idents", 4_917_200_000_003, None, &hook, |_| {}).await;

    // Known by LID and phone: both forms of the sender and of the chat.
    let lid_contact = peer.contact_with_lid("4917200000061");
    lid_contact.read_what_arrives(true);
    lid_contact.send_text(&phone, "from lid").await.unwrap();
    // Known by phone only: no LID, never guessed.
    let pn_contact = peer.contact("4917200000062");
    pn_contact.read_what_arrives(true);
    pn_contact.send_text(&phone, "from pn").await.unwrap();
    for c in [&lid_contact, &pn_contact] {
        c.wait_received("the echo, read", DEADLINE, |r| !r.is_empty())
            .await
            .unwrap();
    }
    let sent = runner
        .send(&bot("idents"), pn_contact.phone(), "proactive")
        .await
        .unwrap();
    pn_contact
        .wait_received("the send", DEADLINE, |r| r.iter().any(|m| m.id == sent))
        .await
        .unwrap();
    // A last message: its hook call comes after the receipts above reached
    // the bot (the peer sent them first, on the same connection).
    lid_contact.send_text(&phone, "last").await.unwrap();
    let seen = hook
        .wait("three messages", DEADLINE, |s| s.accepted.len() >= 3)
        .await;

    let by_text = |t: &str| {
        seen.accepted
            .iter()
            .find(|m| m["text"] == t)
            .unwrap_or_else(|| panic!("{t}: {:?}", seen.accepted))
            .clone()
    };
    let lid = by_text("from lid");
    let lid_jid = lid_contact.lid_jid().unwrap();
    assert_eq!(lid["sender_lid"], lid_jid.as_str(), "{lid}");
    assert_eq!(lid["sender_pn"], lid_contact.jid().as_str(), "{lid}");
    assert_eq!(lid["chat_lid"], lid_jid.as_str(), "{lid}");
    assert_eq!(lid["chat_pn"], lid_contact.jid().as_str(), "{lid}");
    let pn = by_text("from pn");
    assert_eq!(pn["sender_pn"], pn_contact.jid().as_str(), "{pn}");
    assert_eq!(pn["sender_lid"], Value::Null, "{pn}");
    assert_eq!(pn["chat_pn"], pn_contact.jid().as_str(), "{pn}");
    assert_eq!(pn["chat_lid"], Value::Null, "{pn}");

    // Default settings: messages only, with today's fields and the new ones.
    for m in &seen.accepted {
        assert_eq!(m["event"], "message", "{m}");
        let keys: Vec<&str> = m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in
            TODAYS_FIELDS
                .iter()
                .chain(&["sender_lid", "sender_pn", "chat_lid", "chat_pn", "media"])
        {
            assert!(keys.contains(k), "{k} missing in {m}");
        }
        assert_eq!(keys.len(), TODAYS_FIELDS.len() + 5, "{m}");
    }
    assert_eq!(seen.accepted.len(), 3, "{:?}", seen.accepted);
    // Nor is any other event waiting in the queue.
    let queued = runner.queued(&bot("idents")).unwrap();
    assert!(
        queued.iter().all(|q| !q.sender.starts_with("event:")),
        "{queued:?}"
    );
    runner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_decrypted_is_an_event_counted_and_then_recovered() {
    let hook = HookServer::start(Mode::Reply("echo: ".into())).await;
    let (_dir, _vault, peer, runner, phone) = start(
        "garbled",
        4_917_200_000_004,
        Some("message,decrypt_failure"),
        &hook,
        |_| {},
    )
    .await;
    let contact = peer.contact("4917200000071");
    // A first message starts the Signal session; the bot's answer
    // confirms it, so the next message is a plain `msg` (its last bytes
    // are the MAC, which the corruption flips).
    contact.send_text(&phone, "first").await.unwrap();
    contact
        .wait_received("the echo", DEADLINE, |r| !r.is_empty())
        .await
        .unwrap();
    let intact = contact.encrypt_text(&phone, "second").await.unwrap();
    let id = contact.post(intact.corrupted());
    let seen = hook
        .wait("the decrypt failure", DEADLINE, |s| {
            of_kind(&s.accepted, "decrypt_failure").count() == 1
        })
        .await;
    let f = of_kind(&seen.accepted, "decrypt_failure").next().unwrap();
    assert_eq!(f["id"], id.as_str(), "{f}");
    assert_eq!(f["recovered"], false, "{f}");
    assert_eq!(f["chat"], contact.jid().as_str(), "{f}");
    assert_eq!(f["bot"], "garbled", "{f}");
    let failures = runner
        .service()
        .live_state()
        .decrypt_failures
        .get("garbled")
        .copied();
    assert!(failures >= Some(1), "{failures:?}");

    // The intact copy (a retry) arrives: the message, then `recovered`.
    contact.post(intact);
    let seen = hook
        .wait("the recovered message", DEADLINE, |s| {
            of_kind(&s.accepted, "decrypt_failure").count() == 2
        })
        .await;
    let m = seen
        .accepted
        .iter()
        .position(|m| m["event"] == "message" && m["text"] == "second")
        .expect("the message itself");
    let r = seen
        .accepted
        .iter()
        .position(|m| m["event"] == "decrypt_failure" && m["recovered"] == true)
        .expect("the recovery");
    assert_eq!(seen.accepted[r]["id"], id.as_str());
    assert!(
        m < r,
        "the recovery follows the message: {:?}",
        seen.accepted
    );
    runner.shutdown().await.unwrap();
}

/// One sample's value in a Prometheus scrape (`None`: no such sample).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    Some(match &s.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(h) => h
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count),
        other => panic!("unexpected {other:?}"),
    })
}

async fn scrape(base: &str, token: &str) -> prometheus_parse::Scrape {
    let (code, text) =
        crate::web_tests::get(format!("{base}/metrics"), Some(token.to_owned())).await;
    assert_eq!(code, 200, "{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text")
}

/// Issue 18, dashboard and metrics: while the hook is down, status rows
/// count the queued entries per event kind and those failing (the table
/// too, in one cell); `/metrics` counts the events by kind and outcome
/// (queued, failed, then delivered once the hook is back) and observes the
/// sent -> delivered latency of the bot's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_is_down_shows_events_queued_and_failing_per_kind_and_metrics_count_them() {
    use crate::messaging_tests::row;
    let hook = HookServer::start(Mode::Down).await;
    let (_dir, vault, peer, runner, phone) = start(
        "counted",
        4_915_100_050_001,
        Some("message,receipt"),
        &hook,
        |_| {},
    )
    .await;
    let (base, token) =
        crate::runner_tests::web_with_token(&runner, &vault, wavault::web::START_GRACE).await;
    let contact = peer.contact("4917500000001");
    runner
        .send(&bot("counted"), contact.phone(), "proactive")
        .await
        .unwrap();
    // Its `sent` and `delivered` receipts queue (the first one failing),
    // then a message from the contact queues behind them.
    let kinds = |rows: &[wavault::status::StatusRow]| row(rows, "counted").messages.by_kind.clone();
    runner
        .wait_until(DEADLINE, |rows| {
            kinds(rows)
                .get("receipt")
                .is_some_and(|r| r.queued == 2 && r.failing >= 1)
        })
        .await
        .expect("two receipts queued, failing");
    contact.send_text(&phone, "hi").await.unwrap();
    let rows = runner
        .wait_until(DEADLINE, |rows| {
            kinds(rows).get("message").is_some_and(|m| m.queued == 1)
        })
        .await
        .expect("the message queued");
    let m = &row(&rows, "counted").messages;
    assert_eq!(m.queued, 3, "{m:?}");
    assert_eq!(m.by_kind.len(), 2, "{m:?}");
    let failing: usize = m.by_kind.values().map(|k| k.failing).sum();
    let table = wavault::status::table(&rows);
    assert!(
        table.contains(&format!("3 (receipt 2, failing {failing})")),
        "{table}"
    );
    let (code, api) = crate::web_tests::get(format!("{base}/api/bots"), Some(token.clone())).await;
    assert_eq!(code, 200, "{api}");
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(
        api[0]["messages"]["by_kind"]["receipt"]["queued"], 2,
        "{api}"
    );
    let doc: Value = serde_json::from_str(&wavault::web::openapi()).unwrap();
    let mut errs = Vec::new();
    let schema = serde_json::json!({"$ref": "#/components/schemas/StatusRow"});
    crate::openapi_tests::check(&doc, &schema, &api[0], "row", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    let s = scrape(&base, &token).await;
    let events = |kind: &str, outcome: &str| {
        sample(
            &s,
            "wavault_events_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(events("receipt", "queued"), Some(2.0));
    assert!(events("receipt", "failed") >= Some(1.0));
    assert_eq!(events("receipt", "delivered"), None);
    let latency = [("bot", "counted")];
    assert_eq!(
        sample(&s, "wavault_receipt_latency_seconds_count", &latency),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "wavault_receipt_latency_seconds", &latency),
        Some(1.0)
    );

    // The hook is back: all three are delivered and counted so.
    hook.set_mode(Mode::Answer(serde_json::json!({})));
    runner
        .wait_until(DEADLINE, |rows| {
            let m = &row(rows, "counted").messages;
            m.queued == 0 && m.by_kind.is_empty()
        })
        .await
        .expect("the queue drains");
    let s = scrape(&base, &token).await;
    let events = |kind: &str, outcome: &str| {
        sample(
            &s,
            "wavault_events_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(events("receipt", "delivered"), Some(2.0));
    assert_eq!(events("message", "delivered"), Some(1.0));
    runner.shutdown().await.unwrap();
}
