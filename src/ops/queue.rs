//! `wavault queue list|retry|drop`: a bot's inbound messages waiting for its hook.

use super::proto::{QueueAction, QueueRow, Response};
use super::Host;
use crate::botid::BotId;
use crate::error::Result;
use crate::messaging::queue::Queue;

/// Runs `action` on the bot's queue (under `run`, the worker's own queue,
/// which then reads the stored queue again).
pub fn run(host: &dyn Host, bot: &BotId, action: QueueAction) -> Result<Response> {
    host.vault().bot_config(bot)?;
    match action {
        QueueAction::List => host.with_queue(bot, &mut |q| Ok(Response::QueueList(list(q)?))),
        QueueAction::Retry => host.with_queue(bot, &mut |q| {
            Ok(Response::QueueReleased(super::block_on(
                q.release(crate::vault::now()),
            )??))
        }),
        QueueAction::Drop => drop_held(host, bot),
    }
}

/// `queue drop`: an automatic backup of the bot first, when anything is
/// held (the messages are gone for good afterwards).
fn drop_held(host: &dyn Host, bot: &BotId) -> Result<Response> {
    let mut held = 0;
    host.with_queue(bot, &mut |q| {
        held = q.pending()?.iter().filter(|m| m.held).count();
        Ok(Response::QueueReleased(0))
    })?;
    let auto_backup = if held > 0 {
        let pass = super::bots::backup_passphrase(host, "queue drop")?;
        Some(crate::backup::auto::take(
            host.vault(),
            std::slice::from_ref(bot),
            pass.expose(),
            "queue-drop",
        )?)
    } else {
        None
    };
    let mut dropped = 0;
    host.with_queue(bot, &mut |q| {
        dropped = super::block_on(q.drop_held())??.len();
        Ok(Response::QueueReleased(dropped))
    })?;
    Ok(Response::QueueDropped {
        dropped,
        auto_backup,
    })
}

fn list(q: &Queue) -> Result<Vec<QueueRow>> {
    Ok(q.pending()?
        .into_iter()
        .map(|m| QueueRow {
            state: if m.held {
                "held"
            } else if m.accepted.is_some() {
                "actions"
            } else {
                "waiting"
            }
            .into(),
            seq: m.seq,
            chat: m.chat,
            sender: m.sender,
            id: m.id,
            received_at: m.received_at,
            attempts: m.attempts,
            last_error: m.last_error,
        })
        .collect())
}
