//! The event model: what every part of AuditFlow agrees an audit event is.
//!
//! postcard encodes by position, so the order of fields and enum variants below *is* the wire
//! format. Never reorder or remove a field or a variant; add variants only at the end of an
//! enum, and add fields only together with a new [`crate::WIRE_VERSION`]. The golden-bytes
//! tests in `tests/golden.rs` fail when any of this changes by accident.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Event time as nanoseconds since the Unix epoch (UTC).
///
/// Always the time the event happened on the node, never the time it was processed: rules
/// window on it so that a replayed backlog does not look like a burst.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(time::OffsetDateTime::now_utc())
    }

    /// Seconds and nanoseconds since the epoch.
    pub fn from_unix(secs: i64, nanos: u32) -> Self {
        Self(secs.saturating_mul(1_000_000_000).saturating_add(i64::from(nanos)))
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// RFC 3339 in UTC with a `Z`, microsecond precision when there is a fraction (the form the
    /// legacy services write).
    pub fn to_rfc3339(self) -> String {
        let dt = self.to_datetime();
        let micros = dt.microsecond();
        let base = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        let nanos = dt.nanosecond();
        if nanos == 0 {
            format!("{base}Z")
        } else if nanos.is_multiple_of(1000) {
            format!("{base}.{micros:06}Z")
        } else {
            format!("{base}.{nanos:09}Z")
        }
    }

    /// Parses RFC 3339 / ISO-8601 with an offset (`Z` or `±hh:mm`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let dt = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        Some(Self::from(dt))
    }

    fn to_datetime(self) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

impl From<time::OffsetDateTime> for Timestamp {
    fn from(dt: time::OffsetDateTime) -> Self {
        let nanos = dt.unix_timestamp_nanos();
        Self(i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX }))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Where on the node an event was collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// The agent's synthetic generator (demo traffic, scripted scenarios, benchmarks).
    Synthetic,
    /// sshd, sudo and su lines of the auth log.
    AuthLog,
    /// `/var/log/dpkg.log`.
    Dpkg,
    /// Watched files (inotify plus the periodic hash sweep).
    FileWatch,
    /// The Kubernetes API server's audit log.
    K8sAudit,
    /// A git provider's webhook (GitHub, GitLab).
    Webhook,
    /// A legacy AuditFlow JSON event from the `audit_events` queue.
    Legacy,
    /// `POST /api/v1/events` or the agent's legacy `POST /generate_event`.
    Api,
    /// The agent reporting on itself (drops, spool trouble).
    Agent,
    /// Kernel messages from the systemd journal (`_TRANSPORT=kernel`): OOM kills, segfaults,
    /// USB devices, AppArmor denials. Added after the first release: an aggregator must be
    /// upgraded before the agents that send it.
    Kernel,
}

impl Source {
    /// Every source, in wire order.
    pub const ALL: [Source; 10] = [
        Source::Synthetic,
        Source::AuthLog,
        Source::Dpkg,
        Source::FileWatch,
        Source::K8sAudit,
        Source::Webhook,
        Source::Legacy,
        Source::Api,
        Source::Agent,
        Source::Kernel,
    ];

    /// Stable lower-case name, used in configuration, metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Synthetic => "synthetic",
            Source::AuthLog => "auth",
            Source::Dpkg => "dpkg",
            Source::FileWatch => "file",
            Source::K8sAudit => "k8s-audit",
            Source::Webhook => "webhook",
            Source::Legacy => "legacy",
            Source::Api => "api",
            Source::Agent => "agent",
            Source::Kernel => "kernel",
        }
    }

    /// The inverse of [`Source::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How serious an event is, as its producer judged it. Matches the legacy levels.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Severity {
    /// Routine activity.
    #[default]
    Info,
    /// Worth a look.
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// The legacy spelling: `INFO`, `WARNING`, `CRITICAL`.
    pub fn as_legacy(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Parses the legacy spelling, case-insensitively.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "INFO" => Some(Severity::Info),
            "WARNING" => Some(Severity::Warning),
            "CRITICAL" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Whether an attempt (a login, a sudo command) succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The attempt succeeded.
    Success,
    /// The attempt was refused or failed.
    Failure,
}

impl Outcome {
    /// The legacy `action_result` spelling.
    pub fn as_legacy(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Failure => "FAILURE",
        }
    }
}

/// What happened to a watched file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileOp {
    /// The file appeared.
    Created,
    /// Its content changed.
    Modified,
    /// It was removed.
    Deleted,
    /// Owner, mode or other metadata changed, content did not.
    Attrib,
    /// It was renamed or moved away.
    Renamed,
}

impl FileOp {
    /// The legacy `action_result` spelling.
    pub fn as_legacy(self) -> &'static str {
        match self {
            FileOp::Created => "CREATED",
            FileOp::Modified => "MODIFIED",
            FileOp::Deleted => "DELETED",
            FileOp::Attrib => "ATTRIB_CHANGED",
            FileOp::Renamed => "RENAMED",
        }
    }

    /// The inverse of [`FileOp::as_legacy`].
    pub fn parse_legacy(text: &str) -> Option<Self> {
        [FileOp::Created, FileOp::Modified, FileOp::Deleted, FileOp::Attrib, FileOp::Renamed]
            .into_iter()
            .find(|op| op.as_legacy() == text)
    }
}

/// A SHA-256 content digest, kept binary on the wire (32 bytes instead of 64 hex characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lower-case hex, the form people and the legacy JSON use.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Parses exactly 64 lower-case hex digits (the only form [`Digest::to_hex`] produces, so
    /// that a parsed digest always renders back to the same text).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = HEX.iter().position(|&c| c == pair[0])?;
            let lo = HEX.iter().position(|&c| c == pair[1])?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Self(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// A loosely typed value, for fields the typed kinds do not model (legacy `details` entries,
/// generic events). postcard cannot carry `serde_json::Value` (it is self-describing), so
/// nested JSON travels as its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(String),
    /// An array, an object, or a number outside `i64`/`f64`, as compact JSON text.
    Json(String),
}

impl Value {
    /// Converts from JSON without loss.
    pub fn from_json(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Value::Int(i),
                (None, Some(f)) if n.is_f64() => Value::Float(f),
                _ => Value::Json(n.to_string()),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            other => Value::Json(other.to_string()),
        }
    }

    /// Converts back to JSON. A `Json` value whose text does not parse (only possible for a
    /// hand-built value) becomes a string so that nothing is dropped.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Json(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.clone())),
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A named value: one entry of [`Event::attrs`] or of [`EventKind::Generic`]'s fields.
pub type Field = (String, Value);

/// What happened. Each variant is one kind of audit activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// An authentication attempt (sshd, login, a legacy `user_login`).
    Login {
        /// The account the attempt was for.
        user: String,
        /// The client address, when the attempt came over the network.
        src_ip: Option<IpAddr>,
        /// `password`, `publickey`, `keyboard-interactive`, … or the legacy `protocol`.
        method: Option<String>,
        /// Whether it succeeded.
        outcome: Outcome,
        /// Why it failed (`invalid user`, `Invalid password`, …).
        reason: Option<String>,
    },
    /// A privilege change: sudo or su.
    Privilege {
        /// Who asked.
        user: String,
        /// As whom (`root` for most sudo commands).
        target_user: String,
        /// The command run, when known.
        command: Option<String>,
        /// The terminal.
        tty: Option<String>,
        /// The working directory.
        cwd: Option<String>,
        /// Whether it was allowed.
        outcome: Outcome,
    },
    /// A watched file changed.
    FileChange {
        /// Absolute path.
        path: String,
        /// What happened to it.
        op: FileOp,
        /// Content digest before, when known.
        old_hash: Option<Digest>,
        /// Content digest after, when known.
        new_hash: Option<Digest>,
        /// Size change in bytes, when known.
        size_delta: Option<i64>,
    },
    /// A package was installed, upgraded or removed (dpkg).
    Package {
        /// Package name with architecture when dpkg gives one (`openssh-server:arm64`).
        name: String,
        /// The version after the action (before it, for removals).
        version: String,
        /// `install`, `upgrade`, `remove`, `purge`, … as dpkg names it.
        action: String,
    },
    /// A service changed state.
    Service {
        /// The unit or service name.
        unit: String,
        /// The previous state, when known.
        from: Option<String>,
        /// The new state, lower case (`started`, `stopped`, `failed`, …).
        to: String,
    },
    /// A local account or group changed.
    Account {
        /// The account name.
        name: String,
        /// `created`, `deleted`, `modified`, `password_changed`, … lower case.
        action: String,
        /// The group involved, when the change is about a group.
        group: Option<String>,
    },
    /// One Kubernetes API server audit event.
    K8sAudit {
        /// `get`, `list`, `create`, `delete`, …
        verb: String,
        /// `secrets`, `pods`, `clusterrolebindings`, …
        resource: String,
        /// `exec`, `log`, …
        subresource: Option<String>,
        /// The namespace, for namespaced objects.
        namespace: Option<String>,
        /// The object name.
        name: Option<String>,
        /// The requesting user.
        user: String,
        /// The requesting user's groups.
        groups: Vec<String>,
        /// Client addresses as the API server recorded them.
        source_ips: Vec<String>,
        /// The HTTP response code.
        code: u16,
    },
    /// A git provider event (push, branch protection change, …) from a webhook.
    Git {
        /// `github` or `gitlab`.
        provider: String,
        /// The provider's event name (`push`, `pull_request`, …).
        event: String,
        /// `owner/name`.
        repo: String,
        /// Who did it.
        actor: String,
        /// The ref, for pushes (`refs/heads/main`).
        git_ref: Option<String>,
        /// Whether a push rewrote history.
        forced: bool,
        /// The repository's default branch, when the payload names it.
        default_branch: Option<String>,
        /// The provider's action for events that have one (`opened`, `closed`, …).
        action: Option<String>,
    },
    /// Anything else: an event type this version does not model, kept whole.
    Generic {
        /// The producer's event type name.
        event_type: String,
        /// Its fields.
        fields: Vec<Field>,
    },
}

impl EventKind {
    /// Short stable name of the kind, for metrics labels and rule matching.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Login { .. } => "login",
            EventKind::Privilege { .. } => "privilege",
            EventKind::FileChange { .. } => "file_change",
            EventKind::Package { .. } => "package",
            EventKind::Service { .. } => "service",
            EventKind::Account { .. } => "account",
            EventKind::K8sAudit { .. } => "k8s_audit",
            EventKind::Git { .. } => "git",
            EventKind::Generic { .. } => "generic",
        }
    }
}

/// One audit event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (event time).
    pub ts: Timestamp,
    /// Which collector produced it.
    pub source: Source,
    /// How serious its producer judged it.
    pub severity: Severity,
    /// What happened.
    pub kind: EventKind,
    /// An id the producer gave the event (the legacy `event_id`), kept as the correlation id of
    /// the alerts it triggers. Agent events have none: `(node, epoch, seq)` identifies them and
    /// [`crate::legacy::event_uuid`] derives a stable UUID from that when one is needed.
    pub id: Option<[u8; 16]>,
    /// The host the event is about, when it is not the node that sent it (legacy
    /// `server_hostname`, or events relayed by an API).
    pub host: Option<String>,
    /// The producing service, when it is not the agent (legacy `source_service`).
    pub origin: Option<String>,
    /// Fields no typed part of the event holds, so that nothing a producer sent is lost. Keys
    /// of legacy `details` entries start with `details.`; other keys are top-level legacy keys.
    pub attrs: Vec<Field>,
}

/// The attribute that names the `(epoch, seq)` an agent event had before the agent's spool moved
/// it to a new epoch (after damage left a hole in its numbers), as `"<epoch>:<seq>"`. The event
/// may have been delivered under those numbers already (its acknowledgement lost), so upstream
/// identifies it by them, not by its new ones: evaluated twice, it is still one event (the same
/// id, the same firing). Only the sender's own numbers can be named, so a node can make its
/// events collide only with its own.
pub const REBASED_FROM: &str = "rebased_from";

impl Event {
    /// An event with no id, host, origin or extra attributes.
    pub fn new(ts: Timestamp, source: Source, severity: Severity, kind: EventKind) -> Self {
        Self { ts, source, severity, kind, id: None, host: None, origin: None, attrs: Vec::new() }
    }

    /// The `(epoch, seq)` the event had before a rebase ([`REBASED_FROM`]), if it was moved and
    /// the attribute reads as such.
    pub fn rebased_from(&self) -> Option<(u64, u64)> {
        self.attrs.iter().find(|(k, _)| k == REBASED_FROM).and_then(|(_, v)| match v {
            Value::Str(s) => {
                let (epoch, seq) = s.split_once(':')?;
                Some((epoch.parse().ok()?, seq.parse().ok()?))
            }
            _ => None,
        })
    }

    /// Records that the event had `(epoch, seq)` before a rebase; an event moved before keeps
    /// its first numbers (it may have been delivered under those).
    pub fn mark_rebased(&mut self, epoch: u64, seq: u64) {
        if !self.attrs.iter().any(|(k, _)| k == REBASED_FROM) {
            self.attrs.push((REBASED_FROM.into(), Value::Str(format!("{epoch}:{seq}"))));
        }
    }
}

/// Why events were dropped or merged before they left a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DropReason {
    /// An edge filter rule dropped it on purpose.
    Filtered,
    /// Sampling (1-in-N) left it out.
    Sampled,
    /// Merged into an identical event within the collapse window (the survivor keeps a count).
    Collapsed,
    /// A source's rate cap was exceeded.
    RateLimited,
    /// The spool reached its byte cap and shed it (lowest priority first).
    SpoolFull,
    /// A torn or corrupt spool record found on start-up (power cut mid-write).
    SpoolCorrupt,
    /// A bounded in-memory queue was full.
    QueueFull,
    /// A log line no parser understood.
    Unparsed,
}

impl DropReason {
    /// Every reason, in wire order.
    pub const ALL: [DropReason; 8] = [
        DropReason::Filtered,
        DropReason::Sampled,
        DropReason::Collapsed,
        DropReason::RateLimited,
        DropReason::SpoolFull,
        DropReason::SpoolCorrupt,
        DropReason::QueueFull,
        DropReason::Unparsed,
    ];

    /// Stable snake-case name for metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Filtered => "filtered",
            DropReason::Sampled => "sampled",
            DropReason::Collapsed => "collapsed",
            DropReason::RateLimited => "rate_limited",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolCorrupt => "spool_corrupt",
            DropReason::QueueFull => "queue_full",
            DropReason::Unparsed => "unparsed",
        }
    }
}

/// Counts of events dropped at the edge, per reason. Sparse: an envelope with no drops
/// spends one byte on this.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts(Vec<(DropReason, u64)>);

impl DropCounts {
    /// Adds `n` drops for `reason`.
    pub fn add(&mut self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        match self.0.binary_search_by_key(&reason, |(r, _)| *r) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => self.0.insert(i, (reason, n)),
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &DropCounts) {
        for &(reason, n) in &other.0 {
            self.add(reason, n);
        }
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |acc, (_, n)| acc.saturating_add(*n))
    }

    /// True when nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The non-zero counts, ordered by reason.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        self.0.iter().copied().filter(|(_, n)| *n > 0)
    }
}

/// A batch of events from one node: one MQTT publish or one AMQP message.
///
/// Event `i` of the batch has sequence number `first_seq + i`; `(node_id, epoch, seq)`
/// identifies it exactly once across the whole system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node (its Kubernetes node name or hostname).
    pub node_id: String,
    /// Changes when the agent lost its spool, so that sequence numbers restarting from zero
    /// are not mistaken for duplicates.
    pub epoch: u64,
    /// Sequence number of the first event.
    pub first_seq: u64,
    /// The events, in sequence order.
    pub events: Vec<Event>,
    /// Drops since the previous envelope.
    pub dropped: DropCounts,
}

impl Envelope {
    /// Sequence number one past the last event.
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.events.len() as u64)
    }
}

/// Broker → agent: everything of `epoch` with a sequence number below `up_to_seq` is safely
/// stored upstream and may be removed from the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The epoch the acknowledgement is for; acks of another epoch are ignored.
    pub epoch: u64,
    /// Exclusive upper bound of acknowledged sequence numbers.
    pub up_to_seq: u64,
}

/// Broker → agent: everything of `epoch` in `[from_seq, up_to_seq)` is safely stored upstream,
/// one contiguous run of confirmed envelopes. An agent applies it only when the run starts at
/// or below its acknowledged watermark: then everything below `up_to_seq` is stored and may be
/// removed from the spool. A run that starts above the watermark means the broker never saw
/// the envelopes in between (rumqttd dropped them from a full log, or a hop lost them after
/// acknowledging them); the agent ignores it and resends from its watermark.
///
/// It replaces [`Ack`], which cannot say where its run starts, so an agent had to trust that
/// the run began at its watermark. Agents that subscribe to
/// [`run_ack_topic`](crate::run_ack_topic) get this; agents that subscribe to
/// [`ack_topic`](crate::ack_topic) (earlier versions) still get `Ack` (docs/design.md §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAck {
    /// The epoch the acknowledgement is for; acks of another epoch are ignored.
    pub epoch: u64,
    /// Inclusive lower bound of the run: the first sequence number the broker saw stored.
    pub from_seq: u64,
    /// Exclusive upper bound of acknowledged sequence numbers.
    pub up_to_seq: u64,
}

/// Agent → broker every few seconds: the node's own health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sending node.
    pub node_id: String,
    /// The agent's version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Bytes in the spool waiting for an ack.
    pub spool_bytes: u64,
    /// Events sent since start.
    pub events_sent: u64,
    /// Drops since start, per reason.
    pub dropped: DropCounts,
    /// Version (content hash) of the edge filter rules in force.
    pub rules_version: String,
    /// When the heartbeat was sent, by the node's clock.
    pub ts: Timestamp,
}
