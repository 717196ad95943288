//! G2 on this host: until when the leader may poll, as the lease renewals establish it.
//!
//! The renewer (`instance/leadership.rs`) extends the window after each successful renewal to the
//! moment the renewal *started* plus the renew deadline (< TTL): the database's expiry is at least that
//! far away, so this process stops before anyone else can acquire, whatever the clocks say. The poller
//! asks [`LeaseWindow::remaining`] before each poll (the long-poll timeout is bounded by it, minus a
//! margin, so no poll of ours is outstanding when a successor polls) and again before handling what a
//! poll returned (a leader frozen past its lease must not handle a batch that arrived while it was
//! frozen).
//!
//! The window runs on `CLOCK_BOOTTIME` ([`BootInstant`]), which keeps counting while the host or the
//! VM is suspended: a leader that resumes after a suspend finds its window closed, as it should.
//!
//! Telegram holds a `getUpdates` that repeats the previous call's offset within 3 s for at least 3 s,
//! whatever its `timeout` (telegram-bot-api's `process_get_updates_query`), so a poll may be
//! outstanding for [`MIN_POLL`] even when it asked for less: no poll is started with less than that
//! (plus the margin) left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::BootInstant;

/// The shortest long poll a leader starts: Telegram may hold any `getUpdates` this long.
pub const MIN_POLL: Duration = Duration::from_secs(3);

/// Until when this process may act as the leader. Without coordination there is no window.
#[derive(Debug)]
pub struct LeaseWindow {
    origin: BootInstant,
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
            origin: BootInstant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: BootInstant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// A renewal that started at `started` succeeded: the lease holds until `started + deadline`.
    pub fn extend(&self, started: BootInstant, deadline: Duration) {
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
        let now = self.ms(BootInstant::now());
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// The long-poll timeout to use now: `wanted`, bounded by the time left minus `margin` (whole
    /// seconds, as the Bot API takes them). `None`: less than [`MIN_POLL`] + `margin` left, too little
    /// to poll at all (wait for the next renewal).
    pub fn poll_timeout(&self, wanted: Duration, margin: Duration) -> Option<Duration> {
        let left = self.remaining()?.checked_sub(margin)?;
        (left >= MIN_POLL).then(|| Duration::from_secs(wanted.min(left).as_secs()))
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
        w.extend(BootInstant::now(), Duration::from_secs(6));
        let left = w.remaining().unwrap();
        assert!(left > Duration::from_secs(5) && left <= Duration::from_secs(6));
        let t = w
            .poll_timeout(Duration::from_secs(30), Duration::from_secs(2))
            .unwrap();
        assert!(t <= Duration::from_secs(4), "{t:?}");
        // Not enough left for Telegram's 3 s hold plus the margin: no poll.
        assert_eq!(
            w.poll_timeout(Duration::from_secs(30), Duration::from_secs(4)),
            None
        );
        w.lose();
        assert_eq!(w.remaining(), None);
    }

    /// Every TTL the configuration accepts lets the leader poll right after a renewal that took up to
    /// a second: the smallest (MIN_LEASE_TTL) included. With 3 s it never polled (issue: the poll
    /// window was always just under what the poller needed).
    #[test]
    fn the_smallest_and_largest_ttl_leave_room_for_a_poll() {
        use crate::config::coordination::{MAX_LEASE_TTL, MIN_LEASE_TTL};
        use crate::instance::lease::renew_deadline;
        for ttl in [MIN_LEASE_TTL, MAX_LEASE_TTL] {
            let w = LeaseWindow::new();
            let asked = BootInstant::now();
            w.extend(asked, renew_deadline(ttl));
            // The renewal's answer took a second to come back.
            let left_after_answer = w
                .remaining()
                .unwrap()
                .saturating_sub(Duration::from_secs(1));
            let timeout = left_after_answer
                .checked_sub(crate::telegram::poller::LEASE_MARGIN)
                .filter(|t| *t >= MIN_POLL);
            assert!(timeout.is_some(), "TTL {ttl:?}: no room for a poll");
        }
    }
}
