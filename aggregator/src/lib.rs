//! The AuditFlow aggregator: consumes events, deduplicates them, runs the detection rules with
//! shared state, stores and folds alerts, notifies, and serves the REST API and metrics; with
//! no services configured it runs the whole system embedded (design.md §2, §4–§6). This crate is
//! the library; `main.rs` is a thin binary around it.

pub mod config;
pub mod detect;
pub mod embedded;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod legacy_alert;
pub mod notify;
pub mod pipeline;
pub mod reload;
pub mod rule_tests;
pub mod rules;
pub mod state;
pub mod store;
pub mod telemetry;

pub use config::Config;

use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::detect::Detector;
use crate::http::{ApiState, AppState, Check};
use crate::ingest::{ConsumerSettings, Feed};
use crate::pipeline::{Pipeline, Rules};
use crate::reload::{Reloader, RuleStatus};
use crate::rules::RuleSet;
use crate::state::memory::MemoryState;
use crate::state::redis::RedisState;
use crate::telemetry::Metrics;

/// Loads the rule set the configuration names: the directory (with the digest of the files
/// read, which the reloader starts from), or the shipped pack.
pub fn load_rules(config: &Config) -> anyhow::Result<(RuleSet, Option<u32>)> {
    if config.rules_dir.is_empty() {
        return Ok((RuleSet::shipped(), None));
    }
    let problem = |e: rules::RuleErrors| anyhow::anyhow!("rules in {}: {e}", config.rules_dir);
    let files = rules::read_dir(std::path::Path::new(&config.rules_dir)).map_err(problem)?;
    let set = RuleSet::parse(&files).map_err(problem)?;
    Ok((set, Some(reload::digest(&files))))
}

/// What both profiles share once started: the pieces the API, notifier and watchers need.
struct Core {
    metrics: Metrics,
    rules: Arc<Rules>,
    status: Arc<Mutex<RuleStatus>>,
    reloader: Option<Arc<Reloader>>,
    /// The notification channels' HTTP clients (built at start: a bad CA file is an error).
    http: notify::HttpClients,
}

/// Starts the API and metrics servers, the rule reloader, the notifier and the fleet watcher.
/// `/readyz` checks `checks` and then the store, under the name `store_name`.
#[allow(clippy::too_many_arguments)]
fn start_common<S: state::WindowState + 'static>(
    config: &Config,
    core: Core,
    pipeline: Arc<Pipeline<S, store::SharedStore>>,
    tokens: http::auth::Tokens,
    hooks: http::hooks::HookSecrets,
    mut checks: Vec<(&'static str, Check)>,
    store_name: &'static str,
    listeners: (tokio::net::TcpListener, tokio::net::TcpListener),
    amqp: Option<notify::AmqpPublisher>,
    with_dashboard: bool,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) {
    let store = pipeline.sink.clone();
    let pinged = store.clone();
    let store_check: Check = Arc::new(move || {
        let store = pinged.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    checks.push((store_name, store_check));
    let app = AppState { metrics: core.metrics.clone(), checks };
    if let Some(r) = &core.reloader {
        tracker.spawn(r.clone().run(cancel.clone()));
    }
    let api_state = ApiState {
        store: store.clone(),
        rules: core.rules,
        rule_status: core.status,
        reloader: core.reloader,
        intake: pipeline.clone(),
        tokens: Arc::new(tokens),
        hooks: Arc::new(hooks),
        metrics: core.metrics.clone(),
        silent_after: config.detection.silent_after(),
        legacy_open: config.api.legacy_unauthenticated,
        cancel: cancel.clone(),
        guard: Arc::default(),
    };
    if api_state.tokens.is_empty() {
        tracing::warn!(
            "no API token configured (api.tokens_file, AUDITFLOW_API_TOKENS): every API call will be refused"
        );
    }
    let mut router = http::router(app.clone(), api_state);
    if with_dashboard {
        // Embedded mode serves the dashboard from the API's own origin.
        router = router.merge(dashboard::assets());
    }
    let (api, metrics_listener) = listeners;
    let refused = core.metrics.http_refused.clone();
    tracker.spawn(http::serve(api, router, refused.clone(), cancel.clone()));
    tracker.spawn(http::serve(
        metrics_listener,
        http::metrics_router(app),
        refused,
        cancel.clone(),
    ));
    let notifier = Arc::new(notify::Notifier {
        store,
        channels: config.notify.channels.clone(),
        amqp,
        max_attempts: config.notify.max_attempts,
        metrics: core.metrics,
        http: core.http,
    });
    tracker.spawn(notifier.run(cancel.clone()));
    tracker.spawn(fleet::run(pipeline, config.detection.silent_after(), cancel.clone()));
}

/// Runs the aggregator until `cancel` fires: the cluster profile when the services are
/// configured, else embedded mode. Listeners are bound before anything else so that a taken
/// port is reported at once.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let secrets = config.secrets().map_err(|e| anyhow::anyhow!("{}", e.join("; ")))?;
    let (api_listen, metrics_listen) = (config.api_listen(), config.metrics_listen());
    let api = tokio::net::TcpListener::bind(&api_listen)
        .await
        .with_context(|| format!("bind the API to {api_listen}"))?;
    let metrics_listener = tokio::net::TcpListener::bind(&metrics_listen)
        .await
        .with_context(|| format!("bind metrics to {metrics_listen}"))?;
    let metrics = Metrics::new();
    let (set, initial_digest) = load_rules(&config)?;
    metrics.rules_loaded.set(set.rules.len() as i64);
    let status =
        Arc::new(Mutex::new(RuleStatus { version: set.version.clone(), last_error: None }));
    let lateness = config.detection.lateness();
    let rules = Arc::new(Rules::new(Detector::new(Arc::new(set), lateness)));
    let reloader = (!config.rules_dir.is_empty()).then(|| {
        Arc::new(Reloader {
            dir: config.rules_dir.clone().into(),
            interval: config.detection.reload(),
            lateness,
            rules: rules.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            last: Mutex::new(initial_digest),
        })
    });
    let http = notify::HttpClients::new(&config.notify.channels)?;
    let core = Core { metrics: metrics.clone(), rules: rules.clone(), status, reloader, http };
    let tracker = TaskTracker::new();
    if config.is_embedded() {
        run_embedded(&config, core, secrets, (api, metrics_listener), &tracker, &cancel).await?;
    } else {
        run_cluster(&config, core, secrets, (api, metrics_listener), &tracker, &cancel).await?;
    }
    tracker.close();
    cancel.cancelled().await;
    tracker.wait().await;
    Ok(())
}

async fn run_cluster(
    config: &Config,
    core: Core,
    secrets: config::Secrets,
    listeners: (tokio::net::TcpListener, tokio::net::TcpListener),
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let s = &config.services;
    let state = RedisState::connect(&s.redis_url, &config.detection.redis_prefix)
        .await
        .context("connect to Redis")?;
    let store = store::open(&s.database_url, config.notify.outbox_channels(true)).await?;
    let metrics = core.metrics.clone();
    let pipeline = Arc::new(Pipeline {
        state: state.clone(),
        sink: store.clone(),
        rules: core.rules.clone(),
        metrics: metrics.clone(),
    });
    let redis_check: Check = Arc::new(move || {
        let state = state.clone();
        Box::pin(async move { state.ping().await.map_err(|e| e.to_string()) })
    });
    let m = metrics.clone();
    let amqp_check: Check = Arc::new(move || {
        let connected = m.rabbitmq_connected.get() > 0;
        Box::pin(async move { if connected { Ok(()) } else { Err("not connected".into()) } })
    });
    let amqp = config.notify.audit_alerts.then(|| notify::AmqpPublisher::new(&s.amqp_url));
    let (http_addr, metrics_addr) = (config.api_listen(), config.metrics_listen());
    start_common(
        config,
        core,
        pipeline.clone(),
        secrets.tokens,
        secrets.hooks,
        vec![("rabbitmq", amqp_check), ("redis", redis_check)],
        "postgresql",
        listeners,
        amqp,
        false,
        tracker,
        cancel,
    );
    let mut feeds = vec![Feed::Native, Feed::Heartbeats];
    if config.ingest.legacy_queue {
        feeds.push(Feed::Legacy);
    }
    for feed in feeds {
        let settings = ConsumerSettings {
            amqp_url: s.amqp_url.clone(),
            feed,
            prefetch: config.ingest.prefetch,
            batch_max: config.ingest.batch_max,
            batch_wait: std::time::Duration::from_millis(config.ingest.batch_wait_ms),
            max_frame: config.ingest.max_frame_bytes,
        };
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            if let Err(e) = ingest::run(settings, pipeline, cancel.clone()).await {
                tracing::error!(error = %format!("{e:#}"), "consumer failed");
                cancel.cancel();
            }
        });
    }
    tracing::info!(api = %http_addr, metrics = %metrics_addr, "aggregator running (cluster profile)");
    Ok(())
}

async fn run_embedded(
    config: &Config,
    core: Core,
    secrets: config::Secrets,
    listeners: (tokio::net::TcpListener, tokio::net::TcpListener),
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let e = &config.embedded;
    let dir = embedded::DataDir::open(&config.data_dir)?;
    let store = store::open(&dir.database_url(), config.notify.outbox_channels(false)).await?;
    let (tokens, generated) = embedded::tokens(secrets.tokens, &dir)?;
    let node = agent::node_name(&agent::Config::default());
    let (credentials, password) = dir.credentials(&node)?;
    let mqtt_addr: std::net::SocketAddr = e.mqtt_listen.parse().context("embedded.mqtt_listen")?;
    let broker_metrics = broker::telemetry::Metrics::new();
    let (refusal_tx, refusal_rx) = tokio::sync::mpsc::channel(broker::report::QUEUE);
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
        },
        &broker_metrics,
    )?;
    let metrics = core.metrics.clone();
    let pipeline = Arc::new(Pipeline {
        state: MemoryState::new(),
        sink: store.clone(),
        rules: core.rules.clone(),
        metrics: metrics.clone(),
    });
    let api_addr = listeners.0.local_addr()?;
    start_common(
        config,
        core,
        pipeline.clone(),
        tokens,
        secrets.hooks,
        Vec::new(),
        "sqlite",
        listeners,
        None,
        true,
        tracker,
        cancel,
    );
    {
        let pipeline = pipeline.clone();
        let cancel = cancel.clone();
        let max_frame = config.ingest.max_frame_bytes;
        tracker.spawn(async move {
            if let Err(e) = embedded::bridge(
                (link_tx, link_rx, refusal_rx),
                pipeline,
                max_frame,
                cancel.clone(),
            )
            .await
            {
                tracing::error!(error = %format!("{e:#}"), "embedded bridge failed");
                cancel.cancel();
            }
        });
    }
    if e.demo {
        let mqtt = format!("127.0.0.1:{}", mqtt_addr.port());
        let agent_config = embedded::agent_config(&dir, &node, &mqtt, &password, e.demo_rate);
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
        embedded::AdminToken::Created(token) => banner.push_str(&format!(
            "  API token:   {token}   (admin; shown this once, kept in {})\n  Try:         curl -H 'Authorization: Bearer {token}' http://{host}:{}/api/v1/alerts\n",
            token_file.display(),
            api_addr.port()
        )),
        embedded::AdminToken::Kept => banner.push_str(&format!(
            "  API token:   in {} (admin)\n  Try:         curl -H \"Authorization: Bearer $(cat {})\" http://{host}:{}/api/v1/alerts\n",
            token_file.display(),
            token_file.display(),
            api_addr.port()
        )),
        embedded::AdminToken::Configured => {}
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
