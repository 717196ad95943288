//! A clock for deadlines that must hold across a suspend of the host or the VM.
//!
//! `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which stops while the machine is suspended: a
//! leader whose VM was paused for a minute would resume believing no time passed and poll on a lease
//! that expired meanwhile. [`BootInstant`] reads `CLOCK_BOOTTIME`, which keeps counting through a
//! suspend (and, like the monotonic clock, is never stepped by NTP or an operator).
//!
//! [`unix_now_ms`] is the wall clock, for what is stored or shown as a date (when an alert fired, when
//! it expires).

use std::ops::Add;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// The wall clock in Unix milliseconds (0 before 1970).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A point in time on `CLOCK_BOOTTIME`: the time since the machine booted, suspends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// Now. `CLOCK_BOOTTIME` exists on every Linux since 2.6.39; reading it cannot fail there.
    pub fn now() -> Self {
        let t = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME (Linux ≥ 2.6.39)");
        Self(Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
    }

    /// The time since the machine booted.
    pub fn since_boot(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0 + d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_advances_with_the_monotonic_clock() {
        let a = BootInstant::now();
        let started = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = BootInstant::now();
        let measured = b.saturating_duration_since(a);
        assert!(measured >= Duration::from_millis(20), "{measured:?}");
        assert!(
            measured <= started.elapsed() + Duration::from_millis(5),
            "{measured:?}"
        );
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(
            (a + Duration::from_secs(1)).since_boot(),
            a.since_boot() + Duration::from_secs(1)
        );
    }
}
