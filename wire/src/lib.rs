//! `wire` is the shared vocabulary of AuditFlow: the event model every part agrees on, the
//! versioned postcard frames that carry it between processes ([`frame`]), its mapping to and
//! from the legacy AuditFlow JSON ([`legacy`]) and deterministic synthetic events
//! ([`synth`]). It does no I/O.
//!
//! **Only this crate knows the bytes on the wire.**

pub mod frame;
pub mod legacy;
pub mod model;
pub mod synth;

pub use frame::{
    CONTENT_TYPE, DecodeError, MAX_FRAME_BYTES, Message, WIRE_VERSION, decode, encode,
};
pub use model::{
    Ack, Digest, DropCounts, DropReason, Envelope, Event, EventKind, Field, FileOp, Heartbeat,
    Outcome, RunAck, Severity, Source, Timestamp, Value,
};

/// MQTT topic an agent publishes its envelopes on.
pub fn events_topic(node: &str) -> String {
    format!("auditflow/v1/events/{node}")
}

/// MQTT topic the broker publishes a node's [`Ack`]s on, for agents that do not take
/// [`RunAck`]s (earlier versions).
pub fn ack_topic(node: &str) -> String {
    format!("auditflow/v1/ack/{node}")
}

/// MQTT topic the broker publishes a node's [`RunAck`]s on. Subscribing to it is how an agent
/// tells the broker it takes them.
pub fn run_ack_topic(node: &str) -> String {
    format!("auditflow/v1/run-ack/{node}")
}

/// MQTT topic an agent publishes its heartbeats on.
pub fn heartbeat_topic(node: &str) -> String {
    format!("auditflow/v1/heartbeat/{node}")
}

/// AMQP queue names (durable, on the default exchange).
pub mod queues {
    /// Our envelopes, from the broker or from agents publishing directly.
    pub const EVENTS: &str = "auditflow.events";
    /// Envelopes that failed validation, with the reason in a header.
    pub const EVENTS_DLQ: &str = "auditflow.events.dlq";
    /// Agent heartbeats.
    pub const HEARTBEATS: &str = "auditflow.heartbeats";
    /// Legacy JSON events (declared durable with no arguments, exactly as the legacy services
    /// declare it).
    pub const LEGACY_EVENTS: &str = "audit_events";
    /// Alerts as JSON for the legacy notification service and dashboard.
    pub const ALERTS: &str = "audit_alerts";
}
