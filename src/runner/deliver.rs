//! Inbound messages from WhatsApp to the operator's hook and back.
//!
//! Why it exists: a message must never be lost between WhatsApp and the
//! operator's logic, and a slow or broken hook must never hold up a bot's
//! connection or another bot. So the work is split:
//!
//! 1. [`QueueHook`] is whatsapp-rust's inbound durability hook: before a
//!    message is acknowledged to WhatsApp it is sealed into the bot's queue
//!    (`messaging::queue`) and made durable. A full queue refuses the batch:
//!    the message stays unacknowledged (whatsapp-rust keeps its own durable
//!    copy in the backend's pending-inbound rows) and comes again at the next
//!    connection; an alert says so.
//! 2. [`worker`], one task per running bot, hands queued messages to the
//!    hook: oldest first, one at a time per chat (order within a chat is
//!    kept), up to the bot's concurrency limit across chats, each call under
//!    the bot's time limit. A failure is retried with exponential backoff;
//!    an accepted message's actions (reply, react, read) are stored with it,
//!    carried out once the bot is connected, and only then is the entry
//!    removed. A crash at any point leaves the entry for the next run.
//! 3. [`send`]: proactive messages (`wavault send`, `POST /api/bots/{id}/messages`).

use super::alert::raise;
use super::alert::AlertKind;
use super::meta::Meta;
use super::Shared;
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::messaging::events::{self, EventKind};
use crate::messaging::hook::{self, Action, HookSettings, Target};
use crate::messaging::outbox::{Begin, Keys, Outgoing};
use crate::messaging::pacing::Pacer;
use crate::messaging::queue::{NewMessage, Queue, Queued};
use crate::messaging::DeliveryError;
use crate::messaging::{self, summary};
use crate::vault::now;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use wacore::proto_helpers::MessageExt as _;
use wacore::types::events::InboundMessage;
use whatsapp_rust::Client;

/// Consecutive failures of one chat's head message before a `hook_failing`
/// alert (one per outage: again only after a delivery succeeded).
pub const FAILING_ALERT_AFTER: u32 = 5;
/// How often queued messages are checked against the age limit.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// A bot's queue and the bell that wakes its worker. One per bot for the
/// runner's lifetime (restarts of the bot reuse it).
pub(crate) struct Inbox {
    pub queue: Queue,
    pub wake: Notify,
    /// A `queue_full` alert was raised and the queue has not drained since.
    full_alerted: AtomicBool,
    /// Entries queued since the worker last looked (it keeps the queue in
    /// memory and reads the vault only at start and after [`Inbox::changed`]).
    fresh: std::sync::Mutex<Vec<Queued>>,
    /// Someone else changed the stored queue (`wavault queue retry|drop`).
    reload: AtomicBool,
    /// Receipt states of the bot's recent messages already queued as events.
    receipts: std::sync::Mutex<events::ReceiptTracker>,
    /// Recent messages that failed to decrypt (a later arrival recovered them).
    failed: std::sync::Mutex<events::FailedIds>,
    /// Subjects of the bot's groups (`group_subject` in the hook's event).
    pub subjects: super::groups::Subjects,
}

impl Inbox {
    pub fn new(queue: Queue) -> Self {
        Inbox {
            queue,
            wake: Notify::new(),
            full_alerted: AtomicBool::new(false),
            fresh: std::sync::Mutex::new(Vec::new()),
            reload: AtomicBool::new(true),
            receipts: Default::default(),
            failed: Default::default(),
            subjects: Default::default(),
        }
    }

    pub fn receipt_tracker(&self) -> std::sync::MutexGuard<'_, events::ReceiptTracker> {
        self.receipts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn failed_ids(&self) -> std::sync::MutexGuard<'_, events::FailedIds> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues events (not counted as inbound messages) and wakes the worker.
    pub(crate) async fn queue_events(
        &self,
        shared: &Shared,
        entries: &[NewMessage],
        max: usize,
    ) -> std::result::Result<(), String> {
        match self.queue.enqueue_events(entries, max, now()).await {
            Ok(Ok(created)) => {
                self.handed_over(created);
                shared.emit(super::RunnerEvent::Traffic {
                    bot: self.queue.bot().clone(),
                });
                Ok(())
            }
            Ok(Err(refused)) => Err(refused.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Hands newly queued entries to the worker and wakes it.
    fn handed_over(&self, created: Vec<Queued>) {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(created);
        self.wake.notify_one();
    }

    /// The stored queue was changed outside the worker: it reads it again.
    pub fn changed(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// What a running bot offers to senders: its client and whether it is
/// connected now.
pub(crate) struct Link {
    pub inbox: Arc<Inbox>,
    pub meta: Arc<Meta>,
    pub client: Arc<Client>,
    pub connected: watch::Receiver<bool>,
}

/// whatsapp-rust's inbound durability hook over the bot's queue.
pub(crate) struct QueueHook {
    pub shared: Arc<Shared>,
    pub bot: BotId,
    pub inbox: Arc<Inbox>,
}

pub(crate) fn settings(shared: &Shared, bot: &BotId) -> Result<HookSettings> {
    let cfg = shared.vault.bot_config(bot)?;
    Ok(HookSettings::resolve(&cfg, &shared.cfg.hooks))
}

#[async_trait::async_trait]
impl whatsapp_rust::types::durability_hook::InboundDurabilityHook for QueueHook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> whatsapp_rust::anyhow::Result<()> {
        let s = settings(&self.shared, &self.bot)?;
        if !s.delivers() || !s.events.has(EventKind::Message) {
            // No hook, or one that takes no messages: nothing to hold the
            // message for; count it and let the library acknowledge it.
            self.inbox.queue.count(now(), batch.len() as u64, 0, 0)?;
            return Ok(());
        }
        let mut msgs: Vec<NewMessage> = Vec::with_capacity(batch.len());
        let mut media = Vec::new();
        for m in batch {
            // Media download parameters are sealed before the message is
            // queued (durable with it: `enqueue` waits for both).
            let base = m.message.get_base_message();
            if let Some((_, Some(sealed))) =
                messaging::media::of_message(self.bot.as_str(), &m.info.id, base, now())
            {
                media.push(messaging::media::put_op(&m.info.id, &sealed));
            }
            let ids = messaging::Identities::of(m, Some(&client)).await;
            let (chat, id) = (m.info.source.chat.to_string(), m.info.id.to_string());
            msgs.push(NewMessage {
                chat: chat.clone(),
                sender: m.info.source.sender.to_string(),
                id: id.clone(),
                summary: {
                    let subject = self.inbox.subjects.of(&client, &m.info.source.chat).await;
                    messaging::with_group_subject(summary(&self.bot, m, &ids), subject)
                }
                .to_string(),
            });
            if s.events.has(EventKind::DecryptFailure) && self.inbox.failed_ids().take(&id) {
                // whatsapp-rust's retry brought a message that had failed.
                let json = events::decrypt_failure_json(
                    self.bot.as_str(),
                    &id,
                    &chat,
                    &m.info.source.sender.to_string(),
                    now(),
                    true,
                );
                msgs.push(NewMessage {
                    chat,
                    sender: format!("{}decrypt_failure:recovered", events::EVENT_SENDER),
                    id,
                    summary: json.to_string(),
                });
            }
        }
        if !media.is_empty() {
            self.shared.vault.view(&self.bot).apply(&media)?;
        }
        match self.inbox.queue.enqueue(&msgs, s.queue_max, now()).await? {
            Ok(created) => {
                self.inbox.handed_over(created);
                self.shared.emit(super::RunnerEvent::Traffic {
                    bot: self.bot.clone(),
                });
                Ok(())
            }
            Err(refused) => {
                if !self.inbox.full_alerted.swap(true, Ordering::SeqCst) {
                    let reason = format!(
                        "{refused}: new messages stay unacknowledged on WhatsApp and arrive again \
                         at the next connection; fix the hook or raise the limit (`wavault bot set --queue-max`)"
                    );
                    raise(&self.shared, &self.bot, AlertKind::QueueFull, reason).await;
                }
                Err(whatsapp_rust::anyhow::anyhow!("{refused}"))
            }
        }
    }
}

/// Downloads the media of message `message_id` of `bot` through its
/// connected client (`GET /api/bots/{id}/media/{message_id}`, `wavault
/// media get`): unknown bot or message, or one past its retention, is
/// `NotFound`; larger than `--media-max` is refused before downloading.
pub(crate) async fn media(
    shared: &Shared,
    bot: &BotId,
    message_id: &str,
) -> std::result::Result<messaging::media::MediaFile, messaging::media::MediaError> {
    use messaging::media::{self as m, MediaError};
    let vault_err = |e: Error| match e {
        Error::NotFound(_) => MediaError::NotFound(format!("bot {bot}")),
        e => MediaError::Vault(e.to_string()),
    };
    shared.vault.bot_config(bot).map_err(vault_err)?;
    let sealed = m::load(&shared.vault.view(bot), message_id)
        .map_err(vault_err)?
        .ok_or_else(|| {
            MediaError::NotFound(format!(
                "media of message {message_id} of bot {bot} (unknown message, no media, never queued for the hook, or past its retention)"
            ))
        })?;
    if sealed.file_length > shared.cfg.media_max {
        return Err(MediaError::TooLarge {
            id: message_id.to_string(),
            size: sealed.file_length,
            max: shared.cfg.media_max,
        });
    }
    let Some(link) = shared.link(bot) else {
        return Err(MediaError::Unavailable(format!(
            "bot {bot} is not running in this wavault (disabled, stopped or failed; see `wavault status`)"
        )));
    };
    let mut connected = link.connected.clone();
    let up = tokio::time::timeout(Duration::from_secs(30), connected.wait_for(|c| *c))
        .await
        .is_ok_and(|r| r.is_ok());
    if !up {
        return Err(MediaError::Unavailable(format!(
            "bot {bot} is not connected right now; try again once `wavault status` shows it connected"
        )));
    }
    let out = m::download(&link.client, message_id, &sealed, shared.cfg.media_max).await;
    if let Err(e) = &out {
        // Without the message id or the error text (which may name them).
        let why = match e {
            MediaError::HashMismatch { .. } => "hash mismatch",
            MediaError::TooLarge { .. } => "larger than --media-max",
            _ => "download failed",
        };
        tracing::warn!(bot = %bot, "media download refused: {why}");
    }
    out
}

/// With `--media-inline-max`: a message event whose media is small enough
/// gets the file base64 in `media.base64`, once (the entry is updated, so
/// retries send the same body). A download that fails leaves the event as
/// it was, with `media.inline_error` saying why.
async fn inline_media(shared: &Shared, bot: &BotId, queue: &Queue, q: &mut Queued) -> Result<()> {
    let Some(limit) = shared.cfg.media_inline_max else {
        return Ok(());
    };
    if events::is_event_sender(&q.sender) {
        return Ok(());
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&q.summary) else {
        return Ok(());
    };
    let Some(media) = v.get("media").filter(|m| m.is_object()) else {
        return Ok(());
    };
    let small = media["size"].as_u64().is_some_and(|s| s <= limit);
    if !small || media["url"].is_null() || media.get("base64").is_some() {
        return Ok(());
    }
    if media.get("inline_error").is_some() {
        return Ok(());
    }
    let (key, value) = match media_file_limited(shared, bot, &q.id, limit).await {
        Ok(bytes) => {
            use base64::Engine as _;
            (
                "base64",
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            )
        }
        Err(e) => ("inline_error", serde_json::Value::String(e.to_string())),
    };
    v["media"][key] = value;
    q.summary = v.to_string();
    queue.update(q).await
}

/// [`media`] with `limit` as the size bound.
async fn media_file_limited(
    shared: &Shared,
    bot: &BotId,
    message_id: &str,
    limit: u64,
) -> std::result::Result<Vec<u8>, messaging::media::MediaError> {
    let f = media(shared, bot, message_id).await?;
    if f.bytes.len() as u64 > limit {
        return Err(messaging::media::MediaError::TooLarge {
            id: message_id.to_string(),
            size: f.bytes.len() as u64,
            max: limit,
        });
    }
    Ok(f.bytes)
}

/// Backoff before retry number `n` (1-based): base · 2^(n-1), capped.
pub fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    base.saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(max)
}

/// What a delivery task reports: its chat, the entry's sequence number,
/// the outcome, and the entry as stored now (`None`: removed).
type Done = (
    String,
    u64,
    std::result::Result<(), DeliveryError>,
    Option<Queued>,
);

/// Delivers the bot's queue to its hook until the task is aborted: reads
/// what changed, starts a delivery for each chat whose head may go now,
/// then waits for a wake-up, a finished delivery or the next timer.
pub(crate) async fn worker(shared: Arc<Shared>, bot: BotId, link: Arc<Link>) {
    let mut w = Worker::new(shared, bot, link);
    loop {
        let s = match settings(&w.shared, &w.bot) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(bot = %w.bot, "hook settings unreadable: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        w.take_changes();
        w.expire_due(&s).await;
        let next_retry = w.dispatch(&s);
        let sleep_until = next_retry.unwrap_or(w.next_expire).min(w.next_expire);
        tokio::select! {
            _ = w.inbox.wake.notified() => {}
            done = w.tasks.join_next(), if !w.tasks.is_empty() => {
                if let Some(Ok(done)) = done {
                    w.finished(done).await;
                }
            }
            _ = tokio::time::sleep_until(sleep_until) => {}
        }
    }
}

/// One bot's delivery worker: the queue in memory and what is under way.
struct Worker {
    shared: Arc<Shared>,
    bot: BotId,
    link: Arc<Link>,
    inbox: Arc<Inbox>,
    /// The queue in memory, by sequence number.
    queue: std::collections::BTreeMap<u64, Queued>,
    /// Handed-over entries below this were already in the last read of the
    /// vault (sequence numbers grow with every write): taking them again
    /// could bring back one delivered since.
    floor: u64,
    /// Chats with a delivery under way (one at a time per chat: order).
    in_flight: HashSet<String>,
    /// chat → (consecutive failures, not before)
    failing: HashMap<String, (u32, Instant)>,
    tasks: tokio::task::JoinSet<Done>,
    next_expire: Instant,
    /// One `hook_failing` alert per outage, not one per chat.
    failing_alerted: bool,
}

impl Worker {
    fn new(shared: Arc<Shared>, bot: BotId, link: Arc<Link>) -> Worker {
        let inbox = link.inbox.clone();
        inbox.reload.store(true, Ordering::SeqCst);
        Worker {
            shared,
            bot,
            link,
            inbox,
            queue: Default::default(),
            floor: 0,
            in_flight: HashSet::new(),
            failing: HashMap::new(),
            tasks: tokio::task::JoinSet::new(),
            next_expire: Instant::now(),
            failing_alerted: false,
        }
    }

    /// Reads the stored queue again when someone else changed it, and
    /// takes the entries queued since the last look.
    fn take_changes(&mut self) {
        let inbox = &self.inbox;
        if inbox.reload.swap(false, Ordering::SeqCst) {
            // Entries queued from here on are handed over in `fresh`; the
            // read below may see some of them too (`floor` drops those).
            inbox
                .fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            match inbox.queue.pending() {
                Ok(p) => {
                    self.queue = p.into_iter().map(|q| (q.seq, q)).collect();
                    if let Some(max) = self.queue.keys().next_back() {
                        self.floor = self.floor.max(max + 1);
                    }
                }
                Err(e) => {
                    tracing::error!(bot = %self.bot, "inbound queue unreadable: {e}");
                    inbox.reload.store(true, Ordering::SeqCst);
                }
            }
        }
        for q in std::mem::take(&mut *inbox.fresh.lock().unwrap_or_else(|e| e.into_inner())) {
            if q.seq >= self.floor {
                self.queue.insert(q.seq, q);
            }
        }
    }

    /// Holds back what outlived the age limit (every [`EXPIRE_EVERY`]), and
    /// lets the next full queue alert again once there is room.
    async fn expire_due(&mut self, s: &HookSettings) {
        if Instant::now() >= self.next_expire {
            self.next_expire = Instant::now() + EXPIRE_EVERY;
            for q in expire(&self.shared, &self.bot, &self.inbox, s.queue_max_age).await {
                self.queue.insert(q.seq, q);
            }
        }
        if self.queue.len() < s.queue_max {
            self.inbox.full_alerted.store(false, Ordering::SeqCst);
        }
    }

    /// Starts a delivery for each chat whose oldest message may go now (not
    /// held, none under way, not backing off), up to the concurrency.
    /// Returns when the earliest backing-off chat may go again.
    fn dispatch(&mut self, s: &HookSettings) -> Option<Instant> {
        if !s.delivers() {
            return None;
        }
        let target = &s.target;
        let nats = s.nats;
        let now = Instant::now();
        let mut heads = HashSet::new();
        let mut next_retry: Option<Instant> = None;
        for q in self.queue.values().filter(|q| !q.held) {
            if !heads.insert(q.chat.as_str()) || self.in_flight.contains(&q.chat) {
                continue;
            }
            if let Some((_, at)) = self.failing.get(&q.chat) {
                if *at > now {
                    next_retry = Some(next_retry.map_or(*at, |n: Instant| n.min(*at)));
                    continue;
                }
            }
            if self.tasks.len() >= s.concurrency {
                break;
            }
            self.in_flight.insert(q.chat.clone());
            let (link, target, bot, q) = (
                self.link.clone(),
                target.clone(),
                self.bot.clone(),
                q.clone(),
            );
            let timeout = s.timeout;
            let pace = (self.shared.outbox(&self.bot), s.send_rate);
            let shared = self.shared.clone();
            self.tasks
                .spawn(tracing::Instrument::in_current_span(async move {
                    let (chat, seq) = (q.chat.clone(), q.seq);
                    let call = Call {
                        bot: &bot,
                        link: &link,
                        target: target.as_ref(),
                        nats,
                        timeout,
                        pace: &pace,
                        shared: &shared,
                    };
                    let (outcome, after) = deliver_one(&call, q).await;
                    (chat, seq, outcome, after)
                }));
        }
        next_retry
    }

    /// A delivery ended: keep the entry as stored now (or drop it), and
    /// back its chat off after a failure (alerting once per outage).
    async fn finished(&mut self, (chat, seq, outcome, after): Done) {
        self.in_flight.remove(&chat);
        self.shared.emit(super::RunnerEvent::Traffic {
            bot: self.bot.clone(),
        });
        match after {
            Some(q) => {
                self.queue.insert(seq, q);
            }
            None => {
                self.queue.remove(&seq);
            }
        }
        let e = match outcome {
            Ok(()) => {
                self.failing.remove(&chat);
                self.failing_alerted = false;
                return;
            }
            Err(e) => e,
        };
        let cfg = &self.shared.cfg;
        let n = self.failing.get(&chat).map_or(0, |f| f.0) + 1;
        let wait = backoff(cfg.hook_backoff, cfg.hook_backoff_max, n);
        self.failing.insert(chat, (n, Instant::now() + wait));
        tracing::warn!(bot = %self.bot, failures = n, "hook delivery failed, retrying in {wait:?}: {e}");
        if n >= FAILING_ALERT_AFTER && !self.failing_alerted {
            self.failing_alerted = true;
            let reason = format!(
                "the hook failed {n} times in a row for one chat ({e}); \
                 messages stay queued and are retried"
            );
            raise(&self.shared, &self.bot, AlertKind::HookFailing, reason).await;
        }
    }
}

/// Holds back entries past the age limit (with an alert); returns them.
async fn expire(
    shared: &Arc<Shared>,
    bot: &BotId,
    inbox: &Inbox,
    max_age: Duration,
) -> Vec<Queued> {
    match inbox.queue.expire(max_age, now()).await {
        Ok(held) if !held.is_empty() => {
            let reason = format!(
                "{} queued message(s) outlived the queue's age limit ({}s) undelivered and are held \
                 back; fix the hook, then `wavault queue retry {bot}` (or `wavault queue drop {bot}`)",
                held.len(),
                max_age.as_secs()
            );
            raise(shared, bot, AlertKind::QueueExpired, reason).await;
            held
        }
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::error!(bot = %bot, "inbound queue expiry failed: {e}");
            Vec::new()
        }
    }
}

/// The bot's sending state and its rate (`--send-rate`; `None`: unpaced).
type Pace = (Arc<Outbox>, Option<u32>);

/// What one delivery works with.
struct Call<'a> {
    bot: &'a BotId,
    link: &'a Link,
    /// The hook, if the bot has one.
    target: Option<&'a Target>,
    /// Publish to the fleet's events stream first.
    nats: bool,
    timeout: Duration,
    pace: &'a Pace,
    shared: &'a Shared,
}

/// Hands one message to the hook (unless it accepted it before) and carries
/// out its actions; removes the entry once all is done.
/// Returns the outcome and the entry as stored now (`None` once removed).
async fn deliver_one(
    call: &Call<'_>,
    mut q: Queued,
) -> (std::result::Result<(), DeliveryError>, Option<Queued>) {
    match deliver_inner(call, &mut q).await {
        Ok(()) => (Ok(()), None),
        Err(e) => (Err(e), Some(q)),
    }
}

/// `Ok` once the entry is done and removed.
async fn deliver_inner(call: &Call<'_>, q: &mut Queued) -> std::result::Result<(), DeliveryError> {
    let Call {
        bot,
        link,
        target,
        nats,
        timeout,
        pace,
        shared,
    } = *call;
    let queue = &link.inbox.queue;
    if q.accepted.is_none() {
        inline_media(shared, bot, queue, q).await?;
        if nats {
            // The stream first (with the event id as `Nats-Msg-Id`: a
            // republished event within the duplicate window is dropped).
            let published = publish_event(shared, bot, q).await;
            count_call(shared, &q.summary, published.is_ok());
            if let Err(e) = published {
                return fail(queue, q, e, true).await;
            }
        }
        let Some(target) = target else {
            return Ok(queue.remove(q, now(), 0).await?);
        };
        let stamp = match stamp(queue, bot, target, q) {
            Ok(s) => s,
            Err(e) => {
                let e = DeliveryError::Vault(format!("webhook signing secret: {e}"));
                return fail(queue, q, e, false).await;
            }
        };
        let answer = hook::call(target, &q.summary, timeout, bot.as_str(), &stamp).await;
        count_call(shared, &q.summary, answer.is_ok());
        match answer {
            Ok(actions) => {
                test_crash_point("after_hook_answer");
                let actions = if events::is_event_sender(&q.sender) {
                    // An answer to an event other than a message acts nowhere.
                    Vec::new()
                } else {
                    messaging::admissible(&q.chat, actions)
                };
                if actions.is_empty() {
                    return Ok(queue.remove(q, now(), 0).await?);
                }
                q.accepted = Some(stored_actions(&actions)?);
                q.attempts = 0;
                q.last_error = None;
                queue.update(q).await?;
                test_crash_point("after_actions_accepted");
            }
            Err(e) => return fail(queue, q, e, true).await,
        }
    }
    let stored: Vec<Action> = serde_json::from_str(q.accepted.as_deref().unwrap_or("[]"))
        .map_err(|e| DeliveryError::StoredActions(e.to_string()))?;
    // Also for actions stored by an older wavault that did not check the chat.
    let mut actions = messaging::admissible(&q.chat, stored);
    while let Some(action) = actions.first().cloned() {
        // Actions need the connection; wait for it a while, then retry later.
        let mut connected = link.connected.clone();
        let up = tokio::time::timeout(timeout, connected.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok());
        if !up {
            return fail(queue, q, DeliveryError::NotConnected, false).await;
        }
        if matches!(
            action,
            Action::Reply { .. } | Action::React { .. } | Action::SendFile { .. }
        ) {
            // Messages the bot sends keep its pace (never refused: the
            // actions are durable here).
            let _ = pace.0.pace(pace.1, false).await;
        }
        match tokio::time::timeout(
            action_limit(&action, timeout),
            messaging::perform(&link.client, q, &action, &shared.cfg.media_out),
        )
        .await
        {
            Ok(Ok(sent)) => {
                if sent > 0 {
                    let t = now();
                    let _ = queue.count(t, 0, sent, 0);
                    link.meta.activity(t);
                }
                actions.remove(0);
                if !actions.is_empty() {
                    q.accepted = Some(stored_actions(&actions)?);
                    queue.update(q).await?;
                }
            }
            Ok(Err(DeliveryError::Refused { what, reason })) => {
                // The same answer would be refused again: skip the action
                // (the chat's later messages must not wait behind it) and
                // tell the operator.
                let why = format!(
                    "the hook's {what} was refused and skipped: {reason}; \
                     the message's other actions are carried out"
                );
                raise(shared, bot, AlertKind::ActionRefused, why).await;
                actions.remove(0);
                q.accepted = Some(stored_actions(&actions)?);
                queue.update(q).await?;
            }
            Ok(Err(e)) => return fail(queue, q, e, false).await,
            Err(_) => return fail(queue, q, DeliveryError::ActionTimedOut, false).await,
        }
    }
    Ok(queue.remove(q, now(), 0).await?)
}

/// Publishes a queued event to the events stream (before it leaves the
/// queue): `<prefix>.events.<bot>.<kind>`, `Nats-Msg-Id` = the event id.
async fn publish_event(
    shared: &Shared,
    bot: &BotId,
    q: &Queued,
) -> std::result::Result<(), DeliveryError> {
    let Some(fleet) = &shared.fleet else {
        return Err(DeliveryError::Nats(
            "the bot's sink is NATS but `run` has no --nats: events stay queued".into(),
        ));
    };
    let Some(conn) = fleet.conn() else {
        return Err(DeliveryError::Nats("not connected to NATS yet".into()));
    };
    let kind = EventKind::of_summary(&q.summary).as_str();
    let id = crate::messaging::signing::event_id(bot, &q.record_name());
    crate::fleet::bus::publish_event(&conn, &fleet.cfg, bot.as_str(), kind, &id, &q.summary)
        .await
        .map_err(DeliveryError::Nats)
}

/// How long one action may take: a file's fetch and upload get their own
/// limits, the rest the hook's time limit (at least 30 s).
fn action_limit(action: &Action, hook_timeout: Duration) -> Duration {
    use messaging::attach::{FETCH_TIMEOUT, UPLOAD_TIMEOUT};
    match action {
        Action::SendFile { .. } => FETCH_TIMEOUT + UPLOAD_TIMEOUT + Duration::from_secs(30),
        _ => hook_timeout.max(Duration::from_secs(30)),
    }
}

/// This attempt's stamp: the entry's event id (the same for every attempt,
/// whatever the entry holds), the time now and, for a webhook, the
/// signatures with the secrets the bot signs with now (made on first use).
fn stamp(queue: &Queue, bot: &BotId, target: &Target, q: &Queued) -> Result<hook::Stamp> {
    use crate::messaging::signing;
    let id = signing::event_id(bot, &q.record_name());
    let t = now();
    let signature = match target {
        Target::Webhook(_) => {
            let (_, secrets) = signing::current(queue.vault(), Some(bot))?;
            Some(secrets.header(&id, t, q.summary.as_bytes(), t)?)
        }
        Target::Command(_) => None,
    };
    Ok(hook::Stamp {
        id,
        timestamp: t,
        signature,
    })
}

/// The actions still to carry out, as stored with the entry.
fn stored_actions(actions: &[Action]) -> std::result::Result<String, DeliveryError> {
    serde_json::to_string(actions).map_err(|e| DeliveryError::StoredActions(e.to_string()))
}

/// TEST ONLY: crash points for the crash-safety tests (`tests/e2e/claims_tests.rs`).
/// When `WAVAULT_TEST_CRASH_AT` names this point (`after_hook_answer`: the
/// hook answered, the queue not yet updated; `after_actions_accepted`: the
/// accepted actions are durable, none carried out), the process aborts
/// there, as a crash would. Never set it in production. Cost otherwise: the
/// variable is read once per process; afterwards one comparison.
fn test_crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("WAVAULT_TEST_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("WAVAULT_TEST_CRASH_AT={point}: aborting (test crash point)");
        std::process::abort();
    }
}

/// Records a failed attempt (the entry stays for a retry); returns `Err(e)`.
async fn fail(
    queue: &Queue,
    q: &mut Queued,
    e: DeliveryError,
    hook_failed: bool,
) -> std::result::Result<(), DeliveryError> {
    q.attempts += 1;
    q.last_error = Some(e.to_string());
    if let Err(w) = queue.update(q).await {
        tracing::error!(bot = %queue.bot(), "could not record a failed delivery: {w}");
    }
    if hook_failed {
        let _ = queue.count(now(), 0, 0, 1);
    }
    Err(e)
}

/// A bot's sending state for the runner's lifetime: its idempotency keys
/// and its pacing (`--send-rate`).
pub(crate) struct Outbox {
    pub keys: Keys,
    pacer: std::sync::Mutex<Pacer>,
}

impl Outbox {
    pub fn new(view: crate::vault::BotView) -> Outbox {
        Outbox {
            keys: Keys::new(view),
            pacer: std::sync::Mutex::new(Pacer::default()),
        }
    }

    /// Waits for the bot's next send slot under `rate` (sends a minute;
    /// `None`: at once). `bounded`: refused when the pacing queue is full.
    pub async fn pace(&self, rate: Option<u32>, bounded: bool) -> Result<()> {
        let Some(rate) = rate else { return Ok(()) };
        let now = Instant::now();
        let slot = self
            .pacer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(now.into_std(), rate, bounded);
        match slot {
            Ok(at) => {
                tokio::time::sleep_until(Instant::from_std(at)).await;
                Ok(())
            }
            Err(full) => {
                let secs = full.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                Err(Error::Busy {
                    msg: format!(
                        "the bot's send pacing queue is full ({rate}/min, at most {} s of sends waiting): \
                         try again in {secs} s",
                        crate::messaging::pacing::MAX_WAIT.as_secs()
                    ),
                    retry_after: secs,
                })
            }
        }
    }
}

/// How long `--typing` shows "typing…" before a text: 50 ms a character,
/// 1 to 5 s.
pub fn typing_time(text: &str) -> Duration {
    (Duration::from_millis(50) * text.chars().count().min(1000) as u32)
        .clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Sends `msg` from a running, connected bot; returns the message id (for
/// a repeated idempotency key, the first send's, sending nothing). Order:
/// the key is recorded (`sending`, durable), the send waits for its pacing
/// slot, shows "typing…" if asked, goes out, and the id is recorded.
pub(crate) async fn send(shared: &Arc<Shared>, bot: &BotId, msg: &Outgoing) -> Result<String> {
    msg.check()?;
    let to = messaging::parse_recipient(&msg.to)?;
    let link = shared.link(bot);
    let Some(link) = link else {
        shared.vault.bot_config(bot)?; // unknown bot: not found
        let starting = shared
            .bots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bot)
            .is_some_and(|t| !t.handle.is_finished());
        return Err(Error::Unavailable(if starting {
            format!("bot {bot} is not connected right now (starting); try again in a moment")
        } else {
            format!(
                "bot {bot} is not running in this wavault (disabled, stopped or failed; see `wavault status`)"
            )
        }));
    };
    if !*link.connected.borrow() {
        return Err(Error::Unavailable(format!(
            "bot {bot} is not connected right now; try again once `wavault status` shows it connected"
        )));
    }
    let file = msg.attachment()?;
    if let Some(f) = &file {
        messaging::attach::check_size(f.bytes.len() as u64, shared.cfg.media_out.max)?;
    }
    let outbox = shared.outbox(bot);
    let key = msg.idempotency_key.as_deref();
    if let Some(k) = key {
        if let Begin::Done(id) = outbox.keys.begin(k, msg, now()).await? {
            return Ok(id);
        }
    }
    let out = send_recorded(shared, bot, &link, &outbox, &to, msg, file).await;
    let Some(k) = key else {
        return out.map_err(|(e, _)| e);
    };
    match out {
        Ok(id) => {
            if let Err(e) = outbox.keys.sent(k, &id).await {
                // Sent all the same: a retry of the key is refused as
                // interrupted, never sent twice.
                tracing::error!(bot = %bot, "could not record a sent idempotency key: {e}");
            }
            Ok(id)
        }
        Err((e, true)) => {
            outbox.keys.unknown(k);
            Err(e)
        }
        Err((e, false)) => {
            if let Err(w) = outbox.keys.abandon(k).await {
                tracing::error!(bot = %bot, "could not forget an unsent idempotency key: {w}");
            }
            Err(e)
        }
    }
}

/// The send itself, its key (if any) recorded: pacing, typing, the
/// message. An error says whether the outcome is unknown (`true`: the
/// message may have gone) or nothing was sent (`false`).
async fn send_recorded(
    shared: &Arc<Shared>,
    bot: &BotId,
    link: &Link,
    outbox: &Outbox,
    to: &whatsapp_rust::Jid,
    msg: &Outgoing,
    file: Option<messaging::attach::Attachment>,
) -> std::result::Result<String, (Error, bool)> {
    let unsent = |e: Error| (e, false);
    let rate = settings(shared, bot).map_err(unsent)?.send_rate;
    outbox.pace(rate, true).await.map_err(unsent)?;
    if msg.typing {
        let chat = link.client.chatstate();
        if let Err(e) = chat.send_composing(to).await {
            tracing::warn!(bot = %bot, "typing indicator not sent: {e}");
        }
        tokio::time::sleep(typing_time(&msg.text)).await;
        if let Err(e) = chat.send_paused(to).await {
            tracing::warn!(bot = %bot, "typing indicator not ended: {e}");
        }
    }
    if !*link.connected.borrow() {
        return Err(unsent(Error::Unavailable(format!(
            "bot {bot} lost its connection before the message went out; try again once `wavault status` shows it connected"
        ))));
    }
    let id = if let Some(f) = file {
        messaging::attach::send(&link.client, to, f, msg.reply_to.as_deref())
            .await
            .map_err(|e| (Error::Other(e.error.to_string()), e.unknown))?
    } else {
        tokio::time::timeout(
            Duration::from_secs(30),
            messaging::send_quoting(&link.client, to, &msg.text, msg.reply_to.as_deref()),
        )
        .await
        .map_err(|_| {
            let e =
                "WhatsApp did not take the message within 30 s: it may or may not have been sent";
            (Error::Other(e.into()), true)
        })?
        .map_err(|e| unsent(Error::Other(e.to_string())))?
    };
    let t = now();
    if let Err(e) = link.inbox.queue.count(t, 0, 1, 0) {
        tracing::warn!(bot = %bot, "outbound count not recorded: {e}");
    }
    link.meta.activity(t);
    shared.emit(super::RunnerEvent::Traffic { bot: bot.clone() });
    Ok(id)
}

/// Counts a hook call of a queue entry (`summary`: its JSON) by its kind:
/// `delivered` (the hook took it) or `failed`.
fn count_call(shared: &Shared, summary: &str, delivered: bool) {
    let kind = EventKind::of_summary(summary).as_str();
    let outcome = if delivered { "delivered" } else { "failed" };
    *shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .events
        .entry((kind, outcome))
        .or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_lasts_50_ms_a_character_within_1_to_5_s() {
        assert_eq!(typing_time("hi"), Duration::from_secs(1));
        assert_eq!(typing_time(&"x".repeat(40)), Duration::from_secs(2));
        assert_eq!(typing_time(&"ü".repeat(60)), Duration::from_secs(3));
        assert_eq!(typing_time(&"x".repeat(5000)), Duration::from_secs(5));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        assert_eq!(backoff(b, m, 1), b);
        assert_eq!(backoff(b, m, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, m, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, m, 10), m);
        assert_eq!(backoff(b, m, 1000), m);
    }
}
