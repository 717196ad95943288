//! G2 on this host: until when the leader may poll, as the lease renewals establish it.
//!
//! The renewer (in `app.rs`) extends the window after each successful renewal to the moment the renewal
//! *started* plus the renew deadline (< TTL): the database's expiry is at least that far away, so this
//! process stops before anyone else can acquire, whatever the clocks say. The poller asks
//! [`LeaseWindow::remaining`] before each poll (the long-poll timeout is bounded by it, minus a margin, so
//! no poll of ours is outstanding when a successor polls) and again before handling what a poll returned
//! (a leader frozen past its lease must not handle a batch that arrived while it was frozen).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Until when this process may act as the leader. Without coordination there is no window.
#[derive(Debug)]
pub struct LeaseWindow {
    origin: Instant,
    /// Milliseconds since `origin` until which the lease holds; 0 = not (or no longer) the leader.
    until_ms: AtomicU64,
}

impl Default for LeaseWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseWindow {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// A renewal that started at `started` succeeded: the lease holds until `started + deadline`.
    pub fn extend(&self, started: Instant, deadline: Duration) {
        self.until_ms
            .fetch_max(self.ms(started + deadline).max(1), Ordering::AcqRel);
    }

    /// The lease is lost (or released): stop at once.
    pub fn lose(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    /// Time left as the leader, `None` when the lease is lost or over.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Acquire);
        let now = self.ms(Instant::now());
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// The long-poll timeout to use now: `wanted`, bounded by the time left minus `margin` (whole
    /// seconds, as the Bot API takes them). `None`: too little time left to poll at all.
    pub fn poll_timeout(&self, wanted: Duration, margin: Duration) -> Option<Duration> {
        let left = self.remaining()?.checked_sub(margin)?;
        let secs = wanted.min(left).as_secs();
        // A zero timeout would be a short poll that answers at once: fine, but only with time to spare.
        (left >= Duration::from_secs(1)).then(|| Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bounds_the_poll_and_closes() {
        let w = LeaseWindow::new();
        assert_eq!(w.remaining(), None);
        assert_eq!(
            w.poll_timeout(Duration::from_secs(30), Duration::from_secs(1)),
            None
        );
        w.extend(Instant::now(), Duration::from_secs(6));
        let left = w.remaining().unwrap();
        assert!(left > Duration::from_secs(5) && left <= Duration::from_secs(6));
        let t = w
            .poll_timeout(Duration::from_secs(30), Duration::from_secs(2))
            .unwrap();
        assert!(t <= Duration::from_secs(4), "{t:?}");
        // An older renewal never shortens a newer one.
        w.extend(
            Instant::now() - Duration::from_secs(5),
            Duration::from_secs(6),
        );
        assert!(w.remaining().unwrap() > Duration::from_secs(5));
        w.lose();
        assert_eq!(w.remaining(), None);
    }
}
