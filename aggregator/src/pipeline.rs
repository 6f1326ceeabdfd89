//! The detection pipeline shared by every event source (the RabbitMQ consumers, the API,
//! embedded mode): deduplicate, detect, commit firings, then record the batch as processed.
//!
//! Order matters for "nothing lost, nothing counted twice" (design.md §4): a batch is marked
//! processed only after its firings are committed, and the caller acks its messages only after
//! that. A crash in between makes the batch come back; the state ops are idempotent per event
//! and firing ids are deterministic, so the second pass produces the same firings and the store
//! recognises them.

use std::sync::{Arc, RwLock};

use uuid::Uuid;
use wire::model::{Event, EventKind, Severity, Source, Timestamp, Value};
use wire::{Envelope, legacy};

use crate::archive::{self, Key, Pending};
use crate::detect::{Detector, Input};
use crate::state::{Span, WindowState};
use crate::store::AlertSink;
use crate::telemetry::{Metrics, Stage};

/// One unit of input. (Items live in a batch only briefly; boxing the larger variant would
/// cost an allocation per legacy event for nothing.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Item {
    /// An agent's envelope.
    Envelope(Envelope),
    /// A single event with its own identity (legacy JSON, the API).
    Single {
        /// Its identity (the legacy `event_id`, or a digest of the message).
        id: Uuid,
        /// The node it is about.
        node: String,
        /// The event.
        event: Event,
    },
}

/// What one batch did (for tests and the benchmark).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Events evaluated.
    pub events: u64,
    /// Events skipped as already processed.
    pub duplicates: u64,
    /// Firings committed (alert-mode rules).
    pub firings: u64,
}

/// The active rules, swapped atomically by the reloader.
#[derive(Debug)]
pub struct Rules {
    current: RwLock<Arc<Detector>>,
    /// Shadow rules' firings since this process started (the rules page's live figures).
    pub shadow: ShadowBook,
}

/// Distinct groups counted per shadow rule at most (the count says "at least" beyond).
const SHADOW_GROUPS: usize = 10_000;
/// Examples kept per shadow rule.
const SHADOW_EXAMPLES: usize = 3;

/// One shadow rule's live figures: what a backtest reports, counted as events arrive.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ShadowFigures {
    /// Firings.
    pub firings: u64,
    /// Distinct groups (at most 10,000 are told apart).
    pub groups: u64,
    /// The first firings: `(event time, node, title)`.
    pub examples: Vec<(String, String, String)>,
    /// The newest firing's event time.
    pub last_fired: Option<String>,
    #[serde(skip)]
    seen: std::collections::HashSet<String>,
}

/// Shadow rules' figures by rule id, in this process (each replica counts what it evaluates).
#[derive(Debug, Default)]
pub struct ShadowBook {
    rules: std::sync::Mutex<std::collections::HashMap<String, ShadowFigures>>,
}

impl ShadowBook {
    /// Counts a batch's shadow firings.
    pub fn record(&self, firings: &[crate::detect::Firing]) {
        if firings.is_empty() {
            return;
        }
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for f in firings {
            let fig = rules.entry(f.rule_id.to_string()).or_default();
            fig.firings += 1;
            if fig.seen.len() < SHADOW_GROUPS && fig.seen.insert(f.fingerprint.clone()) {
                fig.groups += 1;
            }
            let ts = f.event.ts.to_rfc3339();
            if fig.examples.len() < SHADOW_EXAMPLES {
                fig.examples.push((ts.clone(), f.node.clone(), f.title.clone()));
            }
            if fig.last_fired.as_ref().is_none_or(|l| *l < ts) {
                fig.last_fired = Some(ts);
            }
        }
    }

    /// A rule's figures, if it fired in shadow mode.
    pub fn get(&self, rule: &str) -> Option<ShadowFigures> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).get(rule).cloned()
    }
}

impl Rules {
    /// Starts with a detector.
    pub fn new(detector: Detector) -> Self {
        Self { current: RwLock::new(Arc::new(detector)), shadow: ShadowBook::default() }
    }

    /// The detector in force now.
    pub fn get(&self) -> Arc<Detector> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the detector; batches already running finish with the old one.
    pub fn swap(&self, detector: Detector) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(detector);
    }
}

/// State, store, rules and metrics.
#[derive(Debug)]
pub struct Pipeline<S, K> {
    /// Windows, cooldowns, dedup record.
    pub state: S,
    /// Where firings go.
    pub sink: K,
    /// The active rules.
    pub rules: Arc<Rules>,
    /// Counters.
    pub metrics: Metrics,
    /// Whether evaluated events go to the archive (`[archive] enabled`).
    pub archive: bool,
    /// The spans of the batches this process is processing now.
    pub in_flight: InFlight,
}

/// The spans of the batches being processed in this process (two consumers run batches side by
/// side). A batch holding a span that overlaps another batch's (a redelivery or an agent's
/// replay next to the original) waits until that batch is done, so that its dedup lookup sees
/// the other's mark: evaluated once, counted once. It may not skip them while the other is in
/// flight instead, since it marks its whole spans processed and the other may yet fail.
#[derive(Debug, Default)]
pub struct InFlight {
    spans: std::sync::Mutex<InFlightSpans>,
    done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct InFlightSpans {
    next: u64,
    /// Per node (or dedup name), the runs held: `(epoch, first, end, batch)`.
    by_node: std::collections::HashMap<String, Vec<(u64, u64, u64, u64)>>,
}

/// A batch's claim on its spans; released when dropped (the batch done, failed or cancelled).
#[derive(Debug)]
pub struct Claim<'a> {
    owner: &'a InFlight,
    id: u64,
    nodes: Vec<String>,
}

impl InFlight {
    /// Claims `spans`, waiting while another batch holds an overlapping one.
    pub async fn claim(&self, spans: &[Span]) -> Claim<'_> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.spans.lock().unwrap_or_else(|p| p.into_inner());
                let busy = spans.iter().any(|sp| {
                    s.by_node.get(sp.node.as_str()).is_some_and(|runs| {
                        runs.iter().any(|&(e, a, b, _)| e == sp.epoch && a < sp.end && sp.first < b)
                    })
                });
                if !busy {
                    s.next += 1;
                    let id = s.next;
                    let mut nodes = Vec::with_capacity(spans.len());
                    for sp in spans {
                        let run = (sp.epoch, sp.first, sp.end, id);
                        s.by_node.entry(sp.node.clone()).or_default().push(run);
                        nodes.push(sp.node.clone());
                    }
                    return Claim { owner: self, id, nodes };
                }
            }
            notified.await;
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.owner.spans.lock().unwrap_or_else(|p| p.into_inner());
            for node in &self.nodes {
                if let Some(runs) = s.by_node.get_mut(node) {
                    runs.retain(|r| r.3 != self.id);
                    if runs.is_empty() {
                        s.by_node.remove(node);
                    }
                }
            }
        }
        self.owner.done.notify_waiters();
    }
}

const DROPS_NAMESPACE: Uuid = Uuid::from_u128(0x9b1c_22d4_5e7f_4a30_b6c8_0d1e_2f3a_4b5c);

/// The events an envelope's drop report turns into (one per reason, kind `agent_drops`).
fn drop_events(env: &Envelope) -> Vec<(Uuid, Event)> {
    let ts = env.events.first().map_or_else(Timestamp::now, |e| e.ts);
    env.dropped
        .iter()
        .map(|(reason, n)| {
            let mut name = env.node_id.as_bytes().to_vec();
            name.push(0);
            name.extend_from_slice(&env.epoch.to_be_bytes());
            name.extend_from_slice(&env.first_seq.to_be_bytes());
            name.extend_from_slice(reason.as_str().as_bytes());
            let event = Event::new(
                ts,
                Source::Agent,
                Severity::Warning,
                EventKind::Generic {
                    event_type: "agent_drops".into(),
                    fields: vec![
                        ("reason".into(), Value::Str(reason.as_str().into())),
                        ("count".into(), Value::Int(i64::try_from(n).unwrap_or(i64::MAX))),
                    ],
                },
            );
            (Uuid::new_v5(&DROPS_NAMESPACE, &name), event)
        })
        .collect()
}

/// The dedup span of an item; an envelope's drop report is its own span (an envelope may
/// carry drops and no events).
fn spans(item: &Item) -> [Option<Span>; 2] {
    match item {
        Item::Envelope(env) => [
            Some(Span {
                node: env.node_id.clone(),
                epoch: env.epoch,
                first: env.first_seq,
                end: env.end_seq(),
                single: None,
            }),
            (!env.dropped.is_empty()).then(|| Span {
                node: format!("{}#drops", env.node_id),
                epoch: env.epoch,
                first: env.first_seq,
                end: env.first_seq + 1,
                single: None,
            }),
        ],
        Item::Single { id, .. } => [Some(Span::single(*id)), None],
    }
}

fn covered(runs: &[(u64, u64)], seq: u64) -> bool {
    runs.iter().any(|&(a, b)| a <= seq && seq < b)
}

impl<S: WindowState, K: AlertSink> Pipeline<S, K> {
    /// Records heartbeats: the nodes as heard from now, on the aggregator's clock, not the
    /// node's (a Pi has no real-time clock and may report 1970 until it syncs), in the state
    /// (for the silent-agent watcher) and in the store (the fleet table).
    pub async fn heard(&self, beats: &[wire::model::Heartbeat]) -> anyhow::Result<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now().as_nanos();
        let seen: Vec<(String, i64)> =
            beats.iter().map(|h| (h.node_id.clone(), now / 1_000_000_000)).collect();
        self.state.record_seen(&seen).await?;
        self.sink.heartbeats(beats, now / 1_000_000).await
    }

    /// Evaluates archived events again into the state only, nothing stored: how embedded mode
    /// brings its in-memory state up to date after a restart (`archive::replay_since`). State
    /// ops are idempotent per event, so an event the state already holds changes nothing;
    /// firings are dropped, since the batch that archived the events committed them. The
    /// events are then marked processed, so an agent's resend of them is a duplicate. Returns
    /// the events replayed.
    pub async fn replay(&self, events: &[(String, archive::Record)]) -> anyhow::Result<u64> {
        let inputs: Vec<Input<'_>> = events
            .iter()
            .map(|(node, r)| Input { id: r.key.event_id(node), node, event: &r.event })
            .collect();
        let detector = self.rules.get();
        let plan = detector.plan(&inputs);
        self.state.apply(&plan.ops).await?;
        let mut runs: std::collections::BTreeMap<(&str, u64), Vec<(u64, u64)>> =
            std::collections::BTreeMap::new();
        let mut spans = Vec::new();
        for (node, r) in events {
            match r.key {
                Key::Seq { epoch, seq } => crate::state::memory::merge_run(
                    runs.entry((node.as_str(), epoch)).or_default(),
                    seq,
                    seq + 1,
                ),
                Key::Id(id) => spans.push(Span::single(Uuid::from_bytes(id))),
            }
        }
        for ((node, epoch), runs) in runs {
            for (first, end) in runs {
                spans.push(Span { node: node.to_owned(), epoch, first, end, single: None });
            }
        }
        self.state.mark_processed(&spans).await?;
        Ok(inputs.len() as u64)
    }

    /// Processes a batch end to end. On error nothing was marked processed: retry the batch.
    pub async fn process(&self, items: &[Item]) -> anyhow::Result<BatchStats> {
        let mut clock = StageClock::new(&self.metrics);
        let mut all_spans = Vec::new();
        let mut span_of = Vec::with_capacity(items.len());
        for item in items {
            let [a, b] = spans(item);
            let first = all_spans.len();
            all_spans.extend(a.into_iter().chain(b));
            span_of.push(first);
        }
        let _claim = self.in_flight.claim(&all_spans).await;
        let mut done = self.state.processed(&all_spans).await?;
        clock.lap(Stage::Dedup);
        // The same envelope twice in one batch (a redelivery next to the original): the
        // earlier copy counts as processed for the later one.
        let mut taken: std::collections::HashMap<(&str, u64), Vec<(u64, u64)>> =
            std::collections::HashMap::new();
        for (span, runs) in all_spans.iter().zip(done.iter_mut()) {
            let mine = taken.entry((span.node.as_str(), span.epoch)).or_default();
            runs.extend(mine.iter().copied().filter(|&(a, b)| a < span.end && b > span.first));
            crate::state::memory::merge_run(mine, span.first, span.end);
        }

        let mut stats = BatchStats::default();
        let mut extra: Vec<(Uuid, &str, Event)> = Vec::new();
        let mut inputs = Vec::new();
        let mut keys = Vec::new();
        for (item, &si) in items.iter().zip(&span_of) {
            match item {
                Item::Envelope(env) => {
                    let runs = &done[si];
                    for (i, event) in env.events.iter().enumerate() {
                        let seq = env.first_seq + i as u64;
                        if covered(runs, seq) {
                            stats.duplicates += 1;
                            continue;
                        }
                        // A rebased event is identified by the numbers it was first sent
                        // with (wire::model::REBASED_FROM), always within the sender's own.
                        let (epoch, seq) = event.rebased_from().unwrap_or((env.epoch, seq));
                        let id = legacy::event_uuid(&env.node_id, epoch, seq);
                        inputs.push(Input { id, node: &env.node_id, event });
                        keys.push(Key::Seq { epoch, seq });
                    }
                    if !env.dropped.is_empty() && done[si + 1].is_empty() {
                        for (reason, n) in env.dropped.iter() {
                            self.metrics
                                .edge_dropped
                                .with_label_values(&[reason.as_str()])
                                .inc_by(n);
                        }
                        for (id, event) in drop_events(env) {
                            extra.push((id, &env.node_id, event));
                        }
                    }
                }
                Item::Single { id, node, event } => {
                    if done[si].is_empty() {
                        inputs.push(Input { id: *id, node, event });
                        keys.push(Key::Id(id.into_bytes()));
                    } else {
                        stats.duplicates += 1;
                    }
                }
            }
        }
        inputs.extend(extra.iter().map(|(id, node, event)| Input { id: *id, node, event }));
        keys.extend(extra.iter().map(|(id, _, _)| Key::Id(id.into_bytes())));
        stats.events = inputs.len() as u64;
        // The agents' reports about their own sources, for the fleet page (they go through
        // the rules like any event too).
        let reports: Vec<_> = inputs
            .iter()
            .filter_map(|i| crate::store::SourceReport::from_event(i.node, i.event))
            .collect();
        if !reports.is_empty() {
            self.sink.source_reports(&reports, unix_nanos() / 1_000_000).await?;
        }

        let now = unix_nanos();
        for input in &inputs {
            self.metrics.event_age.observe(age_seconds(now, input.event.ts.as_nanos()));
        }

        let detector = self.rules.get();
        let plan = detector.plan(&inputs);
        clock.lap(Stage::Detect);
        let verdicts = self.state.apply(&plan.ops).await?;
        clock.lap(Stage::State);
        let outcome = detector.finish(&inputs, &plan, &verdicts);
        clock.lap(Stage::Detect);
        let rows = if self.archive {
            let pending = inputs
                .iter()
                .zip(&keys)
                .map(|(i, &key)| Pending { node: i.node, key, event: i.event })
                .collect();
            archive::rows(pending)
        } else {
            Vec::new()
        };
        clock.lap(Stage::Archive);
        self.sink.commit(&outcome.firings, &rows).await?;
        clock.lap(Stage::Store);
        let now = unix_nanos();
        for f in &outcome.firings {
            self.metrics.firing_age.observe(age_seconds(now, f.event.ts.as_nanos()));
        }
        self.state.mark_processed(&all_spans).await?;
        clock.lap(Stage::Mark);

        stats.firings = outcome.firings.len() as u64;
        let m = &self.metrics;
        m.events_in.inc_by(stats.events);
        m.duplicates.inc_by(stats.duplicates);
        m.firings.inc_by(stats.firings);
        m.shadow_firings.inc_by(outcome.shadow);
        self.rules.shadow.record(&outcome.shadow_firings);
        m.suppressed.inc_by(outcome.suppressed);
        m.late_events.inc_by(outcome.late);
        if self.archive {
            m.archived_events.inc_by(stats.events);
            m.archived_bytes.inc_by(rows.iter().map(|r| r.frame.len() as u64).sum());
        }
        Ok(stats)
    }
}

/// Times the stages of one batch into `auditflow_aggregator_batch_stage_seconds`; a stage
/// timed twice (detection, before and after the state call) adds up.
struct StageClock<'a> {
    metrics: &'a Metrics,
    last: std::time::Instant,
    spent: [f64; crate::telemetry::STAGES.len()],
}

impl<'a> StageClock<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        Self { metrics, last: std::time::Instant::now(), spent: Default::default() }
    }

    fn lap(&mut self, stage: Stage) {
        let now = std::time::Instant::now();
        self.spent[stage as usize] += (now - self.last).as_secs_f64();
        self.last = now;
    }
}

impl Drop for StageClock<'_> {
    /// Records the stages a batch went through (a failed batch records the ones it finished).
    fn drop(&mut self) {
        for (stage, spent) in crate::telemetry::STAGES.iter().zip(self.spent) {
            if spent > 0.0 {
                self.metrics.batch_stage.with_label_values(&[stage]).observe(spent);
            }
        }
    }
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Seconds from an event time to `now` (both ns since the epoch); an event from the future
/// (a node's clock ahead) counts as age 0.
fn age_seconds(now: i64, ts: i64) -> f64 {
    (now.saturating_sub(ts)).max(0) as f64 / 1e9
}

/// Somewhere to hand events for detection: the API's `POST /api/v1/events` and the webhook
/// receivers use it without knowing the pipeline's state and store types.
#[async_trait::async_trait]
pub trait Intake: Send + Sync {
    /// Processes items as one batch (see [`Pipeline::process`]).
    async fn submit(&self, items: Vec<Item>) -> anyhow::Result<BatchStats>;
}

#[async_trait::async_trait]
impl<S: WindowState + 'static, K: AlertSink + 'static> Intake for Pipeline<S, K> {
    async fn submit(&self, items: Vec<Item>) -> anyhow::Result<BatchStats> {
        self.process(&items).await
    }
}
