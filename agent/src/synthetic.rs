//! The synthetic source: events from the seven legacy templates at a fixed rate (from one a
//! minute to well over 100,000 a second), with a fixed seed. Used for demos, scripted
//! scenarios and the benchmark. It waits when the pipeline is full (backpressure) rather
//! than dropping.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::synth::Synth;
use wire::{Source, Timestamp};

use crate::telemetry::Metrics;

/// Settings of the synthetic source.
#[derive(Clone, Debug)]
pub struct SyntheticSettings {
    /// Events per second.
    pub rate_per_sec: f64,
    /// Generator seed.
    pub seed: u64,
    /// Stop after this many events; 0 runs until cancelled.
    pub limit: u64,
    /// Only ordinary traffic (the scenario's `normal` events) instead of the seven legacy
    /// templates: the background load of a quiet fleet, which fires no shipped rule.
    pub normal_only: bool,
}

/// Emits events until cancelled or the limit is reached.
pub async fn run(
    settings: SyntheticSettings,
    out: mpsc::Sender<crate::pipeline::Collected>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut synth = Synth::new(settings.seed);
    let tick = Duration::from_millis(10)
        .max(Duration::from_secs_f64((1.0 / settings.rate_per_sec).min(1.0) / 4.0));
    let start = Instant::now();
    let mut emitted: u64 = 0;
    let counter = metrics.collected.with_label_values(&[Source::Synthetic.as_str()]);
    let mut interval = tokio::time::interval(tick.min(Duration::from_millis(250)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        let due = (start.elapsed().as_secs_f64() * settings.rate_per_sec) as u64;
        let due = if settings.limit > 0 { due.min(settings.limit) } else { due };
        let batch_start = emitted;
        while emitted < due {
            let event = if settings.normal_only {
                crate::scenario::normal_event(emitted, Timestamp::now())
            } else {
                synth.next_event(Timestamp::now())
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                sent = out.send(event.into()) => {
                    if sent.is_err() {
                        return Ok(());
                    }
                }
            }
            emitted += 1;
        }
        counter.inc_by(emitted - batch_start);
        if settings.limit > 0 && emitted >= settings.limit {
            tracing::info!(events = emitted, "synthetic source reached its limit");
            return Ok(());
        }
    }
}
