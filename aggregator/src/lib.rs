//! The AuditFlow aggregator: consumes events, deduplicates them, runs the detection rules with
//! shared state, stores and folds alerts, notifies, and serves the REST API and metrics
//! (design.md §2, §4–§6). [`run`] is the cluster profile (RabbitMQ, Redis, PostgreSQL);
//! [`Core`], [`Listeners`], [`Services`] and [`start`] are the pieces a profile is built from,
//! which the `auditflow` crate composes into embedded mode. `main.rs` is a thin binary.

pub mod archive;
pub mod backtest;
pub mod config;
pub mod detect;
pub mod evidence;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod legacy_alert;
pub mod legacy_import;
pub mod notify;
pub mod pipeline;
pub mod reload;
pub mod retention;
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

/// What every profile shares once started: the pieces the API, notifier and watchers need.
pub struct Core {
    /// The aggregator's metrics.
    pub metrics: Metrics,
    /// The live rule set.
    pub rules: Arc<Rules>,
    status: Arc<Mutex<RuleStatus>>,
    reloader: Option<Arc<Reloader>>,
    /// The notification channels' HTTP clients (built at start: a bad CA file is an error).
    http: notify::HttpClients,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("reloads", &self.reloader.is_some()).finish_non_exhaustive()
    }
}

impl Core {
    /// Loads the rules, builds the metrics, the reloader (when a rule directory is set) and
    /// the notification clients.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let (set, initial_digest) = load_rules(config)?;
        metrics.rules_loaded.set(set.rules.len() as i64);
        let status =
            Arc::new(Mutex::new(RuleStatus { version: set.version.clone(), last_error: None }));
        let lateness = config.detection.allowed_lateness;
        let rules = Arc::new(Rules::new(Detector::new(Arc::new(set), lateness)));
        let reloader = (!config.rules_dir.is_empty()).then(|| {
            Arc::new(Reloader {
                dir: config.rules_dir.clone().into(),
                interval: config.detection.reload_interval,
                lateness,
                rules: rules.clone(),
                status: status.clone(),
                metrics: metrics.clone(),
                last: Mutex::new(initial_digest),
            })
        });
        let http = notify::HttpClients::new(&config.notify.channels)?;
        Ok(Self { metrics, rules, status, reloader, http })
    }
}

/// The API's and `/metrics`' listeners, bound before anything else starts so that a taken
/// port is reported at once.
#[derive(Debug)]
pub struct Listeners {
    /// The API (and whatever [`Services::extra_routes`] adds).
    pub api: tokio::net::TcpListener,
    /// `/metrics`.
    pub metrics: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds `http.listen` and `http.metrics_listen` (or the profile's defaults).
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let (api_listen, metrics_listen) = (config.api_listen(), config.metrics_listen());
        let api = tokio::net::TcpListener::bind(&api_listen)
            .await
            .with_context(|| format!("bind the API to {api_listen}"))?;
        let metrics = tokio::net::TcpListener::bind(&metrics_listen)
            .await
            .with_context(|| format!("bind metrics to {metrics_listen}"))?;
        Ok(Self { api, metrics })
    }
}

/// What a profile (the cluster profile here, embedded mode in the `auditflow` crate) brings
/// to [`start`]: its pipeline over its state and store, and what its API serves.
pub struct Services<S: state::WindowState> {
    /// The detection pipeline over the profile's state and store.
    pub pipeline: Arc<Pipeline<S, store::SharedStore>>,
    /// API tokens.
    pub tokens: http::auth::Tokens,
    /// Webhook secrets.
    pub hooks: http::hooks::HookSecrets,
    /// `/readyz` checks, before the store's own.
    pub checks: Vec<(&'static str, Check)>,
    /// The store's name in `/readyz`.
    pub store_name: &'static str,
    /// The `audit_alerts` publisher (cluster profile, when enabled).
    pub amqp: Option<notify::AmqpPublisher>,
    /// Routes served beside the API on its origin (embedded mode: the dashboard).
    pub extra_routes: Option<axum::Router>,
}

impl<S: state::WindowState> std::fmt::Debug for Services<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("store_name", &self.store_name).finish_non_exhaustive()
    }
}

/// Starts the API and metrics servers, the rule reloader, the notifier and the fleet watcher
/// on `tracker`. `/readyz` checks the services' checks and then the store.
pub fn start<S: state::WindowState + 'static>(
    config: &Config,
    core: Core,
    services: Services<S>,
    listeners: Listeners,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) {
    let Services { pipeline, tokens, hooks, mut checks, store_name, amqp, extra_routes } = services;
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
    let notifier = Arc::new(notify::Notifier {
        store: store.clone(),
        channels: config.notify.channels.clone(),
        amqp,
        max_attempts: config.notify.max_attempts,
        dashboard_url: config.notify.dashboard_url.clone(),
        legacy: config.legacy.clone(),
        metrics: core.metrics.clone(),
        http: core.http,
        cap: Default::default(),
    });
    let api_state = ApiState {
        notifier: notifier.clone(),
        store: store.clone(),
        rules: core.rules,
        rule_status: core.status,
        reloader: core.reloader,
        intake: pipeline.clone(),
        tokens: Arc::new(tokens),
        hooks: Arc::new(hooks),
        metrics: core.metrics.clone(),
        silent_after: config.detection.agent_silent_after,
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
    if let Some(extra) = extra_routes {
        router = router.merge(extra);
    }
    let refused = core.metrics.http_refused.clone();
    tracker.spawn(http::serve(listeners.api, router, refused.clone(), cancel.clone()));
    tracker.spawn(http::serve(
        listeners.metrics,
        http::metrics_router(app),
        refused,
        cancel.clone(),
    ));
    tracker.spawn(notifier.run(cancel.clone()));
    tracker.spawn(retention::run(
        store.clone(),
        config.retention.clone(),
        core.metrics.clone(),
        cancel.clone(),
    ));
    if config.archive.enabled {
        tracker.spawn(archive::run_compaction(store.clone(), core.metrics.clone(), cancel.clone()));
    }
    tracker.spawn(fleet::run(pipeline, config.detection.agent_silent_after, cancel.clone()));
}

/// What `auditflow-aggregator` says when no service is configured.
pub const NEEDS_SERVICES: &str = "auditflow-aggregator is the cluster service: set AMQP_URL, \
     DATABASE_URL and REDIS_URL (or services.*); `auditflow` runs the whole system in one \
     process with none of them";

/// Runs the cluster profile until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let config = &config;
    anyhow::ensure!(!config.is_embedded(), NEEDS_SERVICES);
    run_profile(config, cancel, |core, secrets, listeners, tracker, cancel| async move {
        run_cluster(config, core, secrets, listeners, &tracker, &cancel).await
    })
    .await
}

/// A profile's life: reads the secrets, binds the listeners before anything else (so that a
/// taken port is reported at once), builds the [`Core`], lets `start` spawn the profile's
/// tasks on the tracker, and after `cancel` fires waits for every task to finish.
pub async fn run_profile<F, Fut>(
    config: &Config,
    cancel: CancellationToken,
    start: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Core, config::Secrets, Listeners, TaskTracker, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let secrets = config.secrets().map_err(|e| anyhow::anyhow!("{}", e.join("; ")))?;
    let listeners = Listeners::bind(config).await?;
    let core = Core::new(config)?;
    let tracker = TaskTracker::new();
    start(core, secrets, listeners, tracker.clone(), cancel.clone()).await?;
    tracker.close();
    cancel.cancelled().await;
    tracker.wait().await;
    Ok(())
}

async fn run_cluster(
    config: &Config,
    core: Core,
    secrets: config::Secrets,
    listeners: Listeners,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let s = &config.services;
    let state = RedisState::connect(&s.redis_url, &config.detection.redis_prefix)
        .await
        .context("connect to Redis")?
        .with_single_events(config.retention.dedup_single_events);
    let store = store::postgres::PgStore::connect(
        &s.database_url,
        &s.database_schema,
        config.notify.outbox_channels(true),
    )
    .await?;
    let store = store::SharedStore::new(Arc::new(store));
    let metrics = core.metrics.clone();
    let pipeline = Arc::new(Pipeline {
        state: state.clone(),
        sink: store.clone(),
        rules: core.rules.clone(),
        metrics: metrics.clone(),
        archive: config.archive.enabled,
        in_flight: Default::default(),
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
    let services = Services {
        pipeline: pipeline.clone(),
        tokens: secrets.tokens,
        hooks: secrets.hooks,
        checks: vec![("rabbitmq", amqp_check), ("redis", redis_check)],
        store_name: "postgresql",
        amqp,
        extra_routes: None,
    };
    start(config, core, services, listeners, tracker, cancel);
    let mut feeds = vec![Feed::Native, Feed::Heartbeats];
    if config.ingest.legacy_queue {
        feeds.push(Feed::Legacy);
    }
    for feed in feeds {
        let settings = ConsumerSettings {
            amqp_url: s.amqp_url.clone(),
            feed,
            prefetch: if feed == Feed::Legacy {
                config.ingest.legacy_prefetch
            } else {
                config.ingest.prefetch
            },
            batch_max: if feed == Feed::Legacy {
                config.ingest.legacy_batch_max
            } else {
                config.ingest.batch_max
            },
            batch_wait: std::time::Duration::from_millis(config.ingest.batch_wait_ms),
            max_frame: config.ingest.max_frame_bytes,
        };
        // Heartbeats are tiny and only touch the fleet table: one consumer is plenty.
        let consumers = if feed == Feed::Heartbeats { 1 } else { config.ingest.consumers };
        for _ in 0..consumers {
            let (settings, pipeline, cancel) = (settings.clone(), pipeline.clone(), cancel.clone());
            tracker.spawn(async move {
                if let Err(e) = ingest::run(settings, pipeline, cancel.clone()).await {
                    tracing::error!(error = %format!("{e:#}"), "consumer failed");
                    cancel.cancel();
                }
            });
        }
    }
    tracing::info!(api = %http_addr, metrics = %metrics_addr, "aggregator running (cluster profile)");
    Ok(())
}
