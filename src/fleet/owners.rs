//! One owner per bot: the ownership protocol over the `<prefix>-owners`
//! key-value bucket (docs/DESIGN.md, "The fleet").
//!
//! - A key per bot holds `{"host", "since", "run"}`: the host id, when it
//!   took the bot, and a random id of the process (`run`).
//! - Take: `create` when the key is absent; `update` on the revision of a
//!   delete marker, or of a key this very process wrote before it lost it
//!   (its bot was stopped then). A key held by anyone else, even an earlier
//!   process of the same host id, is not taken: it frees itself by the
//!   bucket's TTL (its max age) once its holder stops renewing.
//! - Renew: `update` on the last revision, every heartbeat (a third of the
//!   TTL). A wrong revision means the key was taken: the bot stops at once.
//!   No successful renewal for two thirds of the TTL: the bot stops, a third
//!   of the TTL before anyone else may take the key. The clock of that
//!   deadline starts when the renewal was *sent*, before the server wrote
//!   it, so it is never later than the server's own expiry.
//! - Release (clean stop): delete, on our revision only.

use super::{FleetConfig, REQUEST_TIMEOUT};
use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// What a key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Value {
    host: String,
    since: i64,
    #[serde(default)]
    run: String,
}

/// One bot in the bucket (`wavault fleet status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    pub bot: String,
    pub host: String,
    /// Unix seconds when the host took the bot.
    pub since: i64,
    pub revision: u64,
}

/// The outcome of trying to take a bot's key.
#[derive(Debug)]
pub enum Claim {
    /// Ours: the bot may start.
    Taken(Lease),
    /// Another host (or an earlier process) holds it.
    Held { host: String, since: i64 },
}

/// A key we hold: its revision, kept current by the heartbeat.
#[derive(Debug, Clone)]
pub struct Lease {
    pub bot: String,
    pub since: i64,
    revision: Arc<AtomicU64>,
    value: Bytes,
    /// When the last successful write was sent.
    sent: Instant,
}

impl Lease {
    /// The key's current revision.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }
}

/// A random id of this process, kept in the keys it takes.
fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    })
}

fn timed_out(what: &str) -> String {
    format!("{what}: no answer from NATS within {REQUEST_TIMEOUT:?}")
}

/// Tries to take `bot`'s key for `host`.
pub async fn claim(kv: &kv::Store, host: &str, bot: &str) -> Result<Claim, String> {
    let since = crate::vault::now();
    let value = Value {
        host: host.to_owned(),
        since,
        run: run_id().to_owned(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&value).map_err(|e| e.to_string())?);
    let entry = tokio::time::timeout(REQUEST_TIMEOUT, kv.entry(bot))
        .await
        .map_err(|_| timed_out("reading the owner key"))?
        .map_err(|e| format!("reading the owner key: {e}"))?;
    let sent = Instant::now();
    let written = match entry {
        None => tokio::time::timeout(REQUEST_TIMEOUT, kv.create(bot, bytes.clone()))
            .await
            .map_err(|_| timed_out("taking the owner key"))?
            .map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            }),
        // A delete marker, or our own key from before this process lost it
        // (NATS was unreachable; the bot is stopped here): take it on its
        // revision.
        Some(e) if e.operation != Operation::Put || ours(&e.value, host) => {
            tokio::time::timeout(REQUEST_TIMEOUT, kv.update(bot, bytes.clone(), e.revision))
                .await
                .map_err(|_| timed_out("taking the owner key"))?
                .map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                })
        }
        Some(e) => return Ok(held(&e.value)),
    };
    match written {
        Ok(revision) => Ok(Claim::Taken(Lease {
            bot: bot.to_owned(),
            since,
            revision: Arc::new(AtomicU64::new(revision)),
            value: bytes,
            sent,
        })),
        // Someone took it between our read and our write.
        Err((true, _)) => {
            let now = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(bot))
                .await
                .map_err(|_| timed_out("reading the owner key"))?
                .map_err(|e| format!("reading the owner key: {e}"))?;
            Ok(now.map(|v| held(&v)).unwrap_or(Claim::Held {
                host: "another host".into(),
                since,
            }))
        }
        Err((false, e)) => Err(format!("taking the owner key: {e}")),
    }
}

/// Whether a key's value was written by this very process.
fn ours(value: &[u8], host: &str) -> bool {
    serde_json::from_slice::<Value>(value).is_ok_and(|v| v.host == host && v.run == run_id())
}

fn held(value: &[u8]) -> Claim {
    match serde_json::from_slice::<Value>(value) {
        Ok(v) => Claim::Held {
            host: v.host,
            since: v.since,
        },
        Err(_) => Claim::Held {
            host: "(unreadable owner record)".into(),
            since: 0,
        },
    }
}

/// Keeps `lease` renewed every heartbeat until the task is aborted. The
/// returned receiver becomes `Some(reason)` when the lease is lost (taken
/// by someone else, or not renewed for [`FleetConfig::keep_for`]); the
/// task ends then.
pub fn keep(
    kv: kv::Store,
    cfg: &FleetConfig,
    lease: &Lease,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<Option<String>>) {
    let (tx, rx) = watch::channel(None);
    let (heartbeat, keep_for) = (cfg.heartbeat(), cfg.keep_for());
    let lease = lease.clone();
    let h = tokio::spawn(async move {
        let mut deadline = lease.sent + keep_for;
        let mut next = Instant::now() + heartbeat;
        loop {
            tokio::time::sleep_until(next.min(deadline)).await;
            if Instant::now() >= deadline {
                let _ = tx.send(Some(format!(
                    "the owner key could not be renewed for {keep_for:?} (NATS unreachable?)"
                )));
                return;
            }
            let sent = Instant::now();
            next = sent + heartbeat;
            let rev = lease.revision();
            let r =
                tokio::time::timeout_at(deadline, kv.update(&lease.bot, lease.value.clone(), rev))
                    .await;
            match r {
                Ok(Ok(rev)) => {
                    lease.revision.store(rev, Ordering::SeqCst);
                    deadline = sent + keep_for;
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let _ = tx.send(Some(
                        "the owner key was changed by someone else (taken by another host)".into(),
                    ));
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!("renewing the owner key failed: {e}");
                }
                Err(_) => {}
            }
        }
    });
    (h, rx)
}

/// Deletes the key if it is still ours (on a clean stop).
pub async fn release(kv: &kv::Store, lease: &Lease) -> Result<(), String> {
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        kv.delete_expect_revision(&lease.bot, Some(lease.revision())),
    )
    .await
    .map_err(|_| timed_out("releasing the owner key"))?
    .map_err(|e| format!("releasing the owner key: {e}"))
}

/// Every key that holds an owner, sorted by bot.
pub async fn list(kv: &kv::Store) -> Result<Vec<Owner>, String> {
    use futures_util::StreamExt as _;
    let mut keys = kv
        .keys()
        .await
        .map_err(|e| format!("listing the owners bucket: {e}"))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| format!("listing the owners bucket: {e}"))?;
        let Some(e) = kv
            .entry(&k)
            .await
            .map_err(|e| format!("reading owner {k}: {e}"))?
        else {
            continue;
        };
        if e.operation != Operation::Put {
            continue;
        }
        let (host, since) = match serde_json::from_slice::<Value>(&e.value) {
            Ok(v) => (v.host, v.since),
            Err(_) => ("(unreadable owner record)".into(), 0),
        };
        out.push(Owner {
            bot: k,
            host,
            since,
            revision: e.revision,
        });
    }
    out.sort_by(|a, b| a.bot.cmp(&b.bot));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::testserver::NatsServer;
    use std::time::Duration;

    fn cfg(url: &str) -> FleetConfig {
        let mut c = FleetConfig::new(url, "host-a");
        c.prefix = "ownt".into();
        c.owner_ttl = Duration::from_secs(3);
        c
    }

    async fn bucket(c: &FleetConfig) -> kv::Store {
        crate::fleet::connect(c).await.expect("connects").owners
    }

    /// The whole protocol against a real server: one holder at a time,
    /// renewal past the TTL, release hands over at once, a dead holder's
    /// key expires after the TTL (not before), and a holder cut off from
    /// NATS learns it lost the key before the TTL is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_renewed_released_expired_and_lost() {
        let mut server = NatsServer::start();
        let c = cfg(&server.url);
        let kv = bucket(&c).await;
        let Claim::Taken(a) = claim(&kv, "host-a", "bot1").await.unwrap() else {
            panic!("a free key is taken")
        };
        // Another host: held, naming the holder.
        match claim(&kv, "host-b", "bot1").await.unwrap() {
            Claim::Held { host, .. } => assert_eq!(host, "host-a"),
            Claim::Taken(_) => panic!("two holders of one key"),
        }
        // Kept: still held after twice the TTL.
        let (keeper, lost) = keep(kv.clone(), &c, &a);
        let end = Instant::now() + c.owner_ttl * 2;
        while Instant::now() < end {
            assert!(
                matches!(
                    claim(&kv, "host-b", "bot1").await.unwrap(),
                    Claim::Held { .. }
                ),
                "a renewed key was taken"
            );
            assert!(lost.borrow().is_none(), "{:?}", lost.borrow());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(a.revision() > 1, "renewals moved the revision");
        // Released: the other host takes it at once.
        keeper.abort();
        release(&kv, &a).await.unwrap();
        let Claim::Taken(b) = claim(&kv, "host-b", "bot1").await.unwrap() else {
            panic!("a released key is free")
        };
        assert_eq!(list(&kv).await.unwrap()[0].host, "host-b");
        // This very process takes back a key it wrote (after it lost it,
        // its bot stopped); another process of the same host id may not.
        let Claim::Taken(_) = claim(&kv, "host-e", "bot3").await.unwrap() else {
            panic!("a free key is taken")
        };
        assert!(matches!(
            claim(&kv, "host-e", "bot3").await.unwrap(),
            Claim::Taken(_)
        ));
        assert!(matches!(
            claim(&kv, "host-f", "bot3").await.unwrap(),
            Claim::Held { .. }
        ));
        // host-b dies (no renewal, no release): held until the TTL, then free.
        let died = Instant::now();
        let mut taken_at = None;
        while taken_at.is_none() {
            if let Claim::Taken(_) = claim(&kv, "host-c", "bot1").await.unwrap() {
                taken_at = Some(died.elapsed());
            }
            assert!(
                died.elapsed() < Duration::from_secs(60),
                "the dead holder's key never expired"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = taken_at.unwrap();
        assert!(
            after >= c.keep_for(),
            "taken {after:?} after the holder died: before its margin"
        );
        drop(b);
        // A holder cut off from NATS is told before the TTL is over.
        let Claim::Taken(d) = claim(&kv, "host-d", "bot2").await.unwrap() else {
            panic!("a free key is taken")
        };
        let (_keeper, mut lost) = keep(kv.clone(), &c, &d);
        let cut = Instant::now();
        server.stop();
        tokio::time::timeout(Duration::from_secs(30), lost.wait_for(|l| l.is_some()))
            .await
            .expect("the lost key is noticed")
            .unwrap();
        let noticed = cut.elapsed();
        assert!(
            noticed < c.owner_ttl,
            "noticed {noticed:?} after the cut: others could take the key from {:?}",
            c.owner_ttl
        );
        assert!(lost
            .borrow()
            .as_deref()
            .unwrap()
            .contains("could not be renewed"));
    }

    /// A bucket made with another TTL is refused: each host computes its
    /// deadlines from its own TTL, so they must agree with the bucket's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_with_another_ttl_is_refused() {
        let server = NatsServer::start();
        let c = cfg(&server.url);
        bucket(&c).await;
        let mut other = c.clone();
        other.owner_ttl = Duration::from_secs(30);
        let e = crate::fleet::connect(&other).await.err().expect("refused");
        assert!(e.contains("--nats-owner-ttl 3s"), "{e}");
    }
}
