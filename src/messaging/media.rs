//! Inbound media: what the hook's `message` event says about a photo, voice
//! note, video, document or sticker, and the sealed download parameters
//! that let `GET /api/bots/{id}/media/{message_id}` and `wavault media get`
//! fetch the file later.
//!
//! Why it exists: a media message carries no file, only a key and the
//! blob's path on WhatsApp's media hosts. The hook must learn what arrived
//! (kind, type, size, hash, caption…) and how to ask wavault for the bytes,
//! but never the media key or the path: whoever holds both can fetch and
//! decrypt the file without wavault. So:
//! - [`of_message`] splits a message into the event's `media` object
//!   (public: no key, no path) and the [`Sealed`] parameters;
//! - the parameters are sealed in the vault as record kind
//!   [`Kind::MEDIA`] (name = the message id) when the message is queued
//!   for the hook ([`put_op`]), and removed by the retention sweep once
//!   the message is older than the retention (`--retention`, [`prune`]);
//! - [`download`] fetches and decrypts through the bot's connected client
//!   (whatsapp-rust checks the blob's MAC) and checks the plaintext's
//!   length and SHA-256 again; a blob that fails either is refused
//!   ([`MediaError::HashMismatch`]), never handed on.
//!
//! `sha256` in the event is the plaintext file's SHA-256 as the sender
//! declared it (`fileSha256`), lowercase hex.

use crate::codec;
use crate::error::{Error, Result};
use crate::vault::{BatchOp, BotView, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use whatsapp_rust::waproto::whatsapp as wa;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The default `--media-max`: 64 MiB.
pub const DEFAULT_MAX: u64 = 64 << 20;
/// The largest `--media-max` accepted: 2 GiB (WhatsApp's own limit).
pub const MAX_MAX: u64 = 2 << 30;
/// The largest `--media-inline-max`: 16 MiB (base64 in a JSON event).
pub const INLINE_MAX_MAX: u64 = 16 << 20;

/// Refuses absurd `--media-max` / `--media-inline-max` values (usage error).
pub fn check_limits(max: u64, inline_max: Option<u64>) -> Result<()> {
    if max == 0 || max > MAX_MAX {
        return Err(Error::Usage(format!(
            "--media-max {max} bytes is out of range: give 1B..=2GiB (default 64MiB)"
        )));
    }
    if let Some(i) = inline_max {
        if i == 0 || i > INLINE_MAX_MAX || i > max {
            return Err(Error::Usage(format!(
                "--media-inline-max {i} bytes is out of range: give 1B..=16MiB, at most --media-max"
            )));
        }
    }
    Ok(())
}

/// A size: a number of bytes with an optional unit (`B`, `KiB`, `MiB`,
/// `GiB`, or `K`/`M`/`G`, all powers of 1024; `KB`, `MB`, `GB` are powers
/// of 1000), e.g. `256KiB`, `64MiB`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: give e.g. 256KiB, 64MiB or 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("`{s}`: unknown size unit (use B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// What is needed to fetch and decrypt one media file. Sealed in the vault;
/// never in an event, a log line or an error message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Sealed {
    /// `image`, `video`, `audio`, `voice`, `document` or `sticker`.
    pub kind: String,
    pub mimetype: Option<String>,
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
    pub file_length: u64,
    /// Unix seconds when the message was queued (the retention counts from it).
    pub received_at: i64,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("kind", &self.kind)
            .field("file_length", &self.file_length)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    /// The media type whose keys decrypt this kind.
    fn media_type(&self) -> wacore::download::MediaType {
        use wacore::download::MediaType;
        match self.kind.as_str() {
            "image" => MediaType::Image,
            "video" => MediaType::Video,
            "audio" | "voice" => MediaType::Audio,
            "sticker" => MediaType::Sticker,
            _ => MediaType::Document,
        }
    }

    /// The content type to serve the file with.
    pub fn content_type(&self) -> String {
        self.mimetype
            .as_deref()
            .filter(|m| valid_mimetype(m))
            .unwrap_or("application/octet-stream")
            .to_string()
    }
}

/// A mimetype safe to put in a header: `type/subtype` and parameters,
/// printable ASCII, no line breaks.
fn valid_mimetype(m: &str) -> bool {
    m.len() <= 255 && m.contains('/') && m.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The public fields of a media message (the event's `media` object
/// without `url` and `base64`).
struct Parts<'a> {
    kind: &'static str,
    mimetype: Option<&'a str>,
    caption: Option<&'a str>,
    file_name: Option<&'a str>,
    seconds: Option<u32>,
    width: Option<u32>,
    height: Option<u32>,
    file_length: Option<u64>,
    file_sha256: Option<&'a [u8]>,
    file_enc_sha256: Option<&'a [u8]>,
    media_key: Option<&'a [u8]>,
    direct_path: Option<&'a str>,
}

fn parts(m: &wa::Message) -> Option<Parts<'_>> {
    if let Some(i) = m.image_message.as_option() {
        return Some(Parts {
            kind: "image",
            mimetype: i.mimetype.as_deref(),
            caption: i.caption.as_deref(),
            file_name: None,
            seconds: None,
            width: i.width,
            height: i.height,
            file_length: i.file_length,
            file_sha256: i.file_sha256.as_deref(),
            file_enc_sha256: i.file_enc_sha256.as_deref(),
            media_key: i.media_key.as_deref(),
            direct_path: i.direct_path.as_deref(),
        });
    }
    if let Some(v) = m.video_message.as_option() {
        return Some(Parts {
            kind: "video",
            mimetype: v.mimetype.as_deref(),
            caption: v.caption.as_deref(),
            file_name: None,
            seconds: v.seconds,
            width: v.width,
            height: v.height,
            file_length: v.file_length,
            file_sha256: v.file_sha256.as_deref(),
            file_enc_sha256: v.file_enc_sha256.as_deref(),
            media_key: v.media_key.as_deref(),
            direct_path: v.direct_path.as_deref(),
        });
    }
    if let Some(a) = m.audio_message.as_option() {
        return Some(Parts {
            kind: if a.ptt == Some(true) {
                "voice"
            } else {
                "audio"
            },
            mimetype: a.mimetype.as_deref(),
            caption: None,
            file_name: None,
            seconds: a.seconds,
            width: None,
            height: None,
            file_length: a.file_length,
            file_sha256: a.file_sha256.as_deref(),
            file_enc_sha256: a.file_enc_sha256.as_deref(),
            media_key: a.media_key.as_deref(),
            direct_path: a.direct_path.as_deref(),
        });
    }
    if let Some(d) = m.document_message.as_option() {
        return Some(Parts {
            kind: "document",
            mimetype: d.mimetype.as_deref(),
            caption: d.caption.as_deref(),
            file_name: d.file_name.as_deref(),
            seconds: None,
            width: None,
            height: None,
            file_length: d.file_length,
            file_sha256: d.file_sha256.as_deref(),
            file_enc_sha256: d.file_enc_sha256.as_deref(),
            media_key: d.media_key.as_deref(),
            direct_path: d.direct_path.as_deref(),
        });
    }
    if let Some(s) = m.sticker_message.as_option() {
        return Some(Parts {
            kind: "sticker",
            mimetype: s.mimetype.as_deref(),
            caption: None,
            file_name: None,
            seconds: None,
            width: s.width,
            height: s.height,
            file_length: s.file_length,
            file_sha256: s.file_sha256.as_deref(),
            file_enc_sha256: s.file_enc_sha256.as_deref(),
            media_key: s.media_key.as_deref(),
            direct_path: s.direct_path.as_deref(),
        });
    }
    None
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The media of message `message_id` of `bot`: the event's `media` object
/// and, when the message names a downloadable blob, its sealed download
/// parameters (`received_at` = `now`). `None` for a message without media.
/// `message` is the message with its wrappers removed (`get_base_message`).
pub fn of_message(
    bot: &str,
    message_id: &str,
    message: &wa::Message,
    now: i64,
) -> Option<(Value, Option<Sealed>)> {
    let p = parts(message)?;
    let sealed = match (p.direct_path, p.media_key, p.file_sha256, p.file_enc_sha256) {
        (Some(path), Some(key), Some(sha), Some(enc)) if !path.is_empty() && !key.is_empty() => {
            Some(Sealed {
                kind: p.kind.to_string(),
                mimetype: p.mimetype.map(str::to_string),
                direct_path: path.to_string(),
                media_key: key.to_vec(),
                file_sha256: sha.to_vec(),
                file_enc_sha256: enc.to_vec(),
                file_length: p.file_length.unwrap_or(0),
                received_at: now,
            })
        }
        _ => None,
    };
    let url = sealed
        .as_ref()
        .map(|_| format!("/api/bots/{bot}/media/{}", url_segment(message_id)));
    let obj = json!({
        "kind": p.kind,
        "mimetype": p.mimetype,
        "size": p.file_length,
        "sha256": p.file_sha256.map(hex),
        "caption": p.caption,
        "file_name": p.file_name,
        "seconds": p.seconds,
        "width": p.width,
        "height": p.height,
        "url": url,
    });
    Some((obj, sealed))
}

/// A message id as one URL path segment (ids are `[0-9A-F]` in practice;
/// anything else is percent-encoded).
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The batch op that seals `sealed` as the media of message `message_id`.
pub fn put_op(message_id: &str, sealed: &Sealed) -> BatchOp {
    BatchOp::Put {
        kind: Kind::MEDIA,
        name: message_id.as_bytes().to_vec(),
        data: codec::encode(sealed),
    }
}

/// The sealed media of message `message_id`, if it is still kept.
pub fn load(view: &BotView, message_id: &str) -> Result<Option<Sealed>> {
    match view.get(Kind::MEDIA, message_id.as_bytes())? {
        Some(mut b) => {
            let out = codec::decode(&b)
                .map_err(|e| Error::damaged(format!("media record is malformed: {e}")));
            b.zeroize();
            out.map(Some)
        }
        None => Ok(None),
    }
}

/// Removes the media records of messages queued before `cutoff` (unix
/// seconds); a record that does not read back is removed too. Returns how
/// many were removed.
pub fn prune(view: &BotView, cutoff: i64) -> Result<u64> {
    let mut ops = Vec::new();
    for (name, mut data) in view.scan(Kind::MEDIA)? {
        let expired = codec::decode::<Sealed>(&data).map_or(true, |s| s.received_at < cutoff);
        data.zeroize();
        if expired {
            ops.push(BatchOp::Delete {
                kind: Kind::MEDIA,
                name,
            });
        }
    }
    if !ops.is_empty() {
        view.apply(&ops)?;
    }
    Ok(ops.len() as u64)
}

/// Why a media file could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Unknown bot, unknown message, a message without media, or one past
    /// its retention.
    #[error("not found: {0}")]
    NotFound(String),
    /// Larger than `--media-max`: refused before downloading.
    #[error("media of message {id} is {size} bytes, more than --media-max ({max} bytes): not downloaded")]
    TooLarge { id: String, size: u64, max: u64 },
    /// The blob failed its MAC or the plaintext its SHA-256 / length: a
    /// corrupted or forged file, nothing delivered.
    #[error("media of message {id} failed verification (hash mismatch: {what}): the file was corrupted or forged on the way; nothing was delivered")]
    HashMismatch { id: String, what: String },
    /// The bot is not running or not connected here.
    #[error("{0}")]
    Unavailable(String),
    /// The download failed otherwise (the media host refused, timed out…).
    #[error("downloading the media of message {id} failed: {reason}")]
    Download { id: String, reason: String },
    /// Reading the vault failed.
    #[error("{0}")]
    Vault(String),
}

impl From<MediaError> for Error {
    fn from(e: MediaError) -> Error {
        match e {
            MediaError::NotFound(what) => Error::NotFound(what),
            MediaError::HashMismatch { .. } => Error::Damaged {
                what: e.to_string(),
                hint: "fetch it again later, or ask the sender to send it again",
            },
            MediaError::Unavailable(m) => Error::Unavailable(m),
            e => Error::Other(e.to_string()),
        }
    }
}

/// A downloaded, verified media file.
#[derive(Debug, Clone)]
pub struct MediaFile {
    pub kind: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// How long one download may take.
pub const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Fetches and decrypts `sealed` (message `id`) through `client`, refusing
/// one larger than `max` before any byte is fetched. whatsapp-rust checks
/// the blob's MAC; the plaintext's length and SHA-256 are checked here.
/// The whole file is verified before it is returned (nothing is handed on
/// unverified: the MAC covers the whole blob).
pub async fn download(
    client: &whatsapp_rust::Client,
    id: &str,
    sealed: &Sealed,
    max: u64,
) -> std::result::Result<MediaFile, MediaError> {
    if sealed.file_length > max {
        return Err(MediaError::TooLarge {
            id: id.to_string(),
            size: sealed.file_length,
            max,
        });
    }
    let params = whatsapp_rust::download::DownloadParams::encrypted(
        sealed.direct_path.clone(),
        &sealed.media_key,
        &sealed.file_sha256,
        &sealed.file_enc_sha256,
        sealed.file_length,
        sealed.media_type(),
    );
    let got = tokio::time::timeout(DOWNLOAD_TIMEOUT, client.download(&params)).await;
    let bytes = match got {
        Err(_) => {
            return Err(MediaError::Download {
                id: id.to_string(),
                reason: format!("no answer within {DOWNLOAD_TIMEOUT:?}"),
            })
        }
        Ok(Err(e)) => {
            let chain = format!("{e:#}");
            if chain.contains("MAC") || chain.contains("decrypt") {
                return Err(MediaError::HashMismatch {
                    id: id.to_string(),
                    what: "the blob's MAC does not match".into(),
                });
            }
            return Err(MediaError::Download {
                id: id.to_string(),
                reason: redact(&chain, sealed),
            });
        }
        Ok(Ok(b)) => b,
    };
    if bytes.len() as u64 > max {
        return Err(MediaError::TooLarge {
            id: id.to_string(),
            size: bytes.len() as u64,
            max,
        });
    }
    if sealed.file_length != 0 && bytes.len() as u64 != sealed.file_length {
        return Err(MediaError::HashMismatch {
            id: id.to_string(),
            what: format!(
                "{} bytes, the message announced {}",
                bytes.len(),
                sealed.file_length
            ),
        });
    }
    if Sha256::digest(&bytes).as_slice() != sealed.file_sha256.as_slice() {
        return Err(MediaError::HashMismatch {
            id: id.to_string(),
            what: "the file's SHA-256 differs from the one the message announced".into(),
        });
    }
    Ok(MediaFile {
        kind: sealed.kind.clone(),
        content_type: sealed.content_type(),
        bytes,
    })
}

/// An error text without the blob's path or URL tokens (the URL carries the
/// direct path and auth).
fn redact(text: &str, sealed: &Sealed) -> String {
    let mut t = text.to_string();
    while let Some(i) = t.find("https://") {
        let end = t[i..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .map_or(t.len(), |e| i + e);
        t.replace_range(i..end, "<media url>");
    }
    t.replace(&sealed.direct_path, "<media path>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::crypto::KdfParams;
    use crate::vault::Vault;
    use whatsapp_rust::buffa::MessageField;

    fn image() -> wa::Message {
        wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                mimetype: Some("image/jpeg".into()),
                caption: Some("receipt".into()),
                file_length: Some(1234),
                width: Some(640),
                height: Some(480),
                file_sha256: Some(vec![0xab; 32]),
                file_enc_sha256: Some(vec![0xcd; 32]),
                media_key: Some(vec![0x42; 32]),
                direct_path: Some("/v/t62.7118-24/secret-path".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The event object has the public fields and the URL, never the key
    /// or the path; the sealed part has them.
    #[test]
    fn event_object_has_no_key_or_path() {
        let (obj, sealed) = of_message("shop", "3EB0AA", &image(), 100).unwrap();
        assert_eq!(obj["kind"], "image");
        assert_eq!(obj["mimetype"], "image/jpeg");
        assert_eq!(obj["size"], 1234);
        assert_eq!(obj["sha256"], "ab".repeat(32));
        assert_eq!(obj["width"], 640);
        assert_eq!(obj["url"], "/api/bots/shop/media/3EB0AA");
        let text = obj.to_string();
        assert!(!text.contains("secret-path"), "{text}");
        assert!(!text.contains(&hex(&[0x42; 32])), "{text}");
        let sealed = sealed.unwrap();
        assert_eq!(sealed.media_key, vec![0x42; 32]);
        assert_eq!(sealed.received_at, 100);
        assert!(!format!("{sealed:?}").contains("secret-path"));
        assert!(of_message("shop", "x", &wa::Message::default(), 0).is_none());
    }

    /// A vault with bot `shop` holding the media records of message `OLD`
    /// (received at 1000) and `NEW` (received at `new_at`).
    fn with_old_and_new(new_at: i64) -> (tempfile::TempDir, Vault, crate::vault::BotView) {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::create(&dir.path().join("v"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let bot = crate::BotId::parse("shop").unwrap();
        v.add_bot(&crate::vault::BotConfig::new(bot.clone()))
            .unwrap();
        let view = v.view(&bot);
        let (_, old) = of_message("shop", "OLD", &image(), 1_000).unwrap();
        let (_, new) = of_message("shop", "NEW", &image(), new_at).unwrap();
        view.apply(&[put_op("OLD", &old.unwrap()), put_op("NEW", &new.unwrap())])
            .unwrap();
        (dir, v, view)
    }

    /// The sealed record reads back by message id, and the sweep's prune
    /// removes it once its message is older than the cutoff (not before).
    #[test]
    fn sealed_record_round_trips_and_is_pruned_at_retention() {
        let (_dir, v, view) = with_old_and_new(5_000);
        assert_eq!(load(&view, "OLD").unwrap().unwrap().received_at, 1_000);
        assert_eq!(prune(&view, 1_000).unwrap(), 0, "not older than the cutoff");
        assert_eq!(prune(&view, 1_001).unwrap(), 1);
        assert!(load(&view, "OLD").unwrap().is_none());
        assert_eq!(load(&view, "NEW").unwrap().unwrap().received_at, 5_000);
        // The key is sealed: the raw database never holds it in clear.
        let raw = v
            .db()
            .scan_prefix(crate::vault::TreeId::Records, &[])
            .unwrap();
        for (_, value) in raw {
            assert!(!value.windows(32).any(|w| w == [0x42; 32]));
        }
    }

    /// The retention sweep removes the media of messages older than its
    /// retention and keeps the newer ones.
    #[test]
    fn the_sweep_removes_media_past_the_retention() {
        let (_dir, v, view) = with_old_and_new(90_000);
        let opts = |dry_run| crate::sweep::SweepOptions {
            retention: std::time::Duration::from_secs(86_400),
            dry_run,
            now: 100_000,
            backup: None,
        };
        crate::sweep::sweep(&v, opts(true)).unwrap();
        assert!(
            load(&view, "OLD").unwrap().is_some(),
            "a dry run removes nothing"
        );
        crate::sweep::sweep(&v, opts(false)).unwrap();
        assert!(load(&view, "OLD").unwrap().is_none(), "past the retention");
        assert!(
            load(&view, "NEW").unwrap().is_some(),
            "within the retention"
        );
    }

    #[test]
    fn errors_map_to_exit_codes_and_redact_urls() {
        use crate::error::exit;
        let e: Error = MediaError::HashMismatch {
            id: "X".into(),
            what: "mac".into(),
        }
        .into();
        assert_eq!(e.exit_code(), exit::DAMAGED);
        assert!(e.to_string().contains("hash mismatch"), "{e}");
        let e: Error = MediaError::NotFound("media of message X".into()).into();
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        let (_, s) = of_message("shop", "X", &image(), 0).unwrap();
        let r = redact(
            "GET https://mmg.example/v/t62.7118-24/secret-path?auth=abc failed",
            &s.unwrap(),
        );
        assert!(!r.contains("secret") && !r.contains("auth=abc"), "{r}");
    }
}
