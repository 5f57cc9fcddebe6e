//! [`VaultBackend`]: one bot's whatsapp-rust storage over its vault view, and
//! the plumbing the trait implementations share (errors, the per-bot write
//! lock, and a small write overlay for atomic read-modify-write batches).
//!
//! Concurrency model:
//! - plain puts and deletes go straight to the view (sled is thread-safe);
//! - a multi-record read-modify-write (merges, indexes, sweeps) runs under the
//!   bot's write lock and lands as one `BotView::apply` batch, so it is atomic
//!   on disk and never interleaves with another such update of the same bot;
//! - single-record merges that must be atomic against plain puts (tc tokens,
//!   the pre-key uploaded flag) use `BotView::update`, a compare-and-swap loop.
//!
//! The lock registry is process-wide and keyed by (vault id, bot tag), so two
//! backends built for the same bot still exclude each other.

use crate::botid::BotId;
use crate::error::{Error, Result};
use crate::vault::{BatchOp, BotView, Kind, Vault};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use wacore::store::error::StoreError;

/// whatsapp-rust storage for one bot, over that bot's slice of the vault.
///
/// Implements every storage trait of whatsapp-rust 0.7 (`SignalStore`,
/// `AppSyncStore`, `ProtocolStore`, `MsgSecretStore`, `DeviceStore`), hence
/// `Backend`. Cheap to clone; clones share the bot's write lock.
///
/// Writes the client relies on before putting ciphertext on the wire or
/// acknowledging the server are durable when they return `Ok` (group commit:
/// concurrent bots share one fsync). See the module docs of `crate::store`.
#[derive(Clone)]
pub struct VaultBackend {
    pub(crate) view: BotView,
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for VaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBackend")
            .field("bot", self.view.bot())
            .finish_non_exhaustive()
    }
}

impl VaultBackend {
    /// A backend over `view` (the bot need not exist yet in the vault's bot
    /// list; [`Vault::bot_backend`] checks that it does).
    pub fn new(view: BotView) -> Self {
        let lock = bot_lock(&view);
        VaultBackend { view, lock }
    }

    /// The bot this backend stores.
    pub fn bot(&self) -> &BotId {
        self.view.bot()
    }

    /// The vault view underneath.
    pub fn view(&self) -> &BotView {
        &self.view
    }

    /// Deletes every credential and Signal record of this bot (every kind of
    /// this backend), atomically and durably, keeping the vault's own records
    /// (bot configuration, session metadata). The bot will need a new QR
    /// pairing afterwards. Returns how many records were deleted.
    pub async fn wipe(&self) -> Result<usize> {
        let _g = self.lock.lock().await;
        let n = self.view.clear(&super::kinds::all())?;
        self.view.durable().await?;
        Ok(n)
    }

    /// Waits until every write so far is on disk (group commit).
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        self.view.durable().await.map_err(store_err)
    }

    pub(crate) fn get(&self, kind: Kind, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.view.get(kind, name).map_err(store_err)
    }

    pub(crate) fn put(&self, kind: Kind, name: &[u8], data: &[u8]) -> Result<(), StoreError> {
        self.view.put(kind, name, data).map_err(store_err)
    }

    pub(crate) fn delete(&self, kind: Kind, name: &[u8]) -> Result<(), StoreError> {
        self.view.delete(kind, name).map_err(store_err)
    }

    /// Applies `ops` atomically. A single op is a plain put or delete
    /// (atomic by itself): a sled batch costs two more log writes, each
    /// synced on its own (sled 0.34 rolls its I/O buffer before and after
    /// every batch), which the next flush then waits for.
    pub(crate) fn apply(&self, ops: &[BatchOp]) -> Result<(), StoreError> {
        match ops {
            [] => Ok(()),
            [BatchOp::Put { kind, name, data }] => self.put(*kind, name, data),
            [BatchOp::Delete { kind, name }] => self.delete(*kind, name),
            _ => self.view.apply(ops).map_err(store_err),
        }
    }

    pub(crate) fn scan(&self, kind: Kind) -> Result<Rows, StoreError> {
        self.view.scan(kind).map_err(store_err)
    }

    /// A write overlay over this bot's records (see [`Txn`]).
    pub(crate) fn txn(&self) -> Txn<'_> {
        Txn {
            backend: self,
            writes: BTreeMap::new(),
        }
    }
}

impl Vault {
    /// The whatsapp-rust storage backend of `bot` (which must be in the
    /// vault). Give it to the client builder:
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use wavault::vault::{crypto::KdfParams, BotConfig};
    /// use wavault::{BotId, Vault};
    /// use whatsapp_rust::bot::Bot;
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let vault = Vault::create(Path::new("/var/lib/wavault"), b"passphrase", KdfParams::DEFAULT)?;
    /// let id = BotId::parse("sales")?;
    /// vault.add_bot(&BotConfig::new(id.clone()))?;
    ///
    /// let backend = vault.bot_backend(&id)?;
    /// let bot = Bot::builder()
    ///     .with_backend_arc(backend)
    ///     .on_event(|event, _client| async move {
    ///         println!("{event:?}");
    ///     })
    ///     .build()
    ///     .await?;
    /// bot.run().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bot_backend(&self, bot: &BotId) -> Result<Arc<VaultBackend>> {
        Ok(Arc::new(VaultBackend::new(self.bot(bot)?)))
    }
}

/// The error whatsapp-rust sees for a vault failure. Vault errors name blind
/// record keys and paths only, never secrets.
pub(crate) fn store_err(e: Error) -> StoreError {
    match e {
        Error::Io { source, .. } => StoreError::Io(source),
        other => StoreError::Database(Box::new(other)),
    }
}

/// (name, data) pairs of one kind.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

type LockMap = HashMap<Vec<u8>, Weak<tokio::sync::Mutex<()>>>;

/// The process-wide write lock of the bot behind `view`.
fn bot_lock(view: &BotView) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Option<LockMap>> = Mutex::new(None);
    let mut key = view.vault().id().to_vec();
    key.extend_from_slice(&view.vault().bot_tag(view.bot()));
    // A poisoned registry only means a panic while holding it; the map itself is intact.
    let mut guard = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(lock) = map.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    map.insert(key, Arc::downgrade(&lock));
    lock
}

/// Reads through pending writes, then commits them as one atomic batch.
/// Used under the bot's write lock for multi-record read-modify-writes.
pub(crate) struct Txn<'a> {
    backend: &'a VaultBackend,
    writes: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
}

impl Txn<'_> {
    /// The data under (kind, name), seeing this transaction's own writes.
    pub fn get(&self, kind: Kind, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(&(kind.0, name.to_vec())) {
            Some(w) => Ok(w.clone()),
            None => self.backend.get(kind, name),
        }
    }

    /// Stages a put.
    pub fn put(&mut self, kind: Kind, name: &[u8], data: Vec<u8>) {
        self.writes.insert((kind.0, name.to_vec()), Some(data));
    }

    /// Stages a delete.
    pub fn delete(&mut self, kind: Kind, name: &[u8]) {
        self.writes.insert((kind.0, name.to_vec()), None);
    }

    /// Applies every staged write atomically.
    pub fn commit(self) -> Result<(), StoreError> {
        let ops: Vec<BatchOp> = self
            .writes
            .into_iter()
            .map(|((kind, name), data)| match data {
                Some(data) => BatchOp::Put {
                    kind: Kind(kind),
                    name,
                    data,
                },
                None => BatchOp::Delete {
                    kind: Kind(kind),
                    name,
                },
            })
            .collect();
        self.backend.apply(&ops)
    }
}
