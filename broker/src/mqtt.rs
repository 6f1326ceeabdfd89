//! rumqttd, configured in code from our config: one MQTT 3.1.1 listener for agents, per-node
//! authentication, limits sized for a Pi, its HTTP console and Prometheus exporter off (the
//! console has no authentication). Only AuditFlow's topics exist: the router starts with the
//! events, heartbeat and ack filters, and each node may touch only its own ([`allowed`], a topic
//! ACL bound to the client id the connection authenticated with): a node cannot publish as
//! another, forge another's acks or read anyone else's traffic (design.md §4.3).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::IntGauge;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{
    Access, Broker, ConnectionSettings, RouterConfig, ServerSettings, Takeover, TlsConfig, TopicAcl,
};

use crate::acks::AckForms;
use crate::bridge::{EVENTS_FILTER, HEARTBEAT_FILTER};
use crate::credentials::Credentials;
use crate::kubetoken::TokenVerifier;
use crate::report::{Refusal, report};
use crate::telemetry::Metrics;

/// Topic filter of the acks the bridge publishes for agents of earlier versions.
pub const ACK_FILTER: &str = "auditflow/v1/ack/+";

/// Topic filter of the run acks the bridge publishes.
pub const RUN_ACK_FILTER: &str = "auditflow/v1/run-ack/+";

/// Per agent, the log holds this much: a window of 32 envelopes of ~1 KiB, what every agent
/// sends at once when the fleet reconnects after a broker restart.
const LOG_PER_CONNECTION: usize = 32 << 10;

/// The log's 1 MiB segments for `max_connections` agents: 8 at least, enough for every
/// agent's window at once. With 8 for a thousand agents, the burst of their windows when they
/// connected overflowed the log before the bridge could read it; rumqttd dropped the oldest
/// segments, nothing was acknowledged, and resends fed the backlog (docs/broker.md).
pub fn log_segments(max_connections: usize) -> usize {
    (max_connections * LOG_PER_CONNECTION).div_ceil(1 << 20).max(8)
}

/// Settings for the embedded MQTT broker.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Listener address.
    pub listen: SocketAddr,
    /// Who may connect with a password.
    pub credentials: Arc<Credentials>,
    /// Who may connect with a Kubernetes service-account token (the DaemonSet's agents).
    pub tokens: Option<Arc<TokenVerifier>>,
    /// Largest publish accepted.
    pub max_payload_bytes: usize,
    /// Most clients at once.
    pub max_connections: usize,
    /// Most unacknowledged QoS 1 publishes per connection.
    pub max_inflight: usize,
    /// MQTT over TLS with this certificate chain and key (PEM files); `None` for plain MQTT.
    pub tls: Option<TlsFiles>,
    /// Where refused actions of authenticated nodes are reported (they become alerts).
    pub refusals: Option<tokio::sync::mpsc::Sender<Refusal>>,
    /// Records which acknowledgement topic each node subscribes to, for the bridge.
    pub ack_forms: AckForms,
}

/// The listener's certificate chain and private key, PEM files. rumqttd reads them for every
/// connection it accepts, so a renewed certificate (a Secret updated in place) takes effect
/// without a restart.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// rumqttd reports unreadable or malformed files only in its log, once per connection
    /// attempt: check them at start so that a bad Secret is an error the operator sees.
    fn check(&self) -> anyhow::Result<TlsConfig> {
        let pem = |path: &PathBuf, what: &str, marker: &str| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read the TLS {what} {}", path.display()))?;
            anyhow::ensure!(
                text.contains(marker),
                "the TLS {what} {} holds no PEM `{marker}` block",
                path.display()
            );
            Ok(path.display().to_string())
        };
        Ok(TlsConfig::Rustls {
            capath: None,
            certpath: pem(&self.cert, "certificate", "-----BEGIN CERTIFICATE-----")?,
            keypath: pem(&self.key, "key", "PRIVATE KEY-----")?,
        })
    }
}

/// Starts rumqttd on its own thread (its `start` blocks forever and cannot be stopped) and
/// returns a local link for the bridge. Fails clearly when the port is taken.
pub fn start(settings: &MqttSettings, metrics: &Metrics) -> anyhow::Result<(LinkTx, LinkRx)> {
    // rumqttd reports a failed bind only in its log, from its own thread: check first, so that
    // a taken port is an error the operator sees.
    std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("the MQTT address {} is not available", settings.listen))?;
    let tls = settings.tls.as_ref().map(TlsFiles::check).transpose()?;
    let tls_on = tls.is_some();

    let credentials = Arc::clone(&settings.credentials);
    let tokens = settings.tokens.clone();
    let accepted = metrics.clients_accepted.clone();
    let refused_counter = metrics.clients_refused.clone();
    let refused_acl = metrics.clients_refused.with_label_values(&["acl"]);
    let acl_metrics = metrics.clone();
    let refusals = settings.refusals.clone();
    let ack_forms = settings.ack_forms.clone();
    let topic_acl = TopicAcl(Arc::new(move |client_id: &str, access: Access, topic: &str| {
        let ok = allowed(client_id, access, topic);
        if ok && matches!(access, Access::Subscribe) {
            ack_forms.subscribed(client_id, topic);
        }
        if !ok {
            refused_acl.inc();
            report(
                refusals.as_ref(),
                &acl_metrics,
                Refusal {
                    node: client_id.to_owned(),
                    reason: "acl",
                    access: match access {
                        Access::Publish => "publish",
                        Access::Subscribe => "subscribe",
                    },
                    topic: topic.to_owned(),
                },
            );
            tracing::warn!(
                client_id,
                topic,
                ?access,
                "MQTT client disconnected: topic outside its own"
            );
        }
        ok
    }));
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: settings.max_payload_bytes,
        max_inflight_count: settings.max_inflight,
        auth: None,
        external_auth: None,
        dynamic_filters: false,
    };
    connections.set_auth_handler(move |client_id: String, username: String, password: String| {
        let verdict = match &tokens {
            // A token is checked as a token only: a JWT is never also tried as a password.
            Some(tokens) if TokenVerifier::is_token(&password) => {
                if client_id == username {
                    tokens.verify(&client_id, &password).map_err(|e| {
                        tracing::warn!(client_id = %client_id, error = %e, "MQTT client refused");
                        e.label()
                    })
                } else {
                    Err("auth")
                }
            }
            _ => credentials.allows(&client_id, &username, &password).then_some(()).ok_or("auth"),
        };
        match verdict {
            Ok(()) => accepted.inc(),
            Err(reason) => {
                refused_counter.with_label_values(&[reason]).inc();
                if reason == "auth" {
                    tracing::warn!(client_id = %client_id, "MQTT client refused: bad credentials or client id");
                }
            }
        }
        let ok = verdict.is_ok();
        async move { ok }
    });
    let server = ServerSettings {
        name: "agents".to_owned(),
        listen: settings.listen,
        tls,
        next_connection_delay_ms: 1,
        connections,
    };
    let takeovers = metrics.takeovers.clone();
    let on_takeover = Takeover(Arc::new(move |client_id: &str| {
        // Also what a quick reconnect does while the broker still holds the old connection
        // (a Wi-Fi drop), so it is counted, not alerted on: a steady rate for one node means
        // two holders of its credential.
        takeovers.with_label_values(&[client_id]).inc();
        tracing::warn!(
            client_id,
            "a new connection took over this client id; the old one was dropped"
        );
    }));
    let router = RouterConfig {
        topic_acl: Some(topic_acl),
        on_takeover: Some(on_takeover),
        // One more for the bridge's local link.
        max_connections: settings.max_connections + 1,
        max_outgoing_packet_count: 256,
        // Per topic filter, a log of 1 MiB segments. What a stalled bridge cannot take in time
        // is dropped here and resent by the agents, whose spools hold it until acknowledged.
        max_segment_size: 1 << 20,
        max_segment_count: log_segments(settings.max_connections),
        custom_segment: None,
        initialized_filters: Some(vec![
            EVENTS_FILTER.to_owned(),
            HEARTBEAT_FILTER.to_owned(),
            ACK_FILTER.to_owned(),
            RUN_ACK_FILTER.to_owned(),
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
    spawn_connection_gauge(settings.listen.port(), metrics.clients_connected.clone());
    tracing::info!(addr = %settings.listen, tls = tls_on, "MQTT listener for agents");
    Ok(link)
}

/// The topic ACL: a client (whose client id is its node name, checked with its password at
/// connect) may publish its events and heartbeats and subscribe to its acks (either form), nothing else: no
/// other node's topics, no wildcards, no topics outside AuditFlow's. The bridge's in-process
/// link is not subject to it.
pub fn allowed(client_id: &str, access: Access, topic: &str) -> bool {
    if client_id.is_empty() || client_id.contains(['/', '+', '#']) {
        return false;
    }
    let own = |prefix: &str| topic.strip_prefix(prefix) == Some(client_id);
    match access {
        Access::Publish => own("auditflow/v1/events/") || own("auditflow/v1/heartbeat/"),
        Access::Subscribe => own("auditflow/v1/ack/") || own("auditflow/v1/run-ack/"),
    }
}

/// How often [`spawn_connection_gauge`] samples.
const GAUGE_PERIOD: Duration = Duration::from_secs(2);

/// Keeps `gauge` at the number of client connections open on the MQTT port.
///
/// rumqttd reports connects (the auth handler sees them) but has no hook for disconnects, and
/// its router meters are only pushed while messages flow, so the last client to leave would
/// stay counted. The kernel knows: the gauge counts the established TCP connections whose
/// local port is the listener's, from `/proc/net/tcp` and `/proc/net/tcp6` of the process's
/// network namespace (the pod's, on Kubernetes), sampled every two seconds. A client counts
/// from its TCP connect; one that fails authentication is closed at once. Elsewhere than
/// Linux the gauge stays at -1.
fn spawn_connection_gauge(port: u16, gauge: IntGauge) {
    let spawned = std::thread::Builder::new().name("mqtt-clients".to_owned()).spawn(move || {
        loop {
            gauge.set(established_on(port).map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)));
            std::thread::sleep(GAUGE_PERIOD);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the connected-clients gauge");
    }
}

/// Established TCP connections with local port `port`; `None` when `/proc/net` is unreadable.
fn established_on(port: u16) -> Option<usize> {
    let mut total = None;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            *total.get_or_insert(0) += count_established(&text, port);
        }
    }
    total
}

/// Counts the rows of a `/proc/net/tcp{,6}` table in state `01` (ESTABLISHED) whose local
/// address ends in `:PORT` (hex). Rows it cannot read are skipped.
fn count_established(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let mut cols = row.split_whitespace();
            let local = cols.nth(1);
            let state = cols.nth(1);
            let local_port = local
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && state == Some("01")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_holds_every_agents_window() {
        assert_eq!(log_segments(1), 8);
        assert_eq!(log_segments(256), 8);
        assert_eq!(log_segments(1024), 32);
        assert_eq!(log_segments(1025), 33);
    }

    #[test]
    fn a_node_touches_only_its_own_topics() {
        use Access::{Publish, Subscribe};
        assert!(allowed("pi-a", Publish, "auditflow/v1/events/pi-a"));
        assert!(allowed("pi-a", Publish, "auditflow/v1/heartbeat/pi-a"));
        assert!(allowed("pi-a", Subscribe, "auditflow/v1/ack/pi-a"));
        assert!(allowed("pi-a", Subscribe, "auditflow/v1/run-ack/pi-a"));
        for (access, topic) in [
            (Publish, "auditflow/v1/events/pi-b"),
            (Publish, "auditflow/v1/heartbeat/pi-b"),
            (Publish, "auditflow/v1/ack/pi-a"),
            (Publish, "auditflow/v1/ack/pi-b"),
            (Publish, "auditflow/v1/run-ack/pi-a"),
            (Subscribe, "auditflow/v1/run-ack/pi-b"),
            (Subscribe, "auditflow/v1/run-ack/+"),
            (Publish, "auditflow/v1/events/pi-a/x"),
            (Publish, "somewhere/else"),
            (Subscribe, "#"),
            (Subscribe, "auditflow/v1/events/+"),
            (Subscribe, "auditflow/v1/ack/+"),
            (Subscribe, "auditflow/v1/ack/pi-b"),
            (Subscribe, "auditflow/v1/events/pi-a"),
            (Subscribe, "$share/g/auditflow/v1/ack/pi-a"),
        ] {
            assert!(!allowed("pi-a", access, topic), "{access:?} {topic}");
        }
        assert!(!allowed("", Publish, "auditflow/v1/events/"));
        assert!(!allowed("+", Subscribe, "auditflow/v1/ack/+"));
        assert!(!allowed("#", Subscribe, "auditflow/v1/ack/#"));
    }

    #[test]
    fn counts_established_connections_on_the_port() {
        // Shape of /proc/net/tcp: a listener on 1883 (0A), two clients connected to it (01,
        // local port 075B), the client side of one of them (remote port 075B), a connection
        // closing (06), and a torn row.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:075B 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:D2F0 0100007F:075B 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0A00000B:075B 0A000017:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0A00000B:075B 0A000018:9C41 06 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   5: garbage
";
        assert_eq!(count_established(table, 1883), 2);
        assert_eq!(count_established(table, 8883), 0);
        assert_eq!(count_established("", 1883), 0);
    }

    #[test]
    fn tls_files_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let bad_cert = dir.path().join("bad.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        std::fs::write(&bad_cert, "not a certificate").unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let files = TlsFiles { cert: cert.clone(), key: dir.path().join("missing.pem") };
        let e = format!("{:#}", files.check().unwrap_err());
        assert!(e.contains("missing.pem"), "{e}");
        let files = TlsFiles { cert: bad_cert, key: key.clone() };
        let e = format!("{:#}", files.check().unwrap_err());
        assert!(e.contains("holds no PEM `-----BEGIN CERTIFICATE-----` block"), "{e}");
        assert!(TlsFiles { cert, key }.check().is_ok());
    }
}
