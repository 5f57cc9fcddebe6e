//! Contacts: WhatsApp users the peer plays, exchanging end-to-end encrypted
//! 1:1 text messages with bots, and the server's message routing for them.
//!
//! Why it exists: wavault keeps what its bots receive and send, so the e2e
//! tests need someone to talk to. A [`Contact`] has its own phone number and
//! Signal identity (see `signal.rs`); it encrypts to the bundle a bot
//! uploaded at login and decrypts what a bot sends it. The server side of
//! that conversation lives here too, with the real server's semantics the
//! product relies on (peer-notes.md §D):
//! - contact → bot: the stanza waits in the bot phone's queue until the bot
//!   acknowledges its id (a receipt of any type but `retry`, or an
//!   `<ack class="message">`); it is pushed at once to an online connection
//!   and again, unchanged (same id, same ciphertext), at every login until
//!   acknowledged, marked `offline="1"` and followed by
//!   `<ib><offline count=N/></ib>`;
//! - bot → contact: usync (LID and device list) and pre-key fetches are
//!   answered for known contacts, the `<enc>` addressed to the contact is
//!   decrypted with its Signal state and the message is acked;
//! - every receipt a bot sends is recorded in the [`PeerLog`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use whatsapp_rust::anyhow::{self, anyhow, bail};
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::waproto::whatsapp as wa;

use super::signal::{bot_address, need, BotBundle, ContactSignal};
use super::stanza::{attr, bytes_of, child, iq_result, unix_now};
use super::{is_login_of, lock, ClientKind, Command, Peer, PeerLog, Shared};

/// A message a bot sent to a contact, decrypted.
#[derive(Debug, Clone)]
pub struct ContactMessage {
    /// The bot's phone number (PN user).
    pub from_phone: String,
    pub id: String,
    pub message: wa::Message,
    /// `conversation` or extended text.
    pub text: Option<String>,
    /// (target message id, emoji) for a reaction.
    pub reaction: Option<(String, String)>,
}

impl ContactMessage {
    fn new(from_phone: String, id: String, message: wa::Message) -> Self {
        let text = message.conversation.clone().or_else(|| {
            message
                .extended_text_message
                .as_option()
                .and_then(|m| m.text.clone())
        });
        let reaction = message.reaction_message.as_option().map(|r| {
            let target = r
                .key
                .as_option()
                .and_then(|k| k.id.clone())
                .unwrap_or_default();
            (target, r.text.clone().unwrap_or_default())
        });
        Self {
            from_phone,
            id,
            message,
            text,
            reaction,
        }
    }
}

/// A `<receipt>` a bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub conn: u64,
    /// Phone of the bot connection it came on (None for a registration).
    pub bot_phone: Option<String>,
    /// The `id` attr, then the ids of `<list><item id>`.
    pub ids: Vec<String>,
    /// `type` attr: None = delivery; `read`, `retry`, `inactive`, …
    pub kind: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
}

/// A contact message waiting in a bot phone's server queue.
#[derive(Clone)]
pub(crate) struct Queued {
    pub(crate) id: String,
    contact: String,
    t: u64,
    enc_type: &'static str,
    ciphertext: Vec<u8>,
}

impl Queued {
    /// The stanza the server pushes to the bot; `offline` marks a
    /// delivery from the offline queue at login.
    pub(crate) fn stanza(&self, offline: bool) -> Node {
        let mut b = NodeBuilder::new("message")
            .attr("from", format!("{}@s.whatsapp.net", self.contact))
            .attr("id", self.id.as_str())
            .attr("t", self.t.to_string())
            .attr("type", "text")
            .attr("notify", format!("Contact {}", self.contact));
        if offline {
            b = b.attr("offline", "1");
        }
        b.children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", self.enc_type)
            .bytes(self.ciphertext.clone())
            .build()])
            .build()
    }
}

/// Server-side message state: the bots' bundles and per-phone queues.
#[derive(Default)]
pub(crate) struct Mailbox {
    bundles: HashMap<String, BotBundle>,
    queues: HashMap<String, Vec<Queued>>,
}

pub(crate) struct ContactState {
    phone: String,
    signal: tokio::sync::Mutex<ContactSignal>,
    received: watch::Sender<Vec<ContactMessage>>,
}

/// Handle to a contact the peer plays. Cheap to clone; all handles for the
/// same phone share state.
#[derive(Clone)]
pub struct Contact {
    shared: Arc<Shared>,
    state: Arc<ContactState>,
}

impl Peer {
    /// The contact with this phone number (digits), created with a fresh
    /// Signal identity (identity key, registration id, signed pre-key,
    /// one-time pre-keys) on first use.
    pub fn contact(&self, phone: &str) -> Contact {
        let state = lock(&self.shared.contacts)
            .entry(phone.to_string())
            .or_insert_with(|| {
                Arc::new(ContactState {
                    phone: phone.to_string(),
                    signal: tokio::sync::Mutex::new(ContactSignal::generate()),
                    received: watch::Sender::new(Vec::new()),
                })
            })
            .clone();
        Contact {
            shared: self.shared.clone(),
            state,
        }
    }
}

impl Contact {
    pub fn phone(&self) -> &str {
        &self.state.phone
    }

    /// `<phone>@s.whatsapp.net`.
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.state.phone)
    }

    /// Encrypts `text` (as `wa::Message { conversation }`) for the bot
    /// logged in as `bot_phone` and hands it to the server: pushed at once
    /// to an online connection of that phone, else queued until its next
    /// login; kept until the bot acknowledges it. The first message starts
    /// a session from the bot's uploaded bundle (pkmsg; Signal keeps
    /// sending pkmsg until the contact receives a reply), later ones reuse
    /// it. Returns the message id.
    pub async fn send_text(&self, bot_phone: &str, text: &str) -> anyhow::Result<String> {
        let message = wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
        self.send_message(bot_phone, &message).await
    }

    /// [`Contact::send_text`] for any message.
    pub async fn send_message(
        &self,
        bot_phone: &str,
        message: &wa::Message,
    ) -> anyhow::Result<String> {
        let mut signal = self.state.signal.lock().await;
        let bundle_device = lock(&self.shared.mailbox)
            .bundles
            .get(bot_phone)
            .map(|b| b.device);
        let device = bundle_device
            .or_else(|| signal.session_device(bot_phone))
            .ok_or_else(|| anyhow!("the peer never saw a pre-key upload of {bot_phone}"))?;
        let address = bot_address(bot_phone, device);
        if !signal.has_session(&address) {
            let bundle = lock(&self.shared.mailbox)
                .bundles
                .get_mut(bot_phone)
                .map(BotBundle::claim)
                .ok_or_else(|| anyhow!("no bundle of {bot_phone} to start a session"))??;
            signal.start_session(&address, &bundle).await?;
        }
        let padded = MessageUtils::pad_message_v2(message.encode_to_vec());
        let (enc_type, ciphertext) = signal.encrypt(&address, &padded).await?;
        let queued = Queued {
            id: format!("3EB0{:016X}", rand::random::<u64>()),
            contact: self.state.phone.clone(),
            t: unix_now(),
            enc_type,
            ciphertext,
        };
        let id = queued.id.clone();
        self.shared.enqueue(bot_phone, queued);
        Ok(id)
    }

    /// Sessions this contact started from a bot's uploaded bundle (one per
    /// bot device, unless the bot re-paired).
    pub async fn sessions_started(&self) -> usize {
        self.state.signal.lock().await.sessions_started
    }

    /// Everything bots sent to this contact, decrypted, in arrival order.
    pub fn received(&self) -> Vec<ContactMessage> {
        self.state.received.borrow().clone()
    }

    /// Waits until `pred` holds for [`Contact::received`], at most
    /// `timeout`; wakes on every new message.
    pub async fn wait_received(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[ContactMessage]) -> bool,
    ) -> anyhow::Result<Vec<ContactMessage>> {
        let mut rx = self.state.received.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|msgs| pred(msgs)))
            .await
            .map(|found| found.map(|msgs| msgs.clone()));
        match waited {
            Ok(Ok(msgs)) => Ok(msgs),
            Ok(Err(_)) => bail!("contact state closed while waiting for {what}"),
            Err(_) => {
                let got: Vec<String> = self
                    .received()
                    .iter()
                    .map(|m| format!("{}:{:?}/{:?}", m.id, m.text, m.reaction))
                    .collect();
                let errors = self.shared.log.borrow().decrypt_errors.clone();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; contact {} received [{}]; decrypt errors {errors:?}",
                    self.state.phone,
                    got.join(", ")
                )
            }
        }
    }
}

impl Shared {
    /// Queues a contact message for `bot_phone` and pushes it to its online
    /// connections.
    fn enqueue(&self, bot_phone: &str, queued: Queued) {
        let mut mailbox = lock(&self.mailbox);
        mailbox
            .queues
            .entry(bot_phone.to_string())
            .or_default()
            .push(queued.clone());
        // Under the mailbox lock: a connection going online snapshots the
        // queue under the same lock, so a message is either in its backlog
        // or sent here, never both, never neither.
        for live in lock(&self.live).values() {
            if live.online && is_login_of(live, bot_phone) {
                let _ = live.commands.send(Command::Deliver(queued.clone()));
            }
        }
    }

    /// Marks connection `conn` online and returns the backlog it must get
    /// first (every unacknowledged message of its phone, in order).
    pub(crate) fn go_online(&self, conn: u64, client: &ClientKind) -> Vec<Queued> {
        let mailbox = lock(&self.mailbox);
        if let Some(live) = lock(&self.live).get_mut(&conn) {
            live.online = true;
        }
        match client {
            ClientKind::Login { phone, .. } => {
                mailbox.queues.get(phone).cloned().unwrap_or_default()
            }
            ClientKind::Registration => Vec::new(),
        }
    }

    fn contact_state(&self, phone: &str) -> Option<Arc<ContactState>> {
        lock(&self.contacts).get(phone).cloned()
    }

    /// Drops acknowledged ids from `bot_phone`'s queue.
    fn acknowledge(&self, bot_phone: &str, ids: &[String]) {
        if let Some(q) = lock(&self.mailbox).queues.get_mut(bot_phone) {
            q.retain(|m| !ids.contains(&m.id));
        }
    }
}

fn user_of(jid: &str) -> (&str, u16) {
    let bare = jid.split('@').next().unwrap_or_default();
    match bare.split_once(':') {
        Some((user, device)) => (user, device.parse().unwrap_or(0)),
        None => (bare, 0),
    }
}

fn login_phone(client: &ClientKind) -> Option<&str> {
    match client {
        ClientKind::Login { phone, .. } => Some(phone),
        ClientKind::Registration => None,
    }
}

/// Answers the IQs that concern contacts and bundles; `None` leaves the
/// IQ to the default table in `login.rs`.
pub(crate) async fn answer_iq(
    shared: &Shared,
    client: &ClientKind,
    node: &Node,
) -> Option<Vec<Node>> {
    let id = attr(node, "id").unwrap_or_default();
    match (
        attr(node, "xmlns").as_deref(),
        attr(node, "type").as_deref(),
    ) {
        (Some("encrypt"), Some("set")) => {
            if let ClientKind::Login { phone, device } = client {
                match BotBundle::from_upload(node, *device) {
                    Some(Ok(bundle)) => {
                        lock(&shared.mailbox).bundles.insert(phone.clone(), bundle);
                        let phone = phone.clone();
                        shared.modify_log(|log| log.bundles_uploaded.push(phone));
                    }
                    Some(Err(e)) => shared.modify_log(|log| {
                        log.errors
                            .push(format!("bad pre-key upload of {phone}: {e:#}"))
                    }),
                    None => {}
                }
            }
            None
        }
        (Some("encrypt"), Some("get")) => {
            let users = child(node, "key")?.children()?;
            let mut found = Vec::new();
            for user in users.iter().filter(|u| u.tag == "user") {
                let jid = attr(user, "jid")?;
                let (phone, device) = user_of(&jid);
                if device != 0 {
                    continue;
                }
                if let Some(state) = shared.contact_state(phone) {
                    found.push(state.signal.lock().await.bundle_node(&jid));
                }
            }
            (!found.is_empty()).then(|| {
                vec![iq_result(
                    &id,
                    vec![NodeBuilder::new("list").children(found).build()],
                )]
            })
        }
        (Some("usync"), _) => {
            let usync = child(node, "usync")?;
            let wants_devices = child(usync, "query")
                .and_then(|q| child(q, "devices"))
                .is_some();
            let users: Vec<Node> = child(usync, "list")?
                .children()?
                .iter()
                .filter_map(|u| attr(u, "jid"))
                .filter(|jid| shared.contact_state(user_of(jid).0).is_some())
                .map(|jid| contact_usync_user(&jid, wants_devices))
                .collect();
            (!users.is_empty()).then(|| {
                vec![iq_result(
                    &id,
                    vec![NodeBuilder::new("usync")
                        .children([NodeBuilder::new("list").children(users).build()])
                        .build()],
                )]
            })
        }
        _ => None,
    }
}

/// A contact in a usync answer: a PN user without LID and, for a device
/// query, with only its primary device 0.
fn contact_usync_user(jid: &str, devices: bool) -> Node {
    let (phone, _) = user_of(jid);
    let b = NodeBuilder::new("user").attr("jid", format!("{phone}@s.whatsapp.net"));
    if !devices {
        return b.build();
    }
    b.children([NodeBuilder::new("devices")
        .children([NodeBuilder::new("device-list")
            .attr("hash", format!("2:peer-{phone}"))
            .children([NodeBuilder::new("device").attr("id", "0").build()])
            .build()])
        .build()])
        .build()
}

/// A `<receipt>` from a bot: recorded; unless it asks for a retry, its ids
/// leave the bot phone's queue. Returns the server's ack.
pub(crate) fn on_receipt(
    shared: &Shared,
    conn: u64,
    client: &ClientKind,
    node: &Node,
) -> Vec<Node> {
    let mut ids: Vec<String> = attr(node, "id").into_iter().collect();
    if let Some(list) = child(node, "list").and_then(Node::children) {
        ids.extend(
            list.iter()
                .filter(|i| i.tag == "item")
                .filter_map(|i| attr(i, "id")),
        );
    }
    let record = ReceiptRecord {
        conn,
        bot_phone: login_phone(client).map(str::to_string),
        ids,
        kind: attr(node, "type"),
        to: attr(node, "to"),
        from: attr(node, "from"),
    };
    if let Some(phone) = &record.bot_phone {
        if record.kind.as_deref() != Some("retry") {
            shared.acknowledge(phone, &record.ids);
        }
    }
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "receipt")
        .attr("id", attr(node, "id").unwrap_or_default());
    if let Some(to) = &record.to {
        ack = ack.attr("from", to.as_str());
    }
    if let Some(kind) = &record.kind {
        ack = ack.attr("type", kind.as_str());
    }
    shared.modify_log(|log| log.receipts.push(record));
    vec![ack.build()]
}

/// An `<ack class="message">` from a bot acknowledges a delivered message.
pub(crate) fn on_client_ack(shared: &Shared, client: &ClientKind, node: &Node) {
    if attr(node, "class").as_deref() != Some("message") {
        return;
    }
    let (Some(phone), Some(id)) = (login_phone(client), attr(node, "id")) else {
        return;
    };
    shared.acknowledge(phone, std::slice::from_ref(&id));
    shared.modify_log(|log| log.bot_acks.push((phone.to_string(), id)));
}

/// A `<message>` from a bot: decrypts the `<enc>` addressed to each known
/// contact and returns the server's `<ack class="message">`.
pub(crate) async fn on_bot_message(
    shared: &Shared,
    client: &ClientKind,
    node: &Node,
) -> anyhow::Result<Vec<Node>> {
    let id = need(node, "id")?;
    let to = need(node, "to")?;
    let ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", id.as_str())
        .attr("from", to.as_str())
        .attr("t", unix_now().to_string())
        .build();
    let ClientKind::Login { phone, device } = client else {
        return Ok(vec![ack]);
    };
    // (recipient jid, enc) pairs: the fanout form, or one direct <enc>.
    let mut targets: Vec<(String, &Node)> = Vec::new();
    if let Some(parts) = child(node, "participants").and_then(Node::children) {
        for to_node in parts.iter().filter(|p| p.tag == "to") {
            if let (Some(jid), Some(enc)) = (attr(to_node, "jid"), child(to_node, "enc")) {
                targets.push((jid, enc));
            }
        }
    } else if let Some(enc) = child(node, "enc") {
        targets.push((to.clone(), enc));
    }
    for (jid, enc) in targets {
        let (user, recipient_device) = user_of(&jid);
        let Some(state) = shared.contact_state(user) else {
            continue;
        };
        if recipient_device != 0 {
            continue;
        }
        match decrypt_for(&state, phone, *device, enc).await {
            Ok(message) => {
                let msg = ContactMessage::new(phone.clone(), id.clone(), message);
                state.received.send_modify(|all| all.push(msg));
            }
            Err(e) => {
                let text = format!("message {id} from {phone}:{device} to {jid}: {e:#}");
                shared.modify_log(|log| log.decrypt_errors.push(text));
            }
        }
    }
    Ok(vec![ack])
}

async fn decrypt_for(
    state: &ContactState,
    bot_phone: &str,
    bot_device: u16,
    enc: &Node,
) -> anyhow::Result<wa::Message> {
    let kind = need(enc, "type")?;
    let version: u8 = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
    let ciphertext = bytes_of(enc).ok_or_else(|| anyhow!("<enc> without bytes"))?;
    let padded = state
        .signal
        .lock()
        .await
        .decrypt(&bot_address(bot_phone, bot_device), &kind, ciphertext)
        .await?;
    let plain =
        MessageUtils::unpad_message_ref(&padded, version).map_err(|e| anyhow!("unpadding: {e}"))?;
    Ok(wa::Message::decode_from_slice(plain)?)
}

impl PeerLog {
    /// Receipts a bot sent with `type="retry"` (it could not decrypt).
    pub fn retry_receipts(&self) -> impl Iterator<Item = &ReceiptRecord> {
        self.receipts
            .iter()
            .filter(|r| r.kind.as_deref() == Some("retry"))
    }

    /// The bot logged in as `bot_phone` acknowledged message `id` (a
    /// non-retry receipt naming it, or an `<ack class="message">`).
    pub fn acked(&self, bot_phone: &str, id: &str) -> bool {
        self.receipts.iter().any(|r| {
            r.bot_phone.as_deref() == Some(bot_phone)
                && r.kind.as_deref() != Some("retry")
                && r.ids.iter().any(|i| i == id)
        }) || self.bot_acks.iter().any(|(p, i)| p == bot_phone && i == id)
    }

    /// How many times message `id` was pushed to a connection of `bot_phone`.
    pub fn deliveries(&self, bot_phone: &str, id: &str) -> usize {
        self.inbound_delivered
            .iter()
            .filter(|(p, i)| p == bot_phone && i == id)
            .count()
    }

    /// Receipts of `kind` (None = delivery) naming `id`.
    pub fn receipts_for<'a>(
        &'a self,
        id: &'a str,
        kind: Option<&'a str>,
    ) -> impl Iterator<Item = &'a ReceiptRecord> {
        self.receipts
            .iter()
            .filter(move |r| r.kind.as_deref() == kind && r.ids.iter().any(|i| i == id))
    }

    /// `type` of the `<enc>` in each contact message the peer sent, in order
    /// (redeliveries included), as (message id, pkmsg|msg).
    pub fn sent_enc_types(&self) -> Vec<(String, String)> {
        self.sent
            .iter()
            .filter(|s| s.node.tag == "message")
            .filter_map(|s| {
                let id = attr(&s.node, "id")?;
                let kind = attr(child(&s.node, "enc")?, "type")?;
                Some((id, kind))
            })
            .collect()
    }
}
