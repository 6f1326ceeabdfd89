//! Events submitted over HTTP (`POST /api/v1/events`): the rule-test JSON form or legacy
//! JSON, deduplicated and detected like any other batch; and the event archive searched
//! (`GET /api/v1/events`, design.md §6.12).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde_json::Value;
use serde_json::json;
use uuid::Uuid;
use wire::model::Timestamp;

use super::{
    ApiResult, MAX_EVENTS, Params, get_param, int_param, json_body, time_param, unique_params,
};
use crate::http::ApiError;
use crate::http::ApiState;
use crate::pipeline::Item;
use crate::rules::testcase;

/// Converts one submitted event: the rule-test format (it has `kind`) or legacy JSON.
pub(super) fn event_item(value: &Value, now: Timestamp) -> Result<Item, String> {
    if value.get("kind").is_some() {
        let (node, event) = testcase::event_from_json(value, now)?;
        let id = Uuid::new_v5(&SUBMITTED_NAMESPACE, value.to_string().as_bytes());
        return Ok(Item::Single { id, node, event });
    }
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let event = wire::legacy::from_legacy_json(&bytes, now).map_err(|e| e.to_string())?;
    let id = event.id.map_or_else(|| Uuid::new_v5(&SUBMITTED_NAMESPACE, &bytes), Uuid::from_bytes);
    let node = event.host.clone().unwrap_or_else(|| "api".to_owned());
    Ok(Item::Single { id, node, event })
}

/// Ids of submitted events without their own: derived from the JSON, so a resubmission is
/// recognised.
pub(super) const SUBMITTED_NAMESPACE: Uuid =
    Uuid::from_u128(0x3f7c_9a10_5b2e_4d8f_a6c1_7e9d_0b2a_4c6e);

pub(super) async fn submit_events(
    State(s): State<ApiState>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let body = json_body(body)?;
    let list = match body {
        Value::Array(list) => list,
        one @ Value::Object(_) => vec![one],
        _ => return Err(ApiError::BadRequest("send one event object or an array of them".into())),
    };
    if list.is_empty() || list.len() > MAX_EVENTS {
        return Err(ApiError::BadRequest(format!("send 1 to {MAX_EVENTS} events")));
    }
    let now = Timestamp::now();
    let mut items = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match event_item(v, now) {
            Ok(item) => items.push(item),
            Err(e) => errors.push(format!("event {i}: {e}")),
        }
    }
    // All or nothing: a batch with a bad event is refused whole, so a client can fix and
    // resend it without wondering which events counted.
    if !errors.is_empty() {
        errors.truncate(20);
        return Err(ApiError::BadRequest(errors.join("; ")));
    }
    let stats = s.intake.submit(items).await?;
    Ok(Json(json!({
        "accepted": stats.events,
        "duplicates": stats.duplicates,
        "firings": stats.firings,
    })))
}

/// Most events one search returns.
pub const MAX_SEARCH: i64 = 10_000;
/// Events one search decodes at most before it stops (and says so in its summary).
pub const SEARCH_BUDGET: u64 = 20_000_000;
/// The longest time range one search covers.
const MAX_RANGE_MS: i64 = 31 * 86_400_000;

/// The search's parameters besides field filters (any field rules name: `user`, `src_ip`,
/// `outcome`, `path`, `fields.NAME`, ...).
const SEARCH_KEYS: [&str; 7] = ["node", "kind", "q", "from", "to", "limit", "order"];

pub(super) const SEARCH_PARAMS: &[(&str, &str, &str, &str)] = &[
    ("node", "query", "string", "One node only."),
    (
        "kind",
        "query",
        "string",
        "Kinds, comma-separated: login, privilege, file_change, package, service, account, k8s_audit, git, generic.",
    ),
    (
        "user",
        "query",
        "string",
        "Any field rules name (user, src_ip, outcome, path, command, fields.NAME, attrs.NAME, ...) filters by its value, case-insensitive.",
    ),
    ("q", "query", "string", "Text anywhere in the event (case-insensitive)."),
    ("from", "query", "string", "Event time from (RFC 3339); default: an hour before `to`."),
    ("to", "query", "string", "Event time to (RFC 3339); default: now."),
    ("limit", "query", "integer", "Events at most (1 to 10,000; default 500)."),
    ("order", "query", "string", "`asc` (oldest first, the default) or `desc`."),
];

/// Reads a search from query parameters.
pub(crate) fn search_query(pairs: &[(String, String)]) -> ApiResult<crate::archive::Query> {
    use crate::rules::FieldId;
    let mut q = crate::archive::Query {
        node: get_param(pairs, "node").map(str::to_owned),
        text: get_param(pairs, "q").map(str::to_lowercase),
        limit: usize::try_from(int_param(pairs, "limit", 500, 1, MAX_SEARCH)?).unwrap_or(500),
        ..Default::default()
    };
    if let Some(kinds) = get_param(pairs, "kind") {
        for k in kinds.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            q.kinds |= crate::archive::kind_bit(k).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown kind `{k}` (kinds: {})",
                    crate::archive::KINDS.join(", ")
                ))
            })?;
        }
    }
    q.desc = match get_param(pairs, "order") {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(ApiError::BadRequest(format!("`order` must be asc or desc, not `{o}`")));
        }
    };
    q.to = time_param(pairs, "to")?.unwrap_or_else(crate::store::now_ms);
    q.from = time_param(pairs, "from")?.unwrap_or(q.to - 3_600_000);
    if q.from > q.to {
        return Err(ApiError::BadRequest("`from` is after `to`".into()));
    }
    if q.to - q.from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest("a search covers 31 days at most".into()));
    }
    for (k, v) in pairs {
        if SEARCH_KEYS.contains(&k.as_str()) || v.is_empty() {
            continue;
        }
        let field = FieldId::parse(k).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown parameter `{k}` (allowed: {}, or a field rules name)",
                SEARCH_KEYS.join(", ")
            ))
        })?;
        q.fields.push((field, v.clone()));
    }
    Ok(q)
}

/// `GET /api/v1/events`: NDJSON, one event per line as it is found, then a summary line.
pub(super) async fn search_events(
    State(s): State<ApiState>,
    query: Params,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    // Field names are open-ended, so every key is checked by search_query, not by a list.
    let q = search_query(&unique_params(query)?)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let store = s.store.clone();
    let metrics = s.metrics.clone();
    tokio::spawn(async move {
        // A full channel waits for the client; a client gone ends the search.
        let mut sink = tx.clone();
        let result = crate::archive::search(&store, &q, SEARCH_BUDGET, &mut sink).await;
        let line = match result {
            Ok(summary) => {
                metrics.archive_unreadable.inc_by(summary.rows_unreadable);
                json!({ "summary": summary })
            }
            Err(e) => json!({ "summary": { "error": format!("{e:#}") } }),
        };
        let _ = tx.send(Ok(format!("{line}\n"))).await;
    });
    let body =
        axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|line| (line, rx))
        }));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
