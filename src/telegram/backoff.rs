//! Exponential backoff with full jitter, as one small value type.
//!
//! Each [`Backoff::next_delay`] doubles the ceiling (from `initial` up to `max`) and returns a random
//! delay in [ceiling/2, ceiling], so that two instances that started together drift apart instead of
//! retrying in lock step. [`Backoff::reset`] after a success.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
    attempts: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ceiling: initial,
            attempts: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        self.attempts += 1;
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn reset(&mut self) {
        self.ceiling = self.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
        let ceilings = [5u64, 10, 20, 40, 80, 160, 300, 300];
        for c in ceilings {
            let d = b.next_delay();
            let c = Duration::from_secs(c);
            assert!(d >= c / 2 && d <= c, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(5));
    }
}
