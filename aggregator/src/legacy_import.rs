//! `auditflow-aggregator import-legacy` (design.md §8.7, docs/legacy.md): copies the legacy
//! notification service's alert history, its `alerts` table, into the store. Each legacy row
//! becomes one alert, mapped as the inverse of [`crate::legacy_alert::flat`] where the row
//! allows, so that the legacy read API serves an imported alert under the same id with the
//! same columns. Imported alerts are resolved and have no outbox rows: they are history, and
//! neither page anyone nor hold the fingerprint that new firings fold into. Idempotent: the
//! legacy `alert_id` is the alert's id and is recorded (`legacy_imports`), so a second run
//! finds every row present. A row that cannot be mapped is refused with its reason; it is
//! never dropped unseen.

use serde_json::{Map, Value};
use sqlx::types::Json;
use uuid::Uuid;
use wire::model::{Severity, Timestamp};

use crate::store::legacy::{LegacyRow, LegacyTable};
use crate::store::{Alert, HistoryEntry, Status, Store};

/// Legacy rows read, and stored in one transaction, at a time.
pub const PAGE: i64 = 1000;

/// Who the imported alerts' history entry names.
pub const ACTOR: &str = "import-legacy";

/// What an import did: every row read is imported, already present or refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Legacy rows read (and their pages committed).
    pub read: u64,
    /// Alerts stored.
    pub imported: u64,
    /// Rows whose `alert_id` was imported before, or is AuditFlow's own alert or firing.
    pub already_present: u64,
    /// Rows that could not be mapped.
    pub refused: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read={} imported={} already_present={} refused={}",
            self.read, self.imported, self.already_present, self.refused
        )
    }
}

/// A column's text, unless NULL or blank.
fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A string member of a JSON column, unless missing or blank.
fn member<'a>(v: &'a Option<Json<Value>>, key: &str) -> Option<&'a str> {
    v.as_ref()?.0.get(key)?.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// The alert a legacy row becomes (stored at `now`, Unix ms), or why it cannot become one.
///
/// * `alert_id` → `id`; `correlation_id` (else the event's `event_id`) → `correlation_id`;
/// * `timestamp` → `created_at` (the legacy read API's `timestamp`); the event's own
///   `timestamp` (else the same) → `first_seen`, `last_seen`;
/// * `severity`, case-insensitively `INFO`, `WARNING` or `CRITICAL`;
/// * `rule_id` (else `analysis_rule_details.rule_id`, else `LEGACY-<alert_type>`),
///   `rule_name` (else the details', else `alert_name`), the details' `rule_description`;
/// * `description` (else `alert_name`) → `title`;
/// * `server_hostname` (else the details', else the event's, else `legacy`) → `node`;
/// * group: `user` (`actor_id` of a `USER`), `host`, `path` (a `FILE`'s `resource_id`) or
///   `resource` (another resource's), `client_ip`;
/// * `metadata`'s `tags`, `remediation_guidance`, `playbook_url`;
/// * `raw_event_data` → `raw_event`;
/// * status `resolved`, one occurrence, `updated_at` now, fingerprint
///   `<rule id>/legacy/<alert_id>` (its own: a reopened imported alert collects no new
///   firings).
pub fn to_alert(row: &LegacyRow, now: i64) -> Result<Alert, String> {
    let created_at = row.ts_ms.ok_or("timestamp is not a finite time")?;
    let said = row.severity.as_deref().unwrap_or_default();
    let severity = Severity::parse(said.trim())
        .ok_or_else(|| format!("severity `{said}` is not INFO, WARNING or CRITICAL"))?;
    let raw_event = match &row.raw_event_data {
        Some(Json(event @ Value::Object(_))) => event.clone(),
        _ => return Err("raw_event_data is not a JSON object (the triggering event)".into()),
    };
    let event_str = |key: &str| raw_event.get(key).and_then(Value::as_str).map(str::trim);
    let correlation_id = row
        .correlation_id
        .or_else(|| event_str("event_id").and_then(|s| Uuid::try_parse(s).ok()))
        .ok_or("correlation_id is NULL and the event has no event_id")?;
    let rule_id =
        text(&row.rule_id).or_else(|| member(&row.analysis_rule_details, "rule_id")).map_or_else(
            || format!("LEGACY-{}", text(&row.alert_type).unwrap_or("ALERT").to_ascii_uppercase()),
            str::to_owned,
        );
    let alert_name = text(&row.alert_name);
    let rule_name = text(&row.rule_name)
        .or_else(|| member(&row.analysis_rule_details, "rule_name"))
        .or(alert_name)
        .unwrap_or(&rule_id)
        .to_owned();
    let title = text(&row.description).or(alert_name).unwrap_or(&rule_name).to_owned();
    let host = text(&row.server_hostname)
        .or_else(|| member(&row.impacted_resource_details, "server_hostname"))
        .or_else(|| event_str("server_hostname").filter(|s| !s.is_empty()));
    let mut group = Map::new();
    let is = |v: &Option<String>, want: &str| text(v).is_some_and(|t| t.eq_ignore_ascii_case(want));
    if let Some(user) =
        text(&row.actor_id).filter(|u| is(&row.actor_type, "USER") && *u != "unknown")
    {
        group.insert("user".into(), user.into());
    }
    if let Some(h) = host {
        group.insert("host".into(), h.into());
    }
    if let Some(r) = text(&row.resource_id) {
        if is(&row.resource_type, "FILE") {
            group.insert("path".into(), r.into());
        } else if !is(&row.resource_type, "SERVER") {
            group.insert("resource".into(), r.into());
        }
    }
    if let Some(ip) = text(&row.client_ip) {
        group.insert("client_ip".into(), ip.into());
    }
    let seen = event_str("timestamp")
        .and_then(Timestamp::parse_rfc3339)
        .map_or(created_at, |t| t.as_nanos().div_euclid(1_000_000));
    let metadata = row.metadata.as_ref().map(|m| &m.0);
    let meta_str =
        |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_owned);
    let tags = metadata
        .and_then(|m| m.get("tags"))
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Alert {
        id: row.alert_id,
        fingerprint: format!("{rule_id}/legacy/{}", row.alert_id),
        rule_description: member(&row.analysis_rule_details, "rule_description")
            .unwrap_or_default()
            .to_owned(),
        rule_id,
        rule_name,
        severity: severity.as_legacy().to_owned(),
        title,
        tags,
        node: host.unwrap_or("legacy").to_owned(),
        group,
        status: Status::Resolved,
        occurrences: 1,
        first_seen: seen,
        last_seen: seen,
        created_at,
        updated_at: now,
        correlation_id,
        remediation: meta_str("remediation_guidance"),
        playbook_url: meta_str("playbook_url"),
        silenced: false,
        raw_event,
    })
}

/// The lifecycle entry every imported alert gets: resolved on import, by [`ACTOR`].
pub fn note(now: i64) -> HistoryEntry {
    HistoryEntry {
        at: now,
        actor: ACTOR.into(),
        action: "resolve".into(),
        from_status: "open".into(),
        to_status: "resolved".into(),
        comment: "imported from the legacy notification service's alerts table; resolved on \
                  import and not announced"
            .into(),
    }
}

/// Copies every row of `table` into `store`, [`PAGE`] rows at a time, each page in one
/// transaction. `summary` counts the committed pages, so it is right when this fails
/// part-way (a second run goes on from there: what is in is already present). Each refused
/// row goes to `refused` with its `alert_id` and reason; `progress` sees the summary after
/// each page.
pub async fn run(
    table: &LegacyTable,
    store: &dyn Store,
    summary: &mut Summary,
    refused: &mut dyn FnMut(Uuid, &str),
    progress: &mut dyn FnMut(&Summary),
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let rows = table.page(after, PAGE).await?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = Some(last.alert_id);
        let now = crate::store::now_ms();
        let mut alerts = Vec::with_capacity(rows.len());
        let mut refusals = Vec::new();
        for row in &rows {
            match to_alert(row, now) {
                Ok(a) => alerts.push(a),
                Err(why) => refusals.push((row.alert_id, why)),
            }
        }
        let stored = store.import_alerts(&alerts, &note(now)).await?;
        for (id, why) in &refusals {
            refused(*id, why);
        }
        summary.read += rows.len() as u64;
        summary.refused += refusals.len() as u64;
        summary.imported += stored as u64;
        summary.already_present += (alerts.len() - stored) as u64;
        progress(summary);
        if (rows.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_790_000_000_000;
    /// 2025-07-20T11:30:00Z, when the legacy analysis service published the alert.
    const PUBLISHED: i64 = 1_753_011_000_000;

    /// The row the legacy notification service stored for the legacy analysis service's
    /// ANLY-SEC-001 message about the legacy generator's failed login.
    fn generator_row() -> LegacyRow {
        let j = |v: Value| Some(Json(v));
        let s = |v: &str| Some(v.to_owned());
        LegacyRow {
            alert_id: Uuid::from_u128(0x5b0c_0000_0000_4000_8000_0000_0000_0001),
            correlation_id: Some(Uuid::from_u128(0xc0e1_0000_0000_4000_8000_0000_0000_0002)),
            ts_ms: Some(PUBLISHED),
            alert_name: s("Multiple Failed Login Attempts"),
            alert_type: s("SECURITY"),
            severity: s("CRITICAL"),
            description: s("3 or more failed login attempts for user 'attacker_bob' on \
                 'prod-web-01' within 60 seconds."),
            rule_id: s("ANLY-SEC-001"),
            rule_name: s("Failed Login Burst Detection"),
            actor_type: s("USER"),
            actor_id: s("attacker_bob"),
            client_ip: None,
            resource_type: s("SERVER"),
            resource_id: s("prod-web-01"),
            server_hostname: s("prod-web-01"),
            analysis_rule_details: j(json!({
                "rule_id": "ANLY-SEC-001",
                "rule_name": "Failed Login Burst Detection",
                "rule_description": "Detects 3 failed logins within 60 seconds.",
            })),
            impacted_resource_details: j(json!({
                "resource_type": "SERVER", "resource_id": "prod-web-01",
                "server_hostname": "prod-web-01",
            })),
            metadata: j(json!({
                "tags": ["brute-force", "authentication", "critical"],
                "environment": "pilab",
                "remediation_guidance": "Investigate user account activity, check for \
                     suspicious IP origins, consider temporary lockout.",
                "playbook_url": "https://example.com/playbooks/failed_login_burst",
            })),
            raw_event_data: j(json!({
                "event_id": "c0e10000-0000-4000-8000-000000000002",
                "timestamp": "2025-07-20T11:29:59.500000Z",
                "source_service": "audit-event-generator",
                "server_hostname": "prod-web-01",
                "event_type": "user_login",
                "severity": "WARNING",
                "user_id": "attacker_bob",
                "action_result": "FAILURE",
                "details": {"reason": "Incorrect password", "ip_address": "192.168.1.150"}
            })),
        }
    }

    #[test]
    fn the_legacy_read_api_serves_an_imported_row_as_the_legacy_service_did() {
        let row = generator_row();
        let a = to_alert(&row, NOW).unwrap();
        let served = crate::legacy_alert::flat(&a, "pilab");
        let said = |v: &Option<String>| json!(v.as_deref().unwrap());
        let expected = [
            ("alert_id", json!(row.alert_id.to_string())),
            ("correlation_id", json!(row.correlation_id.unwrap().to_string())),
            ("timestamp", json!("2025-07-20 11:30:00+00:00")),
            ("alert_name", said(&row.alert_name)),
            ("alert_type", said(&row.alert_type)),
            ("severity", said(&row.severity)),
            ("description", said(&row.description)),
            ("source_service_name", json!("audit-event-generator")),
            ("rule_id", said(&row.rule_id)),
            ("rule_name", said(&row.rule_name)),
            ("actor_type", said(&row.actor_type)),
            ("actor_id", said(&row.actor_id)),
            ("resource_type", said(&row.resource_type)),
            ("resource_id", said(&row.resource_id)),
            ("server_hostname", said(&row.server_hostname)),
            ("action_observed", json!("LOGIN_FAILURE")),
            ("analysis_rule_details", row.analysis_rule_details.clone().unwrap().0),
            ("impacted_resource_details", row.impacted_resource_details.clone().unwrap().0),
            ("metadata", row.metadata.clone().unwrap().0),
            ("raw_event_data", row.raw_event_data.clone().unwrap().0),
        ];
        for (key, want) in expected {
            assert_eq!(served[key], want, "{key}");
        }
        // AuditFlow's own fields: history, in event time, grouped as the rule groups.
        assert_eq!((a.status, a.occurrences, a.updated_at), (Status::Resolved, 1, NOW));
        assert_eq!((a.first_seen, a.last_seen), (PUBLISHED - 500, PUBLISHED - 500));
        assert_eq!(a.created_at, PUBLISHED);
        assert_eq!(a.fingerprint, format!("ANLY-SEC-001/legacy/{}", row.alert_id));
        assert_eq!(a.node, "prod-web-01");
        assert_eq!(
            a.group,
            json!({"user": "attacker_bob", "host": "prod-web-01"}).as_object().unwrap().clone()
        );
        assert_eq!(a.tags, ["brute-force", "authentication", "critical"]);
    }

    #[test]
    fn sparse_rows_take_what_they_have() {
        let row = LegacyRow {
            alert_id: Uuid::from_u128(7),
            correlation_id: None,
            ts_ms: Some(PUBLISHED),
            alert_name: Some("Odd one".into()),
            alert_type: Some("security".into()),
            severity: Some(" warning ".into()),
            actor_type: Some("SYSTEM".into()),
            actor_id: Some("unknown".into()),
            client_ip: Some("2001:db8::7".into()),
            resource_type: Some("FILE".into()),
            resource_id: Some("/etc/shadow".into()),
            raw_event_data: Some(Json(json!({
                "event_id": "00000000-0000-4000-8000-000000000009",
                "timestamp": "not a time",
            }))),
            ..Default::default()
        };
        let a = to_alert(&row, NOW).unwrap();
        assert_eq!((a.rule_id.as_str(), a.rule_name.as_str()), ("LEGACY-SECURITY", "Odd one"));
        assert_eq!((a.title.as_str(), a.severity.as_str()), ("Odd one", "WARNING"));
        assert_eq!((a.node.as_str(), a.first_seen), ("legacy", PUBLISHED));
        assert_eq!(a.correlation_id, Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0009));
        assert_eq!(
            Value::Object(a.group),
            json!({"path": "/etc/shadow", "client_ip": "2001:db8::7"})
        );
        assert!(a.tags.is_empty() && a.remediation.is_none() && a.rule_description.is_empty());
    }

    #[test]
    fn rows_that_cannot_be_mapped_are_refused_with_the_reason() {
        let with = |f: &dyn Fn(&mut LegacyRow)| {
            let mut row = generator_row();
            f(&mut row);
            to_alert(&row, NOW).unwrap_err()
        };
        assert_eq!(
            with(&|r| r.severity = Some("HIGH".into())),
            "severity `HIGH` is not INFO, WARNING or CRITICAL"
        );
        assert_eq!(with(&|r| r.severity = None), "severity `` is not INFO, WARNING or CRITICAL");
        assert_eq!(with(&|r| r.ts_ms = None), "timestamp is not a finite time");
        assert!(with(&|r| r.raw_event_data = Some(Json(Value::Null))).contains("raw_event_data"));
        assert!(with(&|r| r.raw_event_data = None).contains("raw_event_data"));
        let no_ids = with(&|r| {
            r.correlation_id = None;
            r.raw_event_data = Some(Json(json!({})));
        });
        assert!(no_ids.contains("correlation_id"), "{no_ids}");
    }

    #[test]
    fn the_summary_line_names_every_count() {
        let s = Summary { read: 7, imported: 3, already_present: 2, refused: 2 };
        assert_eq!(s.to_string(), "read=7 imported=3 already_present=2 refused=2");
    }
}
