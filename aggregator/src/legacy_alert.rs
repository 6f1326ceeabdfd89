//! Alerts in the legacy AuditFlow shapes (design.md §8): the nested JSON published to
//! `audit_alerts` (every legacy field plus ours) and the flat rows of the legacy read API.
//! The actor, client address and resource come from the alert's first triggering event.

use serde_json::{Map, Value, json};

use crate::store::{Alert, rfc3339};

/// What the legacy services called the service that raised an alert.
pub const SOURCE_SERVICE: &str = "auditflow-aggregator";

/// The legacy `triggered_by`, `impacted_resource` and `action_observed` of an alert.
struct Parts {
    actor_type: &'static str,
    actor_id: Value,
    client_ip: Value,
    resource_type: &'static str,
    resource_id: Value,
    server_hostname: Value,
    action_observed: String,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn parts(a: &Alert) -> Parts {
    let e = &a.raw_event;
    let event_type = str_at(e, &["event_type"]).unwrap_or("unknown");
    let user = str_at(e, &["user_id"]);
    let host = str_at(e, &["server_hostname"]).unwrap_or(&a.node);
    let client_ip = str_at(e, &["details", "ip_address"]).or_else(|| str_at(e, &["ip_address"]));
    let resource = str_at(e, &["details", "resource"])
        .or_else(|| str_at(e, &["details", "file_path"]))
        .or_else(|| str_at(e, &["file_path"]));
    let (resource_type, resource_id) = match (event_type, resource) {
        ("file_modified", Some(path)) => ("file", path),
        ("k8s_audit", Some(r)) => ("kubernetes_resource", r),
        ("git_event", _) => ("repository", str_at(e, &["details", "repository"]).unwrap_or(host)),
        _ => ("host", host),
    };
    let action_observed = match str_at(e, &["action_result"]) {
        Some(result) => format!("{event_type}:{result}"),
        None => event_type.to_owned(),
    };
    Parts {
        actor_type: if user.is_some() { "user" } else { "system" },
        actor_id: user.map_or(Value::Null, Value::from),
        client_ip: client_ip.map_or(Value::Null, Value::from),
        resource_type,
        resource_id: resource_id.into(),
        server_hostname: host.into(),
        action_observed,
    }
}

fn metadata(a: &Alert) -> Value {
    json!({
        "tags": a.tags,
        "environment": "production",
        "remediation_guidance": a.remediation,
        "playbook_url": a.playbook_url,
    })
}

/// The message published to `audit_alerts`: the legacy alert schema plus AuditFlow's own
/// fields (`fingerprint`, `status`, `occurrences`, …) under their own names.
pub fn nested(a: &Alert) -> Value {
    let p = parts(a);
    json!({
        "alert_id": a.id,
        "timestamp": rfc3339(a.created_at),
        "alert_name": a.rule_name,
        "alert_type": "SECURITY",
        "severity": a.severity,
        "description": a.title,
        "source_service_name": SOURCE_SERVICE,
        "analysis_rule": {
            "rule_id": a.rule_id,
            "rule_name": a.rule_name,
            "rule_description": a.rule_description,
        },
        "triggered_by": {
            "actor_type": p.actor_type,
            "actor_id": p.actor_id,
            "client_ip": p.client_ip,
        },
        "impacted_resource": {
            "resource_type": p.resource_type,
            "resource_id": p.resource_id,
            "server_hostname": p.server_hostname,
        },
        "action_observed": p.action_observed,
        "correlation_id": a.correlation_id,
        "raw_event_data": a.raw_event,
        "metadata": metadata(a),
        "fingerprint": a.fingerprint,
        "status": a.status,
        "occurrences": a.occurrences,
        "first_seen": rfc3339(a.first_seen),
        "last_seen": rfc3339(a.last_seen),
        "node": a.node,
        "group": a.group,
    })
}

/// A row of the legacy read API (`GET /alerts`): the flat legacy columns.
pub fn flat(a: &Alert) -> Value {
    let p = parts(a);
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("alert_id", a.id.to_string().into());
    put("correlation_id", a.correlation_id.to_string().into());
    put("timestamp", rfc3339(a.created_at).into());
    put("received_at", rfc3339(a.created_at).into());
    put("alert_name", a.rule_name.clone().into());
    put("alert_type", "SECURITY".into());
    put("severity", a.severity.clone().into());
    put("description", a.title.clone().into());
    put("source_service_name", SOURCE_SERVICE.into());
    put("rule_id", a.rule_id.clone().into());
    put("rule_name", a.rule_name.clone().into());
    put("actor_type", p.actor_type.into());
    put("actor_id", p.actor_id.clone());
    put("client_ip", p.client_ip.clone());
    put("resource_type", p.resource_type.into());
    put("resource_id", p.resource_id.clone());
    put("server_hostname", p.server_hostname.clone());
    put("action_observed", p.action_observed.into());
    put(
        "analysis_rule_details",
        json!({"rule_id": a.rule_id, "rule_name": a.rule_name, "rule_description": a.rule_description}),
    );
    put(
        "triggered_by_details",
        json!({"actor_type": p.actor_type, "actor_id": p.actor_id, "client_ip": p.client_ip}),
    );
    put(
        "impacted_resource_details",
        json!({
            "resource_type": p.resource_type,
            "resource_id": p.resource_id,
            "server_hostname": p.server_hostname,
        }),
    );
    put("metadata", metadata(a));
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
