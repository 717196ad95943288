//! The SQLite store (sqlx): opened once at start, one small pool, migrations embedded in the binary.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::{Handled, InboxUpdate, PRUNE_EVERY, RECENT_UPDATES};
use crate::exit::{Failure, Result};

/// The versioned migrations, in order. A new schema change is a new file and a new line here.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "bot state",
        include_str!("migrations/sqlite/0001_bot_state.sql"),
    ),
    (
        2,
        "alerts and outbox",
        include_str!("migrations/sqlite/0002_alerts_outbox.sql"),
    ),
    (
        3,
        "outbox index by bot",
        include_str!("migrations/sqlite/0003_outbox_index.sql"),
    ),
    (
        4,
        "webhook",
        include_str!("migrations/sqlite/0004_webhook.sql"),
    ),
    (
        5,
        "handled updates",
        include_str!("migrations/sqlite/0005_handled_updates.sql"),
    ),
    (6, "inbox", include_str!("migrations/sqlite/0006_inbox.sql")),
    (
        7,
        "alert options",
        include_str!("migrations/sqlite/0007_alert_options.sql"),
    ),
];

/// Ids in one `IN (…)` list, or rows in one multi-row statement (at most 5 parameters a row): far
/// under SQLite's limit on bound parameters (32,766). Statements built for a number of ids or rows
/// are not kept prepared (`persistent(false)`): one per length would fill sqlx's statement cache
/// (100 per connection) with programs of up to thousands of parameters that are seldom used again.
const CHUNK: usize = 500;

fn now_ms() -> i64 {
    crate::clock::unix_now_ms()
}

/// `<head> (?, ?, …)`: a statement that ends in the `IN` list of `ids` (at most [`CHUNK`]).
fn with_id_list(head: &'static str, ids: &[i64]) -> sqlx::QueryBuilder<'static, sqlx::Sqlite> {
    let mut query = sqlx::QueryBuilder::new(head);
    query.push(" (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    list.push_unseparated(")");
    query
}

/// Completes `statement`, which ends in `id IN (`, with the alert ids of `chunk` and `) RETURNING id`,
/// runs it inside `tx`, and returns the entries of `chunk` whose ids it returned (in `chunk`'s order).
async fn rows_returned<'c>(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    mut statement: sqlx::QueryBuilder<'_, sqlx::Sqlite>,
    chunk: &'c [Firing],
) -> std::result::Result<Vec<&'c Firing>, sqlx::Error> {
    let mut list = statement.separated(", ");
    for f in chunk {
        list.push_bind(f.alert_id);
    }
    list.push_unseparated(") RETURNING id");
    let done: std::collections::HashSet<i64> = statement
        .build_query_scalar::<i64>()
        .persistent(false)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    Ok(chunk
        .iter()
        .filter(|f| done.contains(&f.alert_id))
        .collect())
}

/// Queues the messages of `rows` in the outbox, in their order, inside `tx`.
async fn queue_messages(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    bot_id: u64,
    rows: &[&Firing],
    now_ms: i64,
) -> std::result::Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert =
        sqlx::QueryBuilder::new("INSERT INTO outbox (bot_id, chat_id, text, created_at_ms) ");
    insert.push_values(rows, |mut row, f| {
        row.push_bind(bot_id as i64)
            .push_bind(f.chat_id)
            .push_bind(f.text.as_str())
            .push_bind(now_ms);
    });
    insert.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}

/// A message waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: i64,
    pub chat_id: i64,
    pub text: String,
    /// When it was queued (Unix milliseconds): a message older than the outbox's expiry is dropped.
    pub queued_at_ms: i64,
}

/// A new alert, as validated by the command parser.
#[derive(Clone, Debug)]
pub struct NewAlert<'a> {
    pub symbol: &'a str,
    pub coin_id: &'a str,
    pub currency: &'a str,
    pub direction: &'a str,
    pub threshold: &'a str,
    pub armed: bool,
    /// Deleted when it fires (`once`), else re-armed on the way back (`repeat`).
    pub once: bool,
    /// When it is deleted, the chat told (Unix milliseconds).
    pub expires_at_ms: Option<i64>,
    /// The fingerprint of the update that sets it: handling that update again finds this alert
    /// instead of adding a second one.
    pub source_update: Option<i64>,
}

const ALERT_COLUMNS: &str = "SELECT id, chat_id, symbol, coin_id, currency, direction, threshold, armed, fired_count, once, last_fired_at_ms, expires_at_ms FROM alerts";

/// A stored alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRow {
    pub id: i64,
    pub chat_id: i64,
    pub symbol: String,
    pub coin_id: String,
    pub currency: String,
    pub direction: String,
    pub threshold: String,
    pub armed: bool,
    pub fired_count: i64,
    pub once: bool,
    /// When it last fired (Unix milliseconds).
    pub last_fired_at_ms: Option<i64>,
    /// When it expires (Unix milliseconds).
    pub expires_at_ms: Option<i64>,
}

/// An alert to fire (disarm it, or delete a `once` one, and queue its message: `Store::fire_alerts`),
/// or one that expired (delete it and queue the note: `Store::expire_alerts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    pub alert_id: i64,
    pub chat_id: i64,
    pub text: String,
}

pub(crate) type AlertTuple = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    bool,
    i64,
    bool,
    Option<i64>,
    Option<i64>,
);

impl From<AlertTuple> for AlertRow {
    fn from(
        (
            id,
            chat_id,
            symbol,
            coin_id,
            currency,
            direction,
            threshold,
            armed,
            fired_count,
            once,
            last_fired_at_ms,
            expires_at_ms,
        ): AlertTuple,
    ) -> Self {
        Self {
            id,
            chat_id,
            symbol,
            coin_id,
            currency,
            direction,
            threshold,
            armed,
            fired_count,
            once,
            last_fired_at_ms,
            expires_at_ms,
        }
    }
}

/// The SQLite state store (`coordination = "none"`).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `<state dir>/state.db` and brings its schema up to date.
    pub async fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            Failure::config(format!(
                "state directory {}: cannot create it ({e}); make it writable for this user or set CRYPTOBOT_STATE_DIR",
                state_dir.display()
            ))
        })?;
        crate::instance::guard::refuse_root_in_a_users_dir(
            state_dir,
            "state directory",
            "CRYPTOBOT_STATE_DIR",
        )?;
        let path = state_dir.join("state.db");
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Failure::io(format!(
                "state database {}: {what} ({e}); check the state directory or move the file away to start afresh",
                path.display()
            ))
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| fail("bad options", &e))?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed write survives a process crash (what G4 needs); only a power
            // loss may drop the last commits, and then at most those updates are handled again.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // The instance lock (G1) already makes this process the database's only user: holding
            // SQLite's lock for the connection's life saves the fcntl lock/unlock pair of every
            // transaction, and (set before WAL is first used) the shared-memory wal-index.
            .locking_mode(SqliteLockingMode::Exclusive)
            // A 1 MiB page cache (SQLite's default is 2 MiB): the working set is the inbox, the
            // outbox and the last handled ids, a few hundred KiB; the rest was resident memory for
            // nothing (bench/pipeline).
            .pragma("cache_size", "-1024");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // One connection, ours alone, in this process: no ping round-trip to sqlx's worker thread
            // before every statement (a lost connection to a local file is not a thing to test for).
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| fail("cannot open it", &e))?;
        let migrator = Migrator::new(crate::store::EmbeddedMigrations(MIGRATIONS))
            .await
            .map_err(|e| fail("bad embedded migrations", &e))?;
        migrator
            .run(&pool)
            .await
            .map_err(|e| fail("cannot migrate its schema", &e))?;
        Ok(Self { pool, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `limit` updates of `bot_id` handled most recently, as `(update id, fingerprint)`.
    pub async fn recent_updates(
        &self,
        bot_id: u64,
        limit: i64,
    ) -> std::result::Result<Vec<(i64, Option<i64>)>, sqlx::Error> {
        let mut rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT update_id, fingerprint FROM handled_updates WHERE bot_id = ?
             ORDER BY seq DESC LIMIT ?",
        )
        .bind(bot_id as i64)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    /// Records every update of `handled` (inbox row deleted, remembered as handled, replies queued) in
    /// one transaction, a few multi-row statements for the whole group (each statement is a round
    /// trip to sqlx's SQLite thread: one per row cost more than the rows themselves).
    pub async fn mark_handled_many(
        &self,
        bot_id: u64,
        handled: &[Handled],
    ) -> std::result::Result<(), sqlx::Error> {
        if handled.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let seqs: Vec<i64> = handled.iter().filter_map(|h| h.inbox_seq).collect();
        for chunk in seqs.chunks(CHUNK) {
            with_id_list("DELETE FROM inbox WHERE seq IN", chunk)
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        // One INSERT inserts its rows in the order of its VALUES: the replies get ids in the order
        // they were given, which is the order the outbound queue sends them in.
        let replies: Vec<&(i64, String)> = handled.iter().flat_map(|h| &h.replies).collect();
        for chunk in replies.chunks(CHUNK) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO outbox (bot_id, chat_id, text, created_at_ms) ",
            );
            insert.push_values(chunk, |mut row, (chat, text)| {
                row.push_bind(bot_id as i64)
                    .push_bind(*chat)
                    .push_bind(text.as_str())
                    .push_bind(now);
            });
            insert.build().persistent(false).execute(&mut *tx).await?;
        }
        // REPLACE: an id seen before with another fingerprint (a reset sequence) takes the new one
        // (rows are replaced in VALUES order, as one statement per update did).
        let mut prune = false;
        for chunk in handled.chunks(CHUNK) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT OR REPLACE INTO handled_updates (bot_id, update_id, fingerprint, handled_at_ms) ",
            );
            insert.push_values(chunk, |mut row, h| {
                row.push_bind(bot_id as i64)
                    .push_bind(h.update.id)
                    .push_bind(h.update.fingerprint)
                    .push_bind(now);
            });
            insert.push(" RETURNING seq");
            let drawn: Vec<i64> = insert
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            prune |= drawn.iter().any(|seq| seq % PRUNE_EVERY == 0);
        }
        if prune {
            sqlx::query(
                "DELETE FROM handled_updates WHERE bot_id = ?1 AND seq <=
                 (SELECT seq FROM handled_updates WHERE bot_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )
            .bind(bot_id as i64)
            .bind(RECENT_UPDATES)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Writes `updates` into the inbox in one transaction (one multi-row INSERT); their `seq`s, in
    /// the order of `updates`.
    pub async fn inbox_add(
        &self,
        bot_id: u64,
        updates: &[InboxUpdate],
    ) -> std::result::Result<Vec<i64>, sqlx::Error> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut seqs = Vec::with_capacity(updates.len());
        for chunk in updates.chunks(CHUNK) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO inbox (bot_id, update_id, fingerprint, body, received_at_ms) ",
            );
            insert.push_values(chunk, |mut row, u| {
                row.push_bind(bot_id as i64)
                    .push_bind(u.update.id)
                    .push_bind(u.update.fingerprint)
                    .push_bind(u.body.as_str())
                    .push_bind(now);
            });
            insert.push(" RETURNING seq");
            let mut drawn: Vec<i64> = insert
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            // RETURNING's order is unspecified, but the rows went in in VALUES order and
            // AUTOINCREMENT gives each a larger seq than any before: ascending is their order.
            drawn.sort_unstable();
            seqs.extend(drawn);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    /// The updates waiting in the inbox, in arrival order.
    pub async fn inbox(&self, bot_id: u64) -> std::result::Result<Vec<InboxUpdate>, sqlx::Error> {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "SELECT seq, update_id, fingerprint, body FROM inbox WHERE bot_id = ? ORDER BY seq",
        )
        .bind(bot_id as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, id, fingerprint, body)| InboxUpdate {
                seq,
                update: super::HandledUpdate { id, fingerprint },
                body,
            })
            .collect())
    }

    /// The webhook secret generated for `bot_id` earlier, if any.
    pub async fn webhook_secret(
        &self,
        bot_id: u64,
    ) -> std::result::Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar::<_, Option<String>>("SELECT secret FROM webhook WHERE bot_id = ?")
            .bind(bot_id as i64)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
    }

    /// Keeps a generated webhook secret for `bot_id`.
    pub async fn save_webhook_secret(
        &self,
        bot_id: u64,
        secret: &str,
    ) -> std::result::Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO webhook (bot_id, secret, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (bot_id) DO UPDATE SET secret = excluded.secret,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(bot_id as i64)
        .bind(secret)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// The URL this bot last gave `setWebhook` (`None`: it set none, or deleted it since).
    pub async fn webhook_url(
        &self,
        bot_id: u64,
    ) -> std::result::Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar::<_, Option<String>>("SELECT url FROM webhook WHERE bot_id = ?")
            .bind(bot_id as i64)
            .fetch_optional(&self.pool)
            .await
            .map(Option::flatten)
    }

    /// Records the URL given to `setWebhook`, or (`None`) that the webhook was deleted.
    pub async fn set_webhook_url(
        &self,
        bot_id: u64,
        url: Option<&str>,
    ) -> std::result::Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO webhook (bot_id, url, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (bot_id) DO UPDATE SET url = excluded.url,
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(bot_id as i64)
        .bind(url)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Messages waiting to be sent, oldest first.
    pub async fn outbox(
        &self,
        bot_id: u64,
        after_id: i64,
        limit: i64,
    ) -> std::result::Result<Vec<OutboxMessage>, sqlx::Error> {
        let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
            "SELECT id, chat_id, text, created_at_ms FROM outbox WHERE bot_id = ? AND id > ?
             ORDER BY id LIMIT ?",
        )
        .bind(bot_id as i64)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, chat_id, text, queued_at_ms)| OutboxMessage {
                id,
                chat_id,
                text,
                queued_at_ms,
            })
            .collect())
    }

    /// Telegram accepted (or definitively refused) the message.
    pub async fn outbox_done(&self, id: i64) -> std::result::Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    /// Telegram accepted (or definitively refused) these messages: deleted in one transaction.
    pub async fn outbox_done_many(&self, ids: &[i64]) -> std::result::Result<(), sqlx::Error> {
        let delete = |chunk: &[i64]| with_id_list("DELETE FROM outbox WHERE id IN", chunk);
        match ids.len() {
            0 => Ok(()),
            // One statement is a transaction of its own: one round trip to sqlx's thread, not three.
            1..=CHUNK => delete(ids)
                .build()
                .persistent(false)
                .execute(&self.pool)
                .await
                .map(drop),
            _ => {
                let mut tx = self.pool.begin().await?;
                // One statement per CHUNK ids, under SQLite's limit on bound parameters.
                for chunk in ids.chunks(CHUNK) {
                    delete(chunk)
                        .build()
                        .persistent(false)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
        }
    }

    /// Number of messages waiting.
    pub async fn outbox_len(&self, bot_id: u64) -> std::result::Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE bot_id = ?")
            .bind(bot_id as i64)
            .fetch_one(&self.pool)
            .await
    }

    /// Adds an alert unless the chat already has `cap`; returns its id, or `None` at the cap.
    pub async fn add_alert(
        &self,
        bot_id: u64,
        chat_id: i64,
        alert: &NewAlert<'_>,
        cap: i64,
    ) -> std::result::Result<Option<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(source) = alert.source_update {
            // The same update handled again (a crash before it was recorded): its alert is there.
            let existing: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM alerts WHERE bot_id = ? AND source_update = ? AND chat_id = ?",
            )
            .bind(bot_id as i64)
            .bind(source)
            .bind(chat_id)
            .fetch_optional(&mut *tx)
            .await?;
            if existing.is_some() {
                return Ok(existing);
            }
        }
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM alerts WHERE bot_id = ? AND chat_id = ?")
                .bind(bot_id as i64)
                .bind(chat_id)
                .fetch_one(&mut *tx)
                .await?;
        if count >= cap {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alerts (bot_id, chat_id, symbol, coin_id, currency, direction, threshold, armed, created_at_ms, source_update, once, expires_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(bot_id as i64)
        .bind(chat_id)
        .bind(alert.symbol)
        .bind(alert.coin_id)
        .bind(alert.currency)
        .bind(alert.direction)
        .bind(alert.threshold)
        .bind(alert.armed)
        .bind(now_ms())
        .bind(alert.source_update)
        .bind(alert.once)
        .bind(alert.expires_at_ms)
        .fetch_one(&mut *tx)
        .await?;
        // A user who writes to the bot again has unblocked it: alerts flow again.
        sqlx::query(
            "INSERT INTO chats (bot_id, chat_id, alerts_disabled) VALUES (?, ?, 0)
             ON CONFLICT (bot_id, chat_id) DO UPDATE SET alerts_disabled = 0",
        )
        .bind(bot_id as i64)
        .bind(chat_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// The alerts of one chat, oldest first.
    pub async fn chat_alerts(
        &self,
        bot_id: u64,
        chat_id: i64,
    ) -> std::result::Result<Vec<AlertRow>, sqlx::Error> {
        let rows: Vec<AlertTuple> = sqlx::query_as(&format!(
            "{ALERT_COLUMNS} WHERE bot_id = ? AND chat_id = ? ORDER BY id"
        ))
        .bind(bot_id as i64)
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AlertRow::from).collect())
    }

    /// Deletes alert `id` of `chat_id`; false when there is no such alert in that chat.
    pub async fn delete_alert(
        &self,
        bot_id: u64,
        chat_id: i64,
        id: i64,
    ) -> std::result::Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM alerts WHERE bot_id = ? AND chat_id = ? AND id = ?")
            .bind(bot_id as i64)
            .bind(chat_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every alert of chats that have not blocked the bot.
    pub async fn each_live_alert(
        &self,
        bot_id: u64,
        mut each: impl FnMut(AlertRow),
    ) -> std::result::Result<(), sqlx::Error> {
        let sql = format!(
            "{ALERT_COLUMNS} WHERE bot_id = ?1 AND chat_id NOT IN
             (SELECT chat_id FROM chats WHERE bot_id = ?1 AND alerts_disabled = 1) ORDER BY id"
        );
        let mut rows = sqlx::query_as::<_, AlertTuple>(&sql)
            .bind(bot_id as i64)
            .fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            each(AlertRow::from(row));
        }
        Ok(())
    }

    /// Fires the alerts of `firings` that are still armed, in one transaction: each disarmed (a
    /// `once` one deleted) and its message queued together, so a crash neither loses a notification
    /// nor sends one twice for one crossing. Returns the ids of the alerts that fired (one already
    /// disarmed or deleted is skipped).
    pub async fn fire_alerts(
        &self,
        bot_id: u64,
        firings: &[Firing],
    ) -> std::result::Result<Vec<i64>, sqlx::Error> {
        if firings.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut fired = Vec::new();
        // Statements of CHUNK alerts, under SQLite's limit on bound parameters.
        for chunk in firings.chunks(CHUNK) {
            let mut update = sqlx::QueryBuilder::new(
                "UPDATE alerts SET armed = 0, fired_count = fired_count + 1, last_fired_at_ms = ",
            );
            update
                .push_bind(now)
                .push(" WHERE bot_id = ")
                .push_bind(bot_id as i64)
                .push(" AND armed = 1 AND id IN (");
            let rows = rows_returned(&mut tx, update, chunk).await?;
            if rows.is_empty() {
                continue;
            }
            let ids: Vec<i64> = rows.iter().map(|f| f.alert_id).collect();
            with_id_list("DELETE FROM alerts WHERE once = 1 AND id IN", &ids)
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            queue_messages(&mut tx, bot_id, &rows, now).await?;
            fired.extend(ids);
        }
        tx.commit().await?;
        Ok(fired)
    }

    /// Deletes the alerts of `notices` whose time is up (`expires_at_ms` not after `now_ms`) and
    /// queues each one's note to its chat, in one transaction. Returns the ids deleted.
    pub async fn expire_alerts(
        &self,
        bot_id: u64,
        notices: &[Firing],
        now_ms: i64,
    ) -> std::result::Result<Vec<i64>, sqlx::Error> {
        if notices.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let mut expired = Vec::new();
        for chunk in notices.chunks(CHUNK) {
            let mut delete = sqlx::QueryBuilder::new("DELETE FROM alerts WHERE bot_id = ");
            delete
                .push_bind(bot_id as i64)
                .push(" AND expires_at_ms <= ")
                .push_bind(now_ms)
                .push(" AND id IN (");
            let rows = rows_returned(&mut tx, delete, chunk).await?;
            queue_messages(&mut tx, bot_id, &rows, now_ms).await?;
            expired.extend(rows.iter().map(|f| f.alert_id));
        }
        tx.commit().await?;
        Ok(expired)
    }

    /// Re-arms these alerts (the price is back on the other side of their thresholds).
    pub async fn rearm_alerts(&self, ids: &[i64]) -> std::result::Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for chunk in ids.chunks(CHUNK) {
            with_id_list("UPDATE alerts SET armed = 1 WHERE id IN", chunk)
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The user blocked the bot (403): no more alerts to that chat until it writes again.
    pub async fn disable_chat_alerts(
        &self,
        bot_id: u64,
        chat_id: i64,
    ) -> std::result::Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO chats (bot_id, chat_id, alerts_disabled) VALUES (?, ?, 1)
             ON CONFLICT (bot_id, chat_id) DO UPDATE SET alerts_disabled = 1",
        )
        .bind(bot_id as i64)
        .bind(chat_id)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Closes the pool, waiting for the last write to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::HandledUpdate;

    impl SqliteStore {
        /// One update recorded with its replies, without an inbox row.
        async fn mark_handled(
            &self,
            bot_id: u64,
            update: HandledUpdate,
            replies: &[(i64, String)],
        ) -> std::result::Result<(), sqlx::Error> {
            let handled = Handled {
                inbox_seq: None,
                update,
                replies: replies.to_vec(),
            };
            self.mark_handled_many(bot_id, &[handled]).await
        }
    }

    /// A batch of alerts fires in one transaction: the armed ones disarmed and their messages queued
    /// in the order given, more than one statement's worth included; one already disarmed is skipped
    /// and queues nothing, and firing again fires nothing.
    #[tokio::test]
    async fn alerts_fire_in_a_batch_once_each_with_their_messages_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let n = CHUNK as i64 + 7;
        let mut firings = Vec::new();
        for chat in 1..=n {
            let alert = NewAlert {
                symbol: "BTC",
                coin_id: "bitcoin",
                currency: "usd",
                direction: "above",
                threshold: "100",
                // The third is already disarmed (fired at an earlier crossing).
                armed: chat != 3,
                once: false,
                expires_at_ms: None,
                source_update: None,
            };
            let id = store.add_alert(1, chat, &alert, 20).await.unwrap().unwrap();
            firings.push(Firing {
                alert_id: id,
                chat_id: chat,
                text: format!("fired {chat}"),
            });
        }
        firings.reverse();
        let fired = store.fire_alerts(1, &firings).await.unwrap();
        assert_eq!(fired.len() as i64, n - 1);
        let queued = store.outbox(1, 0, 10_000).await.unwrap();
        let expected: Vec<String> = firings
            .iter()
            .filter(|f| f.chat_id != 3)
            .map(|f| f.text.clone())
            .collect();
        assert_eq!(
            queued.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(
            queued
                .iter()
                .all(|m| m.text == format!("fired {}", m.chat_id))
        );
        let mut armed = 0;
        store
            .each_live_alert(1, |a| armed += usize::from(a.armed))
            .await
            .unwrap();
        assert_eq!(armed, 0);
        assert!(store.fire_alerts(1, &firings).await.unwrap().is_empty());
        assert_eq!(
            store.outbox(1, 0, 10_000).await.unwrap().len() as i64,
            n - 1
        );
        store.rearm_alerts(&[firings[0].alert_id]).await.unwrap();
        assert_eq!(
            store.fire_alerts(1, &firings).await.unwrap(),
            [firings[0].alert_id]
        );
    }

    /// The inbox keeps what arrived until it is recorded as handled, in the same transaction.
    #[tokio::test]
    async fn an_inbox_row_goes_when_its_update_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let arrived = |id| InboxUpdate {
            seq: 0,
            update: HandledUpdate {
                id,
                fingerprint: id * 3,
            },
            body: format!("{{\"update_id\":{id}}}"),
        };
        let seqs = store
            .inbox_add(1, &[arrived(5), arrived(3), arrived(9)])
            .await
            .unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let waiting = store.inbox(1).await.unwrap();
        assert_eq!(
            waiting.iter().map(|u| u.update.id).collect::<Vec<_>>(),
            [5, 3, 9],
            "arrival order, not id order"
        );
        let done = |i: usize, replies: Vec<(i64, String)>| Handled {
            inbox_seq: Some(seqs[i]),
            update: waiting[i].update,
            replies,
        };
        store
            .mark_handled_many(1, &[done(0, vec![(7, "a".into())]), done(2, vec![])])
            .await
            .unwrap();
        let left = store.inbox(1).await.unwrap();
        assert_eq!(left.iter().map(|u| u.update.id).collect::<Vec<_>>(), [3]);
        assert_eq!(store.outbox(1, 0, 10).await.unwrap().len(), 1);
        assert_eq!(
            store.recent_updates(1, 10).await.unwrap(),
            vec![(5, Some(15)), (9, Some(27))]
        );
    }

    /// A group larger than one statement: every inbox row goes, the seqs come back in arrival order,
    /// the replies are queued in the order given across updates, and an id given twice in one group
    /// keeps the later fingerprint (as one statement per update did).
    #[tokio::test]
    async fn a_group_of_more_than_one_statement_is_recorded_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let n = CHUNK as i64 * 2 + 3;
        // Ids not in arrival order: arrival order is the inbox's, not the ids'.
        let arrived: Vec<InboxUpdate> = (0..n)
            .map(|i| InboxUpdate {
                seq: 0,
                update: HandledUpdate {
                    id: (i * 7919) % n,
                    fingerprint: i,
                },
                body: format!("{{\"update_id\":{}}}", (i * 7919) % n),
            })
            .collect();
        let seqs = store.inbox_add(1, &arrived).await.unwrap();
        let waiting = store.inbox(1).await.unwrap();
        assert_eq!(waiting.iter().map(|u| u.seq).collect::<Vec<_>>(), seqs);
        assert_eq!(
            waiting.iter().map(|u| u.update).collect::<Vec<_>>(),
            arrived.iter().map(|u| u.update).collect::<Vec<_>>(),
            "each seq is its own update's, in arrival order"
        );
        let mut group: Vec<Handled> = waiting
            .iter()
            .map(|u| Handled {
                inbox_seq: Some(u.seq),
                update: u.update,
                // Two replies to one chat for some, none for others.
                replies: (0..u.update.fingerprint % 3)
                    .map(|k| (u.update.fingerprint % 5, format!("{}.{k}", u.seq)))
                    .collect(),
            })
            .collect();
        let again = HandledUpdate {
            id: group[0].update.id,
            fingerprint: -1,
        };
        group.push(Handled {
            inbox_seq: None,
            update: again,
            replies: vec![],
        });
        store.mark_handled_many(1, &group).await.unwrap();
        assert!(store.inbox(1).await.unwrap().is_empty());
        let queued: Vec<String> = store
            .outbox(1, 0, 10 * n)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        let expected: Vec<String> = group
            .iter()
            .flat_map(|h| h.replies.iter().map(|(_, t)| t.clone()))
            .collect();
        assert_eq!(queued, expected, "the replies in the order given");
        let recent = store.recent_updates(1, 10 * n).await.unwrap();
        assert_eq!(recent.len(), n as usize, "each id once");
        assert_eq!(
            recent.last(),
            Some(&(again.id, Some(-1))),
            "the later one kept"
        );
    }

    #[tokio::test]
    async fn created_on_first_open_and_remembers_the_ids_handled() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested/state");
        let store = SqliteStore::open(&state).await.unwrap();
        assert_eq!(store.recent_updates(7, 10).await.unwrap(), vec![]);
        let handled = |id, fingerprint| HandledUpdate { id, fingerprint };
        store
            .mark_handled(7, handled(10, 100), &[(1, "a".into())])
            .await
            .unwrap();
        // Lower than the one before: ids are not increasing forever, each is remembered.
        store.mark_handled(7, handled(9, 90), &[]).await.unwrap();
        store.mark_handled(8, handled(1, 10), &[]).await.unwrap();
        assert_eq!(store.outbox(7, 0, 10).await.unwrap().len(), 1);
        store.close().await;
        // Reopening runs the migrations again: a no-op on an up-to-date schema.
        let store = SqliteStore::open(&state).await.unwrap();
        assert_eq!(
            store.recent_updates(7, 10).await.unwrap(),
            vec![(10, Some(100)), (9, Some(90))]
        );
        assert_eq!(
            store.recent_updates(8, 10).await.unwrap(),
            vec![(1, Some(10))]
        );
        // A reused id with other content replaces the old one and becomes the newest.
        store.mark_handled(7, handled(10, 101), &[]).await.unwrap();
        assert_eq!(
            store.recent_updates(7, 10).await.unwrap(),
            vec![(9, Some(90)), (10, Some(101))]
        );
    }

    /// Item 13 of "the world is not loopback": an update handled again after a crash before it was
    /// recorded must not add its alert twice.
    #[tokio::test]
    async fn an_alert_set_by_the_same_update_twice_is_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let alert = |source| NewAlert {
            symbol: "BTC",
            coin_id: "bitcoin",
            currency: "usd",
            direction: "above",
            threshold: "1",
            armed: true,
            once: false,
            expires_at_ms: None,
            source_update: source,
        };
        let first = store.add_alert(1, 5, &alert(Some(77)), 10).await.unwrap();
        let again = store.add_alert(1, 5, &alert(Some(77)), 10).await.unwrap();
        assert!(first.is_some());
        assert_eq!(first, again, "the replay finds the alert it added");
        let other = store.add_alert(1, 5, &alert(Some(78)), 10).await.unwrap();
        assert_ne!(other, first);
        assert_eq!(store.chat_alerts(1, 5).await.unwrap().len(), 2);
        // At the cap, a replay still finds its alert (it is not a new one).
        assert_eq!(
            store.add_alert(1, 5, &alert(Some(77)), 2).await.unwrap(),
            first
        );
        assert_eq!(
            store.add_alert(1, 5, &alert(Some(79)), 2).await.unwrap(),
            None
        );
    }

    /// The table of handled ids is bounded: only the most recent RECENT_UPDATES stay (pruned every
    /// PRUNE_EVERY records), and they are the newest ones.
    #[tokio::test]
    async fn only_the_most_recent_handled_ids_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let total = RECENT_UPDATES + 3 * PRUNE_EVERY;
        for id in 0..total {
            let update = HandledUpdate {
                id,
                fingerprint: id,
            };
            store.mark_handled(1, update, &[]).await.unwrap();
        }
        let kept = store.recent_updates(1, 10 * RECENT_UPDATES).await.unwrap();
        assert!(
            kept.len() as i64 <= RECENT_UPDATES + PRUNE_EVERY,
            "{} kept",
            kept.len()
        );
        assert!(kept.len() as i64 >= RECENT_UPDATES, "{} kept", kept.len());
        assert_eq!(kept.last(), Some(&(total - 1, Some(total - 1))));
    }

    /// An old state.db (before migration 5) keeps its last handled update: it is remembered by id.
    #[tokio::test]
    async fn the_last_handled_update_of_an_old_database_is_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite:")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            let old = Migrator::new(crate::store::EmbeddedMigrations(&MIGRATIONS[..4]))
                .await
                .unwrap();
            old.run(&pool).await.unwrap();
            sqlx::query("INSERT INTO bot_state VALUES (7, 1234, 0)")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(
            store.recent_updates(7, 10).await.unwrap(),
            vec![(1234, None)]
        );
    }

    /// The outbound queue's reads run on every wake-up: they must search the index, not scan the table.
    #[tokio::test]
    async fn outbox_reads_use_the_bot_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        for sql in [
            "SELECT id, chat_id, text, created_at_ms FROM outbox WHERE bot_id = 1 AND id > 0 ORDER BY id LIMIT 10",
            "SELECT count(*) FROM outbox WHERE bot_id = 1",
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&store.pool)
                    .await
                    .unwrap();
            let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
            assert!(
                details.iter().any(|d| d.contains("outbox_bot_id")),
                "{sql}: {details:?}"
            );
            assert!(
                !details.iter().any(|d| d.contains("TEMP B-TREE")),
                "{sql}: {details:?}"
            );
        }
    }

    #[tokio::test]
    async fn messages_done_with_are_deleted_together_and_only_they() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        // More than one statement's worth, so the chunks are exercised.
        let replies: Vec<(i64, String)> = (0..1200).map(|i| (i, format!("m{i}"))).collect();
        store
            .mark_handled(
                7,
                HandledUpdate {
                    id: 1,
                    fingerprint: 1,
                },
                &replies,
            )
            .await
            .unwrap();
        let queued = store.outbox(7, 0, 2000).await.unwrap();
        let done: Vec<i64> = queued.iter().take(1100).map(|m| m.id).collect();
        store.outbox_done_many(&[]).await.unwrap();
        store.outbox_done_many(&done).await.unwrap();
        let left = store.outbox(7, 0, 2000).await.unwrap();
        assert_eq!(left.len(), 100);
        assert_eq!(left[0].text, "m1100");
        // Deleting again is harmless (a retry after an error whose commit went through).
        store.outbox_done_many(&done).await.unwrap();
        assert_eq!(store.outbox_len(7).await.unwrap(), 100);
    }

    #[tokio::test]
    async fn webhook_secret_and_url_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.webhook_secret(1).await.unwrap(), None);
        store.save_webhook_secret(1, "s").await.unwrap();
        store
            .set_webhook_url(1, Some("https://x/telegram/p"))
            .await
            .unwrap();
        assert_eq!(store.webhook_secret(1).await.unwrap().as_deref(), Some("s"));
        store.set_webhook_url(1, None).await.unwrap();
        assert_eq!(store.webhook_url(1).await.unwrap(), None);
        assert_eq!(store.webhook_secret(1).await.unwrap().as_deref(), Some("s"));
        assert_eq!(store.webhook_url(2).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_unusable_state_dir_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = SqliteStore::open(&file.join("sub")).await.unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config);
    }
}
