//! The media service: the server's `media_conn` answer and the CDN behind it.
//!
//! Why it exists: media never travel in a `<message>`; the sender encrypts
//! the file (AES-CBC + HMAC with keys derived from a random media key),
//! uploads the blob to a media host and sends only the key, hashes and the
//! blob's path. For whatsapp-rust's real media crypto to run both ways in
//! the e2e tests, the peer plays that host:
//! - `<iq xmlns="w:m"><media_conn/></iq>` is answered with one host
//!   ([`MEDIA_HOST`]) and an auth token;
//! - [`super::PeerHttpClient`] serves that host: an upload (`POST
//!   https://<host>/mms/<type>/<token>?auth=…`) is stored and answered with
//!   the JSON whatsapp-rust expects (`url`, `direct_path`); a `GET` of
//!   `https://<host><direct_path>?auth=…&token=…` serves the stored blob
//!   (a wrong auth is 401, an unknown path 404, like the CDN);
//! - contacts upload and download through the same store
//!   ([`super::Contact::send_media`], [`ContactMessage::media`]);
//! - [`super::Peer::tamper_media`] / [`super::Peer::tamper_all_media`] make
//!   served blobs arrive with one byte flipped (a corrupted or forged
//!   file: the receiver's MAC check must refuse it).
//!
//! Uploads and downloads are recorded in the [`PeerLog`]
//! (`media_uploads`, `media_downloads`; contacts' failed decryptions in
//! `contact_media_errors`).
//!
//! [`ContactMessage::media`]: super::ContactMessage

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use whatsapp_rust::anyhow::{self, anyhow, bail};
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::download::{DownloadUtils, MediaType};
use whatsapp_rust::wacore::net::{HttpRequest, HttpResponse};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::waproto::whatsapp as wa;

use super::stanza::{attr, child, iq_result, unix_now};
use super::{lock, Peer, PeerLog, Shared};

/// The one media host the peer announces (never resolved: only
/// [`super::PeerHttpClient`] answers it).
pub const MEDIA_HOST: &str = "mmg.peer.test";

/// The auth token of every `media_conn` answer.
const MEDIA_AUTH: &str = "peer-media-auth";

/// Which kind of WhatsApp media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    /// Audio; a voice note with [`OutMedia::ptt`].
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    /// The media type whose keys encrypt this kind (`WhatsApp Image Keys`, …).
    pub fn media_type(self) -> MediaType {
        match self {
            MediaKind::Image => MediaType::Image,
            MediaKind::Video => MediaType::Video,
            MediaKind::Audio => MediaType::Audio,
            MediaKind::Document => MediaType::Document,
            MediaKind::Sticker => MediaType::Sticker,
        }
    }
}

/// A file a contact sends a bot ([`super::Contact::send_media`]).
#[derive(Debug, Clone)]
pub struct OutMedia {
    pub kind: MediaKind,
    pub bytes: Vec<u8>,
    pub mimetype: String,
    pub caption: Option<String>,
    /// Documents only.
    pub file_name: Option<String>,
    /// Audio and video.
    pub seconds: Option<u32>,
    /// Image, video, sticker.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Audio: a voice note (push-to-talk).
    pub ptt: bool,
}

impl OutMedia {
    /// `bytes` of `kind` with this mimetype and nothing else set.
    pub fn new(kind: MediaKind, bytes: Vec<u8>, mimetype: &str) -> Self {
        OutMedia {
            kind,
            bytes,
            mimetype: mimetype.to_string(),
            caption: None,
            file_name: None,
            seconds: None,
            width: None,
            height: None,
            ptt: false,
        }
    }
}

/// A media message a bot sent a contact, downloaded from the peer's store
/// and decrypted (MAC and plaintext SHA-256 verified).
#[derive(Debug, Clone)]
pub struct ReceivedMedia {
    /// `image`, `video`, `audio`, `document` or `sticker`.
    pub kind: String,
    pub mimetype: String,
    pub caption: Option<String>,
    pub file_name: Option<String>,
    pub bytes: Vec<u8>,
}

/// One stored upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaUpload {
    /// The upload path's type (`image`, `audio`, `document`, …), as the
    /// uploader named it (stickers upload as `image`).
    pub kind: String,
    /// Size of the encrypted blob, bytes.
    pub size: usize,
    pub direct_path: String,
    /// Who uploaded: `bot` (through HTTP) or `contact <phone>`.
    pub by: String,
}

/// One blob served (or refused) by the media host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDownload {
    pub direct_path: String,
    /// `bot` (through HTTP) or `contact <phone>`.
    pub by: String,
    /// Served with a flipped byte.
    pub tampered: bool,
    /// HTTP status answered (200, or 401/404).
    pub status: u16,
}

/// The peer's media host: blobs by direct path.
#[derive(Default)]
pub(crate) struct MediaStore {
    blobs: HashMap<String, Vec<u8>>,
    tampered: HashSet<String>,
    tamper_all: bool,
    next: u64,
}

impl MediaStore {
    fn put(&mut self, kind: &str, blob: Vec<u8>) -> String {
        self.next += 1;
        let direct_path = format!(
            "/v/t62.peer-{kind}/{:016x}-{}",
            rand::random::<u64>(),
            self.next
        );
        self.blobs.insert(direct_path.clone(), blob);
        direct_path
    }

    /// The blob as served: with one byte flipped when tampered.
    fn get(&self, direct_path: &str) -> Option<(Vec<u8>, bool)> {
        let mut blob = self.blobs.get(direct_path)?.clone();
        let tampered = self.tamper_all || self.tampered.contains(direct_path);
        if tampered && !blob.is_empty() {
            let mid = blob.len() / 2;
            blob[mid] ^= 0x01;
        }
        Some((blob, tampered))
    }
}

impl Peer {
    /// From now on the blob at `direct_path` is served with one byte
    /// flipped (to bots and contacts alike).
    pub fn tamper_media(&self, direct_path: &str) {
        lock(&self.shared.media)
            .tampered
            .insert(direct_path.to_string());
    }

    /// While `true`, every blob is served with one byte flipped.
    pub fn tamper_all_media(&self, on: bool) {
        lock(&self.shared.media).tamper_all = on;
    }
}

impl PeerLog {
    /// The upload stored at `direct_path`.
    pub fn media_upload(&self, direct_path: &str) -> Option<&MediaUpload> {
        self.media_uploads
            .iter()
            .find(|u| u.direct_path == direct_path)
    }

    /// Downloads of `direct_path` by bots (HTTP), served or refused.
    pub fn bot_media_downloads<'a>(
        &'a self,
        direct_path: &'a str,
    ) -> impl Iterator<Item = &'a MediaDownload> {
        self.media_downloads
            .iter()
            .filter(move |d| d.by == "bot" && d.direct_path == direct_path)
    }
}

/// Answers `<iq xmlns="w:m" type="set"><media_conn/></iq>`; `None` for any
/// other IQ.
pub(crate) fn answer_iq(node: &Node) -> Option<Vec<Node>> {
    if attr(node, "xmlns").as_deref() != Some("w:m") || child(node, "media_conn").is_none() {
        return None;
    }
    let id = attr(node, "id").unwrap_or_default();
    let conn = NodeBuilder::new("media_conn")
        .attr("auth", MEDIA_AUTH)
        .attr("ttl", "3600")
        .attr("auth_ttl", "3600")
        .attr("max_buckets", "12")
        .children([NodeBuilder::new("host")
            .attr("hostname", MEDIA_HOST)
            .attr("type", "primary")
            .children([
                NodeBuilder::new("upload").build(),
                NodeBuilder::new("download").build(),
            ])
            .build()])
        .build();
    Some(vec![iq_result(&id, vec![conn])])
}

fn response(status: u16, body: impl Into<Vec<u8>>) -> HttpResponse {
    HttpResponse {
        status_code: status,
        body: body.into(),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Serves a request to [`MEDIA_HOST`]; `None` for any other URL (the caller
/// records and fails it as before). `body` is the upload's body.
pub(crate) fn serve(
    shared: &Shared,
    request: &HttpRequest,
    body: Option<&[u8]>,
) -> Option<HttpResponse> {
    let rest = request
        .url
        .strip_prefix("https://")?
        .strip_prefix(MEDIA_HOST)?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if query_param(query, "auth") != Some(MEDIA_AUTH) {
        return Some(response(401, "bad media auth"));
    }
    match request.method.as_str() {
        "POST" if path.starts_with("/mms/") => {
            if query_param(query, "resume").is_some() {
                // No partial uploads kept: upload from the start.
                return Some(response(404, "{}"));
            }
            let kind = path
                .trim_start_matches("/mms/")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let blob = body.map(<[u8]>::to_vec).unwrap_or_default();
            // The token is the blob's SHA-256 (URL-safe base64): the CDN
            // checks it, and so does the peer.
            let expected =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&blob));
            if query_param(query, "token") != Some(expected.as_str()) {
                return Some(response(400, "token is not the blob's sha256"));
            }
            let direct_path = store(shared, &kind, blob, "bot");
            let url = format!("https://{MEDIA_HOST}{direct_path}");
            let json = serde_json::json!({ "url": url, "direct_path": direct_path });
            Some(response(200, json.to_string()))
        }
        "GET" => {
            let served = lock(&shared.media).get(path);
            let (status, tampered, body) = match served {
                Some((blob, tampered)) => (200, tampered, blob),
                None => (404, false, b"no such media".to_vec()),
            };
            let record = MediaDownload {
                direct_path: path.to_string(),
                by: "bot".into(),
                tampered,
                status,
            };
            shared.modify_log(|log| log.media_downloads.push(record));
            Some(response(status, body))
        }
        _ => Some(response(405, "method not allowed")),
    }
}

/// Stores `blob` and records the upload; returns its direct path.
fn store(shared: &Shared, kind: &str, blob: Vec<u8>, by: &str) -> String {
    let size = blob.len();
    let direct_path = lock(&shared.media).put(kind, blob);
    let record = MediaUpload {
        kind: kind.to_string(),
        size,
        direct_path: direct_path.clone(),
        by: by.to_string(),
    };
    shared.modify_log(|log| log.media_uploads.push(record));
    direct_path
}

/// Encrypts `media` as a contact would, uploads it to the store and
/// returns the proto message that announces it.
pub(crate) fn encrypt_and_upload(
    shared: &Shared,
    contact_phone: &str,
    media: &OutMedia,
) -> anyhow::Result<wa::Message> {
    let media_type = media.kind.media_type();
    let enc = whatsapp_rust::wacore::upload::encrypt_media(&media.bytes, media_type)?;
    let upload_kind = media_type
        .upload_path()
        .trim_start_matches("/mms/")
        .to_string();
    let direct_path = store(
        shared,
        &upload_kind,
        enc.data_to_upload,
        &format!("contact {contact_phone}"),
    );
    let url = Some(format!("https://{MEDIA_HOST}{direct_path}"));
    let mimetype = Some(media.mimetype.clone());
    let media_key = Some(enc.media_key.to_vec());
    let file_sha256 = Some(enc.file_sha256.to_vec());
    let file_enc_sha256 = Some(enc.file_enc_sha256.to_vec());
    let file_length = Some(media.bytes.len() as u64);
    let direct_path = Some(direct_path);
    let ts = Some(unix_now() as i64);
    let mut message = wa::Message::default();
    match media.kind {
        MediaKind::Image => {
            message.image_message = MessageField::some(wa::message::ImageMessage {
                url,
                mimetype,
                caption: media.caption.clone(),
                file_sha256,
                file_length,
                height: media.height,
                width: media.width,
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp: ts,
                ..Default::default()
            })
        }
        MediaKind::Video => {
            message.video_message = MessageField::some(wa::message::VideoMessage {
                url,
                mimetype,
                caption: media.caption.clone(),
                file_sha256,
                file_length,
                seconds: media.seconds,
                height: media.height,
                width: media.width,
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp: ts,
                streaming_sidecar: enc.streaming_sidecar,
                ..Default::default()
            })
        }
        MediaKind::Audio => {
            message.audio_message = MessageField::some(wa::message::AudioMessage {
                url,
                mimetype,
                file_sha256,
                file_length,
                seconds: media.seconds,
                ptt: Some(media.ptt),
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp: ts,
                streaming_sidecar: enc.streaming_sidecar,
                ..Default::default()
            })
        }
        MediaKind::Document => {
            message.document_message = MessageField::some(wa::message::DocumentMessage {
                url,
                mimetype,
                title: media.file_name.clone(),
                file_sha256,
                file_length,
                media_key,
                file_name: media.file_name.clone(),
                file_enc_sha256,
                direct_path,
                media_key_timestamp: ts,
                caption: media.caption.clone(),
                ..Default::default()
            })
        }
        MediaKind::Sticker => {
            message.sticker_message = MessageField::some(wa::message::StickerMessage {
                url,
                mimetype,
                file_sha256,
                file_length,
                height: media.height,
                width: media.width,
                media_key,
                file_enc_sha256,
                direct_path,
                media_key_timestamp: ts,
                ..Default::default()
            })
        }
    }
    Ok(message)
}

/// The download parameters of a media message, if it is one:
/// (kind, mimetype, caption, file name, direct path, media key, file
/// sha256, media type).
struct Announced {
    kind: &'static str,
    mimetype: Option<String>,
    caption: Option<String>,
    file_name: Option<String>,
    direct_path: Option<String>,
    media_key: Option<Vec<u8>>,
    file_sha256: Option<Vec<u8>>,
    media_type: MediaType,
}

fn announced(message: &wa::Message) -> Option<Announced> {
    if let Some(m) = message.image_message.as_option() {
        return Some(Announced {
            kind: "image",
            mimetype: m.mimetype.clone(),
            caption: m.caption.clone(),
            file_name: None,
            direct_path: m.direct_path.clone(),
            media_key: m.media_key.clone(),
            file_sha256: m.file_sha256.clone(),
            media_type: MediaType::Image,
        });
    }
    if let Some(m) = message.video_message.as_option() {
        return Some(Announced {
            kind: "video",
            mimetype: m.mimetype.clone(),
            caption: m.caption.clone(),
            file_name: None,
            direct_path: m.direct_path.clone(),
            media_key: m.media_key.clone(),
            file_sha256: m.file_sha256.clone(),
            media_type: MediaType::Video,
        });
    }
    if let Some(m) = message.audio_message.as_option() {
        return Some(Announced {
            kind: "audio",
            mimetype: m.mimetype.clone(),
            caption: None,
            file_name: None,
            direct_path: m.direct_path.clone(),
            media_key: m.media_key.clone(),
            file_sha256: m.file_sha256.clone(),
            media_type: MediaType::Audio,
        });
    }
    if let Some(m) = message.document_message.as_option() {
        return Some(Announced {
            kind: "document",
            mimetype: m.mimetype.clone(),
            caption: m.caption.clone(),
            file_name: m.file_name.clone(),
            direct_path: m.direct_path.clone(),
            media_key: m.media_key.clone(),
            file_sha256: m.file_sha256.clone(),
            media_type: MediaType::Document,
        });
    }
    if let Some(m) = message.sticker_message.as_option() {
        return Some(Announced {
            kind: "sticker",
            mimetype: m.mimetype.clone(),
            caption: None,
            file_name: None,
            direct_path: m.direct_path.clone(),
            media_key: m.media_key.clone(),
            file_sha256: m.file_sha256.clone(),
            media_type: MediaType::Sticker,
        });
    }
    None
}

/// A contact fetches and decrypts the media a bot sent it (message `id`).
/// `None` for a message without media; a failure is recorded in
/// `contact_media_errors` and gives `None` too.
pub(crate) fn receive(
    shared: &Shared,
    contact_phone: &str,
    id: &str,
    message: &wa::Message,
) -> Option<ReceivedMedia> {
    let a = announced(message)?;
    match fetch_and_decrypt(shared, contact_phone, &a) {
        Ok(bytes) => Some(ReceivedMedia {
            kind: a.kind.to_string(),
            mimetype: a.mimetype.unwrap_or_default(),
            caption: a.caption,
            file_name: a.file_name,
            bytes,
        }),
        Err(e) => {
            let text = format!("{} media of message {id} to {contact_phone}: {e:#}", a.kind);
            shared.modify_log(|log| log.contact_media_errors.push(text));
            None
        }
    }
}

fn fetch_and_decrypt(
    shared: &Shared,
    contact_phone: &str,
    a: &Announced,
) -> anyhow::Result<Vec<u8>> {
    let direct_path = a
        .direct_path
        .as_deref()
        .ok_or_else(|| anyhow!("no direct_path"))?;
    let key = a
        .media_key
        .as_deref()
        .ok_or_else(|| anyhow!("no media_key"))?;
    let served = lock(&shared.media).get(direct_path);
    let record = MediaDownload {
        direct_path: direct_path.to_string(),
        by: format!("contact {contact_phone}"),
        tampered: served.as_ref().is_some_and(|(_, t)| *t),
        status: if served.is_some() { 200 } else { 404 },
    };
    shared.modify_log(|log| log.media_downloads.push(record));
    let (mut blob, _) = served.ok_or_else(|| anyhow!("no blob at {direct_path}"))?;
    DownloadUtils::verify_and_decrypt_in_place(&mut blob, key, a.media_type)
        .map_err(|e| anyhow!("decrypting: {e}"))?;
    if let Some(expected) = &a.file_sha256 {
        if Sha256::digest(&blob).as_slice() != expected.as_slice() {
            bail!("plaintext sha256 differs from file_sha256");
        }
    }
    Ok(blob)
}
