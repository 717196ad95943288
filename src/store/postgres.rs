//! The shared state store (`coordination = "postgres"`): the SQLite store's tables, in PostgreSQL beside
//! the lease (schema `cryptobot_lease`, migration `0002_shared_state.sql`), so whichever host leads
//! sees the offset, the handled updates, the outbox and the alerts of its predecessors.
//!
//! Guarantees:
//! - **Fenced writes (G2).** Every write is a transaction that first share-locks the lease row *if and
//!   only if* this instance holds the current, unexpired epoch ([`FENCE_SQL`], the same condition as
//!   `instance::lease::FENCE_CTE`). An acquisition must lock that row exclusively to bump the epoch, so
//!   every write of epoch N commits before epoch N+1 exists and none after. A refused write returns
//!   [`Error::Fenced`] and calls `on_fenced` (the leadership's "lease lost": stop polling, stop the
//!   singleton jobs, exit to come back as a standby) — a leader paused past its TTL that resumes
//!   cannot write, and stops the moment it tries.
//! - The same transactions as the SQLite store: an update is recorded with its replies, an alert fires
//!   with its message, or neither.
//! - One connection of its own (writes are serialised as on SQLite, so outbox ids become visible in
//!   order, which the outbound queue's `id > last` scan relies on), separate from the lease's renewals.
//!   Every call is bounded (twice the lease's query timeout); errors never contain the URL's password.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::sqlite::{AlertTuple, Firing};
use super::{
    AlertRow, Error, Handled, HandledUpdate, InboxUpdate, NewAlert, OutboxMessage, PRUNE_EVERY,
    RECENT_UPDATES, Result,
};
use crate::instance::lease::Lease;

/// The columns of an [`AlertRow`], as SQLite's store reads them: the times as Unix milliseconds.
const ALERT_COLUMNS: &str = "SELECT id, chat_id, symbol, coin_id, currency, direction, threshold, armed, fired_count, once, \
     (extract(epoch FROM last_fired_at) * 1000)::bigint, (extract(epoch FROM expires_at) * 1000)::bigint FROM alerts";

/// Locks the lease row for share when `$2` is the current, unexpired epoch of bot `$1` held by the
/// instance `$3`; no row otherwise (a successor exists, or the lease expired): the write is refused.
const FENCE_SQL: &str = "SELECT epoch FROM cryptobot_lease.lease \
     WHERE bot_id = $1 AND epoch = $2 AND holder_instance = $3 AND expires_at > now() FOR SHARE";

/// The shared store of one leader (one epoch).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    lease: Arc<Lease>,
    epoch: i64,
    on_fenced: Arc<dyn Fn() + Send + Sync>,
    timeout: Duration,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.lease.target())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// The store of the leader holding `epoch` of `lease`. `on_fenced` runs when a write is refused.
    pub fn new(lease: Arc<Lease>, epoch: i64, on_fenced: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            pool: lease.state_pool(),
            timeout: lease.query_timeout() * 2,
            lease,
            epoch,
            on_fenced,
        }
    }

    /// The database URL, password as `***`.
    pub fn target(&self) -> &str {
        self.lease.target()
    }

    fn bot(&self) -> i64 {
        self.lease.bot_id() as i64
    }

    fn fail(&self, e: sqlx::Error) -> Error {
        Error::Postgres(self.lease.redact(&e.to_string()))
    }

    /// Runs `fut` within the bound.
    async fn bounded<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Postgres(format!(
                "{}: no answer within {:?}",
                self.lease.target(),
                self.timeout
            ))),
        }
    }

    /// Begins a write: the transaction holds the fence (a share lock on our lease row) until it ends.
    async fn begin_fenced(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.fail(e))?;
        let held: Option<i64> = sqlx::query_scalar(FENCE_SQL)
            .bind(self.bot())
            .bind(self.epoch)
            .bind(&self.lease.holder().instance)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        if held.is_none() {
            drop(tx); // rolled back
            tracing::error!(
                bot_id = self.lease.bot_id(),
                epoch = self.epoch,
                "a shared-state write was refused: this instance no longer holds the lease"
            );
            (self.on_fenced)();
            return Err(Error::Fenced { epoch: self.epoch });
        }
        Ok(tx)
    }

    async fn commit(&self, tx: Transaction<'static, Postgres>) -> Result<()> {
        tx.commit().await.map_err(|e| self.fail(e))
    }

    pub async fn recent_updates(&self, bot_id: u64, limit: i64) -> Result<Vec<(i64, Option<i64>)>> {
        self.bounded(async {
            let mut rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
                "SELECT update_id, fingerprint FROM handled_updates WHERE bot_id = $1
                 ORDER BY seq DESC LIMIT $2",
            )
            .bind(bot_id as i64)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    pub async fn mark_handled_many(&self, bot_id: u64, handled: &[Handled]) -> Result<()> {
        self.bounded(async {
            let mut tx = self.begin_fenced().await?;
            let seqs: Vec<i64> = handled.iter().filter_map(|h| h.inbox_seq).collect();
            if !seqs.is_empty() {
                sqlx::query("DELETE FROM inbox WHERE seq = ANY($1)")
                    .bind(&seqs)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            let replies: Vec<&(i64, String)> = handled.iter().flat_map(|h| &h.replies).collect();
            if !replies.is_empty() {
                let chats: Vec<i64> = replies.iter().map(|(c, _)| *c).collect();
                let texts: Vec<&str> = replies.iter().map(|(_, t)| t.as_str()).collect();
                sqlx::query(
                    "INSERT INTO outbox (bot_id, chat_id, text, epoch, created_at)
                     SELECT $1, r.chat_id, r.text, $2, now()
                       FROM unnest($3::bigint[], $4::text[]) WITH ORDINALITY AS r(chat_id, text, n)
                      ORDER BY r.n",
                )
                .bind(bot_id as i64)
                .bind(self.epoch)
                .bind(&chats)
                .bind(&texts)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
            }
            // An id seen before with another fingerprint (a reset sequence) takes the new one, and
            // the new sequence number (`excluded.seq` is the one just drawn). One statement for all.
            let ids: Vec<i64> = handled.iter().map(|h| h.update.id).collect();
            let fingerprints: Vec<i64> = handled.iter().map(|h| h.update.fingerprint).collect();
            let seqs: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO handled_updates (bot_id, update_id, fingerprint, epoch, handled_at)
                 SELECT $1, u.id, u.fingerprint, $2, now()
                   FROM unnest($3::bigint[], $4::bigint[]) WITH ORDINALITY AS u(id, fingerprint, n)
                  ORDER BY u.n
                 ON CONFLICT (bot_id, update_id) DO UPDATE SET
                     seq = excluded.seq, fingerprint = excluded.fingerprint,
                     epoch = excluded.epoch, handled_at = excluded.handled_at
                 RETURNING seq",
            )
            .bind(bot_id as i64)
            .bind(self.epoch)
            .bind(&ids)
            .bind(&fingerprints)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
            if seqs.iter().any(|seq| seq % PRUNE_EVERY == 0) {
                sqlx::query(
                    "DELETE FROM handled_updates WHERE bot_id = $1 AND seq <=
                     (SELECT seq FROM handled_updates WHERE bot_id = $1
                       ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                )
                .bind(bot_id as i64)
                .bind(RECENT_UPDATES)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
            }
            self.commit(tx).await
        })
        .await
    }

    pub async fn inbox_add(&self, bot_id: u64, updates: &[InboxUpdate]) -> Result<Vec<i64>> {
        self.bounded(async {
            let mut tx = self.begin_fenced().await?;
            let ids: Vec<i64> = updates.iter().map(|u| u.update.id).collect();
            let fingerprints: Vec<i64> = updates.iter().map(|u| u.update.fingerprint).collect();
            let bodies: Vec<&str> = updates.iter().map(|u| u.body.as_str()).collect();
            let seqs: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO inbox (bot_id, update_id, fingerprint, body, epoch, received_at)
                 SELECT $1, u.id, u.fingerprint, u.body, $2, now()
                   FROM unnest($3::bigint[], $4::bigint[], $5::text[])
                        WITH ORDINALITY AS u(id, fingerprint, body, n)
                  ORDER BY u.n
                 RETURNING seq",
            )
            .bind(bot_id as i64)
            .bind(self.epoch)
            .bind(&ids)
            .bind(&fingerprints)
            .bind(&bodies)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
            self.commit(tx).await?;
            let mut seqs = seqs;
            seqs.sort_unstable(); // drawn in ORDINALITY order: ascending is arrival order
            Ok(seqs)
        })
        .await
    }

    pub async fn inbox(&self, bot_id: u64) -> Result<Vec<InboxUpdate>> {
        self.bounded(async {
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
                "SELECT seq, update_id, fingerprint, body FROM inbox WHERE bot_id = $1 ORDER BY seq",
            )
            .bind(bot_id as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
            Ok(rows
                .into_iter()
                .map(|(seq, id, fingerprint, body)| InboxUpdate {
                    seq,
                    update: HandledUpdate { id, fingerprint },
                    body,
                })
                .collect())
        })
        .await
    }

    pub async fn webhook_secret(&self, bot_id: u64) -> Result<Option<String>> {
        self.bounded(async {
            sqlx::query_scalar::<_, Option<String>>("SELECT secret FROM webhook WHERE bot_id = $1")
                .bind(bot_id as i64)
                .fetch_optional(&self.pool)
                .await
                .map(Option::flatten)
                .map_err(|e| self.fail(e))
        })
        .await
    }

    pub async fn save_webhook_secret(&self, bot_id: u64, secret: &str) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO webhook (bot_id, secret, updated_at) VALUES ($1, $2, now())
                 ON CONFLICT (bot_id) DO UPDATE SET secret = excluded.secret,
                     updated_at = excluded.updated_at",
            )
            .bind(bot_id as i64)
            .bind(secret.to_owned()),
        )
        .await
        .map(drop)
    }

    pub async fn webhook_url(&self, bot_id: u64) -> Result<Option<String>> {
        self.bounded(async {
            sqlx::query_scalar::<_, Option<String>>("SELECT url FROM webhook WHERE bot_id = $1")
                .bind(bot_id as i64)
                .fetch_optional(&self.pool)
                .await
                .map(Option::flatten)
                .map_err(|e| self.fail(e))
        })
        .await
    }

    pub async fn set_webhook_url(&self, bot_id: u64, url: Option<&str>) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO webhook (bot_id, url, updated_at) VALUES ($1, $2, now())
                 ON CONFLICT (bot_id) DO UPDATE SET url = excluded.url,
                     updated_at = excluded.updated_at",
            )
            .bind(bot_id as i64)
            .bind(url.map(str::to_owned)),
        )
        .await
        .map(drop)
    }

    pub async fn outbox(
        &self,
        bot_id: u64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>> {
        self.bounded(async {
            let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
                "SELECT id, chat_id, text, (extract(epoch FROM created_at) * 1000)::bigint
                   FROM outbox WHERE bot_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(bot_id as i64)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
            Ok(rows
                .into_iter()
                .map(|(id, chat_id, text, queued_at_ms)| OutboxMessage {
                    id,
                    chat_id,
                    text,
                    queued_at_ms,
                })
                .collect())
        })
        .await
    }

    pub async fn outbox_done(&self, id: i64) -> Result<()> {
        self.write(
            sqlx::query("DELETE FROM outbox WHERE id = $1 AND bot_id = $2")
                .bind(id)
                .bind(self.bot()),
        )
        .await
        .map(drop)
    }

    pub async fn outbox_done_many(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(
            sqlx::query("DELETE FROM outbox WHERE bot_id = $1 AND id = ANY($2)")
                .bind(self.bot())
                .bind(ids.to_vec()),
        )
        .await
        .map(drop)
    }

    pub async fn outbox_len(&self, bot_id: u64) -> Result<i64> {
        self.bounded(async {
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE bot_id = $1")
                .bind(bot_id as i64)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.fail(e))
        })
        .await
    }

    pub async fn add_alert(
        &self,
        bot_id: u64,
        chat_id: i64,
        alert: &NewAlert<'_>,
        cap: i64,
    ) -> Result<Option<i64>> {
        self.bounded(async {
            let mut tx = self.begin_fenced().await?;
            if let Some(source) = alert.source_update {
                // The same update handled again (a crash before it was recorded): its alert is there.
                let existing: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM alerts WHERE bot_id = $1 AND source_update = $2 AND chat_id = $3",
                )
                .bind(bot_id as i64)
                .bind(source)
                .bind(chat_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
                if existing.is_some() {
                    return Ok(existing);
                }
            }
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM alerts WHERE bot_id = $1 AND chat_id = $2")
                    .bind(bot_id as i64)
                    .bind(chat_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
            if count >= cap {
                return Ok(None);
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO alerts (bot_id, chat_id, symbol, coin_id, currency, direction, threshold, armed, created_at, source_update, once, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9, $10, to_timestamp($11::bigint / 1000.0)) RETURNING id",
            )
            .bind(bot_id as i64)
            .bind(chat_id)
            .bind(alert.symbol)
            .bind(alert.coin_id)
            .bind(alert.currency)
            .bind(alert.direction)
            .bind(alert.threshold)
            .bind(alert.armed)
            .bind(alert.source_update)
            .bind(alert.once)
            .bind(alert.expires_at_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
            // A user who writes to the bot again has unblocked it: alerts flow again.
            sqlx::query(
                "INSERT INTO chats (bot_id, chat_id, alerts_disabled) VALUES ($1, $2, false)
                 ON CONFLICT (bot_id, chat_id) DO UPDATE SET alerts_disabled = false",
            )
            .bind(bot_id as i64)
            .bind(chat_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
            self.commit(tx).await?;
            Ok(Some(id))
        })
        .await
    }

    pub async fn chat_alerts(&self, bot_id: u64, chat_id: i64) -> Result<Vec<AlertRow>> {
        self.bounded(async {
            let rows: Vec<AlertTuple> = sqlx::query_as(&format!(
                "{ALERT_COLUMNS} WHERE bot_id = $1 AND chat_id = $2 ORDER BY id"
            ))
            .bind(bot_id as i64)
            .bind(chat_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
            Ok(rows.into_iter().map(AlertRow::from).collect())
        })
        .await
    }

    pub async fn delete_alert(&self, bot_id: u64, chat_id: i64, id: i64) -> Result<bool> {
        let deleted = self
            .write(
                sqlx::query("DELETE FROM alerts WHERE bot_id = $1 AND chat_id = $2 AND id = $3")
                    .bind(bot_id as i64)
                    .bind(chat_id)
                    .bind(id),
            )
            .await?;
        Ok(deleted == 1)
    }

    pub async fn each_live_alert(&self, bot_id: u64, mut each: impl FnMut(AlertRow)) -> Result<()> {
        self.bounded(async {
            let sql = format!(
                "{ALERT_COLUMNS} WHERE bot_id = $1 AND chat_id NOT IN
                 (SELECT chat_id FROM chats WHERE bot_id = $1 AND alerts_disabled) ORDER BY id"
            );
            let mut rows = sqlx::query_as::<_, AlertTuple>(&sql)
                .bind(bot_id as i64)
                .fetch(&self.pool);
            while let Some(row) = rows.try_next().await.map_err(|e| self.fail(e))? {
                each(AlertRow::from(row));
            }
            Ok(())
        })
        .await
    }

    /// Fires the alerts of `firings` that are still armed, in one fenced transaction (see
    /// `SqliteStore::fire_alerts`); the ids of those that fired.
    pub async fn fire_alerts(&self, bot_id: u64, firings: &[Firing]) -> Result<Vec<i64>> {
        if firings.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut tx = self.begin_fenced().await?;
            let ids: Vec<i64> = firings.iter().map(|f| f.alert_id).collect();
            let done: std::collections::HashSet<i64> = sqlx::query_scalar(
                "UPDATE alerts SET armed = false, fired_count = fired_count + 1, last_fired_at = now()
                 WHERE bot_id = $1 AND armed AND id = ANY($2) RETURNING id",
            )
            .bind(bot_id as i64)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?
            .into_iter()
            .collect();
            let rows: Vec<&Firing> = firings
                .iter()
                .filter(|f| done.contains(&f.alert_id))
                .collect();
            let fired: Vec<i64> = rows.iter().map(|f| f.alert_id).collect();
            if !fired.is_empty() {
                sqlx::query("DELETE FROM alerts WHERE once AND id = ANY($1)")
                    .bind(&fired)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            self.queue_messages(&mut tx, bot_id, &rows).await?;
            self.commit(tx).await?;
            Ok(fired)
        })
        .await
    }

    pub async fn expire_alerts(
        &self,
        bot_id: u64,
        notices: &[Firing],
        now_ms: i64,
    ) -> Result<Vec<i64>> {
        self.bounded(async {
            let mut tx = self.begin_fenced().await?;
            let ids: Vec<i64> = notices.iter().map(|f| f.alert_id).collect();
            let done: std::collections::HashSet<i64> = sqlx::query_scalar(
                "DELETE FROM alerts WHERE bot_id = $1 AND id = ANY($2)
                 AND expires_at <= to_timestamp($3::bigint / 1000.0) RETURNING id",
            )
            .bind(bot_id as i64)
            .bind(&ids)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?
            .into_iter()
            .collect();
            let rows: Vec<&Firing> = notices
                .iter()
                .filter(|f| done.contains(&f.alert_id))
                .collect();
            self.queue_messages(&mut tx, bot_id, &rows).await?;
            self.commit(tx).await?;
            Ok(rows.iter().map(|f| f.alert_id).collect())
        })
        .await
    }

    /// Queues the messages of `rows` in the outbox, in their order (the outbox's ids follow it),
    /// inside `tx`.
    async fn queue_messages(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        bot_id: u64,
        rows: &[&Firing],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let chats: Vec<i64> = rows.iter().map(|f| f.chat_id).collect();
        let texts: Vec<&str> = rows.iter().map(|f| f.text.as_str()).collect();
        sqlx::query(
            "INSERT INTO outbox (bot_id, chat_id, text, epoch, created_at)
             SELECT $1, m.chat_id, m.text, $4, now()
             FROM unnest($2::bigint[], $3::text[]) WITH ORDINALITY AS m(chat_id, text, n)
             ORDER BY m.n",
        )
        .bind(bot_id as i64)
        .bind(&chats)
        .bind(&texts)
        .bind(self.epoch)
        .execute(&mut **tx)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub async fn rearm_alerts(&self, ids: &[i64]) -> Result<()> {
        self.write(
            sqlx::query("UPDATE alerts SET armed = true WHERE bot_id = $1 AND id = ANY($2)")
                .bind(self.bot())
                .bind(ids.to_vec()),
        )
        .await
        .map(drop)
    }

    pub async fn disable_chat_alerts(&self, bot_id: u64, chat_id: i64) -> Result<()> {
        self.write(
            sqlx::query(
                "INSERT INTO chats (bot_id, chat_id, alerts_disabled) VALUES ($1, $2, true)
                 ON CONFLICT (bot_id, chat_id) DO UPDATE SET alerts_disabled = true",
            )
            .bind(bot_id as i64)
            .bind(chat_id),
        )
        .await
        .map(drop)
    }

    /// One fenced statement in its own transaction; the number of rows it touched.
    async fn write(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64> {
        self.bounded(async {
            let mut tx = self.begin_fenced().await?;
            let done = query.execute(&mut *tx).await.map_err(|e| self.fail(e))?;
            self.commit(tx).await?;
            Ok(done.rows_affected())
        })
        .await
    }

    /// Closes the pool (the lease's own pool is closed by the leadership). Bounded.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.timeout, self.pool.close()).await;
    }
}
