//! Alerts: the list with its filters and cursor, one alert with its evidence and history, and
//! the lifecycle actions (acknowledge, resolve, reopen).

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;

use super::{
    ApiResult, MAX_COMMENT, MAX_PAGE, Params, alert_id, get_param, int_param, params, time_param,
};
use crate::http::ApiError;
use crate::http::ApiState;
use crate::http::auth::Principal;
use crate::store::Action;
use crate::store::AlertQuery;
use crate::store::Cursor;
use crate::store::Status;
use crate::store::Transitioned;

pub(super) const LIST_PARAMS: &[&str] =
    &["status", "severity", "node", "rule", "since", "until", "q", "limit", "cursor"];

pub(super) async fn list_alerts(State(s): State<ApiState>, q: Params) -> ApiResult<Json<Value>> {
    let p = params(q, LIST_PARAMS)?;
    let mut query = AlertQuery {
        limit: int_param(&p, "limit", 50, 1, MAX_PAGE)?,
        node: get_param(&p, "node").map(str::to_owned),
        rule: get_param(&p, "rule").map(str::to_owned),
        since: time_param(&p, "since")?,
        until: time_param(&p, "until")?,
        ..Default::default()
    };
    if let Some(list) = get_param(&p, "status") {
        for s in list.split(',') {
            query.status.push(Status::parse(s.trim()).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`status`: `{s}` is not open, acknowledged or resolved"
                ))
            })?);
        }
    }
    if let Some(list) = get_param(&p, "severity") {
        for s in list.split(',') {
            let upper = s.trim().to_ascii_uppercase();
            if !matches!(upper.as_str(), "INFO" | "WARNING" | "CRITICAL") {
                return Err(ApiError::BadRequest(format!(
                    "`severity`: `{s}` is not INFO, WARNING or CRITICAL"
                )));
            }
            query.severity.push(upper);
        }
    }
    if let Some(text) = get_param(&p, "q") {
        if text.chars().count() > 200 {
            return Err(ApiError::BadRequest("`q` is longer than 200 characters".into()));
        }
        query.text = Some(text.to_owned());
    }
    if let Some(c) = get_param(&p, "cursor") {
        query.after = Some(Cursor::decode(c).ok_or_else(|| {
            ApiError::BadRequest("`cursor` is not one this API handed out".into())
        })?);
    }
    let page = s.store.list_alerts(&query).await?;
    Ok(Json(json!({
        "alerts": page.alerts,
        "next_cursor": page.next.map(|c| c.encode()),
    })))
}

pub(super) async fn get_alert(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    match s.store.alert(id).await? {
        Some(d) => Ok(Json(serde_json::to_value(d).map_err(anyhow::Error::from)?)),
        None => Err(ApiError::NotFound(format!("no alert {id}"))),
    }
}

/// `GET /api/v1/alerts/{id}/evidence`: the events that made its newest firings, from the
/// event archive.
pub(super) async fn get_evidence(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let Some(alert) = s.store.find_alert(id).await? else {
        return Err(ApiError::NotFound(format!("no alert {id}")));
    };
    let evidence = crate::evidence::of_alert(&s.store, &s.rules.get(), &alert).await?;
    let unreadable: u64 = evidence.firings.iter().map(|f| f.rows_unreadable).sum();
    s.metrics.archive_unreadable.inc_by(unreadable);
    Ok(Json(serde_json::to_value(evidence).map_err(anyhow::Error::from)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: String,
}

pub(super) async fn act(
    s: ApiState,
    who: Principal,
    id: String,
    body: Bytes,
    action: Action,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    // The body is optional: no body means no comment.
    let body: CommentBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommentBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("body: expected {{\"comment\": \"…\"}}: {e}"))
        })?
    };
    if body.comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::BadRequest(format!(
            "`comment` is longer than {MAX_COMMENT} characters"
        )));
    }
    match s.store.act(id, action, &who.name, &body.comment).await? {
        Transitioned::Done(a) => Ok(Json(serde_json::to_value(*a).map_err(anyhow::Error::from)?)),
        Transitioned::NotFound => Err(ApiError::NotFound(format!("no alert {id}"))),
        Transitioned::Conflict(m) => Err(ApiError::Conflict(m)),
    }
}

macro_rules! action_handler {
    ($name:ident, $action:expr) => {
        pub(super) async fn $name(
            State(s): State<ApiState>,
            Extension(who): Extension<Principal>,
            Path(id): Path<String>,
            body: Bytes,
        ) -> ApiResult<Json<Value>> {
            act(s, who, id, body, $action).await
        }
    };
}
action_handler!(acknowledge, Action::Acknowledge);
action_handler!(resolve, Action::Resolve);
action_handler!(reopen, Action::Reopen);
