//! rumqttd, configured in code from our config: one MQTT 3.1.1 listener for agents, per-node
//! authentication, limits sized for a Pi, its HTTP console and Prometheus exporter off (the
//! console has no authentication). Only AuditFlow's topics exist: the router starts with the
//! events, heartbeat and ack filters and refuses publishes to anything else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

use crate::bridge::{EVENTS_FILTER, HEARTBEAT_FILTER};
use crate::credentials::Credentials;
use crate::telemetry::Metrics;

/// Topic filter of the acks the bridge publishes.
pub const ACK_FILTER: &str = "auditflow/v1/ack/+";

/// Settings for the embedded MQTT broker.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Listener address.
    pub listen: SocketAddr,
    /// Who may connect.
    pub credentials: Arc<Credentials>,
    /// Largest publish accepted.
    pub max_payload_bytes: usize,
    /// Most clients at once.
    pub max_connections: usize,
    /// Most unacknowledged QoS 1 publishes per connection.
    pub max_inflight: usize,
}

/// Starts rumqttd on its own thread (its `start` blocks forever and cannot be stopped) and
/// returns a local link for the bridge. Fails clearly when the port is taken.
pub fn start(settings: &MqttSettings, metrics: &Metrics) -> anyhow::Result<(LinkTx, LinkRx)> {
    // rumqttd reports a failed bind only in its log, from its own thread: check first, so that
    // a taken port is an error the operator sees.
    std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("the MQTT address {} is not available", settings.listen))?;

    let credentials = Arc::clone(&settings.credentials);
    let accepted = metrics.clients_accepted.clone();
    let refused = metrics.clients_refused.with_label_values(&["auth"]);
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: settings.max_payload_bytes,
        max_inflight_count: settings.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: false,
    };
    connections.set_auth_handler(move |client_id: String, username: String, password: String| {
        let ok = credentials.allows(&client_id, &username, &password);
        if ok {
            accepted.inc();
        } else {
            refused.inc();
            tracing::warn!(client_id = %client_id, "MQTT client refused: bad credentials or client id");
        }
        async move { ok }
    });
    let server = ServerSettings {
        name: "agents".to_owned(),
        listen: settings.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        // One more for the bridge's local link.
        max_connections: settings.max_connections + 1,
        max_outgoing_packet_count: 256,
        // Per topic filter: 8 × 1 MiB of log. What a stalled bridge cannot take in time is
        // dropped here and resent by the agents, whose spools hold it until acknowledged.
        max_segment_size: 1 << 20,
        max_segment_count: 8,
        custom_segment: None,
        initialized_filters: Some(vec![
            EVENTS_FILTER.to_owned(),
            HEARTBEAT_FILTER.to_owned(),
            ACK_FILTER.to_owned(),
        ]),
        shared_subscriptions_strategy: Default::default(),
    };
    let config = rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("agents".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    let link = broker.link("auditflow-bridge").context("open the bridge's local link")?;
    std::thread::Builder::new()
        .name("rumqttd".to_owned())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the MQTT broker stopped");
            }
        })
        .context("start the MQTT broker thread")?;
    tracing::info!(addr = %settings.listen, "MQTT listener for agents");
    Ok(link)
}
