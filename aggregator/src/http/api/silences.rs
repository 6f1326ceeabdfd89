//! Silences: matchers with an expiry that keep notifications of matching alerts quiet.

use axum::Extension;
use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;
use uuid::Uuid;
use wire::model::Timestamp;

use super::{ApiResult, MAX_COMMENT, MAX_SILENCE, Params, get_param, json_body, params};
use crate::http::ApiError;
use crate::http::ApiState;
use crate::http::auth::Principal;
use crate::rules::parse_duration;
use crate::store::Matcher;
use crate::store::Silence;
use crate::store::now_ms;

pub(super) async fn list_silences(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let p = params(q, &["expired"])?;
    let include = match get_param(&p, "expired") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("`expired` must be true or false".into())),
    };
    Ok(Json(json!({ "silences": s.store.silences(include, now_ms()).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSilence {
    matchers: Vec<Matcher>,
    #[serde(default)]
    comment: String,
    /// How long, like `2h`; or `expires_at`.
    duration: Option<String>,
    expires_at: Option<String>,
}

pub(super) async fn add_silence(
    State(s): State<ApiState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = json_body(body)?;
    if b.matchers.is_empty() || b.matchers.len() > 20 {
        return Err(ApiError::BadRequest("`matchers`: give 1 to 20 matchers".into()));
    }
    for m in &b.matchers {
        if !Matcher::valid_field(&m.field) {
            return Err(ApiError::BadRequest(format!(
                "matcher field `{}`: use rule_id, node, severity or group.NAME",
                m.field
            )));
        }
        if m.value.is_empty() || m.value.len() > 500 {
            return Err(ApiError::BadRequest("matcher values must be 1 to 500 bytes".into()));
        }
    }
    if b.comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::BadRequest(format!(
            "`comment` is longer than {MAX_COMMENT} characters"
        )));
    }
    let now = now_ms();
    let expires_at = match (&b.duration, &b.expires_at) {
        (Some(d), None) => {
            let d = parse_duration(d).filter(|d| !d.is_zero() && *d <= MAX_SILENCE).ok_or_else(
                || {
                    ApiError::BadRequest(
                        "`duration` must be like 30m, 2h or 7d, at most 90d".into(),
                    )
                },
            )?;
            now + d.as_millis() as i64
        }
        (None, Some(t)) => {
            let at =
                Timestamp::parse_rfc3339(t).map(|t| t.as_nanos() / 1_000_000).ok_or_else(|| {
                    ApiError::BadRequest("`expires_at` must be an RFC 3339 time".into())
                })?;
            if at <= now || at - now > MAX_SILENCE.as_millis() as i64 {
                return Err(ApiError::BadRequest(
                    "`expires_at` must be in the future, at most 90 days ahead".into(),
                ));
            }
            at
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `duration` and `expires_at`".into(),
            ));
        }
    };
    let silence = Silence {
        id: Uuid::new_v4(),
        matchers: b.matchers,
        comment: b.comment,
        created_by: who.name,
        created_at: now,
        expires_at,
    };
    s.store.add_silence(&silence).await?;
    Ok(Json(serde_json::to_value(silence).map_err(anyhow::Error::from)?))
}

pub(super) async fn expire_silence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::BadRequest("not a silence id".into()))?;
    if s.store.expire_silence(id, now_ms()).await? {
        Ok(Json(json!({"expired": id})))
    } else {
        Err(ApiError::NotFound(format!("no silence {id}")))
    }
}
