//! Per-bot send pacing (`--send-rate N/min`): outbound messages of one bot
//! (`send`, the API, hook replies and reactions) leave at most N a minute,
//! evenly spaced, so a burst does not look like a spam bot.
//!
//! Sends queue, they are not refused: each takes the next free slot and
//! waits for it. The wait is bounded ([`MAX_WAIT`], [`MAX_QUEUED`]): a send
//! that would wait longer is refused with the time after which a slot is
//! free again (`retry_after`; the API answers 429). Hook actions are
//! already durable in the inbound queue, so they take their slot whatever
//! the wait.
//!
//! The pacer is pure bookkeeping over instants passed in: tests drive it
//! with simulated time, production with [`tokio::time::Instant::now`].

use std::time::{Duration, Instant};

/// Longest wait for a slot before a send is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most sends waiting for their slot at once before one is refused.
pub const MAX_QUEUED: u32 = 100;
/// Highest rate `--send-rate` takes, per minute.
pub const MAX_RATE: u32 = 1000;

/// The accepted forms of `--send-rate`, for error messages.
pub const RATE_FORM: &str = "N/min with N in 1..=1000 (e.g. 20/min), or `off`";

/// Parses `--send-rate`: `N/min` (a rate), or `off` (unpaced). `None` is
/// `off`.
pub fn parse_rate(s: &str) -> std::result::Result<Option<u32>, String> {
    let t = s.trim();
    if t == "off" {
        return Ok(None);
    }
    let n = t
        .strip_suffix("/min")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_RATE).contains(n));
    match n {
        Some(n) => Ok(Some(n)),
        None => Err(format!("invalid send rate {s:?}: give {RATE_FORM}")),
    }
}

/// The spacing of sends at `per_min` a minute.
pub fn interval(per_min: u32) -> Duration {
    Duration::from_secs(60) / per_min.max(1)
}

/// A send refused because the pacing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// When a slot within the limits is free again.
    pub retry_after: Duration,
}

/// One bot's pacing: when its next send may leave.
#[derive(Debug)]
pub struct Pacer {
    next: Option<Instant>,
    max_wait: Duration,
    max_queued: u32,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(MAX_WAIT, MAX_QUEUED)
    }
}

impl Pacer {
    pub fn new(max_wait: Duration, max_queued: u32) -> Pacer {
        Pacer {
            next: None,
            max_wait,
            max_queued,
        }
    }

    /// Takes the next slot for a send at `now` under `per_min`: the
    /// instant it may leave. `bounded`: refused when the wait would exceed
    /// the limits (API and `send`); hook actions are not bounded.
    pub fn reserve(
        &mut self,
        now: Instant,
        per_min: u32,
        bounded: bool,
    ) -> std::result::Result<Instant, Full> {
        let gap = interval(per_min);
        let slot = self.next.map_or(now, |n| n.max(now));
        let ahead = slot - now;
        if bounded {
            let by_count = gap.saturating_mul(self.max_queued);
            let limit = self.max_wait.min(by_count.saturating_sub(gap));
            if ahead > limit {
                return Err(Full {
                    retry_after: ahead - limit,
                });
            }
        }
        self.next = Some(slot + gap);
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("60/min"), Ok(Some(60)));
        assert_eq!(parse_rate("1/min"), Ok(Some(1)));
        assert_eq!(parse_rate("off"), Ok(None));
        for bad in ["0/min", "abc", "60", "60/s", "-1/min", "1001/min", ""] {
            let e = parse_rate(bad).unwrap_err();
            assert!(e.contains("N/min"), "{bad}: {e}");
        }
        assert_eq!(interval(60), Duration::from_secs(1));
    }

    /// 30 sends at 60/min, each waiting for its slot in simulated time
    /// (the clock moves only when a send "sleeps" to its slot): the 30th
    /// leaves 29 s after the first, none earlier than its spacing.
    #[test]
    fn thirty_sends_at_60_per_min_take_29_simulated_seconds() {
        let t0 = Instant::now();
        let mut clock = t0;
        let mut p = Pacer::default();
        let mut slots = Vec::new();
        for _ in 0..30 {
            let at = p.reserve(clock, 60, true).expect("queued, not refused");
            clock = clock.max(at); // the simulated sleep
            slots.push(at - t0);
        }
        assert!(clock - t0 >= Duration::from_secs(29), "{:?}", clock - t0);
        for w in slots.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(1), "{slots:?}");
        }
        // All 30 at once (concurrent callers): queued with the same spacing.
        let mut p = Pacer::default();
        let last = (0..30)
            .map(|_| p.reserve(t0, 60, true).unwrap())
            .last()
            .unwrap();
        assert_eq!(last - t0, Duration::from_secs(29));
    }

    /// A full pacing queue refuses with the time until there is room; the
    /// refused send took no slot; hook actions (unbounded) still queue.
    #[test]
    fn full_queue_refuses_with_retry_after() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_secs(5), 100);
        for i in 0..6 {
            assert_eq!(
                p.reserve(t0, 60, true).unwrap() - t0,
                Duration::from_secs(i)
            );
        }
        let full = p.reserve(t0, 60, true).unwrap_err();
        assert_eq!(full.retry_after, Duration::from_secs(1));
        // Once that time has passed, it is taken (the refusal took nothing).
        let later = t0 + full.retry_after;
        assert_eq!(
            p.reserve(later, 60, true).unwrap() - t0,
            Duration::from_secs(6)
        );
        assert!(p.reserve(later, 60, false).is_ok());
        // The count bound: at most 3 waiting.
        let mut p = Pacer::new(Duration::from_secs(60), 3);
        for _ in 0..3 {
            p.reserve(t0, 60, true).unwrap();
        }
        assert_eq!(
            p.reserve(t0, 60, true).unwrap_err().retry_after,
            Duration::from_secs(1)
        );
    }
}
