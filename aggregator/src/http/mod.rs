//! HTTP: the REST API under `/api/v1`, the legacy read API, webhook receivers, `/healthz`,
//! `/readyz` and `/metrics`. **Only this module knows status codes.**
//!
//! Every API route is declared once in [`routes`] with its method, path, required role and
//! documentation; the router and the OpenAPI document are both built from that list, so they
//! cannot disagree.

pub mod api;
pub mod auth;
pub mod guard;
pub mod hooks;
pub mod openapi;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Intake, Rules};
use crate::reload::{Reloader, RuleStatus};
use crate::store::SharedStore;
use crate::telemetry::Metrics;
use auth::{Principal, Role, Tokens};

/// A dependency check for `/readyz`: `Err(what is wrong)`.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Shared by the health and metrics handlers.
#[derive(Clone)]
pub struct AppState {
    /// Counters.
    pub metrics: Metrics,
    /// Dependency checks, each named.
    pub checks: Vec<(&'static str, Check)>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|(n, _)| *n).collect();
        f.debug_struct("AppState").field("checks", &names).finish_non_exhaustive()
    }
}

/// Shared by the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Alerts, silences, fleet.
    pub store: SharedStore,
    /// The active rules.
    pub rules: Arc<Rules>,
    /// Version and last reload error of the rules.
    pub rule_status: Arc<Mutex<RuleStatus>>,
    /// Reloads the rule directory on request; `None` when the shipped pack is in use.
    pub reloader: Option<Arc<Reloader>>,
    /// Where submitted events go.
    pub intake: Arc<dyn Intake>,
    /// Who may call.
    pub tokens: Arc<Tokens>,
    /// Webhook secrets.
    pub hooks: Arc<hooks::HookSecrets>,
    /// Counters.
    pub metrics: Metrics,
    /// An agent is silent after this long without a heartbeat.
    pub silent_after: Duration,
    /// The legacy `GET /alerts` needs no token (for legacy dashboards on a trusted network).
    pub legacy_open: bool,
    /// Ends live streams at shutdown (graceful shutdown waits for open connections).
    pub cancel: CancellationToken,
    /// Per-caller limits: bad-token back-off, live streams per token.
    pub guard: Arc<guard::Guard>,
    /// The notifier (its channels, for the channel list and test messages).
    pub notifier: Arc<crate::notify::Notifier>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

/// The API's errors. Client mistakes get a precise 4xx JSON body; internal errors a generic
/// 500 body and one log line with the detail.
#[derive(Debug)]
pub enum ApiError {
    /// Malformed parameters or body.
    BadRequest(String),
    /// No or unknown token.
    Unauthorized,
    /// The token's role is too low.
    Forbidden(Role),
    /// No such thing.
    NotFound(String),
    /// Not possible in the current state.
    Conflict(String),
    /// Something failed on our side.
    Internal(anyhow::Error),
    /// A rejection with its own status (body too large, wrong content type).
    Status(StatusCode, String),
    /// Too many failed token checks from this address: wait this long.
    TooManyFailures(Duration),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required (Authorization: Bearer TOKEN)".into(),
            ),
            ApiError::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {} role or higher", role.as_str()),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Status(status, m) => (status, "rejected", m),
            ApiError::TooManyFailures(wait) => {
                let mut resp = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({
                        "error": "too_many_requests",
                        "message": "too many requests with a wrong token from this address; wait and retry",
                    })),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
                return resp;
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "API request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the aggregator's log".into(),
                )
            }
        };
        let mut resp = (status, Json(json!({"error": code, "message": message}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A route's documentation: what the OpenAPI document says about it.
#[derive(Clone, Copy, Debug)]
pub struct RouteDoc {
    /// `get`, `post` or `delete`.
    pub method: &'static str,
    /// The path, with `{name}` parameters.
    pub path: &'static str,
    /// The role needed; `None` for open routes.
    pub role: Option<Role>,
    /// One line.
    pub summary: &'static str,
    /// Grouping in the document.
    pub tag: &'static str,
    /// Query and path parameters: `(name, "query" | "path", type, description)`.
    pub params: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// Request body schema name.
    pub body: Option<&'static str>,
    /// Response schema name (`text` for plain text, `event-stream` for SSE).
    pub response: &'static str,
    /// Error statuses it may answer besides 401/403 (which follow from `role`).
    pub errors: &'static [u16],
}

/// Every API route: documentation and handler.
pub fn routes() -> Vec<(RouteDoc, MethodRouter<ApiState>)> {
    api::routes().into_iter().chain(hooks::routes()).collect()
}

async fn require(
    State((state, role)): State<(ApiState, Option<Role>)>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(role) = role {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        if let Some(wait) = state.guard.wait(peer) {
            state.metrics.api_denied.with_label_values(&["429"]).inc();
            return ApiError::TooManyFailures(wait).into_response();
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(principal) = presented.and_then(|t| state.tokens.lookup(t)) else {
            // Only a presented token is a guess; a request without one (a browser before
            // sign-in, a probe) costs nothing.
            if presented.is_some() {
                state.guard.failed(peer);
            }
            state.metrics.api_denied.with_label_values(&["401"]).inc();
            return ApiError::Unauthorized.into_response();
        };
        if principal.role < role {
            state.metrics.api_denied.with_label_values(&["403"]).inc();
            return ApiError::Forbidden(role).into_response();
        }
        let principal: Principal = principal.clone();
        req.extensions_mut().insert(principal);
    }
    next.run(req).await
}

/// Largest request body accepted by the API (webhooks have their own, larger limit).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The API port's router: the API, the legacy read API, webhooks, health and metrics.
pub fn router(app: AppState, api: ApiState) -> Router {
    let mut r: Router<ApiState> = Router::new();
    for (doc, handler) in routes() {
        let role = if doc.path.starts_with("/alerts") && api.legacy_open { None } else { doc.role };
        let guarded =
            handler.route_layer(middleware::from_fn_with_state((api.clone(), role), require));
        r = r.route(doc.path, guarded);
    }
    let api_router = r
        .route("/api/v1/openapi.json", get(openapi::serve))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
        .merge(api_router)
}

/// The metrics port's router.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn metrics(State(s): State<AppState>) -> String {
    s.metrics.render()
}

/// Ready when every dependency answers within 2 s: RabbitMQ connected, Redis and PostgreSQL
/// reachable (in embedded mode: the SQLite store).
async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    for (name, check) in &s.checks {
        match tokio::time::timeout(Duration::from_secs(2), check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{name}: {e}")),
            Err(_) => problems.push(format!("{name}: no answer within 2 s")),
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("; ")))
    }
}

/// Serves a router until cancelled, with the connection cap and header-read timeout of
/// `runtime::http` (design.md §6).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    refused: prometheus::IntCounter,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let limits = runtime::http::Limits { refused: Some(refused), ..Default::default() };
    runtime::http::serve(listener, router, limits, cancel).await
}
