//! Every metric the broker exports, defined in one place (`auditflow_broker_*`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

/// The broker's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// MQTT clients that passed authentication (connections accepted).
    pub clients_accepted: IntCounter,
    /// HTTP connections closed at once because the listener's cap was reached.
    pub http_refused: IntCounter,
    /// Actions of authenticated nodes refused, per node and reason (`acl`, `node_mismatch`,
    /// `undecodable`); the node label is bounded by the fleet (only authenticated clients).
    pub node_refusals: IntCounterVec,
    /// Refusal reports (alerts) dropped because their queue was full.
    pub reports_dropped: IntCounter,
    /// Connections that replaced an existing one with the same client id, per node.
    pub takeovers: IntCounterVec,
    /// MQTT client connections open now (see `mqtt::spawn_connection_gauge`).
    pub clients_connected: IntGauge,
    /// MQTT connections refused, per reason (`auth`, `acl`, `token_*`).
    pub clients_refused: IntCounterVec,
    /// Envelopes received from agents.
    pub envelopes_in: IntCounter,
    /// Events in those envelopes.
    pub events_in: IntCounter,
    /// Envelopes confirmed by RabbitMQ.
    pub envelopes_out: IntCounter,
    /// Events in those envelopes.
    pub events_out: IntCounter,
    /// Publisher confirms received (acks).
    pub confirms: IntCounter,
    /// Publisher nacks and publish failures.
    pub nacks: IntCounter,
    /// Messages refused, per reason (`node_mismatch`, `undecodable`, `unknown_topic`).
    pub refused: IntCounterVec,
    /// Envelopes sent to the dead-letter queue.
    pub invalid: IntCounter,
    /// Agents' publishes rumqttd dropped from its log before the bridge read them (see
    /// `bridge::LogWatch`).
    pub log_overflow: IntCounter,
    /// Envelopes published and not yet confirmed.
    pub in_flight: IntGauge,
    /// 1 while connected to RabbitMQ.
    pub rabbitmq_connected: IntGauge,
    /// Heartbeats forwarded.
    pub heartbeats: IntCounter,
    /// Acks published to agents.
    pub acks_out: IntCounter,
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
        Self {
            node_refusals: {
                let c = IntCounterVec::new(
                    prometheus::Opts::new(
                        "auditflow_broker_node_refusals_total",
                        "Actions of authenticated nodes refused (each also raises FLEET-MQTT-REFUSED-001), per node and reason.",
                    ),
                    &["node", "reason"],
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            takeovers: {
                let c = IntCounterVec::new(
                    prometheus::Opts::new(
                        "auditflow_broker_client_takeovers_total",
                        "Connections that replaced an existing one with the same client id (a quick reconnect, or two holders of one credential), per node.",
                    ),
                    &["node"],
                )
                .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            reports_dropped: counter(
                "auditflow_broker_refusal_reports_dropped_total",
                "Refusal reports dropped because their queue was full (a flood of refusals).",
            ),
            http_refused: counter(
                "auditflow_broker_http_connections_refused_total",
                "HTTP connections closed at once: the listener's connection cap was reached.",
            ),
            clients_accepted: counter(
                "auditflow_broker_clients_accepted_total",
                "MQTT connections that passed authentication.",
            ),
            clients_connected: gauge(
                "auditflow_broker_clients_connected",
                "MQTT client connections open on the listener (established TCP, sampled every 2 s; -1 where unknown).",
            ),
            clients_refused: counter_vec(
                "auditflow_broker_clients_refused_total",
                "MQTT clients refused: `auth` (bad credentials or client id) or `token_*` (a service-account token that failed a check) at connect, `acl` (a publish or subscription outside the client's own topics) afterwards, which disconnects it.",
                "reason",
                &["auth", "acl"],
            ),
            envelopes_in: counter("auditflow_broker_envelopes_in_total", "Envelopes received."),
            events_in: counter("auditflow_broker_events_in_total", "Events received."),
            envelopes_out: counter(
                "auditflow_broker_envelopes_out_total",
                "Envelopes confirmed by RabbitMQ.",
            ),
            events_out: counter(
                "auditflow_broker_events_out_total",
                "Events confirmed by RabbitMQ.",
            ),
            confirms: counter("auditflow_broker_confirms_total", "Publisher confirms received."),
            nacks: counter("auditflow_broker_nacks_total", "Publisher nacks and publish failures."),
            refused: counter_vec(
                "auditflow_broker_refused_total",
                "Messages refused.",
                "reason",
                &["node_mismatch", "undecodable", "unknown_topic"],
            ),
            invalid: counter(
                "auditflow_broker_invalid_envelopes_total",
                "Envelopes sent to the dead-letter queue.",
            ),
            log_overflow: counter(
                "auditflow_broker_log_overflow_publishes_total",
                "Agents' publishes rumqttd dropped from its in-memory log before the bridge read them (the bridge fell behind by more than the log holds). Agents resend them, but see docs/broker.md: one dropped at the start of an agent's session can be acknowledged unseen.",
            ),
            in_flight: gauge(
                "auditflow_broker_in_flight_envelopes",
                "Envelopes awaiting a confirm.",
            ),
            rabbitmq_connected: gauge(
                "auditflow_broker_rabbitmq_connected",
                "1 while connected to RabbitMQ.",
            ),
            heartbeats: counter("auditflow_broker_heartbeats_total", "Heartbeats forwarded."),
            acks_out: counter("auditflow_broker_acks_out_total", "Acks published to agents."),
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        runtime::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
