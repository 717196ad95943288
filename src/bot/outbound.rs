//! The outbound queue: every message the bot sends leaves through here, within Telegram's limits.
//!
//! Messages wait in the store's outbox (written in the same transaction as their cause), so a crash
//! loses none; one is deleted only when Telegram accepted it, refused it for good (400: chat not
//! found, text invalid; 403: the user blocked the bot), or it waited longer than [`MESSAGE_EXPIRY`]
//! (24 h: an answer or an alert that old is not worth sending; dropped with a log line and counted in
//! `cryptobot_messages_dropped_total{kind="expired"}`). A network fault, a 5xx or an answer that is
//! not the Bot API's is never a reason to drop: the queue pauses as a whole (it is not the chat's
//! fault) with a backoff from 0.5 s to [`OUTAGE_BACKOFF_MAX`] and tries again, for as long as an
//! outage lasts. Sending honours
//! the Bot FAQ's limits with token buckets — about 30 messages/s overall, 1/s per chat with a short
//! burst, 20/min per group — set a little below them so a client clock that runs ahead never meets a
//! 429. A 429 pauses only its chat for `retry_after`; other chats go on. A 403 (the user blocked the
//! bot) disables that chat's alerts. Per chat, messages leave in the order they were queued.
//!
//! Delivery is at least once: a message is deleted after Telegram took it, so a crash (or a leader
//! frozen past its lease) between the two sends it again from the next process — the outbox is shared
//! by every host with the PostgreSQL lease. With the lease, nothing is sent after the lease window
//! closed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use teloxide::types::ChatId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::instance::lease_window::LeaseWindow;
use crate::live_status::LiveStatus;
use crate::store::{OutboxMessage, Store};
use crate::telegram::backoff::Backoff;
use crate::telegram::client::Client;
use crate::telegram::errors::FailureKind;

/// Rates (messages per second) and bursts of the buckets.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub global_rate: f64,
    pub global_burst: f64,
    pub chat_rate: f64,
    pub chat_burst: f64,
    pub group_rate: f64,
    pub group_burst: f64,
}

impl Default for Limits {
    /// Telegram's limits (30/s overall, ~1/s per chat, 20/min per group), each kept slightly below.
    /// A bucket lets at most `burst + rate × T` messages through in any window of T seconds, so the
    /// overall burst is 1: "30 per second" then holds in every sliding second (1 + 29.7 < 31), where a
    /// burst of 20 let 49 through in the first second of a busy period.
    fn default() -> Self {
        Self {
            global_rate: 29.7,
            global_burst: 1.0,
            chat_rate: 0.95,
            chat_burst: 2.0,
            group_rate: 19.0 / 60.0,
            group_burst: 2.0,
        }
    }
}

/// A token bucket.
#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
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
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

/// Per-chat sending state.
#[derive(Debug)]
struct ChatState {
    bucket: Bucket,
    /// A 429 pauses the chat until then.
    not_before: Instant,
}

/// After a stop request, messages already queued are still sent for this long (a /restart's own
/// reply, the last answers); what is left stays in the outbox for the next start.
const STOP_DRAIN: Duration = Duration::from_secs(2);
/// A message still unsent this long after it was queued is dropped (logged, counted): through an
/// outage of any shorter length, nothing is lost.
pub const MESSAGE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// The longest pause between two attempts while Telegram cannot be reached (network, 5xx).
pub const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Messages read from the outbox at a time.
const BATCH: i64 = 1000;

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

impl Outbound {
    fn chat<'a>(
        &self,
        chats: &'a mut HashMap<i64, ChatState>,
        chat_id: i64,
        now: Instant,
    ) -> &'a mut ChatState {
        let (rate, burst) = if chat_id < 0 {
            (self.limits.group_rate, self.limits.group_burst)
        } else {
            (self.limits.chat_rate, self.limits.chat_burst)
        };
        chats.entry(chat_id).or_insert_with(|| ChatState {
            bucket: Bucket::new(rate, burst, now),
            not_before: now,
        })
    }

    async fn reload(&self, queue: &mut VecDeque<OutboxMessage>, last_id: &mut i64) {
        self.wake.pending.store(false, Ordering::Release);
        let complete = match self.store.outbox(self.bot_id, *last_id, BATCH).await {
            Ok(rows) => {
                let complete = (rows.len() as i64) < BATCH;
                if let Some(last) = rows.last() {
                    *last_id = last.id;
                }
                queue.extend(rows);
                complete
            }
            Err(e) => {
                tracing::warn!(bot_id = self.bot_id, "cannot read the outbox: {e}");
                return;
            }
        };
        // Everything waiting is in `queue` unless the read stopped at BATCH: count the table only then
        // (a count per wake-up was a query per handled update).
        let depth = if complete {
            Some(queue.len() as i64)
        } else {
            self.store.outbox_len(self.bot_id).await.ok()
        };
        if let Some(n) = depth {
            self.status.metrics.outbound_queue_depth.set(n);
        }
    }

    /// Sends until `cancel` (then drains for at most [`STOP_DRAIN`]); what is left stays in the outbox
    /// for the next start.
    pub async fn run(self, cancel: CancellationToken) {
        let mut queue: VecDeque<OutboxMessage> = VecDeque::new();
        let mut last_id = 0;
        let mut chats: HashMap<i64, ChatState> = HashMap::new();
        // The chats already looked at in one pick (kept to reuse its allocation).
        let mut seen: HashSet<i64> = HashSet::new();
        let mut global = Bucket::new(
            self.limits.global_rate,
            self.limits.global_burst,
            Instant::now(),
        );
        // A network fault or a 5xx pauses every chat: it is Telegram (or the way there), not the chat.
        let mut outage = Outage::new();
        self.reload(&mut queue, &mut last_id).await;
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && cancel.is_cancelled() {
                drain_until = Some(Instant::now() + STOP_DRAIN);
            }
            if drain_until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if self.wake.pending.load(Ordering::Acquire) || queue.is_empty() {
                self.reload(&mut queue, &mut last_id).await;
            }
            if queue.is_empty() {
                if drain_until.is_some() {
                    break;
                }
                tokio::select! {
                    () = cancel.cancelled() => continue,
                    () = self.wake.notify.notified() => continue,
                }
            }
            // The first message whose chat may send now; else sleep until the earliest one may.
            let now = Instant::now();
            let mut pick = None;
            let mut earliest = now + Duration::from_secs(60);
            seen.clear();
            for (i, m) in queue.iter().enumerate() {
                if !seen.insert(m.chat_id) {
                    continue; // only a chat's oldest message is a candidate: per-chat order
                }
                let chat = self.chat(&mut chats, m.chat_id, now);
                let ready = chat.bucket.ready_at(now).max(chat.not_before);
                if ready <= now {
                    pick = Some(i);
                    break;
                }
                earliest = earliest.min(ready);
            }
            let ready = match pick {
                Some(_) => global.ready_at(now),
                None => earliest,
            }
            .max(outage.not_before);
            if ready > now {
                if drain_until.is_some_and(|t| ready >= t) {
                    break; // cannot go out before the drain ends: leave it for the next start
                }
                tokio::select! {
                    () = cancel.cancelled(), if drain_until.is_none() => {}
                    () = tokio::time::sleep_until(ready.into()) => {}
                    () = self.wake.notify.notified() => {}
                }
                continue;
            }
            let Some(i) = pick else { continue };
            if self.lease.as_ref().is_some_and(|w| w.remaining().is_none()) {
                tracing::warn!(
                    bot_id = self.bot_id,
                    "the lease is lost: leaving the outbox to the next leader"
                );
                // The run is being stopped (lease lost, exit 3): wait for that rather than end
                // early, which would read as a sender that died.
                cancel.cancelled().await;
                break;
            }
            let message = queue[i].clone();
            if let Some(age) = expired(&message) {
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = message.chat_id,
                    "message dropped unsent: queued {} ago, longer than the outbox expiry ({})",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(MESSAGE_EXPIRY)
                );
                self.status.metrics.message_dropped("expired");
                queue.remove(i);
                if let Err(e) = self.store.outbox_done(message.id).await {
                    tracing::warn!(
                        bot_id = self.bot_id,
                        "cannot remove an expired message from the outbox: {e}"
                    );
                }
                self.status.metrics.outbound_queue_depth.dec();
                continue;
            }
            global.take(now);
            self.chat(&mut chats, message.chat_id, now).bucket.take(now);
            let done = self.send(&message, &mut chats, &mut outage).await;
            if done {
                queue.remove(i);
                if let Err(e) = self.store.outbox_done(message.id).await {
                    tracing::warn!(
                        bot_id = self.bot_id,
                        "cannot remove a sent message from the outbox: {e}"
                    );
                }
                self.status.metrics.outbound_queue_depth.dec();
            }
        }
    }

    /// Sends one message; true when it is done with (sent, or refused for good).
    async fn send(
        &self,
        m: &OutboxMessage,
        chats: &mut HashMap<i64, ChatState>,
        outage: &mut Outage,
    ) -> bool {
        let result = self.client.send_message(ChatId(m.chat_id), &m.text).await;
        let now = Instant::now();
        let chat = self.chat(chats, m.chat_id, now);
        let failure = match result {
            Ok(()) => {
                if outage.backoff.attempts() > 0 {
                    tracing::info!(bot_id = self.bot_id, "Telegram takes messages again");
                }
                outage.backoff.reset();
                self.status.metrics.messages_sent.inc();
                return true;
            }
            Err(f) => f,
        };
        self.status.metrics.api_error(failure.kind.name());
        match failure.kind {
            FailureKind::RetryAfter(wait) => {
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = m.chat_id,
                    error_kind = "rate_limited",
                    "{failure}; pausing this chat {} s",
                    wait.as_secs()
                );
                chat.not_before = now + wait;
                self.status.metrics.retries.inc();
                false
            }
            FailureKind::Blocked => {
                tracing::info!(
                    bot_id = self.bot_id,
                    chat_id = m.chat_id,
                    "the user blocked the bot: alerts to this chat disabled"
                );
                self.status.metrics.message_dropped("blocked");
                if let Err(e) = self.store.disable_chat_alerts(self.bot_id, m.chat_id).await {
                    tracing::warn!(
                        bot_id = self.bot_id,
                        "cannot disable the chat's alerts: {e}"
                    );
                }
                true
            }
            FailureKind::Api => {
                // 400 and the like: this message can never be sent (chat not found, text invalid).
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = m.chat_id,
                    "message dropped: Telegram refused it for good: {failure}"
                );
                self.status.metrics.message_dropped("refused");
                true
            }
            // Network, 5xx, a body that is not the Bot API's, and answers about the bot rather than
            // the message (401, 409): retry the same message after a pause of the whole queue.
            _ => {
                let delay = outage.backoff.next_delay();
                outage.not_before = now + delay;
                tracing::warn!(
                    bot_id = self.bot_id,
                    chat_id = m.chat_id,
                    error_kind = failure.kind.name(),
                    attempt = outage.backoff.attempts(),
                    "{failure}; sending paused for {} ms, nothing is dropped",
                    delay.as_millis()
                );
                self.status.metrics.retries.inc();
                false
            }
        }
    }
}

/// The queue-wide pause while Telegram cannot be reached.
struct Outage {
    backoff: Backoff,
    not_before: Instant,
}

impl Outage {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_millis(500), OUTAGE_BACKOFF_MAX),
            not_before: Instant::now(),
        }
    }
}

/// How long ago `m` was queued, if that is longer than [`MESSAGE_EXPIRY`].
fn expired(m: &OutboxMessage) -> Option<Duration> {
    let now_ms = crate::instance::holder::unix_now().as_millis() as i64;
    let age = Duration::from_millis(now_ms.saturating_sub(m.queued_at_ms).max(0) as u64);
    (age > MESSAGE_EXPIRY).then_some(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_expires_after_a_day_in_the_outbox() {
        let now_ms = crate::instance::holder::unix_now().as_millis() as i64;
        let queued = |ago: Duration| OutboxMessage {
            id: 1,
            chat_id: 1,
            text: "x".into(),
            queued_at_ms: now_ms - ago.as_millis() as i64,
        };
        assert_eq!(expired(&queued(Duration::from_secs(3600))), None);
        assert_eq!(
            expired(&queued(MESSAGE_EXPIRY - Duration::from_secs(60))),
            None
        );
        let age = expired(&queued(MESSAGE_EXPIRY + Duration::from_secs(60))).unwrap();
        assert!(age > MESSAGE_EXPIRY);
        // A clock that went back: queued "in the future" is not expired.
        assert_eq!(expired(&queued(Duration::ZERO).clone()), None);
    }

    /// With the PostgreSQL lease, a message is sent only while the lease window is open: once it
    /// closed (the lease lost, or a leader resumed after a freeze past its TTL), what is queued stays in
    /// the outbox for the next leader and the queue stops by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_sent_once_the_lease_window_closed() {
        let fake = fake_bot_api::FakeBotApi::start();
        let token = "7000123:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let bot = fake.add_bot(token, "outbound_test_bot");
        fake.inject_message(bot, 5, "/start"); // the fake knows a chat once it wrote to the bot
        let bot_id = bot as u64;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let client = Client::new(
            &crate::secret::Token::parse(token).unwrap(),
            &fake.url().parse().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
        let window = Arc::new(LeaseWindow::new());
        window.extend(crate::clock::BootInstant::now(), Duration::from_secs(60));
        let wake = Arc::new(Wake::default());
        let outbound = Outbound {
            store: store.clone(),
            client,
            bot_id,
            limits: Limits::default(),
            wake: Arc::clone(&wake),
            status: Arc::new(LiveStatus::new()),
            lease: Some(Arc::clone(&window)),
        };
        store
            .mark_handled(
                bot_id,
                crate::store::HandledUpdate {
                    id: 1,
                    fingerprint: 1,
                },
                &[(5, "while leading".to_owned())],
            )
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let run = tokio::spawn(outbound.run(cancel.clone()));
        let first = tokio::task::spawn_blocking(move || {
            let sent =
                fake.wait_for_sent(bot, |m| m.text == "while leading", Duration::from_secs(10));
            (fake, sent)
        });
        let (fake, sent) = first.await.unwrap();
        sent.expect("the message queued while leading is sent");

        window.lose();
        store
            .mark_handled(
                bot_id,
                crate::store::HandledUpdate {
                    id: 2,
                    fingerprint: 2,
                },
                &[(5, "after the lease".to_owned())],
            )
            .await
            .unwrap();
        wake.wake();
        // The queue waits for the run's stop (the lease loss stops it) and sends nothing meanwhile,
        // nor during its drain.
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the queue did not stop within 10 s of the stop request")
            .unwrap();
        let texts: Vec<String> = fake.sent(bot).into_iter().map(|m| m.text).collect();
        assert_eq!(texts, ["while leading"]);
        let left = store.outbox(bot_id, 0, 10).await.unwrap();
        assert_eq!(
            left.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["after the lease"],
            "left in the outbox for the next leader"
        );
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
}
