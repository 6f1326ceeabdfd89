//! The AuditFlow aggregator: consumes events, deduplicates them, runs the detection rules with
//! shared state, stores and folds alerts, notifies, and serves the REST API and metrics; with
//! no services configured it runs the whole system embedded (DESIGN §2, §4–§6). This crate is
//! the library; `main.rs` is a thin binary around it.

pub mod config;
pub mod detect;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod legacy_alert;
pub mod notify;
pub mod pipeline;
pub mod reload;
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

/// Runs the aggregator until `cancel` fires. Listeners are bound before anything else so that
/// a taken port is reported at once.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    if config.is_embedded() {
        anyhow::bail!(
            "embedded mode (no AMQP_URL, DATABASE_URL, REDIS_URL) is not available in this build \
             yet; set all three to run the cluster profile"
        );
    }
    let secrets = config.secrets().map_err(|e| anyhow::anyhow!("{}", e.join("; ")))?;
    let api = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("bind the API to {}", config.http.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(&config.http.metrics_listen)
        .await
        .with_context(|| format!("bind metrics to {}", config.http.metrics_listen))?;
    let metrics = Metrics::new();
    let (set, initial_digest) = load_rules(&config)?;
    metrics.rules_loaded.set(set.rules.len() as i64);
    let status =
        Arc::new(Mutex::new(RuleStatus { version: set.version.clone(), last_error: None }));
    let lateness = config.detection.lateness();
    let rules = Arc::new(Rules::new(Detector::new(Arc::new(set), lateness)));

    let s = &config.services;
    let state = RedisState::connect(&s.redis_url, &config.detection.redis_prefix)
        .await
        .context("connect to Redis")?;
    let store = store::open(&s.database_url, config.notify.outbox_channels(true)).await?;
    let pipeline = Arc::new(Pipeline {
        state: state.clone(),
        sink: store.clone(),
        rules: rules.clone(),
        metrics: metrics.clone(),
    });

    let tracker = TaskTracker::new();
    let redis_check: Check = Arc::new(move || {
        let state = state.clone();
        Box::pin(async move { state.ping().await.map_err(|e| e.to_string()) })
    });
    let pg = store.clone();
    let pg_check: Check = Arc::new(move || {
        let store = pg.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let m = metrics.clone();
    let amqp_check: Check = Arc::new(move || {
        let connected = m.rabbitmq_connected.get() > 0;
        Box::pin(async move { if connected { Ok(()) } else { Err("not connected".into()) } })
    });
    let app = AppState {
        metrics: metrics.clone(),
        checks: vec![("rabbitmq", amqp_check), ("redis", redis_check), ("postgresql", pg_check)],
    };

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
    if let Some(r) = &reloader {
        tracker.spawn(r.clone().run(cancel.clone()));
    }
    let api_state = ApiState {
        store: store.clone(),
        rules: rules.clone(),
        rule_status: status,
        reloader,
        intake: pipeline.clone(),
        tokens: Arc::new(secrets.tokens),
        hooks: Arc::new(secrets.hooks),
        metrics: metrics.clone(),
        silent_after: config.detection.silent_after(),
        legacy_open: config.api.legacy_unauthenticated,
        cancel: cancel.clone(),
    };
    if api_state.tokens.is_empty() {
        tracing::warn!(
            "no API token configured (api.tokens_file, AUDITFLOW_API_TOKENS): every API call will be refused"
        );
    }
    tracker.spawn(http::serve(api, http::router(app.clone(), api_state), cancel.clone()));
    tracker.spawn(http::serve(metrics_listener, http::metrics_router(app), cancel.clone()));

    let notifier = Arc::new(notify::Notifier {
        store: store.clone(),
        channels: config.notify.channels.clone(),
        amqp: config.notify.audit_alerts.then(|| notify::AmqpPublisher::new(&s.amqp_url)),
        max_attempts: config.notify.max_attempts,
        metrics: metrics.clone(),
    });
    tracker.spawn(notifier.run(cancel.clone()));
    tracker.spawn(fleet::run(pipeline.clone(), config.detection.silent_after(), cancel.clone()));
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
    tracing::info!(api = %config.http.listen, metrics = %config.http.metrics_listen, "aggregator running");
    tracker.close();
    cancel.cancelled().await;
    tracker.wait().await;
    Ok(())
}
