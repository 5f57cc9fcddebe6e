//! One bot's run (see `supervisor` for what starts it): builds the whatsapp-rust bot over its vault
//! backend, turns events into session metadata, stops for good on permanent
//! failures (with an alert), and on shutdown disconnects cleanly.

use super::alert::{raise, AlertKind};
use super::deliver::{self, Link, QueueHook};
use super::meta::Meta;
use super::net::{CountingFactory, SharedHttp};
use super::{RunnerEvent, Shared, StartCase, StopSignal};
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::sessions::{Sessions, Status};
use crate::vault::{now, BotConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wacore::types::events::Event;
use whatsapp_rust::bot::Bot;

/// What an event means for the supervisor.
enum Flow {
    Continue,
    /// A permanent failure: stop this bot and alert.
    Stop {
        status: Status,
        kind: AlertKind,
        reason: String,
    },
}

pub(super) async fn run(
    shared: &Arc<Shared>,
    cfg: &BotConfig,
    stop: &mut StopSignal,
) -> Result<()> {
    let id = &cfg.id;
    let view = shared.vault.view(id);
    let case = start_case(&view);
    shared.emit(RunnerEvent::Started {
        bot: id.clone(),
        case,
        pair_code: cfg.phone.is_some() && case != StartCase::Reusing,
    });
    let meta = Arc::new(Meta {
        shared: shared.clone(),
        bot: id.clone(),
        sessions: Mutex::new(Sessions::new(view)),
        just_paired: Default::default(),
        connected: tokio::sync::watch::Sender::new(false),
        client: Default::default(),
    });
    meta.status(Status::Connecting, Some("start"));
    let inbox = shared.inbox(id);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Event>>();
    let client = build_client(shared, cfg, case, &meta, &inbox, tx).await?;
    let _ = meta.client.set(Arc::downgrade(&client.client()));
    // Hook events: subscribed before the client runs, so no connection
    // change is missed; inline on the dispatch path, so in dispatch order.
    let (etx, erx) = tokio::sync::mpsc::unbounded_channel::<Arc<Event>>();
    let tap = client
        .client()
        .subscribe_handler(Arc::new(super::events::Tap(etx)));
    let events = tokio::spawn(tracing::Instrument::in_current_span(super::events::run(
        shared.clone(),
        id.clone(),
        inbox.clone(),
        Arc::downgrade(&client.client()),
        erx,
    )));
    let handle = client.spawn();
    let unlink = link_up(shared, id, inbox, &meta, &handle);
    watch(shared, id, &meta, handle, rx, stop).await;
    // The event task queues what is left (a pending status settles now)
    // and ends once the subscription is gone.
    drop(tap);
    let abort = events.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), events)
        .await
        .is_err()
    {
        abort.abort();
    }
    drop(unlink);
    Ok(())
}

/// Which of the three start cases the stored credentials make.
fn start_case(view: &crate::vault::BotView) -> StartCase {
    use crate::store::Credentials;
    match crate::store::credentials_state(view) {
        Some(Credentials::Paired) => StartCase::Reusing,
        Some(Credentials::Incomplete) => StartCase::Incomplete,
        Some(Credentials::Unpaired) | None => StartCase::NeedsPairing,
    }
}

/// The whatsapp-rust client of one bot: its vault backend, the counting
/// transport, the durability hook into its queue, its events into `tx`,
/// and a pair code when it has a phone and no credentials.
async fn build_client(
    shared: &Arc<Shared>,
    cfg: &BotConfig,
    case: StartCase,
    meta: &Arc<Meta>,
    inbox: &Arc<deliver::Inbox>,
    tx: tokio::sync::mpsc::UnboundedSender<Arc<Event>>,
) -> Result<Bot> {
    let id = &cfg.id;
    let backend = shared.vault.bot_backend(id)?;
    let net = &shared.cfg.net;
    let mut builder = Bot::builder()
        .with_runtime(SpanRuntime(tracing::Span::current()))
        .with_backend_arc(backend)
        .with_transport_factory(CountingFactory {
            inner: net.transport.clone(),
            sink: meta.clone(),
        })
        .with_http_client(SharedHttp(net.http.clone()))
        .with_push_name(shared.cfg.push_name.clone())
        .with_inbound_durability_hook(QueueHook {
            shared: shared.clone(),
            bot: id.clone(),
            inbox: inbox.clone(),
        })
        .on_event(move |ev, _client| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ev);
            }
        });
    if let Some(v) = net.version {
        builder = builder.with_version(v);
    }
    if let (Some(phone), false) = (&cfg.phone, case == StartCase::Reusing) {
        builder = builder.with_pair_code(wacore::pair_code::PairCodeOptions {
            phone_number: phone.clone(),
            ..Default::default()
        });
    }
    builder
        .build()
        .await
        .map_err(|e| Error::Other(format!("building the WhatsApp client: {e}")))
}

/// whatsapp-rust's tokio runtime, with every task the client spawns (its
/// run loop, event handlers, message processing) in the bot's log span, so
/// its log lines name the bot too.
struct SpanRuntime(tracing::Span);

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

impl wacore::runtime::Runtime for SpanRuntime {
    fn spawn(&self, future: Task) -> wacore::runtime::AbortHandle {
        use tracing::Instrument;
        whatsapp_rust::TokioRuntime.spawn(Box::pin(future.instrument(self.0.clone())))
    }

    fn spawn_detached(&self, future: Task) {
        use tracing::Instrument;
        whatsapp_rust::TokioRuntime.spawn_detached(Box::pin(future.instrument(self.0.clone())))
    }

    fn sleep(
        &self,
        duration: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        whatsapp_rust::TokioRuntime.sleep(duration)
    }

    fn spawn_blocking(
        &self,
        f: Box<dyn FnOnce() + Send + 'static>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let span = self.0.clone();
        whatsapp_rust::TokioRuntime.spawn_blocking(Box::new(move || span.in_scope(f)))
    }

    fn yield_now(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        whatsapp_rust::TokioRuntime.yield_now()
    }
}

/// Offers the running client to senders and starts the delivery worker;
/// both end when the returned guard drops (the supervisor's exit).
fn link_up(
    shared: &Arc<Shared>,
    id: &BotId,
    inbox: Arc<deliver::Inbox>,
    meta: &Arc<Meta>,
    handle: &whatsapp_rust::bot::BotHandle,
) -> Unlink {
    let link = Arc::new(Link {
        inbox,
        meta: meta.clone(),
        client: handle.client(),
        connected: meta.connected.subscribe(),
    });
    shared
        .links
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), link.clone());
    let worker = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(
        deliver::worker(shared.clone(), id.clone(), link.clone()),
    )));
    Unlink {
        shared: shared.clone(),
        link,
        _worker: worker,
    }
}

/// Turns the client's events into metadata until the bot is stopped, fails
/// for good (alert) or its client ends by itself.
async fn watch(
    shared: &Arc<Shared>,
    id: &BotId,
    meta: &Arc<Meta>,
    mut handle: whatsapp_rust::bot::BotHandle,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    stop: &mut StopSignal,
) {
    let grace = shared.cfg.shutdown_grace;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait() => {
                if tokio::time::timeout(grace, handle.shutdown()).await.is_err() {
                    tracing::warn!(bot = %id, "the bot did not disconnect within {grace:?}");
                }
                meta.status(Status::Disconnected, Some("shutdown"));
                return;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { continue };
                if let Flow::Stop { status, kind, reason } = on_event(shared, meta, &ev) {
                    meta.status(status, Some(&reason));
                    raise(shared, id, kind, reason).await;
                    if tokio::time::timeout(grace, handle.shutdown()).await.is_err() {
                        tracing::warn!(bot = %id, "the stopped bot did not disconnect within {grace:?}");
                    }
                    return;
                }
            }
            _ = &mut handle => {
                // The client ended by itself (it does after a logout): the
                // event that says why may still be on its way (handlers run on
                // their own tasks), so take what arrives within a short deadline.
                while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
                    if let Flow::Stop { status, kind, reason } = on_event(shared, meta, &ev) {
                        meta.status(status, Some(&reason));
                        raise(shared, id, kind, reason).await;
                        return;
                    }
                }
                if !meta.current().is_permanent() {
                    meta.status(Status::Disconnected, Some("client stopped"));
                }
                return;
            }
        }
    }
}

fn on_event(shared: &Arc<Shared>, meta: &Arc<Meta>, ev: &Event) -> Flow {
    let bot = &meta.bot;
    match ev {
        Event::PairingQrCode(q) => {
            shared.emit(RunnerEvent::Qr {
                bot: bot.clone(),
                code: q.code.clone(),
                timeout: q.timeout,
            });
        }
        Event::PairingCode(c) => shared.emit(RunnerEvent::PairCode {
            bot: bot.clone(),
            code: c.code.clone(),
        }),
        Event::PairSuccess(p) => {
            // The backend's DeviceStore::save is durable before the client emits PairSuccess.
            let phone = p.id.user.to_string();
            let t = now();
            let _ = meta.update(Some(crate::sessions::reason::PAIRED), |m| {
                m.phone = Some(phone);
                m.authenticated_at = Some(t);
                m.last_activity = Some(t);
            });
            meta.just_paired
                .store(true, std::sync::atomic::Ordering::SeqCst);
            shared.emit(RunnerEvent::Paired { bot: bot.clone() });
        }
        Event::PairError(e) => meta.error(format!("pairing failed: {}", e.error)),
        Event::Connected(_) => {
            let paired = meta
                .just_paired
                .swap(false, std::sync::atomic::Ordering::SeqCst);
            meta.status(
                Status::Connected,
                Some(if paired {
                    crate::sessions::reason::PAIRED
                } else {
                    crate::sessions::reason::LOGGED_IN
                }),
            )
        }
        Event::Disconnected(d) if meta.current() != Status::Disconnected => {
            meta.error(format!("disconnected: {}", d.reason));
            meta.status(Status::Reconnecting, Some("connection lost"));
        }
        Event::LoggedOut(l) => {
            return Flow::Stop {
                status: Status::LoggedOut,
                kind: AlertKind::LoggedOut,
                reason: format!("logged out by the server ({:?}); pair again", l.reason),
            }
        }
        Event::StreamReplaced(_) => {
            return Flow::Stop {
                status: Status::Replaced,
                kind: AlertKind::Replaced,
                reason: "another client took over this session".into(),
            }
        }
        Event::TemporaryBan(b) => {
            return Flow::Stop {
                status: Status::Error,
                kind: AlertKind::Banned,
                reason: format!("temporarily banned ({:?})", b.code),
            }
        }
        Event::ClientOutdated(_) => {
            return Flow::Stop {
                status: Status::Error,
                kind: AlertKind::ClientOutdated,
                reason: "WhatsApp rejects this client version; upgrade wavault".into(),
            }
        }
        Event::PairingQrCodesExhausted(_) => {
            return Flow::Stop {
                status: Status::Error,
                kind: AlertKind::QrExhausted,
                reason: "no QR code was scanned in time; restart the bot to try again".into(),
            }
        }
        Event::ConnectFailure(f) => meta.error(format!("connect failure: {:?}", f.reason)),
        Event::StreamError(e) => meta.error(format!("stream error {}", e.code)),
        Event::GroupUpdate(u) => {
            use wacore::stanza::groups::GroupNotificationAction;
            if let GroupNotificationAction::Subject { subject, .. } = &u.action {
                shared
                    .inbox(bot)
                    .subjects
                    .learn(&u.group_jid.to_string(), subject);
            }
        }
        Event::Messages(batch) => {
            let t = now();
            meta.activity(t);
            if !batch.hook_committed {
                // Messages that bypass the durability hook (newsletters,
                // recovered placeholders) are counted here; the hook counts
                // the rest exactly once.
                let n = batch.messages.len() as u64;
                if let Err(e) = shared.inbox(bot).queue.count(t, n, 0, 0) {
                    tracing::error!(bot = %bot, "could not count inbound messages: {e}");
                }
            }
        }
        _ => {}
    }
    Flow::Continue
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// On the supervisor's exit: stop the delivery worker (queued messages stay
/// for the next run) and withdraw the bot's client from senders.
struct Unlink {
    shared: Arc<Shared>,
    link: Arc<Link>,
    _worker: AbortOnDrop,
}

impl Drop for Unlink {
    fn drop(&mut self) {
        let mut links = self.shared.links.lock().unwrap_or_else(|e| e.into_inner());
        if links
            .get(&self.link.meta.bot)
            .is_some_and(|l| Arc::ptr_eq(l, &self.link))
        {
            links.remove(&self.link.meta.bot);
        }
    }
}
