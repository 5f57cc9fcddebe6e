//! `wavault run`: one process runs every enabled bot of the vault.
//!
//! One supervisor task per bot ([`bot`]), started with a stagger so a restart
//! of hundreds of bots is not a storm. Each turns whatsapp-rust events into
//! session metadata (sealed in the vault) and into [`RunnerEvent`]s that the
//! console, the control socket and tests subscribe to. Permanent failures
//! stop that bot's retries and raise an [`alert::Alert`]. Timers run
//! retention sweeps and data-key rotation without stopping the bots.

pub mod alert;
mod bot;
pub mod certcheck;
pub mod control;
pub(crate) mod deliver;
mod events;
mod fleet;
pub(crate) mod groups;
mod meta;
pub mod net;
pub mod qr;
mod supervisor;

use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::passphrase::Passphrase;
use crate::sessions::{Sessions, Status};
use crate::status;
use crate::vault::Vault;
use net::Net;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

/// How `run` behaves.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Bots to run; empty means every enabled bot.
    pub bots: Vec<BotId>,
    /// Delay between two bot starts.
    pub stagger: Duration,
    /// Command that receives alerts as JSON on stdin.
    pub alert_command: Option<String>,
    /// Hook defaults for bots that name none of their own (`--webhook`,
    /// `--on-message`) and the default limits.
    pub hooks: crate::messaging::hook::HookDefaults,
    /// First retry delay after a failed hook call (doubles per failure).
    pub hook_backoff: Duration,
    /// Longest retry delay after failed hook calls.
    pub hook_backoff_max: Duration,
    /// Retention sweep period.
    pub sweep_every: Duration,
    /// History older than this is removed by the sweep.
    pub retention: Duration,
    /// Scheduled data-key rotation period (off when `None`).
    pub rotate_key_every: Option<Duration>,
    /// Network pieces (production or a test peer).
    pub net: Net,
    /// Push name the bots present.
    pub push_name: String,
    /// Print QR codes and lifecycle lines on stdout.
    pub console: bool,
    /// Serve the control socket in the vault folder.
    pub control_socket: bool,
    /// How long a graceful shutdown may take before bots are aborted.
    pub shutdown_grace: Duration,
    /// Passphrase for automatic backups (before sweep purges and re-auth);
    /// without it the sweep keeps dead bots' credentials and re-auth
    /// through the control socket is refused.
    pub backup_passphrase: Option<Arc<crate::passphrase::Passphrase>>,
    /// A paired bot away and quiet for longer than this raises an `idle` alert.
    pub idle_warning: Duration,
    /// How often the idle check runs.
    pub idle_check_every: Duration,
    /// How long a bot's connection must stay unchanged before its changes
    /// make one `status` event (and at most one connection alert).
    pub status_debounce: Duration,
    /// Outbound files: the size limit, and where a hook's `send_file` may
    /// read (`--media-dir`) or fetch (`--media-url-allow`) from.
    pub media_out: crate::messaging::attach::Policy,
    /// Largest inbound media file `media get` and the media API download
    /// (`--media-max`); larger ones are refused before downloading.
    pub media_max: u64,
    /// Media up to this size are also put base64 in the hook's event
    /// (`--media-inline-max`; off when `None`).
    pub media_inline_max: Option<u64>,
    /// The fleet this host belongs to (`--nats`); `None`: a single host,
    /// nothing changes.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

impl RunConfig {
    /// Defaults for production, with the given network.
    pub fn new(net: Net) -> Self {
        RunConfig {
            bots: Vec::new(),
            stagger: Duration::from_millis(200),
            alert_command: None,
            hooks: crate::messaging::hook::HookDefaults::default(),
            hook_backoff: Duration::from_secs(1),
            hook_backoff_max: Duration::from_secs(300),
            sweep_every: Duration::from_secs(3600),
            retention: Duration::from_secs(30 * 86_400),
            rotate_key_every: None,
            net,
            push_name: "wavault".into(),
            console: true,
            control_socket: true,
            shutdown_grace: Duration::from_secs(8),
            backup_passphrase: None,
            idle_warning: status::IDLE_WARNING,
            idle_check_every: Duration::from_secs(3600),
            status_debounce: Duration::from_secs(10),
            media_out: Default::default(),
            media_max: crate::messaging::media::DEFAULT_MAX,
            media_inline_max: None,
            fleet: None,
        }
    }

    /// Refuses what would panic in a timer task or silently misbehave: a
    /// zero timer period (a tokio interval of 0 panics, stopping sweeps,
    /// rotation and idle alerts while bots keep running), a period too long
    /// to add to the current time, a retention under a second (the sweep
    /// would delete all history), zero hook limits. [`Runner::start`] calls
    /// it, so a configuration built in code meets the same rules as the flags.
    pub fn check(&self) -> Result<()> {
        crate::messaging::media::check_limits(self.media_max, self.media_inline_max)?;
        if let Some(f) = &self.fleet {
            f.check()?;
        }
        let periods = [
            ("the sweep period (--sweep-every)", Some(self.sweep_every)),
            (
                "the key rotation period (--rotate-key-every)",
                self.rotate_key_every,
            ),
            ("the idle check period", Some(self.idle_check_every)),
            (
                "the hook time limit (--hook-timeout)",
                Some(self.hooks.timeout),
            ),
            (
                "the status debounce window (--status-debounce)",
                Some(self.status_debounce),
            ),
        ];
        for (what, d) in periods {
            let Some(d) = d else { continue };
            if d.is_zero() || tokio::time::Instant::now().checked_add(d).is_none() {
                return Err(Error::Usage(format!(
                    "{what} is {d:?}: it must be more than 0 and fit a timer (the flags take up to 36525d)"
                )));
            }
        }
        let ages = [
            ("the retention (--retention)", self.retention),
            (
                "the queue age limit (--queue-max-age)",
                self.hooks.queue_max_age,
            ),
        ];
        for (what, d) in ages {
            if d < Duration::from_secs(1) {
                return Err(Error::Usage(format!(
                    "{what} is {d:?}: it must be at least 1s"
                )));
            }
        }
        if self.hooks.concurrency == 0 || self.hooks.queue_max == 0 {
            return Err(Error::Usage(
                "--hook-concurrency and --queue-max must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What happened, for subscribers (console, tests, dashboards).
#[derive(Debug, Clone)]
pub enum RunnerEvent {
    /// A bot started: which case it is.
    /// `pair_code`: the bot pairs with a pair code (it has a phone), not a QR.
    Started {
        bot: BotId,
        case: StartCase,
        pair_code: bool,
    },
    /// A pairing QR code to show.
    Qr {
        bot: BotId,
        code: String,
        timeout: Duration,
    },
    /// A pairing code to type on the phone.
    PairCode { bot: BotId, code: String },
    /// Pairing completed and the credentials are durable.
    Paired { bot: BotId },
    /// Status changed.
    Status {
        bot: BotId,
        status: Status,
        reason: Option<String>,
    },
    /// A connection attempt (whatsapp-rust has no event for these).
    Attempt {
        bot: BotId,
        attempts: u64,
        error: Option<String>,
    },
    /// A permanent failure.
    Alert(alert::Alert),
    /// The bot's supervisor ended.
    Stopped { bot: BotId },
    /// A bot's messages changed: one queued, delivered to the hook, or sent
    /// (status counts are worth reading again).
    Traffic { bot: BotId },
    /// A timer job finished (`sweep`, `rotate_key`).
    Job {
        name: &'static str,
        ok: bool,
        detail: String,
    },
}

/// The three start cases of the original design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCase {
    /// Valid credentials found: reusing the previous session, no QR.
    Reusing,
    /// No credentials: a QR scan (or pair code) is needed.
    NeedsPairing,
    /// Some credentials missing or unreadable: a QR will be needed.
    Incomplete,
}

pub(crate) struct Shared {
    pub vault: Vault,
    pub cfg: RunConfig,
    pub events: broadcast::Sender<RunnerEvent>,
    pub stop: watch::Sender<bool>,
    /// Bot supervisors, including bots added while running, each with its
    /// own stop switch (re-auth stops one bot).
    pub bots: std::sync::Mutex<std::collections::HashMap<BotId, BotTask>>,
    /// What the web surface shows beyond the vault: live QR codes, start
    /// times, job and alert counters. Kept current by [`Shared::emit`].
    pub live: std::sync::Mutex<Live>,
    /// Each bot's inbound queue (one per bot for the runner's lifetime).
    pub inboxes: std::sync::Mutex<std::collections::HashMap<BotId, Arc<deliver::Inbox>>>,
    /// Each bot's sending state: idempotency keys and pacing.
    pub outboxes: std::sync::Mutex<std::collections::HashMap<BotId, Arc<deliver::Outbox>>>,
    /// Running bots' clients, for sends.
    pub links: std::sync::Mutex<std::collections::HashMap<BotId, Arc<deliver::Link>>>,
    /// The passphrase automatic backups are sealed with (the vault's; a
    /// `rotate passphrase` through the control socket replaces it).
    backup_pass: std::sync::RwLock<Option<Arc<Passphrase>>>,
    /// The fleet's connection (`--nats`).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

pub use crate::ops::service::{JobCounter, Live};

/// A running supervisor and its own stop switch.
pub(crate) struct BotTask {
    pub handle: tokio::task::JoinHandle<()>,
    pub stop: watch::Sender<bool>,
}

/// Stop request for one bot: the runner's, the bot's own, or (in a fleet)
/// the loss of its owner key.
pub(crate) struct StopSignal {
    global: watch::Receiver<bool>,
    own: watch::Receiver<bool>,
    /// `Some(reason)` once the bot's owner key is lost (`runner::fleet`).
    pub(crate) lease: Option<watch::Receiver<Option<String>>>,
}

impl StopSignal {
    /// Completes once either switch is set (or its sender is gone), or the
    /// owner key is lost.
    pub async fn wait(&mut self) {
        let StopSignal { global, own, lease } = self;
        let lost = async {
            match lease {
                Some(l) => {
                    let _ = l.wait_for(|r| r.is_some()).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = global.wait_for(|s| *s) => {}
            _ = own.wait_for(|s| *s) => {}
            _ = lost => {}
        }
    }

    /// Whether the runner or the bot's own switch asked to stop.
    pub fn is_set(&self) -> bool {
        *self.global.borrow() || *self.own.borrow()
    }
}

impl Shared {
    /// Starts a supervisor for `cfg` after `delay` (ignored once stopping).
    pub fn start_bot(self: &Arc<Self>, cfg: crate::vault::BotConfig, delay: Duration) {
        if *self.stop.borrow() {
            return;
        }
        let (own, own_rx) = watch::channel(false);
        let signal = StopSignal {
            global: self.stop.subscribe(),
            own: own_rx,
            lease: None,
        };
        let id = cfg.id.clone();
        let span = crate::logs::bot_span(&id);
        let h = tokio::spawn(tracing::Instrument::instrument(
            supervisor::supervise(self.clone(), cfg, delay, signal),
            span,
        ));
        let mut bots = self.bots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = bots.insert(
            id,
            BotTask {
                handle: h,
                stop: own,
            },
        ) {
            // A finished supervisor of the same bot (stopped for good, or
            // stopped for re-auth): nothing left to wait for.
            let _ = old.stop.send(true);
        }
    }

    /// Stops one bot's supervisor and waits for it (up to the grace).
    /// Returns whether it was running.
    pub async fn stop_bot(&self, id: &BotId) -> bool {
        let task = self
            .bots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let Some(task) = task else { return false };
        let _ = task.stop.send(true);
        let abort = task.handle.abort_handle();
        let grace = self.cfg.shutdown_grace + Duration::from_secs(1);
        if tokio::time::timeout(grace, task.handle).await.is_err() {
            abort.abort();
        }
        true
    }

    /// The bot's inbox, created on first use.
    pub fn inbox(&self, id: &BotId) -> Arc<deliver::Inbox> {
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(deliver::Inbox::new(crate::messaging::queue::Queue::new(
                    self.vault.view(id),
                )))
            })
            .clone()
    }

    /// The bot's sending state, created on first use.
    pub fn outbox(&self, id: &BotId) -> Arc<deliver::Outbox> {
        self.outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_insert_with(|| Arc::new(deliver::Outbox::new(self.vault.view(id))))
            .clone()
    }

    /// The passphrase of automatic backups, if the runner has one.
    pub fn backup_passphrase(&self) -> Option<Arc<Passphrase>> {
        self.backup_pass
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Automatic backups are sealed with `p` from now on.
    pub fn set_backup_passphrase(&self, p: Passphrase) {
        *self.backup_pass.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(p));
    }

    /// Forgets what is kept in memory about a bot whose stored state was
    /// replaced or removed (its queue is read again from the vault).
    pub fn forget(&self, id: &BotId) {
        let inbox = self
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(i) = inbox {
            i.changed();
        }
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The running bot's client link, if it runs.
    pub fn link(&self, id: &BotId) -> Option<Arc<deliver::Link>> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn emit(&self, e: RunnerEvent) {
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            match &e {
                RunnerEvent::Started { bot, .. } => {
                    live.started
                        .insert(bot.to_string(), std::time::Instant::now());
                }
                RunnerEvent::Qr { bot, code, .. } => {
                    live.qr.insert(bot.to_string(), code.clone());
                }
                RunnerEvent::Paired { bot } => {
                    live.qr.remove(bot.as_str());
                }
                RunnerEvent::Stopped { bot } => {
                    live.qr.remove(bot.as_str());
                    live.retry.remove(bot.as_str());
                }
                RunnerEvent::Status { bot, status, .. } if *status != Status::Connecting => {
                    live.qr.remove(bot.as_str());
                    if !matches!(status, Status::Reconnecting) {
                        live.retry.remove(bot.as_str());
                    }
                }
                RunnerEvent::Alert(a) => *live.alerts.entry(a.kind.to_string()).or_default() += 1,
                RunnerEvent::Job { name, ok, .. } => {
                    let j = live.jobs.entry(name).or_default();
                    j.runs += 1;
                    if *ok {
                        j.last_success = Some(crate::vault::now());
                    } else {
                        j.failures += 1;
                    }
                }
                _ => {}
            }
        }
        let _ = self.events.send(e);
    }
}

/// A running set of bots.
pub struct Runner {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    /// Subscribed before any task was spawned; handed to the first
    /// `subscribe` call so it misses nothing (a bot with no stagger can emit
    /// `Started` before `start` returns).
    first: std::sync::Mutex<Option<broadcast::Receiver<RunnerEvent>>>,
}

impl Runner {
    /// Starts every selected bot (staggered), the timers and the control
    /// socket. Must be called inside a tokio runtime.
    pub fn start(vault: Vault, mut cfg: RunConfig) -> Result<Runner> {
        cfg.check()?;
        // In a fleet, a bot with no hook of its own publishes to NATS.
        cfg.hooks.nats = cfg.fleet.is_some();
        let fleet = cfg.fleet.clone().map(crate::fleet::Fleet::start);
        let bots = select_bots(&vault, &cfg.bots)?;
        let (events, first) = broadcast::channel(4096);
        let (stop, _) = watch::channel(false);
        let cfg_pass = cfg.backup_passphrase.clone();
        let shared = Arc::new(Shared {
            vault,
            cfg,
            events,
            stop,
            bots: Default::default(),
            live: Default::default(),
            inboxes: Default::default(),
            outboxes: Default::default(),
            links: Default::default(),
            backup_pass: std::sync::RwLock::new(cfg_pass),
            fleet,
        });
        let mut tasks = JoinSet::new();
        if shared.cfg.console {
            tasks.spawn(console(shared.events.subscribe(), shared.stop.subscribe()));
        }
        if shared.cfg.control_socket {
            let listener = control::bind(shared.vault.dir())?;
            tasks.spawn(control::serve(shared.clone(), listener));
        }
        for (i, cfg) in bots.into_iter().enumerate() {
            shared.start_bot(cfg, shared.cfg.stagger.saturating_mul(i as u32));
        }
        tasks.spawn(timers(shared.clone()));
        Ok(Runner {
            shared,
            tasks,
            first: std::sync::Mutex::new(Some(first)),
        })
    }

    /// This host's id in the fleet (`--host-id`), if it is in one.
    pub fn host_id(&self) -> Option<&str> {
        self.shared.cfg.fleet.as_ref().map(|f| f.host_id.as_str())
    }

    /// Subscribes to runner events. The first call receives every event
    /// since `start` (up to the channel's 4096-event buffer); later calls
    /// receive events from the moment they subscribe.
    pub fn subscribe(&self) -> broadcast::Receiver<RunnerEvent> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        first.unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// Sends `text` to `to` (a phone number or JID) from a running,
    /// connected bot; returns the message id.
    pub async fn send(&self, bot: &BotId, to: &str, text: &str) -> Result<String> {
        self.send_message(bot, &crate::messaging::outbox::Outgoing::text(to, text))
            .await
    }

    /// Sends `msg` (idempotency key, quote, typing) from a running bot.
    pub async fn send_message(
        &self,
        bot: &BotId,
        msg: &crate::messaging::outbox::Outgoing,
    ) -> Result<String> {
        deliver::send(&self.shared, bot, msg).await
    }

    /// Downloads the media of message `message_id` (received by `bot`):
    /// verified bytes, or why not.
    pub async fn media(
        &self,
        bot: &BotId,
        message_id: &str,
    ) -> std::result::Result<crate::messaging::media::MediaFile, crate::messaging::media::MediaError>
    {
        deliver::media(&self.shared, bot, message_id).await
    }

    /// Messages waiting in the bot's inbound queue.
    pub fn queued(&self, bot: &BotId) -> Result<Vec<crate::messaging::queue::Queued>> {
        self.shared.inbox(bot).queue.pending()
    }

    /// This runner as a service: what the web surface is built on.
    pub fn service(&self) -> Arc<dyn crate::ops::Service> {
        Arc::new(control::Served(self.shared.clone()))
    }

    /// The vault the runner holds.
    pub fn vault(&self) -> &Vault {
        &self.shared.vault
    }

    /// Current dashboard rows.
    pub fn status(&self) -> Result<Vec<status::StatusRow>> {
        let mut rows = status::collect(&self.shared.vault)?;
        let retry = self
            .shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retry
            .clone();
        status::with_retry(&mut rows, &retry);
        Ok(rows)
    }

    /// Waits until `pred` holds for the status rows, re-checking on every
    /// runner event, up to `deadline`.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        pred: impl Fn(&[status::StatusRow]) -> bool,
    ) -> Result<Vec<status::StatusRow>> {
        let mut rx = self.shared.events.subscribe();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let rows = self.status()?;
            if pred(&rows) {
                return Ok(rows);
            }
            match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) => {
                    return Err(Error::Other(format!(
                        "condition not met within {deadline:?}; last rows: {rows:?}"
                    )))
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(Error::Other("runner stopped".into()))
                }
                Ok(_) => {}
            }
        }
    }

    /// Stops every bot (marked disconnected, reason shutdown), flushes the
    /// vault and returns. Bots that do not stop within the grace are aborted.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shared.stop.send(true);
        let grace = self.shared.cfg.shutdown_grace + Duration::from_secs(1);
        let bots = std::mem::take(&mut *self.shared.bots.lock().unwrap_or_else(|e| e.into_inner()));
        let aborts: Vec<_> = bots.values().map(|t| t.handle.abort_handle()).collect();
        let drained = tokio::time::timeout(grace, async {
            for (_, t) in bots {
                let _ = t.handle.await;
            }
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        let forced = drained.is_err();
        if forced {
            tracing::warn!("some bots did not stop within {grace:?}; aborting them");
            aborts.iter().for_each(|a| a.abort());
            self.tasks.abort_all();
        }
        control::unbind(self.shared.vault.dir());
        let v = self.shared.vault.clone();
        tokio::task::spawn_blocking(move || {
            if forced {
                mark_aborted_disconnected(&v)?;
            }
            v.flush()
        })
        .await
        .map_err(|e| Error::Other(format!("flush task: {e}")))?
    }
}

/// After a forced stop: every bot still recorded as up (connecting,
/// connected, reconnecting) is marked disconnected, so the metadata never
/// claims a connection that is gone.
fn mark_aborted_disconnected(v: &Vault) -> Result<()> {
    let now = crate::vault::now();
    for cfg in v.list_bots()? {
        let s = Sessions::new(v.view(&cfg.id));
        let status = s.load(now)?.status;
        if matches!(
            status,
            Status::Connecting | Status::Connected | Status::Reconnecting
        ) {
            s.set_status(
                now,
                Status::Disconnected,
                Some("shutdown (did not disconnect within the grace period)"),
            )?;
        }
    }
    Ok(())
}

/// Starts a one-bot runner for `bot` when no `wavault run` holds the vault
/// (`send`, `media get` and `groups list` alone; its hook and queue work
/// as in `run` meanwhile) and waits up to `deadline` for the connection.
/// Refused at once for a bot that is not paired (it would need a QR scan
/// first). End it with [`end_alone`].
async fn start_alone(
    vault: Vault,
    mut cfg: RunConfig,
    bot: &BotId,
    deadline: Duration,
) -> Result<Runner> {
    if crate::store::credentials_state(&vault.view(bot)) != Some(crate::store::Credentials::Paired)
    {
        return Err(Error::Unavailable(format!(
            "bot {bot} is not paired: pair it first (`wavault run` shows its QR code)"
        )));
    }
    cfg.bots = vec![bot.clone()];
    cfg.console = false;
    cfg.control_socket = false;
    cfg.stagger = Duration::ZERO;
    cfg.rotate_key_every = None;
    cfg.sweep_every = Duration::from_secs(u32::MAX as u64);
    cfg.idle_check_every = Duration::from_secs(u32::MAX as u64);
    let runner = Runner::start(vault, cfg)?;
    let id = bot.as_str().to_owned();
    let waited = runner
        .wait_until(deadline, |rows| {
            rows.iter()
                .any(|r| r.bot == id && (r.status == Status::Connected || r.status.is_permanent()))
        })
        .await;
    let refused = match waited {
        Err(_) => Some(format!(
            "bot {bot} did not connect within {deadline:?}; see `wavault status` for its last error"
        )),
        Ok(rows) => rows
            .iter()
            .find(|r| r.bot == id && r.status != Status::Connected)
            .map(|r| {
                format!(
                    "bot {bot} cannot connect ({}); see `wavault status`",
                    r.status.as_str()
                )
            }),
    };
    match refused {
        None => Ok(runner),
        Some(why) => {
            // The connection's error is the one worth reporting.
            let _ = runner.shutdown().await;
            Err(Error::Unavailable(why))
        }
    }
}

/// Ends a runner from [`start_alone`]: `work`'s error first, then the
/// shutdown's.
async fn end_alone<T>(runner: Runner, work: Result<T>) -> Result<T> {
    let stopped = runner.shutdown().await;
    let value = work?;
    stopped?;
    Ok(value)
}

/// `wavault send` when no `wavault run` holds the vault: connects `bot`
/// alone ([`start_alone`]), sends, disconnects.
pub async fn send_once(
    vault: Vault,
    cfg: RunConfig,
    bot: &BotId,
    msg: &crate::messaging::outbox::Outgoing,
    deadline: Duration,
) -> Result<String> {
    msg.check()?;
    vault.bot_config(bot)?;
    let runner = start_alone(vault, cfg, bot, deadline).await?;
    let sent = runner.send_message(bot, msg).await;
    end_alone(runner, sent).await
}

/// `wavault media get` when no `wavault run` holds the vault: connects
/// `bot` alone ([`start_alone`]), downloads and verifies the media of
/// message `message_id`, disconnects.
pub async fn media_once(
    vault: Vault,
    cfg: RunConfig,
    bot: &BotId,
    message_id: &str,
    deadline: Duration,
) -> Result<crate::messaging::media::MediaFile> {
    vault.bot_config(bot)?;
    if crate::messaging::media::load(&vault.view(bot), message_id)?.is_none() {
        return Err(Error::NotFound(format!(
            "media of message {message_id} of bot {bot} (unknown message, no media, \
             never queued for the hook, or past its retention)"
        )));
    }
    let runner = start_alone(vault, cfg, bot, deadline).await?;
    let got = runner.media(bot, message_id).await.map_err(Error::from);
    end_alone(runner, got).await
}

/// `wavault groups list` when no `wavault run` holds the vault: connects
/// `bot` alone ([`start_alone`]), lists its groups, disconnects.
pub async fn groups_once(
    vault: Vault,
    cfg: RunConfig,
    bot: &BotId,
    deadline: Duration,
) -> Result<Vec<crate::ops::proto::GroupRow>> {
    vault.bot_config(bot)?;
    let runner = start_alone(vault, cfg, bot, deadline).await?;
    let listed = groups::of_running(&runner.shared, bot).await;
    end_alone(runner, listed).await
}

/// The bots to start: the named ones (which must exist), else every enabled one.
fn select_bots(vault: &Vault, named: &[BotId]) -> Result<Vec<crate::vault::BotConfig>> {
    if named.is_empty() {
        return Ok(vault
            .list_bots()?
            .into_iter()
            .filter(|c| c.enabled)
            .collect());
    }
    named.iter().map(|id| vault.bot_config(id)).collect()
}

/// Prints lifecycle lines and QR codes on stdout, as the original design's console did.
async fn console(mut rx: broadcast::Receiver<RunnerEvent>, mut stop: watch::Receiver<bool>) {
    loop {
        let e = tokio::select! {
            e = rx.recv() => e,
            _ = stop.changed() => return,
        };
        let e = match e {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        match e {
            RunnerEvent::Started {
                bot,
                case,
                pair_code,
            } => println!(
                "[{bot}] {}",
                match (case, pair_code) {
                    (StartCase::Reusing, _) =>
                        "valid credentials found: reusing the previous session (no QR needed)",
                    (StartCase::NeedsPairing, false) =>
                        "no stored credentials: scan the QR code below to pair",
                    (StartCase::NeedsPairing, true) =>
                        "no stored credentials: it pairs with a pair code (shown below) for its phone number",
                    (StartCase::Incomplete, false) =>
                        "credentials incomplete: the next connection will need a QR scan",
                    (StartCase::Incomplete, true) =>
                        "credentials incomplete: the next connection will need a pair code",
                }
            ),
            RunnerEvent::Qr { bot, code, timeout } => {
                println!(
                    "[{bot}] scan this QR code in WhatsApp > Linked devices (valid {}s):",
                    timeout.as_secs()
                );
                if let Some(q) = qr::render(&code) {
                    println!("{q}");
                }
            }
            RunnerEvent::PairCode { bot, code } => {
                println!("[{bot}] enter this code in WhatsApp > Linked devices > Link with phone number: {code}")
            }
            RunnerEvent::Paired { bot } => println!("[{bot}] paired; credentials saved"),
            RunnerEvent::Status {
                bot,
                status,
                reason,
            } => println!(
                "[{bot}] {}{}",
                match status {
                    Status::Connected => "WhatsApp connected!",
                    other => other.as_str(),
                },
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            RunnerEvent::Alert(a) => println!("[{}] ALERT {}: {}", a.bot, a.kind, a.reason),
            RunnerEvent::Attempt {
                bot,
                attempts,
                error: Some(e),
            } => {
                println!("[{bot}] connection attempt {attempts} failed: {e}")
            }
            RunnerEvent::Stopped { .. } | RunnerEvent::Attempt { .. } => {}
            RunnerEvent::Job { name, ok, detail } => {
                println!("[{name}] {} {detail}", if ok { "done:" } else { "FAILED:" })
            }
            RunnerEvent::Traffic { .. } => {}
        }
    }
}

/// Retention sweeps and scheduled key rotation.
async fn timers(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut sweep = tokio::time::interval(shared.cfg.sweep_every);
    sweep.tick().await; // the first tick is immediate; sweep after one period
    let rotate_every = shared
        .cfg
        .rotate_key_every
        .unwrap_or(Duration::from_secs(u32::MAX as u64));
    let mut rotate = tokio::time::interval(rotate_every);
    rotate.tick().await;
    // The idle check runs at once, then every period.
    let mut idle = tokio::time::interval(shared.cfg.idle_check_every);
    let mut alerted = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = idle.tick() => check_idle(&shared, &mut alerted).await,
            _ = sweep.tick() => run_job(&shared, "sweep", sweep_job).await,
            _ = rotate.tick(), if shared.cfg.rotate_key_every.is_some() => {
                run_job(&shared, "rotate_key", |v, _, _| {
                    v.rotate_key(&mut |_, _| {}).map(|r| format!("term {}, {} records re-sealed", r.new_term, r.resealed))
                })
                .await
            }
        }
    }
}

/// Alerts (kind `idle`) once for each bot that became idle (see
/// `status::StatusRow::idle`); a bot that recovers can alert again later.
async fn check_idle(shared: &Arc<Shared>, alerted: &mut std::collections::HashSet<String>) {
    let v = shared.vault.clone();
    let threshold = shared.cfg.idle_warning;
    let rows = tokio::task::spawn_blocking(move || {
        let now = crate::vault::now();
        status::collect(&v).map(|rows| {
            rows.into_iter()
                .map(|r| {
                    let idle =
                        status::is_idle(r.status, r.last_activity, r.credentials, now, threshold);
                    (r, idle)
                })
                .collect::<Vec<_>>()
        })
    })
    .await;
    let rows = match rows {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return tracing::error!("idle check failed: {e}"),
        Err(e) => return tracing::error!("idle check task: {e}"),
    };
    for (r, idle) in rows {
        if !idle {
            alerted.remove(&r.bot);
        } else if alerted.insert(r.bot.clone()) {
            let days = r
                .last_activity
                .map_or(0, |t| (crate::vault::now() - t) / 86_400);
            if let Ok(id) = BotId::parse(&r.bot) {
                alert::raise(
                    shared,
                    &id,
                    alert::AlertKind::Idle,
                    format!(
                        "no activity for {days} days while {}: WhatsApp unlinks devices that stay away about 30 days; start it (`wavault run`) before then",
                        r.status
                    ),
                )
                .await;
            }
        }
    }
}

async fn run_job(
    shared: &Arc<Shared>,
    name: &'static str,
    f: fn(&Vault, Duration, Option<&Passphrase>) -> Result<String>,
) {
    let v = shared.vault.clone();
    let retention = shared.cfg.retention;
    let pass = shared.backup_passphrase();
    let r = tokio::task::spawn_blocking(move || f(&v, retention, pass.as_deref()))
        .await
        .unwrap_or_else(|e| Err(Error::Other(format!("job panicked: {e}"))));
    match &r {
        Ok(d) => tracing::info!("{name}: {d}"),
        Err(e) => tracing::error!("{name} failed: {e}"),
    }
    shared.emit(RunnerEvent::Job {
        name,
        ok: r.is_ok(),
        detail: r.unwrap_or_else(|e| e.to_string()),
    });
}

/// The timer's sweep: the same as `wavault sweep` (see `crate::sweep`).
fn sweep_job(v: &Vault, retention: Duration, pass: Option<&Passphrase>) -> Result<String> {
    crate::sweep::sweep_now(v, retention, false, pass.map(|p| p.expose())).map(|r| r.summary())
}
