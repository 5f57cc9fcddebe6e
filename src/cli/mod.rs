//! The command line: clap definitions, and dispatch to one function per command.
//!
//! Arguments become a validated plan here; the work happens in the library.
//! Secrets are never taken from argv: only file paths that hold them.

mod backup;
mod bot;
mod docs;
mod durations;
mod fleet;
mod groups;
mod lifecycle;
mod media;
mod messages;
mod run;
mod vaultcmd;
mod webhook;

pub use durations::{parse_age, parse_duration, parse_period, MAX_DURATION};
pub use run::{until_signalled, RunPlan};

use crate::error::{Error, Result};
use crate::ops::{Request, Response};
use crate::passphrase::{Origin, Passphrase, Source};
use crate::vault::crypto::KdfParams;
use crate::vault::Vault;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Run WhatsApp bots from one binary, with every credential in an encrypted vault.
#[derive(Debug, Parser)]
#[command(name = "wavault", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log format: `run --log-format`, text for every other command.
    pub fn log_format(&self) -> crate::logs::LogFormat {
        match &self.command {
            Command::Run(a) => a.log_format,
            _ => crate::logs::LogFormat::Text,
        }
    }
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Vault folder [default: $WAVAULT_DIR, else $XDG_DATA_HOME/wavault, else ~/.local/share/wavault]
    #[arg(long, global = true, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Read the vault passphrase from FILE [else $WAVAULT_PASSPHRASE, else
    /// $CREDENTIALS_DIRECTORY/wavault-passphrase, else a terminal prompt]
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every enabled bot (the main job); Ctrl-C or SIGTERM stops cleanly
    Run(Box<run::RunArgs>),
    /// One row per bot: status, phone (masked), last activity, attempts, last error
    Status(run::StatusArgs),
    /// Per-bot connection statistics over a window: availability, drops, reconnect times, pairings
    Stats(run::StatsArgs),
    /// Create a new vault
    Init(InitArgs),
    /// Add, list and remove bots
    #[command(subcommand)]
    Bot(bot::BotCommand),
    /// Send a text from a bot (through the running `wavault run`); prints the message id
    Send(messages::SendArgs),
    /// Inbound messages waiting for a bot's hook: list, retry held ones, drop held ones
    #[command(subcommand)]
    Queue(messages::QueueCommand),
    /// The groups a bot is in (through the running `wavault run`, else the bot alone)
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// The files of media messages bots received: `media get BOT MESSAGE_ID -o FILE`
    #[command(subcommand)]
    Media(media::MediaCommand),
    /// A fleet of hosts on NATS JetStream: `fleet status` shows which host runs which bot
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Check every key slot, term and record; exit 0 only when all is sound
    Validate {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Change the passphrase, or rotate the data key
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Write bots (config, credentials, Signal state, metadata) to an encrypted backup file
    Export(backup::ExportArgs),
    /// Bring bots back from a backup file (this host or another)
    Restore(backup::RestoreArgs),
    /// Inspect backup files, list automatic backups
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Remove what is dead and old: credentials of long logged-out bots (after an automatic backup), old history, orphans
    Sweep(lifecycle::SweepArgs),
    /// The web surface's access token
    #[command(subcommand)]
    Token(TokenCommand),
    /// Webhook signing secrets (Standard Webhooks): show, rotate
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), or write every page with --out DIR
    Man(docs::ManArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API and the webhooks (as `/api/openapi.json` serves it)
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the token (created on first use)
    Show,
    /// Replace the token; the old one stops working at once
    Rotate,
}

/// Argon2id cost options.
#[derive(Debug, Args, Clone, Default)]
pub struct KdfArgs {
    /// Argon2id memory in MiB [default: 64]
    #[arg(long, value_name = "MIB")]
    pub kdf_memory_mib: Option<u32>,
    /// Argon2id iterations [default: 3]
    #[arg(long, value_name = "N")]
    pub kdf_iterations: Option<u32>,
    /// Argon2id lanes [default: 4]
    #[arg(long, value_name = "N")]
    pub kdf_parallelism: Option<u32>,
}

impl KdfArgs {
    /// The parameters asked for, or `None` when none was given.
    pub fn params(&self) -> Result<Option<KdfParams>> {
        if self.kdf_memory_mib.is_none()
            && self.kdf_iterations.is_none()
            && self.kdf_parallelism.is_none()
        {
            return Ok(None);
        }
        let d = KdfParams::DEFAULT;
        let p = KdfParams {
            memory_kib: self
                .kdf_memory_mib
                .map_or(d.memory_kib, |m| m.saturating_mul(1024)),
            iterations: self.kdf_iterations.unwrap_or(d.iterations),
            parallelism: self.kdf_parallelism.unwrap_or(d.parallelism),
        };
        if p.exceeds_cap() || p.iterations == 0 || p.parallelism == 0 || p.memory_kib == 0 {
            return Err(Error::Usage(format!(
                "Argon2id parameters out of range: memory 1..={} MiB, iterations 1..={}, parallelism 1..={}",
                KdfParams::MAX.memory_kib / 1024,
                KdfParams::MAX.iterations,
                KdfParams::MAX.parallelism
            )));
        }
        if p.below_default() {
            tracing::warn!(
                "Argon2id parameters below the default (m=64 MiB, t=3, p=4): the passphrase is cheaper to guess"
            );
        }
        Ok(Some(p))
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Change the vault passphrase (rewrites one key slot)
    Passphrase {
        /// Read the new passphrase from FILE [else $WAVAULT_NEW_PASSPHRASE, else a prompt]
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        kdf: KdfArgs,
    },
    /// Rotate the data key: new term, re-seal every record, retire the old term
    Key,
}

/// Tries for a vault passphrase typed at the terminal.
const PROMPT_TRIES: u32 = 3;

/// The vault folder from the flag, the environment, or the per-user default.
pub fn vault_dir(flag: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d.clone());
    }
    if let Some(d) = std::env::var_os("WAVAULT_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("wavault"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/wavault")),
        None => Err(Error::Usage(
            "no vault folder: pass --vault DIR or set WAVAULT_DIR".into(),
        )),
    }
}

impl Global {
    /// The vault passphrase sources.
    pub fn passphrase_source(&self, confirm: bool) -> Source {
        Source {
            label: "vault passphrase",
            file: self.passphrase_file.clone(),
            env: "WAVAULT_PASSPHRASE",
            credential: Some("wavault-passphrase"),
            confirm,
        }
    }

    /// The vault folder.
    pub fn dir(&self) -> Result<PathBuf> {
        vault_dir(self.vault.as_ref())
    }

    /// Opens the vault, asking for the passphrase only if a vault is there.
    pub fn open(&self) -> Result<Vault> {
        self.open_with_passphrase().map(|(v, _)| v)
    }

    /// Opens the vault and keeps the passphrase (automatic backups are
    /// sealed with it).
    pub fn open_with_passphrase(&self) -> Result<(Vault, Passphrase)> {
        let dir = self.dir()?;
        Vault::require(&dir)?;
        // Refuse before asking: no passphrase opens a vault in use.
        Vault::ensure_free(&dir)?;
        // A wrong passphrase typed at the terminal is asked again.
        let mut tries = 0;
        loop {
            let (pass, origin) = self.passphrase_source(false).resolve_traced()?;
            match Vault::open(&dir, pass.expose()) {
                Ok(v) => return Ok((v, pass)),
                Err(Error::WrongPassphrase(path)) => {
                    tries += 1;
                    if origin == Origin::Prompt && tries < PROMPT_TRIES {
                        eprintln!(
                            "wrong passphrase; try again ({tries} of {PROMPT_TRIES} tries used)"
                        );
                        continue;
                    }
                    return Err(Error::WrongPassphraseFrom {
                        path,
                        origin: origin.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the vault with a passphrase already resolved.
    pub fn open_with(&self, pass: &[u8]) -> Result<Vault> {
        Vault::open(&self.dir()?, pass)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&cli.global, *args),
        Command::Fleet(cmd) => fleet::fleet(&cli.global, cmd),
        Command::Status(args) => run::status(&cli.global, args),
        Command::Stats(args) => run::stats(&cli.global, args),
        Command::Init(args) => vaultcmd::init(&cli.global, &args),
        Command::Bot(cmd) => bot::run(&cli.global, cmd),
        Command::Send(args) => messages::send(&cli.global, args),
        Command::Queue(cmd) => messages::queue(&cli.global, cmd),
        Command::Groups(cmd) => groups::groups(&cli.global, cmd),
        Command::Media(cmd) => media::media(&cli.global, cmd),
        Command::Validate { json } => vaultcmd::validate(&cli.global, json),
        Command::Rotate(RotateCommand::Passphrase {
            new_passphrase_file,
            kdf,
        }) => vaultcmd::rotate_passphrase(&cli.global, new_passphrase_file, &kdf),
        Command::Rotate(RotateCommand::Key) => vaultcmd::rotate_key(&cli.global),
        Command::Export(args) => backup::export(&cli.global, args),
        Command::Restore(args) => backup::restore(&cli.global, args),
        Command::Backup(cmd) => backup::backup(&cli.global, cmd),
        Command::Sweep(args) => lifecycle::sweep(&cli.global, args),
        Command::Token(cmd) => token(&cli.global, cmd),
        Command::Webhook(cmd) => webhook::webhook(&cli.global, cmd),
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
        Command::Openapi => docs::openapi(),
    }
}

/// `token show|rotate`, through the running `run` when it holds the vault.
fn token(g: &Global, cmd: TokenCommand) -> Result<()> {
    let req = match cmd {
        TokenCommand::Show => Request::TokenShow,
        TokenCommand::Rotate => Request::TokenRotate,
    };
    let Response::Token(t) = perform(g, req, Vec::new())?.resp else {
        return Err(unexpected("token"));
    };
    println!("{t}");
    Ok(())
}

/// Where an operation was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// By the running `wavault run` (control socket).
    Runner,
    /// Here, on the vault this process opened.
    Here,
}

/// An operation's answer.
pub(crate) struct Done {
    pub resp: Response,
    /// The answer's bytes (an exported backup).
    pub bytes: Vec<u8>,
    pub via: Via,
}

/// Runs `req`: by the running `wavault run` when one holds the vault,
/// else here, on the vault opened with its passphrase. The same operation
/// either way ([`crate::ops::execute`]).
pub(crate) fn perform(g: &Global, req: Request, payload: Vec<u8>) -> Result<Done> {
    Session::new(g, None).run(req, payload)
}

/// Several operations of one command, all done by the running `run` or
/// all here (the vault is opened once, its passphrase asked for once).
pub(crate) struct Session<'g> {
    g: &'g Global,
    pass: Option<Passphrase>,
    local: Option<crate::ops::Local>,
}

impl<'g> Session<'g> {
    /// `pass` opens the vault if no runner holds it (else it is asked for).
    pub fn new(g: &'g Global, pass: Option<Passphrase>) -> Self {
        Session {
            g,
            pass,
            local: None,
        }
    }

    pub fn run(&mut self, req: Request, payload: Vec<u8>) -> Result<Done> {
        if self.local.is_none() {
            let dir = self.g.dir()?;
            if let Some((resp, bytes)) = crate::ops::client::call(&dir, &req, &payload)? {
                return Ok(Done {
                    resp,
                    bytes,
                    via: Via::Runner,
                });
            }
            let (vault, pass) = match self.pass.take() {
                Some(p) => (self.g.open_with(p.expose())?, p),
                None => self.g.open_with_passphrase().map_err(|e| match e {
                    // Say why a passphrase is needed at all: no runner answered.
                    Error::NoPassphraseSource(m) => Error::NoPassphraseSource(format!(
                        "`wavault run` is not running, so this command reads the vault itself, \
                         which needs its passphrase: {m}"
                    )),
                    e => e,
                })?,
            };
            self.local = Some(crate::ops::Local::new(vault, pass));
        }
        let host = self.local.as_ref().expect("set above");
        let (resp, bytes) = crate::ops::execute(host, req, payload)?;
        Ok(Done {
            resp,
            bytes,
            via: Via::Here,
        })
    }
}

/// Asks before a command deletes data: `--yes` (`yes`) skips the
/// question; on a terminal the answer must be `y` or `yes`; with no
/// terminal to ask and no `--yes` it refuses (exit 2). Nothing is changed
/// unless confirmed.
pub(crate) fn confirm(command: &str, question: &str, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(format!(
            "`wavault {command}` deletes data and there is no terminal to ask: confirm with \
             --yes; nothing was changed"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::io("reading the answer", e))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::Other("not confirmed: nothing was changed".into())),
    }
}

/// What a command needs to connect a bot alone when no `wavault run`
/// holds the vault (`send`, `media get`, `groups list`): the vault, an
/// async runtime and the production network configuration.
pub(super) fn alone(
    g: &Global,
) -> Result<(
    crate::Vault,
    tokio::runtime::Runtime,
    crate::runner::RunConfig,
)> {
    let vault = g.open()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let cfg = crate::runner::RunConfig::new(crate::runner::net::Net::production());
    Ok((vault, rt, cfg))
}

/// An answer of the wrong kind (a client and a runner of different versions).
pub(crate) fn unexpected(what: &str) -> Error {
    Error::Other(format!(
        "unexpected answer to `{what}` from the running wavault: is it another version? Restart it with this one"
    ))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Other(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// Parses the command line. `--version` also says whether this build checks
/// the WhatsApp server's certificate chain (`-V` is the version alone).
pub fn parse_args() -> std::result::Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let long: &'static str = Box::leak(
        format!(
            "{}\n{}",
            env!("CARGO_PKG_VERSION"),
            crate::runner::certcheck::describe()
        )
        .into_boxed_str(),
    );
    let matches = Cli::command().long_version(long).try_get_matches()?;
    Cli::from_arg_matches(&matches)
}
