//! Bot operations: list, show, add, set, remove, enable, disable, re-auth.

use super::proto::{BotRow, BotShow, Removed, Response, Toggled};
use super::Host;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::vault::{BotConfig, Vault};

/// The rows of `bot list` for an open vault.
pub fn rows(v: &Vault) -> Result<Vec<BotRow>> {
    v.list_bots()?
        .into_iter()
        .map(|c| {
            let records = v.view(&c.id).kinds()?.values().sum();
            Ok(BotRow {
                id: c.id.to_string(),
                enabled: c.enabled,
                created_at: c.created_at,
                records,
            })
        })
        .collect()
}

/// The configuration of `id` as `bot show` prints it.
pub fn show(v: &Vault, id: &BotId, show_phone: bool) -> Result<BotShow> {
    use crate::messaging::hook::keys;
    let c = v.bot_config(id)?;
    let records = v.view(id).kinds()?.values().sum();
    let mut extra = c.extra;
    let on_message = extra.remove(keys::ON_MESSAGE);
    let mut num = |k: &str| {
        let n = extra.get(k)?.parse::<u64>().ok()?;
        extra.remove(k);
        Some(n)
    };
    Ok(BotShow {
        id: c.id.to_string(),
        enabled: c.enabled,
        created_at: c.created_at,
        phone: c.phone.map(|p| {
            if show_phone {
                p
            } else {
                crate::status::mask_phone(&p)
            }
        }),
        webhook: c.webhook,
        on_message,
        hook_timeout_ms: num(keys::TIMEOUT_MS),
        hook_concurrency: num(keys::CONCURRENCY),
        queue_max: num(keys::QUEUE_MAX),
        queue_max_age_secs: num(keys::QUEUE_MAX_AGE_SECS),
        extra,
        records,
    })
}

/// The checks of [`BotConfig::check`] as a usage error: the same whether
/// typed on the command line or sent to the socket.
pub fn checked(cfg: &BotConfig) -> Result<()> {
    cfg.check()
        .map_err(|p| Error::Usage(format!("bot {}: {p}", cfg.id)))
}

/// `bot add`: started at once when enabled and `run` holds the vault.
pub fn add(host: &dyn Host, cfg: BotConfig) -> Result<Response> {
    checked(&cfg)?;
    host.vault().add_bot(&cfg)?;
    let started = cfg.enabled && host.live();
    if started {
        host.start_bot(&cfg);
    }
    Ok(Response::Added {
        bot: cfg.id.to_string(),
        started,
    })
}

/// `bot set`: a running bot's worker reads its hook settings again.
pub fn set(host: &dyn Host, cfg: BotConfig) -> Result<Response> {
    checked(&cfg)?;
    let old = host.vault().bot_config(&cfg.id)?;
    if old.enabled != cfg.enabled {
        return Err(Error::Usage(format!(
            "bot {}: use `wavault bot enable|disable` to change whether it runs",
            cfg.id
        )));
    }
    host.vault().set_bot(&cfg)?;
    host.settings_changed(&cfg.id);
    Ok(Response::Updated {
        bot: cfg.id.to_string(),
    })
}

/// `bot remove`: a running bot is stopped first.
pub fn remove(host: &dyn Host, id: &BotId) -> Result<Removed> {
    let cfg = host.vault().bot_config(id)?;
    let pass = backup_passphrase(host, "bot remove")?;
    let stopped = host.stop_bot(id);
    // Taken with the bot stopped: its last state. A failed backup removes
    // nothing (and a bot that ran runs again).
    let backup = crate::backup::auto::take(
        host.vault(),
        std::slice::from_ref(id),
        pass.expose(),
        "remove",
    );
    let backup = match backup {
        Ok(p) => p,
        Err(e) => {
            if stopped {
                host.start_bot(&cfg);
            }
            return Err(e);
        }
    };
    let r = host.vault().remove_bot(id)?;
    host.bot_replaced(id);
    Ok(Removed {
        bot: id.to_string(),
        records: r.records,
        stopped,
        auto_backup: Some(backup),
    })
}

/// The passphrase that seals automatic backups, or why `what` cannot run.
pub(super) fn backup_passphrase(
    host: &dyn Host,
    what: &str,
) -> Result<std::sync::Arc<crate::passphrase::Passphrase>> {
    host.backup_passphrase().ok_or_else(|| {
        Error::Unavailable(format!(
            "the running wavault has no passphrase for the automatic backup; stop it and run `wavault {what}` again"
        ))
    })
}

/// `bot enable` (a running `run` starts it now) and `bot disable` (a
/// running `run` stops it now, cleanly). Nothing else is touched.
pub fn set_enabled(host: &dyn Host, id: &BotId, enabled: bool) -> Result<Toggled> {
    let v = host.vault();
    let mut cfg = v.bot_config(id)?;
    cfg.enabled = enabled;
    if enabled {
        cfg.extra.remove(MOVED_AT);
    }
    v.set_bot(&cfg)?;
    let live = if enabled {
        if host.live() && !host.is_running(id) {
            host.start_bot(&cfg);
        }
        host.live()
    } else {
        host.stop_bot(id)
    };
    Ok(Toggled {
        bot: id.to_string(),
        enabled,
        live,
    })
}

/// The setting `export --move` leaves on a moved bot (unix seconds).
pub const MOVED_AT: &str = "moved_at";

/// `bot reauth`: a running bot is stopped, its credentials deleted after an
/// automatic backup, then started again so it shows a QR code.
pub fn reauth(host: &dyn Host, id: &BotId) -> Result<Response> {
    let v = host.vault();
    let cfg = v.bot_config(id)?;
    let pass = backup_passphrase(host, "bot reauth")?;
    let was_running = host.stop_bot(id);
    let report = crate::sweep::reauth(v, id, pass.expose(), crate::vault::now());
    let restarted = host.live() && (was_running || cfg.enabled);
    if restarted {
        // Started again whatever the outcome: a failed re-auth leaves the bot as it was.
        host.start_bot(&cfg);
    }
    Ok(Response::Reauth {
        report: report?,
        restarted,
    })
}
