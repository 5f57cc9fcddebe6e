//! `wavault run`, `wavault status` and `wavault stats`.

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
    /// (loopback only unless --listen-any; every request needs the token)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Allow --listen on a non-loopback address
    #[arg(long, requires = "listen")]
    pub listen_any: bool,
}

/// The longest duration any flag takes: 100 years (`36525d`). Longer ones
/// are refused, never wrapped or saturated: a typo must not turn into a
/// short retention, and every accepted value can be added to the current
/// time (as an `Instant` or a unix time) without overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_525 * 86_400);

/// How a duration is written, for error messages.
const DURATION_FORMS: &str =
    "a whole number and a unit: ms, s, m, h or d (e.g. 500ms, 30s, 5m, 12h, 30d)";

/// Parses `500ms`, `30s`, `5m`, `12h`, `30d`: a whole number and a unit, at
/// most [`MAX_DURATION`]. A bare number is refused (it was once taken as
/// seconds: `--older-than 30` meant 30 s, not 30 days), and so is anything
/// empty, negative, fractional or too long. Zero is accepted here; flags
/// where zero makes no sense use [`parse_period`] or [`parse_age`].
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty duration: write {DURATION_FORMS}"));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_ms: u64 = match unit {
        _ if num.is_empty() => return Err(format!("bad duration {t:?}: write {DURATION_FORMS}")),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "{t:?} has no unit (is it {t}s? {t}d?): write {DURATION_FORMS}"
            ))
        }
        _ => return Err(format!("bad duration {t:?}: write {DURATION_FORMS}")),
    };
    let too_long = || format!("duration {t:?} is too long: at most 36525d (100 years)");
    // `num` is all ASCII digits: parsing fails only on overflow.
    let n: u64 = num.parse().map_err(|_| too_long())?;
    let d = n
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(too_long)?;
    Ok(d)
}

/// A period or time limit (`--sweep-every`, `--rotate-key-every`,
/// `--hook-timeout`, `--connect-timeout`): a duration more than 0 (a zero
/// timer period panics; a zero time limit fails every call).
pub fn parse_period(s: &str) -> std::result::Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{:?} is zero: it must be more than 0 (e.g. 30s, 1h)",
            s.trim()
        ));
    }
    Ok(d)
}

/// An age or window counted in whole seconds (`--older-than`,
/// `--retention`, `--queue-max-age`, `stats --since`): at least 1s (below,
/// it would be 0 seconds: a retention that deletes everything, an empty window).
pub fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "{:?} is under a second: it must be at least 1s (e.g. 1h, 30d)",
            s.trim()
        ));
    }
    Ok(d)
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

impl RunArgs {
    /// The runner's configuration from the flags, checked: every usage
    /// error (durations and limits beyond what clap checks, the listen
    /// address, the hook target) is found here, before the vault is opened
    /// or the runtime starts.
    pub fn plan(self) -> Result<RunConfig> {
        if let Some(addr) = self.listen {
            crate::web::check_addr(addr, self.listen_any)?;
        }
        let mut cfg = RunConfig::new(Net::production());
        cfg.bots = self.bots;
        cfg.stagger = self.stagger;
        cfg.alert_command = self.alert_command;
        cfg.hooks = self.hooks.defaults()?;
        cfg.sweep_every = self.sweep_every;
        cfg.retention = self.retention;
        cfg.rotate_key_every = self.rotate_key_every;
        cfg.push_name = self.push_name;
        cfg.listen = self.listen;
        cfg.check()?;
        Ok(cfg)
    }
}

pub fn run(g: &Global, args: RunArgs) -> Result<()> {
    let mut cfg = args.plan()?;
    let (vault, pass) = open_or_create(g)?;
    cfg.backup_passphrase = Some(std::sync::Arc::new(pass));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    rt.block_on(until_signalled(vault, cfg))
}

/// Starts the runner and serves until SIGINT or SIGTERM, then stops every
/// bot cleanly; a second signal meanwhile exits the process at once with
/// code 130. `run`'s main loop (public for the tests' child runners, which
/// bring their own network).
pub async fn until_signalled(vault: Vault, cfg: RunConfig) -> Result<()> {
    // Handlers first: a signal that arrives while bots start still
    // gets the clean shutdown.
    let mut signals = Signals::new()?;
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
    let Response::Status(rows) = super::perform(g, Request::Status, Vec::new())?.resp else {
        return Err(super::unexpected("status"));
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

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("36525d"), Ok(super::MAX_DURATION));
        for bad in [
            "7", "0", "", " ", "3w", "h", "-5s", "+5s", "1.5h", "5 s", "5S", "1h30m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("no unit") && e.contains("30d"), "{e}");
        for long in [
            "36526d",
            "213503982335d",
            "18446744073709551615ms",
            "99999999999999999999s",
        ] {
            let e = parse_duration(long).unwrap_err();
            assert!(
                e.contains("too long") && e.contains("100 years"),
                "{long}: {e}"
            );
        }
    }

    #[test]
    fn periods_and_ages_refuse_zero() {
        use super::{parse_age, parse_period};
        assert!(parse_period("0s").unwrap_err().contains("more than 0"));
        assert_eq!(parse_period("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_age("999ms").unwrap_err().contains("at least 1s"));
        assert_eq!(parse_age("1s"), Ok(Duration::from_secs(1)));
    }
}
