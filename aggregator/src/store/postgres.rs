//! The PostgreSQL alert store (cluster profile). AuditFlow's tables live in a schema of their
//! own ([`PgSchema`], `services.database_schema`, default `auditflow`), so that they can share
//! a database with the legacy notification service, whose `alerts` table is in `public`
//! (design.md §8.7). Migrations in `aggregator/migrations/postgres` are applied at start-up and
//! by `auditflow-aggregator migrate`.

use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::Channel;
use super::sql::impl_store;

/// The migrations, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Every table the migrations create, and sqlx's record of the migrations: what an install of
/// the earlier layout, with its tables in `public`, moves into the schema
/// (`tests/legacy_database.rs` checks the list against a migrated schema). The identity
/// columns' sequences and the indexes move with their tables; the migrations create no types
/// or functions, and the `pg_trgm` extension stays where it is.
pub const TABLES: [&str; 11] = [
    "_sqlx_migrations",
    "alerts",
    "firings",
    "alert_history",
    "silences",
    "agents",
    "outbox",
    "agent_sources",
    "rule_counts",
    "legacy_imports",
    "event_batches",
];

/// The key of the advisory lock under which the schema is created and an earlier layout
/// moved, so that replicas starting together do it once ("auditflo" in ASCII).
const SCHEMA_LOCK: i64 = 0x6175_6469_7466_6c6f;

/// The PostgreSQL schema AuditFlow's tables live in: a plain SQL identifier (lower-case
/// letters, digits and `_`, not starting with a digit or `pg_`, at most 63 bytes), so that it
/// is written into statements as it is and means the same there, to psql and to pg_dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PgSchema(String);

impl PgSchema {
    /// The schema's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PgSchema {
    fn default() -> Self {
        Self("auditflow".into())
    }
}

impl TryFrom<String> for PgSchema {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let mut chars = name.chars();
        let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        // PostgreSQL reserves pg_ names for its own schemas and truncates names at 63 bytes.
        if plain && !name.starts_with("pg_") && name.len() <= 63 {
            Ok(Self(name))
        } else {
            Err(format!(
                "`{name}` is not a plain SQL identifier (lower-case letters, digits and `_`, not \
                 starting with a digit or `pg_`, at most 63 characters)"
            ))
        }
    }
}

impl FromStr for PgSchema {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Self::try_from(name.to_owned())
    }
}

impl From<PgSchema> for String {
    fn from(s: PgSchema) -> Self {
        s.0
    }
}

impl std::fmt::Display for PgSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Connection options for `url` with every statement's unqualified names in `schema` (the
/// search path holds it alone: `public`, where a legacy `alerts` table may be, is not
/// searched, so no statement of ours can touch a table there).
fn connect_options(url: &str, schema: &PgSchema) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .context("read the PostgreSQL URL")?
        .options([("search_path", schema.as_str())]))
}

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
    /// Connects with its tables in `schema`, creates the schema if it is missing, moves an
    /// install of the earlier layout (its tables in `public`) into it, and applies the
    /// migrations.
    pub async fn connect(
        url: &str,
        schema: &PgSchema,
        channels: Vec<Channel>,
    ) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(connect_options(url, schema)?)
            .await
            .context("connect to PostgreSQL")?;
        let store = Self { read: pool.clone(), pool, channels };
        store.prepare_schema(schema).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await.context("apply migrations")?;
        Ok(())
    }

    /// Creates `schema` when it is missing and moves an earlier layout into it, in one
    /// transaction under an advisory lock, so that replicas starting together do it once and a
    /// failure leaves everything where it was.
    async fn prepare_schema(&self, schema: &PgSchema) -> anyhow::Result<()> {
        let s = schema.as_str();
        let mut tx = self.pool.begin().await.context("begin")?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .context("lock the schema")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(s)
                .fetch_one(&mut *tx)
                .await
                .context("look for the schema")?;
        // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the
        // database even when the schema is there, and an administrator may have made it for a
        // role without that privilege.
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {s}")))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("create schema {s}"))?;
        }
        if s != "public" {
            move_from_public(&mut tx, schema).await?;
        }
        tx.commit().await.context("commit the schema")?;
        Ok(())
    }
}

/// Whether a relation of that (qualified) name exists.
async fn relation_exists(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(&mut **tx)
        .await
        .with_context(|| format!("look for {name}"))
}

/// Earlier versions kept their tables in `public`. When `schema` has no migrations yet and
/// `public._sqlx_migrations` records AuditFlow's (every row one of the embedded migrations,
/// by version and description), every table of AuditFlow's in `public` moves into `schema`.
/// A `public._sqlx_migrations` of another application's is left alone, with a warning.
async fn move_from_public(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    schema: &PgSchema,
) -> anyhow::Result<()> {
    let s = schema.as_str();
    if relation_exists(tx, &format!("{s}._sqlx_migrations")).await?
        || !relation_exists(tx, "public._sqlx_migrations").await?
    {
        return Ok(());
    }
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM public._sqlx_migrations ORDER BY version")
            .fetch_all(&mut **tx)
            .await
            .context("read public._sqlx_migrations")?;
    let ours = !applied.is_empty()
        && applied.iter().all(|(version, description)| {
            MIGRATOR.iter().any(|m| m.version == *version && m.description == *description)
        });
    if !ours {
        tracing::warn!(
            schema = s,
            migrations = applied.len(),
            "public._sqlx_migrations does not record AuditFlow's migrations: nothing moved from \
             public"
        );
        return Ok(());
    }
    let mut moved = 0;
    for table in TABLES {
        if relation_exists(tx, &format!("public.{table}")).await? {
            sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE public.{table} SET SCHEMA {s}")))
                .execute(&mut **tx)
                .await
                .with_context(|| format!("move public.{table} into schema {s}"))?;
            moved += 1;
        }
    }
    tracing::info!(
        schema = s,
        tables = moved,
        "moved AuditFlow's tables from public into its schema"
    );
    Ok(())
}

impl PgStore {
    /// The tables' size shrinks only after a VACUUM (and their files not even then):
    /// autovacuum makes deleted rows' space reusable, so the size stops growing instead.
    const SIZE_FOLLOWS_DELETES: bool = false;

    /// Ends a subquery the planner must not pull up (the statistics query).
    const FENCE: &str = "OFFSET 0";

    /// PostgreSQL hashes the window's rows into their buckets in one pass.
    const STATS_PER_BUCKET: bool = false;

    /// A text search looks among this many newest alerts of the list first (store/sql.rs).
    const TEXT_WINDOW: Option<i64> = Some(20_000);

    /// The tables of the schema, with their indexes and TOAST: not the database's size, which
    /// would count a legacy table beside them that retention can never shrink.
    async fn backend_live_bytes(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
        )
        .fetch_one(&self.read)
        .await
        .context("store size")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_is_a_plain_identifier() {
        for good in ["auditflow", "_x", "af_2", &"a".repeat(63)] {
            assert_eq!(good.parse::<PgSchema>().unwrap().as_str(), good);
        }
        for bad in ["", "Auditflow", "2af", "af-x", "a.b", "a b", "\"x\"", "pg_x", &"a".repeat(64)]
        {
            assert!(bad.parse::<PgSchema>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_migration_creates_only_what_the_move_knows() {
        // A table a migration creates and TABLES lacks would stay behind in public when an
        // earlier layout moves; so would a type, a function or a free-standing sequence.
        for m in MIGRATOR.iter() {
            for line in m.sql.as_str().lines() {
                let line = line.trim_start().to_ascii_lowercase();
                if let Some(rest) = line.strip_prefix("create table if not exists ") {
                    let name = rest.split([' ', '(']).next().unwrap_or_default();
                    assert!(TABLES.contains(&name), "{}: {name} is not in TABLES", m.description);
                } else if line.starts_with("create ") {
                    let known = ["create index ", "create unique index ", "create extension "];
                    assert!(
                        known.iter().any(|k| line.starts_with(k)),
                        "{}: `{line}` creates something the move does not know",
                        m.description
                    );
                }
            }
        }
    }
}
