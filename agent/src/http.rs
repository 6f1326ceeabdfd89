//! `/healthz`, `/readyz` and `/metrics` on the agent's HTTP port, and the legacy
//! `POST /generate_event` of the old AuditFlow event generator. The port is open to the
//! network (Prometheus scrapes it), so `/generate_event` answers only a caller with the
//! configured bearer token, or, with none configured, a caller on this host: an event it takes
//! raises alerts like any other (docs/security.md).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::HeaderMap;
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
    /// Whether `/generate_event` is on.
    pub generate_event: bool,
    /// The bearer token `/generate_event` requires; empty: callers on this host only.
    pub generate_event_token: Arc<str>,
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
    let refused = state.metrics.http_refused.clone();
    serve_limited(listener, router(state), refused, cancel).await
}

/// Serves `app` with the agent's limits. Its ports are open to the LAN: a connection cap and a
/// header-read timeout (runtime::http), with a small cap, since only Prometheus, the node's own
/// tools and legacy scripts call them.
async fn serve_limited(
    listener: tokio::net::TcpListener,
    app: Router,
    refused: prometheus::IntCounter,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let limits =
        runtime::http::Limits { max_connections: 64, refused: Some(refused), ..Default::default() };
    runtime::http::serve(listener, app, limits, cancel).await
}

/// Who may submit: the holder of the configured token, or, with none, a caller on this host.
fn may_submit(token: &str, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
    if token.is_empty() {
        return if peer.ip().is_loopback() { Ok(()) } else { Err(Refusal::NotLocal) };
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::BadToken)
    }
}

/// Why `/generate_event` refused a caller.
#[derive(Debug)]
enum Refusal {
    /// No token is configured and the caller is not on this host.
    NotLocal,
    /// A token is configured and the caller did not present it.
    BadToken,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotLocal => {
                "only callers on this host may submit events; set http.generate_event_token (AUDITFLOW_GENERATE_EVENT_TOKEN) to allow others"
            }
            Refusal::BadToken => "a valid `Authorization: Bearer` token is required",
        })
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::NotLocal => StatusCode::FORBIDDEN,
            Refusal::BadToken => StatusCode::UNAUTHORIZED,
        };
        error(status, &self.to_string())
    }
}

/// Compares without returning early, so the time taken does not tell how much of a guess
/// was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `POST /generate_event`: the legacy generator's on-demand endpoint. The body is a legacy
/// event (design.md §8) with at least `event_type`; a body with nothing but the `event_type` of a
/// legacy template asks for a synthetic event of that template. Answers 202 with the
/// `event_id` only once the event is in the spool, 400 for a body that is not such an event,
/// 503 when the event cannot be accepted (pipeline full, spool full, shutting down).
async fn generate_event(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !s.generate_event {
        s.metrics.generate_refused.inc();
        return error(
            StatusCode::NOT_FOUND,
            "POST /generate_event is off on this node (http.generate_event)",
        );
    }
    if let Err(refusal) = may_submit(&s.generate_event_token, peer, &headers) {
        s.metrics.generate_refused.inc();
        tracing::warn!(peer = %peer, "POST /generate_event refused: {refusal}");
        return refusal.into_response();
    }
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

/// The legacy generator's HTTP API on its own listener (`http.legacy_listen`).
#[derive(Clone, Debug)]
pub struct LegacyState {
    /// The agent's endpoint state (submission, metrics, the token).
    pub http: HttpState,
    /// Accept callers without a token from anywhere (`http.legacy_unauthenticated`).
    pub open: bool,
    /// Users for events that name none, as the legacy generator chose them.
    pub generator: Arc<std::sync::Mutex<wire::synth::LegacyGenerator>>,
}

/// The legacy generator's routes, with its request and response bodies (design.md §8.5).
pub fn legacy_router(state: LegacyState) -> Router {
    Router::new()
        .route("/generate_event", post(legacy_generate_event))
        .route("/healthz", get(legacy_health))
        .route("/health", get(legacy_health))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the legacy routes until cancelled.
pub async fn serve_legacy(
    listener: tokio::net::TcpListener,
    state: LegacyState,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let refused = state.http.metrics.http_refused.clone();
    serve_limited(listener, legacy_router(state), refused, cancel).await
}

/// `GET /healthz`: the legacy generator said whether it could publish; so does this, about
/// the agent's upstream (MQTT or AMQP), under the legacy key.
async fn legacy_health(State(s): State<LegacyState>) -> Response {
    if s.http.metrics.connected.get() == 1 {
        (StatusCode::OK, Json(json!({"status": "healthy", "rabbitmq_connected": true})))
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "rabbitmq_connected": false})),
        )
            .into_response()
    }
}

/// `POST /generate_event` as the legacy generator answered it: `event_type` required (else
/// 400 with its message); `event_id`, `timestamp` and `source_service` always set by the
/// endpoint; `server_hostname` (this node), `user_id` (a simulated user), `action_result`
/// (`SUCCESS`), `severity` (`INFO`) and `details` (`{}`) filled in when absent; every other
/// key passed through; `202 {"status": "success", "event_id": …}` once the event is in the
/// spool (the legacy generator said so even when its publish failed; this says 503 then).
async fn legacy_generate_event(
    State(s): State<LegacyState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !s.http.generate_event {
        s.http.metrics.generate_refused.inc();
        return error(
            StatusCode::NOT_FOUND,
            "POST /generate_event is off on this node (http.generate_event)",
        );
    }
    if !s.open
        && let Err(refusal) = may_submit(&s.http.generate_event_token, peer, &headers)
    {
        s.http.metrics.generate_refused.inc();
        tracing::warn!(peer = %peer, "legacy POST /generate_event refused: {refusal}");
        return refusal.into_response();
    }
    let Ok(value) = serde_json::from_slice::<JsonValue>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let mut object = match value {
        JsonValue::Object(o) if o.get("event_type").is_some() => o,
        _ => {
            return error(StatusCode::BAD_REQUEST, "Invalid event data. 'event_type' is required.");
        }
    };
    let now = Timestamp::now();
    let (event_id, user) = {
        let mut g = s.generator.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.uuid4(), g.user())
    };
    object.insert("event_id".into(), event_id.to_string().into());
    object.insert("timestamp".into(), wire::synth::python_utc_iso(now).into());
    object.insert("source_service".into(), wire::synth::legacy_vocab::API_SOURCE_SERVICE.into());
    for (key, default) in [
        ("server_hostname", JsonValue::from(s.http.node_id.as_str())),
        ("user_id", user.into()),
        ("action_result", "SUCCESS".into()),
        ("severity", "INFO".into()),
        ("details", json!({})),
    ] {
        object.entry(key).or_insert(default);
    }
    let mut event = match wire::legacy::from_legacy(&JsonValue::Object(object), now) {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    event.source = Source::Api;
    let (done, outcome) = oneshot::channel();
    if s.http.submit.try_send(Submitted { event, done }).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the agent cannot take events right now");
    }
    match outcome.await {
        Ok(Some(_)) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "success", "event_id": event_id.to_string()})),
        )
            .into_response(),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "the event could not be spooled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn only_the_token_holder_or_this_host_may_submit() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let none = HeaderMap::new();
        assert!(may_submit("", local, &none).is_ok());
        assert!(may_submit("", local6, &none).is_ok());
        assert!(matches!(may_submit("", remote, &none), Err(Refusal::NotLocal)));
        assert!(matches!(may_submit("", remote, &bearer("x")), Err(Refusal::NotLocal)));
        assert!(may_submit("s3cret", remote, &bearer("s3cret")).is_ok());
        for headers in [none.clone(), bearer("s3cre"), bearer("s3cret!"), bearer("")] {
            assert!(matches!(may_submit("s3cret", remote, &headers), Err(Refusal::BadToken)));
            assert!(matches!(may_submit("s3cret", local, &headers), Err(Refusal::BadToken)));
        }
    }
}
