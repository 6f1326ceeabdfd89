//! The REST API under `/api/v1` (design.md §6) and the legacy read API (design.md §8).

mod agents;
mod alerts;
mod channels;
mod events;
mod legacy;
mod rules;
mod silences;
mod stats;
mod stream;

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::routing::MethodRouter;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use uuid::Uuid;
use wire::model::Timestamp;

use super::ApiError;
use super::ApiState;
use super::RouteDoc;
use super::auth::Principal;
use super::auth::Role;

/// Most alerts per page.
pub const MAX_PAGE: i64 = 500;
/// Most events per `POST /api/v1/events`.
pub const MAX_EVENTS: usize = 1000;
/// Longest comment on a lifecycle action or silence.
pub const MAX_COMMENT: usize = 2000;
/// Longest silence.
pub const MAX_SILENCE: Duration = Duration::from_secs(90 * 24 * 3600);

type ApiResult<T> = Result<T, ApiError>;
type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match body {
        Ok(Json(v)) => Ok(v),
        // A well-formed body of the wrong shape is a 400 like every other validation error
        // here (axum says 422).
        Err(e) if e.status() == axum::http::StatusCode::UNPROCESSABLE_ENTITY => {
            Err(ApiError::BadRequest(e.body_text()))
        }
        Err(e) => Err(ApiError::Status(e.status(), e.body_text())),
    }
}

/// Query parameters, each allowed key at most once; unknown keys are refused so that a typo
/// does not silently widen a filter.
fn params(q: Params, allowed: &[&str]) -> ApiResult<Vec<(String, String)>> {
    let pairs = unique_params(q)?;
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter `{k}` (allowed: {})",
            allowed.join(", ")
        )));
    }
    Ok(pairs)
}

/// Query parameters, each key at most once (for routes whose keys are open-ended and checked
/// by the route itself).
fn unique_params(q: Params) -> ApiResult<Vec<(String, String)>> {
    let Query(pairs) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(ApiError::BadRequest(format!("parameter `{k}` given twice")));
        }
    }
    Ok(pairs)
}

fn get_param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn time_param(pairs: &[(String, String)], key: &str) -> ApiResult<Option<i64>> {
    get_param(pairs, key)
        .map(|v| {
            Timestamp::parse_rfc3339(v).map(|t| t.as_nanos() / 1_000_000).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{key}` must be an RFC 3339 time like 2026-01-31T12:00:00Z"
                ))
            })
        })
        .transpose()
}

fn int_param(
    pairs: &[(String, String)],
    key: &str,
    default: i64,
    min: i64,
    max: i64,
) -> ApiResult<i64> {
    match get_param(pairs, key) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("`{key}` must be an integer from {min} to {max}"))
        }),
    }
}

fn alert_id(id: &str) -> ApiResult<Uuid> {
    Uuid::try_parse(id)
        .map_err(|_| ApiError::BadRequest(format!("`{id}` is not an alert id (a UUID)")))
}

async fn whoami(Extension(who): Extension<Principal>) -> Json<Principal> {
    Json(who)
}

const ID: (&str, &str, &str, &str) = ("id", "path", "string", "Alert id (UUID).");
const COMMENT_ERRORS: &[u16] = &[400, 404, 409, 413];

/// The API routes.
pub fn routes() -> Vec<(RouteDoc, MethodRouter<ApiState>)> {
    use Role::{Admin, Operator, Viewer};
    let doc = |method, path, role, summary, tag| RouteDoc {
        method,
        path,
        role: Some(role),
        summary,
        tag,
        params: &[],
        body: None,
        response: "Object",
        errors: &[],
    };
    vec![
        (
            RouteDoc {
                params: &[
                    ("status", "query", "string", "Comma-separated: open, acknowledged, resolved."),
                    ("severity", "query", "string", "Comma-separated: INFO, WARNING, CRITICAL."),
                    ("node", "query", "string", "Node name."),
                    ("rule", "query", "string", "Rule id."),
                    ("since", "query", "string", "last_seen at or after (RFC 3339)."),
                    ("until", "query", "string", "last_seen before (RFC 3339)."),
                    ("q", "query", "string", "Text in title, rule, node or group values."),
                    ("limit", "query", "integer", "Page size, 1 to 500 (default 50)."),
                    ("cursor", "query", "string", "next_cursor of the previous page."),
                ],
                response: "AlertPage",
                errors: &[400],
                ..doc(
                    "get",
                    "/api/v1/alerts",
                    Viewer,
                    "List alerts, newest last_seen first",
                    "alerts",
                )
            },
            get(alerts::list_alerts),
        ),
        (
            RouteDoc {
                params: &[ID],
                response: "AlertDetail",
                errors: &[400, 404],
                ..doc(
                    "get",
                    "/api/v1/alerts/{id}",
                    Viewer,
                    "An alert with evidence, history and deliveries",
                    "alerts",
                )
            },
            get(alerts::get_alert),
        ),
        (
            RouteDoc {
                params: &[ID],
                response: "Evidence",
                errors: &[400, 404],
                ..doc(
                    "get",
                    "/api/v1/alerts/{id}/evidence",
                    Viewer,
                    "The events that made the alert's newest firings, from the event archive",
                    "alerts",
                )
            },
            get(alerts::get_evidence),
        ),
        (
            RouteDoc {
                params: &[ID],
                body: Some("Comment"),
                response: "Alert",
                errors: COMMENT_ERRORS,
                ..doc(
                    "post",
                    "/api/v1/alerts/{id}/ack",
                    Operator,
                    "Acknowledge an open alert",
                    "alerts",
                )
            },
            post(alerts::acknowledge),
        ),
        (
            RouteDoc {
                params: &[ID],
                body: Some("Comment"),
                response: "Alert",
                errors: COMMENT_ERRORS,
                ..doc("post", "/api/v1/alerts/{id}/resolve", Operator, "Resolve an alert", "alerts")
            },
            post(alerts::resolve),
        ),
        (
            RouteDoc {
                params: &[ID],
                body: Some("Comment"),
                response: "Alert",
                errors: COMMENT_ERRORS,
                ..doc(
                    "post",
                    "/api/v1/alerts/{id}/reopen",
                    Operator,
                    "Reopen an acknowledged or resolved alert",
                    "alerts",
                )
            },
            post(alerts::reopen),
        ),
        (
            RouteDoc {
                params: &[("expired", "query", "boolean", "Include expired silences.")],
                response: "Silences",
                errors: &[400],
                ..doc("get", "/api/v1/silences", Viewer, "List silences", "silences")
            },
            get(silences::list_silences),
        ),
        (
            RouteDoc {
                body: Some("NewSilence"),
                response: "Silence",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/silences",
                    Operator,
                    "Silence notifications of matching new alerts",
                    "silences",
                )
            },
            post(silences::add_silence),
        ),
        (
            RouteDoc {
                params: &[("id", "path", "string", "Silence id (UUID).")],
                errors: &[400, 404],
                ..doc("delete", "/api/v1/silences/{id}", Operator, "End a silence now", "silences")
            },
            delete(silences::expire_silence),
        ),
        (
            RouteDoc {
                response: "Rules",
                ..doc(
                    "get",
                    "/api/v1/rules",
                    Viewer,
                    "Loaded rules with fire counts and the last reload error",
                    "rules",
                )
            },
            get(rules::list_rules),
        ),
        (
            RouteDoc {
                body: Some("RuleTest"),
                response: "RuleTestResult",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/rules/test",
                    Viewer,
                    "Which loaded rules an event matches",
                    "rules",
                )
            },
            post(rules::test_rules),
        ),
        (
            RouteDoc {
                body: Some("Backtest"),
                response: "BacktestReport",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/rules/backtest",
                    Operator,
                    "Replay the event archive through candidate rules (or the rules in force) and compare",
                    "rules",
                )
            },
            post(rules::backtest),
        ),
        (
            RouteDoc {
                errors: &[409],
                ..doc(
                    "post",
                    "/api/v1/rules/reload",
                    Admin,
                    "Re-read the rule directory now",
                    "rules",
                )
            },
            post(rules::reload_rules),
        ),
        (
            RouteDoc {
                response: "Agents",
                ..doc(
                    "get",
                    "/api/v1/agents",
                    Viewer,
                    "The fleet: every agent's heartbeat figures",
                    "fleet",
                )
            },
            get(agents::list_agents),
        ),
        (
            RouteDoc {
                response: "Channels",
                ..doc(
                    "get",
                    "/api/v1/channels",
                    Viewer,
                    "Notification channels: settings, deliveries pending and failed, the last delivery and error",
                    "notifications",
                )
            },
            get(channels::list_channels),
        ),
        (
            RouteDoc {
                params: &[("name", "path", "string", "The channel's name.")],
                errors: &[404, 502],
                ..doc(
                    "post",
                    "/api/v1/channels/{name}/test",
                    Admin,
                    "Send a test notification through a channel now",
                    "notifications",
                )
            },
            post(channels::test_channel),
        ),
        (
            RouteDoc {
                params: &[
                    ("from", "query", "string", "Start (RFC 3339; default 24 h before `to`)."),
                    ("to", "query", "string", "End (RFC 3339; default now)."),
                    ("bucket", "query", "string", "Bucket width like 5m or 1h (default 1h)."),
                ],
                response: "Stats",
                errors: &[400],
                ..doc(
                    "get",
                    "/api/v1/stats",
                    Viewer,
                    "Alerts per time bucket and severity, and counters",
                    "stats",
                )
            },
            get(stats::stats),
        ),
        (
            RouteDoc {
                response: "event-stream",
                ..doc(
                    "get",
                    "/api/v1/stream",
                    Viewer,
                    "Server-sent events: `alert` for new and changed alerts, `resync` when events were missed",
                    "alerts",
                )
            },
            get(stream::stream),
        ),
        (
            RouteDoc {
                body: Some("Events"),
                response: "EventsResult",
                errors: &[400, 413],
                ..doc(
                    "post",
                    "/api/v1/events",
                    Operator,
                    "Submit events (legacy JSON or rule-test form) for detection",
                    "events",
                )
            },
            post(events::submit_events),
        ),
        (
            RouteDoc {
                params: events::SEARCH_PARAMS,
                response: "ndjson",
                errors: &[400],
                ..doc(
                    "get",
                    "/api/v1/events",
                    Viewer,
                    "Search the event archive: matching events in time order, streamed",
                    "events",
                )
            },
            get(events::search_events),
        ),
        (
            RouteDoc {
                response: "Principal",
                ..doc("get", "/api/v1/whoami", Viewer, "The calling token's name and role", "auth")
            },
            get(whoami),
        ),
        (
            RouteDoc {
                params: &[
                    ("limit", "query", "integer", "1 to 1000 (default 100)."),
                    ("offset", "query", "integer", "Alerts to skip (default 0)."),
                ],
                response: "LegacyAlerts",
                errors: &[400],
                ..doc(
                    "get",
                    "/alerts",
                    Viewer,
                    "Legacy read API: alerts newest first, flat legacy fields",
                    "legacy",
                )
            },
            get(legacy::legacy_list),
        ),
        (
            RouteDoc {
                params: &[ID],
                response: "LegacyAlert",
                errors: &[404],
                ..doc(
                    "get",
                    "/alerts/{id}",
                    Viewer,
                    "Legacy read API: one alert; unknown or malformed id is 404",
                    "legacy",
                )
            },
            get(legacy::legacy_get),
        ),
    ]
}
