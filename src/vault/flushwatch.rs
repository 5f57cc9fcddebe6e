//! A watchdog for sled's flush, which can wait forever after an I/O error.
//!
//! sled 0.34 writes its log buffers on its own I/O threads. When such a
//! write fails, the error is recorded for every later call, but one of the
//! two write paths (`exit_reservation` in sled's `logger.rs`) does not wake
//! the callers already waiting in `flush` for that write to land: a flush
//! that checked for errors just before the failure waits on its condition
//! variable with no timeout, forever. Seen under the power-cut campaigns
//! (every request fails with EIO once the power is out): `rotate key` and
//! `restore --force` hung in `make_stable` with sled's threads idle.
//!
//! Any flush that starts after the failure sees the recorded error and
//! wakes every waiter. So while a flush has been running for
//! [`NUDGE_AFTER`], the watchdog runs another one: without an error it
//! merely waits along (the disk is just slow); with one it returns at once
//! and the stuck flush wakes and returns the error.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a flush runs before the watchdog nudges it.
pub(super) const NUDGE_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// Flushes begun, and ended, since the database opened.
    begun: u64,
    ended: u64,
    closed: bool,
}

/// Counts flushes in flight; its thread nudges the ones that take too long.
#[derive(Default)]
pub(super) struct FlushWatch {
    state: Mutex<State>,
    changed: Condvar,
}

/// Marks one flush in flight for as long as it lives.
pub(super) struct InFlight<'a>(&'a FlushWatch);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().ended += 1;
        self.0.changed.notify_all();
    }
}

impl FlushWatch {
    /// Starts the watchdog thread. `nudge` runs one more flush; it returns
    /// false once the database is gone (the thread then ends).
    pub(super) fn start(nudge: impl Fn() -> bool + Send + 'static) -> Arc<FlushWatch> {
        let watch = Arc::new(FlushWatch::default());
        let w = watch.clone();
        let spawned = std::thread::Builder::new()
            .name("vault flush watch".into())
            .spawn(move || w.run(nudge));
        if let Err(e) = spawned {
            // Without the thread a flush works as before, unguarded.
            tracing::warn!("starting the vault's flush watchdog: {e}");
        }
        watch
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a flush in flight until the guard drops.
    pub(super) fn begin(&self) -> InFlight<'_> {
        self.lock().begun += 1;
        self.changed.notify_all();
        InFlight(self)
    }

    /// Ends the thread (the database is closing).
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn run(&self, nudge: impl Fn() -> bool) {
        let mut s = self.lock();
        loop {
            if s.closed {
                return;
            }
            if s.ended >= s.begun {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Every flush begun so far must end within NUDGE_AFTER.
            let target = s.begun;
            let (g, timeout) = self
                .changed
                .wait_timeout_while(s, NUDGE_AFTER, |s| !s.closed && s.ended < target)
                .unwrap_or_else(|e| e.into_inner());
            s = g;
            if s.closed || !timeout.timed_out() {
                continue;
            }
            drop(s);
            if !nudge() {
                return;
            }
            s = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    /// A flush like sled's after a lost wake-up: it waits until some other
    /// flush call happens, with no timeout of its own.
    #[derive(Default)]
    struct StuckFlush {
        calls: Mutex<u64>,
        cv: Condvar,
    }

    impl StuckFlush {
        /// Waits for a later call (the first caller); a later call returns at once.
        fn flush(&self) {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            let mine = *calls;
            self.cv.notify_all();
            if mine == 1 {
                let (_g, t) = self
                    .cv
                    .wait_timeout_while(calls, Duration::from_secs(60), |c| *c == mine)
                    .unwrap();
                assert!(!t.timed_out(), "nobody woke the stuck flush");
            }
        }
    }

    #[test]
    fn a_stuck_flush_is_nudged_by_another_flush() {
        let stuck = Arc::new(StuckFlush::default());
        let nudges = Arc::new(AtomicU64::new(0));
        let watch = {
            let (stuck, nudges) = (stuck.clone(), nudges.clone());
            FlushWatch::start(move || {
                nudges.fetch_add(1, Ordering::SeqCst);
                stuck.flush();
                true
            })
        };
        let start = Instant::now();
        {
            let _f = watch.begin();
            stuck.flush();
        }
        assert!(start.elapsed() >= NUDGE_AFTER, "nudged before its time");
        assert_eq!(nudges.load(Ordering::SeqCst), 1);
        watch.close();
    }
}
