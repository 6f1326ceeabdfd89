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

    /// Ends a subquery the planner must not pull up (the statistics query).
    const FENCE: &str = "OFFSET 0";

    /// A text search looks among this many newest alerts of the list first (store/sql.rs).
    const TEXT_WINDOW: Option<i64> = Some(20_000);

    async fn backend_live_bytes(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar::<_, i64>("SELECT pg_database_size(current_database())")
            .fetch_one(&self.read)
            .await
            .context("database size")
    }

    async fn backend_reclaim(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// No candidates: the LIKE the list query runs is answered by the trigram index
    /// (migrations/postgres/0006_scale.sql), the planner choosing it or the list's order.
    async fn text_candidates(&self, _text: &str) -> anyhow::Result<Option<Vec<uuid::Uuid>>> {
        Ok(None)
    }
}

impl_store!(PgStore, PgRow);
