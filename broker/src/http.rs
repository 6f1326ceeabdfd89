//! `/healthz`, `/readyz` and `/metrics` on the broker's HTTP port.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// The router (tested with `oneshot`).
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(m): State<Metrics>| async move { m.render() }))
        .with_state(metrics)
}

/// Ready while the bridge is connected to RabbitMQ: only then are agents acknowledged.
async fn readyz(State(m): State<Metrics>) -> (StatusCode, &'static str) {
    if m.rabbitmq_connected.get() == 1 {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: RabbitMQ is not connected\n")
    }
}

/// Serves until cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let limits = runtime::http::Limits {
        max_connections: 64,
        refused: Some(metrics.http_refused.clone()),
        ..Default::default()
    };
    runtime::http::serve(listener, router(metrics), limits, cancel).await
}
