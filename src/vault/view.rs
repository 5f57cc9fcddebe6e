//! One bot's records: the API every higher layer (the whatsapp-rust backend,
//! session metadata, backups) uses to read and write the vault.
//!
//! A record is addressed by a [`Kind`] and a name. On disk the key is
//! `bot tag (16) ++ kind (1) ++ blind name (16)`; the name itself is only
//! inside the sealed value. Every method seals or opens; none is durable by
//! itself: call [`BotView::durable`] (or `Vault::flush`) before acknowledging.

use super::crypto::BLIND_LEN;
use super::db::{Op, TreeId};
use super::record::RecordBody;
use super::{now, Vault};
use crate::botid::BotId;
use crate::error::Result;

/// The type of a record. Values below 0x10 are the vault's own; the
/// whatsapp-rust backend uses 0x10..=0x7f (see `store::kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(pub u8);

impl Kind {
    /// Session metadata (one record per bot).
    pub const SESSION_META: Kind = Kind(0x02);
    /// Session history (one record per transition).
    pub const SESSION_HISTORY: Kind = Kind(0x03);
    /// Queued inbound messages awaiting the operator's hook (`messaging::queue`).
    pub const INBOUND: Kind = Kind(0x04);
    /// Traffic counters and the queue's sequence number (one record per bot).
    pub const TRAFFIC: Kind = Kind(0x05);
    /// Idempotency keys of proactive sends, by key (`messaging::outbox`).
    pub const IDEMPOTENCY: Kind = Kind(0x08);
    /// The bot's webhook signing secrets (one record, `messaging::signing`).
    pub const WEBHOOK_SECRET: Kind = Kind(0x0a);
    /// Download parameters of inbound media, by message id (`messaging::media`).
    pub const MEDIA: Kind = Kind(0x0b);
    /// Scratch records used by tests and benchmarks.
    pub const TEST: Kind = Kind(0x0f);
}

/// Length of a record key.
pub const KEY_LEN: usize = BLIND_LEN + 1 + BLIND_LEN;

/// One write of an atomic batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Put {
        kind: Kind,
        name: Vec<u8>,
        data: Vec<u8>,
    },
    Delete {
        kind: Kind,
        name: Vec<u8>,
    },
}

/// A bot's slice of the vault. Cheap to clone.
#[derive(Clone)]
pub struct BotView {
    vault: Vault,
    bot: BotId,
    tag: [u8; BLIND_LEN],
}

impl std::fmt::Debug for BotView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotView")
            .field("bot", &self.bot)
            .finish_non_exhaustive()
    }
}

impl BotView {
    pub(crate) fn new(vault: Vault, bot: BotId, tag: [u8; BLIND_LEN]) -> Self {
        BotView { vault, bot, tag }
    }

    /// The bot this view belongs to.
    pub fn bot(&self) -> &BotId {
        &self.bot
    }

    /// The vault behind this view.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The sled key of a record.
    pub fn key(&self, kind: Kind, name: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(KEY_LEN);
        k.extend_from_slice(&self.tag);
        k.push(kind.0);
        k.extend_from_slice(&self.vault.name_tag(&self.tag, kind, name));
        k
    }

    fn prefix(&self, kind: Kind) -> Vec<u8> {
        let mut p = self.tag.to_vec();
        p.push(kind.0);
        p
    }

    fn body(name: &[u8], data: &[u8]) -> RecordBody {
        RecordBody {
            name: name.to_vec(),
            data: data.to_vec(),
            written_at: now(),
        }
    }

    fn open(&self, key: &[u8], stored: &[u8]) -> Result<RecordBody> {
        self.vault.open_or_damaged(TreeId::Records, key, stored)
    }

    /// The data stored under (kind, name).
    pub fn get(&self, kind: Kind, name: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_record(kind, name)?.map(|b| b.data))
    }

    /// The whole record (data and write time) under (kind, name).
    pub fn get_record(&self, kind: Kind, name: &[u8]) -> Result<Option<RecordBody>> {
        let key = self.key(kind, name);
        match self.vault.db().get(TreeId::Records, &key)? {
            Some(stored) => Ok(Some(self.open(&key, &stored)?)),
            None => Ok(None),
        }
    }

    /// Stores `data` under (kind, name), replacing what was there.
    pub fn put(&self, kind: Kind, name: &[u8], data: &[u8]) -> Result<()> {
        let key = self.key(kind, name);
        self.vault
            .seal_with(TreeId::Records, &key, &Self::body(name, data), |sealed| {
                self.vault.db().insert(TreeId::Records, &key, sealed)
            })
    }

    /// Deletes (kind, name). Deleting nothing is not an error.
    pub fn delete(&self, kind: Kind, name: &[u8]) -> Result<()> {
        self.vault
            .db()
            .remove(TreeId::Records, &self.key(kind, name))?;
        Ok(())
    }

    /// Atomically reads and deletes (kind, name).
    pub fn take(&self, kind: Kind, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.key(kind, name);
        loop {
            let Some(stored) = self.vault.db().get(TreeId::Records, &key)? else {
                return Ok(None);
            };
            let body = self.open(&key, &stored)?;
            if self
                .vault
                .db()
                .compare_and_swap(TreeId::Records, &key, Some(&stored), None)?
            {
                return Ok(Some(body.data));
            }
        }
    }

    /// Atomic read-modify-write: `f` gets the current data and returns the new
    /// data (`None` deletes). Retried if another writer got there first.
    /// Returns what was stored.
    pub fn update(
        &self,
        kind: Kind,
        name: &[u8],
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let key = self.key(kind, name);
        loop {
            let stored = self.vault.db().get(TreeId::Records, &key)?;
            let old = match &stored {
                Some(s) => Some(self.open(&key, s)?),
                None => None,
            };
            let new = f(old.as_ref().map(|b| b.data.as_slice()));
            let swapped = match &new {
                Some(data) => self.vault.seal_with(
                    TreeId::Records,
                    &key,
                    &Self::body(name, data),
                    |sealed| {
                        self.vault.db().compare_and_swap(
                            TreeId::Records,
                            &key,
                            stored.as_deref(),
                            Some(sealed),
                        )
                    },
                )?,
                None => self.vault.db().compare_and_swap(
                    TreeId::Records,
                    &key,
                    stored.as_deref(),
                    None,
                )?,
            };
            if swapped {
                return Ok(new);
            }
        }
    }

    /// Every record of `kind`: (name, data), in no particular order.
    pub fn scan(&self, kind: Kind) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .scan_records(kind)?
            .into_iter()
            .map(|b| (b.name, b.data))
            .collect())
    }

    /// Every record of `kind` with its write time.
    pub fn scan_records(&self, kind: Kind) -> Result<Vec<RecordBody>> {
        self.vault
            .db()
            .scan_prefix(TreeId::Records, &self.prefix(kind))?
            .into_iter()
            .map(|(k, v)| self.open(&k, &v))
            .collect()
    }

    /// Number of records of `kind` (nothing is decrypted).
    pub fn count(&self, kind: Kind) -> Result<usize> {
        Ok(self
            .vault
            .db()
            .keys_with_prefix(TreeId::Records, &self.prefix(kind))?
            .len())
    }

    /// Applies every op atomically: all of them or none.
    pub fn apply(&self, ops: &[BatchOp]) -> Result<()> {
        self.vault.seal_many(|seal| {
            let sled_ops: Vec<Op> = ops
                .iter()
                .map(|op| match op {
                    BatchOp::Put { kind, name, data } => {
                        let key = self.key(*kind, name);
                        let sealed = seal(TreeId::Records, &key, &Self::body(name, data));
                        (key, Some(sealed))
                    }
                    BatchOp::Delete { kind, name } => (self.key(*kind, name), None),
                })
                .collect();
            self.vault.db().apply(TreeId::Records, sled_ops)
        })
    }

    /// Deletes every record of the given kinds, atomically. Returns how many.
    pub fn clear(&self, kinds: &[Kind]) -> Result<usize> {
        let mut ops = Vec::new();
        for k in kinds {
            for key in self
                .vault
                .db()
                .keys_with_prefix(TreeId::Records, &self.prefix(*k))?
            {
                ops.push((key, None));
            }
        }
        let n = ops.len();
        self.vault.db().apply(TreeId::Records, ops)?;
        Ok(n)
    }

    /// Every record kind present for this bot with its count.
    pub fn kinds(&self) -> Result<std::collections::BTreeMap<Kind, usize>> {
        let mut out = std::collections::BTreeMap::new();
        for key in self
            .vault
            .db()
            .keys_with_prefix(TreeId::Records, &self.tag)?
        {
            if let Some(&k) = key.get(BLIND_LEN) {
                *out.entry(Kind(k)).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Waits until every write made so far is on disk (group commit).
    pub async fn durable(&self) -> Result<()> {
        self.vault.durable().await
    }
}
