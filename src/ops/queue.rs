//! `wavault queue list|retry|drop`: a bot's inbound messages waiting for its hook.

use super::proto::{QueueAction, Response};
use super::Host;
use crate::botid::BotId;
use crate::error::Result;
use crate::messaging::queue::Queue;

/// One waiting or held message, as `queue list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QueueRow {
    pub seq: u64,
    pub chat: String,
    pub sender: String,
    pub id: String,
    pub received_at: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// `waiting`, `held` (past the age limit, waiting for retry or drop) or
    /// `actions` (delivered; its reply actions are still being carried out).
    pub state: String,
}

/// Runs `action` on the bot's queue (under `run`, the worker's own queue,
/// which then reads the stored queue again).
pub fn run(host: &dyn Host, bot: &BotId, action: QueueAction) -> Result<Response> {
    host.vault().bot_config(bot)?;
    host.with_queue(bot, &mut |q| on(q, action, crate::vault::now()))
}

fn on(q: &Queue, action: QueueAction, now: i64) -> Result<Response> {
    Ok(match action {
        QueueAction::List => Response::QueueList(
            q.pending()?
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
                .collect(),
        ),
        QueueAction::Retry => Response::QueueReleased(super::block_on(q.release(now))??),
        QueueAction::Drop => Response::QueueDropped(super::block_on(q.drop_held())??.len()),
    })
}
