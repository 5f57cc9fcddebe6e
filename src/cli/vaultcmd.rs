//! `init`, `validate` and `rotate`: commands about the vault as a whole.

use super::{print_json, Global, InitArgs, KdfArgs};
use crate::error::{Error, Result};
use crate::passphrase::Source;
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
    let v = g.open()?;
    let report = v.validate()?;
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
        for b in &report.bots {
            println!(
                "  {:<24} {:>6} records{}{}",
                b.bot,
                b.records,
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

pub fn rotate_passphrase(g: &Global, new_file: Option<PathBuf>, kdf: &KdfArgs) -> Result<()> {
    let params = kdf.params()?;
    let v = g.open()?;
    let new = Source {
        label: "new passphrase",
        file: new_file,
        env: "WAVAULT_NEW_PASSPHRASE",
        credential: None,
        confirm: true,
    }
    .resolve()?;
    v.rotate_passphrase(new.expose(), params)?;
    println!("passphrase changed; the old passphrase no longer opens this vault");
    Ok(())
}

pub fn rotate_key(g: &Global) -> Result<()> {
    let v = g.open()?;
    let r = v.rotate_key(&mut |_, _| {})?;
    println!(
        "data key rotated to term {}{}: {} record(s) re-sealed ({} bytes) in {:.2}s; retired term(s) {:?}",
        r.new_term,
        if r.resumed { " (finished an interrupted rotation)" } else { "" },
        r.resealed,
        r.bytes,
        r.seconds,
        r.retired
    );
    Ok(())
}
