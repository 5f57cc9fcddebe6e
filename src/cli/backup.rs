//! `export`, `restore` and `backup inspect|list`: encrypted backup files.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{print_json, Global, KdfArgs};
use crate::backup::{archive, auto};
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::passphrase::Source;
use crate::vault::crypto::KdfParams;

/// Where the backup file's passphrase comes from.
#[derive(Debug, Args, Clone, Default)]
pub struct BackupPassphrase {
    /// Read the backup file's passphrase from FILE [else
    /// $WAVAULT_BACKUP_PASSPHRASE, else a terminal prompt]
    #[arg(long, value_name = "FILE")]
    pub backup_passphrase_file: Option<PathBuf>,
}

impl BackupPassphrase {
    fn source(&self, confirm: bool) -> Source {
        Source {
            label: "backup passphrase",
            file: self.backup_passphrase_file.clone(),
            env: "WAVAULT_BACKUP_PASSPHRASE",
            credential: None,
            confirm,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Bot to export (repeat for several) [default: every bot]
    #[arg(long = "bot", value_name = "ID")]
    pub bots: Vec<BotId>,
    /// The backup file to write (must not exist)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Disable the exported bots here once the file is written and verified
    /// (moving them to another host)
    #[arg(long = "move")]
    pub move_bots: bool,
    #[command(flatten)]
    pub pass: BackupPassphrase,
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file
    pub file: PathBuf,
    /// Bot to restore (repeat for several) [default: every bot in the file]
    #[arg(long = "bot", value_name = "ID")]
    pub bots: Vec<BotId>,
    /// Overwrite bots that exist in the vault (after an automatic backup of them)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub pass: BackupPassphrase,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Show what a backup file holds (verifies the whole file; changes nothing)
    Inspect {
        /// The backup file
        file: PathBuf,
        #[command(flatten)]
        pass: BackupPassphrase,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// List the automatic backups in the vault folder (no passphrase needed)
    List,
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
fn bar(what: &'static str) -> impl FnMut(u64, u64) {
    let pb = if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(what);
        Some(pb)
    } else {
        None
    };
    move |done, total| {
        if let Some(pb) = &pb {
            pb.set_length(total);
            pb.set_position(done);
            if done >= total {
                pb.finish_and_clear();
            }
        }
    }
}

pub fn export(g: &Global, args: ExportArgs) -> Result<()> {
    let vault = g.open()?;
    let kdf = args.kdf.params()?.unwrap_or(KdfParams::DEFAULT);
    let pass = args.pass.source(true).resolve()?;
    let report = archive::export(
        &vault,
        &args.bots,
        &args.output,
        pass.expose(),
        kdf,
        &mut bar("exporting bots"),
    )?;
    if args.move_bots {
        for id in &report.bots {
            let id = BotId::parse(id)?;
            let mut cfg = vault.bot_config(&id)?;
            cfg.enabled = false;
            cfg.extra
                .insert("moved_at".into(), crate::vault::now().to_string());
            vault.set_bot(&cfg)?;
        }
    }
    if args.json {
        return print_json(&report);
    }
    println!(
        "wrote {} ({} bytes): {} bot(s), {} record(s), verified",
        report.file.display(),
        report.bytes,
        report.bots.len(),
        report.records
    );
    if args.move_bots {
        println!(
            "disabled here: {} (restore the file on the new host; `wavault bot enable ID` undoes this)",
            report.bots.join(", ")
        );
    }
    Ok(())
}

pub fn restore(g: &Global, args: RestoreArgs) -> Result<()> {
    // The whole file is authenticated before the vault is even opened.
    let pass = args.pass.source(false).resolve()?;
    let (_, backup) = archive::read_file(&args.file, pass.expose(), &mut bar("verifying"))?;
    drop(pass);
    let dir = g.dir()?;
    if !crate::vault::Vault::exists(&dir) {
        return Err(Error::NotFound(format!(
            "no vault at {} (create one with `wavault init` first)",
            dir.display()
        )));
    }
    let vault_pass = g.passphrase_source(false).resolve()?;
    let vault = crate::vault::Vault::open(&dir, vault_pass.expose())?;
    let report = archive::restore(
        &vault,
        &backup,
        &args.bots,
        args.force,
        &mut |bots| auto::take(&vault, bots, vault_pass.expose(), "restore").map(Some),
        &mut bar("restoring bots"),
    )?;
    if args.json {
        return print_json(&report);
    }
    if let Some(p) = &report.auto_backup {
        println!(
            "automatic backup of the replaced bots: {} (vault passphrase)",
            p.display()
        );
    }
    println!(
        "restored {} bot(s), {} record(s){}",
        report.restored.len(),
        report.records,
        if report.replaced.is_empty() {
            String::new()
        } else {
            format!("; replaced: {}", report.replaced.join(", "))
        }
    );
    Ok(())
}

pub fn backup(g: &Global, cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::Inspect { file, pass, json } => inspect(&file, &pass, json),
        BackupCommand::List => list(g),
    }
}

fn inspect(file: &std::path::Path, pass: &BackupPassphrase, json: bool) -> Result<()> {
    let p = pass.source(false).resolve()?;
    let (size, backup) = archive::read_file(file, p.expose(), &mut bar("verifying"))?;
    let i = archive::inspect(size, &backup);
    if json {
        return print_json(&i);
    }
    println!(
        "{}: wavault backup format v{}, {} bytes, intact",
        file.display(),
        i.format_version,
        i.file_bytes
    );
    println!(
        "made {} by wavault {} from vault {}",
        crate::runner::status::fmt_time(Some(i.created_at)),
        i.wavault_version,
        i.source_vault
    );
    println!(
        "argon2id m={} MiB t={} p={}",
        i.kdf_memory_mib, i.kdf_iterations, i.kdf_parallelism
    );
    println!(
        "{:<24} {:>8} {:>10}  {:<8} credentials",
        "BOT", "RECORDS", "BYTES", "STATE"
    );
    for b in &i.bots {
        println!(
            "{:<24} {:>8} {:>10}  {:<8} {}",
            b.id,
            b.records,
            b.bytes,
            if b.enabled { "enabled" } else { "disabled" },
            b.credentials
        );
    }
    Ok(())
}

fn list(g: &Global) -> Result<()> {
    let dir = g.dir()?.join(auto::DIR);
    let all = auto::list(&dir)?;
    if all.is_empty() {
        println!("no automatic backups in {}", dir.display());
    }
    for (secs, path) in all {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{}  {:>10} bytes  {}",
            crate::runner::status::fmt_time(Some(secs as i64)),
            size,
            path.display()
        );
    }
    Ok(())
}
