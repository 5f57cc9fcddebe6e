//! `wavault bot ...`: add, show, list and remove bots.

use super::{perform, print_json, unexpected, Global, Via};
use crate::botid::BotId;
use crate::error::Result;
use crate::ops::{Request, Response};
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
        #[command(flatten)]
        hook: super::messages::HookArgs,
        /// Add it disabled (`run` will not start it)
        #[arg(long)]
        disabled: bool,
    },
    /// Change a bot's settings (hook, limits, pair-code phone); options not
    /// given stay as they are; a running `wavault run` uses the new hook
    /// settings from the next message on
    #[command(mut_args = super::messages::HookArgs::unchanged_when_absent)]
    Set {
        id: BotId,
        /// Phone number to pair with a pair code instead of a QR
        #[arg(long)]
        phone: Option<String>,
        #[command(flatten)]
        hook: super::messages::HookArgs,
        /// Remove the bot's own webhook or command (the `run` default applies)
        #[arg(long, conflicts_with_all = ["webhook", "on_message"])]
        no_hook: bool,
    },
    /// Show a bot's whole configuration: enabled, phone (masked), hook,
    /// limits and every other setting
    Show {
        id: BotId,
        /// Print the pair-code phone number in full
        #[arg(long)]
        show_phone: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// List bots
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Remove a bot and every record it has, after an automatic backup of
    /// it (asks first on a terminal)
    Remove {
        id: BotId,
        /// Do not ask for confirmation (needed without a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Let `run` start the bot again (e.g. after `export --move`)
    Enable { id: BotId },
    /// Keep the bot and its state but do not start it in `run`
    Disable { id: BotId },
    /// Force the bot to pair again: automatic backup, then its credentials
    /// and Signal state are deleted (config, metadata and history stay)
    Reauth {
        id: BotId,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

fn print_show(s: &crate::ops::proto::BotShow, json: bool) -> Result<()> {
    use crate::messaging::hook as h;
    if json {
        return print_json(s);
    }
    let own = |v: Option<u64>, unit: &str, default: String| match v {
        Some(n) => format!("{n}{unit}"),
        None => format!("the `run` default ({default} unless `run` sets another)"),
    };
    println!(
        "bot {}: {}, added {}, {} record(s)",
        s.id,
        if s.enabled { "enabled" } else { "disabled" },
        crate::status::fmt_time(Some(s.created_at)),
        s.records
    );
    println!(
        "  phone:            {}",
        s.phone.as_deref().unwrap_or("none (pairs with a QR code)")
    );
    let hook = crate::backup::archive::Hooks {
        webhook: s.webhook.clone(),
        on_message: s.on_message.clone(),
    };
    println!("  hook:             {}", hook.describe());
    println!(
        "  hook timeout:     {}",
        own(
            s.hook_timeout_ms,
            " ms",
            format!("{:?}", h::DEFAULT_TIMEOUT)
        )
    );
    println!(
        "  hook concurrency: {}",
        own(s.hook_concurrency, "", h::DEFAULT_CONCURRENCY.to_string())
    );
    println!(
        "  queue max:        {}",
        own(s.queue_max, " messages", h::DEFAULT_QUEUE_MAX.to_string())
    );
    println!(
        "  queue max age:    {}",
        own(
            s.queue_max_age_secs,
            " s",
            format!("{}s", h::DEFAULT_QUEUE_MAX_AGE.as_secs())
        )
    );
    for (k, v) in &s.extra {
        println!("  {k}: {v}");
    }
    Ok(())
}

/// `bot show`: through a running runner, else from the vault.
fn show(g: &Global, id: &BotId, show_phone: bool, json: bool) -> Result<()> {
    let req = Request::BotShow {
        bot: id.clone(),
        show_phone,
    };
    let Response::BotShow(s) = perform(g, req, Vec::new())?.resp else {
        return Err(unexpected("bot show"));
    };
    print_show(&s, json)
}

fn print_rows(rows: &[crate::ops::proto::BotRow], json: bool) -> Result<()> {
    if json {
        return print_json(&rows);
    }
    use crate::table::{Align::*, Table};
    if rows.is_empty() {
        return Ok(());
    }
    let mut t = Table::new(&[("BOT", Left), ("STATE", Left), ("RECORDS", Right)]);
    for r in rows {
        t.row([
            r.id.clone(),
            (if r.enabled { "enabled" } else { "disabled" }).to_owned(),
            r.records.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub fn run(g: &Global, cmd: BotCommand) -> Result<()> {
    match cmd {
        BotCommand::Add {
            id,
            phone,
            hook,
            disabled,
        } => {
            let mut cfg = BotConfig::new(id);
            cfg.phone = phone;
            hook.apply(&mut cfg)?;
            cfg.enabled = !disabled;
            crate::ops::bots::checked(&cfg)?;
            add(g, cfg)
        }
        BotCommand::Set {
            id,
            phone,
            hook,
            no_hook,
        } => set(g, &id, phone, &hook, no_hook),
        BotCommand::Show {
            id,
            show_phone,
            json,
        } => show(g, &id, show_phone, json),
        BotCommand::List { json } => {
            let Response::Bots(rows) = perform(g, Request::Bots, Vec::new())?.resp else {
                return Err(unexpected("bot list"));
            };
            print_rows(&rows, json)
        }
        BotCommand::Remove { id, yes } => {
            // An unknown bot is refused before the question.
            let mut session = super::Session::new(g, None);
            session.run(Request::BotConfig { bot: id.clone() }, Vec::new())?;
            super::confirm(
                "bot remove",
                &format!(
                    "Remove bot {id} and every record it has (an automatic backup is taken first)?"
                ),
                yes,
            )?;
            let Response::Removed(r) = session
                .run(Request::BotRemove { bot: id }, Vec::new())?
                .resp
            else {
                return Err(unexpected("bot remove"));
            };
            println!(
                "removed bot {}{} and {} record(s){}",
                r.bot,
                if r.stopped {
                    " (stopped in the running wavault first)"
                } else {
                    ""
                },
                r.records,
                r.auto_backup
                    .map(|p| format!("; automatic backup first: {}", p.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        BotCommand::Enable { id } => set_enabled(g, &id, true),
        BotCommand::Disable { id } => set_enabled(g, &id, false),
        BotCommand::Reauth { id, json } => super::lifecycle::reauth(g, &id, json),
    }
}

fn set_enabled(g: &Global, id: &BotId, enabled: bool) -> Result<()> {
    let req = Request::BotEnable {
        bot: id.clone(),
        enabled,
    };
    let done = perform(g, req, Vec::new())?;
    let Response::Toggled(t) = done.resp else {
        return Err(unexpected("bot enable"));
    };
    let live = done.via == Via::Runner;
    println!(
        "bot {id} {}",
        match (enabled, live) {
            (true, true) => "enabled: the running wavault starts it now",
            (true, false) => "enabled: the next `wavault run` starts it",
            (false, true) if t.live => "disabled: the running wavault stopped it",
            (false, true) => "disabled (it was not running)",
            (false, false) => "disabled: `wavault run` will not start it",
        }
    );
    Ok(())
}

/// Adds through a running runner (which starts the bot at once), else directly.
fn add(g: &Global, cfg: BotConfig) -> Result<()> {
    let id = cfg.id.clone();
    let Response::Added { started, .. } =
        perform(g, Request::BotAdd { config: cfg }, Vec::new())?.resp
    else {
        return Err(unexpected("bot add"));
    };
    if started {
        println!("added bot {id} to the running wavault (it starts now)");
    } else {
        println!("added bot {id}");
    }
    Ok(())
}

/// Changes a bot's config, through a running runner when there is one.
fn set(
    g: &Global,
    id: &BotId,
    phone: Option<String>,
    hook: &super::messages::HookArgs,
    no_hook: bool,
) -> Result<()> {
    if phone.is_none() && hook.is_empty() && !no_hook {
        return Err(crate::error::Error::Usage(format!(
            "nothing to change for bot {id}: give at least one of --phone, --webhook, \
             --on-message, --no-hook, --hook-timeout, --hook-concurrency, --queue-max, \
             --queue-max-age, --events (`wavault bot show {id}` prints the current settings)"
        )));
    }
    let mut session = super::Session::new(g, None);
    let Response::BotConfig(mut cfg) = session
        .run(Request::BotConfig { bot: id.clone() }, Vec::new())?
        .resp
    else {
        return Err(unexpected("bot set"));
    };
    if no_hook {
        cfg.webhook = None;
        cfg.extra.remove(crate::messaging::hook::keys::ON_MESSAGE);
    }
    if phone.is_some() {
        cfg.phone = phone;
    }
    hook.apply(&mut cfg)?;
    crate::ops::bots::checked(&cfg)?;
    let Response::Updated { .. } = session
        .run(
            Request::BotSet {
                config: cfg.clone(),
            },
            Vec::new(),
        )?
        .resp
    else {
        return Err(unexpected("bot set"));
    };
    let s = crate::messaging::hook::HookSettings::resolve(
        &cfg,
        &crate::messaging::hook::HookDefaults::default(),
    );
    let target = match &s.target {
        Some(crate::messaging::hook::Target::Webhook(_)) => "webhook",
        Some(crate::messaging::hook::Target::Command(_)) => "command",
        None => "none of its own (the `run` default applies)",
    };
    println!(
        "bot {id} updated: hook {target}, time limit {:?}, concurrency {}, queue up to {} messages / {}s",
        s.timeout,
        s.concurrency,
        s.queue_max,
        s.queue_max_age.as_secs()
    );
    Ok(())
}
