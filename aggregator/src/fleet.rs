//! The fleet watcher: turns stopped heartbeats into `agent_silent` events for the rules
//! (design.md §5, "agent silent"). Heartbeats are recorded in the shared state by the heartbeat
//! consumer; every replica runs a watcher, and the event for one silence has a deterministic
//! id (node and last-seen time), so the pipeline's dedup makes it fire once however many
//! replicas see it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wire::model::{Event, EventKind, Severity, Source, Timestamp, Value};

use crate::pipeline::{Item, Pipeline};
use crate::state::WindowState;
use crate::store::AlertSink;

const SILENT_NAMESPACE: Uuid = Uuid::from_u128(0x0c4e_5a6b_7d8f_4e21_9c3b_a1d2_e3f4_0516);

/// The `agent_silent` events due now: one per node whose last heartbeat is older than
/// `after`.
pub fn silent_events(seen: &[(String, i64)], now: Timestamp, after: Duration) -> Vec<Item> {
    let now_secs = now.as_nanos() / 1_000_000_000;
    seen.iter()
        .filter(|(_, at)| now_secs - at > after.as_secs() as i64)
        .map(|(node, at)| {
            let mut name = node.as_bytes().to_vec();
            name.extend_from_slice(&at.to_be_bytes());
            let event = Event::new(
                now,
                Source::Agent,
                Severity::Warning,
                EventKind::Generic {
                    event_type: "agent_silent".into(),
                    fields: vec![
                        ("last_seen_secs".into(), Value::Int(now_secs - at)),
                        ("last_seen".into(), Value::Str(Timestamp::from_unix(*at, 0).to_rfc3339())),
                    ],
                },
            );
            Item::Single { id: Uuid::new_v5(&SILENT_NAMESPACE, &name), node: node.clone(), event }
        })
        .collect()
}

/// Checks every `after / 4` (at least every second, at most every 30 s) until cancelled.
pub async fn run<S: WindowState, K: AlertSink>(
    pipeline: Arc<Pipeline<S, K>>,
    after: Duration,
    cancel: CancellationToken,
) {
    let every = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let seen = match pipeline.state.last_seen().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "fleet watcher cannot read last-seen times");
                continue;
            }
        };
        let items = silent_events(&seen, Timestamp::now(), after);
        pipeline.metrics.agents_silent.set(items.len() as i64);
        if let Err(e) = pipeline.process(&items).await {
            tracing::warn!(error = %format!("{e:#}"), "fleet watcher could not process silent agents");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nodes_past_the_limit_are_silent_and_ids_are_stable() {
        let now = Timestamp::from_unix(1_000, 0);
        let seen = vec![("a".to_owned(), 990), ("b".to_owned(), 800)];
        let items = silent_events(&seen, now, Duration::from_secs(60));
        assert_eq!(items.len(), 1);
        let again = silent_events(&seen, Timestamp::from_unix(1_100, 0), Duration::from_secs(60));
        let id = |i: &Item| match i {
            Item::Single { id, node, .. } => (*id, node.clone()),
            Item::Envelope(_) => unreachable!(),
        };
        assert_eq!(id(&items[0]), id(&again[1]), "the same silence keeps its id");
    }
}
