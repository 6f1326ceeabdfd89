//! The synthetic source: events from the seven legacy templates (AuditFlow's vocabulary, or
//! the legacy generator's exactly), or ordinary background traffic, at a fixed rate (from one a
//! minute to well over 100,000 a second), with a fixed seed. Used for demos, scripted
//! scenarios and the benchmark. It waits when the pipeline is full (backpressure) rather
//! than dropping.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::synth::{LegacyGenerator, Synth};
use wire::{Source, Timestamp};

use crate::config::Mix;
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
    /// What is generated (`synthetic.mix`).
    pub mix: Mix,
}

/// Emits events until cancelled or the limit is reached.
pub async fn run(
    settings: SyntheticSettings,
    out: mpsc::Sender<crate::pipeline::Collected>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut synth = Synth::new(settings.seed);
    let mut generator = LegacyGenerator::new(settings.seed);
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
            let now = Timestamp::now();
            let event = match settings.mix {
                Mix::Normal => crate::scenario::normal_event(emitted, now),
                Mix::Legacy => synth.next_event(now),
                Mix::Generator => {
                    // The legacy JSON maps to a typed event without loss (its vocabulary
                    // and details keys are kept as they came, design.md §8.1).
                    let json = generator.next_json(now);
                    match wire::legacy::from_legacy(&json, now) {
                        Ok(mut e) => {
                            e.source = Source::Synthetic;
                            e
                        }
                        Err(e) => {
                            anyhow::bail!("the legacy generator made an unreadable event: {e}")
                        }
                    }
                }
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
