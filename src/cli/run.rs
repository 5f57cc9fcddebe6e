//! `wavault run`, `wavault status` and `wavault stats`.

use super::durations::{parse_age, parse_duration, parse_period};
use super::Global;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::ops::{Request, Response};
use crate::passphrase::Passphrase;
use crate::runner::net::Net;
use crate::runner::{RunConfig, Runner};
use crate::status;
use crate::vault::crypto::KdfParams;
use crate::vault::Vault;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run only this bot (repeatable); default: every enabled bot
    #[arg(long = "bot", value_name = "ID")]
    pub bots: Vec<BotId>,
    /// Delay between two bot starts (0s: all at once)
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub stagger: Duration,
    /// Command run (via sh -c) with one JSON alert on stdin for each permanent failure
    #[arg(long, value_name = "CMD")]
    pub alert_command: Option<String>,
    /// Hook defaults for bots without their own (a bot's own settings win)
    #[command(flatten)]
    pub hooks: super::messages::HookArgs,
    /// A bot's connection changes settle for this long (no change) before one `status` event and at most one `connection` alert (more than 0)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_period)]
    pub status_debounce: Duration,
    /// Retention sweep period (more than 0)
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_period)]
    pub sweep_every: Duration,
    /// How long session history is kept (at least 1s)
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_age)]
    pub retention: Duration,
    /// Rotate the data key on this period (off by default; more than 0)
    #[arg(long, value_name = "DURATION", value_parser = parse_period)]
    pub rotate_key_every: Option<Duration>,
    /// Name the bots show in WhatsApp
    #[arg(long, default_value = "wavault")]
    pub push_name: String,
    /// Serve the dashboard, JSON API and Prometheus metrics on ADDR:PORT
    /// (loopback only unless --listen-any; every request needs the token);
    /// ADDR is an IP address or `localhost` (127.0.0.1), IPv6 in brackets
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow --listen on a non-loopback address
    #[arg(long, requires = "listen")]
    pub listen_any: bool,
    /// Largest inbound media file the media API and `media get` download (larger: refused before downloading)
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = crate::messaging::media::parse_size)]
    pub media_max: u64,
    /// Also put media up to SIZE base64 in the hook's `message` event (`media.base64`; off by default)
    #[arg(long, value_name = "SIZE", value_parser = crate::messaging::media::parse_size)]
    pub media_inline_max: Option<u64>,
    /// Log lines on stderr as text or as one JSON object per line (journald, Loki)
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::logs::LogFormat,
    /// A hook's send_file may name files by path only under this folder (none by default)
    #[arg(long, value_name = "DIR")]
    pub media_dir: Option<std::path::PathBuf>,
    /// A hook's send_file may fetch URLs starting with this prefix (repeatable; none by default; no redirects followed)
    #[arg(long = "media-url-allow", value_name = "PREFIX", value_parser = crate::messaging::attach::check_url_prefix)]
    pub media_url_allow: Vec<String>,
    /// A fleet of hosts: events to JetStream, sends from it, one owner per bot
    #[command(flatten)]
    pub fleet: super::fleet::FleetArgs,
}

/// `--listen`: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (loopback,
/// never a DNS lookup).
pub fn parse_listen(s: &str) -> std::result::Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let bad = || {
        format!(
            "`{s}` is not ADDR:PORT: give an IP address and a port (127.0.0.1:8080, \
             [::1]:8080) or localhost:PORT"
        )
    };
    match s.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn open_or_create(g: &Global) -> Result<(Vault, Passphrase)> {
    let dir = g.dir()?;
    if Vault::probe(&dir)? || std::fs::File::open("/dev/tty").is_err() {
        return g.open_with_passphrase();
    }
    println!(
        "no vault at {}: creating one (choose a passphrase)",
        dir.display()
    );
    let pass = g.passphrase_source(true).resolve()?;
    let v = Vault::create(&dir, pass.expose(), KdfParams::DEFAULT)?;
    Ok((v, pass))
}

/// What `run` does: the runner's configuration, and where the web surface
/// listens (off when `None`).
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub runner: RunConfig,
    pub listen: Option<std::net::SocketAddr>,
}

impl RunArgs {
    /// The plan from the flags, checked: every usage error (durations and
    /// limits beyond what clap checks, the listen address, the hook target)
    /// is found here, before the vault is opened or the runtime starts.
    pub fn plan(self) -> Result<RunPlan> {
        if let Some(addr) = self.listen {
            crate::web::check_addr(addr, self.listen_any)?;
        }
        let mut cfg = RunConfig::new(Net::production());
        cfg.bots = self.bots;
        cfg.stagger = self.stagger;
        cfg.alert_command = self.alert_command;
        cfg.hooks = self.hooks.defaults()?;
        cfg.status_debounce = self.status_debounce;
        cfg.sweep_every = self.sweep_every;
        cfg.retention = self.retention;
        cfg.rotate_key_every = self.rotate_key_every;
        cfg.push_name = self.push_name;
        if let Some(d) = &self.media_dir {
            if !d.is_dir() {
                return Err(Error::Usage(format!(
                    "--media-dir {}: not a folder",
                    d.display()
                )));
            }
        }
        cfg.media_out.dir = self.media_dir;
        cfg.media_out.url_allow = self.media_url_allow;
        cfg.media_max = self.media_max;
        cfg.media_inline_max = self.media_inline_max;
        cfg.fleet = self.fleet.plan()?;
        cfg.check()?;
        Ok(RunPlan {
            runner: cfg,
            listen: self.listen,
        })
    }
}

pub fn run(g: &Global, args: RunArgs) -> Result<()> {
    let mut plan = args.plan()?;
    let (vault, pass) = open_or_create(g)?;
    plan.runner.backup_passphrase = Some(std::sync::Arc::new(pass));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    rt.block_on(until_signalled(vault, plan))
}

/// Starts the runner and serves until SIGINT or SIGTERM, then stops every
/// bot cleanly; a second signal meanwhile exits the process at once with
/// code 130. `run`'s main loop (public for the tests' child runners, which
/// bring their own network).
pub async fn until_signalled(vault: Vault, plan: RunPlan) -> Result<()> {
    // Handlers first: a signal that arrives while bots start still
    // gets the clean shutdown.
    let mut signals = Signals::new()?;
    let bots = vault.list_bots()?.len();
    let listener = plan.listen.map(crate::web::bind).transpose()?;
    let runner = Runner::start(vault, plan.runner)?;
    if let Some(l) = listener {
        let started = crate::web::start_on(runner.service(), l, crate::web::START_GRACE).await;
        if let Err(e) = started {
            runner.shutdown().await?;
            return Err(e);
        }
    }
    if bots == 0 {
        println!("no bots yet: add one from another terminal with `wavault bot add ID`");
    }
    tracing::info!("running; Ctrl-C or SIGTERM stops every bot cleanly");
    signals.next().await;
    tokio::spawn(async move {
        signals.next().await;
        eprintln!("second signal: exiting at once");
        std::process::exit(130);
    });
    println!("stopping: disconnecting every bot");
    runner.shutdown().await
}

/// SIGINT and SIGTERM, registered up front.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let reg = |k| signal(k).map_err(|e| Error::io("installing the signal handlers", e));
        Ok(Signals {
            int: reg(SignalKind::interrupt())?,
            term: reg(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Show phone numbers in full
    #[arg(long)]
    pub show_phone: bool,
}

pub fn status(g: &Global, args: StatusArgs) -> Result<()> {
    let done = super::perform(g, Request::Status, Vec::new())?;
    let Response::Status(mut rows) = done.resp else {
        return Err(super::unexpected("status"));
    };
    if done.via == super::Via::Here {
        let stale = status::mark_stale(&mut rows);
        eprintln!(
            "`wavault run` is not running{}",
            if stale {
                ": the states marked (stale) are the last recorded before it stopped without \
                 a clean shutdown (crash or kill); start it again to reconnect"
            } else {
                ""
            }
        );
    }
    let rows = if args.show_phone {
        rows
    } else {
        status::masked(rows)
    };
    if args.json {
        super::print_json(&rows)
    } else {
        if let Some(h) = rows.first().and_then(|r| r.host.as_deref()) {
            println!("host {h} (fleet)");
        }
        print!("{}", status::table(&rows));
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this bot (repeatable); default: every bot
    #[arg(long = "bot", value_name = "ID")]
    pub bots: Vec<BotId>,
    /// The window: from this long ago until now (at least 1s)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_age)]
    pub since: Duration,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub fn stats(g: &Global, args: StatsArgs) -> Result<()> {
    let now = crate::vault::now();
    let since = now.saturating_sub(i64::try_from(args.since.as_secs()).unwrap_or(i64::MAX));
    let req = Request::Stats {
        bots: args.bots,
        since,
        now,
    };
    let Response::Stats(rows) = super::perform(g, req, Vec::new())?.resp else {
        return Err(super::unexpected("stats"));
    };
    if args.json {
        super::print_json(&rows)
    } else {
        print!("{}", crate::stats::table(&rows));
        Ok(())
    }
}
