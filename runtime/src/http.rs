//! Serving HTTP with the limits every AuditFlow port needs: each port is reachable from the
//! network (the agent's from the LAN, the API from the cluster), so none may be held by whoever
//! connects and sends nothing. `axum::serve` has no limits of its own; this accept loop adds:
//!
//! * a cap on open connections ([`Limits::max_connections`]): one more is closed at once and
//!   counted, so a flood cannot exhaust file descriptors or memory;
//! * a time limit on reading a request's headers ([`Limits::header_read_timeout`], hyper's
//!   own), so a client that opens a connection and trickles or sends nothing (slowloris) is
//!   dropped;
//! * the peer address as axum's `ConnectInfo<SocketAddr>` for handlers that check it;
//! * graceful shutdown: on cancel, no new connections; open ones get [`DRAIN`] to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long open connections may take to finish after a shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Limits of one listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Counts connections closed because the cap was reached.
    pub refused: Option<IntCounter>,
}

impl Default for Limits {
    /// 256 connections (a Pi's share of file descriptors, far above what a dashboard, a
    /// Prometheus and a few API clients open) and 10 s for the headers.
    fn default() -> Self {
        Self { max_connections: 256, header_read_timeout: Duration::from_secs(10), refused: None }
    }
}

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if let Some(c) = &limits.refused {
                c.inc();
            }
            tracing::warn!(%peer, cap = limits.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(
            router.clone().layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or times out is its own business: nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("open HTTP connections cut after {DRAIN:?}"),
    }
    Ok(())
}
