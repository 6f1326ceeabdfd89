//! The live stream (`GET /api/v1/stream`): server-sent events for new and changed alerts.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::sse::KeepAlive;
use axum::response::sse::Sse;
use serde_json::json;

use crate::http::auth::Principal;
use crate::http::{ApiError, ApiState};

pub(super) async fn stream(
    State(s): State<ApiState>,
    Extension(principal): Extension<Principal>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Held in the stream's state: the slot is freed when the client goes away.
    let slot = s.guard.open_stream(&principal.name).ok_or_else(|| {
        ApiError::Status(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this token already holds {} live streams",
                crate::http::guard::MAX_STREAMS_PER_TOKEN
            ),
        )
    })?;
    let rx = s.store.subscribe();
    let hello = SseEvent::default().event("hello").data("{}");
    let state = (rx, s.clone(), Some(hello), slot);
    let events = futures_util::stream::unfold(state, |(mut rx, s, hello, slot)| async move {
        if let Some(hello) = hello {
            return Some((Ok(hello), (rx, s, None, slot)));
        }
        loop {
            let change = tokio::select! {
                () = s.cancel.cancelled() => return None,
                c = rx.recv() => c,
            };
            let event = match change {
                Ok(change) => match s.store.find_alert(change.alert_id).await {
                    Ok(Some(alert)) => SseEvent::default()
                        .event("alert")
                        .id(change.alert_id.to_string())
                        .json_data(json!({"change": change.kind, "alert": alert}))
                        .unwrap_or_else(|_| SseEvent::default().event("resync").data("{}")),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "live stream: read alert failed");
                        SseEvent::default().event("resync").data("{}")
                    }
                },
                // The client fell behind: tell it to reload instead of silently skipping.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    s.metrics.sse_lagged.inc_by(n);
                    SseEvent::default().event("resync").data(json!({"missed": n}).to_string())
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, s, None, slot)));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
