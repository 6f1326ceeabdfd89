//! Alert counts in time buckets.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use serde_json::json;

use super::{ApiResult, Params, get_param, params, time_param};
use crate::http::ApiError;
use crate::http::ApiState;
use crate::rules::parse_duration;
use crate::store::now_ms;
use crate::store::rfc3339;

pub(super) async fn stats(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let p = params(q, &["from", "to", "bucket"])?;
    let now = now_ms();
    let to = time_param(&p, "to")?.unwrap_or(now);
    let from = time_param(&p, "from")?.unwrap_or(to - 24 * 3600 * 1000);
    let bucket = match get_param(&p, "bucket") {
        None => Duration::from_secs(3600),
        Some(b) => parse_duration(b).filter(|d| d.as_secs() >= 1).ok_or_else(|| {
            ApiError::BadRequest("`bucket` must be a duration like 1m or 1h".into())
        })?,
    };
    let bucket_ms = bucket.as_millis() as i64;
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    if (to - from) / bucket_ms > 2000 {
        return Err(ApiError::BadRequest("at most 2000 buckets; widen `bucket`".into()));
    }
    let buckets = s.store.stats(from, to, bucket_ms).await?;
    let m = &s.metrics;
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "bucket_secs": bucket.as_secs(),
        "buckets": buckets,
        "counters": {
            "events_in": m.events_in.get(),
            "duplicates": m.duplicates.get(),
            "invalid": m.invalid.get(),
            "firings": m.firings.get(),
            "shadow_firings": m.shadow_firings.get(),
        },
    })))
}
