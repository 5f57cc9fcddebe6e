//! Data-key rotation: a new term, every record re-sealed, the old term retired.
//!
//! Crash safety comes from ordering, each step durable before the next:
//! 1. the key file gains a new active term; the old one becomes "retiring"
//!    (both still open records);
//! 2. every record sealed with a retiring term is re-sealed with the active
//!    one (compare-and-swap, so a concurrent writer is never overwritten);
//! 3. the database is flushed;
//! 4. the key file drops the retiring terms.
//!
//! Killed anywhere, the vault opens and every record reads; running the
//! rotation again sees the retiring term and finishes the job instead of
//! starting another.
//!
//! Retiring a term is also what makes values deleted from the database
//! unreadable from its files (sled keeps them until it reuses the space):
//! see `shred.rs` and docs/THREAT_MODEL.md.

use super::db::TreeId;
use super::header::{TermState, MAX_TERMS};
use super::record::Envelope;
use super::{crypto, write_header, Vault};
use crate::error::{Error, Result};
use std::time::Instant;

/// What a key rotation did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotateReport {
    /// The term records are now sealed with.
    pub new_term: u32,
    /// Terms retired by this run.
    pub retired: Vec<u32>,
    /// True when this run finished an interrupted rotation.
    pub resumed: bool,
    /// Records and bot entries re-sealed by this run.
    pub resealed: u64,
    /// Records in the vault, all now sealed with `new_term` (as `validate`
    /// counts them: bot entries apart).
    #[serde(default)]
    pub records: u64,
    /// Bot entries in the vault, all now sealed with `new_term`.
    #[serde(default)]
    pub bot_entries: u64,
    /// Bytes of sealed values re-sealed.
    pub bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// What step 2 did: re-sealed records and their bytes, and how many bot
/// entries and records it went through.
pub(super) struct Resealed {
    resealed: u64,
    bytes: u64,
    bot_entries: u64,
    records: u64,
}

impl Vault {
    /// Rotates the data key (see the module docs). `progress(done, total)` is
    /// called as records are re-sealed. One rotation runs at a time; a
    /// second caller waits for the first and then rotates again. Clears the
    /// "rotation due" mark that the rotation covers (see `shred.rs`).
    pub fn rotate_key(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<RotateReport> {
        let _one = self
            .inner
            .rotation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let resumed = self.begin_term()?;
        let Resealed {
            resealed,
            bytes,
            bot_entries,
            records,
        } = self.reseal_all(progress)?;
        self.flush()?;
        let retired = self.retire_terms()?;
        let new_term = self.active_term();
        self.clear_rotation_due(new_term)?;
        Ok(RotateReport {
            new_term,
            retired,
            resumed,
            resealed,
            records,
            bot_entries,
            bytes,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The term new records are sealed with.
    pub fn active_term(&self) -> u32 {
        self.inner
            .terms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .active
    }

    /// Term numbers known to the vault, with whether each is retiring.
    pub fn terms(&self) -> Vec<(u32, bool)> {
        self.header()
            .terms
            .iter()
            .map(|t| (t.number, t.state == TermState::Retiring))
            .collect()
    }

    /// Step 1. Returns true when a previous rotation was left unfinished.
    pub(super) fn begin_term(&self) -> Result<bool> {
        let mut h = self.header();
        if h.terms.iter().any(|t| t.state == TermState::Retiring) {
            return Ok(true);
        }
        if h.terms.len() >= MAX_TERMS {
            return Err(Error::damaged("the key file holds too many data-key terms"));
        }
        let number = h.terms.iter().map(|t| t.number).max().unwrap_or(0) + 1;
        let key = crypto::SecretKey::random();
        let mut next = h.clone();
        for t in &mut next.terms {
            t.state = TermState::Retiring;
        }
        let term = super::wrap_term(
            &next,
            &self.inner.keys.term_wrap,
            number,
            TermState::Active,
            &key,
        );
        next.terms.push(term);
        write_header(&self.inner.dir, &self.inner.keys.header_mac, &mut next)?;
        // Switch writers to the new term only once the key file holding it is durable.
        let mut terms = self.inner.terms.write().unwrap_or_else(|e| e.into_inner());
        terms.keys.insert(number, key);
        terms.active = number;
        *h = next;
        Ok(false)
    }

    /// Step 2: re-seals every record not sealed with the active term.
    pub(super) fn reseal_all(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<Resealed> {
        let active = self.active_term();
        let total = (self.db().len(TreeId::Bots) + self.db().len(TreeId::Records)) as u64;
        let (mut done, mut resealed, mut bytes) = (0u64, 0u64, 0u64);
        let mut bot_entries = 0;
        for tree in [TreeId::Bots, TreeId::Records] {
            for (key, stored) in self.db().scan_prefix(tree, &[])? {
                done += 1;
                if tree == TreeId::Bots {
                    bot_entries += 1;
                }
                if Envelope::parse(&stored)
                    .map(|e| e.term == active)
                    .unwrap_or(false)
                {
                    continue;
                }
                bytes += stored.len() as u64;
                resealed += u64::from(self.reseal_one(tree, &key, stored)?);
                crate::testpoint::pause("rotate-key-resealed-one");
                if done % 256 == 0 {
                    progress(done, total);
                }
            }
        }
        progress(total, total);
        Ok(Resealed {
            resealed,
            bytes,
            bot_entries,
            records: done - bot_entries,
        })
    }

    /// Re-seals one record with the active term unless a writer replaced it meanwhile.
    fn reseal_one(&self, tree: TreeId, key: &[u8], stored: Vec<u8>) -> Result<bool> {
        let body = self.open_or_damaged(tree, key, &stored)?;
        self.seal_with(tree, key, &body, |sealed| {
            // A failed swap means a concurrent write, already sealed with the active term.
            self.db()
                .compare_and_swap(tree, key, Some(&stored), Some(sealed))
        })
    }

    /// Step 4: drops retiring terms from the key file and from memory.
    pub(super) fn retire_terms(&self) -> Result<Vec<u32>> {
        let mut h = self.header();
        let retired: Vec<u32> = h
            .terms
            .iter()
            .filter(|t| t.state == TermState::Retiring)
            .map(|t| t.number)
            .collect();
        if retired.is_empty() {
            return Ok(retired);
        }
        let mut next = h.clone();
        next.terms.retain(|t| t.state == TermState::Active);
        write_header(&self.inner.dir, &self.inner.keys.header_mac, &mut next)?;
        let mut terms = self.inner.terms.write().unwrap_or_else(|e| e.into_inner());
        for n in &retired {
            terms.keys.remove(n);
        }
        *h = next;
        Ok(retired)
    }
}
