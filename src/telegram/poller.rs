//! The long-polling update source: one straight loop from `getUpdates` to the handler and back.
//!
//! Guarantees:
//! - G3: the offset moves past an update only after the dispatcher accepted it durably (the store's
//!   inbox, one transaction per batch; `bot::dispatch`), and follows the ids Telegram hands out (one
//!   past the batch's last, even when ids jump down). Handlers run concurrently behind the poll: the
//!   next `getUpdates` does not wait for a slow chat. On shutdown the loop stops fetching, lets the
//!   handlers finish for at most [`DRAIN_BUDGET`] (what is left stays in the inbox for the next
//!   start), and confirms the offset to Telegram with a last `getUpdates(offset, timeout = 0)` unless
//!   a poll Telegram answered already carried it. Nothing fetched is lost.
//! - A `getUpdates` that comes back empty long before its timeout (a proxy or a local Bot API server
//!   that ignores `timeout`) is not followed by another at once: at most one poll per
//!   [`EMPTY_POLL_INTERVAL`] while idle, and no CPU spin.
//! - G5: each iteration beats [`Liveness`]; every wait is declared with its deadline.
//! - G6: a 409 from another poller backs off with jitter (5 s doubling to 300 s) and is made visible;
//!   a webhook-active 409 is a named configuration error.
//! - A fault of Telegram or the network never ends the loop: it retries with backoff, STATUS "degraded".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use teloxide::types::Update;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::client::Client;
use super::errors::{ApiFailure, FailureKind};
use crate::bot::dispatch::{Dispatcher, Outcome};
use crate::config::{ConflictPolicy, OnConflict};
use crate::exit::{Code, Failure};
use crate::instance::leadership::lease_lost;
use crate::instance::lease_window::LeaseWindow;
use crate::live_status::{LiveStatus, State};
use crate::systemd::catalog;
use crate::systemd::watchdog::Liveness;

/// Updates per `getUpdates` (the Bot API maximum).
const BATCH_LIMIT: u8 = 100;

/// How long the closing confirmation waits when the poll dropped at the stop carried the same offset.
/// Telegram confirms an offset when a request carrying it arrives, and holds a `getUpdates` that repeats
/// the previous request's offset for up to 3 s even with `timeout = 0`; waiting for that answer would
/// add 3 s to every stop and restart for nothing.
const REPEATED_CONFIRM_BUDGET: Duration = Duration::from_millis(300);

/// How long a stop request lets the handlers in progress finish before leaving what is left in the
/// inbox for the next start.
pub const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// The shortest interval between two polls that came back empty.
pub const EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// With a PostgreSQL lease, a long poll ends at least this long before the lease window closes: room for
/// the request to reach Telegram (100–300 ms from a VPS) and for its answer to come back. Telegram
/// ends a long poll after its `timeout` whatever our side does, so the client's own deadline slack
/// (`client::POLL_MARGIN`, how long *we* wait for an answer) does not count here; the window itself
/// already closes TTL/3 before the lease expires.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// Tunables of the loop.
#[derive(Clone, Debug)]
pub struct PollerOptions {
    pub poll_timeout: Duration,
    pub conflict: ConflictPolicy,
    pub delete_webhook: bool,
    pub fault_backoff: (Duration, Duration),
    /// G2: the leader's lease window (coordination = "postgres"); `None` without coordination.
    pub lease: Option<Arc<LeaseWindow>>,
}

impl PollerOptions {
    pub fn new(poll_timeout: Duration, conflict: ConflictPolicy, delete_webhook: bool) -> Self {
        Self {
            poll_timeout,
            conflict,
            delete_webhook,
            fault_backoff: (Duration::from_millis(500), Duration::from_secs(30)),
            lease: None,
        }
    }
}

/// Telegram answers at most one 409 ending a long poll at once per 3 s per bot and holds the others 3 s
/// (telegram-bot-api's `fail_query_conflict`): two pollers take turns, so each sees a 409 only every
/// 3–6 s plus its backoffs, and a poll of its own may succeed in between.
const TELEGRAM_CONFLICT_SPACING: Duration = Duration::from_secs(3);

/// The conflict-free time after which [`ConflictCount`] forgets: twice the longest backoff plus four
/// times Telegram's spacing of 409s, so that the turns two pollers take never look quiet.
fn conflict_quiet_period(backoff_max: Duration) -> Duration {
    backoff_max * 2 + TELEGRAM_CONFLICT_SPACING * 4
}

/// Counts conflicts for `on_conflict = "exit"`; a quiet period ([`conflict_quiet_period`]) forgets
/// them, so only a *persistent* external poller ends the process. A successful poll does not: with
/// Telegram's spacing of 409s the other poller's turn comes after it.
#[derive(Debug, Default)]
struct ConflictCount {
    count: u64,
    last: Option<Instant>,
}

impl ConflictCount {
    fn record(&mut self, quiet_period: Duration) -> u64 {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t > quiet_period) {
            self.count = 0;
        }
        self.count += 1;
        self.last = Some(now);
        self.count
    }
}

/// The update loop for one bot.
pub struct Poller {
    client: Client,
    options: PollerOptions,
    liveness: Arc<Liveness>,
    status: Arc<LiveStatus>,
    /// Handles each update once and records it (G3, G4).
    dispatcher: Dispatcher,
    bot_id: u64,
    /// The next update id to ask for, and what Telegram was told of it; shared with the closing step
    /// that confirms it ([`confirm_offset`]).
    offsets: Arc<Offsets>,
    conflict_count: ConflictCount,
}

impl Poller {
    pub fn new(client: Client, options: PollerOptions, dispatcher: Dispatcher) -> Self {
        Self {
            client,
            options,
            liveness: dispatcher.liveness(),
            status: dispatcher.status(),
            bot_id: dispatcher.bot_id(),
            dispatcher,
            offsets: Arc::new(Offsets::default()),
            conflict_count: ConflictCount::default(),
        }
    }

    /// The next offset (one past the last handled update), if any update was handled.
    pub fn offset(&self) -> Option<i32> {
        self.offsets.next()
    }

    /// The shared offsets, for the closing step that confirms them ([`confirm_offset`]).
    pub fn offsets(&self) -> Arc<Offsets> {
        Arc::clone(&self.offsets)
    }

    /// Waits `delay` (declared to the watchdog) unless cancelled first. Returns false when cancelled.
    async fn pause(&self, delay: Duration, cancel: &CancellationToken) -> bool {
        self.liveness
            .busy_until(Instant::now() + delay + Duration::from_secs(1));
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => {
                self.liveness.beat();
                true
            }
        }
    }

    /// Runs until `cancel` fires (Ok) or a failure no retry can fix (Err with its exit code).
    pub async fn run(&mut self, cancel: &CancellationToken) -> Result<(), Failure> {
        let policy = self.options.conflict;
        let mut conflicts = Backoff::new(policy.backoff_initial, policy.backoff_max);
        let mut faults = Backoff::new(self.options.fault_backoff.0, self.options.fault_backoff.1);
        while !cancel.is_cancelled() {
            let Some(timeout) = self.lease_bounded_timeout()? else {
                // Less than a whole second left before the lease window closes: wait for the next
                // renewal (every TTL/3) rather than poll.
                if !self.pause(Duration::from_millis(100), cancel).await {
                    break;
                }
                continue;
            };
            self.liveness.busy_until(Client::poll_deadline(timeout));
            let poll_started = Instant::now();
            let offset = self.offset();
            self.offsets.sending(offset);
            let result = tokio::select! {
                // Dropping the request closes its connection: the updates it may have carried stay
                // unconfirmed, and the next poll (ours or a successor's) receives them.
                () = cancel.cancelled() => break,
                result = self.client.get_updates(offset, timeout, BATCH_LIMIT) => result,
            };
            // A beat says the loop goes round; the handlers behind it report their own progress to
            // the same `Liveness` (the dispatcher), so a stuck handler stops the pings however the
            // loop beats (G5).
            self.liveness.beat();
            let metrics = &self.status.metrics;
            metrics
                .long_poll_seconds
                .observe(poll_started.elapsed().as_secs_f64());
            match result {
                Ok(updates) => {
                    self.offsets.answered.store(true, Ordering::Release);
                    // A leader frozen past its lease must not handle what arrived meanwhile: the
                    // updates stay unconfirmed for the new leader.
                    self.check_lease()?;
                    metrics.updates_received.inc_by(updates.len() as u64);
                    conflicts.reset();
                    faults.reset();
                    self.status.polled();
                    if let Some(last) = updates.last() {
                        self.accept(&updates, last.id.0).await?;
                    } else if let Some(rest) =
                        EMPTY_POLL_INTERVAL.checked_sub(poll_started.elapsed())
                        && !self.pause(rest, cancel).await
                    {
                        break;
                    }
                    // Not more than the dispatcher's capacity waits in memory: poll again when
                    // there is room (a stuck pipeline then starves the watchdog).
                    self.dispatcher.wait_for_room(cancel).await;
                    if let Some(failure) = self.dispatcher.failure() {
                        return Err(failure);
                    }
                }
                Err(failure)
                    if failure.kind == FailureKind::ConflictWebhook
                        && self.options.delete_webhook =>
                {
                    tracing::warn!(
                        bot_id = self.bot_id,
                        conflict = "webhook_active",
                        "a webhook is set: deleting it (delete_webhook = true)"
                    );
                    if let Err(e) = self.client.delete_webhook().await {
                        tracing::warn!(bot_id = self.bot_id, "deleteWebhook failed: {e}");
                        if !self.pause(faults.next_delay(), cancel).await {
                            break;
                        }
                    }
                }
                Err(failure) => {
                    let delay = self.on_failure(&failure, &mut conflicts, &mut faults)?;
                    if !self.pause(delay, cancel).await {
                        break;
                    }
                }
            }
        }
        // The stop: the handlers in progress finish (bounded); the rest stays in the inbox.
        self.dispatcher.drain(DRAIN_BUDGET).await;
        match self.dispatcher.failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// The long-poll timeout: the configured one, bounded by the lease window when there is one
    /// (`None`: too little of the window left to poll now). Err: the window is closed.
    fn lease_bounded_timeout(&self) -> Result<Option<Duration>, Failure> {
        match &self.options.lease {
            None => Ok(Some(self.options.poll_timeout)),
            Some(window) => {
                window.remaining().ok_or_else(lease_lost)?;
                Ok(window.poll_timeout(self.options.poll_timeout, LEASE_MARGIN))
            }
        }
    }

    fn check_lease(&self) -> Result<(), Failure> {
        match &self.options.lease {
            Some(window) if window.remaining().is_none() => Err(lease_lost()),
            _ => Ok(()),
        }
    }

    /// Applies the policy to a failed poll: the delay before the next one, or a fatal failure.
    fn on_failure(
        &mut self,
        failure: &ApiFailure,
        conflicts: &mut Backoff,
        faults: &mut Backoff,
    ) -> Result<Duration, Failure> {
        match &failure.kind {
            FailureKind::Unauthorized => Err(Failure::config(format!(
                "Telegram rejected the token (401 Unauthorized): it was revoked or mistyped; get the current one from @BotFather ({failure})"
            ))),
            FailureKind::ConflictWebhook => Err({
                self.status.metrics.conflict("webhook_active");
                Failure::config(
                    "a webhook is set for this bot, so Telegram refuses getUpdates (409 webhook_active); delete it with the Bot API method deleteWebhook, or set delete_webhook = true (CRYPTOBOT_DELETE_WEBHOOK=true)",
                )
                .with_message_id(catalog::WEBHOOK_ACTIVE)
            }),
            FailureKind::ConflictOtherPoller => {
                let n = self.status.conflict();
                self.status.metrics.conflict("other_poller");
                let policy = self.options.conflict;
                let recent = self
                    .conflict_count
                    .record(conflict_quiet_period(policy.backoff_max));
                if policy.on_conflict == OnConflict::Exit && recent >= policy.max_conflicts {
                    tracing::error!(
                        bot_id = self.bot_id,
                        conflict = "other_poller",
                        conflicts = recent,
                        "giving up: another instance keeps polling this token"
                    );
                    return Err(Failure::new(
                        Code::Unavailable,
                        format!(
                            "gave up after {recent} conflicts (on_conflict = \"exit\"): another instance polls this token elsewhere (another host, a container, a PaaS deployment, a laptop); stop it, or revoke the token with @BotFather"
                        ),
                    ));
                }
                let delay = conflicts.next_delay();
                tracing::warn!(
                    message_id = catalog::EXTERNAL_POLLER,
                    bot_id = self.bot_id,
                    conflict = "other_poller",
                    conflicts = n,
                    "Telegram answered 409: another instance polls this token elsewhere (this host holds the lock); backing off {:.0} s; run `cryptobot doctor`",
                    delay.as_secs_f64()
                );
                Ok(delay)
            }
            FailureKind::RetryAfter(wait) => {
                self.status.metrics.api_error("rate_limited");
                self.status.metrics.retries.inc();
                self.status.set_state(State::Degraded(format!(
                    "rate limited for {} s",
                    wait.as_secs()
                )));
                tracing::warn!(
                    bot_id = self.bot_id,
                    error_kind = "rate_limited",
                    "{failure}; waiting {} s",
                    wait.as_secs()
                );
                Ok(*wait)
            }
            kind => {
                self.status.metrics.api_error(kind.name());
                self.status.metrics.retries.inc();
                let delay = faults.next_delay();
                self.status
                    .set_state(State::Degraded(failure.detail.clone()));
                tracing::warn!(
                    bot_id = self.bot_id,
                    error_kind = kind.name(),
                    attempt = faults.attempts(),
                    "{failure}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                Ok(delay)
            }
        }
    }

    /// Hands a batch to the dispatcher and, once it is durably accepted, moves the offset one past
    /// its last update: *that* update's id, whatever came before, so the offset follows the ids
    /// Telegram hands out even when they jump down (an offset left above them would be "in the
    /// future" to Telegram and confirm nothing).
    ///
    /// A batch the store refuses (after retries) is not moved past: the loop stops with an error,
    /// the updates stay unconfirmed, and the next start (or the next leader) gets them again. Losing
    /// them silently is not an option (G3).
    async fn accept(&mut self, updates: &[Update], last_id: u32) -> Result<(), Failure> {
        match self.dispatcher.accept(updates).await {
            Outcome::Accepted => {}
            Outcome::Fenced => return Err(lease_lost()),
            Outcome::NotRecorded => {
                return Err(Failure::io(format!(
                    "cannot write {} update(s) to the state store's inbox: stopping with them unconfirmed, so that the next start handles them (see the log lines before this one)",
                    updates.len()
                )));
            }
        }
        self.offsets
            .next
            .store(i64::from(last_id) + 1, Ordering::Release);
        self.liveness.beat();
        Ok(())
    }
}

/// The offsets' "no update handled yet" / "no poll sent yet".
pub const NO_OFFSET: i64 = -1;

/// The offset the loop will ask for next, and the one the last `getUpdates` carried.
#[derive(Debug)]
pub struct Offsets {
    /// One past the last handled update; [`NO_OFFSET`] until the first update.
    next: AtomicI64,
    /// The offset the most recent `getUpdates` carried ([`NO_OFFSET`]: none, or no offset).
    sent: AtomicI64,
    /// Whether Telegram answered that request (then it confirmed that offset for certain).
    answered: AtomicBool,
}

impl Default for Offsets {
    fn default() -> Self {
        Self {
            next: AtomicI64::new(NO_OFFSET),
            sent: AtomicI64::new(NO_OFFSET),
            answered: AtomicBool::new(false),
        }
    }
}

impl Offsets {
    fn next(&self) -> Option<i32> {
        let v = self.next.load(Ordering::Acquire);
        (v != NO_OFFSET).then_some(v as i32)
    }

    fn sending(&self, offset: Option<i32>) {
        self.answered.store(false, Ordering::Release);
        self.sent
            .store(offset.map_or(NO_OFFSET, i64::from), Ordering::Release);
    }
}

/// What the closing step did with the offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// No update was handled: nothing to confirm.
    Nothing,
    /// A `getUpdates` that Telegram answered already carried this offset.
    AlreadyConfirmed(i32),
    /// Telegram answered the closing `getUpdates(offset, timeout = 0)`.
    Confirmed(i32),
    /// The poll dropped at the stop carried this offset and the closing call was held (Telegram holds a
    /// repeated offset): it arrived, so it is most likely confirmed; if not, the next start skips what
    /// was handled, from the state store.
    Sent(i32),
}

/// G3: tells Telegram that everything below the offset is handled, so no successor receives it again.
pub async fn confirm_offset(
    client: &Client,
    offsets: &Offsets,
) -> Result<Confirmation, ApiFailure> {
    let Some(next) = offsets.next() else {
        return Ok(Confirmation::Nothing);
    };
    let repeated = offsets.sent.load(Ordering::Acquire) == i64::from(next);
    if repeated && offsets.answered.load(Ordering::Acquire) {
        return Ok(Confirmation::AlreadyConfirmed(next));
    }
    // timeout = 0 and limit = 1: returns at once; the update it may carry stays unconfirmed.
    let call = client.get_updates(Some(next), Duration::ZERO, 1);
    if repeated {
        match tokio::time::timeout(REPEATED_CONFIRM_BUDGET, call).await {
            Ok(answer) => answer.map(|_| Confirmation::Confirmed(next)),
            Err(_) => Ok(Confirmation::Sent(next)),
        }
    } else {
        call.await.map(|_| Confirmation::Confirmed(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::dispatch::RecentUpdates;
    use crate::bot::prices::{ChatLimiter, CoinGecko};
    use crate::bot::service::{BotSettings, Context, Service};
    use crate::store::Store;

    /// G3: an update the store refuses to accept (after the dispatcher's retries) is never moved
    /// past: the loop stops with an error (the process exits 74 and systemd restarts it) and the
    /// update stays unconfirmed at Telegram, so the next start handles it. It used to be logged as
    /// lost and confirmed with the next poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_update_that_cannot_be_recorded_stops_the_loop_unconfirmed() {
        let fake = fake_bot_api::FakeBotApi::start();
        let token = "7000124:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let bot = fake.add_bot(token, "unrecorded_bot");
        fake.inject_message(bot, 5, "/ping");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        store.close().await; // every write now fails
        let api_url: url::Url = fake.url().parse().unwrap();
        let client = Client::new(
            &crate::secret::Token::parse(token).unwrap(),
            &api_url,
            Duration::from_secs(1),
        )
        .unwrap();
        let status = Arc::new(LiveStatus::new());
        let liveness = Arc::new(Liveness::new());
        let (_settings, settings) = tokio::sync::watch::channel(Arc::new(BotSettings {
            admins: Vec::new(),
            default_currency: "usd".into(),
            max_alerts_per_chat: 5,
            coins: Default::default(),
            alert_rules: Default::default(),
        }));
        let service = Service {
            prices: Arc::new(CoinGecko::new(api_url, None, Duration::ZERO).unwrap()),
            store,
            settings,
            context: Context {
                username: "unrecorded_bot".into(),
                host: "test".into(),
                pid: 1,
                version: "0",
                started: Instant::now(),
                role: "test".into(),
            },
            status: Arc::clone(&status),
            bot_id: bot as u64,
            restart_requested: Default::default(),
            stop: CancellationToken::new(),
            price_limiter: ChatLimiter::new(),
            group_admins: Arc::new(crate::bot::group_admins::GroupAdmins::new(client.clone())),
        };
        let dispatcher = Dispatcher::new(
            service,
            Default::default(),
            liveness,
            RecentUpdates::default(),
            Default::default(),
            CancellationToken::new(),
        );
        let conflict = ConflictPolicy {
            on_conflict: OnConflict::Backoff,
            max_conflicts: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(2),
        };
        let mut poller = Poller::new(
            client,
            PollerOptions::new(Duration::from_secs(1), conflict, false),
            dispatcher,
        );
        let cancel = CancellationToken::new();
        let ended = tokio::time::timeout(Duration::from_secs(20), poller.run(&cancel))
            .await
            .expect("the loop went on past an update it could not record");
        let failure = ended.expect_err("the loop must stop with an error");
        assert_eq!(failure.code, Code::IoErr, "{}", failure.message);
        assert!(
            failure.message.contains("unconfirmed"),
            "{}",
            failure.message
        );
        assert_eq!(poller.offset(), None, "the offset did not move past it");
        assert_eq!(
            fake.stats(bot).pending_updates,
            1,
            "left for the next start"
        );
    }
}
