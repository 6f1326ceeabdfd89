//! RabbitMQ sessions as every AuditFlow client opens and keeps them (feature `amqp`): a
//! connection and a channel in publisher-confirm mode with the queues declared exactly as
//! their other users declare them (durable, no arguments, or RabbitMQ refuses the
//! declaration), and [`Sessions`], the reconnect loop around a session: connect with backoff
//! until cancelled, mark the connection gauge, and after a session ends close the connection
//! and wait before the next.

use std::time::Duration;

use anyhow::Context;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;

use crate::retry::Backoff;

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing a connection may wait for RabbitMQ's answer.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a connection to `uri` and a channel in publisher-confirm mode, and declares `queues`
/// (durable, no arguments).
pub async fn open_confirming(
    uri: AMQPUri,
    queues: &[&str],
) -> anyhow::Result<(Connection, Channel)> {
    let conn = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect_uri(uri, ConnectionProperties::default()),
    )
    .await
    .context("connect timed out")?
    .context("connect")?;
    let channel = conn.create_channel().await.context("open channel")?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.context("confirm_select")?;
    for &queue in queues {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declare queue {queue}"))?;
    }
    Ok((conn, channel))
}

/// Parses an AMQP URL, with a message that names what is wrong.
pub fn parse_url(url: &str) -> anyhow::Result<AMQPUri> {
    url.parse().map_err(|e: String| anyhow::anyhow!("the AMQP URL is invalid: {e}"))
}

/// The reconnect loop of a long-lived RabbitMQ client:
///
/// ```ignore
/// let mut sessions = Sessions::new("consumer", metrics.rabbitmq_connected.clone());
/// while let Some((conn, channel)) = sessions.connect(|| open(&url), &cancel).await {
///     let result = work(&channel).await;
///     if sessions.ended(conn, result, &cancel).await { break }
/// }
/// ```
#[derive(Debug)]
pub struct Sessions {
    who: &'static str,
    connected: IntGauge,
    backoff: Backoff,
}

impl Sessions {
    /// A loop for `who` (named in its log lines), which adds 1 to `connected` while a session
    /// is open (several loops may share one gauge: it counts their open sessions). Waits with a service's backoff ([`Backoff::service`]).
    pub fn new(who: &'static str, connected: IntGauge) -> Self {
        Self { who, connected, backoff: Backoff::service() }
    }

    /// Connects, retrying with backoff; `None` once `cancel` fires.
    pub async fn connect<F, Fut>(
        &mut self,
        mut open: F,
        cancel: &CancellationToken,
    ) -> Option<(Connection, Channel)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<(Connection, Channel)>>,
    {
        while !cancel.is_cancelled() {
            let attempt = tokio::select! {
                () = cancel.cancelled() => return None,
                s = open() => s,
            };
            match attempt {
                Ok(session) => {
                    tracing::info!(who = self.who, "connected to RabbitMQ");
                    self.connected.inc();
                    self.backoff.reset();
                    return Some(session);
                }
                Err(e) => {
                    tracing::warn!(who = self.who, error = %format!("{e:#}"), "cannot connect to RabbitMQ");
                    self.pause(cancel).await;
                }
            }
        }
        None
    }

    /// Ends a session: takes its session off the gauge and closes the connection. Returns true when the
    /// session ended cleanly (the loop is done); after an error, logs it and waits with
    /// backoff (cut short by `cancel`) before the next [`Sessions::connect`].
    pub async fn ended(
        &mut self,
        conn: Connection,
        result: anyhow::Result<()>,
        cancel: &CancellationToken,
    ) -> bool {
        self.connected.dec();
        // A close on a dead connection may wait forever for RabbitMQ's answer.
        let reason = format!("{} stopping", self.who);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, reason.as_str().into())).await;
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(who = self.who, error = %format!("{e:#}"), "lost RabbitMQ");
                self.pause(cancel).await;
                false
            }
        }
    }

    async fn pause(&mut self, cancel: &CancellationToken) {
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(self.backoff.next_delay()) => {}
        }
    }
}
