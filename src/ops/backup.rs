//! `export` and `restore`, with or without a running `wavault run`.
//!
//! Under `run`, `export --move` stops and disables the bots before their
//! last snapshot (so the same credentials never run on two hosts), and
//! `restore` stops the bots it replaces and starts the bots it restored;
//! every other bot keeps running.

use std::collections::HashMap;

use super::bots::MOVED_AT;
use super::proto::{Exported, Kdf, Restored};
use super::Host;
use crate::backup::archive::{self, Backup, Progress};
use crate::backup::auto;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::passphrase::Passphrase;

/// Exports `bots` (every bot when empty) into memory: the backup file's
/// bytes. With `move_bots`, each bot is first stopped (when running) and
/// disabled here, durably; the file carries it as it was (enabled or not),
/// so the receiving host starts it. If the export then fails, the error
/// says how to undo the disabling.
pub fn export(
    host: &dyn Host,
    bots: &[BotId],
    move_bots: bool,
    pass: &Passphrase,
    kdf: Kdf,
) -> Result<(Exported, Vec<u8>)> {
    let v = host.vault();
    let kdf = kdf.params()?;
    if pass.expose().is_empty() {
        return Err(Error::Usage("the backup passphrase is empty".into()));
    }
    let ids = archive::select(v, bots)?;
    let mut was_enabled = HashMap::new();
    if move_bots {
        for id in &ids {
            host.stop_bot(id);
            let mut cfg = v.bot_config(id)?;
            was_enabled.insert(id.clone(), cfg.enabled);
            cfg.enabled = false;
            cfg.extra
                .insert(MOVED_AT.into(), crate::vault::now().to_string());
            v.set_bot(&cfg)?;
        }
        v.flush()?;
    }
    let adjust = |d: &mut crate::vault::BotDump| {
        if let Some(e) = was_enabled.get(&d.config.id) {
            d.config.enabled = *e;
            d.config.extra.remove(MOVED_AT);
        }
    };
    let moved: Vec<String> = ids.iter().map(|b| b.to_string()).collect();
    let e = archive::export_bytes(v, &ids, pass.expose(), kdf, &adjust, &mut |_, _| {}).map_err(
        |e| {
            if move_bots {
                undo_hint(e, &moved)
            } else {
                e
            }
        },
    )?;
    Ok((
        Exported {
            bots: e.bots,
            records: e.records,
            bytes: e.bytes.len() as u64,
            moved: if move_bots { moved } else { Vec::new() },
        },
        e.bytes,
    ))
}

/// How to undo `export --move` here: `bot enable` each moved bot.
pub fn undo_command(moved: &[String]) -> String {
    moved
        .iter()
        .map(|b| format!("`wavault bot enable {b}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds "the moved bots are disabled here; undo with ..." to an error,
/// keeping its exit code.
pub fn undo_hint(e: Error, moved: &[String]) -> Error {
    let hint = format!(
        "; {} stopped and disabled on this host: {} undoes that",
        moved.join(", "),
        undo_command(moved)
    );
    match e {
        Error::Damaged { what, hint: h } => Error::Damaged {
            what: format!("{what}{hint}"),
            hint: h,
        },
        Error::NotFound(m) => Error::NotFound(format!("{m}{hint}")),
        Error::Usage(m) => Error::Usage(format!("{m}{hint}")),
        Error::NoPassphraseSource(m) => Error::NoPassphraseSource(format!("{m}{hint}")),
        Error::Unavailable(m) => Error::Unavailable(format!("{m}{hint}")),
        Error::AlreadyExists(m) => Error::AlreadyExists(format!("{m}{hint}")),
        Error::Io { context, source } => Error::Io {
            context: format!("{context}{hint}"),
            source,
        },
        other => Error::Other(format!("{other}{hint}")),
    }
}

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    pub bots: Vec<BotId>,
    pub force: bool,
    pub keep_hooks: bool,
}

/// Restores the backup in `bytes` (a file's or a pipe's whole content):
/// all of it is authenticated before anything is touched.
pub fn restore_bytes(
    host: &dyn Host,
    bytes: Vec<u8>,
    pass: &Passphrase,
    max_kdf_memory_kib: u32,
    opts: &RestoreOpts,
) -> Result<Restored> {
    let limit = max_kdf_memory_kib.min(crate::vault::crypto::KdfParams::MAX.memory_kib);
    let b = archive::read_bytes_limited(&bytes, pass.expose(), limit, &mut |_, _| {})?;
    drop(bytes);
    restore(host, &b, opts, &mut |_, _| {})
}

/// Restores a verified backup. Bots that exist need `force`; they are
/// stopped (when running) before the automatic backup of their current
/// state and the replacement. Enabled restored bots start at once under
/// `run`; a paired one logs in with its restored credentials, no QR.
pub fn restore(
    host: &dyn Host,
    backup: &Backup,
    opts: &RestoreOpts,
    progress: Progress<'_>,
) -> Result<Restored> {
    let v = host.vault();
    let mut stopped = Vec::new();
    let o = archive::RestoreOptions {
        select: &opts.bots,
        force: opts.force,
        keep_hooks: opts.keep_hooks,
    };
    let report = archive::restore_with(
        v,
        backup,
        o,
        &mut |clash| {
            let pass = host.backup_passphrase().ok_or_else(|| {
                Error::Unavailable(
                    "no vault passphrase for the automatic backup of the replaced bots".into(),
                )
            })?;
            for id in clash {
                if host.stop_bot(id) {
                    stopped.push(id.clone());
                }
            }
            match auto::take(v, clash, pass.expose(), "restore") {
                Ok(p) => Ok(Some(p)),
                Err(e) => {
                    // Nothing was replaced: the stopped bots run again.
                    for id in &stopped {
                        if let Ok(cfg) = v.bot_config(id) {
                            host.start_bot(&cfg);
                        }
                    }
                    stopped.clear();
                    Err(e)
                }
            }
        },
        progress,
    );
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            for id in &stopped {
                if let Ok(cfg) = v.bot_config(id) {
                    host.start_bot(&cfg);
                }
            }
            return Err(e);
        }
    };
    let mut started = Vec::new();
    for id in &report.restored {
        let id = BotId::parse(id)?;
        host.bot_replaced(&id);
        let cfg = v.bot_config(&id)?;
        if cfg.enabled && host.live() {
            host.start_bot(&cfg);
            started.push(id.to_string());
        }
    }
    Ok(Restored {
        report,
        stopped: stopped.iter().map(|b| b.to_string()).collect(),
        started,
        live: host.live(),
    })
}
