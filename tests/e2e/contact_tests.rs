//! 1:1 end-to-end encrypted messages between a real bot and a contact the
//! peer plays, and the server's offline queue semantics.
//!
//! Why it exists: wavault stores what its bots receive and send. These tests
//! pin that the peer's contacts speak real Signal with the 0.7 client in
//! both directions, and that the server keeps a message until the bot
//! acknowledges it (redelivering it at the next login otherwise), which is
//! what the product's at-least-once storage relies on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use whatsapp_rust::anyhow::{self, bail};
use whatsapp_rust::bot::Bot;
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::types::events::{Event, InboundMessage, ServerAck};
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, InboundDurabilityHook, Jid};

use crate::peer::{
    attr, child, is_connected, BotOptions, Contact, ContactMessage, EventLog, Pairing, Peer,
    PeerLog, RunningBot, LOGIN_DEADLINE, NACK_UNKNOWN_RECIPIENT,
};

/// Deadline for one message to cross (live, or after a reconnect).
const MESSAGE_DEADLINE: Duration = Duration::from_secs(15);

async fn paired(peer: &Peer) -> (RunningBot, Pairing, Arc<dyn Backend>) {
    let backend: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
    let (bot, pairing) = peer
        .start_paired_bot(backend.clone())
        .await
        .expect("bot pairs and connects");
    (bot, pairing, backend)
}

/// (sender user, id, text) of every message the bot received.
fn inbound(messages: &[InboundMessage]) -> Vec<(String, String, Option<String>)> {
    messages
        .iter()
        .map(|m| {
            (
                m.info.source.sender.user.to_string(),
                m.info.id.clone(),
                m.message.conversation.clone(),
            )
        })
        .collect()
}

async fn bot_gets(
    events: &EventLog,
    what: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    let messages = events
        .wait_messages(what, MESSAGE_DEADLINE, |m| m.len() >= n)
        .await?;
    Ok(inbound(&messages))
}

async fn bot_says(client: &Client, contact: &Contact, text: &str) -> anyhow::Result<String> {
    let jid: Jid = contact.jid().parse()?;
    let message = wa::Message {
        conversation: Some(text.to_string()),
        ..Default::default()
    };
    let sent = client.send_message(jid, message).await?;
    let id = sent.message_id.clone();
    contact
        .wait_received(&format!("bot message {text:?}"), MESSAGE_DEADLINE, |m| {
            m.iter().any(|m| m.id == id)
        })
        .await?;
    Ok(sent.message_id)
}

async fn wait_acked(peer: &Peer, phone: &str, ids: &[String]) -> PeerLog {
    peer.wait_for("bot acknowledged every message", MESSAGE_DEADLINE, |log| {
        ids.iter().all(|id| log.acked(phone, id))
    })
    .await
    .expect("bot acks what it received")
}

/// No decrypt failures on either side, no peer errors.
fn assert_clean(log: &PeerLog) {
    assert!(log.decrypt_errors.is_empty(), "{:?}", log.decrypt_errors);
    let retries: Vec<_> = log.retry_receipts().collect();
    assert!(retries.is_empty(), "bot asked for retries: {retries:?}");
    assert!(log.errors.is_empty(), "{:?}", log.errors);
}

fn enc_types_of(log: &PeerLog, ids: &[String]) -> Vec<String> {
    let sent = log.sent_enc_types();
    ids.iter()
        .map(|id| {
            sent.iter()
                .find(|(i, _)| i == id)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| "never sent".to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_messages_reach_the_bot_in_order_and_are_acked() {
    let peer = Peer::new();
    let (bot, pairing, _) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let contact = peer.contact("15557770001");

    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(
            contact
                .send_text(&phone, &format!("hello {i}"))
                .await
                .unwrap(),
        );
    }
    let got = bot_gets(&bot.events, "five contact messages", 5)
        .await
        .unwrap();
    let expected: Vec<_> = (1..=5)
        .map(|i| {
            (
                contact.phone().to_string(),
                ids[i - 1].clone(),
                Some(format!("hello {i}")),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let log = wait_acked(&peer, &phone, &ids).await;
    for id in &ids {
        assert_eq!(log.deliveries(&phone, id), 1, "{id} pushed once");
        let receipt = log
            .receipts
            .iter()
            .find(|r| r.ids.contains(id))
            .expect("a receipt for each message");
        assert_eq!(receipt.bot_phone.as_deref(), Some(phone.as_str()));
        assert_eq!(receipt.to.as_deref(), Some(contact.jid().as_str()));
    }
    // Signal: until the contact hears back, every message carries the
    // pre-key header (pkmsg) of the one session it started.
    assert_eq!(enc_types_of(&log, &ids), vec!["pkmsg"; 5]);
    assert_eq!(contact.sessions_started().await, 1);

    // Once the bot answered, the contact's session is confirmed: msg.
    let client = bot.client().unwrap();
    bot_says(&client, &contact, "got them").await.unwrap();
    let mut later = Vec::new();
    for i in 6..=7 {
        later.push(
            contact
                .send_text(&phone, &format!("hello {i}"))
                .await
                .unwrap(),
        );
    }
    let got = bot_gets(&bot.events, "two more", 7).await.unwrap();
    assert_eq!(got[5].2.as_deref(), Some("hello 6"));
    assert_eq!(got[6].2.as_deref(), Some("hello 7"));
    let log = wait_acked(&peer, &phone, &later).await;
    assert_eq!(enc_types_of(&log, &later), vec!["msg"; 2]);
    assert_eq!(contact.sessions_started().await, 1);
    assert_clean(&log);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_message_reaction_and_read_receipt_reach_the_contact() {
    let peer = Peer::new();
    let (bot, pairing, _) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let contact = peer.contact("15557770002");
    let client = bot.client().unwrap();
    let chat: Jid = contact.jid().parse().unwrap();

    // The bot writes first: it fetches the contact's bundle (pkmsg).
    let text = wa::Message {
        conversation: Some("hi from the bot".to_string()),
        ..Default::default()
    };
    let sent = client.send_message(chat.clone(), text).await.unwrap();
    let received: Vec<ContactMessage> = contact
        .wait_received("the bot's text", MESSAGE_DEADLINE, |m| !m.is_empty())
        .await
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].id, sent.message_id);
    assert_eq!(received[0].from_phone, phone);
    assert_eq!(received[0].text.as_deref(), Some("hi from the bot"));
    assert_eq!(
        received[0].message.conversation.as_deref(),
        Some("hi from the bot")
    );
    let log = peer.seen();
    let fetched = log
        .received_iqs("encrypt")
        .any(|s| child(&s.node, "key").is_some());
    assert!(fetched, "the bot fetched the contact's pre-key bundle");

    client
        .send_reaction(chat.clone(), sent.message_key(), "👍")
        .await
        .unwrap();
    let received = contact
        .wait_received("the reaction", MESSAGE_DEADLINE, |m| m.len() >= 2)
        .await
        .unwrap();
    assert_eq!(
        received[1].reaction,
        Some((sent.message_id.clone(), "👍".to_string()))
    );
    assert_eq!(received[1].text, None);

    // The contact answers; the bot marks that as read.
    let id = contact.send_text(&phone, "seen?").await.unwrap();
    bot_gets(&bot.events, "the contact's answer", 1)
        .await
        .unwrap();
    client
        .mark_as_read(&chat, None, &[id.as_str()])
        .await
        .unwrap();
    let log = peer
        .wait_for("read receipt", MESSAGE_DEADLINE, |log| {
            log.receipts_for(&id, Some("read")).next().is_some()
        })
        .await
        .unwrap();
    let read = log.receipts_for(&id, Some("read")).next().unwrap();
    assert_eq!(read.to.as_deref(), Some(contact.jid().as_str()));
    assert!(log.acked(&phone, &id));
    // The contact answered on the bot's session: no pre-key of the bot used.
    assert_eq!(enc_types_of(&log, std::slice::from_ref(&id)), vec!["msg"]);
    assert_eq!(contact.sessions_started().await, 0);
    assert_clean(&log);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_conversation_decrypts_on_both_sides() {
    let peer = Peer::new();
    let (bot, pairing, _) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let contact = peer.contact("15557770003");
    let client = bot.client().unwrap();

    let mut contact_ids = Vec::new();
    for round in 1..=4 {
        let id = contact
            .send_text(&phone, &format!("contact {round}"))
            .await
            .unwrap();
        let got = bot_gets(&bot.events, &format!("round {round}"), round)
            .await
            .unwrap();
        assert_eq!(got[round - 1].1, id);
        assert_eq!(
            got[round - 1].2.as_deref(),
            Some(format!("contact {round}").as_str())
        );
        contact_ids.push(id);
        bot_says(&client, &contact, &format!("bot {round}"))
            .await
            .unwrap();
    }
    let texts: Vec<_> = contact
        .received()
        .into_iter()
        .map(|m| m.text.unwrap_or_default())
        .collect();
    assert_eq!(texts, ["bot 1", "bot 2", "bot 3", "bot 4"]);
    let log = wait_acked(&peer, &phone, &contact_ids).await;
    assert_eq!(
        enc_types_of(&log, &contact_ids),
        ["pkmsg", "msg", "msg", "msg"]
    );
    assert_clean(&log);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_offline_arrive_at_the_next_login() {
    let peer = Peer::new();
    let (bot, pairing, backend) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let contact = peer.contact("15557770004");
    // Establish the session both ways first.
    let before = contact.send_text(&phone, "before").await.unwrap();
    bot_gets(&bot.events, "first message", 1).await.unwrap();
    bot_says(&bot.client().unwrap(), &contact, "welcome")
        .await
        .unwrap();
    bot.stop().await;
    peer.wait_for("bot offline", LOGIN_DEADLINE, |log| {
        log.logins(&phone).all(|c| !c.open)
    })
    .await
    .unwrap();

    let mut queued = Vec::new();
    for i in 1..=3 {
        queued.push(
            contact
                .send_text(&phone, &format!("offline {i}"))
                .await
                .unwrap(),
        );
    }
    assert!(
        queued
            .iter()
            .all(|id| peer.seen().deliveries(&phone, id) == 0),
        "nothing is pushed while the bot is offline"
    );

    let options = BotOptions {
        auto_pair: false,
        ..BotOptions::default()
    };
    let bot = peer.start_bot(backend, options).await.unwrap();
    bot.events
        .wait_for("Connected again", LOGIN_DEADLINE, is_connected)
        .await
        .unwrap();
    let got = bot_gets(&bot.events, "the offline backlog", 3)
        .await
        .unwrap();
    let texts: Vec<_> = got
        .iter()
        .map(|g| g.2.clone().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["offline 1", "offline 2", "offline 3"]);
    let ids: Vec<_> = got.iter().map(|g| g.1.clone()).collect();
    assert_eq!(ids, queued);
    let log = wait_acked(&peer, &phone, &queued).await;
    assert_eq!(
        log.deliveries(&phone, &before),
        1,
        "an acknowledged message is not redelivered"
    );
    for id in &queued {
        assert_eq!(log.deliveries(&phone, id), 1);
        let stanza = log
            .sent
            .iter()
            .find(|s| s.node.tag == "message" && attr(&s.node, "id").as_deref() == Some(id))
            .unwrap();
        assert_eq!(attr(&stanza.node, "offline").as_deref(), Some("1"));
    }
    assert_eq!(enc_types_of(&log, &queued), vec!["msg"; 3]);

    // Live again, same session.
    let live = contact.send_text(&phone, "live again").await.unwrap();
    let got = bot_gets(&bot.events, "a live message", 4).await.unwrap();
    assert_eq!(got[3].1, live);
    let log = wait_acked(&peer, &phone, std::slice::from_ref(&live)).await;
    assert_eq!(enc_types_of(&log, std::slice::from_ref(&live)), vec!["msg"]);
    assert_eq!(contact.sessions_started().await, 1);
    assert_clean(&log);
    bot.stop().await;
}

/// Fails the first batch it is given (the client must then not ack it),
/// accepts everything after.
struct FailFirst {
    /// How many batches the client handed over (watched by the test).
    calls: watch::Sender<usize>,
    committed: Mutex<Vec<String>>,
}

#[whatsapp_rust::async_trait]
impl InboundDurabilityHook for FailFirst {
    async fn on_messages(
        &self,
        _client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let mut first = false;
        self.calls.send_modify(|n| {
            first = *n == 0;
            *n += 1;
        });
        if first {
            bail!("simulated storage failure");
        }
        let mut committed = self.committed.lock().unwrap();
        committed.extend(batch.iter().map(|m| m.info.id.clone()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_message_is_redelivered_at_the_next_login() {
    let peer = Peer::new();
    let (bot, pairing, backend) = paired(&peer).await;
    let phone = pairing.phone.clone();
    bot.stop().await;

    // Same store, now with a durability hook that fails once.
    let hook = Arc::new(FailFirst {
        calls: watch::Sender::new(0),
        committed: Mutex::new(Vec::new()),
    });
    let events = EventLog::new();
    let handle = peer
        .configure(Bot::builder().with_backend_arc(backend))
        .with_push_name("wavault-e2e")
        .with_event_handler(events.handler())
        .with_inbound_durability_hook(SharedHook(hook.clone()))
        .build()
        .await
        .unwrap()
        .spawn();
    events
        .wait_for("Connected", LOGIN_DEADLINE, is_connected)
        .await
        .unwrap();
    let first_conn = peer.seen().logins(&phone).last().unwrap().id;

    let contact = peer.contact("15557770005");
    let id = contact.send_text(&phone, "keep me").await.unwrap();
    peer.wait_for("pushed once", MESSAGE_DEADLINE, |log| {
        log.deliveries(&phone, &id) == 1
    })
    .await
    .unwrap();
    // The hook ran and refused: nothing is committed, nothing acked.
    let mut calls = hook.calls.subscribe();
    tokio::time::timeout(MESSAGE_DEADLINE, calls.wait_for(|n| *n >= 1))
        .await
        .expect("the client hands the message to the hook")
        .unwrap();
    assert!(hook.committed.lock().unwrap().is_empty());
    assert!(
        !peer.seen().acked(&phone, &id),
        "no ack after a failed hook"
    );
    assert!(
        events.messages().is_empty(),
        "no event for an uncommitted message"
    );

    // Reconnect: the server redelivers the same stanza; the client
    // replays its buffered copy through the hook and acks.
    assert_eq!(peer.drop_connections_of(&phone), 1);
    let got = events
        .wait_messages(
            "the redelivered message",
            MESSAGE_DEADLINE + LOGIN_DEADLINE,
            |m| !m.is_empty(),
        )
        .await
        .unwrap();
    assert_eq!(
        inbound(&got),
        vec![(
            contact.phone().to_string(),
            id.clone(),
            Some("keep me".to_string())
        )]
    );
    let log = wait_acked(&peer, &phone, std::slice::from_ref(&id)).await;
    assert_eq!(
        log.deliveries(&phone, &id),
        2,
        "pushed again at the next login"
    );
    assert_eq!(*hook.committed.lock().unwrap(), vec![id.clone()]);
    assert!(
        log.receipts
            .iter()
            .filter(|r| r.ids.contains(&id))
            .all(|r| r.conn != first_conn),
        "the first connection never acked: {:?}",
        log.receipts
    );
    let resent: Vec<_> = log
        .sent
        .iter()
        .filter(|s| s.node.tag == "message" && attr(&s.node, "id").as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(resent.len(), 2);
    assert_eq!(
        child(&resent[0].node, "enc"),
        child(&resent[1].node, "enc"),
        "the same ciphertext, not a re-encryption"
    );
    assert_clean(&log);
    handle.shutdown().await;
}

/// `with_inbound_durability_hook` takes the hook by value; this lets the
/// test keep a handle on it.
struct SharedHook(Arc<FailFirst>);

#[whatsapp_rust::async_trait]
impl InboundDurabilityHook for SharedHook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        self.0.on_messages(client, batch).await
    }
}

/// The server's `<ack>` of the bot's stanza `id`, once it arrived.
async fn server_ack(events: &EventLog, id: &str) -> ServerAck {
    let event = events
        .wait_for(
            &format!("server ack of {id}"),
            MESSAGE_DEADLINE,
            |e| matches!(e, Event::ServerAck(a) if a.id == id),
        )
        .await
        .unwrap();
    let Event::ServerAck(ack) = &*event else {
        unreachable!()
    };
    ack.clone()
}

fn is_delivery_receipt(e: &Event, id: &str) -> bool {
    matches!(e, Event::Receipt(r)
        if r.r#type == ReceiptType::Delivered && r.message_ids.iter().any(|m| m == id))
}

/// How many times the bot sent a `<message>` with this id.
fn bot_sends_of(log: &PeerLog, id: &str) -> usize {
    log.received_tagged("message")
        .filter(|s| attr(&s.node, "id").as_deref() == Some(id))
        .count()
}

fn text(s: &str) -> wa::Message {
    wa::Message {
        conversation: Some(s.to_string()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_an_unknown_recipient_is_nacked_and_never_delivered() {
    let peer = Peer::new();
    let (bot, pairing, _) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let client = bot.client().unwrap();

    // A number nobody has: the server has no pre-key bundle for it (a
    // per-user 404), so the client cannot even encrypt.
    let stranger: Jid = "15557779999@s.whatsapp.net".parse().unwrap();
    let refused = client.send_message(stranger, text("anyone there?")).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(peer.seen().received_tagged("message").count(), 0);

    // Positive control: a contact's message is acked without error and its
    // delivery receipt reaches the bot.
    let contact = peer.contact("15557770011");
    let kept = bot_says(&client, &contact, "hello").await.unwrap();
    let ack = server_ack(&bot.events, &kept).await;
    assert_eq!(ack.class.as_deref(), Some("message"));
    assert_eq!(ack.error, None);
    bot.events
        .wait_for("delivery receipt", MESSAGE_DEADLINE, |e| {
            is_delivery_receipt(e, &kept)
        })
        .await
        .unwrap();

    // The contact's account is deleted: the bot still has a session and
    // sends, and the server nacks it.
    contact.delete_account();
    let lost = client
        .send_message(contact.jid().parse::<Jid>().unwrap(), text("still there?"))
        .await
        .expect("the client sends over its session; the server's answer is the nack")
        .message_id;
    let ack = server_ack(&bot.events, &lost).await;
    assert_eq!(ack.class.as_deref(), Some("message"));
    assert_eq!(ack.error.as_deref(), Some(NACK_UNKNOWN_RECIPIENT));
    let log = peer.seen();
    assert!(log.nacked(&phone, &lost));
    assert!(!log.nacked(&phone, &kept));
    assert_eq!(log.bot_nacks.len(), 1, "{:?}", log.bot_nacks);
    assert_eq!(bot_sends_of(&log, &lost), 1);
    assert!(log.delivered_to_contact(&kept));
    assert!(!log.delivered_to_contact(&lost));
    assert_eq!(
        contact.received().len(),
        1,
        "only the first message arrived"
    );
    assert_eq!(
        bot.events.count(|e| is_delivery_receipt(e, &lost)),
        0,
        "no delivery receipt for the nacked message"
    );
    assert_clean(&log);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_message_is_not_delivered_until_a_retry_and_swapped_messages_both_decrypt() {
    let peer = Peer::new();
    let (bot, pairing, _) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let client = bot.client().unwrap();
    let contact = peer.contact("15557770012");
    contact.send_text(&phone, "hi").await.unwrap();
    bot_gets(&bot.events, "the contact's first message", 1)
        .await
        .unwrap();

    // A corrupted delivery: the contact cannot decrypt it and confirms
    // nothing.
    contact.corrupt_next(1);
    let sent = client
        .send_message(contact.jid().parse::<Jid>().unwrap(), text("garbled"))
        .await
        .unwrap();
    let id = sent.message_id.clone();
    let log = peer
        .wait_for("the contact fails to decrypt", MESSAGE_DEADLINE, |log| {
            !log.decrypt_errors.is_empty()
        })
        .await
        .unwrap();
    assert!(
        log.decrypt_errors[0].contains(&id),
        "{:?}",
        log.decrypt_errors
    );
    assert!(
        !log.delivered_to_contact(&id),
        "a message the contact could not decrypt was confirmed as delivered"
    );
    assert!(contact.received().is_empty());

    // The contact asks for it again; the bot re-sends and this time the
    // contact decrypts it and confirms delivery.
    contact.send_retry_receipt(&phone, &id).await.unwrap();
    let got = contact
        .wait_received("the re-sent message", MESSAGE_DEADLINE, |m| !m.is_empty())
        .await
        .unwrap();
    assert_eq!(got[0].id, id);
    assert_eq!(got[0].text.as_deref(), Some("garbled"));
    bot.events
        .wait_for("delivery receipt after the retry", MESSAGE_DEADLINE, |e| {
            is_delivery_receipt(e, &id)
        })
        .await
        .unwrap();
    let log = peer.seen();
    assert_eq!(
        bot_sends_of(&log, &id),
        2,
        "sent, then re-sent on the retry"
    );
    assert_eq!(log.contact_retry_receipts.len(), 1);

    // Two contact messages reach the bot in swapped order: Signal keeps
    // the skipped key of the first, so both decrypt.
    let first = contact.encrypt_text(&phone, "one").await.unwrap();
    let second = contact.encrypt_text(&phone, "two").await.unwrap();
    let (first_id, second_id) = (first.id().to_string(), second.id().to_string());
    contact.post(second);
    contact.post(first);
    let got = bot_gets(&bot.events, "both swapped messages", 3)
        .await
        .unwrap();
    assert_eq!(
        got[1..],
        [
            (
                contact.phone().to_string(),
                second_id.clone(),
                Some("two".to_string())
            ),
            (
                contact.phone().to_string(),
                first_id.clone(),
                Some("one".to_string())
            ),
        ]
    );
    let log = wait_acked(&peer, &phone, &[first_id.clone(), second_id.clone()]).await;
    assert_eq!(enc_types_of(&log, &[first_id, second_id]), ["msg", "msg"]);
    assert_eq!(log.decrypt_errors.len(), 1, "{:?}", log.decrypt_errors);
    let retries: Vec<_> = log.retry_receipts().collect();
    assert!(retries.is_empty(), "bot asked for retries: {retries:?}");
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_addressed_by_lid_usync_mapping_and_round_trip() {
    let peer = Peer::new();
    let (bot, pairing, _) = paired(&peer).await;
    let phone = pairing.phone.clone();
    let client = bot.client().unwrap();

    // The bot writes to a LID contact's phone number: the server's usync
    // answer maps it to the LID, and the client keeps that mapping.
    let by_number = peer.contact_with_lid("15557770013");
    let pn_jid: Jid = by_number.jid().parse().unwrap();
    assert!(client.get_lid_pn_entry(&pn_jid).await.unwrap().is_none());
    bot_says(&client, &by_number, "hi number").await.unwrap();
    let entry = client
        .get_lid_pn_entry(&pn_jid)
        .await
        .unwrap()
        .expect("the client learned the contact's LID from usync");
    assert_eq!(&*entry.lid, by_number.lid().unwrap());
    assert_eq!(&*entry.phone_number, by_number.phone());

    // Another one, written to by LID only.
    let contact = peer.contact_with_lid("15557770014");
    let lid_jid = contact.lid_jid().unwrap();
    let sent = client
        .send_message(lid_jid.parse::<Jid>().unwrap(), text("hi lid"))
        .await
        .unwrap();
    let got = contact
        .wait_received("the bot's message by LID", MESSAGE_DEADLINE, |m| {
            !m.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(got[0].id, sent.message_id);
    assert_eq!(got[0].text.as_deref(), Some("hi lid"));
    let log = peer.seen();
    assert_eq!(bot_sends_of(&log, &sent.message_id), 1);
    let stanza = log
        .received_tagged("message")
        .find(|s| attr(&s.node, "id").as_deref() == Some(sent.message_id.as_str()))
        .unwrap();
    assert_eq!(attr(&stanza.node, "to").as_deref(), Some(lid_jid.as_str()));
    bot.events
        .wait_for("delivery receipt from the LID", MESSAGE_DEADLINE, |e| {
            is_delivery_receipt(e, &sent.message_id)
        })
        .await
        .unwrap();

    // It answers from its LID, naming its number in `sender_pn`.
    let id = contact.send_text(&phone, "hi bot").await.unwrap();
    let messages = bot
        .events
        .wait_messages("the contact's answer", MESSAGE_DEADLINE, |m| !m.is_empty())
        .await
        .unwrap();
    let m = &messages[0];
    assert_eq!(m.info.id, id);
    assert_eq!(m.message.conversation.as_deref(), Some("hi bot"));
    assert_eq!(m.info.source.sender.to_string(), lid_jid);
    assert_eq!(
        m.info.source.sender_alt.as_ref().map(|j| j.to_string()),
        Some(contact.jid())
    );
    let log = wait_acked(&peer, &phone, std::slice::from_ref(&id)).await;
    // The answer came on the session the bot's LID message started.
    assert_eq!(enc_types_of(&log, std::slice::from_ref(&id)), ["msg"]);
    assert_eq!(contact.sessions_started().await, 0);
    assert_clean(&log);
    bot.stop().await;
}
