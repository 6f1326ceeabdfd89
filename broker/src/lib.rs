//! The AuditFlow broker: an embedded MQTT broker (rumqttd) for agents and a bridge that moves
//! their envelopes into RabbitMQ with publisher confirms, acking an agent only after RabbitMQ
//! confirmed (design.md §3–§4). This crate is the library; `main.rs` is a thin binary around it.

pub mod acks;
pub mod bridge;
pub mod config;
pub mod credentials;
pub mod http;
pub mod kubetoken;
pub mod mqtt;
pub mod report;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::credentials::Credentials;
use crate::telemetry::Metrics;

/// Runs the broker until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let credentials = if config.mqtt.credentials_file.is_empty() {
        if config.mqtt.kubernetes.jwks_file.is_empty() {
            tracing::warn!(
                "no credentials file and no Kubernetes key set: every MQTT client will be refused"
            );
        }
        Credentials::default()
    } else {
        Credentials::load(std::path::Path::new(&config.mqtt.credentials_file))
            .map_err(|e| anyhow::anyhow!(e.join("; ")))
            .context("load the credentials file")?
    };
    let listen = config.mqtt.listen;
    let http = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("bind the HTTP port {}", config.http.listen))?;
    let (refusal_tx, refusal_rx) = tokio::sync::mpsc::channel(report::QUEUE);
    let ack_forms = acks::AckForms::default();
    let (link_tx, link_rx) = mqtt::start(
        &mqtt::MqttSettings {
            listen,
            credentials: Arc::new(credentials),
            max_payload_bytes: config.mqtt.max_payload_bytes as usize,
            max_connections: config.mqtt.max_connections as usize,
            max_inflight: usize::from(config.mqtt.max_inflight),
            tokens: config
                .mqtt
                .kubernetes
                .policy()
                .map(kubetoken::TokenVerifier::new)
                .transpose()
                .map_err(|e| anyhow::anyhow!("mqtt.kubernetes: {e}"))?
                .map(Arc::new),
            tls: (!config.mqtt.tls_cert.is_empty()).then(|| mqtt::TlsFiles {
                cert: config.mqtt.tls_cert.clone().into(),
                key: config.mqtt.tls_key.clone().into(),
            }),
            refusals: Some(refusal_tx),
            ack_forms: ack_forms.clone(),
        },
        &metrics,
    )?;
    tracing::info!(addr = %http.local_addr()?, "serving /healthz, /readyz, /metrics");
    let http_task = tokio::spawn(http::serve(http, metrics.clone(), cancel.clone()));
    let bridge = bridge::run(
        bridge::BridgeSettings {
            amqp_url: config.amqp.url.clone(),
            max_frame: config.mqtt.max_payload_bytes as usize,
            ack_forms,
        },
        link_tx,
        link_rx,
        refusal_rx,
        metrics.clone(),
        cancel.clone(),
    )
    .await;
    cancel.cancel();
    http_task.await.context("HTTP task")??;
    bridge
}
