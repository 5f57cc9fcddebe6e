//! Proactive sends (`wavault send`, `POST /api/bots/{id}/messages`): what
//! is sent ([`Outgoing`]) and the idempotency keys that make a caller's
//! retry safe.
//!
//! An idempotency key (1..=255 printable ASCII) names one send of one bot
//! for [`KEEP`] (24 h): the same key again returns the first message's id
//! and sends nothing. Records ([`Kind::IDEMPOTENCY`], name = the key,
//! sealed like every record, see docs/FORMAT.md) are written durably
//! BEFORE the send (state `sending`) and after it (`sent`, with the id), so
//! a crash in between never sends twice silently: a key left `sending` by
//! a crash (or a send whose outcome is unknown: WhatsApp did not answer in
//! time) is refused as interrupted, since the message may or may not have
//! gone; the caller checks the chat and uses a new key. A key whose send is
//! under way in this process is refused as in progress (retry shortly).
//! Both refusals are conflicts (HTTP 409, exit code 1).
//!
//! Expiry: lazily (a record older than [`KEEP`] counts as absent and is
//! overwritten) and by the retention sweep, which deletes expired records
//! ([`prune`]).

use super::attach::{Attachment, MediaKind};
use super::MAX_TEXT;
use crate::codec;
use crate::error::{Error, Result};
use crate::vault::{BotView, Kind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a key is remembered.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Longest idempotency key, in bytes.
pub const MAX_KEY: usize = 255;

/// One message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outgoing {
    /// Phone number in international format or a JID.
    pub to: String,
    pub text: String,
    /// The same key within [`KEEP`] sends once (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The id of a message to quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Show "typing…" for a time proportional to the text first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub typing: bool,
    /// A file to send; `text` is then its caption (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<OutFile>,
}

/// The file of a send (`send --file`, the API's multipart or base64 form).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutFile {
    /// What it is sent as; `None`: from the content.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub kind: Option<MediaKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// The bytes. Never in the request line of the control socket: they
    /// are its payload.
    #[serde(skip)]
    pub bytes: Arc<Vec<u8>>,
}

impl Outgoing {
    /// A plain text to `to`.
    pub fn text(to: impl Into<String>, text: impl Into<String>) -> Outgoing {
        Outgoing {
            to: to.into(),
            text: text.into(),
            ..Default::default()
        }
    }

    /// Checks every field (usage errors naming the problem).
    pub fn check(&self) -> Result<()> {
        super::parse_recipient(&self.to)?;
        if let Some(f) = &self.file {
            super::attach::check_meta(f.mimetype.as_deref(), f.file_name.as_deref())?;
        } else if self.text.is_empty() {
            return Err(Error::Usage("the message text is empty".into()));
        }
        if self.text.len() > MAX_TEXT {
            return Err(Error::Usage(format!(
                "the message text is {} bytes; the limit is {MAX_TEXT}",
                self.text.len()
            )));
        }
        if let Some(k) = &self.idempotency_key {
            check_key(k).map_err(Error::Usage)?;
        }
        if let Some(r) = &self.reply_to {
            check_message_id(r).map_err(Error::Usage)?;
        }
        Ok(())
    }

    /// The file ready to send, `None` for a text (usage errors: an empty
    /// file, a bad mimetype or file name).
    pub fn attachment(&self) -> Result<Option<Attachment>> {
        let Some(f) = &self.file else {
            return Ok(None);
        };
        Attachment::new(
            f.bytes.to_vec(),
            f.kind,
            f.mimetype.clone(),
            f.file_name.clone(),
            Some(self.text.clone()),
        )
        .map(Some)
    }

    /// What the key binds: recipient, text (a file's caption) and quote,
    /// and a file's SHA-256, kind, mimetype and name. The same key with
    /// another message is refused.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut parts = vec![
            self.to.clone(),
            self.text.clone(),
            self.reply_to.clone().unwrap_or_default(),
        ];
        if let Some(f) = &self.file {
            parts.push("file".into());
            parts.push(super::attach::sha256_hex(&f.bytes));
            parts.push(f.kind.map(|k| k.as_str()).unwrap_or("").into());
            parts.push(f.mimetype.clone().unwrap_or_default());
            parts.push(f.file_name.clone().unwrap_or_default());
        }
        for part in &parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        crate::vault::hex(&h.finalize())
    }
}

/// The accepted form of an idempotency key, for error messages.
pub const KEY_FORM: &str = "1 to 255 printable ASCII characters (space to ~), e.g. a UUID";

/// Checks an idempotency key.
pub fn check_key(k: &str) -> std::result::Result<(), String> {
    if k.is_empty() || k.len() > MAX_KEY || !k.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        let shown: String = k.chars().take(40).collect();
        return Err(format!(
            "invalid idempotency key {shown:?} ({} bytes): give {KEY_FORM}",
            k.len()
        ));
    }
    Ok(())
}

/// Checks the id of a message to quote (WhatsApp ids are short ASCII).
pub fn check_message_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "invalid message id {id:?} to reply to: give the id of a message (letters and digits, as `send` prints or a hook receives)"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    /// Recorded before the send; the outcome is not known yet.
    Sending,
    /// WhatsApp took the message: `id` is its id.
    Sent,
}

/// The sealed record of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    state: State,
    /// Unix seconds when the key was first used.
    at: i64,
    /// [`Outgoing::fingerprint`] of the first message.
    fingerprint: String,
    id: Option<String>,
}

/// What a key says about a new send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Unknown (or expired): recorded as `sending`; send now, then
    /// [`Keys::sent`] (or [`Keys::abandon`] when nothing went out).
    Fresh,
    /// Already sent: its id; send nothing.
    Done(String),
}

/// One bot's idempotency keys. Senders of one bot share one (its lock
/// makes check-and-record atomic; its in-flight set tells a send under way
/// from one a crash interrupted).
#[derive(Debug)]
pub struct Keys {
    view: BotView,
    in_flight: Mutex<HashSet<String>>,
}

fn decode(b: &[u8]) -> Result<Record> {
    codec::decode(b).map_err(|e| Error::damaged(format!("an idempotency record is malformed: {e}")))
}

impl Keys {
    pub fn new(view: BotView) -> Keys {
        Keys {
            view,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks the key up and, when it is new, records it as `sending`
    /// (durably, before returning). Refuses a key in flight, one a crash
    /// interrupted, and one used for another message.
    pub async fn begin(&self, key: &str, msg: &Outgoing, now: i64) -> Result<Begin> {
        let fp = msg.fingerprint();
        let bot = self.view.bot().clone();
        {
            let mut flights = self.flights();
            let old = match self.view.get(Kind::IDEMPOTENCY, key.as_bytes())? {
                Some(b) => Some(decode(&b)?),
                None => None,
            };
            match old {
                Some(r) if now - r.at < KEEP.as_secs() as i64 => {
                    if r.fingerprint != fp {
                        return Err(Error::Usage(format!(
                            "idempotency key {key:?} of bot {bot} was used within 24 h for another message \
                             (recipient, text, reply-to or file differ): use a new key for a new message"
                        )));
                    }
                    match (r.state, r.id) {
                        (State::Sent, Some(id)) => return Ok(Begin::Done(id)),
                        _ if flights.contains(key) => {
                            return Err(Error::AlreadyExists(format!(
                                "a send with idempotency key {key:?} of bot {bot} is in progress; \
                                 retry shortly to get its message id"
                            )))
                        }
                        _ => {
                            return Err(Error::AlreadyExists(format!(
                                "the send with idempotency key {key:?} of bot {bot} was interrupted \
                                 (wavault stopped or WhatsApp did not answer before the message id was \
                                 recorded): it may or may not have been sent. Check the chat; send again \
                                 with a new key if it did not arrive"
                            )))
                        }
                    }
                }
                _ => {}
            }
            let r = Record {
                state: State::Sending,
                at: now,
                fingerprint: fp,
                id: None,
            };
            self.view
                .put(Kind::IDEMPOTENCY, key.as_bytes(), &codec::encode(&r))?;
            flights.insert(key.to_owned());
        }
        if let Err(e) = self.view.durable().await {
            let _ = self.abandon(key).await;
            return Err(e);
        }
        Ok(Begin::Fresh)
    }

    /// The send of `key` went out as `id`: recorded durably.
    pub async fn sent(&self, key: &str, id: &str) -> Result<()> {
        let out = self.view.update(Kind::IDEMPOTENCY, key.as_bytes(), |old| {
            let mut r = decode(old?).ok()?;
            r.state = State::Sent;
            r.id = Some(id.to_owned());
            Some(codec::encode(&r))
        });
        self.flights().remove(key);
        out?;
        self.view.durable().await
    }

    /// Nothing was sent for `key` (refused before anything went out): the
    /// key is forgotten, so a retry sends.
    pub async fn abandon(&self, key: &str) -> Result<()> {
        let out = self.view.delete(Kind::IDEMPOTENCY, key.as_bytes());
        self.flights().remove(key);
        out?;
        self.view.durable().await
    }

    /// The outcome of `key`'s send is unknown (timed out): the record stays
    /// `sending`, so retries are refused as interrupted.
    pub fn unknown(&self, key: &str) {
        self.flights().remove(key);
    }
}

/// Deletes the bot's idempotency records older than [`KEEP`] at `now`
/// (the retention sweep); returns how many. Not durable by itself.
pub fn prune(view: &BotView, now: i64) -> Result<u64> {
    let cutoff = now - KEEP.as_secs() as i64;
    let mut n = 0;
    for (name, data) in view.scan(Kind::IDEMPOTENCY)? {
        let old = decode(&data).map_or(true, |r| r.at < cutoff);
        if old {
            view.delete(Kind::IDEMPOTENCY, &name)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{crypto::KdfParams, BotConfig, Vault};
    use crate::BotId;

    fn view() -> (tempfile::TempDir, Vault, BotView) {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::create(&d.path().join("v"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let id = BotId::parse("ventas").unwrap();
        v.add_bot(&BotConfig::new(id.clone())).unwrap();
        let view = v.view(&id);
        (d, v, view)
    }

    #[test]
    fn keys_and_ids_are_checked() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"k".repeat(255)).is_ok());
        assert!(check_key("order 42 / retry ~").is_ok());
        for bad in [
            String::new(),
            "k".repeat(256),
            "tab\there".into(),
            "ü".into(),
        ] {
            let e = check_key(&bad).unwrap_err();
            assert!(e.contains("printable ASCII"), "{e}");
        }
        assert!(check_message_id("3EB0ABCDEF0123").is_ok());
        assert!(check_message_id("x y").is_err());
    }

    /// A key is recorded before the send and the id after; the same key
    /// then answers that id; across a "restart" (new `Keys` over the same
    /// vault) too. A key left `sending` is interrupted after a restart and
    /// in progress before; another message under the same key is refused;
    /// after 24 h the key is new again and the sweep's prune removes it.
    #[test]
    fn keys_record_before_and_after_and_survive_a_restart() {
        let rt = crate::messaging::test_runtime();
        let (_d, _v, view) = view();
        let msg = Outgoing::text("4917300000099", "hi");
        rt.block_on(async {
            let k = Keys::new(view.clone());
            assert_eq!(k.begin("a", &msg, 100).await.unwrap(), Begin::Fresh);
            let e = k.begin("a", &msg, 101).await.unwrap_err();
            assert!(e.to_string().contains("in progress"), "{e}");
            k.sent("a", "ID1").await.unwrap();
            assert_eq!(
                k.begin("a", &msg, 102).await.unwrap(),
                Begin::Done("ID1".into())
            );
            let other = Outgoing::text("4917300000099", "other");
            let e = k.begin("a", &other, 102).await.unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
            // A file: the same key with other bytes is another message.
            let file = |b: &[u8]| Outgoing {
                file: Some(OutFile {
                    bytes: Arc::new(b.to_vec()),
                    ..Default::default()
                }),
                ..Outgoing::text("4917300000099", "")
            };
            assert_eq!(
                k.begin("f", &file(b"one"), 100).await.unwrap(),
                Begin::Fresh
            );
            k.sent("f", "IDF").await.unwrap();
            assert_eq!(
                k.begin("f", &file(b"one"), 101).await.unwrap(),
                Begin::Done("IDF".into())
            );
            let e = k.begin("f", &file(b"two"), 101).await.unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{e}");
            assert!(e.to_string().contains("file differ"), "{e}");
            // Crash between the two writes: `b` stays `sending`.
            assert_eq!(k.begin("b", &msg, 100).await.unwrap(), Begin::Fresh);
            // Abandoned (nothing went out): a retry sends.
            assert_eq!(k.begin("c", &msg, 100).await.unwrap(), Begin::Fresh);
            k.abandon("c").await.unwrap();
            assert_eq!(k.begin("c", &msg, 100).await.unwrap(), Begin::Fresh);
            k.sent("c", "ID3").await.unwrap();
        });
        rt.block_on(async {
            let k = Keys::new(view.clone()); // the restart
            assert_eq!(
                k.begin("a", &msg, 200).await.unwrap(),
                Begin::Done("ID1".into())
            );
            let e = k.begin("b", &msg, 200).await.unwrap_err();
            assert!(e.to_string().contains("interrupted"), "{e}");
            assert_eq!(e.exit_code(), crate::error::exit::OTHER);
            // 24 h later the key is new again.
            let later = 100 + KEEP.as_secs() as i64;
            assert_eq!(k.begin("a", &msg, later).await.unwrap(), Begin::Fresh);
        });
        // The retention sweep prunes: `b` and `c` are expired, `a`
        // (rewritten) is not, whatever the sweep's own retention.
        let later = 101 + KEEP.as_secs() as i64;
        assert_eq!(view.count(Kind::IDEMPOTENCY).unwrap(), 4);
        let opts = crate::sweep::SweepOptions {
            retention: Duration::from_secs(30 * 86_400),
            dry_run: false,
            now: later,
            backup: None,
        };
        crate::sweep::sweep(view.vault(), opts).unwrap();
        assert_eq!(view.count(Kind::IDEMPOTENCY).unwrap(), 1);
        assert_eq!(prune(&view, later).unwrap(), 0);
    }
}
