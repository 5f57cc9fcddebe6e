//! `wavault send`, `wavault queue`, and the hook options shared by `bot add`,
//! `bot set` and `run`.

use super::durations::{parse_age, parse_period};
use super::Global;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::messaging::hook::{self, keys, HookDefaults, Target};
use crate::vault::BotConfig;
use clap::Args;
use std::time::Duration;

/// Where inbound messages go, and the limits. On `bot add`/`bot set` they
/// are the bot's own; on `run` they are the defaults for bots without.
#[derive(Debug, Args, Clone, Default)]
pub struct HookArgs {
    /// POST each inbound message as JSON to URL; the answer may carry replies
    #[arg(long, value_name = "URL", conflicts_with = "on_message")]
    pub webhook: Option<String>,
    /// Run CMD (sh -c) per inbound message with the JSON on stdin; its output may carry replies
    #[arg(long, value_name = "CMD")]
    pub on_message: Option<String>,
    /// Time limit of one hook call, more than 0 [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_period)]
    pub hook_timeout: Option<Duration>,
    /// Hook calls in flight at once for one bot, at most one per chat [default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hook_concurrency: Option<u32>,
    /// Most messages waiting for the hook; beyond it WhatsApp keeps them [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_max: Option<u32>,
    /// Queued messages older than this are held back from the hook, with an alert, until `queue retry` or `queue drop`; at least 1s [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub queue_max_age: Option<Duration>,
    /// Kinds of event the hook gets, comma-separated: message, receipt, status, decrypt_failure [default: message]
    #[arg(long, value_name = "KINDS", value_parser = crate::messaging::events::parse_flag)]
    pub events: Option<crate::messaging::events::EventKinds>,
    /// Outbound messages (sends, hook replies, reactions) a minute, evenly spaced; more wait their turn; `off`: unpaced [default: off]
    #[arg(long, value_name = "N/min", value_parser = parse_send_rate)]
    pub send_rate: Option<SendRate>,
    /// Where events go: webhook or command (the hook), nats (the fleet's events stream, with `run --nats`), or nats,webhook (the stream, then the hook) [default: the hook if there is one, else nats under `run --nats`]
    #[arg(long, value_name = "SINK", value_parser = hook::Sink::parse)]
    pub sink: Option<hook::Sink>,
}

/// `--send-rate`: `N/min`, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRate(pub Option<u32>);

fn parse_send_rate(s: &str) -> std::result::Result<SendRate, String> {
    crate::messaging::pacing::parse_rate(s).map(SendRate)
}

impl HookArgs {
    /// No option given.
    pub fn is_empty(&self) -> bool {
        self.webhook.is_none()
            && self.on_message.is_none()
            && self.hook_timeout.is_none()
            && self.hook_concurrency.is_none()
            && self.queue_max.is_none()
            && self.queue_max_age.is_none()
            && self.send_rate.is_none()
            && self.events.is_none()
            && self.sink.is_none()
    }

    /// For commands that keep what is not given (`bot set`): the limits'
    /// help shows no default.
    pub fn unchanged_when_absent(a: clap::Arg) -> clap::Arg {
        const LIMITS: [&str; 7] = [
            "hook_timeout",
            "hook_concurrency",
            "queue_max",
            "queue_max_age",
            "send_rate",
            "events",
            "sink",
        ];
        if !LIMITS.contains(&a.get_id().as_str()) {
            return a;
        }
        let Some(help) = a.get_help().map(|h| h.to_string()) else {
            return a;
        };
        match help.find(" [default: ") {
            Some(i) => {
                let short = help[..i].to_string();
                a.help(format!("{short}; not given: unchanged"))
            }
            None => a,
        }
    }

    fn check(&self) -> Result<()> {
        if let Some(u) = &self.webhook {
            hook::check_webhook(u)?;
        }
        if self
            .on_message
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(Error::Usage("--on-message needs a command".into()));
        }
        Ok(())
    }

    /// Writes the options given into a bot's config. A new webhook replaces
    /// a command and the other way round.
    pub fn apply(&self, cfg: &mut BotConfig) -> Result<()> {
        self.check()?;
        if let Some(u) = &self.webhook {
            cfg.webhook = Some(u.clone());
            cfg.extra.remove(keys::ON_MESSAGE);
        }
        if let Some(c) = &self.on_message {
            cfg.extra.insert(keys::ON_MESSAGE.into(), c.clone());
            cfg.webhook = None;
        }
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                cfg.extra.insert(k.into(), v);
            }
        };
        set(
            keys::TIMEOUT_MS,
            self.hook_timeout.map(|d| d.as_millis().to_string()),
        );
        set(
            keys::CONCURRENCY,
            self.hook_concurrency.map(|n| n.to_string()),
        );
        set(keys::QUEUE_MAX, self.queue_max.map(|n| n.to_string()));
        set(
            keys::QUEUE_MAX_AGE_SECS,
            self.queue_max_age.map(|d| d.as_secs().max(1).to_string()),
        );
        set(
            keys::SEND_RATE,
            self.send_rate.map(|r| {
                r.0.map_or_else(|| "off".to_owned(), |n| n.to_string() + "/min")
            }),
        );
        set(keys::EVENTS, self.events.map(|e| e.to_string()));
        set(keys::SINK, self.sink.map(|s| s.as_str().to_owned()));
        Ok(())
    }

    /// The defaults of `run`.
    pub fn defaults(&self) -> Result<HookDefaults> {
        self.check()?;
        let d = HookDefaults::default();
        Ok(HookDefaults {
            target: match (&self.webhook, &self.on_message) {
                (Some(u), _) => Some(Target::Webhook(u.clone())),
                (None, Some(c)) => Some(Target::Command(c.clone())),
                _ => None,
            },
            timeout: self.hook_timeout.unwrap_or(d.timeout),
            concurrency: self.hook_concurrency.map_or(d.concurrency, |n| n as usize),
            queue_max: self.queue_max.map_or(d.queue_max, |n| n as usize),
            queue_max_age: self.queue_max_age.unwrap_or(d.queue_max_age),
            send_rate: self.send_rate.and_then(|r| r.0),
            events: self.events.unwrap_or(d.events),
            nats: d.nats,
            sink: self.sink,
        })
    }
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The bot that sends
    pub bot: BotId,
    /// Phone number in international format (e.g. 4915112345678) or a JID
    pub to: String,
    /// The text ("-" reads it from standard input); with --file, use --caption instead
    #[arg(required_unless_present = "file")]
    pub text: Option<String>,
    /// Send this file (at most 64 MiB): an image, video, audio, voice note, document or sticker
    #[arg(long, value_name = "PATH", conflicts_with = "text")]
    pub file: Option<std::path::PathBuf>,
    /// The file's caption (images, videos and documents show it)
    #[arg(long, value_name = "TEXT", requires = "file")]
    pub caption: Option<String>,
    /// Send the file as this kind: image, video, audio, voice, document, sticker [default: from the content]
    #[arg(long = "as", value_name = "KIND", requires = "file", value_parser = crate::messaging::attach::MediaKind::parse)]
    pub kind: Option<crate::messaging::attach::MediaKind>,
    /// The same key for the same bot within 24 h sends once: a repeat prints the first message's id
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub idempotency_key: Option<String>,
    /// Quote the message with this id (as a hook received it)
    #[arg(long, value_name = "MSGID", value_parser = parse_msgid)]
    pub reply_to: Option<String>,
    /// Show "typing…" first, for a time proportional to the text (1-5 s)
    #[arg(long)]
    pub typing: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Without a running `wavault run`: how long to wait for the bot to connect
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_period)]
    pub connect_timeout: Duration,
}

fn parse_key(s: &str) -> std::result::Result<String, String> {
    crate::messaging::outbox::check_key(s).map(|()| s.to_owned())
}

fn parse_msgid(s: &str) -> std::result::Result<String, String> {
    crate::messaging::outbox::check_message_id(s).map(|()| s.to_owned())
}

/// `wavault send BOT TO TEXT`: through the running `wavault run`, else by
/// connecting the bot alone for the send.
pub fn send(g: &Global, args: SendArgs) -> Result<()> {
    crate::messaging::parse_recipient(&args.to)?;
    if args.file.is_none() && (args.caption.is_some() || args.kind.is_some()) {
        return Err(Error::Usage(
            "--caption and --as need --file (a text is the TEXT argument)".into(),
        ));
    }
    let progress = Progress::new();
    let (text, file) = match (&args.file, args.text) {
        (Some(path), _) => {
            let bytes = read_file(path, &progress)?;
            let file = crate::messaging::outbox::OutFile {
                kind: args.kind,
                mimetype: None,
                file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
                bytes: std::sync::Arc::new(bytes),
            };
            (args.caption.unwrap_or_default(), Some(file))
        }
        (None, Some(t)) if t == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| Error::io("reading the text from standard input", e))?;
            (s.trim_end_matches('\n').to_owned(), None)
        }
        (None, t) => (t.unwrap_or_default(), None),
    };
    let message = crate::messaging::outbox::Outgoing {
        to: args.to.clone(),
        text,
        idempotency_key: args.idempotency_key,
        reply_to: args.reply_to,
        typing: args.typing,
        file,
    };
    message.check()?;
    message.attachment()?;
    // The bytes go as the request's payload, not in its line.
    let payload = message
        .file
        .as_ref()
        .map(|f| f.bytes.clone())
        .unwrap_or_default();
    let req = crate::ops::Request::Send {
        bot: args.bot.clone(),
        message: message.clone(),
    };
    let dir = g.dir()?;
    let answer = crate::ops::client::call_with_progress(&dir, &req, &payload, &mut |sent| {
        progress.handed_over(sent, payload.len() as u64)
    });
    drop(payload);
    let answer = answer.inspect_err(|_| progress.done())?;
    let id = match answer {
        Some((crate::ops::Response::Sent { id }, _)) => id,
        Some(_) => return Err(super::unexpected("send")),
        None => {
            // No `run`: connect this bot alone for the send.
            let (vault, rt, cfg) = super::alone(g)?;
            if let Some(f) = &message.file {
                progress.uploading(f.bytes.len() as u64, false);
            }
            let sent = rt.block_on(crate::runner::send_once(
                vault,
                cfg,
                &args.bot,
                &message,
                args.connect_timeout,
            ));
            progress.done();
            sent?
        }
    };
    progress.done();
    if args.json {
        super::print_json(&serde_json::json!({"bot": args.bot, "id": id}))
    } else {
        println!("{id}");
        Ok(())
    }
}

/// `send --file`: the file's bytes (usage errors: missing, unreadable,
/// not a regular file, over [`crate::messaging::attach::DEFAULT_MAX`]).
fn read_file(path: &std::path::Path, progress: &Progress) -> Result<Vec<u8>> {
    use crate::messaging::attach::{check_size, DEFAULT_MAX};
    use std::io::Read;
    let cannot = |e: std::io::Error| Error::Usage(format!("cannot read {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "cannot send {}: not a regular file",
            path.display()
        )));
    }
    check_size(meta.len(), DEFAULT_MAX)
        .map_err(|e| Error::Usage(format!("cannot send {}: {e}", path.display())))?;
    let mut out = Vec::with_capacity(meta.len() as usize);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(cannot)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        check_size(out.len() as u64, DEFAULT_MAX)
            .map_err(|e| Error::Usage(format!("cannot send {}: {e}", path.display())))?;
        progress.read(out.len() as u64, meta.len());
    }
    Ok(out)
}

/// Progress of `send --file` on stderr, only when stderr is a terminal
/// and the file is large (1 MiB or more). It shows what this process can
/// measure: the bytes read from disk, then the bytes handed to the running
/// `wavault run`; the upload to WhatsApp happens there (or, with no `run`,
/// in this process inside whatsapp-rust), so it shows a spinner with the
/// time spent, not a percentage.
struct Progress(std::sync::Mutex<Option<indicatif::ProgressBar>>);

impl Progress {
    const LARGE: u64 = 1 << 20;

    fn new() -> Progress {
        Progress(std::sync::Mutex::new(None))
    }

    fn bar(&self, total: u64, msg: &'static str) {
        use std::io::IsTerminal;
        if total < Self::LARGE || !std::io::stderr().is_terminal() {
            return;
        }
        let mut pb = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let p = pb.get_or_insert_with(|| indicatif::ProgressBar::new(total));
        if p.message() != msg {
            p.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            p.set_length(total);
            p.set_message(msg);
        }
    }

    fn set(&self, done: u64) {
        if let Some(p) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            p.set_position(done);
        }
    }

    fn read(&self, done: u64, total: u64) {
        self.bar(total, "reading the file");
        self.set(done);
    }

    fn handed_over(&self, done: u64, total: u64) {
        self.bar(total, "handing it to wavault run");
        self.set(done);
        if done >= total {
            self.uploading(total, true);
        }
    }

    fn uploading(&self, total: u64, run: bool) {
        use std::io::IsTerminal;
        if total < Self::LARGE || !std::io::stderr().is_terminal() {
            return;
        }
        let mut pb = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pb.take() {
            p.finish_and_clear();
        }
        let p = indicatif::ProgressBar::new_spinner();
        p.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        p.set_message(if run {
            "wavault run encrypts, uploads and sends it (no percentage: the upload happens there)"
        } else {
            "connecting the bot, then encrypting, uploading and sending (no percentage available)"
        });
        p.enable_steady_tick(std::time::Duration::from_millis(200));
        *pb = Some(p);
    }

    fn done(&self) {
        if let Some(p) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            p.finish_and_clear();
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// The messages waiting for a bot's hook, oldest first
    List {
        bot: BotId,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Put messages held back at the age limit into delivery again
    Retry { bot: BotId },
    /// Delete the messages held back at the age limit, after an automatic
    /// backup of the bot (asks first on a terminal)
    Drop {
        bot: BotId,
        /// Do not ask for confirmation (needed without a terminal)
        #[arg(long)]
        yes: bool,
    },
}

/// `wavault queue list|retry|drop BOT`, through the running `run` when it holds the vault.
pub fn queue(g: &Global, cmd: QueueCommand) -> Result<()> {
    use crate::ops::proto::QueueAction;
    use crate::ops::Response;
    let (bot, action, json) = match &cmd {
        QueueCommand::List { bot, json } => (bot, QueueAction::List, *json),
        QueueCommand::Retry { bot } => (bot, QueueAction::Retry, false),
        QueueCommand::Drop { bot, .. } => (bot, QueueAction::Drop, false),
    };
    let mut session = super::Session::new(g, None);
    if let QueueCommand::Drop { bot, yes } = &cmd {
        // Asked only when something is held (an unknown bot is refused first).
        let req = crate::ops::Request::Queue {
            bot: bot.clone(),
            action: QueueAction::List,
        };
        let held = match session.run(req, Vec::new())?.resp {
            Response::QueueList(rows) => rows.iter().filter(|r| r.state == "held").count(),
            _ => return Err(super::unexpected("queue")),
        };
        if held > 0 {
            super::confirm(
                "queue drop",
                &format!(
                    "Delete the {held} message(s) held back for bot {bot} for good (an automatic \
                     backup of the bot is taken first)?"
                ),
                *yes,
            )?;
        }
    }
    let req = crate::ops::Request::Queue {
        bot: bot.clone(),
        action,
    };
    match session.run(req, Vec::new())?.resp {
        Response::QueueList(rows) if json => super::print_json(&rows),
        Response::QueueList(rows) => {
            use crate::table::{Align::*, Table};
            let mut t = Table::new(&[
                ("SEQ", Right),
                ("STATE", Left),
                ("RECEIVED", Left),
                ("ATTEMPTS", Right),
                ("CHAT", Left),
                ("LAST ERROR", Left),
            ]);
            for r in &rows {
                t.row([
                    r.seq.to_string(),
                    r.state.to_string(),
                    crate::status::fmt_time(Some(r.received_at)),
                    r.attempts.to_string(),
                    r.chat.to_string(),
                    r.last_error.as_deref().unwrap_or("-").to_owned(),
                ]);
            }
            print!("{}", t.render());
            println!("{} message(s) queued for bot {bot}", rows.len());
            Ok(())
        }
        Response::QueueReleased(n) => {
            println!("{n} held message(s) of bot {bot} are back in delivery");
            Ok(())
        }
        Response::QueueDropped {
            dropped,
            auto_backup,
        } => {
            println!(
                "dropped {dropped} held message(s) of bot {bot}{}",
                auto_backup
                    .map(|p| format!(" (automatic backup first: {})", p.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        _ => Err(super::unexpected("queue")),
    }
}
