//! The MQTT transport: publishes spooled envelopes to the broker (QoS 1) and removes them from
//! the spool when the broker's `RunAck` arrives on `auditflow/v1/run-ack/{node}` — sent only
//! after RabbitMQ confirmed them — and its run starts at or below the spool's watermark.
//!
//! rumqttc keeps its unacknowledged publishes in memory only; the spool is what makes delivery
//! durable. Each session therefore starts with a fresh client and a clean session and sends
//! from the spool's acknowledged watermark, and when acks stop advancing for [`ACK_TIMEOUT`] the transport
//! rewinds to the watermark and sends again. One task owns `EventLoop::poll`; after an error
//! it backs off with jitter before the next session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::spool::lock;
use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use runtime::retry::Backoff;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::pipeline::SharedSpool;
use crate::spool::Record;
use crate::telemetry::Metrics;

/// Envelopes published and not yet acknowledged, at most.
const WINDOW: usize = 32;
/// Without ack progress for this long, resend from the watermark: the timeout's floor.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// The timeout's ceiling.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(120);

/// The acknowledgement timeout, estimated as TCP estimates its retransmission timeout (RFC
/// 6298): the smoothed time acks take plus four times its variation, at least [`ACK_TIMEOUT`],
/// at most [`MAX_ACK_TIMEOUT`], doubled at each timeout; batches sent again give no sample
/// (Karn's rule: their ack may answer the first send). A fixed 15 s turned a broker running
/// more than 15 s behind into a collapse: every agent resent its window, then ended its
/// session and resent it again, adding load to the backlog that caused it (a thousand
/// simulated agents: 1,859 resends and 615 sessions ended in a 30 s run).
#[derive(Clone, Copy, Debug)]
pub struct AckTimer {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
}

impl Default for AckTimer {
    fn default() -> Self {
        Self { srtt: None, rttvar: Duration::ZERO, rto: ACK_TIMEOUT }
    }
}

impl AckTimer {
    /// How long acks have taken this time.
    pub fn sample(&mut self, took: Duration) {
        let (srtt, rttvar) = match self.srtt {
            None => (took, took / 2),
            Some(s) => (s * 7 / 8 + took / 8, self.rttvar * 3 / 4 + s.abs_diff(took) / 4),
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.rto = (srtt + rttvar * 4).clamp(ACK_TIMEOUT, MAX_ACK_TIMEOUT);
    }

    /// A timeout passed without progress: wait twice as long next time.
    pub fn backoff(&mut self) {
        self.rto = (self.rto * 2).min(MAX_ACK_TIMEOUT);
    }

    /// The timeout in force.
    pub fn timeout(&self) -> Duration {
        self.rto
    }
}

/// Settings of the MQTT transport.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// This node: client id and username.
    pub node_id: String,
    /// This node's password.
    pub password: Password,
    /// TLS client configuration, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl MqttSettings {
    /// Parses `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` (TLS,
    /// port 8883 by default, the broker's certificate checked against `ca_file`, or the
    /// system's roots when that is empty; see [`crate::tls`]).
    pub fn from_url(
        url: &str,
        node_id: &str,
        password: Password,
        ca_file: &str,
    ) -> anyhow::Result<Self> {
        let (rest, default_port, tls) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (rest, 1883, None)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (rest, 8883, Some(crate::tls::client_config(ca_file)?))
        } else {
            anyhow::bail!("the MQTT URL `{url}` is neither mqtt:// nor mqtts://");
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_start_matches('[').trim_end_matches(']'), p.parse().context("MQTT port")?)
            }
            _ => (rest, default_port),
        };
        anyhow::ensure!(!host.is_empty(), "no host in the MQTT URL `{url}`");
        Ok(Self { host: host.to_owned(), port, node_id: node_id.to_owned(), password, tls })
    }
}

/// The node's MQTT password: inline, or in a file read at every connection attempt, so that a
/// renewed credential (the kubelet rewrites a projected service-account token before it
/// expires) is used without a restart.
#[derive(Clone)]
pub enum Password {
    /// The password itself.
    Inline(String),
    /// A file holding it; surrounding whitespace is not part of it.
    File(std::path::PathBuf),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            Self::Inline(_) => f.write_str("Password::Inline(..)"),
            Self::File(path) => write!(f, "Password::File({})", path.display()),
        }
    }
}

impl Password {
    /// From the config: the file when one is named, the inline password otherwise.
    pub fn from_config(inline: &str, file: &str) -> Self {
        if file.is_empty() { Self::Inline(inline.to_owned()) } else { Self::File(file.into()) }
    }

    /// The password now.
    pub fn current(&self) -> anyhow::Result<String> {
        match self {
            Self::Inline(p) => Ok(p.clone()),
            Self::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read the MQTT password file {}", path.display()))?;
                let p = text.trim();
                anyhow::ensure!(
                    !p.is_empty(),
                    "the MQTT password file {} is empty",
                    path.display()
                );
                Ok(p.to_owned())
            }
        }
    }
}

/// Sends until cancelled.
pub async fn run_sender(
    settings: MqttSettings,
    spool: SharedSpool,
    wake: Arc<Notify>,
    mut heartbeats: watch::Receiver<Option<Vec<u8>>>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new();
    let ack_topic = wire::run_ack_topic(&settings.node_id);
    let events_topic = wire::events_topic(&settings.node_id);
    let heartbeat_topic = wire::heartbeat_topic(&settings.node_id);
    // The end of the highest batch this process has published. An ack beyond it cannot come
    // from a broker that received our events: it is forged (or answers a publish from before a
    // restart, which the resend from the watermark makes the broker ack again), and applying
    // it would delete events that were never sent. design.md §4.2.
    let mut sent_high = lock(&spool).acked();
    // Kept across sessions: a broker that is behind is behind for the next session too.
    let mut ack_timer = AckTimer::default();
    // Batches ending at or below this may be sent more than once: their acks give no sample.
    let mut resent_high = sent_high;
    metrics.ack_timeout_ms.set(ack_timer.timeout().as_millis() as i64);
    while !cancel.is_cancelled() {
        let password = match settings.password.current() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no MQTT password; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        let mut options = MqttOptions::new(&settings.node_id, &settings.host, settings.port);
        options
            .set_credentials(&settings.node_id, &password)
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(wire::MAX_FRAME_BYTES + 4096, wire::MAX_FRAME_BYTES + 4096)
            .set_inflight(u16::try_from(WINDOW + 8).unwrap_or(u16::MAX));
        if let Some(tls) = &settings.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::clone(tls),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(options, WINDOW * 2 + 16);
        let mut connected = false;
        let mut cursor: Option<crate::spool::Record> = None;
        // With when each was published.
        let mut inflight: VecDeque<(Record, Instant)> = VecDeque::new();
        let mut last_progress = Instant::now();
        // Acknowledgement timeouts in a row on this connection.
        let mut stalls = 0u32;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut heartbeats_open = true;
        let session_error = 'session: loop {
            if connected {
                // Fill the window from the spool.
                while inflight.len() < WINDOW {
                    let next = {
                        let s = lock(&spool);
                        s.pending_after(cursor.as_ref()).map(|r| (r, s.read(&r)))
                    };
                    let Some((record, frame)) = next else { break };
                    // A read error ends the session, not the sender: the next one retries.
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => {
                            break 'session anyhow::Error::new(e).context("read a spooled batch");
                        }
                    };
                    let bytes = frame.len() as u64;
                    if client.try_publish(&events_topic, QoS::AtLeastOnce, false, frame).is_err() {
                        break;
                    }
                    cursor = Some(record);
                    sent_high = sent_high.max(record.end_seq());
                    metrics.sent.inc_by(u64::from(record.count));
                    metrics.sent_bytes.inc_by(bytes);
                    let now = Instant::now();
                    if inflight.is_empty() {
                        last_progress = now;
                    }
                    inflight.push_back((record, now));
                }
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    let _ = client.try_disconnect();
                    // Let the disconnect go out; what is unacknowledged stays spooled.
                    let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
                    metrics.connected.set(0);
                    return Ok(());
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        metrics.connects.inc();
                        metrics.connected.set(1);
                        backoff.reset();
                        if let Err(e) = client.try_subscribe(&ack_topic, QoS::AtLeastOnce) {
                            break anyhow::Error::new(e).context("subscribe to acks");
                        }
                        cursor = None;
                        // What an earlier session published goes again.
                        resent_high = sent_high;
                        inflight.clear();
                        last_progress = Instant::now();
                        tracing::info!(host = %settings.host, port = settings.port, "connected to the broker");
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => {
                        let Ok(ack) = wire::decode::<wire::RunAck>(&p.payload) else {
                            tracing::warn!("undecodable ack ignored");
                            metrics.acks_refused.with_label_values(&["undecodable"]).inc();
                            continue;
                        };
                        let (epoch, watermark) = {
                            let s = lock(&spool);
                            (s.epoch(), s.acked())
                        };
                        if ack.epoch != epoch {
                            tracing::warn!(ack_epoch = ack.epoch, epoch, "ack for another spool epoch ignored");
                            metrics.acks_refused.with_label_values(&["epoch"]).inc();
                            continue;
                        }
                        if ack.from_seq > watermark {
                            // The broker's run starts above what is known stored: it never saw
                            // the events in between. Without progress the resend from the
                            // watermark below brings them, and the run down to it.
                            tracing::warn!(from_seq = ack.from_seq, watermark, "ack of a run that does not reach the watermark ignored");
                            metrics.acks_refused.with_label_values(&["gap"]).inc();
                            continue;
                        }
                        if ack.up_to_seq > sent_high {
                            tracing::warn!(up_to_seq = ack.up_to_seq, sent_high, "ack beyond what this agent has sent ignored");
                            metrics.acks_refused.with_label_values(&["unsent"]).inc();
                            continue;
                        }
                        let spool_for_ack = Arc::clone(&spool);
                        let sent_through = cursor;
                        let applied = tokio::task::spawn_blocking(move || {
                            let mut s = lock(&spool_for_ack);
                            let before = s.acked();
                            let persisted = s.ack_sent(ack.up_to_seq, sent_through.as_ref());
                            (before, s.acked(), s.bytes(), persisted)
                        })
                        .await?;
                        {
                            let (before, after, bytes, persisted) = applied;
                            crate::spool::report_ack_write(persisted, &metrics);
                            if after > before {
                                metrics.acked.inc_by(after - before);
                                last_progress = Instant::now();
                                stalls = 0;
                            }
                            metrics.spool_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                            let mut newest = None;
                            while inflight.front().is_some_and(|r| r.0.end_seq() <= after) {
                                newest = inflight.pop_front();
                            }
                            if let Some((record, published)) = newest
                                && record.end_seq() > resent_high
                            {
                                ack_timer.sample(published.elapsed());
                                metrics.ack_timeout_ms.set(ack_timer.timeout().as_millis() as i64);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break anyhow::Error::new(e).context("MQTT connection"),
                },
                // Until the CONNACK, only the connection is polled: dropping a poll that is
                // connecting drops the half-made connection, and a connect slower than the
                // wake-ups (a batch every max_age_ms, the tick, a heartbeat) then never
                // completes. A thousand agents reconnecting to a busy broker did just that.
                () = wake.notified(), if connected => {}
                _ = tick.tick(), if connected => {
                    let timeout = ack_timer.timeout();
                    if !inflight.is_empty() && last_progress.elapsed() > timeout {
                        stalls += 1;
                        ack_timer.backoff();
                        metrics.ack_timeout_ms.set(ack_timer.timeout().as_millis() as i64);
                        if stalls > 1 {
                            // Resending on this connection did not help either: the broker's
                            // side of it is wedged (seen after a partition healed, when a
                            // stale connection of this node was closed under a new one). A
                            // new session starts from the watermark.
                            break anyhow::anyhow!("no acknowledgement for {timeout:?} after a resend");
                        }
                        tracing::warn!(in_flight = inflight.len(), timeout_ms = timeout.as_millis() as u64, "no acknowledgement progress; resending from the watermark");
                        metrics.resends.inc();
                        cursor = None;
                        resent_high = sent_high;
                        inflight.clear();
                        last_progress = Instant::now();
                    }
                }
                changed = heartbeats.changed(), if heartbeats_open && connected => {
                    heartbeats_open = changed.is_ok();
                    let frame = heartbeats.borrow_and_update().clone();
                    if let (Ok(()), true, Some(frame)) = (changed, connected, frame) {
                        // QoS 0: a lost heartbeat is replaced ten seconds later.
                        let _ = client.try_publish(&heartbeat_topic, QoS::AtMostOnce, false, frame);
                    }
                }
            }
        };
        metrics.connected.set(0);
        tracing::warn!(error = %format!("{session_error:#}"), "broker session ended");
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_timeout_follows_how_long_acks_take_within_its_bounds() {
        let mut t = AckTimer::default();
        assert_eq!(t.timeout(), ACK_TIMEOUT);
        // Acks in 100 ms: the floor.
        for _ in 0..20 {
            t.sample(Duration::from_millis(100));
        }
        assert_eq!(t.timeout(), ACK_TIMEOUT);
        // A broker falling behind, acks taking 1 s longer each time up to 20 s: the timeout
        // stays above what acks take, so none is resent.
        for s in 1..=20 {
            t.sample(Duration::from_secs(s));
            assert!(t.timeout() > Duration::from_secs(s), "{s} s: {:?}", t.timeout());
        }
        // Never above the ceiling; timeouts double up to it.
        for _ in 0..20 {
            t.sample(Duration::from_secs(600));
        }
        assert_eq!(t.timeout(), MAX_ACK_TIMEOUT);
        let mut t = AckTimer::default();
        t.backoff();
        assert_eq!(t.timeout(), ACK_TIMEOUT * 2);
        for _ in 0..10 {
            t.backoff();
        }
        assert_eq!(t.timeout(), MAX_ACK_TIMEOUT);
        // Back to the floor once acks are quick again.
        for _ in 0..40 {
            t.sample(Duration::from_millis(50));
        }
        assert_eq!(t.timeout(), ACK_TIMEOUT);
    }

    fn pw() -> Password {
        Password::Inline("p".into())
    }

    #[test]
    fn a_password_file_is_read_at_each_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let p = Password::from_config("", path.to_str().unwrap());
        assert!(p.current().is_err(), "a missing file is an error");
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(p.current().unwrap(), "first");
        std::fs::write(&path, "renewed").unwrap();
        assert_eq!(p.current().unwrap(), "renewed");
        std::fs::write(&path, " \n").unwrap();
        assert!(p.current().is_err(), "an empty file is an error");
        assert!(!format!("{:?}", Password::Inline("secret".into())).contains("secret"));
    }

    #[test]
    fn urls() {
        let s = MqttSettings::from_url("mqtt://broker:1884", "n", pw(), "").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("broker", 1884));
        assert!(s.tls.is_none());
        let s = MqttSettings::from_url("mqtt://auditflow-broker", "n", pw(), "").unwrap();
        assert_eq!(s.port, 1883);
        let s = MqttSettings::from_url("mqtt://[::1]:1999", "n", pw(), "").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 1999));
        assert!(MqttSettings::from_url("tcp://b", "n", pw(), "").is_err());
        assert!(MqttSettings::from_url("mqtt://", "n", pw(), "").is_err());
        // mqtts:// needs a CA it can read.
        let e = MqttSettings::from_url("mqtts://b", "n", pw(), "/nonexistent/ca.pem").unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
    }
}
