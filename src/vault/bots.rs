//! The bot registry: each bot's configuration, sealed in the `bots` tree
//! under its blind tag, and the views of its records.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::db::TreeId;
use super::record::RecordBody;
use super::view::BotView;
use super::{hex, now, Vault};
use crate::botid::BotId;
use crate::codec;
use crate::error::{Error, Result};

/// Configuration of one bot, sealed in the `bots` tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotConfig {
    /// The bot's id.
    pub id: BotId,
    /// Unix seconds when the bot was added.
    pub created_at: i64,
    /// Disabled bots are not started by `run` (e.g. after `export --move`).
    pub enabled: bool,
    /// Phone number for pair-code pairing, if given.
    pub phone: Option<String>,
    /// Per-bot webhook URL for inbound messages.
    pub webhook: Option<String>,
    /// Free-form settings for later features (kept across versions).
    pub extra: BTreeMap<String, String>,
}

impl BotConfig {
    /// A new, enabled bot with nothing else set.
    pub fn new(id: BotId) -> Self {
        BotConfig {
            id,
            created_at: now(),
            enabled: true,
            phone: None,
            webhook: None,
            extra: BTreeMap::new(),
        }
    }
}

/// What `remove_bot` deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoveReport {
    pub records: usize,
}

impl Vault {
    /// Registers a new bot. Fails if the id is taken.
    pub fn add_bot(&self, config: &BotConfig) -> Result<()> {
        let tag = self.bot_tag(&config.id);
        let body = bot_body(config);
        let inserted = self.seal_with(TreeId::Bots, &tag, &body, |sealed| {
            self.db()
                .compare_and_swap(TreeId::Bots, &tag, None, Some(sealed))
        })?;
        if !inserted {
            return Err(Error::AlreadyExists(format!(
                "bot {} is already in the vault",
                config.id
            )));
        }
        self.flush()
    }

    /// Rewrites a bot's configuration (the bot must exist).
    pub fn set_bot(&self, config: &BotConfig) -> Result<()> {
        self.bot_config(&config.id)?;
        let tag = self.bot_tag(&config.id);
        let body = bot_body(config);
        self.seal_with(TreeId::Bots, &tag, &body, |sealed| {
            self.db().insert(TreeId::Bots, &tag, sealed)
        })?;
        self.flush()
    }

    /// The configuration of `bot`, or `NotFound`.
    pub fn bot_config(&self, bot: &BotId) -> Result<BotConfig> {
        let tag = self.bot_tag(bot);
        let stored = self.db().get(TreeId::Bots, &tag)?.ok_or_else(|| {
            Error::NotFound(format!(
                "bot {bot} is not in this vault (see `wavault bot list`)"
            ))
        })?;
        self.decode_bot(&tag, &stored)
    }

    pub(super) fn decode_bot(&self, tag: &[u8], stored: &[u8]) -> Result<BotConfig> {
        self.decode_bot_body(tag, self.open_or_damaged(TreeId::Bots, tag, stored)?)
    }

    /// The configuration in an opened bot entry, checked against its key.
    pub(crate) fn decode_bot_body(&self, tag: &[u8], body: RecordBody) -> Result<BotConfig> {
        let cfg: BotConfig = codec::decode(&body.data)
            .map_err(|e| Error::damaged(format!("bot entry {} is malformed: {e}", hex(tag))))?;
        if self.bot_tag(&cfg.id).as_slice() != tag {
            return Err(Error::damaged(format!(
                "bot entry {} is stored under the wrong key",
                hex(tag)
            )));
        }
        Ok(cfg)
    }

    /// Every bot, sorted by id.
    pub fn list_bots(&self) -> Result<Vec<BotConfig>> {
        let mut bots = self
            .db()
            .scan_prefix(TreeId::Bots, &[])?
            .into_iter()
            .map(|(k, v)| self.decode_bot(&k, &v))
            .collect::<Result<Vec<_>>>()?;
        bots.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(bots)
    }

    /// A view of one bot's records, after checking the bot exists.
    pub fn bot(&self, bot: &BotId) -> Result<BotView> {
        self.bot_config(bot)?;
        Ok(self.view(bot))
    }

    /// A view of one bot's records (no existence check).
    pub fn view(&self, bot: &BotId) -> BotView {
        BotView::new(self.clone(), bot.clone(), self.bot_tag(bot))
    }

    /// Removes a bot and every record it has, atomically, then flushes.
    /// The vault is marked "rotation due": the old values stay readable from
    /// the database files until the next sweep rotates the data key.
    pub fn remove_bot(&self, bot: &BotId) -> Result<RemoveReport> {
        self.bot_config(bot)?;
        let tag = self.bot_tag(bot);
        self.purging(|| {
            let keys = self.db().keys_with_prefix(TreeId::Records, &tag)?;
            let records = keys.len();
            let ops = keys.into_iter().map(|k| (k, None)).collect();
            self.db().apply_both(vec![(tag.to_vec(), None)], ops)?;
            self.flush()?;
            Ok(RemoveReport { records })
        })
    }

    /// Deletes only the bot's entry, leaving its records as orphans: what
    /// an interrupted older tool could leave. Tests of the sweep use it.
    #[doc(hidden)]
    pub fn remove_bot_entry_only(&self, bot: &BotId) -> Result<()> {
        let tag = self.bot_tag(bot);
        self.db().apply(TreeId::Bots, vec![(tag.to_vec(), None)])?;
        self.flush()
    }
}

/// The sealed body of a bot entry: its id as the name, its config as the data.
pub(super) fn bot_body(config: &BotConfig) -> RecordBody {
    RecordBody {
        name: config.id.as_str().as_bytes().to_vec(),
        data: codec::encode(config),
        written_at: now(),
    }
}
