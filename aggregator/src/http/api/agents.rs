//! The fleet: each agent's version, last heartbeat, rates, spool and drops.

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use serde_json::json;

use super::ApiResult;
use crate::http::ApiState;
use crate::store::now_ms;

pub(super) async fn list_agents(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let silent_ms = s.silent_after.as_millis() as i64;
    let agents: Vec<Value> = s
        .store
        .agents()
        .await?
        .into_iter()
        .map(|a| {
            let state = if now - a.last_seen > silent_ms { "silent" } else { "ok" };
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("state".into(), state.into());
                o.insert("dropping".into(), (a.dropped > 0).into());
            }
            v
        })
        .collect();
    Ok(Json(json!({ "agents": agents, "silent_after_secs": s.silent_after.as_secs() })))
}
