//! The SQLite store (sqlx): opened once at start, one small pool, migrations embedded in the binary.

use std::borrow::Cow;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::exit::{Failure, Result};
use crate::instance::holder::unix_now;

/// The versioned migrations, in order. A new schema change is a new file and a new line here.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "bot state",
    include_str!("migrations/sqlite/0001_bot_state.sql"),
)];

/// Hands sqlx the migrations compiled into the binary (sqlx's own `migrate!` needs its macros crate,
/// which we do not build for this one use).
#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Migration>, BoxDynError>> + Send + 's>>
    {
        Box::pin(async {
            Ok(MIGRATIONS
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

/// The state store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `<state dir>/state.db` and brings its schema up to date.
    pub async fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            Failure::config(format!(
                "state directory {}: cannot create it ({e}); make it writable for this user or set CRYPTOBOT_STATE_DIR",
                state_dir.display()
            ))
        })?;
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
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| fail("cannot open it", &e))?;
        let migrator = Migrator::new(Embedded)
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

    /// The last update of `bot_id` whose handler finished, if any.
    pub async fn last_handled(&self, bot_id: u64) -> std::result::Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT last_handled_update FROM bot_state WHERE bot_id = ?")
            .bind(bot_id as i64)
            .fetch_optional(&self.pool)
            .await
    }

    /// Records that the handler of `update_id` finished (never moves backwards).
    pub async fn mark_handled(
        &self,
        bot_id: u64,
        update_id: i64,
    ) -> std::result::Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO bot_state (bot_id, last_handled_update, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (bot_id) DO UPDATE SET
                 last_handled_update = max(last_handled_update, excluded.last_handled_update),
                 updated_at_ms = excluded.updated_at_ms",
        )
        .bind(bot_id as i64)
        .bind(update_id)
        .bind(unix_now().as_millis() as i64)
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

    #[tokio::test]
    async fn created_on_first_open_and_keeps_the_highest_handled_id() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nested/state");
        let store = Store::open(&state).await.unwrap();
        assert_eq!(store.last_handled(7).await.unwrap(), None);
        store.mark_handled(7, 10).await.unwrap();
        store.mark_handled(7, 9).await.unwrap();
        store.mark_handled(8, 1).await.unwrap();
        store.close().await;
        // Reopening runs the migrations again: a no-op on an up-to-date schema.
        let store = Store::open(&state).await.unwrap();
        assert_eq!(store.last_handled(7).await.unwrap(), Some(10));
        assert_eq!(store.last_handled(8).await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn an_unusable_state_dir_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = Store::open(&file.join("sub")).await.unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config);
    }
}
