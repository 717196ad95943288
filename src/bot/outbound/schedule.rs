//! The outbound queue's schedule: which waiting message may leave next, and when. No I/O; the run loop
//! in `outbound.rs` feeds it messages and the outcomes of its sends.
//!
//! - **One FIFO per chat.** Messages wait in their chat's queue in outbox order; only a chat's oldest
//!   message can be picked, and only while none of that chat is in flight, so a chat's messages leave
//!   one after the other, in order.
//! - **Picking is O(log chats).** A chat that has a message waiting and none in flight sits exactly
//!   once in the ready heap, keyed by the instant its own limits let it send (its bucket, a 429's pause)
//!   and then by its oldest message's id. The key cannot change while it sits there: its bucket only
//!   changes when it sends and its pause only on a 429, both while it is in flight. The next message
//!   is the heap's top, whatever the queue's length.
//! - **Limits.** A message is charged to the overall bucket and its chat's (the group bucket for a
//!   negative chat id) when it starts; at most `cap` messages are in flight at once.
//! - **State does not grow with every chat ever seen.** A chat whose queue is empty, with nothing in
//!   flight, no 429 pause pending and a full bucket again is forgotten; a new message builds exactly
//!   that state afresh, so forgetting changes nothing. The instants at which chats become forgettable
//!   wait in a second heap; entries that went stale (the chat sent again since) are skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Limits;
use crate::store::OutboxMessage;

/// A token bucket: at most `burst + rate × T` takes in any window of T seconds.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// When one token will be there.
    pub(super) fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    pub(super) fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// When the bucket will be full again (from then on it is the same as a new one).
    fn full_at(&self) -> Instant {
        self.last + Duration::from_secs_f64(((self.burst - self.tokens) / self.rate).max(0.0))
    }
}

/// What the schedule holds for one chat.
#[derive(Debug)]
struct ChatState {
    /// Its messages read from the outbox and not yet picked, oldest first.
    queue: VecDeque<OutboxMessage>,
    bucket: Bucket,
    /// A 429 pauses the chat until then.
    not_before: Instant,
    /// One of its messages was picked and is not finished with yet.
    in_flight: bool,
}

impl ChatState {
    /// When this chat may send next, by its own limits.
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.bucket.ready_at(now).max(self.not_before)
    }

    /// From when forgetting this chat (once it holds nothing) changes nothing.
    fn forgettable_at(&self) -> Instant {
        self.bucket.full_at().max(self.not_before)
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && !self.in_flight
    }
}

/// The schedule of one outbound queue.
#[derive(Debug)]
pub(super) struct Schedule {
    limits: Limits,
    chats: HashMap<i64, ChatState>,
    /// Chats with a message waiting and none in flight: (ready at, oldest message id, chat id).
    ready: BinaryHeap<Reverse<(Instant, i64, i64)>>,
    /// (forgettable at, chat id) for chats that went idle; stale entries are skipped.
    idle: BinaryHeap<Reverse<(Instant, i64)>>,
    global: Bucket,
    /// Messages picked and not finished with or put back.
    in_flight: usize,
    /// Messages in the chats' queues.
    waiting: usize,
}

impl Schedule {
    pub(super) fn new(limits: Limits, now: Instant) -> Self {
        Self {
            global: Bucket::new(limits.global_rate, limits.global_burst, now),
            limits,
            chats: HashMap::new(),
            ready: BinaryHeap::new(),
            idle: BinaryHeap::new(),
            in_flight: 0,
            waiting: 0,
        }
    }

    /// Chats whose state is held (waiting, in flight, or paused or with a bucket not yet full).
    pub(super) fn chats(&self) -> usize {
        self.chats.len()
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Messages picked and not finished with yet (sent, or their outbox row not deleted yet).
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// When `chat_id`'s next message could go, if one waits behind the one in flight and no other
    /// chat's message is ahead of it: the latest its outbox deletion may come without delaying that
    /// message. `None` while other chats' messages go first (or it has nothing waiting).
    pub(super) fn next_wanted(&mut self, chat_id: i64, now: Instant) -> Option<Instant> {
        let chat = self.chats.get_mut(&chat_id)?;
        let next_id = chat.queue.front()?.id;
        let key = (chat.ready_at(now), next_id);
        match self.ready.peek() {
            Some(Reverse((at, id, _))) if (*at, *id) < key => None,
            _ => Some(key.0),
        }
    }

    /// Queues `message` behind its chat's earlier ones.
    pub(super) fn push(&mut self, message: OutboxMessage, now: Instant) {
        let (rate, burst) = if message.chat_id < 0 {
            (self.limits.group_rate, self.limits.group_burst)
        } else {
            (self.limits.chat_rate, self.limits.chat_burst)
        };
        let chat_id = message.chat_id;
        let chat = self.chats.entry(chat_id).or_insert_with(|| ChatState {
            queue: VecDeque::new(),
            bucket: Bucket::new(rate, burst, now),
            not_before: now,
            in_flight: false,
        });
        let was_idle = chat.idle();
        let id = message.id;
        chat.queue.push_back(message);
        self.waiting += 1;
        if was_idle {
            let at = chat.ready_at(now);
            self.ready.push(Reverse((at, id, chat_id)));
        }
    }

    /// The earliest instant a message may start, with at most `cap` in flight: `None` while no chat
    /// has one waiting, or every slot is taken (a finished message frees one).
    pub(super) fn next_start(&mut self, now: Instant, cap: usize) -> Option<Instant> {
        if self.in_flight >= cap {
            return None;
        }
        let Reverse((chat_ready, _, _)) = *self.ready.peek()?;
        Some(chat_ready.max(self.global.ready_at(now)))
    }

    /// Picks the oldest message of the chat whose turn it is (the caller checked
    /// [`Schedule::next_start`]); that chat has a message in flight until [`Schedule::finish`] or
    /// [`Schedule::retry`]. Nothing is charged yet: see [`Schedule::charge`].
    pub(super) fn pick(&mut self) -> Option<OutboxMessage> {
        let Reverse((_, _, chat_id)) = self.ready.pop()?;
        let chat = self.chats.get_mut(&chat_id)?;
        let message = chat.queue.pop_front()?;
        chat.in_flight = true;
        self.waiting -= 1;
        self.in_flight += 1;
        Some(message)
    }

    /// The picked message of `chat_id` is being sent: one token of the overall and its chat's bucket.
    pub(super) fn charge(&mut self, chat_id: i64, now: Instant) {
        self.global.take(now);
        if let Some(chat) = self.chats.get_mut(&chat_id) {
            chat.bucket.take(now);
        }
    }

    /// The picked message of `chat_id` is finished with (its outbox row deleted, or it needs no
    /// sending): the chat's next message may be picked.
    pub(super) fn finish(&mut self, chat_id: i64, now: Instant) {
        let Some(chat) = self.chats.get_mut(&chat_id) else {
            return;
        };
        if !chat.in_flight {
            return;
        }
        chat.in_flight = false;
        self.in_flight -= 1;
        self.release(chat_id, now);
    }

    /// `message` could not be sent now: back at the head of its chat's queue, to be tried again when
    /// the chat's limits allow, and not before `not_before` (a 429's pause of this chat).
    pub(super) fn retry(
        &mut self,
        message: OutboxMessage,
        not_before: Option<Instant>,
        now: Instant,
    ) {
        let chat_id = message.chat_id;
        let Some(chat) = self.chats.get_mut(&chat_id) else {
            return;
        };
        if let Some(until) = not_before {
            chat.not_before = chat.not_before.max(until);
        }
        chat.queue.push_front(message);
        self.waiting += 1;
        if chat.in_flight {
            chat.in_flight = false;
            self.in_flight -= 1;
        }
        self.release(chat_id, now);
    }

    /// `chat_id` has nothing in flight any more: back in the ready heap if a message waits, else
    /// remembered until it can be forgotten.
    fn release(&mut self, chat_id: i64, now: Instant) {
        let Some(chat) = self.chats.get_mut(&chat_id) else {
            return;
        };
        match chat.queue.front() {
            Some(head) => {
                let id = head.id;
                let at = chat.ready_at(now);
                self.ready.push(Reverse((at, id, chat_id)));
            }
            None => self.idle.push(Reverse((chat.forgettable_at(), chat_id))),
        }
    }

    /// Forgets the chats that hold nothing and whose state is that of a new chat again.
    pub(super) fn forget_idle(&mut self, now: Instant) {
        while let Some(&Reverse((at, chat_id))) = self.idle.peek() {
            if at > now {
                break;
            }
            self.idle.pop();
            if self
                .chats
                .get(&chat_id)
                .is_some_and(|c| c.idle() && c.forgettable_at() <= now)
            {
                self.chats.remove(&chat_id);
            }
        }
    }

    /// When the next chat can be forgotten.
    pub(super) fn next_forget(&self) -> Option<Instant> {
        self.idle.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64, chat_id: i64) -> OutboxMessage {
        OutboxMessage {
            id,
            chat_id,
            text: format!("m{id}"),
            queued_at_ms: 0,
        }
    }

    /// Sends whatever the schedule allows at `now`, finishing each at once; returns the ids.
    fn send_due(schedule: &mut Schedule, now: Instant, cap: usize) -> Vec<i64> {
        let mut sent = Vec::new();
        while schedule.next_start(now, cap).is_some_and(|t| t <= now) {
            let m = schedule.pick().unwrap();
            schedule.charge(m.chat_id, now);
            sent.push(m.id);
        }
        sent
    }

    fn fast_global() -> Limits {
        Limits {
            global_rate: 1000.0,
            global_burst: 1000.0,
            ..Limits::default()
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, 3.0, t0);
        for _ in 0..3 {
            assert_eq!(b.ready_at(t0), t0);
            b.take(t0);
        }
        let next = b.ready_at(t0);
        assert!(
            next > t0 && next <= t0 + Duration::from_millis(501),
            "{:?}",
            next - t0
        );
        assert_eq!(
            b.ready_at(t0 + Duration::from_millis(500)),
            t0 + Duration::from_millis(500)
        );
    }

    /// A sender that sends whenever the overall bucket allows, for 10 s: never more than 30 messages
    /// in any sliding second, and at least 95 % of 30/s over the whole run.
    #[test]
    fn the_overall_limit_holds_in_every_sliding_second() {
        let limits = Limits::default();
        let t0 = Instant::now();
        let mut bucket = Bucket::new(limits.global_rate, limits.global_burst, t0);
        let mut now = t0;
        let mut sent = Vec::new();
        while now < t0 + Duration::from_secs(10) {
            now = bucket.ready_at(now);
            bucket.take(now);
            sent.push(now);
        }
        let busiest = sent
            .iter()
            .enumerate()
            .map(|(i, start)| {
                sent[i..]
                    .iter()
                    .take_while(|t| **t < *start + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap();
        assert!(busiest <= 30, "{busiest} messages in one second");
        let rate = sent.len() as f64 / 10.0;
        assert!(rate >= 28.5, "{rate} messages/s");
    }

    /// The bucket's burst makes up for a sender woken late (a timer, a busy runtime) without letting
    /// 31 sends into a second: sends that each come up to 10 ms late still average over 28.5/s, and 31
    /// consecutive sends always span more than a second, with room for the requests' arrival at
    /// Telegram to vary.
    #[test]
    fn a_late_sender_keeps_the_rate_and_the_sliding_second() {
        let limits = Limits::default();
        let t0 = Instant::now();
        let mut bucket = Bucket::new(limits.global_rate, limits.global_burst, t0);
        let mut now = t0;
        let mut sent = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        while now < t0 + Duration::from_secs(10) {
            let late = Duration::from_micros(rng.u64(0..=10_000));
            now = bucket.ready_at(now) + late;
            bucket.take(now);
            sent.push(now);
        }
        let rate = (sent.len() - 1) as f64 / (sent[sent.len() - 1] - sent[0]).as_secs_f64();
        assert!(rate >= 28.5, "{rate} messages/s");
        let tightest = sent.windows(31).map(|w| w[30] - w[0]).min().unwrap();
        assert!(
            tightest >= Duration::from_millis(1020),
            "31 sends within {tightest:?}"
        );
    }

    #[test]
    fn a_chat_sends_one_message_at_a_time_in_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(fast_global(), t0);
        for (id, chat) in [(1, 7), (2, 7), (3, 8), (4, 7)] {
            s.push(message(id, chat), t0);
        }
        // Chat 7's bucket has a burst of 2, but its second message waits for the first to finish.
        assert_eq!(send_due(&mut s, t0, 32), [1, 3]);
        assert_eq!(s.in_flight(), 2);
        s.finish(7, t0);
        assert_eq!(send_due(&mut s, t0, 32), [2]);
        s.finish(7, t0);
        // The burst is spent: the third waits for the chat's rate.
        assert_eq!(send_due(&mut s, t0, 32), Vec::<i64>::new());
        let at = s.next_start(t0, 32).unwrap();
        assert!(at > t0 + Duration::from_millis(900), "{:?}", at - t0);
        assert_eq!(send_due(&mut s, at, 32), [4]);
    }

    #[test]
    fn a_deletion_is_wanted_at_once_only_when_its_chats_next_message_would_go_first() {
        let t0 = Instant::now();
        let mut s = Schedule::new(fast_global(), t0);
        for (id, chat) in [(1, 7), (2, 8), (3, 7), (4, 8)] {
            s.push(message(id, chat), t0);
        }
        assert_eq!(send_due(&mut s, t0, 1), [1]);
        // Chat 7's next (3) waits behind chat 8's oldest (2): its deletion can be gathered.
        assert_eq!(s.next_wanted(7, t0), None);
        s.finish(7, t0);
        assert_eq!(send_due(&mut s, t0, 2), [2, 3]);
        // Chat 8's next (4) is the only one left: its deletion is wanted by the time it could go.
        assert_eq!(s.next_wanted(8, t0), Some(t0));
        // Chat 7 has nothing more waiting.
        assert_eq!(s.next_wanted(7, t0), None);
    }

    #[test]
    fn no_more_than_cap_messages_are_in_flight() {
        let t0 = Instant::now();
        let mut s = Schedule::new(fast_global(), t0);
        for id in 1..=10 {
            s.push(message(id, id), t0);
        }
        assert_eq!(send_due(&mut s, t0, 4), [1, 2, 3, 4]);
        assert_eq!(s.next_start(t0, 4), None, "every slot taken");
        s.finish(2, t0);
        assert_eq!(send_due(&mut s, t0, 4), [5]);
    }

    #[test]
    fn a_pause_holds_back_only_its_chat_and_keeps_its_order() {
        let t0 = Instant::now();
        let mut s = Schedule::new(fast_global(), t0);
        for (id, chat) in [(1, 5), (2, 5), (3, 6)] {
            s.push(message(id, chat), t0);
        }
        assert_eq!(send_due(&mut s, t0, 32), [1, 3]);
        s.retry(message(1, 5), Some(t0 + Duration::from_secs(2)), t0);
        s.finish(6, t0);
        s.push(message(4, 6), t0);
        // Chat 6 goes on (its rate permitting); chat 5 waits the 2 s, then sends 1 before 2.
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(send_due(&mut s, t1, 32), [4]);
        assert_eq!(
            send_due(&mut s, t0 + Duration::from_millis(1900), 32),
            Vec::<i64>::new()
        );
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(send_due(&mut s, t2, 32), [1]);
        s.finish(5, t2);
        assert_eq!(send_due(&mut s, t2, 32), [2]);
    }

    #[test]
    fn the_oldest_message_among_ready_chats_goes_first() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Limits::default(), t0);
        for id in 1..=5 {
            s.push(message(id, 100 - id), t0);
        }
        let mut order = Vec::new();
        let mut now = t0;
        while let Some(at) = s.next_start(now, 32) {
            now = now.max(at);
            let m = s.pick().unwrap();
            s.charge(m.chat_id, now);
            order.push(m.id);
        }
        assert_eq!(order, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn an_idle_chat_is_forgotten_once_its_bucket_is_full_again() {
        let t0 = Instant::now();
        let mut s = Schedule::new(fast_global(), t0);
        s.push(message(1, 9), t0);
        s.push(message(2, -9), t0);
        assert_eq!(send_due(&mut s, t0, 32), [1, 2]);
        s.finish(9, t0);
        s.finish(-9, t0);
        s.forget_idle(t0);
        assert_eq!(
            s.chats(),
            2,
            "buckets not full yet: forgetting would change them"
        );
        // A private chat refills one token in 1/0.95 s, a group in 60/19 s.
        s.forget_idle(t0 + Duration::from_millis(1100));
        assert_eq!(s.chats(), 1);
        s.forget_idle(t0 + Duration::from_millis(3200));
        assert_eq!(s.chats(), 0);
        assert_eq!(s.next_forget(), None);
    }

    #[test]
    fn a_chat_that_sent_again_is_not_forgotten_by_a_stale_entry() {
        let t0 = Instant::now();
        let mut s = Schedule::new(fast_global(), t0);
        s.push(message(1, 9), t0);
        send_due(&mut s, t0, 32);
        s.finish(9, t0);
        let t1 = t0 + Duration::from_millis(1000);
        s.push(message(2, 9), t1);
        send_due(&mut s, t1, 32);
        s.finish(9, t1);
        // The first idle entry (due at ~1.05 s) is stale: the bucket is not full before ~2.1 s.
        s.forget_idle(t0 + Duration::from_millis(1100));
        assert_eq!(s.chats(), 1);
        s.forget_idle(t0 + Duration::from_millis(2200));
        assert_eq!(s.chats(), 0);
    }
}
