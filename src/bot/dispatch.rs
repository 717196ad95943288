//! The updates from either source (the long-polling loop or the webhook), each handled exactly once,
//! concurrently across chats and strictly in arrival order within one chat.
//!
//! The path of an update, and why nothing is lost or handled twice:
//! 1. **Accepted** ([`Dispatcher::accept`]): the updates of a `getUpdates` batch (or one webhook request)
//!    that are not already known are written to the store's **inbox** in one transaction. Only then
//!    does the poller move its offset past them (or the webhook answer 200). So an update Telegram
//!    stops delivering is always in the inbox or recorded as handled (G3).
//! 2. **Handled**: each chat (or, without a chat, each user; else the update alone) has at most one
//!    worker, which takes its chat's updates in arrival order; at most `concurrency` workers run at
//!    once (64 by default). A slow handler (a price API answering in 3 s) delays only its own chat.
//! 3. **Recorded**: a handler's result goes to the recorder, which commits whatever finished together
//!    in ONE transaction (group commit): the inbox row deleted, the update remembered as handled, its
//!    replies queued in the outbox. A chat's worker takes its next update only after that commit, so a
//!    chat's replies are queued in order. After a crash, what is left in the inbox is handled by the
//!    next start ([`Dispatcher::recover`]) before anything new of its chat; what was recorded is not.
//!
//! G4: an update is skipped when it is among the [`RECENT_UPDATES`] handled most recently *with the
//! same content* ([`fingerprint`]) or is already accepted and waiting: redelivery (Telegram sends again
//! what was not confirmed when a process died) never answers twice. Never "not above the highest id":
//! Telegram's ids are not increasing forever (after a week without updates the next id is random, and
//! another Bot API server has its own sequence), and a bot that skipped every id below its highest
//! would go silent for good. A redelivery can only repeat an update accepted but not yet confirmed,
//! which is always among the most recent ones or still in the inbox.
//!
//! Memory: a chat's queue exists only while it has updates waiting or in hand; at most `capacity`
//! updates wait in memory ([`Dispatcher::wait_for_room`] holds the poller back beyond that).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use teloxide::types::Update;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::outbound::Wake;
use super::prices::CoinGecko;
use super::service::Service;
use crate::exit::Failure;
use crate::live_status::LiveStatus;
use crate::store::{Handled, HandledUpdate, InboxUpdate, RECENT_UPDATES};
use crate::systemd::watchdog::Liveness;

/// Attempts at a store write (the inbox, a group of records) before the run is stopped.
const WRITE_ATTEMPTS: u32 = 3;

/// How many workers (chats) run handlers at once, and how many accepted updates may wait in memory.
#[derive(Clone, Copy, Debug)]
pub struct Concurrency {
    pub workers: usize,
    pub capacity: usize,
}

impl Default for Concurrency {
    /// 64 chats at once; 256 updates waiting in memory (two and a half batches of `getUpdates`: the
    /// poller always has the next batch in hand, and memory stays flat however many chats write —
    /// `bench/pipeline`).
    fn default() -> Self {
        Self {
            workers: 64,
            capacity: 256,
        }
    }
}

impl Concurrency {
    /// `workers` chats at once (`concurrent_chats`), with room for at least as many updates waiting.
    pub fn with_workers(workers: usize) -> Self {
        let default = Self::default();
        Self {
            workers: workers.max(1),
            capacity: default.capacity.max(workers),
        }
    }
}

/// Records handled in one group commit at most.
const GROUP_COMMIT_MAX: usize = 256;

/// A fingerprint of an update's content: the first 8 bytes of the SHA-256 of its JSON (as decoded and
/// re-encoded). A redelivery carries the same update, so the same fingerprint; an update that merely
/// reuses an id does not.
pub fn fingerprint(json: &[u8]) -> i64 {
    let digest = Sha256::digest(json);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(head)
}

/// The updates handled most recently (at most [`RECENT_UPDATES`]), by id, with their fingerprints.
#[derive(Debug, Default)]
pub struct RecentUpdates {
    by_id: HashMap<i64, Option<i64>>,
    order: VecDeque<i64>,
}

impl RecentUpdates {
    /// From the store's `(id, fingerprint)` pairs, oldest first.
    pub fn new(handled: impl IntoIterator<Item = (i64, Option<i64>)>) -> Self {
        let mut recent = Self::default();
        for (id, fingerprint) in handled {
            recent.insert(id, fingerprint);
        }
        recent
    }

    /// Whether this update was handled: its id is remembered with the same fingerprint (or with
    /// none, an id carried over from before fingerprints were kept).
    pub fn contains(&self, update: HandledUpdate) -> bool {
        match self.by_id.get(&update.id) {
            Some(None) => true,
            Some(Some(fingerprint)) => *fingerprint == update.fingerprint,
            None => false,
        }
    }

    fn insert(&mut self, id: i64, fingerprint: Option<i64>) {
        if self.by_id.insert(id, fingerprint).is_none() {
            self.order.push_back(id);
            while self.order.len() > RECENT_UPDATES as usize {
                if let Some(oldest) = self.order.pop_front() {
                    self.by_id.remove(&oldest);
                }
            }
        }
    }
}

/// What became of what a source handed over.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Durably accepted (in the inbox), or every update of it was known already: the source may
    /// confirm it (move the offset, answer 200).
    Accepted,
    /// The store refused to write it (after retries): the source must not confirm it.
    NotRecorded,
    /// This instance no longer holds the PostgreSQL lease (G2): nothing was written, the next leader
    /// gets the updates.
    Fenced,
}

/// One accepted update, as its chat's worker takes it.
struct Item {
    seq: i64,
    update: Arc<Update>,
    handled: HandledUpdate,
}

/// A finished handler's result, on its way to the group commit.
struct Record {
    handled: Handled,
    done: oneshot::Sender<Result<(), Failure>>,
}

#[derive(Default)]
struct Queues {
    recent: RecentUpdates,
    /// Accepted and not yet recorded: update id → fingerprint.
    waiting: HashMap<i64, i64>,
    /// The chats with a worker, and the updates waiting for it.
    chats: HashMap<i64, VecDeque<Item>>,
}

struct Shared {
    service: Service<CoinGecko>,
    wake: Arc<Wake>,
    status: Arc<LiveStatus>,
    liveness: Arc<Liveness>,
    bot_id: u64,
    concurrency: Concurrency,
    queues: Mutex<Queues>,
    workers: Arc<Semaphore>,
    recorder: mpsc::UnboundedSender<Record>,
    /// Wakes whoever waits for progress (room, the drain).
    progress: Notify,
    /// The first failure that must stop the run (a store that refuses for good).
    failure: Mutex<Option<Failure>>,
    /// Set after the stop's drain: workers take nothing new, failures are no longer the run's.
    closing: AtomicBool,
    cancel: CancellationToken,
}

/// Hands updates to their chats' workers; cheap to clone (shared by the poller or the webhook route).
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

/// The chat an update belongs to for ordering: its chat, else its sender, else itself alone.
fn order_key(update: &Update) -> i64 {
    if let Some(chat) = update.chat() {
        return chat.id.0;
    }
    if let Some(user) = update.from() {
        return user.id.0 as i64;
    }
    // Keys of their own, apart from every chat id (those are far below i64::MIN / 2).
    i64::MIN / 2 + i64::from(update.id.0)
}

impl Dispatcher {
    /// `recent`: the updates recorded as handled by earlier processes (from the store). Spawns the
    /// recorder (group commit); `cancel` is the run's, cancelled when a write fails for good. The bot
    /// id and the live status are the service's.
    pub fn new(
        service: Service<CoinGecko>,
        wake: Arc<Wake>,
        liveness: Arc<Liveness>,
        recent: RecentUpdates,
        concurrency: Concurrency,
        cancel: CancellationToken,
    ) -> Self {
        let (recorder, records) = mpsc::unbounded_channel();
        let store = service.store.clone();
        let status = Arc::clone(&service.status);
        let bot_id = service.bot_id;
        let shared = Arc::new(Shared {
            service,
            wake,
            status,
            liveness,
            bot_id,
            concurrency,
            queues: Mutex::new(Queues {
                recent,
                ..Queues::default()
            }),
            workers: Arc::new(Semaphore::new(concurrency.workers.max(1))),
            recorder,
            progress: Notify::new(),
            failure: Mutex::new(None),
            closing: AtomicBool::new(false),
            cancel,
        });
        tokio::spawn(record_in_groups(store, bot_id, records));
        Self { shared }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.shared.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands what an earlier process left in the inbox to the workers, in arrival order. Before the
    /// first poll, so a chat's old updates go before its new ones.
    pub async fn recover(&self) -> Result<usize, Failure> {
        let shared = &self.shared;
        let left = shared
            .service
            .store
            .inbox(shared.bot_id)
            .await
            .map_err(|e| {
                Failure::io(format!(
                    "{}: cannot read the inbox ({e})",
                    shared.service.store.describe()
                ))
            })?;
        let mut items = Vec::with_capacity(left.len());
        for row in left {
            match serde_json::from_str::<Update>(&row.body) {
                Ok(update) => items.push(Item {
                    seq: row.seq,
                    update: Arc::new(update),
                    handled: row.update,
                }),
                Err(e) => tracing::warn!(
                    bot_id = shared.bot_id,
                    update_id = row.update.id,
                    "an update in the inbox no longer decodes ({e}): skipped"
                ),
            }
        }
        let n = items.len();
        if n > 0 {
            tracing::info!(
                bot_id = shared.bot_id,
                updates = n,
                "handling what an earlier process left in the inbox"
            );
        }
        self.enqueue(items);
        Ok(n)
    }

    /// Accepts `updates` (one batch of a source): those not known already are written to the inbox in
    /// one transaction, then handed to their chats' workers. [`Outcome::Accepted`] means the source
    /// may confirm every one of them.
    pub async fn accept(&self, updates: &[Update]) -> Outcome {
        let shared = &self.shared;
        let mut fresh: Vec<(InboxUpdate, Update)> = Vec::with_capacity(updates.len());
        {
            let queues = self.queues();
            for update in updates {
                let body = serde_json::to_string(update).unwrap_or_default();
                let handled = HandledUpdate {
                    id: i64::from(update.id.0),
                    fingerprint: fingerprint(body.as_bytes()),
                };
                let known = queues.recent.contains(handled)
                    || queues.waiting.get(&handled.id) == Some(&handled.fingerprint)
                    || fresh.iter().any(|(f, _)| f.update == handled);
                if known {
                    tracing::info!(
                        bot_id = shared.bot_id,
                        update_id = handled.id,
                        "skipping an update that was already handled or accepted"
                    );
                    continue;
                }
                fresh.push((
                    InboxUpdate {
                        seq: 0,
                        update: handled,
                        body,
                    },
                    update.clone(),
                ));
            }
        }
        if fresh.is_empty() {
            return Outcome::Accepted;
        }
        let rows: Vec<InboxUpdate> = fresh.iter().map(|(row, _)| row.clone()).collect();
        let mut attempts = 0;
        let seqs = loop {
            match shared.service.store.inbox_add(shared.bot_id, &rows).await {
                Ok(seqs) => break seqs,
                Err(e) if e.is_fenced() => {
                    tracing::warn!(bot_id = shared.bot_id, "{e}");
                    return Outcome::Fenced;
                }
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(
                        bot_id = shared.bot_id,
                        "cannot write {} update(s) to the inbox (attempt {attempts}): {e}",
                        rows.len()
                    );
                    if attempts == WRITE_ATTEMPTS {
                        return Outcome::NotRecorded;
                    }
                    shared
                        .liveness
                        .busy_until(Instant::now() + Duration::from_secs(2));
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
                }
            }
        };
        let items = fresh
            .into_iter()
            .zip(seqs)
            .map(|((row, update), seq)| Item {
                seq,
                update: Arc::new(update),
                handled: row.update,
            })
            .collect();
        self.enqueue(items);
        Outcome::Accepted
    }

    /// Puts `items` (in arrival order) in their chats' queues, starting a worker for each chat that
    /// has none.
    fn enqueue(&self, items: Vec<Item>) {
        let mut start = Vec::new();
        {
            let mut queues = self.queues();
            for item in items {
                queues
                    .waiting
                    .insert(item.handled.id, item.handled.fingerprint);
                self.shared.liveness.work_arrived();
                let key = order_key(&item.update);
                match queues.chats.get_mut(&key) {
                    Some(queue) => queue.push_back(item),
                    None => {
                        queues.chats.insert(key, VecDeque::from([item]));
                        start.push(key);
                    }
                }
            }
        }
        for key in start {
            tokio::spawn(work(Arc::clone(&self.shared), key));
        }
    }

    pub fn bot_id(&self) -> u64 {
        self.shared.bot_id
    }

    pub fn liveness(&self) -> Arc<Liveness> {
        Arc::clone(&self.shared.liveness)
    }

    pub fn status(&self) -> Arc<LiveStatus> {
        Arc::clone(&self.shared.status)
    }

    /// Accepted updates not yet recorded as handled.
    pub fn pending(&self) -> usize {
        self.queues().waiting.len()
    }

    /// Waits while more than the capacity of accepted updates wait (the poller fetches no more
    /// meanwhile), or until `cancel`.
    pub async fn wait_for_room(&self, cancel: &CancellationToken) {
        loop {
            let progress = self.shared.progress.notified();
            if self.pending() < self.shared.concurrency.capacity || cancel.is_cancelled() {
                return;
            }
            tokio::select! {
                () = progress => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// The stop: lets the handlers in progress and the updates waiting finish, concurrently, for at
    /// most `budget`; true if everything finished. Then nothing new starts: what is left stays in the
    /// inbox for the next start.
    pub async fn drain(&self, budget: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + budget;
        let drained = loop {
            let progress = self.shared.progress.notified();
            if self.pending() == 0 {
                break true;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                break false;
            }
        };
        self.shared.closing.store(true, Ordering::Release);
        if !drained {
            tracing::warn!(
                bot_id = self.shared.bot_id,
                left = self.pending(),
                "updates still in their handlers {} s after the stop request: left in the inbox for the next start",
                budget.as_secs()
            );
        }
        drained
    }

    /// The failure that stopped the run, if a store write failed for good.
    pub fn failure(&self) -> Option<Failure> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A chat's worker: takes the chat's updates in order, one at a time, until its queue is empty
/// (then the chat is forgotten).
async fn work(shared: Arc<Shared>, key: i64) {
    let Ok(_permit) = Arc::clone(&shared.workers).acquire_owned().await else {
        return;
    };
    loop {
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        let item = {
            let mut queues = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.chats.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(item) => item,
                None => {
                    queues.chats.remove(&key);
                    return;
                }
            }
        };
        if !handle(&shared, item).await {
            return;
        }
    }
}

/// Handles one update and waits until it is recorded. False when the run must stop.
async fn handle(shared: &Shared, item: Item) -> bool {
    let started = Instant::now();
    let replies: Vec<(i64, String)> = shared
        .service
        .handle(&item.update, item.handled.fingerprint)
        .await
        .into_iter()
        .map(|r| (r.chat.0, r.text))
        .collect();
    let has_replies = !replies.is_empty();
    let (done, recorded) = oneshot::channel();
    let record = Record {
        handled: Handled {
            inbox_seq: Some(item.seq),
            update: item.handled,
            replies,
        },
        done,
    };
    if shared.recorder.send(record).is_err() {
        return false;
    }
    let failure = match recorded.await {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(_) => Some(Failure::software("the recorder of handled updates stopped")),
    };
    if let Some(failure) = failure {
        if !shared.closing.load(Ordering::Acquire) {
            tracing::error!(
                bot_id = shared.bot_id,
                update_id = item.handled.id,
                "{}",
                failure.message
            );
            shared
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(failure);
            shared.cancel.cancel();
        }
        return false;
    }
    {
        let mut queues = shared.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .recent
            .insert(item.handled.id, Some(item.handled.fingerprint));
        if queues.waiting.get(&item.handled.id) == Some(&item.handled.fingerprint) {
            queues.waiting.remove(&item.handled.id);
        }
        // G5: the watchdog's record of the handlers' progress, under the lock that orders it.
        shared.liveness.work_done(!queues.waiting.is_empty());
    }
    shared.progress.notify_waiters();
    if has_replies {
        shared.wake.wake();
    }
    shared.status.add_handled();
    let metrics = &shared.status.metrics;
    metrics.updates_handled.inc();
    metrics
        .handler_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        bot_id = shared.bot_id,
        update_id = item.handled.id,
        "update handled"
    );
    true
}

/// The recorder: commits the records that arrived together in one transaction (group commit), and
/// tells each worker. A write refused for good fails every record of the group.
async fn record_in_groups(
    store: crate::store::Store,
    bot_id: u64,
    mut records: mpsc::UnboundedReceiver<Record>,
) {
    let mut next: Option<Record> = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => match records.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut group = vec![first];
        // One row per update id in a group (a reused id is recorded in the next group).
        while group.len() < GROUP_COMMIT_MAX {
            match records.try_recv() {
                Ok(r)
                    if group
                        .iter()
                        .any(|g| g.handled.update.id == r.handled.update.id) =>
                {
                    next = Some(r);
                    break;
                }
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let handled: Vec<Handled> = group.iter().map(|r| r.handled.clone()).collect();
        let mut attempts = 0;
        let result = loop {
            match store.mark_handled_many(bot_id, &handled).await {
                Ok(()) => break Ok(()),
                Err(e) if e.is_fenced() => break Err(crate::instance::leadership::lease_lost()),
                Err(e) => {
                    attempts += 1;
                    tracing::warn!(
                        bot_id,
                        updates = handled.len(),
                        "cannot record handled updates in the state store (attempt {attempts}): {e}"
                    );
                    if attempts == WRITE_ATTEMPTS {
                        break Err(Failure::io(format!(
                            "cannot record handled updates in the state store ({e}): stopping; they stay in the inbox for the next start"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
                }
            }
        };
        for record in group {
            let _ = record.done.send(result.clone());
        }
    }
}
