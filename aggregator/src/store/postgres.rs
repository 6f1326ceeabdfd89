//! The PostgreSQL alert store (cluster profile). Migrations in `aggregator/migrations/postgres`
//! are applied at start-up and by `auditflow-aggregator migrate`.

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};

use super::Channel;
use super::sql::impl_store;

/// A PostgreSQL-backed store.
#[derive(Clone, Debug)]
pub struct PgStore {
    /// Writes and transactions.
    pool: PgPool,
    /// Reads (the same pool: PostgreSQL handles concurrent readers and writers itself).
    read: PgPool,
    /// Where each new alert is announced (one outbox row per channel).
    channels: Vec<Channel>,
}

impl PgStore {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str, channels: Vec<Channel>) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .context("connect to PostgreSQL")?;
        let store = Self { read: pool.clone(), pool, channels };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .context("apply migrations")?;
        Ok(())
    }
}

impl PgStore {
    /// The database's size shrinks only after a VACUUM (and its files not even then):
    /// autovacuum makes deleted rows' space reusable, so the size stops growing instead.
    const SIZE_FOLLOWS_DELETES: bool = false;

    async fn backend_live_bytes(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
            .fetch_one(&self.read)
            .await
            .context("database size")
    }

    async fn backend_reclaim(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl_store!(PgStore, PgRow);
