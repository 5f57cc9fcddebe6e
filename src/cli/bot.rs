//! `wavault bot ...`: add, show, list and remove bots.

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
        #[command(flatten)]
        hook: super::messages::HookArgs,
        /// Add it disabled (`run` will not start it)
        #[arg(long)]
        disabled: bool,
    },
    /// Change a bot's settings (hook, limits, pair-code phone); a running
    /// `wavault run` uses the new hook settings from the next message on
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
    /// Remove a bot and every record it has
    Remove { id: BotId },
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

/// One row of `bot list`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BotRow {
    pub id: String,
    pub enabled: bool,
    pub created_at: i64,
    pub records: usize,
}

/// The rows of `bot list` for an open vault.
pub fn bot_rows(v: &crate::vault::Vault) -> Result<Vec<BotRow>> {
    v.list_bots()?
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
        .collect()
}

/// What `bot show` prints: the whole configuration. A `None` hook or limit
/// means the bot has none of its own and the `run` default applies.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BotShow {
    pub id: String,
    pub enabled: bool,
    pub created_at: i64,
    /// The pair-code phone number, masked unless asked otherwise.
    pub phone: Option<String>,
    pub webhook: Option<String>,
    pub on_message: Option<String>,
    pub hook_timeout_ms: Option<u64>,
    pub hook_concurrency: Option<u64>,
    pub queue_max: Option<u64>,
    pub queue_max_age_secs: Option<u64>,
    /// Every other stored setting (and a limit that is not a number), as stored.
    pub extra: std::collections::BTreeMap<String, String>,
    pub records: usize,
}

/// The configuration of `id` as `bot show` prints it.
pub fn bot_show(v: &crate::vault::Vault, id: &BotId, show_phone: bool) -> Result<BotShow> {
    use crate::messaging::hook::keys;
    let c = v.bot_config(id)?;
    let records = v.view(id).kinds()?.values().sum();
    let mut extra = c.extra;
    let on_message = extra.remove(keys::ON_MESSAGE);
    let mut num = |k: &str| {
        let n = extra.get(k)?.parse::<u64>().ok()?;
        extra.remove(k);
        Some(n)
    };
    Ok(BotShow {
        id: c.id.to_string(),
        enabled: c.enabled,
        created_at: c.created_at,
        phone: c.phone.map(|p| {
            if show_phone {
                p
            } else {
                crate::runner::status::mask_phone(&p)
            }
        }),
        webhook: c.webhook,
        on_message,
        hook_timeout_ms: num(keys::TIMEOUT_MS),
        hook_concurrency: num(keys::CONCURRENCY),
        queue_max: num(keys::QUEUE_MAX),
        queue_max_age_secs: num(keys::QUEUE_MAX_AGE_SECS),
        extra,
        records,
    })
}

fn print_show(s: &BotShow, json: bool) -> Result<()> {
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
        crate::runner::status::fmt_time(Some(s.created_at)),
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
    let req = serde_json::json!({"op": "bot_show", "bot": id, "show_phone": show_phone});
    let s = match crate::runner::control::request(&g.dir()?, &req)? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| crate::error::Error::Other(format!("bad answer from the runner: {e}")))?,
        None => bot_show(&g.open()?, id, show_phone)?,
    };
    print_show(&s, json)
}

/// The checks of [`BotConfig::check`] as a usage error.
fn checked(cfg: &BotConfig) -> Result<()> {
    cfg.check()
        .map_err(|p| crate::error::Error::Usage(format!("bot {}: {p}", cfg.id)))
}

fn print_rows(rows: &[BotRow], json: bool) -> Result<()> {
    if json {
        return print_json(&rows);
    }
    for r in rows {
        println!(
            "{:<24} {:<8} {:>6} records",
            r.id,
            if r.enabled { "enabled" } else { "disabled" },
            r.records
        );
    }
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
            checked(&cfg)?;
            add(g, &cfg)
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
        BotCommand::List { json } => print_rows(&list(g)?, json),
        BotCommand::Remove { id } => {
            let r = g.open()?.remove_bot(&id)?;
            println!("removed bot {id} and {} record(s)", r.records);
            Ok(())
        }
        BotCommand::Enable { id } => set_enabled(g, &id, true),
        BotCommand::Disable { id } => set_enabled(g, &id, false),
        BotCommand::Reauth { id, json } => super::lifecycle::reauth(g, &id, json),
    }
}

fn set_enabled(g: &Global, id: &BotId, enabled: bool) -> Result<()> {
    let v = g.open()?;
    let mut cfg = v.bot_config(id)?;
    cfg.enabled = enabled;
    v.set_bot(&cfg)?;
    println!(
        "bot {id} {}",
        if enabled {
            "enabled: the next `wavault run` starts it"
        } else {
            "disabled: `wavault run` will not start it"
        }
    );
    Ok(())
}

/// Adds through a running runner (which starts the bot at once), else directly.
fn add(g: &Global, cfg: &BotConfig) -> Result<()> {
    let req = serde_json::json!({"op": "bot_add", "config": cfg});
    if crate::runner::control::request(&g.dir()?, &req)?.is_some() {
        println!(
            "added bot {} to the running wavault (it starts now)",
            cfg.id
        );
    } else {
        g.open()?.add_bot(cfg)?;
        println!("added bot {}", cfg.id);
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
    let change = |cfg: &mut BotConfig| -> Result<()> {
        if no_hook {
            cfg.webhook = None;
            cfg.extra.remove(crate::messaging::hook::keys::ON_MESSAGE);
        }
        if phone.is_some() {
            cfg.phone = phone.clone();
        }
        hook.apply(cfg)?;
        checked(cfg)
    };
    let dir = g.dir()?;
    let req = serde_json::json!({"op": "bot_config", "bot": id});
    let cfg = match crate::runner::control::request(&dir, &req)? {
        Some(v) => {
            let mut cfg: BotConfig = serde_json::from_value(v).map_err(|e| {
                crate::error::Error::Other(format!("bad answer from the runner: {e}"))
            })?;
            change(&mut cfg)?;
            let req = serde_json::json!({"op": "bot_set", "config": cfg});
            crate::runner::control::request(&dir, &req)?;
            cfg
        }
        None => {
            let v = g.open()?;
            let mut cfg = v.bot_config(id)?;
            change(&mut cfg)?;
            v.set_bot(&cfg)?;
            cfg
        }
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

/// Lists through a running runner, else from the vault.
fn list(g: &Global) -> Result<Vec<BotRow>> {
    match crate::runner::control::request(&g.dir()?, &serde_json::json!({"op": "bots"}))? {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| crate::error::Error::Other(format!("bad answer from the runner: {e}"))),
        None => bot_rows(&g.open()?),
    }
}
