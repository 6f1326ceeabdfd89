//! `/healthz`, `/readyz` and `/metrics` on the agent's HTTP port.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::pipeline::SharedSpool;
use crate::telemetry::Metrics;

/// What the endpoints read.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The metrics to render.
    pub metrics: Metrics,
    /// The spool, for readiness.
    pub spool: SharedSpool,
}

/// The router (tested with `oneshot`).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|State(s): State<HttpState>| async move { s.metrics.render() }))
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
