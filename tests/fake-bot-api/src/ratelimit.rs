//! Telegram's sending limits (Bot FAQ: about 1 message per second in one chat with short bursts, 20
//! per minute in one group, about 30 per second overall): token buckets per chat, and overall at most
//! 30 messages in ANY sliding second (a bucket of 30 with 30/s refill would take 60 in a second).
//! Off unless switched on.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Per private chat: a burst of 3, then 1 message per second.
const PRIVATE_CHAT: (f64, f64) = (3.0, 1.0);
/// Per group: a burst of 20, then 20 messages per minute.
const GROUP_CHAT: (f64, f64) = (20.0, 20.0 / 60.0);
/// Per bot, all chats together: at most this many messages in any sliding window of [`WINDOW`].
const OVERALL: usize = 30;
const WINDOW: Duration = Duration::from_secs(1);

/// A token bucket: holds up to `capacity` tokens, refilled at `rate` tokens per second.
#[derive(Debug, Clone)]
struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn full((capacity, rate): (f64, f64), now: Instant) -> Self {
        Self {
            capacity,
            rate,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
    }

    /// How long until one token is available (zero when one is).
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// The limits of one bot: one bucket per chat plus the overall sliding window.
#[derive(Debug, Clone)]
pub(crate) struct SendLimits {
    /// When the messages of the last [`WINDOW`] were accepted, oldest first (at most [`OVERALL`]).
    overall: VecDeque<Instant>,
    chats: HashMap<i64, TokenBucket>,
}

impl SendLimits {
    pub(crate) fn new() -> Self {
        Self {
            overall: VecDeque::with_capacity(OVERALL),
            chats: HashMap::new(),
        }
    }

    /// How long until one more message fits in the sliding window (zero when it does now).
    fn overall_wait(&mut self, now: Instant) -> Duration {
        while self
            .overall
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.overall.pop_front();
        }
        if self.overall.len() < OVERALL {
            Duration::ZERO
        } else {
            (self.overall[0] + WINDOW).saturating_duration_since(now)
        }
    }

    /// Takes one message's tokens for `chat_id` at `now`, or answers the whole seconds to wait
    /// (Telegram's `retry_after`, at least 1) without taking anything.
    pub(crate) fn try_send(&mut self, chat_id: i64, now: Instant) -> Result<(), u32> {
        let shape = if chat_id < 0 {
            GROUP_CHAT
        } else {
            PRIVATE_CHAT
        };
        let chat = self
            .chats
            .entry(chat_id)
            .or_insert_with(|| TokenBucket::full(shape, now));
        chat.refill(now);
        let chat_wait = chat.wait();
        let wait = chat_wait.max(self.overall_wait(now));
        if wait.is_zero() {
            if let Some(chat) = self.chats.get_mut(&chat_id) {
                chat.tokens -= 1.0;
            }
            self.overall.push_back(now);
            Ok(())
        } else {
            let seconds = wait.as_secs_f64().ceil().max(1.0);
            // Saturating: no bucket here ever asks for more than a few minutes.
            Err(seconds.min(f64::from(u32::MAX)) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_chat_allows_a_burst_of_three_then_one_per_second() {
        let start = Instant::now();
        let mut limits = SendLimits::new();
        for _ in 0..3 {
            assert_eq!(limits.try_send(42, start), Ok(()));
        }
        assert_eq!(limits.try_send(42, start), Err(1));
        assert_eq!(
            limits.try_send(43, start),
            Ok(()),
            "other chats are not affected"
        );
        assert_eq!(
            limits.try_send(42, start + Duration::from_millis(1000)),
            Ok(())
        );
        assert_eq!(
            limits.try_send(42, start + Duration::from_millis(1100)),
            Err(1)
        );
    }

    #[test]
    fn overall_limit_is_thirty_in_any_sliding_second() {
        let start = Instant::now();
        let mut limits = SendLimits::new();
        // 30 spread over the first 0.9 s, one chat each.
        for chat in 0..30u64 {
            let at = start + Duration::from_millis(chat * 30);
            assert_eq!(limits.try_send(chat as i64 + 1, at), Ok(()));
        }
        // A bucket of 30 refilled at 30/s would take these: the window does not.
        assert_eq!(
            limits.try_send(100, start + Duration::from_millis(950)),
            Err(1)
        );
        // The first left the window at 1.0 s, the second at 1.03 s.
        assert_eq!(
            limits.try_send(100, start + Duration::from_millis(1000)),
            Ok(())
        );
        assert_eq!(
            limits.try_send(101, start + Duration::from_millis(1010)),
            Err(1)
        );
        assert_eq!(
            limits.try_send(101, start + Duration::from_millis(1030)),
            Ok(())
        );
    }

    #[test]
    fn group_limit_is_twenty_per_minute() {
        let start = Instant::now();
        let mut limits = SendLimits::new();
        for i in 0..20 {
            let now = start + Duration::from_millis(i * 50);
            assert_eq!(limits.try_send(-7, now), Ok(()));
        }
        // By 1.5 s half a token has come back: the next one is 1.5 s away, rounded up to 2.
        assert_eq!(
            limits.try_send(-7, start + Duration::from_millis(1500)),
            Err(2)
        );
    }
}
