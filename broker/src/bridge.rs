//! The bridge: reads agents' publishes from rumqttd through a local link, validates them and
//! moves them into RabbitMQ with publisher confirms; only after a confirm does it publish the
//! agent's `Ack` (see [`crate::acks`] for when that is allowed).
//!
//! While RabbitMQ is away it stops reading (rumqttd holds what arrives, agents keep spooling),
//! reconnects with jittered backoff and is not ready. In-flight memory is bounded by a window
//! of unconfirmed envelopes.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use runtime::amqp::Sessions;
use tokio_util::sync::CancellationToken;
use wire::{Envelope, Heartbeat, queues};

use crate::acks::{AckBook, AckForms};
use crate::report::{Refusal, Reporter};
use crate::telemetry::Metrics;

/// Unconfirmed envelopes at most; beyond this the bridge stops reading from rumqttd.
///
/// RabbitMQ confirms persistent messages after writing a batch of them (several ms), so the
/// bridge moves at most WINDOW envelopes per confirm round trip. 64 capped it near 6,400
/// envelopes/s, less than 300 agents sending 20 envelopes/s each (queueing in rumqttd: event
/// age 2 s at detection in `scripts/bench.sh fleet`). What the window costs is the pending
/// list (a few words per envelope); lapin holds the frames until they are written.
const WINDOW: usize = 1024;
/// A confirm not back within this long means the connection is gone (lapin does not always
/// fail pending confirms when the broker drops the connection): reconnect.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);

/// Topic filters the bridge subscribes to.
pub const EVENTS_FILTER: &str = "auditflow/v1/events/+";
/// Topic filter for heartbeats.
pub const HEARTBEAT_FILTER: &str = "auditflow/v1/heartbeat/+";

/// The next notification from rumqttd on an in-process link, after answering flow control.
///
/// rumqttd fills a link's buffer up to 200 notifications, then ends it with
/// `Notification::Unschedule` and stops serving that link until the link says it is ready
/// again (its network links do so after writing to the socket, `link/remote.rs`). A reader
/// that skips the `Unschedule` is never served again: the bridge stalled for good whenever
/// 200 publishes piled up between two of its reads (300 agents at 100 events/s did it at
/// once), while rumqttd kept acknowledging the agents' publishes. Everything before the
/// `Unschedule` was swapped out of the shared buffer by `next`, so saying ready here is right.
/// `ready` is a blocking send into the router's channel, like `LinkTx::publish`: the router
/// thread drains that channel without waiting on anything, and the send cannot be lost to a
/// cancelled `select!` branch the way an awaited `wake` could.
pub async fn next_notification(rx: &mut LinkRx) -> anyhow::Result<Option<Notification>> {
    loop {
        match rx.next().await.context("rumqttd link closed")? {
            Some(Notification::Unschedule) => rx.ready().context("rumqttd link closed")?,
            other => return Ok(other),
        }
    }
}

/// Notices publishes rumqttd dropped before the bridge read them. rumqttd keeps each topic
/// filter's publishes in a bounded in-memory log (`mqtt.rs`: 8 × 1 MiB) and, when a reader
/// falls further behind than that, drops the oldest segment and moves the reader on, logging
/// a cursor jump and nothing else. Every forwarded publish carries its absolute offset in the
/// filter's log, consecutive for consecutive publishes, so a step of more than one is the
/// number dropped.
#[derive(Debug, Default)]
pub struct LogWatch {
    events: Option<u64>,
    heartbeats: Option<u64>,
}

impl LogWatch {
    /// The publishes dropped before `forward` (0 when none or unknown).
    pub fn lost_before(&mut self, forward: &rumqttd::Forward) -> u64 {
        let Some((_, offset)) = forward.cursor else { return 0 };
        let last = if forward.publish.topic.starts_with(b"auditflow/v1/events/") {
            &mut self.events
        } else if forward.publish.topic.starts_with(b"auditflow/v1/heartbeat/") {
            &mut self.heartbeats
        } else {
            return 0;
        };
        let lost = last.map_or(0, |l| offset.saturating_sub(l).saturating_sub(1));
        *last = Some(offset);
        lost
    }
}

/// What a publish turned out to be.
#[derive(Debug)]
pub enum Incoming {
    /// A valid envelope from the node its topic names.
    Envelope { node: String, envelope: Envelope, frame: Vec<u8> },
    /// A valid heartbeat.
    Heartbeat { frame: Vec<u8> },
    /// An envelope that failed validation (for the dead-letter queue).
    Invalid { reason: &'static str, detail: String, topic: String, frame: Vec<u8> },
    /// Not for the bridge (wrong topic, bad heartbeat): counted, dropped.
    Ignored(&'static str),
    /// The broker's own envelope reporting a refusal (`report.rs`); acknowledges no agent.
    Report {
        /// The encoded envelope.
        frame: Vec<u8>,
    },
}

/// Validates one publish: the topic names the node, the frame decodes, and the node id inside
/// is the node of the topic. (Public for the aggregator's embedded mode, which bridges into
/// its pipeline instead of RabbitMQ.)
pub fn classify(topic: &[u8], payload: &[u8], max_frame: usize) -> Incoming {
    let Ok(topic) = std::str::from_utf8(topic) else { return Incoming::Ignored("unknown_topic") };
    let invalid = |reason, detail: String| Incoming::Invalid {
        reason,
        detail,
        topic: topic.to_owned(),
        frame: payload.to_vec(),
    };
    if let Some(node) = topic.strip_prefix("auditflow/v1/events/") {
        return match wire::frame::decode_with_limit::<Envelope>(payload, max_frame) {
            Ok(envelope) if envelope.node_id == node => {
                Incoming::Envelope { node: node.to_owned(), envelope, frame: payload.to_vec() }
            }
            Ok(envelope) => invalid(
                "node_mismatch",
                format!("topic node `{node}` but envelope node `{}`", envelope.node_id),
            ),
            Err(e) => invalid("undecodable", e.to_string()),
        };
    }
    if let Some(node) = topic.strip_prefix("auditflow/v1/heartbeat/") {
        return match wire::frame::decode_with_limit::<Heartbeat>(payload, max_frame) {
            Ok(h) if h.node_id == node => Incoming::Heartbeat { frame: payload.to_vec() },
            Ok(_) => Incoming::Ignored("node_mismatch"),
            Err(_) => Incoming::Ignored("undecodable"),
        };
    }
    Incoming::Ignored("unknown_topic")
}

/// Bridge settings.
#[derive(Clone, Debug)]
pub struct BridgeSettings {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Which form of ack each node takes (recorded by the topic ACL).
    pub ack_forms: AckForms,
}

/// Runs until cancelled.
pub async fn run(
    settings: BridgeSettings,
    mut link_tx: LinkTx,
    mut link_rx: LinkRx,
    mut refusals: tokio::sync::mpsc::Receiver<Refusal>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut reporter = Reporter::new();
    link_tx.subscribe(EVENTS_FILTER).context("subscribe to agents' events")?;
    link_tx.subscribe(HEARTBEAT_FILTER).context("subscribe to agents' heartbeats")?;
    let mut book = AckBook::default();
    let mut sessions = Sessions::new("bridge", metrics.rabbitmq_connected.clone());
    while let Some((conn, channel)) =
        sessions.connect(|| connect(&settings.amqp_url), &cancel).await
    {
        let result = pump(
            &settings,
            &channel,
            Links { tx: &mut link_tx, rx: &mut link_rx },
            (&mut refusals, &mut reporter),
            &mut book,
            &metrics,
            &cancel,
        )
        .await;
        metrics.in_flight.set(0);
        if sessions.ended(conn, result, &cancel).await {
            break;
        }
    }
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let queues = [queues::EVENTS, queues::EVENTS_DLQ, queues::HEARTBEATS];
    runtime::amqp::open_confirming(runtime::amqp::parse_url(url)?, &queues).await
}

/// What a confirm is for.
#[derive(Debug)]
enum Pending {
    Envelope { node: String, epoch: u64, first: u64, end: u64, events: u64 },
    Other,
}

/// The bridge's two ends of the in-process link to rumqttd.
struct Links<'a> {
    tx: &'a mut LinkTx,
    rx: &'a mut LinkRx,
}

async fn pump(
    settings: &BridgeSettings,
    channel: &Channel,
    links: Links<'_>,
    (refusals, reporter): (&mut tokio::sync::mpsc::Receiver<Refusal>, &mut Reporter),
    book: &mut AckBook,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let Links { tx: link_tx, rx: link_rx } = links;
    let mut confirms = FuturesOrdered::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // When the oldest unconfirmed publish went out (reset by every confirm).
    let mut oldest_sent = tokio::time::Instant::now();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut watch = LogWatch::default();
    let outcome: anyhow::Result<()> = async {
        loop {
            if pending.is_empty() {
                oldest_sent = tokio::time::Instant::now();
            }
            metrics.in_flight.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                _ = check.tick() => {
                    anyhow::ensure!(channel.status().connected(), "the channel to RabbitMQ closed");
                    anyhow::ensure!(
                        pending.is_empty() || oldest_sent.elapsed() < CONFIRM_TIMEOUT,
                        "no publisher confirm for {CONFIRM_TIMEOUT:?}"
                    );
                }
                confirmed = confirms.next(), if !confirms.is_empty() => {
                    oldest_sent = tokio::time::Instant::now();
                    let p = pending.pop_front().expect("one pending per confirm");
                    match confirmed {
                        Some(Ok(Confirmation::Ack(_))) => {
                            metrics.confirms.inc();
                            if let Pending::Envelope { node, epoch, first, end, events } = p {
                                metrics.envelopes_out.inc();
                                metrics.events_out.inc_by(events);
                                if let Some(run) = book.confirmed(&node, epoch, first, end) {
                                    let (topic, ack) = settings.ack_forms.message(&node, epoch, run);
                                    link_tx.publish(topic, ack).context("publish ack")?;
                                    metrics.acks_out.inc();
                                }
                            }
                        }
                        other => {
                            metrics.nacks.inc();
                            if let Pending::Envelope { node, epoch, first, .. } = &p {
                                book.lost(node, *epoch, *first);
                            }
                            anyhow::bail!("RabbitMQ did not confirm: {other:?}");
                        }
                    }
                }
                notification = next_notification(link_rx), if pending.len() < WINDOW => {
                    let Some(notification) = notification? else { continue };
                    if let Notification::Forward(forward) = notification {
                        let lost = watch.lost_before(&forward);
                        if lost > 0 {
                            metrics.log_overflow.inc_by(lost);
                            tracing::warn!(lost, "rumqttd dropped publishes the bridge had not read: it fell behind by more than rumqttd's log holds");
                        }
                        let item = classify(&forward.publish.topic, &forward.publish.payload, settings.max_frame);
                        if let Incoming::Invalid { reason, topic, .. } = &item
                            && let Some(node) = topic.strip_prefix("auditflow/v1/events/")
                        {
                            let refusal = Refusal { node: node.to_owned(), reason, access: "publish", topic: topic.clone() };
                            crate::report::report(None, metrics, refusal.clone());
                            let frame = wire::encode(&reporter.envelope(&refusal));
                            if let Some((p, confirm)) = publish(channel, Incoming::Report { frame }, metrics).await? {
                                pending.push_back(p);
                                confirms.push_back(confirm);
                            }
                        }
                        if let Some((p, confirm)) = publish(channel, item, metrics).await? {
                            pending.push_back(p);
                            confirms.push_back(confirm);
                        }
                    }
                }
                refusal = refusals.recv(), if pending.len() < WINDOW => {
                    // The sender lives as long as rumqttd: never closed while we run.
                    let Some(refusal) = refusal else { continue };
                    let frame = wire::encode(&reporter.envelope(&refusal));
                    if let Some((p, confirm)) = publish(channel, Incoming::Report { frame }, metrics).await? {
                        pending.push_back(p);
                        confirms.push_back(confirm);
                    }
                }
            }
        }
    }
    .await;
    // Whatever was not confirmed is lost to this bridge; the agents resend it.
    for p in pending {
        if let Pending::Envelope { node, epoch, first, .. } = p {
            book.lost(&node, epoch, first);
        }
    }
    outcome
}

type Confirm = lapin::PublisherConfirm;

/// Publishes one item; returns what its confirm is for.
async fn publish(
    channel: &Channel,
    item: Incoming,
    metrics: &Metrics,
) -> anyhow::Result<Option<(Pending, Confirm)>> {
    let persistent = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(wire::CONTENT_TYPE.into());
    let (queue, frame, properties, pending) = match item {
        Incoming::Envelope { node, envelope, frame } => {
            metrics.envelopes_in.inc();
            metrics.events_in.inc_by(envelope.events.len() as u64);
            let pending = Pending::Envelope {
                node,
                epoch: envelope.epoch,
                first: envelope.first_seq,
                end: envelope.end_seq(),
                events: envelope.events.len() as u64,
            };
            (queues::EVENTS, frame, persistent, pending)
        }
        Incoming::Heartbeat { frame } => {
            metrics.heartbeats.inc();
            (queues::HEARTBEATS, frame, persistent, Pending::Other)
        }
        Incoming::Invalid { reason, detail, topic, frame } => {
            metrics.refused.with_label_values(&[reason]).inc();
            metrics.invalid.inc();
            tracing::warn!(reason, detail = %detail, topic = %topic, "envelope refused, sent to the dead-letter queue");
            let mut headers = FieldTable::default();
            headers.insert("x-auditflow-reason".into(), AMQPValue::LongString(reason.into()));
            headers.insert("x-auditflow-detail".into(), AMQPValue::LongString(detail.into()));
            headers.insert("x-auditflow-topic".into(), AMQPValue::LongString(topic.into()));
            (queues::EVENTS_DLQ, frame, persistent.with_headers(headers), Pending::Other)
        }
        Incoming::Ignored(reason) => {
            metrics.refused.with_label_values(&[reason]).inc();
            return Ok(None);
        }
        Incoming::Report { frame } => (queues::EVENTS, frame, persistent, Pending::Other),
    };
    let confirm = channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &frame, properties)
        .await
        .with_context(|| format!("publish to {queue}"))?;
    Ok(Some((pending, confirm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(node: &str) -> Vec<u8> {
        wire::encode(&Envelope {
            node_id: node.into(),
            epoch: 1,
            first_seq: 0,
            events: vec![],
            dropped: Default::default(),
        })
    }

    fn forward(topic: &str, offset: u64) -> rumqttd::Forward {
        rumqttd::Forward {
            cursor: Some((0, offset)),
            size: 0,
            publish: rumqttd::protocol::Publish::new(topic.as_bytes().to_vec(), vec![], false),
            properties: None,
        }
    }

    #[test]
    fn dropped_publishes_are_the_gaps_between_offsets() {
        let mut w = LogWatch::default();
        assert_eq!(w.lost_before(&forward("auditflow/v1/events/a", 7)), 0, "no baseline yet");
        assert_eq!(w.lost_before(&forward("auditflow/v1/events/b", 8)), 0);
        assert_eq!(w.lost_before(&forward("auditflow/v1/heartbeat/a", 3)), 0, "its own log");
        assert_eq!(w.lost_before(&forward("auditflow/v1/events/a", 400)), 391);
        assert_eq!(w.lost_before(&forward("auditflow/v1/heartbeat/a", 4)), 0);
    }

    #[test]
    fn classification() {
        assert!(matches!(
            classify(b"auditflow/v1/events/pi-1", &envelope("pi-1"), 1 << 20),
            Incoming::Envelope { .. }
        ));
        assert!(matches!(
            classify(b"auditflow/v1/events/pi-1", &envelope("pi-2"), 1 << 20),
            Incoming::Invalid { reason: "node_mismatch", .. }
        ));
        assert!(matches!(
            classify(b"auditflow/v1/events/pi-1", b"\x01garbage", 1 << 20),
            Incoming::Invalid { reason: "undecodable", .. }
        ));
        assert!(matches!(
            classify(b"auditflow/v1/events/pi-1", &envelope("pi-1"), 4),
            Incoming::Invalid { reason: "undecodable", .. }
        ));
        assert!(matches!(
            classify(b"elsewhere", b"x", 1 << 20),
            Incoming::Ignored("unknown_topic")
        ));
        assert!(matches!(classify(b"\xff\xfe", b"x", 1 << 20), Incoming::Ignored("unknown_topic")));
    }
}
