//! Bots that talk: inbound messages to the operator's hook, the hook's
//! replies, proactive sends, and the durable queue in between.
//!
//! - [`queue`]: the sealed per-bot inbound queue and traffic counters;
//! - [`hook`]: hook settings, calling a webhook or a command, reading its
//!   answer into [`hook::Action`]s;
//! - [`signing`]: webhook signatures (Standard Webhooks) and their secrets;
//! - this module: the JSON summary of a message, recipients, and carrying
//!   out actions and sends on a connected client.
//!
//! The runner wires them together (`runner::deliver`).

pub mod attach;
pub mod config;
pub mod events;
pub mod hook;
pub mod media;
pub mod outbox;
pub mod pacing;
pub mod process;
pub mod queue;
pub mod send_body;
pub mod signing;

use crate::botid::BotId;
use crate::error::{Error, Result};
use serde_json::{json, Value};
use wacore::proto_helpers::{MessageBuilderExt, MessageExt};
use wacore::types::events::InboundMessage;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::Jid;

/// Longest text `send` accepts and a hook's reply may have, in bytes
/// (WhatsApp's own limit is about 65,000).
pub const MAX_TEXT: usize = 65_536;

/// Both forms of one identity: its LID and its phone-number JID
/// (`user@lid`, `user@s.whatsapp.net`), each `None` when unknown (never
/// guessed: only what the message itself or whatsapp-rust's LID-PN
/// mapping says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Both {
    pub lid: Option<String>,
    pub pn: Option<String>,
}

impl Both {
    /// What `jid` and its alternate form from the message (`alt`) say.
    pub fn of(jid: &Jid, alt: Option<&Jid>) -> Both {
        let mut b = Both::default();
        for j in std::iter::once(jid).chain(alt) {
            if j.is_lid() && b.lid.is_none() {
                b.lid = Some(j.to_non_ad_string());
            } else if j.is_pn() && b.pn.is_none() {
                b.pn = Some(j.to_non_ad_string());
            }
        }
        b
    }

    /// Fills the missing form from whatsapp-rust's LID-PN mapping.
    pub async fn complete(&mut self, client: &whatsapp_rust::Client) {
        let known = match (&self.lid, &self.pn) {
            (Some(_), Some(_)) | (None, None) => return,
            (Some(l), None) => l,
            (None, Some(p)) => p,
        };
        let Ok(jid) = known.parse::<Jid>() else {
            return;
        };
        if let Ok(Some(e)) = client.get_lid_pn_entry(&jid).await {
            self.lid.get_or_insert_with(|| format!("{}@lid", e.lid));
            self.pn
                .get_or_insert_with(|| format!("{}@s.whatsapp.net", e.phone_number));
        }
    }
}

/// The sender's and the chat's identities in both forms (see [`Both`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities {
    pub sender: Both,
    pub chat: Both,
}

impl Identities {
    /// What the message says, completed from the client's mapping when
    /// there is a client.
    pub async fn of(m: &InboundMessage, client: Option<&whatsapp_rust::Client>) -> Identities {
        let src = &m.info.source;
        let sender = Both::of(&src.sender, src.sender_alt.as_ref());
        // A 1:1 chat is the other user: the sender's alternate form names
        // it too (`chat` is the sender's JID without the device).
        let same = !src.is_group && src.chat.user == src.sender.user && !src.is_from_me;
        let chat_alt = if same {
            src.sender_alt.as_ref()
        } else {
            src.recipient_alt.as_ref()
        };
        let mut ids = Identities {
            sender,
            chat: Both::of(&src.chat, chat_alt),
        };
        if let Some(c) = client {
            ids.sender.complete(c).await;
            ids.chat.complete(c).await;
        }
        ids
    }
}

/// The JSON object the hook receives for one inbound message (the
/// `message` event).
pub fn summary(bot: &BotId, m: &InboundMessage, ids: &Identities) -> Value {
    let src = &m.info.source;
    let base = m.message.get_base_message();
    json!({
        "event": "message",
        "bot": bot.as_str(),
        "id": m.info.id.to_string(),
        "chat": src.chat.to_string(),
        "sender": src.sender.to_string(),
        "sender_lid": ids.sender.lid,
        "sender_pn": ids.sender.pn,
        "chat_lid": ids.chat.lid,
        "chat_pn": ids.chat.pn,
        "is_group": src.is_group,
        "from_me": src.is_from_me,
        "push_name": m.info.push_name,
        "time": m.info.timestamp.timestamp(),
        "type": m.info.r#type,
        "media_type": m.info.media_type,
        "text": base.text_content(),
        "caption": base.get_caption(),
        // Kind, type, size, hash…, and where to fetch the file; never its
        // key or path (those are sealed: `media`).
        "media": media::of_message(bot.as_str(), &m.info.id, base, 0).map(|(obj, _)| obj),
    })
}

/// The `message` event with `group_subject`: the group's subject (`null`
/// for a 1:1 chat or a group whose subject is not known).
pub fn with_group_subject(mut summary: Value, subject: Option<String>) -> Value {
    if let Some(o) = summary.as_object_mut() {
        o.insert("group_subject".into(), json!(subject));
    }
    summary
}

/// A recipient from the command line or the API: a phone number in
/// international format (digits, optionally with `+`, spaces or dashes) or
/// a JID (`…@s.whatsapp.net`, `…@g.us`, `…@lid`).
pub fn parse_recipient(to: &str) -> Result<Jid> {
    let bad = || {
        Error::Usage(format!(
            "invalid recipient {to:?}: give a phone number in international format \
             (digits with the country code, e.g. 4915112345678) or a JID \
             (…@s.whatsapp.net, …@g.us, …@lid)"
        ))
    };
    let t = to.trim();
    if t.contains('@') {
        let (user, server) = t.split_once('@').ok_or_else(bad)?;
        let user_ok = !user.is_empty()
            && user
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b':' || b == b'.');
        if !user_ok || !matches!(server, "s.whatsapp.net" | "g.us" | "lid") {
            return Err(bad());
        }
        return t.parse().map_err(|_| bad());
    }
    let digits: String = t
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    if !(6..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(bad());
    }
    format!("{digits}@s.whatsapp.net")
        .parse()
        .map_err(|_| bad())
}

/// Why a hook call, a hook action or a step of a delivery failed. The
/// message stays queued and is tried again; its `last_error` keeps this
/// error's text (what `queue list` shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The webhook, the hook command or an alert command ran past its limit.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        what: &'static str,
        after: std::time::Duration,
    },
    /// The webhook answered with a redirect (never followed).
    #[error("webhook answered {status} (redirect to {location}): redirects are not followed; fix the webhook URL")]
    Redirect { status: u16, location: String },
    /// The webhook answered with a status other than 2xx.
    #[error("webhook answered {0}")]
    Status(u16),
    /// The webhook could not be reached.
    #[error("webhook: {0}")]
    Webhook(String),
    /// The webhook's answer could not be read.
    #[error("webhook answer: {0}")]
    WebhookAnswer(String),
    /// The webhook call's own task failed.
    #[error("webhook task: {0}")]
    Task(String),
    /// The hook (or alert) command could not start or its output not be read.
    #[error("{0}")]
    Process(String),
    /// The hook command exited non-zero.
    #[error("{what} exited with {status}")]
    Exited { what: &'static str, status: String },
    /// Hook actions are never carried out in broadcast, status or newsletter chats.
    #[error("hook actions are not carried out in broadcast, status or newsletter chats")]
    NotHere,
    /// A queued entry holds a chat or sender that is not a JID.
    #[error("queued {0} is not a JID")]
    BadJid(&'static str),
    /// WhatsApp refused an action (send, reaction, read receipt).
    #[error("{what} failed: {reason}")]
    Action { what: &'static str, reason: String },
    /// The operator's policy refuses an action the hook asked for (see
    /// `attach::Policy`): trying again would be refused again, so the
    /// action is skipped with an `action_refused` alert.
    #[error("{what} refused: {reason}")]
    Refused { what: &'static str, reason: String },
    /// An action ran past its limit.
    #[error("action timed out")]
    ActionTimedOut,
    /// Actions need the bot's connection.
    #[error("bot not connected for the hook's actions")]
    NotConnected,
    /// The actions stored with the entry do not read back.
    #[error("stored actions unreadable: {0}")]
    StoredActions(String),
    /// Reading or writing the queue failed.
    #[error("{0}")]
    Vault(String),
    /// The fleet's events stream did not take the event (NATS down, no
    /// acknowledgement, or no `run --nats` for a bot whose sink is NATS).
    #[error("NATS: {0}")]
    Nats(String),
}

impl From<crate::error::Error> for DeliveryError {
    fn from(e: crate::error::Error) -> Self {
        DeliveryError::Vault(e.to_string())
    }
}

/// Sends a text; returns the message id.
pub async fn send_text(
    client: &whatsapp_rust::Client,
    to: &Jid,
    text: &str,
) -> std::result::Result<String, DeliveryError> {
    send_quoting(client, to, text, None).await
}

/// Sends a text quoting message `reply_to` (if given: the quoted message
/// is named by its id, `stanza_id`, and, in a 1:1 chat, its sender is
/// taken to be the recipient, `participant`); returns the message id.
pub async fn send_quoting(
    client: &whatsapp_rust::Client,
    to: &Jid,
    text: &str,
    reply_to: Option<&str>,
) -> std::result::Result<String, DeliveryError> {
    let msg = match reply_to {
        None => wa::Message::text(text),
        Some(id) => wa::Message::text_with_context(
            text,
            wa::ContextInfo {
                stanza_id: Some(id.to_owned()),
                participant: (!to.is_group()).then(|| to.to_string()),
                ..Default::default()
            },
        ),
    };
    client
        .send_message(to.clone(), msg)
        .await
        .map(|r| r.message_id)
        .map_err(|e| DeliveryError::Action {
            what: "sending",
            reason: e.to_string(),
        })
}

/// Whether a hook's actions may act in `chat`: only in the chats `send`
/// writes to (people, `@lid`, groups). Never in `status@broadcast` (a reply
/// there would post a status to every contact), a broadcast list or a
/// newsletter.
pub fn may_act_in(chat: &str) -> bool {
    chat.contains('@') && parse_recipient(chat).is_ok()
}

/// The actions a hook's answer may carry out for a message of `chat`: all
/// of them, or none when the chat is not one [`may_act_in`] allows (logged
/// at WARN, without identifiers). The message counts as delivered either
/// way: asking the hook again would get the same answer.
pub fn admissible(chat: &str, actions: Vec<hook::Action>) -> Vec<hook::Action> {
    if actions.is_empty() || may_act_in(chat) {
        return actions;
    }
    tracing::warn!(
        dropped = actions.len(),
        "hook actions not carried out: the message came from a broadcast, status or \
         newsletter chat, where a bot neither replies nor reacts"
    );
    Vec::new()
}

/// Carries out one hook action for a queued message in its chat (the
/// message's own chat: an action cannot name another). Returns the number
/// of messages it sent.
pub async fn perform(
    client: &whatsapp_rust::Client,
    q: &queue::Queued,
    action: &hook::Action,
    media: &attach::Policy,
) -> std::result::Result<u64, DeliveryError> {
    if !may_act_in(&q.chat) {
        return Err(DeliveryError::NotHere);
    }
    let chat: Jid = q.chat.parse().map_err(|_| DeliveryError::BadJid("chat"))?;
    let sender: Jid = q
        .sender
        .parse()
        .map_err(|_| DeliveryError::BadJid("sender"))?;
    match action {
        hook::Action::Reply { text } => send_text(client, &chat, text).await.map(|_| 1),
        hook::Action::React { emoji } => {
            let key = wa::MessageKey {
                remote_jid: Some(q.chat.clone()),
                from_me: Some(false),
                id: Some(q.id.clone()),
                participant: chat.is_group().then(|| q.sender.clone()),
            };
            client
                .send_reaction(chat, key, emoji)
                .await
                .map(|_| 1)
                .map_err(|e| DeliveryError::Action {
                    what: "reaction",
                    reason: e.to_string(),
                })
        }
        hook::Action::SendFile {
            caption,
            kind,
            file_name,
            mimetype,
            ..
        } => {
            let refused = |reason: String| DeliveryError::Action {
                what: "send_file",
                reason,
            };
            let src = action
                .file_source()
                .ok_or_else(|| refused("needs exactly one of path, url or base64".into()))?;
            let bytes = media.load(&src).await.map_err(|reason| {
                if reason.starts_with(attach::REFUSED) {
                    DeliveryError::Refused {
                        what: "send_file",
                        reason,
                    }
                } else {
                    refused(reason)
                }
            })?;
            let kind = kind
                .as_deref()
                .map(attach::MediaKind::parse)
                .transpose()
                .map_err(refused)?;
            let file = attach::Attachment::new(
                bytes,
                kind,
                mimetype.clone(),
                file_name.clone(),
                caption.clone(),
            )
            .map_err(|e| refused(e.to_string()))?;
            attach::send(client, &chat, file, None)
                .await
                .map(|_| 1)
                .map_err(|e| e.error)
        }
        hook::Action::Read => {
            let who = chat.is_group().then_some(&sender);
            client
                .mark_as_read(&chat, who, &[q.id.as_str()])
                .await
                .map(|_| 0)
                .map_err(|e| DeliveryError::Action {
                    what: "read receipt",
                    reason: e.to_string(),
                })
        }
    }
}

/// A single-thread runtime for the unit tests of this module's parts.
#[cfg(test)]
pub(crate) fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients() {
        for (input, jid) in [
            ("4915112345678", "4915112345678@s.whatsapp.net"),
            ("+49 151 1234-5678", "4915112345678@s.whatsapp.net"),
            (
                "4915112345678@s.whatsapp.net",
                "4915112345678@s.whatsapp.net",
            ),
            ("120363012345678901@g.us", "120363012345678901@g.us"),
        ] {
            assert_eq!(parse_recipient(input).unwrap().to_string(), jid, "{input}");
        }
        for bad in [
            "",
            "hello",
            "12345",
            "01511234567",
            "1234567890123456",
            "abc@s.whatsapp.net",
            "123@example.com",
            "@s.whatsapp.net",
        ] {
            let e = parse_recipient(bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{bad}");
            assert!(e.to_string().contains("invalid recipient"), "{e}");
        }
    }

    #[test]
    fn no_actions_in_broadcast_status_or_newsletter_chats() {
        let reply = || {
            vec![
                hook::Action::Reply { text: "hi".into() },
                hook::Action::Read,
            ]
        };
        for chat in [
            "status@broadcast",
            "1234567890@broadcast",
            "120363012345678901@newsletter",
            "4915112345678",
            "",
        ] {
            assert!(!may_act_in(chat), "{chat}");
            assert_eq!(admissible(chat, reply()), vec![], "{chat}");
        }
        for chat in [
            "4915112345678@s.whatsapp.net",
            "120363012345678901@g.us",
            "123456789012345@lid",
        ] {
            assert!(may_act_in(chat), "{chat}");
            assert_eq!(admissible(chat, reply()), reply(), "{chat}");
        }
    }
}
