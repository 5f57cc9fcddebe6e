//! `sweep` and `bot reauth`: the destructive lifecycle commands. Both go
//! through the running `run` (control socket) when it holds the vault.

use std::time::Duration;

use clap::Args;

use super::{print_json, Global};
use crate::botid::BotId;
use crate::error::Result;
use crate::ops::{Request, Response};
use crate::sweep;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Retention: what is older goes (a duration with its unit, at least 1s, e.g. 30d)
    #[arg(long, value_name = "DURATION", value_parser = super::parse_age, default_value = "30d")]
    pub older_than: Duration,
    /// Report what would be removed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Do not ask before purging credentials (needed without a terminal)
    #[arg(long)]
    pub yes: bool,
}

pub fn sweep(g: &Global, args: SweepArgs) -> Result<()> {
    let mut session = super::Session::new(g, None);
    let mut ask = |dry_run| {
        let req = Request::Sweep {
            older_than_secs: args.older_than.as_secs(),
            dry_run,
        };
        match session.run(req, Vec::new())?.resp {
            Response::Sweep(report) => Ok(report),
            _ => Err(super::unexpected("sweep")),
        }
    };
    if !args.dry_run && !args.yes {
        // Purging a dead bot's credentials means pairing it again: ask.
        let plan = ask(true)?;
        let dead: Vec<&str> = plan
            .bots
            .iter()
            .filter(|b| b.credential_records > 0)
            .map(|b| b.bot.as_str())
            .collect();
        if !dead.is_empty() {
            super::confirm(
                "sweep",
                &format!(
                    "Purge the credentials of {} logged-out bot(s) ({}): they would need a new \
                     QR scan (an automatic backup is taken first)?",
                    dead.len(),
                    dead.join(", ")
                ),
                false,
            )?;
        }
    }
    let report = ask(args.dry_run)?;
    if args.json {
        print_json(&report)
    } else {
        print!("{}", sweep::table(&report));
        Ok(())
    }
}

pub fn reauth(g: &Global, id: &BotId, json: bool) -> Result<()> {
    let req = Request::Reauth { bot: id.clone() };
    let done = super::perform(g, req, Vec::new())?;
    let Response::Reauth { report, restarted } = done.resp else {
        return Err(super::unexpected("bot reauth"));
    };
    if json {
        return print_json(&report);
    }
    println!(
        "bot {id}: {} credential record(s) deleted after an automatic backup ({}); {}",
        report.removed,
        report.auto_backup.display(),
        if restarted {
            "the running wavault restarted it: scan its new QR code"
        } else if done.via == super::Via::Runner {
            "it is disabled: `wavault bot enable` starts it and shows a QR code"
        } else {
            "the next `wavault run` shows a QR code for it"
        }
    );
    Ok(())
}
