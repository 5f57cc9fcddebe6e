//! `wavault groups list BOT`: the groups a bot is in (id, subject,
//! participant count), asked of WhatsApp through the running `wavault run`,
//! else by connecting the bot alone (like `send`).

use std::time::Duration;

use super::{parse_period, print_json, unexpected, Global};
use crate::botid::BotId;
use crate::error::Result;
use crate::ops::proto::GroupRow;

#[derive(Debug, clap::Subcommand)]
pub enum GroupsCommand {
    /// The groups a bot is in: id (…@g.us), subject, participant count
    List {
        bot: BotId,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Without a running `wavault run`: how long to wait for the bot to connect
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_period)]
        connect_timeout: Duration,
    },
}

pub fn groups(g: &Global, cmd: GroupsCommand) -> Result<()> {
    let GroupsCommand::List {
        bot,
        json,
        connect_timeout,
    } = cmd;
    let req = crate::ops::Request::Groups { bot: bot.clone() };
    let rows = match crate::ops::client::call(&g.dir()?, &req, &[])? {
        Some((crate::ops::Response::Groups(rows), _)) => rows,
        Some(_) => return Err(unexpected("groups list")),
        None => {
            let (vault, rt, cfg) = super::alone(g)?;
            rt.block_on(crate::runner::groups_once(
                vault,
                cfg,
                &bot,
                connect_timeout,
            ))?
        }
    };
    print_rows(&rows, json)
}

fn print_rows(rows: &[GroupRow], json: bool) -> Result<()> {
    if json {
        return print_json(&rows);
    }
    use crate::table::{Align::*, Table};
    if rows.is_empty() {
        return Ok(());
    }
    let mut t = Table::new(&[("GROUP", Left), ("PARTICIPANTS", Right), ("SUBJECT", Left)]);
    for r in rows {
        t.row([r.id.clone(), r.participants.to_string(), r.subject.clone()]);
    }
    print!("{}", t.render());
    Ok(())
}
