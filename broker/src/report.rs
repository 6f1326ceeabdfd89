//! Refusals become events: a node that tries to act outside its identity (another node's
//! topics, acks, wildcards; an envelope on its own topic that names another node or does not
//! decode) is not only disconnected and counted, it raises an alert about itself
//! (FLEET-MQTT-REFUSED-001 in `aggregator/rules/fleet.toml`), since an agent never does that
//! and a compromised node does (design.md §4.3).
//!
//! The broker turns each refusal into an `mqtt_refused` event about the offending node, with
//! its own stream identity: epoch = when this broker started, one sequence per node, so it
//! can never collide with the node's own sequence numbers. The cluster bridge publishes it to
//! `auditflow.events` like an envelope (no agent is acknowledged for it); embedded mode
//! hands it to the pipeline. Refusals are reported through a bounded channel: a flood of
//! them (each costs the attacker a new connection) drops reports, counted, never the broker.

use std::collections::HashMap;

use wire::model::{Event, EventKind, Severity, Source, Timestamp, Value};

/// Reports waiting to be sent, at most.
pub const QUEUE: usize = 256;

/// One refusal of a node's action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The node (the authenticated client id, or the node of its own topic).
    pub node: String,
    /// `acl` (outside its topics), `node_mismatch`, `undecodable`.
    pub reason: &'static str,
    /// `publish` or `subscribe`, for `acl`.
    pub access: &'static str,
    /// The topic or filter involved.
    pub topic: String,
}

/// The `mqtt_refused` event for a refusal.
pub fn event(r: &Refusal, now: Timestamp) -> Event {
    let mut e = Event::new(
        now,
        Source::Agent,
        Severity::Critical,
        EventKind::Generic {
            event_type: "mqtt_refused".into(),
            fields: vec![
                ("reason".into(), Value::Str(r.reason.into())),
                ("access".into(), Value::Str(r.access.into())),
                ("topic".into(), Value::Str(r.topic.chars().take(256).collect())),
            ],
        },
    );
    e.origin = Some("auditflow-broker".into());
    e
}

/// Envelopes of refusal events, one stream per node under this broker's epoch.
#[derive(Debug)]
pub struct Reporter {
    epoch: u64,
    next: HashMap<String, u64>,
}

impl Reporter {
    /// A reporter whose streams start now.
    pub fn new() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self { epoch, next: HashMap::new() }
    }

    /// The envelope carrying `r`'s event.
    pub fn envelope(&mut self, r: &Refusal) -> wire::Envelope {
        let seq = self.next.entry(r.node.clone()).or_insert(0);
        let first_seq = *seq;
        *seq += 1;
        wire::Envelope {
            node_id: r.node.clone(),
            epoch: self.epoch,
            first_seq,
            events: vec![event(r, Timestamp::now())],
            dropped: Default::default(),
        }
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

/// Reports a refusal: counted per node, and queued to become an alert (dropped, counted, when
/// the queue is full).
pub fn report(
    refusals: Option<&tokio::sync::mpsc::Sender<Refusal>>,
    metrics: &crate::telemetry::Metrics,
    r: Refusal,
) {
    metrics.node_refusals.with_label_values(&[&r.node, r.reason]).inc();
    if let Some(tx) = refusals
        && tx.try_send(r).is_err()
    {
        metrics.reports_dropped.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_its_own_gapless_stream() {
        let mut rep = Reporter::new();
        let r = |node: &str| Refusal {
            node: node.into(),
            reason: "acl",
            access: "publish",
            topic: "auditflow/v1/events/pi-b".into(),
        };
        let (a0, a1, b0) =
            (rep.envelope(&r("pi-a")), rep.envelope(&r("pi-a")), rep.envelope(&r("pi-b")));
        assert_eq!((a0.first_seq, a1.first_seq, b0.first_seq), (0, 1, 0));
        assert!(a0.epoch > 1_000_000_000_000_000_000, "an epoch in nanoseconds");
        let EventKind::Generic { event_type, .. } = &a0.events[0].kind else { panic!() };
        assert_eq!(event_type, "mqtt_refused");
    }
}
