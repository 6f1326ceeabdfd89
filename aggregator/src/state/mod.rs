//! Shared detection state: sliding windows, sequence steps, first-seen values, cooldowns and
//! the dedup record of processed events (design.md §5).
//!
//! The detector turns a batch of events into a list of [`Op`]s; a [`WindowState`] applies
//! them in order, atomically per call, and answers one [`Verdict`] per op. Two
//! implementations share these semantics exactly: [`memory::MemoryState`] (embedded mode,
//! tests, the benchmark's CPU ceiling) and [`redis::RedisState`] (the cluster profile; one Lua
//! script call per batch, so replicas sharing a Redis see one consistent state). One
//! conformance suite (`tests/state_conformance.rs`) runs against both.
//!
//! Every op is idempotent per event: window members are event keys (or, for `distinct`,
//! values), and each firing records the event that triggered it. An event processed twice —
//! a redelivery after a crash between updating state and acking — gives the same verdict
//! again, and the same deterministic firing id, instead of a second firing or a lost one.
//!
//! Times are event times in microseconds since the Unix epoch (exact in Redis's doubles).

pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::Arc;

/// An event key or a window member in an [`Op`]: shared, since one event's key appears in
/// several ops and several state indexes (cloning it is a reference count, not an
/// allocation).
pub type Name = Arc<str>;

/// One state update, evaluated for one event and one rule.
///
/// A `suppress` is a cooldown on the op's `key` (the rule and group), in µs of event time:
/// within it after the last firing allowed through, further firings of the same key are
/// suppressed. (The cooldown is keyed like the window, so it needs no key of its own.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Threshold and distinct rules: add `member` at `ts` and fire when `count` members lie
    /// within `window` of each other around `ts`. For distinct rules `member` is the value
    /// (a member keeps its latest time); for threshold rules it is the event key.
    Window {
        /// The rule and group.
        key: Name,
        /// What is counted.
        member: Name,
        /// The event key (recorded as the trigger when this op fires).
        by: Name,
        /// Event time, µs.
        ts: i64,
        /// Window length, µs.
        window: i64,
        /// How many members make a firing.
        count: u32,
        /// How far behind the newest member an event may arrive and still count, µs.
        lateness: i64,
        /// The cooldown, if the rule has one.
        suppress: Option<i64>,
    },
    /// A sequence rule's first step: remember the event.
    SeqFirst {
        /// The rule and group.
        key: Name,
        /// The event key.
        member: Name,
        /// Event time, µs.
        ts: i64,
        /// Window length, µs.
        window: i64,
        /// Allowed lateness, µs.
        lateness: i64,
    },
    /// A sequence rule's closing step: fire when `count` first-step events lie within
    /// `window` before `ts`.
    SeqThen {
        /// The rule and group.
        key: Name,
        /// The event key.
        by: Name,
        /// Event time, µs.
        ts: i64,
        /// Window length, µs.
        window: i64,
        /// How many first-step events are needed.
        count: u32,
        /// The cooldown, if any.
        suppress: Option<i64>,
    },
    /// A new_value rule: fire when `value` was never seen for the group (within `ttl`).
    NewValue {
        /// The rule and group.
        key: Name,
        /// The value.
        value: String,
        /// The event key.
        by: Name,
        /// Event time, µs.
        ts: i64,
        /// How long a value is remembered after it was last seen, seconds.
        ttl: u64,
        /// The cooldown, if any.
        suppress: Option<i64>,
    },
    /// A match rule with a cooldown: only the cooldown.
    Gate {
        /// The rule and group.
        key: Name,
        /// The event key.
        by: Name,
        /// Event time, µs.
        ts: i64,
        /// The cooldown.
        suppress: i64,
    },
}

impl Op {
    /// The rule and group the op is about: the state key.
    pub fn key(&self) -> &Name {
        match self {
            Op::Window { key, .. }
            | Op::SeqFirst { key, .. }
            | Op::SeqThen { key, .. }
            | Op::NewValue { key, .. }
            | Op::Gate { key, .. } => key,
        }
    }
}

/// The answer to one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report.
    Quiet,
    /// The rule fires; the number of events (or values) that made it.
    Fired(u32),
    /// The rule would fire but its cooldown is running.
    Suppressed,
    /// The event is older than the window plus the allowed lateness: not counted.
    Late,
}

/// A contiguous run of an agent's sequence numbers, `[first, end)`, in one epoch; the unit of
/// deduplication. An event with an identity of its own (legacy JSON, the API) is a
/// [`Span::single`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The node.
    pub node: String,
    /// The agent's spool epoch.
    pub epoch: u64,
    /// First sequence number.
    pub first: u64,
    /// One past the last.
    pub end: u64,
    /// The identity of a single event (see [`Span::single`]).
    pub single: Option<uuid::Uuid>,
}

impl Span {
    /// The span of a single event with identity `id` (legacy JSON, the API, webhooks, silent
    /// agents): `[0, 1)` of node `id/<uuid>`, epoch 0. Single events are recorded apart from
    /// agents' runs, so no node's name can reach them: in Redis as members of a few sorted
    /// sets scored by when they were processed, one command per set for a whole batch of
    /// legacy messages instead of a key per event.
    pub fn single(id: uuid::Uuid) -> Self {
        Self { node: format!("id/{}", id.simple()), epoch: 0, first: 0, end: 1, single: Some(id) }
    }
}

/// Why the state could not be read or written; the batch is retried (not acked).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered something the script never returns.
    #[error("unexpected reply from the state script: {0}")]
    Protocol(String),
}

/// Shared detection state. Calls are atomic: ops of one call are applied in order with
/// nothing interleaved, so replicas sharing the state agree.
pub trait WindowState: Send + Sync {
    /// Applies `ops` in order; one verdict per op.
    fn apply(&self, ops: &[Op]) -> impl Future<Output = Result<Vec<Verdict>, StateError>> + Send;

    /// For each span, the already processed runs that intersect it, sorted.
    fn processed(
        &self,
        spans: &[Span],
    ) -> impl Future<Output = Result<Vec<Vec<(u64, u64)>>, StateError>> + Send;

    /// Records spans as processed (after their effects are committed).
    fn mark_processed(&self, spans: &[Span])
    -> impl Future<Output = Result<(), StateError>> + Send;

    /// Records when nodes were last heard from (unix seconds; a node's time only moves
    /// forward).
    fn record_seen(
        &self,
        seen: &[(String, i64)],
    ) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Every node heard from, with when (unix seconds).
    fn last_seen(&self) -> impl Future<Output = Result<Vec<(String, i64)>, StateError>> + Send;
}

/// The state the aggregator was configured with.
#[derive(Debug)]
pub enum AnyState {
    /// In memory (embedded mode).
    Memory(memory::MemoryState),
    /// Redis (cluster profile).
    Redis(redis::RedisState),
}

impl WindowState for AnyState {
    async fn apply(&self, ops: &[Op]) -> Result<Vec<Verdict>, StateError> {
        match self {
            AnyState::Memory(s) => s.apply(ops).await,
            AnyState::Redis(s) => s.apply(ops).await,
        }
    }

    async fn processed(&self, spans: &[Span]) -> Result<Vec<Vec<(u64, u64)>>, StateError> {
        match self {
            AnyState::Memory(s) => s.processed(spans).await,
            AnyState::Redis(s) => s.processed(spans).await,
        }
    }

    async fn mark_processed(&self, spans: &[Span]) -> Result<(), StateError> {
        match self {
            AnyState::Memory(s) => s.mark_processed(spans).await,
            AnyState::Redis(s) => s.mark_processed(spans).await,
        }
    }

    async fn record_seen(&self, seen: &[(String, i64)]) -> Result<(), StateError> {
        match self {
            AnyState::Memory(s) => s.record_seen(seen).await,
            AnyState::Redis(s) => s.record_seen(seen).await,
        }
    }

    async fn last_seen(&self) -> Result<Vec<(String, i64)>, StateError> {
        match self {
            AnyState::Memory(s) => s.last_seen().await,
            AnyState::Redis(s) => s.last_seen().await,
        }
    }
}

/// How long window keys outlive their newest member: the window, the lateness and a margin
/// for clock skew between agents, in seconds.
pub(crate) fn window_ttl(window_us: i64, lateness_us: i64) -> u64 {
    ((window_us + lateness_us) / 1_000_000).max(0) as u64 + 3_600
}

/// How long a cooldown key lives: the cooldown plus a margin, in seconds.
pub(crate) fn gate_ttl(suppress_us: i64) -> u64 {
    (suppress_us / 1_000_000).max(0) as u64 + 3_600
}

/// How long processed spans are remembered: longer than any redelivery or spool replay.
pub const DEDUP_TTL_SECS: u64 = 14 * 86_400;
