//! `sweep` and `bot reauth`: the destructive lifecycle commands. Both go
//! through the running `run` (control socket) when it holds the vault.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::{print_json, Global};
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::runner::control;
use crate::sweep::{self, ReauthReport, SweepReport};

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
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Other(format!("bad answer from the runner: {e}")))
}

pub fn sweep(g: &Global, args: SweepArgs) -> Result<()> {
    let req = json!({
        "op": "sweep",
        "older_than_secs": args.older_than.as_secs(),
        "dry_run": args.dry_run,
    });
    let report: SweepReport = match control::request(&g.dir()?, &req)? {
        Some(v) => decode(v)?,
        None => {
            let (vault, pass) = g.open_with_passphrase()?;
            sweep::sweep_now(&vault, args.older_than, args.dry_run, Some(pass.expose()))?
        }
    };
    if args.json {
        print_json(&report)
    } else {
        print!("{}", sweep::table(&report));
        Ok(())
    }
}

pub fn reauth(g: &Global, id: &BotId, json: bool) -> Result<()> {
    let req = json!({"op": "reauth", "bot": id.as_str()});
    let (report, live): (ReauthReport, bool) = match control::request(&g.dir()?, &req)? {
        Some(v) => (decode(v)?, true),
        None => {
            let (vault, pass) = g.open_with_passphrase()?;
            (
                sweep::reauth(&vault, id, pass.expose(), crate::vault::now())?,
                false,
            )
        }
    };
    if json {
        return print_json(&report);
    }
    println!(
        "bot {id}: {} credential record(s) deleted after an automatic backup ({}); {}",
        report.removed,
        report.auto_backup.display(),
        if live {
            "the running wavault restarted it: scan its new QR code"
        } else {
            "the next `wavault run` shows a QR code for it"
        }
    );
    Ok(())
}
