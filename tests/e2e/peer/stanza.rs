//! Stanza codec and builders for the peer.
//!
//! Why it exists: after the handshake every frame is one binary XMPP node
//! (a flag byte, optionally zlib, then the WhatsApp token encoding). The peer
//! needs to read the client's nodes and write its own; this module keeps the
//! byte-level details and the shapes of the server stanzas in one place, so
//! the protocol logic in `connection.rs` reads as stanzas, not bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use whatsapp_rust::anyhow::{self, Context as _};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::marshal::{marshal, unmarshal_ref};
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::wacore_binary::{Node, NodeContent, SERVER_JID};

/// Decodes a decrypted frame into an owned node.
pub(crate) fn decode(plaintext: &[u8]) -> anyhow::Result<Node> {
    let data = unpack(plaintext).context("unpacking frame")?;
    let node = unmarshal_ref(&data).context("unmarshalling node")?;
    Ok(node.to_owned())
}

/// Encodes a node into a frame plaintext (flag byte included).
pub(crate) fn encode(node: &Node) -> anyhow::Result<Vec<u8>> {
    marshal(node).context("marshalling node")
}

/// String value of an attribute, if present.
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// First direct child with this tag.
pub fn child<'a>(node: &'a Node, tag: &str) -> Option<&'a Node> {
    node.children()?.iter().find(|c| c.tag == tag)
}

/// Byte content of a node (`None` for string or child content).
pub fn bytes_of(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `<iq type="result" id=… from="s.whatsapp.net">children</iq>`.
pub(crate) fn iq_result(id: &str, children: Vec<Node>) -> Node {
    let builder = NodeBuilder::new("iq")
        .attr("type", "result")
        .attr("id", id)
        .attr("from", SERVER_JID);
    if children.is_empty() {
        builder.build()
    } else {
        builder.children(children).build()
    }
}

/// The pairing refs: each `<ref>` becomes one `PairingQrCode` event.
pub(crate) fn pair_device(id: &str, refs: &[String]) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER_JID)
        .attr("id", id)
        .attr("type", "set")
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-device")
            .children(
                refs.iter()
                    .map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build()),
            )
            .build()])
        .build()
}

/// What the phone sends through the server once it scanned the QR code.
pub(crate) fn pair_success(id: &str, device_identity: Vec<u8>, jid: &str, lid: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER_JID)
        .attr("id", id)
        .attr("type", "set")
        .attr("xmlns", "md")
        .attr("t", unix_now().to_string())
        .children([NodeBuilder::new("pair-success")
            .children([
                NodeBuilder::new("device-identity")
                    .bytes(device_identity)
                    .build(),
                NodeBuilder::new("device")
                    .attr("jid", jid)
                    .attr("lid", lid)
                    .build(),
                NodeBuilder::new("platform").attr("name", "android").build(),
            ])
            .build()])
        .build()
}

/// Login accepted.
pub(crate) fn success(lid: &str) -> Node {
    NodeBuilder::new("success")
        .attr("t", unix_now().to_string())
        .attr("lid", lid)
        .build()
}

/// The `<failure>` the real server sends for each refusal: 401 (the client
/// emits `LoggedOut` and the device must pair again), 402 with a ban code
/// and expiry in seconds (`TemporaryBan`), 405 (`ClientOutdated`).
pub(crate) fn failure_for(refusal: super::Refusal) -> Node {
    let builder = NodeBuilder::new("failure")
        .attr("reason", refusal.code().to_string())
        .attr("location", "peer");
    match refusal {
        super::Refusal::Banned => builder.attr("code", "101").attr("expire", "3600").build(),
        _ => builder.build(),
    }
}

/// End of the offline backlog of `count` stanzas: unblocks the client's
/// sends and its post-login sequence.
pub(crate) fn offline_done(count: usize) -> Node {
    NodeBuilder::new("ib")
        .attr("from", SERVER_JID)
        .children([NodeBuilder::new("offline")
            .attr("count", count.to_string())
            .build()])
        .build()
}

/// `<stream:error code=…/>` (515 restart, 401 logged out, 409 replaced, …).
pub(crate) fn stream_error_code(code: u16) -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", code.to_string())
        .build()
}

/// What the server sends when the phone unlinks a device: the client
/// emits `LoggedOut` and stops reconnecting.
pub(crate) fn stream_error_logged_out() -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", "401")
        .children([NodeBuilder::new("conflict")
            .attr("type", "device_removed")
            .build()])
        .build()
}

/// `<stream:error><conflict type=…/></stream:error>`.
pub(crate) fn stream_error_conflict(kind: &str) -> Node {
    NodeBuilder::new("stream:error")
        .children([NodeBuilder::new("conflict").attr("type", kind).build()])
        .build()
}

/// Answer to a batched app-state sync: every requested collection, empty.
/// The client counts an empty collection as synced.
pub(crate) fn empty_app_state(id: &str, request: &Node) -> Node {
    let collections = child(request, "sync")
        .and_then(Node::children)
        .unwrap_or_default()
        .iter()
        .filter(|c| c.tag == "collection")
        .filter_map(|c| attr(c, "name"))
        .map(|name| NodeBuilder::new("collection").attr("name", name).build())
        .collect::<Vec<_>>();
    iq_result(
        id,
        vec![NodeBuilder::new("sync").children(collections).build()],
    )
}
