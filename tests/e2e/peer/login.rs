//! How the peer answers the client's requests once it is logged in.
//!
//! Why it exists: after `<success>` the client runs a start-up sequence whose
//! unanswered IQs stall it for 30-75 s each, and `Connected` only fires once
//! the critical ones are through (peer-notes.md §B.3). This module is the
//! table of answers: the passive/active switch (followed by the end of the
//! empty offline backlog), empty app-state collections (which count as
//! synced), and an empty result for everything else (pre-key upload,
//! keepalive ping, props, blocklist, privacy, digest, usync), which the
//! client accepts or only logs.

use whatsapp_rust::wacore_binary::Node;

use super::stanza::{attr, child, empty_app_state, iq_result, offline_done};

/// Replies to a client `<iq type="get|set">`, in sending order.
pub(crate) fn answer_iq(node: &Node) -> Vec<Node> {
    let id = attr(node, "id").unwrap_or_default();
    match attr(node, "xmlns").as_deref() {
        // Leaving passive mode is when the server starts the offline
        // delivery; there is none, so its end follows at once. Without it
        // the client waits 60 s before sending anything.
        Some("passive") if child(node, "active").is_some() => {
            vec![iq_result(&id, Vec::new()), offline_done()]
        }
        Some("w:sync:app:state") => vec![empty_app_state(&id, node)],
        _ => vec![iq_result(&id, Vec::new())],
    }
}
