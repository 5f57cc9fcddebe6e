//! `export`, `restore` and `backup inspect|list`: encrypted backup files.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{print_json, Global, KdfArgs};
use crate::backup::stream::DEFAULT_MAX_READ_MEMORY_KIB;
use crate::backup::{archive, auto};
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::ops::proto::MAX_PAYLOAD;
use crate::ops::{Request, Response};
use crate::passphrase::{Passphrase, Source};
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
    /// The backup file to write (must not exist); `-` writes it to standard
    /// output (progress and the summary go to standard error)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Move the bots to another host: stop them (under a running `run`) and
    /// disable them here before their last snapshot, so the same
    /// credentials never run on two hosts; `bot enable ID` undoes it
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
    /// The backup file; `-` reads it from standard input (the whole input is
    /// authenticated before the vault is touched)
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
        /// The backup file; `-` reads it from standard input
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

fn is_stdio(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Reads a whole backup: the file, or standard input for `-` (refused when
/// it is a terminal). At most [`MAX_PAYLOAD`] bytes.
fn read_input(file: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    if is_stdio(file) {
        if std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "standard input is a terminal: pipe a backup into it (`... | wavault restore -`) or name a file".into(),
            ));
        }
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_PAYLOAD + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading the backup from standard input", e))?;
        if bytes.len() as u64 > MAX_PAYLOAD {
            return Err(Error::Usage(format!(
                "standard input holds more than {MAX_PAYLOAD} bytes: not a wavault backup"
            )));
        }
        return Ok(bytes);
    }
    let len = std::fs::metadata(file)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("backup file {}", file.display()))
            }
            _ => Error::io(format!("opening {}", file.display()), e),
        })?
        .len();
    if len > MAX_PAYLOAD {
        return Err(Error::Usage(format!(
            "{} is larger than {MAX_PAYLOAD} bytes: not a wavault backup",
            file.display()
        )));
    }
    std::fs::read(file).map_err(|e| Error::io(format!("reading {}", file.display()), e))
}

pub fn export(g: &Global, args: ExportArgs) -> Result<()> {
    let to_stdout = is_stdio(&args.output);
    if !to_stdout && args.output.exists() {
        return Err(Error::AlreadyExists(format!(
            "{} exists: choose another file name or remove it first; nothing was exported",
            args.output.display()
        )));
    }
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "-o - writes the backup to standard output, which is a terminal: pipe it (`| ssh host wavault restore -`) or redirect it".into(),
        ));
    }
    let kdf = args.kdf.params()?.unwrap_or(KdfParams::DEFAULT);
    let pass = args.pass.source(true).resolve()?;
    let req = Request::Export {
        bots: args.bots.clone(),
        move_bots: args.move_bots,
        passphrase: pass,
        kdf: kdf.into(),
    };
    let mut progress = bar("exporting bots");
    progress(0, 1);
    let done = super::perform(g, req, Vec::new())?;
    progress(1, 1);
    let Response::Exported(report) = done.resp else {
        return Err(super::unexpected("export"));
    };
    let undo = |e: Error| {
        if report.moved.is_empty() {
            e
        } else {
            crate::ops::backup::undo_hint(e, &report.moved)
        }
    };
    if done.bytes.len() as u64 != report.bytes {
        return Err(undo(Error::Other(format!(
            "the export sent {} of {} bytes",
            done.bytes.len(),
            report.bytes
        ))));
    }
    if to_stdout {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&done.bytes)
            .and_then(|_| out.flush())
            .map_err(|e| undo(Error::io("writing the backup to standard output", e)))?;
    } else {
        archive::write_new_file(&args.output, &done.bytes).map_err(undo)?;
    }
    let file = if to_stdout {
        "standard output".to_string()
    } else {
        args.output.display().to_string()
    };
    // With the backup on standard output, the summary goes to the terminal.
    let say = |line: String| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if args.json {
        let j = serde_json::json!({
            "file": file,
            "bots": report.bots,
            "records": report.records,
            "bytes": report.bytes,
            "moved": report.moved,
        });
        say(serde_json::to_string_pretty(&j).map_err(|e| Error::Other(e.to_string()))?);
        return Ok(());
    }
    say(format!(
        "wrote {file} ({} bytes): {} bot(s), {} record(s), verified",
        report.bytes,
        report.bots.len(),
        report.records
    ));
    if !report.moved.is_empty() {
        say(format!(
            "moved: {} stopped and disabled here. Restore the backup on the new host; if that fails, {} undoes the move",
            report.moved.join(", "),
            crate::ops::backup::undo_command(&report.moved)
        ));
    }
    Ok(())
}

pub fn restore(g: &Global, args: RestoreArgs) -> Result<()> {
    // The passphrase first: with a pipe on standard input and neither the
    // file nor the variable given, fail at once (it cannot be asked for on
    // the data stream).
    let pass = args.pass.source(false).resolve()?;
    let bytes = read_input(&args.file)?;
    let dir = g.dir()?;
    crate::vault::Vault::require(&dir)?;
    let req = Request::Restore {
        bots: args.bots.clone(),
        force: args.force,
        keep_hooks: args.keep_hooks,
        passphrase: Passphrase::new(pass.expose().to_vec()),
        max_kdf_memory_kib: args.limit.kib(),
    };
    let r = match crate::ops::client::call(&dir, &req, &bytes)? {
        Some((Response::Restored(r), _)) => r,
        Some(_) => return Err(super::unexpected("restore")),
        None => {
            drop(req);
            // Here: the whole input is authenticated before the vault is
            // even opened (a wrong backup passphrase asks for nothing more).
            let backup = archive::read_bytes_limited(
                &bytes,
                pass.expose(),
                args.limit.kib(),
                &mut bar("verifying"),
            )?;
            drop(bytes);
            drop(pass);
            let (vault, vault_pass) = g.open_with_passphrase()?;
            let host = crate::ops::Local::new(vault, vault_pass);
            let opts = crate::ops::backup::RestoreOpts {
                bots: args.bots,
                force: args.force,
                keep_hooks: args.keep_hooks,
            };
            crate::ops::backup::restore(&host, &backup, &opts, &mut bar("restoring bots"))?
        }
    };
    if args.json {
        return print_json(&r);
    }
    let report = &r.report;
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
    if r.live {
        if !r.started.is_empty() {
            println!("the running wavault started: {}", r.started.join(", "));
        }
    } else if !report.restored.is_empty() {
        println!("the next `wavault run` starts the enabled ones");
    }
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
    let bytes = read_input(file)?;
    let backup =
        archive::read_bytes_limited(&bytes, p.expose(), limit.kib(), &mut bar("verifying"))?;
    let i = archive::inspect(bytes.len() as u64, &backup);
    if json {
        return print_json(&i);
    }
    println!(
        "{}: wavault backup format v{}, {} bytes, intact",
        if is_stdio(file) {
            "standard input".to_string()
        } else {
            file.display().to_string()
        },
        i.format_version,
        i.file_bytes
    );
    println!(
        "made {} by wavault {} from vault {}",
        crate::status::fmt_time(Some(i.created_at)),
        i.wavault_version,
        i.source_vault
    );
    println!(
        "argon2id m={} MiB t={} p={}",
        i.kdf_memory_mib, i.kdf_iterations, i.kdf_parallelism
    );
    use crate::table::{Align::*, Table};
    let mut t = Table::new(&[
        ("BOT", Left),
        ("RECORDS", Right),
        ("BYTES", Right),
        ("STATE", Left),
        ("CREDENTIALS", Left),
    ]);
    for b in &i.bots {
        t.row([
            b.id.to_string(),
            b.records.to_string(),
            b.bytes.to_string(),
            (if b.enabled { "enabled" } else { "disabled" }).to_owned(),
            b.credentials.to_string(),
        ]);
    }
    print!("{}", t.render());
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
    use crate::table::{Align::*, Table};
    // The sizes end in one column; the path follows each.
    let mut t = Table::headless(&[Left, Right]);
    for (secs, path) in &all {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        t.row([
            crate::status::fmt_time(Some(*secs as i64)),
            size.to_string(),
        ]);
    }
    for (line, (_, path)) in t.render().lines().zip(&all) {
        println!("{line} bytes  {}", path.display());
    }
    Ok(())
}
