//! The SQLite alert store (embedded mode), a file under the data directory. Migrations in
//! `aggregator/migrations/sqlite` are applied when it opens.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use super::Channel;
use super::sql::impl_store;

/// A SQLite-backed store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// One connection for writes: SQLite has a single writer, and a deferred transaction that
    /// upgrades to a write can fail with "database is locked" when two connections race.
    pool: SqlitePool,
    /// Readers (WAL mode lets them run beside the writer).
    read: SqlitePool,
    /// Where each new alert is announced (one outbox row per channel).
    channels: Vec<Channel>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies the migrations.
    pub async fn open(path: &Path, channels: Vec<Channel>) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite:")
            .context("sqlite options")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable across process crashes; a power cut may lose the
            // last transactions, which the event sources redeliver (acks follow commits).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("open SQLite database {}", path.display()))?;
        // Incremental auto-vacuum, so that retention's deletes give space back to an SD card
        // (backend_reclaim). The mode is fixed when the file is laid out: a new database takes
        // it before its first table; an older one is rewritten once (VACUUM), as it starts.
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&pool)
            .await
            .context("PRAGMA auto_vacuum")?;
        if mode != 2 {
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(&pool)
                .await
                .context("set incremental auto-vacuum")?;
            sqlx::query("VACUUM").execute(&pool).await.context("VACUUM into incremental mode")?;
        }
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.context("apply migrations")?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("open SQLite database {}", path.display()))?;
        Ok(Self { pool, read, channels })
    }
}

impl SqliteStore {
    /// Deleted rows free pages at once (they move to the free list).
    const SIZE_FOLLOWS_DELETES: bool = true;

    async fn backend_live_bytes(&self) -> anyhow::Result<i64> {
        let pragma = |name: &'static str| {
            let read = &self.read;
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                    .fetch_one(read)
                    .await
                    .with_context(|| format!("PRAGMA {name}"))
            }
        };
        let (pages, free, size) = (
            pragma("page_count").await?,
            pragma("freelist_count").await?,
            pragma("page_size").await?,
        );
        Ok((pages - free) * size)
    }

    /// Returns the free pages to the file system, a bounded number at a time (each call is
    /// one short write).
    async fn backend_reclaim(&self) -> anyhow::Result<()> {
        sqlx::query("PRAGMA incremental_vacuum(4096)")
            .execute(&self.pool)
            .await
            .context("incremental vacuum")?;
        Ok(())
    }
}

impl_store!(SqliteStore, SqliteRow);
