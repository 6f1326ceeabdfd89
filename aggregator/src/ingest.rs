//! RabbitMQ consumers: our envelopes from `auditflow.events` and, optionally, legacy JSON
//! events from `audit_events` (design.md §8). Deliveries are processed in batches and acked only
//! after the batch's effects are committed (design.md §4). Undecodable messages are copied to
//! `auditflow.events.dlq` with the reason in headers (publisher confirms) and rejected without
//! requeue — never requeued forever. Connection loss: reconnect with jittered backoff; what
//! was not acked is redelivered and recognised by the dedup record.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use runtime::amqp::Sessions;
use runtime::retry::Backoff;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wire::model::Timestamp;
use wire::{Envelope, Heartbeat, legacy, queues};

use crate::pipeline::{Item, Pipeline};
use crate::state::WindowState;
use crate::store::AlertSink;

/// Which queue and format a consumer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// postcard envelopes on `auditflow.events`.
    Native,
    /// Legacy JSON events on `audit_events`.
    Legacy,
    /// Agents' heartbeats on `auditflow.heartbeats` (the fleet's last-seen record).
    Heartbeats,
}

impl Feed {
    fn queue(self) -> &'static str {
        match self {
            Feed::Native => queues::EVENTS,
            Feed::Legacy => queues::LEGACY_EVENTS,
            Feed::Heartbeats => queues::HEARTBEATS,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Feed::Native => "native",
            Feed::Legacy => "legacy",
            Feed::Heartbeats => "heartbeats",
        }
    }
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// What to consume.
    pub feed: Feed,
    /// Unacked deliveries RabbitMQ may hand us at once.
    pub prefetch: u16,
    /// Messages per batch at most.
    pub batch_max: usize,
    /// How long a batch waits to fill once it has its first message.
    pub batch_wait: Duration,
    /// Largest envelope accepted, bytes.
    pub max_frame: usize,
}

/// Namespace for ids of legacy events that carry no usable `event_id`: derived from the
/// message bytes, so a redelivery gets the same id.
const PAYLOAD_NAMESPACE: Uuid = Uuid::from_u128(0x51e0_77a2_c4d8_4f19_a3b5_6c7d_8e9f_0a1b);

/// What a delivery holds.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Decoded {
    Item(Item),
    Heartbeat(Heartbeat),
}

/// A decoded delivery, or why it is refused.
fn decode(feed: Feed, data: &[u8], max_frame: usize) -> Result<Decoded, (&'static str, String)> {
    match feed {
        Feed::Native => wire::frame::decode_with_limit::<Envelope>(data, max_frame)
            .map(|e| Decoded::Item(Item::Envelope(e)))
            .map_err(|e| (e.reason(), e.to_string())),
        Feed::Heartbeats => wire::frame::decode_with_limit::<Heartbeat>(data, max_frame)
            .map(Decoded::Heartbeat)
            .map_err(|e| (e.reason(), e.to_string())),
        Feed::Legacy => {
            let event = legacy::from_legacy_json(data, Timestamp::now())
                .map_err(|e| ("invalid_legacy_json", e.to_string()))?;
            let id =
                event.id.map_or_else(|| Uuid::new_v5(&PAYLOAD_NAMESPACE, data), Uuid::from_bytes);
            let node = event.host.clone().unwrap_or_else(|| "legacy".to_owned());
            Ok(Decoded::Item(Item::Single { id, node, event }))
        }
    }
}

/// Runs one consumer until cancelled.
pub async fn run<S, K>(
    settings: ConsumerSettings,
    pipeline: Arc<Pipeline<S, K>>,
    cancel: CancellationToken,
) -> anyhow::Result<()>
where
    S: WindowState + 'static,
    K: AlertSink + 'static,
{
    let metrics = pipeline.metrics.clone();
    let mut sessions = Sessions::new("consumer", metrics.rabbitmq_connected.clone());
    while let Some((conn, channel)) = sessions.connect(|| connect(&settings), &cancel).await {
        tracing::info!(queue = settings.feed.queue(), "consuming");
        metrics.consumer_sessions.with_label_values(&[settings.feed.label()]).inc();
        let result = consume(&settings, &channel, &pipeline, &cancel).await;
        if sessions.ended(conn, result, &cancel).await {
            break;
        }
    }
    Ok(())
}

/// A channel in publisher-confirm mode with `queues` declared. Shared by the consumers and
/// the `audit_alerts` publisher.
pub(crate) async fn open_confirming(
    url: &str,
    queues: &[&str],
) -> anyhow::Result<(Connection, Channel)> {
    runtime::amqp::open_confirming(runtime::amqp::parse_url(url)?, queues).await
}

async fn connect(settings: &ConsumerSettings) -> anyhow::Result<(Connection, Channel)> {
    let (conn, channel) =
        open_confirming(&settings.amqp_url, &[settings.feed.queue(), queues::EVENTS_DLQ]).await?;
    channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await.context("basic_qos")?;
    Ok((conn, channel))
}

async fn consume<S: WindowState, K: AlertSink>(
    settings: &ConsumerSettings,
    channel: &Channel,
    pipeline: &Pipeline<S, K>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let mut consumer = channel
        .basic_consume(
            settings.feed.queue().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("basic_consume")?;
    let metrics = &pipeline.metrics;
    loop {
        // The first message of a batch: wait for it, checking the channel now and then (lapin
        // does not always end the stream when the connection drops).
        let first = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            d = consumer.next() => d,
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if !channel.status().connected() {
                    anyhow::bail!("channel closed");
                }
                continue;
            }
        };
        let Some(first) = first else { anyhow::bail!("consumer stream ended") };
        let mut deliveries = vec![first.context("delivery")?];
        let deadline = tokio::time::Instant::now() + settings.batch_wait;
        while deliveries.len() < settings.batch_max {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => deliveries.push(d.context("delivery")?),
                Ok(None) => anyhow::bail!("consumer stream ended"),
                Err(_) => break,
            }
        }
        metrics
            .messages_in
            .with_label_values(&[settings.feed.label()])
            .inc_by(deliveries.len() as u64);

        let mut items = Vec::with_capacity(deliveries.len());
        let mut beats = Vec::new();
        // The newest delivery that was not rejected: the one the batch's ack names. Acking a
        // rejected tag is a protocol error that closes the channel (and costs a reconnect).
        let mut last_kept = None;
        for d in &deliveries {
            match decode(settings.feed, &d.data, settings.max_frame) {
                Ok(Decoded::Item(item)) => {
                    items.push(item);
                    last_kept = Some(d.delivery_tag);
                }
                Ok(Decoded::Heartbeat(h)) => {
                    beats.push(h);
                    last_kept = Some(d.delivery_tag);
                }
                Err((reason, detail)) => {
                    dead_letter(channel, settings.feed, &d.data, reason, &detail).await?;
                    channel
                        .basic_reject(d.delivery_tag, BasicRejectOptions { requeue: false })
                        .await
                        .context("reject")?;
                    metrics.invalid.inc();
                    tracing::warn!(reason, detail = %detail, "undecodable message sent to the dead-letter queue");
                }
            }
        }

        metrics.heartbeats.inc_by(beats.len() as u64);
        let mut backoff = Backoff::service();
        loop {
            let result = match pipeline.heard(&beats).await {
                Ok(()) => pipeline.process(&items).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    metrics.batch_failures.inc();
                    tracing::warn!(error = %format!("{e:#}"), "batch failed; retrying");
                    tokio::select! {
                        // Unacked deliveries go back to the queue when the channel closes.
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    if !channel.status().connected() {
                        anyhow::bail!("channel closed while retrying a batch");
                    }
                }
            }
        }
        // `multiple` acks every outstanding delivery up to the tag; the rejected ones before
        // it are settled already.
        if let Some(last) = last_kept {
            channel.basic_ack(last, BasicAckOptions { multiple: true }).await.context("ack")?;
        }
    }
}

/// Copies an undecodable message to the dead-letter queue and waits for the confirm.
async fn dead_letter(
    channel: &Channel,
    feed: Feed,
    data: &[u8],
    reason: &str,
    detail: &str,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    headers.insert("x-auditflow-reason".into(), AMQPValue::LongString(reason.into()));
    headers.insert("x-auditflow-detail".into(), AMQPValue::LongString(detail.into()));
    headers.insert("x-auditflow-queue".into(), AMQPValue::LongString(feed.queue().into()));
    let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
    let confirm = channel
        .basic_publish(
            "".into(),
            queues::EVENTS_DLQ.into(),
            BasicPublishOptions::default(),
            data,
            props,
        )
        .await
        .context("publish to the dead-letter queue")?;
    let confirmation = tokio::time::timeout(Duration::from_secs(20), confirm)
        .await
        .context("dead-letter confirm timed out")?
        .context("dead-letter confirm")?;
    anyhow::ensure!(
        matches!(confirmation, Confirmation::Ack(_)),
        "dead-letter publish not confirmed"
    );
    Ok(())
}
