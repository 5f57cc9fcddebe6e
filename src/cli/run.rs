//! `wavault run`, `wavault status` and `wavault stats`.

use super::Global;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::passphrase::Passphrase;
use crate::runner::net::Net;
use crate::runner::{control, status, RunConfig, Runner};
use crate::vault::crypto::KdfParams;
use crate::vault::Vault;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run only this bot (repeatable); default: every enabled bot
    #[arg(long = "bot", value_name = "ID")]
    pub bots: Vec<BotId>,
    /// Delay between two bot starts
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub stagger: Duration,
    /// Command run (via sh -c) with one JSON alert on stdin for each permanent failure
    #[arg(long, value_name = "CMD")]
    pub alert_command: Option<String>,
    /// Hook defaults for bots without their own (a bot's own settings win)
    #[command(flatten)]
    pub hooks: super::messages::HookArgs,
    /// Retention sweep period
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub sweep_every: Duration,
    /// How long session history is kept
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// Rotate the data key on this period (off by default)
    #[arg(long, value_parser = parse_duration)]
    pub rotate_key_every: Option<Duration>,
    /// Name the bots show in WhatsApp
    #[arg(long, default_value = "wavault")]
    pub push_name: String,
    /// Serve the dashboard, JSON API and Prometheus metrics on ADDR:PORT
    /// (loopback only unless --listen-any; every request needs the token)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow --listen on a non-loopback address
    #[arg(long, requires = "listen")]
    pub listen_any: bool,
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `30d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 500ms, 30s, 5m, 1h, 30d"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(ms))
}

fn open_or_create(g: &Global) -> Result<(Vault, Passphrase)> {
    let dir = g.dir()?;
    if Vault::exists(&dir) || std::fs::File::open("/dev/tty").is_err() {
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

pub fn run(g: &Global, args: RunArgs) -> Result<()> {
    if let Some(addr) = args.listen {
        crate::web::check_addr(addr, args.listen_any)?;
    }
    let (vault, pass) = open_or_create(g)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    rt.block_on(async move {
        // Handlers first: a signal that arrives while bots start still
        // gets the clean shutdown.
        let mut signals = Signals::new()?;
        let mut cfg = RunConfig::new(Net::production());
        cfg.bots = args.bots;
        cfg.stagger = args.stagger;
        cfg.alert_command = args.alert_command;
        cfg.hooks = args.hooks.defaults()?;
        cfg.sweep_every = args.sweep_every;
        cfg.retention = args.retention;
        cfg.rotate_key_every = args.rotate_key_every;
        cfg.push_name = args.push_name;
        cfg.listen = args.listen;
        cfg.backup_passphrase = Some(std::sync::Arc::new(pass));
        let bots = vault.list_bots()?.len();
        let runner = Runner::start(vault, cfg)?;
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
    })
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
    let rows: Vec<status::StatusRow> =
        match control::request(&g.dir()?, &serde_json::json!({"op": "status"}))? {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::Other(format!("bad status from the runner: {e}")))?,
            None => status::collect(&g.open()?)?,
        };
    let rows = if args.show_phone {
        rows
    } else {
        status::masked(rows)
    };
    if args.json {
        super::print_json(&rows)
    } else {
        print!("{}", status::table(&rows));
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this bot (repeatable); default: every bot
    #[arg(long = "bot", value_name = "ID")]
    pub bots: Vec<BotId>,
    /// The window: from this long ago until now
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub fn stats(g: &Global, args: StatsArgs) -> Result<()> {
    let now = crate::vault::now();
    let since = now.saturating_sub(i64::try_from(args.since.as_secs()).unwrap_or(i64::MAX));
    let req = serde_json::json!({"op": "stats", "bots": args.bots, "since": since, "now": now});
    let rows: Vec<crate::stats::BotStats> = match control::request(&g.dir()?, &req)? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| Error::Other(format!("bad stats from the runner: {e}")))?,
        None => crate::stats::collect(&g.open()?, &args.bots, since, now)?,
    };
    if args.json {
        super::print_json(&rows)
    } else {
        print!("{}", crate::stats::table(&rows));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
