//! Outbound media: a file the bot sends (`wavault send --file`, the API's
//! multipart or base64 form, a hook's `send_file` action).
//!
//! - [`MediaKind`]: image, video, audio, voice (a voice note: audio with
//!   `ptt`), document, sticker. Given (`--as`, `"as"`) or sniffed from the
//!   content's magic bytes ([`sniff`]); the mimetype likewise. Unknown
//!   content is a document `application/octet-stream`.
//! - [`check_size`]: at most [`DEFAULT_MAX`] (64 MiB) unless the operator
//!   says otherwise; beyond, a usage error naming the limit.
//! - [`send`]: whatsapp-rust encrypts and uploads the bytes
//!   (`Client::upload`), then the matching proto message goes out
//!   (ImageMessage, VideoMessage, AudioMessage with `ptt` for a voice note,
//!   DocumentMessage with its file name, StickerMessage).
//! - [`Policy`]: where a hook's `send_file` may take its bytes from. A
//!   `path` only under `run --media-dir DIR` (symlinks resolved first: a
//!   link out of the folder is refused), a `url` only when it starts with
//!   a prefix of `run --media-url-allow` (no redirects followed, the body
//!   capped at the size limit). Nothing is allowed by default: a hook must
//!   not make wavault read the vault or /etc, nor fetch from the network.

use crate::error::{Error, Result};
use crate::messaging::DeliveryError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use whatsapp_rust::waproto::whatsapp as wa;

/// Largest file sent unless the operator sets another limit: 64 MiB.
pub const DEFAULT_MAX: u64 = 64 * 1024 * 1024;
/// How long an upload to WhatsApp's media servers may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long fetching a hook's `url` may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest file name, in bytes.
pub const MAX_FILE_NAME: usize = 255;
/// Longest mimetype, in bytes.
pub const MAX_MIMETYPE: usize = 127;

/// What a file is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    /// A voice note (push-to-talk audio).
    Voice,
    Document,
    Sticker,
}

/// The accepted names of a kind, for error messages.
pub const KINDS: &str = "image, video, audio, voice, document, sticker";

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Voice => "voice",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    /// `--as KIND` / `"as": KIND`.
    pub fn parse(s: &str) -> std::result::Result<MediaKind, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "image" => MediaKind::Image,
            "video" => MediaKind::Video,
            "audio" => MediaKind::Audio,
            "voice" => MediaKind::Voice,
            "document" => MediaKind::Document,
            "sticker" => MediaKind::Sticker,
            _ => return Err(format!("unknown media kind {s:?}: give one of {KINDS}")),
        })
    }

    fn media_type(self) -> wacore::download::MediaType {
        use wacore::download::MediaType;
        match self {
            MediaKind::Image => MediaType::Image,
            MediaKind::Video => MediaType::Video,
            MediaKind::Audio | MediaKind::Voice => MediaType::Audio,
            MediaKind::Document => MediaType::Document,
            MediaKind::Sticker => MediaType::Sticker,
        }
    }
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the content looks like: its kind and mimetype. Unknown content is
/// a document `application/octet-stream`.
pub fn sniff(b: &[u8]) -> (MediaKind, &'static str) {
    use MediaKind::*;
    let at = |i: usize, m: &[u8]| b.len() >= i + m.len() && &b[i..i + m.len()] == m;
    if at(0, b"\xFF\xD8\xFF") {
        return (Image, "image/jpeg");
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return (Image, "image/png");
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return (Image, "image/gif");
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return (Image, "image/webp");
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return (Document, "audio/wav");
    }
    if at(4, b"ftyp") {
        return match b.get(8..12) {
            Some(b"M4A ") | Some(b"M4B ") => (Audio, "audio/mp4"),
            Some(b"qt  ") => (Video, "video/quicktime"),
            Some(b"3gp4") | Some(b"3gp5") | Some(b"3g2a") => (Video, "video/3gpp"),
            _ => (Video, "video/mp4"),
        };
    }
    if at(0, b"OggS") {
        let head = &b[..b.len().min(128)];
        if head.windows(8).any(|w| w == b"OpusHead") {
            return (Audio, "audio/ogg; codecs=opus");
        }
        return (Audio, "audio/ogg");
    }
    if at(0, b"ID3") || (b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0) {
        return (Audio, "audio/mpeg");
    }
    if at(0, b"%PDF-") {
        return (Document, "application/pdf");
    }
    if at(0, b"PK\x03\x04") {
        let head = &b[..b.len().min(64 * 1024)];
        let has = |m: &[u8]| head.windows(m.len()).any(|w| w == m);
        let m = if has(b"mimetypeapplication/vnd.oasis.opendocument.text") {
            "application/vnd.oasis.opendocument.text"
        } else if has(b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet") {
            "application/vnd.oasis.opendocument.spreadsheet"
        } else if has(b"word/") {
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        } else if has(b"xl/") {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        } else if has(b"ppt/") {
            "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        } else {
            "application/zip"
        };
        return (Document, m);
    }
    (Document, "application/octet-stream")
}

/// A file name's usual extension for a mimetype (a document sent without
/// a name gets `file.EXT`).
fn extension(mimetype: &str) -> &'static str {
    match mimetype.split(';').next().unwrap_or("").trim() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/3gpp" => "3gp",
        "audio/mp4" => "m4a",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/wav" => "wav",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/vnd.oasis.opendocument.spreadsheet" => "ods",
        _ => "bin",
    }
}

/// Refuses a file of `len` bytes over `max` (a usage error naming both).
pub fn check_size(len: u64, max: u64) -> Result<()> {
    if len > max {
        return Err(Error::Usage(format!(
            "the file is {} ({len} bytes); the limit for sending is {} ({max} bytes)",
            human(len),
            human(max)
        )));
    }
    Ok(())
}

/// A size for people: `12.3 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Checks a given mimetype and file name (usage errors).
pub fn check_meta(mimetype: Option<&str>, file_name: Option<&str>) -> Result<()> {
    if let Some(m) = mimetype {
        let ok = !m.is_empty()
            && m.len() <= MAX_MIMETYPE
            && m.contains('/')
            && m.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !ok {
            return Err(Error::Usage(format!(
                "invalid mimetype {:?}: give type/subtype, e.g. image/png",
                m.chars().take(40).collect::<String>()
            )));
        }
    }
    if let Some(n) = file_name {
        if n.is_empty() || n.len() > MAX_FILE_NAME || n.chars().any(|c| c.is_control()) {
            return Err(Error::Usage(format!(
                "invalid file name {:?}: 1 to {MAX_FILE_NAME} bytes, no control characters",
                n.chars().take(40).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// One file ready to go: its bytes and what it is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub bytes: Vec<u8>,
    pub kind: MediaKind,
    pub mimetype: String,
    /// Shown for documents.
    pub file_name: Option<String>,
    pub caption: Option<String>,
}

impl Attachment {
    /// Resolves what was not given from the content; checks the rest.
    /// The size is checked by the caller ([`check_size`]).
    pub fn new(
        bytes: Vec<u8>,
        kind: Option<MediaKind>,
        mimetype: Option<String>,
        file_name: Option<String>,
        caption: Option<String>,
    ) -> Result<Attachment> {
        if bytes.is_empty() {
            return Err(Error::Usage("the file is empty: nothing to send".into()));
        }
        check_meta(mimetype.as_deref(), file_name.as_deref())?;
        let (sniffed_kind, sniffed_mime) = sniff(&bytes);
        let kind = kind.unwrap_or(sniffed_kind);
        let mimetype = mimetype.unwrap_or_else(|| sniffed_mime.to_owned());
        let file_name = match (kind, file_name) {
            (_, Some(n)) => Some(n),
            (MediaKind::Document, None) => Some(format!("file.{}", extension(&mimetype))),
            _ => None,
        };
        Ok(Attachment {
            bytes,
            kind,
            mimetype,
            file_name,
            caption: caption.filter(|c| !c.is_empty()),
        })
    }

    /// The hex SHA-256 of the bytes.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }

    /// The message to send once uploaded.
    pub fn message(
        &self,
        up: whatsapp_rust::upload::UploadResponse,
        context: Option<wa::ContextInfo>,
    ) -> wa::Message {
        use whatsapp_rust::media::{self, *};
        let ctx = context.map(Box::new);
        let mime = Some(self.mimetype.clone());
        let caption = self.caption.clone();
        match self.kind {
            MediaKind::Image => media::image_message(
                up,
                ImageOptions {
                    caption,
                    mimetype: mime,
                    context_info: ctx,
                    ..Default::default()
                },
            ),
            MediaKind::Video => media::video_message(
                up,
                VideoOptions {
                    caption,
                    mimetype: mime,
                    context_info: ctx,
                    ..Default::default()
                },
            ),
            MediaKind::Audio | MediaKind::Voice => media::audio_message(
                up,
                AudioOptions {
                    mimetype: mime,
                    ptt: Some(self.kind == MediaKind::Voice),
                    context_info: ctx,
                    ..Default::default()
                },
            ),
            MediaKind::Document => media::document_message(
                up,
                DocumentOptions {
                    mimetype: mime,
                    file_name: self.file_name.clone(),
                    title: self.file_name.clone(),
                    caption,
                    context_info: ctx,
                    ..Default::default()
                },
            ),
            MediaKind::Sticker => wa::Message {
                sticker_message: whatsapp_rust::buffa::MessageField::some(
                    wa::message::StickerMessage {
                        url: Some(up.url),
                        direct_path: Some(up.direct_path),
                        media_key: Some(up.media_key.to_vec()),
                        file_sha256: Some(up.file_sha256.to_vec()),
                        file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                        file_length: Some(up.file_length),
                        media_key_timestamp: Some(up.media_key_timestamp),
                        mimetype: mime,
                        context_info: ctx
                            .map(|c| whatsapp_rust::buffa::MessageField::some(*c))
                            .unwrap_or_default(),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            },
        }
    }
}

/// The hex SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    crate::vault::hex(&Sha256::digest(b))
}

/// What went wrong sending a file, and whether the message may have gone.
#[derive(Debug)]
pub struct SendError {
    pub error: DeliveryError,
    /// `true`: the upload worked and the message was handed to WhatsApp,
    /// which did not answer: it may or may not have been sent.
    pub unknown: bool,
}

/// Uploads the file (whatsapp-rust encrypts it) and sends its message to
/// `to`, quoting `reply_to` if given (as text quotes do); returns the id.
pub async fn send(
    client: &whatsapp_rust::Client,
    to: &whatsapp_rust::Jid,
    mut file: Attachment,
    reply_to: Option<&str>,
) -> std::result::Result<String, SendError> {
    use whatsapp_rust::wacore_binary::JidExt;
    let unsent = |what: &'static str, reason: String| SendError {
        error: DeliveryError::Action { what, reason },
        unknown: false,
    };
    // The bytes go to the upload (not copied: a file may be 64 MiB).
    let upload = client.upload(
        std::mem::take(&mut file.bytes),
        file.kind.media_type(),
        whatsapp_rust::upload::UploadOptions::new(),
    );
    let up = match tokio::time::timeout(UPLOAD_TIMEOUT, upload).await {
        Err(_) => {
            return Err(unsent(
                "uploading the file",
                format!("no answer within {UPLOAD_TIMEOUT:?}"),
            ))
        }
        Ok(Err(e)) => return Err(unsent("uploading the file", format!("{e:#}"))),
        Ok(Ok(up)) => up,
    };
    let context = reply_to.map(|id| wa::ContextInfo {
        stanza_id: Some(id.to_owned()),
        participant: (!to.is_group()).then(|| to.to_string()),
        ..Default::default()
    });
    let msg = file.message(up, context);
    match tokio::time::timeout(Duration::from_secs(30), client.send_message(to.clone(), msg)).await
    {
        Err(_) => Err(SendError {
            error: DeliveryError::Action {
                what: "sending the file",
                reason: "WhatsApp did not take the message within 30 s: it may or may not have been sent".into(),
            },
            unknown: true,
        }),
        Ok(Err(e)) => Err(unsent("sending the file", e.to_string())),
        Ok(Ok(r)) => Ok(r.message_id),
    }
}

/// Where a hook's `send_file` may take its bytes from (`run --media-dir`,
/// `--media-url-allow`), and the size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Files a hook may name by path: only under this folder.
    pub dir: Option<PathBuf>,
    /// URL prefixes a hook may have fetched.
    pub url_allow: Vec<String>,
    /// Largest file, in bytes.
    pub max: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            dir: None,
            url_allow: Vec::new(),
            max: DEFAULT_MAX,
        }
    }
}

/// Checks an allow-list prefix (`--media-url-allow`): an http(s) URL with
/// a host.
pub fn check_url_prefix(p: &str) -> std::result::Result<String, String> {
    let rest = p
        .strip_prefix("https://")
        .or_else(|| p.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains('@') => Ok(p.to_owned()),
        _ => Err(format!(
            "invalid URL prefix {p:?}: give an http:// or https:// URL with a host, e.g. https://files.example.com/bot/"
        )),
    }
}

/// How every refusal by the operator's policy begins (a path outside
/// `--media-dir`, a URL off `--media-url-allow`): the runner skips such an
/// action with an `action_refused` alert instead of retrying it.
pub const REFUSED: &str = "refused: ";

impl Policy {
    /// Whether `url` is on the allow-list: it starts with a prefix, and a
    /// prefix that does not end in `/` ends where the URL's host or path
    /// segment ends (`https://a.example` does not allow
    /// `https://a.example.evil.org/`). URLs with user info, `..` segments
    /// or backslashes are never allowed.
    pub fn url_allowed(&self, url: &str) -> bool {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return false;
        }
        let after_scheme = url.split_once("://").map_or("", |(_, r)| r);
        let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@')
            || url.contains('\\')
            || url
                .split(['/', '?', '#'])
                .any(|s| s == ".." || s.eq_ignore_ascii_case("%2e%2e"))
        {
            return false;
        }
        self.url_allow.iter().any(|p| {
            url.strip_prefix(p.as_str()).is_some_and(|rest| {
                p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
            })
        })
    }

    /// The bytes a `send_file` names, refused (the reason) outside the
    /// policy or over the limit.
    pub async fn load(&self, src: &Source) -> std::result::Result<Vec<u8>, String> {
        match src {
            Source::Base64(b) => {
                let bytes = decode_base64(b)?;
                check_size(bytes.len() as u64, self.max).map_err(|e| e.to_string())?;
                Ok(bytes)
            }
            Source::Path(p) => {
                let (p, dir, max) = (PathBuf::from(p), self.dir.clone(), self.max);
                tokio::task::spawn_blocking(move || read_under(dir.as_deref(), &p, max))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Source::Url(u) => {
                if !self.url_allowed(u) {
                    return Err(format!(
                        "refused: the URL {:?} is not on the operator's allow-list \
                         (run --media-url-allow PREFIX; none by default)",
                        u.chars().take(120).collect::<String>()
                    ));
                }
                let (u, max) = (u.clone(), self.max);
                tokio::task::spawn_blocking(move || fetch(&u, max, FETCH_TIMEOUT))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }
}

/// Where a hook's file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(String),
    Url(String),
    Base64(String),
}

/// Standard base64 (padding optional, whitespace ignored).
pub fn decode_base64(s: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(clean.as_bytes())
        .map_err(|e| format!("the file's base64 is invalid: {e}"))
}

/// Reads `path` when it lies under `dir` (both with symlinks resolved) and
/// is a regular file of at most `max` bytes.
pub fn read_under(
    dir: Option<&Path>,
    path: &Path,
    max: u64,
) -> std::result::Result<Vec<u8>, String> {
    let Some(dir) = dir else {
        return Err(
            "refused: a hook may name a file by path only under the operator's folder \
             (run --media-dir DIR; none by default)"
                .into(),
        );
    };
    let root = dir
        .canonicalize()
        .map_err(|e| format!("the media folder {} is unusable: {e}", dir.display()))?;
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        root.join(path)
    };
    let refused = || {
        format!(
            "refused: {} is not a file under the media folder {} (run --media-dir)",
            path.display(),
            root.display()
        )
    };
    let real = joined.canonicalize().map_err(|_| refused())?;
    if !real.starts_with(&root) {
        return Err(refused());
    }
    let f = std::fs::File::open(&real).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(refused());
    }
    check_size(meta.len(), max).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(f, max + 1), &mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    check_size(out.len() as u64, max).map_err(|e| e.to_string())?;
    Ok(out)
}

/// GETs `url` (no redirects followed), at most `max` bytes.
pub fn fetch(url: &str, max: u64, timeout: Duration) -> std::result::Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into();
    let shown: String = url.chars().take(120).collect();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("fetching {shown}: {e}"))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(format!(
            "fetching {shown}: answered {} (a redirect): redirects are not followed",
            status.as_u16()
        ));
    }
    if !status.is_success() {
        return Err(format!("fetching {shown}: answered {}", status.as_u16()));
    }
    match resp.body_mut().with_config().limit(max).read_to_vec() {
        Ok(b) => Ok(b),
        Err(ureq::Error::BodyExceedsLimit(_)) => Err(format!(
            "fetching {shown}: the file is larger than the limit for sending ({})",
            human(max)
        )),
        Err(e) => Err(format!("fetching {shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MediaKind::*;

    /// Magic bytes of each format give its kind and mimetype; anything
    /// else is a document application/octet-stream.
    #[test]
    fn sniffing_by_magic_bytes() {
        let mut mp4 = b"\0\0\0\x18ftypisom".to_vec();
        mp4.extend([0; 16]);
        let mut office = b"PK\x03\x04".to_vec();
        office.extend(b"\0\0[Content_Types].xml....word/document.xml");
        let cases: Vec<(Vec<u8>, MediaKind, &str)> = vec![
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF".to_vec(), Image, "image/jpeg"),
            (
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
                Image,
                "image/png",
            ),
            (b"GIF89a\x01\0".to_vec(), Image, "image/gif"),
            (b"RIFF\x10\0\0\0WEBPVP8 ".to_vec(), Image, "image/webp"),
            (mp4, Video, "video/mp4"),
            (b"\0\0\0\x14ftypqt  \0\0".to_vec(), Video, "video/quicktime"),
            (b"\0\0\0\x20ftypM4A \0\0".to_vec(), Audio, "audio/mp4"),
            (
                b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\x01\x13OpusHead".to_vec(),
                Audio,
                "audio/ogg; codecs=opus",
            ),
            (b"ID3\x04\0\0".to_vec(), Audio, "audio/mpeg"),
            (b"\xFF\xFB\x90\x64".to_vec(), Audio, "audio/mpeg"),
            (b"%PDF-1.7\n".to_vec(), Document, "application/pdf"),
            (
                office,
                Document,
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            ),
            (b"PK\x03\x04plain zip".to_vec(), Document, "application/zip"),
            (
                b"hello, world".to_vec(),
                Document,
                "application/octet-stream",
            ),
            (vec![0xFF], Document, "application/octet-stream"),
            (Vec::new(), Document, "application/octet-stream"),
        ];
        for (bytes, kind, mime) in cases {
            assert_eq!(
                sniff(&bytes),
                (kind, mime),
                "{:?}",
                &bytes[..bytes.len().min(12)]
            );
        }
    }

    /// Given kind and mimetype win; a document gets a file name; an empty
    /// file, a bad kind, mimetype or file name are usage errors.
    #[test]
    fn attachments_resolve_and_check() {
        let pdf = b"%PDF-1.4 x".to_vec();
        let a = Attachment::new(pdf.clone(), None, None, None, Some("c".into())).unwrap();
        assert_eq!((a.kind, a.mimetype.as_str()), (Document, "application/pdf"));
        assert_eq!(a.file_name.as_deref(), Some("file.pdf"));
        let a =
            Attachment::new(pdf.clone(), Some(Image), Some("image/x".into()), None, None).unwrap();
        assert_eq!(
            (a.kind, a.mimetype.as_str(), a.file_name),
            (Image, "image/x", None)
        );
        assert_eq!(MediaKind::parse("Voice"), Ok(Voice));
        let e = MediaKind::parse("gif").unwrap_err();
        assert!(
            e.contains("image, video, audio, voice, document, sticker"),
            "{e}"
        );
        let e = Attachment::new(Vec::new(), None, None, None, None).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        for (m, n) in [
            (Some("nonsense"), None),
            (None, Some("a\nb")),
            (None, Some("")),
        ] {
            let e = Attachment::new(
                pdf.clone(),
                None,
                m.map(Into::into),
                n.map(Into::into),
                None,
            )
            .unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
        }
    }

    /// The limit: equal passes, one byte more is a usage error naming it.
    #[test]
    fn the_size_limit() {
        assert!(check_size(DEFAULT_MAX, DEFAULT_MAX).is_ok());
        let e = check_size(DEFAULT_MAX + 1, DEFAULT_MAX).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(e.to_string().contains("64.0 MiB"), "{e}");
    }

    /// The allow-list: a prefix allows what starts with it at a boundary;
    /// user info, `..` and other schemes never pass; nothing by default.
    #[test]
    fn url_allow_list() {
        assert!(!Policy::default().url_allowed("https://files.example.com/a.png"));
        let p = Policy {
            url_allow: vec![
                "https://files.example.com/bot/".into(),
                "https://cdn.example.org".into(),
            ],
            ..Policy::default()
        };
        for ok in [
            "https://files.example.com/bot/a.png",
            "https://cdn.example.org/x/y.pdf",
            "https://cdn.example.org?x=1",
        ] {
            assert!(p.url_allowed(ok), "{ok}");
        }
        for bad in [
            "https://files.example.com/other/a.png",
            "https://files.example.com/bot/../secret",
            "https://cdn.example.org.evil.net/x",
            "https://cdn.example.org@evil.net/x",
            "http://files.example.com/bot/a.png",
            "file:///etc/passwd",
        ] {
            assert!(!p.url_allowed(bad), "{bad}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(p.load(&Source::Url("https://elsewhere.example/a.png".into())))
            .unwrap_err();
        assert!(
            e.starts_with(REFUSED),
            "a URL off the list is the policy's refusal: {e}"
        );
        assert!(check_url_prefix("https://x.example/").is_ok());
        assert!(check_url_prefix("ftp://x").is_err());
        assert!(check_url_prefix("https://").is_err());
    }

    /// A path only under the media folder: relative or absolute inside is
    /// read; outside, through `..` or a symlink out, or with no folder set,
    /// is refused; a file over the limit too.
    #[test]
    fn paths_only_under_the_media_folder() {
        let d = tempfile::tempdir().unwrap();
        let media = d.path().join("media");
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("a.pdf"), b"%PDF-1 inside").unwrap();
        std::fs::write(d.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), media.join("link")).unwrap();
        let dir = Some(media.as_path());
        assert_eq!(
            read_under(dir, Path::new("a.pdf"), 100).unwrap(),
            b"%PDF-1 inside"
        );
        assert_eq!(
            read_under(dir, &media.join("a.pdf"), 100).unwrap(),
            b"%PDF-1 inside"
        );
        for bad in [
            PathBuf::from("../secret"),
            d.path().join("secret"),
            PathBuf::from("link"),
            PathBuf::from("/etc/passwd"),
            PathBuf::from("."),
        ] {
            let e = read_under(dir, &bad, 100).unwrap_err();
            assert!(e.starts_with(REFUSED), "{bad:?}: {e}");
        }
        let e = read_under(None, Path::new("a.pdf"), 100).unwrap_err();
        assert!(e.contains("--media-dir") && e.starts_with(REFUSED), "{e}");
        // Over the limit is not the policy's refusal (the file may change).
        let e = read_under(dir, Path::new("a.pdf"), 5).unwrap_err();
        assert!(e.contains("limit") && !e.starts_with(REFUSED), "{e}");
    }

    /// A fetch never follows a redirect and stops at the limit.
    #[test]
    fn fetch_follows_no_redirect_and_is_capped() {
        fn serve(answer: &'static str) -> String {
            use std::io::{BufRead, BufReader, Write};
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/f", l.local_addr().unwrap());
            std::thread::spawn(move || {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut s = s;
                let _ = s.write_all(answer.as_bytes());
            });
            url
        }
        let t = Duration::from_secs(30);
        let ok = serve("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
        assert_eq!(fetch(&ok, 5, t).unwrap(), b"hello");
        let big = serve("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
        let e = fetch(&big, 4, t).unwrap_err();
        assert!(e.contains("larger than the limit"), "{e}");
        let redirect = serve(
            "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let e = fetch(&redirect, 5, t).unwrap_err();
        assert!(e.contains("redirects are not followed"), "{e}");
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("aG\nk=").unwrap(), b"hi");
        assert!(decode_base64("a*b")
            .unwrap_err()
            .contains("base64 is invalid"));
    }
}
