//! The outbound queue: every message the bot sends leaves through here, within Telegram's limits and
//! several at a time.
//!
//! Messages wait in the store's outbox (written in the same transaction as their cause), so a crash
//! loses none. [`Outbound::run`] reads them in outbox order into one queue per chat ([`schedule`]) and
//! sends them, guaranteeing:
//!
//! - **Several in flight, never two for one chat.** Up to [`Limits::max_in_flight`] `sendMessage`
//!   requests run at once (32: 29 messages/s even at 1.1 s per request), each for a different chat.
//!   A chat's next message starts only once its previous one is finished with, outbox row deleted (a
//!   failed deletion is tried again every second, the chat waiting), so per chat messages leave one
//!   after the other in the order they were queued.
//! - **Telegram's limits** (Bot FAQ), as token buckets set a little below them so that a late timer
//!   or requests arriving unevenly never meet a 429: about 30 messages/s overall (29/s with a burst of
//!   1.3: at most 30 in any sliding second, and 31 consecutive sends always span at least 1.024 s),
//!   1/s per chat with a burst of 2, 20/min per group (a negative chat id) with a burst of 2.
//! - **A 429 pauses only its chat** for `retry_after`; other chats go on.
//! - **An outage never drops a message.** A network fault, a 5xx or an answer that is not the Bot
//!   API's pauses the whole queue (it is not the chat's fault) with a backoff from 0.5 s to
//!   [`OUTAGE_BACKOFF_MAX`], for as long as the outage lasts; the sends already in flight when it
//!   began count as one failure, and until Telegram answers again one message at a time probes it.
//!   (teloxide holds a 5xx answer 10 s before it returns the error: a 5xx outage is noticed 10 s
//!   after its first failure, and the sends started meanwhile fail with it.)
//!   A message is deleted unsent only when Telegram refused it for good (400: chat not found, text
//!   invalid; 403: the user blocked the bot, whose alerts are then disabled), or when it waited longer
//!   than [`MESSAGE_EXPIRY`] (24 h: an answer or an alert that old is not worth sending), each logged
//!   and counted in `cryptobot_messages_dropped_total{kind}`.
//! - **Cheap per message.** Picking the next message looks at the top of a heap of ready chats, not
//!   at the whole queue; the state of a chat is forgotten once it holds nothing and forgetting changes
//!   nothing (`cryptobot_outbound_chats`); messages finished within [`DELETE_GATHER`] (250 ms) leave
//!   the outbox in one `DELETE` ([`Store::outbox_done_many`]), sooner when a chat's next message
//!   could go or most slots wait for it, so gathering never costs rate.
//! - **A bounded stop.** After a stop request, messages already queued are still sent for
//!   [`STOP_DRAIN`] (2 s), concurrently: sends start during its first second, the last one is left for
//!   their answers; then the messages answered are deleted from the outbox, so a clean stop repeats
//!   nothing that Telegram answered. What is left, and a send still unanswered at the end (a hung
//!   connection), stays in the outbox for the next start.
//! - **With the PostgreSQL lease, nothing is sent once the lease window closed** (checked before each
//!   send): the outbox is shared, the next leader sends what is left.
//!
//! Delivery is at least once: a message is deleted after Telegram took it, so a crash between the two
//! sends it again from the next process (which, with the lease, may be another host's). What a kill -9
//! can repeat is bounded: only messages *in flight* at that moment, that is from the start of their
//! `sendMessage` until their outbox row is deleted (gathered for at most 250 ms, and the slot stays
//! taken until then). That is at most [`Limits::max_in_flight`] messages,
//! at most one per chat, and every older message of its chat is gone from the outbox (or expired, and
//! is dropped again), so the next start sends it again before anything newer of that chat: a chat
//! sees that one message twice, still in order.

mod schedule;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use teloxide::types::ChatId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::instance::lease_window::LeaseWindow;
use crate::live_status::LiveStatus;
use crate::store::{self, OutboxMessage, Store};
use crate::telegram::backoff::Backoff;
use crate::telegram::client::Client;
use crate::telegram::errors::{ApiFailure, FailureKind};
use schedule::Schedule;

/// The sending limits: rates (messages per second) and bursts of the buckets, and how many
/// `sendMessage` requests may be in flight at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub global_rate: f64,
    pub global_burst: f64,
    pub chat_rate: f64,
    pub chat_burst: f64,
    pub group_rate: f64,
    pub group_burst: f64,
    /// `sendMessage` requests in flight at once, each for a different chat (at least 1).
    pub max_in_flight: usize,
}

impl Default for Limits {
    /// Telegram's limits (30/s overall, ~1/s per chat, 20/min per group), each kept slightly below.
    ///
    /// A bucket lets at most `burst + rate × T` messages through in any window of T seconds. Overall,
    /// 29/s with a burst of 1.3: at most 30 in any sliding second (1.3 + 29 < 31), and 31 consecutive
    /// sends span at least (31 − 1.3) / 29 = 1.024 s, so the requests' arrival at Telegram may vary by
    /// 24 ms before a second holds 31. The 0.3 over a burst of 1 makes up for a send woken up to 10 ms
    /// late, which a burst of 1 turned into lost rate (28.7/s measured at 29.7/s with a burst of 1).
    /// A burst of 20 let 49 through in the first second of a busy period.
    ///
    /// 32 requests in flight keep 29/s going while a request takes up to 1.1 s.
    fn default() -> Self {
        Self {
            global_rate: 29.0,
            global_burst: 1.3,
            chat_rate: 0.95,
            chat_burst: 2.0,
            group_rate: 19.0 / 60.0,
            group_burst: 2.0,
            max_in_flight: 32,
        }
    }
}

/// After a stop request, messages already queued are still sent for this long (a /restart's own
/// reply, the last answers); what is left stays in the outbox for the next start.
const STOP_DRAIN: Duration = Duration::from_secs(2);
/// No send starts in the drain's last this long: it is left for the answers of the sends in flight.
const DRAIN_ANSWERS: Duration = Duration::from_secs(1);
/// A message still unsent this long after it was queued is dropped (logged, counted): through an
/// outage of any shorter length, nothing is lost.
pub const MESSAGE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// The longest pause between two attempts while Telegram cannot be reached (network, 5xx).
pub const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Messages read from the outbox at a time; the next ones are read once fewer than this wait.
const BATCH: i64 = 1000;
/// A failed read of the outbox is tried again after this long.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Messages done with within this long leave the outbox in one `DELETE` (a statement per sent
/// message was, after the `sendMessage` itself, the largest cost per message: a round trip to the
/// store's thread and a WAL write). A chat whose next message could go sooner, or a queue whose slots
/// are mostly taken by messages awaiting it, does not wait for the window.
const DELETE_GATHER: Duration = Duration::from_millis(250);
/// A failed deletion from the outbox is tried again after this long; the chats of its messages wait
/// for it (their next message would otherwise risk a repeat after a crash ahead of it).
const DELETE_RETRY: Duration = Duration::from_secs(1);
/// Chats that can be forgotten are forgotten at most this late, so that an idle queue wakes up for
/// it about once a second rather than once per chat.
const FORGET_SLACK: Duration = Duration::from_secs(1);

/// Producers wake the sender with this after queueing into the outbox.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    pending: AtomicBool,
}

impl Wake {
    pub fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// The sender.
pub struct Outbound {
    pub store: Store,
    pub client: Client,
    pub bot_id: u64,
    pub limits: Limits,
    pub wake: Arc<Wake>,
    /// Where the queue depth, sends and errors are counted.
    pub status: Arc<LiveStatus>,
    /// With the PostgreSQL lease: until when this process leads. Nothing is sent once it closed (a
    /// leader frozen past its TTL sends nothing when it resumes: its successor owns the outbox now).
    pub lease: Option<Arc<LeaseWindow>>,
}

/// One `sendMessage` and what came of it.
struct Attempt {
    message: OutboxMessage,
    started: Instant,
    result: Result<(), ApiFailure>,
}

/// One read of the outbox.
struct OutboxRead {
    rows: Vec<OutboxMessage>,
    /// Messages waiting in all, counted when the read stopped at [`BATCH`].
    waiting: Option<i64>,
}

/// A message done with, whose outbox row is to be deleted.
struct Finished {
    id: i64,
    /// The chat whose next message waits for this deletion; `None` for an expired message, which was
    /// not sent and so cannot be repeated.
    chat: Option<i64>,
}

/// What one run of the queue holds between its wake-ups (the requests in flight aside).
struct Queue {
    schedule: Schedule,
    outage: Outage,
    /// The outbox is read by id: everything up to `last_id` has been read.
    last_id: i64,
    /// The last read stopped at [`BATCH`]: more rows wait in the outbox.
    more_in_outbox: bool,
    read_retry_at: Option<Instant>,
    /// Messages read from the outbox and not yet deleted from it.
    held: usize,
    /// Messages done with, to delete with the next `DELETE`.
    finished: Vec<Finished>,
    /// When the next `DELETE` of `finished` is due (see [`DELETE_GATHER`]).
    delete_due: Option<Instant>,
    delete_retry_at: Option<Instant>,
}

impl Queue {
    /// The message `id` is done with (sent, refused for good, or expired unsent for `chat` `None`):
    /// its row goes with the next `DELETE`, due within [`DELETE_GATHER`], or sooner when its chat's
    /// next message could otherwise go before it.
    fn done(&mut self, id: i64, chat: Option<i64>, now: Instant) {
        self.finished.push(Finished { id, chat });
        let wanted = chat.and_then(|c| self.schedule.next_wanted(c, now));
        let due = wanted.map_or(now + DELETE_GATHER, |at| at.min(now + DELETE_GATHER));
        self.delete_due = Some(self.delete_due.map_or(due, |d| d.min(due)));
    }
}

impl Outbound {
    /// Sends until `cancel` (then drains for at most [`STOP_DRAIN`]); what is left stays in the outbox
    /// for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        let mut queue = Queue {
            schedule: Schedule::new(self.limits, Instant::now()),
            outage: Outage::new(),
            last_id: 0,
            more_in_outbox: true,
            read_retry_at: None,
            held: 0,
            finished: Vec::new(),
            delete_due: None,
            delete_retry_at: None,
        };
        // Everything that waits on the network or the store is one of these futures, polled only by
        // the select! below: the loop itself awaits nothing else. (The store has one connection: a
        // deletion holding it unpolled while the loop awaited a read was a deadlock of every store
        // user.)
        let mut sends = FuturesUnordered::new();
        // At most one read and one deletion at a time: what finishes meanwhile goes with the next one.
        let mut reading = FuturesUnordered::new();
        let mut deleting = FuturesUnordered::new();
        let mut drain_until: Option<Instant> = None;
        let mut lease_lost = false;
        loop {
            let now = Instant::now();
            if drain_until.is_none() && cancel.is_cancelled() {
                drain_until = Some(now + STOP_DRAIN);
                // The outbox once more before the drain can find itself idle: a /restart asks for the
                // stop before its reply is recorded, and the store's one connection makes this read
                // wait for that write.
                self.wake.pending.store(true, Ordering::Release);
            }
            if drain_until.is_some_and(|end| now >= end) {
                break;
            }
            let read_due = match queue.read_retry_at {
                Some(at) => now >= at,
                None => {
                    self.wake.pending.load(Ordering::Acquire)
                        || (queue.more_in_outbox && queue.schedule.waiting() < BATCH as usize)
                }
            };
            if read_due && reading.is_empty() {
                queue.read_retry_at = None;
                self.wake.pending.store(false, Ordering::Release);
                reading.push(self.read_outbox(queue.last_id));
            }
            queue.schedule.forget_idle(now);
            self.status
                .metrics
                .outbound_chats
                .set(queue.schedule.chats() as i64);
            let cap = if queue.outage.probing() {
                1
            } else {
                self.limits.max_in_flight.max(1)
            };
            // What finished within DELETE_GATHER leaves in one DELETE, at once when a stop drains or
            // when the messages awaiting it hold most of the slots.
            let delete_now = drain_until.is_some()
                || queue.delete_due.is_some_and(|at| now >= at)
                || queue.schedule.in_flight() >= (cap * 3 / 4).max(1);
            if deleting.is_empty()
                && !queue.finished.is_empty()
                && delete_now
                && queue.delete_retry_at.is_none_or(|at| now >= at)
            {
                queue.delete_retry_at = None;
                queue.delete_due = None;
                deleting.push(self.delete(std::mem::take(&mut queue.finished)));
            }

            // The next send: now, or when.
            let last_start = drain_until.map(|end| end - DRAIN_ANSWERS);
            let start_at = if lease_lost {
                None
            } else {
                queue
                    .schedule
                    .next_start(now, cap)
                    .map(|at| at.max(queue.outage.not_before))
                    // Within the drain, only sends that can be answered before it ends.
                    .filter(|at| last_start.is_none_or(|last| *at < last))
            };
            if start_at.is_some_and(|at| at <= now) {
                if self.lease.as_ref().is_some_and(|w| w.remaining().is_none()) {
                    tracing::warn!(
                        bot_id = self.bot_id,
                        "the lease is lost: leaving the outbox to the next leader"
                    );
                    // The run is being stopped (lease lost, exit 3): wait for that rather than end
                    // early, which would read as a sender that died.
                    lease_lost = true;
                    continue;
                }
                if let Some(message) = queue.schedule.pick()
                    && let Some(message) = self.unexpired(message, &mut queue, now)
                {
                    queue.schedule.charge(message.chat_id, now);
                    sends.push(self.attempt(message, now));
                }
                continue;
            }
            if drain_until.is_some() {
                let busy = !sends.is_empty()
                    || !reading.is_empty()
                    || !deleting.is_empty()
                    || !queue.finished.is_empty();
                // Nothing more can go out within the drain: leave it for the next start.
                if !busy && start_at.is_none() {
                    break;
                }
            }

            let wake_at = [
                start_at,
                queue.schedule.next_forget().map(|at| at + FORGET_SLACK),
                queue.delete_retry_at.filter(|_| !queue.finished.is_empty()),
                queue.delete_due.filter(|_| deleting.is_empty()),
                queue.read_retry_at,
                drain_until,
            ]
            .into_iter()
            .flatten()
            .min()
            // Nothing to wait for but the events below.
            .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                () = cancel.cancelled(), if drain_until.is_none() => {}
                () = self.wake.notify.notified() => {}
                Some(attempt) = sends.next() => self.on_attempt(attempt, &mut queue),
                Some(read) = reading.next() => self.on_read(read, &mut queue),
                Some((batch, result)) = deleting.next() => self.on_deleted(batch, result, &mut queue),
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }

        if !sends.is_empty() {
            tracing::warn!(
                bot_id = self.bot_id,
                in_flight = sends.len(),
                "{} message(s) still unanswered when the stop's drain ended stay in the outbox: the \
                 next start sends them (again, if Telegram took them)",
                sends.len()
            );
        }
        drop(sends);
        drop(reading);
        // The deletion under way, then the messages finished since, so a clean stop leaves nothing
        // that was sent in the outbox.
        while let Some((batch, result)) = deleting.next().await {
            self.on_deleted(batch, result, &mut queue);
        }
        if !queue.finished.is_empty() {
            let (batch, result) = self.delete(std::mem::take(&mut queue.finished)).await;
            self.on_deleted(batch, result, &mut queue);
        }
    }

    /// `message` (just picked), unless it waited longer than [`MESSAGE_EXPIRY`]: then it is dropped,
    /// logged and counted, and its chat's next message may go.
    fn unexpired(
        &self,
        message: OutboxMessage,
        queue: &mut Queue,
        now: Instant,
    ) -> Option<OutboxMessage> {
        let Some(age) = expired(&message) else {
            return Some(message);
        };
        tracing::warn!(
            message_id = crate::systemd::catalog::MESSAGE_EXPIRED,
            bot_id = self.bot_id,
            chat_id = message.chat_id,
            "message dropped unsent: queued {} ago, longer than the outbox expiry ({})",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(MESSAGE_EXPIRY)
        );
        self.status.metrics.message_dropped("expired");
        queue.schedule.finish(message.chat_id, now);
        queue.done(message.id, None, now);
        None
    }

    /// The next messages of the outbox after `after_id`, and the number waiting in all when there
    /// are more than one read brings.
    async fn read_outbox(&self, after_id: i64) -> store::Result<OutboxRead> {
        let rows = self.store.outbox(self.bot_id, after_id, BATCH).await?;
        // Everything waiting was read unless the read stopped at BATCH: count the table only then
        // (a count per wake-up was a query per handled update).
        let waiting = if rows.len() as i64 >= BATCH {
            self.store.outbox_len(self.bot_id).await.ok()
        } else {
            None
        };
        Ok(OutboxRead { rows, waiting })
    }

    /// Puts what was read into the schedule.
    fn on_read(&self, read: store::Result<OutboxRead>, queue: &mut Queue) {
        let OutboxRead { rows, waiting } = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(
                    bot_id = self.bot_id,
                    "cannot read the outbox: {e}; trying again in {} s",
                    READ_RETRY.as_secs()
                );
                queue.read_retry_at = Some(Instant::now() + READ_RETRY);
                return;
            }
        };
        queue.more_in_outbox = rows.len() as i64 >= BATCH;
        if let Some(last) = rows.last() {
            queue.last_id = last.id;
        }
        queue.held += rows.len();
        let now = Instant::now();
        for message in rows {
            queue.schedule.push(message, now);
        }
        let depth = if queue.more_in_outbox {
            waiting
        } else {
            Some(queue.held as i64)
        };
        if let Some(n) = depth {
            self.status.metrics.outbound_queue_depth.set(n);
        }
    }

    /// One `sendMessage`; a 403 also disables the chat's alerts.
    async fn attempt(&self, message: OutboxMessage, started: Instant) -> Attempt {
        let result = self
            .client
            .send_message(ChatId(message.chat_id), &message.text)
            .await;
        if let Err(failure) = &result
            && matches!(failure.kind, FailureKind::Blocked)
            && let Err(e) = self
                .store
                .disable_chat_alerts(self.bot_id, message.chat_id)
                .await
        {
            tracing::warn!(
                bot_id = self.bot_id,
                "cannot disable the chat's alerts: {e}"
            );
        }
        Attempt {
            message,
            started,
            result,
        }
    }

    /// What a finished `sendMessage` means for its message, its chat and the queue.
    fn on_attempt(&self, attempt: Attempt, queue: &mut Queue) {
        let Attempt {
            message,
            started,
            result,
        } = attempt;
        let now = Instant::now();
        let failure = match result {
            Ok(()) => {
                if queue.outage.answered(started) {
                    tracing::info!(bot_id = self.bot_id, "Telegram takes messages again");
                }
                self.status.metrics.messages_sent.inc();
                queue.done(message.id, Some(message.chat_id), now);
                return;
            }
            Err(failure) => failure,
        };
        self.status.metrics.api_error(failure.kind.name());
        match failure.kind {
            FailureKind::RetryAfter(wait) => {
                queue.outage.answered(started);
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = message.chat_id,
                    error_kind = "rate_limited",
                    "{failure}; pausing this chat {} s",
                    wait.as_secs()
                );
                self.status.metrics.retries.inc();
                queue.schedule.retry(message, Some(now + wait), now);
            }
            FailureKind::Blocked => {
                queue.outage.answered(started);
                tracing::info!(
                    bot_id = self.bot_id,
                    chat_id = message.chat_id,
                    "the user blocked the bot: alerts to this chat disabled"
                );
                self.status.metrics.message_dropped("blocked");
                queue.done(message.id, Some(message.chat_id), now);
            }
            FailureKind::Api => {
                // 400 and the like: this message can never be sent (chat not found, text invalid).
                queue.outage.answered(started);
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = message.chat_id,
                    "message dropped: Telegram refused it for good: {failure}"
                );
                self.status.metrics.message_dropped("refused");
                queue.done(message.id, Some(message.chat_id), now);
            }
            // Network, 5xx, a body that is not the Bot API's, and answers about the bot rather than
            // the message (401, 409): retry the same message after a pause of the whole queue.
            _ => {
                self.status.metrics.retries.inc();
                match queue.outage.failed(started, now) {
                    Some(delay) => tracing::warn!(
                        bot_id = self.bot_id,
                        chat_id = message.chat_id,
                        error_kind = failure.kind.name(),
                        attempt = queue.outage.backoff.attempts(),
                        "{failure}; sending paused for {} ms, nothing is dropped",
                        delay.as_millis()
                    ),
                    None => tracing::debug!(
                        bot_id = self.bot_id,
                        chat_id = message.chat_id,
                        error_kind = failure.kind.name(),
                        "{failure}; sent before the pause began, tried again after it"
                    ),
                }
                queue.schedule.retry(message, None, now);
            }
        }
    }

    /// Deletes the rows of `batch` from the outbox in one statement.
    async fn delete(&self, batch: Vec<Finished>) -> (Vec<Finished>, store::Result<()>) {
        let ids: Vec<i64> = batch.iter().map(|f| f.id).collect();
        let result = self.store.outbox_done_many(&ids).await;
        (batch, result)
    }

    /// Once deleted, a message's chat may send its next one; a failed deletion is tried again.
    fn on_deleted(&self, batch: Vec<Finished>, result: store::Result<()>, queue: &mut Queue) {
        let now = Instant::now();
        match result {
            Ok(()) => {
                queue.held = queue.held.saturating_sub(batch.len());
                self.status
                    .metrics
                    .outbound_queue_depth
                    .dec_by(batch.len() as i64);
                for chat in batch.iter().filter_map(|f| f.chat) {
                    queue.schedule.finish(chat, now);
                }
            }
            Err(e) => {
                tracing::warn!(
                    bot_id = self.bot_id,
                    messages = batch.len(),
                    "cannot remove {} message(s) done with from the outbox: {e}; trying again in {} \
                     s, their chats wait meanwhile",
                    batch.len(),
                    DELETE_RETRY.as_secs()
                );
                queue.finished.extend(batch);
                queue.delete_retry_at = Some(now + DELETE_RETRY);
                queue.delete_due = queue.delete_retry_at;
            }
        }
    }
}

/// The queue-wide pause while Telegram cannot be reached.
///
/// Only a send that started after the last failure was noticed is news about the outage: the sends in
/// flight when it began fail (or succeed) together and count once, and while it lasts (`probing`) one
/// message at a time tries Telegram again.
struct Outage {
    backoff: Backoff,
    not_before: Instant,
    /// When the last failure paused the queue; `None` while Telegram answers.
    noticed: Option<Instant>,
}

impl Outage {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(500), OUTAGE_BACKOFF_MAX),
            not_before: Instant::now(),
            noticed: None,
        }
    }

    /// Telegram could not be reached: the pause to begin now, unless the send started before the
    /// current pause did.
    fn failed(&mut self, started: Instant, now: Instant) -> Option<Duration> {
        if self.noticed.is_some_and(|at| started < at) {
            return None;
        }
        let delay = self.backoff.next_delay();
        self.not_before = now + delay;
        self.noticed = Some(now);
        Some(delay)
    }

    /// Telegram answered a send that started at `started`: true when that ends an outage.
    fn answered(&mut self, started: Instant) -> bool {
        match self.noticed {
            Some(at) if started >= at => {
                self.backoff.reset();
                self.noticed = None;
                true
            }
            _ => false,
        }
    }

    fn probing(&self) -> bool {
        self.noticed.is_some()
    }
}

/// How long ago `m` was queued, if that is longer than [`MESSAGE_EXPIRY`].
fn expired(m: &OutboxMessage) -> Option<Duration> {
    let now_ms = crate::instance::holder::unix_now().as_millis() as i64;
    let age = Duration::from_millis(now_ms.saturating_sub(m.queued_at_ms).max(0) as u64);
    (age > MESSAGE_EXPIRY).then_some(age)
}
