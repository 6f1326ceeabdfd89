//! An alert's evidence from the event archive (design.md §6.12): for each of its newest
//! firings, the events that made it — a threshold's or distinct rule's window members, a
//! sequence's steps, a match's or new value's one event — read back from the archive and
//! chosen with the rule's own condition and group key, newest kept when there are more.
//!
//! The archive keeps events for `[retention] events` (7 days by default); the firing's
//! triggering event stays with the alert for as long as the alert (the `evidence` of
//! `GET /api/v1/alerts/{id}`), so an older alert shows that event alone.

use serde::Serialize;
use uuid::Uuid;

use crate::archive::{self, Pages, Record};
use crate::detect::Detector;
use crate::rules::{EventRef, FieldId, Rule, Spec};
use crate::store::{Alert, ArchiveScan, FiringRef, SharedStore};

/// Events shown per firing at most (the newest, nearest the trigger).
pub const MEMBERS_KEPT: usize = 50;
/// Firings whose members are looked up, per alert.
pub const FIRINGS_SHOWN: i64 = crate::store::EVIDENCE_KEPT;
/// Events decoded per firing at most (a long window on a busy fleet).
const SCAN_BUDGET: u64 = 2_000_000;

/// One firing's events.
#[derive(Clone, Debug, Serialize)]
pub struct FiringEvidence {
    /// The firing.
    pub firing_id: Uuid,
    /// Its triggering event's time.
    pub ts: String,
    /// The node that sent the triggering event.
    pub node: String,
    /// The triggering event.
    pub event_id: Uuid,
    /// How many events (or distinct values) the rule counted.
    pub count: i64,
    /// The events, oldest first (the archive's JSON form, as `GET /api/v1/events` gives).
    pub events: Vec<serde_json::Value>,
    /// Matching events in the window not shown (older than the ones kept).
    pub left_out: u64,
    /// Whether the archive still held the triggering event (false: expired or not archived).
    pub archived: bool,
    /// Whether the look-up stopped at its scan budget.
    pub truncated: bool,
    /// Archive rows of the window that could not be read (skipped).
    pub rows_unreadable: u64,
}

/// An alert's evidence.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    /// Its newest firings, newest first.
    pub firings: Vec<FiringEvidence>,
    /// Its firings not shown.
    pub firings_left_out: i64,
    /// The time a member may precede its trigger by (the rule's window), ms.
    pub window_ms: i64,
}

/// How far before its trigger a member may be, ms: the rule's window (none for rules that
/// fire on one event).
fn window_ms(rule: Option<&Rule>) -> i64 {
    let window = match rule.map(|r| &r.spec) {
        Some(Spec::Threshold { window, .. })
        | Some(Spec::Distinct { window, .. })
        | Some(Spec::Sequence { window, .. }) => *window,
        _ => std::time::Duration::ZERO,
    };
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

/// Whether an event of the archive is one of a firing's members.
fn member(
    rule: Option<&Rule>,
    group: &[(FieldId, String)],
    trigger: Uuid,
    node: &str,
    r: &Record,
) -> bool {
    let ev = EventRef { node, event: &r.event };
    let Some(rule) = rule else {
        // The rule is gone from the set in force: the trigger alone.
        return r.key.event_id(node) == trigger;
    };
    let counts =
        rule.when.eval(&ev) || matches!(&rule.spec, Spec::Sequence { then, .. } if then.eval(&ev));
    counts && group.iter().all(|(f, want)| ev.get(f).key_text() == *want)
}

/// The evidence of `alert`, with the rules in force.
pub async fn of_alert(
    store: &SharedStore,
    detector: &Detector,
    alert: &Alert,
) -> anyhow::Result<Evidence> {
    let rule = detector.rules.rules.iter().find(|r| r.id == alert.rule_id);
    let group: Vec<(FieldId, String)> = alert
        .group
        .iter()
        .filter_map(|(k, v)| {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            FieldId::parse(k).map(|f| (f, value))
        })
        .collect();
    // Events about a host come from that node (agents, legacy and API events alike), so a
    // group naming the node or host narrows the scan to its rows.
    let node = group
        .iter()
        .find_map(|(f, v)| matches!(f, FieldId::Node | FieldId::Host).then(|| v.clone()));
    let kinds = rule
        .and_then(|r| r.kinds.as_ref())
        .map_or(0, |ks| ks.iter().filter_map(|k| archive::kind_bit(k)).fold(0, |a, b| a | b));
    let window = window_ms(rule);
    let firings = store.alert_firings(alert.id, FIRINGS_SHOWN).await?;
    let mut out = Vec::with_capacity(firings.len());
    for f in &firings {
        out.push(firing(store, rule, &group, node.as_deref(), kinds, window, f).await?);
    }
    Ok(Evidence {
        firings_left_out: (alert.occurrences - out.len() as i64).max(0),
        firings: out,
        window_ms: window,
    })
}

async fn firing(
    store: &SharedStore,
    rule: Option<&Rule>,
    group: &[(FieldId, String)],
    node: Option<&str>,
    kinds: i64,
    window: i64,
    f: &FiringRef,
) -> anyhow::Result<FiringEvidence> {
    let from = f.ts.saturating_sub(window);
    let mut pages = Pages::new(ArchiveScan {
        node: node.map(str::to_owned),
        kinds,
        from,
        to: f.ts,
        ..ArchiveScan::default()
    });
    let mut found: Vec<(i64, Uuid, serde_json::Value)> = Vec::new();
    let (mut scanned, mut truncated) = (0u64, false);
    'rows: while let Some((rows, _)) = pages.next(store).await? {
        for row in &rows {
            if scanned >= SCAN_BUDGET {
                truncated = true;
                break 'rows;
            }
            let Some(records) = pages.decode(row) else { continue };
            scanned += records.len() as u64;
            for r in &records {
                let ts = archive::ts_ms(&r.event);
                if ts < from || ts > f.ts || !member(rule, group, f.event_id, &row.node, r) {
                    continue;
                }
                let id = r.key.event_id(&row.node);
                found.push((ts, id, archive::event_json(&row.node, r)));
            }
        }
    }
    // Rows are read by start; a row may end up to a span later, so sort, and drop a copy of
    // a batch archived twice.
    found.sort_by_key(|e| (e.0, e.1));
    found.dedup_by_key(|e| e.1);
    let archived = found.iter().any(|e| e.1 == f.event_id);
    let left_out = found.len().saturating_sub(MEMBERS_KEPT) as u64;
    let events = found.into_iter().skip(left_out as usize).map(|e| e.2).collect();
    Ok(FiringEvidence {
        firing_id: f.id,
        ts: crate::store::rfc3339(f.ts),
        node: f.node.clone(),
        event_id: f.event_id,
        count: f.count,
        events,
        left_out,
        archived,
        truncated,
        rows_unreadable: pages.unreadable,
    })
}
