//! The outbound queue against the in-process fake Bot API, most with Telegram's limits on and 300 ms
//! per `sendMessage` (what a VPS sees): the rate, the sliding second, per-chat order, a 429, a group's
//! limit, the stop's drain, an outage, the lease window, and that idle chats are forgotten.

use std::time::SystemTime;

use fake_bot_api::{FakeBotApi, Fault, SentMessage};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use super::*;
use crate::store::HandledUpdate;

const TOKEN: &str = "7000123:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// What a `sendMessage` takes from a VPS, end to end (100–300 ms).
const LATENCY: Duration = Duration::from_millis(300);

/// A fake Bot API, a store and an outbound queue for one bot. Messages are queued as the bot queues
/// them (`mark_handled`, then a wake); the queue runs from [`Harness::run`] until [`Harness::stop`].
struct Harness {
    api: Arc<FakeBotApi>,
    bot: i64,
    store: Store,
    wake: Arc<Wake>,
    status: Arc<LiveStatus>,
    cancel: CancellationToken,
    outbound: Option<Outbound>,
    running: Option<JoinHandle<()>>,
    next_update: i64,
    _dir: TempDir,
}

impl Harness {
    /// `latency`: added to every `sendMessage`; `rate_limits`: the fake answers 429 over Telegram's
    /// limits.
    async fn new(limits: Limits, latency: Option<Duration>, rate_limits: bool) -> Self {
        Self::with_lease(limits, latency, rate_limits, None).await
    }

    async fn with_lease(
        limits: Limits,
        latency: Option<Duration>,
        rate_limits: bool,
        lease: Option<Arc<LeaseWindow>>,
    ) -> Self {
        let api = Arc::new(FakeBotApi::start());
        let bot = api.add_bot(TOKEN, "outbound_test_bot");
        api.set_rate_limits(rate_limits);
        if let Some(latency) = latency {
            api.set_latency(bot, "sendMessage", latency);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let client = Client::new(
            &crate::secret::Token::parse(TOKEN).unwrap(),
            &api.url().parse().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap();
        let wake = Arc::new(Wake::default());
        let status = Arc::new(LiveStatus::new());
        let outbound = Outbound {
            store: store.clone(),
            client,
            bot_id: bot as u64,
            limits,
            wake: Arc::clone(&wake),
            status: Arc::clone(&status),
            lease,
        };
        Self {
            api,
            bot,
            store,
            wake,
            status,
            cancel: CancellationToken::new(),
            outbound: Some(outbound),
            running: None,
            next_update: 1,
            _dir: dir,
        }
    }

    /// The fake lets the bot write to a chat once someone wrote from it.
    fn know_chats(&self, chats: impl IntoIterator<Item = i64>) {
        for chat in chats {
            self.api.inject_message(self.bot, chat, "/start");
        }
    }

    /// Queues `messages` in the outbox, in this order, and wakes the queue.
    async fn queue(&mut self, messages: &[(i64, String)]) {
        let update = HandledUpdate {
            id: self.next_update,
            fingerprint: self.next_update,
        };
        self.next_update += 1;
        self.store
            .mark_handled(self.bot as u64, update, messages)
            .await
            .unwrap();
        self.wake.wake();
    }

    fn run(&mut self) {
        let outbound = self.outbound.take().expect("the queue runs once");
        self.running = Some(tokio::spawn(outbound.run(self.cancel.clone())));
    }

    /// Waits (at most `timeout`) until the fake accepted `n` messages; returns all it accepted.
    async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let api = Arc::clone(&self.api);
        let bot = self.bot;
        let mut seen = 0;
        tokio::task::spawn_blocking(move || {
            api.wait_for_sent(
                bot,
                |_| {
                    seen += 1;
                    seen >= n
                },
                timeout,
            )
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("waiting for {n} messages: {e}"));
        self.api.sent(self.bot)
    }

    /// Waits (at most `timeout`) until the queue got `n` answers that make it send a message again.
    async fn wait_retries(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.status.metrics.retries.get() < n {
            assert!(
                Instant::now() < deadline,
                "{} retries after {timeout:?}, expected {n}",
                self.status.metrics.retries.get()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asks the queue to stop and waits for it (at most `timeout`).
    async fn stop(&mut self, timeout: Duration) {
        self.cancel.cancel();
        let running = self.running.take().expect("the queue is running");
        tokio::time::timeout(timeout, running)
            .await
            .unwrap_or_else(|_| panic!("the queue did not stop within {timeout:?}"))
            .unwrap();
    }

    async fn outbox_texts(&self) -> Vec<String> {
        let left = self
            .store
            .outbox(self.bot as u64, 0, 100_000)
            .await
            .unwrap();
        left.into_iter().map(|m| m.text).collect()
    }
}

fn one_message_to_each(chats: impl IntoIterator<Item = i64>) -> Vec<(i64, String)> {
    chats
        .into_iter()
        .map(|chat| (chat, format!("to {chat}")))
        .collect()
}

/// Seconds between two messages as the fake accepted them.
fn secs_between(earlier: &SentMessage, later: &SentMessage) -> f64 {
    match later.at.duration_since(earlier.at) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The most messages accepted within any one second.
fn busiest_second(sent: &[SentMessage]) -> usize {
    let mut at: Vec<SystemTime> = sent.iter().map(|m| m.at).collect();
    at.sort();
    let mut first = 0;
    let mut busiest = 0;
    for last in 0..at.len() {
        while at[last].duration_since(at[first]).unwrap() >= Duration::from_secs(1) {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

/// 150 chats, one message each, 300 ms per request, Telegram's limits on: what the fake accepted.
async fn one_message_to_150_chats() -> (Vec<SentMessage>, fake_bot_api::Stats) {
    const CHATS: i64 = 150;
    let mut h = Harness::new(Limits::default(), Some(LATENCY), true).await;
    h.know_chats(1..=CHATS);
    h.queue(&one_message_to_each(1..=CHATS)).await;
    h.run();
    let sent = h.wait_sent(CHATS as usize, Duration::from_secs(60)).await;
    h.stop(Duration::from_secs(5)).await;
    assert_eq!(sent.len(), CHATS as usize);
    (sent, h.api.stats(h.bot))
}

/// One request at a time managed 3.3 messages/s at 300 ms per request; several in flight reach
/// Telegram's rate, without a single 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_chats_get_their_messages_at_telegrams_rate_despite_300_ms_per_request() {
    let (sent, stats) = one_message_to_150_chats().await;
    let span = secs_between(&sent[0], &sent[sent.len() - 1]);
    let rate = (sent.len() - 1) as f64 / span;
    eprintln!("150 messages at 300 ms per request: {rate:.1} messages/s");
    assert!(rate >= 20.0, "{rate:.1} messages/s");
    assert_eq!(stats.rate_limited_429, 0, "{stats:?}");
}

/// "30 per second" holds in every sliding second, as the fake saw the messages arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sliding_second_holds_more_than_30_messages() {
    let (sent, _) = one_message_to_150_chats().await;
    let busiest = busiest_second(&sent);
    let mut at: Vec<SystemTime> = sent.iter().map(|m| m.at).collect();
    at.sort();
    let tightest = at
        .windows(31)
        .map(|w| w[30].duration_since(w[0]).unwrap())
        .min()
        .unwrap();
    eprintln!("busiest second: {busiest} messages; 31 in a row took at least {tightest:?}");
    assert!(busiest <= 30, "{busiest} messages within one second");
}

/// Per chat, the messages arrive in the order they were queued, and the next one is sent only once
/// the previous one was answered: with 300 ms per request, at least 300 ms apart, though a chat's
/// bucket would let the first two go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chats_messages_leave_one_at_a_time_in_order() {
    const CHATS: i64 = 10;
    const PER_CHAT: usize = 4;
    let mut h = Harness::new(Limits::default(), Some(LATENCY), true).await;
    h.know_chats(1..=CHATS);
    let mut messages = Vec::new();
    for k in 0..PER_CHAT {
        for chat in 1..=CHATS {
            messages.push((chat, format!("{chat}:{k}")));
        }
    }
    h.queue(&messages).await;
    h.run();
    let sent = h
        .wait_sent(CHATS as usize * PER_CHAT, Duration::from_secs(30))
        .await;
    h.stop(Duration::from_secs(5)).await;
    for chat in 1..=CHATS {
        let of_chat: Vec<&SentMessage> = sent.iter().filter(|m| m.chat_id == chat).collect();
        let texts: Vec<&str> = of_chat.iter().map(|m| m.text.as_str()).collect();
        let queued: Vec<String> = (0..PER_CHAT).map(|k| format!("{chat}:{k}")).collect();
        assert_eq!(texts, queued, "chat {chat}: order");
        for pair in of_chat.windows(2) {
            let gap = secs_between(pair[0], pair[1]);
            assert!(
                gap >= LATENCY.as_secs_f64() - 0.005,
                "chat {chat}: {:?} then {:?} {:.0} ms apart: two in flight at once",
                pair[0].text,
                pair[1].text,
                gap * 1000.0
            );
        }
    }
    assert_eq!(h.api.stats(h.bot).rate_limited_429, 0);
}

/// A 429 (`retry_after` 2 s) for one chat pauses that chat only: the others' messages, queued after
/// it, go out at once, not after the pause; the chat's own follow after the pause, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_only_its_chat() {
    let mut h = Harness::new(Limits::default(), Some(LATENCY), true).await;
    h.know_chats(1..=6);
    // The next sendMessage, whichever it is, gets the 429: let it be chat 1's, alone in the queue.
    h.api.inject_fault(
        h.bot,
        "sendMessage",
        Fault::TooManyRequests { retry_after: 2 },
        1,
    );
    h.queue(&[(1, "a1".into()), (1, "a2".into())]).await;
    let before = SystemTime::now();
    h.run();
    // Once the queue has the 429 (the fake counts it on arrival, 300 ms before it answers).
    h.wait_retries(1, Duration::from_secs(10)).await;
    let others_queued = SystemTime::now();
    h.queue(&one_message_to_each(2..=6)).await;
    let sent = h.wait_sent(7, Duration::from_secs(20)).await;
    h.stop(Duration::from_secs(5)).await;

    let a1 = sent.iter().find(|m| m.text == "a1").unwrap();
    assert!(
        a1.at.duration_since(before).unwrap() >= Duration::from_secs(2),
        "chat 1 sent within its 2 s pause"
    );
    for other in sent.iter().filter(|m| m.chat_id != 1) {
        // 300 ms per request plus five sends' pacing, far under the 2 s pause.
        let took = other.at.duration_since(others_queued).unwrap();
        assert!(
            took < Duration::from_millis(1500) && other.at < a1.at,
            "chat {} waited for chat 1's pause: sent {took:?} after it was queued",
            other.chat_id,
        );
    }
    let chat_1: Vec<&str> = sent
        .iter()
        .filter(|m| m.chat_id == 1)
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(chat_1, ["a1", "a2"]);
    assert_eq!(
        h.api.stats(h.bot).rate_limited_429,
        1,
        "only the injected one"
    );
}

/// A group (negative chat id) gets 20 messages a minute, kept a little below: after a burst of two,
/// one every 60/19 s; the fake (Telegram's group limit on) never answers 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_gets_at_most_twenty_messages_a_minute() {
    const GROUP: i64 = -1_001_234;
    const MESSAGES: usize = 4;
    let mut h = Harness::new(Limits::default(), Some(LATENCY), true).await;
    h.know_chats([GROUP]);
    let messages: Vec<(i64, String)> = (0..MESSAGES).map(|k| (GROUP, format!("g{k}"))).collect();
    h.queue(&messages).await;
    h.run();
    let sent = h.wait_sent(MESSAGES, Duration::from_secs(30)).await;
    h.stop(Duration::from_secs(5)).await;
    let texts: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["g0", "g1", "g2", "g3"]);
    // k + 1 messages within T need burst + rate × T ≥ k + 1: T ≥ (k − 1) × 60/19 s.
    for (k, m) in sent.iter().enumerate().skip(2) {
        let since_first = secs_between(&sent[0], m);
        let least = (k - 1) as f64 * 60.0 / 19.0 - 0.05;
        assert!(
            since_first >= least,
            "message {k} of the group {since_first:.2} s after the first, under {least:.2} s"
        );
    }
    assert_eq!(h.api.stats(h.bot).rate_limited_429, 0);
}

/// A stop lets the sends in flight finish within the drain (none is left unanswered) and deletes what
/// they sent: nothing Telegram answered stays in the outbox to be sent again; what was not sent stays
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_the_sends_in_flight_and_leaves_the_rest_queued() {
    const CHATS: i64 = 150;
    let mut h = Harness::new(Limits::default(), Some(LATENCY), true).await;
    h.know_chats(1..=CHATS);
    h.queue(&one_message_to_each(1..=CHATS)).await;
    h.run();
    h.wait_sent(1, Duration::from_secs(10)).await;
    let asked = Instant::now();
    h.stop(STOP_DRAIN + Duration::from_secs(3)).await;
    let took = asked.elapsed();
    assert!(
        took <= STOP_DRAIN + Duration::from_millis(500),
        "the stop took {took:?}"
    );
    let sent: Vec<String> = h.api.sent(h.bot).into_iter().map(|m| m.text).collect();
    let left = h.outbox_texts().await;
    assert!(
        sent.len() > 10 && !left.is_empty(),
        "{} sent, {} left: the drain sends for a while, not everything",
        sent.len(),
        left.len()
    );
    let again: Vec<&String> = sent.iter().filter(|t| left.contains(t)).collect();
    assert!(again.is_empty(), "sent yet left in the outbox: {again:?}");
    assert_eq!(sent.len() + left.len(), CHATS as usize, "nothing lost");
    assert_eq!(
        h.api.stats(h.bot).send_message_calls,
        sent.len() as u64,
        "requests left unanswered at the end of the drain"
    );
}

/// Through an outage of `sendMessage` (connections reset for 3 s) with many requests in flight,
/// nothing is dropped and the order per chat holds. (Resets, not 5xx: teloxide holds a 5xx answer
/// 10 s before it returns the error; `tests/faults.rs` covers both kinds end to end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_many_requests_in_flight_drops_nothing() {
    const CHATS: i64 = 40;
    let mut h = Harness::new(Limits::default(), Some(LATENCY), true).await;
    h.know_chats(1..=CHATS);
    let mut messages = one_message_to_each(1..=CHATS);
    messages.extend((1..=CHATS).map(|chat| (chat, format!("then {chat}"))));
    h.queue(&messages).await;
    h.run();
    h.wait_sent(5, Duration::from_secs(10)).await;
    h.api
        .set_outage(h.bot, "sendMessage", Fault::Reset, Duration::from_secs(3));
    let sent = h
        .wait_sent(2 * CHATS as usize, Duration::from_secs(60))
        .await;
    h.stop(Duration::from_secs(5)).await;
    for chat in 1..=CHATS {
        let texts: Vec<&str> = sent
            .iter()
            .filter(|m| m.chat_id == chat)
            .map(|m| m.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [format!("to {chat}"), format!("then {chat}")],
            "chat {chat}"
        );
    }
    let dropped = h.status.metrics.encode();
    assert!(
        !dropped.contains("cryptobot_messages_dropped_total"),
        "{dropped}"
    );
    assert!(h.outbox_texts().await.is_empty());
}

/// The sends in flight when an outage begins fail together: one failure, one pause, not a backoff
/// grown by each of them. The next one, started after the pause, is news again.
#[test]
fn sends_in_flight_when_an_outage_began_count_as_one_failure() {
    let t0 = Instant::now();
    let mut outage = Outage::new();
    let first = outage.failed(t0, t0 + Duration::from_millis(300)).unwrap();
    assert!(outage.probing());
    for k in 1..=31 {
        let now = t0 + Duration::from_millis(300 + k);
        assert_eq!(outage.failed(t0, now), None, "in flight before the pause");
        assert!(!outage.answered(t0), "an old answer ends nothing");
    }
    assert!(first <= Duration::from_millis(500));
    let probe = t0 + Duration::from_secs(1);
    let second = outage.failed(probe, probe + Duration::from_millis(300));
    assert!(second.is_some() && outage.backoff.attempts() == 2);
    let next = probe + Duration::from_secs(2);
    assert!(outage.answered(next), "a probe answered ends the outage");
    assert!(!outage.probing());
}

/// The per-chat state does not grow with every chat ever written to: after one message to each of
/// 10,000 chats, it is all forgotten once their buckets are full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_of_idle_chats_is_forgotten() {
    const CHATS: i64 = 10_000;
    // Telegram's overall limit would make this take 6 minutes; the per-chat limits are the real ones.
    let limits = Limits {
        global_rate: 100_000.0,
        global_burst: 64.0,
        ..Limits::default()
    };
    let mut h = Harness::new(limits, None, false).await;
    h.know_chats(1..=CHATS);
    h.queue(&one_message_to_each(1..=CHATS)).await;
    h.run();
    h.wait_sent(CHATS as usize, Duration::from_secs(120)).await;
    let chats = &h.status.metrics.outbound_chats;
    let deadline = Instant::now() + Duration::from_secs(10);
    while chats.get() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} chats still held 10 s after the last send",
            chats.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop(Duration::from_secs(5)).await;
}

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
    let window = Arc::new(LeaseWindow::new());
    window.extend(crate::clock::BootInstant::now(), Duration::from_secs(60));
    let mut h =
        Harness::with_lease(Limits::default(), None, false, Some(Arc::clone(&window))).await;
    h.know_chats([5]);
    h.queue(&[(5, "while leading".to_owned())]).await;
    h.run();
    let sent = h.wait_sent(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].text, "while leading");

    window.lose();
    h.queue(&[(5, "after the lease".to_owned())]).await;
    // The queue waits for the run's stop (the lease loss stops it) and sends nothing meanwhile,
    // nor during its drain.
    h.stop(Duration::from_secs(10)).await;
    let texts: Vec<String> = h.api.sent(h.bot).into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["while leading"]);
    assert_eq!(
        h.outbox_texts().await,
        ["after the lease"],
        "left in the outbox for the next leader"
    );
}
