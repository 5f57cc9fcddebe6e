//! Inbound messages to the operator's webhook: one JSON object per message,
//! POSTed from a background task. A failing or slow webhook never blocks or
//! stops the bot (time limit per request; errors are logged).

use crate::botid::BotId;
use serde_json::{json, Value};
use std::time::Duration;
use wacore::proto_helpers::MessageExt;
use wacore::types::events::InboundMessage;

/// Per-request time limit.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON summary of one inbound message.
pub fn summary(bot: &BotId, m: &InboundMessage) -> Value {
    let src = &m.info.source;
    let base = m.message.get_base_message();
    json!({
        "bot": bot.as_str(),
        "id": m.info.id.to_string(),
        "chat": src.chat.to_string(),
        "sender": src.sender.to_string(),
        "is_group": src.is_group,
        "from_me": src.is_from_me,
        "push_name": m.info.push_name,
        "time": m.info.timestamp.timestamp(),
        "type": m.info.r#type,
        "media_type": m.info.media_type,
        "text": base.text_content(),
        "caption": base.get_caption(),
    })
}

/// POSTs `body` to `url` in the background.
pub fn spawn_post(url: String, body: Value) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = post(&url, &body) {
            tracing::warn!("webhook delivery failed: {e}");
        }
    });
}

/// POSTs `body` to `url` and returns the response body (for replies, later).
pub fn post(url: &str, body: &Value) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .map_err(|e| e.to_string())?;
    resp.body_mut().read_to_string().map_err(|e| e.to_string())
}
