//! A bot's events beyond the inbound message (`messaging::events`): the
//! client's receipts, server acks, connection changes and decrypt failures,
//! turned into hook events in the bot's durable queue, the debounced
//! `status` and its alert, and the decrypt-failure counter of `/metrics`.
//!
//! The client's events come through [`Tap`], a handler that runs inline
//! where whatsapp-rust dispatches (so they keep the order they were
//! dispatched in), into one task per running bot ([`run`]), which queues
//! them one after the other.

use super::alert::{raise, AlertKind};
use super::deliver::Inbox;
use super::Shared;
use crate::botid::BotId;
use crate::messaging::events::{
    self, Debouncer, EventKind, Link, ReceiptState, Settled, EVENT_SENDER,
};
use crate::messaging::queue::NewMessage;
use crate::vault::now;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wacore::types::events::{Event, EventHandler, EventInterest};
use wacore::types::presence::ReceiptType;

/// Forwards the events this module handles into the bot's event task.
pub(crate) struct Tap(pub mpsc::UnboundedSender<Arc<Event>>);

impl EventHandler for Tap {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.send(event);
    }

    fn interest(&self) -> EventInterest {
        use wacore::types::events::EventKind as K;
        EventInterest::of(&[
            K::Connected,
            K::Disconnected,
            K::LoggedOut,
            K::StreamReplaced,
            K::TemporaryBan,
            K::ClientOutdated,
            K::Receipt,
            K::ServerAck,
            K::UndecryptableMessage,
        ])
    }
}

/// The bot's event task: until `rx` closes (the bot stops), then the open
/// status window settles at once.
pub(crate) async fn run(
    shared: Arc<Shared>,
    bot: BotId,
    inbox: Arc<Inbox>,
    client: std::sync::Weak<whatsapp_rust::Client>,
    mut rx: mpsc::UnboundedReceiver<Arc<Event>>,
) {
    let window = shared.cfg.status_debounce;
    let mut debounce = Debouncer::new(window);
    loop {
        let deadline = debounce.deadline();
        let settled = tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => on_event(&shared, &bot, &inbox, &client, &mut debounce, &ev).await,
                None => {
                    if let Some(s) = debounce.flush() {
                        settle(&shared, &bot, &inbox, s).await;
                    }
                    return;
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => debounce.poll(Instant::now()),
        };
        if let Some(s) = settled {
            settle(&shared, &bot, &inbox, s).await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Handles one client event; returns a status settlement when it made one.
async fn on_event(
    shared: &Arc<Shared>,
    bot: &BotId,
    inbox: &Inbox,
    client: &std::sync::Weak<whatsapp_rust::Client>,
    debounce: &mut Debouncer,
    ev: &Event,
) -> Option<Settled> {
    let t = Instant::now();
    match ev {
        Event::Connected(_) => {
            *shared
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .connects
                .entry(bot.to_string())
                .or_default() += 1;
            shared.emit(super::RunnerEvent::Traffic { bot: bot.clone() });
            debounce.observe(Link::Connected, t)
        }
        Event::Disconnected(_) => debounce.observe(Link::Disconnected, t),
        Event::LoggedOut(_) => debounce.observe(Link::Permanent("logged_out"), t),
        Event::StreamReplaced(_) => debounce.observe(Link::Permanent("replaced"), t),
        Event::TemporaryBan(_) => debounce.observe(Link::Permanent("banned"), t),
        Event::ClientOutdated(_) => debounce.observe(Link::Permanent("client_outdated"), t),
        Event::ServerAck(a) => {
            // Messages to the bot's own devices (whatsapp-rust's protocol
            // messages, e.g. app-state key requests) are no one's receipt.
            let to_self = a.from.as_ref().is_some_and(|j| is_own(client, j));
            if a.class.as_deref() == Some("message") && a.error.is_none() && !to_self {
                let to = a.from.as_ref().map(|j| j.to_non_ad_string());
                let time = a.timestamp.map_or_else(now, |t| t.timestamp());
                receipts(shared, bot, inbox, &a.id, ReceiptState::Sent, to, time).await;
            }
            None
        }
        Event::Receipt(r) => {
            let state = match r.r#type {
                ReceiptType::Delivered => ReceiptState::Delivered,
                ReceiptType::Read => ReceiptState::Read,
                ReceiptType::Played => ReceiptState::Played,
                _ => return None,
            };
            if r.source.is_from_me {
                return None;
            }
            let to = Some(r.source.chat.to_non_ad_string());
            for id in &r.message_ids {
                let time = r.timestamp.timestamp();
                receipts(shared, bot, inbox, id, state, to.clone(), time).await;
            }
            None
        }
        Event::UndecryptableMessage(u) => {
            *shared
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .decrypt_failures
                .entry(bot.to_string())
                .or_default() += 1;
            let src = &u.info.source;
            let id = u.info.id.to_string();
            inbox.failed_ids().insert(&id);
            let chat = src.chat.to_string();
            let json = events::decrypt_failure_json(
                bot.as_str(),
                &id,
                &chat,
                &src.sender.to_string(),
                u.info.timestamp.timestamp(),
                false,
            );
            let entry = NewMessage {
                chat,
                sender: format!("{EVENT_SENDER}decrypt_failure"),
                id,
                summary: json.to_string(),
            };
            queue_events(shared, bot, inbox, EventKind::DecryptFailure, vec![entry]).await;
            None
        }
        _ => None,
    }
}

/// Whether `jid` is the bot's own account (its phone number or LID).
fn is_own(client: &std::sync::Weak<whatsapp_rust::Client>, jid: &whatsapp_rust::Jid) -> bool {
    let Some(c) = client.upgrade() else {
        return false;
    };
    let me = c.persistence_manager().get_device_snapshot();
    let (pn, lid) = (me.pn.as_ref(), me.lid.as_ref());
    pn.into_iter().chain(lid).any(|own| own.user == jid.user)
}

/// Queues the receipt events `state` of message `id` makes (with the
/// states it implies that were not queued yet), in the recipient's chat.
async fn receipts(
    shared: &Arc<Shared>,
    bot: &BotId,
    inbox: &Inbox,
    id: &str,
    state: ReceiptState,
    to: Option<String>,
    time: i64,
) {
    let (states, latency) = {
        let mut tracker = inbox.receipt_tracker();
        let states = tracker.observe(id, state);
        (states, tracker.latency(id, state, time))
    };
    if let Some(secs) = latency {
        shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .receipt_latency
            .entry(bot.to_string())
            .or_default()
            .observe(secs as f64);
    }
    let chat = to.clone().unwrap_or_default();
    let entries = states
        .into_iter()
        .map(|(s, implied)| NewMessage {
            chat: chat.clone(),
            sender: format!("{EVENT_SENDER}receipt:{}", s.as_str()),
            id: id.to_owned(),
            summary: events::receipt_json(
                bot.as_str(),
                id,
                s,
                to.as_deref().unwrap_or_default(),
                time,
                implied,
            )
            .to_string(),
        })
        .collect::<Vec<_>>();
    if !entries.is_empty() {
        queue_events(shared, bot, inbox, EventKind::Receipt, entries).await;
    }
}

/// A status window settled: the `status` event, and an alert when it
/// flapped or stayed down.
async fn settle(shared: &Arc<Shared>, bot: &BotId, inbox: &Inbox, s: Settled) {
    let time = now();
    let id = format!(
        "status-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
    );
    tracing::info!(
        bot = %bot,
        state = s.state.as_str(),
        transitions = s.transitions,
        "connection settled"
    );
    let entry = NewMessage {
        chat: format!("{EVENT_SENDER}status"),
        sender: format!("{EVENT_SENDER}status"),
        id: id.clone(),
        summary: events::status_json(bot.as_str(), &id, &s, time).to_string(),
    };
    queue_events(shared, bot, inbox, EventKind::Status, vec![entry]).await;
    if s.alerts() {
        let reason = s.reason(shared.cfg.status_debounce);
        raise(shared, bot, AlertKind::Connection, reason).await;
    }
}

/// Queues events of `kind` when the bot's hook asks for them.
async fn queue_events(
    shared: &Arc<Shared>,
    bot: &BotId,
    inbox: &Inbox,
    kind: EventKind,
    entries: Vec<NewMessage>,
) {
    let s = match super::deliver::settings(shared, bot) {
        Ok(s) => s,
        Err(e) => return tracing::error!(bot = %bot, "hook settings unreadable: {e}"),
    };
    if !s.events.has(kind) {
        return;
    }
    let n = entries.len() as u64;
    let outcome = if !s.delivers() {
        "dropped"
    } else {
        match inbox.queue_events(shared, &entries, s.queue_max).await {
            Ok(()) => "queued",
            Err(e) => {
                tracing::warn!(bot = %bot, kind = kind.as_str(), "event not queued: {e}");
                "dropped"
            }
        }
    };
    *shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .events
        .entry((kind.as_str(), outcome))
        .or_default() += n;
}
