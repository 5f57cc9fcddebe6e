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
//!   answered for known contacts (a per-user 404 for unknown pre-keys), a
//!   message to no known contact is nacked (404), otherwise it is acked and
//!   the `<enc>` addressed to the contact decrypted with its Signal state;
//!   the contact sends a delivery receipt only when that worked;
//! - a contact can also write from its LID, have its messages delivered out
//!   of order, and send a retry receipt;
//! - every receipt a bot sends is recorded in the [`PeerLog`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// For a media message: the file, fetched from the peer's media host
    /// and decrypted (`media.rs`); `None` also when that failed (recorded
    /// in `contact_media_errors`).
    pub media: Option<super::ReceivedMedia>,
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
            media: None,
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
    /// The contact's LID user when it writes from its LID (`from` is then
    /// `<lid>@lid` and `sender_pn` its phone JID).
    from_lid: Option<String>,
    t: u64,
    enc_type: &'static str,
    ciphertext: Vec<u8>,
}

/// A contact message encrypted for a bot but not handed to the server yet
/// ([`Contact::encrypt_text`]); [`Contact::post`] delivers it, in whatever
/// order the test chooses.
pub struct Prepared {
    bot_phone: String,
    queued: Queued,
}

impl Prepared {
    pub fn id(&self) -> &str {
        &self.queued.id
    }

    /// The same message (same id) with one byte of its ciphertext flipped:
    /// the bot cannot decrypt it (a corrupted delivery). Posting the intact
    /// one afterwards is a retry that brings it after all.
    pub fn corrupted(&self) -> Prepared {
        let mut queued = self.queued.clone();
        if let Some(b) = queued.ciphertext.last_mut() {
            *b ^= 0x01;
        }
        Prepared {
            bot_phone: self.bot_phone.clone(),
            queued,
        }
    }
}

impl Queued {
    /// The stanza the server pushes to the bot; `offline` marks a
    /// delivery from the offline queue at login.
    pub(crate) fn stanza(&self, offline: bool) -> Node {
        let pn = format!("{}@s.whatsapp.net", self.contact);
        let mut b = match &self.from_lid {
            Some(lid) => NodeBuilder::new("message")
                .attr("from", format!("{lid}@lid"))
                .attr("sender_pn", pn),
            None => NodeBuilder::new("message").attr("from", pn),
        };
        b = b
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
    /// LID user, for a contact made with [`Peer::contact_with_lid`].
    lid: Option<String>,
    signal: tokio::sync::Mutex<ContactSignal>,
    received: watch::Sender<Vec<ContactMessage>>,
    /// Bot messages still to corrupt before decryption ([`Contact::corrupt_next`]).
    corrupt_next: AtomicUsize,
    /// Reads what it receives: a read receipt after each delivery receipt
    /// ([`Contact::read_what_arrives`]).
    reads: std::sync::atomic::AtomicBool,
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
    /// A contact is PN only: usync answers carry no LID for it and it
    /// writes from its phone JID.
    pub fn contact(&self, phone: &str) -> Contact {
        self.contact_inner(phone, None)
    }

    /// A contact migrated to LID addressing, as most WhatsApp users are:
    /// usync answers map its phone to `<lid>@lid` (`<lid val>`), bots can
    /// address it as `…@lid`, and its messages come from its LID (with
    /// `sender_pn`). Same state as [`Peer::contact`] if that phone exists.
    pub fn contact_with_lid(&self, phone: &str) -> Contact {
        self.contact_inner(phone, Some(Shared::lid_for(phone)))
    }

    fn contact_inner(&self, phone: &str, lid: Option<String>) -> Contact {
        let state = lock(&self.shared.contacts)
            .entry(phone.to_string())
            .or_insert_with(|| {
                Arc::new(ContactState {
                    phone: phone.to_string(),
                    lid,
                    signal: tokio::sync::Mutex::new(ContactSignal::generate()),
                    received: watch::Sender::new(Vec::new()),
                    corrupt_next: AtomicUsize::new(0),
                    reads: Default::default(),
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

    /// The LID user of a [`Peer::contact_with_lid`] contact.
    pub fn lid(&self) -> Option<&str> {
        self.state.lid.as_deref()
    }

    /// `<lid>@lid`, for a [`Peer::contact_with_lid`] contact.
    pub fn lid_jid(&self) -> Option<String> {
        self.lid().map(|lid| format!("{lid}@lid"))
    }

    /// Flips one byte of the ciphertext of the next `n` messages bots send
    /// this contact, before it decrypts them (a corrupted delivery): each
    /// fails to decrypt, is recorded in `decrypt_errors`, and gets no
    /// delivery receipt.
    pub fn corrupt_next(&self, n: usize) {
        self.state.corrupt_next.store(n, Ordering::SeqCst);
    }

    /// From now on the contact reads every bot message it decrypts: after
    /// the delivery receipt it sends `<receipt type="read">` for it, from
    /// the same JID (a phone whose user opened the chat).
    pub fn read_what_arrives(&self, on: bool) {
        self.state.reads.store(on, Ordering::SeqCst);
    }

    /// Sends the bot logged in as `bot_phone` a retry receipt for its
    /// message `id` (`<receipt type="retry"><retry count="1"/>
    /// <registration/>`, no `<keys>`), as a phone does after failing to
    /// decrypt: the bot should re-send. Errors when the bot is offline.
    pub async fn send_retry_receipt(&self, bot_phone: &str, id: &str) -> anyhow::Result<()> {
        let registration = self.state.signal.lock().await.registration_id();
        let t = unix_now().to_string();
        let receipt = NodeBuilder::new("receipt")
            .attr("from", self.sender_jid())
            .attr("id", id)
            .attr("type", "retry")
            .attr("t", t.as_str())
            .children([
                NodeBuilder::new("retry")
                    .attr("count", "1")
                    .attr("id", id)
                    .attr("t", t.as_str())
                    .attr("v", "1")
                    .build(),
                NodeBuilder::new("registration")
                    .bytes(registration.to_be_bytes().to_vec())
                    .build(),
            ])
            .build();
        let sent = self.shared.send_online(bot_phone, receipt);
        if sent == 0 {
            bail!("no online connection of {bot_phone} for the retry receipt");
        }
        let record = (self.state.phone.clone(), id.to_string());
        self.shared
            .modify_log(|log| log.contact_retry_receipts.push(record));
        Ok(())
    }

    /// Deletes this contact's WhatsApp account on the server: it leaves
    /// usync and pre-key answers, and the server nacks (404) every message
    /// bots send it from now on, even over an existing Signal session.
    /// The handle keeps working for reading what arrived before.
    pub fn delete_account(&self) {
        lock(&self.shared.contacts).remove(&self.state.phone);
    }

    /// The JID this contact writes from: its LID if it has one.
    fn sender_jid(&self) -> String {
        self.lid_jid().unwrap_or_else(|| self.jid())
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
        let prepared = self.encrypt_message(bot_phone, message).await?;
        Ok(self.post(prepared))
    }

    /// Sends the bot logged in as `bot_phone` a media message: encrypts
    /// the file with whatsapp-rust's media crypto (a fresh media key),
    /// uploads the blob to the peer's media host and sends the matching
    /// proto message (image, video, audio with `ptt` for a voice note,
    /// document, sticker) like [`Contact::send_message`]. Returns the
    /// message id.
    pub async fn send_media(
        &self,
        bot_phone: &str,
        media: super::OutMedia,
    ) -> anyhow::Result<String> {
        let message = super::media::encrypt_and_upload(&self.shared, &self.state.phone, &media)?;
        self.send_message(bot_phone, &message).await
    }

    /// Encrypts `text` for the bot like [`Contact::send_text`] but keeps it:
    /// the server sees nothing until [`Contact::post`]. Two prepared
    /// messages posted in swapped order reach the bot out of order.
    pub async fn encrypt_text(&self, bot_phone: &str, text: &str) -> anyhow::Result<Prepared> {
        let message = wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
        self.encrypt_message(bot_phone, &message).await
    }

    /// Hands a prepared message to the server (pushed or queued, as
    /// [`Contact::send_text`]); returns its id.
    pub fn post(&self, prepared: Prepared) -> String {
        let id = prepared.queued.id.clone();
        self.shared.enqueue(&prepared.bot_phone, prepared.queued);
        id
    }

    async fn encrypt_message(
        &self,
        bot_phone: &str,
        message: &wa::Message,
    ) -> anyhow::Result<Prepared> {
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
            from_lid: self.state.lid.clone(),
            t: unix_now(),
            enc_type,
            ciphertext,
        };
        Ok(Prepared {
            bot_phone: bot_phone.to_string(),
            queued,
        })
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

    /// The contact a JID names: `<phone>@s.whatsapp.net` or, for a contact
    /// with a LID, `<lid>@lid` (device suffix ignored).
    fn contact_state(&self, jid: &str) -> Option<Arc<ContactState>> {
        let (user, _) = user_of(jid);
        let contacts = lock(&self.contacts);
        if jid.ends_with("@lid") {
            contacts
                .values()
                .find(|c| c.lid.as_deref() == Some(user))
                .cloned()
        } else {
            contacts.get(user).cloned()
        }
    }

    /// Sends `node` to `bot_phone`'s online connections; returns how many.
    fn send_online(&self, bot_phone: &str, node: Node) -> usize {
        self.send_to(
            |c| c.online && is_login_of(c, bot_phone),
            || Command::Send(node.clone()),
        )
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
                if user_of(&jid).1 != 0 {
                    continue;
                }
                match shared.contact_state(&jid) {
                    Some(state) => found.push(state.signal.lock().await.bundle_node(&jid)),
                    // Nobody has this number: the per-user error the
                    // server puts in place of a bundle.
                    None => found.push(
                        NodeBuilder::new("user")
                            .attr("jid", jid.as_str())
                            .children([NodeBuilder::new("error")
                                .attr("code", NACK_UNKNOWN_RECIPIENT)
                                .attr("text", "item-not-found")
                                .build()])
                            .build(),
                    ),
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
            let query = child(usync, "query");
            let wants_devices = query.and_then(|q| child(q, "devices")).is_some();
            let wants_lid = query.and_then(|q| child(q, "lid")).is_some();
            let users: Vec<Node> = child(usync, "list")?
                .children()?
                .iter()
                .filter_map(|u| attr(u, "jid"))
                .filter_map(|jid| Some((shared.contact_state(&jid)?, jid)))
                .map(|(state, jid)| contact_usync_user(&state, &jid, wants_devices, wants_lid))
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

/// A contact in a usync answer, under the JID it was asked as (phone or
/// LID): for a lid query its `<lid val>` (a PN-only contact has none), for
/// a device query only its primary device 0.
fn contact_usync_user(state: &ContactState, jid: &str, devices: bool, lid: bool) -> Node {
    let (user, _) = user_of(jid);
    let server = if jid.ends_with("@lid") {
        "lid"
    } else {
        "s.whatsapp.net"
    };
    let mut children = Vec::new();
    if lid {
        if let Some(lid) = &state.lid {
            children.push(
                NodeBuilder::new("lid")
                    .attr("val", format!("{lid}@lid"))
                    .build(),
            );
        }
    }
    if devices {
        children.push(
            NodeBuilder::new("devices")
                .children([NodeBuilder::new("device-list")
                    .attr("hash", format!("2:peer-{}", state.phone))
                    .children([NodeBuilder::new("device").attr("id", "0").build()])
                    .build()])
                .build(),
        );
    }
    let b = NodeBuilder::new("user").attr("jid", format!("{user}@{server}"));
    if children.is_empty() {
        b.build()
    } else {
        b.children(children).build()
    }
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

/// A `<message>` from a bot, as the server handles it. Addressed to no
/// known contact: nacked (`<ack class="message" error="404">`, recorded in
/// `bot_nacks`), like the real server for a recipient it does not know.
/// Otherwise acked (the server took it) and the `<enc>` addressed to each
/// contact is decrypted with its Signal state; a contact that decrypts it
/// answers with a delivery receipt (recorded in `delivery_receipts`), one
/// that cannot records a decrypt error and sends none.
pub(crate) async fn on_bot_message(
    shared: &Shared,
    client: &ClientKind,
    node: &Node,
) -> anyhow::Result<Vec<Node>> {
    let id = need(node, "id")?;
    let to = need(node, "to")?;
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", id.as_str())
        .attr("from", to.as_str())
        .attr("t", unix_now().to_string());
    let ClientKind::Login { phone, device } = client else {
        return Ok(vec![ack.build()]);
    };
    if shared.contact_state(&to).is_none() {
        ack = ack.attr("error", NACK_UNKNOWN_RECIPIENT);
        let record = (
            phone.clone(),
            id.clone(),
            NACK_UNKNOWN_RECIPIENT.to_string(),
        );
        shared.modify_log(|log| log.bot_nacks.push(record));
        return Ok(vec![ack.build()]);
    }
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
        let Some(state) = shared.contact_state(&jid) else {
            continue;
        };
        if user_of(&jid).1 != 0 {
            continue;
        }
        match decrypt_for(&state, phone, *device, enc).await {
            Ok(message) => {
                let mut msg = ContactMessage::new(phone.clone(), id.clone(), message);
                msg.media = super::media::receive(shared, &state.phone, &id, &msg.message);
                state.received.send_modify(|all| all.push(msg));
                // The contact's phone confirms delivery, from the JID the
                // bot addressed.
                let (user, _) = user_of(&jid);
                let server = if jid.ends_with("@lid") {
                    "lid"
                } else {
                    "s.whatsapp.net"
                };
                let receipt = NodeBuilder::new("receipt")
                    .attr("from", format!("{user}@{server}"))
                    .attr("id", id.as_str())
                    .attr("t", unix_now().to_string())
                    .build();
                shared.send_online(phone, receipt);
                let record = (state.phone.clone(), id.clone());
                shared.modify_log(|log| log.delivery_receipts.push(record));
                if state.reads.load(Ordering::SeqCst) {
                    let read = NodeBuilder::new("receipt")
                        .attr("from", format!("{user}@{server}"))
                        .attr("id", id.as_str())
                        .attr("type", "read")
                        .attr("t", unix_now().to_string())
                        .build();
                    shared.send_online(phone, read);
                }
            }
            Err(e) => {
                let text = format!("message {id} from {phone}:{device} to {jid}: {e:#}");
                shared.modify_log(|log| log.decrypt_errors.push(text));
            }
        }
    }
    Ok(vec![ack.build()])
}

/// Nack code for a message to a recipient the server does not know
/// (whatsapp-rust logs it as "404 = recipient not found").
pub const NACK_UNKNOWN_RECIPIENT: &str = "404";

async fn decrypt_for(
    state: &ContactState,
    bot_phone: &str,
    bot_device: u16,
    enc: &Node,
) -> anyhow::Result<wa::Message> {
    let kind = need(enc, "type")?;
    let version: u8 = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
    let mut ciphertext = bytes_of(enc)
        .ok_or_else(|| anyhow!("<enc> without bytes"))?
        .to_vec();
    let corrupt = state
        .corrupt_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if corrupt {
        // The last bytes are the Signal message's MAC.
        if let Some(last) = ciphertext.last_mut() {
            *last ^= 0x01;
        }
    }
    let padded = state
        .signal
        .lock()
        .await
        .decrypt(&bot_address(bot_phone, bot_device), &kind, &ciphertext)
        .await?;
    let plain =
        MessageUtils::unpad_message_ref(&padded, version).map_err(|e| anyhow!("unpadding: {e}"))?;
    Ok(wa::Message::decode_from_slice(plain)?)
}

impl PeerLog {
    /// The server nacked message `id` the bot logged in as `bot_phone` sent.
    pub fn nacked(&self, bot_phone: &str, id: &str) -> bool {
        self.bot_nacks
            .iter()
            .any(|(p, i, _)| p == bot_phone && i == id)
    }

    /// Whether a contact sent a delivery receipt for bot message `id`.
    pub fn delivered_to_contact(&self, id: &str) -> bool {
        self.delivery_receipts.iter().any(|(_, i)| i == id)
    }

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
