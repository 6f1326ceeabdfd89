//! Alerts in the legacy AuditFlow shapes (design.md §8): the nested JSON published to
//! `audit_alerts` and the flat rows of the legacy read API, with the legacy field names,
//! types, enumerations and wording (`actor_type` `USER`, `resource_type` `SERVER`/`FILE`,
//! `action_observed` `LOGIN_FAILURE`, the legacy rules' alert names and descriptions, the
//! client address or `"N/A"`, `metadata.environment` from `ENVIRONMENT`). Golden tests below
//! pin both shapes. The differences that remain are listed, with their reasons, in
//! docs/legacy.md.
//!
//! A message describes one firing: the alert's first (feed mode `alert`) or each one (feed
//! mode `firing`). The actor, client address and resource come from that firing's event.

use std::net::IpAddr;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::store::{Alert, rfc3339};

/// The legacy `source_service_name` of an alert whose event names no `source_service`.
pub const UNKNOWN_SOURCE: &str = "unknown-event-source";

/// The legacy `metadata.environment` when `ENVIRONMENT` is not set.
pub const DEFAULT_ENVIRONMENT: &str = "DEVELOPMENT";

/// The texts the legacy analysis service gave its two rules' alerts. Our rule pack keeps the
/// ids and rule names; its summaries and remediation are written for AuditFlow's own views,
/// so the legacy views take these instead.
struct LegacyTexts {
    alert_name: &'static str,
    rule_description: &'static str,
    tags: [&'static str; 3],
    remediation: &'static str,
    playbook_url: &'static str,
}

fn legacy_texts(rule_id: &str) -> Option<LegacyTexts> {
    match rule_id {
        "ANLY-SEC-001" => Some(LegacyTexts {
            alert_name: "Multiple Failed Login Attempts",
            rule_description: "Detects 3 failed logins within 60 seconds.",
            tags: ["brute-force", "authentication", "critical"],
            remediation: "Investigate user account activity, check for suspicious IP origins, \
                          consider temporary lockout.",
            playbook_url: "https://example.com/playbooks/failed_login_burst",
        }),
        "ANLY-SEC-002" => Some(LegacyTexts {
            alert_name: "Sensitive File Modification Detected",
            rule_description: "Detects modifications to predefined sensitive system files.",
            tags: ["data-integrity", "compliance", "critical-infrastructure"],
            remediation: "Verify integrity of the file, check for unauthorized access, restore \
                          from known good backup if compromised. Review user privileges.",
            playbook_url: "https://example.com/playbooks/sensitive_file_modified",
        }),
        _ => None,
    }
}

/// One legacy message's subject: an alert and one of its firings.
#[derive(Clone, Copy, Debug)]
pub struct Firing<'a> {
    /// The legacy `alert_id`: the alert's id for its first firing, the firing's own id
    /// otherwise (deterministic, so a redelivered message keeps its id and the legacy
    /// consumer's primary key drops the copy).
    pub id: Uuid,
    /// The triggering event's id (`correlation_id`).
    pub event_id: Uuid,
    /// The triggering event, legacy JSON (`raw_event_data`).
    pub event: &'a Value,
    /// When it was stored, Unix ms (`timestamp`).
    pub at: i64,
}

impl<'a> Firing<'a> {
    /// The alert's first firing.
    pub fn first(a: &'a Alert) -> Self {
        Self { id: a.id, event_id: a.correlation_id, event: &a.raw_event, at: a.created_at }
    }
}

/// The fields the legacy views derive from the event and the rule.
struct Parts<'a> {
    alert_name: String,
    description: String,
    rule_description: String,
    source_service: &'a str,
    actor_type: &'static str,
    actor_id: &'a str,
    client_ip: Option<IpAddr>,
    resource_type: String,
    resource_id: &'a str,
    server_hostname: &'a str,
    action_observed: String,
    tags: Vec<String>,
    remediation: Option<String>,
    playbook_url: Option<String>,
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `LOGIN_FAILURE`, `FILE_MODIFIED`, as the legacy rules named what they saw; other event
/// types by the same pattern (`SUDO_COMMAND_SUCCESS`, `K8S_AUDIT`).
fn action_observed(event_type: &str, result: Option<&str>) -> String {
    let upper = |s: &str| s.to_ascii_uppercase();
    match (event_type, result) {
        ("user_login", Some(r)) => format!("LOGIN_{}", upper(r)),
        ("file_modified", _) => "FILE_MODIFIED".to_owned(),
        (t, Some(r)) => format!("{}_{}", upper(t), upper(r)),
        (t, None) => upper(t),
    }
}

fn parts<'a>(a: &'a Alert, e: &'a Value) -> Parts<'a> {
    let event_type = str_at(e, &["event_type"]).unwrap_or("unknown");
    // The legacy service's defaults for a missing user or host.
    let user = str_at(e, &["user_id"]);
    let host = str_at(e, &["server_hostname"]).unwrap_or(&a.node);
    // The legacy service read only a top-level `client_ip`, which its own generator never
    // set, so every legacy alert said "N/A"; the address the event does carry is given.
    let client_ip = [&["client_ip"][..], &["details", "ip_address"], &["ip_address"]]
        .iter()
        .find_map(|p| str_at(e, p).and_then(|s| s.parse::<IpAddr>().ok()));
    let resource =
        [&["resource"][..], &["details", "resource"], &["details", "file_path"], &["file_path"]]
            .iter()
            .find_map(|p| str_at(e, p));
    let (resource_type, resource_id) = match (event_type, resource) {
        ("file_modified", Some(path)) => ("FILE", path),
        ("k8s_audit", Some(r)) => ("KUBERNETES_RESOURCE", r),
        ("git_event", _) => ("REPOSITORY", str_at(e, &["details", "repository"]).unwrap_or(host)),
        _ => ("SERVER", host),
    };
    let user_or_unknown = user.unwrap_or("unknown");
    let texts = legacy_texts(&a.rule_id);
    let description = match a.rule_id.as_str() {
        "ANLY-SEC-001" => format!(
            "3 or more failed login attempts for user '{user_or_unknown}' on '{host}' within 60 seconds."
        ),
        "ANLY-SEC-002" => format!(
            "Sensitive file '{}' modified by '{user_or_unknown}' on '{host}'.",
            resource.unwrap_or("")
        ),
        _ => a.title.clone(),
    };
    Parts {
        alert_name: texts.as_ref().map_or_else(|| a.rule_name.clone(), |t| t.alert_name.into()),
        description,
        rule_description: texts
            .as_ref()
            .map_or_else(|| a.rule_description.clone(), |t| t.rule_description.into()),
        source_service: str_at(e, &["source_service"]).unwrap_or(UNKNOWN_SOURCE),
        actor_type: if user.is_some() { "USER" } else { "SYSTEM" },
        actor_id: user_or_unknown,
        client_ip,
        resource_type: resource_type.to_owned(),
        resource_id,
        server_hostname: host,
        action_observed: action_observed(event_type, str_at(e, &["action_result"])),
        tags: texts
            .as_ref()
            .map_or_else(|| a.tags.clone(), |t| t.tags.iter().map(|&s| s.into()).collect()),
        remediation: texts
            .as_ref()
            .map_or_else(|| a.remediation.clone(), |t| Some(t.remediation.into())),
        playbook_url: texts
            .as_ref()
            .map_or_else(|| a.playbook_url.clone(), |t| Some(t.playbook_url.into())),
    }
}

/// `YYYY-MM-DD`, `HH:MM:SS` and the microseconds of a Unix-ms time.
fn civil(ms: i64) -> (String, String, i64) {
    let text = rfc3339(ms);
    (text[..10].to_owned(), text[11..19].to_owned(), ms.rem_euclid(1000) * 1000)
}

/// The legacy message `timestamp`: Python's `isoformat(timespec='seconds') + "Z"` of an aware
/// UTC time, offset and `Z` both (`2025-07-20T11:30:00+00:00Z`), which the legacy
/// notification service expects and strips.
pub fn message_timestamp(ms: i64) -> String {
    let (date, time, _) = civil(ms);
    format!("{date}T{time}+00:00Z")
}

/// A timestamp column as the legacy read API printed it (Python `str(datetime)`): a space
/// between date and time, microseconds only when there are any.
pub fn column_timestamp(ms: i64, with_fraction: bool) -> String {
    let (date, time, micros) = civil(ms);
    if with_fraction && micros != 0 {
        format!("{date} {time}.{micros:06}+00:00")
    } else {
        format!("{date} {time}+00:00")
    }
}

fn metadata(p: &Parts<'_>, environment: &str) -> Value {
    json!({
        "tags": p.tags,
        "environment": environment,
        "remediation_guidance": p.remediation,
        "playbook_url": p.playbook_url,
    })
}

/// What a feed message announces, in its `change` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedChange {
    /// A new alert (feed mode `alert`).
    Created,
    /// More firings folded into an alert already announced (feed mode `alert`); the legacy
    /// `alert_id` is the same, so a legacy consumer that keys on it keeps its first row.
    Updated,
    /// One firing (feed mode `firing`).
    Firing,
}

impl FeedChange {
    fn as_str(self) -> &'static str {
        match self {
            FeedChange::Created => "created",
            FeedChange::Updated => "updated",
            FeedChange::Firing => "firing",
        }
    }
}

/// The message published to `audit_alerts` for firing `f` of alert `a`: the legacy alert
/// schema, key for key in the legacy order, then AuditFlow's own fields under their own names
/// (a legacy consumer ignores them).
pub fn nested(a: &Alert, f: Firing<'_>, change: FeedChange, environment: &str) -> Value {
    let p = parts(a, f.event);
    let client_ip = p.client_ip.map_or_else(|| "N/A".to_owned(), |ip| ip.to_string());
    json!({
        "alert_id": f.id,
        "timestamp": message_timestamp(f.at),
        "alert_name": p.alert_name,
        "alert_type": "SECURITY",
        "severity": a.severity,
        "description": p.description,
        "source_service_name": p.source_service,
        "analysis_rule": {
            "rule_id": a.rule_id,
            "rule_name": a.rule_name,
            "rule_description": p.rule_description,
        },
        "triggered_by": {
            "actor_type": p.actor_type,
            "actor_id": p.actor_id,
            "client_ip": client_ip,
        },
        "impacted_resource": {
            "resource_type": p.resource_type,
            "resource_id": p.resource_id,
            "server_hostname": p.server_hostname,
        },
        "action_observed": p.action_observed,
        "correlation_id": f.event_id,
        "raw_event_data": f.event,
        "metadata": metadata(&p, environment),
        "change": change.as_str(),
        "auditflow_alert_id": a.id,
        "fingerprint": a.fingerprint,
        "status": a.status,
        "occurrences": a.occurrences,
        "first_seen": rfc3339(a.first_seen),
        "last_seen": rfc3339(a.last_seen),
        "node": a.node,
        "group": a.group,
    })
}

/// A row of the legacy read API (`GET /alerts`): the 23 columns of the legacy `alerts` table
/// as the legacy notification service returned them (`client_ip` an address or null, times in
/// Python's `str(datetime)` form), for the alert's first firing.
pub fn flat(a: &Alert, environment: &str) -> Value {
    let p = parts(a, &a.raw_event);
    let client_ip = p.client_ip.map_or(Value::Null, |ip| ip.to_string().into());
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("alert_id", a.id.to_string().into());
    put("correlation_id", a.correlation_id.to_string().into());
    // The legacy column held the message's timestamp, to the second.
    put("timestamp", column_timestamp(a.created_at, false).into());
    put("received_at", column_timestamp(a.created_at, true).into());
    put("alert_name", p.alert_name.clone().into());
    put("alert_type", "SECURITY".into());
    put("severity", a.severity.clone().into());
    put("description", p.description.clone().into());
    put("source_service_name", p.source_service.into());
    put("rule_id", a.rule_id.clone().into());
    put("rule_name", a.rule_name.clone().into());
    put("actor_type", p.actor_type.into());
    put("actor_id", p.actor_id.into());
    put("client_ip", client_ip);
    put("resource_type", p.resource_type.clone().into());
    put("resource_id", p.resource_id.into());
    put("server_hostname", p.server_hostname.into());
    put("action_observed", p.action_observed.clone().into());
    put(
        "analysis_rule_details",
        json!({"rule_id": a.rule_id, "rule_name": a.rule_name, "rule_description": p.rule_description}),
    );
    // The JSON column kept what the message said: "N/A" for no address.
    let said_ip = p.client_ip.map_or_else(|| "N/A".to_owned(), |ip| ip.to_string());
    put(
        "triggered_by_details",
        json!({"actor_type": p.actor_type, "actor_id": p.actor_id, "client_ip": said_ip}),
    );
    put(
        "impacted_resource_details",
        json!({
            "resource_type": p.resource_type,
            "resource_id": p.resource_id,
            "server_hostname": p.server_hostname,
        }),
    );
    put("metadata", metadata(&p, environment));
    put("raw_event_data", a.raw_event.clone());
    Value::Object(m)
}

/// Every key of a legacy read-API row, in order (tests check the shape against it).
pub const FLAT_KEYS: [&str; 23] = [
    "alert_id",
    "correlation_id",
    "timestamp",
    "received_at",
    "alert_name",
    "alert_type",
    "severity",
    "description",
    "source_service_name",
    "rule_id",
    "rule_name",
    "actor_type",
    "actor_id",
    "client_ip",
    "resource_type",
    "resource_id",
    "server_hostname",
    "action_observed",
    "analysis_rule_details",
    "triggered_by_details",
    "impacted_resource_details",
    "metadata",
    "raw_event_data",
];
