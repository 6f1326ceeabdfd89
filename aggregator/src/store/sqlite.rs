//! The SQLite alert store (embedded mode), a file under the data directory. Migrations in
//! `aggregator/migrations/sqlite` are applied when it opens.

use std::path::{Path, PathBuf};
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

    /// Ends a subquery the planner must not flatten (the statistics query); SQLite takes an
    /// OFFSET only after a LIMIT.
    const FENCE: &str = "LIMIT -1 OFFSET 0";

    /// SQLite groups by sorting, so the statistics query counts each bucket on its own (a
    /// seek in the covering index and a sort of that bucket's rows) rather than sorting the
    /// whole window: 16 ms instead of 37–60 ms for 7 days of 78,000 alerts in 168 buckets.
    const STATS_PER_BUCKET: bool = true;

    /// No window first: the FTS candidates (`text_candidates`) serve a rare text, and a
    /// common one is found soon by walking the list.
    const TEXT_WINDOW: Option<i64> = None;

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

    /// The alerts whose search text contains `text`, from the FTS5 trigram index
    /// (migrations/sqlite/0005_scale.sql), when there are few: the list then reads those
    /// alerts by id. None when the text is shorter than a trigram or matches more than
    /// [`Self::TEXT_CANDIDATES`] alerts: a common text is found soon enough by walking the
    /// list in its order, which SQLite's planner would not choose by itself.
    async fn text_candidates(&self, text: &str) -> anyhow::Result<Option<Vec<uuid::Uuid>>> {
        if text.chars().count() < 3 {
            return Ok(None);
        }
        let phrase = format!("\"{}\"", text.to_lowercase().replace('"', "\"\""));
        let ids: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "SELECT d.alert_id FROM alert_search JOIN alert_search_docs d
                 ON d.doc = alert_search.rowid
             WHERE alert_search MATCH $1 LIMIT $2",
        )
        .bind(phrase)
        .bind(Self::TEXT_CANDIDATES + 1)
        .fetch_all(&self.read)
        .await
        .context("search the text index")?;
        Ok((ids.len() as i64 <= Self::TEXT_CANDIDATES)
            .then(|| ids.into_iter().map(|(id,)| id).collect()))
    }

    /// Above this many matches the text index is not used (see `text_candidates`).
    const TEXT_CANDIDATES: i64 = 2_000;
}

impl_store!(SqliteStore, SqliteRow);

/// What a backup or a restore found in the copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Alerts in it.
    pub alerts: i64,
    /// Its size, bytes.
    pub bytes: u64,
}

/// Checks that `path` is an intact AuditFlow store (`PRAGMA integrity_check`, its tables)
/// and counts its alerts.
async fn check_copy(path: &Path) -> anyhow::Result<CopyReport> {
    let options = SqliteConnectOptions::from_str("sqlite:")
        .context("sqlite options")?
        .filename(path)
        .read_only(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("open {}", path.display()))?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .context("integrity check")?;
    anyhow::ensure!(integrity == "ok", "{} is damaged: {integrity}", path.display());
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
        .fetch_one(&pool)
        .await
        .with_context(|| format!("{} is not an AuditFlow alert store", path.display()))?;
    pool.close().await;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(CopyReport { alerts, bytes })
}

/// Copies the store at `db` to `to` while it is in use: `VACUUM INTO`, one consistent
/// snapshot (every transaction committed before it, none after), compact; then checks the
/// copy. Refuses to overwrite `to`.
pub async fn backup(db: &Path, to: &Path) -> anyhow::Result<CopyReport> {
    anyhow::ensure!(db.exists(), "no alert store at {}", db.display());
    anyhow::ensure!(!to.exists(), "{} exists: choose a new file", to.display());
    let options = SqliteConnectOptions::from_str("sqlite:")
        .context("sqlite options")?
        .filename(db)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("open {}", db.display()))?;
    let target = to.to_str().context("the backup path is not UTF-8")?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&pool)
        .await
        .with_context(|| format!("copy the store into {}", to.display()))?;
    pool.close().await;
    check_copy(to).await
}

/// Replaces the store at `db` with the backup `from` (AuditFlow stopped): checks the backup,
/// keeps the current store beside it as `<db>.before-restore-<unix seconds>` (with its WAL),
/// and copies the backup in place (a temporary file renamed, so a crash leaves one or the
/// other). Returns what the backup holds and where the old store went.
pub async fn restore(from: &Path, db: &Path) -> anyhow::Result<(CopyReport, Option<PathBuf>)> {
    let report = check_copy(from).await?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut kept = None;
    if db.exists() {
        let aside = PathBuf::from(format!("{}.before-restore-{stamp}", db.display()));
        std::fs::rename(db, &aside).with_context(|| format!("move {} aside", db.display()))?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", db.display()));
            if side.exists() {
                std::fs::rename(&side, format!("{}{suffix}", aside.display()))
                    .with_context(|| format!("move {} aside", side.display()))?;
            }
        }
        kept = Some(aside);
    }
    let tmp = PathBuf::from(format!("{}.restoring", db.display()));
    std::fs::copy(from, &tmp).with_context(|| format!("copy {}", from.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, db).with_context(|| format!("put the backup at {}", db.display()))?;
    Ok((report, kept))
}
