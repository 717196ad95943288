//! State that outlives the process: the updates handled recently per bot (G4), the outbox, price
//! alerts, per-chat settings and the webhook secret.
//!
//! Two backends behind one [`Store`], chosen by `coordination`:
//! - `"none"` (the embedded default): SQLite in the state directory (`state.db`, created on first start,
//!   WAL journal), [`sqlite::SqliteStore`];
//! - `"postgres"`: the same state in PostgreSQL beside the lease, shared by every host, so the leader
//!   after a handover sees what its predecessor handled, queued and armed ([`postgres::PgStore`]). Every
//!   write there is fenced by the lease epoch (G2): a write of an instance that no longer holds the
//!   lease is refused ([`Error::Fenced`]) and that instance stops leading at once.
//!
//! Both schemas are created and upgraded by versioned migrations embedded in the binary, so a package
//! upgrade needs no manual step. The methods and their guarantees are the same on both: a handled
//! update and its replies are recorded in one transaction, an alert fires and queues its message in
//! one transaction.

pub mod postgres;
pub mod sqlite;

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

pub use postgres::PgStore;
pub use sqlite::{AlertRow, Firing, NewAlert, OutboxMessage, SqliteStore};

use crate::exit::Result as RunResult;

/// How many handled updates are remembered per bot (G4). A redelivery can only repeat an update that
/// was handled but not yet confirmed to Telegram: in polling mode at most the last batch (100
/// updates: the next poll carries the offset past it), in webhook mode the deliveries in flight
/// (`max_connections`). 2,048 is twenty times that, and small enough to keep in memory.
pub const RECENT_UPDATES: i64 = 2048;

/// The handled ids beyond [`RECENT_UPDATES`] are pruned once every this many records.
pub const PRUNE_EVERY: i64 = 256;

/// An update whose handler finished: its id and a fingerprint of its content (a hash of the update as
/// Telegram sent it), so that an update reusing a remembered id after Telegram reset its sequence is
/// not mistaken for the one handled before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandledUpdate {
    pub id: i64,
    pub fingerprint: i64,
}

/// An update accepted into the inbox, waiting to be handled (or about to be written there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxUpdate {
    /// The inbox's order (arrival order); 0 before it is written.
    pub seq: i64,
    pub update: HandledUpdate,
    /// The update's JSON, as decoded and re-encoded (what the next start decodes again).
    pub body: String,
}

/// An update whose handler finished: what it was (and its inbox row, if it had one), and its replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub inbox_seq: Option<i64>,
    pub update: HandledUpdate,
    /// (chat id, text) in the order they go out.
    pub replies: Vec<(i64, String)>,
}

/// Why a store call failed. One line; never contains a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    /// A fenced write of an instance that no longer holds the lease (G2).
    #[error(
        "write refused: this instance no longer holds the PostgreSQL lease of epoch {epoch} (another host leads now)"
    )]
    Fenced { epoch: i64 },
}

impl Error {
    /// A successor holds the lease: retrying is pointless, stop leading.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced { .. })
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The state store of this process: SQLite (one host) or PostgreSQL (shared, fenced).
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Calls the same method on whichever backend this is.
macro_rules! on_backend {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call.await.map_err(Error::from),
            Store::Postgres($s) => $call.await,
        }
    };
}

impl Store {
    /// The embedded default: `<state dir>/state.db`.
    pub async fn open_sqlite(state_dir: &Path) -> RunResult<Self> {
        SqliteStore::open(state_dir).await.map(Store::Sqlite)
    }

    /// Where the state lives, for messages: `state database <path>` or `shared state in PostgreSQL <url>`.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("state database {}", s.path().display()),
            Store::Postgres(s) => format!("shared state in PostgreSQL {}", s.target()),
        }
    }

    /// The `limit` updates of `bot_id` handled most recently, oldest first, as `(update id,
    /// fingerprint)`; a `None` fingerprint (carried over from a schema that kept only the highest id)
    /// matches any update with that id.
    pub async fn recent_updates(&self, bot_id: u64, limit: i64) -> Result<Vec<(i64, Option<i64>)>> {
        on_backend!(self, s => s.recent_updates(bot_id, limit))
    }

    /// Records that the handler of `update` finished and queues its replies, in one transaction:
    /// either both happen or neither (G3/G4: a crash never loses a reply of a handled update). Keeps
    /// the most recent [`RECENT_UPDATES`] of the bot.
    pub async fn mark_handled(
        &self,
        bot_id: u64,
        update: HandledUpdate,
        replies: &[(i64, String)],
    ) -> Result<()> {
        let handled = Handled {
            inbox_seq: None,
            update,
            replies: replies.to_vec(),
        };
        self.mark_handled_many(bot_id, std::slice::from_ref(&handled))
            .await
    }

    /// Group commit: records every update of `handled` (deleting its inbox row, remembering it as
    /// handled, queueing its replies in order) in ONE transaction: all of them or none. Both backends
    /// write the group with one multi-row statement per table, not a statement per update.
    pub async fn mark_handled_many(&self, bot_id: u64, handled: &[Handled]) -> Result<()> {
        on_backend!(self, s => s.mark_handled_many(bot_id, handled))
    }

    /// Writes `updates` into the inbox in one transaction; their `seq`s, in order.
    pub async fn inbox_add(&self, bot_id: u64, updates: &[InboxUpdate]) -> Result<Vec<i64>> {
        on_backend!(self, s => s.inbox_add(bot_id, updates))
    }

    /// The updates waiting in the inbox, in arrival order.
    pub async fn inbox(&self, bot_id: u64) -> Result<Vec<InboxUpdate>> {
        on_backend!(self, s => s.inbox(bot_id))
    }

    /// The webhook secret generated for `bot_id` earlier, if any.
    pub async fn webhook_secret(&self, bot_id: u64) -> Result<Option<String>> {
        on_backend!(self, s => s.webhook_secret(bot_id))
    }

    /// Keeps a generated webhook secret for `bot_id`.
    pub async fn save_webhook_secret(&self, bot_id: u64, secret: &str) -> Result<()> {
        on_backend!(self, s => s.save_webhook_secret(bot_id, secret))
    }

    /// The URL this bot last gave `setWebhook` (`None`: it set none, or deleted it since).
    pub async fn webhook_url(&self, bot_id: u64) -> Result<Option<String>> {
        on_backend!(self, s => s.webhook_url(bot_id))
    }

    /// Records the URL given to `setWebhook`, or (`None`) that the webhook was deleted.
    pub async fn set_webhook_url(&self, bot_id: u64, url: Option<&str>) -> Result<()> {
        on_backend!(self, s => s.set_webhook_url(bot_id, url))
    }

    /// Messages waiting to be sent with an id above `after_id`, oldest first.
    pub async fn outbox(
        &self,
        bot_id: u64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>> {
        on_backend!(self, s => s.outbox(bot_id, after_id, limit))
    }

    /// Telegram accepted (or definitively refused) the message.
    pub async fn outbox_done(&self, id: i64) -> Result<()> {
        on_backend!(self, s => s.outbox_done(id))
    }

    /// Telegram accepted (or definitively refused) these messages: their rows are deleted in one
    /// statement (one transaction), all or none.
    pub async fn outbox_done_many(&self, ids: &[i64]) -> Result<()> {
        on_backend!(self, s => s.outbox_done_many(ids))
    }

    /// Number of messages waiting.
    pub async fn outbox_len(&self, bot_id: u64) -> Result<i64> {
        on_backend!(self, s => s.outbox_len(bot_id))
    }

    /// Adds an alert unless the chat already has `cap`; returns its id, or `None` at the cap.
    pub async fn add_alert(
        &self,
        bot_id: u64,
        chat_id: i64,
        alert: &NewAlert<'_>,
        cap: i64,
    ) -> Result<Option<i64>> {
        on_backend!(self, s => s.add_alert(bot_id, chat_id, alert, cap))
    }

    /// The alerts of one chat, oldest first.
    pub async fn chat_alerts(&self, bot_id: u64, chat_id: i64) -> Result<Vec<AlertRow>> {
        on_backend!(self, s => s.chat_alerts(bot_id, chat_id))
    }

    /// Deletes alert `id` of `chat_id`; false when there is no such alert in that chat.
    pub async fn delete_alert(&self, bot_id: u64, chat_id: i64, id: i64) -> Result<bool> {
        on_backend!(self, s => s.delete_alert(bot_id, chat_id, id))
    }

    /// Every alert of chats that have not blocked the bot, handed to `each` one at a time as the rows
    /// arrive (the alert checker keeps a compact form: 10,000 rows at once were megabytes).
    pub async fn each_live_alert(&self, bot_id: u64, each: impl FnMut(AlertRow)) -> Result<()> {
        on_backend!(self, s => s.each_live_alert(bot_id, each))
    }

    /// Every alert of chats that have not blocked the bot.
    pub async fn live_alerts(&self, bot_id: u64) -> Result<Vec<AlertRow>> {
        let mut alerts = Vec::new();
        self.each_live_alert(bot_id, |a| alerts.push(a)).await?;
        Ok(alerts)
    }

    /// Fires the alerts of `firings` that are still armed, in one transaction: each disarmed (a
    /// `once` one deleted) and its message queued together, so a crash neither loses a notification
    /// nor sends one twice for one crossing. Returns the ids of those that fired (an alert already
    /// disarmed or deleted is skipped).
    pub async fn fire_alerts(&self, bot_id: u64, firings: &[Firing]) -> Result<Vec<i64>> {
        on_backend!(self, s => s.fire_alerts(bot_id, firings))
    }

    /// Deletes the alerts of `notices` that expired by `now_ms` (Unix ms) and queues each one's note,
    /// in one transaction. Returns the ids deleted.
    pub async fn expire_alerts(
        &self,
        bot_id: u64,
        notices: &[Firing],
        now_ms: i64,
    ) -> Result<Vec<i64>> {
        if notices.is_empty() {
            return Ok(Vec::new());
        }
        on_backend!(self, s => s.expire_alerts(bot_id, notices, now_ms))
    }

    /// [`Store::fire_alerts`] for one alert: true if it fired.
    pub async fn fire_alert(
        &self,
        bot_id: u64,
        id: i64,
        chat_id: i64,
        message: &str,
    ) -> Result<bool> {
        let firing = Firing {
            alert_id: id,
            chat_id,
            text: message.to_owned(),
        };
        Ok(!self.fire_alerts(bot_id, &[firing]).await?.is_empty())
    }

    /// Re-arms these alerts (the price is back on the other side of their thresholds).
    pub async fn rearm_alerts(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        on_backend!(self, s => s.rearm_alerts(ids))
    }

    /// Re-arms alert `id`.
    pub async fn rearm_alert(&self, id: i64) -> Result<()> {
        self.rearm_alerts(&[id]).await
    }

    /// The user blocked the bot (403): no more alerts to that chat until it writes again.
    pub async fn disable_chat_alerts(&self, bot_id: u64, chat_id: i64) -> Result<()> {
        on_backend!(self, s => s.disable_chat_alerts(bot_id, chat_id))
    }

    /// Closes the pool, waiting for the last write to finish.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// Hands sqlx migrations compiled into the binary, as `(version, description, sql)` in order (sqlx's
/// own `migrate!` needs its macros crate, which we do not build for this one use). Shared by the SQLite
/// store and the PostgreSQL lease schema.
#[derive(Debug)]
pub struct EmbeddedMigrations(pub &'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Migration>, BoxDynError>> + Send + 's>>
    {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
