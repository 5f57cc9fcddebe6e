//! The JSON body of a send, shared by `POST /api/bots/{id}/messages` and
//! the fleet's send subject (`<prefix>.send.<bot>`): `{"to", "text"}` for a
//! text; for a file `{"to", "file": {"base64", "mimetype"?, "file_name"?},
//! "caption"?, "as"?}`; `reply_to`, `typing`, and `idempotency_key` (the
//! API also takes the `Idempotency-Key` header, which wins).
//!
//! With a file, `text` is refused (the caption is `caption`); `caption`
//! and `as` without a file are refused.

use crate::messaging::attach::{self, MediaKind};
use crate::messaging::outbox::{OutFile, Outgoing};

#[derive(Debug, serde::Deserialize)]
struct JsonBody {
    to: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    typing: bool,
    #[serde(default)]
    file: Option<JsonFile>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default, rename = "as")]
    kind: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    base64: String,
    #[serde(default)]
    mimetype: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
}

/// The message a JSON send body asks for (its `idempotency_key` in the
/// message), the file's bytes apart.
pub fn parse_json(body: &[u8]) -> Result<(Outgoing, Vec<u8>), String> {
    let b: JsonBody = serde_json::from_slice(body)
        .map_err(|e| format!("the body must be JSON describing a send ({e})"))?;
    let file = match b.file {
        None => None,
        Some(f) => {
            let bytes = attach::decode_base64(&f.base64)?;
            Some((f.mimetype, f.file_name, bytes))
        }
    };
    let (mut msg, bytes) = build(Form {
        to: b.to,
        text: b.text,
        caption: b.caption,
        kind: b.kind,
        reply_to: b.reply_to,
        typing: b.typing,
        file,
    })?;
    if let Some(k) = &b.idempotency_key {
        crate::messaging::outbox::check_key(k)?;
    }
    msg.idempotency_key = b.idempotency_key;
    Ok((msg, bytes))
}

/// The fields of a send, whichever form they came in.
pub struct Form {
    pub to: String,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub kind: Option<String>,
    pub reply_to: Option<String>,
    pub typing: bool,
    /// mimetype, file name, bytes
    pub file: Option<(Option<String>, Option<String>, Vec<u8>)>,
}

/// The message of a form, its file's bytes apart.
pub fn build(f: Form) -> Result<(Outgoing, Vec<u8>), String> {
    let mut msg = Outgoing {
        to: f.to,
        reply_to: f.reply_to,
        typing: f.typing,
        ..Default::default()
    };
    match f.file {
        None => {
            if f.caption.is_some() || f.kind.is_some() {
                return Err("\"caption\" and \"as\" need a file".into());
            }
            msg.text = f.text.unwrap_or_default();
            Ok((msg, Vec::new()))
        }
        Some((mimetype, file_name, bytes)) => {
            if f.text.is_some() {
                return Err("with a file, give its caption as \"caption\", not \"text\"".into());
            }
            let kind = f.kind.as_deref().map(MediaKind::parse).transpose()?;
            msg.text = f.caption.unwrap_or_default();
            msg.file = Some(OutFile {
                kind,
                mimetype,
                file_name,
                bytes: Default::default(),
            });
            Ok((msg, bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_rides_in_the_body_and_forms_are_checked() {
        let (m, b) =
            parse_json(br#"{"to":"4915100000001","text":"hi","idempotency_key":"k1"}"#).unwrap();
        assert_eq!(
            (m.text.as_str(), m.idempotency_key.as_deref()),
            ("hi", Some("k1"))
        );
        assert!(b.is_empty());
        let e = parse_json(br#"{"to":"1","caption":"c"}"#).unwrap_err();
        assert!(e.contains("need a file"), "{e}");
        let e = parse_json(b"not json").unwrap_err();
        assert!(e.contains("must be JSON"), "{e}");
        let (m, b) = parse_json(br#"{"to":"1","file":{"base64":"aGk="},"caption":"c"}"#).unwrap();
        assert_eq!((m.text.as_str(), b.as_slice()), ("c", &b"hi"[..]));
    }
}
