//! `export`, `restore` and `backup inspect|list`: encrypted backup files.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{print_json, Global, KdfArgs};
use crate::backup::stream::DEFAULT_MAX_READ_MEMORY_KIB;
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

/// How much Argon2id memory a backup file may ask for before it is opened.
#[derive(Debug, Args, Clone, Default)]
pub struct KdfLimit {
    /// Accept a backup whose header asks for up to MIB of Argon2id memory
    /// [default: 1024; at most 4096]. The header is read before anything is
    /// authenticated, so a crafted file must not choose what restore allocates
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=(KdfParams::MAX.memory_kib / 1024) as i64))]
    pub max_kdf_memory_mib: Option<u32>,
}

impl KdfLimit {
    fn kib(&self) -> u32 {
        self.max_kdf_memory_mib
            .map_or(DEFAULT_MAX_READ_MEMORY_KIB, |m| m.saturating_mul(1024))
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
    /// Also restore the bots' webhooks and on-message commands (printed);
    /// without it they are removed and the bots use the `run` defaults
    #[arg(long)]
    pub keep_hooks: bool,
    #[command(flatten)]
    pub pass: BackupPassphrase,
    #[command(flatten)]
    pub limit: KdfLimit,
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
        #[command(flatten)]
        limit: KdfLimit,
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
    let (_, backup) = archive::read_file_limited(
        &args.file,
        pass.expose(),
        args.limit.kib(),
        &mut bar("verifying"),
    )?;
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
    let opts = archive::RestoreOptions {
        select: &args.bots,
        force: args.force,
        keep_hooks: args.keep_hooks,
    };
    let report = archive::restore_with(
        &vault,
        &backup,
        opts,
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
    for h in &report.hooks {
        let hooks = archive::Hooks {
            webhook: h.webhook.clone(),
            on_message: h.on_message.clone(),
        }
        .describe();
        if h.restored {
            println!("bot {}: hooks restored: {hooks}", h.bot);
        } else {
            println!(
                "bot {}: hooks not restored: {hooks}; it uses the `run` defaults. Re-add with `wavault bot set {} --webhook URL | --on-message CMD`, or restore with --keep-hooks",
                h.bot, h.bot
            );
        }
    }
    Ok(())
}

pub fn backup(g: &Global, cmd: BackupCommand) -> Result<()> {
    match cmd {
        BackupCommand::Inspect {
            file,
            pass,
            limit,
            json,
        } => inspect(&file, &pass, &limit, json),
        BackupCommand::List => list(g),
    }
}

fn inspect(
    file: &std::path::Path,
    pass: &BackupPassphrase,
    limit: &KdfLimit,
    json: bool,
) -> Result<()> {
    let p = pass.source(false).resolve()?;
    let (size, backup) =
        archive::read_file_limited(file, p.expose(), limit.kib(), &mut bar("verifying"))?;
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
    for b in &i.bots {
        let h = archive::Hooks {
            webhook: b.webhook.clone(),
            on_message: b.on_message.clone(),
        };
        if !h.is_empty() {
            println!(
                "bot {} hooks: {} (restored only with `restore --keep-hooks`)",
                b.id,
                h.describe()
            );
        }
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
