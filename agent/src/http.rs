//! `/healthz`, `/readyz` and `/metrics` on the agent's HTTP port, and the legacy
//! `POST /generate_event` of the old AuditFlow event generator.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, response::IntoResponse, response::Response};
use serde_json::{Value as JsonValue, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wire::synth::{Synth, Template};
use wire::{Source, Timestamp};

use crate::pipeline::{SharedSpool, Submitted};
use crate::telemetry::Metrics;

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

/// What the endpoints read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The metrics to render.
    pub metrics: Metrics,
    /// The spool, for readiness.
    pub spool: SharedSpool,
    /// Where submitted events go (to the batcher).
    pub submit: mpsc::Sender<Submitted>,
    /// This node, for the ids of submitted events.
    pub node_id: String,
}

/// The router (tested with `oneshot`).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(s): State<HttpState>| async move { s.metrics.render() }))
        .route("/generate_event", post(generate_event))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Ready when the spool can take more and either the upstream is connected or the spool is
/// still below its cap (events are safe on disk while the network is away).
async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    let (bytes, cap) = {
        let spool = match s.spool.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        (spool.bytes(), spool.max_bytes())
    };
    let connected = s.metrics.connected.get() == 1;
    if bytes < cap {
        (StatusCode::OK, format!("ready: connected={connected} spool_bytes={bytes}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: spool full ({bytes} of {cap} bytes)\n"),
        )
    }
}

/// Serves until cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `POST /generate_event`: the legacy generator's on-demand endpoint. The body is a legacy
/// event (design.md §8) with at least `event_type`; a body with nothing but the `event_type` of a
/// legacy template asks for a synthetic event of that template. Answers 202 with the
/// `event_id` only once the event is in the spool, 400 for a body that is not such an event,
/// 503 when the event cannot be accepted (pipeline full, spool full, shutting down).
async fn generate_event(State(s): State<HttpState>, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<JsonValue>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(object) = value.as_object() else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let Some(event_type) = object.get("event_type").and_then(JsonValue::as_str) else {
        return error(StatusCode::BAD_REQUEST, "`event_type` is missing or not a string");
    };
    let now = Timestamp::now();
    let mut event = if object.len() == 1 {
        let templates: &[Template] = match event_type {
            "user_login" => &[Template::LoginFailure, Template::LoginSuccess],
            "sudo_command" => &[Template::SudoCommand],
            "file_modified" => &[Template::FileModified],
            "service_status_change" => &[Template::ServiceStarted, Template::ServiceStopped],
            "user_account_management" => &[Template::AccountCreated],
            _ => &[],
        };
        let seed = u64::try_from(now.as_nanos()).unwrap_or(0);
        let mut synth = Synth::new(seed);
        match templates {
            [] => match wire::legacy::from_legacy(&value, now) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            },
            some => synth.event(some[(seed % some.len() as u64) as usize], now),
        }
    } else {
        match wire::legacy::from_legacy(&value, now) {
            Ok(e) => e,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    };
    event.source = Source::Api;
    let own_id = event.id;
    let (done, outcome) = oneshot::channel();
    if s.submit.try_send(Submitted { event, done }).is_err() {
        // Refused, not lost: the caller is told and may retry.
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent cannot take events right now");
    }
    match outcome.await {
        Ok(Some((epoch, seq))) => {
            let id = own_id.map_or_else(
                || wire::legacy::event_uuid(&s.node_id, epoch, seq),
                wire::legacy::Uuid::from_bytes,
            );
            (
                StatusCode::ACCEPTED,
                Json(json!({ "event_id": id.to_string(), "status": "accepted" })),
            )
                .into_response()
        }
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "the event could not be spooled"),
    }
}
