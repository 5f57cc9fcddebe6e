//! The runner's side of the fleet (`run --nats`): a bot runs only while
//! this host holds its owner key, its events go to the events stream, and
//! its sends come from its consumer on the sends stream.
//!
//! The protocol itself (take, renew, release) is `fleet::owners`; here is
//! what the runner does around it:
//! - before a bot starts, its key is taken; held by another host: the bot
//!   is `held_elsewhere` (one alert), and the key is tried again every
//!   heartbeat; NATS not answering: `fleet_unreachable` (one alert), and
//!   the bot waits for it;
//! - while the bot runs, the key is renewed; a lost key stops the bot at
//!   once (alert `ownership_lost`), and the host tries to take it again;
//! - a clean stop releases the key, so another host may take the bot
//!   within one heartbeat.

use super::alert::{raise, AlertKind};
use super::meta::Meta;
use super::{Shared, StopSignal};
use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::fleet::{bus, owners, Claim, Conn, Fleet, Link};
use crate::sessions::Status;
use crate::vault::BotConfig;
use std::sync::Arc;

/// What this host last said about a bot it does not run (so each state is
/// announced, and alerted, once).
#[derive(Default)]
struct Said(Option<(Status, String)>);

/// Runs `cfg`'s bot while this host holds its key (`supervise` in a fleet).
pub(crate) async fn owned(
    shared: &Arc<Shared>,
    fleet: Arc<Fleet>,
    cfg: &BotConfig,
    stop: &mut StopSignal,
) -> Result<()> {
    let bot = &cfg.id;
    let mut said = Said::default();
    loop {
        if stop.is_set() {
            return Ok(());
        }
        let Some(conn) = fleet.conn() else {
            // Not connected yet: say so once an attempt has failed.
            let mut link = fleet.link();
            let why = match &*link.borrow_and_update() {
                Link::Down(Some(e)) => Some(e.clone()),
                _ => None,
            };
            if let Some(why) = why {
                announce(shared, bot, &mut said, Status::FleetUnreachable, why).await;
            }
            tokio::select! {
                _ = fleet.ready() => {}
                _ = link.changed() => {}
                _ = stop.wait() => return Ok(()),
            }
            continue;
        };
        match owners::claim(&conn.owners, &fleet.cfg.host_id, bot.as_str()).await {
            Ok(Claim::Taken(lease)) => {
                said = Said::default();
                tracing::info!(bot = %bot, "took the bot's owner key");
                let (keeper, lost) = owners::keep(conn.owners.clone(), &fleet.cfg, &lease);
                stop.lease = Some(lost.clone());
                let sends = tokio::spawn(tracing::Instrument::in_current_span(sends(
                    shared.clone(),
                    fleet.clone(),
                    conn.clone(),
                    bot.clone(),
                )));
                let ran = super::bot::run(shared, cfg, stop).await;
                sends.abort();
                keeper.abort();
                stop.lease = None;
                let why = lost.borrow().clone();
                match why {
                    None => {
                        if let Err(e) = owners::release(&conn.owners, &lease).await {
                            tracing::warn!(bot = %bot, "{e} (it frees itself after the TTL)");
                        }
                        return ran;
                    }
                    Some(why) => {
                        raise(
                            shared,
                            bot,
                            AlertKind::OwnershipLost,
                            format!(
                                "{why}: the bot was stopped on this host; it starts here again once \
                                 this host holds its key"
                            ),
                        )
                        .await;
                        continue;
                    }
                }
            }
            Ok(Claim::Held { host, since }) => {
                let why = format!(
                    "host {host:?} holds this bot (since {}); it does not run here and starts \
                     here once that host stops it or its key expires",
                    crate::status::fmt_time(Some(since))
                );
                announce(shared, bot, &mut said, Status::HeldElsewhere, why).await;
            }
            Err(e) => announce(shared, bot, &mut said, Status::FleetUnreachable, e).await,
        }
        tokio::select! {
            _ = tokio::time::sleep(fleet.cfg.heartbeat()) => {}
            _ = stop.wait() => return Ok(()),
        }
    }
}

/// Records and alerts a state of a bot this host does not run, once per
/// change of state.
async fn announce(shared: &Arc<Shared>, bot: &BotId, said: &mut Said, status: Status, why: String) {
    if said.0.as_ref().is_some_and(|(s, _)| *s == status) {
        return;
    }
    said.0 = Some((status, why.clone()));
    let meta = Meta::detached(shared, bot);
    meta.error(why.clone());
    meta.status(status, Some(status.as_str()));
    let kind = match status {
        Status::HeldElsewhere => AlertKind::HeldElsewhere,
        _ => AlertKind::FleetUnreachable,
    };
    raise(shared, bot, kind, why).await;
}

/// Pulls the bot's sends from its consumer and sends them, one at a time
/// (in order), until aborted.
async fn sends(shared: Arc<Shared>, fleet: Arc<Fleet>, conn: Arc<Conn>, bot: BotId) {
    use futures_util::StreamExt as _;
    let mut wait = std::time::Duration::from_millis(250);
    loop {
        let mut msgs = match bus::send_consumer(&conn, &fleet.cfg, bot.as_str()).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(bot = %bot, "{e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(fleet.cfg.connect_backoff_max);
                continue;
            }
        };
        while let Some(m) = msgs.next().await {
            match m {
                Ok(m) => {
                    wait = std::time::Duration::from_millis(250);
                    send_one(&shared, &fleet, &conn, &bot, m).await
                }
                Err(e) => {
                    tracing::warn!(bot = %bot, "pulling sends: {e}");
                    break;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(fleet.cfg.connect_backoff_max);
    }
}

/// Failed sends of other kinds than "not connected" are tried this many
/// times before they are given up (terminated, with an `ok: false` result).
const SEND_ATTEMPTS: i64 = 5;

/// One send: parsed, sent, its result published, then acknowledged; not
/// connected: negatively acknowledged with a delay (it comes back to
/// whichever host runs the bot then); never sendable: terminated.
async fn send_one(
    shared: &Arc<Shared>,
    fleet: &Fleet,
    conn: &Conn,
    bot: &BotId,
    m: async_nats::jetstream::Message,
) {
    use async_nats::jetstream::AckKind;
    let (seq, delivered) = m
        .info()
        .map(|i| (i.stream_sequence, i.delivered))
        .unwrap_or((0, 1));
    let parsed = crate::messaging::send_body::parse_json(&m.payload);
    let (mut msg, bytes) = match parsed {
        Ok(p) => p,
        Err(e) => return give_up(fleet, conn, bot, &m, None, None, format!("bad send: {e}")).await,
    };
    if let Some(f) = &mut msg.file {
        f.bytes = Arc::new(bytes);
    }
    // Without a key of its own, the stream (and when it was made: a
    // stream made again counts from 1 again) and the sequence are the key:
    // a send redelivered after a crash between the send and the ack goes once.
    if msg.idempotency_key.is_none() {
        let made = conn.sends.cached_info().created.unix_timestamp();
        let stream = fleet.cfg.sends_stream();
        msg.idempotency_key = Some(format!("nats-{stream}-{made}-{seq}"));
    }
    let key = msg.idempotency_key.clone();
    match super::deliver::send(shared, bot, &msg).await {
        Ok(id) => {
            let result = serde_json::json!({
                "bot": bot, "id": id, "to": msg.to, "idempotency_key": key, "ok": true,
            });
            publish_result(fleet, conn, bot, seq, result).await;
            if let Err(e) = m.ack().await {
                tracing::warn!(bot = %bot, "acknowledging a send: {e}");
            }
        }
        Err(Error::Unavailable(_)) | Err(Error::Busy { .. }) => {
            let _ = m.ack_with(AckKind::Nak(Some(fleet.cfg.send_retry))).await;
        }
        Err(e @ (Error::Usage(_) | Error::NotFound(_))) => {
            give_up(fleet, conn, bot, &m, Some(seq), key, e.to_string()).await
        }
        Err(e) if delivered >= SEND_ATTEMPTS => {
            give_up(fleet, conn, bot, &m, Some(seq), key, e.to_string()).await
        }
        Err(_) => {
            // Not the error's text: it may name the recipient.
            tracing::warn!(bot = %bot, "a send from NATS failed (attempt {delivered}), retrying");
            let _ = m.ack_with(AckKind::Nak(Some(fleet.cfg.send_retry))).await;
        }
    }
}

/// A send that can never go: an `ok: false` result, and terminated.
async fn give_up(
    fleet: &Fleet,
    conn: &Conn,
    bot: &BotId,
    m: &async_nats::jetstream::Message,
    seq: Option<u64>,
    key: Option<String>,
    error: String,
) {
    use async_nats::jetstream::AckKind;
    // Not the error's text (it may name the recipient): the result says it.
    tracing::warn!(bot = %bot, "a send from NATS was given up (the reason is in its result on the sent subject)");
    let seq = seq.unwrap_or_else(|| m.info().map(|i| i.stream_sequence).unwrap_or(0));
    let result = serde_json::json!({
        "bot": bot, "idempotency_key": key, "ok": false, "error": error,
    });
    publish_result(fleet, conn, bot, seq, result).await;
    let _ = m.ack_with(AckKind::Term).await;
}

/// Publishes a send's result on `<prefix>.sent.<bot>` (deduplicated by the
/// send's stream sequence).
async fn publish_result(fleet: &Fleet, conn: &Conn, bot: &BotId, seq: u64, v: serde_json::Value) {
    let id = format!("sent-{}-{seq}", fleet.cfg.sends_stream());
    let subject = fleet.cfg.sent_subject(bot.as_str());
    if let Err(e) = bus::publish(conn, subject, &id, v.to_string().into()).await {
        tracing::warn!(bot = %bot, "publishing a send's result: {e}");
    }
}
