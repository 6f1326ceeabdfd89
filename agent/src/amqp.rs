//! The AMQP transport: publishes spooled envelopes straight to RabbitMQ's durable queue with
//! publisher confirms. A confirm is the acknowledgement: only then is the batch removed from
//! the spool. After any failure it reconnects with jittered backoff and resends everything not
//! yet confirmed (downstream deduplicates by `(node, epoch, seq)`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::spool::lock;
use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::pipeline::SharedSpool;
use crate::spool::Record;
use crate::telemetry::Metrics;
use runtime::retry::Backoff;

/// Publishes at most this many batches before waiting for their confirms.
const WINDOW: usize = 32;
/// A confirm not back within this long means the connection is gone (lapin does not always
/// fail pending confirms when the broker drops the connection): reconnect and resend.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
/// Handing a message to lapin normally takes microseconds; on a connection that broke
/// mid-message (a body spans several frames) the future may never finish. Past this, the
/// session is over: reconnect and resend.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the AMQP transport.
#[derive(Clone, Debug)]
pub struct AmqpSettings {
    /// RabbitMQ URL.
    pub url: String,
    /// Queue envelopes go to.
    pub queue: String,
    /// Queue heartbeats go to.
    pub heartbeat_queue: String,
}

/// Sends until cancelled; on cancel, waits briefly for confirms already requested.
pub async fn run_sender(
    settings: AmqpSettings,
    spool: SharedSpool,
    wake: Arc<Notify>,
    heartbeats: tokio::sync::watch::Receiver<Option<Vec<u8>>>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new();
    while !cancel.is_cancelled() {
        let session = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            s = connect(&settings) => s,
        };
        match session {
            Ok((conn, channel)) => {
                metrics.connects.inc();
                metrics.connected.set(1);
                tracing::info!(queue = %settings.queue, "connected to RabbitMQ");
                let result = send_loop(
                    &settings,
                    &channel,
                    &spool,
                    &wake,
                    heartbeats.clone(),
                    &metrics,
                    &cancel,
                    &mut backoff,
                )
                .await;
                metrics.connected.set(0);
                // A close on a dead connection may wait forever for RabbitMQ's answer.
                let _ = tokio::time::timeout(
                    runtime::amqp::CLOSE_TIMEOUT,
                    conn.close(200, "agent stopping".into()),
                )
                .await;
                match result {
                    Ok(()) => return Ok(()),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "RabbitMQ session ended"),
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot connect to RabbitMQ"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

/// The AMQP frame size the agent asks for unless the URL sets `frame_max`. lapin keeps a
/// send and a receive buffer of 32 frames each: at RabbitMQ's default of 128 KiB that is 8 MiB
/// of a Pi's memory; at 16 KiB it is 1 MiB, and an envelope of a few tens of KiB simply
/// travels in a few body frames.
pub const FRAME_MAX: u32 = 16 * 1024;

/// The URL with `frame_max` set to [`FRAME_MAX`] when it does not set one itself.
fn with_frame_max(url: &str) -> anyhow::Result<lapin::uri::AMQPUri> {
    let mut uri = runtime::amqp::parse_url(url)?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

async fn connect(settings: &AmqpSettings) -> anyhow::Result<(Connection, Channel)> {
    let queues = [settings.queue.as_str(), settings.heartbeat_queue.as_str()];
    runtime::amqp::open_confirming(with_frame_max(&settings.url)?, &queues).await
}

#[allow(clippy::too_many_arguments)]
async fn send_loop(
    settings: &AmqpSettings,
    channel: &Channel,
    spool: &SharedSpool,
    wake: &Notify,
    mut heartbeats: tokio::sync::watch::Receiver<Option<Vec<u8>>>,
    metrics: &Metrics,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(wire::CONTENT_TYPE.into());
    let mut cursor: Option<Record> = None;
    let mut inflight: FuturesOrdered<_> = FuturesOrdered::new();
    let mut inflight_records: VecDeque<Record> = VecDeque::new();
    let mut heartbeats_open = true;
    let mut oldest_sent = tokio::time::Instant::now();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        // Fill the window from the spool.
        while inflight.len() < WINDOW && !cancel.is_cancelled() {
            let next = {
                let spool = lock(spool);
                spool.pending_after(cursor.as_ref()).map(|r| (r, spool.read(&r)))
            };
            let Some((record, frame)) = next else { break };
            let frame = frame.context("read a spooled batch")?;
            let publish = channel.basic_publish(
                "".into(),
                settings.queue.as_str().into(),
                BasicPublishOptions::default(),
                &frame,
                properties.clone(),
            );
            let confirm = tokio::time::timeout(PUBLISH_TIMEOUT, publish)
                .await
                .map_err(|_| anyhow::anyhow!("publish did not complete in {PUBLISH_TIMEOUT:?}"))?
                .context("publish")?;
            cursor = Some(record);
            metrics.sent.inc_by(u64::from(record.count));
            metrics.sent_bytes.inc_by(frame.len() as u64);
            if inflight.is_empty() {
                oldest_sent = tokio::time::Instant::now();
            }
            inflight.push_back(confirm);
            inflight_records.push_back(record);
        }
        if cancel.is_cancelled() && inflight.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            confirmed = inflight.next(), if !inflight.is_empty() => {
                let record = inflight_records.pop_front().expect("one record per confirm");
                oldest_sent = tokio::time::Instant::now();
                match confirmed {
                    Some(Ok(Confirmation::Ack(_))) => {
                        backoff.reset();
                        let spool = Arc::clone(spool);
                        let (bytes, persisted) = tokio::task::spawn_blocking(move || {
                            let mut s = lock(&spool);
                            let persisted = s.ack_sent(record.end_seq(), Some(&record));
                            (s.bytes(), persisted)
                        })
                        .await?;
                        crate::spool::report_ack_write(persisted, metrics);
                        metrics.acked.inc_by(u64::from(record.count));
                        metrics.spool_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                    }
                    Some(Ok(other)) => anyhow::bail!("RabbitMQ did not confirm a batch: {other:?}"),
                    Some(Err(e)) => return Err(anyhow::Error::new(e).context("publisher confirm")),
                    None => {}
                }
            }
            () = wake.notified() => {}
            _ = check.tick() => {
                anyhow::ensure!(channel.status().connected(), "the channel to RabbitMQ closed");
                anyhow::ensure!(
                    inflight.is_empty() || oldest_sent.elapsed() < CONFIRM_TIMEOUT,
                    "no publisher confirm for {CONFIRM_TIMEOUT:?}"
                );
            }
            changed = heartbeats.changed(), if heartbeats_open => {
                heartbeats_open = changed.is_ok();
                if changed.is_ok() {
                    let frame = heartbeats.borrow_and_update().clone();
                    if let Some(frame) = frame {
                        // Heartbeats are not spooled; a lost one is replaced 10 s later.
                        let publish = channel.basic_publish(
                            "".into(),
                            settings.heartbeat_queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &frame,
                            BasicProperties::default().with_content_type(wire::CONTENT_TYPE.into()),
                        );
                        let _confirm = tokio::time::timeout(PUBLISH_TIMEOUT, publish)
                            .await
                            .map_err(|_| anyhow::anyhow!("heartbeat publish did not complete in {PUBLISH_TIMEOUT:?}"))?
                            .context("publish heartbeat")?;
                    }
                }
            }
            () = cancel.cancelled(), if !inflight.is_empty() => {
                // Give in-flight confirms a moment; what is not confirmed is resent next start.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(c) = inflight.next().await {
                        let record = inflight_records.pop_front().expect("one record per confirm");
                        if let Ok(Confirmation::Ack(_)) = c {
                            let _ = lock(spool).ack(record.end_seq());
                            metrics.acked.inc_by(u64::from(record.count));
                        } else {
                            break;
                        }
                    }
                })
                .await;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_max_is_small_unless_the_url_says_otherwise() {
        let uri = with_frame_max("amqp://u:p@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let uri = with_frame_max("amqp://u:p@127.0.0.1:5672/%2f?frame_max=131072").unwrap();
        assert_eq!(uri.query.frame_max, Some(131_072));
        assert!(with_frame_max("http://nope").is_err());
    }
}
