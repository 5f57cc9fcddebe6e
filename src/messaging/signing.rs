//! Signed webhooks, the Standard Webhooks way (<https://www.standardwebhooks.com>):
//! every webhook POST carries `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`
//! keyed by the bytes of a `whsec_<base64>` secret.
//!
//! - The id is derived from the queue entry (bot id and record name), never
//!   from the body: the same for every attempt of one entry, across
//!   restarts, for any kind of entry ([`event_id`]).
//! - Secrets: per bot, or the `run` default; the secret follows the
//!   webhook. A bot with its own webhook signs with its own secret (made on
//!   first use: a receiver of one bot cannot forge another's); a bot that
//!   posts to the `run` default webhook signs with the default secret (made
//!   on first use), so its receiver needs one secret for all of them.
//! - Storage (docs/FORMAT.md): a bot's secrets are a sealed record of the
//!   bot (kind [`Kind::WEBHOOK_SECRET`], name `webhook-secret`; backups and
//!   moves carry it like every record); the default's are a sealed blob
//!   file `<vault>/webhook.secret` (like `web.token`).
//! - Rotation keeps the old secret for a grace period: until it ends both
//!   signatures go out, space-separated in the one header; its end is
//!   sealed with the secrets. Every function takes the time as a parameter.

use std::sync::Mutex;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::botid::BotId;
use crate::codec;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::vault::{crypto, Kind, Vault};

/// Prefix of a secret's text.
pub const PREFIX: &str = "whsec_";
/// The default secret's file inside the vault folder.
pub const FILE: &str = "webhook.secret";
/// Record name of a bot's secrets.
const NAME: &[u8] = b"webhook-secret";
/// Random bytes of a secret.
const SECRET_LEN: usize = 32;

/// Header names.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Load-or-create and rotate are one at a time in this process (delivery
/// tasks of several chats, control operations): two first uses must not
/// make two secrets.
static LOCK: Mutex<()> = Mutex::new(());

/// The secrets of one scope: the current one and, for a grace period after
/// a rotation, the previous one. Wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// `whsec_` + base64 of 32 random bytes.
    pub current: String,
    /// The secret before the last rotation, while it still signs.
    pub previous: Option<String>,
    /// Unix seconds: the previous secret signs while `now < previous_until`.
    pub previous_until: i64,
}

impl Drop for Secrets {
    fn drop(&mut self) {
        self.current.zeroize();
        if let Some(p) = &mut self.previous {
            p.zeroize();
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("previous_until", &self.previous_until)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    fn fresh() -> Secrets {
        Secrets {
            current: generate().to_string(),
            previous: None,
            previous_until: 0,
        }
    }

    /// The secrets that sign at `now`: the current one, and the previous
    /// one while its grace lasts.
    pub fn signing(&self, now: i64) -> Vec<&str> {
        let mut v = vec![self.current.as_str()];
        if let Some(p) = &self.previous {
            if now < self.previous_until {
                v.push(p);
            }
        }
        v
    }

    /// When the previous secret stops signing, if it still does at `now`.
    pub fn grace_until(&self, now: i64) -> Option<i64> {
        (self.previous.is_some() && now < self.previous_until).then_some(self.previous_until)
    }

    /// The `webhook-signature` value for one delivery at `now`.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8], now: i64) -> Result<String> {
        let sigs: Result<Vec<String>> = self
            .signing(now)
            .into_iter()
            .map(|s| sign(s, id, timestamp, body))
            .collect();
        Ok(sigs?.join(" "))
    }
}

/// Whose secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The `run` default.
    Default,
    /// One bot's own.
    Bot(BotId),
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate() -> Zeroizing<String> {
    let mut b = Zeroizing::new([0u8; SECRET_LEN]);
    crypto::fill_random(&mut b[..]);
    Zeroizing::new(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(&b[..])
    ))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, the key being
/// the bytes the secret's base64 stands for.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let b64 = secret.strip_prefix(PREFIX).unwrap_or(secret);
    let key = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| Error::damaged("a webhook secret is not base64".to_string()))?,
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-id` of a queue entry: `evt_` + hex of the first 16 bytes of
/// SHA-256(bot id ‖ 0 ‖ record name). Stable across attempts and restarts;
/// the same for the same entry only.
pub fn event_id(bot: &BotId, record_name: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bot.as_str().as_bytes());
    h.update([0u8]);
    h.update(record_name);
    format!("evt_{}", crate::vault::hex(&h.finalize()[..16]))
}

fn blob_ad(vault: &Vault) -> Vec<u8> {
    [b"wavault webhook secret".as_slice(), &vault.id()].concat()
}

/// The stored secrets of `scope`, if any.
pub fn load(vault: &Vault, scope: &Scope) -> Result<Option<Secrets>> {
    let bytes = match scope {
        Scope::Bot(bot) => match vault.bot(bot)?.get(Kind::WEBHOOK_SECRET, NAME)? {
            Some(b) => Zeroizing::new(b),
            None => return Ok(None),
        },
        Scope::Default => {
            let path = vault.dir().join(FILE);
            let blob = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
            };
            let key = vault.purpose_key("webhook-secret");
            crypto::open_blob(&key, &blob_ad(vault), &blob).map_err(|_| Error::Damaged {
                what: format!("{} does not open", path.display()),
                hint: "replace it with `wavault webhook secret rotate`",
            })?
        }
    };
    let s: Secrets = codec::decode(&bytes)
        .map_err(|e| Error::damaged(format!("the webhook secret record does not decode: {e}")))?;
    Ok(Some(s))
}

/// Stores `s` for `scope`, durably.
fn store(vault: &Vault, scope: &Scope, s: &Secrets) -> Result<()> {
    let bytes = Zeroizing::new(codec::encode(s));
    match scope {
        Scope::Bot(bot) => {
            vault.bot(bot)?.put(Kind::WEBHOOK_SECRET, NAME, &bytes)?;
            vault.flush()
        }
        Scope::Default => {
            let key = vault.purpose_key("webhook-secret");
            let blob = crypto::seal_blob(&key, &blob_ad(vault), &bytes);
            fsutil::write_atomic(&vault.dir().join(FILE), &blob)
        }
    }
}

/// Whose secrets `bot` signs with: its own when it has its own webhook,
/// else (it posts to the `run` default webhook, if any) the default.
/// `None`: the default.
fn scope_of(vault: &Vault, bot: Option<&BotId>) -> Result<Scope> {
    let Some(bot) = bot else {
        return Ok(Scope::Default);
    };
    if vault.bot_config(bot)?.webhook.is_some() {
        Ok(Scope::Bot(bot.clone()))
    } else {
        Ok(Scope::Default)
    }
}

/// The secrets `bot` signs with (`None`: the `run` default), made and
/// sealed on first use, and whose they are. An unknown bot is not found.
pub fn current(vault: &Vault, bot: Option<&BotId>) -> Result<(Scope, Secrets)> {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let scope = scope_of(vault, bot)?;
    if let Some(s) = load(vault, &scope)? {
        return Ok((scope, s));
    }
    let s = Secrets::fresh();
    store(vault, &scope, &s)?;
    Ok((scope, s))
}

/// Gives `bot` (`None`: the `run` default) a new secret; the old one keeps
/// signing until `now + grace_secs` (0: stops at once). A bot without its
/// own webhook signs with the default: rotating it is a usage error naming
/// the way (rotate the default, or give the bot its own webhook).
pub fn rotate(
    vault: &Vault,
    bot: Option<&BotId>,
    grace_secs: u64,
    now: i64,
) -> Result<(Scope, Secrets)> {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let scope = scope_of(vault, bot)?;
    if let (Some(b), Scope::Default) = (bot, &scope) {
        return Err(Error::Usage(format!(
            "bot {b} has no webhook of its own: it signs with the `run` default secret; rotate \
             that (`wavault webhook secret rotate` without --bot), or give the bot its own \
             webhook (`wavault bot set {b} --webhook URL`), which gets its own secret"
        )));
    }
    let old = load(vault, &scope)?;
    let mut s = Secrets::fresh();
    if let Some(old) = &old {
        if grace_secs > 0 {
            s.previous = Some(old.current.clone());
            s.previous_until = now.saturating_add(i64::try_from(grace_secs).unwrap_or(i64::MAX));
        }
    }
    store(vault, &scope, &s)?;
    Ok((scope, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::crypto::KdfParams;
    use crate::vault::BotConfig;

    fn vault(d: &tempfile::TempDir) -> Vault {
        Vault::create(&d.path().join("v"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap()
    }

    #[test]
    fn signature_matches_the_spec_example() {
        // The Standard Webhooks test vector.
        let s = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(s, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_sealed_per_scope_and_stable() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(&d);
        let own = crate::BotId::parse("own").unwrap();
        let mut cfg = BotConfig::new(own.clone());
        cfg.webhook = Some("http://own/".into());
        v.add_bot(&cfg).unwrap();
        let shared = crate::BotId::parse("shared").unwrap();
        v.add_bot(&BotConfig::new(shared.clone())).unwrap();

        let (scope, d1) = current(&v, None).unwrap();
        assert_eq!(scope, Scope::Default);
        assert!(d1.current.starts_with(PREFIX) && d1.current.len() == 6 + 44);
        assert_eq!(current(&v, None).unwrap().1, d1, "made once");
        assert_eq!(
            current(&v, Some(&shared)).unwrap(),
            (Scope::Default, d1.clone())
        );
        let (scope, o1) = current(&v, Some(&own)).unwrap();
        assert_eq!(scope, Scope::Bot(own.clone()));
        assert_ne!(o1.current, d1.current);
        // Sealed: not in clear in the file.
        let file = std::fs::read(v.dir().join(FILE)).unwrap();
        assert!(!file
            .windows(12)
            .any(|w| d1.current.as_bytes()[6..].starts_with(w)));
        let unknown = crate::BotId::parse("nobody").unwrap();
        assert_eq!(current(&v, Some(&unknown)).unwrap_err().exit_code(), 6);
    }

    /// Rotation with a grace: both secrets sign until it ends (time given,
    /// not waited for), then only the new one; a bot on the default gets
    /// its own, the default signing beside it during the grace.
    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(&d);
        let bot = crate::BotId::parse("b").unwrap();
        let mut cfg = BotConfig::new(bot.clone());
        cfg.webhook = Some("http://b/".into());
        v.add_bot(&cfg).unwrap();
        let shared = crate::BotId::parse("shared").unwrap();
        v.add_bot(&BotConfig::new(shared.clone())).unwrap();
        let (_, default) = current(&v, None).unwrap();
        let t = 1_800_000_000;
        let (_, old) = current(&v, Some(&bot)).unwrap();
        let (scope, new) = rotate(&v, Some(&bot), 3600, t).unwrap();
        assert_eq!(scope, Scope::Bot(bot.clone()));
        assert_eq!(new.previous.as_deref(), Some(old.current.as_str()));
        assert_eq!(new.signing(t + 3599), [&new.current, &old.current]);
        assert_eq!(new.signing(t + 3600), [&new.current]);
        assert_eq!(new.grace_until(t), Some(t + 3600));
        assert_eq!(new.grace_until(t + 3600), None);
        // Sealed with its end.
        assert_eq!(current(&v, Some(&bot)).unwrap(), (scope, new.clone()));
        assert_eq!(current(&v, None).unwrap().1, default, "the default");
        // A bot on the default webhook signs with the default: its rotation
        // is refused, naming the ways.
        let e = rotate(&v, Some(&shared), 60, t).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--webhook"), "{e}");
        let h = new.header("evt_1", t, b"{}", t).unwrap();
        assert_eq!(h.split(' ').count(), 2, "{h}");
        // Grace 0: the old one stops at once.
        let (_, newer) = rotate(&v, Some(&bot), 0, t).unwrap();
        assert_eq!(newer.signing(t), [&newer.current]);
    }

    /// The headers of one delivery at `now` (the real time: receivers
    /// check the timestamp against their clock).
    fn headers(s: &Secrets, id: &str, body: &[u8], now: i64) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        h.insert(HEADER_ID, id.parse().unwrap());
        h.insert(HEADER_TIMESTAMP, now.to_string().parse().unwrap());
        h.insert(
            HEADER_SIGNATURE,
            s.header(id, now, body, now).unwrap().parse().unwrap(),
        );
        h
    }

    fn verifies(secret: &str, body: &[u8], h: &axum::http::HeaderMap) -> bool {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(body, h)
            .is_ok()
    }

    /// Receivers (the `standardwebhooks` crate) across a rotation: during
    /// the grace one holding only the old secret verifies, and one holding
    /// only the new; after it only the new. The grace is over because the
    /// rotation is dated 25 h back, not because the test waits.
    #[test]
    fn receivers_verify_across_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(&d);
        let now = crate::vault::now();
        let body = br#"{"bot":"b","text":"hi \u00e4"}"#;
        let (_, old) = current(&v, None).unwrap();
        let h = headers(&old, "evt_1", body, now);
        assert!(verifies(&old.current, body, &h));
        let (_, new) = rotate(&v, None, 24 * 3600, now).unwrap();
        let h = headers(&new, "evt_2", body, now);
        assert!(
            verifies(&old.current, body, &h),
            "old secret, during the grace"
        );
        assert!(
            verifies(&new.current, body, &h),
            "new secret, during the grace"
        );
        assert!(!verifies(&old.current, b"{}", &h), "another body");
        let (_, new) = rotate(&v, None, 24 * 3600, now - 25 * 3600).unwrap();
        let h = headers(&new, "evt_3", body, now);
        assert!(
            !verifies(new.previous.as_deref().unwrap(), body, &h),
            "old secret, after the grace"
        );
        assert!(
            verifies(&new.current, body, &h),
            "new secret, after the grace"
        );
    }

    /// A bot's secrets are one of its records: a dump (what backups and
    /// moves carry) brings them into another vault.
    #[test]
    fn a_bots_secrets_travel_with_its_dump() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(&d);
        let bot = crate::BotId::parse("b").unwrap();
        let mut cfg = BotConfig::new(bot.clone());
        cfg.webhook = Some("http://b/".into());
        v.add_bot(&cfg).unwrap();
        let (_, s) = rotate(&v, Some(&bot), 60, 1_800_000_000).unwrap();
        let other =
            Vault::create(&d.path().join("w"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        other.replace_bot(&v.dump_bot(&bot).unwrap()).unwrap();
        assert_eq!(
            load(&other, &Scope::Bot(bot.clone())).unwrap(),
            Some(s.clone())
        );
        assert_eq!(current(&other, Some(&bot)).unwrap().1, s);
    }

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let a = crate::BotId::parse("a").unwrap();
        let b = crate::BotId::parse("b").unwrap();
        let id = event_id(&a, b"chat\0sender\0X");
        assert_eq!(id, event_id(&a, b"chat\0sender\0X"));
        assert!(id.starts_with("evt_") && id.len() == 4 + 32, "{id}");
        assert_ne!(id, event_id(&b, b"chat\0sender\0X"));
        assert_ne!(id, event_id(&a, b"chat\0sender\0Y"));
    }
}
