//! Shared helpers: a vault with cheap (explicitly insecure) KDF parameters,
//! bots, and backends over them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wavault::store::VaultBackend;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};

pub const PASS: &[u8] = b"store tests passphrase";
/// Deliberately cheap Argon2 parameters: tests only, never a default.
pub const CHEAP: KdfParams = KdfParams::INSECURE_FOR_TESTS;

pub fn bot(id: &str) -> BotId {
    BotId::parse(id).expect("valid test bot id")
}

/// A new vault in `dir` with the bots `ids`.
pub fn new_vault(dir: &Path, ids: &[&str]) -> Vault {
    let v = Vault::create(dir, PASS, CHEAP).expect("create vault");
    for id in ids {
        v.add_bot(&BotConfig::new(bot(id))).expect("add bot");
    }
    v
}

/// Opens the vault in `dir`, e.g. right after this process closed it.
///
/// Two things can hold a just-released lock for a moment, with nothing to
/// wait on: sled's background I/O jobs keep its database file (and lock) for
/// a moment after the last handle is dropped, and a child process that
/// another test is spawning holds copies of our descriptors (and so their
/// `flock`s) between its fork and its exec. So an in-process reopen polls,
/// for lock errors only, with a deadline.
pub fn open(dir: &Path) -> Vault {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Vault::open(dir, PASS) {
            Ok(v) => return v,
            Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("open vault: {e}"),
        }
    }
}

fn is_lock_error(e: &wavault::Error) -> bool {
    matches!(e, wavault::Error::VaultInUse { .. })
        || e.to_string().contains("could not acquire lock")
}

pub fn backend(v: &Vault, id: &str) -> Arc<VaultBackend> {
    v.bot_backend(&bot(id)).expect("bot backend")
}

/// A multi-threaded runtime for tests that drive the async traits by hand.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
