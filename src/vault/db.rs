//! All access to sled lives here: nothing else in wavault names a sled type.
//!
//! sled 0.34 can panic on corrupt files; [`Db::open`] catches that and reports
//! it as damaged data. Writes are only durable after [`Db::flush`]; callers
//! that need durability go through the vault's group commit.
//!
//! sled 0.34 reads its log until the first record it cannot read and treats
//! the rest as a torn tail: damage inside the data file (a truncation, a
//! zeroed page) silently opens an older database. So every flush also bumps
//! a generation number in the `meta` tree, and a clean close (the last
//! handle dropped) writes the generation it flushed, after an fsync of
//! sled's files, to `<vault>/db/wavault-generation`. Opening a database
//! whose generation is below that file's is damage, not a torn tail.
//!
//! Consistent snapshots: sled's iterators are not snapshots, so a scan of a
//! bot's records that runs while the bot writes could see one record from
//! before a batch and another from after it. Every key of both trees starts
//! with the bot's 16-byte tag, so the keys fall into [`STRIPES`] stripes by
//! their first byte (the tag is a keyed hash: uniform). Every write to either
//! tree holds the read lock of each stripe it touches (in ascending order)
//! for the length of its sled call; [`Db::snapshot_bot`] holds the bot's
//! stripe's write lock while it reads. A write is one sled call (one key, or
//! one atomic batch), so a snapshot holds, for each write to the bot, all of
//! it or none of it: the bot's state at the instant the lock was granted.

use super::flushwatch::FlushWatch;
use crate::error::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// The vault's trees. Few trees, prefixed keys (many trees cost space in sled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeId {
    /// One entry per bot: blind bot tag -> sealed bot entry.
    Bots,
    /// Every other record: bot tag ++ kind ++ blind name -> sealed record.
    Records,
}

impl TreeId {
    /// The tree's name, also bound into each record's associated data.
    pub fn name(self) -> &'static [u8] {
        match self {
            TreeId::Bots => b"bots",
            TreeId::Records => b"records",
        }
    }
}

/// One write of a batch: `None` deletes.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// A bot's stored entry in `bots` (if any) and its stored records, by key.
pub type BotSnapshot = (Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// Number of write stripes: a set of stripes fits a `u64` mask.
pub const STRIPES: usize = 64;

/// The stripe of a key of either tree: the first byte of its bot tag.
fn stripe_of(key: &[u8]) -> usize {
    key.first().map_or(0, |b| usize::from(*b) % STRIPES)
}

/// The mask of the stripes of `keys`.
fn mask_of<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    keys.into_iter().fold(0, |m, k| m | 1 << stripe_of(k))
}

/// One write to the `records` tree, as the journal saw it.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalWrite {
    /// Position in the journal (0, 1, 2, ...): the order sled applied them.
    pub seq: u64,
    /// The keys written and their stored (sealed) values; `None` deleted.
    pub ops: Vec<Op>,
}

/// Test support: every write to the `records` tree while enabled.
#[derive(Default)]
struct Journal {
    on: AtomicBool,
    log: Mutex<Vec<JournalWrite>>,
}

impl Journal {
    /// The log's lock when the journal is on. Held across the sled call, it
    /// makes the journal's order the order in which sled applied writes.
    fn hold(&self, t: TreeId) -> Option<MutexGuard<'_, Vec<JournalWrite>>> {
        (t == TreeId::Records && self.on.load(Ordering::Acquire))
            .then(|| self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn record(log: Option<MutexGuard<'_, Vec<JournalWrite>>>, ops: impl FnOnce() -> Vec<Op>) {
    if let Some(mut log) = log {
        let ops = ops();
        if !ops.is_empty() {
            let seq = log.len() as u64;
            log.push(JournalWrite { seq, ops });
        }
    }
}

/// An open sled database with the vault's trees.
pub struct Db {
    /// Shared with the flush watchdog (weakly: it never keeps sled open).
    db: Arc<sled::Db>,
    /// Wakes a flush sled forgot to wake after an I/O error (see [`FlushWatch`]).
    watch: Arc<FlushWatch>,
    bots: sled::Tree,
    records: sled::Tree,
    /// Vault bookkeeping that belongs to no bot (the rotation-due mark,
    /// the flush generation).
    meta: sled::Tree,
    /// The database folder (for the generation file).
    dir: PathBuf,
    /// What makes sled's writes survive a power cut (see [`Db::flush`]).
    sync: PowerSafe,
    /// The generation the last flush wrote (see the module docs).
    generation: Mutex<u64>,
    /// Writers share a stripe, a snapshot of a bot holds it alone (module docs).
    stripes: Box<[RwLock<()>]>,
    journal: Journal,
    /// Test support (debug builds): a pause after each record a snapshot reads.
    #[cfg(debug_assertions)]
    snapshot_step_delay: std::sync::atomic::AtomicU64,
}

/// sled 0.34 makes its log "stable" with `sync_file_range`, which neither
/// flushes the drive's write cache nor writes the file's metadata (its
/// length as it grows), and it writes blob files and renames snapshots
/// without syncing their folder. So after every sled flush, the vault
/// syncs sled's data file (`fdatasync`) and, when the set of files in the
/// database folder (or its `blobs/` folder) changed since the last sync,
/// the new files and the folders: after that a power cut keeps the write.
struct PowerSafe {
    /// sled's data file, `<db>/db`, open for `fdatasync`.
    data: std::fs::File,
    /// The names under the database folder as of the last folder sync.
    synced: Mutex<std::collections::BTreeSet<PathBuf>>,
}

#[cfg(debug_assertions)]
static SKIP_POWER_SYNC: AtomicBool = AtomicBool::new(false);

/// The environment variable that sets [`skip_power_sync_for_tests`] in a
/// debug build of the binary.
pub const SKIP_POWER_SYNC_ENV: &str = "WAVAULT_TEST_SKIP_POWER_SYNC";

#[cfg(debug_assertions)]
fn skipping_power_sync() -> bool {
    static FROM_ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    SKIP_POWER_SYNC.load(Ordering::Relaxed)
        || *FROM_ENV.get_or_init(|| std::env::var_os(SKIP_POWER_SYNC_ENV).is_some())
}

/// Test support (debug builds; release builds ignore it and the
/// environment variable [`SKIP_POWER_SYNC_ENV`]): skip the syncs that make
/// a flush survive a power cut, leaving sled's flush alone. The power-cut
/// tests' negative control: with it, they must fail.
#[doc(hidden)]
pub fn skip_power_sync_for_tests(on: bool) {
    #[cfg(debug_assertions)]
    SKIP_POWER_SYNC.store(on, Ordering::Relaxed);
    #[cfg(not(debug_assertions))]
    let _ = on;
}

/// sled's data file and blob folder inside the database folder.
const DATA_FILE: &str = "db";
const BLOB_DIR: &str = "blobs";

impl PowerSafe {
    /// Syncs everything sled created so far (files, folders, the folder's
    /// own entry in its parent): run once the database opened.
    fn open(dir: &Path) -> Result<PowerSafe> {
        let data = std::fs::File::open(dir.join(DATA_FILE))
            .map_err(|e| Error::io(format!("opening {}", dir.join(DATA_FILE).display()), e))?;
        let me = PowerSafe {
            data,
            synced: Mutex::new(Default::default()),
        };
        me.sync_names(dir)?;
        crate::fsutil::sync_parent(dir)?;
        Ok(me)
    }

    /// The files and folders under `dir` and `dir/blobs`, relative to `dir`.
    fn names(dir: &Path) -> Result<std::collections::BTreeSet<PathBuf>> {
        let mut names = std::collections::BTreeSet::new();
        for sub in [Path::new(""), Path::new(BLOB_DIR)] {
            let folder = dir.join(sub);
            let entries = match std::fs::read_dir(&folder) {
                Ok(e) => e,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound && !sub.as_os_str().is_empty() =>
                {
                    continue
                }
                Err(e) => return Err(Error::io(format!("listing {}", folder.display()), e)),
            };
            for e in entries {
                let e = e.map_err(|e| Error::io(format!("listing {}", folder.display()), e))?;
                names.insert(sub.join(e.file_name()));
            }
        }
        Ok(names)
    }

    /// Makes the data file durable, and the folders when files came or went.
    fn sync(&self, dir: &Path) -> Result<()> {
        #[cfg(debug_assertions)]
        if skipping_power_sync() {
            return Ok(());
        }
        self.data
            .sync_data()
            .map_err(|e| Error::io("syncing the vault database", e))?;
        self.sync_names(dir)
    }

    fn sync_names(&self, dir: &Path) -> Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let now = Self::names(dir)?;
        if *synced == now {
            return Ok(());
        }
        for name in now.difference(&synced) {
            let path = dir.join(name);
            // A file that is gone again (a blob sled removed) needs no sync.
            match std::fs::File::open(&path) {
                Ok(f) => f
                    .sync_all()
                    .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
            }
        }
        if dir.join(BLOB_DIR).is_dir() {
            crate::fsutil::sync_dir(&dir.join(BLOB_DIR))?;
        }
        crate::fsutil::sync_dir(dir)?;
        *synced = now;
        Ok(())
    }
}

/// Key of the flush generation in the `meta` tree (8 bytes, little endian).
const GENERATION_KEY: &[u8] = b"generation";
/// The generation of the last clean close, beside sled's files.
pub const GENERATION_FILE: &str = "wavault-generation";
/// Magic of the generation file: `WVGEN1` then the generation, u64 LE.
const GENERATION_MAGIC: &[u8; 6] = b"WVGEN1";

fn read_closed_generation(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(GENERATION_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    match bytes.strip_prefix(GENERATION_MAGIC.as_slice()) {
        Some(n) if n.len() == 8 => Ok(Some(u64::from_le_bytes(n.try_into().expect("8 bytes")))),
        _ => Err(Error::damaged(format!(
            "{} is not a generation file",
            path.display()
        ))),
    }
}

fn decode_generation(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Name of the bookkeeping tree (not a [`TreeId`]: it holds no sealed records).
const META_TREE: &[u8] = b"meta";

fn sled_err(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::io("vault database I/O", io),
        sled::Error::Corruption { .. } => {
            Error::damaged(format!("vault database is corrupt ({e})"))
        }
        other => Error::Other(format!("vault database error: {other}")),
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent while a guarded sled call
/// runs on this thread, and otherwise defers to the previous hook.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

/// Runs a sled call that may panic on corrupt files, turning a panic into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_quiet_hook();
    let was = QUIET.with(|q| q.replace(true));
    let out = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    match out {
        Ok(r) => r,
        Err(_) => Err(Error::damaged(format!(
            "{what}: the database files are corrupt"
        ))),
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // A close that fails leaves the previous (lower) generation: the
        // check at open only ever errs on the safe side.
        if let Err(e) = self.close() {
            tracing::warn!("closing the vault database: {e}");
        }
        self.watch.close();
    }
}

impl Db {
    /// Opens (or creates) the database in `dir`. The caller holds the vault
    /// lock, so a sled lock conflict can only be this process's previous
    /// handle whose background threads have not let go yet: retried briefly.
    pub fn open(dir: &Path) -> Result<Db> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Db::open_once(dir) {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::WouldBlock
                        || source.to_string().contains("lock") =>
                {
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::Other(format!(
                            "the vault database at {} stays locked ({source})",
                            dir.display()
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(dir: &Path) -> Result<Db> {
        let dir = dir.to_path_buf();
        guarded("opening the vault database", move || {
            let db = sled::Config::new()
                .path(&dir)
                .mode(sled::Mode::LowSpace)
                .cache_capacity(64 * 1024 * 1024)
                .open()
                .map_err(|e| match e {
                    sled::Error::Io(io) => Error::io("opening the vault database", io),
                    other => Error::damaged(format!("the vault database does not open ({other})")),
                })?;
            let bots = db.open_tree(TreeId::Bots.name()).map_err(sled_err)?;
            let records = db.open_tree(TreeId::Records.name()).map_err(sled_err)?;
            let meta = db.open_tree(META_TREE).map_err(sled_err)?;
            let generation = decode_generation(meta.get(GENERATION_KEY).map_err(sled_err)?);
            if let Some(closed) = read_closed_generation(&dir)? {
                if generation < closed {
                    return Err(Error::damaged(format!(
                        "the vault database is older than when it was last closed \
                         (generation {generation} < {closed}): its data file is damaged \
                         and sled dropped what it could not read; to accept the older \
                         state instead, remove {}",
                        dir.join(GENERATION_FILE).display()
                    )));
                }
            }
            let sync = PowerSafe::open(&dir)?;
            let db = Arc::new(db);
            let watched = Arc::downgrade(&db);
            let watch = FlushWatch::start(move || {
                let Some(db) = watched.upgrade() else {
                    return false;
                };
                // Its result is the stuck flush's to report.
                let _ = db.flush();
                true
            });
            Ok(Db {
                db,
                watch,
                bots,
                records,
                meta,
                dir,
                sync,
                generation: Mutex::new(generation),
                stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
                journal: Journal::default(),
                #[cfg(debug_assertions)]
                snapshot_step_delay: Default::default(),
            })
        })
    }

    fn tree(&self, t: TreeId) -> &sled::Tree {
        match t {
            TreeId::Bots => &self.bots,
            TreeId::Records => &self.records,
        }
    }

    /// The stored value under `key`.
    pub fn get(&self, t: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(t).get(key).map_err(sled_err)?.map(|v| v.to_vec()))
    }

    /// Read locks of the stripes in `mask`, taken in ascending order.
    fn share(&self, mask: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        (0..STRIPES)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| self.stripes[i].read().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// The read lock of `key`'s stripe.
    fn share_one(&self, key: &[u8]) -> RwLockReadGuard<'_, ()> {
        self.stripes[stripe_of(key)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value` under `key`.
    pub fn insert(&self, t: TreeId, key: &[u8], value: Vec<u8>) -> Result<()> {
        let _stripe = self.share_one(key);
        let log = self.journal.hold(t);
        self.tree(t)
            .insert(key, value.as_slice())
            .map_err(sled_err)?;
        record(log, || vec![(key.to_vec(), Some(value))]);
        Ok(())
    }

    /// Removes `key`, returning what was there.
    pub fn remove(&self, t: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _stripe = self.share_one(key);
        let log = self.journal.hold(t);
        let old = self.tree(t).remove(key).map_err(sled_err)?;
        record(log, || vec![(key.to_vec(), None)]);
        Ok(old.map(|v| v.to_vec()))
    }

    /// Replaces `old` by `new` only if `old` is still what is stored. True on success.
    pub fn compare_and_swap(
        &self,
        t: TreeId,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool> {
        let _stripe = self.share_one(key);
        let log = self.journal.hold(t);
        let swapped = self
            .tree(t)
            .compare_and_swap(key, old, new.as_deref())
            .map_err(sled_err)?
            .is_ok();
        if swapped {
            record(log, || vec![(key.to_vec(), new)]);
        }
        Ok(swapped)
    }

    /// The bookkeeping value under `key` (see docs/FORMAT.md, tree `meta`).
    pub fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key).map_err(sled_err)?.map(|v| v.to_vec()))
    }

    /// Replaces the bookkeeping value `old` by `new` only if `old` is still
    /// what is stored. True on success.
    pub fn meta_compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool> {
        let r = self
            .meta
            .compare_and_swap(key, old, new)
            .map_err(sled_err)?;
        Ok(r.is_ok())
    }

    /// Applies every op of `ops` atomically (all or nothing).
    pub fn apply(&self, t: TreeId, ops: Vec<Op>) -> Result<()> {
        let _stripes = self.share(mask_of(ops.iter().map(|(k, _)| k.as_slice())));
        let log = self.journal.hold(t);
        let mut batch = sled::Batch::default();
        for (k, v) in &ops {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        self.tree(t).apply_batch(batch).map_err(sled_err)?;
        record(log, || ops);
        Ok(())
    }

    /// Applies ops to both trees in one transaction (all or nothing across trees).
    pub fn apply_both(&self, bots: Vec<Op>, records: Vec<Op>) -> Result<()> {
        use sled::Transactional;
        let _stripes = self.share(mask_of(
            bots.iter().chain(&records).map(|(k, _)| k.as_slice()),
        ));
        let log = self.journal.hold(TreeId::Records);
        let res: std::result::Result<(), sled::transaction::TransactionError<()>> =
            (&self.bots, &self.records).transaction(|(b, r)| {
                for (k, v) in &bots {
                    match v {
                        Some(v) => b.insert(k.as_slice(), v.as_slice())?,
                        None => b.remove(k.as_slice())?,
                    };
                }
                for (k, v) in &records {
                    match v {
                        Some(v) => r.insert(k.as_slice(), v.as_slice())?,
                        None => r.remove(k.as_slice())?,
                    };
                }
                Ok(())
            });
        res.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(s) => sled_err(s),
            sled::transaction::TransactionError::Abort(()) => {
                Error::Other("transaction aborted".into())
            }
        })?;
        record(log, || records);
        Ok(())
    }

    /// The bot's entry in `bots` and every record under its tag in
    /// `records`, in key order, read while no write to the bot runs: the
    /// bot's state at one instant (see the module docs). Values are copied
    /// as stored; nothing is opened under the lock.
    pub fn snapshot_bot(&self, tag: &[u8]) -> Result<BotSnapshot> {
        let _alone = self.stripes[stripe_of(tag)]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let entry = self.get(TreeId::Bots, tag)?;
        let mut records = Vec::new();
        for item in self.records.scan_prefix(tag) {
            let (k, v) = item.map_err(sled_err)?;
            records.push((k.to_vec(), v.to_vec()));
            #[cfg(debug_assertions)]
            self.snapshot_step();
        }
        Ok((entry, records))
    }

    #[cfg(debug_assertions)]
    fn snapshot_step(&self) {
        let us = self.snapshot_step_delay.load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
    }

    /// Test support: makes every snapshot pause `delay` after each record
    /// it reads, widening the window in which a write could land mid-scan
    /// (debug builds; release builds ignore it).
    pub fn set_snapshot_step_delay(&self, delay: std::time::Duration) {
        #[cfg(debug_assertions)]
        self.snapshot_step_delay
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        #[cfg(not(debug_assertions))]
        let _ = delay;
    }

    /// Test support: starts (clearing it) or stops the journal of writes
    /// to the `records` tree.
    pub fn set_journal(&self, on: bool) {
        let mut log = self.journal.log.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            log.clear();
        }
        self.journal.on.store(on, Ordering::Release);
    }

    /// Test support: the journal so far.
    pub fn journal(&self) -> Vec<JournalWrite> {
        self.journal
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, t: TreeId, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(t)
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(sled_err))
            .collect()
    }

    /// Every key starting with `prefix` (values are not copied).
    pub fn keys_with_prefix(&self, t: TreeId, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.tree(t)
            .scan_prefix(prefix)
            .keys()
            .map(|r| r.map(|k| k.to_vec()).map_err(sled_err))
            .collect()
    }

    /// Visits every entry of a tree; a sled panic on a corrupt page becomes an error.
    pub fn for_each(&self, t: TreeId, mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
        guarded("reading the vault database", || {
            for item in self.tree(t).iter() {
                let (k, v) = item.map_err(sled_err)?;
                f(&k, &v);
            }
            Ok(())
        })
    }

    /// Number of entries in a tree.
    pub fn len(&self, t: TreeId) -> usize {
        self.tree(t).len()
    }

    /// Writes everything to disk. Returns once durable, also against a
    /// power cut: sled's flush, then [`PowerSafe::sync`].
    pub fn flush(&self) -> Result<()> {
        {
            // Under the lock, so the stored generation only grows.
            let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            self.meta
                .insert(GENERATION_KEY, &g.to_le_bytes()[..])
                .map_err(sled_err)?;
        }
        {
            let _in_flight = self.watch.begin();
            self.db.flush().map_err(sled_err)?;
        }
        self.sync.sync(&self.dir)
    }

    /// The last handle's close: flush (which makes sled's files durable),
    /// then record the generation flushed.
    fn close(&self) -> Result<()> {
        self.flush()?;
        let g = *self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = [GENERATION_MAGIC.as_slice(), &g.to_le_bytes()].concat();
        super::fsutil::write_atomic(&self.dir.join(GENERATION_FILE), &bytes)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of bot `tag`: tag ++ name.
    fn key(tag: &[u8; 16], name: u8) -> Vec<u8> {
        let mut k = tag.to_vec();
        k.push(name);
        k
    }

    /// Writers rewrite every record of a bot in one batch, each time with
    /// the next value of a counter (and batches spanning two bots, and
    /// single-key writes of another bot in the same stripe); every snapshot
    /// must see one counter value in all of the bot's records.
    #[test]
    fn snapshot_sees_each_batch_whole_while_writers_run() {
        const RECORDS: u8 = 40;
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        db.set_snapshot_step_delay(std::time::Duration::from_micros(50));
        let bot = [7u8; 16];
        // Same stripe as `bot` (first byte), other bot.
        let neighbour = {
            let mut t = [9u8; 16];
            t[0] = 7 + STRIPES as u8;
            t
        };
        let other = [200u8; 16];
        let batch = |n: u64, tags: &[[u8; 16]]| -> Vec<Op> {
            tags.iter()
                .flat_map(|t| {
                    (0..RECORDS).map(move |i| (key(t, i), Some(n.to_le_bytes().to_vec())))
                })
                .collect()
        };
        db.apply(TreeId::Records, batch(0, &[bot])).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (db, stop) = (db.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        match w {
                            0 => db.apply(TreeId::Records, batch(n, &[bot])).unwrap(),
                            // One transaction over two bots and both trees.
                            1 => db
                                .apply_both(
                                    vec![(other.to_vec(), Some(vec![1]))],
                                    batch(n, &[other, bot]),
                                )
                                .unwrap(),
                            _ => db
                                .insert(TreeId::Records, &key(&neighbour, 0), vec![n as u8])
                                .unwrap(),
                        }
                    }
                    n
                })
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            let (_, records) = db.snapshot_bot(&bot).unwrap();
            assert_eq!(records.len(), usize::from(RECORDS));
            let values: std::collections::BTreeSet<&Vec<u8>> =
                records.iter().map(|(_, v)| v).collect();
            assert_eq!(
                values.len(),
                1,
                "a snapshot mixes {} writes of the bot: {values:?}",
                values.len()
            );
            seen.extend(values.into_iter().cloned());
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            assert!(w.join().unwrap() > 0);
        }
        assert!(seen.len() > 1, "the snapshots ran while the writers wrote");
    }
}
