//! G5, the honest watchdog: `WATCHDOG=1` is sent only while the update loop demonstrably makes progress.
//!
//! The loop records each completed iteration with [`Liveness::beat`]; before an operation that may
//! legitimately take long (a long poll, a handler, a backoff wait) it declares the operation's deadline
//! with [`Liveness::busy_until`]. The loop counts as alive while its last beat is recent or a declared,
//! bounded operation has not overrun its deadline. A deadlocked loop, a hung request that escaped its
//! deadline, or a stuck runtime (the pinging task runs on the same runtime) all stop the pings, and
//! systemd restarts the service. A Telegram outage does not: the loop keeps iterating with backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The update loop's progress record, shared with the watchdog task.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds since `origin` of the last completed iteration.
    last_beat_ms: AtomicU64,
    /// Milliseconds since `origin` until which the loop is inside a bounded operation (0: none).
    busy_until_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            busy_until_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// An iteration of the update loop completed.
    pub fn beat(&self) {
        self.last_beat_ms
            .store(self.ms(Instant::now()), Ordering::Relaxed);
        self.busy_until_ms.store(0, Ordering::Relaxed);
    }

    /// The loop enters an operation that is guaranteed (by a timeout) to end by `deadline`.
    pub fn busy_until(&self, deadline: Instant) {
        self.busy_until_ms
            .store(self.ms(deadline), Ordering::Relaxed);
    }

    /// True when the loop beat within `window` before `now`, or is inside a declared operation.
    pub fn is_alive_at(&self, now: Instant, window: Duration) -> bool {
        let now_ms = self.ms(now);
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        let busy = self.busy_until_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) <= window.as_millis() as u64 || now_ms <= busy
    }

    pub fn is_alive(&self, window: Duration) -> bool {
        self.is_alive_at(Instant::now(), window)
    }
}

/// The long-poll timeout to use under a watchdog: at most half the watchdog timeout (at least 1 s), so
/// an idle bot completes at least two iterations per watchdog period.
pub fn poll_timeout_for(configured: Duration, watchdog: Option<Duration>) -> Duration {
    match watchdog {
        Some(wd) => configured.min((wd / 2).max(Duration::from_secs(1))),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_after_a_beat_and_stale_after_the_window() {
        let l = Liveness::new();
        let t0 = Instant::now();
        l.beat();
        assert!(l.is_alive_at(t0, Duration::from_secs(2)));
        assert!(!l.is_alive_at(t0 + Duration::from_secs(5), Duration::from_secs(2)));
    }

    #[test]
    fn a_declared_operation_counts_until_its_deadline_only() {
        let l = Liveness::new();
        let t0 = Instant::now();
        l.busy_until(t0 + Duration::from_secs(30));
        assert!(l.is_alive_at(t0 + Duration::from_secs(29), Duration::from_secs(2)));
        assert!(!l.is_alive_at(t0 + Duration::from_secs(31), Duration::from_secs(2)));
        l.beat();
        assert!(!l.is_alive_at(
            Instant::now() + Duration::from_secs(3),
            Duration::from_secs(2)
        ));
    }

    #[test]
    fn poll_timeout_is_capped_by_the_watchdog() {
        let thirty = Duration::from_secs(30);
        assert_eq!(poll_timeout_for(thirty, None), thirty);
        assert_eq!(
            poll_timeout_for(thirty, Some(Duration::from_secs(4))),
            Duration::from_secs(2)
        );
        assert_eq!(
            poll_timeout_for(thirty, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }
}
