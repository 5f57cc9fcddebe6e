//! The application layer: every operation once, run against a vault this
//! process opened (no `wavault run` holds it) or by the running `wavault run`
//! on behalf of a client (the control socket).
//!
//! The command line builds a [`Request`], sends it to the running `run` when
//! one listens ([`client::call`]), else opens the vault and calls
//! [`execute`] with a [`Local`] host; the runner's control server calls the
//! same [`execute`] with a host that can also stop and start bots. The
//! arrows point down: `cli` and `runner` know `ops`; `ops` knows the library
//! and never the runner or the command line.

pub mod backup;
pub mod bots;
pub mod client;
pub mod proto;
pub mod queue;
pub mod service;

use std::sync::Arc;

use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::messaging::queue::Queue;
use crate::passphrase::Passphrase;
use crate::vault::{BotConfig, Vault};
pub use proto::{Request, Response};
pub use service::Service;

/// What an operation may ask of the process that runs it beyond the vault.
/// Offline ([`Local`]) nothing runs, so stopping and starting bots do
/// nothing; inside `wavault run` they act on the live bots.
pub trait Host: Send + Sync {
    /// The open vault.
    fn vault(&self) -> &Vault;
    /// True inside `wavault run` (bots may be running).
    fn live(&self) -> bool {
        false
    }
    /// Bots waiting to retry after a failed connection attempt (the
    /// runner's; offline, none).
    fn retry_state(&self) -> std::collections::HashMap<String, crate::status::Retry> {
        Default::default()
    }
    /// This host's id in a fleet (`run --nats --host-id`).
    fn host_id(&self) -> Option<String> {
        None
    }
    /// Stops a running bot cleanly (status and history recorded) and waits
    /// for it. False when it was not running.
    fn stop_bot(&self, _id: &BotId) -> bool {
        false
    }
    /// Starts a bot now (ignored offline).
    fn start_bot(&self, _cfg: &BotConfig) {}
    /// Whether a bot runs now.
    fn is_running(&self, _id: &BotId) -> bool {
        false
    }
    /// The bot's stored state was replaced (restore) or removed: forget
    /// what was kept in memory about it.
    fn bot_replaced(&self, _id: &BotId) {}
    /// The bot's settings changed: a running bot reads them again.
    fn settings_changed(&self, _id: &BotId) {}
    /// Runs `f` on the bot's inbound queue (the running worker's own, so it
    /// notices the change).
    fn with_queue(
        &self,
        id: &BotId,
        f: &mut dyn FnMut(&Queue) -> Result<Response>,
    ) -> Result<Response> {
        f(&Queue::new(self.vault().view(id)))
    }
    /// The vault passphrase, which seals automatic backups (before a
    /// restore replaces bots, before re-auth, before sweep purges).
    fn backup_passphrase(&self) -> Option<Arc<Passphrase>>;
    /// After `rotate passphrase`: automatic backups use the new one.
    fn set_backup_passphrase(&self, _p: Passphrase) {}
    /// Sends a message from a running bot; returns its id (the first
    /// one's for a repeated idempotency key).
    fn send(&self, bot: &BotId, _msg: &crate::messaging::outbox::Outgoing) -> Result<String> {
        Err(Error::Unavailable(format!(
            "bot {bot} is not running here: sending needs `wavault run`"
        )))
    }
    /// The groups a running bot is in.
    fn groups(&self, bot: &BotId) -> Result<Vec<proto::GroupRow>> {
        Err(Error::Unavailable(format!(
            "bot {bot} is not running here: listing its groups needs it connected"
        )))
    }
    /// Downloads and verifies the media of message `message_id` a running
    /// bot received (`media get`, the media API).
    fn media(
        &self,
        bot: &BotId,
        _message_id: &str,
    ) -> std::result::Result<crate::messaging::media::MediaFile, crate::messaging::media::MediaError>
    {
        Err(crate::messaging::media::MediaError::Unavailable(format!(
            "bot {bot} is not running here: fetching media needs its connection"
        )))
    }
}

/// The host of a command run with no `wavault run` holding the vault.
pub struct Local {
    vault: Vault,
    pass: Arc<Passphrase>,
}

impl Local {
    pub fn new(vault: Vault, pass: Passphrase) -> Local {
        Local {
            vault,
            pass: Arc::new(pass),
        }
    }
}

impl Host for Local {
    fn vault(&self) -> &Vault {
        &self.vault
    }
    fn backup_passphrase(&self) -> Option<Arc<Passphrase>> {
        Some(self.pass.clone())
    }
}

/// Runs a future to completion from synchronous code: on the current
/// runtime's handle when called from one of its blocking threads (inside
/// `run`), else on a small runtime of its own (offline commands).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => Ok(h.block_on(f)),
        Err(_) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the async runtime", e))?;
            Ok(rt.block_on(f))
        }
    }
}

/// The longest age any flag takes (`36525d`, the command line's `MAX_DURATION`).
const MAX_AGE_SECS: u64 = 36_525 * 86_400;

/// Runs one operation. `payload` is the request's raw bytes (a backup for
/// `restore`); the second value returned is the answer's (a backup from
/// `export`). Blocking: inside `run`, call it from a blocking thread.
pub fn execute(host: &dyn Host, req: Request, payload: Vec<u8>) -> Result<(Response, Vec<u8>)> {
    let v = host.vault();
    let none = Vec::new;
    let r = match req {
        Request::Status => {
            let mut rows = crate::status::collect(v)?;
            crate::status::with_retry(&mut rows, &host.retry_state());
            if let Some(h) = host.host_id() {
                for r in &mut rows {
                    r.host = Some(h.clone());
                }
            }
            Response::Status(rows)
        }
        Request::Bots => Response::Bots(bots::rows(v)?),
        Request::BotShow { bot, show_phone } => Response::BotShow(bots::show(v, &bot, show_phone)?),
        Request::Stats { bots, since, now } => {
            if since > now {
                return Err(Error::Usage(format!(
                    "stats window starts after it ends ({since} > {now})"
                )));
            }
            Response::Stats(crate::stats::collect(v, &bots, since, now)?)
        }
        Request::BotAdd { config } => bots::add(host, config)?,
        Request::BotConfig { bot } => Response::BotConfig(v.bot_config(&bot)?),
        Request::BotSet { config } => bots::set(host, config)?,
        Request::BotRemove { bot } => Response::Removed(bots::remove(host, &bot)?),
        Request::BotEnable { bot, enabled } => {
            Response::Toggled(bots::set_enabled(host, &bot, enabled)?)
        }
        Request::Reauth { bot } => bots::reauth(host, &bot)?,
        Request::Queue { bot, action } => queue::run(host, &bot, action)?,
        Request::Send { bot, mut message } => {
            // A file's bytes are the payload (the request line has its name and kind).
            match message.file.as_mut() {
                Some(f) => f.bytes = Arc::new(payload),
                None if !payload.is_empty() => {
                    return Err(Error::Usage(
                        "a send with data needs a \"file\" in its message".into(),
                    ))
                }
                None => {}
            }
            message.check()?;
            v.bot_config(&bot)?;
            Response::Sent {
                id: host.send(&bot, &message)?,
            }
        }
        Request::Groups { bot } => {
            v.bot_config(&bot)?;
            Response::Groups(host.groups(&bot)?)
        }
        Request::Sweep {
            older_than_secs,
            dry_run,
        } => sweep(host, older_than_secs, dry_run)?,
        Request::TokenShow => Response::Token(crate::token::load_or_create(v)?.to_string()),
        Request::TokenRotate => Response::Token(crate::token::rotate(v)?.to_string()),
        Request::WebhookSecretShow { bot } => webhook_secret(v, bot, None)?,
        Request::WebhookSecretRotate { bot, grace_secs } => {
            webhook_secret(v, bot, Some(grace_secs))?
        }
        Request::Validate => Response::Validate(crate::store::validate(v)?),
        Request::RotateKey => Response::RotateKey(v.rotate_key(&mut |_, _| {})?),
        Request::RotatePassphrase { current, new, kdf } => {
            rotate_passphrase(host, &current, new, kdf)?
        }
        Request::MediaGet { bot, id } => {
            let f = host.media(&bot, &id).map_err(Error::from)?;
            let r = Response::Media {
                bot: bot.to_string(),
                id,
                kind: f.kind.clone(),
                content_type: f.content_type.clone(),
                size: f.bytes.len() as u64,
            };
            return Ok((r, f.bytes));
        }
        Request::Export {
            bots,
            move_bots,
            passphrase,
            kdf,
        } => {
            let (done, bytes) = backup::export(host, &bots, move_bots, &passphrase, kdf)?;
            return Ok((Response::Exported(done), bytes));
        }
        Request::Restore {
            bots,
            force,
            keep_hooks,
            passphrase,
            max_kdf_memory_kib,
        } => {
            let opts = backup::RestoreOpts {
                bots,
                force,
                keep_hooks,
            };
            Response::Restored(backup::restore_bytes(
                host,
                payload,
                &passphrase,
                max_kdf_memory_kib,
                &opts,
            )?)
        }
    };
    Ok((r, none()))
}

/// `webhook secret show` (`rotate`: `None`) or `rotate` with that grace
/// (0 ..= 100 years).
fn webhook_secret(v: &Vault, bot: Option<BotId>, rotate: Option<u64>) -> Result<Response> {
    use crate::messaging::signing::{self, Scope};
    let now = crate::vault::now();
    let (scope, s) = match rotate {
        None => signing::current(v, bot.as_ref())?,
        Some(grace) if grace > MAX_AGE_SECS => {
            return Err(Error::Usage(format!(
                "grace of {grace}s: it must be 0s..=36525d"
            )))
        }
        Some(grace) => signing::rotate(v, bot.as_ref(), grace, now)?,
    };
    Ok(Response::WebhookSecret(proto::WebhookSecret {
        bot: bot.map(|b| b.to_string()),
        scope: match scope {
            Scope::Default => "default",
            Scope::Bot(_) => "bot",
        }
        .into(),
        secret: s.current.clone(),
        previous_until: s.grace_until(now),
    }))
}

/// `sweep`: the retention (1 s .. 100 years) checked again, the automatic
/// backup sealed with the host's passphrase.
fn sweep(host: &dyn Host, older_than_secs: u64, dry_run: bool) -> Result<Response> {
    if older_than_secs == 0 || older_than_secs > MAX_AGE_SECS {
        return Err(Error::Usage(format!(
            "sweep retention of {older_than_secs}s: it must be 1s..=36525d"
        )));
    }
    let pass = host.backup_passphrase();
    Ok(Response::Sweep(crate::sweep::sweep_now(
        host.vault(),
        std::time::Duration::from_secs(older_than_secs),
        dry_run,
        pass.as_deref().map(|p| p.expose()),
    )?))
}

/// `rotate passphrase`: `current` must open the vault's slot first; then
/// automatic backups use the new one.
fn rotate_passphrase(
    host: &dyn Host,
    current: &Passphrase,
    new: Passphrase,
    kdf: Option<proto::Kdf>,
) -> Result<Response> {
    let v = host.vault();
    let params = kdf.map(proto::Kdf::params).transpose()?;
    if new.expose().is_empty() {
        return Err(Error::Usage("the new passphrase is empty".into()));
    }
    v.check_passphrase(current.expose())?;
    crate::testpoint::pause("rotate-passphrase-checked");
    v.rotate_passphrase(new.expose(), params)?;
    crate::testpoint::pause("rotate-passphrase-written");
    host.set_backup_passphrase(new);
    Ok(Response::RotatePassphrase)
}
