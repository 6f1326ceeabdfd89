//! AuditFlow in one process (embedded mode, design.md §2): the composition of the services.
//! With no service configured, one process runs the MQTT broker for agents (rumqttd, from the
//! `broker` crate), a bridge from it straight into the aggregator's detection pipeline,
//! in-memory state, SQLite under the data directory, the API with the dashboard on its origin,
//! and an in-process agent for this host producing demo traffic.
//!
//! This is the only crate that depends on the services; they never depend on each other
//! (ARCHITECTURE.md), so the cluster binaries link only what they run.

pub mod bridge;
pub mod datadir;

use std::sync::Arc;

use aggregator::config::{Config, Secrets};
use aggregator::pipeline::Pipeline;
use aggregator::state::memory::MemoryState;
use aggregator::{Core, Listeners, Services};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What `auditflow` says when a service is configured.
pub const NO_SERVICES: &str = "auditflow runs the whole system in one process and uses no \
     service: unset AMQP_URL, DATABASE_URL and REDIS_URL (and services.*), or run \
     auditflow-aggregator, the cluster service, with them";

/// Runs embedded mode until `cancel` fires.
/// `auditflow backup PATH`: a consistent copy of the alert store while AuditFlow runs.
pub async fn backup(config: &Config, to: &std::path::Path) -> anyhow::Result<String> {
    let dir = datadir::DataDir::open(&config.data_dir)?;
    let r = aggregator::store::sqlite::backup(&dir.database(), to).await?;
    Ok(format!("backup: {} alerts, {} bytes, in {}", r.alerts, r.bytes, to.display()))
}

/// `auditflow restore PATH`: the alert store replaced by a backup (AuditFlow stopped: the data
/// directory's lock is taken for it).
pub async fn restore(config: &Config, from: &std::path::Path) -> anyhow::Result<String> {
    let dir = datadir::DataDir::open(&config.data_dir)?;
    let _lock = dir.lock()?;
    let (r, kept) = aggregator::store::sqlite::restore(from, &dir.database()).await?;
    let kept = kept
        .map_or(String::new(), |k| format!("; the store it replaced is kept as {}", k.display()));
    Ok(format!("restored: {} alerts from {}{kept}", r.alerts, from.display()))
}

pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let config = &config;
    anyhow::ensure!(config.is_embedded(), NO_SERVICES);
    // Held until the process stops.
    let _lock = datadir::DataDir::open(&config.data_dir)?.lock()?;
    aggregator::run_profile(
        config,
        cancel,
        |core, secrets, listeners, tracker, cancel| async move {
            start_embedded(config, core, secrets, listeners, &tracker, &cancel).await
        },
    )
    .await
}

async fn start_embedded(
    config: &Config,
    core: Core,
    secrets: Secrets,
    listeners: Listeners,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let e = &config.embedded;
    let dir = datadir::DataDir::open(&config.data_dir)?;
    let store =
        aggregator::store::open(&dir.database_url(), config.notify.outbox_channels(false)).await?;
    let (tokens, generated) = datadir::tokens(secrets.tokens, &dir)?;
    let node = agent::node_name(&agent::Config::default());
    let (credentials, password) = dir.credentials(&node)?;
    let mqtt_addr = e.mqtt_listen;
    let broker_metrics = broker::telemetry::Metrics::new();
    let (refusal_tx, refusal_rx) = tokio::sync::mpsc::channel(broker::report::QUEUE);
    let ack_forms = broker::acks::AckForms::default();
    let (link_tx, link_rx) = broker::mqtt::start(
        &broker::mqtt::MqttSettings {
            listen: mqtt_addr,
            credentials: Arc::new(credentials),
            // Service-account tokens are the DaemonSet's credential, a cluster-profile thing.
            tokens: None,
            max_payload_bytes: config.ingest.max_frame_bytes,
            max_connections: 256,
            max_inflight: 64,
            // Embedded mode is the single-box profile (listening on loopback by default);
            // agents on other machines over TLS go through `auditflow-broker`.
            tls: None,
            refusals: Some(refusal_tx),
            ack_forms: ack_forms.clone(),
        },
        &broker_metrics,
    )?;
    let metrics = core.metrics.clone();
    let state = MemoryState::new().with_single_events(config.retention.dedup_single_events);
    let since = restore_state(&state, &dir, &metrics);
    let pipeline = Arc::new(Pipeline {
        state,
        sink: store.clone(),
        rules: core.rules.clone(),
        metrics: metrics.clone(),
        archive: config.archive.enabled,
        in_flight: Default::default(),
    });
    let api_addr = listeners.api.local_addr()?;
    let services = Services {
        pipeline: pipeline.clone(),
        tokens,
        hooks: secrets.hooks,
        checks: Vec::new(),
        store_name: "sqlite",
        amqp: None,
        // The dashboard from the API's own origin: no CORS, no second port.
        extra_routes: Some(dashboard::assets()),
    };
    // What was evaluated after the snapshot, before the state takes anything new.
    let started = std::time::Instant::now();
    let replayed = aggregator::archive::replay_since(&store, &pipeline, since).await?;
    tracing::info!(
        rows = replayed.rows,
        events = replayed.events,
        unreadable = replayed.unreadable,
        ms = started.elapsed().as_millis() as u64,
        "detection state: archived events replayed"
    );
    aggregator::start(config, core, services, listeners, tracker, cancel);
    let state_path = dir.state();
    {
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        let every = e.state_snapshot_interval;
        let state_path = state_path.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(every) => save_state(&pipeline, &state_path).await,
                }
            }
        });
    }
    {
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        let max_frame = config.ingest.max_frame_bytes;
        tracker.spawn(async move {
            if let Err(e) = bridge::run(
                (link_tx, link_rx, refusal_rx),
                ack_forms,
                pipeline.clone(),
                max_frame,
                cancel.clone(),
            )
            .await
            {
                tracing::error!(error = %format!("{e:#}"), "embedded bridge failed");
                cancel.cancel();
            }
            // The bridge took its last batch: the state as it stops.
            save_state(&pipeline, &state_path).await;
        });
    }
    if e.demo {
        let mqtt = format!("127.0.0.1:{}", mqtt_addr.port());
        let agent_config = agent_config(&dir, &node, &mqtt, &password, e.demo_rate);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            if let Err(e) = agent::run(agent_config, cancel).await {
                tracing::error!(error = %format!("{e:#}"), "the in-process agent failed");
            }
        });
    }
    let host = if api_addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        api_addr.ip().to_string()
    };
    let mut banner = format!(
        "\nAuditFlow is running (embedded mode, data in {}).\n  Open:        http://{host}:{}/\n",
        dir.root.display(),
        api_addr.port()
    );
    let token_file = dir.root.join("admin.token");
    match generated {
        datadir::AdminToken::Created(token) => banner.push_str(&format!(
            "  API token:   {token}   (admin; shown this once, kept in {})\n  Try:         curl -H 'Authorization: Bearer {token}' http://{host}:{}/api/v1/alerts\n",
            token_file.display(),
            api_addr.port()
        )),
        datadir::AdminToken::Kept => banner.push_str(&format!(
            "  API token:   in {} (admin)\n  Try:         curl -H \"Authorization: Bearer $(cat {})\" http://{host}:{}/api/v1/alerts\n",
            token_file.display(),
            token_file.display(),
            api_addr.port()
        )),
        datadir::AdminToken::Configured => {}
    }
    banner.push_str(&format!(
        "  MQTT:        {mqtt_addr} for agents (node:password lines in {})\n  Demo agent:  {}\n",
        dir.root.join("agents.credentials").display(),
        if e.demo { format!("{node}, {} synthetic events/s", e.demo_rate) } else { "off".into() }
    ));
    println!("{banner}");
    tracing::info!(api = %api_addr, mqtt = %mqtt_addr, "aggregator running (embedded)");
    Ok(())
}

/// Events archived this long before the snapshot was taken are replayed too (a batch is
/// applied to the state before it is committed, and clocks move): replaying what the state
/// already holds changes nothing.
const REPLAY_MARGIN_MS: i64 = 60_000;
/// Without a snapshot (the first start after an upgrade, or one that could not be read), the
/// last hour of the archive is replayed: every window of the shipped rules, with room.
const REPLAY_WITHOUT_SNAPSHOT_MS: i64 = 3_600_000;

/// Loads the state snapshot into `state`; returns from when the archive is to be replayed. A
/// snapshot that does not read back is kept beside it as `state.damaged`, reported and
/// counted, and the state starts from the replay alone.
fn restore_state(
    state: &MemoryState,
    dir: &datadir::DataDir,
    metrics: &aggregator::telemetry::Metrics,
) -> i64 {
    let now = aggregator::store::now_ms();
    let path = dir.state();
    match state.load(&path, now) {
        Ok(Some(r)) => {
            tracing::info!(
                keys = r.keys,
                age_s = (now - r.taken_ms) / 1000,
                "detection state restored from its snapshot"
            );
            r.taken_ms - REPLAY_MARGIN_MS
        }
        Ok(None) => now - REPLAY_WITHOUT_SNAPSHOT_MS,
        Err(e) => {
            metrics.state_snapshot_failures.inc();
            let kept = path.with_extension("damaged");
            let _ = std::fs::rename(&path, &kept);
            tracing::warn!(
                error = %e,
                kept = %kept.display(),
                "the detection state's snapshot is unreadable; starting from the last hour of the archive"
            );
            now - REPLAY_WITHOUT_SNAPSHOT_MS
        }
    }
}

/// Writes the state's snapshot off the runtime's threads (a copy under the state's lock,
/// then an fsync, slow on an SD card); a failure is reported, counted and tried again at the
/// next interval.
async fn save_state(
    pipeline: &Arc<Pipeline<MemoryState, aggregator::store::SharedStore>>,
    path: &std::path::Path,
) {
    let (p, at) = (pipeline.clone(), path.to_owned());
    let saved = tokio::task::spawn_blocking(move || p.state.save(&at, aggregator::store::now_ms()))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = saved {
        pipeline.metrics.state_snapshot_failures.inc();
        tracing::warn!(error = %e, path = %path.display(), "cannot write the detection state's snapshot");
    }
}

/// The in-process agent's configuration: this host's name, its spool under the data
/// directory, the embedded broker, demo traffic at `rate` events/s.
pub fn agent_config(
    dir: &datadir::DataDir,
    node: &str,
    mqtt: &str,
    password: &str,
    rate: f64,
) -> agent::Config {
    let mut c = agent::Config { node_id: node.to_owned(), ..Default::default() };
    c.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.spool.dir = dir.spool().display().to_string();
    c.transport.kind = agent::config::Transport::Mqtt;
    c.transport.mqtt_url = format!("mqtt://{mqtt}");
    c.transport.mqtt_password = password.to_owned();
    c.synthetic.enabled = true;
    c.synthetic.rate_per_sec = rate;
    c.synthetic.seed = wire::model::Timestamp::now().as_nanos() as u64;
    c
}
