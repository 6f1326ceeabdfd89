//! The batcher: takes events from the sources, closes a batch on count or age, encodes it as an
//! envelope and appends it to the spool before anything is sent. At the spool's cap it sheds
//! the lowest-severity events first and counts every one; the counts travel upstream in the
//! next envelope that fits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wire::{DropCounts, DropReason, Envelope, Event, Severity};

use crate::filter::Filter;
use crate::spool::{AppendError, Spool, lock};
use crate::telemetry::Metrics;

/// Shedding priorities (0–9, higher is kept longer): when the spool is at its cap, a batch
/// loses its lowest-priority events first, and within a priority its least severe ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priorities {
    /// The synthetic source and scenarios.
    pub synthetic: u8,
    /// The auth log.
    pub auth: u8,
    /// dpkg's log.
    pub dpkg: u8,
    /// The Kubernetes audit log.
    pub k8s_audit: u8,
    /// Watched files.
    pub files: u8,
}

impl Priorities {
    /// The priority of an event from `source`. Events submitted over the HTTP API are 5; the
    /// agent's reports on itself are 9; kernel messages from the journal share the auth log's
    /// (both come from the journal source, and an OOM kill or an AppArmor denial matters as
    /// much as a login).
    pub fn of(&self, source: wire::Source) -> u8 {
        use wire::Source;
        match source {
            Source::Synthetic => self.synthetic,
            Source::AuthLog | Source::Kernel => self.auth,
            Source::Dpkg => self.dpkg,
            Source::K8sAudit => self.k8s_audit,
            Source::FileWatch => self.files,
            Source::Agent => 9,
            Source::Api | Source::Legacy | Source::Webhook => 5,
        }
    }
}

/// Shared handle to the spool: a std mutex, never held across an `.await`.
pub type SharedSpool = Arc<Mutex<Spool>>;

/// Batching settings.
#[derive(Debug)]
pub struct BatchSettings {
    /// The node the envelopes are from.
    pub node_id: String,
    /// Close a batch at this many events.
    pub max_events: usize,
    /// Close a batch when its oldest event waited this long.
    pub max_age: Duration,
    /// The edge filter, applied to every event before it joins a batch.
    pub filter: Filter,
    /// Which events are shed first at the spool's cap.
    pub priorities: Priorities,
}

/// Where an API event was spooled: `(epoch, seq)`, or `None` when it was not.
pub type SpooledAt = Option<(u64, u64)>;

/// A caller waiting for an event of the open batch, by its index in the batch.
type Waiter = (usize, oneshot::Sender<SpooledAt>);

/// An event submitted through the HTTP API, with the answer its caller waits for: the
/// `(epoch, seq)` it was spooled under, or `None` when it was not spooled (shed or failed).
#[derive(Debug)]
pub struct Submitted {
    /// The event.
    pub event: Event,
    /// Where the outcome goes.
    pub done: oneshot::Sender<SpooledAt>,
}

/// What a source hands the batcher.
// Events are the hot path (100,000 a second); boxing them to shrink the rare marks would
// cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Collected {
    /// An event: filtered, then batched.
    Event(Event),
    /// Answered with `true` once everything the source sent before it is in the spool, `false`
    /// when that failed. A tailing source moves its saved file position only then, so a
    /// crash can repeat lines but never skip them.
    Mark(oneshot::Sender<bool>),
}

impl From<Event> for Collected {
    fn from(e: Event) -> Self {
        Collected::Event(e)
    }
}

/// Runs until `events` closes or `cancel` fires; then writes the open batch to the spool.
/// Events from `api` bypass the edge filter (someone asked for them explicitly) and are
/// answered once their batch is on disk.
#[allow(clippy::too_many_arguments)]
pub async fn run_batcher(
    mut settings: BatchSettings,
    mut events: mpsc::Receiver<Collected>,
    mut api: mpsc::Receiver<Submitted>,
    start_drops: DropCounts,
    spool: SharedSpool,
    wake_sender: Arc<Notify>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut batch: Vec<Event> = Vec::with_capacity(settings.max_events);
    // Callers waiting on events of the open batch, by index in the batch.
    let mut waiters: Vec<Waiter> = Vec::new();
    // Marks waiting for the open batch; and whether the last batch made it to the spool.
    let mut marks: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut last_ok = true;
    let mut api_open = true;
    let mut events_open = true;
    metrics.count_drops(&start_drops);
    let mut pending_drops = start_drops;
    let mut deadline: Option<Instant> = None;
    loop {
        let close = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Take what the sources already handed over, then stop.
                while let Ok(c) = events.try_recv() {
                    match c {
                        Collected::Event(e) => batch.push(e),
                        Collected::Mark(m) => marks.push(m),
                    }
                }
                while let Ok(s) = api.try_recv() {
                    waiters.push((batch.len(), s.done));
                    batch.push(s.event);
                }
                let (b, d, w) = (&mut batch, &mut pending_drops, &mut waiters);
                let ok = close_batch(&settings, b, d, w, &spool, &metrics, &wake_sender).await?;
                for m in marks.drain(..) {
                    let _ = m.send(ok);
                }
                return Ok(());
            }
            () = sleep_until(deadline) => true,
            submitted = api.recv(), if api_open => match submitted {
                Some(s) => {
                    if batch.is_empty() {
                        deadline = Some(Instant::now() + settings.max_age);
                    }
                    waiters.push((batch.len(), s.done));
                    batch.push(s.event);
                    batch.len() >= settings.max_events
                }
                None => {
                    api_open = false;
                    false
                }
            },
            received = events.recv(), if events_open => match received {
                Some(Collected::Mark(m)) => {
                    // Nothing open: what came before is already settled.
                    if batch.is_empty() && deadline.is_none() {
                        let _ = m.send(last_ok);
                    } else {
                        marks.push(m);
                    }
                    continue;
                }
                Some(Collected::Event(event)) => {
                    if let Some(reason) = settings.filter.check(&event) {
                        pending_drops.add(reason, 1);
                        metrics.dropped.with_label_values(&[reason.as_str()]).inc();
                        // Drops travel in an envelope even when no event is kept.
                        deadline.get_or_insert_with(|| Instant::now() + settings.max_age);
                        continue;
                    }
                    if batch.is_empty() {
                        deadline = Some(Instant::now() + settings.max_age);
                    }
                    batch.push(event);
                    batch.len() >= settings.max_events
                }
                None => {
                    events_open = false;
                    false
                }
            },
        };
        // With every producer gone, spool what is left and stop.
        let finished = !events_open && !api_open;
        if close || finished {
            deadline = None;
            let (b, d, w) = (&mut batch, &mut pending_drops, &mut waiters);
            last_ok = close_batch(&settings, b, d, w, &spool, &metrics, &wake_sender).await?;
            for m in marks.drain(..) {
                let _ = m.send(last_ok);
            }
        }
        if !pending_drops.is_empty() && deadline.is_none() {
            // Counts a full disk kept out of the spool: try again shortly (they go with the
            // next envelope at a new position, or alone once there is room).
            deadline = Some(Instant::now() + settings.max_age.max(Duration::from_secs(1)));
        }
        if finished {
            // Still owed upstream: wait for the room the acknowledgements free.
            while !pending_drops.is_empty() && lock(&spool).drops_welcome() {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let (b, d, w) = (&mut batch, &mut pending_drops, &mut waiters);
                close_batch(&settings, b, d, w, &spool, &metrics, &wake_sender).await?;
            }
            if !pending_drops.is_empty() {
                tracing::warn!(drops = ?pending_drops, "drop counts not reported upstream (counted in this agent's metrics and heartbeats)");
            }
            return Ok(());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Spools the open batch, answers its API callers and wakes the sender. `true` when the
/// batch is in the spool (or there was nothing to spool).
async fn close_batch(
    settings: &BatchSettings,
    batch: &mut Vec<Event>,
    drops: &mut DropCounts,
    waiters: &mut Vec<Waiter>,
    spool: &SharedSpool,
    metrics: &Metrics,
    wake_sender: &Notify,
) -> anyhow::Result<bool> {
    let empty = batch.is_empty();
    let at = flush(settings, batch, drops, spool, metrics).await?;
    answer(waiters, at);
    wake_sender.notify_one();
    Ok(empty || at.is_some())
}

/// Tells the waiting API callers where their events went: `(epoch, first_seq + index)` when
/// the whole batch was spooled, `None` otherwise (the caller answers 503).
fn answer(waiters: &mut Vec<Waiter>, at: SpooledAt) {
    for (index, done) in waiters.drain(..) {
        let _ = done.send(at.map(|(epoch, first)| (epoch, first + index as u64)));
    }
}

/// Spools the open batch (when there is anything to spool). Returns `(epoch, first_seq)`
/// when every event of the batch is on disk.
async fn flush(
    settings: &BatchSettings,
    batch: &mut Vec<Event>,
    drops: &mut DropCounts,
    spool: &SharedSpool,
    metrics: &Metrics,
) -> anyhow::Result<SpooledAt> {
    if batch.is_empty() && drops.is_empty() {
        return Ok(None);
    }
    flush_batch(settings, batch, drops, spool, metrics).await
}

/// Spools one batch (on a blocking thread: it writes and flushes a file).
async fn flush_batch(
    settings: &BatchSettings,
    batch: &mut Vec<Event>,
    drops: &mut DropCounts,
    spool: &SharedSpool,
    metrics: &Metrics,
) -> anyhow::Result<SpooledAt> {
    let events = std::mem::take(batch);
    let carried = std::mem::take(drops);
    let spool = Arc::clone(spool);
    let node_id = settings.node_id.clone();
    let priorities = settings.priorities;
    let (outcome, left_drops) = tokio::task::spawn_blocking(move || {
        spool_batch(&spool, &node_id, &priorities, events, carried)
    })
    .await?;
    *drops = left_drops;
    metrics.spooled.inc_by(outcome.spooled);
    metrics.spool_bytes.set(i64::try_from(outcome.spool_bytes).unwrap_or(i64::MAX));
    metrics.count_drops(&outcome.shed);
    Ok(outcome.shed.is_empty().then_some(outcome.at).flatten())
}

/// What spooling a batch did.
#[derive(Debug, Default)]
pub struct Spooled {
    /// Events written.
    pub spooled: u64,
    /// Events shed at the cap (already added to the carried drop counts).
    pub shed: DropCounts,
    /// Spool size afterwards.
    pub spool_bytes: u64,
    /// `(epoch, first_seq)` of the spooled envelope, when one was spooled.
    pub at: Option<(u64, u64)>,
}

/// Encodes and appends a batch. While the spool is full it sheds the batch's events in
/// [`shed_rank`] order — the lowest-priority source first, within it the least severe — and
/// tries again, down to an envelope of drop counts alone. Returns the outcome and the drop
/// counts still to be carried upstream (empty once an envelope carrying them was spooled).
pub fn spool_batch(
    spool: &Mutex<Spool>,
    node_id: &str,
    priorities: &Priorities,
    mut events: Vec<Event>,
    mut drops: DropCounts,
) -> (Spooled, DropCounts) {
    let mut spool = lock(spool);
    let mut shed = DropCounts::default();
    // The ranks present, lowest first: each failed append sheds the next one.
    let mut ranks: Vec<u16> = events.iter().map(|e| shed_rank(priorities, e)).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut ranks = ranks.into_iter().map(Some).chain([None]);
    let carry = spool.drops_welcome();
    loop {
        let envelope = Envelope {
            node_id: node_id.to_owned(),
            epoch: spool.epoch(),
            first_seq: spool.next_seq(),
            events,
            dropped: if carry { drops.clone() } else { DropCounts::default() },
        };
        if envelope.events.is_empty() && envelope.dropped.is_empty() {
            // Nothing to spool here: the drop counts wait for the next position.
            return (Spooled { spooled: 0, shed, spool_bytes: spool.bytes(), at: None }, drops);
        }
        let frame = wire::encode(&envelope);
        let count = u32::try_from(envelope.events.len()).unwrap_or(u32::MAX);
        match spool.append(count, &frame) {
            Ok(_) => {
                let left = if envelope.dropped.is_empty() {
                    drops
                } else {
                    spool.drops_spooled_at(envelope.first_seq);
                    DropCounts::default()
                };
                return (
                    Spooled {
                        spooled: u64::from(count),
                        shed,
                        spool_bytes: spool.bytes(),
                        at: Some((envelope.epoch, envelope.first_seq)),
                    },
                    left,
                );
            }
            Err(AppendError::Full { .. }) => {
                events = envelope.events;
                let before = events.len();
                match ranks.next() {
                    Some(Some(rank)) => events.retain(|e| shed_rank(priorities, e) > rank),
                    Some(None) if events.is_empty() => continue,
                    Some(None) => events.clear(),
                    None => {
                        // Not even the drop counts fit: keep carrying them in memory.
                        return (
                            Spooled { spooled: 0, shed, spool_bytes: spool.bytes(), at: None },
                            drops,
                        );
                    }
                }
                let n = (before - events.len()) as u64;
                shed.add(DropReason::SpoolFull, n);
                drops.add(DropReason::SpoolFull, n);
            }
            Err(AppendError::Io(e)) => {
                // The events are lost with the write: counted (spool_full) and carried
                // upstream; the agent keeps going so that the next write, once the disk
                // recovers, succeeds.
                let n = envelope.events.len() as u64;
                drops.add(DropReason::SpoolFull, n);
                shed.add(DropReason::SpoolFull, n);
                tracing::error!(error = %e, events = n, "cannot spool a batch; its events are dropped");
                return (Spooled { spooled: 0, shed, spool_bytes: spool.bytes(), at: None }, drops);
            }
        }
    }
}

/// Shedding order at the spool's cap: lower goes first. The source's priority, then the
/// event's severity.
fn shed_rank(priorities: &Priorities, event: &Event) -> u16 {
    let severity = match event.severity {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    };
    u16::from(priorities.of(event.source)) * 4 + severity
}

#[cfg(test)]
mod tests {
    use wire::{EventKind, Outcome, Source, Timestamp};

    use super::*;

    fn event(source: Source, severity: Severity) -> Event {
        let kind = EventKind::Login {
            user: "u".repeat(2000),
            src_ip: None,
            method: None,
            outcome: Outcome::Failure,
            reason: None,
        };
        Event::new(Timestamp::from_unix(0, 0), source, severity, kind)
    }

    #[test]
    fn one_drop_report_per_sequence_position() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let spool = Mutex::new(spool);
        let p = Priorities::default();
        let drops = |n| {
            let mut d = DropCounts::default();
            d.add(DropReason::Filtered, n);
            d
        };
        let one = || vec![event(Source::Synthetic, Severity::Info)];
        // A report alone at position 0 (a fresh epoch: nothing was reported there).
        let (_, left) = spool_batch(&spool, "n", &p, vec![], drops(3));
        assert!(left.is_empty());
        // A second one there would be taken upstream for a repeat of the first: it waits.
        let (_, left) = spool_batch(&spool, "n", &p, vec![], drops(2));
        assert_eq!(left, drops(2));
        // Events at position 0 too go without it; at position 1 it rides along.
        let (_, left) = spool_batch(&spool, "n", &p, one(), left);
        assert_eq!(left, drops(2));
        let (_, left) = spool_batch(&spool, "n", &p, one(), left);
        assert!(left.is_empty());
        let spooled: Vec<(u64, usize, u64)> = {
            let s = spool.lock().unwrap();
            s.pending()
                .map(|r| {
                    let e: Envelope = wire::decode(&s.read(r).unwrap()).unwrap();
                    (e.first_seq, e.events.len(), e.dropped.get(DropReason::Filtered))
                })
                .collect()
        };
        assert_eq!(spooled, vec![(0, 0, 3), (0, 1, 0), (1, 1, 2)]);
        // After a restart the last report's position is unknown: the first report waits.
        drop(spool);
        let (spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let spool = Mutex::new(spool);
        let (_, left) = spool_batch(&spool, "n", &p, vec![], drops(1));
        assert_eq!(left, drops(1));
        let (_, left) = spool_batch(&spool, "n", &p, one(), left);
        assert_eq!(left, drops(1));
        let (_, left) = spool_batch(&spool, "n", &p, one(), left);
        assert!(left.is_empty());
    }

    #[test]
    fn at_the_cap_the_lowest_priority_goes_first_then_the_least_severe() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20, false).unwrap();
        let spool = Mutex::new(spool);
        let priorities = Priorities::default();
        // Fill the spool to about five events under its cap with synthetic events.
        let one = vec![event(Source::Synthetic, Severity::Info)];
        let (r, _) = spool_batch(&spool, "n", &priorities, one, DropCounts::default());
        assert_eq!(r.spooled, 1);
        let per_event = spool.lock().unwrap().bytes();
        let n = ((1 << 20) / per_event) as usize - 20;
        let filler: Vec<Event> = (0..n).map(|_| event(Source::Synthetic, Severity::Info)).collect();
        let (r, _) = spool_batch(&spool, "n", &priorities, filler, DropCounts::default());
        assert_eq!(r.spooled, n as u64);
        let room = || {
            let s = spool.lock().unwrap();
            s.max_bytes() - s.bytes()
        };
        while room() > 10_000 {
            let one = vec![event(Source::Synthetic, Severity::Info)];
            let (r, _) = spool_batch(&spool, "n", &priorities, one, DropCounts::default());
            assert_eq!(r.spooled, 1);
        }
        let room = room();
        // A batch that fits only in part: 8 synthetic, 4 auth info, 4 auth critical, 4 file
        // changes (each event is about 2 KB).
        let mut batch = Vec::new();
        batch.extend((0..8).map(|_| event(Source::Synthetic, Severity::Critical)));
        batch.extend((0..4).map(|_| event(Source::AuthLog, Severity::Info)));
        batch.extend((0..4).map(|_| event(Source::AuthLog, Severity::Critical)));
        batch.extend((0..4).map(|_| event(Source::FileWatch, Severity::Info)));
        assert!(room < 20 * 2000, "the batch must not fit whole (room {room})");
        let (r, carried) = spool_batch(&spool, "n", &priorities, batch, DropCounts::default());
        let out = r;
        assert!(carried.is_empty(), "the drop counts travelled in the envelope");
        let shed = out.shed.get(DropReason::SpoolFull);
        assert_eq!(out.spooled + shed, 20);
        // What was kept: the file changes first, then auth critical, then auth info; the
        // synthetic events go before any auth event.
        let frame = {
            let s = spool.lock().unwrap();
            let record = *s.pending().last().unwrap();
            s.read(&record).unwrap()
        };
        let kept: Vec<(Source, Severity)> = wire::decode(&frame)
            .map(|e: Envelope| e.events.iter().map(|e| (e.source, e.severity)).collect())
            .unwrap();
        let expected: Vec<(Source, Severity)> = [
            [(Source::AuthLog, Severity::Info); 4].as_slice(),
            &[(Source::AuthLog, Severity::Critical); 4],
            &[(Source::FileWatch, Severity::Info); 4],
        ]
        .concat();
        let tail = &expected[expected.len() - kept.len()..];
        assert_eq!(kept, tail, "kept {} of 20", kept.len());
        assert!((1..12).contains(&kept.len()), "kept {}: shedding was partial", kept.len());
    }
}
