//! The AuditFlow node agent: collects audit events on a node, filters them at the edge,
//! spools them to disk and delivers them upstream (design.md §3–§4). This crate is the library;
//! `main.rs` is a thin binary around it.
//!
//! Data flow: sources → bounded channel → [`pipeline`] (batches, spools before sending) →
//! [`spool`] on disk → transport ([`amqp`]) → acknowledgement → spool truncation.

pub mod amqp;
pub mod blind;
pub mod config;
pub mod files;
pub mod filter;
pub mod http;
pub mod journal;
pub mod mqtt;
pub mod parse;
pub mod pipeline;
pub mod scenario;
pub mod spool;
pub mod synthetic;
pub mod tail;
pub mod telemetry;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::{DropReason, Heartbeat, Timestamp};

pub use config::Config;

use crate::pipeline::BatchSettings;
use crate::spool::Spool;
use crate::telemetry::Metrics;

/// Capacity of the channel between the sources and the batcher.
const EVENT_CHANNEL: usize = 2048;
/// Capacity of the channel of events submitted over HTTP; beyond it the API answers 503.
const API_CHANNEL: usize = 256;
/// How often a heartbeat is sent.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The node name: the configured one, else the kernel's hostname.
pub fn node_name(config: &Config) -> String {
    if !config.node_id.is_empty() {
        return config.node_id.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-node".to_owned())
}

/// Runs the agent until `cancel` fires (or, with only finite sources — a synthetic limit, a
/// scenario — until every event is acknowledged), then drains: the open batch goes to the
/// spool, in-flight confirms get a moment to arrive.
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let node_id = node_name(&config);
    let metrics = Metrics::new();
    let (spool, report) =
        Spool::open(Path::new(&config.spool.dir), config.spool.max_bytes, config.spool.fsync)
            .with_context(|| format!("open the spool in {}", config.spool.dir))?;
    if report.repaired() {
        tracing::warn!(
            torn_records = report.torn_records,
            torn_events = report.torn_events,
            skipped_bytes = report.skipped_bytes,
            damaged_segments = report.damaged_segments,
            unreadable_segments = report.unreadable_segments,
            state_corrupt = report.state_corrupt,
            rebased_records = report.rebased_records,
            "spool repaired on start (damaged segments are kept in {}/quarantine)",
            config.spool.dir
        );
    }
    metrics.spool_repairs.with_label_values(&["skipped_bytes"]).inc_by(report.skipped_bytes);
    metrics.spool_repairs.with_label_values(&["damaged_segments"]).inc_by(report.damaged_segments);
    metrics
        .spool_repairs
        .with_label_values(&["unreadable_segments"])
        .inc_by(report.unreadable_segments);
    metrics.spool_repairs.with_label_values(&["torn_records"]).inc_by(report.torn_records);
    tracing::info!(
        node = %node_id,
        epoch = spool.epoch(),
        next_seq = spool.next_seq(),
        replay_batches = report.replay_records,
        new_epoch = report.new_epoch,
        "spool open"
    );
    metrics.spool_bytes.set(i64::try_from(spool.bytes()).unwrap_or(i64::MAX));
    let spool = Arc::new(Mutex::new(spool));

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("bind the HTTP port {}", config.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz, /metrics");

    let tracker = TaskTracker::new();
    let stop_pipeline = cancel.child_token();
    let wake = Arc::new(Notify::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_CHANNEL);
    let (api_tx, api_rx) = mpsc::channel(API_CHANNEL);

    // Torn records found on start travel upstream as drops like any other loss.
    let mut start_drops = wire::DropCounts::default();
    start_drops.add(DropReason::SpoolCorrupt, report.torn_events.max(report.torn_records));

    let http_state = http::HttpState {
        metrics: metrics.clone(),
        spool: Arc::clone(&spool),
        submit: api_tx,
        node_id: node_id.clone(),
        generate_event: config.http.generate_event,
        generate_event_token: Arc::from(config.http.generate_event_token.as_str()),
    };
    if let Some(addr) = config.http.legacy_listen {
        let legacy = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind the legacy generator port {addr}"))?;
        tracing::info!(addr = %legacy.local_addr()?, open = config.http.legacy_unauthenticated,
            "serving the legacy generator's POST /generate_event and /healthz");
        let seed = u64::try_from(Timestamp::now().as_nanos()).unwrap_or(0);
        let state = http::LegacyState {
            http: http_state.clone(),
            open: config.http.legacy_unauthenticated,
            generator: Arc::new(Mutex::new(wire::synth::LegacyGenerator::new(seed))),
        };
        tracker.spawn(http::serve_legacy(legacy, state, cancel.clone()));
    }
    tracker.spawn(http::serve(listener, http_state, cancel.clone()));

    let mut sources = Vec::new();
    if config.synthetic.enabled {
        sources.push(tracker.spawn(synthetic::run(
            synthetic::SyntheticSettings {
                rate_per_sec: config.synthetic.rate_per_sec,
                seed: config.synthetic.seed,
                limit: config.synthetic.limit,
                mix: config.synthetic.mix,
            },
            events_tx.clone(),
            metrics.clone(),
            stop_pipeline.clone(),
        )));
    }
    if !config.scenario.is_empty() {
        sources.push(tracker.spawn(scenario::run(
            config.scenario.clone(),
            events_tx.clone(),
            metrics.clone(),
            stop_pipeline.clone(),
        )));
    }
    let mut tails = Vec::new();
    for (name, t, format) in [
        ("auth", &config.sources.auth, parse::Format::Auth),
        ("dpkg", &config.sources.dpkg, parse::Format::Dpkg),
        ("k8s-audit", &config.sources.k8s_audit, parse::Format::K8sAudit),
    ] {
        if !t.enabled {
            continue;
        }
        let settings = tail::TailSettings {
            name,
            path: t.path.clone().into(),
            format,
            state_path: Path::new(&config.spool.dir).join(format!("tail-{name}.pos")),
            from_beginning: t.start_at == config::StartAt::Beginning,
            blind: config.sources.blind.clone(),
        };
        tails.push(
            tail::spawn(settings, events_tx.clone(), metrics.clone(), stop_pipeline.clone())
                .with_context(|| format!("start the {name} source"))?,
        );
    }
    if config.sources.journal.enabled {
        let j = &config.sources.journal;
        let journalctl = PathBuf::from(&j.journalctl);
        let reader = match j.reader {
            config::JournalReader::Auto => journal::Reader::auto(&journalctl),
            config::JournalReader::Journalctl => journal::Reader::Journalctl,
            config::JournalReader::Files => journal::Reader::Files,
        };
        let settings = journal::JournalSettings {
            reader,
            journalctl,
            directory: PathBuf::from(&j.directory),
            host_root: PathBuf::from(&j.host_root),
            state_path: Path::new(&config.spool.dir).join("journal.cursor"),
            from_beginning: j.start_at == config::StartAt::Beginning,
            blind: config.sources.blind.clone(),
        };
        tails.push(
            journal::spawn(settings, events_tx.clone(), metrics.clone(), stop_pipeline.clone())
                .context("start the journal source")?,
        );
    }
    if config.sources.files.enabled {
        let f = &config.sources.files;
        let settings = files::WatchSettings {
            paths: f.paths.iter().map(PathBuf::from).collect(),
            host_root: PathBuf::from(if f.host_root.is_empty() { "/" } else { &f.host_root }),
            sweep: Duration::from_secs(f.sweep_interval_s),
            state_path: Path::new(&config.spool.dir).join("files.state"),
        };
        // A thread like the tailing sources': it ends at the next check once cancelled.
        tails.push(
            files::spawn(settings, events_tx.clone(), metrics.clone(), stop_pipeline.clone())
                .context("start the watched-files source")?,
        );
    }
    drop(events_tx);

    let batcher = tracker.spawn(pipeline::run_batcher(
        BatchSettings {
            node_id: node_id.clone(),
            max_events: config.batch.max_events as usize,
            max_age: Duration::from_millis(config.batch.max_age_ms),
            filter: filter::Filter::new(&config.filter),
            priorities: config.priorities(),
        },
        events_rx,
        api_rx,
        start_drops,
        Arc::clone(&spool),
        Arc::clone(&wake),
        metrics.clone(),
        stop_pipeline.clone(),
    ));

    let (hb_tx, hb_rx) = watch::channel(None);
    tracker.spawn(heartbeats(
        node_id.clone(),
        Arc::clone(&spool),
        metrics.clone(),
        hb_tx,
        cancel.clone(),
    ));

    let stop_sender = cancel.child_token();
    let sender = match config.transport.kind {
        config::Transport::Amqp => tracker.spawn(amqp::run_sender(
            amqp::AmqpSettings {
                url: config.transport.amqp_url.clone(),
                queue: config.transport.amqp_queue.clone(),
                heartbeat_queue: config.transport.amqp_heartbeat_queue.clone(),
            },
            Arc::clone(&spool),
            Arc::clone(&wake),
            hb_rx,
            metrics.clone(),
            stop_sender.clone(),
        )),
        config::Transport::Mqtt => tracker.spawn(mqtt::run_sender(
            mqtt::MqttSettings::from_url(
                &config.transport.mqtt_url,
                &node_id,
                mqtt::Password::from_config(
                    &config.transport.mqtt_password,
                    &config.transport.mqtt_password_file,
                ),
                &config.transport.mqtt_ca_file,
            )?,
            Arc::clone(&spool),
            Arc::clone(&wake),
            hb_rx,
            metrics.clone(),
            stop_sender.clone(),
        )),
    };
    tracker.close();

    // With only finite sources (a synthetic limit, a scenario), the agent finishes by itself
    // once every event is acknowledged (benchmarks and tests use this). `tails` holds the
    // source threads (tailing and watched files): those run until stopped.
    let endless = (config.synthetic.enabled && config.synthetic.limit == 0) || !tails.is_empty();
    let finite = !sources.is_empty() && !endless;
    if finite {
        for s in sources {
            s.await.context("source task")??;
        }
        stop_pipeline.cancel();
        batcher.await.context("batcher task")??;
        loop {
            let pending = spool.lock().map_or(0, |s| s.pending().count());
            if pending == 0 || cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    } else {
        cancel.cancelled().await;
        batcher.await.context("batcher task")??;
    }
    stop_sender.cancel();
    sender.await.context("sender task")??;
    tracker.wait().await;
    for t in tails {
        // They stop at the next poll once the pipeline is cancelled.
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let s = spool.lock().map_err(|_| anyhow::anyhow!("spool lock poisoned"))?;
    tracing::info!(
        spooled = metrics.spooled.get(),
        sent = metrics.sent.get(),
        sent_bytes = metrics.sent_bytes.get(),
        acked = metrics.acked.get(),
        dropped = wire::DropReason::ALL
            .iter()
            .map(|r| metrics.dropped.with_label_values(&[r.as_str()]).get())
            .sum::<u64>(),
        pending_batches = s.pending().count(),
        "agent stopped"
    );
    Ok(())
}

/// Publishes a heartbeat frame every 10 s for the transport to send.
async fn heartbeats(
    node_id: String,
    spool: pipeline::SharedSpool,
    metrics: Metrics,
    out: watch::Sender<Option<Vec<u8>>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut interval = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        let mut dropped = wire::DropCounts::default();
        for reason in DropReason::ALL {
            dropped.add(reason, metrics.dropped.with_label_values(&[reason.as_str()]).get());
        }
        let heartbeat = Heartbeat {
            node_id: node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: started.elapsed().as_secs(),
            spool_bytes: spool.lock().map_or(0, |s| s.bytes()),
            events_sent: metrics.sent.get(),
            dropped,
            rules_version: String::new(),
            ts: Timestamp::now(),
        };
        let _ = out.send(Some(wire::encode(&heartbeat)));
    }
}
