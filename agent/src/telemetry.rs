//! Every metric the agent exports, defined in one place. Names follow
//! `auditflow_agent_<name>_<unit>[_total]`; label values are bounded (sources and drop
//! reasons). Work is counted per batch, not per event.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use wire::{DropCounts, DropReason, Source};

/// The agent's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Events accepted from sources, per source.
    pub collected: IntCounterVec,
    /// Events written to the spool (in batches).
    pub spooled: IntCounter,
    /// Events published upstream (including replays).
    pub sent: IntCounter,
    /// Envelope bytes published upstream (including replays): wire bytes per event is this
    /// over `sent`.
    pub sent_bytes: IntCounter,
    /// Events acknowledged upstream and removed from the spool.
    pub acked: IntCounter,
    /// Events dropped or merged at the edge, per reason.
    pub dropped: IntCounterVec,
    /// Log lines a tailing source did not understand (or skipped as overlong), per source.
    pub unparsed: IntCounterVec,
    /// Journal entries read, by use: `used` (an auth or kernel message), `skipped` (another
    /// program's), `untrusted` (an auth program's name from a sender that is not root),
    /// `oversized` (a value over 64 KiB, skipped).
    pub journal_entries: IntCounterVec,
    /// Bytes in the spool.
    pub spool_bytes: IntGauge,
    /// Repairs of the spool on start, per kind.
    pub spool_repairs: IntCounterVec,
    /// Acknowledgements whose removal from the spool could not be persisted at once (a full
    /// disk): retried with the next one.
    pub spool_ack_write_failures: IntCounter,
    /// Connections (re)established to the upstream.
    pub connects: IntCounter,
    /// 1 while connected upstream.
    pub connected: IntGauge,
    /// Windows resent from the watermark because acknowledgements stopped advancing.
    pub resends: IntCounter,
    /// The acknowledgement timeout in force, ms (adapts to how long acks take).
    pub ack_timeout_ms: IntGauge,
    /// Acks ignored, per reason: `undecodable`, `epoch` (another spool's), `unsent` (beyond the
    /// highest sequence number this process has published: forged, or from before a restart),
    /// `gap` (a run that starts above the watermark: the broker never saw what lies between).
    pub acks_refused: IntCounterVec,
    /// HTTP connections closed at once because the listener's cap was reached.
    pub http_refused: IntCounter,
    /// `POST /generate_event` requests refused (no token, wrong token, not on this host).
    pub generate_refused: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, label: &str| {
            runtime::metrics::counter_vec(&registry, name, help, label, &[])
        };
        let counter = |name: &str, help: &str| runtime::metrics::counter(&registry, name, help);
        let gauge = |name: &str, help: &str| runtime::metrics::gauge(&registry, name, help);
        let m = Self {
            collected: counter_vec(
                "auditflow_agent_collected_events_total",
                "Events accepted from a source.",
                "source",
            ),
            spooled: counter(
                "auditflow_agent_spooled_events_total",
                "Events written to the spool.",
            ),
            sent: counter("auditflow_agent_sent_events_total", "Events published upstream."),
            sent_bytes: counter(
                "auditflow_agent_sent_bytes_total",
                "Envelope bytes published upstream.",
            ),
            acked: counter(
                "auditflow_agent_acked_events_total",
                "Events acknowledged upstream and removed from the spool.",
            ),
            dropped: counter_vec(
                "auditflow_agent_dropped_events_total",
                "Events dropped or merged at the edge.",
                "reason",
            ),
            unparsed: counter_vec(
                "auditflow_agent_unparsed_lines_total",
                "Log lines not understood (or longer than 64 KiB), per source.",
                "source",
            ),
            journal_entries: counter_vec(
                "auditflow_agent_journal_entries_total",
                "Journal entries read: used (auth or kernel), skipped (another program's), untrusted (an auth program's name from a non-root sender), oversized, unreadable (the files reader could not read it).",
                "use",
            ),
            spool_bytes: gauge("auditflow_agent_spool_bytes", "Bytes in the spool."),
            spool_ack_write_failures: counter(
                "auditflow_agent_spool_ack_write_failures_total",
                "Acknowledgements the spool could not persist at once (full disk); retried with the next.",
            ),
            spool_repairs: counter_vec(
                "auditflow_agent_spool_repairs_total",
                "Spool repairs on start: torn_records (cut off or resynced past), skipped_bytes, damaged_segments (copied to quarantine/), unreadable_segments (moved to quarantine/).",
                "kind",
            ),
            connects: counter(
                "auditflow_agent_upstream_connects_total",
                "Connections established to the upstream.",
            ),
            connected: gauge("auditflow_agent_upstream_connected", "1 while connected upstream."),
            resends: counter(
                "auditflow_agent_upstream_resends_total",
                "Windows of unacknowledged batches resent from the watermark because acknowledgements stopped advancing for the acknowledgement timeout.",
            ),
            ack_timeout_ms: gauge(
                "auditflow_agent_upstream_ack_timeout_ms",
                "The acknowledgement timeout in force: 15 s, or more while acknowledgements take long (a broker behind), up to 120 s.",
            ),
            acks_refused: counter_vec(
                "auditflow_agent_acks_refused_total",
                "Acks ignored: undecodable, for another epoch, beyond what this agent has sent, or of a run that does not reach the watermark.",
                "reason",
            ),
            http_refused: counter(
                "auditflow_agent_http_connections_refused_total",
                "HTTP connections closed at once: the listener's connection cap was reached.",
            ),
            generate_refused: counter(
                "auditflow_agent_generate_event_refused_total",
                "POST /generate_event requests refused: without the configured token, or from another host when none is configured.",
            ),
            registry,
        };
        // Export every label value from the start, so that a rate() over them is defined.
        for s in Source::ALL {
            m.collected.with_label_values(&[s.as_str()]);
        }
        for r in DropReason::ALL {
            m.dropped.with_label_values(&[r.as_str()]);
        }
        for r in ["undecodable", "epoch", "unsent"] {
            m.acks_refused.with_label_values(&[r]);
        }
        m
    }

    /// Counts a batch's drops.
    pub fn count_drops(&self, drops: &DropCounts) {
        for (reason, n) in drops.iter() {
            self.dropped.with_label_values(&[reason.as_str()]).inc_by(n);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        runtime::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
