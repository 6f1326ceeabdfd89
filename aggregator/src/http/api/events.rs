//! Events submitted over HTTP (`POST /api/v1/events`): the rule-test JSON form or legacy
//! JSON, deduplicated and detected like any other batch.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde_json::Value;
use serde_json::json;
use uuid::Uuid;
use wire::model::Timestamp;

use super::{ApiResult, MAX_EVENTS, json_body};
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
