//! Storage backends under a bot's message traffic, side by side.
//!
//! The same workload runs through: this crate's `VaultBackend` (sealed,
//! blind-indexed records in sled, durable writes by group commit),
//! whatsapp-rust's SQLite store (one database per bot, as whatsapp-rust runs
//! it) with `synchronous=FULL` (durable like the vault) and with its default
//! (`NORMAL`), the reference `InMemoryBackend`, and plain unencrypted sled
//! (the floor for the vault). Plain sled is made power-cut safe the way the
//! vault is: after each durable write, sled's flush and then `fdatasync` of
//! its data file (`<dir>/db`; sled itself only `sync_file_range`s it), so
//! both pay for the same durability.
//!
//! One "message" of a bot: read the contact's session, write it back
//! (durable), read and write the group sender key (durable), store the sent
//! message, store its message secret, take the sent message back (a retry
//! receipt); every 50th message also a batch of 50 pre-keys (durable).
//! Bots run concurrently as tokio tasks, 1, 10 and 100 of them, each for a
//! fixed wall time. Reported: trait calls per second over all bots, and the
//! p50/p99 latency of the durable writes.
//!
//! Run: `cargo bench --bench backend` (about 45 s of measuring), or
//! `WAVAULT_BENCH_QUICK=1 cargo bench --bench backend` for a smoke run.
//! `WAVAULT_BENCH_ONLY=<part of a backend name>` and `WAVAULT_BENCH_BOTS=1,10`
//! narrow a run (for profiling).
//! The vault uses cheap Argon2 parameters (key derivation is not measured).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wacore::store::traits::{Backend, MsgSecretEntry};
use wacore::store::InMemoryBackend;
use wavault::vault::crypto::KdfParams;
use wavault::vault::BotConfig;
use wavault::{BotId, Vault};
use whatsapp_rust::bytes::Bytes;
use whatsapp_rust_sqlite_storage::{SqliteStore, SqliteStoreConfig, Synchronous};

const CONTACTS: u64 = 20;
const PREKEY_EVERY: u64 = 50;
const PREKEY_BATCH: u32 = 50;

/// Plain sled, no encryption: the same keys in clear, sled's flush and an
/// `fdatasync` of its data file for durability (power-cut safe, as the
/// vault's flush is).
struct RawSled {
    tree: sled::Db,
    /// sled's data file, for `fdatasync`.
    data: std::fs::File,
}

impl RawSled {
    /// Flush and fdatasync on a blocking thread (sled's own `flush_async`
    /// stalls under concurrent callers in 0.34).
    async fn flush(self: &Arc<Self>) -> Res<()> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || -> Res<()> {
            me.tree.flush()?;
            me.data.sync_data()?;
            Ok(())
        })
        .await??;
        Ok(())
    }
}

/// What the workload runs against.
#[derive(Clone)]
enum Target {
    Backend(Arc<dyn Backend>),
    Sled(Arc<RawSled>, Vec<u8>),
}

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Target {
    fn key(prefix: &[u8], kind: u8, name: &str) -> Vec<u8> {
        let mut k = prefix.to_vec();
        k.push(kind);
        k.extend_from_slice(name.as_bytes());
        k
    }

    async fn get(&self, kind: u8, name: &str) -> Res<Option<Vec<u8>>> {
        match self {
            Target::Backend(b) => Ok(match kind {
                1 => b.get_session(name).await?.map(|b| b.to_vec()),
                _ => b.get_sender_key(name).await?,
            }),
            Target::Sled(s, p) => Ok(s.tree.get(Self::key(p, kind, name))?.map(|v| v.to_vec())),
        }
    }

    async fn put_durable(&self, kind: u8, name: &str, data: &[u8]) -> Res<()> {
        match self {
            Target::Backend(b) if kind == 1 => Ok(b.put_session(name, data).await?),
            Target::Backend(b) => Ok(b.put_sender_key(name, data).await?),
            Target::Sled(s, p) => {
                s.tree.insert(Self::key(p, kind, name), data)?;
                s.flush().await
            }
        }
    }

    async fn prekeys(&self, first: u32) -> Res<()> {
        let keys: Vec<(u32, Bytes)> = (first..first + PREKEY_BATCH)
            .map(|i| (i, Bytes::from(vec![7u8; 100])))
            .collect();
        match self {
            Target::Backend(b) => Ok(b.store_prekeys_batch(&keys, false).await?),
            Target::Sled(s, p) => {
                let mut batch = sled::Batch::default();
                for (i, r) in &keys {
                    batch.insert(Self::key(p, 3, &i.to_string()), r.to_vec());
                }
                s.tree.apply_batch(batch)?;
                s.flush().await
            }
        }
    }

    async fn sent_and_secret(&self, chat: &str, id: &str) -> Res<()> {
        let payload = vec![9u8; 200];
        match self {
            Target::Backend(b) => {
                b.store_sent_message(chat, id, &payload).await?;
                b.put_msg_secrets(vec![MsgSecretEntry {
                    chat: Arc::from(chat),
                    sender: Arc::from("me@s.whatsapp.net"),
                    msg_id: Arc::from(id),
                    secret: [5; 32],
                    expires_at: 0,
                    message_ts: 0,
                }])
                .await?;
                let got = b.take_sent_message(chat, id).await?;
                assert!(got.is_some(), "sent message taken back");
            }
            Target::Sled(s, p) => {
                let k = Self::key(p, 4, &format!("{chat}/{id}"));
                s.tree.insert(&k, payload)?;
                s.tree
                    .insert(Self::key(p, 5, &format!("{chat}/me/{id}")), &[5u8; 32][..])?;
                let got = s.tree.remove(&k)?;
                assert!(got.is_some(), "sent message taken back");
            }
        }
        Ok(())
    }
}

/// What one bot measured.
#[derive(Default)]
struct Tally {
    ops: u64,
    durable_ns: Vec<u64>,
}

async fn timed<F: std::future::Future<Output = Res<()>>>(t: &mut Tally, f: F) -> Res<()> {
    let start = Instant::now();
    f.await?;
    t.durable_ns.push(start.elapsed().as_nanos() as u64);
    t.ops += 1;
    Ok(())
}

/// One bot's message loop until `until`.
async fn bot_loop(target: Target, bot: usize, until: Instant) -> Res<Tally> {
    let mut t = Tally::default();
    let session = vec![1u8; 600];
    let sender_key = vec![2u8; 300];
    let group = format!("12036300000{bot:04}@g.us::me");
    let mut n = 0u64;
    while Instant::now() < until {
        let contact = format!("1555{:04}@s.whatsapp.net.0", n % CONTACTS);
        target.get(1, &contact).await?;
        timed(&mut t, target.put_durable(1, &contact, &session)).await?;
        target.get(2, &group).await?;
        timed(&mut t, target.put_durable(2, &group, &sender_key)).await?;
        target
            .sent_and_secret(
                &format!("1555{:04}@s.whatsapp.net", n % CONTACTS),
                &format!("3EB0{n:012X}"),
            )
            .await?;
        t.ops += 5; // two reads, store + secret + take
        if n.is_multiple_of(PREKEY_EVERY) {
            timed(
                &mut t,
                target.prekeys((n / PREKEY_EVERY) as u32 * PREKEY_BATCH + 1),
            )
            .await?;
        }
        n += 1;
    }
    Ok(t)
}

/// A backend under test: builds one target per bot in `dir`.
struct Kind {
    name: &'static str,
    build: fn(&Path, usize) -> SetupFuture,
}

type SetupFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Setup>>>;

struct Setup {
    targets: Vec<Target>,
    /// Fsyncs run by the vault, when it is the vault.
    vault: Option<Vault>,
}

fn bot_id(i: usize) -> BotId {
    BotId::parse(&format!("bot-{i}")).expect("valid bot id")
}

fn vault_setup(dir: &Path, bots: usize) -> SetupFuture {
    let dir = dir.to_path_buf();
    Box::pin(async move {
        // Cheap Argon2: key derivation is not what is measured here.
        let v = Vault::create(&dir, b"bench", KdfParams::INSECURE_FOR_TESTS).expect("create vault");
        let mut targets = Vec::new();
        for i in 0..bots {
            v.add_bot(&BotConfig::new(bot_id(i))).expect("add bot");
            targets.push(Target::Backend(v.bot_backend(&bot_id(i)).expect("backend")));
        }
        Setup {
            targets,
            vault: Some(v),
        }
    })
}

fn sqlite_setup(dir: &Path, bots: usize, sync: Option<Synchronous>) -> SetupFuture {
    let dir = dir.to_path_buf();
    Box::pin(async move {
        let mut targets = Vec::new();
        for i in 0..bots {
            let path = dir.join(format!("bot-{i}.db"));
            let url = path.to_str().expect("utf-8 path").to_string();
            let mut config = SqliteStoreConfig::default();
            if let Some(s) = sync {
                config.synchronous = s;
            }
            let store = SqliteStore::with_config(&url, config)
                .await
                .expect("sqlite store");
            targets.push(Target::Backend(Arc::new(store)));
        }
        Setup {
            targets,
            vault: None,
        }
    })
}

const KINDS: &[Kind] = &[
    Kind {
        name: "vault (sealed sled, group commit)",
        build: vault_setup,
    },
    Kind {
        name: "sqlite synchronous=FULL",
        build: |d, n| sqlite_setup(d, n, Some(Synchronous::Full)),
    },
    Kind {
        name: "sqlite default (NORMAL)",
        build: |d, n| sqlite_setup(d, n, None),
    },
    Kind {
        name: "plain sled + flush + fdatasync",
        build: |d, n| {
            let d = d.to_path_buf();
            Box::pin(async move {
                let tree = sled::Config::new()
                    .path(d.join("raw"))
                    .mode(sled::Mode::LowSpace)
                    .open()
                    .expect("open sled");
                let data = std::fs::File::open(d.join("raw").join("db")).expect("sled data file");
                let raw = Arc::new(RawSled { tree, data });
                Setup {
                    targets: (0..n)
                        .map(|i| Target::Sled(raw.clone(), format!("bot-{i}/").into_bytes()))
                        .collect(),
                    vault: None,
                }
            })
        },
    },
    Kind {
        name: "InMemoryBackend (no durability)",
        build: |_, n| {
            Box::pin(async move {
                Setup {
                    targets: (0..n)
                        .map(|_| Target::Backend(Arc::new(InMemoryBackend::new())))
                        .collect(),
                    vault: None,
                }
            })
        },
    },
];

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn main() {
    let quick = std::env::var_os("WAVAULT_BENCH_QUICK").is_some();
    let run_for = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "backend benchmark: {} per run, {} cores{}",
        humantime(run_for),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if quick { " (quick mode)" } else { "" }
    );
    println!(
        "{:<36} {:>5} {:>11} {:>12} {:>12} {:>10} {:>8}",
        "backend", "bots", "calls/s", "durable p50", "durable p99", "durable", "fsyncs"
    );
    let only = std::env::var("WAVAULT_BENCH_ONLY").unwrap_or_default();
    let bot_counts: Vec<usize> = std::env::var("WAVAULT_BENCH_BOTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 100]);
    for &bots in &bot_counts {
        for kind in KINDS.iter().filter(|k| k.name.contains(only.as_str())) {
            let dir = tempfile::tempdir().expect("tempdir");
            let setup = rt.block_on((kind.build)(dir.path(), bots));
            let flushes_before = setup.vault.as_ref().map(Vault::flush_count);
            let until = Instant::now() + run_for;
            let start = Instant::now();
            let tallies: Vec<Tally> = rt.block_on(async {
                let tasks: Vec<_> = setup
                    .targets
                    .iter()
                    .cloned()
                    .enumerate()
                    .map(|(i, t)| tokio::spawn(bot_loop(t, i, until)))
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("bot task").expect("bot workload"));
                }
                out
            });
            let elapsed = start.elapsed().as_secs_f64();
            let ops: u64 = tallies.iter().map(|t| t.ops).sum();
            let mut lat: Vec<u64> = tallies.into_iter().flat_map(|t| t.durable_ns).collect();
            lat.sort_unstable();
            let fsyncs = match (&setup.vault, flushes_before) {
                (Some(v), Some(b)) => (v.flush_count() - b).to_string(),
                _ => "-".into(),
            };
            println!(
                "{:<36} {:>5} {:>11.0} {:>9.3} ms {:>9.3} ms {:>10} {:>8}",
                kind.name,
                bots,
                ops as f64 / elapsed,
                percentile(&lat, 0.50),
                percentile(&lat, 0.99),
                lat.len(),
                fsyncs
            );
            drop(setup);
        }
    }
}

fn humantime(d: Duration) -> String {
    if d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
