//! Groups a running bot is in: the subject that goes with each group
//! message to the hook (`group_subject`), and `wavault groups list`.
//!
//! The subject comes from whatsapp-rust's group metadata query and is kept
//! in memory per bot for the runner's lifetime (one query per group, not
//! one per message); a failed or slow query gives `null` and is tried again
//! with the next message. Sender keys are not kept here: whatsapp-rust
//! stores them through the vault backend like every Signal record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::{Client, Jid};

use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::ops::proto::GroupRow;

/// How long a message waits for its group's subject before it goes to the
/// hook with `null`.
const SUBJECT_WAIT: Duration = Duration::from_secs(10);
/// How long `groups list` waits for the server.
const LIST_WAIT: Duration = Duration::from_secs(30);

/// Group subjects by group JID, as last learnt.
#[derive(Default)]
pub(crate) struct Subjects(Mutex<HashMap<String, String>>);

impl Subjects {
    /// The subject of `chat` when it is a group: cached, else asked of the
    /// server (at most [`SUBJECT_WAIT`]); `None` when unknown.
    pub async fn of(&self, client: &Client, chat: &Jid) -> Option<String> {
        if !chat.is_group() {
            return None;
        }
        let key = chat.to_string();
        if let Some(s) = self.lock().get(&key) {
            return Some(s.clone());
        }
        let meta = tokio::time::timeout(SUBJECT_WAIT, client.groups().get_metadata(chat)).await;
        match meta {
            Ok(Ok(m)) => {
                self.lock().insert(key, m.subject.clone());
                Some(m.subject)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "group subject unavailable");
                None
            }
            Err(_) => None,
        }
    }

    /// The group's subject changed (a `w:gp2` notification said so).
    pub fn learn(&self, group: &str, subject: &str) {
        self.lock().insert(group.to_owned(), subject.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The groups `client` is in (id, subject, participant count), sorted by id.
pub(crate) async fn list(bot: &BotId, client: &Client) -> Result<Vec<GroupRow>> {
    let got = tokio::time::timeout(LIST_WAIT, client.groups().get_participating())
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "bot {bot}: WhatsApp did not list its groups within {LIST_WAIT:?}"
            ))
        })?
        .map_err(|e| Error::Unavailable(format!("bot {bot}: listing its groups failed: {e}")))?;
    let mut rows: Vec<GroupRow> = got
        .into_values()
        .map(|m| GroupRow {
            id: m.id.to_string(),
            subject: m.subject,
            participants: m.participants.len(),
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(rows)
}

/// `groups list` through the running `run`: the bot must be connected.
pub(crate) async fn of_running(shared: &super::Shared, bot: &BotId) -> Result<Vec<GroupRow>> {
    let Some(link) = shared.link(bot) else {
        shared.vault.bot_config(bot)?;
        return Err(Error::Unavailable(format!(
            "bot {bot} is not running in this wavault (disabled, stopped or failed; see `wavault status`)"
        )));
    };
    if !*link.connected.borrow() {
        return Err(Error::Unavailable(format!(
            "bot {bot} is not connected right now; try again once `wavault status` shows it connected"
        )));
    }
    list(bot, &link.client).await
}
