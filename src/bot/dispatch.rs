//! One update, from either source (the long-polling loop or the webhook), handled exactly once.
//!
//! Guarantees:
//! - G3/G4: an update is handled, then recorded as handled together with its replies in the outbox
//!   (one transaction), and only then reported as done to its source, which may then move the offset
//!   (polling) or answer 200 (webhook).
//! - An update whose id is not above the last one recorded (by this process or, from the store, by an
//!   earlier one that crashed before confirming) is skipped: redelivery never answers twice. Both
//!   sources deliver update ids in increasing order (the webhook is set with `max_connections = 1`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use teloxide::types::Update;

use super::outbound::Wake;
use super::prices::CoinGecko;
use super::service::Service;
use crate::live_status::LiveStatus;
use crate::systemd::watchdog::Liveness;

/// Attempts at recording an update before its source is told it failed.
const RECORD_ATTEMPTS: u32 = 3;

/// What became of one update.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled now; its replies are in the outbox.
    Handled,
    /// Already handled (by this process or an earlier one): nothing done.
    Duplicate,
    /// Handled, but the state store refused to record it (after retries): its replies are not queued.
    NotRecorded,
}

/// Handles updates one at a time for one bot.
pub struct Dispatcher {
    pub service: Service<CoinGecko>,
    pub wake: Arc<Wake>,
    pub status: Arc<LiveStatus>,
    pub liveness: Arc<Liveness>,
    pub bot_id: u64,
    /// The highest update id recorded as handled (from the store at start, then kept up to date).
    last_handled: Option<i64>,
}

impl Dispatcher {
    pub fn new(
        service: Service<CoinGecko>,
        wake: Arc<Wake>,
        status: Arc<LiveStatus>,
        liveness: Arc<Liveness>,
        bot_id: u64,
        handled_before: Option<i64>,
    ) -> Self {
        Self {
            service,
            wake,
            status,
            liveness,
            bot_id,
            last_handled: handled_before,
        }
    }

    /// Handles `update` unless it was handled before, and records it with its replies.
    pub async fn dispatch(&mut self, update: &Update) -> Outcome {
        let id = i64::from(update.id.0);
        if self.last_handled.is_some_and(|last| id <= last) {
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
            .handle(update)
            .await
            .into_iter()
            .map(|r| (r.chat.0, r.text))
            .collect();
        // Until the transaction commits, the update is not handled: retry it (bounded).
        let mut attempts = 0;
        while let Err(e) = self
            .service
            .store
            .mark_handled(self.bot_id, id, &replies)
            .await
        {
            if e.is_fenced() {
                // Another host leads now (G2): it handles this update; the run is being stopped.
                tracing::warn!(bot_id = self.bot_id, update_id = id, "{e}");
                return Outcome::NotRecorded;
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
        self.last_handled = Some(id);
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
