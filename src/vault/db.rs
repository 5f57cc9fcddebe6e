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

use crate::error::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// An open sled database with the vault's trees.
pub struct Db {
    db: sled::Db,
    bots: sled::Tree,
    records: sled::Tree,
    /// Vault bookkeeping that belongs to no bot (the rotation-due mark,
    /// the flush generation).
    meta: sled::Tree,
    /// The database folder (for the generation file).
    dir: PathBuf,
    /// The generation the last flush wrote (see the module docs).
    generation: Mutex<u64>,
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
            Ok(Db {
                db,
                bots,
                records,
                meta,
                dir,
                generation: Mutex::new(generation),
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

    /// Stores `value` under `key`.
    pub fn insert(&self, t: TreeId, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.tree(t).insert(key, value).map_err(sled_err)?;
        Ok(())
    }

    /// Removes `key`, returning what was there.
    pub fn remove(&self, t: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(t)
            .remove(key)
            .map_err(sled_err)?
            .map(|v| v.to_vec()))
    }

    /// Replaces `old` by `new` only if `old` is still what is stored. True on success.
    pub fn compare_and_swap(
        &self,
        t: TreeId,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool> {
        let r = self
            .tree(t)
            .compare_and_swap(key, old, new)
            .map_err(sled_err)?;
        Ok(r.is_ok())
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
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree(t).apply_batch(batch).map_err(sled_err)
    }

    /// Applies ops to both trees in one transaction (all or nothing across trees).
    pub fn apply_both(&self, bots: Vec<Op>, records: Vec<Op>) -> Result<()> {
        use sled::Transactional;
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
        })
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

    /// Writes everything to disk (fsync). Returns once durable.
    pub fn flush(&self) -> Result<()> {
        {
            // Under the lock, so the stored generation only grows.
            let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            self.meta
                .insert(GENERATION_KEY, &g.to_le_bytes()[..])
                .map_err(sled_err)?;
        }
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    /// The last handle's close: flush, make sled's files durable (its own
    /// flush does not fsync them), then record the generation flushed.
    fn close(&self) -> Result<()> {
        self.flush()?;
        for name in ["db", "conf"] {
            if let Ok(f) = std::fs::File::open(self.dir.join(name)) {
                f.sync_all()
                    .map_err(|e| Error::io(format!("syncing the vault database {name}"), e))?;
            }
        }
        let g = *self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = [GENERATION_MAGIC.as_slice(), &g.to_le_bytes()].concat();
        super::fsutil::write_atomic(&self.dir.join(GENERATION_FILE), &bytes)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
