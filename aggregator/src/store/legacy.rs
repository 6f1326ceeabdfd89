//! Reads the legacy notification service's `alerts` table (design.md §8.7), for
//! `auditflow-aggregator import-legacy` (`crate::legacy_import`): in pages in the order of its
//! primary key, `alert_id`, so that a table of any size is read with bounded memory and each
//! page is found through the key's index.

use anyhow::Context;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use uuid::Uuid;

use super::postgres::PgSchema;

/// The 23 columns of the legacy table, which a table must have to be read as one.
const COLUMNS: &str = "alert_id, correlation_id, timestamp, received_at, alert_name, alert_type, \
     severity, description, source_service_name, rule_id, rule_name, actor_type, actor_id, \
     client_ip, resource_type, resource_id, server_hostname, action_observed, \
     analysis_rule_details, triggered_by_details, impacted_resource_details, metadata, \
     raw_event_data";

/// What an import reads of each row, in [`LegacyRow`]'s order. Times become Unix ms (an
/// infinite one NULL), the address its text without a netmask.
const READ: &str = "alert_id, correlation_id,
     CASE WHEN isfinite(timestamp)
         THEN CAST(floor(extract(epoch FROM timestamp) * 1000) AS BIGINT) END AS ts_ms,
     alert_name, alert_type, severity, description, rule_id, rule_name, actor_type, actor_id,
     host(client_ip) AS client_ip, resource_type, resource_id, server_hostname,
     analysis_rule_details, impacted_resource_details, metadata, raw_event_data";

/// One row of the legacy `alerts` table, as far as an import uses it. Every column is
/// optional here, even those the legacy table declares `NOT NULL`, so that a row that breaks
/// the layout is refused by the mapping, with a reason, rather than failing the read.
#[derive(Clone, Debug, Default, PartialEq, sqlx::FromRow)]
pub struct LegacyRow {
    /// The primary key.
    pub alert_id: Uuid,
    /// The triggering event's id.
    pub correlation_id: Option<Uuid>,
    /// `timestamp` (when the analysis service published the alert), Unix ms; `None` when it
    /// is not a finite time.
    pub ts_ms: Option<i64>,
    /// The alert's name (`Multiple Failed Login Attempts`).
    pub alert_name: Option<String>,
    /// `SECURITY` from the legacy analysis service.
    pub alert_type: Option<String>,
    /// `INFO`, `WARNING`, `CRITICAL`, or whatever a producer wrote.
    pub severity: Option<String>,
    /// The alert's text.
    pub description: Option<String>,
    /// `analysis_rule.rule_id`.
    pub rule_id: Option<String>,
    /// `analysis_rule.rule_name`.
    pub rule_name: Option<String>,
    /// `USER` or `SYSTEM`.
    pub actor_type: Option<String>,
    /// The user, or `unknown`.
    pub actor_id: Option<String>,
    /// The client address (NULL where the message said `"N/A"`).
    pub client_ip: Option<String>,
    /// `SERVER`, `FILE`, …
    pub resource_type: Option<String>,
    /// The host, the file's path, …
    pub resource_id: Option<String>,
    /// The host.
    pub server_hostname: Option<String>,
    /// `{rule_id, rule_name, rule_description}`.
    pub analysis_rule_details: Option<Json<serde_json::Value>>,
    /// `{resource_type, resource_id, server_hostname}`.
    pub impacted_resource_details: Option<Json<serde_json::Value>>,
    /// `{tags, environment, remediation_guidance, playbook_url}`.
    pub metadata: Option<Json<serde_json::Value>>,
    /// The triggering event, legacy JSON.
    pub raw_event_data: Option<Json<serde_json::Value>>,
}

/// The legacy table, connected.
#[derive(Debug)]
pub struct LegacyTable {
    pool: PgPool,
    /// The table's qualified name as the server quotes it (`public.alerts`): written into
    /// the statements, and shown to the operator.
    pub name: String,
}

/// `name` or `schema.name`, each part an unquoted SQL identifier (PostgreSQL folds it to lower
/// case, as it does in any statement).
fn valid_table_name(name: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    match name.split_once('.') {
        Some((schema, table)) => part(schema) && part(table),
        None => part(name),
    }
}

impl LegacyTable {
    /// Connects to the legacy database at `url` and finds the table: `table` (`name` or
    /// `schema.name`) or, by default, the first `alerts` on the connection's search path
    /// outside AuditFlow's own schema `ours` (a role named like that schema finds it first on
    /// PostgreSQL's default search path, `"$user", public`). Fails unless the table has the
    /// legacy table's 23 columns.
    pub async fn open(url: &str, table: Option<&str>, ours: &PgSchema) -> anyhow::Result<Self> {
        if let Some(t) = table {
            anyhow::ensure!(
                valid_table_name(t),
                "--table `{t}`: expected NAME or SCHEMA.NAME, each a plain SQL identifier"
            );
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .context("connect to the legacy database")?;
        let found: Option<String> = match table {
            Some(t) => sqlx::query_scalar(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = to_regclass($1)",
            )
            .bind(t)
            .fetch_optional(&pool)
            .await
            .context("look for the legacy table")?,
            None => sqlx::query_scalar(
                "SELECT format('%I.%I', n.nspname, c.relname)
                 FROM unnest(current_schemas(false)) WITH ORDINALITY AS p (nspname, pos)
                     JOIN pg_namespace n ON n.nspname = p.nspname
                     JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'alerts'
                 WHERE p.nspname <> $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                 ORDER BY p.pos LIMIT 1",
            )
            .bind(ours.as_str())
            .fetch_optional(&pool)
            .await
            .context("look for the legacy table")?,
        };
        let name = found.with_context(|| match table {
            Some(t) => format!("the legacy database has no table `{t}`"),
            None => format!(
                "the legacy database has no table `alerts` on its search path (outside schema \
                 {ours}); name it with --table SCHEMA.NAME"
            ),
        })?;
        // The names were quoted by the server from its own catalog.
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM {name} LIMIT 0")))
            .execute(&pool)
            .await
            .with_context(|| {
                format!(
                    "{name} is not laid out as the legacy notification service's `alerts` table"
                )
            })?;
        Ok(Self { pool, name })
    }

    /// At most `limit` rows after `after` (by `alert_id`), in `alert_id` order.
    pub async fn page(&self, after: Option<Uuid>, limit: i64) -> anyhow::Result<Vec<LegacyRow>> {
        let name = &self.name;
        let rows = match after {
            None => {
                let sql = format!("SELECT {READ} FROM {name} ORDER BY alert_id LIMIT $1");
                sqlx::query_as::<_, LegacyRow>(sqlx::AssertSqlSafe(sql))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Some(after) => {
                let sql = format!(
                    "SELECT {READ} FROM {name} WHERE alert_id > $1 ORDER BY alert_id LIMIT $2"
                );
                sqlx::query_as::<_, LegacyRow>(sqlx::AssertSqlSafe(sql))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
        };
        rows.with_context(|| format!("read {name}"))
    }

    /// Rows in the table (for the progress report).
    pub async fn count(&self) -> anyhow::Result<i64> {
        let sql = format!("SELECT count(*) FROM {}", self.name);
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("count the rows of {}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_named_by_plain_identifiers() {
        for good in ["alerts", "public.alerts", "Legacy_1.Alerts_2", "_x._y"] {
            assert!(valid_table_name(good), "{good}");
        }
        for bad in ["", ".", "a.", ".a", "a.b.c", "a-b", "a;drop", "\"a\"", "1a", "a b"] {
            assert!(!valid_table_name(bad), "{bad}");
        }
    }
}
