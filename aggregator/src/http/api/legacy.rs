//! The legacy read API (design.md §8): `GET /alerts` and `GET /alerts/{id}` with the flat
//! legacy columns.

use axum::Json;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::State;
use serde_json::Value;
use uuid::Uuid;

use super::{ApiResult, Params};
use crate::http::ApiError;
use crate::http::ApiState;
use crate::legacy_alert;

/// `GET /alerts?limit=&offset=`: the legacy read API, newest first, flat legacy columns.
pub(super) async fn legacy_list(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let Query(pairs) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let num = |key: &str, default: i64, min: i64, max: i64| -> ApiResult<i64> {
        match pairs.iter().find(|(k, _)| k == key) {
            None => Ok(default),
            Some((_, v)) => {
                v.parse::<i64>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Invalid {key}: must be an integer from {min} to {max}"
                    ))
                })
            }
        }
    };
    let limit = num("limit", 100, 1, 1000)?;
    let offset = num("offset", 0, 0, i64::from(i32::MAX))?;
    let alerts = s.store.list_alerts_offset(limit, offset).await?;
    let environment = &s.notifier.legacy.environment;
    Ok(Json(Value::Array(alerts.iter().map(|a| legacy_alert::flat(a, environment)).collect())))
}

/// `GET /alerts/{id}`: unknown or malformed ids are 404, as in the legacy service.
pub(super) async fn legacy_get(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::NotFound("Alert not found".into());
    let id = Uuid::try_parse(&id).map_err(|_| not_found())?;
    match s.store.find_alert(id).await? {
        Some(a) => Ok(Json(legacy_alert::flat(&a, &s.notifier.legacy.environment))),
        None => Err(not_found()),
    }
}
