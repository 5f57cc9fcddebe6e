//! How the peer answers the client's requests once it is logged in.
//!
//! Why it exists: after `<success>` the client runs a start-up sequence whose
//! unanswered IQs stall it for 30-75 s each, and `Connected` only fires once
//! the critical ones are through (peer-notes.md §B.3). This module is the
//! table of answers: empty app-state collections (which count as synced),
//! and an empty result for everything else (the passive/active switch,
//! whose offline delivery `connection.rs` adds, pre-key upload,
//! keepalive ping, props, blocklist, privacy, digest, usync), which the
//! client accepts or only logs. IQs about contacts (their usync entries and
//! pre-key bundles) and the bot's pre-key upload are seen by `contact.rs`
//! first.

use whatsapp_rust::wacore_binary::Node;

use super::stanza::{attr, empty_app_state, iq_result};

/// Replies to a client `<iq type="get|set">`, in sending order.
pub(crate) fn answer_iq(node: &Node) -> Vec<Node> {
    let id = attr(node, "id").unwrap_or_default();
    match attr(node, "xmlns").as_deref() {
        Some("w:sync:app:state") => vec![empty_app_state(&id, node)],
        _ => vec![iq_result(&id, Vec::new())],
    }
}
