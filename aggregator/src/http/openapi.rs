//! The OpenAPI 3.1 document, built from the route list ([`super::routes`]) and the schemas
//! below, and served at `/api/v1/openapi.json`.

use axum::Json;
use serde_json::{Map, Value, json};

use super::routes;

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Malformed parameters or body.",
        401 => "No or unknown bearer token (webhooks: wrong or missing signature).",
        403 => "The token's role is too low.",
        404 => "Not found.",
        409 => "Not possible in the current state.",
        408 => "The body did not arrive in time.",
        413 => "Body too large.",
        429 => {
            "Too many wrong tokens from this address (see Retry-After), or too many live streams for this token."
        }
        503 => "Busy; retry.",
        _ => "Error.",
    }
}

fn schemas() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let alert_props = json!({
        "id": {"type": "string", "format": "uuid"},
        "fingerprint": {"type": "string"},
        "rule_id": {"type": "string"},
        "rule_name": {"type": "string"},
        "rule_description": {"type": "string"},
        "severity": {"enum": ["INFO", "WARNING", "CRITICAL"]},
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "node": {"type": "string"},
        "group": {"type": "object", "additionalProperties": {"type": "string"}},
        "status": {"enum": ["open", "acknowledged", "resolved"]},
        "occurrences": {"type": "integer"},
        "first_seen": time, "last_seen": time, "created_at": time, "updated_at": time,
        "correlation_id": {"type": "string", "format": "uuid"},
        "remediation": {"type": ["string", "null"]},
        "playbook_url": {"type": ["string", "null"]},
        "silenced": {"type": "boolean"},
        "raw_event": {"type": "object", "description": "The first triggering event, legacy JSON."}
    });
    json!({
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"}}},
        "Object": {"type": "object"},
        "Alert": {"type": "object", "properties": alert_props},
        "AlertPage": {"type": "object", "properties": {
            "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}},
            "next_cursor": {"type": ["string", "null"]}}},
        "AlertDetail": {"allOf": [{"$ref": "#/components/schemas/Alert"}, {"type": "object", "properties": {
            "evidence": {"type": "array", "items": {"type": "object"}},
            "history": {"type": "array", "items": {"type": "object", "properties": {
                "at": time, "actor": {"type": "string"}, "action": {"type": "string"},
                "from_status": {"type": "string"}, "to_status": {"type": "string"},
                "comment": {"type": "string"}}}},
            "deliveries": {"type": "array", "items": {"type": "object", "properties": {
                "channel": {"type": "string"},
                "state": {"enum": ["pending", "delivered", "failed", "skipped"]},
                "attempts": {"type": "integer"}, "last_error": {"type": ["string", "null"]},
                "delivered_at": {"type": ["string", "null"]}}}}}}]},
        "Evidence": {"type": "object", "properties": {
            "firings": {"type": "array", "items": {"type": "object", "properties": {
                "firing_id": {"type": "string", "format": "uuid"}, "ts": time,
                "node": {"type": "string"}, "event_id": {"type": "string", "format": "uuid"},
                "count": {"type": "integer"},
                "events": {"type": "array", "items": {"type": "object"},
                    "description": "Oldest first, in the form GET /api/v1/events gives."},
                "left_out": {"type": "integer", "description": "Matching events in the window not shown."},
                "archived": {"type": "boolean", "description": "Whether the archive still held the triggering event."},
                "truncated": {"type": "boolean"}, "rows_unreadable": {"type": "integer"}}}},
            "firings_left_out": {"type": "integer"},
            "window_ms": {"type": "integer"}}},
        "Backtest": {"type": "object", "properties": {
            "since": {"type": "string", "description": "How far back, like 24h or 7d (default 24h, at most 31d)."},
            "rules": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Candidate rule files, name to TOML text; none: the rules in force."}}},
        "BacktestReport": {"type": "object", "properties": {
            "from": time, "to": time, "events": {"type": "integer"},
            "rows_unreadable": {"type": "integer"}, "truncated": {"type": "boolean"},
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "rule_id": {"type": "string"}, "name": {"type": "string"},
                "mode": {"enum": ["alert", "shadow"]}, "firings": {"type": "integer"},
                "groups": {"type": "integer"}, "examples": {"type": "array", "items": {"type": "object"}},
                "in_force": {"type": ["integer", "null"]}}}},
            "only_in_force": {"type": "array", "items": {"type": "array"}}}},
        "Comment": {"type": "object", "properties": {"comment": {"type": "string", "maxLength": 2000}}},
        "Matcher": {"type": "object", "required": ["field", "value"], "properties": {
            "field": {"type": "string", "description": "rule_id, node, severity or group.NAME"},
            "value": {"type": "string", "description": "Exact value; a trailing * matches a prefix."}}},
        "NewSilence": {"type": "object", "required": ["matchers"], "properties": {
            "matchers": {"type": "array", "items": {"$ref": "#/components/schemas/Matcher"}},
            "comment": {"type": "string"},
            "duration": {"type": "string", "description": "Like 2h; or give expires_at."},
            "expires_at": time}},
        "Silence": {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"},
            "matchers": {"type": "array", "items": {"$ref": "#/components/schemas/Matcher"}},
            "comment": {"type": "string"}, "created_by": {"type": "string"},
            "created_at": time, "expires_at": time}},
        "Silences": {"type": "object", "properties": {
            "silences": {"type": "array", "items": {"$ref": "#/components/schemas/Silence"}}}},
        "Rules": {"type": "object", "properties": {
            "version": {"type": "string"}, "last_error": {"type": ["string", "null"]},
            "source": {"enum": ["directory", "shipped"]},
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "kind": {"type": "string"},
                "severity": {"type": "string"}, "mode": {"enum": ["alert", "shadow"]},
                "firings": {"type": "integer"}, "last_fired": {"type": ["string", "null"]},
                "shadow": {"type": ["object", "null"], "description": "A shadow rule's firings counted live by this process since it started: firings, groups, examples [time, node, title], last_fired."}}}}}},
        "RuleTest": {"type": "object", "required": ["event"], "properties": {
            "event": {"type": "object", "description": "Legacy JSON, or the rule-test form (with `kind`)."}}},
        "RuleTestResult": {"type": "object", "properties": {
            "event": {"type": "object"},
            "matched": {"type": "array", "items": {"type": "string"}},
            "fired": {"type": "array", "items": {"type": "object"}}}},
        "Agents": {"type": "object", "properties": {
            "silent_after_secs": {"type": "integer"},
            "agents": {"type": "array", "items": {"type": "object", "properties": {
                "node": {"type": "string"}, "version": {"type": "string"},
                "last_seen": time, "events_per_s": {"type": "number"},
                "spool_bytes": {"type": "integer"}, "dropped": {"type": "integer"},
                "state": {"enum": ["ok", "silent"]}, "dropping": {"type": "boolean"}}}}}},
        "Channels": {"type": "object", "properties": {
            "channels": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "kind": {"type": "string"},
                "receiver": {"type": "string", "description": "scheme and host only: a URL's path may be a secret"},
                "state": {"enum": ["ok", "failing"]},
                "pending": {"type": "integer"}, "failed": {"type": "integer"}, "delivered": {"type": "integer"},
                "last_delivered_at": {"type": ["string", "null"]}, "last_error": {"type": ["string", "null"]}}}}}},
        "Stats": {"type": "object", "properties": {
            "from": time, "to": time, "bucket_secs": {"type": "integer"},
            "buckets": {"type": "array", "items": {"type": "object", "properties": {
                "start": time, "severity": {"type": "string"},
                "alerts": {"type": "integer"}, "firings": {"type": "integer"}}}},
            "counters": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "Events": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}, "maxItems": 1000}]},
        "EventsResult": {"type": "object", "properties": {
            "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
            "firings": {"type": "integer"}}},
        "Principal": {"type": "object", "properties": {
            "name": {"type": "string"}, "role": {"enum": ["viewer", "operator", "admin"]}}},
        "LegacyAlert": {"type": "object", "description": "The legacy AuditFlow alert row (design.md §8)."},
        "LegacyAlerts": {"type": "array", "items": {"$ref": "#/components/schemas/LegacyAlert"}},
        "WebhookPayload": {"type": "object", "description": "The provider's payload, as sent."}
    })
}

fn content(schema: &str) -> Value {
    match schema {
        "text" => json!({"text/plain": {"schema": {"type": "string"}}}),
        "event-stream" => json!({"text/event-stream": {"schema": {"type": "string"}}}),
        "ndjson" => json!({"application/x-ndjson": {"schema": {"type": "string",
            "description": "One archived event per line (the rule-test form: kind and the fields rules name, with id, ts and node); the last line is {\"summary\": {returned, rows_read, events_scanned, rows_unreadable, truncated}}."}}}),
        name => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
        }
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (doc, _) in routes() {
        let mut op = Map::new();
        op.insert("summary".into(), doc.summary.into());
        op.insert("tags".into(), json!([doc.tag]));
        op.insert("operationId".into(), format!("{} {}", doc.method, doc.path).into());
        let params: Vec<Value> = doc
            .params
            .iter()
            .map(|(name, place, ty, description)| {
                json!({"name": name, "in": place, "required": *place == "path",
                       "description": description, "schema": {"type": ty}})
            })
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), params.into());
        }
        if let Some(body) = doc.body {
            op.insert("requestBody".into(), json!({"required": true, "content": content(body)}));
        }
        let mut responses = Map::new();
        responses
            .insert("200".into(), json!({"description": "OK", "content": content(doc.response)}));
        let mut errors: Vec<u16> = doc.errors.to_vec();
        match doc.role {
            Some(role) => {
                op.insert("security".into(), json!([{"bearer": []}]));
                op.insert("x-required-role".into(), role.as_str().into());
                errors.extend([401, 403, 429]);
            }
            None => {
                op.insert("security".into(), json!([]));
            }
        }
        errors.sort_unstable();
        errors.dedup();
        for status in errors {
            responses.insert(
                status.to_string(),
                json!({"description": error_description(status), "content": content("Error")}),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(doc.path.to_owned()).or_insert_with(|| json!({}));
        if let Some(item) = entry.as_object_mut() {
            item.insert(doc.method.into(), Value::Object(op));
        }
    }
    let open = |summary: &str, body: &str| {
        json!({"get": {"summary": summary, "tags": ["operations"], "security": [],
                       "responses": {"200": {"description": "OK", "content": content(body)}}}})
    };
    paths.insert("/api/v1/openapi.json".into(), open("This document", "Object"));
    paths.insert("/healthz".into(), open("Alive", "text"));
    paths.insert("/readyz".into(), open("Dependencies reachable (503 when not)", "text"));
    paths.insert("/metrics".into(), open("Prometheus metrics", "text"));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AuditFlow aggregator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Alerts, silences, rules, fleet and stats of AuditFlow. Authenticate with `Authorization: Bearer TOKEN`; roles are viewer < operator < admin. See docs/api.md.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": paths,
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}
