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

impl_store!(PgStore, PgRow);
