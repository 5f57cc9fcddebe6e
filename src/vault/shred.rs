//! Deleted data and the data key: the "rotation due" mark.
//!
//! sled never overwrites in place: a deleted or replaced value stays in the
//! database files until sled happens to reuse that space, still sealed with
//! the data-key term it was written under, so the passphrase and the key
//! file still open it. It stops being readable once its term's key has left
//! the key file, which is what a data-key rotation does
//! ([`Vault::rotate_key`]).
//!
//! Deletions the operator asks for (`bot remove`, `bot reauth`, the sweep's
//! purges of credentials and orphans, `queue drop`, a restore over an
//! existing bot) run through [`Vault::purging`], which marks the vault
//! "rotation due"; the next sweep (`wavault sweep`, the runner's timer)
//! rotates the data key once, however many marks were set. Deletions the
//! protocol makes on its own (delivered queue entries, used pre-keys,
//! replaced sessions) do not mark: the scheduled rotation
//! (`run --rotate-key-every`) covers them (docs/THREAT_MODEL.md).
//!
//! The mark is the value of key `rotation-due` in the `meta` tree: the number
//! of the term that was active when it was last set, u32 big endian
//! (docs/FORMAT.md). A deleted value was sealed under that term or an older
//! one, so a rotation whose new term is newer than the mark has retired every
//! term the value can be under, and clears the mark; a mark set while a
//! rotation runs names the rotation's new term and survives it.
//! [`Vault::purging`] marks before the deletion (a crash in between leaves
//! the mark: at worst one rotation too many) and again after it (a rotation
//! that began in between cannot clear a mark that its new term does not
//! cover). Marking when the mark already covers the active term writes
//! nothing: marks are debounced to one durable write per rotation.

use super::crypto::{self, SecretKey};
use super::db::TreeId;
use super::header::VAULT_ID_LEN;
use super::record::{record_ad, Envelope, RecordBody};
use super::{read_header, unlock_keys, Vault};
use crate::codec;
use crate::error::Result;
use std::path::Path;

/// Key of the mark in the `meta` tree.
const ROTATION_DUE: &[u8] = b"rotation-due";

fn mark_term(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

impl Vault {
    /// Marks the vault "rotation due", durably, unless the mark already
    /// covers the active term (then nothing is written).
    pub fn mark_rotation_due(&self) -> Result<()> {
        let active = self.active_term();
        loop {
            let current = self.db().meta_get(ROTATION_DUE)?;
            if current
                .as_deref()
                .and_then(mark_term)
                .is_some_and(|t| t >= active)
            {
                return Ok(());
            }
            let new = Some(active.to_be_bytes().to_vec());
            // A failed swap means another marker or a rotation got there first: look again.
            if self
                .db()
                .meta_compare_and_swap(ROTATION_DUE, current.as_deref(), new)?
            {
                return self.flush();
            }
        }
    }

    /// True when something was deleted on the operator's request since the
    /// last data-key rotation (its old value may still be readable from the
    /// database files): the next sweep rotates the data key.
    pub fn rotation_due(&self) -> Result<bool> {
        Ok(self.db().meta_get(ROTATION_DUE)?.is_some())
    }

    /// Runs `delete`, a deletion the operator asked for, with the vault
    /// marked "rotation due" before and after it (see the module docs).
    pub fn purging<T>(&self, delete: impl FnOnce() -> Result<T>) -> Result<T> {
        self.mark_rotation_due()?;
        let out = delete();
        let marked = self.mark_rotation_due();
        let out = out?;
        marked?;
        Ok(out)
    }

    /// After a rotation whose terms are now only `active`: clears the mark
    /// unless it was set during the rotation (it names `active` then).
    pub(super) fn clear_rotation_due(&self, active: u32) -> Result<()> {
        let Some(current) = self.db().meta_get(ROTATION_DUE)? else {
            return Ok(());
        };
        if mark_term(&current).is_some_and(|t| t >= active) {
            return Ok(());
        }
        // A failed swap means a mark set meanwhile, for the active term: it stays.
        if self
            .db()
            .meta_compare_and_swap(ROTATION_DUE, Some(&current), None)?
        {
            self.flush()?;
        }
        Ok(())
    }
}

/// The data-key terms that the vault's files give to whoever knows a
/// passphrase, read from the key file exactly as [`Vault::open`] reads them,
/// without the lock and without opening the database. For tests that look
/// for deleted values in the raw database files (tests/vault/shred.rs).
#[doc(hidden)]
pub struct DiskKeys {
    vault_id: [u8; VAULT_ID_LEN],
    terms: Vec<(u32, SecretKey)>,
}

impl DiskKeys {
    /// Reads `dir/vault.keys` and unlocks it with `passphrase`.
    pub fn read(dir: &Path, passphrase: &[u8]) -> Result<DiskKeys> {
        let h = read_header(dir)?;
        let (_, _, terms) = unlock_keys(&h, passphrase, dir)?;
        let mut terms: Vec<(u32, SecretKey)> = terms.keys.into_iter().collect();
        terms.sort_by_key(|(n, _)| *n);
        Ok(DiskKeys {
            vault_id: h.vault_id,
            terms,
        })
    }

    /// The term numbers the key file holds.
    pub fn terms(&self) -> Vec<u32> {
        self.terms.iter().map(|(n, _)| *n).collect()
    }

    /// Opens `stored` as the value of `key` in `tree` with whichever term
    /// it names, if the key file still holds that term.
    pub fn open(&self, tree: TreeId, key: &[u8], stored: &[u8]) -> Option<(u32, RecordBody)> {
        let env = Envelope::parse(stored).ok()?;
        let (_, k) = self.terms.iter().find(|(n, _)| *n == env.term)?;
        let ad = record_ad(&self.vault_id, tree.name(), key, env.term, env.version);
        let plain = crypto::open(k, &env.nonce, &ad, env.ciphertext).ok()?;
        Some((env.term, codec::decode(&plain).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::botid::BotId;
    use crate::vault::crypto::KdfParams;
    use crate::vault::{BotConfig, Kind};

    fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::create(dir.path(), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        (dir, v)
    }

    fn mark(v: &Vault) -> Option<u32> {
        v.db()
            .meta_get(ROTATION_DUE)
            .unwrap()
            .as_deref()
            .and_then(mark_term)
    }

    #[test]
    fn purging_marks_once_and_rotation_clears() {
        let (_d, v) = vault();
        assert!(!v.rotation_due().unwrap());
        let flushes = v.flush_count();
        v.purging(|| Ok(())).unwrap();
        assert_eq!(mark(&v), Some(1));
        // Before and after: one durable write, the second mark is debounced.
        assert_eq!(v.flush_count() - flushes, 1);
        let flushes = v.flush_count();
        v.purging(|| Ok(())).unwrap();
        assert_eq!(
            v.flush_count(),
            flushes,
            "an existing mark is not rewritten"
        );
        let r = v.rotate_key(&mut |_, _| {}).unwrap();
        assert_eq!((r.new_term, r.retired.clone()), (2, vec![1]));
        assert!(!v.rotation_due().unwrap());
    }

    #[test]
    fn a_mark_set_during_a_rotation_survives_it() {
        let (_d, v) = vault();
        let id = BotId::parse("b").unwrap();
        v.add_bot(&BotConfig::new(id.clone())).unwrap();
        v.view(&id).put(Kind::TEST, b"n", b"d").unwrap();
        v.mark_rotation_due().unwrap();
        // A rotation's steps, with a deletion marked after its new term began:
        // the deleted value may be sealed with term 2, which stays.
        assert!(!v.begin_term().unwrap());
        v.mark_rotation_due().unwrap();
        assert_eq!(mark(&v), Some(2));
        v.reseal_all(&mut |_, _| {}).unwrap();
        v.retire_terms().unwrap();
        v.clear_rotation_due(2).unwrap();
        assert!(v.rotation_due().unwrap(), "mark for term 2 cleared");
        // The next rotation (to term 3) covers it.
        v.rotate_key(&mut |_, _| {}).unwrap();
        assert!(!v.rotation_due().unwrap());
    }

    #[test]
    fn a_failed_deletion_still_marks_and_reports_its_error() {
        let (_d, v) = vault();
        let r: Result<()> = v.purging(|| Err(crate::Error::Other("boom".into())));
        assert!(matches!(r, Err(crate::Error::Other(m)) if m == "boom"));
        assert!(v.rotation_due().unwrap());
    }
}
