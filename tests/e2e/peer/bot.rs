//! Running a real whatsapp-rust `Bot` against the peer, and watching its
//! events.
//!
//! Why it exists: every e2e test needs the same wiring (the peer's
//! transport, HTTP stub and version; a push name; an event recorder; maybe
//! automatic QR scanning) and the same kind of wait: "until the client
//! emitted X, at most N seconds". [`EventLog`] records every event in order
//! and wakes waiters on each one, so tests never sleep to synchronise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use whatsapp_rust::anyhow::{self, bail, Context as _};
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::store::traits::Backend;
use whatsapp_rust::types::events::{Event, EventHandler, InboundMessage};
use whatsapp_rust::Client;

use super::{Pairing, Peer, LOGIN_DEADLINE, PAIRING_LOGIN_DEADLINE};

/// `Event::Connected`.
pub fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected(_))
}

/// `Event::PairingQrCode`.
pub fn is_qr(e: &Event) -> bool {
    matches!(e, Event::PairingQrCode(_))
}

/// `Event::LoggedOut`.
pub fn is_logged_out(e: &Event) -> bool {
    matches!(e, Event::LoggedOut(_))
}

/// `Event::StreamReplaced`.
pub fn is_stream_replaced(e: &Event) -> bool {
    matches!(e, Event::StreamReplaced(_))
}

/// Every event a client emitted, in dispatch order. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    events: Arc<watch::Sender<Vec<Arc<Event>>>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    pub fn new() -> Self {
        Self {
            events: Arc::new(watch::Sender::new(Vec::new())),
        }
    }

    /// A raw event handler for `BotBuilder::with_event_handler` (it runs
    /// inline on the dispatch path, so order is kept).
    pub fn handler(&self) -> impl EventHandler + 'static {
        Recorder(self.clone())
    }

    pub fn snapshot(&self) -> Vec<Arc<Event>> {
        self.events.borrow().clone()
    }

    pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events.borrow().iter().filter(|e| pred(e)).count()
    }

    /// Waits until at least `n` recorded events match `pred`, at most
    /// `timeout`; returns the `n`-th match.
    pub async fn wait_for_nth(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<Arc<Event>> {
        let mut rx = self.events.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|events| events.iter().filter(|e| pred(e)).count() >= n),
        )
        .await;
        match waited {
            Ok(Ok(events)) => events
                .iter()
                .filter(|e| pred(e))
                .nth(n.saturating_sub(1))
                .cloned()
                .context("matching event vanished"),
            Ok(Err(_)) => bail!("event log closed while waiting for {what}"),
            Err(_) => {
                let kinds: Vec<String> = self
                    .snapshot()
                    .iter()
                    .map(|e| format!("{:?}", e.kind()))
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what} (#{n}); events so far: {}",
                    kinds.join(", ")
                )
            }
        }
    }

    /// Every message of every `Event::Messages` batch, in dispatch order.
    pub fn messages(&self) -> Vec<InboundMessage> {
        flatten_messages(&self.events.borrow())
    }

    /// Waits until `pred` holds for [`EventLog::messages`], at most
    /// `timeout`; returns them.
    pub async fn wait_messages(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[InboundMessage]) -> bool,
    ) -> anyhow::Result<Vec<InboundMessage>> {
        let mut rx = self.events.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|events| pred(&flatten_messages(events))),
        )
        .await;
        match waited {
            Ok(Ok(events)) => Ok(flatten_messages(&events)),
            Ok(Err(_)) => bail!("event log closed while waiting for {what}"),
            Err(_) => {
                let got: Vec<String> = self
                    .messages()
                    .iter()
                    .map(|m| format!("{} from {}", m.info.id, m.info.source.sender))
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; messages so far: [{}]",
                    got.join(", ")
                )
            }
        }
    }

    /// Waits for the first event matching `pred` (it may already be there).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<Arc<Event>> {
        self.wait_for_nth(what, 1, timeout, pred).await
    }
}

fn flatten_messages(events: &[Arc<Event>]) -> Vec<InboundMessage> {
    events
        .iter()
        .filter_map(|e| match &**e {
            Event::Messages(batch) => Some(batch.iter().cloned().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

struct Recorder(EventLog);

impl EventHandler for Recorder {
    fn handle_event(&self, event: Arc<Event>) {
        self.0.events.send_modify(|events| events.push(event));
    }
}

/// Scans the first QR code a client shows, as the phone would.
struct AutoPair {
    peer: Peer,
    scanned: AtomicBool,
}

impl EventHandler for AutoPair {
    fn handle_event(&self, event: Arc<Event>) {
        let Event::PairingQrCode(qr) = &*event else {
            return;
        };
        if self.scanned.swap(true, Ordering::SeqCst) {
            return;
        }
        let peer = self.peer.clone();
        let code = qr.code.clone();
        tokio::spawn(async move {
            if let Err(e) = peer.phone_scan(&code).await {
                peer.shared
                    .modify_log(|log| log.errors.push(format!("auto-pair failed: {e:#}")));
            }
        });
    }
}

/// How [`Peer::start_bot`] sets up a bot.
#[derive(Debug, Clone)]
pub struct BotOptions {
    /// Set before connecting; without one every login repeats the 10 s
    /// app-state wait (peer-notes.md §B.3).
    pub push_name: String,
    /// Scan the first QR code automatically (a fresh phone number each time).
    pub auto_pair: bool,
}

impl Default for BotOptions {
    fn default() -> Self {
        Self {
            push_name: "wavault-e2e".to_string(),
            auto_pair: true,
        }
    }
}

/// A bot running against the peer. Dropping it aborts the bot task;
/// [`RunningBot::stop`] shuts it down gracefully (flushing its store).
pub struct RunningBot {
    handle: Option<BotHandle>,
    pub events: EventLog,
    pub backend: Arc<dyn Backend>,
}

impl RunningBot {
    pub fn client(&self) -> Option<Arc<Client>> {
        self.handle.as_ref().map(BotHandle::client)
    }

    /// Graceful shutdown: disconnect, flush, wait for the run loop to end.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

impl Peer {
    /// Builds and spawns a whatsapp-rust bot over `backend`, connected to
    /// this peer, with its events recorded.
    pub async fn start_bot(
        &self,
        backend: Arc<dyn Backend>,
        options: BotOptions,
    ) -> anyhow::Result<RunningBot> {
        let events = EventLog::new();
        let mut builder = self
            .configure(Bot::builder().with_backend_arc(backend.clone()))
            .with_push_name(options.push_name)
            .with_event_handler(events.handler());
        if options.auto_pair {
            builder = builder.with_event_handler(AutoPair {
                peer: self.clone(),
                scanned: AtomicBool::new(false),
            });
        }
        let bot = builder.build().await.context("building the bot")?;
        Ok(RunningBot {
            handle: Some(bot.spawn()),
            events,
            backend,
        })
    }
}

impl Peer {
    /// Starts a bot over `backend` (which must hold no credentials yet),
    /// lets the peer pair it, and returns once it reported `Connected` on
    /// the post-pairing login (about 10 s, see [`PAIRING_LOGIN_DEADLINE`]).
    pub async fn start_paired_bot(
        &self,
        backend: Arc<dyn Backend>,
    ) -> anyhow::Result<(RunningBot, Pairing)> {
        let bot = self.start_bot(backend, BotOptions::default()).await?;
        let success = bot
            .events
            .wait_for("PairSuccess", LOGIN_DEADLINE, |e| {
                matches!(e, Event::PairSuccess(_))
            })
            .await?;
        let Event::PairSuccess(success) = &*success else {
            bail!("wait_for returned a non-matching event");
        };
        let phone = success.id.user.to_string();
        bot.events
            .wait_for(
                "Connected after pairing",
                PAIRING_LOGIN_DEADLINE,
                is_connected,
            )
            .await?;
        let pairing = self
            .seen()
            .pairings
            .into_iter()
            .find(|p| p.phone == phone)
            .context("client reported PairSuccess for a phone the peer never paired")?;
        Ok((bot, pairing))
    }
}
