//! G5, the honest watchdog: `WATCHDOG=1` is sent only while the update loop demonstrably makes progress.
//!
//! Two things must move. The loop records each completed iteration with [`Liveness::beat`]; before an
//! operation that may legitimately take long (a long poll, a backoff wait) it declares the operation's
//! deadline with [`Liveness::busy_until`]. And the handlers behind it report the work they were given
//! ([`Liveness::work_arrived`]) and each piece they finished ([`Liveness::work_done`]). The process is
//! alive while the loop's last beat is recent or a declared, bounded operation has not overrun its
//! deadline, *and* no work has waited for longer than [`HANDLER_STALL`] without any being finished.
//! A deadlocked loop, a hung request that escaped its deadline, a handler that never returns while the
//! loop goes on polling, or a stuck runtime (the pinging task runs on the same runtime) all stop the
//! pings, and systemd restarts the service. A Telegram outage does not: the loop keeps iterating with
//! backoff, and nothing waits in the handlers.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The handlers count as stuck when work waits and none was finished for this long. Every handler is
/// bounded well below it: a price request by its 10 s deadline, a store write by its retries.
pub const HANDLER_STALL: Duration = Duration::from_secs(30);

/// The update loop's and its handlers' progress record, shared with the watchdog task and `/healthz`.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds since `origin` of the last completed iteration.
    last_beat_ms: AtomicU64,
    /// Milliseconds since `origin` until which the loop is inside a bounded operation (0: none).
    busy_until_ms: AtomicU64,
    /// Whether work handed to the handlers is unfinished.
    work_waiting: AtomicBool,
    /// Milliseconds since `origin` of the last finished piece of work, or of the arrival of work when
    /// none was waiting: the start of the handlers' stall clock.
    work_progress_ms: AtomicU64,
}

/// Why the process does not count as alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// The update loop neither beat within the window nor is inside a declared operation.
    Loop { window: Duration },
    /// Work waits in the handlers and none was finished for longer than [`HANDLER_STALL`].
    Handlers,
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loop { window } => write!(
                f,
                "the update loop made no progress for more than {} s",
                window.as_secs()
            ),
            Self::Handlers => write!(
                f,
                "updates wait in the handlers and none was finished for more than {} s",
                HANDLER_STALL.as_secs()
            ),
        }
    }
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
            work_waiting: AtomicBool::new(false),
            work_progress_ms: AtomicU64::new(0),
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

    /// Work was handed to the handlers. When none was waiting, their stall clock starts now. The
    /// caller orders these reports with [`Self::work_done`] (the dispatcher makes both under its lock).
    pub fn work_arrived(&self) {
        if !self.work_waiting.swap(true, Ordering::Relaxed) {
            self.work_progress_ms
                .store(self.ms(Instant::now()), Ordering::Relaxed);
        }
    }

    /// The handlers finished a piece of work; `still_waiting`: whether more is unfinished.
    pub fn work_done(&self, still_waiting: bool) {
        self.work_progress_ms
            .store(self.ms(Instant::now()), Ordering::Relaxed);
        self.work_waiting.store(still_waiting, Ordering::Relaxed);
    }

    /// Ok when, at `now`, the loop beat within `window` or is inside a declared operation, and the
    /// handlers either have nothing waiting or finished something within [`HANDLER_STALL`].
    pub fn check_at(&self, now: Instant, window: Duration) -> Result<(), Stall> {
        let now_ms = self.ms(now);
        if self.work_waiting.load(Ordering::Relaxed)
            && now_ms.saturating_sub(self.work_progress_ms.load(Ordering::Relaxed))
                > HANDLER_STALL.as_millis() as u64
        {
            return Err(Stall::Handlers);
        }
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        let busy = self.busy_until_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) <= window.as_millis() as u64 || now_ms <= busy {
            Ok(())
        } else {
            Err(Stall::Loop { window })
        }
    }

    pub fn check(&self, window: Duration) -> Result<(), Stall> {
        self.check_at(Instant::now(), window)
    }

    pub fn is_alive_at(&self, now: Instant, window: Duration) -> bool {
        self.check_at(now, window).is_ok()
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
    fn waiting_work_that_nothing_finishes_is_a_stall_however_the_loop_beats() {
        let l = Liveness::new();
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        l.work_arrived();
        l.beat();
        l.busy_until(t0 + Duration::from_secs(100));
        assert_eq!(l.check_at(t0 + Duration::from_secs(29), window), Ok(()));
        assert_eq!(
            l.check_at(t0 + HANDLER_STALL + Duration::from_secs(2), window),
            Err(Stall::Handlers)
        );
        // More work arriving does not restart the clock; finishing some does.
        l.work_arrived();
        assert!(!l.is_alive_at(t0 + HANDLER_STALL + Duration::from_secs(2), window));
        l.work_done(true);
        let t1 = Instant::now();
        assert_eq!(l.check_at(t1 + Duration::from_secs(29), window), Ok(()));
        assert_eq!(
            l.check_at(t1 + HANDLER_STALL + Duration::from_secs(2), window),
            Err(Stall::Handlers)
        );
        // Nothing waiting: no handler stall, however long ago the last work was done.
        l.work_done(false);
        assert_eq!(
            l.check_at(t1 + Duration::from_secs(90), window),
            Ok(()),
            "the declared operation covers the loop"
        );
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
