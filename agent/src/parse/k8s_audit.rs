//! Kubernetes API server audit log (JSON lines of `audit.k8s.io/v1` `Event`) → `K8sAudit`.
//!
//! One request is logged once per stage; only `ResponseComplete` and `Panic` produce an event,
//! so that a request counts once. Requests without an object (`/healthz`, `/version`) use their
//! URL as the resource.

use serde_json::Value as Json;
use wire::{Event, EventKind, Severity, Source, Timestamp, Value};

use super::LineKind;

/// Parses one line, appending an event for a completed request.
pub fn push_line(line: &str, out: &mut Vec<Event>) -> LineKind {
    let line = line.trim();
    if line.is_empty() {
        return LineKind::Known;
    }
    let Ok(v) = serde_json::from_str::<Json>(line) else { return LineKind::Unparsed };
    if v.get("kind").and_then(Json::as_str) != Some("Event")
        || !v
            .get("apiVersion")
            .and_then(Json::as_str)
            .is_some_and(|a| a.starts_with("audit.k8s.io/"))
    {
        return LineKind::Unparsed;
    }
    match v.get("stage").and_then(Json::as_str) {
        Some("ResponseComplete" | "Panic") => {}
        Some(_) => return LineKind::Known,
        None => return LineKind::Unparsed,
    }
    let text = |path: &[&str]| {
        let mut cur = &v;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_str().map(str::to_owned)
    };
    let strings = |key: &Json| -> Vec<String> {
        key.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let Some(verb) = text(&["verb"]) else { return LineKind::Unparsed };
    let ts = text(&["stageTimestamp"])
        .or_else(|| text(&["requestReceivedTimestamp"]))
        .and_then(|t| Timestamp::parse_rfc3339(&t));
    let Some(ts) = ts else { return LineKind::Unparsed };
    let resource =
        text(&["objectRef", "resource"]).or_else(|| text(&["requestURI"])).unwrap_or_default();
    let code = v
        .pointer("/responseStatus/code")
        .and_then(Json::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(0);
    let mut event = Event::new(
        ts,
        Source::K8sAudit,
        if code >= 400 || v.get("stage").and_then(Json::as_str) == Some("Panic") {
            Severity::Warning
        } else {
            Severity::Info
        },
        EventKind::K8sAudit {
            verb,
            resource,
            subresource: text(&["objectRef", "subresource"]),
            namespace: text(&["objectRef", "namespace"]),
            name: text(&["objectRef", "name"]),
            user: text(&["user", "username"]).unwrap_or_default(),
            groups: v.pointer("/user/groups").map(strings).unwrap_or_default(),
            source_ips: v.get("sourceIPs").map(strings).unwrap_or_default(),
            code,
        },
    );
    event.id = text(&["auditID"])
        .and_then(|id| wire::legacy::Uuid::try_parse(&id).ok())
        .map(|u| *u.as_bytes());
    if let Some(agent) = text(&["userAgent"]) {
        event.attrs.push(("user_agent".into(), Value::Str(agent)));
    }
    if let Some(uri) = text(&["requestURI"]) {
        event.attrs.push(("request_uri".into(), Value::Str(uri)));
    }
    // The role a (Cluster)RoleBinding grants, so a rule can spot cluster-admin grants (only
    // present at the RequestResponse audit level, or Request for create).
    if let Some(role) = text(&["requestObject", "roleRef", "name"]) {
        event.attrs.push(("role_ref".into(), Value::Str(role)));
    }
    out.push(event);
    LineKind::Event
}
