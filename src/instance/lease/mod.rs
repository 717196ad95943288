//! The PostgreSQL leader lease (G2): exactly one poller across hosts that share a database.
//!
//! One row per bot id in `cryptobot_lease.lease`: the holder (host, PID, a random instance id per
//! process), the epoch (the fencing token: +1 on every acquisition, never reused, since rows are never
//! deleted), and `acquired_at`, `renewed_at`, `expires_at`. Every time is the **database's** clock
//! (`now()` decides and is stored; `clock_timestamp()` measures the durations reported back); a host's
//! clock is never compared with another's. Each decision is one atomic statement.
//!
//! # The API, and how `cryptobot run` uses it
//!
//! ```text
//! let lease = Lease::connect(url, bot_id, ttl, Holder::this_process()).await?;  // pool + migrations
//! let mut wake = lease.listen().await?;        // LISTEN before the first try: no release is missed
//! loop {                                       // role: standby
//!     let asked = Instant::now();              // taken BEFORE the statement is sent
//!     match lease.try_acquire().await {
//!         Ok(Acquire::Leader { epoch, .. }) => lead(epoch, asked),   // back to standby when it returns
//!         Ok(Acquire::Standby(holder)) => notify(format!("STATUS=standby; {holder}")),
//!         Err(e) => notify(format!("STATUS=standby; degraded: {e}")),
//!     }
//!     select! { _ = wake.released() => {}, _ = sleep(standby_retry(ttl)) => {} }
//! }
//! ```
//!
//! The leader (`lead`), on its own monotonic clock, anchored at an `Instant` taken **before** each
//! acquire or renew statement was sent (the database started counting later, so the anchor errs on the
//! safe side, whatever the clocks of the hosts say):
//! - it may act until `asked + renew_deadline(ttl)` ([`renew_deadline`]: 2/3·TTL, so TTL/3 before the
//!   lease expires and anyone else can acquire); `instance::lease_window::LeaseWindow::extend(asked,
//!   renew_deadline(ttl))` keeps that instant for the poller;
//! - it renews every [`renew_interval`] (TTL/3): [`Lease::renew`] → `Some(_)`: extend the window from that
//!   renewal's `asked`; `None`: the lease is lost (expired, or someone else holds it): stop polling and
//!   the singleton jobs **at once**; `Err`: retry until the window closes, then stop;
//! - it bounds every `getUpdates` by what is left: `LeaseWindow::poll_timeout(configured, margin)` →
//!   `None`: do not poll now; `Some(t)`: `timeout = min(configured, t)`, where `t` is the time left
//!   minus `telegram::poller::LEASE_MARGIN` (1 s: the request's way to Telegram and back) and never
//!   below `lease_window::MIN_POLL` (Telegram may hold any poll 3 s). Telegram ends a poll after its
//!   `timeout` whatever the client does, so even a leader frozen mid-poll (SIGSTOP, VM pause) has no
//!   poll outstanding when its successor polls; the window itself closes TTL/3 before the lease
//!   expires. The window runs on `CLOCK_BOOTTIME` (`crate::clock`), which counts through a suspend;
//! - it writes shared state only through fenced statements ([`FENCE_CTE`], example
//!   [`Lease::commit_offset`]); a refused write (`false`) means a successor exists: stop at once;
//! - on a clean stop: drain, confirm the offset, [`Lease::release`] (expires the row now and `NOTIFY`s
//!   `cryptobot_lease_<bot id>`, so a standby acquires at once), [`Lease::close`].
//!
//! `cryptobot lease show` is [`Lease::show`] (its `Display` is the `STATUS=` text; [`LeaseInfo::expires_in`]
//! / [`LeaseInfo::expired_ago`]); `lease release` is the leader's own clean stop; `lease takeover` asks
//! the leader to stop cleanly, then acquires on the NOTIFY.
//!
//! # The statements
//!
//! Acquire ([`Lease::try_acquire`]), one `INSERT … ON CONFLICT DO UPDATE … RETURNING`: the row is taken
//! when it is expired (epoch + 1) or renewed when it is ours and unexpired (same epoch); otherwise the
//! update writes the row back unchanged, so `RETURNING` always names the holder as of the decision
//! (a `WHERE` on the `DO UPDATE` would return nothing for a standby, and a second `SELECT` could name a
//! different holder; a no-op row version per standby attempt is the price, every TTL/3).
//! Renew: `UPDATE … WHERE epoch = $ AND holder_instance = me AND expires_at > now()`. Release: the same
//! `UPDATE` setting `expires_at = now()`, with `pg_notify` in the same statement (so the same
//! transaction: the NOTIFY is delivered only if the release commits).
//!
//! # Fencing
//!
//! A shared-state write carries the epoch and joins [`FENCE_CTE`], which yields the lease row only while
//! that epoch is the current, unexpired one of this holder, and **share-locks** it: an acquisition (which
//! must lock the row exclusively to bump the epoch) waits until the write commits, and a write that waits
//! for an acquisition re-checks the new row and finds another epoch. So every write of epoch N commits
//! before epoch N+1 exists, and none of epoch N after. (A plain `UPDATE … FROM lease WHERE epoch = $1`
//! does not lock the lease row and can race an acquisition.)
//!
//! # Schema and migrations
//!
//! Everything lives in the schema `cryptobot_lease`, created by [`Lease::connect`] if missing (that needs
//! the `CREATE` privilege on the database, which its owner has; or a DBA creates the schema and grants
//! it). The versioned migrations (`migrations/postgres/`) are embedded like the SQLite store's. sqlx 0.8
//! cannot rename its migrations table, so the migrations run with `search_path = cryptobot_lease` and
//! their history is `cryptobot_lease._sqlx_migrations`: it cannot collide with another migrator's
//! `_sqlx_migrations` in the same database (e.g. a PostgreSQL state store in `public`).
//!
//! # What the lease assumes of the database
//!
//! - **One database, or a synchronous replica.** The epoch and the expiry live in one row; a failover
//!   to an asynchronous replica can lose the last acquisitions and renewals, and with them the fencing
//!   (an old epoch could be current again). Use `synchronous_commit = on` with a synchronous standby
//!   (or no replica) when a failover must keep the guarantee.
//! - **The database's clock decides.** Expiry is `now()` on the server; hosts' clocks are never
//!   compared. A step of the *server's* clock moves every lease at once: forward, a live leader's lease
//!   expires early (a standby takes over, the old leader's next write is fenced and it steps down —
//!   never two pollers, since its own window runs on its local clock from before the renewal); back,
//!   an expired lease lives longer (a crashed leader is replaced later). Keep the server on NTP with
//!   slewing, as any database server.
//! - **Sessions that die are noticed.** [`session_limits`] ends a session idle in a transaction after
//!   TTL/4 and bounds statements and lock waits, so a frozen or cut-off leader cannot block a takeover.
//!
//! # Errors
//!
//! [`LeaseError`] is one line, and never contains the password of the URL (the raw and the
//! percent-decoded forms, and a `password=` parameter, are replaced by `***`). Every call is bounded
//! ([`Lease::query_timeout`]); a lost connection is an `Err`, never a panic, and the pool reconnects on the
//! next call.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The schema every lease table (and the lease's migration history) lives in.
pub const SCHEMA: &str = "cryptobot_lease";

/// The default lease TTL (`lease_ttl`, `CRYPTOBOT_LEASE_TTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// How long [`Lease::connect`] waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Lease::connect`] waits for the schema migration (another host may hold the migration lock).
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The versioned migrations, in order. A new schema change is a new file and a new line here.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "lease",
        include_str!("migrations/postgres/0001_lease.sql"),
    ),
    (
        2,
        "shared state",
        include_str!("migrations/postgres/0002_shared_state.sql"),
    ),
    (
        3,
        "handover",
        include_str!("migrations/postgres/0003_handover.sql"),
    ),
    (
        4,
        "handled updates",
        include_str!("migrations/postgres/0004_handled_updates.sql"),
    ),
    (
        5,
        "inbox",
        include_str!("migrations/postgres/0005_inbox.sql"),
    ),
    (
        6,
        "alert options",
        include_str!("migrations/postgres/0006_alert_options.sql"),
    ),
];

/// Serialises the creation of the schema between hosts starting at once (`CREATE SCHEMA IF NOT EXISTS`
/// is not safe against itself). Any constant works; this one spells "cbleasec".
const SCHEMA_LOCK_KEY: i64 = 0x6362_6c65_6173_6563;

mod sql;
mod types;

pub use sql::FENCE_CTE;
use sql::*;
pub use types::*;
use types::{InfoRow, Redactor, display_target, is_connection_error};

// ---------------------------------------------------------------------------------------------------
// Timing

/// How often a leader renews: TTL/3.
pub fn renew_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// How long after its last successful renewal (measured from when that renewal was asked for) a leader
/// that could not renew must have stopped polling and its singleton jobs: 2/3·TTL, so TTL/3 before the
/// lease expires and anyone else can acquire it.
pub fn renew_deadline(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// How long a standby waits between two attempts when no release wakes it: TTL/3 with ±25 % jitter,
/// so standbys started together do not stay in step.
pub fn standby_retry(ttl: Duration) -> Duration {
    standby_retry_with(ttl, fastrand::f64())
}

/// [`standby_retry`] with the random part given (`unit` in [0, 1)).
pub fn standby_retry_with(ttl: Duration, unit: f64) -> Duration {
    renew_interval(ttl).mul_f64(0.75 + 0.5 * unit.clamp(0.0, 1.0))
}

/// The server-side limits of every session of the lease and the shared store (set at connection, as
/// startup options), so that a leader's death at any instant leaves the lease acquirable within the
/// TTL. A shared-state write holds a share lock on the lease row until it commits ([`FENCE_CTE`]); a
/// leader frozen (SIGSTOP, a VM pause) or cut off between two statements of that transaction would
/// keep it "idle in transaction" — and the lock — until PostgreSQL notices the dead connection, about
/// two hours with default TCP settings, and every takeover would wait behind it.
/// - `idle_in_transaction_session_timeout` = TTL/4 (at least 500 ms): such a session is ended, its
///   transaction rolled back and the lock freed, well before the lease expires (a frozen leader's
///   window closes at 2/3·TTL after its last renewal, the lease at TTL). Our transactions are a few
///   statements in a row, milliseconds apart.
/// - `statement_timeout` = the query timeout: a statement the client gave up on does not run on.
/// - `lock_timeout` = half of it: an acquisition that meets a lock fails fast and is retried, rather
///   than queueing behind it.
/// - TCP keepalives from the server (idle TTL/3, then every second, 3 probes): a host that vanished is
///   noticed within about TTL/3 + 3 s even on a session outside a transaction (a LISTEN).
pub fn session_limits(ttl: Duration, query_timeout: Duration) -> Vec<(&'static str, String)> {
    let ms = |d: Duration| d.as_millis().max(1).to_string();
    vec![
        (
            "idle_in_transaction_session_timeout",
            ms((ttl / 4).max(Duration::from_millis(500))),
        ),
        ("statement_timeout", ms(query_timeout)),
        ("lock_timeout", ms(query_timeout / 2)),
        (
            "tcp_keepalives_idle",
            (ttl / 3).as_secs().max(1).to_string(),
        ),
        ("tcp_keepalives_interval", "1".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------------
// The lease

/// A connection to the lease of one bot, for one holder. Cheap to share by reference; every method is
/// one bounded round trip (or a few, for [`Lease::connect`]).
pub struct Lease {
    pool: PgPool,
    options: PgConnectOptions,
    bot_id: u64,
    ttl: Duration,
    me: Holder,
    redactor: Redactor,
    target: String,
    query_timeout: Duration,
}

impl fmt::Debug for Lease {
    // Not derived: the connect options hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("target", &self.target)
            .field("bot_id", &self.bot_id)
            .field("ttl", &self.ttl)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The channel on which `cryptobot lease release|takeover` ask the leader of a bot to hand over.
pub fn control_channel(bot_id: u64) -> String {
    format!("cryptobot_lease_control_{bot_id}")
}

/// What an operator asks the leader (`NOTIFY` on [`control_channel`], payload `resign <epoch>` or
/// `takeover <epoch> <host>`). A leader acts only on requests naming its own epoch, so a request
/// meant for a predecessor is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlRequest {
    /// `cryptobot lease release`: stop cleanly and release the lease to whichever standby takes it.
    Resign,
    /// `cryptobot lease takeover` on `host`: stop cleanly and release the lease reserved for `host`.
    Takeover { host: String },
}

impl ControlRequest {
    fn payload(&self, epoch: i64) -> String {
        match self {
            ControlRequest::Resign => format!("resign {epoch}"),
            ControlRequest::Takeover { host } => format!("takeover {epoch} {host}"),
        }
    }

    /// The request in `payload`, if it is well formed and meant for the leader of `epoch`.
    pub fn parse(payload: &str, epoch: i64) -> Option<Self> {
        let mut words = payload.split(' ');
        let kind = words.next()?;
        let for_epoch: i64 = words.next()?.parse().ok()?;
        if for_epoch != epoch {
            return None;
        }
        match (kind, words.next(), words.next()) {
            ("resign", None, _) => Some(ControlRequest::Resign),
            ("takeover", Some(host), None) if !host.is_empty() => Some(ControlRequest::Takeover {
                host: host.to_owned(),
            }),
            _ => None,
        }
    }
}

/// A `LISTEN` on the bot's control channel (the leader's), reconnected when lost.
pub struct ControlListener {
    inner: PgListener,
    redactor: Redactor,
    target: String,
}

impl fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlListener")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ControlListener {
    /// Waits for the next request for the leader of `epoch` (others are ignored). A lost connection is
    /// re-established by sqlx; an error is returned (the caller retries after a pause).
    pub async fn next(&mut self, epoch: i64) -> Result<ControlRequest, LeaseError> {
        loop {
            match self.inner.recv().await {
                Ok(n) => {
                    if let Some(request) = ControlRequest::parse(n.payload(), epoch) {
                        return Ok(request);
                    }
                }
                Err(e) => {
                    return Err(LeaseError::Connection {
                        what: "listen",
                        target: self.target.clone(),
                        reason: self.redactor.clean(&e.to_string()),
                    });
                }
            }
        }
    }
}

/// What a [`ReleaseListener`] woke up for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The lease was released (by the holder of `epoch`, if the payload said so): try to acquire now.
    Released { epoch: Option<i64> },
    /// The listening connection was lost and re-established: a release may have been missed, so try to
    /// acquire now.
    Reconnected,
}

/// A `LISTEN` on the bot's release channel, on its own connection (reconnected when lost).
pub struct ReleaseListener {
    inner: PgListener,
    redactor: Redactor,
    target: String,
}

impl fmt::Debug for ReleaseListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseListener")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ReleaseListener {
    /// Waits until the lease is released or the connection was re-established (either way: try to
    /// acquire now). Unbounded: use it in a `select!` with the standby's retry timer. Cancelling it
    /// loses nothing that the retry timer would not catch. An `Err` (the server is unreachable; each
    /// reconnection attempt is bounded) is no reason to spin: wait for the retry timer, then call again.
    pub async fn released(&mut self) -> Result<Wake, LeaseError> {
        match self.inner.try_recv().await {
            Ok(Some(n)) => Ok(Wake::Released {
                epoch: n.payload().parse().ok(),
            }),
            Ok(None) => Ok(Wake::Reconnected),
            Err(e) => Err(LeaseError::Connection {
                what: "listen",
                target: self.target.clone(),
                reason: self.redactor.clean(&e.to_string()),
            }),
        }
    }
}

impl Lease {
    /// Connects (one attempt, bounded by [`CONNECT_TIMEOUT`]), creates the schema if needed and runs the
    /// embedded migrations, then keeps a pool of at most 2 connections (a [`ReleaseListener`] adds one
    /// of its own). `ttl` is how long an acquisition or a renewal lasts (100 ms to 1 h; the default is
    /// [`DEFAULT_TTL`]). `me` is this process ([`Holder::this_process`]); an `application_name` in the
    /// URL names the connections in `pg_stat_activity`, else `cryptobot-lease <host> pid <pid>`.
    pub async fn connect(
        url: &str,
        bot_id: u64,
        ttl: Duration,
        me: Holder,
    ) -> Result<Lease, LeaseError> {
        let redactor = Redactor::for_url(url);
        let target = display_target(url, &redactor);
        if ttl < Duration::from_millis(100) || ttl > Duration::from_secs(3600) {
            return Err(LeaseError::Config {
                reason: format!("the lease TTL must be between 100 ms and 1 h, not {ttl:?}"),
            });
        }
        if i64::try_from(bot_id).is_err() {
            return Err(LeaseError::Config {
                reason: format!("bot id {bot_id} is out of range"),
            });
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| LeaseError::Config {
                reason: format!(
                    "the database URL {target} is not usable ({}); expected postgres://user:password@host:5432/database",
                    redactor.clean(&e.to_string())
                ),
            })?
            .disable_statement_logging();
        // Names the holder in pg_stat_activity, unless the URL names the connection itself.
        let options = match options.get_application_name() {
            Some(_) => options,
            None => {
                let name = format!("cryptobot-lease {} pid {}", me.host, me.pid);
                options.application_name(&name)
            }
        };
        let query_timeout = (ttl / 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let connection_error = |what: &'static str, reason: String| LeaseError::Connection {
            what,
            target: target.clone(),
            reason,
        };

        // The schema and the migrations, on connections of their own whose search_path is the schema.
        // The first one is a single attempt, so an unreachable server fails at once (a pool would
        // keep trying until its timeout).
        let setup_options = options.clone().options([("search_path", SCHEMA)]);
        let mut conn =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&setup_options))
                .await
                .map_err(|_| {
                    connection_error("connect", format!("no answer within {CONNECT_TIMEOUT:?}"))
                })?
                .map_err(|e| connection_error("connect", redactor.clean(&e.to_string())))?;
        let schema = tokio::time::timeout(MIGRATE_TIMEOUT, create_schema(&mut conn)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        // sqlx's Migrator::run on a bare connection makes this future !Send; on a pool it does not.
        let setup = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(setup_options);
        let migrated = match schema {
            Ok(Ok(())) => tokio::time::timeout(MIGRATE_TIMEOUT, migrate(&setup)).await,
            other => other,
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), setup.close()).await;
        let migration_error = |reason: String| LeaseError::Migration {
            target: target.clone(),
            reason,
        };
        match migrated {
            Err(_) => {
                return Err(migration_error(format!(
                    "not done within {MIGRATE_TIMEOUT:?} (is another host holding the migration lock?)"
                )));
            }
            Ok(Err(e)) => return Err(migration_error(redactor.clean(&e))),
            Ok(Ok(())) => {}
        }

        // Every connection from here on carries the server-side limits (`session_limits`): a
        // session whose process froze or lost its network cannot hold a lock on the lease row.
        let options = options.options(session_limits(ttl, query_timeout));
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(query_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(options.clone());
        Ok(Lease {
            pool,
            options,
            bot_id,
            ttl,
            me,
            redactor,
            target,
            query_timeout,
        })
    }

    pub fn bot_id(&self) -> u64 {
        self.bot_id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn holder(&self) -> &Holder {
        &self.me
    }

    /// The bound on every call (half the TTL, between 0.5 s and 5 s).
    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// The URL with its password as `***`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Acquires the lease, or renews it if this holder already has it (same epoch); an expired or
    /// released lease is taken with epoch + 1. One atomic statement.
    pub async fn try_acquire(&self) -> Result<Acquire, LeaseError> {
        let row: InfoRow = self
            .bounded(
                "acquire",
                sqlx::query_as(ACQUIRE_SQL)
                    .bind(self.bot_id as i64)
                    .bind(&self.me.host)
                    .bind(i64::from(self.me.pid))
                    .bind(&self.me.instance)
                    .bind(self.ttl.as_secs_f64())
                    .fetch_one(&self.pool),
            )
            .await?;
        let info = LeaseInfo::from_row(self.bot_id, row);
        if info.instance == self.me.instance {
            Ok(Acquire::Leader {
                epoch: info.epoch,
                expires_in: info.expires_in().unwrap_or_default(),
            })
        } else {
            Ok(Acquire::Standby(info))
        }
    }

    /// Extends this holder's lease of `epoch` by the TTL: `Some(time left)`, or `None` when it is lost
    /// (expired, or someone else holds it): the caller must stop polling and its singleton jobs at once.
    pub async fn renew(&self, epoch: i64) -> Result<Option<Duration>, LeaseError> {
        let left: Option<i64> = self
            .bounded(
                "renew",
                sqlx::query_scalar(RENEW_SQL)
                    .bind(self.bot_id as i64)
                    .bind(epoch)
                    .bind(&self.me.instance)
                    .bind(self.ttl.as_secs_f64())
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(left.map(|ms| Duration::from_millis(ms.max(0) as u64)))
    }

    /// Gives the lease of `epoch` up now if this holder still has it, and `NOTIFY`s the bot's channel in
    /// the same transaction. `false`: it was not ours any more (nothing changed, nothing notified).
    pub async fn release(&self, epoch: i64) -> Result<bool, LeaseError> {
        self.release_to(epoch, None).await
    }

    /// [`Lease::release`], reserving the lease for the host `to` (a takeover asked from there) for one
    /// TTL: other standbys cannot acquire it meanwhile. `None`: anyone may.
    pub async fn release_to(&self, epoch: i64, to: Option<&str>) -> Result<bool, LeaseError> {
        let row: Option<(i64, Option<String>)> = self
            .bounded(
                "release",
                sqlx::query_as(RELEASE_SQL)
                    .bind(self.bot_id as i64)
                    .bind(epoch)
                    .bind(&self.me.instance)
                    .bind(channel(self.bot_id))
                    .bind(to)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.is_some())
    }

    /// Sends `request` to the leader of `epoch` on the bot's control channel ([`control_channel`]);
    /// it acts on it if it still holds that epoch (see [`ControlRequest`]).
    pub async fn ask_leader(&self, epoch: i64, request: &ControlRequest) -> Result<(), LeaseError> {
        let payload = request.payload(epoch);
        self.bounded(
            "notify",
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(control_channel(self.bot_id))
                .bind(payload)
                .execute(&self.pool),
        )
        .await
        .map(drop)
    }

    /// `LISTEN`s on the bot's control channel on a connection of its own: what the leader hears
    /// `cryptobot lease release|takeover` on.
    pub async fn listen_control(&self) -> Result<ControlListener, LeaseError> {
        let inner = self.listen_on(&control_channel(self.bot_id)).await?;
        Ok(ControlListener {
            inner,
            redactor: self.redactor.clone(),
            target: self.target.clone(),
        })
    }

    /// The lease row of this bot, whoever holds it (`None`: never acquired).
    pub async fn show(&self) -> Result<Option<LeaseInfo>, LeaseError> {
        let row: Option<InfoRow> = self
            .bounded(
                "show",
                sqlx::query_as(SHOW_SQL)
                    .bind(self.bot_id as i64)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(|r| LeaseInfo::from_row(self.bot_id, r)))
    }

    /// Is `epoch` the current, unexpired epoch, held by this holder? (A check; a write must use
    /// [`FENCE_CTE`] itself, or it could race an acquisition.)
    pub async fn is_current(&self, epoch: i64) -> Result<bool, LeaseError> {
        let n: i64 = self
            .bounded(
                "fencing check",
                sqlx::query_scalar(IS_CURRENT_SQL)
                    .bind(self.bot_id as i64)
                    .bind(epoch)
                    .bind(&self.me.instance)
                    .fetch_one(&self.pool),
            )
            .await?;
        Ok(n > 0)
    }

    /// The example fenced write: records `next_offset` for the bot, only while `epoch` is current and
    /// ours (`false`: refused, a successor exists: stop at once). Atomic with the check ([`FENCE_CTE`]).
    pub async fn commit_offset(&self, epoch: i64, next_offset: i64) -> Result<bool, LeaseError> {
        let written: Option<i64> = self
            .bounded(
                "fenced write",
                sqlx::query_scalar(COMMIT_OFFSET_SQL)
                    .bind(self.bot_id as i64)
                    .bind(epoch)
                    .bind(&self.me.instance)
                    .bind(next_offset)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(written.is_some())
    }

    /// What [`Lease::commit_offset`] last wrote: (epoch, next offset).
    pub async fn fenced_offset(&self) -> Result<Option<(i64, i64)>, LeaseError> {
        self.bounded(
            "read offset",
            sqlx::query_as(FENCED_OFFSET_SQL)
                .bind(self.bot_id as i64)
                .fetch_optional(&self.pool),
        )
        .await
    }

    /// A pool for the shared state store (`store::postgres`): its own connection (so a long write never
    /// delays a renewal), `search_path` set to [`SCHEMA`], where the state tables live beside the lease.
    pub(crate) fn state_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(self.query_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(self.options.clone().options([("search_path", SCHEMA)]))
    }

    /// `text` on one line with the URL's password replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.redactor.clean(text)
    }

    /// `LISTEN`s on [`channel`]`(bot_id)` on a connection of its own.
    pub async fn listen(&self) -> Result<ReleaseListener, LeaseError> {
        let inner = self.listen_on(&channel(self.bot_id)).await?;
        Ok(ReleaseListener {
            inner,
            redactor: self.redactor.clone(),
            target: self.target.clone(),
        })
    }

    /// A `PgListener` on `channel`, on a connection of its own (kept open: no idle or lifetime limit),
    /// bounded like every call.
    async fn listen_on(&self, channel: &str) -> Result<PgListener, LeaseError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(self.query_timeout.max(Duration::from_secs(1)))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(self.options.clone());
        let listen = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        self.bounded("listen", listen).await
    }

    /// Closes the pool (after [`Lease::release`], on a clean stop). Bounded.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(self.query_timeout, self.pool.close()).await;
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, LeaseError> {
        match tokio::time::timeout(self.query_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_connection_error(&e) => Err(LeaseError::Connection {
                what,
                target: self.target.clone(),
                reason: self.redactor.clean(&e.to_string()),
            }),
            Ok(Err(e)) => Err(LeaseError::Query {
                what,
                reason: self.redactor.clean(&e.to_string()),
            }),
            Err(_) => Err(LeaseError::Connection {
                what,
                target: self.target.clone(),
                reason: format!("no answer within {:?}", self.query_timeout),
            }),
        }
    }
}

/// Creates the schema if missing, serialised between hosts starting at once.
async fn create_schema(conn: &mut PgConnection) -> Result<(), String> {
    // Checked first, so a role without CREATE on the database can use a schema a DBA made for it.
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(SCHEMA)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    if !exists {
        let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("cannot create the schema: {e}"))?;
        tx.commit().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the embedded migrations (`pool`: one connection whose search_path is the schema, so sqlx's
/// `_sqlx_migrations` lands there).
async fn migrate(pool: &PgPool) -> Result<(), String> {
    let migrator = Migrator::new(crate::store::EmbeddedMigrations(MIGRATIONS))
        .await
        .map_err(|e| format!("bad embedded migrations: {e}"))?;
    migrator.run(pool).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn control_requests_name_their_epoch_and_nothing_else_parses() {
        let takeover = ControlRequest::Takeover {
            host: "vps-2".into(),
        };
        for request in [ControlRequest::Resign, takeover.clone()] {
            assert_eq!(
                ControlRequest::parse(&request.payload(7), 7),
                Some(request.clone())
            );
            assert_eq!(
                ControlRequest::parse(&request.payload(7), 8),
                None,
                "another epoch"
            );
        }
        for junk in [
            "",
            "resign",
            "resign x",
            "resign 7 extra",
            "takeover 7",
            "takeover 7 a b",
            "stop 7",
        ] {
            assert_eq!(ControlRequest::parse(junk, 7), None, "{junk:?}");
        }
    }

    #[test]
    fn renew_every_third_and_stop_before_the_ttl() {
        assert_eq!(renew_interval(S(9)), S(3));
        assert_eq!(renew_deadline(S(9)), S(6));
        for ttl in [MS(100), S(1), S(10), S(3600)] {
            assert!(renew_interval(ttl) < renew_deadline(ttl));
            assert!(renew_deadline(ttl) < ttl);
        }
    }

    #[test]
    fn standby_retry_is_a_third_of_the_ttl_with_jitter() {
        assert_eq!(standby_retry_with(S(12), 0.0), S(3));
        assert_eq!(standby_retry_with(S(12), 0.5), S(4));
        assert_eq!(standby_retry_with(S(12), 1.0), S(5));
        for _ in 0..100 {
            let d = standby_retry(S(12));
            assert!(d >= S(3) && d <= S(5), "{d:?}");
        }
    }

    #[test]
    fn redaction_covers_raw_decoded_and_query_passwords() {
        let r = Redactor::for_url("postgres://bot:p%40ss%2Fw0rd@db.example:5432/cryptobot");
        assert_eq!(
            r.clean("auth p%40ss%2Fw0rd and p@ss/w0rd\nsecond line"),
            "auth *** and *** second line"
        );
        let q = Redactor::for_url("postgres://bot@db/x?sslmode=disable&password=hunter22");
        assert_eq!(q.clean("x hunter22 y"), "x *** y");
        let unparsable = Redactor::for_url("postgres://bot:s3cr3t@[bad/x");
        assert_eq!(unparsable.clean("s3cr3t"), "***");
        let none = Redactor::for_url("postgres://bot@db/x");
        assert_eq!(none.clean("nothing: to hide"), "nothing: to hide");
        assert_eq!(
            display_target(
                "postgres://bot:s3cr3t@db:5432/x?password=s3cr3t",
                &unparsable
            ),
            "postgres://bot:***@db:5432/x"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }

    #[test]
    fn a_lease_info_says_when_it_expires_or_expired() {
        let mut info = LeaseInfo {
            bot_id: 1,
            host: "vps-a".into(),
            pid: 42,
            instance: "i".into(),
            epoch: 3,
            acquired_at: UNIX_EPOCH,
            renewed_ago: S(1),
            expires_in_ms: 2_500,
        };
        assert_eq!(info.expires_in(), Some(MS(2_500)));
        assert_eq!(info.expired_ago(), None);
        assert_eq!(info.to_string(), "leader vps-a pid 42 epoch 3");
        info.expires_in_ms = -1_200;
        assert_eq!(info.expires_in(), None);
        assert_eq!(info.expired_ago(), Some(MS(1_200)));
        assert_eq!(info.to_string(), "leader vps-a pid 42 epoch 3 (expired)");
    }

    #[test]
    fn instance_ids_are_random_and_channels_named_for_the_bot() {
        let a = new_instance_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_instance_id());
        assert_eq!(channel(123), "cryptobot_lease_123");
    }

    /// Compiled, never run: every future of the API can be spawned on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(lease: &'static Lease, listener: &'static mut ReleaseListener) {
        fn send<T: Send>(_: T) {}
        send(Lease::connect("", 1, DEFAULT_TTL, Holder::this_process()));
        send(lease.try_acquire());
        send(lease.renew(1));
        send(lease.release(1));
        send(lease.show());
        send(lease.is_current(1));
        send(lease.commit_offset(1, 1));
        send(lease.listen());
        send(lease.close());
        send(listener.released());
    }

    #[test]
    fn the_fenced_write_reads_from_the_fence() {
        assert!(COMMIT_OFFSET_SQL.starts_with("WITH fence AS ("));
        assert!(COMMIT_OFFSET_SQL.contains("FROM fence"));
        assert!(FENCE_CTE.contains("FOR SHARE"));
    }
}
