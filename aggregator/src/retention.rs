//! Bounded storage (design.md §6.10): what the alert store keeps is deleted in the background
//! when it is old enough (`[retention]`), in batches of one short transaction each with a
//! pause between them, so ingestion, which shares the database (and on SQLite its one
//! writer), never waits for more than one batch. A size bound (`max_db_mb`) deletes the oldest
//! resolved alerts first, then the oldest firings. Every replica runs it; two deleting the
//! same rows at once is harmless.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::store::{Retain, SharedStore, now_ms};
use crate::telemetry::Metrics;

/// The pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);
/// At most this many rounds of deletes per run for the size bound, where the size follows
/// deletes (SQLite): the bound is met over a few runs rather than by one long one.
const SIZE_ROUNDS: usize = 100;

/// What one run deleted, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    /// Resolved alerts (their firings, history and deliveries with them).
    pub resolved_alerts: u64,
    /// Firings.
    pub firings: u64,
    /// Retired agents' fleet rows.
    pub agents: u64,
    /// Archive rows (each holds up to 4,096 events).
    pub event_batches: u64,
    /// The live size afterwards, bytes.
    pub live_bytes: i64,
}

impl Retained {
    fn add(&mut self, what: Retain, n: u64) {
        match what {
            Retain::ResolvedAlerts => self.resolved_alerts += n,
            Retain::Firings => self.firings += n,
            Retain::Agents => self.agents += n,
            Retain::Events => self.event_batches += n,
        }
    }
}

/// Deletes everything of `what` older than `cutoff`, batch by batch.
async fn drain(
    store: &SharedStore,
    what: Retain,
    cutoff: i64,
    batch: u32,
    out: &mut Retained,
    metrics: &Metrics,
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let n = store.retain_batch(what, cutoff, i64::from(batch)).await?;
        out.add(what, n);
        total += n;
        metrics.retention_deleted.with_label_values(&[what.as_str()]).inc_by(n);
        if n < u64::from(batch) {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// One run at `now` (Unix ms): the ages, then the size bound, then the space back to the disk.
pub async fn run_once(
    store: &SharedStore,
    config: &RetentionConfig,
    now: i64,
    metrics: &Metrics,
) -> anyhow::Result<Retained> {
    let mut out = Retained::default();
    for (what, age) in [
        (Retain::ResolvedAlerts, config.resolved_alerts),
        (Retain::Firings, config.firings),
        (Retain::Agents, config.agents),
        (Retain::Events, config.events),
    ] {
        if !age.is_zero() {
            let cutoff = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
            drain(store, what, cutoff, config.batch, &mut out, metrics).await?;
        }
    }
    let bound = i64::try_from(config.max_db_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    metrics.store_bound_bytes.set(if config.max_db_mb > 0 { bound } else { 0 });
    if config.max_db_mb > 0 {
        let rounds = if store.size_follows_deletes() { SIZE_ROUNDS } else { 1 };
        for _ in 0..rounds {
            if store.live_bytes().await? <= bound {
                break;
            }
            // Archived events first (search history is worth less than alerts), then the
            // oldest resolved alerts; only when none is left, the oldest firings.
            let mut n = 0;
            for what in [Retain::Events, Retain::ResolvedAlerts, Retain::Firings] {
                n = store.retain_batch(what, i64::MAX, i64::from(config.batch)).await?;
                out.add(what, n);
                metrics.retention_deleted.with_label_values(&[what.as_str()]).inc_by(n);
                if n > 0 {
                    break;
                }
            }
            if n == 0 {
                tracing::warn!(
                    bound_mb = config.max_db_mb,
                    "the database is over its bound with nothing left to delete"
                );
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    store.reclaim().await?;
    out.live_bytes = store.live_bytes().await?;
    metrics.store_bytes.set(out.live_bytes);
    Ok(out)
}

/// Runs every `interval` until cancelled (the first run soon after start).
pub async fn run(
    store: SharedStore,
    config: RetentionConfig,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = config.interval;
        match run_once(&store, &config, now_ms(), &metrics).await {
            Ok(r) if r.resolved_alerts + r.firings + r.agents + r.event_batches > 0 => {
                tracing::info!(
                    resolved_alerts = r.resolved_alerts,
                    firings = r.firings,
                    agents = r.agents,
                    event_batches = r.event_batches,
                    live_bytes = r.live_bytes,
                    "retention deleted old data"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "retention failed; next run in {:?}", config.interval)
            }
        }
    }
}
