//! `init`, `validate` and `rotate`: commands about the vault as a whole.

use super::{print_json, Global, InitArgs, KdfArgs};
use crate::error::{Error, Result};
use crate::ops::{Request, Response};
use crate::passphrase::{Passphrase, Source};
use crate::vault::crypto::KdfParams;
use crate::vault::Vault;
use std::path::PathBuf;

pub fn init(g: &Global, args: &InitArgs) -> Result<()> {
    let dir = g.dir()?;
    if Vault::exists(&dir) {
        return Err(Error::AlreadyExists(format!(
            "a vault already exists at {}; nothing was changed",
            dir.display()
        )));
    }
    let params = args.kdf.params()?.unwrap_or(KdfParams::DEFAULT);
    let pass = g.passphrase_source(true).resolve()?;
    let v = Vault::create(&dir, pass.expose(), params)?;
    println!(
        "created vault {} at {} (argon2id m={} MiB t={} p={})",
        crate::vault::hex(&v.id()),
        dir.display(),
        params.memory_kib / 1024,
        params.iterations,
        params.parallelism
    );
    Ok(())
}

pub fn validate(g: &Global, json: bool) -> Result<()> {
    let Response::Validate(report) = super::perform(g, Request::Validate, Vec::new())?.resp else {
        return Err(super::unexpected("validate"));
    };
    if json {
        print_json(&report)?;
    } else {
        println!(
            "vault {}: {} key slot(s), active term {}, {} bot(s), {} record(s)",
            report.vault_id,
            report.slots,
            report.active_term,
            report.bots.len(),
            report.records
        );
        use crate::table::{Align::*, Table};
        // The counts end in one column; the rest follows each.
        let mut t = Table::headless(&[Left, Right]);
        for b in &report.bots {
            t.row([b.bot.to_string(), b.records.to_string()]);
        }
        for (line, b) in t.render().lines().zip(&report.bots) {
            println!(
                "  {line} records{}{}",
                if b.damaged > 0 {
                    format!(", {} DAMAGED", b.damaged)
                } else {
                    String::new()
                },
                b.credentials
                    .as_deref()
                    .map(|c| format!(", credentials {c}"))
                    .unwrap_or_default()
            );
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for p in &report.problems {
            println!(
                "problem: {} record {}{}: {}",
                p.tree,
                p.key,
                p.bot
                    .as_deref()
                    .map(|b| format!(" (bot {b})"))
                    .unwrap_or_default(),
                p.reason
            );
        }
        if report.is_sound() {
            println!("all sound");
        }
    }
    if report.is_sound() {
        Ok(())
    } else {
        Err(Error::damaged(format!(
            "{} problem(s) found",
            report.problems.len()
        )))
    }
}

/// `rotate passphrase`: the current passphrase (from the usual sources)
/// and the new one. Through a running `run` the current one is checked
/// against the vault before anything changes, and the runner's automatic
/// backups use the new one from then on.
pub fn rotate_passphrase(g: &Global, new_file: Option<PathBuf>, kdf: &KdfArgs) -> Result<()> {
    let params = kdf.params()?;
    let dir = g.dir()?;
    Vault::require(&dir)?;
    let current = g.passphrase_source(false).resolve()?;
    let new = Source {
        label: "new passphrase",
        file: new_file,
        env: "WAVAULT_NEW_PASSPHRASE",
        credential: None,
        confirm: true,
    }
    .resolve()?;
    // The same passphrase again changes nothing, unless new KDF
    // parameters re-derive its slot.
    if params.is_none() && new.expose() == current.expose() {
        return Err(Error::Usage(
            "the new passphrase is the current one: nothing was changed (to re-derive its key \
             slot with other Argon2 parameters, give --kdf-memory-mib/--kdf-iterations/\
             --kdf-parallelism)"
                .into(),
        ));
    }
    let same = new.expose() == current.expose();
    let req = Request::RotatePassphrase {
        current: Passphrase::new(current.expose().to_vec()),
        new,
        kdf: params.map(Into::into),
    };
    let done = super::Session::new(g, Some(current)).run(req, Vec::new())?;
    let Response::RotatePassphrase = done.resp else {
        return Err(super::unexpected("rotate passphrase"));
    };
    println!(
        "{}{}",
        if same {
            "passphrase unchanged: its key slot is re-derived with the new Argon2 parameters"
        } else {
            "passphrase changed; the old passphrase no longer opens this vault"
        },
        if done.via == super::Via::Runner {
            " (the running wavault seals its automatic backups with the new one)"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn rotate_key(g: &Global) -> Result<()> {
    let Response::RotateKey(r) = super::perform(g, Request::RotateKey, Vec::new())?.resp else {
        return Err(super::unexpected("rotate key"));
    };
    println!(
        "data key rotated to term {}{}: the vault's {} record(s) and {} bot entr{} are sealed with it \
         ({} re-sealed now, {} bytes, in {:.2}s); retired term(s) {:?}",
        r.new_term,
        if r.resumed { " (finished an interrupted rotation)" } else { "" },
        r.records,
        r.bot_entries,
        if r.bot_entries == 1 { "y" } else { "ies" },
        r.resealed,
        r.bytes,
        r.seconds,
        r.retired
    );
    Ok(())
}
