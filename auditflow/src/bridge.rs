//! The bridge from the in-process MQTT broker into the detection pipeline. It keeps the
//! cluster profile's delivery guarantee: an agent's envelopes are acked only after the batch
//! holding them is committed to SQLite (design.md §4), so the in-process agent's spool, and
//! any outside agent's, replays what a crash lost.

use std::sync::Arc;
use std::time::Duration;

use aggregator::pipeline::{Item, Pipeline};
use aggregator::state::WindowState;
use aggregator::store::SharedStore;
use anyhow::Context;
use broker::acks::{AckBook, AckForms};
use broker::bridge::{
    EVENTS_FILTER, HEARTBEAT_FILTER, Incoming, LogWatch, classify, next_notification,
};
use broker::report::{Refusal, Reporter};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use runtime::retry::Backoff;
use tokio_util::sync::CancellationToken;
use wire::model::Heartbeat;

/// Envelopes and heartbeats per pipeline batch at most.
const BATCH: usize = 256;
/// How long a batch waits to fill.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Moves agents' publishes from the in-process broker into the pipeline, acking each agent
/// after its envelopes are committed, and the broker's refusals of nodes' actions in as
/// `mqtt_refused` events (`broker/src/report.rs`). Runs until cancelled.
pub async fn run<S: WindowState + 'static>(
    (mut tx, mut rx, mut refusals): (LinkTx, LinkRx, tokio::sync::mpsc::Receiver<Refusal>),
    ack_forms: AckForms,
    pipeline: Arc<Pipeline<S, SharedStore>>,
    max_frame: usize,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    tx.subscribe(EVENTS_FILTER).context("subscribe to agents' events")?;
    tx.subscribe(HEARTBEAT_FILTER).context("subscribe to agents' heartbeats")?;
    let mut book = AckBook::default();
    let mut watch = LogWatch::default();
    let mut reporter = Reporter::new();
    let metrics = pipeline.metrics.clone();
    loop {
        let mut incoming = Vec::new();
        let mut items = Vec::new();
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            n = next_notification(&mut rx) => incoming.extend(n.context("the MQTT broker's link closed")?),
            Some(r) = refusals.recv() => items.push(Item::Envelope(reporter.envelope(&r))),
        }
        while let Ok(r) = refusals.try_recv() {
            items.push(Item::Envelope(reporter.envelope(&r)));
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while incoming.len() < BATCH {
            match tokio::time::timeout_at(deadline, next_notification(&mut rx)).await {
                Ok(n) => incoming.extend(n.context("the MQTT broker's link closed")?),
                Err(_) => break,
            }
        }
        let mut streams = Vec::new();
        let mut beats: Vec<Heartbeat> = Vec::new();
        for n in incoming {
            let Notification::Forward(f) = n else { continue };
            let lost = watch.lost_before(&f);
            if lost > 0 {
                tracing::warn!(
                    lost,
                    "the MQTT broker dropped publishes before they were read: the pipeline fell behind by more than its log holds"
                );
            }
            match classify(&f.publish.topic, &f.publish.payload, max_frame) {
                Incoming::Envelope { node, envelope, .. } => {
                    streams.push((node, envelope.epoch, envelope.first_seq, envelope.end_seq()));
                    items.push(Item::Envelope(envelope));
                }
                Incoming::Heartbeat { frame } => {
                    if let Ok(h) = wire::frame::decode_with_limit::<Heartbeat>(&frame, max_frame) {
                        beats.push(h);
                    }
                }
                Incoming::Invalid { reason, detail, topic, .. } => {
                    metrics.invalid.inc();
                    tracing::warn!(reason, detail = %detail, topic = %topic, "envelope refused");
                    if let Some(node) = topic.strip_prefix("auditflow/v1/events/") {
                        let r = Refusal {
                            node: node.to_owned(),
                            reason,
                            access: "publish",
                            topic: topic.clone(),
                        };
                        items.push(Item::Envelope(reporter.envelope(&r)));
                    }
                }
                Incoming::Ignored(reason) => {
                    metrics.invalid.inc();
                    tracing::debug!(reason, "publish ignored");
                }
                // Only the broker makes reports; nothing on the link is one.
                Incoming::Report { .. } => {}
            }
        }
        metrics.messages_in.with_label_values(&["native"]).inc_by(streams.len() as u64);
        metrics.heartbeats.inc_by(beats.len() as u64);
        let mut backoff = Backoff::service();
        loop {
            let result = async {
                pipeline.heard(&beats).await?;
                pipeline.process(&items).await
            }
            .await;
            match result {
                Ok(_) => break,
                Err(e) => {
                    metrics.batch_failures.inc();
                    tracing::warn!(error = %format!("{e:#}"), "batch failed; retrying");
                    tokio::select! {
                        // Unacked envelopes are resent by their agents.
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        for (node, epoch, first, end) in streams {
            if let Some(run) = book.confirmed(&node, epoch, first, end) {
                let (topic, ack) = ack_forms.message(&node, epoch, run);
                tx.publish(topic, ack).context("publish ack")?;
            }
        }
    }
}
