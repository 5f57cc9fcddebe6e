//! The encrypted vault: one folder, one key file, one sled database.
//!
//! ```text
//! <vault>/vault.keys    key slots + data-key terms (header.rs), replaced atomically
//! <vault>/db/           sled: trees `bots` and `records`, every value sealed
//! <vault>/wavault.lock  the process lock (lock.rs)
//! ```
//! A random master key is wrapped in key slots (one per passphrase). From it
//! come, by HKDF, the blind-index key, the header MAC key and the key that
//! wraps the data-key terms. Records are sealed with the active term's key.
//! See docs/DESIGN.md for the why and docs/FORMAT.md for the bytes.

mod bots;
mod commit;
pub mod crypto;
pub(crate) mod db;
mod flushwatch;
pub mod header;
mod keys;
mod lock;
pub mod record;
mod rotate;
mod shred;
mod transfer;
pub mod validate;
mod view;

use keys::{
    derive_keys, make_slot, read_header, unlock, unlock_keys, wrap_term, write_header, Keys, Terms,
};

pub use bots::{BotConfig, RemoveReport};
use commit::GroupCommit;
pub use commit::{LatencyHistogram, LATENCY_BUCKETS};
#[doc(hidden)]
pub use db::JournalWrite;
pub use db::TreeId;
#[doc(hidden)]
pub use db::{skip_power_sync_for_tests, SKIP_POWER_SYNC_ENV};
pub use rotate::RotateReport;
#[doc(hidden)]
pub use shred::DiskKeys;
pub use transfer::{BotDump, DumpedRecord, Footprint, ReplaceGroups};
pub use view::{BatchOp, BotView, Kind};

use crate::botid::BotId;
use crate::codec;
use crate::error::{Error, Result};
use crypto::{KdfParams, SecretKey, BLIND_LEN};
use db::Db;
use header::{Header, TermState};
use lock::VaultLock;
use record::{record_ad, Envelope, RecordBody, RECORD_VERSION};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

/// File name of the key file inside the vault folder.
pub const KEY_FILE: &str = "vault.keys";
/// Folder of the sled database inside the vault folder.
pub const DB_DIR: &str = "db";

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Inner {
    dir: PathBuf,
    vault_id: [u8; header::VAULT_ID_LEN],
    keys: Keys,
    terms: RwLock<Terms>,
    header: Mutex<Header>,
    opened_slot: u8,
    db: Db,
    commit: GroupCommit,
    /// Held by a data-key rotation from start to end (one at a time).
    rotation: Mutex<()>,
    _lock: VaultLock,
}

/// An open vault. Cheap to clone; every clone shares the same database.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// True when `dir` holds a vault key file.
    pub fn exists(dir: &Path) -> bool {
        dir.join(KEY_FILE).exists()
    }

    /// Whether a vault is in `dir`: false only when there is none. A vault
    /// that cannot be read (permissions: another user's vault, as under a
    /// systemd unit's `User=`) or a file where its folder should be is an
    /// error naming the path and the way out.
    pub fn probe(dir: &Path) -> Result<bool> {
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(fsutil::unreadable(dir, e)),
            Ok(m) if !m.is_dir() => {
                return Err(Error::Usage(format!(
                    "{} is a file, not a vault folder: point --vault (or WAVAULT_DIR) at the \
                     vault's folder",
                    dir.display()
                )))
            }
            Ok(_) => {}
        }
        let key = dir.join(KEY_FILE);
        match std::fs::File::open(&key) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(fsutil::unreadable(&key, e)),
        }
    }

    /// [`Vault::probe`], with "no vault" an error saying how to make one.
    pub fn require(dir: &Path) -> Result<()> {
        if Vault::probe(dir)? {
            return Ok(());
        }
        Err(Error::NotFound(format!(
            "no vault at {} (create one with `wavault init`, or point --vault / WAVAULT_DIR at it)",
            dir.display()
        )))
    }

    /// Fails with [`Error::VaultInUse`] when another process holds the
    /// vault (checked before asking for a passphrase that could not help).
    pub fn ensure_free(dir: &Path) -> Result<()> {
        VaultLock::acquire(dir).map(drop)
    }

    /// Creates a new vault in `dir` (created 0700 if missing). Refuses to
    /// touch an existing vault.
    pub fn create(dir: &Path, passphrase: &[u8], params: KdfParams) -> Result<Vault> {
        if Vault::exists(dir) {
            return Err(Error::AlreadyExists(format!(
                "a vault already exists at {}; choose another --vault folder or remove it yourself",
                dir.display()
            )));
        }
        if params.exceeds_cap() {
            return Err(Error::Usage(format!(
                "KDF parameters above the cap (m <= {} MiB, t <= {}, p <= {})",
                KdfParams::MAX.memory_kib / 1024,
                KdfParams::MAX.iterations,
                KdfParams::MAX.parallelism
            )));
        }
        fsutil::create_private_dir(dir)?;
        fsutil::sync_parent(dir)?;
        let lock = VaultLock::acquire(dir)?;
        if Vault::exists(dir) {
            return Err(Error::AlreadyExists(format!(
                "a vault already exists at {}",
                dir.display()
            )));
        }
        let master = SecretKey::random();
        let mut vault_id = [0u8; header::VAULT_ID_LEN];
        crypto::fill_random(&mut vault_id);
        let keys = derive_keys(master);
        let mut h = Header {
            vault_id,
            created_at: now() as u64,
            slots: Vec::new(),
            terms: Vec::new(),
            mac: [0; header::MAC_LEN],
        };
        h.slots
            .push(make_slot(&h, 0, &keys.master, passphrase, params)?);
        let term_key = SecretKey::random();
        h.terms.push(wrap_term(
            &h,
            &keys.term_wrap,
            1,
            TermState::Active,
            &term_key,
        ));
        // The database first, the key file last: a vault "exists" only once complete.
        let db = Db::open(&dir.join(DB_DIR))?;
        fsutil::restrict_tree(&dir.join(DB_DIR))?;
        write_header(dir, &keys.header_mac, &mut h)?;
        let terms = Terms {
            active: 1,
            keys: HashMap::from([(1, term_key)]),
        };
        Ok(Vault::assemble(dir, keys, terms, h, 0, db, lock))
    }

    /// Opens the vault in `dir` with `passphrase`. A wrong passphrase changes nothing.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Vault> {
        Vault::require(dir)?;
        let lock = VaultLock::acquire(dir)?;
        let h = read_header(dir)?;
        let (slot_id, keys, terms) = unlock_keys(&h, passphrase, dir)?;
        let db = Db::open(&dir.join(DB_DIR))?;
        fsutil::restrict_tree(&dir.join(DB_DIR))?;
        Ok(Vault::assemble(dir, keys, terms, h, slot_id, db, lock))
    }

    fn assemble(
        dir: &Path,
        keys: Keys,
        terms: Terms,
        h: Header,
        opened_slot: u8,
        db: Db,
        lock: VaultLock,
    ) -> Vault {
        Vault {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                vault_id: h.vault_id,
                keys,
                terms: RwLock::new(terms),
                header: Mutex::new(h),
                opened_slot,
                db,
                commit: GroupCommit::default(),
                rotation: Mutex::new(()),
                _lock: lock,
            }),
        }
    }

    /// The vault folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The random id of this vault (bound into every record).
    pub fn id(&self) -> [u8; header::VAULT_ID_LEN] {
        self.inner.vault_id
    }

    /// The Argon2id parameters of the slot this vault was opened with.
    pub fn kdf_params(&self) -> KdfParams {
        let h = self.header();
        h.slots
            .iter()
            .find(|s| s.id == self.inner.opened_slot)
            .map(|s| s.params)
            .unwrap_or(KdfParams::DEFAULT)
    }

    fn header(&self) -> std::sync::MutexGuard<'_, Header> {
        // A poisoned lock means a panic mid-update of the in-memory copy; the
        // file on disk is only ever replaced atomically, so reading on is safe.
        self.inner.header.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    /// A key derived from the master key for `purpose` (e.g. backups).
    pub fn purpose_key(&self, purpose: &str) -> SecretKey {
        crypto::subkey(
            &self.inner.keys.master,
            format!("purpose:{purpose}").as_bytes(),
        )
    }

    // ----- blind indexes -----

    /// The blind tag of a bot: the prefix of all its record keys.
    pub fn bot_tag(&self, bot: &BotId) -> [u8; BLIND_LEN] {
        crypto::blind(&self.inner.keys.blind, &[b"bot", bot.as_str().as_bytes()])
    }

    pub(crate) fn name_tag(&self, bot_tag: &[u8], kind: Kind, name: &[u8]) -> [u8; BLIND_LEN] {
        crypto::blind(&self.inner.keys.blind, &[b"name", bot_tag, &[kind.0], name])
    }

    // ----- sealing -----

    /// Seals `body` for `key` in `tree` with the active term and stores it
    /// through `store`, all under the terms read lock so a key rotation never
    /// misses a value sealed with a retiring term.
    pub(crate) fn seal_with<T>(
        &self,
        tree: TreeId,
        key: &[u8],
        body: &RecordBody,
        store: impl FnOnce(Vec<u8>) -> Result<T>,
    ) -> Result<T> {
        let terms = self.inner.terms.read().unwrap_or_else(|e| e.into_inner());
        let sealed = self.seal_under(&terms, terms.active, tree, key, body);
        store(sealed)
    }

    /// Runs `f` with a sealing function bound to the active term, all under
    /// one read lock of the terms (for batches).
    pub(crate) fn seal_many<T>(
        &self,
        f: impl FnOnce(&dyn Fn(TreeId, &[u8], &RecordBody) -> Vec<u8>) -> Result<T>,
    ) -> Result<T> {
        let terms = self.inner.terms.read().unwrap_or_else(|e| e.into_inner());
        let seal = |tree: TreeId, key: &[u8], body: &RecordBody| {
            self.seal_under(&terms, terms.active, tree, key, body)
        };
        f(&seal)
    }

    fn seal_under(
        &self,
        terms: &Terms,
        term: u32,
        tree: TreeId,
        key: &[u8],
        body: &RecordBody,
    ) -> Vec<u8> {
        let plain = Zeroizing::new(codec::encode(body));
        let nonce = crypto::random_nonce();
        let ad = record_ad(&self.inner.vault_id, tree.name(), key, term, RECORD_VERSION);
        // Invariant: `term` is a key of `terms.keys` (active or read from an envelope we just opened).
        let k = terms.keys.get(&term).expect("sealing with a known term");
        Envelope::write(term, &nonce, &crypto::seal(k, &nonce, &ad, &plain))
    }

    /// Seals `body` as it would be stored under `key` in `tree` (benchmarks, tools).
    #[doc(hidden)]
    pub fn seal_value(&self, tree: TreeId, key: &[u8], body: &RecordBody) -> Vec<u8> {
        self.seal_with(tree, key, body, Ok)
            .expect("sealing itself cannot fail")
    }

    /// Opens a stored value, checking its binding to `tree` and `key`.
    pub fn open_value(
        &self,
        tree: TreeId,
        key: &[u8],
        stored: &[u8],
    ) -> Result<RecordBody, OpenError> {
        let terms = self.inner.terms.read().unwrap_or_else(|e| e.into_inner());
        self.open_under(&terms, tree, key, stored)
    }

    /// [`Vault::open_value`] with the terms already read-locked (a second
    /// read lock on the same thread could deadlock behind a waiting rotation).
    fn open_under(
        &self,
        terms: &Terms,
        tree: TreeId,
        key: &[u8],
        stored: &[u8],
    ) -> Result<RecordBody, OpenError> {
        let env = Envelope::parse(stored).map_err(|e| OpenError::Envelope(e.to_string()))?;
        let k = terms
            .keys
            .get(&env.term)
            .ok_or(OpenError::UnknownTerm(env.term))?;
        let ad = record_ad(
            &self.inner.vault_id,
            tree.name(),
            key,
            env.term,
            env.version,
        );
        let plain =
            crypto::open(k, &env.nonce, &ad, env.ciphertext).map_err(|_| OpenError::Auth)?;
        codec::decode(&plain).map_err(|e| OpenError::Codec(e.to_string()))
    }

    /// Opens a stored value or reports it as damaged, naming where it is.
    pub(crate) fn open_or_damaged(
        &self,
        tree: TreeId,
        key: &[u8],
        stored: &[u8],
    ) -> Result<RecordBody> {
        self.open_value(tree, key, stored)
            .map_err(|e| damaged_record(tree, key, e))
    }

    /// Runs `f` with an opening function ([`Vault::open_or_damaged`]) bound
    /// to one read lock of the terms, held throughout: values read inside
    /// `f` open even if a rotation retires their term meanwhile.
    pub(crate) fn open_many<T>(
        &self,
        f: impl FnOnce(&dyn Fn(TreeId, &[u8], &[u8]) -> Result<RecordBody>) -> Result<T>,
    ) -> Result<T> {
        let terms = self.inner.terms.read().unwrap_or_else(|e| e.into_inner());
        let open = |tree: TreeId, key: &[u8], stored: &[u8]| {
            self.open_under(&terms, tree, key, stored)
                .map_err(|e| damaged_record(tree, key, e))
        };
        f(&open)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db().size_on_disk()
    }

    // ----- passphrase -----

    /// Replaces the passphrase of the slot this vault was opened with. Rewrites
    /// the key file only (constant cost, whatever the vault's size) and
    /// returns once the new file is durable; the old passphrase no longer opens.
    pub fn rotate_passphrase(
        &self,
        new_passphrase: &[u8],
        params: Option<KdfParams>,
    ) -> Result<()> {
        let mut h = self.header();
        let id = self.inner.opened_slot;
        let params = params.unwrap_or_else(|| {
            h.slots
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.params)
                .unwrap_or(KdfParams::DEFAULT)
        });
        let slot = make_slot(&h, id, &self.inner.keys.master, new_passphrase, params)?;
        let mut next = h.clone();
        next.slots.retain(|s| s.id != id);
        next.slots.push(slot);
        next.slots.sort_by_key(|s| s.id);
        write_header(&self.inner.dir, &self.inner.keys.header_mac, &mut next)?;
        *h = next;
        Ok(())
    }

    /// Checks that `passphrase` opens the key slot this vault was opened
    /// with (a passphrase change through the running `run` proves knowledge
    /// of the current one first, like `passwd`). Wrong: exit 3, nothing changed.
    pub fn check_passphrase(&self, passphrase: &[u8]) -> Result<()> {
        let h = self.header().clone();
        match unlock(&h, passphrase, &self.inner.dir)? {
            (slot, _) if slot == self.inner.opened_slot => Ok(()),
            _ => Err(Error::WrongPassphrase(self.inner.dir.clone())),
        }
    }
}

/// Why a stored value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("bad envelope: {0}")]
    Envelope(String),
    #[error("sealed with unknown key term {0}")]
    UnknownTerm(u32),
    #[error("authentication failed (tampered, corrupted, or moved from another key)")]
    Auth,
    #[error("malformed contents: {0}")]
    Codec(String),
}

fn damaged_record(tree: TreeId, key: &[u8], e: OpenError) -> Error {
    Error::damaged(format!(
        "record {} in tree `{}` cannot be read: {e}",
        hex(key),
        String::from_utf8_lossy(tree.name())
    ))
}

/// Lower-case hex of `b` (for naming records in reports).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub use crate::fsutil;
