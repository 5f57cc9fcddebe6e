//! A bot's whole state in plain form, out of one vault and into another:
//! what backups carry. Record names and data leave the vault's blind
//! indexes and keys behind; the receiving vault seals them under its own.

use serde::{Deserialize, Serialize};

use super::bots::bot_body;
use super::db::TreeId;
use super::record::RecordBody;
use super::view::Kind;
use super::{BotConfig, Vault, BLIND_LEN};
use crate::botid::BotId;
use crate::error::{Error, Result};

/// One record of a bot: its kind, real name, data and write time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpedRecord {
    pub kind: u8,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    pub written_at: i64,
}

/// Everything one bot has: configuration, credentials, Signal state,
/// session metadata and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotDump {
    pub config: BotConfig,
    /// Sorted by (kind, name).
    pub records: Vec<DumpedRecord>,
}

impl BotDump {
    /// Bytes of record names and data (what `backup inspect` reports).
    pub fn payload_bytes(&self) -> u64 {
        self.records
            .iter()
            .map(|r| (r.name.len() + r.data.len()) as u64)
            .sum()
    }
}

impl Vault {
    /// Reads `bot`'s configuration and every record, opened and checked. A
    /// record that does not open is an error: a backup never silently drops
    /// state. The dump is the bot's state at one instant, even while the
    /// bot runs: it is read by one [`Db::snapshot_bot`](super::db::Db)
    /// (no write to the bot lands during it, each write is all in or all
    /// out), and opened under the same read lock of the data-key terms
    /// (a rotation cannot retire a term between the read and the opening).
    pub fn dump_bot(&self, bot: &BotId) -> Result<BotDump> {
        let tag = self.bot_tag(bot);
        self.open_many(|open| {
            let (entry, stored) = self.db().snapshot_bot(&tag)?;
            let entry = entry.ok_or_else(|| {
                Error::NotFound(format!(
                    "bot {bot} is not in this vault (see `wavault bot list`)"
                ))
            })?;
            let config = self.decode_bot_body(&tag, open(TreeId::Bots, &tag, &entry)?)?;
            let mut records = Vec::with_capacity(stored.len());
            for (key, stored) in stored {
                let kind = *key.get(BLIND_LEN).ok_or_else(|| {
                    Error::damaged(format!("record key {} is too short", super::hex(&key)))
                })?;
                let body = open(TreeId::Records, &key, &stored)?;
                if self.name_tag(&tag, Kind(kind), &body.name)[..] != key[BLIND_LEN + 1..] {
                    return Err(Error::damaged(format!(
                        "record {} of bot {bot} is stored under the wrong key",
                        super::hex(&key)
                    )));
                }
                records.push(DumpedRecord {
                    kind,
                    name: body.name,
                    data: body.data,
                    written_at: body.written_at,
                });
            }
            records.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
            Ok(BotDump { config, records })
        })
    }

    /// Test support: starts (empty) or stops the journal of every write
    /// to the `records` tree, kept in the order sled applied them. Off by
    /// default; when off a write pays one atomic load.
    #[doc(hidden)]
    pub fn set_write_journal(&self, on: bool) {
        self.db().set_journal(on);
    }

    /// Test support: the journal so far (see [`Vault::set_write_journal`]).
    /// Values are stored (sealed): open them with [`Vault::open_value`].
    #[doc(hidden)]
    pub fn write_journal(&self) -> Vec<super::JournalWrite> {
        self.db().journal()
    }

    /// Test support: makes [`Vault::dump_bot`] pause `delay` after each
    /// record it reads (debug builds only; release builds ignore it), so a
    /// test can widen the window in which a concurrent write would land.
    #[doc(hidden)]
    pub fn set_snapshot_step_delay(&self, delay: std::time::Duration) {
        self.db().set_snapshot_step_delay(delay);
    }

    /// Makes `dump` the bot's whole state in one transaction over both
    /// trees: its configuration, and exactly its records (whatever the bot
    /// had before is deleted in the same transaction). A crash leaves the
    /// bot wholly as before or wholly as in `dump`. Flushes before returning.
    /// Replacing a bot that was there marks the vault "rotation due" (its
    /// old values stay in the database files until the next rotation).
    pub fn replace_bot(&self, dump: &BotDump) -> Result<()> {
        let tag = self.bot_tag(&dump.config.id);
        let replaces = self.db().get(TreeId::Bots, &tag)?.is_some()
            || !self
                .db()
                .keys_with_prefix(TreeId::Records, &tag)?
                .is_empty();
        if replaces {
            self.purging(|| self.replace_bot_inner(dump, &tag))
        } else {
            self.replace_bot_inner(dump, &tag)
        }
    }

    fn replace_bot_inner(&self, dump: &BotDump, tag: &[u8; BLIND_LEN]) -> Result<()> {
        let tag = *tag;
        let old_keys = self.db().keys_with_prefix(TreeId::Records, &tag)?;
        self.seal_many(|seal| {
            let bot_ops = vec![(
                tag.to_vec(),
                Some(seal(TreeId::Bots, &tag, &bot_body(&dump.config))),
            )];
            let mut new = std::collections::BTreeMap::new();
            for r in &dump.records {
                let mut key = Vec::with_capacity(super::view::KEY_LEN);
                key.extend_from_slice(&tag);
                key.push(r.kind);
                key.extend_from_slice(&self.name_tag(&tag, Kind(r.kind), &r.name));
                let body = RecordBody {
                    name: r.name.clone(),
                    data: r.data.clone(),
                    written_at: r.written_at,
                };
                let sealed = seal(TreeId::Records, &key, &body);
                new.insert(key, Some(sealed));
            }
            let mut ops: Vec<_> = old_keys
                .into_iter()
                .filter(|k| !new.contains_key(k))
                .map(|k| (k, None))
                .collect();
            ops.extend(new);
            self.db().apply_both(bot_ops, ops)
        })?;
        self.flush()
    }
}

/// Stored size of a set of records (keys plus sealed values, as on disk
/// before sled's own overhead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    pub records: u64,
    pub bytes: u64,
}

impl Vault {
    /// Count and stored bytes of `bot`'s records of the given kinds (nothing
    /// is decrypted).
    pub fn footprint(&self, bot: &BotId, kinds: &[Kind]) -> Result<Footprint> {
        let tag = self.bot_tag(bot);
        let mut f = Footprint::default();
        for k in kinds {
            let mut prefix = tag.to_vec();
            prefix.push(k.0);
            for (key, value) in self.db().scan_prefix(TreeId::Records, &prefix)? {
                f.records += 1;
                f.bytes += (key.len() + value.len()) as u64;
            }
        }
        Ok(f)
    }

    /// Records that belong to no bot (left by an interrupted removal or an
    /// older tool): their keys and stored size.
    pub fn orphan_records(&self) -> Result<(Vec<Vec<u8>>, Footprint)> {
        let tags: std::collections::HashSet<Vec<u8>> = self
            .db()
            .keys_with_prefix(TreeId::Bots, &[])?
            .into_iter()
            .collect();
        let mut keys = Vec::new();
        let mut f = Footprint::default();
        self.db().for_each(TreeId::Records, |k, v| {
            if k.len() < BLIND_LEN || !tags.contains(&k[..BLIND_LEN]) {
                keys.push(k.to_vec());
                f.records += 1;
                f.bytes += (k.len() + v.len()) as u64;
            }
        })?;
        Ok((keys, f))
    }

    /// Deletes the given record keys in one batch (orphan clean-up).
    pub fn delete_records(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        self.db().apply(
            TreeId::Records,
            keys.into_iter().map(|k| (k, None)).collect(),
        )
    }
}
