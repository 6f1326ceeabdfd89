//! Every metric the aggregator exports, defined in one place (`auditflow_aggregator_*`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Latency buckets, seconds: fine below 50 ms (the event-to-alert target), coarse above.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0, 300.0,
];

/// The stages of a batch, as `auditflow_aggregator_batch_stage_seconds` labels them; indexed by
/// [`Stage`].
pub const STAGES: [&str; 6] = ["dedup", "detect", "state", "store", "mark", "archive"];

/// A stage of a batch: its index in [`STAGES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The dedup lookup.
    Dedup = 0,
    /// Rule evaluation (before and after the state call).
    Detect = 1,
    /// The state call.
    State = 2,
    /// Committing the firings.
    Store = 3,
    /// Recording the batch as processed.
    Mark = 4,
    /// Encoding and compressing the batch's events for the archive (their rows are written
    /// in the store's transaction, timed as `store`).
    Archive = 5,
}

/// The aggregator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Messages consumed, per queue kind (`native`, `legacy`).
    pub messages_in: IntCounterVec,
    /// Events evaluated (after deduplication).
    pub events_in: IntCounter,
    /// Events skipped because they were already processed (redeliveries, agent replays).
    pub duplicates: IntCounter,
    /// Messages that could not be decoded, sent to the dead-letter queue.
    pub invalid: IntCounter,
    /// Firings of alert-mode rules handed to the store.
    pub firings: IntCounter,
    /// Firings of shadow rules (counted, never alerts).
    pub shadow_firings: IntCounter,
    /// Firings held back by a rule's cooldown.
    pub suppressed: IntCounter,
    /// Events too late for a window.
    pub late_events: IntCounter,
    /// Batches whose processing failed (state or store unreachable) and were retried.
    pub batch_failures: IntCounter,
    /// Events dropped at the edge, as reported by agents, per reason.
    pub edge_dropped: IntCounterVec,
    /// Rule reloads, per result (`ok`, `invalid`).
    pub rule_reloads: IntCounterVec,
    /// Rules loaded.
    pub rules_loaded: IntGauge,
    /// 1 while connected to RabbitMQ.
    pub rabbitmq_connected: IntGauge,
    /// Agent heartbeats consumed.
    pub heartbeats: IntCounter,
    /// Agents whose last heartbeat is older than `detection.agent_silent_after`.
    pub agents_silent: IntGauge,
    /// RabbitMQ consumer sessions started, per feed (more than one each: reconnects).
    pub consumer_sessions: IntCounterVec,
    /// The alert store's data, bytes (retention.rs).
    pub store_bytes: IntGauge,
    /// `retention.max_db_mb` in bytes (0: no bound).
    pub store_bound_bytes: IntGauge,
    /// Rows retention deleted, per kind.
    pub retention_deleted: IntCounterVec,
    /// Events archived.
    pub archived_events: IntCounter,
    /// Bytes of archive frames written (compressed).
    pub archived_bytes: IntCounter,
    /// Small archive rows merged by compaction.
    pub archive_compacted: IntCounter,
    /// Archive rows that could not be read (by a search, a backtest or compaction).
    pub archive_unreadable: IntCounter,
    /// Embedded mode's state snapshots that could not be written, or read back at start.
    pub state_snapshot_failures: IntCounter,
    /// API requests refused for want of a token (`401`) or role (`403`), or because the
    /// address sent too many wrong tokens (`429`).
    pub api_denied: IntCounterVec,
    /// Live-stream events a slow client missed (it was told to resync).
    pub sse_lagged: IntCounter,
    /// HTTP connections closed at once because the listener's cap was reached.
    pub http_refused: IntCounter,
    /// Webhook deliveries per provider and result (`accepted`, `refused`).
    pub hooks: IntCounterVec,
    /// Notification deliveries per channel kind and result (`delivered`, `retry`, `failed`,
    /// `skipped`).
    pub notifications: IntCounterVec,
    /// Time a batch spends in each stage of the pipeline ([`STAGES`]): dedup lookup, rule
    /// matching and firing construction, the detection state call, the alert store commit,
    /// marking the batch processed, compressing its events for the archive.
    pub batch_stage: HistogramVec,
    /// How old events are (now minus event time) when their batch reaches detection: the
    /// agents' batching, the broker and RabbitMQ, the consumer's batching. A replayed
    /// backlog shows here as old events.
    pub event_age: Histogram,
    /// How old a firing's triggering event is when the firing is committed to the store.
    pub firing_age: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| runtime::metrics::counter(&registry, name, help);
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            runtime::metrics::counter_vec(&registry, name, help, label, values)
        };
        let gauge = |name: &str, help: &str| runtime::metrics::gauge(&registry, name, help);
        let reasons: Vec<&str> = wire::model::DropReason::ALL.iter().map(|r| r.as_str()).collect();
        Self {
            messages_in: counter_vec(
                "auditflow_aggregator_messages_in_total",
                "Messages consumed from RabbitMQ.",
                "queue",
                &["native", "legacy", "heartbeats"],
            ),
            events_in: counter("auditflow_aggregator_events_in_total", "Events evaluated."),
            duplicates: counter(
                "auditflow_aggregator_duplicate_events_total",
                "Events skipped as already processed.",
            ),
            invalid: counter(
                "auditflow_aggregator_invalid_messages_total",
                "Undecodable messages sent to the dead-letter queue.",
            ),
            firings: counter("auditflow_aggregator_firings_total", "Rule firings stored."),
            shadow_firings: counter(
                "auditflow_aggregator_shadow_firings_total",
                "Firings of shadow-mode rules.",
            ),
            suppressed: counter(
                "auditflow_aggregator_suppressed_firings_total",
                "Firings held back by a cooldown.",
            ),
            late_events: counter(
                "auditflow_aggregator_late_events_total",
                "Events older than a window plus the allowed lateness.",
            ),
            batch_failures: counter(
                "auditflow_aggregator_batch_failures_total",
                "Batches retried because state or store failed.",
            ),
            edge_dropped: counter_vec(
                "auditflow_aggregator_edge_dropped_events_total",
                "Events agents reported dropping at the edge.",
                "reason",
                &reasons,
            ),
            rule_reloads: counter_vec(
                "auditflow_aggregator_rule_reloads_total",
                "Rule set reloads.",
                "result",
                &["ok", "invalid"],
            ),
            rules_loaded: gauge("auditflow_aggregator_rules_loaded", "Rules in the active set."),
            rabbitmq_connected: gauge(
                "auditflow_aggregator_rabbitmq_connected",
                "RabbitMQ sessions open (one per consumer); 0 when none is.",
            ),
            heartbeats: counter(
                "auditflow_aggregator_heartbeats_total",
                "Agent heartbeats consumed.",
            ),
            agents_silent: gauge(
                "auditflow_aggregator_agents_silent",
                "Agents whose heartbeats stopped.",
            ),
            consumer_sessions: counter_vec(
                "auditflow_aggregator_consumer_sessions_total",
                "RabbitMQ consumer sessions started, per feed: more than one means the consumer reconnected.",
                "feed",
                &["native", "heartbeats", "legacy"],
            ),
            store_bytes: gauge(
                "auditflow_aggregator_store_bytes",
                "The alert store's data in bytes (SQLite: without free pages; PostgreSQL: the tables of its schema with their indexes), measured by each retention run.",
            ),
            store_bound_bytes: gauge(
                "auditflow_aggregator_store_bound_bytes",
                "retention.max_db_mb in bytes; 0: no bound.",
            ),
            retention_deleted: counter_vec(
                "auditflow_aggregator_retention_deleted_total",
                "Rows retention deleted: resolved alerts (with their firings, history and deliveries), firings, retired agents, archive rows (event_batches, up to 4,096 events each).",
                "what",
                &["resolved_alerts", "firings", "agents", "events"],
            ),
            archived_events: counter(
                "auditflow_aggregator_archived_events_total",
                "Events written to the event archive.",
            ),
            archived_bytes: counter(
                "auditflow_aggregator_archived_bytes_total",
                "Compressed bytes written to the event archive (its rows' frames).",
            ),
            archive_compacted: counter(
                "auditflow_aggregator_archive_compacted_total",
                "Small archive rows merged into larger ones by compaction.",
            ),
            archive_unreadable: counter(
                "auditflow_aggregator_archive_unreadable_total",
                "Archive rows that could not be read (skipped by searches and backtests, left alone by compaction).",
            ),
            state_snapshot_failures: counter(
                "auditflow_aggregator_state_snapshot_failures_total",
                "Embedded mode: snapshots of the in-memory detection state that could not be written, or read back at start (the state then starts from the archive's replay).",
            ),
            api_denied: counter_vec(
                "auditflow_aggregator_api_denied_total",
                "API requests refused: no valid token (401), too low a role (403), too many wrong tokens from the address (429).",
                "status",
                &["401", "403", "429"],
            ),
            sse_lagged: counter(
                "auditflow_aggregator_sse_lagged_events_total",
                "Live-stream events slow clients missed (told to resync).",
            ),
            http_refused: counter(
                "auditflow_aggregator_http_connections_refused_total",
                "HTTP connections closed at once: the listener's connection cap was reached.",
            ),
            hooks: {
                let c = IntCounterVec::new(
                    Opts::new("auditflow_aggregator_webhooks_total", "Webhook deliveries."),
                    &["provider", "result"],
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                for p in ["github", "gitlab"] {
                    for r in ["accepted", "refused"] {
                        c.with_label_values(&[p, r]);
                    }
                }
                c
            },
            notifications: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "auditflow_aggregator_notifications_total",
                        "Outbox rows handled, per channel kind and result: delivered, retry, failed, skipped (filtered or silenced), settled (a change the channel is not told of), deferred (quiet hours, the rate cap, group_interval).",
                    ),
                    &["kind", "result"],
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            batch_stage: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "auditflow_aggregator_batch_stage_seconds",
                        "Time a batch spends in each pipeline stage.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["stage"],
                )
                .expect("valid metric");
                registry.register(Box::new(h.clone())).expect("unique metric");
                for stage in STAGES {
                    h.with_label_values(&[stage]);
                }
                h
            },
            event_age: histogram(
                &registry,
                "auditflow_aggregator_event_age_seconds",
                "Event age (now minus event time) when its batch reaches detection.",
            ),
            firing_age: histogram(
                &registry,
                "auditflow_aggregator_firing_age_seconds",
                "Age of a firing's triggering event when the firing is committed.",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        runtime::metrics::render(&self.registry)
    }
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_index_their_labels() {
        let stages =
            [Stage::Dedup, Stage::Detect, Stage::State, Stage::Store, Stage::Mark, Stage::Archive];
        let labels: Vec<&str> = stages.iter().map(|s| STAGES[*s as usize]).collect();
        assert_eq!(labels, STAGES);
        assert_eq!(STAGES[Stage::State as usize], "state");
    }
}
