//! The PostgreSQL alert store (sqlx). Migrations in `aggregator/migrations` are applied at
//! start-up.

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Uuid as SqlUuid;
use sqlx::types::time::OffsetDateTime;

use super::{AlertSink, Committed, EVIDENCE_KEPT, evidence_json};
use crate::detect::Firing;

/// A PostgreSQL-backed store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

fn ts(t: wire::model::Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.as_nanos()))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn uuid(u: uuid::Uuid) -> SqlUuid {
    SqlUuid::from_bytes(*u.as_bytes())
}

impl PgStore {
    /// Connects and applies the migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .context("connect to PostgreSQL")?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::migrate!("./migrations").run(&self.pool).await.context("apply migrations")?;
        Ok(())
    }

    /// Checks that PostgreSQL answers (for `/readyz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool (tests read through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl AlertSink for PgStore {
    async fn commit(&self, firings: &[Firing]) -> anyhow::Result<Committed> {
        let mut out = Committed::default();
        if firings.is_empty() {
            return Ok(out);
        }
        let mut tx = self.pool.begin().await.context("begin")?;
        for f in firings {
            let event = evidence_json(f);
            let inserted = sqlx::query(
                "INSERT INTO firings (id, rule_id, fingerprint, ts, count, node, event_id, event)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(uuid(f.id))
            .bind(&f.rule_id)
            .bind(&f.fingerprint)
            .bind(ts(f.event.ts))
            .bind(i32::try_from(f.count).unwrap_or(i32::MAX))
            .bind(&f.node)
            .bind(uuid(f.event_id))
            .bind(&event)
            .execute(&mut *tx)
            .await
            .context("insert firing")?
            .rows_affected();
            if inserted == 0 {
                out.duplicates += 1;
                continue;
            }
            let group: serde_json::Map<String, serde_json::Value> =
                f.group.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            let (alert_id, created): (SqlUuid, bool) = sqlx::query_as(
                "INSERT INTO alerts (id, fingerprint, rule_id, rule_name, rule_description, severity,
                     title, tags, node, group_values, occurrences, first_seen, last_seen,
                     correlation_id, evidence, remediation, playbook_url)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11, $12,
                     jsonb_build_array($13::jsonb), $14, $15)
                 ON CONFLICT (fingerprint) WHERE status <> 'resolved' DO UPDATE SET
                     occurrences = alerts.occurrences + 1,
                     last_seen = GREATEST(alerts.last_seen, EXCLUDED.last_seen),
                     first_seen = LEAST(alerts.first_seen, EXCLUDED.first_seen),
                     title = EXCLUDED.title,
                     evidence = (SELECT COALESCE(jsonb_agg(e), '[]'::jsonb) FROM (
                         SELECT e FROM jsonb_array_elements(
                             jsonb_build_array($13::jsonb) || alerts.evidence) AS e
                         LIMIT $16) AS kept),
                     updated_at = now()
                 RETURNING id, (xmax = 0)",
            )
            .bind(uuid(f.id))
            .bind(&f.fingerprint)
            .bind(&f.rule_id)
            .bind(&f.rule_name)
            .bind(&f.rule_description)
            .bind(f.severity.as_legacy())
            .bind(&f.title)
            .bind(serde_json::json!(f.tags))
            .bind(&f.node)
            .bind(serde_json::Value::Object(group))
            .bind(ts(f.event.ts))
            .bind(uuid(f.event_id))
            .bind(&event)
            .bind(&f.remediation)
            .bind(&f.playbook_url)
            .bind(EVIDENCE_KEPT as i64)
            .fetch_one(&mut *tx)
            .await
            .context("upsert alert")?;
            sqlx::query("UPDATE firings SET alert_id = $1 WHERE id = $2")
                .bind(alert_id)
                .bind(uuid(f.id))
                .execute(&mut *tx)
                .await
                .context("link firing")?;
            if created {
                out.created += 1;
            } else {
                out.folded += 1;
            }
        }
        tx.commit().await.context("commit")?;
        Ok(out)
    }
}
