//! A bot's whole state in plain form, out of one vault and into another:
//! what backups carry. Record names and data leave the vault's blind
//! indexes and keys behind; the receiving vault seals them under its own.

use serde::{Deserialize, Serialize};

use super::bots::bot_body;
use super::db::{Op, TreeId};
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
        self.replace_bots(
            &[(&dump.config, &dump.records[..])],
            ReplaceGroups::DEFAULT,
            1,
            &mut |_| Ok(()),
        )
    }

    /// [`Vault::replace_bot`] for many bots, each given as its configuration
    /// and records: each bot in its own transaction over both trees (wholly
    /// old or wholly new after a crash or a power cut), but one durable
    /// flush per group of bots ([`ReplaceGroups`]) instead of one per bot;
    /// the last group is flushed before this returns. The records are
    /// sealed on up to `threads` threads while this thread applies the
    /// transactions in order.
    ///
    /// `durable(n)` runs after each group's flush: the first `n` bots are
    /// durable. On an error the bots applied before it are flushed (durable),
    /// the failing bot and those after it are untouched, and the error is
    /// returned. Replacing bots that were there marks the vault "rotation
    /// due" first and after (see [`Vault::purging`]).
    pub fn replace_bots(
        &self,
        bots: &[(&BotConfig, &[DumpedRecord])],
        groups: ReplaceGroups,
        threads: usize,
        durable: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let mut replaces = false;
        for (cfg, _) in bots {
            let tag = self.bot_tag(&cfg.id);
            if self.db().get(TreeId::Bots, &tag)?.is_some()
                || !self
                    .db()
                    .keys_with_prefix(TreeId::Records, &tag)?
                    .is_empty()
            {
                replaces = true;
                break;
            }
        }
        if replaces {
            self.purging(|| self.replace_groups(bots, groups, threads, durable))
        } else {
            self.replace_groups(bots, groups, threads, durable)
        }
    }

    fn replace_groups(
        &self,
        bots: &[(&BotConfig, &[DumpedRecord])],
        groups: ReplaceGroups,
        threads: usize,
        durable: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let mut start = 0;
        while start < bots.len() {
            let mut end = start;
            let mut bytes = 0usize;
            while end < bots.len() && end - start < groups.bots.max(1) && bytes < groups.bytes {
                bytes += bots[end]
                    .1
                    .iter()
                    .map(|r| r.name.len() + r.data.len())
                    .sum::<usize>();
                end += 1;
            }
            let applied = self.replace_group(&bots[start..end], threads);
            let n = match &applied {
                Ok(()) => end,
                Err((done, _)) => start + done,
            };
            if n > start {
                self.flush()?;
                durable(n)?;
            }
            if let Err((_, e)) = applied {
                return Err(e);
            }
            start = end;
        }
        Ok(())
    }

    /// Seals and applies `bots`, one transaction each, in order, under one
    /// read lock of the data-key terms (a rotation cannot retire the term
    /// between sealing and applying). Not flushed. On an error: how many
    /// bots were applied before it.
    fn replace_group(
        &self,
        bots: &[(&BotConfig, &[DumpedRecord])],
        threads: usize,
    ) -> std::result::Result<(), (usize, Error)> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::mpsc;
        type Prepared = Result<(Vec<Op>, Vec<Op>)>;
        let terms = self.inner.terms.read().unwrap_or_else(|e| e.into_inner());
        let seal = |tree: TreeId, key: &[u8], body: &RecordBody| {
            self.seal_under(&terms, terms.active, tree, key, body)
        };
        let prepare = |i: usize| -> Prepared {
            let (cfg, records) = bots[i];
            #[cfg(test)]
            if cfg.id.as_str() == tests::FAILS {
                return Err(Error::Other("injected failure".into()));
            }
            let tag = self.bot_tag(&cfg.id);
            let old_keys = self.db().keys_with_prefix(TreeId::Records, &tag)?;
            let bot_ops = vec![(tag.to_vec(), Some(seal(TreeId::Bots, &tag, &bot_body(cfg))))];
            let mut new = std::collections::BTreeMap::new();
            for r in records {
                let mut key = Vec::with_capacity(super::view::KEY_LEN);
                key.extend_from_slice(&tag);
                key.push(r.kind);
                key.extend_from_slice(&self.name_tag(&tag, Kind(r.kind), &r.name));
                let body = RecordBody {
                    name: r.name.clone(),
                    data: r.data.clone(),
                    written_at: r.written_at,
                };
                new.insert(key.clone(), Some(seal(TreeId::Records, &key, &body)));
            }
            let mut ops: Vec<Op> = old_keys
                .into_iter()
                .filter(|k| !new.contains_key(k))
                .map(|k| (k, None))
                .collect();
            ops.extend(new);
            Ok((bot_ops, ops))
        };
        let n = bots.len();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Bounded: helpers seal at most a few bots ahead of the one applied.
            let (tx, rx) = mpsc::sync_channel::<(usize, Prepared)>(2);
            for _ in 1..threads.min(n) {
                let tx = tx.clone();
                let (next, stop, prepare) = (&next, &stop, &prepare);
                s.spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || tx.send((i, prepare(i))).is_err() {
                        return;
                    }
                });
            }
            drop(tx);
            let mut ready = std::collections::BTreeMap::new();
            let result = (|| {
                for i in 0..n {
                    let prepared = loop {
                        if let Some(p) = ready.remove(&i) {
                            break p;
                        }
                        // Seal one here if one is left; else wait for a helper.
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        if j < n {
                            ready.insert(j, prepare(j));
                            continue;
                        }
                        let (j, p) = rx.recv().map_err(|_| {
                            (i, Error::Other(format!("the worker sealing bot {i} ended")))
                        })?;
                        ready.insert(j, p);
                    };
                    let (bot_ops, ops) = prepared.map_err(|e| (i, e))?;
                    self.db().apply_both(bot_ops, ops).map_err(|e| (i, e))?;
                    crate::testpoint::pause("restore-bot-replaced");
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            drop(rx);
            result
        })
    }
}

/// How [`Vault::replace_bots`] groups bots under one durable flush: a group
/// closes once it holds `bots` bots or at least `bytes` bytes of record
/// names and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaceGroups {
    pub bots: usize,
    pub bytes: usize,
}

impl ReplaceGroups {
    /// 256 bots or 16 MB: a restore of 1,000 bots with realistic Signal
    /// state (66 MB) flushes 5 times instead of 1,000.
    pub const DEFAULT: ReplaceGroups = ReplaceGroups {
        bots: 256,
        bytes: 16_000_000,
    };
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

#[cfg(test)]
mod tests {
    use super::super::crypto::KdfParams;
    use super::*;

    /// The bot id whose preparation fails (a test-only failure point).
    pub(super) const FAILS: &str = "fails-here";

    fn dump(id: &str, version: u8) -> BotDump {
        BotDump {
            config: BotConfig::new(BotId::parse(id).unwrap()),
            records: (0..5u8)
                .map(|r| DumpedRecord {
                    kind: Kind::TEST.0,
                    name: vec![b'r', r],
                    data: vec![version; 100 + r as usize],
                    written_at: 7,
                })
                .collect(),
        }
    }

    fn vault() -> (tempfile::TempDir, Vault) {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::create(d.path(), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        (d, v)
    }

    fn refs(dumps: &[BotDump]) -> Vec<(&BotConfig, &[DumpedRecord])> {
        dumps.iter().map(|d| (&d.config, &d.records[..])).collect()
    }

    /// Seven bots in groups of at most three: three durable flushes, not
    /// seven, each reported after it; every bot complete afterwards.
    #[test]
    fn replace_bots_flushes_once_per_group() {
        let (_d, v) = vault();
        let dumps: Vec<BotDump> = (0..7).map(|i| dump(&format!("bot-{i}"), 1)).collect();
        let flushes = v.flush_count();
        let mut durable = Vec::new();
        let groups = ReplaceGroups {
            bots: 3,
            bytes: usize::MAX,
        };
        v.replace_bots(&refs(&dumps), groups, 2, &mut |n| {
            durable.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(durable, [3, 6, 7]);
        assert_eq!(v.flush_count() - flushes, 3, "one flush per group");
        for d in &dumps {
            assert_eq!(v.dump_bot(&d.config.id).unwrap(), *d);
        }
        // A byte limit closes a group too: 5 records of ~100 bytes per bot.
        let flushes = v.flush_count();
        let mut durable = Vec::new();
        let groups = ReplaceGroups {
            bots: 100,
            bytes: 1000,
        };
        let newer: Vec<BotDump> = (0..7).map(|i| dump(&format!("bot-{i}"), 2)).collect();
        v.replace_bots(&refs(&newer), groups, 2, &mut |n| {
            durable.push(n);
            Ok(())
        })
        .unwrap();
        assert_eq!(durable, [2, 4, 6, 7]);
        // The "rotation due" mark (bots were replaced) is one more flush.
        assert_eq!(v.flush_count() - flushes, 5);
        for d in &newer {
            assert_eq!(v.dump_bot(&d.config.id).unwrap(), *d);
        }
    }

    /// A failure at the fifth bot: the four before it are complete and
    /// durable (reported), the failing bot and those after it wholly old.
    #[test]
    fn an_error_leaves_earlier_bots_complete_and_the_failing_bot_old() {
        let (_d, v) = vault();
        let mut ids: Vec<String> = (0..7).map(|i| format!("bot-{i}")).collect();
        ids[4] = FAILS.into();
        // Old state: every bot but the failing one (which cannot be written).
        let old: Vec<BotDump> = ids.iter().map(|id| dump(id, 1)).collect();
        let without: Vec<BotDump> = old
            .iter()
            .filter(|d| d.config.id.as_str() != FAILS)
            .cloned()
            .collect();
        v.replace_bots(&refs(&without), ReplaceGroups::DEFAULT, 2, &mut |_| Ok(()))
            .unwrap();
        let new: Vec<BotDump> = ids.iter().map(|id| dump(id, 2)).collect();
        let mut durable = Vec::new();
        let groups = ReplaceGroups {
            bots: 3,
            bytes: usize::MAX,
        };
        let flushes = v.flush_count();
        let e = v
            .replace_bots(&refs(&new), groups, 2, &mut |n| {
                durable.push(n);
                Ok(())
            })
            .unwrap_err();
        assert!(e.to_string().contains("injected failure"), "{e}");
        assert_eq!(durable, [3, 4], "the bot before the failing one is flushed");
        // Two group flushes and the "rotation due" mark.
        assert_eq!(v.flush_count() - flushes, 3);
        for (i, id) in ids.iter().enumerate() {
            let got = v.dump_bot(&BotId::parse(id).unwrap());
            if i < 4 {
                assert_eq!(got.unwrap(), new[i], "{id} is wholly new");
            } else if id == FAILS {
                assert!(got.is_err(), "{id} is still absent");
            } else {
                assert_eq!(got.unwrap(), old[i], "{id} is wholly old");
            }
        }
    }
}
