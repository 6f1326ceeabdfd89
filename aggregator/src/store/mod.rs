//! The alert store (design.md §6): folds firings into alerts by fingerprint, keeps each alert's
//! lifecycle history, silences, the fleet table and the notification outbox. **Only this
//! module contains SQL.** PostgreSQL in the cluster profile, SQLite in embedded mode; both run
//! the same SQL (see `sql.rs`) and one conformance suite (`tests/store_conformance.rs`).
//!
//! The types here are the API's JSON on purpose: an alert is what the API shows.

pub mod legacy;
pub mod postgres;
mod sql;
pub mod sqlite;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wire::model::{Heartbeat, Timestamp};

use crate::detect::Firing;

/// Evidence events shown per alert (the newest firings).
pub const EVIDENCE_KEPT: i64 = 10;

/// What committing a batch of firings did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Alerts created.
    pub created: usize,
    /// Firings folded into an existing open alert.
    pub folded: usize,
    /// Firings already stored (redelivery): nothing changed.
    pub duplicates: usize,
    /// Alerts created or changed, for the live stream.
    pub changed: Vec<(Uuid, ChangeKind)>,
}

/// Why an alert shows up on the live stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new alert.
    Created,
    /// A firing folded into it.
    Folded,
    /// Its status changed.
    Status,
}

/// Where firings go. Committing is idempotent: a firing id already stored changes nothing.
pub trait AlertSink: Send + Sync {
    /// Stores a batch of firings and its archive rows in one transaction.
    fn commit(
        &self,
        firings: &[Firing],
        archive: &[crate::archive::Row],
    ) -> impl Future<Output = anyhow::Result<Committed>> + Send;

    /// Records heartbeats in the fleet table (`at`: the aggregator's clock, Unix ms).
    fn heartbeats(
        &self,
        beats: &[Heartbeat],
        at: i64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Records the newest report of each node's sources (`at`: the aggregator's clock, Unix
    /// ms).
    fn source_reports(
        &self,
        reports: &[SourceReport],
        at: i64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The agents' log sources, the only names a `source_stats` report is kept for: a node
/// cannot grow the table with names of its own making.
pub const AGENT_SOURCES: [&str; 5] = ["auth", "dpkg", "k8s_audit", "journal", "files"];

/// A node's report about one of its log sources (a `source_stats` event).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceReport {
    /// The reporting node (the batch's, authenticated by the broker: never the event's say).
    pub node: String,
    /// The source, one of [`AGENT_SOURCES`].
    pub source: &'static str,
    /// The event's fields.
    pub stats: serde_json::Value,
}

impl SourceReport {
    /// The report an event makes, if it is an agent's `source_stats` event about one of its
    /// sources.
    pub fn from_event(node: &str, event: &wire::model::Event) -> Option<Self> {
        let wire::model::EventKind::Generic { event_type, fields } = &event.kind else {
            return None;
        };
        if event.source != wire::model::Source::Agent || event_type != "source_stats" {
            return None;
        }
        let named = fields.iter().find_map(|(k, v)| match v {
            wire::model::Value::Str(s) if k == "source" => Some(s.as_str()),
            _ => None,
        })?;
        let source = AGENT_SOURCES.into_iter().find(|s| *s == named)?;
        let stats = fields
            .iter()
            .filter(|(k, _)| k != "source")
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<serde_json::Map<_, _>>();
        Some(Self { node: node.to_owned(), source, stats: stats.into() })
    }
}

/// The legacy JSON of a firing's triggering event (the evidence kept with an alert).
pub fn evidence_json(f: &Firing) -> serde_json::Value {
    wire::legacy::to_legacy(&f.event, &f.node, f.event_id)
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    Timestamp::now().as_nanos() / 1_000_000
}

/// Unix milliseconds as RFC 3339 (what the API shows).
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_unix(ms.div_euclid(1000), (ms.rem_euclid(1000) * 1_000_000) as u32).to_rfc3339()
}

fn ser_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

fn ser_opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

/// An alert's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// New, nobody has looked.
    Open,
    /// Somebody is on it.
    Acknowledged,
    /// Done; a new firing with the same fingerprint opens a new alert.
    Resolved,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Status::Open),
            "acknowledged" => Some(Status::Acknowledged),
            "resolved" => Some(Status::Resolved),
            _ => None,
        }
    }
}

/// A lifecycle action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// open → acknowledged.
    Acknowledge,
    /// open or acknowledged → resolved.
    Resolve,
    /// acknowledged or resolved → open.
    Reopen,
}

impl Action {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Resolve => "resolve",
            Action::Reopen => "reopen",
        }
    }

    /// The statuses it applies to and the one it leads to.
    pub fn transition(self) -> (&'static [Status], Status) {
        match self {
            Action::Acknowledge => (&[Status::Open], Status::Acknowledged),
            Action::Resolve => (&[Status::Open, Status::Acknowledged], Status::Resolved),
            Action::Reopen => (&[Status::Acknowledged, Status::Resolved], Status::Open),
        }
    }
}

/// An alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// The first firing's id.
    pub id: Uuid,
    /// Rule id and group values; alerts fold by it while open.
    pub fingerprint: String,
    /// The rule.
    pub rule_id: String,
    /// The rule's name.
    pub rule_name: String,
    /// The rule's description.
    pub rule_description: String,
    /// INFO, WARNING or CRITICAL.
    pub severity: String,
    /// The rule's summary, filled in.
    pub title: String,
    /// The rule's tags.
    pub tags: Vec<String>,
    /// The node of the first triggering event.
    pub node: String,
    /// The group-by values.
    pub group: serde_json::Map<String, serde_json::Value>,
    /// Lifecycle.
    pub status: Status,
    /// Firings folded into it.
    pub occurrences: i64,
    /// Event time of the first firing.
    #[serde(serialize_with = "ser_ms")]
    pub first_seen: i64,
    /// Event time of the latest firing.
    #[serde(serialize_with = "ser_ms")]
    pub last_seen: i64,
    /// When it was stored.
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    /// When it last changed.
    #[serde(serialize_with = "ser_ms")]
    pub updated_at: i64,
    /// The first triggering event's id.
    pub correlation_id: Uuid,
    /// What to do about it.
    pub remediation: Option<String>,
    /// The runbook.
    pub playbook_url: Option<String>,
    /// A silence matched when it was created: no notifications were sent.
    pub silenced: bool,
    /// The first triggering event (legacy JSON).
    pub raw_event: serde_json::Value,
}

/// One lifecycle change (a row of `alert_history`).
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    /// When.
    #[serde(serialize_with = "ser_ms")]
    pub at: i64,
    /// Who (the API token's name).
    pub actor: String,
    /// acknowledge, resolve or reopen.
    pub action: String,
    /// Status before.
    pub from_status: String,
    /// Status after.
    pub to_status: String,
    /// Why.
    pub comment: String,
}

/// One notification delivery of an alert (a row of `outbox`).
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Delivery {
    /// The channel's name.
    pub channel: String,
    /// pending, delivered, failed (gave up) or skipped.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The last error, or why it was skipped.
    pub last_error: Option<String>,
    /// When it was delivered.
    #[serde(serialize_with = "ser_opt_ms")]
    pub delivered_at: Option<i64>,
}

/// An alert with its evidence, history and deliveries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertDetail {
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
    /// The newest triggering events (legacy JSON), newest first.
    pub evidence: Vec<serde_json::Value>,
    /// Lifecycle changes, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Notification deliveries.
    pub deliveries: Vec<Delivery>,
}

/// Filters for the alert list. Every field narrows; empty lists and `None` do not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertQuery {
    /// Any of these statuses.
    pub status: Vec<Status>,
    /// Any of these severities.
    pub severity: Vec<String>,
    /// This node.
    pub node: Option<String>,
    /// This rule id.
    pub rule: Option<String>,
    /// `last_seen` at or after (Unix ms).
    pub since: Option<i64>,
    /// `last_seen` before (Unix ms).
    pub until: Option<i64>,
    /// Case-insensitive substring of title, rule, node or group values.
    pub text: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Continue after this alert (from [`AlertPage::next`]).
    pub after: Option<Cursor>,
}

/// A position in the alert list (newest `last_seen` first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// `last_seen` of the last alert shown.
    pub last_seen: i64,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.last_seen, self.id.simple())
    }

    /// Parses what [`Cursor::encode`] made.
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('_')?;
        Some(Self { last_seen: ms.parse().ok()?, id: Uuid::try_parse(id).ok()? })
    }
}

/// One page of alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertPage {
    /// The alerts, newest `last_seen` first.
    pub alerts: Vec<Alert>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// What a lifecycle action did.
#[derive(Clone, Debug, PartialEq)]
pub enum Transitioned {
    /// Done; the alert as it is now.
    Done(Box<Alert>),
    /// No such alert.
    NotFound,
    /// The action does not apply to the alert's status (or reopening would make a second open
    /// alert with its fingerprint).
    Conflict(String),
}

/// One silence matcher: `field` equals `value`. Fields: `rule_id`, `node`, `severity`, or
/// `group.NAME` for a group-by value. A `value` ending in `*` matches by prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// What to compare.
    pub field: String,
    /// What it must be.
    pub value: String,
}

impl Matcher {
    /// Whether the field is one a matcher may name.
    pub fn valid_field(field: &str) -> bool {
        matches!(field, "rule_id" | "node" | "severity")
            || field.strip_prefix("group.").is_some_and(|g| !g.is_empty())
    }

    fn matches(&self, f: &Firing) -> bool {
        let actual = match self.field.as_str() {
            "rule_id" => Some(&*f.rule_id),
            "node" => Some(f.node.as_str()),
            "severity" => Some(f.severity.as_legacy()),
            other => other
                .strip_prefix("group.")
                .and_then(|name| f.group.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())),
        };
        match (actual, self.value.strip_suffix('*')) {
            (Some(a), Some(prefix)) => a.starts_with(prefix),
            (Some(a), None) => a == self.value,
            (None, _) => false,
        }
    }
}

/// A silence: alerts created while it is active and matching all its matchers are stored but
/// not notified.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Silence {
    /// Its id.
    pub id: Uuid,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Why.
    pub comment: String,
    /// Who.
    pub created_by: String,
    /// When.
    #[serde(serialize_with = "ser_ms")]
    pub created_at: i64,
    /// Until when.
    #[serde(serialize_with = "ser_ms")]
    pub expires_at: i64,
}

impl Silence {
    /// Whether it silences this firing at `now`.
    pub fn silences(&self, f: &Firing, now: i64) -> bool {
        now < self.expires_at && self.matchers.iter().all(|m| m.matches(f))
    }
}

/// An agent as its heartbeats describe it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agent {
    /// Node name.
    pub node: String,
    /// Agent version.
    pub version: String,
    /// Edge filter version.
    pub rules_version: String,
    /// First heartbeat (aggregator clock).
    #[serde(serialize_with = "ser_ms")]
    pub first_seen: i64,
    /// Latest heartbeat (aggregator clock).
    #[serde(serialize_with = "ser_ms")]
    pub last_seen: i64,
    /// Seconds since the agent started.
    pub uptime_secs: i64,
    /// Bytes waiting in its spool.
    pub spool_bytes: i64,
    /// Events sent since it started.
    pub events_sent: i64,
    /// Events per second between its last two heartbeats.
    pub events_per_s: f64,
    /// Drops since it started.
    pub dropped: i64,
    /// Drops per reason.
    pub drops: serde_json::Value,
    /// Its log sources as they last reported: `{"journal": {"lines_total": …, "reported_at":
    /// …}}`.
    pub sources: serde_json::Value,
}

/// Alerts created in one time bucket, per severity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Bucket start.
    #[serde(serialize_with = "ser_ms")]
    pub start: i64,
    /// Severity.
    pub severity: String,
    /// Alerts created.
    pub alerts: i64,
    /// Firings (occurrences) of those alerts.
    pub firings: i64,
}

/// Firings per rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleCount {
    /// The rule.
    pub rule_id: String,
    /// Firings stored.
    pub firings: i64,
    /// Event time of the latest.
    #[serde(serialize_with = "ser_opt_ms")]
    pub last_fired: Option<i64>,
}

/// A notification channel the store writes outbox rows for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Its name.
    pub name: String,
    /// Whether silences apply (they do to notifications, not to the `audit_alerts` feed).
    pub silenceable: bool,
}

/// An outbox row due for delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// The alert.
    pub alert_id: Uuid,
    /// The channel.
    pub channel: String,
    /// Attempts before this one.
    pub attempts: i64,
    /// The alert's status when the channel last heard of it; `None`: not yet.
    pub sent_status: Option<String>,
    /// Its occurrences then.
    pub sent_occurrences: i64,
    /// Updates sent so far.
    pub updates_sent: i64,
    /// When the channel last got a message about it.
    pub delivered_at: Option<i64>,
    /// The last firing published (`created_at`, id) by the `audit_alerts` feed in mode
    /// `firing`; `None`: none yet.
    pub sent_firing: Option<(i64, Uuid)>,
}

/// A firing as the `audit_alerts` feed in mode `firing` publishes it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedFiring {
    /// Its id (UUID v5 of rule, group and triggering event).
    pub id: Uuid,
    /// The triggering event's id.
    pub event_id: Uuid,
    /// The triggering event (legacy JSON).
    pub event: serde_json::Value,
    /// When it was stored, Unix ms.
    pub created_at: i64,
}

/// What retention deletes ([`Store::retain_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// Resolved alerts by resolution time, with their firings, history and deliveries.
    ResolvedAlerts,
    /// Firings by when they were stored.
    Firings,
    /// Fleet rows (and their source reports) by when the agent was last heard.
    Agents,
    /// Archived events by when they were archived.
    Events,
}

impl Retain {
    /// The name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Retain::ResolvedAlerts => "resolved_alerts",
            Retain::Firings => "firings",
            Retain::Agents => "agents",
            Retain::Events => "events",
        }
    }
}

/// One firing of an alert, as its evidence needs it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FiringRef {
    /// The firing's id.
    pub id: Uuid,
    /// Its triggering event's time, Unix ms.
    pub ts: i64,
    /// The node that sent the triggering event.
    pub node: String,
    /// The triggering event's id.
    pub event_id: Uuid,
    /// How many events (or distinct values) made it.
    pub count: i64,
}

/// Which archive rows a search reads next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveScan {
    /// One node only.
    pub node: Option<String>,
    /// Rows holding one of these kinds (bits); 0: any.
    pub kinds: i64,
    /// Event time from, Unix ms.
    pub from: i64,
    /// Event time to, Unix ms.
    pub to: i64,
    /// Newest first.
    pub desc: bool,
    /// The last row read: `(ts_min, id)`.
    pub after: Option<(i64, i64)>,
    /// Rows at most.
    pub max: i64,
}

/// A channel's deliveries as the outbox records them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChannelState {
    /// The channel.
    pub channel: String,
    /// Rows waiting (new, retried, deferred or re-sent).
    pub pending: i64,
    /// Rows given up.
    pub failed: i64,
    /// Rows done.
    pub delivered: i64,
    /// The last message.
    #[serde(serialize_with = "ser_opt_ms")]
    pub last_delivered_at: Option<i64>,
    /// The newest error recorded on a row still pending or given up.
    pub last_error: Option<String>,
}

/// What a delivery told the channel (or, with no message, what it now knows).
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The alert's status.
    pub status: Status,
    /// Its occurrences.
    pub occurrences: i64,
    /// A message went out at this time (`None`: the change needed none).
    pub messaged_at: Option<i64>,
    /// It was an update.
    pub update: bool,
    /// Look again at this time (an Alertmanager channel's re-send); `None`: when the alert
    /// changes.
    pub again_at: Option<i64>,
    /// The last firing published (the `audit_alerts` feed in mode `firing`); `None`: unchanged.
    pub firing: Option<(i64, Uuid)>,
}

impl Sent {
    /// No message: the channel now knows the alert as it is (its status and occurrences).
    pub fn known(a: &Alert) -> Self {
        Self {
            status: a.status,
            occurrences: a.occurrences,
            messaged_at: None,
            update: false,
            again_at: None,
            firing: None,
        }
    }
}

/// The store behind the API. Object-safe (boxed futures) so the API holds one
/// `Arc<dyn Store>` for either backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores firings (see [`AlertSink::commit`]); `now` is the wall clock (Unix ms).
    async fn commit_at(&self, firings: &[Firing], now: i64) -> anyhow::Result<Committed> {
        self.commit_batch_at(firings, &[], now).await
    }
    /// Stores a batch's firings and its archive rows in one transaction.
    async fn commit_batch_at(
        &self,
        firings: &[Firing],
        archive: &[crate::archive::Row],
        now: i64,
    ) -> anyhow::Result<Committed>;
    /// The newest `max` firings of an alert, newest first.
    async fn alert_firings(&self, id: Uuid, max: i64) -> anyhow::Result<Vec<FiringRef>>;
    /// Archive rows of `[from, to]` event time (rows that may hold such events: `ts_min` from
    /// `from` less the longest span a row has), in `(ts_min, id)` order, ascending or
    /// descending, after `after`, at most `max`.
    async fn archive_rows(&self, q: &ArchiveScan)
    -> anyhow::Result<Vec<crate::archive::StoredRow>>;
    /// Archive rows not packed yet (a batch's small rows), written before `before` (Unix ms),
    /// by node, at most `max`: what compaction merges.
    async fn archive_unpacked_rows(
        &self,
        before: i64,
        max: i64,
    ) -> anyhow::Result<Vec<crate::archive::StoredRow>>;
    /// Archive rows written at or after `since` (wall clock, Unix ms; a compacted row carries
    /// the newest of its parts' times), in the order written, after row `after_id`, at most
    /// `max`: what embedded mode replays into its state at start.
    async fn archive_written_since(
        &self,
        since: i64,
        after_id: i64,
        max: i64,
    ) -> anyhow::Result<Vec<crate::archive::StoredRow>>;
    /// Replaces archive rows by merged ones in one transaction; `false` (and nothing changed)
    /// when some of them are gone already (another replica compacted them).
    async fn archive_replace(
        &self,
        gone: &[i64],
        rows: &[crate::archive::Row],
        created_at: i64,
    ) -> anyhow::Result<bool>;
    /// Records heartbeats (see [`AlertSink::heartbeats`]).
    async fn record_heartbeats(&self, beats: &[Heartbeat], at: i64) -> anyhow::Result<()>;
    /// Records source reports (see [`AlertSink::source_reports`]).
    async fn record_source_reports(&self, reports: &[SourceReport], at: i64) -> anyhow::Result<()>;
    /// One page of alerts.
    async fn list_alerts(&self, q: &AlertQuery) -> anyhow::Result<AlertPage>;
    /// Alerts newest created first, by offset (the legacy API).
    async fn list_alerts_offset(&self, limit: i64, offset: i64) -> anyhow::Result<Vec<Alert>>;
    /// One alert, without evidence, history and deliveries.
    async fn find_alert(&self, id: Uuid) -> anyhow::Result<Option<Alert>>;
    /// One alert with evidence, history and deliveries.
    async fn alert(&self, id: Uuid) -> anyhow::Result<Option<AlertDetail>>;
    /// Applies a lifecycle action.
    async fn transition(
        &self,
        id: Uuid,
        action: Action,
        actor: &str,
        comment: &str,
        now: i64,
    ) -> anyhow::Result<Transitioned>;
    /// Adds a silence.
    async fn add_silence(&self, silence: &Silence) -> anyhow::Result<()>;
    /// Silences, newest first; expired ones only when asked.
    async fn silences(&self, include_expired: bool, now: i64) -> anyhow::Result<Vec<Silence>>;
    /// Ends a silence now; false when there is no such silence.
    async fn expire_silence(&self, id: Uuid, now: i64) -> anyhow::Result<bool>;
    /// The fleet, by node name.
    async fn agents(&self) -> anyhow::Result<Vec<Agent>>;
    /// Each channel's deliveries: counts per state, the last delivery and the last error.
    async fn channel_states(&self) -> anyhow::Result<Vec<ChannelState>>;
    /// Deletes at most `batch` of the oldest rows of `what` older than `cutoff` (Unix ms;
    /// `i64::MAX`: whatever the age), with what depends on them, in one short transaction;
    /// returns how many rows of `what` went.
    async fn retain_batch(&self, what: Retain, cutoff: i64, batch: i64) -> anyhow::Result<u64>;
    /// Bytes of data in the store (SQLite: the database without its free pages; PostgreSQL:
    /// the tables of its schema with their indexes, dead rows included until autovacuum
    /// reuses them).
    async fn live_bytes(&self) -> anyhow::Result<i64>;
    /// Whether [`Store::live_bytes`] drops as soon as rows are deleted (SQLite), so that a
    /// size bound can be met by deleting until it is under.
    fn size_follows_deletes(&self) -> bool;
    /// Gives freed space back to the disk (SQLite's incremental vacuum); nothing on
    /// PostgreSQL, whose autovacuum makes it reusable.
    async fn reclaim(&self) -> anyhow::Result<()>;
    /// Alerts created in `[from, to)` in buckets of `bucket` ms.
    async fn stats(&self, from: i64, to: i64, bucket: i64) -> anyhow::Result<Vec<Bucket>>;
    /// Firings per rule.
    async fn rule_counts(&self) -> anyhow::Result<Vec<RuleCount>>;
    /// Outbox rows due at `now`, claimed for `lease` ms so another replica skips them.
    async fn claim_outbox(&self, now: i64, lease: i64, max: i64)
    -> anyhow::Result<Vec<OutboxItem>>;
    /// Records a delivery done (see [`Sent`]).
    async fn delivered(&self, id: i64, sent: &Sent) -> anyhow::Result<()>;
    /// Leaves a delivery pending until `at` (quiet hours, the rate cap, `group_interval`),
    /// without counting an attempt.
    async fn defer_delivery(&self, id: i64, at: i64) -> anyhow::Result<()>;
    /// Records a failed attempt: retry at `retry_at`, or give up when it is `None`.
    async fn delivery_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> anyhow::Result<()>;
    /// Marks a delivery skipped (the channel's filter does not want the alert).
    async fn delivery_skipped(&self, id: i64, why: &str) -> anyhow::Result<()>;
    /// At most `limit` firings of alert `alert` stored after `after` (`created_at`, id), in
    /// that order (the `audit_alerts` feed in mode `firing`).
    async fn feed_firings(
        &self,
        alert: Uuid,
        after: Option<(i64, Uuid)>,
        limit: i64,
    ) -> anyhow::Result<Vec<FeedFiring>>;
    /// Records the feed's progress through an alert's firings and leaves the row pending,
    /// due at `next_at` (more firings to publish), without counting an attempt.
    async fn feed_progress(&self, id: i64, firing: (i64, Uuid), next_at: i64)
    -> anyhow::Result<()>;
    /// Stores alerts copied from elsewhere (the legacy notification service's history,
    /// `legacy_import`), each with the lifecycle entry `note`, in one transaction and without
    /// outbox rows: history is not announced. Each id is recorded as imported; an id recorded
    /// before, or already an alert's or a firing's (the legacy row came from AuditFlow's own
    /// `audit_alerts` feed), is skipped. Returns how many alerts were stored.
    async fn import_alerts(&self, alerts: &[Alert], note: &HistoryEntry) -> anyhow::Result<usize>;
    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> anyhow::Result<()>;
}

/// A change to an alert, as the live stream announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The alert.
    pub alert_id: Uuid,
    /// What happened.
    pub kind: ChangeKind,
}

/// A store shared by the pipeline, the API and the notifier. Every write through it is
/// announced on a broadcast channel (the API's live stream). Announcements are best effort
/// and local to this process; a client that falls behind is told to reload.
#[derive(Clone, Debug)]
pub struct SharedStore {
    inner: Arc<dyn Store>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

impl SharedStore {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner, changes: tokio::sync::broadcast::channel(1024).0 }
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn announce(&self, changed: &[(Uuid, ChangeKind)]) {
        for &(alert_id, kind) in changed {
            // No subscriber is not an error.
            let _ = self.changes.send(Change { alert_id, kind });
        }
    }

    /// Applies a lifecycle action and announces it.
    pub async fn act(
        &self,
        id: Uuid,
        action: Action,
        actor: &str,
        comment: &str,
    ) -> anyhow::Result<Transitioned> {
        let t = self.inner.transition(id, action, actor, comment, now_ms()).await?;
        if matches!(t, Transitioned::Done(_)) {
            self.announce(&[(id, ChangeKind::Status)]);
        }
        Ok(t)
    }
}

impl std::ops::Deref for SharedStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl AlertSink for SharedStore {
    async fn commit(
        &self,
        firings: &[Firing],
        archive: &[crate::archive::Row],
    ) -> anyhow::Result<Committed> {
        let c = self.inner.commit_batch_at(firings, archive, now_ms()).await?;
        self.announce(&c.changed);
        Ok(c)
    }

    async fn heartbeats(&self, beats: &[Heartbeat], at: i64) -> anyhow::Result<()> {
        self.inner.record_heartbeats(beats, at).await
    }

    async fn source_reports(&self, reports: &[SourceReport], at: i64) -> anyhow::Result<()> {
        self.inner.record_source_reports(reports, at).await
    }
}

/// Opens the store a URL names: `postgres://…` (its tables in the default schema,
/// [`postgres::PgSchema::default`]) or `sqlite:PATH`; migrations are applied.
pub async fn open(url: &str, channels: Vec<Channel>) -> anyhow::Result<SharedStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let schema = postgres::PgSchema::default();
        Ok(SharedStore::new(Arc::new(postgres::PgStore::connect(url, &schema, channels).await?)))
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        let path = std::path::Path::new(path);
        Ok(SharedStore::new(Arc::new(sqlite::SqliteStore::open(path, channels).await?)))
    } else {
        anyhow::bail!("unsupported database URL (expected postgres://… or sqlite:PATH)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::model::{Event, EventKind, Severity, Source, Value};

    fn stats(source: Source, event_type: &str, named: &str) -> Event {
        Event::new(
            Timestamp::now(),
            source,
            Severity::Info,
            EventKind::Generic {
                event_type: event_type.into(),
                fields: vec![
                    ("source".into(), Value::Str(named.into())),
                    ("lines_total".into(), Value::Int(4)),
                ],
            },
        )
    }

    #[test]
    fn only_an_agents_report_about_one_of_its_own_sources_is_kept() {
        let r = SourceReport::from_event("pi-1", &stats(Source::Agent, "source_stats", "journal"))
            .expect("a report");
        assert_eq!((r.node.as_str(), r.source), ("pi-1", "journal"));
        assert_eq!(r.stats, serde_json::json!({"lines_total": 4}));
        // A name of the node's own making, another event, another source: not reports.
        assert!(
            SourceReport::from_event(
                "pi-1",
                &stats(Source::Agent, "source_stats", "x".repeat(99).as_str())
            )
            .is_none()
        );
        assert!(
            SourceReport::from_event("pi-1", &stats(Source::Agent, "source_blind", "auth"))
                .is_none()
        );
        assert!(
            SourceReport::from_event("pi-1", &stats(Source::AuthLog, "source_stats", "auth"))
                .is_none()
        );
    }
}
