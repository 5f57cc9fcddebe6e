//! `wavault bot ...`: add, list and remove bots.

use super::{print_json, Global};
use crate::botid::BotId;
use crate::error::Result;
use crate::vault::BotConfig;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BotCommand {
    /// Add a bot (ids: 1-64 chars of a-z 0-9 - _, starting with a letter or digit)
    Add {
        id: BotId,
        /// Phone number to pair with a pair code instead of a QR
        #[arg(long)]
        phone: Option<String>,
        /// Webhook URL for this bot's inbound messages
        #[arg(long)]
        webhook: Option<String>,
        /// Add it disabled (`run` will not start it)
        #[arg(long)]
        disabled: bool,
    },
    /// List bots
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Remove a bot and every record it has
    Remove { id: BotId },
}

#[derive(serde::Serialize)]
struct BotRow {
    id: String,
    enabled: bool,
    created_at: i64,
    records: usize,
}

pub fn run(g: &Global, cmd: BotCommand) -> Result<()> {
    let v = g.open()?;
    match cmd {
        BotCommand::Add {
            id,
            phone,
            webhook,
            disabled,
        } => {
            let mut cfg = BotConfig::new(id);
            cfg.phone = phone;
            cfg.webhook = webhook;
            cfg.enabled = !disabled;
            v.add_bot(&cfg)?;
            println!("added bot {}", cfg.id);
        }
        BotCommand::List { json } => {
            let rows = v
                .list_bots()?
                .into_iter()
                .map(|c| {
                    let records = v.view(&c.id).kinds()?.values().sum();
                    Ok(BotRow {
                        id: c.id.to_string(),
                        enabled: c.enabled,
                        created_at: c.created_at,
                        records,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if json {
                print_json(&rows)?;
            } else {
                for r in rows {
                    println!(
                        "{:<24} {:<8} {:>6} records",
                        r.id,
                        if r.enabled { "enabled" } else { "disabled" },
                        r.records
                    );
                }
            }
        }
        BotCommand::Remove { id } => {
            let r = v.remove_bot(&id)?;
            println!("removed bot {id} and {} record(s)", r.records);
        }
    }
    Ok(())
}
