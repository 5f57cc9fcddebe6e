//! How the peer answers the client's requests once it is logged in.
//!
//! Why it exists: after `<success>` the client runs a start-up sequence whose
//! unanswered IQs stall it for 30-75 s each, and `Connected` only fires once
//! the critical ones are through (peer-notes.md §B.3). This module is the
//! table of answers: empty app-state collections (which count as synced),
//! and an empty result for the other requests the client makes to log in
//! and to message (the passive/active switch, whose offline delivery
//! `connection.rs` adds, pre-key upload and digest, keepalive ping, A/B
//! props, blocklist, privacy settings and tokens, usync), which it accepts or only
//! logs. Anything else is a request the peer does not implement: it gets
//! `<iq type="error"><error code="501" text="feature-not-implemented"/>`, as
//! from the real server, never a success that would hide a missing feature.
//! IQs about contacts (their usync entries and pre-key bundles) and the
//! bot's pre-key upload are seen by `contact.rs` first.

use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Node, SERVER_JID};

use super::stanza::{attr, empty_app_state, iq_result};

/// Namespaces of the requests answered with an empty result.
const EMPTY_RESULT: &[&str] = &[
    "passive", // <active/> after login
    "encrypt", // pre-key upload and digest, fetch of non-contacts
    "w:p",     // keepalive ping
    "abt",     // A/B props
    "blocklist",
    "privacy", // privacy settings and trusted-contact tokens
    "usync",   // device lists and LIDs of non-contacts
];

/// Replies to a client `<iq type="get|set">`, in sending order; `None` for
/// a request the peer does not implement.
pub(crate) fn answer_iq(node: &Node) -> Option<Vec<Node>> {
    let id = attr(node, "id").unwrap_or_default();
    match attr(node, "xmlns").as_deref() {
        Some("w:sync:app:state") => Some(vec![empty_app_state(&id, node)]),
        Some(ns) if EMPTY_RESULT.contains(&ns) => Some(vec![iq_result(&id, Vec::new())]),
        _ => None,
    }
}

/// `tag xmlns=… child=…`: how an unsupported stanza is recorded.
pub(crate) fn describe(node: &Node) -> String {
    let first = node
        .children()
        .and_then(|c| c.first())
        .map(|c| c.tag.to_string())
        .unwrap_or_default();
    format!(
        "{} type={} xmlns={} child={first}",
        node.tag,
        attr(node, "type").unwrap_or_default(),
        attr(node, "xmlns").unwrap_or_default()
    )
}

/// The real server's answer to a request it does not know.
pub(crate) fn not_implemented(node: &Node) -> Node {
    NodeBuilder::new("iq")
        .attr("type", "error")
        .attr("id", attr(node, "id").unwrap_or_default())
        .attr("from", SERVER_JID)
        .children([NodeBuilder::new("error")
            .attr("code", "501")
            .attr("text", "feature-not-implemented")
            .build()])
        .build()
}

/// Client stanzas other than `<iq>` the peer knows: handled elsewhere
/// (message, receipt, ack, ib) or needing no answer (presence, chatstate).
pub(crate) fn known_tag(node: &Node) -> bool {
    matches!(
        &*node.tag,
        "message" | "receipt" | "ack" | "ib" | "presence" | "chatstate" | "iq"
    )
}
