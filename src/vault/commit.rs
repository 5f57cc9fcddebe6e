//! Durability: `flush` (one fsync, synchronously) and `durable` (group
//! commit: concurrent callers share one fsync), with the latency histogram
//! `/metrics` shows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::{Inner, Vault};
use crate::error::{Error, Result};

/// Group commit: concurrent callers of [`Vault::durable`] share one fsync.
#[derive(Default)]
pub(super) struct GroupCommit {
    requested: AtomicU64,
    completed: AtomicU64,
    running: AtomicBool,
    generation: tokio::sync::Notify,
    flushes: AtomicU64,
    /// Latency of `durable` calls: counts per bucket of [`LATENCY_BUCKETS`],
    /// plus the overflow, and the sum in microseconds.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    /// Unit tests: a pause (microseconds) in every flush.
    #[cfg(test)]
    flush_delay_us: AtomicU64,
}

/// Upper bounds (seconds) of the durable-write latency histogram.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A snapshot of the durable-write latency histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// (upper bound in seconds, cumulative count), Prometheus style.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_secs: f64,
}

/// The flusher's role in the group commit, held by the loop that runs
/// flushes; giving it up (dropped, also when that loop panics) lets the
/// next caller run a flush and wakes the waiters.
///
/// It holds the vault weakly, and a strong handle only while it flushes:
/// once every `durable` caller got its answer, the loop keeps no handle
/// alive, so dropping the last `Vault` still closes the database (and
/// releases the vault's lock) at once.
struct FlusherRole(Weak<Inner>);

impl Drop for FlusherRole {
    fn drop(&mut self) {
        // A vault already gone has nobody waiting on its group commit.
        if let Some(inner) = self.0.upgrade() {
            inner.commit.running.store(false, Ordering::SeqCst);
            inner.commit.generation.notify_waiters();
        }
    }
}

impl FlusherRole {
    /// The flusher's loop, on a blocking thread: flush, publish, and flush
    /// again at once while writers arrived during the last flush (they all
    /// share the next one), so under load one flush follows the other with
    /// no hand-over between tasks; a writer waits for at most the flush
    /// running when it arrived and the next. The first flush's result goes
    /// to the caller that took the role (`first`). On a failed flush the
    /// loop ends: the waiters it would have covered wake, one of them takes
    /// the role and runs (and hears the result of) its own flush.
    fn run(self, first: tokio::sync::oneshot::Sender<Result<()>>) {
        let mut first = Some(first);
        loop {
            let Some(inner) = self.0.upgrade() else {
                return;
            };
            let vault = Vault { inner };
            let c = &vault.inner.commit;
            let target = c.requested.load(Ordering::SeqCst);
            let r = vault.flush();
            let ok = r.is_ok();
            if ok {
                c.completed.fetch_max(target, Ordering::SeqCst);
            }
            let pending = c.completed.load(Ordering::SeqCst) < c.requested.load(Ordering::SeqCst);
            // The strong handle goes before anyone hears of the flush.
            drop(vault);
            if !ok || !pending {
                // Nothing pending (or a failure): give up the role before
                // the caller hears its result, so its next write finds the
                // role free. A writer that arrived since the check either
                // sees the role free or is woken by its release (which also
                // wakes the waiters this flush covered).
                drop(self);
                if let Some(tx) = first.take() {
                    let _ = tx.send(r);
                }
                return;
            }
            if let Some(inner) = self.0.upgrade() {
                inner.commit.generation.notify_waiters();
            }
            if let Some(tx) = first.take() {
                // The caller may be gone (its task aborted): nothing to tell.
                let _ = tx.send(r);
            }
        }
    }
}

impl Vault {
    /// Makes every write so far durable (fsync), synchronously.
    pub fn flush(&self) -> Result<()> {
        self.inner.commit.flushes.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        {
            let us = self.inner.commit.flush_delay_us.load(Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
        self.db().flush()
    }

    /// Unit tests: makes every flush take at least `delay` (a slow disk),
    /// so that writers arriving together find one in progress whatever the
    /// machine's load.
    #[cfg(test)]
    pub(crate) fn set_flush_delay(&self, delay: std::time::Duration) {
        self.inner
            .commit
            .flush_delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Makes every write made before this call durable. Concurrent callers
    /// share one fsync (group commit): a caller waits for a flush that
    /// started after its write, or runs one itself.
    pub async fn durable(&self) -> Result<()> {
        let start = std::time::Instant::now();
        let r = self.durable_inner().await;
        let secs = start.elapsed().as_secs_f64();
        let c = &self.inner.commit;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        c.latency[i].fetch_add(1, Ordering::Relaxed);
        c.latency_sum_us
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        r
    }

    /// The durable-write latency histogram so far (for `/metrics`).
    pub fn durable_latency(&self) -> LatencyHistogram {
        let c = &self.inner.commit;
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += c.latency[i].load(Ordering::Relaxed);
            buckets.push((*b, cumulative));
        }
        let count = cumulative + c.latency[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        LatencyHistogram {
            buckets,
            count,
            sum_secs: c.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    async fn durable_inner(&self) -> Result<()> {
        let c = &self.inner.commit;
        let ticket = c.requested.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            let notified = c.generation.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if c.completed.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            if c.running
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                // The role lives in the flusher's loop, not in this caller:
                // if this caller is dropped while it waits (its task
                // aborted: a bot stopped, a delivery cancelled), the loop
                // still finishes and releases the role, so the next caller
                // flushes instead of every later one waiting for ever.
                let role = FlusherRole(Arc::downgrade(&self.inner));
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::task::spawn_blocking(move || role.run(tx));
                match rx.await {
                    // The first flush started after this caller's write.
                    Ok(r) => return r,
                    Err(_) => {
                        return Err(Error::Other("the vault's flush task failed".into()));
                    }
                }
            }
            notified.await;
        }
    }

    /// How many fsyncs this handle has run (for group-commit tests and metrics).
    pub fn flush_count(&self) -> u64 {
        self.inner.commit.flushes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::crypto::KdfParams;
    use super::super::Vault;
    use std::time::Duration;

    /// A `durable` call dropped while it is the one flushing (its task
    /// aborted: a bot stopped, a delivery cancelled) must not leave the
    /// group commit waiting for a flush that nobody finishes: every later
    /// call would hang, for every bot of the vault.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_flusher_does_not_wedge_later_calls() {
        let d = tempfile::tempdir().unwrap();
        let v = Vault::create(d.path(), b"pw", KdfParams::INSECURE_FOR_TESTS).unwrap();
        for round in 0..20 {
            v.flush().unwrap();
            let mut first = Box::pin(v.durable());
            // Poll it once: it takes the flusher's role and waits on its flush.
            tokio::select! {
                biased;
                _ = &mut first => {}
                _ = std::future::ready(()) => {}
            }
            drop(first);
            tokio::time::timeout(Duration::from_secs(20), v.durable())
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: durable() hangs after a dropped flusher")
                })
                .unwrap();
        }
    }
}
