//! One update, from either source (the long-polling loop or the webhook), handled exactly once.
//!
//! Guarantees:
//! - G3/G4: an update is handled, then recorded as handled together with its replies in the outbox
//!   (one transaction), and only then reported as done to its source, which may then move the offset
//!   (polling) or answer 200 (webhook).
//! - G4: an update recorded as handled (by this process or, from the store, by an earlier one that
//!   crashed before confirming) is skipped: redelivery never answers twice. "Recorded" means its id is
//!   among the [`RECENT_UPDATES`] handled most recently *with the same content* ([`fingerprint`]),
//!   never "not above the highest id": Telegram's ids are not increasing forever (after a week
//!   without updates the next id is random, and another Bot API server has its own sequence), and a
//!   bot that skipped every id below its highest would go silent for good. A redelivery can only
//!   repeat an update handled but not yet confirmed, which is always among the most recent ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use teloxide::types::Update;

use super::outbound::Wake;
use super::prices::CoinGecko;
use super::service::Service;
use crate::live_status::LiveStatus;
use crate::store::{HandledUpdate, RECENT_UPDATES};
use crate::systemd::watchdog::Liveness;

/// Attempts at recording an update before its source is told it failed.
const RECORD_ATTEMPTS: u32 = 3;

/// A fingerprint of an update's content: the first 8 bytes of the SHA-256 of its JSON. A redelivery
/// carries the same update, so the same fingerprint; an update that merely reuses an id does not.
pub fn fingerprint(update: &Update) -> i64 {
    // Serialising a decoded update cannot fail (its values came from JSON); an empty text would
    // only make every such update match by id alone.
    let json = serde_json::to_vec(update).unwrap_or_default();
    let digest = Sha256::digest(&json);
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

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// What became of one update.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled now; its replies are in the outbox.
    Handled,
    /// Already handled (by this process or an earlier one): nothing done.
    Duplicate,
    /// Handled, but the state store refused to record it (after retries): its replies are not queued.
    NotRecorded,
    /// Handled, but this instance no longer holds the PostgreSQL lease (G2): nothing was recorded and
    /// the next leader handles the update.
    Fenced,
}

/// Handles updates one at a time for one bot.
pub struct Dispatcher {
    pub service: Service<CoinGecko>,
    pub wake: Arc<Wake>,
    pub status: Arc<LiveStatus>,
    pub liveness: Arc<Liveness>,
    pub bot_id: u64,
    /// The updates recorded as handled most recently (from the store at start, then kept up to date).
    recent: RecentUpdates,
}

impl Dispatcher {
    pub fn new(
        service: Service<CoinGecko>,
        wake: Arc<Wake>,
        status: Arc<LiveStatus>,
        liveness: Arc<Liveness>,
        bot_id: u64,
        recent: RecentUpdates,
    ) -> Self {
        Self {
            service,
            wake,
            status,
            liveness,
            bot_id,
            recent,
        }
    }

    /// Handles `update` unless it was handled before, and records it with its replies.
    pub async fn dispatch(&mut self, update: &Update) -> Outcome {
        let id = i64::from(update.id.0);
        let handled = HandledUpdate {
            id,
            fingerprint: fingerprint(update),
        };
        if self.recent.contains(handled) {
            tracing::info!(
                bot_id = self.bot_id,
                update_id = id,
                "skipping an update that was already handled"
            );
            return Outcome::Duplicate;
        }
        let started = Instant::now();
        let replies: Vec<(i64, String)> = self
            .service
            .handle(update, handled.fingerprint)
            .await
            .into_iter()
            .map(|r| (r.chat.0, r.text))
            .collect();
        // Until the transaction commits, the update is not handled: retry it (bounded).
        let mut attempts = 0;
        while let Err(e) = self
            .service
            .store
            .mark_handled(self.bot_id, handled, &replies)
            .await
        {
            if e.is_fenced() {
                // Another host leads now (G2): it handles this update; the run is being stopped.
                tracing::warn!(bot_id = self.bot_id, update_id = id, "{e}");
                return Outcome::Fenced;
            }
            attempts += 1;
            tracing::warn!(
                bot_id = self.bot_id,
                update_id = id,
                "cannot record the update in the state store (attempt {attempts}): {e}"
            );
            if attempts == RECORD_ATTEMPTS {
                return Outcome::NotRecorded;
            }
            self.liveness
                .busy_until(Instant::now() + Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempts))).await;
        }
        self.recent.insert(id, Some(handled.fingerprint));
        if !replies.is_empty() {
            self.wake.wake();
        }
        self.status.add_handled();
        let metrics = &self.status.metrics;
        metrics.updates_handled.inc();
        metrics
            .handler_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            bot_id = self.bot_id,
            update_id = id,
            replies = replies.len(),
            "update handled"
        );
        Outcome::Handled
    }
}
