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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use wacore::types::message::{MessageInfo, MessageSource};
    use whatsapp_rust::waproto::whatsapp as wa;

    fn message(text: &str) -> InboundMessage {
        let info = MessageInfo {
            source: MessageSource {
                chat: "491511234567@s.whatsapp.net".parse().unwrap(),
                sender: "491511234567@s.whatsapp.net".parse().unwrap(),
                ..Default::default()
            },
            id: "3EB0ABCDEF".into(),
            push_name: "Alice".into(),
            r#type: "text".into(),
            ..Default::default()
        };
        let msg = wa::Message {
            conversation: Some(text.into()),
            ..Default::default()
        };
        InboundMessage::builder()
            .message(Arc::new(msg))
            .info(Arc::new(info))
            .build()
    }

    #[test]
    fn summary_carries_bot_sender_and_text() {
        let bot = BotId::parse("sales").unwrap();
        let v = summary(&bot, &message("hello there"));
        assert_eq!(v["bot"], "sales");
        assert_eq!(v["id"], "3EB0ABCDEF");
        assert_eq!(v["chat"], "491511234567@s.whatsapp.net");
        assert_eq!(v["sender"], "491511234567@s.whatsapp.net");
        assert_eq!(v["push_name"], "Alice");
        assert_eq!(v["text"], "hello there");
        assert_eq!(v["is_group"], false);
        assert_eq!(v["from_me"], false);
    }

    /// Accepts one HTTP request, answers 200 with `reply`, returns the request.
    fn one_shot_server(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut s = stream;
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
            head + &String::from_utf8(body).unwrap()
        });
        (url, h)
    }

    #[test]
    fn post_delivers_one_json_object() {
        let (url, server) = one_shot_server("ok");
        let body = summary(&BotId::parse("sales").unwrap(), &message("hi"));
        assert_eq!(post(&url, &body).unwrap(), "ok");
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(request
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        let sent: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(sent, body);
    }

    #[test]
    fn unreachable_webhook_is_an_error_not_a_panic() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is dropped: nothing listens there now.
        let err = post(&format!("http://127.0.0.1:{port}/hook"), &json!({})).unwrap_err();
        assert!(!err.is_empty());
    }
}
