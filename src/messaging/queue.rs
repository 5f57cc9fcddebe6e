//! The durable inbound queue and the traffic counters of one bot.
//!
//! Why it exists: an inbound message must survive a webhook outage and a
//! crash. whatsapp-rust's inbound durability hook calls [`Queue::enqueue`]
//! before the message is acknowledged to WhatsApp; only when the sealed
//! entry is durable does the hook return `Ok` (and the server drop its copy).
//! The delivery worker (`runner::deliver`) hands entries to the operator's
//! hook and removes them only after the hook accepted them and the actions
//! it asked for were carried out.
//!
//! Records (both sealed like every other record, see docs/FORMAT.md):
//! - [`Kind::INBOUND`], name `chat \0 sender \0 id`: one [`Queued`] per
//!   message. The name makes a redelivered message land on the same record
//!   (the hook must be idempotent: the library may replay a batch).
//! - [`Kind::TRAFFIC`], name `t`: one [`Traffic`] per bot: the queue's next
//!   sequence number, inbound/outbound totals, hourly buckets for `stats`,
//!   and the counts of hook failures, refused (queue full) and expired
//!   messages.
//!
//! Ordering: entries carry a per-bot sequence number; delivery is in that
//! order within a chat.

use crate::codec;
use crate::error::{Error, Result};
use crate::vault::{BatchOp, BotView, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

const TRAFFIC_NAME: &[u8] = b"t";
/// Hourly traffic buckets older than this are dropped.
pub const TRAFFIC_KEEP: Duration = Duration::from_secs(31 * 86_400);

/// One queued inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Per-bot sequence number (delivery order within a chat).
    pub seq: u64,
    pub chat: String,
    pub sender: String,
    pub id: String,
    /// Unix seconds when the message was queued.
    pub received_at: i64,
    /// The JSON object handed to the hook.
    pub summary: String,
    /// Failed hook calls (or failed actions) so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Set once the hook accepted the message: the actions (JSON array)
    /// still to carry out. The entry goes once this is empty.
    pub accepted: Option<String>,
    /// Taken out of delivery because it outlived the queue's age limit;
    /// kept until the operator retries or drops it (`wavault queue`).
    pub held: bool,
}

impl Queued {
    fn name(chat: &str, sender: &str, id: &str) -> Vec<u8> {
        [
            chat.as_bytes(),
            b"\0",
            sender.as_bytes(),
            b"\0",
            id.as_bytes(),
        ]
        .concat()
    }

    /// The record name of this entry.
    pub fn record_name(&self) -> Vec<u8> {
        Self::name(&self.chat, &self.sender, &self.id)
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub chat: String,
    pub sender: String,
    pub id: String,
    pub summary: String,
}

/// Counters of one bot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Sequence number the next queued message gets.
    pub next_seq: u64,
    /// Inbound messages received (queued ones counted once).
    pub inbound: u64,
    /// Messages sent (replies, reactions, `send`).
    pub outbound: u64,
    /// Hook calls that failed (error, non-2xx, non-zero exit, time limit).
    pub hook_failures: u64,
    /// Inbound messages refused because the queue was full (left unacknowledged
    /// on the server, which delivers them again at the next connection).
    pub refused_full: u64,
    /// Queued messages held back because they outlived the queue's age
    /// limit (each time an alert; `wavault queue retry|drop` decides).
    pub expired: u64,
    /// Hour start (unix seconds) → (inbound, outbound) in that hour.
    pub hours: BTreeMap<i64, (u64, u64)>,
}

impl Traffic {
    fn count(&mut self, now: i64, inbound: u64, outbound: u64) {
        self.inbound += inbound;
        self.outbound += outbound;
        let hour = now - now.rem_euclid(3600);
        let b = self.hours.entry(hour).or_insert((0, 0));
        b.0 += inbound;
        b.1 += outbound;
        let cutoff = now - TRAFFIC_KEEP.as_secs() as i64;
        self.hours.retain(|h, _| *h >= cutoff - 3600);
    }

    /// (inbound, outbound) in hours that start in `(since - 1 h, now]`: the
    /// window rounded out to whole hours.
    pub fn window(&self, since: i64, now: i64) -> (u64, u64) {
        self.hours
            .range(since - since.rem_euclid(3600)..=now)
            .fold((0, 0), |acc, (_, b)| (acc.0 + b.0, acc.1 + b.1))
    }
}

/// Why [`Queue::enqueue`] refused a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Taking the batch would exceed the size limit.
    Full { queued: usize, max: usize },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full { queued, max } => write!(
                f,
                "inbound queue full ({queued} of {max} messages waiting for the hook)"
            ),
        }
    }
}

/// The queue and counters of one bot. Writers of one bot share one `Queue`
/// (its lock keeps sequence numbers and counters consistent).
#[derive(Debug)]
pub struct Queue {
    view: BotView,
    lock: Mutex<()>,
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    codec::decode(b).map_err(|e| Error::damaged(format!("{what} is malformed: {e}")))
}

impl Queue {
    /// The bot whose queue this is.
    pub fn bot(&self) -> &crate::BotId {
        self.view.bot()
    }

    /// The vault the queue is in.
    pub fn vault(&self) -> &crate::vault::Vault {
        self.view.vault()
    }

    pub fn new(view: BotView) -> Self {
        Queue {
            view,
            lock: Mutex::new(()),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of queued messages (nothing is decrypted).
    pub fn len(&self) -> Result<usize> {
        self.view.count(Kind::INBOUND)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The counters (zero if none were written yet).
    pub fn traffic(&self) -> Result<Traffic> {
        match self.view.get(Kind::TRAFFIC, TRAFFIC_NAME)? {
            Some(b) => decode(&b, "traffic counters"),
            None => Ok(Traffic::default()),
        }
    }

    fn put_traffic(t: &Traffic) -> BatchOp {
        BatchOp::Put {
            kind: Kind::TRAFFIC,
            name: TRAFFIC_NAME.to_vec(),
            data: codec::encode(t),
        }
    }

    /// Queues `batch` (all or nothing, one atomic write) and waits until it
    /// is durable. Messages already queued (a redelivery) are skipped.
    /// Returns the new entries, or `Refused` (nothing written but the
    /// refusal counter) when the queue would exceed `max`.
    pub async fn enqueue(
        &self,
        batch: &[NewMessage],
        max: usize,
        now: i64,
    ) -> Result<std::result::Result<Vec<Queued>, Refused>> {
        self.enqueue_counted(batch, max, now, true).await
    }

    /// Queues events (`messaging::events`) like [`Queue::enqueue`], in the
    /// same sequence (so in order with the messages of their chat), without
    /// counting them as inbound messages.
    pub async fn enqueue_events(
        &self,
        batch: &[NewMessage],
        max: usize,
        now: i64,
    ) -> Result<std::result::Result<Vec<Queued>, Refused>> {
        self.enqueue_counted(batch, max, now, false).await
    }

    async fn enqueue_counted(
        &self,
        batch: &[NewMessage],
        max: usize,
        now: i64,
        inbound: bool,
    ) -> Result<std::result::Result<Vec<Queued>, Refused>> {
        let outcome = {
            let _g = self.guard();
            let mut fresh = Vec::new();
            for m in batch {
                let name = Queued::name(&m.chat, &m.sender, &m.id);
                let dup = fresh
                    .iter()
                    .any(|(n, _): &(Vec<u8>, &NewMessage)| *n == name);
                if !dup && self.view.get(Kind::INBOUND, &name)?.is_none() {
                    fresh.push((name, m));
                }
            }
            let queued = self.len()?;
            let mut t = self.traffic()?;
            if queued + fresh.len() > max {
                t.refused_full += fresh.len() as u64;
                self.view.apply(&[Self::put_traffic(&t)])?;
                Err(Refused::Full { queued, max })
            } else {
                let mut ops = Vec::with_capacity(fresh.len() + 1);
                let mut created = Vec::with_capacity(fresh.len());
                for (name, m) in &fresh {
                    let q = Queued {
                        seq: t.next_seq,
                        chat: m.chat.clone(),
                        sender: m.sender.clone(),
                        id: m.id.clone(),
                        received_at: now,
                        summary: m.summary.clone(),
                        attempts: 0,
                        last_error: None,
                        accepted: None,
                        held: false,
                    };
                    t.next_seq += 1;
                    ops.push(BatchOp::Put {
                        kind: Kind::INBOUND,
                        name: name.clone(),
                        data: codec::encode(&q),
                    });
                    created.push(q);
                }
                if inbound {
                    // Events riding along with messages are not messages.
                    let messages = fresh
                        .iter()
                        .filter(|(_, m)| !crate::messaging::events::is_event_sender(&m.sender))
                        .count();
                    t.count(now, messages as u64, 0);
                }
                ops.push(Self::put_traffic(&t));
                self.view.apply(&ops)?;
                Ok(created)
            }
        };
        self.view.durable().await?;
        Ok(outcome)
    }

    /// Every queued message, oldest (lowest sequence number) first.
    pub fn pending(&self) -> Result<Vec<Queued>> {
        let mut v: Vec<Queued> = self
            .view
            .scan(Kind::INBOUND)?
            .into_iter()
            .map(|(_, d)| decode(&d, "a queued inbound message"))
            .collect::<Result<_>>()?;
        v.sort_by_key(|q| q.seq);
        Ok(v)
    }

    /// Stores a changed entry (attempts, error, accepted actions) and waits
    /// until it is durable.
    pub async fn update(&self, q: &Queued) -> Result<()> {
        {
            let _g = self.guard();
            self.view
                .put(Kind::INBOUND, &q.record_name(), &codec::encode(q))?;
        }
        self.view.durable().await
    }

    /// Removes a delivered entry, counting `outbound` messages it caused,
    /// and waits until that is durable.
    pub async fn remove(&self, q: &Queued, now: i64, outbound: u64) -> Result<()> {
        {
            let _g = self.guard();
            let mut ops = vec![BatchOp::Delete {
                kind: Kind::INBOUND,
                name: q.record_name(),
            }];
            if outbound > 0 {
                let mut t = self.traffic()?;
                t.count(now, 0, outbound);
                ops.push(Self::put_traffic(&t));
            }
            self.view.apply(&ops)?;
        }
        self.view.durable().await
    }

    /// Adds to the counters: messages received outside the queue, messages
    /// sent, hook failures. Not made durable by itself (no fsync, nothing to
    /// wait for: the lock is held for one in-memory write only): counters
    /// ride along with the next durable write, and a crash may lose the last
    /// few counts, never a message.
    pub fn count(&self, now: i64, inbound: u64, outbound: u64, hook_failures: u64) -> Result<()> {
        let _g = self.guard();
        let mut t = self.traffic()?;
        t.count(now, inbound, outbound);
        t.hook_failures += hook_failures;
        self.view.apply(&[Self::put_traffic(&t)])
    }

    /// Holds back entries queued before `now - max_age` (they stay, out of
    /// delivery, counted as expired) and returns the newly held ones (the
    /// caller alerts), once that is durable.
    pub async fn expire(&self, max_age: Duration, now: i64) -> Result<Vec<Queued>> {
        let old = self.expire_locked(max_age, now)?;
        if !old.is_empty() {
            self.view.durable().await?;
        }
        Ok(old)
    }

    fn expire_locked(&self, max_age: Duration, now: i64) -> Result<Vec<Queued>> {
        let cutoff = now - max_age.as_secs() as i64;
        // Read and write under one lock: a delivery's update or removal in
        // between must not be overwritten by a stale copy.
        let _g = self.guard();
        let old: Vec<Queued> = self
            .pending()?
            .into_iter()
            .filter(|q| !q.held && q.received_at < cutoff)
            .map(|mut q| {
                q.held = true;
                q
            })
            .collect();
        if old.is_empty() {
            return Ok(old);
        }
        let mut t = self.traffic()?;
        t.expired += old.len() as u64;
        let mut ops: Vec<BatchOp> = old
            .iter()
            .map(|q| BatchOp::Put {
                kind: Kind::INBOUND,
                name: q.record_name(),
                data: codec::encode(q),
            })
            .collect();
        ops.push(Self::put_traffic(&t));
        self.view.apply(&ops)?;
        Ok(old)
    }

    /// Puts held entries back into delivery (as if received `now`, with
    /// their failure count reset). Returns how many, once durable.
    pub async fn release(&self, now: i64) -> Result<usize> {
        let n = self.release_locked(now)?;
        self.view.durable().await?;
        Ok(n)
    }

    fn release_locked(&self, now: i64) -> Result<usize> {
        let _g = self.guard();
        let held: Vec<Queued> = self.pending()?.into_iter().filter(|q| q.held).collect();
        let ops: Vec<BatchOp> = held
            .iter()
            .map(|q| {
                let mut q = q.clone();
                q.held = false;
                q.attempts = 0;
                q.received_at = now;
                BatchOp::Put {
                    kind: Kind::INBOUND,
                    name: q.record_name(),
                    data: codec::encode(&q),
                }
            })
            .collect();
        self.view.apply(&ops)?;
        Ok(held.len())
    }

    /// Deletes the held entries (the operator's decision). Returns them,
    /// once durable.
    pub async fn drop_held(&self) -> Result<Vec<Queued>> {
        let held = self.drop_held_locked()?;
        self.view.durable().await?;
        Ok(held)
    }

    fn drop_held_locked(&self) -> Result<Vec<Queued>> {
        let _g = self.guard();
        let held: Vec<Queued> = self.pending()?.into_iter().filter(|q| q.held).collect();
        let ops: Vec<BatchOp> = held
            .iter()
            .map(|q| BatchOp::Delete {
                kind: Kind::INBOUND,
                name: q.record_name(),
            })
            .collect();
        // Marks the vault for a data-key rotation at the next sweep (the
        // dropped texts stay in sled's files until then); the caller awaits
        // the group commit.
        self.view.vault().purging(|| self.view.apply(&ops))?;
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{crypto::KdfParams, BotConfig, Vault};
    use crate::BotId;

    fn vault() -> (tempfile::TempDir, Vault, BotId) {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::create(&d.path().join("v"), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        let id = BotId::parse("sales").unwrap();
        v.add_bot(&BotConfig::new(id.clone())).unwrap();
        (d, v, id)
    }

    fn msg(chat: &str, id: &str) -> NewMessage {
        NewMessage {
            chat: chat.into(),
            sender: chat.into(),
            id: id.into(),
            summary: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    use crate::messaging::test_runtime as rt;

    #[test]
    fn enqueue_orders_dedups_and_counts() {
        let (_d, v, id) = vault();
        let q = Queue::new(v.view(&id));
        rt().block_on(async {
            let n = q
                .enqueue(&[msg("a", "1"), msg("b", "2"), msg("a", "3")], 10, 1000)
                .await
                .unwrap();
            assert_eq!(n.map(|v| v.len()), Ok(3));
            // A redelivered batch (same chat, sender, id) adds nothing.
            let n = q
                .enqueue(&[msg("a", "1"), msg("a", "4"), msg("a", "4")], 10, 1001)
                .await
                .unwrap();
            assert_eq!(n.map(|v| v.len()), Ok(1));
        });
        let p = q.pending().unwrap();
        let ids: Vec<&str> = p.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3", "4"]);
        assert_eq!(p.iter().map(|m| m.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        let t = q.traffic().unwrap();
        assert_eq!((t.inbound, t.next_seq), (4, 4));
        assert_eq!(t.window(0, 2000), (4, 0));
    }

    /// Events share the messages' sequence (order per chat) and their
    /// record names (a repeated receipt lands on the same record), and are
    /// not counted as inbound messages, also when they ride along with one.
    #[test]
    fn events_are_queued_in_sequence_and_not_counted_as_messages() {
        let (_d, v, id) = vault();
        let q = Queue::new(v.view(&id));
        let event = |chat: &str, id: &str| NewMessage {
            sender: "event:receipt:read".into(),
            ..msg(chat, id)
        };
        rt().block_on(async {
            q.enqueue(&[msg("a", "1")], 10, 1000)
                .await
                .unwrap()
                .unwrap();
            let e = q
                .enqueue_events(&[event("a", "1"), event("a", "1")], 10, 1000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(e.len(), 1);
            q.enqueue(&[msg("a", "2"), event("a", "2")], 10, 1000)
                .await
                .unwrap()
                .unwrap();
        });
        let p = q.pending().unwrap();
        let order: Vec<(&str, &str)> = p
            .iter()
            .map(|m| (m.id.as_str(), m.sender.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("1", "a"),
                ("1", "event:receipt:read"),
                ("2", "a"),
                ("2", "event:receipt:read")
            ]
        );
        let t = q.traffic().unwrap();
        assert_eq!((t.inbound, t.next_seq), (2, 4));
    }

    #[test]
    fn full_queue_refuses_the_whole_batch_and_counts_it() {
        let (_d, v, id) = vault();
        let q = Queue::new(v.view(&id));
        rt().block_on(async {
            let one = q.enqueue(&[msg("a", "1")], 2, 0).await.unwrap().unwrap();
            assert_eq!(one.len(), 1);
            assert_eq!(one[0], q.pending().unwrap()[0]);
            let r = q
                .enqueue(&[msg("a", "2"), msg("a", "3")], 2, 0)
                .await
                .unwrap();
            assert_eq!(r, Err(Refused::Full { queued: 1, max: 2 }));
        });
        assert_eq!(q.len().unwrap(), 1);
        assert_eq!(q.traffic().unwrap().refused_full, 2);
    }

    #[test]
    fn update_remove_and_expire() {
        let (_d, v, id) = vault();
        let q = Queue::new(v.view(&id));
        rt().block_on(async {
            q.enqueue(&[msg("a", "1")], 10, 100).await.unwrap().unwrap();
            q.enqueue(&[msg("a", "2")], 10, 5000)
                .await
                .unwrap()
                .unwrap();
            let mut first = q.pending().unwrap().remove(0);
            first.attempts = 3;
            first.accepted = Some("[]".into());
            q.update(&first).await.unwrap();
            assert_eq!(q.pending().unwrap()[0], first);
            let held = q.expire(Duration::from_secs(1000), 5500).await.unwrap();
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].id, "1");
            assert!(held[0].held);
            // Held, not dropped; a second check does not count it again.
            assert_eq!(q.len().unwrap(), 2);
            assert!(q
                .expire(Duration::from_secs(1000), 5500)
                .await
                .unwrap()
                .is_empty());
            assert_eq!(q.traffic().unwrap().expired, 1);
            assert_eq!(q.release(6000).await.unwrap(), 1);
            let back = q.pending().unwrap().remove(0);
            assert!(!back.held);
            assert_eq!((back.attempts, back.received_at), (0, 6000));
            q.expire(Duration::from_secs(1), 7000).await.unwrap();
            let dropped = q.drop_held().await.unwrap();
            assert_eq!(dropped.len(), 2);
            assert!(q.is_empty().unwrap());
            q.enqueue(&[msg("a", "2")], 10, 7000)
                .await
                .unwrap()
                .unwrap();
            let second = q.pending().unwrap().remove(0);
            q.remove(&second, 5600, 2).await.unwrap();
        });
        assert!(q.is_empty().unwrap());
        let t = q.traffic().unwrap();
        assert_eq!(t.outbound, 2);
        assert_eq!(t.window(3600, 7200), (2, 2));
        assert_eq!(t.window(0, 3599), (1, 0));
    }

    /// A queue holding `n` messages (one per chat, received at 0), a runtime
    /// of `workers` threads, and the entries as stored.
    #[allow(clippy::type_complexity)]
    fn queued(
        n: usize,
        workers: usize,
    ) -> (
        tempfile::TempDir,
        crate::vault::Vault,
        std::sync::Arc<Queue>,
        tokio::runtime::Runtime,
        Vec<Queued>,
    ) {
        let (d, v, id) = vault();
        let q = std::sync::Arc::new(Queue::new(v.view(&id)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let batch: Vec<NewMessage> = (0..n).map(|i| msg(&format!("c{i}"), "1")).collect();
            q.enqueue(&batch, n, 0).await.unwrap().unwrap();
        });
        let entries = q.pending().unwrap();
        assert_eq!(entries.len(), n);
        (d, v, q, rt, entries)
    }

    /// The writes after a hook answered await the vault's group commit like
    /// `enqueue` does: concurrent deliveries share fsyncs instead of each
    /// running its own, synchronously, on a runtime thread while holding
    /// the queue's lock (which serialised every delivery of the bot behind
    /// every fsync).
    #[test]
    fn concurrent_removals_share_fsyncs() {
        const N: usize = 64;
        let (_d, v, q, rt, entries) = queued(N, 4);
        // A slow disk (each flush 50 ms) and a common start: the removals
        // meet flushes in progress however loaded the machine is (on a fast
        // disk, tasks trickling in under load each got a flush of their own:
        // 39 for 64 in one CI run).
        v.set_flush_delay(Duration::from_millis(50));
        let before = v.flush_count();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(N));
        rt.block_on(async {
            let tasks: Vec<_> = entries
                .into_iter()
                .map(|e| {
                    let (q, start) = (q.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        q.remove(&e, 0, 1).await.unwrap()
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let used = v.flush_count() - before;
        assert!(q.is_empty().unwrap());
        assert_eq!(q.traffic().unwrap().outbound, N as u64);
        assert!(
            (1..=N as u64 / 2).contains(&used),
            "{N} concurrent removals used {used} fsyncs"
        );
    }

    /// Regression for fb94b7a: `expire` (also `release`, `drop_held`)
    /// reads the queue under the same lock it writes with, so a removal
    /// (a delivered message) in between is never written back as held
    /// (from where `queue retry` would deliver it again).
    #[test]
    fn expiry_racing_removals_never_puts_a_delivered_message_back() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const N: usize = 60;
        // Received at 0: every entry is past any age limit.
        let (_d, _v, q, rt, entries) = queued(N, 2);
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let expirer = {
            let (q, done) = (q.clone(), done.clone());
            std::thread::spawn(move || {
                let rt = crate::messaging::test_runtime();
                let mut rounds = 0u32;
                while !done.load(Ordering::SeqCst) || rounds == 0 {
                    rt.block_on(q.expire(Duration::from_secs(1), crate::vault::now()))
                        .unwrap();
                    rounds += 1;
                }
                rounds
            })
        };
        rt.block_on(async {
            for e in entries {
                q.remove(&e, 0, 1).await.unwrap();
            }
        });
        done.store(true, Ordering::SeqCst);
        let rounds = expirer.join().unwrap();
        let back = q.pending().unwrap();
        assert!(
            back.is_empty(),
            "{} of {N} removed messages came back (held: {}) over {rounds} expiry rounds",
            back.len(),
            back.iter().filter(|e| e.held).count()
        );
    }

    #[test]
    fn entries_are_sealed_and_names_blind() {
        let (d, v, id) = vault();
        let q = Queue::new(v.view(&id));
        rt().block_on(async {
            q.enqueue(
                &[msg("4915112345678@s.whatsapp.net", "3EB0SECRETID")],
                10,
                0,
            )
            .await
            .unwrap()
            .unwrap();
        });
        v.flush().unwrap();
        drop(q);
        drop(v);
        let mut hay = Vec::new();
        for e in walk(d.path()) {
            hay.extend(std::fs::read(e).unwrap());
        }
        for needle in [&b"4915112345678"[..], b"3EB0SECRETID"] {
            assert!(
                !hay.windows(needle.len()).any(|w| w == needle),
                "found {:?} in clear",
                String::from_utf8_lossy(needle)
            );
        }
    }

    fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                out.extend(walk(&e));
            } else {
                out.push(e);
            }
        }
        out
    }
}
