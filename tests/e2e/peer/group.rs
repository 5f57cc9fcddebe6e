//! Groups: a bot and two or more contacts in one chat, with Signal sender
//! keys both ways.
//!
//! Why it exists: wavault keeps group chats (and the sender keys that
//! encrypt them) like any other, so the e2e tests need groups the real
//! client talks to. The peer plays the server and the contacts:
//! - the server keeps each group (`<id>@g.us`, subject, members) and answers
//!   whatsapp-rust's `w:g2` IQs: the metadata query (`<query>`, always the
//!   full group) and the participating groups (`<participating>`);
//! - a bot's `<message to="…@g.us">` is acked and fanned out: each member
//!   contact decrypts the sender-key distribution message addressed to it in
//!   `<participants><to jid><enc/></to></participants>` (pkmsg/msg), keeps
//!   the bot's sender key, and decrypts the `<enc type="skmsg">` with
//!   libsignal's group cipher; it answers with a delivery receipt, or
//!   records a decrypt error. Every such send is recorded
//!   ([`PeerLog::group_sends`], with the members a new sender key went to);
//! - a removed participant (a former member) is sent nothing, but tries
//!   every later group message with the sender keys it kept: a failure is
//!   recorded in `group_eavesdrops`, a success (or a sender key addressed to
//!   it) in `group_leaks`;
//! - a contact writes to the group with its own sender key: the first time
//!   per bot with its distribution message (pkmsg/msg to the bot) next to
//!   the `skmsg`, later with the `skmsg` alone; the bot receives
//!   `<message from="…@g.us" participant="…">` through its server queue like
//!   a 1:1 message;
//! - [`Peer::add_to_group`] and [`Peer::remove_from_group`] change the
//!   members and send the bot members the `w:gp2` notification, then wait
//!   for the bots' acks (whatsapp-rust acks after handling it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use whatsapp_rust::anyhow::{self, anyhow, bail};
use whatsapp_rust::async_trait;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::{
    create_sender_key_distribution_message, group_decrypt, group_encrypt,
    process_sender_key_distribution_message, SenderKeyDistributionMessage, SenderKeyName,
    SenderKeyRecord, SenderKeyStore, SignalProtocolError,
};
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::waproto::whatsapp as wa;

use super::connection::Command;
use super::contact::{decrypt_for, user_of, Contact, ContactMessage, ContactState, Queued};
use super::signal::need;
use super::stanza::{attr, bytes_of, child, iq_result, unix_now};
use super::{is_login_of, lock, ClientKind, Peer, Shared};

/// One bot message to a group, as the server saw it.
#[derive(Debug, Clone)]
pub struct GroupSend {
    pub bot_phone: String,
    /// `<id>@g.us`.
    pub group: String,
    pub id: String,
    /// Phones the message carried a sender-key distribution message for
    /// (empty: the members already had the bot's sender key).
    pub skdm_to: Vec<String>,
}

struct GroupState {
    subject: String,
    /// Phones (bots and contacts), the creator first.
    members: Vec<String>,
    /// Phones removed from the group.
    former: Vec<String>,
    creation: u64,
}

/// The server's groups.
#[derive(Default)]
pub(crate) struct Groups {
    by_id: HashMap<String, GroupState>,
    /// (group id, contact, bot): the bot got the contact's sender key.
    distributed: HashSet<(String, String, String)>,
    next: u64,
}

/// The sender keys one contact holds: its own and those bots distributed
/// to it, by `SenderKeyName::cache_key`.
#[derive(Default)]
pub(crate) struct SenderKeys(HashMap<String, SenderKeyRecord>);

#[async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> Result<(), SignalProtocolError> {
        self.0.insert(name.cache_key().to_string(), record);
        Ok(())
    }

    async fn load_sender_key(
        &self,
        name: &SenderKeyName,
    ) -> Result<Option<SenderKeyRecord>, SignalProtocolError> {
        Ok(self.0.get(name.cache_key()).cloned())
    }
}

/// The group part of a contact's message to a bot ([`Queued::group`]).
#[derive(Clone)]
pub(crate) struct GroupPart {
    /// `<id>@g.us`.
    jid: String,
    skmsg: Vec<u8>,
    /// The queued 1:1 ciphertext is the sender-key distribution message.
    with_skdm: bool,
}

impl GroupPart {
    /// `<message from="<group>" participant="<contact>">` with the
    /// distribution message (if any) and the `skmsg`.
    pub(crate) fn stanza(&self, q: &Queued, offline: bool) -> Node {
        let pn = format!("{}@s.whatsapp.net", q.contact);
        let mut b = NodeBuilder::new("message").attr("from", self.jid.as_str());
        b = match &q.from_lid {
            Some(lid) => b
                .attr("participant", format!("{lid}@lid"))
                .attr("participant_pn", pn),
            None => b.attr("participant", pn),
        };
        b = b
            .attr("id", q.id.as_str())
            .attr("t", q.t.to_string())
            .attr("type", "text")
            .attr("notify", format!("Contact {}", q.contact));
        if offline {
            b = b.attr("offline", "1");
        }
        let mut children = Vec::new();
        if self.with_skdm {
            children.push(
                NodeBuilder::new("enc")
                    .attr("v", "2")
                    .attr("type", q.enc_type)
                    .bytes(q.ciphertext.clone())
                    .build(),
            );
        }
        children.push(
            NodeBuilder::new("enc")
                .attr("v", "2")
                .attr("type", "skmsg")
                .bytes(self.skmsg.clone())
                .build(),
        );
        b.children(children).build()
    }
}

/// `<id>` of `<id>@g.us` (or of a bare id).
fn group_id(jid: &str) -> &str {
    jid.split('@').next().unwrap_or_default()
}

fn group_jid(id: &str) -> String {
    format!("{}@g.us", group_id(id))
}

fn pn_jid(phone: &str) -> String {
    format!("{phone}@s.whatsapp.net")
}

/// The name a contact keeps a sender key under: its own (device 0) or a
/// bot device's.
fn key_name(group: &str, phone: &str, device: u16) -> SenderKeyName {
    SenderKeyName::from_parts(&group_jid(group), &format!("{phone}.{device}"))
}

impl Peer {
    /// A group with this subject and these members (phones of bots and
    /// contacts; the first is its creator and admin). Returns `<id>@g.us`.
    /// Bots learn it from their first group message (or `participating`).
    pub fn create_group(&self, subject: &str, members: &[&str]) -> String {
        let mut groups = lock(&self.shared.groups);
        groups.next += 1;
        let id = format!("1203630{:011}", 48_183_000_000 + groups.next);
        groups.by_id.insert(
            id.clone(),
            GroupState {
                subject: subject.to_string(),
                members: members.iter().map(|m| m.to_string()).collect(),
                former: Vec::new(),
                creation: unix_now(),
            },
        );
        group_jid(&id)
    }

    /// The members' phones now.
    pub fn group_members(&self, group: &str) -> Vec<String> {
        lock(&self.shared.groups)
            .by_id
            .get(group_id(group))
            .map(|g| g.members.clone())
            .unwrap_or_default()
    }

    /// Adds `phone` to the group and tells the bot members (`w:gp2`
    /// `<add>`); returns once each online bot member acked it.
    pub async fn add_to_group(&self, group: &str, phone: &str) -> anyhow::Result<()> {
        {
            let mut groups = lock(&self.shared.groups);
            let g = groups
                .by_id
                .get_mut(group_id(group))
                .ok_or_else(|| anyhow!("no group {group}"))?;
            if !g.members.iter().any(|m| m == phone) {
                g.members.push(phone.to_string());
            }
            g.former.retain(|m| m != phone);
        }
        self.notify_members(group, "add", phone).await
    }

    /// Removes `phone` from the group: the server sends it nothing more
    /// (it keeps trying what bots send, see the module doc), and tells the
    /// bot members (`w:gp2` `<remove>`); returns once each online bot
    /// member acked the notification (handled it).
    pub async fn remove_from_group(&self, group: &str, phone: &str) -> anyhow::Result<()> {
        {
            let mut groups = lock(&self.shared.groups);
            let g = groups
                .by_id
                .get_mut(group_id(group))
                .ok_or_else(|| anyhow!("no group {group}"))?;
            if !g.members.iter().any(|m| m == phone) {
                bail!("{phone} is not a member of {group}");
            }
            g.members.retain(|m| m != phone);
            g.former.push(phone.to_string());
        }
        self.notify_members(group, "remove", phone).await
    }

    async fn notify_members(
        &self,
        group: &str,
        action: &'static str,
        phone: &str,
    ) -> anyhow::Result<()> {
        let (members, admin) = {
            let groups = lock(&self.shared.groups);
            let g = &groups.by_id[group_id(group)];
            (
                g.members.clone(),
                g.members.first().cloned().unwrap_or_default(),
            )
        };
        let id = self.shared.iq_id("gp2");
        let node = NodeBuilder::new("notification")
            .attr("from", group_jid(group))
            .attr("type", "w:gp2")
            .attr("id", id.as_str())
            .attr("participant", pn_jid(&admin))
            .attr("t", unix_now().to_string())
            .children([NodeBuilder::new(action)
                .children([NodeBuilder::new("participant")
                    .attr("jid", pn_jid(phone))
                    .build()])
                .build()])
            .build();
        let mut told = Vec::new();
        for m in members.iter().chain(std::iter::once(&phone.to_string())) {
            if self.shared.contact_state(&pn_jid(m)).is_some() || told.contains(m) {
                continue;
            }
            let sent = self.shared.send_to(
                |c| c.online && is_login_of(c, m),
                || Command::Send(node.clone()),
            );
            if sent > 0 {
                told.push(m.clone());
            }
        }
        self.wait_for(
            "the bots' acks of the group notification",
            Duration::from_secs(30),
            |log| {
                told.iter().all(|b| {
                    log.notification_acks
                        .iter()
                        .any(|(p, i)| p == b && *i == id)
                })
            },
        )
        .await
        .map(|_| ())
    }
}

impl Contact {
    /// Writes `text` to a group this contact is a member of, with its own
    /// sender key (made on first use): each bot member gets the message
    /// in its server queue (pushed when online), with the sender-key
    /// distribution message (pkmsg/msg) the first time. Returns the id.
    pub async fn send_group_text(&self, group: &str, text: &str) -> anyhow::Result<String> {
        let gid = group_id(group).to_string();
        let gjid = group_jid(group);
        let me = self.phone().to_string();
        let bots: Vec<String> = {
            let groups = lock(&self.shared.groups);
            let g = groups
                .by_id
                .get(&gid)
                .ok_or_else(|| anyhow!("no group {group}"))?;
            if !g.members.contains(&me) {
                bail!("{me} is not a member of {group}");
            }
            g.members
                .iter()
                .filter(|m| **m != me)
                .filter(|m| self.shared.contact_state(&pn_jid(m)).is_none())
                .cloned()
                .collect()
        };
        let message = wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
        let padded = MessageUtils::pad_message_v2(message.encode_to_vec());
        let name = key_name(&gid, &me, 0);
        let (skdm, skmsg) = {
            let mut all = self.shared.sender_keys.lock().await;
            let keys = all.entry(me.clone()).or_default();
            let mut rng = rand::make_rng::<rand::rngs::StdRng>();
            let skdm = create_sender_key_distribution_message(&name, keys, &mut rng).await?;
            let skmsg = group_encrypt(keys, &name, &padded, &mut rng).await?;
            (skdm.serialized().to_vec(), skmsg.serialized().to_vec())
        };
        let id = format!("3EB0{:016X}", rand::random::<u64>());
        for bot in bots {
            let key = (gid.clone(), me.clone(), bot.clone());
            let first = !lock(&self.shared.groups).distributed.contains(&key);
            let mut queued = if first {
                let wrapper = wa::Message {
                    sender_key_distribution_message: whatsapp_rust::buffa::MessageField::some(
                        wa::message::SenderKeyDistributionMessage {
                            group_id: Some(gjid.clone()),
                            axolotl_sender_key_distribution_message: Some(skdm.clone()),
                        },
                    ),
                    ..Default::default()
                };
                self.encrypt_message(&bot, &wrapper).await?.queued
            } else {
                Queued {
                    id: String::new(),
                    contact: me.clone(),
                    from_lid: self.lid().map(str::to_string),
                    t: unix_now(),
                    enc_type: "msg",
                    ciphertext: Vec::new(),
                    group: None,
                }
            };
            queued.id = id.clone();
            queued.group = Some(GroupPart {
                jid: gjid.clone(),
                skmsg: skmsg.clone(),
                with_skdm: first,
            });
            lock(&self.shared.groups).distributed.insert(key);
            self.shared.enqueue(&bot, queued);
        }
        Ok(id)
    }
}

/// Answers `w:g2` IQs (group metadata, participating groups); `None`
/// for anything else.
pub(crate) fn answer_iq(shared: &Shared, client: &ClientKind, node: &Node) -> Option<Vec<Node>> {
    let ClientKind::Login { phone, device } = client else {
        return None;
    };
    if attr(node, "xmlns").as_deref() == Some("usync") {
        return own_devices(node, phone, *device);
    }
    if attr(node, "xmlns").as_deref() != Some("w:g2")
        || attr(node, "type").as_deref() != Some("get")
    {
        return None;
    }
    let id = attr(node, "id").unwrap_or_default();
    let groups = lock(&shared.groups);
    if child(node, "query").is_some() {
        let to = attr(node, "to").unwrap_or_default();
        let answer = match groups.by_id.get(group_id(&to)) {
            Some(g) if g.members.contains(phone) => {
                let mut result = iq_result(&id, vec![group_node(group_id(&to), g)]);
                result.attrs.insert("from", to.clone());
                result
            }
            found => iq_error(
                &id,
                if found.is_some() { "403" } else { "404" },
                if found.is_some() {
                    "forbidden"
                } else {
                    "item-not-found"
                },
            ),
        };
        return Some(vec![answer]);
    }
    if child(node, "participating").is_some() {
        let mut ids: Vec<&String> = groups
            .by_id
            .iter()
            .filter(|(_, g)| g.members.contains(phone))
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let list: Vec<Node> = ids
            .into_iter()
            .map(|id| group_node(id, &groups.by_id[id]))
            .collect();
        return Some(vec![iq_result(
            &id,
            vec![NodeBuilder::new("groups").children(list).build()],
        )]);
    }
    None
}

/// A device-list query for the bot's own phone alone (a group send after
/// its sender key was reset asks it by itself): the one device logged in,
/// which the bot leaves out of its own distribution. Any other usync is
/// answered in `contact.rs`.
fn own_devices(node: &Node, phone: &str, device: u16) -> Option<Vec<Node>> {
    let usync = child(node, "usync")?;
    child(child(usync, "query")?, "devices")?;
    let users = child(usync, "list")?.children()?;
    let own = !users.is_empty()
        && users
            .iter()
            .all(|u| attr(u, "jid").is_some_and(|j| j == pn_jid(phone)));
    if !own {
        return None;
    }
    let user = NodeBuilder::new("user")
        .attr("jid", pn_jid(phone))
        .children([NodeBuilder::new("devices")
            .children([NodeBuilder::new("device-list")
                .attr("hash", format!("2:peer-{phone}"))
                .children([NodeBuilder::new("device")
                    .attr("id", device.to_string())
                    .build()])
                .build()])
            .build()])
        .build();
    let id = attr(node, "id").unwrap_or_default();
    Some(vec![iq_result(
        &id,
        vec![NodeBuilder::new("usync")
            .children([NodeBuilder::new("list").children([user]).build()])
            .build()],
    )])
}

fn iq_error(id: &str, code: &str, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("type", "error")
        .attr("id", id)
        .attr("from", "g.us")
        .children([NodeBuilder::new("error")
            .attr("code", code)
            .attr("text", text)
            .build()])
        .build()
}

/// `<group>` as in a metadata or participating answer (PN addressing).
fn group_node(id: &str, g: &GroupState) -> Node {
    let participants: Vec<Node> = g
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = NodeBuilder::new("participant").attr("jid", pn_jid(m));
            if i == 0 {
                p.attr("type", "superadmin").build()
            } else {
                p.build()
            }
        })
        .collect();
    NodeBuilder::new("group")
        .attr("id", id)
        .attr("subject", g.subject.as_str())
        .attr("s_t", g.creation.to_string())
        .attr("creation", g.creation.to_string())
        .attr(
            "creator",
            pn_jid(g.members.first().map(String::as_str).unwrap_or("0")),
        )
        .attr("addressing_mode", "pn")
        .attr("size", g.members.len().to_string())
        .children(participants)
        .build()
}

/// An `<ack class="notification">` from a bot is recorded.
pub(crate) fn on_client_ack(shared: &Shared, client: &ClientKind, node: &Node) {
    if attr(node, "class").as_deref() != Some("notification") {
        return;
    }
    let (ClientKind::Login { phone, .. }, Some(id)) = (client, attr(node, "id")) else {
        return;
    };
    let entry = (phone.clone(), id);
    shared.modify_log(|log| log.notification_acks.push(entry));
}

/// A bot's `<message to="…@g.us">` (see the module doc). Returns the
/// server's ack: a nack (404/403) for a group it does not know or is not a
/// member of.
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
    let gid = group_id(&to).to_string();
    let found = lock(&shared.groups)
        .by_id
        .get(&gid)
        .map(|g| (g.members.clone(), g.former.clone()));
    let (members, former) = match found {
        Some((members, former)) if members.contains(phone) => (members, former),
        other => {
            let code = if other.is_some() { "403" } else { "404" };
            ack = ack.attr("error", code);
            let record = (phone.clone(), id.clone(), code.to_string());
            shared.modify_log(|log| log.bot_nacks.push(record));
            return Ok(vec![ack.build()]);
        }
    };
    // Sender-key distribution messages, by recipient phone (primary devices).
    let mut skdm_for: HashMap<String, &Node> = HashMap::new();
    if let Some(parts) = child(node, "participants").and_then(Node::children) {
        for to_node in parts.iter().filter(|p| p.tag == "to") {
            if let (Some(jid), Some(enc)) = (attr(to_node, "jid"), child(to_node, "enc")) {
                let (user, device) = user_of(&jid);
                if device == 0 {
                    skdm_for.insert(user.to_string(), enc);
                }
            }
        }
    }
    let skmsg = node
        .children()
        .unwrap_or_default()
        .iter()
        .find(|c| c.tag == "enc" && attr(c, "type").as_deref() == Some("skmsg"));
    let mut skdm_to: Vec<String> = skdm_for.keys().cloned().collect();
    skdm_to.sort();
    let send = GroupSend {
        bot_phone: phone.clone(),
        group: group_jid(&gid),
        id: id.clone(),
        skdm_to,
    };
    shared.modify_log(|log| log.group_sends.push(send));
    for f in &former {
        if skdm_for.contains_key(f) {
            let leak = format!("{phone} sent its sender key for {gid} to removed {f} ({id})");
            shared.modify_log(|log| log.group_leaks.push(leak));
        }
    }
    let name = key_name(&gid, phone, *device);
    let recipients = members
        .iter()
        .filter(|m| *m != phone)
        .map(|m| (m, true))
        .chain(former.iter().map(|f| (f, false)));
    for (m, member) in recipients {
        let Some(state) = shared.contact_state(&pn_jid(m)) else {
            continue;
        };
        if member {
            if let Some(enc) = skdm_for.get(m) {
                if let Err(e) = take_skdm(shared, &state, phone, *device, &name, enc).await {
                    let text =
                        format!("group {gid} message {id} from {phone}:{device} to {m}: {e:#}");
                    shared.modify_log(|log| log.decrypt_errors.push(text));
                    continue;
                }
            }
        }
        let Some(skmsg) = skmsg else {
            continue;
        };
        match decrypt_skmsg(shared, &state, &name, skmsg).await {
            Ok(message) if member => {
                let msg = ContactMessage::new(phone.clone(), id.clone(), message);
                state.received.send_modify(|all| all.push(msg));
                let receipt = NodeBuilder::new("receipt")
                    .attr("from", group_jid(&gid))
                    .attr("participant", pn_jid(m))
                    .attr("id", id.as_str())
                    .attr("t", unix_now().to_string())
                    .build();
                shared.send_online(phone, receipt);
                let record = (m.clone(), id.clone());
                shared.modify_log(|log| log.delivery_receipts.push(record));
            }
            Ok(_) => {
                let leak = format!("removed {m} decrypted {phone}'s message {id} in {gid}");
                shared.modify_log(|log| log.group_leaks.push(leak));
            }
            Err(e) if member => {
                let text = format!("group {gid} skmsg {id} from {phone}:{device} to {m}: {e:#}");
                shared.modify_log(|log| log.decrypt_errors.push(text));
            }
            Err(_) => {
                let record = (m.clone(), id.clone());
                shared.modify_log(|log| log.group_eavesdrops.push(record));
            }
        }
    }
    Ok(vec![ack.build()])
}

/// Decrypts the 1:1 part addressed to a member and keeps the bot's sender
/// key it carries.
async fn take_skdm(
    shared: &Shared,
    state: &ContactState,
    bot_phone: &str,
    bot_device: u16,
    name: &SenderKeyName,
    enc: &Node,
) -> anyhow::Result<()> {
    let message = decrypt_for(state, bot_phone, bot_device, enc).await?;
    let skdm = message
        .sender_key_distribution_message
        .as_option()
        .and_then(|d| d.axolotl_sender_key_distribution_message.clone())
        .ok_or_else(|| anyhow!("the 1:1 part carries no sender-key distribution message"))?;
    let skdm = SenderKeyDistributionMessage::try_from(skdm.as_slice())?;
    let mut all = shared.sender_keys.lock().await;
    let keys = all.entry(state.phone.clone()).or_default();
    process_sender_key_distribution_message(name, &skdm, keys).await?;
    Ok(())
}

async fn decrypt_skmsg(
    shared: &Shared,
    state: &ContactState,
    name: &SenderKeyName,
    enc: &Node,
) -> anyhow::Result<wa::Message> {
    let version: u8 = attr(enc, "v").and_then(|v| v.parse().ok()).unwrap_or(2);
    let bytes = bytes_of(enc).ok_or_else(|| anyhow!("<enc> without bytes"))?;
    let padded = {
        let mut all = shared.sender_keys.lock().await;
        let keys = all.entry(state.phone.clone()).or_default();
        group_decrypt(bytes, keys, name).await?
    };
    let plain =
        MessageUtils::unpad_message_ref(&padded, version).map_err(|e| anyhow!("unpadding: {e}"))?;
    Ok(wa::Message::decode_from_slice(plain)?)
}
