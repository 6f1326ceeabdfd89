//! Notification channels: what is configured, how its deliveries stand, and a test message.

use axum::Extension;
use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use serde_json::json;

use super::ApiResult;
use crate::http::ApiError;
use crate::http::ApiState;
use crate::http::auth::Principal;
use crate::notify::TestError;

/// `GET /api/v1/channels`: each channel with its settings (never its URL's path or a secret)
/// and its deliveries' state from the outbox.
pub(super) async fn list_channels(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let states = s.store.channel_states().await?;
    let channels: Vec<Value> = s
        .notifier
        .describe()
        .into_iter()
        .map(|mut c| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            let st = states.iter().find(|st| st.channel == name).cloned().unwrap_or_default();
            let health = if st.failed > 0 || st.last_error.is_some() { "failing" } else { "ok" };
            if let Some(o) = c.as_object_mut() {
                o.insert("state".into(), health.into());
                o.insert("pending".into(), st.pending.into());
                o.insert("failed".into(), st.failed.into());
                o.insert("delivered".into(), st.delivered.into());
                o.insert(
                    "last_delivered_at".into(),
                    st.last_delivered_at.map(crate::store::rfc3339).into(),
                );
                o.insert("last_error".into(), st.last_error.into());
            }
            c
        })
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

/// `POST /api/v1/channels/{name}/test`: a test notification through the channel now; 502
/// with the receiver's error when it fails.
pub(super) async fn test_channel(
    State(s): State<ApiState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let by = format!("the dashboard or API ({})", who.name);
    match s.notifier.test(&name, &by).await {
        Ok(()) => Ok(Json(json!({ "channel": name, "delivered": true }))),
        Err(TestError::NoSuchChannel) => Err(ApiError::NotFound(format!(
            "no notification channel `{name}` (audit_alerts cannot be tested)"
        ))),
        Err(TestError::Failed(e)) => Err(ApiError::Status(StatusCode::BAD_GATEWAY, e)),
    }
}
